"""The whole path with real parts: a workflow job deploying to a protected environment waits for
its reviewer, deploys through a worker (the local executor running `cicd/deploy`, real Docker
containers behind a real HAProxy), a second version replaces the first under load, and the
one-action rollback brings the first version back."""

from __future__ import annotations

import shutil
import uuid

import pytest

from deployments import gates
from deployments.models import Deployment
from deployments.service import current_deployment, request_rollback, run_queued_deployment
from runners.deploy import teardown
from runners.deploy.haproxy import find_haproxy
from runners.executor import LOCAL, RunnerConfig
from runs.execution import execute
from runs.states import State
from tests.runners.deploy_images import (
    V1,
    V2,
    LoadGenerator,
    ensure_deploy_image,
    free_port,
    short_state_dir,
)
from tests.runners.images import docker_client
from tests.runs.test_execution import log_lines, make_repository

from .conftest import jobs_of, start_run

pytestmark = pytest.mark.django_db(transaction=True)

WORKFLOW = """\
on:
  workflow_dispatch:
    inputs:
      image:
        required: true
jobs:
  deploy:
    runs-on: linux
    environment:
      name: production
      url: http://{listen}/
    steps:
      - uses: cicd/deploy@v1
        with:
          image: ${{{{ inputs.image }}}}
          service: {service}
          listen: {listen}
          replicas: 2
          strategy: rolling
          health-path: /health
          health-timeout: 20
          step-pause: 1
          min-requests: 10
"""


@pytest.fixture
def deployed_service(world, tmp_path, settings):
    """The repository's commit, a protected production environment, and the service the
    workflow deploys, removed with its HAProxy at the end."""
    find_haproxy()  # fails (never skips) when haproxy is missing
    client = docker_client()
    images = {name: ensure_deploy_image(client, name) for name in (V1, V2)}
    world.sha = make_repository(tmp_path / "repo")
    world.repository.clone_url = str(tmp_path / "repo")
    world.repository.save()
    world.environment(required_approvals=1, reviewers=["reviewer"], allowed_refs=["main"])
    state_dir = short_state_dir()
    settings.CICD_DEPLOY_DIR = state_dir
    service = f"e2e-{uuid.uuid4().hex[:10]}"
    listen = f"127.0.0.1:{free_port()}"
    try:
        yield {
            "images": images,
            "listen": listen,
            "source": WORKFLOW.format(service=service, listen=listen),
            "config": RunnerConfig(
                executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0, deploy_dir=state_dir
            ),
        }
    finally:
        teardown(service, state_dir=state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
        client.close()


def answers(listen: str, count: int = 20) -> set[str]:
    with LoadGenerator(listen, rate=200) as load:
        load.wait_for_answers(count)
    return set(load.versions) | set(load.failures)


def deploy_through_a_worker(world, setup, image: str):
    run = start_run(
        world.repository,
        setup["source"],
        sha=world.sha,
        event="workflow_dispatch",
        inputs={"image": image},
    )
    job = jobs_of(run)["deploy"]
    assert job.state == State.WAITING
    with pytest.raises(gates.ReviewRefused) as refused:
        gates.review(job.id, world.users["outsider"], approve=True, comment="")
    assert refused.value.status == 404
    gates.review(job.id, world.users["reviewer"], approve=True, comment="ship it")
    assert execute(job.id, worker="w1", config=setup["config"]) == State.SUCCESS, log_lines(job)
    return job


def test_deploy_replace_under_load_and_roll_back_in_one_action(world, deployed_service):
    setup, listen = deployed_service, deployed_service["listen"]
    first = deploy_through_a_worker(world, setup, V1)
    assert answers(listen) == {"v1"}

    with LoadGenerator(listen, rate=60) as load:
        second = deploy_through_a_worker(world, setup, V2)
        load.wait_for_answers(10)
    assert load.failures == [], load.summary()
    assert answers(listen) == {"v2"}

    production = world.environment()
    v1, v2 = (Deployment.objects.get(job=job) for job in (first, second))
    assert (v1.state, v2.state) == (Deployment.SUCCESS, Deployment.SUCCESS)
    assert (v1.image_digest, v2.image_digest) == (setup["images"][V1], setup["images"][V2])
    assert v2.approvals[0]["reviewer"] == "bob" and v2.approvals[0]["comment"] == "ship it"
    assert current_deployment(production) == v2
    assert production.url == f"http://{listen}/"

    with LoadGenerator(listen, rate=60) as load:
        rollback = request_rollback(production, world.users["admin"], skip_analysis=True)
        assert rollback.rollback_of == v1
        assert run_queued_deployment(rollback.id) == Deployment.SUCCESS
        load.wait_for_answers(10)
    assert load.failures == [], load.summary()
    assert answers(listen) == {"v1"}
    rollback.refresh_from_db()
    assert (rollback.state, rollback.image_digest, rollback.triggered_by) == (
        Deployment.SUCCESS,
        setup["images"][V1],
        "olga",
    )
    assert rollback.steps.exists() and rollback.log
    assert current_deployment(production) == rollback
