"""Runs, jobs and steps as the API shows them (and `runs.openapi` describes them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from runs.models import Artifact, CacheEntry, Job, Run, Step


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat().replace("+00:00", "Z") if moment is not None else None


def duration_seconds(started: datetime | None, finished: datetime | None) -> float | None:
    """How long it ran: until now while it still runs."""
    if started is None:
        return None
    return round(((finished or timezone.now()) - started).total_seconds(), 3)


def branch_of(ref: str) -> str | None:
    return ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None


def run_dict(run: Run) -> dict[str, Any]:
    return {
        "id": run.id,
        "number": run.number,
        "repository": run.repository.full_name,
        "workflow": run.workflow_path,
        "workflow_name": run.workflow_name,
        "event": run.event,
        "ref": run.ref,
        "branch": branch_of(run.ref),
        "sha": run.sha,
        "actor": run.actor,
        "attempt": run.attempt,
        "state": run.state,
        "error": run.error,
        "inputs": run.inputs,
        "from_fork": run.from_fork,
        "created_at": iso(run.created_at),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_seconds": duration_seconds(run.started_at, run.finished_at),
    }


def job_dict(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "run": job.run_id,
        "attempt": job.attempt,
        "key": job.key,
        "name": job.name,
        "workflow_job_id": job.workflow_job_id,
        "matrix": job.matrix,
        "needs": job.needs,
        "runs_on": job.runs_on,
        "state": job.state,
        "error": job.error,
        "retry_attempt": job.retry_attempt,
        "runner": job.claimed_by,
        "queued_at": iso(job.queued_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "duration_seconds": duration_seconds(job.started_at, job.finished_at),
    }


def step_dict(step: Step) -> dict[str, Any]:
    return {
        "index": step.index,
        "name": step.name,
        "state": step.state,
        "outcome": step.outcome,
        "exit_code": step.exit_code,
        "error": step.error,
        "summary": step.summary,
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
    }


def artifact_dict(artifact: Artifact) -> dict[str, Any]:
    expired = artifact.expires_at <= timezone.now()
    return {
        "id": artifact.id,
        "name": artifact.name,
        "run": artifact.run_id,
        "attempt": artifact.attempt,
        "job": artifact.job_id,
        "size": artifact.size,
        "file_count": artifact.file_count,
        "digest": artifact.blob.sha256,
        "created_at": iso(artifact.created_at),
        "expires_at": iso(artifact.expires_at),
        "expired": expired,
        "download_url": None if expired else f"/api/v1/artifacts/{artifact.id}/zip",
    }


def cache_dict(entry: CacheEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "key": entry.key,
        "ref": entry.scope,
        "branch": branch_of(entry.scope),
        "version": entry.version,
        "size": entry.size,
        "run": entry.run_id,
        "created_at": iso(entry.created_at),
        "last_used_at": iso(entry.last_used_at),
    }
