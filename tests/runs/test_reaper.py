"""The reaper requeues the jobs of lost workers, fails them after too many claims, and is safe to
run twice or beside a heartbeat. Time is a fixed `now`, never a sleep."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.core.management import call_command

from runs.claims import claim_job, heartbeat
from runs.models import Job, JobTransition
from runs.reaper import (
    LOST_CONTACT,
    TIMEOUT_MARGIN_SECONDS,
    find_lost_jobs,
    reap_expired_leases,
    reap_job,
    reap_lost_jobs,
)
from runs.scheduling import finish_job
from runs.states import State

from .conftest import jobs_of, start_run, states

pytestmark = pytest.mark.django_db

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: linux
    timeout-minutes: 5
    steps:
      - run: make
  deploy:
    needs: build
    runs-on: linux
    steps:
      - run: make deploy
"""


def claimed(run, key="build", *, worker="worker-1", lease_seconds=60.0) -> tuple[Job, str]:
    job = jobs_of(run)[key]
    token = claim_job(job.id, worker=worker, lease_seconds=lease_seconds)
    assert token
    job.refresh_from_db()
    return job, token


def notified_jobs(callbacks) -> list[int]:
    return [callback.args[0] for callback in callbacks]


def test_a_job_whose_lease_expired_is_requeued_and_its_worker_is_fenced_off(
    repository, django_capture_on_commit_callbacks
):
    run = start_run(repository, WORKFLOW)
    job, token = claimed(run)
    now = job.lease_expires_at + timedelta(seconds=1)

    with django_capture_on_commit_callbacks() as callbacks:
        assert reap_expired_leases(now=now) == [job.id]

    job.refresh_from_db()
    assert job.state == State.QUEUED
    assert job.lease_expires_at is None
    assert notified_jobs(callbacks) == [job.id]
    last = JobTransition.objects.filter(job=job).last()
    assert (last.from_state, last.to_state) == (State.RUNNING, State.QUEUED)
    assert last.reason == "lease expired (worker worker-1)"
    # The lost worker's late result is refused; the next worker gets a fresh token.
    assert not finish_job(job.id, State.SUCCESS, token=token)
    second = claim_job(job.id, worker="worker-2", lease_seconds=60)
    assert second and second != token
    assert finish_job(job.id, State.SUCCESS, token=second)
    job.refresh_from_db()
    assert (job.state, job.claims) == (State.SUCCESS, 2)


def test_a_live_lease_is_left_alone(repository):
    run = start_run(repository, WORKFLOW)
    job, _ = claimed(run)
    assert reap_expired_leases(now=job.lease_expires_at - timedelta(seconds=1)) == []
    assert states(run)["build"] == State.RUNNING


def test_a_heartbeat_that_renews_the_lease_after_the_reaper_read_it_wins(repository):
    run = start_run(repository, WORKFLOW)
    job, token = claimed(run)
    now = job.lease_expires_at + timedelta(seconds=1)
    [lost] = find_lost_jobs(now=now)

    assert heartbeat(job.id, token=token, lease_seconds=600)  # between the read and the move
    assert not reap_job(lost, now=now)

    job.refresh_from_db()
    assert (job.state, job.lease_token) == (State.RUNNING, token)


def test_after_max_claims_the_job_fails_with_lost_contact_and_the_run_fails(
    repository, settings, django_capture_on_commit_callbacks
):
    settings.CICD_MAX_JOB_CLAIMS = 2
    run = start_run(repository, WORKFLOW)
    job, _ = claimed(run, worker="worker-1")
    assert reap_expired_leases(now=job.lease_expires_at + timedelta(seconds=1)) == [job.id]
    job, _ = claimed(run, worker="worker-2")
    assert job.claims == 2

    with django_capture_on_commit_callbacks() as callbacks:
        [lost] = reap_lost_jobs(now=job.lease_expires_at + timedelta(seconds=1))

    assert lost.action == "failed"
    assert notified_jobs(callbacks) == []
    job.refresh_from_db()
    assert (job.state, job.error) == (State.FAILURE, LOST_CONTACT)
    assert "worker worker-2" in JobTransition.objects.filter(job=job).last().reason
    run.refresh_from_db()
    assert run.state == State.FAILURE
    assert states(run) == {"build": State.FAILURE, "deploy": State.SKIPPED}


