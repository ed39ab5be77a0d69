"""A running cicd system for a benchmark: `cicd serve` on its own database, driven from outside.

PostgreSQL + Redis: a new database next to the one the services URL names (dropped at the end)
and one logical Redis database (flushed before and after), so a benchmark never sees another's
rows or queue. Embedded: a fresh data directory (SQLite, the filesystem broker).

Data is set up through `cicd manage shell` (the harness does not import Django) and results are
read with plain SQL; `query` hides the difference between the two databases' drivers.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import procs
from bench.gitrepo import Origin
from bench.hooks import ORGANISATION, SECRET
from bench.workloads import workflow_files

BANNER_URL = re.compile(r"cicd is running at (http://\S+)")
FINAL_STATES = ("success", "failure", "cancelled", "skipped", "timed_out")


class BenchError(Exception):
    """The benchmark could not measure what it set out to (the system misbehaved or timed out)."""


@dataclass(frozen=True)
class Services:
    postgres_url: str  # a database we may connect to, to create and drop others next to it
    redis_url: str  # one logical database the benchmarks may flush


@dataclass(frozen=True)
class SystemSpec:
    database: str  # "postgres" (with Redis) or "sqlite" (embedded default)
    executor: str = "local"
    workers: int = 1
    env: tuple[tuple[str, str], ...] = ()

    @property
    def label(self) -> str:
        base = (
            "PostgreSQL + Redis" if self.database == "postgres" else "embedded (SQLite, no Redis)"
        )
        workers = f"{self.workers} job worker{'s' if self.workers > 1 else ''}"
        return f"{base}, {self.executor} executor, {workers}"


class System:
    def __init__(self, spec: SystemSpec, *, scratch: Path, services: Services | None) -> None:
        if spec.database == "postgres" and services is None:
            raise BenchError("PostgreSQL + Redis benchmarks need the services' URLs")
        self.spec = spec
        self.services = services
        self.home = scratch / f"system-{uuid.uuid4().hex[:8]}"
        self.data_dir = self.home / "data"
        self.database_url: str | None = None
        self.url = ""
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._db: Any = None
        self.repositories: list[str] = []
        self.sha = ""

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.home.mkdir(parents=True)
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DJANGO_SETTINGS_MODULE"}
        }
        env.update(
            CICD_DATA_DIR=str(self.data_dir),
            PYTHONUNBUFFERED="1",
            CICD_LOG_LEVEL="WARNING",
            CICD_EXECUTOR=self.spec.executor,
            # The rate limit protects a server from a runaway git host; the benchmarks are one.
            CICD_WEBHOOK_RATE="0",
        )
        env.update(dict(self.spec.env))
        if self.spec.database == "postgres":
            assert self.services is not None
            import psycopg
            import redis

            name = f"cicd_bench_{uuid.uuid4().hex[:10]}"
            with psycopg.connect(self.services.postgres_url, autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"')
            self.database_url = self.services.postgres_url.rsplit("/", 1)[0] + f"/{name}"
            redis.Redis.from_url(self.services.redis_url).flushdb()
            env.update(DATABASE_URL=self.database_url, REDIS_URL=self.services.redis_url)
        self.env = env
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cicd.cli", "serve", "--port", "0",
             "--workers", str(self.spec.workers)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._collect, daemon=True).start()
        self.url = self._wait_for_banner().rstrip("/")
        self._wait_for_worker_ping()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        # Children `cicd serve` could not stop (it was killed): ours, found by their data dir.
        for pid in _processes_with_data_dir(self.data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._db is not None:
            self._db.close()
            self._db = None
        if self.database_url and self.services is not None:
            import psycopg
            import redis

            name = self.database_url.rsplit("/", 1)[1]
            with psycopg.connect(self.services.postgres_url, autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            redis.Redis.from_url(self.services.redis_url).flushdb()

    def output_tail(self, chars: int = 3000) -> str:
        return "".join(self.lines)[-chars:]

    def _collect(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with open(self.home / "serve.log", "a") as log:
            for line in self.process.stdout:
                self.lines.append(line)
                log.write(line)
                log.flush()

    def _wait_for_banner(self, timeout: float = 180) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = BANNER_URL.search(line)
                if match:
                    return match.group(1)
            if self.process is not None and self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise BenchError(f"cicd serve did not start:\n{self.output_tail()}")

    def _wait_for_worker_ping(self, timeout: float = 120) -> None:
        """The startup ping travels web -> broker -> worker -> cache -> web: workers are up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=10) as response:
                    health = json.load(response)
            except OSError:
                health = {}
            if health.get("worker_last_ping_nonce") == "serve-startup":
                return
            time.sleep(0.2)
        raise BenchError(f"the workers did not answer the startup ping:\n{self.output_tail()}")

    # -- processes -------------------------------------------------------------------------------

    def roles(self) -> dict[str, list[int]]:
        """PIDs by role: "web" (daphne), "control" (control worker with beat), "worker1"...
        (a job worker: its main process first, then its pool's children)."""
        assert self.process is not None
        table = procs.processes()
        found: dict[str, list[int]] = {}
        for child in procs.descendants(self.process.pid, table):
            if child.ppid != self.process.pid:
                continue
            if " daphne " in f" {child.cmdline} ":
                role = "web"
            else:
                match = re.search(r"--hostname (\w+)@", child.cmdline)
                if not match:
                    continue
                role = match.group(1)
            pool = [p.pid for p in procs.descendants(child.pid, table) if p.ppid == child.pid]
            found[role] = [child.pid, *sorted(pool)]
        return found

    # -- data ------------------------------------------------------------------------------------

    def manage(self, code: str, *, timeout: float = 600) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "cicd.cli", "manage", "shell", "-c", code],
            env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchError(f"cicd manage shell failed:\n{done.stderr[-3000:]}")
        return done.stdout

    def add_repositories(self, names: Sequence[str]) -> None:
        """Public repositories (readable without logging in) under the `bench` organisation,
        each with the webhook secret, all cloning one origin that holds the workloads."""
        if not self.sha:
            self.origin = Origin(self.home / "origin")
            self.sha = self.origin.commit(workflow_files())
        code = (
            "from runs.models import Organisation, Repository\n"
            "from webhooks.keys import add_secret\n"
            f"o, _ = Organisation.objects.get_or_create(slug={ORGANISATION!r}, "
            f"defaults={{'name': {ORGANISATION!r}}})\n"
            f"for name in {list(names)!r}:\n"
            "    r = Repository.objects.create(organisation=o, slug=name, is_public=True,\n"
            f"        clone_url={str(self.origin.path)!r})\n"
            f"    add_secret(r, label='bench', value={SECRET!r})\n"
        )
        self.manage(code)
        self.repositories.extend(names)

    def query(self, sql: str, *params: Any) -> list[tuple]:
        """Rows of a query written with %s placeholders, on either database."""
        if self._db is None:
            if self.database_url:
                import psycopg

                self._db = psycopg.connect(self.database_url, autocommit=True)
            else:
                self._db = sqlite3.connect(
                    self.data_dir / "cicd.sqlite3", timeout=60, isolation_level=None
                )
        if self.database_url:
            return self._db.execute(sql, params).fetchall()
        return self._db.execute(sql.replace("%s", "?"), params).fetchall()

    def wait_until(
        self,
        ready: Callable[[], bool],
        *,
        timeout: float,
        what: str,
        every: float = 0.05,
    ) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if time.monotonic() > deadline:
                raise BenchError(f"timed out after {timeout:.0f} s waiting for {what}")
            if self.process is not None and self.process.poll() is not None:
                raise BenchError(f"cicd serve exited waiting for {what}:\n{self.output_tail()}")
            time.sleep(every)


def epoch(value: Any) -> float:
    """Seconds since the epoch of a timestamp as either driver returns it (SQLite: naive UTC
    text; psycopg: an aware datetime)."""
    if value is None:
        raise BenchError("a timestamp the benchmark needs is not set")
    if isinstance(value, str):
        value = datetime.datetime.fromisoformat(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.UTC)
    return value.timestamp()


def _processes_with_data_dir(data_dir: Path) -> list[int]:
    marker = f"CICD_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found
