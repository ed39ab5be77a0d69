"""Celery tasks of environments and deployments: thin, they load ids and call into deployments.*."""

from __future__ import annotations

import logging

from celery import shared_task

log = logging.getLogger(__name__)


@shared_task(
    name="deployments.tasks.run_deployment",
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
)
def run_deployment(deployment_id: int) -> None:
    """Run a queued deployment without a job (a rollback); sent to the job workers' queue."""
    from deployments.service import run_queued_deployment

    outcome = run_queued_deployment(deployment_id)
    if outcome is None:
        log.info("deployment %s: not queued any more; nothing to run", deployment_id)


@shared_task(name="deployments.tasks.sweep", ignore_result=True)
def sweep() -> None:
    """Every CICD_GATE_SWEEP_SECONDS: let jobs whose wait timer ran out go, fail the
    deployments whose worker died (their lock's lease expired), and send again the rollbacks
    whose message no worker took."""
    from deployments import gates, service

    released = gates.sweep()
    stale = service.fail_stale_deployments()
    resent = service.resend_unclaimed_rollbacks()
    if released or stale or resent:
        log.info(
            "environments: %d waiting jobs moved, %d stale deployments ended, "
            "%d rollbacks sent again",
            len(released),
            len(stale),
            len(resent),
        )
