"""Content-addressed blob storage on Django's storage API (`STORAGES["blobs"]`).

A blob is named by the SHA-256 of its content (`ab/cd/abcd…`), so identical archives are
stored once. Content is first spooled to a temporary file while it is hashed, then committed
under its name: on the default file system storage that is a rename within the blob directory,
so a reader never sees a half-written blob.

Storing and pruning (`runs.retention`) may meet on the same content, and neither may leave a
row whose content is gone. The rule that makes it safe is an order plus one lock:

- `store_blob` first renews the row (`last_stored_at = now`, or creates it), committed, and only
  then makes sure the content is in storage, writing it if it is missing (a crash, a prune).
- `delete_unused_blob` deletes the row with a condition (unreferenced, not stored since the
  grace cutoff) and deletes the content *before committing*. Until it commits, a store of the
  same content waits on the row (PostgreSQL's row lock; SQLite's single writer), then finds no
  row, creates one and writes the content anew. A store that renewed the row first makes the
  conditional delete match nothing.
- Content with no row at all (`delete_stray_content`) is held the same way by inserting a
  placeholder row for its name while the content is deleted.

The grace period covers the other gap: between `store_blob` returning and the Artifact or
CacheEntry row that refers to the blob being committed, nothing references it yet.

On S3 (django-storages, see cicd/storage_config.py) a save is one PutObject, or a multipart
upload completed at once: readers never see a partial object either. `open_blob` streams the
object's body instead of going through django-storages' file object, which downloads the whole
object before the first byte is read. A storage that fails (unreachable, refused, a bucket that
does not exist) raises, on storing, opening or while reading, an error whose message names the
storage and the problem: the caller's own user-facing error (ArtifactError, CacheError) when it
passes one, so that the job's step fails with that message instead of the job crashing.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import posixpath
import re
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.db import IntegrityError, transaction
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from runs.models import Artifact, Blob, CacheEntry

log = logging.getLogger(__name__)
CHUNK = 1024 * 1024
SPOOL_DIR = ".incoming"
_SHA256 = re.compile(r"[0-9a-f]{64}")
# A name FileSystemStorage invents when two stores commit one blob at once (`<sha>_AbC1234`);
# the loser deletes it, unless it crashed first.
_COLLISION = re.compile(r"([0-9a-f]{64})_[A-Za-z0-9]{7}")
# The placeholder row of `delete_stray_content` is never a candidate of anything else.
_PLACEHOLDER_TIME = datetime(1970, 1, 1, tzinfo=UTC)


class BlobStorageError(OSError):
    """The blob storage failed; the message names the storage and the problem."""


def blob_storage() -> Storage:
    return storages["blobs"]


def _where(storage: Storage) -> str:
    """The storage, for messages (never its credentials)."""
    bucket = getattr(storage, "bucket_name", None)
    if bucket:
        location = getattr(storage, "location", "")
        endpoint = getattr(storage, "endpoint_url", None)
        shown = f"s3://{bucket}" + (f"/{location}" if location else "")
        return f"blob storage {shown}" + (f" at {endpoint}" if endpoint else "")
    return f"blob storage {getattr(storage, 'location', type(storage).__name__)}"


def _failure(error: type[Exception], message: str, cause: BaseException) -> Exception:
    # The user sees the message in the job's log; the operator gets the details in the server's.
    log.warning("%s", message, exc_info=cause)
    return error(message)


def blob_name(sha256: str) -> str:
    return f"{sha256[:2]}/{sha256[2:4]}/{sha256}"


class _SpooledFile(File):
    """A file already on disk: FileSystemStorage moves it into place instead of copying."""

    def __init__(self, file: BinaryIO, path: str) -> None:
        super().__init__(file, name=os.path.basename(path))
        self._path = path

    def temporary_file_path(self) -> str:
        return self._path


def _spool_dir(storage: Storage) -> str | None:
    if isinstance(storage, FileSystemStorage):
        # Beside the blobs, so that the commit is a rename on one file system.
        directory = Path(storage.location) / SPOOL_DIR
        directory.mkdir(parents=True, exist_ok=True)
        return str(directory)
    return None


def store_blob(source: BinaryIO, *, error: type[Exception] = BlobStorageError) -> Blob:
    """Store what `source` holds (read to its end) and return its Blob row, its
    `last_stored_at` renewed so that pruning leaves it alone for the grace period. A storage
    failure raises `error` with a message naming the storage."""
    storage = blob_storage()
    digest = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(
        prefix="blob-", dir=_spool_dir(storage), delete=False
    ) as spool:
        path = spool.name
    try:
        with open(path, "wb") as out:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        sha256 = digest.hexdigest()
        # The row first (see the module's docstring): once it is renewed, no prune deletes the
        # content under it, so "the content is there" below stays true.
        blob = _renew_row(sha256, size)
        name = blob_name(sha256)
        try:
            if not storage.exists(name):
                # New content, or a row whose content is gone (a crash, or a prune that
                # committed just before the renewal): write it now.
                with open(path, "rb") as content:
                    saved = storage.save(name, _SpooledFile(content, path))
                if saved != name:
                    # The same content was committed meanwhile under the name: keep that one.
                    storage.delete(saved)
        except Exception as failure:  # whatever the backend raises (OSError, botocore's...)
            message = f"cannot store the archive in {_where(storage)}: {failure}"
            raise _failure(error, message, failure) from None
    finally:
        if os.path.exists(path):
            os.unlink(path)
    return blob


def _renew_row(sha256: str, size: int) -> Blob:
    now = timezone.now()
    for _ in range(3):
        with transaction.atomic():
            if Blob.objects.filter(sha256=sha256).update(last_stored_at=now):
                return Blob.objects.get(sha256=sha256)
            try:
                with transaction.atomic():
                    return Blob.objects.create(sha256=sha256, size=size, last_stored_at=now)
            except IntegrityError:
                pass  # created meanwhile by a concurrent store: renew that one
    raise RuntimeError(f"blob {sha256}: its row could not be created or renewed")


def open_blob(blob: Blob, *, error: type[Exception] = BlobStorageError) -> BinaryIO:
    """The blob's content, read as it arrives from storage. A storage failure, on opening or
    while reading, raises `error` with a message naming the storage."""
    storage = blob_storage()
    name = blob_name(blob.sha256)

    def failed(failure: BaseException) -> Exception:
        message = f"cannot read blob {blob.sha256[:12]} from {_where(storage)}: {failure}"
        return _failure(error, message, failure)

    try:
        stream = _open_stream(storage, name)
    except Exception as failure:
        raise failed(failure) from None
    return _BlobReader(stream, failed)  # type: ignore[return-value]


def _open_stream(storage: Storage, name: str) -> BinaryIO:
    # django-storages' S3File downloads the whole object (parts in parallel, in memory) before
    # the first read; the GetObject body streams. (The module is loaded only when an S3 storage
    # exists: boto3 is slow to import.)
    s3 = sys.modules.get("storages.backends.s3")
    if s3 is not None and isinstance(storage, s3.S3Storage):
        key = posixpath.join(storage.location, name) if storage.location else name
        client = storage.connection.meta.client  # one per thread
        return client.get_object(Bucket=storage.bucket_name, Key=key)["Body"]
    return storage.open(name, "rb")


class _BlobReader(io.RawIOBase):
    """A stored blob's stream whose read errors are storage failures with a clear message."""

    def __init__(self, stream: BinaryIO, failed: Callable[[BaseException], Exception]) -> None:
        self._stream = stream
        self._failed = failed

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        try:
            return self._stream.read(None if size is None or size < 0 else size)
        except Exception as failure:
            raise self._failed(failure) from None

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            try:
                self._stream.close()
            finally:
                super().close()


