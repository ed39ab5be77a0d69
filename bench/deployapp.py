"""A tiny web service to deploy, in three versions built locally from busybox, and a load
generator that sends requests to it through its load balancer. Used by the deployment benchmark
(bench/deploy.py) and the deployment tests (tests/runners/deploy_images.py).

Each image runs busybox httpd on port 8080 (from `cicd-bench/busybox:1`, bench.images) and serves
- `/health`: a static "ok" (every image passes its readiness probe and HAProxy's checks);
- `/` and `/version`: the version ("v1", "v2") as static files;
- `/cgi-bin/app` (APP_PATH): the application path the load generator calls, a CGI script
  answering the version. In the "bad" image it answers HTTP 500 to about half of the requests
  ($RANDOM).

The images differ in content, so each has an image id of its own. Each is built only when
missing, under a lock shared by every process of this machine (test workers and a benchmark may
build at the same time; two builds of one tag would leave each process with another image id).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import io
import socket
import tarfile
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import ImageNotFound

from bench.images import ensure_busybox_image

V1 = "cicd-bench/deploy-app:v1"
V2 = "cicd-bench/deploy-app:v2"
BAD_V2 = "cicd-bench/deploy-app:bad-v2"
APP_PATH = "/cgi-bin/app"
HEALTH_PATH = "/health"

_GOOD_SCRIPT = """#!/bin/sh
printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "{version}"
"""
# busybox httpd turns a "Status:" header of a CGI script into the response's status line.
_BAD_SCRIPT = """#!/bin/sh
if [ $((RANDOM % 2)) -eq 0 ]; then
    printf 'Status: 500 Internal Server Error\\r\\nContent-Type: text/plain\\r\\n\\r\\nbroken\\n'
else
    printf 'Content-Type: text/plain\\r\\n\\r\\n%s\\n' "{version}"
fi
"""
_VERSIONS = {V1: ("v1", _GOOD_SCRIPT), V2: ("v2", _GOOD_SCRIPT), BAD_V2: ("v2", _BAD_SCRIPT)}
_LOCK_FILE = Path(tempfile.gettempdir()) / "cicd-deploy-app-images.lock"
_thread_lock = threading.Lock()


def ensure_deploy_image(client: docker.DockerClient, name: str) -> str:
    """Build V1, V2 or BAD_V2 when missing; returns the image id (sha256:...)."""
    if name not in _VERSIONS:
        raise ValueError(f"no such deployment test image: {name!r}; choose from {list(_VERSIONS)}")
    version, script = _VERSIONS[name]
    base = ensure_busybox_image(client)
    with _build_lock():
        try:
            return client.images.get(name).id
        except ImageNotFound:
            pass
        dockerfile = (
            f"FROM {base}\n"
            "COPY www /www\n"
            "EXPOSE 8080\n"
            'CMD ["/bin/busybox", "httpd", "-f", "-p", "8080", "-h", "/www"]\n'
        )
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            _add(tar, "Dockerfile", dockerfile.encode())
            _add(tar, "www/health", b"ok\n")
            _add(tar, "www/index.html", f"{version}\n".encode())
            _add(tar, "www/version", f"{version}\n".encode())
            app = script.replace("{version}", version).encode()
            _add(tar, "www/cgi-bin/app", app, mode=0o755)
        context.seek(0)
        client.images.build(fileobj=context, custom_context=True, tag=name, rm=True, pull=False)
        return client.images.get(name).id


@contextlib.contextmanager
def _build_lock() -> Iterator[None]:
    with _thread_lock, open(_LOCK_FILE, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _add(tar: tarfile.TarFile, name: str, data: bytes, *, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


@dataclass(frozen=True)
class Tally:
    """What a load generator had counted at one moment (see LoadGenerator.tally)."""

    requests: int
    failures: int
    answered: int  # requests answered HTTP 200: the length of `latencies` then


class LoadGenerator:
    """Sends GET APP_PATH through the load balancer from a few threads (about `rate` requests
    a second in all, a new connection each) until stopped; counts answers by version and the
    failures (anything but HTTP 200, or no answer), and keeps the latency of each request
    answered HTTP 200 (seconds, connection included), in the order they finished."""

    def __init__(self, address: str, *, rate: float = 80.0, threads: int = 2) -> None:
        self.host, port = address.rsplit(":", 1)
        self.port = int(port)
        self.interval = threads / rate
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self.latencies: list[float] = []
        self.requests = 0
        self.recent: list[str] = []  # the last answers, newest last

    def __enter__(self) -> LoadGenerator:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(10)

    def _run(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            answer = self._request()
            took = time.monotonic() - started
            with self.lock:
                self.requests += 1
                if answer.startswith("v"):
                    self.versions[answer] += 1
                    self.latencies.append(took)
                else:
                    self.failures.append(answer)
                self.recent = [*self.recent[-49:], answer]
            self.stopping.wait(max(0.0, self.interval - took))

    def _request(self) -> str:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=10)
        try:
            connection.request("GET", APP_PATH)
            response = connection.getresponse()
            body = response.read().decode(errors="replace").strip()
            return body if response.status == 200 else f"HTTP {response.status}"
        except (OSError, http.client.HTTPException) as error:
            return f"{type(error).__name__}: {error}"
        finally:
            connection.close()

    def tally(self) -> Tally:
        with self.lock:
            return Tally(self.requests, len(self.failures), len(self.latencies))

    def wait_for_answers(self, count: int, timeout: float = 30.0) -> None:
        """Until `count` more requests were answered (whatever the answer)."""
        with self.lock:
            target = self.requests + count
        limit = time.monotonic() + timeout
        while time.monotonic() < limit:
            with self.lock:
                if self.requests >= target:
                    return
            time.sleep(0.05)
        raise AssertionError(f"the load generator got no {count} answers in {timeout} s")

    def summary(self) -> str:
        with self.lock:
            return (
                f"{self.requests} requests, versions {dict(self.versions)}, "
                f"{len(self.failures)} failures {Counter(self.failures).most_common(3)}"
            )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def short_state_dir() -> Path:
    """A deployment state directory short enough for haproxy's admin socket path (a test's
    tmp_path or a scratch directory can be too long for a unix socket)."""
    return Path(tempfile.mkdtemp(prefix="cd-", dir="/tmp"))
