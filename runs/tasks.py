"""Celery tasks of the control plane: thin, they load ids and call into runs.*."""

from __future__ import annotations

import logging
import os
import socket

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(
    name="runs.tasks.execute_job",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def execute_job(job_id: int) -> None:
    """A wake-up: run the best job this worker may run. `job_id` is only the job whose queueing
    sent the message (for logs); if nothing is claimable, another worker took the work."""
    from django.conf import settings

    from runs.execution import execute_next

    hostname = execute_job.request.hostname or "worker"
    worker = f"{socket.gethostname()}:{hostname}:{os.getpid()}"
    conclusion = execute_next(worker=worker, labels=settings.CICD_WORKER_LABELS)
    if conclusion is None:
        log.debug("wake-up for job %s: nothing for %s to claim", job_id, worker)


@shared_task(name="runs.tasks.advance_run", acks_late=True, ignore_result=True)
def advance_run(run_id: int) -> None:
    from runs.scheduling import advance_run as advance

    advance(run_id)


@shared_task(name="runs.tasks.reap_expired_leases", ignore_result=True)
def reap_expired_leases() -> None:
    from runs.reaper import reap_expired_leases as reap

    reap()


@shared_task(name="runs.tasks.run_retention", ignore_result=True)
def run_retention() -> None:
    """Every kind of retention (runs.retention.cleanup), each CICD_RETENTION_INTERVAL_MINUTES."""
    from runs.retention import cleanup

    for report in cleanup():
        if report.count:
            log.info(
                "retention: %s: %d removed, %d bytes freed", report.kind, report.count, report.bytes
            )
