"""Telling workers there is work. The database says what to run; this only wakes workers up.

Every caller that makes a job runnable (queued by the DAG, requeued by the reaper, retried)
calls `notify_workers` inside its transaction; the message is sent once that commits.
"""

from __future__ import annotations

import functools

from django.conf import settings
from django.db import transaction


def notify_workers(job_id: int, *, countdown: float | None = None) -> None:
    """`countdown`: the job may not start before then (a retry's backoff); the message waits."""
    transaction.on_commit(functools.partial(_send, job_id, countdown))


def _send(job_id: int, countdown: float | None = None) -> None:
    from runs.tasks import execute_job

    execute_job.apply_async(args=[job_id], queue=settings.CELERY_QUEUE_JOBS, countdown=countdown)
