"""Cancel, concurrency groups, re-runs and job retries (runs.control)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from runners.executor import LOCAL, RunnerConfig
from runs.claims import claim_job
from runs.control import NotRerunnable, cancel_job, cancel_run, rerun
from runs.execution import execute as execute_on_worker
from runs.models import Job, JobTransition, Run, Step
from runs.scheduling import finish_job
from runs.states import State

from .conftest import execute, jobs_of, start_run, states
from .test_execution import make_repository

CHAIN = """\
on: push
jobs:
  build:
    runs-on: linux
    steps: [{run: make}]
  test:
    needs: build
    runs-on: linux
    steps: [{run: make test}]
"""


def claim(run: Run, key: str) -> str:
    token = claim_job(jobs_of(run)[key].id, worker="w", lease_seconds=60)
    assert token, f"{key} was not claimable"
    return token


def refreshed(run: Run) -> Run:
    return Run.objects.get(id=run.id)


# --------------------------------------------------------------------------------------- cancel


@pytest.mark.django_db
def test_cancelling_a_queued_run_ends_its_jobs_and_the_run_at_once(repository):
    run = start_run(repository, CHAIN)
    assert states(run) == {"build": "queued", "test": "pending"}

    assert cancel_run(run.id, reason="not needed", actor="alice") is True

    assert states(run) == {"build": "cancelled", "test": "cancelled"}
    assert refreshed(run).state == State.CANCELLED
    transition = JobTransition.objects.get(job=jobs_of(run)["build"], to_state="cancelled")
    assert transition.reason == "not needed (by alice)"
    assert cancel_run(run.id, reason="again") is False  # a double click does nothing more
    assert claim_job(jobs_of(run)["build"].id, worker="w", lease_seconds=60) is None


@pytest.mark.django_db
def test_cancelling_a_running_job_asks_its_worker_and_the_run_ends_cancelled(repository):
    run = start_run(repository, CHAIN)
    token = claim(run, "build")

    assert cancel_job(jobs_of(run)["build"].id, reason="stop") is True

    build = jobs_of(run)["build"]
    assert (build.state, build.cancel_requested) == (State.RUNNING, True)
    assert refreshed(run).state == State.RUNNING
    # What the worker reports once its executor stopped.
    assert finish_job(build.id, State.CANCELLED, token=token)
    assert states(run) == {"build": "cancelled", "test": "skipped"}
    assert refreshed(run).state == State.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_a_running_step_is_stopped_within_five_seconds_of_a_cancel(repository, tmp_path):
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    sha = make_repository(tmp_path / "repo")
    source = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: sleep 30\n"
    run = start_run(repository, source, sha=sha)
    job = jobs_of(run)["a"]
    config = RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)
    outcome: list[str | None] = []
    worker = threading.Thread(
        target=lambda: outcome.append(execute_on_worker(job.id, worker="w1", config=config))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not Step.objects.filter(job=job, state=State.RUNNING).exists():
            assert time.monotonic() < deadline, "the step never started"
            time.sleep(0.05)

        cancelled_at = time.monotonic()
        assert cancel_run(run.id, reason="stop it") is True
        worker.join(timeout=10)
        stopped_after = time.monotonic() - cancelled_at
    finally:
        worker.join(timeout=30)

    assert not worker.is_alive()
    assert stopped_after < 5, f"the step ran {stopped_after:.1f}s after the cancel"
    assert outcome == [State.CANCELLED]
    job.refresh_from_db()
    assert job.state == State.CANCELLED
    assert Step.objects.get(job=job, index=0).state == State.CANCELLED
    assert refreshed(run).state == State.CANCELLED


@pytest.mark.django_db
def test_fail_fast_also_stops_running_siblings(repository):
    source = """\
on: push
jobs:
  test:
    runs-on: linux
    strategy:
      matrix:
        n: [1, 2, 3]
      max-parallel: 2
    steps: [{run: make}]
"""
    run = start_run(repository, source)
    assert states(run) == {"test-1": "queued", "test-2": "queued", "test-3": "pending"}
    first, second = claim(run, "test-1"), claim(run, "test-2")

    assert finish_job(jobs_of(run)["test-1"].id, State.FAILURE, token=first)

    jobs = jobs_of(run)
    assert jobs["test-2"].state == State.RUNNING and jobs["test-2"].cancel_requested
    assert jobs["test-3"].state == State.CANCELLED
    assert finish_job(jobs["test-2"].id, State.CANCELLED, token=second)
    assert refreshed(run).state == State.FAILURE


# --------------------------------------------------------------------------- concurrency groups

GROUPED = """\
on: push
concurrency:
  group: ci-${{{{ github.ref }}}}
  cancel-in-progress: {cancel}
jobs:
  build:
    runs-on: linux
    steps: [{{run: make}}]
