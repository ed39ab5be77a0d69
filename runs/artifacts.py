"""Artifacts on the server side: the ArtifactStore a worker gives its executor, listing, and the
zip download.

An upload's archive goes to blob storage (`runs.storage`) outside any transaction (a slow store
must not hold row locks); the Artifact row is then created in a transaction that first checks the
worker still holds the job, like every other write of a running job (`runs.execution`).
"""

from __future__ import annotations

import tarfile
import zipfile
from collections.abc import AsyncIterator, Generator
from datetime import UTC, datetime, timedelta
from typing import BinaryIO
from urllib.parse import quote

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.handlers.asgi import ASGIRequest
from django.db import IntegrityError
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.utils import timezone

from runners.artifacts import ArtifactError, ArtifactInfo
from runs.models import Artifact, Job, Run
from runs.storage import BlobStorageError, open_blob, store_blob

ZIP_CHUNK = 256 * 1024


def max_bytes() -> int:
    return int(settings.CICD_ARTIFACT_MAX_MB * 1024 * 1024)


def artifacts_of(run: Run, attempt: int | None = None) -> list[Artifact]:
    """The artifacts a run (attempt) shows and its jobs can download: for each name the one of
    the latest attempt up to `attempt`, so a re-run of failed jobs still sees what the jobs it
    did not re-run uploaded."""
    rows = Artifact.objects.filter(run=run).select_related("blob", "job")
    if attempt is not None:
        rows = rows.filter(attempt__lte=attempt)
    latest: dict[str, Artifact] = {}
    for artifact in rows.order_by("name", "-attempt"):
        latest.setdefault(artifact.name, artifact)
    return list(latest.values())


def is_expired(artifact: Artifact) -> bool:
    return artifact.expires_at <= timezone.now()


class DatabaseArtifactStore:
    """The ArtifactStore of one running job (see runners.artifacts), fenced by its lease token."""

    def __init__(self, job_id: int, token: str) -> None:
        self.job_id = job_id
        self.token = token
        self.max_bytes = max_bytes()
        self.max_retention_days = settings.CICD_ARTIFACT_MAX_RETENTION_DAYS
        self._job: Job | None = None

    @property
    def job(self) -> Job:
        if self._job is None:
            self._job = Job.objects.select_related("run").get(id=self.job_id)
        return self._job

    def upload(
        self,
        name: str,
        archive: BinaryIO,
        *,
        file_count: int,
        size: int,
        retention_days: int | None,
    ) -> ArtifactInfo:
        from runs.execution import fenced  # it imports this module

        job = self.job
        existing = Artifact.objects.filter(run_id=job.run_id, attempt=job.attempt, name=name)
        if existing.exists():
            raise self._duplicate(name)
        blob = store_blob(archive, error=ArtifactError)
        days = min(
            retention_days or settings.CICD_ARTIFACT_RETENTION_DAYS,
            settings.CICD_ARTIFACT_MAX_RETENTION_DAYS,
        )
        try:
            with fenced(self.job_id, self.token):
                artifact = Artifact.objects.create(
                    run_id=job.run_id,
                    attempt=job.attempt,
                    job=job,
                    name=name,
                    blob=blob,
                    size=size,
                    file_count=file_count,
                    expires_at=timezone.now() + timedelta(days=days),
                )
        except IntegrityError:
            raise self._duplicate(name) from None
        return ArtifactInfo(name, size, file_count, id=str(artifact.id), digest=blob.sha256)

    def list(self) -> list[ArtifactInfo]:
        job = self.job
        return [
            ArtifactInfo(a.name, a.size, a.file_count, id=str(a.id), digest=a.blob.sha256)
            for a in artifacts_of(job.run, job.attempt)
            if not is_expired(a)
        ]

    def open(self, name: str) -> BinaryIO:
        job = self.job
        found = next((a for a in artifacts_of(job.run, job.attempt) if a.name == name), None)
        if found is None:
            raise ArtifactError(f"no artifact named {name!r} in this run")
        if is_expired(found):
            raise ArtifactError(f"artifact {name!r} expired on {found.expires_at:%Y-%m-%d %H:%M}")
        return open_blob(found.blob, error=ArtifactError)

    def _duplicate(self, name: str) -> ArtifactError:
        other = (
            Artifact.objects.filter(run_id=self.job.run_id, attempt=self.job.attempt, name=name)
            .select_related("job")
            .first()
        )
        by = f" by job '{other.job.name}'" if other is not None and other.job else ""
        return ArtifactError(
            f"an artifact named {name!r} was already uploaded in this run{by}; artifact names "
            "are unique within a run: choose another name"
        )


