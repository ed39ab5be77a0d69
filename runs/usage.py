"""Storage usage: what each repository keeps (artifacts, caches, logs), what each worker
reported of its disk, and what blob storage holds once identical content is counted once.

Read by the usage API (runs.api.usage) and by /metrics (runs.metrics). Each total is one
aggregate query grouped by repository, never a query per repository, so the cost does not grow
with the number of repositories. The log total reads every stored line's length, the one
expensive figure: /metrics takes it from a short-lived cache (LOG_BYTES_CACHE_SECONDS), the API
computes it.

Artifact and cache bytes are those of their stored archives, counted once per artifact or entry
that refers to them: two artifacts of one content count twice here, once in `blob_totals`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.core.cache import cache
from django.db.models import Count, Q, Sum
from django.db.models.functions import Length
from django.utils import timezone

from runners.models import Worker
from runs.models import Artifact, Blob, CacheEntry, LogChunk, Repository

# Workers are one row per worker process and never deleted: those not heard from for this long
# are gone (a restart, a scaled-down pool) and are left out of the usage and the metrics.
WORKER_SEEN_WITHIN = timedelta(days=1)
LOG_BYTES_CACHE_SECONDS = 300
_LOG_BYTES_KEY = "cicd:usage:log-bytes"


@dataclass(slots=True)
class RepositoryUsage:
    repository: str
    artifact_count: int = 0
    artifact_bytes: int = 0
    cache_count: int = 0
    cache_bytes: int = 0
    log_lines: int = 0
    log_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.artifact_bytes + self.cache_bytes + self.log_bytes


@dataclass(frozen=True, slots=True)
class WorkerUsage:
    name: str
    executor: str
    busy: bool
    last_heartbeat: datetime | None
    workspace_bytes: int | None
    disk_free_bytes: int | None
    disk_total_bytes: int | None
    storage_reported_at: datetime | None


@dataclass(frozen=True, slots=True)
class BlobTotals:
    count: int
    bytes: int


def repository_usage(
    repository_ids: Sequence[int] | None = None, *, cached_log_bytes: bool = False
) -> list[RepositoryUsage]:
    """Usage of the given repositories (default: all), ordered by full name. Repositories that
    keep nothing are listed with zeros."""
    repositories = Repository.objects.all()
    if repository_ids is not None:
        repositories = repositories.filter(id__in=repository_ids)
    rows = repositories.order_by("organisation__slug", "slug").values_list(
        "id", "organisation__slug", "slug"
    )
    usage = {pk: RepositoryUsage(f"{organisation}/{slug}") for pk, organisation, slug in rows}
    if not usage:
        return []
    ids = list(usage) if repository_ids is not None else None

    artifacts = Artifact.objects.all()
    caches = CacheEntry.objects.all()
    if ids is not None:
        artifacts = artifacts.filter(run__repository_id__in=ids)
        caches = caches.filter(repository_id__in=ids)
    for pk, count, size in (
        artifacts.values("run__repository_id")
        .annotate(count=Count("id"), size=Sum("blob__size"))
        .values_list("run__repository_id", "count", "size")
    ):
        if pk in usage:
            usage[pk].artifact_count, usage[pk].artifact_bytes = count, size or 0
    for pk, count, size in (
        caches.values("repository_id")
        .annotate(count=Count("id"), size=Sum("size"))
        .values_list("repository_id", "count", "size")
    ):
        if pk in usage:
            usage[pk].cache_count, usage[pk].cache_bytes = count, size or 0
    logs = _cached_log_bytes() if cached_log_bytes and ids is None else _log_bytes(ids)
    for pk, (lines, size) in logs.items():
        if pk in usage:
            usage[pk].log_lines, usage[pk].log_bytes = lines, size
    return list(usage.values())


def _log_bytes(ids: Iterable[int] | None) -> dict[int, tuple[int, int]]:
    """Repository id -> (lines, characters of stored log lines). Characters, as stored JSON
    text: close to bytes for logs, which are mostly ASCII."""
    chunks = LogChunk.objects.all()
    if ids is not None:
        chunks = chunks.filter(job__run__repository_id__in=list(ids))
    return {
        pk: (lines or 0, size or 0)
        for pk, lines, size in chunks.values("job__run__repository_id")
        .annotate(lines=Sum("line_count"), size=Sum(Length("text")))
        .values_list("job__run__repository_id", "lines", "size")
    }


def _cached_log_bytes() -> dict[int, tuple[int, int]]:
    found = cache.get(_LOG_BYTES_KEY)
    if found is None:
        found = _log_bytes(None)
        cache.set(_LOG_BYTES_KEY, found, LOG_BYTES_CACHE_SECONDS)
    return found


def forget_cached_log_bytes() -> None:
    cache.delete(_LOG_BYTES_KEY)


def worker_usage(*, now: datetime | None = None) -> list[WorkerUsage]:
    """Workers heard from within WORKER_SEEN_WITHIN, by name."""
    now = now or timezone.now()
    seen = Q(last_heartbeat__gte=now - WORKER_SEEN_WITHIN) | Q(
        storage_reported_at__gte=now - WORKER_SEEN_WITHIN
    )
    return [
        WorkerUsage(
            name=worker.name,
            executor=worker.executor,
            busy=worker.current_job_id is not None,
            last_heartbeat=worker.last_heartbeat,
            workspace_bytes=worker.workspace_bytes,
            disk_free_bytes=worker.disk_free_bytes,
            disk_total_bytes=worker.disk_total_bytes,
            storage_reported_at=worker.storage_reported_at,
        )
        for worker in Worker.objects.filter(seen).order_by("name")
    ]


def blob_totals() -> BlobTotals:
    """What blob storage holds: each content once."""
    totals = Blob.objects.aggregate(count=Count("id"), size=Sum("size"))
    return BlobTotals(totals["count"] or 0, totals["size"] or 0)
