"""A repository's `actions/cache` entries through the API (described in `runs.openapi`).

Listing needs the read role; deleting (one entry by id, or every entry of a key) needs the admin
role, as deleting caches is on GitHub, and leaves an AuditEntry. A deleted entry's archive stays
in blob storage until blob pruning finds nothing refers to it (`runs.retention`): identical
content may be shared with artifacts and other entries.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse

from runs import permissions
from runs.api import access
from runs.api.auth import Caller
from runs.api.http import (
    MAX_ID,
    ApiError,
    Query,
    endpoint,
    json_body,
    refuse_fields,
    unknown_fields,
    valid_id,
)
from runs.api.serialise import cache_dict
from runs.caches import (
    MAX_KEY_LENGTH,
    MAX_SCOPE_LENGTH,
    Amount,
    delete_entries,
    entry_max_bytes,
    repository_max_bytes,
    usage,
    with_key_prefix,
)
from runs.models import AuditEntry, CacheEntry, Repository

READ, ADMIN = permissions.READ, permissions.ADMIN
DEFAULT_PAGE = 30
MAX_PAGE = 100
LIST_FILTERS = ("key", "ref", "after", "limit")


@endpoint("GET", "DELETE")
def repository_caches(
    request: HttpRequest, caller: Caller, organisation: str, repository: str
) -> JsonResponse:
    """GET: the entries, newest first, a page at a time, with the repository's total size and
    limit. DELETE `?key=K[&ref=R]`: every entry whose key is exactly K (of ref R)."""
    if request.method == "DELETE":
        return _delete_by_key(request, caller, organisation, repository)
    query = Query(request, LIST_FILTERS)
    prefix = query.text("key", max_length=MAX_KEY_LENGTH)
    ref = query.text("ref", max_length=MAX_SCOPE_LENGTH)
    after = query.integer("after", default=None, minimum=1, maximum=MAX_ID)
    limit = query.integer("limit", default=DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE) or 1
    query.done()
    target = access.repository(caller, organisation, repository, level=READ)
    rows = CacheEntry.objects.filter(repository=target)
    if prefix:
        rows = with_key_prefix(rows, prefix)
    if ref:
        rows = rows.filter(scope=full_ref(ref))
    if after is not None:
        rows = rows.filter(id__lt=after)
    page = list(rows.order_by("-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    kept = usage(target.id)
    return JsonResponse(
        {
            "caches": [cache_dict(entry) for entry in page],
            "next": page[-1].id if more else None,
            "total_count": kept.entries,
            "total_size": kept.bytes,
            "size_limit": repository_max_bytes(),
            "entry_size_limit": entry_max_bytes(),
        }
    )


def _delete_by_key(
    request: HttpRequest, caller: Caller, organisation: str, repository: str
) -> JsonResponse:
    query = Query(request, ("key", "ref"))
    key = query.text("key", max_length=MAX_KEY_LENGTH)
    ref = query.text("ref", max_length=MAX_SCOPE_LENGTH)
    if key is None and "key" not in query.fields:
        # Never "delete everything" by a forgotten parameter.
        query.fields["key"] = "is required: the complete key of the entries to delete"
    query.done()
    target = access.repository(caller, organisation, repository, level=ADMIN)
    refuse_fields(unknown_fields(json_body(request), ()))
    rows = CacheEntry.objects.filter(repository=target, key=key)
    if ref:
        rows = rows.filter(scope=full_ref(ref))
    removed = delete_entries(rows)
    if not removed.entries:
        where = f" of ref {full_ref(ref)}" if ref else ""
        raise ApiError(404, f"no cache entry with key {key!r}{where} in {target.full_name}")
    detail = {"key": key, "ref": full_ref(ref) if ref else None}
    _audit(request, caller, target, removed, detail)
    return _deleted(removed)


@endpoint("DELETE")
def delete_cache(
    request: HttpRequest, caller: Caller, organisation: str, repository: str, cache_id: int
) -> JsonResponse:
    Query(request, ()).done()
    target = access.repository(caller, organisation, repository, level=ADMIN)
    refuse_fields(unknown_fields(json_body(request), ()))
    rows = CacheEntry.objects.filter(id=cache_id if valid_id(cache_id) else None, repository=target)
    entry = rows.first()
    removed = delete_entries(rows) if entry is not None else Amount()
    if entry is None or not removed.entries:
        raise ApiError(404, f"no cache entry {cache_id} in {target.full_name}")
    _audit(request, caller, target, removed, {"cache": entry.id, "key": entry.key})
    return _deleted(removed)


def full_ref(ref: str) -> str:
    """A branch name as its full ref; a full ref (refs/pull/7/head, refs/tags/v1) as it is."""
    return ref if ref.startswith("refs/") else f"refs/heads/{ref}"


def _deleted(removed: Amount) -> JsonResponse:
    return JsonResponse({"deleted": removed.entries, "deleted_size": removed.bytes})


def _audit(
    request: HttpRequest,
    caller: Caller,
    repository: Repository,
    removed: Amount,
    detail: dict[str, Any],
) -> None:
    AuditEntry.objects.create(
        action="cache.delete",
        repository=repository,
        actor=caller.name,
        remote_address=request.META.get("REMOTE_ADDR", "")[:100],
        detail={**detail, "entries": removed.entries, "bytes": removed.bytes, "via": caller.via},
    )
