"""One HAProxy per deployed service: its load balancer, started here and driven at run time.

Each service gets a haproxy process (Debian's `haproxy`) with its files under
`<state_dir>/<service>/`: `haproxy.cfg`, the admin socket `admin.sock`, `haproxy.pid` and
`haproxy.log` (what haproxy said when it started). It is started daemonised, in a session of its
own, so it outlives the job that started it: it IS the service's load balancer. A deployment
finds it running (the pidfile names a live haproxy and the socket answers) or starts it.

HAProxy checks each server (GET health-path every 2 s; down after 2 failures, a 5xx or no
answer; any other status passes, so a running version that does not know a new health path stays
in). The readiness probe of a new replica (runners.deploy.engine) is stricter: 2xx or 3xx.

The backend has a fixed set of server slots (`slot1` ... `slot64`). Every change during a
deployment goes through the admin socket (`set server app/slotN addr|weight|state`), so traffic
never stops for a reload. The configuration file is written from the servers that should run
when haproxy starts (explicit `server` lines rather than a `server-template`: a haproxy restarted
after a crash serves the running containers from its first request, with no moment where every
slot is still disabled). A change of the frontend itself (listen address, health path) reloads
haproxy seamlessly (`-sf` with the listeners passed over the socket, `-x`).

Retries: a request whose connection failed, or that got an empty response or none in time, is
retried (3 times) on another server (`retry-on conn-failure empty-response response-timeout`),
which hides a replica going away; HTTP errors are never retried, so a bad version's 5xx reach the
statistics the analysis reads.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from runners.deploy.request import DeployError

SLOTS = 64
BACKEND = "app"
STEADY_WEIGHT = 100  # every server of a version that has all the traffic
MAX_WEIGHT = 256
# Linux's limit for a unix socket path (sun_path), its terminating NUL included.
_MAX_SOCKET_PATH = 107
_CONFIG_VERSION = "2"  # bump when the configuration below changes: running haproxys reload
_UNUSED_ADDRESS = "127.0.0.1:1"  # where a disabled slot points until a replica is put there
# Replies of `set server ... addr` that mean it worked.
_ADDRESS_REPLIES = ("no need to change", "ip changed from", "port changed from")

READY, DRAIN, MAINT = "ready", "drain", "maint"


class HAProxyError(DeployError):
    """haproxy is missing, does not start, or refused a command."""


@dataclass(frozen=True, slots=True)
class Frontend:
    """What the configuration file says besides the servers; a change reloads haproxy."""

    listen: str  # bind address, host:port
    health_path: str  # HAProxy's own health checks of each server

    def signature(self) -> str:
        text = f"{_CONFIG_VERSION}|{self.listen}|{self.health_path}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Server:
    """A slot in use: where its replica listens and its weight (0: no new requests)."""

    address: str
    port: int
    weight: int = STEADY_WEIGHT


@dataclass(frozen=True, slots=True)
class ServerStats:
    """One server's line of `show stat` (counters since haproxy started or counters were
    cleared)."""

    slot: int
    status: str  # UP, DOWN, MAINT, DRAIN, "no check", "UP 1/2"...
    weight: int
    requests: int  # req_tot: HTTP requests sent to it
    responses_5xx: int  # hrsp_5xx
    response_errors: int  # eresp: the response was cut or never came
    connection_errors: int  # econ: the connection failed
    response_time_ms: int  # rtime: average over the last requests
    current_sessions: int  # scur
    check: str  # check_status (L7OK, L4CON, L7STS...) with check_code when there is one


def find_haproxy() -> str:
    """The haproxy binary: on PATH, else Debian's /usr/sbin/haproxy."""
    found = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.access("/usr/sbin/haproxy", os.X_OK) else None
    )
    if not found:
        raise HAProxyError(
            "haproxy is not installed on this worker (cicd/deploy runs it as the service's load "
            "balancer): install Debian's haproxy package"
        )
    return found


