"""Blob storage on S3: a real S3-compatible server (moto's, started here in a process of its own)
behind STORAGES["blobs"] as cicd.storage_config builds it from a CICD_STORAGE_URL.

Identical content is one object under the URL's prefix; a large blob streams back without being
held in memory; an artifact goes up in one job and down in the next through the real run path;
an unreachable endpoint or a missing bucket fails the step with a message naming the storage.
"""

from __future__ import annotations

import hashlib
import io
import socket
import subprocess
import sys
import tracemalloc
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from django.contrib.auth import get_user_model
from django.core.files.storage import storages
from django.utils import timezone

from cicd.storage_config import blob_storage_settings
from runners.executor import LOCAL, RunnerConfig
from runs.execution import execute
from runs.models import Artifact, Blob, Step
from runs.retention import prune_blobs
from runs.states import State
from runs.storage import blob_name, open_blob, store_blob
from tests.runs.conftest import jobs_of, repository, start_run  # noqa: F401 (a fixture)
from tests.runs.test_execution import log_lines, make_repository

PREFIX = "ci/blobs"
KEY, SECRET = "test-key", "test-secret"

# moto's server in a child process, so that its memory is not this process's (the streaming test
# measures ours). It prints its port, then serves until its stdin closes: when the fixture ends,
# or when this process dies, so no server outlives the test run.
SERVER = """\
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer("127.0.0.1", 0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> Iterator[str]:
    log = tmp_path_factory.mktemp("moto") / "server.log"
    with log.open("wb") as errors:
        server = subprocess.Popen(
            [sys.executable, "-c", SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )
    try:
        assert server.stdout is not None and server.stdin is not None
        port = server.stdout.readline().strip()
        assert port.isdigit(), f"moto's S3 server did not start: {log.read_text()[-2000:]}"
        yield f"http://127.0.0.1:{port}"
    finally:
        if server.stdin:
            server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@dataclass
class Bucket:
    name: str
    client: Any  # a boto3 S3 client with the server's credentials

    def keys(self) -> list[str]:
        listed = self.client.list_objects_v2(Bucket=self.name)
        return sorted(item["Key"] for item in listed.get("Contents", []))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()


def use_storage(settings, url: str, blob_dir: Path) -> None:
    """STORAGES["blobs"] from `url`; the override's setting_changed signal empties the cache of
    `storages`, so the next blob_storage() is built from it."""
    settings.STORAGES = {**settings.STORAGES, "blobs": blob_storage_settings(url, blob_dir)}


def closed_port() -> int:
    """A port nothing listens on (free a moment ago): connections to it are refused at once."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def bucket(s3_endpoint, settings, tmp_path) -> Bucket:
    name = f"cicd-{uuid.uuid4().hex[:16]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
    )
    client.create_bucket(Bucket=name)
    url = f"s3://{KEY}:{SECRET}@{name}/{PREFIX}/?endpoint_url={s3_endpoint}&region=us-east-1"
    use_storage(settings, url, tmp_path / "local-blobs")
    assert storages["blobs"].bucket_name == name
    return Bucket(name, client)


@pytest.mark.django_db
def test_identical_content_is_one_object_under_the_prefix(bucket, tmp_path):
    content = b"the same archive\n" * 1000
    first = store_blob(io.BytesIO(content))
    second = store_blob(io.BytesIO(content))
    other = store_blob(io.BytesIO(b"another archive"))

    assert first.id == second.id and first.sha256 == hashlib.sha256(content).hexdigest()
    assert Blob.objects.count() == 2
    assert bucket.keys() == sorted(f"{PREFIX}/{blob_name(blob.sha256)}" for blob in (first, other))
    assert bucket.read(f"{PREFIX}/{blob_name(first.sha256)}") == content
    # Nothing was written to the local blob directory.
    assert not (tmp_path / "local-blobs").exists()


