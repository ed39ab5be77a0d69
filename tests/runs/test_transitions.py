"""Every allowed and forbidden transition, the history rows, and replays doing nothing."""

from __future__ import annotations

import itertools

import pytest

from runs.claims import claim_job, heartbeat
from runs.models import Job, JobTransition, Run, RunTransition
from runs.states import JOB_TRANSITIONS, RUN_TRANSITIONS, State, worst
from runs.transitions import IllegalTransition, move_job, move_run

from .conftest import start_run

ONE_JOB = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: make
"""

ALL_STATES = [state.value for state in State]


@pytest.fixture
def job(repository) -> Job:
    run = start_run(repository, ONE_JOB)
    return Job.objects.get(run=run)


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), list(itertools.product(ALL_STATES, ALL_STATES)))
def test_job_transition_table_is_enforced(job, source, target):
    Job.objects.filter(id=job.id).update(state=source)
    allowed = target in JOB_TRANSITIONS.get(source, ())
    assert move_job(job.id, target) is allowed
    job.refresh_from_db()
    assert job.state == (target if allowed else source)
    history = list(JobTransition.objects.filter(job=job).values_list("from_state", "to_state"))
    assert ((source, target) in history) is allowed


@pytest.mark.django_db
@pytest.mark.parametrize(("source", "target"), list(itertools.product(ALL_STATES, ALL_STATES)))
def test_run_transition_table_is_enforced(repository, source, target):
    run = start_run(repository, ONE_JOB)
    Run.objects.filter(id=run.id).update(state=source)
    allowed = target in RUN_TRANSITIONS.get(source, ())
    assert move_run(run.id, target) is allowed
    run.refresh_from_db()
    assert run.state == (target if allowed else source)


@pytest.mark.django_db
def test_a_replayed_transition_is_a_no_op(job):
    assert job.state == State.QUEUED
    assert move_job(job.id, State.CANCELLED) is True
    assert move_job(job.id, State.CANCELLED) is False
    assert JobTransition.objects.filter(job=job, to_state=State.CANCELLED).count() == 1


@pytest.mark.django_db
def test_asking_for_an_impossible_source_is_a_bug_not_a_race(job):
    with pytest.raises(IllegalTransition, match="cannot move from success to running"):
        move_job(job.id, State.RUNNING, from_states={State.SUCCESS})


@pytest.mark.django_db
def test_claim_gives_a_token_once_and_stale_tokens_are_refused(job):
    first = claim_job(job.id, worker="w1", lease_seconds=60)
    assert first
    assert claim_job(job.id, worker="w2", lease_seconds=60) is None
    assert heartbeat(job.id, token=first, lease_seconds=60)

    # The lease expired and the job went to another worker: the first one's writes are refused.
    assert move_job(job.id, State.QUEUED, reason="lease expired")
    second = claim_job(job.id, worker="w2", lease_seconds=60)
    assert second and second != first
    assert heartbeat(job.id, token=first, lease_seconds=60) is False
    assert move_job(job.id, State.SUCCESS, token=first) is False
    assert move_job(job.id, State.SUCCESS, token=second) is True
    job.refresh_from_db()
    assert (job.state, job.claimed_by, job.claims) == (State.SUCCESS, "w2", 2)
    assert job.finished_at is not None


@pytest.mark.django_db
def test_timestamps_follow_the_states(repository):
    run = start_run(repository, ONE_JOB)
    job = Job.objects.get(run=run)
    assert job.queued_at is not None and job.started_at is None
    token = claim_job(job.id, worker="w", lease_seconds=60)
    move_job(job.id, State.SUCCESS, token=token)
    job.refresh_from_db()
    assert job.started_at <= job.finished_at
    assert RunTransition.objects.filter(run=run).exists() is False  # run not advanced here


@pytest.mark.parametrize(
    ("conclusions", "expected"),
    [
        (["success", "failure", "cancelled"], "failure"),
        (["success", "timed_out", "cancelled"], "timed_out"),
        (["success", "cancelled", "skipped"], "cancelled"),
        (["skipped", "success"], "success"),
        (["skipped"], "skipped"),
        ([], "skipped"),
    ],
)
def test_worst_wins(conclusions, expected):
    assert worst(conclusions) == expected
