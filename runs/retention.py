"""Retention: what has outlived its time goes, and the disk space it held is given back.

Five kinds, each a function taking `now` (the clock, fixed in tests) and `dry_run`, returning a
Report of what it removed (or would remove) with the bytes freed:

- artifacts past their `expires_at` (set at upload from `retention-days`, default
  CICD_ARTIFACT_RETENTION_DAYS);
- logs (LogChunk rows) of runs that ended more than CICD_LOG_RETENTION_DAYS ago; the run keeps
  `logs_removed_at` so that pages can say the log was removed rather than show nothing;
- cache entries nobody restored for CICD_CACHE_UNUSED_DAYS;
- job directories of the local executor under CICD_WORK_DIR left behind by a worker that died
  (the executor removes its own at the end of each job), untouched for
  CICD_WORKSPACE_ORPHAN_HOURS and not belonging to a running job. Docker jobs keep their
  workspace in labelled volumes, which `runners.reaper` removes with their containers;
- blobs no artifact or cache entry refers to, once CICD_BLOB_PRUNE_GRACE_MINUTES have passed
  since they were last stored; also stored content with no row and unfinished upload spools.

Artifacts and cache entries share blobs by content, so the bytes an expired artifact frees are
those of its blob when nothing else still refers to it: the blob is pruned right away (same
grace rule), and the report counts its size on the last reference removed. `prune_blobs` then
only finds what nothing released explicitly.

Every removal is a conditional statement on what made the item a candidate (`expires_at`,
`last_used_at`, `finished_at`/`logs_removed_at`, no reference and an old `last_stored_at`), so
two cleanups at once, or a cleanup beside a job that just used an item, never remove what is in
use and never count the same bytes twice. A dry run lists the same candidates; its byte count
can be lower than the real run's when one blob is shared by items of different kinds expiring
together (the real run frees it with the last of them).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Q, QuerySet, Sum
from django.db.models.functions import Length
from django.utils import timezone

from runners.artifacts import human_size
from runners.registry import tree_size
from runs.models import Artifact, Blob, CacheEntry, Job, LogChunk, Run
from runs.states import FINAL_STATES, State
from runs.storage import (
    delete_collision_leftover,
    delete_stray_content,
    delete_unused_blob,
    spool_leftovers,
    stored_names,
    stored_stat,
    unreferenced,
)

log = logging.getLogger(__name__)

BATCH = 500
# The local executor names each job directory `<job id>-<claim number>` (runs.execution).
_JOB_DIRECTORY = re.compile(r"(\d+)-\d+")
# A directory being removed by a cleanup is first renamed to this prefix: the rename is the
# claim (two cleanups never both measure and count it), and a removal cut short by a crash is
# finished by the next cleanup whatever its age.
_REMOVING = ".removing-"


@dataclass(frozen=True, slots=True)
class Removal:
    description: str
    bytes: int = 0


@dataclass(slots=True)
class Report:
    kind: str
    dry_run: bool
    items: list[Removal] = field(default_factory=list)

    def add(self, description: str, size: int = 0) -> None:
        self.items.append(Removal(description, size))

    @property
    def count(self) -> int:
        return len(self.items)

    @property
    def bytes(self) -> int:
        return sum(item.bytes for item in self.items)


def _now(now: datetime | None) -> datetime:
    return now or timezone.now()


def _grace_cutoff(now: datetime) -> datetime:
    return now - timedelta(minutes=settings.CICD_BLOB_PRUNE_GRACE_MINUTES)


def _when(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC" if moment else "?"


def _batches(candidates: QuerySet[Any], *fields: str) -> Iterator[list[dict[str, Any]]]:
    """Candidates a batch at a time by ascending id (keyset: no OFFSET, and rows removed by the
    previous batch do not shift the next one)."""
    last = 0
    while True:
        batch = list(candidates.filter(id__gt=last).order_by("id").values("id", *fields)[:BATCH])
        if not batch:
            return
        yield batch
        last = batch[-1]["id"]


# ------------------------------------------------------------------------ artifacts and caches


def expire_artifacts(*, now: datetime | None = None, dry_run: bool = False) -> Report:
    """Remove artifacts whose `expires_at` has passed, and the blobs only they referred to."""
    now = _now(now)
    report = Report("artifacts", dry_run)
    expired = Artifact.objects.filter(expires_at__lte=now)
    # Whether removing this artifact frees its blob: no unexpired artifact and no cache entry
    # refers to it, and no expired artifact removed after this one (by id) does.
    same_blob = {"blob": OuterRef("blob")}
    candidates = expired.annotate(
        kept_by_artifact=Exists(Artifact.objects.filter(**same_blob, expires_at__gt=now)),
        kept_by_cache=Exists(CacheEntry.objects.filter(**same_blob)),
        freed_later=Exists(expired.filter(**same_blob, id__gt=OuterRef("id"))),
    )
    fields = ("name", "attempt", "expires_at", "blob_id", "blob__size", "blob__last_stored_at")
    fields += ("run__number", "run__repository__slug", "run__repository__organisation__slug")
    fields += ("kept_by_artifact", "kept_by_cache", "freed_later")
    for batch in _batches(candidates, *fields):
        for row in batch:
            description = (
                f"artifact {row['name']!r} of {_run_name(row)} (attempt {row['attempt']}), "
                f"expired {_when(row['expires_at'])}"
            )
            if dry_run:
                report.add(description, _would_free(row, now))
                continue
            if not Artifact.objects.filter(id=row["id"], expires_at__lte=now).delete()[0]:
                continue  # removed by a concurrent cleanup
            report.add(description, _release_blob(row["blob_id"], now))
    return report


def expire_caches(*, now: datetime | None = None, dry_run: bool = False) -> Report:
    """Remove cache entries nobody restored (or saved) for CICD_CACHE_UNUSED_DAYS."""
    now = _now(now)
    report = Report("caches", dry_run)
    cutoff = now - timedelta(days=settings.CICD_CACHE_UNUSED_DAYS)
    unused = CacheEntry.objects.filter(last_used_at__lt=cutoff)
    same_blob = {"blob": OuterRef("blob")}
    candidates = unused.annotate(
        kept_by_artifact=Exists(Artifact.objects.filter(**same_blob)),
        kept_by_cache=Exists(CacheEntry.objects.filter(**same_blob, last_used_at__gte=cutoff)),
        freed_later=Exists(unused.filter(**same_blob, id__gt=OuterRef("id"))),
    )
    fields = ("key", "scope", "last_used_at", "blob_id", "blob__size", "blob__last_stored_at")
    fields += ("repository__slug", "repository__organisation__slug")
    fields += ("kept_by_artifact", "kept_by_cache", "freed_later")
    for batch in _batches(candidates, *fields):
        for row in batch:
            repository = f"{row['repository__organisation__slug']}/{row['repository__slug']}"
            description = (
                f"cache {row['key']!r} of {repository} ({row['scope']}), "
                f"last used {_when(row['last_used_at'])}"
            )
            if dry_run:
                report.add(description, _would_free(row, now))
                continue
            # Conditional: an entry restored since it was chosen is in use again.
            if not CacheEntry.objects.filter(id=row["id"], last_used_at__lt=cutoff).delete()[0]:
                continue
            report.add(description, _release_blob(row["blob_id"], now))
    return report


def _would_free(row: dict[str, Any], now: datetime) -> int:
    """The dry run's `_release_blob`: the blob's bytes if this removal would prune it."""
    kept = row["kept_by_artifact"] or row["kept_by_cache"] or row["freed_later"]
    old = row["blob__last_stored_at"] < _grace_cutoff(now)
    return row["blob__size"] if old and not kept else 0


def _release_blob(blob_id: int, now: datetime) -> int:
    """Prune the blob if the reference just removed was its last; the bytes freed."""
    deleted = delete_unused_blob(blob_id, stored_before=_grace_cutoff(now))
    return deleted.size if deleted else 0


def _run_name(row: dict[str, Any]) -> str:
    return (
        f"{row['run__repository__organisation__slug']}/{row['run__repository__slug']} "
        f"#{row['run__number']}"
    )


# ---------------------------------------------------------------------------------------- logs


def _logs_due(now: datetime) -> QuerySet[Run]:
    cutoff = now - timedelta(days=settings.CICD_LOG_RETENTION_DAYS)
    # A run re-run after its logs were removed has new logs: due again once it ended long ago.
    return Run.objects.filter(state__in=FINAL_STATES, finished_at__lt=cutoff).filter(
        Q(logs_removed_at__isnull=True) | Q(logs_removed_at__lt=F("finished_at"))
    )


def _ended_chunks(run_ids: list[int]) -> QuerySet[LogChunk]:
    # Only ended jobs' chunks, even though the run has ended: belt and braces against a re-run
    # starting between the choice and the removal.
    return LogChunk.objects.filter(job__run_id__in=run_ids, job__state__in=FINAL_STATES)


def expire_logs(*, now: datetime | None = None, dry_run: bool = False) -> Report:
    """Remove the log lines of runs that ended more than CICD_LOG_RETENTION_DAYS ago and mark
    the runs (`logs_removed_at`)."""
    now = _now(now)
    report = Report("logs", dry_run)
    has_logs = Exists(LogChunk.objects.filter(job__run=OuterRef("pk")))
    candidates = _logs_due(now).filter(has_logs)
    fields = ("number", "finished_at", "repository__slug", "repository__organisation__slug")
    for batch in _batches(candidates, *fields):
        sizes = {
            row["job__run_id"]: row
            for row in _ended_chunks([run["id"] for run in batch])
            .values("job__run_id")
            .annotate(
                bytes=Sum(Length("text")),
                lines=Sum("line_count"),
                jobs=Count("job_id", distinct=True),
            )
        }
        for run in batch:
            size = sizes.get(run["id"], {"bytes": 0, "lines": 0, "jobs": 0})
            repository = f"{run['repository__organisation__slug']}/{run['repository__slug']}"
            description = (
                f"logs of {repository} #{run['number']} ({size['jobs']} jobs, "
                f"{size['lines']} lines), run ended {_when(run['finished_at'])}"
            )
            if dry_run:
                report.add(description, size["bytes"] or 0)
                continue
            with transaction.atomic():
                # The mark is the claim: of two cleanups at once, one updates the row.
                if not _logs_due(now).filter(id=run["id"]).update(logs_removed_at=now):
                    continue
                chunks = _ended_chunks([run["id"]])
                freed = chunks.aggregate(bytes=Sum(Length("text")))["bytes"] or 0
                chunks.delete()
            report.add(description, freed)
    return report


def logs_removed_note(run: Run, job: Job) -> str | None:
    """What the job page, the raw log and the API say instead of an empty log once retention
    removed it, or None when the job's log was not removed."""
    removed = run.logs_removed_at
    if removed is None or job.finished_at is None or job.finished_at > removed:
        return None  # never removed, or a job of a later re-run whose log is still there
    return f"this log was removed by retention on {removed:%Y-%m-%d}"


