"""Celery tasks of the control plane: thin, they load ids and call into runs.*."""

from __future__ import annotations

import socket

from celery import shared_task


@shared_task(
    name="runs.tasks.execute_job",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def execute_job(job_id: int) -> None:
    from runs.execution import execute

    execute(job_id, worker=f"{socket.gethostname()}:{execute_job.request.hostname or 'worker'}")


@shared_task(name="runs.tasks.advance_run", acks_late=True, ignore_result=True)
def advance_run(run_id: int) -> None:
    from runs.scheduling import advance_run as advance

    advance(run_id)
