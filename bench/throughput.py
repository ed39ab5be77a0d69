"""Throughput of trivial jobs end to end, and the scheduler's dispatch rate alone.

End to end: a burst of signed pushes over several repositories, each starting a run of one job
with one step (`echo`), sent as fast as the server answers; jobs finished per second is the
number of jobs over the time from the first delivery received to the last job finished. On the
embedded default with its default worker count, and on PostgreSQL + Redis with two job worker
processes (each runs CICD_WORKER_CONCURRENCY jobs at once, 2 by default).

Alone: `bench/dispatch.py` claims and finishes no-op jobs from a backlog in one process, with no
executor, broker or web server: the ceiling the scheduler's queries put on everything above.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.hooks import Poster, hook_path, push_body, signed_headers
from bench.report import ROOT, Figure, Target
from bench.system import FINAL_STATES, BenchError, System, epoch


@dataclass(frozen=True)
class Load:
    repeats: int
    jobs: int  # per repeat
    repositories: int
    connections: int  # pushing


FULL = Load(repeats=3, jobs=500, repositories=10, connections=4)
SMOKE = Load(repeats=1, jobs=8, repositories=2, connections=2)
DISPATCH_FULL = (3, 2000)  # repeats, jobs
DISPATCH_SMOKE = (1, 40)


def run_system(context: Any, system: System) -> list[Figure]:
    load = SMOKE if context.smoke else FULL
    kind = "embedded" if system.spec.database == "sqlite" else "scaled"
    names = [f"burst-{i}" for i in range(load.repositories)]
    system.add_repositories(names)
    rates, push_rates, spans = [], [], []
    for _ in range(load.repeats):
        prefix = f"e-{uuid.uuid4().hex[:8]}-"
        pushed = push_burst(system, names, prefix, load.jobs, load.connections)
        wait_jobs_final(system, prefix, load.jobs, timeout=1800)
        first = system.query(
            "SELECT min(received_at) FROM webhooks_delivery WHERE body LIKE %s",
            f'%"refs/tags/{prefix}%',
        )[0][0]
        last = system.query(
            "SELECT max(j.finished_at) FROM runs_job j JOIN runs_run r ON r.id = j.run_id "
            "WHERE r.ref LIKE %s",
            f"refs/tags/{prefix}%",
        )[0][0]
        span = epoch(last) - epoch(first)
        spans.append(span)
        rates.append(load.jobs / span)
        push_rates.append(load.jobs / pushed)
    words = (
        f"{load.repeats} burst{'s' if load.repeats > 1 else ''} of {load.jobs} runs of one "
        "one-step `echo` job over "
        f"{load.repositories} repositories, pushed from {load.connections} connections"
    )
    return [
        Figure(
            f"throughput.jobs_per_second_{kind}", f"trivial jobs finished per second ({kind})",
            "jobs/s", words, system.spec.label, rates, target=Target(">=", 50),
            details={
                "seconds per burst (first delivery received to last job finished)": spans,
                "deliveries acknowledged per second while pushing": push_rates,
                "worker concurrency": "CICD_WORKER_CONCURRENCY default (2) per job worker",
            },
        )
    ]  # fmt: skip


def push_burst(
    system: System, names: list[str], prefix: str, count: int, connections: int
) -> float:
    """Sends `count` pushes of tags `prefix<n>` (each starts one echo run) round-robin over
    the repositories from `connections` threads; returns the seconds the sending took."""
    work = [(names[n % len(names)], f"{prefix}{n}") for n in range(count)]
    failures: list[str] = []

    def send(share: list[tuple[str, str]]) -> None:
        poster = Poster(system.url)
        try:
            for repository, tag in share:
                body = push_body(repository, tag, system.sha)
                status, _ = poster.post(
                    hook_path(repository), body, signed_headers(body, str(uuid.uuid4()))
                )
                if status != 202:
                    failures.append(f"{tag}: {status}")
        except Exception as error:
            failures.append(f"{type(error).__name__}: {error}")
        finally:
            poster.close()

    threads = [
        threading.Thread(target=send, args=(work[i::connections],)) for i in range(connections)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise BenchError(f"{len(failures)} pushes were not acknowledged: {failures[:3]}")
    return time.monotonic() - started


def wait_jobs_final(system: System, prefix: str, count: int, *, timeout: float) -> None:
    """Waits until the `count` jobs of the runs of tags `prefix*` all ended; all must succeed."""
    like = f"refs/tags/{prefix}%"

    def done() -> bool:
        placeholders = ", ".join(["%s"] * len(FINAL_STATES))
        (ended,) = system.query(
            "SELECT count(*) FROM runs_job j JOIN runs_run r ON r.id = j.run_id "
            f"WHERE r.ref LIKE %s AND j.state IN ({placeholders})",
            like,
            *FINAL_STATES,
        )[0]
        return ended >= count

    system.wait_until(done, timeout=timeout, what=f"{count} jobs to finish", every=0.25)
    failed = system.query(
        "SELECT j.state, j.error FROM runs_job j JOIN runs_run r ON r.id = j.run_id "
        "WHERE r.ref LIKE %s AND j.state <> 'success'",
        like,
    )
    if failed:
        raise BenchError(f"{len(failed)} of {count} jobs did not succeed, e.g. {failed[0]}")


def run_dispatch(context: Any) -> list[Figure]:
    repeats, jobs = DISPATCH_SMOKE if context.smoke else DISPATCH_FULL
    figures = []
    for database in ("sqlite", "postgres"):
        rates = []
        for _ in range(repeats):
            argv = [sys.executable, "-m", "bench.dispatch", "--jobs", str(jobs), "--json"]
            if database == "postgres":
                argv += ["--postgres", context.services.postgres_url]
            env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
            done = subprocess.run(
                argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800
            )
            if done.returncode != 0:
                raise BenchError(f"bench.dispatch failed:\n{done.stderr[-3000:]}")
            rates.append(json.loads(done.stdout.strip().splitlines()[-1])["per_second"])
        label = "embedded (SQLite)" if database == "sqlite" else "PostgreSQL"
        figures.append(
            Figure(
                f"throughput.dispatch_{database}",
                f"scheduler dispatch alone, claims+finishes per second ({database})",
                "jobs/s",
                f"{repeats} x a backlog of {jobs:,} no-op jobs over 5 organisations x 4 "
                "repositories, claimed and finished one after the other by one process",
                f"{label}, no executor, broker or web server",
                rates,
            )
        )
    return figures