# ---------------------------------------------------------------------------------- workspaces


def clean_workspaces(
    *, now: datetime | None = None, dry_run: bool = False, work_dir: Path | None = None
) -> Report:
    """Remove job directories of the local executor that no running job owns and that nobody
    touched for CICD_WORKSPACE_ORPHAN_HOURS. This host's work directory only: on a cluster the
    task runs on whichever worker takes it."""
    now = _now(now)
    report = Report("workspaces", dry_run)
    root = Path(work_dir or settings.CICD_WORK_DIR)
    cutoff = (now - timedelta(hours=settings.CICD_WORKSPACE_ORPHAN_HOURS)).timestamp()
    try:
        entries = [entry for entry in os.scandir(root) if entry.is_dir(follow_symlinks=False)]
    except FileNotFoundError:
        return report
    old: list[tuple[os.DirEntry[str], int | None]] = []
    for entry in entries:
        try:
            modified = entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue
        if entry.name.startswith(_REMOVING) or modified < cutoff:
            match = _JOB_DIRECTORY.fullmatch(entry.name)
            old.append((entry, int(match[1]) if match else None))
    # A job can run for longer than the threshold: its directory's own mtime does not move.
    job_ids = {job_id for _, job_id in old if job_id is not None}
    running = set(
        Job.objects.filter(id__in=job_ids, state=State.RUNNING).values_list("id", flat=True)
    )
    for entry, job_id in sorted(old, key=lambda item: item[0].name):
        if job_id in running:
            continue
        description = f"workspace {entry.name}" + (f" of job {job_id}" if job_id else "")
        if dry_run:
            report.add(description, tree_size(Path(entry.path)).bytes)
            continue
        claimed = Path(entry.path)
        if not entry.name.startswith(_REMOVING):
            claimed = root / f"{_REMOVING}{entry.name}-{uuid.uuid4().hex[:8]}"
            try:
                os.rename(entry.path, claimed)
            except FileNotFoundError:
                continue  # a concurrent cleanup took it
        size = tree_size(claimed).bytes
        _remove_tree(claimed)
        report.add(description, size)
    return report