# --------------------------------------------------------------------------- pruning helpers


def unreferenced(blobs: QuerySet[Blob]) -> QuerySet[Blob]:
    """The blobs no artifact and no cache entry refers to."""
    return blobs.filter(
        ~Exists(Artifact.objects.filter(blob=OuterRef("pk"))),
        ~Exists(CacheEntry.objects.filter(blob=OuterRef("pk"))),
    )


def delete_unused_blob(blob_id: int, *, stored_before: datetime) -> Blob | None:
    """Delete the blob (row and content) if nothing refers to it and it was last stored before
    `stored_before`. Returns the deleted row, or None when it was kept (used, renewed, or gone:
    a concurrent prune deleted it first)."""
    with transaction.atomic():
        blob = Blob.objects.filter(id=blob_id).first()
        if blob is None:
            return None
        target = unreferenced(Blob.objects.filter(id=blob_id, last_stored_at__lt=stored_before))
        # One DELETE statement with the conditions in its WHERE (QuerySet.delete() would read
        # the rows, check PROTECT in Python, then delete by id: a race with a new reference).
        if target._raw_delete(target.db) != 1:
            return None
        # Before the commit, so that a store of this content waits for it (module docstring).
        # A storage error rolls the row back: the next prune tries again.
        blob_storage().delete(blob_name(blob.sha256))
    return blob


