"""Workers claim queued jobs with a lease and a fencing token, and keep the lease alive.

A claim is a conditional move QUEUED -> RUNNING that stores a fresh token; every later write of
that worker (logs, steps, the result) names the token, and is refused once the job was handed to
someone else.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db.models import F
from django.utils import timezone

from runs.models import Job
from runs.states import State
from runs.transitions import move_job


def claim_job(job_id: int, *, worker: str, lease_seconds: float) -> str | None:
    """Take a queued job. Returns the fencing token, or None if someone else got it first."""
    token = secrets.token_hex(16)
    moved = move_job(
        job_id,
        State.RUNNING,
        from_states={State.QUEUED},
        reason="claimed",
        worker=worker,
        lease_token=token,
        lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds),
        claimed_by=worker,
        claims=F("claims") + 1,
    )
    return token if moved else None


def heartbeat(job_id: int, *, token: str, lease_seconds: float) -> bool:
    """Extend the lease; False means the job is no longer ours (requeued, cancelled, ended)."""
    return (
        Job.objects.filter(id=job_id, state=State.RUNNING, lease_token=token).update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds)
        )
        == 1
    )
