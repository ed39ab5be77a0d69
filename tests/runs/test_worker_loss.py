"""Worker loss and restarts with real processes: Celery workers on PostgreSQL and Redis.

A worker killed with SIGKILL mid-job stops renewing its lease; the reaper requeues the job,
another worker runs it to the end exactly once, and the dead worker's token is refused. A system
stopped with SIGTERM mid-run and started again finishes the run with every job run once.

The test talks to the workers' database with psycopg and runs Django code (creating the run,
the reaper, stale writes) in `manage.py` subprocesses with the workers' environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg.rows import dict_row

from ..conftest import redis_url_with_db
from ..test_serve import BANNER_URL, ServeProcess, processes_with_data_dir, serve_env
from .test_execution import make_repository

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]

SLOW_JOB = """\
on: push
jobs:
  slow:
    runs-on: linux
    steps:
      - run: |
          echo "first line"
          sleep 4
          echo "second line"
"""

DIAMOND = """\
on: push
jobs:
  setup:
    runs-on: linux
    steps:
      - run: sleep 1; echo setup done
  left:
    needs: setup
    runs-on: linux
    steps:
      - run: sleep 3; echo left done
  right:
    needs: setup
    runs-on: linux
    steps:
      - run: sleep 3; echo right done
  join:
    needs: [left, right]
    runs-on: linux
    steps:
      - run: sleep 1; echo joined
"""

CREATE_RUN = """
from runs.models import Job, Organisation, Repository
from runs.scheduling import RunRequest, create_run
organisation = Organisation.objects.create(slug="acme", name="Acme")
repository = Repository.objects.create(
    organisation=organisation, slug="widgets", clone_url={clone_url!r}
)
run = create_run(repository, RunRequest(
    workflow_path=".cicd/workflows/ci.yml", source={source!r}, event="push",
    ref="refs/heads/main", sha={sha!r}, idempotency_key="worker-loss",
))
print(run.id)
"""

LATE_WRITES = """
from runs.execution import DatabaseSink, StaleToken
from runs.scheduling import finish_job
print("finish accepted" if finish_job({job_id}, "failure", token={token!r}) else "finish refused")
try:
    DatabaseSink(job_id={job_id}, token={token!r}).job_started()
    print("sink accepted")
except StaleToken:
    print("sink refused")