def delete_stray_content(sha256: str, *, modified_before: datetime) -> int | None:
    """Delete stored content that has no Blob row (a crash between writing and recording it),
    if it was written before `modified_before`. Returns the bytes freed, or None when kept."""
    storage = blob_storage()
    name = blob_name(sha256)
    stat = stored_stat(name)
    if stat is None or stat[1] >= modified_before:
        return None
    try:
        with transaction.atomic():
            # The placeholder holds the name: a concurrent store's insert of this content waits
            # for the commit, then writes the content again.
            placeholder = Blob.objects.create(
                sha256=sha256, size=0, last_stored_at=_PLACEHOLDER_TIME
            )
            storage.delete(name)
            Blob.objects.filter(id=placeholder.id)._raw_delete(Blob.objects.db)
    except IntegrityError:
        return None  # it has a row (now): not stray
    return stat[0]


def delete_collision_leftover(name: str, *, modified_before: datetime) -> int | None:
    """Delete a `<sha>_XXXXXXX` name that a crashed store left (see `_COLLISION`)."""
    stat = stored_stat(name)
    if stat is None or stat[1] >= modified_before:
        return None
    blob_storage().delete(name)
    return stat[0]


def stored_stat(name: str) -> tuple[int, datetime] | None:
    """Size and modification time of stored content, or None when it is not there."""
    storage = blob_storage()
    try:
        size = storage.size(name)
        modified = storage.get_modified_time(name)
    except (FileNotFoundError, OSError):
        return None
    if timezone.is_naive(modified):
        modified = timezone.make_aware(modified, UTC)
    return size, modified


def stored_names() -> Iterator[tuple[str, str | None]]:
    """Every name in blob storage that looks like a blob: (name, sha256) for content, (name,
    None) for a collision leftover. Anything else (and the spool) is never touched."""
    storage = blob_storage()
    if isinstance(storage, FileSystemStorage):
        names = _walk_filesystem(Path(storage.location))
    else:
        names = _walk_storage(storage)
    for name in names:
        parts = name.split("/")
        if len(parts) != 3 or parts[0] == SPOOL_DIR:
            continue
        first, second, leaf = parts
        if _SHA256.fullmatch(leaf):
            if (first, second) == (leaf[:2], leaf[2:4]):
                yield name, leaf
        elif (found := _COLLISION.fullmatch(leaf)) and (first, second) == (
            found[1][:2],
            found[1][2:4],
        ):
            yield name, None


def _walk_filesystem(root: Path) -> Iterator[str]:
    # os.scandir: one directory read per level instead of a stat per name.
    if not root.is_dir():
        return
    # Sorted, so that a dry run and the real run list items in the same order.
    for first in _sorted_entries(str(root)):
        if not first.is_dir(follow_symlinks=False) or len(first.name) != 2:
            continue
        for second in _sorted_entries(first.path):
            if not second.is_dir(follow_symlinks=False):
                continue
            for leaf in _sorted_entries(second.path):
                if leaf.is_file(follow_symlinks=False):
                    yield f"{first.name}/{second.name}/{leaf.name}"


def _sorted_entries(directory: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as listing:
            return sorted(listing, key=lambda entry: entry.name)
    except FileNotFoundError:
        return []  # removed meanwhile (a prune elsewhere)


def _walk_storage(storage: Storage) -> Iterator[str]:
    """The generic walk, through `listdir` (object stores list by prefix)."""
    firsts, _ = storage.listdir("")
    for first in sorted(firsts):
        if len(first) != 2:
            continue
        seconds, _ = storage.listdir(first)
        for second in sorted(seconds):
            _, leaves = storage.listdir(f"{first}/{second}")
            for leaf in sorted(leaves):
                yield f"{first}/{second}/{leaf}"


def spool_leftovers(*, modified_before: datetime) -> list[tuple[Path, int]]:
    """Spool files (uploads being hashed) untouched since `modified_before`: left by a process
    that died mid-upload. A live upload writes its spool file continuously. Only the file
    system storage spools beside the blobs; other storages spool in the system's temp dir."""
    storage = blob_storage()
    if not isinstance(storage, FileSystemStorage):
        return []
    directory = Path(storage.location) / SPOOL_DIR
    if not directory.is_dir():
        return []
    cutoff = modified_before.timestamp()
    found = []
    for entry in os.scandir(directory):
        try:
            stat = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue  # finished meanwhile
        if entry.is_file(follow_symlinks=False) and stat.st_mtime < cutoff:
            found.append((Path(entry.path), stat.st_size))
    return found