class _ZipSink:
    """What zipfile writes to: collects bytes for the response, never seeks."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        data, self.parts = b"".join(self.parts), []
        return data


def zip_chunks(artifact: Artifact, stored: BinaryIO | None = None) -> Generator[bytes, None, None]:
    """The artifact as a zip, produced while it is sent: the stored tar.gz (`stored`, opened
    here when not given) is read one member at a time, so memory stays bounded whatever the
    artifact's size."""
    sink = _ZipSink()
    if stored is None:
        stored = open_blob(artifact.blob)
    try:
        with (
            tarfile.open(fileobj=stored, mode="r|*") as tar,
            zipfile.ZipFile(sink, mode="w", compression=zipfile.ZIP_DEFLATED) as archive,  # type: ignore[arg-type]
        ):
            for member in tar:
                content = tar.extractfile(member) if member.isfile() else None
                if content is None:
                    continue
                info = zipfile.ZipInfo(member.name, _zip_time(member.mtime))
                info.external_attr = (member.mode & 0o777) << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                with archive.open(info, "w", force_zip64=member.size > 2**31) as out:
                    while chunk := content.read(ZIP_CHUNK):
                        out.write(chunk)
                        if sink.parts:
                            yield sink.take()
                yield sink.take()
        yield sink.take()  # the central directory, written when the zip closed
    finally:
        stored.close()


def _zip_time(mtime: float) -> tuple[int, int, int, int, int, int]:
    # Zip times start in 1980.
    stamp = datetime.fromtimestamp(max(mtime, 315532800), tz=UTC)
    return (stamp.year, stamp.month, stamp.day, stamp.hour, stamp.minute, stamp.second)


_DONE = b"\x00done"  # never a chunk: chunks are whole zip pieces, this is no prefix of one


async def _async_chunks(chunks: Generator[bytes, None, None]) -> AsyncIterator[bytes]:
    """One chunk at a time from a worker thread: under ASGI a synchronous iterator would be
    read whole into memory before the first byte is sent."""
    step = sync_to_async(lambda: next(chunks, _DONE), thread_sensitive=False)
    try:
        while (chunk := await step()) is not _DONE:
            yield chunk
    finally:
        await sync_to_async(chunks.close, thread_sensitive=False)()


def zip_response(artifact: Artifact, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
    try:
        # Opened before the response starts: a storage that fails now gets a clear 503, not a
        # 200 whose body breaks off.
        stored = open_blob(artifact.blob)
    except BlobStorageError as error:
        return HttpResponse(
            f"artifact {artifact.name!r} cannot be read now: {error}",
            status=503,
            content_type="text/plain; charset=utf-8",
        )
    chunks = zip_chunks(artifact, stored)
    content = _async_chunks(chunks) if isinstance(request, ASGIRequest) else chunks
    response = StreamingHttpResponse(content, content_type="application/zip")
    # Names never hold quotes, slashes or line breaks (runners.artifacts.check_name); others
    # than ASCII go in the RFC 6266 form.
    plain = artifact.name.encode("ascii", "replace").decode().replace("?", "_")
    response["Content-Disposition"] = (
        f"attachment; filename=\"{plain}.zip\"; filename*=UTF-8''{quote(artifact.name)}.zip"
    )
    return response
