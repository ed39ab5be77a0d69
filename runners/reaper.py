"""Removes what the Docker executor left behind when its worker died between create and cleanup.

Everything a job creates carries the labels `cicd.job` and `cicd.created` (unix time). Whatever
carries them and is older than the threshold goes: containers first (they hold the networks and
volumes), then networks, then volumes. The threshold must be longer than the longest job
(`timeout-minutes` is 360 by default), so a job that is still running is never touched.

`reap_orphans` is a plain function: the `reap_containers` management command and the periodic
Celery beat entry both call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import docker
from docker.errors import APIError, NotFound

from runners.docker import LABEL_CREATED, LABEL_JOB

__all__ = ["DEFAULT_OLDER_THAN_SECONDS", "reap_orphans"]

log = logging.getLogger(__name__)

# The default job timeout (6 h) plus the job container's own watchdog margin and some slack.
DEFAULT_OLDER_THAN_SECONDS = 7 * 3600.0


def reap_orphans(
    client: docker.DockerClient,
    *,
    older_than_seconds: float,
    now: float | None = None,
    dry_run: bool = False,
) -> list[str]:
    """Remove labelled leftovers created more than `older_than_seconds` ago.

    Returns what was removed (or, with `dry_run`, what would be), as "container NAME",
    "network NAME" and "volume NAME", in the order of removal.
    """
    api = client.api
    now = time.time() if now is None else now
    cutoff = now - older_than_seconds
    selector = {"label": LABEL_JOB}
    removed: list[str] = []

    for container in api.containers(all=True, filters=selector):
        if _created(container.get("Labels"), container.get("Created")) >= cutoff:
            continue
        name = (container.get("Names") or [container["Id"][:12]])[0].lstrip("/")
        if dry_run or _remove(lambda c=container: api.remove_container(c["Id"], force=True)):
            removed.append(f"container {name}")

    for network in api.networks(filters=selector):
        if _created(network.get("Labels"), network.get("Created")) >= cutoff:
            continue
        if dry_run or _remove(lambda n=network: api.remove_network(n["Id"])):
            removed.append(f"network {network['Name']}")

    for volume in api.volumes(filters=selector).get("Volumes") or []:
        if _created(volume.get("Labels"), volume.get("CreatedAt")) >= cutoff:
            continue
        if dry_run or _remove(lambda v=volume: api.remove_volume(v["Name"], force=True)):
            removed.append(f"volume {volume['Name']}")

    if removed and not dry_run:
        log.info("reaped %d orphaned Docker objects: %s", len(removed), ", ".join(removed))
    return removed


def _created(labels: Mapping[str, str] | None, engine_created: Any) -> float:
    """When the object was made: our label, else what the engine says; unknown counts as now."""
    try:
        return float((labels or {})[LABEL_CREATED])
    except (KeyError, TypeError, ValueError):
        pass
    if isinstance(engine_created, int | float):
        return float(engine_created)  # containers: unix time
    if isinstance(engine_created, str) and engine_created:
        # Networks and volumes: RFC 3339 with nanoseconds, which fromisoformat cannot read.
        text = engine_created.replace("Z", "+00:00")
        head, dot, rest = text.partition(".")
        if dot:
            digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
            text = head + "." + digits[:6].ljust(6, "0") + rest[len(digits) :]
        try:
            return datetime.fromisoformat(text).timestamp()
        except ValueError:
            pass
    return time.time()


def _remove(action: Any) -> bool:
    try:
        action()
    except NotFound:
        return False  # gone already: someone else cleaned up
    except APIError as error:
        log.warning("reaper: could not remove a Docker object: %s", error)
        return False
    return True
