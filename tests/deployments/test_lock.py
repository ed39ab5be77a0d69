"""The recorder of a deployment and its environment's lock: one deployment at a time, a lease
that its worker renews, taken over once it expired, and the sweep that fails the deployments of
dead workers."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deployments import gates
from deployments.models import Deployment, DeploymentStep, Environment
from deployments.service import (
    DatabaseDeploymentRecorder,
    JobDeployments,
    fail_stale_deployments,
)
from runners.deploy import DeployRequest
from runners.events import CancelToken
from runs.execution import StaleToken
from runs.models import Job
from runs.states import State
from runs.transitions import move_job

from .conftest import claim, waiting_run

pytestmark = pytest.mark.django_db

REQUEST = DeployRequest(service="widgets-production", image="widgets:2", strategy="canary")
DIGEST = "sha256:" + "2" * 64


def approved_job(world):
    """A claimed deploy job of a run whose gate passed (bob approved it)."""
    world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    gates.review(deploy.id, world.users["reviewer"], approve=True, comment="go")
    job, token = claim(run, "deploy")
    return run, job, token


def queued(environment: Environment, **fields) -> Deployment:
    """A deployment without a job, as a rollback queues it."""
    values = {
        "image": "widgets:1",
        "image_digest": "sha256:" + "1" * 64,
        "strategy": "rolling",
        "request": REQUEST.as_dict(),
        "triggered_by": "walt",
    }
    return Deployment.objects.create(environment=environment, **(values | fields))


def lock_of(environment: Environment) -> tuple[int | None, bool]:
    environment.refresh_from_db()
    live = environment.lock_expires_at is not None and environment.lock_expires_at > timezone.now()
    return environment.lock_deployment_id, bool(environment.lock_token) and live


def wait_for(condition, *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the condition never held"
        time.sleep(0.05)


# ----------------------------------------------------------------------------- a job's deploy


def test_a_job_deployment_is_recorded_with_its_approvals_steps_traffic_and_outcome(world):
    run, job, token = approved_job(world)
    deployments = JobDeployments(job.id, token)
    recorder = deployments("production")
    said: list[str] = []
    assert recorder.begin(REQUEST, DIGEST, cancel=CancelToken(), say=said.append)

    deployment = Deployment.objects.get()
    assert (deployment.state, deployment.job_id, deployment.run_id) == (
        Deployment.IN_PROGRESS,
        job.id,
        run.id,
    )
    assert (deployment.sha, deployment.ref, deployment.triggered_by) == (run.sha, run.ref, "alice")
    assert (deployment.image, deployment.image_digest, deployment.strategy) == (
        "widgets:2",
        DIGEST,
        "canary",
    )
    assert deployment.request == REQUEST.as_dict()
    assert [(a["reviewer"], a["decision"], a["comment"]) for a in deployment.approvals] == [
        ("bob", "approved", "go")
    ]
    assert deployment.started_at is not None
    assert lock_of(deployment.environment) == (deployment.id, True)
    assert said == ["Took the deployment lock of production"]

    first = recorder.step_started("start 1 new replica", {"replicas": 1})
    recorder.step_finished(first, "success", {"healthy": 1})
    second = recorder.step_started("shift 5% of the traffic", {})
    recorder.traffic({"v1": 95, "v2": 5})
    recorder.step_finished(second, "failed", {"error_rate": 40.0})
    recorder.finish("rolled_back", "error rate 40.0% over 5.0%")
    deployments.close()

    deployment.refresh_from_db()
    assert (deployment.state, deployment.reason) == ("rolled_back", "error rate 40.0% over 5.0%")
    assert deployment.traffic == {"v1": 95, "v2": 5}
    assert deployment.finished_at >= deployment.started_at
    steps = list(DeploymentStep.objects.filter(deployment=deployment))
    assert [(s.index, s.name, s.outcome) for s in steps] == [
        (0, "start 1 new replica", "success"),
        (1, "shift 5% of the traffic", "failed"),
    ]
    assert steps[0].detail == {"replicas": 1, "healthy": 1}
    assert all(s.finished_at >= s.started_at for s in steps)
    assert lock_of(deployment.environment) == (None, False)


def test_a_successful_deployment_sets_the_environment_url(world):
    run, job, token = approved_job(world)
    recorder = JobDeployments(job.id, token)("production")
    assert recorder.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)
    recorder.finish("success")
    environment = Environment.objects.get()
    assert environment.url == f"https://widgets.example/{run.sha}"


def test_only_a_job_that_passed_its_environment_may_record_there(world):
    world.environment(required_approvals=1, reviewers=["reviewer"])
    _run, deploy = waiting_run(world)
    with pytest.raises(ValueError, match="did not pass the rules of environment 'production'"):
        JobDeployments(deploy.id, "token")("production")
    gates.review(deploy.id, world.users["reviewer"], approve=True, comment="")
    with pytest.raises(ValueError, match="'staging'"):
        JobDeployments(deploy.id, "token")("staging")


def test_a_worker_that_lost_its_job_cannot_begin_a_deployment(world):
    _run, job, token = approved_job(world)
    recorder = JobDeployments(job.id, token)("production")
    move_job(job.id, State.QUEUED, from_states={State.RUNNING}, lease_token="")
    with pytest.raises(StaleToken):
        recorder.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)
    assert not Deployment.objects.exists()


def test_a_job_that_ends_without_finishing_its_deployment_fails_it_and_frees_the_lock(world):
    _run, job, token = approved_job(world)
    deployments = JobDeployments(job.id, token)
    assert deployments("production").begin(
        REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None
    )
    deployments.close()
    deployment = Deployment.objects.get()
    assert deployment.state == Deployment.FAILED
    assert deployment.reason == "the job ended before its deployment did"
    assert lock_of(deployment.environment) == (None, False)


# ------------------------------------------------------------------------------------ the lock


def test_a_deployment_waits_for_the_lock_says_who_holds_it_and_can_be_cancelled(world):
    environment = world.environment()
    earlier = queued(environment, state=Deployment.SUCCESS)
    first, second = queued(environment, rollback_of=earlier), queued(environment)
    holder = DatabaseDeploymentRecorder.for_queued(first)
    assert holder.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)

    said: list[str] = []
    cancel = CancelToken()
    waiter = DatabaseDeploymentRecorder.for_queued(second)
    threading.Timer(0.3, cancel.cancel, args=("the job was cancelled",)).start()
    assert waiter.begin(REQUEST, DIGEST, cancel=cancel, say=said.append) is False
    assert said == [
        f"Waiting for the deployment lock of production: deployment #{first.id} (a rollback "
        "by walt) holds it"
    ]
    second.refresh_from_db()
    assert second.state == Deployment.CANCELLED
    assert second.reason == "the job was cancelled while waiting for the deployment lock"
    assert lock_of(environment) == (first.id, True)
    holder.finish("success")
    assert lock_of(environment) == (None, False)


def test_a_deployment_waiting_for_the_lock_past_its_steps_time_fails(world):
    environment = world.environment()
    first, second = queued(environment), queued(environment)
    holder = DatabaseDeploymentRecorder.for_queued(first)
    assert holder.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)

    cancel = CancelToken()
    waiting = cancel.until(time.monotonic() + 0.3)
    waiter = DatabaseDeploymentRecorder.for_queued(second)
    assert waiter.begin(REQUEST, DIGEST, cancel=waiting, say=lambda line: None) is False
    assert not cancel.cancelled  # the job itself goes on, to its next steps
    second.refresh_from_db()
    assert second.state == Deployment.FAILED
    assert second.reason == "timed out while waiting for the deployment lock"
    assert lock_of(environment) == (first.id, True)
    holder.finish("success")


def test_a_token_with_a_deadline_times_out_or_passes_its_cancel_on():
    cancel = CancelToken()
    assert cancel.until(None) is cancel
    waiting = cancel.until(time.monotonic() + 0.2)
    assert not waiting.cancelled and not waiting.timed_out
    started = time.monotonic()
    assert waiting.wait(30) is True  # ends at the deadline, not after 30 s
    assert time.monotonic() - started < 10
    assert (waiting.cancelled, waiting.timed_out, waiting.reason) == (True, True, "timed out")
    assert not cancel.cancelled

    later = cancel.until(time.monotonic() + 60)
    later.cancel("the lock was lost")  # as the lock renewer does: it stops the whole job
    assert cancel.cancelled and cancel.reason == "the lock was lost"
    assert (later.cancelled, later.timed_out, later.reason) == (True, False, "the lock was lost")


@pytest.mark.django_db(transaction=True)
def test_deployments_in_threads_on_postgresql_never_overlap(world):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and true concurrency need PostgreSQL")
    environment = world.environment()
    deployments = [queued(environment) for _ in range(3)]
    intervals: list[tuple[float, float]] = []
    barrier = threading.Barrier(len(deployments))

    def deploy(deployment: Deployment) -> None:
        try:
            recorder = DatabaseDeploymentRecorder.for_queued(deployment)
            barrier.wait(timeout=10)
            assert recorder.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)
            started = time.monotonic()
            time.sleep(0.2)
            intervals.append((started, time.monotonic()))
            recorder.finish("success")
        finally:
            connection.close()

    threads = [threading.Thread(target=deploy, args=(d,)) for d in deployments]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(intervals) == 3
    ordered = sorted(intervals)
    assert all(ordered[i][1] <= ordered[i + 1][0] for i in range(len(ordered) - 1)), ordered
    assert set(Deployment.objects.values_list("state", flat=True)) == {Deployment.SUCCESS}
    assert lock_of(environment) == (None, False)


@pytest.mark.django_db(transaction=True)
def test_the_lease_is_renewed_while_the_deployment_runs(world, settings):
    settings.CICD_DEPLOY_LOCK_SECONDS = 1.5  # renewed every 0.5 s
    environment = world.environment()
    deployment = queued(environment)
    recorder = DatabaseDeploymentRecorder.for_queued(deployment)
    assert recorder.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)
    first = Environment.objects.get().lock_expires_at
    wait_for(lambda: Environment.objects.get().lock_expires_at > first)
    recorder.finish("success")


def test_an_expired_lease_is_taken_over_and_its_deployment_failed(world):
    environment = world.environment()
    dead, next_one = queued(environment), queued(environment)
    crashed = DatabaseDeploymentRecorder.for_queued(dead)
    assert crashed.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)
    crashed._renewer.stop()  # its worker died: nothing renews the lease any more
    Environment.objects.filter(id=environment.id).update(
        lock_expires_at=timezone.now() - timedelta(seconds=1)
    )

    taker = DatabaseDeploymentRecorder.for_queued(next_one)
    assert taker.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)
    assert lock_of(environment) == (next_one.id, True)
    dead.refresh_from_db()
    assert dead.state == Deployment.FAILED
    assert "stopped renewing the deployment lock of production" in dead.reason
    # The late report of the dead one changes nothing, and leaves the new holder's lock alone.
    crashed.finish("success")
    dead.refresh_from_db()
    assert dead.state == Deployment.FAILED
    assert lock_of(environment) == (next_one.id, True)
    taker.finish("success")


@pytest.mark.django_db(transaction=True)
def test_a_holder_whose_lock_was_taken_is_cancelled_by_its_renewer(world, settings):
    settings.CICD_DEPLOY_LOCK_SECONDS = 1.5
    environment = world.environment()
    deployment = queued(environment)
    cancel = CancelToken()
    recorder = DatabaseDeploymentRecorder.for_queued(deployment)
    assert recorder.begin(REQUEST, DIGEST, cancel=cancel, say=lambda line: None)
    Environment.objects.filter(id=environment.id).update(lock_token="someone-else")
    wait_for(lambda: cancel.cancelled)
    assert "lock of production was lost" in cancel.reason
    recorder.finish("cancelled", "stopped")


# ------------------------------------------------------------------------------------ the sweep


def test_the_sweep_fails_a_deployment_whose_lease_expired_and_frees_the_lock(world):
    environment = world.environment()
    staging = world.environment("staging")
    dead, alive = queued(environment), queued(staging)
    crashed = DatabaseDeploymentRecorder.for_queued(dead)
    assert crashed.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)
    crashed._renewer.stop()
    running = DatabaseDeploymentRecorder.for_queued(alive)
    assert running.begin(REQUEST, DIGEST, cancel=CancelToken(), say=lambda line: None)

    assert fail_stale_deployments() == []
    Environment.objects.filter(id=environment.id).update(
        lock_expires_at=timezone.now() - timedelta(seconds=1)
    )
    assert fail_stale_deployments() == [dead.id]
    dead.refresh_from_db()
    assert dead.state == Deployment.FAILED
    assert dead.reason.startswith("its worker stopped renewing the deployment lock of production")
    assert "the worker probably died" in dead.reason
    assert lock_of(environment) == (None, False)
    alive.refresh_from_db()
    assert alive.state == Deployment.IN_PROGRESS
    assert fail_stale_deployments() == []
    running.finish("success")


def test_the_sweep_cancels_a_queued_deployment_whose_job_stopped(world):
    run, job, _token = approved_job(world)
    environment = Environment.objects.get()
    # What a worker that died while waiting for the lock leaves behind.
    waited = queued(environment, job=job, run=run)
    assert fail_stale_deployments() == []  # its job still runs: it may still take the lock
    Job.objects.filter(id=job.id).update(state=State.FAILURE)
    assert fail_stale_deployments() == [waited.id]
    waited.refresh_from_db()
    assert waited.state == Deployment.CANCELLED
    assert waited.reason == "its job stopped before the deployment took the lock"

    # A job given to another worker since (started after its deployment was queued) too.
    again = queued(environment, job=job, run=run)
    Job.objects.filter(id=job.id).update(
        state=State.RUNNING, started_at=timezone.now() + timedelta(seconds=1)
    )
    assert fail_stale_deployments() == [again.id]