def test_a_worker_that_hangs_past_timeout_minutes_and_grace_is_treated_as_lost(
    repository, settings
):
    settings.CICD_KILL_GRACE_SECONDS = 10.0
    run = start_run(repository, WORKFLOW)
    # The hung worker keeps heartbeating, so its lease never expires.
    job, _ = claimed(run, lease_seconds=24 * 3600)
    deadline = job.started_at + timedelta(minutes=5, seconds=10 + TIMEOUT_MARGIN_SECONDS)

    assert reap_expired_leases(now=deadline - timedelta(seconds=1)) == []
    assert reap_expired_leases(now=deadline + timedelta(seconds=1)) == [job.id]

    job.refresh_from_db()
    assert job.state == State.QUEUED
    reason = JobTransition.objects.filter(job=job).last().reason
    assert reason == "ran past timeout-minutes 5 and the kill grace (worker worker-1)"


def test_a_timeout_given_as_an_expression_counts_as_the_default(repository, settings):
    settings.CICD_KILL_GRACE_SECONDS = 0.0
    source = WORKFLOW.replace("timeout-minutes: 5", "timeout-minutes: ${{ vars.minutes }}")
    run = start_run(repository, source)
    job, _ = claimed(run, lease_seconds=24 * 3600)
    past_default = job.started_at + timedelta(minutes=360, seconds=TIMEOUT_MARGIN_SECONDS + 1)

    assert reap_expired_leases(now=past_default - timedelta(minutes=2)) == []
    assert reap_expired_leases(now=past_default) == [job.id]


def test_a_dry_run_changes_nothing(repository, django_capture_on_commit_callbacks):
    run = start_run(repository, WORKFLOW)
    job, token = claimed(run)
    transitions = JobTransition.objects.count()

    with django_capture_on_commit_callbacks() as callbacks:
        [lost] = reap_lost_jobs(now=job.lease_expires_at + timedelta(seconds=1), dry_run=True)

    assert (lost.job_id, lost.action, lost.worker) == (job.id, "requeued", "worker-1")
    assert callbacks == []
    assert JobTransition.objects.count() == transitions
    job.refresh_from_db()
    assert (job.state, job.lease_token) == (State.RUNNING, token)


def test_a_replay_is_a_no_op(repository, django_capture_on_commit_callbacks):
    run = start_run(repository, WORKFLOW)
    job, _ = claimed(run)
    now = job.lease_expires_at + timedelta(seconds=1)
    [lost] = find_lost_jobs(now=now)
    assert reap_expired_leases(now=now) == [job.id]
    transitions = JobTransition.objects.count()

    with django_capture_on_commit_callbacks() as callbacks:
        assert reap_expired_leases(now=now) == []
        assert not reap_job(lost, now=now)  # a second reaper that read the job before the move
        # Claimed again by another worker: the stale finding still names the old token.
        claimed(run, worker="worker-2")
        assert not reap_job(lost, now=now + timedelta(hours=1))

    assert notified_jobs(callbacks) == []
    assert JobTransition.objects.count() == transitions + 1  # only the new claim
    assert states(run)["build"] == State.RUNNING


def expire(job: Job) -> None:
    from django.utils import timezone

    Job.objects.filter(id=job.id).update(lease_expires_at=timezone.now() - timedelta(seconds=5))


def test_the_reap_jobs_command_reports_and_its_dry_run_changes_nothing(repository):
    run = start_run(repository, WORKFLOW)
    job, _ = claimed(run)
    expire(job)

    dry = io.StringIO()
    call_command("reap_jobs", "--dry-run", stdout=dry)
    assert f"job {job.id} would be requeued: lease expired (worker worker-1" in dry.getvalue()
    assert "would be requeued 1, would be failed 0" in dry.getvalue()
    assert states(run)["build"] == State.RUNNING

    out = io.StringIO()
    call_command("reap_jobs", stdout=out)
    assert f"job {job.id} requeued: lease expired" in out.getvalue()
    assert "requeued 1, failed 0" in out.getvalue()
    assert states(run)["build"] == State.QUEUED


def test_the_beat_task_reaps_and_is_scheduled(repository, settings):
    from cicd.celery import app
    from runs.tasks import reap_expired_leases as task

    run = start_run(repository, WORKFLOW)
    job, _ = claimed(run)
    expire(job)
    task.apply()
    assert states(run)["build"] == State.QUEUED

    app.finalize()
    [entry] = [e for e in app.conf.beat_schedule.values() if e["task"] == task.name]
    assert entry["schedule"] == settings.CICD_REAP_LEASES_SECONDS


def test_a_job_being_cancelled_when_its_worker_vanished_ends_cancelled_not_requeued(repository):
    run = start_run(repository, WORKFLOW)
    job, _ = claimed(run)
    Job.objects.filter(id=job.id).update(cancel_requested=True)
    assert reap_expired_leases(now=job.lease_expires_at + timedelta(seconds=1)) == [job.id]
    assert states(run) == {"build": State.CANCELLED, "deploy": State.SKIPPED}
