"""The Celery application. Configuration lives in settings (CELERY_* names)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cicd.settings")

app = Celery("cicd")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@app.on_after_finalize.connect
def _schedule_periodic_tasks(sender: Celery, **_: object) -> None:
    from django.conf import settings

    sender.add_periodic_task(
        settings.CICD_WORKER_PING_SECONDS, sender.signature("cicd.tasks.ping"), name="worker ping"
    )
    sender.add_periodic_task(
        settings.CICD_REAP_EVERY_SECONDS,
        sender.signature("runners.tasks.reap_orphaned_containers"),
        name="reap orphaned job containers",
    )
    sender.add_periodic_task(
        settings.CICD_REAP_LEASES_SECONDS,
        sender.signature("runs.tasks.reap_expired_leases"),
        name="requeue jobs of lost workers",
        # A reaper message that waited longer than one period is stale: the next one is due.
        expires=settings.CICD_REAP_LEASES_SECONDS,
    )
    sender.add_periodic_task(
        settings.CICD_WEBHOOK_RETRY_SECONDS,
        sender.signature("webhooks.tasks.retry_unfinished_deliveries"),
        name="finish webhook deliveries whose processing never ended",
        expires=settings.CICD_WEBHOOK_RETRY_SECONDS,
    )
    sender.add_periodic_task(
        settings.CICD_SCHEDULE_TICK_SECONDS,
        sender.signature("webhooks.tasks.fire_schedules"),
        name="start scheduled runs",
        expires=settings.CICD_SCHEDULE_TICK_SECONDS,
    )
    sender.add_periodic_task(
        settings.CICD_GATE_SWEEP_SECONDS,
        sender.signature("deployments.tasks.sweep"),
        name="release jobs whose wait timer ran out; fail deployments whose worker died",
        expires=settings.CICD_GATE_SWEEP_SECONDS,
    )
    retention_seconds = settings.CICD_RETENTION_INTERVAL_MINUTES * 60
    sender.add_periodic_task(
        retention_seconds,
        sender.signature("runs.tasks.run_retention"),
        name="expire artifacts, caches, logs and workspaces; prune unused blobs",
        expires=retention_seconds,
    )
