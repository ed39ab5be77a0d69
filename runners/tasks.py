"""Periodic housekeeping of the execution layer. Thin: the logic is in runners.reaper."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

log = logging.getLogger(__name__)


@shared_task(name="runners.tasks.reap_orphaned_containers")
def reap_orphaned_containers() -> list[str]:
    import docker
    from docker.errors import DockerException

    from runners.reaper import reap_orphans

    try:
        client = docker.from_env(timeout=10)
        client.ping()
    except DockerException:
        return []  # no engine on this host: nothing can have been left behind by it
    try:
        return reap_orphans(client, older_than_seconds=settings.CICD_ORPHAN_AGE_SECONDS)
    finally:
        client.close()
