"""What a worker gives a job of an environment: the environment's secrets and variables only
once the job passed its rules (never to a fork's run), and a recorder for `cicd/deploy`."""

from __future__ import annotations

import pytest

from deployments import gates
from deployments.models import Deployment, Environment, EnvironmentVariable
from runners.executor import LOCAL, RunnerConfig
from runs.execution import _spec_for, execute
from runs.states import State
from runs.vault import store_secret
from tests.runs.test_execution import log_lines, make_repository

from .conftest import execute as finish_as_a_worker
from .conftest import jobs_of, start_run

pytestmark = pytest.mark.django_db(transaction=True)

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo "build region=[${{ vars.REGION }}] key=[${{ secrets.DEPLOY_KEY }}]"
  deploy:
    needs: build
    runs-on: linux
    environment: production
    steps:
      - run: echo "deploy region=[${{ vars.REGION }}]"; test "$K" = prod-key && echo has-key
        env:
          K: ${{ secrets.DEPLOY_KEY }}
"""


@pytest.fixture
def config(tmp_path) -> RunnerConfig:
    return RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)


@pytest.fixture
def production(world, tmp_path) -> Environment:
    """A repository with a commit to check out, and its protected production environment with
    a secret and a variable."""
    world.sha = make_repository(tmp_path / "repo")
    world.repository.clone_url = str(tmp_path / "repo")
    world.repository.save()
    environment = world.environment(required_approvals=1, reviewers=["reviewer"])
    EnvironmentVariable.objects.create(environment=environment, name="REGION", value="eu-west")
    store_secret(
        name="DEPLOY_KEY", value="prod-key", repository=world.repository, environment="production"
    )
    return environment


def test_environment_secrets_and_variables_reach_only_the_approved_job(world, production, config):
    run = start_run(world.repository, WORKFLOW, sha=world.sha)
    build = jobs_of(run)["build"]
    assert execute(build.id, worker="w1", config=config) == State.SUCCESS
    assert "build region=[] key=[]" in log_lines(build)

    deploy = jobs_of(run)["deploy"]
    assert deploy.state == State.WAITING
    assert execute(deploy.id, worker="w1", config=config) is None  # not claimable while waiting
    gates.review(deploy.id, world.users["reviewer"], approve=True, comment="")
    assert execute(deploy.id, worker="w1", config=config) == State.SUCCESS
    lines = log_lines(deploy)
    assert "deploy region=[eu-west]" in lines and "has-key" in lines


def test_the_spec_names_the_environment_and_a_fork_gets_no_environment_secrets(world, production):
    run = start_run(world.repository, WORKFLOW, sha=world.sha)
    build = jobs_of(run)["build"]
    assert _spec_for(build).environment == ""
    assert "DEPLOY_KEY" not in _spec_for(build).secrets

    production.required_approvals = 0
    production.save()
    fork = start_run(world.repository, WORKFLOW, sha=world.sha, from_fork=True)
    finish_as_a_worker(run, "build")
    finish_as_a_worker(fork, "build")
    approved = jobs_of(fork)["deploy"]
    assert approved.state == State.QUEUED
    spec = _spec_for(approved)
    assert spec.environment == "production"
    assert spec.contexts["vars"] == {"REGION": "eu-west"}
    assert spec.secrets == {}  # a fork's run: no secrets at all
    own = _spec_for(jobs_of(run)["deploy"])
    assert own.secrets == {"DEPLOY_KEY": "prod-key"}


def test_a_deploy_step_records_its_deployment_through_the_worker(world, production, config):
    source = """\
on: push
jobs:
  deploy:
    runs-on: linux
    environment: production
    steps:
      - uses: cicd/deploy@v1
        with:
          image: widgets:1
          docker-host: tcp://127.0.0.1:9
"""
    production.required_approvals = 0
    production.save()
    run = start_run(world.repository, source, sha=world.sha)
    deploy = jobs_of(run)["deploy"]
    assert execute(deploy.id, worker="w1", config=config) == State.FAILURE
    deployment = Deployment.objects.get()
    assert (deployment.job_id, deployment.run_id, deployment.state) == (
        deploy.id,
        run.id,
        Deployment.FAILED,
    )
    assert "tcp://127.0.0.1:9 is not reachable" in deployment.reason
    assert deployment.request["image"] == "widgets:1"
    production.refresh_from_db()
    assert (production.lock_token, production.lock_deployment_id) == ("", None)
