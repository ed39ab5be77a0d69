"""One-action rollback: it picks the previous successful version of the environment, queues a
deployment of it on a job worker, and runs it through the engine with the stored inputs."""

from __future__ import annotations

import dataclasses
import json
import time
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
from runners.events import CancelToken
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


@pytest.fixture
def engine(monkeypatch) -> FakeEngine:
    """The fake engine, in place of runners.deploy.deploy."""
    fake = FakeEngine()
    monkeypatch.setattr("runners.deploy.deploy", fake)
    return fake


def two_versions(world) -> tuple[Environment, Deployment]:
    """An environment where v1 then v2 were deployed: (it, v1's deployment)."""
    environment = world.environment()
    history = History(environment)
    v1 = history.add(1)
    history.add(2)
    return environment, v1


def test_a_queued_rollback_runs_through_the_engine_with_the_stored_inputs(world, engine, settings):
    environment, v1 = two_versions(world)
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


def test_a_rollback_whose_stored_inputs_are_broken_fails_with_the_reason(world, engine):
    environment, v1 = two_versions(world)
    Deployment.objects.filter(id=v1.id).update(request={**v1.request, "replicas": 0})
    rollback = request_rollback(environment, world.users["writer"], skip_analysis=False)
    assert run_queued_deployment(rollback.id) == Deployment.FAILED
    rollback.refresh_from_db()
    assert rollback.state == Deployment.FAILED
    assert "replicas" in rollback.reason
    assert "Cannot deploy" in rollback.log


def test_the_task_runs_the_deployment(world, engine):
    from deployments.tasks import run_deployment

    environment, _v1 = two_versions(world)
    rollback = request_rollback(environment, world.users["writer"], skip_analysis=False)
    run_deployment.apply(args=[rollback.id])
    rollback.refresh_from_db()
    assert rollback.state == Deployment.SUCCESS
    assert service.current_deployment(environment) == rollback


# ------------------------------------------------------------------- lost rollback messages


def test_a_rollback_whose_message_was_lost_is_sent_again_once_a_lease_later(
    world, engine, monkeypatch, settings, django_capture_on_commit_callbacks
):
    sent: list[int] = []
    monkeypatch.setattr("deployments.service._send", sent.append)
    environment, _v1 = two_versions(world)
    with django_capture_on_commit_callbacks(execute=True):
        rollback = request_rollback(environment, world.users["writer"], skip_analysis=False)
    assert sent == [rollback.id]
    sent.clear()  # ...and the broker lost it

    lease = timedelta(seconds=settings.CICD_DEPLOY_LOCK_SECONDS)
    soon = timezone.now() + lease / 2
    assert service.resend_unclaimed_rollbacks(now=soon) == []  # it may still be on its way
    later = timezone.now() + lease + timedelta(seconds=1)
    with django_capture_on_commit_callbacks(execute=True):
        assert service.resend_unclaimed_rollbacks(now=later) == [rollback.id]
    assert sent == [rollback.id]
    # Once per lease, not at every sweep.
    assert service.resend_unclaimed_rollbacks(now=later + timedelta(seconds=5)) == []

    assert run_queued_deployment(rollback.id) == "success"  # the message sent again arrives
    assert len(engine.calls) == 1
    assert service.resend_unclaimed_rollbacks(now=later + 3 * lease) == []  # it ended


def test_a_second_message_while_a_worker_has_the_rollback_does_nothing(world, engine, settings):
    environment, _v1 = two_versions(world)
    rollback = request_rollback(environment, world.users["writer"], skip_analysis=False)
    # A worker took it and waits for the lock (it renews its claim meanwhile).
    lease = timedelta(seconds=settings.CICD_DEPLOY_LOCK_SECONDS)
    claimed_until = timezone.now() + lease
    Deployment.objects.filter(id=rollback.id).update(claimed_until=claimed_until)

    assert run_queued_deployment(rollback.id) is None
    assert engine.calls == []
    rollback.refresh_from_db()
    assert (rollback.state, rollback.log) == (Deployment.QUEUED, "")  # nothing said twice
    long_after_sending = timezone.now() + lease / 2 + lease
    assert service.resend_unclaimed_rollbacks(now=claimed_until - timedelta(seconds=1)) == []

    # That worker died before it took the lock: its claim runs out, and the message goes again.
    assert service.resend_unclaimed_rollbacks(now=long_after_sending) == [rollback.id]
    Deployment.objects.filter(id=rollback.id).update(claimed_until=timezone.now())
    assert run_queued_deployment(rollback.id) == "success"
    assert len(engine.calls) == 1


def test_a_rollback_waiting_for_the_lock_renews_its_claim(world, settings):
    environment, _v1 = two_versions(world)
    holder = Deployment.objects.create(environment=environment, image="x", strategy="rolling")
    first = service.DatabaseDeploymentRecorder.for_queued(holder)
    assert first.begin(REQUEST, digest(3), cancel=CancelToken(), say=lambda line: None)

    settings.CICD_DEPLOY_LOCK_SECONDS = 3  # the rollback's lease (the holder keeps its own)
    rollback = request_rollback(environment, world.users["writer"], skip_analysis=False)
    assert service._claim(rollback.id)
    rollback.refresh_from_db()
    first_claim = rollback.claimed_until
    waiter = service.DatabaseDeploymentRecorder.for_queued(rollback)
    # It waits 4 s, longer than its 3 s lease; renewed every second, the claim never ran out.
    waiting = CancelToken().until(time.monotonic() + 4)
    assert waiter.begin(REQUEST, digest(1), cancel=waiting, say=lambda line: None) is False
    rollback.refresh_from_db()
    assert rollback.claimed_until >= first_claim + timedelta(seconds=2)
    first.finish("success")