def _remove_tree(path: Path) -> None:
    """rmtree that also removes read-only directories (a Go module cache, say) and tolerates a
    concurrent remover."""
    failed: list[str] = []

    def on_error(_function: Callable[..., object], name: str, info: Any) -> None:
        if not isinstance(info[1], FileNotFoundError):
            failed.append(name)

    shutil.rmtree(path, onerror=on_error)
    if not failed:
        return
    # Make every directory writable and listable, top down, then try once more.
    stack = [str(path)]
    while stack:
        directory = stack.pop()
        try:
            os.chmod(directory, os.lstat(directory).st_mode | stat.S_IRWXU)
            with os.scandir(directory) as listing:
                stack.extend(e.path for e in listing if e.is_dir(follow_symlinks=False))
        except OSError:
            continue
    failed.clear()
    shutil.rmtree(path, onerror=on_error)
    if failed:
        log.warning("retention: could not remove all of %s (%s...)", path, failed[0])


# --------------------------------------------------------------------------------------- blobs


def prune_blobs(*, now: datetime | None = None, dry_run: bool = False) -> Report:
    """Remove blobs nothing refers to (after the grace period), stored content without a row,
    and upload spools left by a process that died mid-upload."""
    now = _now(now)
    report = Report("blobs", dry_run)
    cutoff = _grace_cutoff(now)
    candidates = unreferenced(Blob.objects.filter(last_stored_at__lt=cutoff))
    for batch in _batches(candidates, "sha256", "size"):
        for row in batch:
            description = f"blob {row['sha256'][:16]} (unreferenced)"
            if dry_run or delete_unused_blob(row["id"], stored_before=cutoff) is not None:
                report.add(description, row["size"])
    _prune_stray_content(report, cutoff)
    for path, size in spool_leftovers(modified_before=cutoff):
        description = f"unfinished upload {path.name}"
        if dry_run:
            report.add(description, size)
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        report.add(description, size)
    return report


