"""The reaper: gives the jobs of vanished or hung workers to another worker, or fails them.

A worker holds a running job through its lease, which its heartbeat renews. A worker that dies
(kill -9, lost host) stops renewing, so its lease runs out; a worker that hangs may keep
heartbeating, so a job also counts as lost once it has run past its `timeout-minutes` plus the
kill grace plus a margin (the worker would have ended it by then). A lost job is moved back to
QUEUED for another worker, at most until it has been claimed CICD_MAX_JOB_CLAIMS times; then it
fails with "lost contact with worker".

Each move is conditional on the lease token that was read, with the row locked, so a heartbeat
that renewed the lease in the meantime wins, and running the reaper twice (beat and the
`reap_jobs` command at once, or a replayed message) changes nothing more. The lost worker's later
writes are refused because the job no longer carries its token.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from pipelines import WorkflowError
from pipelines.model import DEFAULT_TIMEOUT_MINUTES
from runs.dispatch import notify_workers
from runs.models import Job
from runs.scheduling import advance_run, workflow_of
from runs.states import State
from runs.transitions import move_job

log = logging.getLogger(__name__)

LOST_CONTACT = "lost contact with worker"
# Past timeout-minutes plus the kill grace, the worker still has to stop its executor and report
# the result; only a worker that has not done so this much later is taken for hung.
TIMEOUT_MARGIN_SECONDS = 60.0

REQUEUED = "requeued"
FAILED = "failed"


@dataclass(frozen=True, slots=True)
class LostJob:
    """A running job whose worker is taken for gone, and what the reaper does (or did) about it."""

    job_id: int
    token: str
    worker: str
    claims: int
    why: str  # "lease expired" or "ran past timeout-minutes ..."
    action: str  # REQUEUED or FAILED


def reap_expired_leases(*, now: datetime | None = None) -> list[int]:
    """Requeue or fail every job whose worker is lost; returns the ids of the jobs moved."""
    return [lost.job_id for lost in reap_lost_jobs(now=now)]


def reap_lost_jobs(*, now: datetime | None = None, dry_run: bool = False) -> list[LostJob]:
    """The jobs found lost at `now` and moved (with `dry_run`, that would be moved)."""
    now = now or timezone.now()
    found = find_lost_jobs(now=now)
    if dry_run:
        return found
    return [lost for lost in found if reap_job(lost, now=now)]


def find_lost_jobs(*, now: datetime) -> list[LostJob]:
    # Lease expired: served by the partial index job_running_by_lease. The timeout check needs
    # every running job's workflow, which is fine: running jobs are at most the worker slots.
    floor = now - timedelta(seconds=settings.CICD_KILL_GRACE_SECONDS + TIMEOUT_MARGIN_SECONDS)
    candidates = (
        Job.objects.filter(state=State.RUNNING)
        .filter(Q(lease_expires_at__lt=now) | Q(started_at__lt=floor))
        .select_related("run")
        .order_by("id")
    )
    lost = []
    for job in candidates:
        why = _why_lost(job, now=now)
        if why:
            lost.append(
                LostJob(
                    job_id=job.id,
                    token=job.lease_token,
                    worker=job.claimed_by,
                    claims=job.claims,
                    why=why,
                    action=FAILED if job.claims >= settings.CICD_MAX_JOB_CLAIMS else REQUEUED,
                )
            )
    return lost


def _why_lost(job: Job, *, now: datetime) -> str:
    if job.lease_expires_at is not None and job.lease_expires_at < now:
        return "lease expired"
    if job.started_at is None:
        return ""
    minutes = _timeout_minutes(job)
    deadline = job.started_at + timedelta(
        minutes=minutes, seconds=settings.CICD_KILL_GRACE_SECONDS + TIMEOUT_MARGIN_SECONDS
    )
    if deadline < now:
        return f"ran past timeout-minutes {minutes:g} and the kill grace"
    return ""


def _timeout_minutes(job: Job) -> float:
    """The job's `timeout-minutes` when it is a number. An expression (say over the matrix) is
    evaluated by the worker only, so the control plane falls back to the default."""
    run = job.run
    try:
        definition = workflow_of(run.workflow_source, run.workflow_path).jobs[job.workflow_job_id]
    except (WorkflowError, KeyError):
        return float(DEFAULT_TIMEOUT_MINUTES)
    minutes = definition.timeout_minutes
    if isinstance(minutes, bool) or not isinstance(minutes, int | float):
        return float(DEFAULT_TIMEOUT_MINUTES)
    return float(minutes)


def reap_job(lost: LostJob, *, now: datetime) -> bool:
    """Move one job found lost, unless it changed since it was found. Returns whether it moved."""
    with transaction.atomic():
        # Lock the row and decide again from what is there now: a heartbeat that renewed the
        # lease since we read it, or a worker that reported its result, wins.
        job = (
            Job.objects.select_for_update()
            .select_related("run")
            .filter(id=lost.job_id, state=State.RUNNING, lease_token=lost.token)
            .first()
        )
        if job is None or not _why_lost(job, now=now):
            return False
        reason = f"{lost.why} (worker {lost.worker or '?'})"
        if job.cancel_requested:
            # It was being cancelled when its worker vanished: finish the cancel, never re-run it.
            moved = move_job(
                job.id,
                State.CANCELLED,
                from_states={State.RUNNING},
                token=lost.token,
                reason=f"{reason}; cancel requested",
                lease_expires_at=None,
            )
            if moved:
                advance_run(job.run_id)
        elif lost.action == REQUEUED:
            moved = move_job(
                job.id,
                State.QUEUED,
                from_states={State.RUNNING},
                token=lost.token,
                reason=reason,
                lease_expires_at=None,
                # Keep its place: a job that lost its worker should not go behind later arrivals.
                queued_at=F("queued_at"),
            )
            if moved:
                notify_workers(job.id)
        else:
            moved = move_job(
                job.id,
                State.FAILURE,
                from_states={State.RUNNING},
                token=lost.token,
                reason=f"{reason}; claimed {lost.claims} times",
                error=LOST_CONTACT,
                lease_expires_at=None,
            )
            if moved:
                advance_run(job.run_id)
    if moved:
        log.warning("job %s %s: %s", lost.job_id, lost.action, reason)
    return moved
