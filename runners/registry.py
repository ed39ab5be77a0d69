"""The control plane's record of each worker: labels, executor, last contact, current job, and
the storage of its host.

Kept apart from the executors (which know nothing of Django): the worker side of `runs` calls it
when it claims and when it finishes a job, so the UI can show who runs what, and `worker_beat`
from the lease heartbeat while a job runs.

Storage is reported by the worker itself, since it alone sees its disk: the bytes under its work
directory (the local executor's job directories) and the free and total space of the file system
holding the data directory. Measuring is throttled to once per STORAGE_REPORT_SECONDS per worker
(a conditional update on `storage_reported_at` claims the turn, so two calls at once measure
once), and the walk of the work directory stops after STORAGE_WALK_MAX_ENTRIES entries, so a
huge workspace costs a bounded amount of time; such a report is a lower bound.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from runners.models import Worker

log = logging.getLogger(__name__)

STORAGE_REPORT_SECONDS = 60
STORAGE_WALK_MAX_ENTRIES = 200_000


def record_worker(
    *, name: str, labels: Sequence[str], executor: str, current_job_id: int | None
) -> None:
    """Create or refresh this worker's row, and report its storage if that is due. Only the
    worker itself writes its row (the name is unique per process), so an upsert cannot
    overwrite anyone else's change."""
    Worker.objects.update_or_create(
        name=name[:200],
        defaults={
            "labels": list(labels),
            "executor": executor[:20],
            "last_heartbeat": timezone.now(),
            "current_job_id": current_job_id,
        },
    )
    report_storage(name)


def worker_beat(name: str) -> None:
    """The worker is alive (called from its job's lease heartbeat): refresh `last_heartbeat`,
    and report its storage if that is due. Never raises: a failed report must not end a job."""
    try:
        Worker.objects.filter(name=name[:200]).update(last_heartbeat=timezone.now())
        report_storage(name)
    except Exception:
        log.warning("worker %s: could not record its heartbeat or storage", name, exc_info=True)


@dataclass(frozen=True, slots=True)
class TreeSize:
    bytes: int
    entries: int
    complete: bool  # False: the walk stopped at its entry cap, `bytes` is a lower bound


def tree_size(root: Path, *, max_entries: int | None = None) -> TreeSize:
    """Bytes of the regular files under `root` (symlinks are not followed, nor counted as
    their target). Entries that vanish during the walk (a job cleaning up) are skipped."""
    total = entries = 0
    stack = [str(root)]
    while stack:
        directory = stack.pop()
        try:
            with os.scandir(directory) as listing:
                for entry in listing:
                    entries += 1
                    if max_entries is not None and entries > max_entries:
                        return TreeSize(total, entries - 1, complete=False)
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(entry.path)
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue  # removed or unreadable: nothing to count
    return TreeSize(total, entries, complete=True)


@dataclass(frozen=True, slots=True)
class HostStorage:
    workspace_bytes: int
    disk_free_bytes: int
    disk_total_bytes: int


def measure_storage(work_dir: Path, data_dir: Path) -> HostStorage:
    workspace = tree_size(work_dir, max_entries=STORAGE_WALK_MAX_ENTRIES)
    disk = shutil.disk_usage(data_dir)
    return HostStorage(workspace.bytes, disk.free, disk.total)


def report_storage(name: str, *, now: datetime | None = None, force: bool = False) -> bool:
    """Measure and record this worker's storage unless it was reported less than
    STORAGE_REPORT_SECONDS ago. Returns whether this call measured. Cheap when not due: one
    conditional UPDATE that matches nothing."""
    now = now or timezone.now()
    row = Worker.objects.filter(name=name[:200])
    if not force:
        row = row.filter(
            Q(storage_reported_at__isnull=True)
            | Q(storage_reported_at__lte=now - timedelta(seconds=STORAGE_REPORT_SECONDS))
        )
    # Claim the turn first: a concurrent call (the lease keeper beside a finishing job) sees a
    # fresh time and does not walk the tree a second time.
    if row.update(storage_reported_at=now) != 1:
        return False
    try:
        measured = measure_storage(Path(settings.CICD_WORK_DIR), Path(settings.CICD_DATA_DIR))
    except OSError:
        return False  # the data directory is gone: nothing true to report
    Worker.objects.filter(name=name[:200], storage_reported_at=now).update(
        workspace_bytes=measured.workspace_bytes,
        disk_free_bytes=measured.disk_free_bytes,
        disk_total_bytes=measured.disk_total_bytes,
    )
    return True