def _prune_stray_content(report: Report, cutoff: datetime) -> None:
    batch: list[tuple[str, str | None]] = []

    def flush() -> None:
        shas = [sha for _, sha in batch if sha]
        recorded = set(Blob.objects.filter(sha256__in=shas).values_list("sha256", flat=True))
        for name, sha in batch:
            if sha in recorded:
                continue
            description = f"stored content {name} (no blob row)" if sha else f"leftover {name}"
            if report.dry_run:
                found = stored_stat(name)
                if found is not None and found[1] < cutoff:
                    report.add(description, found[0])
                continue
            if sha:
                freed = delete_stray_content(sha, modified_before=cutoff)
            else:
                freed = delete_collision_leftover(name, modified_before=cutoff)
            if freed is not None:
                report.add(description, freed)
        batch.clear()

    for item in stored_names():
        batch.append(item)
        if len(batch) >= BATCH:
            flush()
    flush()


# ------------------------------------------------------------------------------------ together

KINDS: dict[str, Callable[..., Report]] = {
    "artifacts": expire_artifacts,
    "caches": expire_caches,
    "logs": expire_logs,
    "workspaces": clean_workspaces,
    "blobs": prune_blobs,
}


def cleanup(*, now: datetime | None = None, dry_run: bool = False) -> list[Report]:
    """Every kind, in an order where each frees what the previous released: artifacts and
    caches first, blobs last."""
    now = _now(now)
    reports = []
    for kind, function in KINDS.items():
        try:
            reports.append(function(now=now, dry_run=dry_run))
        except Exception:
            # One failing kind (storage unreachable) must not stop the others; the next pass
            # retries it.
            log.exception("retention: %s failed", kind)
    return reports


def report_lines(report: Report) -> list[str]:
    """Human lines: each item, then the total."""
    verb = "would remove" if report.dry_run else "removed"
    lines = [
        f"{verb} {item.description}" + (f" [{human_size(item.bytes)}]" if item.bytes else "")
        for item in report.items
    ]
    lines.append(summary(report.kind, report.count, report.bytes, dry_run=report.dry_run))
    return lines


def summary(kind: str, count: int, size: int, *, dry_run: bool) -> str:
    freed = "would be freed" if dry_run else "freed"
    items = "item" if count == 1 else "items"
    return f"{kind}: {count} {items}, {human_size(size)} {freed}"
