"""Caches (`actions/cache`) on the server side: the CacheStore a worker gives its executor,
scoping, least-recently-used eviction, counters, and deleting entries by hand.

Scopes keep a pull request from poisoning the default branch. An entry belongs to the git ref of
the run that saved it (`refs/heads/feature`, `refs/pull/7/head`, `refs/tags/v1`); a run reads
its own ref, then (for a pull request) its base branch, then the repository's default branch. A
run on the default branch therefore reads the default branch only: nothing another branch or a
pull request saved can ever be restored there.

Saving is atomic. The archive goes to content-addressed blob storage (`runs.storage`) first,
outside any transaction: a slow store must not hold row locks, and a blob is complete under its
name before anything refers to it. The entry row is then created in a transaction that checks the
worker still holds the job (its lease token), as every write of a running job does. The unique
(repository, scope, key, version) constraint settles two jobs saving one key at once: one row
wins, the other save gets False and keeps nothing; a reader only ever finds a row whose blob is
complete.

Eviction keeps each repository under CICD_CACHE_REPO_MAX_GB: after a save, the least recently
used entries go until the total fits. Evictions of one repository are serialised by a row lock
on its CacheCounter (PostgreSQL; SQLite has one writer anyway), and each delete is conditional
on the entry not having been used since it was chosen. Deleting an entry never deletes its blob:
blobs are shared by content with artifacts and other entries, and unreferenced ones are pruned
by retention (`runs.retention`) after a grace period.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Count, F, QuerySet, Sum
from django.db.models.functions import Left
from django.utils import timezone

from pipelines.triggers import BRANCH_PREFIX
from runners.artifacts import human_size
from runners.caches import CacheError, CacheHit
from runs.models import CacheCounter, CacheEntry, Job, Run
from runs.storage import open_blob, store_blob

log = logging.getLogger(__name__)

MAX_KEY_LENGTH = CacheEntry._meta.get_field("key").max_length or 512
MAX_VERSION_LENGTH = CacheEntry._meta.get_field("version").max_length or 64
MAX_SCOPE_LENGTH = CacheEntry._meta.get_field("scope").max_length or 255
PULL_REQUEST_EVENTS = ("pull_request", "pull_request_target")
# What record() adds to, per outcome: (count field, seconds field, bytes field).
_COUNTED = {
    "hit": ("hits", "restore_seconds", "restored_bytes"),
    "partial": ("partial_hits", "restore_seconds", "restored_bytes"),
    "miss": ("misses", "restore_seconds", None),
    "save": ("saves", "save_seconds", "saved_bytes"),
}
# An eviction pass whose victims were all used meanwhile chooses again, this many times at most
# (the next save evicts what is still over).
EVICTION_ROUNDS = 5


def entry_max_bytes() -> int:
    return int(settings.CICD_CACHE_ENTRY_MAX_MB * 1024 * 1024)


def repository_max_bytes() -> int:
    return int(settings.CICD_CACHE_REPO_MAX_GB * 1024**3)


# ------------------------------------------------------------------------------------ scopes


def readable_scopes(run: Run) -> list[str]:
    """The scopes a run restores from, in the order they are searched."""
    default = BRANCH_PREFIX + run.repository.default_branch
    scopes = [run.ref]
    if run.event in PULL_REQUEST_EVENTS:
        base = pull_request_base(run)
        if base is not None:
            scopes.append(base)
    scopes.append(default)
    return list(dict.fromkeys(scopes))  # the default branch's own runs: one scope


def pull_request_base(run: Run) -> str | None:
    """The target branch of a pull request run, as a full ref, from the event payload the
    server stored when it started the run (GitHub and Gitea send `main`, the other sources are
    normalised to `refs/heads/main`); None when the payload does not say."""
    pull_request = (run.event_payload or {}).get("pull_request")
    base = pull_request.get("base") if isinstance(pull_request, dict) else None
    ref = base.get("ref") if isinstance(base, dict) else None
    if not isinstance(ref, str) or not ref or "\x00" in ref:
        return None
    if ref.startswith("refs/"):
        return ref if ref.startswith(BRANCH_PREFIX) and len(ref) > len(BRANCH_PREFIX) else None
    return BRANCH_PREFIX + ref


# ------------------------------------------------------------------------------- the store


class DatabaseCacheStore:
    """The CacheStore of one running job (see runners.caches): reads its run's readable scopes,
    saves into its run's ref, fenced by the job's lease token."""

    def __init__(self, job_id: int, token: str) -> None:
        self.job_id = job_id
        self.token = token
        self.max_entry_bytes = entry_max_bytes()
        self._job: Job | None = None

    @property
    def job(self) -> Job:
        if self._job is None:
            self._job = (
                Job.objects.select_related("run__repository")
                .defer("run__workflow_source")
                .get(id=self.job_id)
            )
        return self._job

    @property
    def repository_id(self) -> int:
        return self.job.run.repository_id

    def scopes(self) -> list[str]:
        return readable_scopes(self.job.run)

    def lookup(self, keys: Sequence[str], version: str) -> CacheHit | None:
        if not keys or not keys[0]:
            raise CacheError("a cache lookup needs a key")
        keys = [key for key in keys if key]  # an empty restore-key would match everything
        for key in keys:
            _check_key(key)
        _check_version(version)
        primary = keys[0]
        for scope in self.scopes():
            entries = CacheEntry.objects.filter(
                repository_id=self.repository_id, scope=scope, version=version
            )
            exact = entries.filter(key=primary).first()
            if exact is not None:
                return _hit(exact, exact=True)
            for key in keys:
                found = newest_with_prefix(entries, key)
                if found is not None:
                    return _hit(found, exact=found.key == primary)
        return None

    def open(self, hit: CacheHit) -> BinaryIO:
        entry_id = int(hit.id) if hit.id.isdigit() else None
        entry = (
            CacheEntry.objects.select_related("blob")
            .filter(id=entry_id, repository_id=self.repository_id, scope__in=self.scopes())
            .first()
            if entry_id is not None
            else None
        )
        if entry is None:
            raise CacheError(f"cache entry {hit.key!r} was removed before it could be restored")
        now = timezone.now()
        # Conditional: a slower concurrent open must not move the time back.
        CacheEntry.objects.filter(id=entry.id, last_used_at__lt=now).update(last_used_at=now)
        try:
            # A failure part-way through the read is a CacheError too (the restore step says so).
            return open_blob(entry.blob, error=CacheError)
        except OSError as error:
            log.error("cache entry %s: its blob %s cannot be read: %s", entry.id, entry.blob, error)
            raise CacheError(f"cache entry {hit.key!r} cannot be read from storage") from None

    def save(self, key: str, version: str, archive: BinaryIO, size: int) -> bool:
        from runs.execution import fenced  # it imports this module

        _check_key(key)
        _check_version(version)
        run = self.job.run
        scope = run.ref
        if len(scope) > MAX_SCOPE_LENGTH:
            raise CacheError(
                f"caches cannot be saved from a ref longer than {MAX_SCOPE_LENGTH} characters"
            )
        self._check_size(key, size)
        if self._exists(scope, key, version):
            return False  # keep the archive out of storage: entries are immutable
        blob = store_blob(archive, error=CacheError)
        self._check_size(key, blob.size)
        try:
            with fenced(self.job_id, self.token):
                entry = CacheEntry.objects.create(
                    repository_id=run.repository_id,
                    scope=scope,
                    key=key,
                    version=version,
                    blob=blob,
                    size=blob.size,
                    run=run,
                )
        except IntegrityError:
            if self._exists(scope, key, version):
                return False  # another job saved this key first
            raise
        evict_over_limit(run.repository_id, keep=entry.id)
        return True

    def record(self, outcome: str, *, seconds: float, size: int) -> None:
        record(self.repository_id, outcome, seconds=seconds, size=size)

    def _exists(self, scope: str, key: str, version: str) -> bool:
        return CacheEntry.objects.filter(
            repository_id=self.repository_id, scope=scope, key=key, version=version
        ).exists()

    def _check_size(self, key: str, size: int) -> None:
        if size > self.max_entry_bytes:
            raise CacheError(
                f"cache {key!r} is {human_size(size)}, over the limit of "
                f"{human_size(self.max_entry_bytes)} per entry: cache fewer paths "
                "(the server's CICD_CACHE_ENTRY_MAX_MB); nothing was saved"
            )


def _hit(entry: CacheEntry, *, exact: bool) -> CacheHit:
    return CacheHit(key=entry.key, exact=exact, size=entry.size, id=str(entry.id))


def _check_key(key: str) -> None:
    if not key:
        raise CacheError("a cache key must not be empty")
    if len(key) > MAX_KEY_LENGTH:
        raise CacheError(
            f"cache key {key[:40]!r}... is {len(key)} characters; at most {MAX_KEY_LENGTH}"
        )
    if "\x00" in key:
        raise CacheError(f"cache key {key.replace(chr(0), '')!r} contains a NUL character")


def _check_version(version: str) -> None:
    if not version or len(version) > MAX_VERSION_LENGTH or "\x00" in version:
        raise CacheError(f"cache version {version[:80]!r} is not a valid version")


def newest_with_prefix(entries: QuerySet[CacheEntry], prefix: str) -> CacheEntry | None:
    """The most recently created of `entries` whose key starts with `prefix`.

    `startswith` is LIKE, which SQLite compares without case: comparing the key's first
    characters as well keeps prefixes case-sensitive on every database, as exact keys are."""
    return with_key_prefix(entries, prefix).order_by("-created_at", "-id").first()


def with_key_prefix(entries: QuerySet[CacheEntry], prefix: str) -> QuerySet[CacheEntry]:
    return (
        entries.filter(key__startswith=prefix)
        .alias(key_head=Left("key", len(prefix)))
        .filter(key_head=prefix)
    )


# ---------------------------------------------------------------------------------- counters


def record(repository_id: int, outcome: str, *, seconds: float, size: int) -> None:
    """Count a restore ("hit", "partial", "miss") or a save ("save") of a repository."""
    try:
        count, seconds_field, bytes_field = _COUNTED[outcome]
    except KeyError:
        raise ValueError(f"unknown cache outcome {outcome!r}; use {', '.join(_COUNTED)}") from None
    changes = {count: F(count) + 1, seconds_field: F(seconds_field) + max(seconds, 0.0)}
    if bytes_field is not None:
        changes[bytes_field] = F(bytes_field) + max(size, 0)
    _counter(repository_id).update(**changes)


def _counter(repository_id: int) -> QuerySet[CacheCounter]:
    CacheCounter.objects.get_or_create(repository_id=repository_id)
    return CacheCounter.objects.filter(repository_id=repository_id)


# ---------------------------------------------------------------------------------- eviction


@dataclass(frozen=True, slots=True)
class Amount:
    """Cache entries and their bytes (removed by a call, or kept by a repository)."""

    entries: int = 0
    bytes: int = 0

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.entries + other.entries, self.bytes + other.bytes)


def evict_over_limit(repository_id: int, *, keep: int | None = None) -> Amount:
    """Delete the repository's least recently used entries while their total size is over
    CICD_CACHE_REPO_MAX_GB; `keep` (the entry just saved) goes only if it alone is over."""
    limit = repository_max_bytes()
    counter = _counter(repository_id)
    removed = Amount()
    for _ in range(EVICTION_ROUNDS):
        with transaction.atomic():
            # Concurrent evictions of one repository queue here, and each sees what the previous
            # one deleted: two of them never both evict for the same excess.
            counter.select_for_update().values_list("id", flat=True).get()
            entries = CacheEntry.objects.filter(repository_id=repository_id)
            excess = (entries.aggregate(total=Sum("size"))["total"] or 0) - limit
            if excess <= 0:
                break
            others = entries.exclude(id=keep) if keep is not None else entries
            victims, freed, last_used = [], 0, None
            for entry_id, size, used in (
                others.order_by("last_used_at", "id")
                .values_list("id", "size", "last_used_at")
                .iterator()
            ):
                victims.append(entry_id)
                freed, last_used = freed + size, used
                if freed >= excess:
                    break
            if victims:
                # Only entries nobody restored since they were chosen: one just used is not
                # least recently used any more (the next round chooses again).
                chosen = CacheEntry.objects.filter(id__in=victims, last_used_at__lte=last_used)
            else:
                chosen = entries  # only `keep` is left, and alone it is over the limit
            deleted = _delete(chosen)
            if deleted.entries:
                counter.update(evictions=F("evictions") + deleted.entries)
                log.info(
                    "caches of repository %s: evicted %d entr(ies) of %s, over the limit of %s",
                    repository_id,
                    deleted.entries,
                    human_size(deleted.bytes),
                    human_size(limit),
                )
            removed += deleted
    return removed


def delete_entries(entries: QuerySet[CacheEntry]) -> Amount:
    """Delete entries (an operator or an API call): their blobs stay until pruned."""
    with transaction.atomic():
        return _delete(entries)


def _delete(entries: QuerySet[CacheEntry]) -> Amount:
    """Delete with the rows locked, counting what this call removed (not what a concurrent
    delete took first)."""
    rows = list(entries.select_for_update().values_list("id", "size"))
    if not rows:
        return Amount()
    count, _ = CacheEntry.objects.filter(id__in=[entry_id for entry_id, _ in rows]).delete()
    return Amount(count, sum(size for _, size in rows))


def usage(repository_id: int) -> Amount:
    """The entries a repository keeps and their bytes."""
    totals = CacheEntry.objects.filter(repository_id=repository_id).aggregate(
        entries=Count("id"), bytes=Sum("size")
    )
    return Amount(totals["entries"] or 0, totals["bytes"] or 0)
