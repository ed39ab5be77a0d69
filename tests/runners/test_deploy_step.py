"""`uses: cicd/deploy` as a job step: the job driver runs the engine with the recorder of the
job's environment (on the local executor here: the deployment runs in the worker process on
either executor, so the faster one is used)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runners.deploy import DeploymentRecorder, teardown
from runners.deploy.haproxy import find_haproxy
from runners.events import FAILURE, SUCCESS, TIMED_OUT, JobResult, RecordingSink
from runners.local import run_local_job
from runners.spec import JobSpec
from tests.runners.conftest import job, step
from tests.runners.deploy_images import (
    V1,
    V2,
    LoadGenerator,
    RecordingRecorder,
    ensure_deploy_image,
    free_port,
    short_state_dir,
)
from tests.runners.images import docker_client


class Recorders:
    """A DeploymentRecorderFactory keeping the recorders it made, by environment."""

    def __init__(self, **options: Any) -> None:
        self.made: list[tuple[str, RecordingRecorder]] = []
        self.options = options

    def __call__(self, environment: str) -> DeploymentRecorder:
        recorder = RecordingRecorder(**self.options)
        self.made.append((environment, recorder))
        return recorder


def run(
    spec: JobSpec, tmp_path: Path, state_dir: Path | None, recorders: Recorders | None
) -> tuple[JobResult, RecordingSink]:
    sink = RecordingSink()
    result = run_local_job(
        spec,
        sink,
        work_root=tmp_path / "jobs",
        grace_seconds=1.0,
        deployments=recorders,
        deploy_state_dir=state_dir,
    )
    return result, sink


@pytest.fixture
def state_dir() -> Iterator[Path]:
    directory = short_state_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.docker
def test_a_job_deploys_to_its_environment(tmp_path: Path, state_dir: Path) -> None:
    find_haproxy()
    client = docker_client()
    images = {name: ensure_deploy_image(client, name) for name in (V1, V2)}
    environment = f"prod-{uuid.uuid4().hex[:8]}"
    service = f"acme-widgets-{environment}"  # <repository>-<environment>, made safe
    listen = f"127.0.0.1:{free_port()}"
    recorders = Recorders()

    def deploy_job(image: str, **extra: Any) -> JobSpec:
        return job(
            step(
                uses="cicd/deploy@v1",
                id="deploy",
                with_args={
                    "image": "${{ env.IMAGE }}",
                    "listen": listen,
                    "health-path": "/health",
                    "strategy": "blue-green",
                    "step-pause": "0.5",
                    "min-requests": "5",
                    "env": "GREETING=hello\nMODE=${{ github.ref_name }}",
                    **extra,
                },
            ),
            step(
                "echo outcome=${{ steps.deploy.outputs.outcome }} "
                "url=${{ steps.deploy.outputs.url }} "
                "digest=${{ steps.deploy.outputs.image-digest }}",
                if_condition="always()",
            ),
            env={"IMAGE": image},
            environment=environment,
        )

    try:
        result, sink = run(deploy_job(V1), tmp_path, state_dir, recorders)
        assert result.conclusion == SUCCESS, sink.lines()
        assert result.steps[0].outputs == {
            "outcome": "success",
            "image-digest": images[V1],
            "url": f"http://{listen}",
        }
        assert f"outcome=success url=http://{listen} digest={images[V1]}" in sink.lines(1)
        (environment_name, recorder) = recorders.made[0]
        assert environment_name == environment
        request, digest = recorder.began[0]
        assert (request.service, request.image, digest) == (service, V1, images[V1])
        assert dict(request.env) == {"GREETING": "hello", "MODE": "main"}
        assert recorder.finished is not None and recorder.finished[0] == "success"
        assert any(line.startswith("Traffic: ") for line in sink.lines(0))

        with LoadGenerator(listen) as load:
            load.wait_for_answers(20)
            result, sink = run(deploy_job(V2), tmp_path, state_dir, recorders)
            load.wait_for_answers(20)
        assert result.conclusion == SUCCESS, sink.lines()
        assert load.failures == [], load.summary()
        assert load.recent[-5:] == ["v2"] * 5
        assert recorders.made[1][1].finished is not None
        assert recorders.made[1][1].finished[0] == "success"

        # A failing deployment fails its step, with the reason; the outputs still say how.
        result, sink = run(
            deploy_job(V1, **{"health-timeout": "1", "port": "9999"}),
            tmp_path,
            state_dir,
            recorders,
        )
        assert result.conclusion == FAILURE
        failed = result.steps[0]
        assert failed.outputs["outcome"] == "rolled_back"
        assert failed.error.startswith("deployment rolled back: readiness probe of slot")
        assert "outcome=rolled_back" in sink.lines(1)[-1]
    finally:
        teardown(service, state_dir=state_dir)


def test_bad_inputs_fail_the_step_naming_the_input(tmp_path: Path, state_dir: Path) -> None:
    recorders = Recorders()
    spec = job(
        step(
            uses="cicd/deploy@main",
            with_args={"image": "app:v1", "replicas": "many", "colour": "blue"},
        ),
        environment="production",
    )
    result, sink = run(spec, tmp_path, state_dir, recorders)
    assert result.conclusion == FAILURE
    message = "with.replicas must be a whole number from 1 to 30, got 'many'"
    assert result.steps[0].error == message
    lines = sink.lines(0)
    assert f"Error: {message}" in lines
    assert any(line.startswith("Warning: Unexpected input(s) 'colour'") for line in lines)
    assert recorders.made == []  # nothing was recorded: the deployment never began


def test_a_job_without_an_environment_cannot_deploy(tmp_path: Path, state_dir: Path) -> None:
    spec = job(step(uses="cicd/deploy@v1", with_args={"image": "app:v1"}))
    result, _ = run(spec, tmp_path, state_dir, Recorders())
    assert result.conclusion == FAILURE
    assert "give the job one (`environment: <name>`)" in result.steps[0].error

    spec = job(step(uses="cicd/deploy@v1", with_args={"image": "app:v1"}), environment="dev")
    result, _ = run(spec, tmp_path, state_dir, None)
    assert result.steps[0].error == "cicd/deploy is not available where this job runs"


@pytest.mark.docker
def test_waiting_for_the_deployment_lock_ends_with_the_steps_time(
    tmp_path: Path, state_dir: Path
) -> None:
    ensure_deploy_image(docker_client(), V1)
    recorders = Recorders(held_elsewhere=True)
    spec = job(
        step(uses="cicd/deploy@v1", with_args={"image": V1}, timeout_minutes=0.01),
        step("echo after", if_condition="always()"),
        environment="production",
    )
    result, sink = run(spec, tmp_path, state_dir, recorders)
    assert result.conclusion == FAILURE
    assert result.steps[0].outcome == TIMED_OUT
    assert (
        result.steps[0].error
        == "deployment failed: timed out while waiting for the deployment lock"
    )
    assert result.steps[0].outputs["outcome"] == "failed"
    assert "Deployment failed: timed out while waiting for the deployment lock" in sink.lines(0)
    assert sink.lines(1) == ["after"]
    recorder = recorders.made[0][1]
    assert recorder.finished is None  # begin said no: there is nothing to finish
