"""Control-plane housekeeping tasks that belong to no app in particular."""

from __future__ import annotations

from celery import shared_task

from cicd import health


@shared_task(name="cicd.tasks.ping")
def ping(nonce: str = "") -> None:
    health.record_worker_ping(nonce)