@pytest.mark.django_db
def test_a_large_blob_streams_back_without_being_held_in_memory(bucket):
    size = 48 * 1024 * 1024  # over boto3's 8 MiB threshold: a multipart upload
    content = hashlib.sha256(b"seed").digest() * (size // 32)
    blob = store_blob(io.BytesIO(content))
    assert blob.size == size
    assert bucket.keys() == [f"{PREFIX}/{blob_name(blob.sha256)}"]

    digest = hashlib.sha256()
    tracemalloc.start()
    try:
        with open_blob(blob) as stored:
            while chunk := stored.read(1024 * 1024):
                digest.update(chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert digest.hexdigest() == blob.sha256
    # Read whole, the blob alone would be 48 MiB; streamed, the peak is a few buffers.
    assert peak < size // 3, f"reading the blob took {peak / 2**20:.1f} MiB of memory"


@pytest.mark.django_db
def test_pruning_lists_and_deletes_on_s3(bucket, settings):
    settings.CICD_BLOB_PRUNE_GRACE_MINUTES = 60
    unused = store_blob(io.BytesIO(b"nothing refers to this"))
    stray = hashlib.sha256(b"stored, never recorded").hexdigest()
    bucket.client.put_object(Bucket=bucket.name, Key=f"{PREFIX}/{blob_name(stray)}", Body=b"x")
    # Not blobs: never touched.
    others = [f"{PREFIX}/notes.txt", f"{PREFIX}/ab/cd/not-a-blob", "elsewhere/file"]
    for key in others:
        bucket.client.put_object(Bucket=bucket.name, Key=key, Body=b"y")
    later = timezone.now() + timedelta(hours=2)  # past the grace period of both

    planned = prune_blobs(now=later, dry_run=True)
    assert sorted(item.description for item in planned.items) == [
        f"blob {unused.sha256[:16]} (unreferenced)",
        f"stored content {blob_name(stray)} (no blob row)",
    ]
    assert len(bucket.keys()) == 5

    removed = prune_blobs(now=later)
    assert removed.count == 2 and removed.bytes == unused.size + 1
    assert bucket.keys() == sorted(others)
    assert not Blob.objects.exists()


# ---------------------------------------------------------------------------- through a run

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: mkdir -p out/sub && echo hello > out/a.txt && echo deep > out/sub/b.txt
      - uses: actions/upload-artifact@v4
        with:
          name: dist
          path: out
      - uses: actions/upload-artifact@v4
        with:
          name: again
          path: out/
  use:
    needs: build
    runs-on: linux
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: dist
          path: got
      - run: cat got/a.txt got/sub/b.txt
"""


@pytest.fixture
def run_of(repository, tmp_path):  # noqa: F811 (the fixture imported above)
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    config = RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)

    def run_jobs(*keys: str):
        run = start_run(repository, WORKFLOW, sha=sha)
        return run, {key: execute(jobs_of(run)[key].id, worker="w1", config=config) for key in keys}

    return run_jobs, config


@pytest.mark.django_db(transaction=True)
def test_an_artifact_goes_up_and_down_through_s3(bucket, run_of, client):
    run_jobs, _ = run_of
    run, conclusions = run_jobs("build", "use")
    assert conclusions == {"build": State.SUCCESS, "use": State.SUCCESS}
    jobs = jobs_of(run)
    assert any(
        "Uploaded artifact 'dist': 2 file(s), 11 bytes" in x for x in log_lines(jobs["build"])
    )
    use_log = log_lines(jobs["use"])
    assert any("Downloaded artifact 'dist': 2 file(s), 11 bytes" in line for line in use_log)
    assert "hello" in use_log and "deep" in use_log
    # Two artifacts of the same files: one blob, one object, under the prefix.
    dist, again = (Artifact.objects.get(run=run, name=n) for n in ("dist", "again"))
    assert dist.blob_id == again.blob_id
    assert bucket.keys() == [f"{PREFIX}/{blob_name(dist.blob.sha256)}"]
    # The zip download streams from S3 too.
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    response = client.get(f"/api/v1/artifacts/{dist.id}/zip")
    assert response.status_code == 200
    with zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content))) as archive:
        assert {n: archive.read(n) for n in archive.namelist()} == {
            "a.txt": b"hello\n",
            "sub/b.txt": b"deep\n",
        }


def step_failure(job, index: int) -> tuple[Step, list[str]]:
    step = Step.objects.get(job=job, index=index)
    assert step.outcome == State.FAILURE
    return step, log_lines(job)


@pytest.mark.django_db(transaction=True)
def test_an_unreachable_endpoint_fails_the_upload_step_with_a_clear_message(
    settings, tmp_path, run_of
):
    endpoint = f"http://127.0.0.1:{closed_port()}"
    use_storage(settings, f"s3://{KEY}:{SECRET}@nowhere/{PREFIX}?endpoint_url={endpoint}", tmp_path)
    run_jobs, _ = run_of
    run, conclusions = run_jobs("build")
    assert conclusions == {"build": State.FAILURE}
    step, lines = step_failure(jobs_of(run)["build"], 1)
    where = f"blob storage s3://nowhere/{PREFIX} at {endpoint}"
    assert step.error.startswith(f"cannot store the archive in {where}: ")
    assert "Could not connect to the endpoint URL" in step.error
    assert f"Error: {step.error}" in lines
    assert not any("Traceback" in line for line in lines)
    assert not Artifact.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_missing_bucket_fails_the_upload_step_naming_it(s3_endpoint, settings, tmp_path, run_of):
    url = f"s3://{KEY}:{SECRET}@no-such-bucket/{PREFIX}?endpoint_url={s3_endpoint}"
    use_storage(settings, url, tmp_path)
    run_jobs, _ = run_of
    run, conclusions = run_jobs("build")
    assert conclusions == {"build": State.FAILURE}
    step, _ = step_failure(jobs_of(run)["build"], 1)
    assert step.error.startswith("cannot store the archive in blob storage s3://no-such-bucket/")
    assert "NoSuchBucket" in step.error


@pytest.mark.django_db(transaction=True)
def test_a_download_from_an_unreachable_storage_fails_its_step_and_the_zip_clearly(
    bucket, settings, tmp_path, run_of, client
):
    run_jobs, config = run_of
    run, conclusions = run_jobs("build")
    assert conclusions == {"build": State.SUCCESS}
    # The storage goes away between the two jobs.
    endpoint = f"http://127.0.0.1:{closed_port()}"
    url = f"s3://{KEY}:{SECRET}@{bucket.name}/{PREFIX}?endpoint_url={endpoint}"
    use_storage(settings, url, tmp_path)
    assert execute(jobs_of(run)["use"].id, worker="w1", config=config) == State.FAILURE
    step, lines = step_failure(jobs_of(run)["use"], 0)
    sha = Artifact.objects.get(run=run, name="dist").blob.sha256
    assert step.error.startswith(
        f"cannot read blob {sha[:12]} from blob storage s3://{bucket.name}/{PREFIX} at {endpoint}: "
    )
    assert f"Error: {step.error}" in lines
    # The zip download answers 503 with the reason, before any byte of a zip.
    client.force_login(get_user_model().objects.create_superuser("root", password="x"))
    dist = Artifact.objects.get(run=run, name="dist")
    response = client.get(f"/api/v1/artifacts/{dist.id}/zip")
    assert response.status_code == 503
    assert response.content.decode() == f"artifact 'dist' cannot be read now: {step.error}"
