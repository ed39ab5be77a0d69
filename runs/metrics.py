"""`/metrics` in the Prometheus text format.

Many processes serve requests and run jobs (web, Celery workers), so in-process counters would
each see a slice. Instead a custom collector reads the database at scrape time: the database is
the source of truth, and every figure is one aggregate query (about ten per scrape whatever the
number of repositories, runs or workers). Cache lookups and saves are counted in CacheCounter
rows (runs.caches), which is what makes them counters here. The stored log size is the one
expensive figure: it comes from runs.usage's short-lived cache.

Access: a staff (or superuser) account, by API token (`Authorization: Bearer`, read scope) or
browser session, as a scraper is configured with a bearer token. CICD_METRICS_PUBLIC=true
serves it to anyone (a scraper on a private network); it lists repository and worker names.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from django.conf import settings
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder

from runs import usage
from runs.api.auth import AuthError, identify
from runs.api.usage import is_staff
from runs.models import CacheCounter, Job, Run
from runs.states import State

# CacheCounter field -> (metric name without _total, help).
CACHE_COUNTERS = {
    "hits": ("cicd_cache_hits", "cache lookups restored by the primary key"),
    "partial_hits": ("cicd_cache_partial_hits", "cache lookups restored by a restore-key"),
    "misses": ("cicd_cache_misses", "cache lookups that restored nothing"),
    "saves": ("cicd_cache_saves", "cache entries saved"),
    "evictions": ("cicd_cache_evictions", "cache entries evicted over the repository's limit"),
    "restore_seconds": ("cicd_cache_restore_seconds", "time spent looking up and restoring"),
    "restored_bytes": ("cicd_cache_restored_bytes", "bytes of archives restored"),
    "save_seconds": ("cicd_cache_save_seconds", "time spent archiving and saving"),
    "saved_bytes": ("cicd_cache_saved_bytes", "bytes of archives saved"),
}


class DatabaseCollector:
    """Reads the figures from the database at each scrape."""

    def describe(self) -> Iterable[Metric]:
        return []  # no database access when registered

    def collect(self) -> Iterator[Metric]:
        yield from self._repositories()
        yield from self._cache_counters()
        yield from self._states()
        yield from self._workers()
        blobs = usage.blob_totals()
        yield GaugeMetricFamily("cicd_blobs", "stored blobs (each content once)", blobs.count)
        yield GaugeMetricFamily(
            "cicd_blob_bytes", "bytes in blob storage, each content counted once", blobs.bytes
        )

    def _repositories(self) -> Iterator[Metric]:
        families = {
            "artifact_count": GaugeMetricFamily(
                "cicd_repository_artifacts", "artifacts kept", labels=["repository"]
            ),
            "artifact_bytes": GaugeMetricFamily(
                "cicd_repository_artifact_bytes",
                "bytes of stored artifact archives",
                labels=["repository"],
            ),
            "cache_count": GaugeMetricFamily(
                "cicd_repository_cache_entries", "cache entries kept", labels=["repository"]
            ),
            "cache_bytes": GaugeMetricFamily(
                "cicd_repository_cache_bytes",
                "bytes of stored cache archives",
                labels=["repository"],
            ),
            "log_lines": GaugeMetricFamily(
                "cicd_repository_log_lines", "stored log lines", labels=["repository"]
            ),
            "log_bytes": GaugeMetricFamily(
                "cicd_repository_log_bytes",
                "characters of stored log lines (refreshed every few minutes)",
                labels=["repository"],
            ),
        }
        for item in usage.repository_usage(cached_log_bytes=True):
            for field, family in families.items():
                family.add_metric([item.repository], getattr(item, field))
        yield from families.values()

    def _cache_counters(self) -> Iterator[Metric]:
        families = {
            field: CounterMetricFamily(name, help_text, labels=["repository"])
            for field, (name, help_text) in CACHE_COUNTERS.items()
        }
        rows = CacheCounter.objects.values_list(
            "repository__organisation__slug", "repository__slug", *CACHE_COUNTERS
        ).order_by("repository__organisation__slug", "repository__slug")
        for organisation, slug, *values in rows:
            for family, value in zip(families.values(), values, strict=True):
                family.add_metric([f"{organisation}/{slug}"], value)
        yield from families.values()

    def _states(self) -> Iterator[Metric]:
        for model, name, what in ((Run, "cicd_runs", "runs"), (Job, "cicd_jobs", "jobs")):
            counts = dict(model.objects.values_list("state").annotate(n=Count("id")).order_by())
            family = GaugeMetricFamily(name, f"{what} by state", labels=["state"])
            for state in State.values:
                family.add_metric([state], counts.get(state, 0))
            yield family
        queued = Job.objects.filter(state=State.QUEUED).aggregate(
            count=Count("id"), oldest=Min("queued_at")
        )
        yield GaugeMetricFamily("cicd_jobs_queued", "jobs waiting for a worker", queued["count"])
        oldest = queued["oldest"]
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "cicd_jobs_queued_oldest_seconds", "how long the oldest queued job has waited", age
        )

    def _workers(self) -> Iterator[Metric]:
        labels = ["worker", "executor"]
        workspace = GaugeMetricFamily(
            "cicd_worker_workspace_bytes", "bytes under the worker's work directory", labels=labels
        )
        free = GaugeMetricFamily(
            "cicd_worker_disk_free_bytes", "free bytes on the worker's data disk", labels=labels
        )
        total = GaugeMetricFamily(
            "cicd_worker_disk_total_bytes", "size of the worker's data disk", labels=labels
        )
        heartbeat = GaugeMetricFamily(
            "cicd_worker_last_heartbeat_age_seconds",
            "seconds since the worker was last heard from",
            labels=labels,
        )
        busy = GaugeMetricFamily("cicd_worker_busy", "1 while running a job", labels=labels)
        now = timezone.now()
        for worker in usage.worker_usage(now=now):
            values = [worker.name, worker.executor]
            # A worker that never reported its storage has no sample rather than a false 0.
            if worker.workspace_bytes is not None:
                workspace.add_metric(values, worker.workspace_bytes)
            if worker.disk_free_bytes is not None:
                free.add_metric(values, worker.disk_free_bytes)
            if worker.disk_total_bytes is not None:
                total.add_metric(values, worker.disk_total_bytes)
            if worker.last_heartbeat is not None:
                heartbeat.add_metric(values, (now - worker.last_heartbeat).total_seconds())
            busy.add_metric(values, 1 if worker.busy else 0)
        yield from (workspace, free, total, heartbeat, busy)


def registry() -> CollectorRegistry:
    found = CollectorRegistry(auto_describe=False)
    found.register(DatabaseCollector())  # type: ignore[arg-type]
    return found


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    refusal = _refusal(request)
    if refusal is not None:
        return refusal
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return HttpResponse(encoder(registry()), content_type=content_type)


def _refusal(request: HttpRequest) -> HttpResponse | None:
    if settings.CICD_METRICS_PUBLIC:
        return None
    try:
        caller = identify(request)
    except AuthError as error:
        return _plain(error.status, error.message)
    if not caller.user.is_authenticated:
        return _plain(401, "send a staff user's API token as 'Authorization: Bearer <token>'")
    if not is_staff(caller.user):
        return _plain(403, f"{caller.name} is not staff: /metrics is for staff accounts")
    return None


def _plain(status: int, message: str) -> HttpResponse:
    response = HttpResponse(message + "\n", status=status, content_type="text/plain")
    if status == 401:
        response["WWW-Authenticate"] = 'Bearer realm="cicd"'
    return response