"""


class Worker:
    """`celery worker` in its own process group, so a kill reaches its pool children too."""

    def __init__(self, env: dict[str, str], name: str, log_dir: Path, *extra: str) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable, "-m", "celery", "-A", "cicd", "worker",
                    "--queues", "control,jobs", "--concurrency", "1", "--pool", "prefork",
                    "--hostname", f"{name}@%h", "--loglevel", "INFO",
                    "--without-mingle", "--without-gossip", *extra,
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "manage.py", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def query(database: str, sql: str, *params: Any) -> list[dict[str, Any]]:
    with psycopg.connect(database, row_factory=dict_row) as connection:
        return connection.execute(sql, params).fetchall()


def wait_until(check: Callable[[], Any], what: str, timeout: float, *logs: Worker) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    tails = "\n".join(f"--- {w.name}\n{w.output()[-3000:]}" for w in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def job_rows(database: str, run_id: int) -> list[dict[str, Any]]:
    return query(
        database,
        "SELECT id, key, state, error, lease_token, lease_expires_at < now() AS expired,"
        " claimed_by, claims FROM runs_job WHERE run_id = %s ORDER BY id",
        run_id,
    )


def run_state(database: str, run_id: int) -> str:
    return query(database, "SELECT state FROM runs_run WHERE id = %s", run_id)[0]["state"]


def transitions(database: str, job_id: int) -> list[tuple[str, str, str, str]]:
    rows = query(
        database,
        "SELECT from_state, to_state, reason, worker FROM runs_jobtransition"
        " WHERE job_id = %s ORDER BY id",
        job_id,
    )
    return [(r["from_state"], r["to_state"], r["reason"], r["worker"]) for r in rows]


def log_lines(database: str, job_id: int) -> list[str]:
    rows = query(
        database, "SELECT text FROM runs_logchunk WHERE job_id = %s ORDER BY sequence", job_id
    )
    return [json.loads(line)[2] for row in rows for line in row["text"].splitlines()]


@contextlib.contextmanager
def services(tmp_path: Path, database: str, redis_db: int) -> Iterator[dict[str, Any]]:
    """A clean Redis db (one per test: they may run in parallel), a git repository and the
    workers' environment; every process with the data dir in its environment is killed at the
    end."""
    redis_url = redis_url_with_db(redis_db)
    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path / "data"
    env = serve_env(
        data_dir,
        DATABASE_URL=database,
        REDIS_URL=redis_url,
        CICD_LEASE_SECONDS="3",
        CICD_HEARTBEAT_SECONDS="0.5",
        CICD_EXECUTOR="local",
    )
    sha = make_repository(tmp_path / "repo")
    try:
        yield {
            "env": env,
            "database": database,
            "data_dir": data_dir,
            "clone_url": str(tmp_path / "repo"),
            "sha": sha,
            "tmp": tmp_path,
        }
    finally:
        for pid in processes_with_data_dir(data_dir):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        redis.Redis.from_url(redis_url).flushdb()


def create_run(system: dict[str, Any], source: str) -> int:
    script = CREATE_RUN.format(clone_url=system["clone_url"], source=source, sha=system["sha"])
    return int(manage(system["env"], "shell", "-v", "0", "-c", script).strip().splitlines()[-1])


def test_a_job_of_a_killed_worker_is_rerun_by_another_worker_exactly_once(
    tmp_path, fresh_postgres_database
):
    with services(tmp_path, fresh_postgres_database, redis_db=13) as system:
        kill_a_worker_mid_job(system)


def kill_a_worker_mid_job(system: dict[str, Any]) -> None:
    env, database = system["env"], system["database"]
    started = time.monotonic()
    first = Worker(env, "worker1", system["tmp"])  # boots while the database is migrated
    workers = [first]
    try:
        manage(env, "migrate", "--noinput", "-v", "0")
        run_id = create_run(system, SLOW_JOB)
        [job] = job_rows(database, run_id)
        job_id = job["id"]

        def mid_job_on_worker1() -> dict[str, Any] | None:
            # The step row turns running just before its command starts: 4 s of sleep are left.
            [row] = job_rows(database, run_id)
            held = row["state"] == "running" and "worker1@" in row["claimed_by"]
            step = query(database, "SELECT state FROM runs_step WHERE job_id = %s", job_id)
            return row if held and step and step[0]["state"] == "running" else None

        held = wait_until(mid_job_on_worker1, "worker1 to be mid-job", 30, first)
        old_token = held["lease_token"]
        first.kill()
        killed = time.monotonic()
        # The second worker boots while the lease runs out; it has nothing to do until then.
        second = Worker(env, "worker2", system["tmp"])
        workers.append(second)

        # Nothing renews the lease now; once it has run out the reaper gives the job back.
        wait_until(lambda: job_rows(database, run_id)[0]["expired"], "the lease to expire", 10)
        assert job_rows(database, run_id)[0]["state"] == "running"
        reaped = manage(env, "reap_jobs")
        # On a quiet broker this command is what requeues the job. Another test session sharing
        # this Redis db can deliver its beat's reaper message to worker2 first: just as good.
        if "requeued 0" not in reaped:
            assert f"job {job_id} requeued: lease expired (worker " in reaped
            assert "worker1@" in reaped
        wait_until(
            lambda: run_state(database, run_id) in {"success", "failure", "cancelled"},
            "the run to end",
            40,
            first,
            second,
        )
        finished = time.monotonic()

        [job] = job_rows(database, run_id)
        assert run_state(database, run_id) == "success"
        assert (job["state"], job["claims"]) == ("success", 2)
        assert "worker2@" in job["claimed_by"]
        history = transitions(database, job_id)
        assert [(f, t) for f, t, _, _ in history] == [
            ("pending", "queued"),
            ("queued", "running"),
            ("running", "queued"),
            ("queued", "running"),
            ("running", "success"),
        ]
        assert "worker1@" in history[1][3] and "worker2@" in history[3][3]
        assert history[2][2].startswith("lease expired (worker ")
        assert log_lines(database, job_id).count("second line") == 1

        # The dead worker's late writes, made with its old token, are refused.
        late_writes = LATE_WRITES.format(job_id=job_id, token=old_token)
        assert manage(env, "shell", "-v", "0", "-c", late_writes).split() == [
            "finish",
            "refused",
            "sink",
            "refused",
        ]
        assert job_rows(database, run_id)[0]["state"] == "success"
        assert len(transitions(database, job_id)) == len(history)
        print(
            f"\nworker loss: killed {killed - started:.1f}s after the start, "
            f"run ended {finished - killed:.1f}s after the kill"
        )
    finally:
        for worker in workers:
            worker.kill()
    assert processes_with_data_dir(system["data_dir"]) == []


def test_a_system_restarted_mid_run_finishes_the_run_with_every_job_run_once(
    tmp_path, fresh_postgres_database
):
    with services(tmp_path, fresh_postgres_database, redis_db=11) as system:
        restart_mid_run(system)


def restart_mid_run(system: dict[str, Any]) -> None:
    env = dict(system["env"], CICD_REAP_LEASES_SECONDS="1", CICD_WORKER_CONCURRENCY="1")
    database = system["database"]
    started = time.monotonic()
    server = ServeProcess(env, "--workers", "2")
    servers = [server]
    try:
        server.wait_for(BANNER_URL, timeout=60)  # migrated, web and workers started
        run_id = create_run(system, DIAMOND)

        def middle_jobs_running() -> bool:
            by_key = {row["key"]: row["state"] for row in job_rows(database, run_id)}
            return by_key["left"] == "running" or by_key["right"] == "running"

        wait_until(middle_jobs_running, "the middle of the diamond to run", 30)
        # SIGTERM: workers finish the job in hand (warm shutdown), then everything exits.
        assert server.stop() == 0, server.output_tail()
        stopped_states = {row["key"]: row["state"] for row in job_rows(database, run_id)}
        assert processes_with_data_dir(system["data_dir"]) == []

        server = ServeProcess(env, "--workers", "2")
        servers.append(server)
        server.wait_for(BANNER_URL, timeout=60)
        wait_until(
            lambda: run_state(database, run_id) in {"success", "failure", "cancelled"},
            "the run to end after the restart",
            60,
        )
        rows = job_rows(database, run_id)
        assert run_state(database, run_id) == "success", rows
        for row in rows:
            history = transitions(database, row["id"])
            assert row["state"] == "success", (row, history)
            # Run once: claimed once, ended once, never requeued.
            assert row["claims"] == 1, (row, history)
            assert [t for _, t, _, _ in history].count("success") == 1
            assert ("running", "queued") not in [(f, t) for f, t, _, _ in history]
        print(
            f"\nrestart: states at the stop {stopped_states}; "
            f"whole test {time.monotonic() - started:.1f}s"
        )
    finally:
        for each in servers:
            if each.process.poll() is None:
                each.stop()
    assert processes_with_data_dir(system["data_dir"]) == []
