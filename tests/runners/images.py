"""Test images, built here from what the machine has: no registry is reachable in CI.

- `cicd-test/busybox:1`: a root file system holding Debian's static busybox (`busybox-static`, at
  /bin/busybox) and one symlink per applet, imported with `docker import`.
- `cicd-test/web:1`: that image plus a page, serving it with busybox httpd on port 8080.
- `cicd-test/web-slow:1`: the same, but httpd starts only after a few seconds (health waiting).

Each `ensure_*` function builds its image only when it is missing, and returns its name.
"""

from __future__ import annotations

import dataclasses
import io
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from docker.errors import ImageNotFound

from bench.images import busybox_rootfs
from runners.events import CancelToken, JobResult, RecordingSink
from runners.spec import JobSpec

BUSYBOX_IMAGE = "cicd-test/busybox:1"
WEB_IMAGE = "cicd-test/web:1"
SLOW_WEB_IMAGE = "cicd-test/web-slow:1"
WEB_PAGE = "hello from the web service\n"

_lock = threading.Lock()


def docker_client() -> docker.DockerClient:
    """A client for the local engine; raises (never skips) when there is none."""
    client = docker.from_env()
    client.ping()
    return client


def ensure_busybox_image(client: docker.DockerClient) -> str:
    with _lock:
        if _exists(client, BUSYBOX_IMAGE):
            return BUSYBOX_IMAGE
        repository, tag = BUSYBOX_IMAGE.split(":")
        client.api.import_image_from_data(
            busybox_rootfs(),
            repository=repository,
            tag=tag,
            changes=["ENV PATH=/usr/local/bin:/usr/bin:/bin"],
        )
        return BUSYBOX_IMAGE


def ensure_service_image(client: docker.DockerClient, *, slow: bool = False) -> str:
    """A busybox httpd on port 8080 serving WEB_PAGE at `/` (after 3 s when `slow`)."""
    name = SLOW_WEB_IMAGE if slow else WEB_IMAGE
    ensure_busybox_image(client)
    with _lock:
        if _exists(client, name):
            return name
        command = "httpd -f -p 8080 -h /www"
        if slow:
            command = f"sleep 3; exec {command}"
        dockerfile = (
            f"FROM {BUSYBOX_IMAGE}\n"
            "COPY index.html /www/index.html\n"
            "EXPOSE 8080\n"
            f'CMD ["/bin/sh", "-c", "{command}"]\n'
        )
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            _add(tar, "Dockerfile", dockerfile.encode())
            _add(tar, "index.html", WEB_PAGE.encode())
        context.seek(0)
        client.images.build(fileobj=context, custom_context=True, tag=name, rm=True, pull=False)
        return name


def make_docker_runner(
    tmp_path: Path, *, grace_seconds: float = 1.0
) -> Callable[..., tuple[JobResult, RecordingSink]]:
    """The executor suite's maker for the Docker executor (see tests/runners/conftest.py)."""
    from runners.docker import run_docker_job

    client = docker_client()
    image = ensure_busybox_image(client)

    def run(
        spec: JobSpec,
        sink: RecordingSink | None = None,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> tuple[JobResult, RecordingSink]:
        sink = sink if sink is not None else RecordingSink()
        # Job ids name containers on a shared engine: the suite's ids repeat across test
        # processes (xdist workers, a colleague's run), so make them unique here.
        spec = dataclasses.replace(spec, job_id=f"{spec.job_id}-{uuid.uuid4().hex[:10]}")
        result = run_docker_job(
            spec,
            sink,
            cancel=cancel,
            client=client,
            default_image=image,
            grace_seconds=grace_seconds,
            **options,
        )
        return result, sink

    return run


# ------------------------------------------------------------------------------------ helpers


def _exists(client: docker.DockerClient, name: str) -> bool:
    try:
        client.api.inspect_image(name)
    except ImageNotFound:
        return False
    return True


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))
