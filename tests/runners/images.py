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
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import docker
from docker.errors import ImageNotFound

from runners.events import CancelToken, JobResult, RecordingSink
from runners.spec import JobSpec

BUSYBOX_IMAGE = "cicd-test/busybox:1"
WEB_IMAGE = "cicd-test/web:1"
SLOW_WEB_IMAGE = "cicd-test/web-slow:1"
WEB_PAGE = "hello from the web service\n"
HOST_BUSYBOX = Path("/bin/busybox")

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
            _busybox_rootfs(),
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


def _busybox_rootfs() -> bytes:
    if not HOST_BUSYBOX.exists():
        raise RuntimeError(f"{HOST_BUSYBOX} is missing: install busybox-static (bin/test does)")
    listing = subprocess.run(
        [str(HOST_BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    now = int(time.time())
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for directory, mode in (
            ("bin", 0o755),
            ("sbin", 0o755),
            ("usr", 0o755),
            ("usr/bin", 0o755),
            ("usr/sbin", 0o755),
            ("usr/local", 0o755),
            ("usr/local/bin", 0o755),
            ("etc", 0o755),
            ("root", 0o700),
            ("tmp", 0o1777),
            ("var", 0o755),
            ("var/run", 0o755),
        ):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, mode, now
            tar.addfile(info)
        tar.add(str(HOST_BUSYBOX), arcname="bin/busybox")
        for path in sorted(set(listing)):
            if path == "bin/busybox":
                continue  # a symlink to itself would replace the binary
            info = tarfile.TarInfo(path)
            info.type, info.linkname, info.mtime = tarfile.SYMTYPE, "/bin/busybox", now
            tar.addfile(info)
        _add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
        _add(tar, "etc/group", b"root:x:0:\n")
    return archive.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
    tar.addfile(info, io.BytesIO(data))
