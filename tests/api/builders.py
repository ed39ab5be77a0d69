"""Builders shared by the API and CLI client tests: runs from a small workflow, jobs moved the
way a worker moves them, and log chunks stored the way the executor stores them."""

from __future__ import annotations

import itertools
import json
from typing import Any

from runs.claims import claim_job
from runs.models import Job, LogChunk, Repository, Run
from runs.scheduling import RunRequest, create_run, finish_job

WORKFLOW = """\
name: CI
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo build
  test:
    needs: build
    runs-on: linux
    steps:
      - run: echo test
"""

_keys = itertools.count(1)


def start_run(repository: Repository, *, ref: str = "refs/heads/main", **overrides: Any) -> Run:
    fields = {
        "workflow_path": ".cicd/workflows/ci.yml",
        "source": WORKFLOW,
        "event": "push",
        "ref": ref,
        "sha": "a" * 40,
        "idempotency_key": f"api-test-{next(_keys)}",
        "actor": "alice",
    }
    fields.update(overrides)
    return create_run(repository, RunRequest(**fields))


def jobs_of(run: Run) -> dict[str, Job]:
    run.refresh_from_db()
    return {job.key: job for job in Job.objects.filter(run=run, attempt=run.attempt)}


def execute(run: Run, key: str, conclusion: str = "success") -> None:
    """What a worker does: claim the queued job, then report its end."""
    job = jobs_of(run)[key]
    token = claim_job(job.id, worker="test-worker", lease_seconds=60)
    assert token, f"{key} was not claimable ({job.state})"
    assert finish_job(job.id, conclusion, token=token)


def start(run: Run, key: str) -> Job:
    job = jobs_of(run)[key]
    assert claim_job(job.id, worker="test-worker", lease_seconds=60)
    job.refresh_from_db()
    return job


def add_chunk(job: Job, lines: list[list[Any]], *, step_index: int | None = 0) -> LogChunk:
    """Append lines to a job's log the way the executor stores them."""
    last = LogChunk.objects.filter(job=job).order_by("-sequence").first()
    return LogChunk.objects.create(
        job=job,
        step_index=step_index,
        sequence=last.sequence + 1 if last else 0,
        offset=last.offset + last.line_count if last else 0,
        line_count=len(lines),
        text="\n".join(json.dumps(line) for line in lines),
    )
