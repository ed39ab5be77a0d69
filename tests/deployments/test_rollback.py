"""One-action rollback: it picks the previous successful version of the environment, queues a
deployment of it on a job worker, and runs it through the engine with the stored inputs."""

from __future__ import annotations

import dataclasses
import json
from datetime import timedelta
from pathlib import Path

import pytest
from django.utils import timezone

from deployments import service
from deployments.models import Deployment, DeploymentStep, Environment
from deployments.service import (
    RollbackRefused,
    current_deployment,
    previous_successful,
    request_rollback,
    run_queued_deployment,
)
from deployments.service import _send as send_for_real
from runners.deploy import DeployRequest, DeployResult
from runs.models import AuditEntry

pytestmark = pytest.mark.django_db

REQUEST = DeployRequest(
    service="widgets-production", image="widgets:1", strategy="canary", env={"TOKEN": "s3cret"}
)


def digest(n: int) -> str:
    return f"sha256:{n}" + "0" * 63


class History:
    """Deployments of an environment, each finishing a minute after the previous one."""

    def __init__(self, environment: Environment) -> None:
        self.environment = environment
        self.at = timezone.now() - timedelta(hours=1)

    def add(self, version: int, state: str = Deployment.SUCCESS) -> Deployment:
        self.at += timedelta(minutes=1)
        return Deployment.objects.create(
            environment=self.environment,
            image=f"widgets:{version}",
            image_digest=digest(version),
            sha=f"{version}" * 40,
            ref="refs/heads/main",
            strategy="canary",
            request=service.stored_request(
                dataclasses.replace(REQUEST, image=f"widgets:{version}")
            ),
            state=state,
            started_at=self.at - timedelta(seconds=30),
            finished_at=self.at,
        )


def test_rollback_picks_the_previous_successful_version(world, django_capture_on_commit_callbacks):
    environment = world.environment()
    history = History(environment)
    v1 = history.add(1)
    history.add(2, Deployment.FAILED)
    history.add(2)
    current = history.add(2)  # redeployed: the same version, so not a version to go back to
    history.add(3, Deployment.ROLLED_BACK)  # never became current
    assert current_deployment(environment).image_digest == digest(2)
    assert previous_successful(environment) == v1

    with django_capture_on_commit_callbacks() as callbacks:
        rollback = request_rollback(
            environment, world.users["writer"], skip_analysis=True, remote_address="10.1.1.1"
        )
    assert len(callbacks) == 1
    assert (rollback.state, rollback.rollback_of, rollback.job) == (Deployment.QUEUED, v1, None)
    assert (rollback.image, rollback.image_digest, rollback.sha) == ("widgets:1", digest(1), v1.sha)
    assert (rollback.strategy, rollback.request) == ("canary", v1.request)
    assert (rollback.triggered_by, rollback.skip_analysis) == ("walt", True)
    entry = AuditEntry.objects.get(action="deployment.rollback")
    assert (entry.actor, entry.remote_address, entry.repository) == (
        "walt",
        "10.1.1.1",
        world.repository,
    )
    assert entry.detail == {
        "environment": "production",
        "deployment": rollback.id,
        "rollback_of": v1.id,
        "from": current.id,
        "image_digest": digest(1),
        "skip_analysis": True,
    }

    with pytest.raises(RollbackRefused) as again:
        request_rollback(environment, world.users["writer"], skip_analysis=False)
    assert str(again.value) == (
        f"a rollback of production is already queued (deployment #{rollback.id})"
    )


def test_nothing_to_roll_back_to_is_refused(world):
    environment = world.environment()
    with pytest.raises(RollbackRefused, match="production has no successful deployment"):
        request_rollback(environment, world.users["writer"], skip_analysis=False)
    history = History(environment)
    history.add(1)
    history.add(1)
    history.add(2, Deployment.ROLLED_BACK)
    with pytest.raises(RollbackRefused, match="no earlier successful deployment of another"):
        request_rollback(environment, world.users["writer"], skip_analysis=False)
    assert Deployment.objects.filter(rollback_of__isnull=False).count() == 0
    assert not AuditEntry.objects.filter(action="deployment.rollback").exists()


