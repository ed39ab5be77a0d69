"""Storage usage endpoints (runs.usage): everything for staff, one repository for its readers.

The whole picture (every repository, every worker's disk, blob storage) tells who the tenants
are and how the hosts are set up, so it needs a staff or superuser account; a repository's own
usage needs only the read role on it, like its runs.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from runs import permissions, usage
from runs.api import access
from runs.api.auth import Caller
from runs.api.http import ApiError, Query, endpoint
from runs.api.serialise import iso


def is_staff(user: Any) -> bool:
    return bool(user.is_authenticated and user.is_active and (user.is_staff or user.is_superuser))


@endpoint("GET")
def all_usage(request: HttpRequest, caller: Caller) -> JsonResponse:
    Query(request, ()).done()
    if not caller.user.is_authenticated:
        raise ApiError(
            401,
            "log in, or send an API token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="cicd"'},
        )
    if not is_staff(caller.user):
        raise ApiError(
            403, f"{caller.name} is not staff: the usage of all repositories is not shown"
        )
    blobs = usage.blob_totals()
    return JsonResponse(
        {
            "repositories": [repository_dict(item) for item in usage.repository_usage()],
            "workers": [worker_dict(worker) for worker in usage.worker_usage()],
            "blobs": {"count": blobs.count, "bytes": blobs.bytes},
        }
    )


@endpoint("GET")
def repository_usage(
    request: HttpRequest, caller: Caller, organisation: str, repository: str
) -> JsonResponse:
    Query(request, ()).done()
    target = access.repository(caller, organisation, repository, level=permissions.READ)
    [found] = usage.repository_usage([target.id])
    return JsonResponse(repository_dict(found))


def repository_dict(item: usage.RepositoryUsage) -> dict[str, Any]:
    return {
        "repository": item.repository,
        "artifact_count": item.artifact_count,
        "artifact_bytes": item.artifact_bytes,
        "cache_count": item.cache_count,
        "cache_bytes": item.cache_bytes,
        "log_lines": item.log_lines,
        "log_bytes": item.log_bytes,
        "total_bytes": item.total_bytes,
    }


def worker_dict(worker: usage.WorkerUsage) -> dict[str, Any]:
    return {
        "name": worker.name,
        "executor": worker.executor,
        "busy": worker.busy,
        "last_heartbeat": iso(worker.last_heartbeat),
        "workspace_bytes": worker.workspace_bytes,
        "disk_free_bytes": worker.disk_free_bytes,
        "disk_total_bytes": worker.disk_total_bytes,
        "storage_reported_at": iso(worker.storage_reported_at),
    }