class HAProxy:
    """The haproxy of one service. Not thread-safe: one deployment of a service at a time."""

    def __init__(self, state_dir: Path, service: str) -> None:
        self.service = service
        self.directory = state_dir / service
        self.config_path = self.directory / "haproxy.cfg"
        self.socket_path = self.directory / "admin.sock"
        self.pid_path = self.directory / "haproxy.pid"
        self.log_path = self.directory / "haproxy.log"
        if len(str(self.socket_path).encode()) > _MAX_SOCKET_PATH - 1:
            raise HAProxyError(
                f"the deployment state directory {str(state_dir)!r} is too long for haproxy's "
                f"admin socket ({self.socket_path}): set CICD_DEPLOY_DIR to a shorter path"
            )

    # ---------------------------------------------------------------- process

    def running(self) -> bool:
        """haproxy runs for this service: its pidfile names a live haproxy and the socket
        answers."""
        pid = self._pid()
        if pid is None or not _alive(pid):
            return False
        try:
            reply = self.command("show info")
        except HAProxyError:
            return False
        return "Name: HAProxy" in reply

    def ensure(self, frontend: Frontend, servers: Mapping[int, Server]) -> str:
        """Start haproxy when it is not running ("started"), reload it when its frontend
        changed ("reloaded"), else leave it ("running"). The configuration written holds
        `servers` (slot -> server); the other slots are disabled."""
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.running():
            if self._running_signature() == frontend.signature():
                return "running"
            self._start(frontend, servers, replace=self._pid())
            return "reloaded"
        self._stop_stale()
        self._start(frontend, servers, replace=None)
        return "started"

    def stop(self) -> None:
        """Stop haproxy (if it runs) and wait for it to be gone (bounded)."""
        pid = self._pid()
        if pid is not None and self._is_ours(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            _wait_gone(pid, 5.0)
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                _wait_gone(pid, 2.0)

    def _start(
        self, frontend: Frontend, servers: Mapping[int, Server], replace: int | None
    ) -> None:
        binary = find_haproxy()
        self.config_path.write_text(self._config(frontend, servers))
        argv = [binary, "-D", "-f", str(self.config_path)]
        if replace is not None:
            # A seamless reload: the new process takes the listening sockets over the admin
            # socket and the old one finishes its connections, then exits.
            argv += ["-x", str(self.socket_path), "-sf", str(replace)]
        with open(self.log_path, "wb") as log:
            try:
                finished = subprocess.run(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    start_new_session=True,
                    timeout=30,
                    check=False,
                )
            except (OSError, subprocess.TimeoutExpired) as error:
                raise HAProxyError(f"haproxy could not be started: {error}") from None
        if finished.returncode != 0:
            raise HAProxyError(
                f"haproxy for {self.service} did not start (exit code {finished.returncode}): "
                f"{self._alerts()}"
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pid = self._pid()
            if pid is not None and pid != replace and self.running():
                return
            time.sleep(0.05)
        raise HAProxyError(
            f"haproxy for {self.service} started but its admin socket never answered"
        )

    def _stop_stale(self) -> None:
        """A haproxy of ours that no longer answers (hung, socket removed): stop it, or the new
        one could not bind the listen address."""
        pid = self._pid()
        if pid is not None and _alive(pid) and self._is_ours(pid):
            self.stop()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _config(self, frontend: Frontend, servers: Mapping[int, Server]) -> str:
        lines = [
            f"# Written by cicd (runners.deploy) for service {self.service}: its load balancer.",
            "# Changed at run time through the admin socket; rewritten when haproxy (re)starts.",
            f"# frontend-signature {frontend.signature()}",
            "global",
            f"    pidfile {self.pid_path}",
            f"    stats socket {self.socket_path} mode 600 level admin expose-fd listeners",
            "    stats timeout 30s",
            "",
            "defaults",
            "    mode http",
            "    timeout connect 3s",
            "    timeout client 60s",
            "    timeout server 60s",
            "    timeout queue 10s",
            "    timeout http-request 10s",
            "    timeout http-keep-alive 10s",
            "    retries 3",
            "    option redispatch 1",
            "    retry-on conn-failure empty-response response-timeout",
            "",
            "frontend service",
            f"    bind {frontend.listen}",
            f"    default_backend {BACKEND}",
            "",
            f"backend {BACKEND}",
            "    balance roundrobin",
            f"    option httpchk GET {frontend.health_path}",
            # Any answer but a 5xx passes: a dead or failing replica goes DOWN, yet a version
            # that does not know a new health path (404) is not taken out by a change of it.
            "    http-check expect rstatus ^[234]",
            "    default-server check inter 2s fall 2 rise 2",
        ]
        for slot in range(1, SLOTS + 1):
            server = servers.get(slot)
            if server is None:
                lines.append(f"    server slot{slot} {_UNUSED_ADDRESS} disabled")
            else:
                lines.append(
                    f"    server slot{slot} {_address(server.address)}:{server.port} "
                    f"weight {server.weight}"
                )
        return "\n".join(lines) + "\n"

    def _running_signature(self) -> str:
        try:
            for line in self.config_path.read_text().splitlines()[:5]:
                if line.startswith("# frontend-signature "):
                    return line.split()[-1]
        except OSError:
            pass
        return ""

    def _pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def _is_ours(self, pid: int) -> bool:
        """The process is a haproxy started with this service's configuration (a pid reused
        by another process after a reboot is left alone)."""
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return (
            any(b"haproxy" in part for part in argv[:1]) and str(self.config_path).encode() in argv
        )

    def _alerts(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        alerts = [line for line in text.splitlines() if "ALERT" in line]
        shown = " ".join((alerts or text.splitlines() or ["(no output)"])[-3:])
        return " ".join(shown.split())[:600]

    # ---------------------------------------------------------------- runtime API

    def command(self, text: str) -> str:
        """Send one command to the admin socket; its reply."""
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(5)
                connection.connect(str(self.socket_path))
                connection.sendall(text.encode() + b"\n")
                chunks = []
                while chunk := connection.recv(65536):
                    chunks.append(chunk)
        except OSError as error:
            raise HAProxyError(
                f"haproxy for {self.service} did not answer on {self.socket_path}: {error}"
            ) from None
        return b"".join(chunks).decode("utf-8", "replace")

    def _change(self, text: str, accepted: tuple[str, ...] = ()) -> None:
        reply = self.command(text).strip()
        if reply and not (accepted and reply.lower().startswith(accepted)):
            raise HAProxyError(f"haproxy refused {text!r}: {' '.join(reply.split())[:300]}")

    def set_server(self, slot: int, address: str, port: int) -> None:
        self._change(
            f"set server {BACKEND}/slot{slot} addr {address} port {port}", _ADDRESS_REPLIES
        )

    def set_weight(self, slot: int, weight: int) -> None:
        self._change(f"set server {BACKEND}/slot{slot} weight {weight}")

    def set_state(self, slot: int, state: str) -> None:
        self._change(f"set server {BACKEND}/slot{slot} state {state}")

    def enable(self, slot: int, server: Server) -> None:
        """Put a replica in a slot and give it traffic at its weight."""
        self.set_server(slot, server.address, server.port)
        self.set_weight(slot, server.weight)
        self.set_state(slot, READY)

    def clear_counters(self) -> None:
        """Zero every counter (and the averages such as rtime): the start of an analysis
        window. Only the deployment, which holds the service's lock, reads them."""
        self._change("clear counters all")

    def stats(self) -> dict[int, ServerStats]:
        """slot -> the statistics of its server."""
        reply = self.command("show stat -1 4 -1")
        if not reply.startswith("# "):
            raise HAProxyError(f"haproxy's statistics could not be read: {reply.strip()[:200]}")
        rows = csv.DictReader(io.StringIO(reply[2:]))
        stats: dict[int, ServerStats] = {}
        for row in rows:
            name = row.get("svname") or ""
            if row.get("pxname") != BACKEND or not name.startswith("slot"):
                continue
            check = row.get("check_status") or ""
            if row.get("check_code"):
                check += f" {row['check_code']}"
            slot = int(name[4:])
            stats[slot] = ServerStats(
                slot=slot,
                status=row.get("status") or "",
                weight=_int(row.get("weight")),
                requests=_int(row.get("req_tot")),
                responses_5xx=_int(row.get("hrsp_5xx")),
                response_errors=_int(row.get("eresp")),
                connection_errors=_int(row.get("econ")),
                response_time_ms=_int(row.get("rtime")),
                current_sessions=_int(row.get("scur")),
                check=check.strip(),
            )
        return stats


def _int(value: str | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


def _address(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (a haproxy we started whose parent has not reaped it) is not running.
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True
    return fields[0] != "Z"


def _wait_gone(pid: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