def test_the_rollback_message_goes_to_the_job_workers_queue(world, monkeypatch, settings):
    from deployments.tasks import run_deployment

    sent = []
    monkeypatch.setattr(run_deployment, "apply_async", lambda **kwargs: sent.append(kwargs))
    send_for_real(42)
    assert sent == [{"args": [42], "queue": settings.CELERY_QUEUE_JOBS}]
    assert settings.CELERY_QUEUE_JOBS != settings.CELERY_TASK_DEFAULT_QUEUE


class FakeEngine:
    """Stands in for runners.deploy.deploy: reports through the recorder like the engine does."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, request, recorder, *, state_dir, cancel, say):
        self.calls.append({"request": request, "state_dir": state_dir})
        say("Deploying")
        assert recorder.begin(request, request.image, cancel=cancel, say=say)
        index = recorder.step_started("switch", {"to": request.image})
        recorder.traffic({request.image: 100})
        recorder.step_finished(index, "success", {})
        recorder.finish("success", "")
        return DeployResult("success", "", request.image)


def test_a_queued_rollback_runs_through_the_engine_with_the_stored_inputs(
    world, monkeypatch, settings
):
    engine = FakeEngine()
    monkeypatch.setattr("runners.deploy.deploy", engine)
    environment = world.environment()
    history = History(environment)
    v1 = history.add(1)
    history.add(2)
    rollback = request_rollback(environment, world.users["writer"], skip_analysis=True)

    assert run_queued_deployment(rollback.id) == "success"
    [call] = engine.calls
    assert call["request"] == dataclasses.replace(REQUEST, image=digest(1), skip_analysis=True)
    # The containers' environment may hold secrets: stored sealed, given back to the engine.
    assert "s3cret" not in json.dumps(v1.request) and v1.request["env"] == {"TOKEN": ""}
    assert call["request"].env == {"TOKEN": "s3cret"}
    assert call["state_dir"] == Path(settings.CICD_DEPLOY_DIR)
    rollback.refresh_from_db()
    assert rollback.state == Deployment.SUCCESS
    assert rollback.traffic == {digest(1): 100}
    assert DeploymentStep.objects.filter(deployment=rollback).count() == 1
    lines = [line.split(" ", 2)[2] for line in rollback.log.splitlines()]
    assert lines == [
        f"Rolling production back to {digest(1)[:19]} (deployment #{v1.id}), skipping analysis",
        "Deploying",
        "Took the deployment lock of production",
        f"Deployment #{rollback.id}: success",
    ]
    assert current_deployment(environment) == rollback
    # A replayed message finds it ended: nothing runs twice.
    assert run_queued_deployment(rollback.id) is None
    assert len(engine.calls) == 1


def test_a_rollback_whose_stored_inputs_are_broken_fails_with_the_reason(world, monkeypatch):
    monkeypatch.setattr("runners.deploy.deploy", FakeEngine())
    environment = world.environment()
    history = History(environment)
    v1 = history.add(1)
    history.add(2)
    Deployment.objects.filter(id=v1.id).update(request={**v1.request, "replicas": 0})
    rollback = request_rollback(environment, world.users["writer"], skip_analysis=False)
    assert run_queued_deployment(rollback.id) == Deployment.FAILED
    rollback.refresh_from_db()
    assert rollback.state == Deployment.FAILED
    assert "replicas" in rollback.reason
    assert "Cannot deploy" in rollback.log


def test_the_task_runs_the_deployment(world, monkeypatch):
    from deployments.tasks import run_deployment

    engine = FakeEngine()
    monkeypatch.setattr("runners.deploy.deploy", engine)
    environment = world.environment()
    history = History(environment)
    history.add(1)
    history.add(2)
    rollback = request_rollback(environment, world.users["writer"], skip_analysis=False)
    run_deployment.apply(args=[rollback.id])
    rollback.refresh_from_db()
    assert rollback.state == Deployment.SUCCESS
    assert service.current_deployment(environment) == rollback
