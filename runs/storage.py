"""Content-addressed blob storage on Django's storage API (`STORAGES["blobs"]`).

A blob is named by the SHA-256 of its content (`ab/cd/abcd…`), so identical archives are
stored once. Content is first spooled to a temporary file while it is hashed, then committed
under its name: on the default file system storage that is a rename within the blob directory,
so a reader never sees a half-written blob. The `Blob` row is created after the content is in
place; a blob whose row was never created (a crash in between) is left to the blob pruning.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

from runs.models import Blob

CHUNK = 1024 * 1024


def blob_storage() -> Storage:
    return storages["blobs"]


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
        directory = Path(storage.location) / ".incoming"
        directory.mkdir(parents=True, exist_ok=True)
        return str(directory)
    return None


def store_blob(source: BinaryIO) -> Blob:
    """Store what `source` holds (read to its end) and return its Blob row."""
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
        name = blob_name(sha256)
        if not storage.exists(name):
            with open(path, "rb") as content:
                saved = storage.save(name, _SpooledFile(content, path))
            if saved != name:
                # The same content was committed meanwhile under the name: keep that one.
                storage.delete(saved)
    finally:
        if os.path.exists(path):
            os.unlink(path)
    blob, _ = Blob.objects.get_or_create(sha256=sha256, defaults={"size": size})
    return blob


def open_blob(blob: Blob) -> BinaryIO:
    return blob_storage().open(blob_name(blob.sha256), "rb")