"""


@pytest.mark.django_db
def test_cancel_in_progress_cancels_the_older_run_of_the_group(repository):
    source = GROUPED.format(cancel="true")
    older = start_run(repository, source)
    token = claim(older, "build")
    other_branch = start_run(repository, source, ref="refs/heads/feature")

    newer = start_run(repository, source)

    assert newer.concurrency_group == "ci-refs/heads/main"
    assert newer.state == State.QUEUED and states(newer) == {"build": "queued"}
    assert jobs_of(older)["build"].cancel_requested
    assert finish_job(jobs_of(older)["build"].id, State.CANCELLED, token=token)
    assert refreshed(older).state == State.CANCELLED
    assert refreshed(other_branch).state == State.QUEUED  # another group
    assert states(other_branch) == {"build": "queued"}


@pytest.mark.django_db
def test_without_cancel_in_progress_the_newer_run_waits_for_the_older(repository):
    # An expression, false on main.
    source = GROUPED.format(cancel="${{ github.ref != 'refs/heads/main' }}")
    older = start_run(repository, source)

    newer = start_run(repository, source)

    assert newer.state == State.WAITING
    assert states(newer) == {"build": "pending"}
    execute(older, "build", "failure")
    assert refreshed(older).state == State.FAILURE
    assert refreshed(newer).state == State.QUEUED
    assert states(newer) == {"build": "queued"}
    execute(newer, "build")
    assert refreshed(newer).state == State.SUCCESS


@pytest.mark.django_db
def test_only_the_newest_run_waits_and_a_waiting_run_can_be_cancelled(repository):
    source = GROUPED.format(cancel="false")
    running = start_run(repository, source)
    claim(running, "build")
    second = start_run(repository, source)
    assert second.state == State.WAITING

    third = start_run(repository, source)

    assert refreshed(second).state == State.CANCELLED  # replaced as the pending run (GitHub)
    assert states(second) == {"build": "cancelled"}
    assert third.state == State.WAITING
    assert cancel_run(third.id, reason="no longer needed") is True
    assert refreshed(third).state == State.CANCELLED
    assert states(running) == {"build": "running"}  # untouched


# ------------------------------------------------------------------------------------- re-runs

PIPELINE = """\
on: push
jobs:
  build:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps: [{id: v, run: make}]
  lint:
    runs-on: linux
    steps: [{run: lint}]
  matrix:
    runs-on: linux
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    steps: [{run: make}]
  test:
    needs: build
    runs-on: linux
    steps: [{run: make test}]
  deploy:
    needs: [test, lint]
    runs-on: linux
    steps: [{run: deploy}]
"""


def failed_pipeline(repository) -> Run:
    run = start_run(repository, PIPELINE)
    execute(run, "build", outputs={"version": "1.2"})
    execute(run, "lint")
    execute(run, "matrix-1")
    execute(run, "matrix-2", "failure")
    execute(run, "test", "failure")
    run = refreshed(run)
    assert run.state == State.FAILURE
    return run


@pytest.mark.django_db
def test_rerun_of_all_jobs_starts_a_new_attempt_and_keeps_the_old_one(repository):
    run = failed_pipeline(repository)
    before = {job.id: (job.key, job.state) for job in Job.objects.filter(run=run)}

    again = rerun(run.id, failed_only=False, actor="alice")

    assert (again.attempt, again.state) == (2, State.QUEUED)
    assert states(again) == {
        "build": "queued",
        "lint": "queued",
        "matrix-1": "queued",
        "matrix-2": "queued",
        "test": "pending",
        "deploy": "pending",
    }
    old = {job.id: (job.key, job.state) for job in Job.objects.filter(run=run, attempt=1)}
    assert old == before  # the first attempt's jobs are untouched
    for key in ("build", "lint", "matrix-1", "matrix-2", "test", "deploy"):
        execute(again, key)
    assert refreshed(run).state == State.SUCCESS


@pytest.mark.django_db
def test_rerun_of_failed_jobs_carries_over_independent_successes(repository):
    run = failed_pipeline(repository)

    again = rerun(run.id, failed_only=True)

    assert again.attempt == 2
    jobs = jobs_of(again)
    assert {key: job.state for key, job in jobs.items()} == {
        "build": "success",  # carried over, with its outputs
        "lint": "success",
        "matrix-1": "success",
        "matrix-2": "queued",
        "test": "queued",  # failed: starts again, its need is a carried success
        "deploy": "pending",  # was skipped
    }
    assert jobs["build"].outputs == {"version": "1.2"}
    assert Job.objects.filter(run=run, attempt=1, key="test", state="failure").exists()
    execute(again, "matrix-2")
    execute(again, "test")
    execute(again, "deploy")
    assert refreshed(run).state == State.SUCCESS


@pytest.mark.django_db
def test_rerun_failed_restarts_successes_that_depend_on_a_failure(repository):
    source = (
        CHAIN
        + "  report:\n    needs: test\n    if: always()\n    runs-on: x\n    steps: [{run: r}]\n"
    )
    run = start_run(repository, source)
    execute(run, "build")
    execute(run, "test", "failure")
    execute(run, "report")  # succeeded after a failure: depends on it, so it runs again
    assert refreshed(run).state == State.FAILURE

    again = rerun(run.id, failed_only=True)

    assert states(again) == {"build": "success", "test": "queued", "report": "pending"}


@pytest.mark.django_db
def test_only_ended_runs_with_failures_can_be_rerun(repository):
    run = start_run(repository, CHAIN)
    with pytest.raises(NotRerunnable, match="still queued"):
        rerun(run.id, failed_only=False)
    execute(run, "build")
    execute(run, "test")
    with pytest.raises(NotRerunnable, match="no failed jobs"):
        rerun(run.id, failed_only=True)
    assert rerun(run.id, failed_only=False).attempt == 2


# ------------------------------------------------------------------------------------- retries

RETRIED = """\
on: push
jobs:
  flaky:
    runs-on: linux
    retry:
      max-attempts: 3
      backoff-seconds: 60
    steps: [{run: make}]
  after:
    needs: flaky
    runs-on: linux
    steps: [{run: make}]
