"""Workers run claimed jobs end to end: from a pushed commit to stored steps, logs and outputs."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from runners.executor import LOCAL, RunnerConfig
from runs.claims import claim_job
from runs.execution import DatabaseSink, StaleToken, execute
from runs.models import Job, LogChunk, Run, Step
from runs.scheduling import finish_job
from runs.states import State
from runs.transitions import move_job

from .conftest import jobs_of, start_run

pytestmark = pytest.mark.django_db(transaction=True)

WORKFLOW = """\
on: push
jobs:
  setup:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=$(cat VERSION)" >> "$GITHUB_OUTPUT"
  test:
    needs: setup
    runs-on: linux
    strategy:
      matrix:
        python: [3.10, "3.12"]
    steps:
      - run: echo "testing ${{ matrix.python }} of ${{ needs.setup.outputs.version }}"
  report:
    needs: [setup, test]
    runs-on: linux
    steps:
      - run: echo "released ${{ needs.setup.outputs.version }}"
      - run: echo "job=$GITHUB_JOB ${{ github.job }}"
"""


def make_repository(path: Path) -> str:
    path.mkdir()
    (path / "VERSION").write_text("1.4.2\n")
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run(["git", "-C", str(path), "add", "."], check=True)
    subprocess.run(
        ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.org",
         "commit", "-q", "-m", "first"],
        check=True,
    )  # fmt: skip
    return subprocess.run(
        ["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def log_lines(job: Job) -> list[str]:
    lines = []
    for chunk in LogChunk.objects.filter(job=job).order_by("sequence"):
        lines += [json.loads(line)[2] for line in chunk.text.splitlines()]
    return lines


@pytest.fixture
def config(tmp_path) -> RunnerConfig:
    return RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)


def test_a_run_goes_from_commit_to_success_with_logs_steps_and_outputs(
    repository, tmp_path, config
):
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    run = start_run(repository, WORKFLOW, sha=sha)

    for _ in range(10):
        queued = [job for job in jobs_of(run).values() if job.state == State.QUEUED]
        if not queued:
            break
        for job in queued:
            assert execute(job.id, worker="w1", config=config) == State.SUCCESS

    run.refresh_from_db()
    assert run.state == State.SUCCESS
    jobs = jobs_of(run)
    assert jobs["setup"].outputs == {"version": "1.4.2"}
    assert "testing 3.10 of 1.4.2" in log_lines(jobs["test-3.10"])
    assert "testing 3.12 of 1.4.2" in log_lines(jobs["test-3.12"])
    assert "released 1.4.2" in log_lines(jobs["report"])
    assert "job=report report" in log_lines(jobs["report"])
    step = Step.objects.get(job=jobs["setup"], index=0)
    assert (step.state, step.outcome, step.exit_code) == ("success", "success", 0)
    assert step.outputs == {"version": "1.4.2"}
    assert step.started_at <= step.finished_at
    chunks = list(LogChunk.objects.filter(job=jobs["report"]).order_by("sequence"))
    assert [c.offset for c in chunks] == [
        sum(c.line_count for c in chunks[:i]) for i in range(len(chunks))
    ]


def test_a_failing_step_fails_the_job_and_the_run(repository, tmp_path, config):
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    source = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo boom; exit 4\n"
    run = start_run(repository, source, sha=sha)
    job = jobs_of(run)["a"]
    assert execute(job.id, worker="w1", config=config) == State.FAILURE
    run.refresh_from_db()
    assert run.state == State.FAILURE
    step = Step.objects.get(job=job, index=0)
    assert (step.state, step.exit_code) == ("failure", 4)
    assert "boom" in log_lines(job)


def test_a_replayed_message_runs_nothing(repository, tmp_path, config):
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    source = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: echo once\n"
    run = start_run(repository, source, sha=sha)
    job = jobs_of(run)["a"]
    assert execute(job.id, worker="w1", config=config) == State.SUCCESS
    assert execute(job.id, worker="w2", config=config) is None
    assert log_lines(job).count("once") == 1
    assert Run.objects.get(id=run.id).state == State.SUCCESS


def test_a_worker_that_lost_its_lease_can_write_nothing(repository):
    run = start_run(repository, "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: x}]\n")
    job = jobs_of(run)["a"]
    old = claim_job(job.id, worker="w1", lease_seconds=60)
    # The reaper found the lease expired and another worker took the job.
    assert move_job(job.id, State.QUEUED, from_states={State.RUNNING}, reason="lease expired")
    new = claim_job(job.id, worker="w2", lease_seconds=60)

    stale = DatabaseSink(job_id=job.id, token=old)
    with pytest.raises(StaleToken):
        stale.step_started(0, "x")
    assert finish_job(job.id, State.SUCCESS, token=old) is False
    assert not Step.objects.filter(job=job).exists()

    assert finish_job(job.id, State.SUCCESS, token=new) is True


def test_secrets_reach_the_job_and_are_masked_in_stored_logs(repository, tmp_path, config):
    from runs.vault import store_secret

    store_secret(name="TOKEN", value="hunter2-s3cret", repository=repository)
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    source = (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n"
        '      - run: echo "token=${{ secrets.TOKEN }}"; test "$T" = hunter2-s3cret\n'
        "        env:\n          T: ${{ secrets.TOKEN }}\n"
    )
    run = start_run(repository, source, sha=sha)
    job = jobs_of(run)["a"]
    assert execute(job.id, worker="w1", config=config) == State.SUCCESS
    assert "token=***" in log_lines(job)
    stored = "".join(LogChunk.objects.filter(job=job).values_list("text", flat=True))
    assert "hunter2" not in stored
