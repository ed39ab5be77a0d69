"""The Docker executor's image for the benchmarks, built here: no registry need be reachable.

`cicd-bench/busybox:1` is a root file system holding Debian's static busybox (`busybox-static`,
at /bin/busybox, which bin/bench installs) and one symlink per applet, imported with
`docker import`. It is built only when missing; the Docker tests build theirs from the same
root file system (tests/runners/images.py); the deployment benchmark's and tests' application
images are built on it (bench/deployapp.py).
"""

from __future__ import annotations

import io
import subprocess
import tarfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker

IMAGE = "cicd-bench/busybox:1"
HOST_BUSYBOX = Path("/bin/busybox")


def ensure_busybox_image(client: docker.DockerClient | None = None) -> str:
    """Import IMAGE when missing (with the local engine's client unless one is given)."""
    import docker
    from docker.errors import ImageNotFound

    client = client if client is not None else docker.from_env()
    try:
        client.api.inspect_image(IMAGE)
        return IMAGE
    except ImageNotFound:
        pass
    repository, tag = IMAGE.split(":")
    client.api.import_image_from_data(
        busybox_rootfs(),
        repository=repository,
        tag=tag,
        changes=["ENV PATH=/usr/local/bin:/usr/bin:/bin"],
    )
    return IMAGE


def busybox_rootfs() -> bytes:
    """A tar of a minimal root file system around the host's static busybox."""
    if not HOST_BUSYBOX.exists():
        raise RuntimeError(
            f"{HOST_BUSYBOX} is missing: install busybox-static (bin/test and bin/bench do)"
        )
    listing = subprocess.run(
        [str(HOST_BUSYBOX), "--list-full"], check=True, capture_output=True, text=True
    ).stdout.split()
    now = int(time.time())
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for directory, mode in (
            ("bin", 0o755), ("sbin", 0o755), ("usr", 0o755), ("usr/bin", 0o755),
            ("usr/sbin", 0o755), ("usr/local", 0o755), ("usr/local/bin", 0o755),
            ("etc", 0o755), ("root", 0o700), ("tmp", 0o1777), ("var", 0o755),
            ("var/run", 0o755),
        ):  # fmt: skip
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
        for name, data in (
            ("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            ("etc/group", b"root:x:0:\n"),
        ):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, now
            tar.addfile(info, io.BytesIO(data))
    return archive.getvalue()