"""


@pytest.mark.django_db
def test_a_failed_job_is_retried_after_a_backoff_then_given_up(
    repository, django_capture_on_commit_callbacks
):
    run = start_run(repository, RETRIED)
    flaky = jobs_of(run)["flaky"]

    with django_capture_on_commit_callbacks() as sent:
        token = claim(run, "flaky")
        assert finish_job(flaky.id, State.FAILURE, token=token, error="exit 1")

    flaky.refresh_from_db()
    assert (flaky.state, flaky.retry_attempt, flaky.lease_token) == (State.QUEUED, 2, "")
    wait = (flaky.not_before - timezone.now()).total_seconds()
    assert 55 < wait <= 75  # 60 s plus up to 25 % jitter
    countdown = sent[-1].args[1]
    assert 60 <= countdown <= 75
    assert claim_job(flaky.id, worker="w", lease_seconds=60) is None  # not before its time
    assert finish_job(flaky.id, State.SUCCESS, token=token) is False  # the old attempt's token

    for attempt in (2, 3):
        Job.objects.filter(id=flaky.id).update(not_before=timezone.now() - timedelta(seconds=1))
        token = claim_job(flaky.id, worker="w", lease_seconds=60)
        assert token
        assert finish_job(flaky.id, State.TIMED_OUT if attempt == 2 else State.FAILURE, token=token)
        flaky.refresh_from_db()
        if attempt == 2:
            assert (flaky.state, flaky.retry_attempt) == (State.QUEUED, 3)
            wait = (flaky.not_before - timezone.now()).total_seconds()
            assert 115 < wait <= 150

    assert flaky.state == State.FAILURE  # max-attempts reached: it ends
    assert states(run) == {"flaky": "failure", "after": "skipped"}
    assert refreshed(run).state == State.FAILURE


@pytest.mark.django_db
def test_a_retried_job_that_then_succeeds_unblocks_its_dependants(repository):
    run = start_run(repository, RETRIED.replace("backoff-seconds: 60", "backoff-seconds: 0"))
    execute(run, "flaky", "failure")
    assert states(run) == {"flaky": "queued", "after": "pending"}
    execute(run, "flaky")  # no backoff: claimable at once
    assert states(run) == {"flaky": "success", "after": "queued"}


@pytest.mark.django_db
def test_a_cancelled_job_is_not_retried(repository):
    run = start_run(repository, RETRIED)
    token = claim(run, "flaky")
    cancel_run(run.id, reason="stop")
    assert finish_job(jobs_of(run)["flaky"].id, State.FAILURE, token=token)
    assert states(run) == {"flaky": "failure", "after": "cancelled"}
    assert refreshed(run).state == State.FAILURE


@pytest.mark.django_db
def test_a_run_whose_workflow_never_parsed_cannot_be_rerun(repository):
    run = start_run(repository, "on: push\njobs: {}\nbogus: 1\n")
    assert run.state == State.FAILURE
    with pytest.raises(NotRerunnable, match="invalid"):
        rerun(run.id, failed_only=False)


@pytest.mark.django_db
def test_a_concurrency_group_that_cannot_be_evaluated_fails_the_run(repository):
    run = start_run(repository, GROUPED.format(cancel="${{ fromJSON('{') }}"))
    assert run.state == State.FAILURE
    assert run.error.startswith("concurrency:")
    assert states(run) == {"build": "skipped"}
