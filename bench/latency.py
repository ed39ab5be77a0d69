"""Push to first step running, and to job finished, on a warm system.

One signed push at a time starts a run of the one-step `echo` job; the harness waits until the
job has finished and the system is idle again before the next push. Times come from the
database, all written on this machine's clock: the delivery's `received_at` (written by the web
process before it answers 202), the first step's `started_at` (the executor's clock when the
step's process started; the automatic checkout comes before it) and the job's `finished_at`.
The first pushes warm the system up (the repository's mirror is fetched, the image is looked up,
code paths are loaded) and are not counted.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench.hooks import Poster, hook_path, push_body, signed_headers
from bench.report import Figure, Target, percentile
from bench.system import FINAL_STATES, BenchError, System, epoch


@dataclass(frozen=True)
class Load:
    warmup: int
    samples: int


FULL = {"local": Load(warmup=3, samples=30), "docker": Load(warmup=3, samples=20)}
SMOKE = Load(warmup=0, samples=2)
TARGETS = {"local": 150.0, "docker": 600.0}  # ms, median push -> first step running
IDLE_PAUSE_SECONDS = 0.3  # between a job's end and the next push: cleanup finishes, idle again


def run_local(context: Any, system: System) -> list[Figure]:
    return _measure(context, system, "local")


def run_docker(context: Any, system: System) -> list[Figure]:
    return _measure(context, system, "docker")


def _measure(context: Any, system: System, executor: str) -> list[Figure]:
    load = SMOKE if context.smoke else FULL[executor]
    repository = f"latency-{executor}"
    system.add_repositories([repository])
    poster = Poster(system.url)
    rows = []
    for index in range(load.warmup + load.samples):
        row = _one_push(system, poster, repository)
        if index >= load.warmup:
            rows.append(row)
        time.sleep(IDLE_PAUSE_SECONDS)
    poster.close()

    def stage(start: str, end: str) -> list[float]:
        return [1000 * (row[end] - row[start]) for row in rows]

    breakdown = {
        "delivery received -> run created": stage("received", "run_created"),
        "run created -> job claimed by a worker": stage("run_created", "job_started"),
        "job claimed -> first step started (spec, checkout, container)": stage(
            "job_started", "step_started"
        ),
        "first step started -> finished": stage("step_started", "step_finished"),
        "step finished -> job finished": stage("step_finished", "job_finished"),
    }
    details = {
        "median ms per stage": {k: round(percentile(v, 50), 1) for k, v in breakdown.items()},
        "p99 ms per stage": {k: round(percentile(v, 99), 1) for k, v in breakdown.items()},
    }
    warmup = f" (after {load.warmup} not counted)" if load.warmup else ""
    words = (
        f"{load.samples} pushes one at a time{warmup}, each a run of one job with one step "
        "`echo hello`; the next push when the system is idle again"
    )
    setup = system.spec.label
    return [
        Figure(
            f"latency.first_step_{executor}", f"push -> first step running ({executor})", "ms",
            words, setup, stage("received", "step_started"), sample="push",
            target=Target("<=", TARGETS[executor]), details=details,
        ),
        Figure(
            f"latency.job_finished_{executor}", f"push -> job finished ({executor})", "ms",
            words, setup, stage("received", "job_finished"), sample="push",
        ),
    ]  # fmt: skip


def _one_push(system: System, poster: Poster, repository: str) -> dict[str, float]:
    tag = f"e-{uuid.uuid4().hex[:12]}"
    delivery_id = str(uuid.uuid4())
    body = push_body(repository, tag, system.sha)
    status, _ = poster.post(hook_path(repository), body, signed_headers(body, delivery_id))
    if status != 202:
        raise BenchError(f"the push was answered {status}, not 202")
    ref = f"refs/tags/{tag}"

    def finished() -> bool:
        rows = system.query(
            "SELECT j.state FROM runs_job j JOIN runs_run r ON r.id = j.run_id WHERE r.ref = %s",
            ref,
        )
        return bool(rows) and rows[0][0] in FINAL_STATES

    system.wait_until(finished, timeout=300, what=f"the job of {ref}", every=0.02)
    (received,) = system.query(
        "SELECT received_at FROM webhooks_delivery WHERE delivery_id = %s", delivery_id
    )[0]
    state, error = system.query(
        "SELECT j.state, j.error FROM runs_job j JOIN runs_run r ON r.id = j.run_id "
        "WHERE r.ref = %s",
        ref,
    )[0]
    if state != "success":
        raise BenchError(f"the echo job ended {state}: {error}")
    run_created, job_started, job_finished, step_started, step_finished = system.query(
        "SELECT r.created_at, j.started_at, j.finished_at, s.started_at, s.finished_at "
        "FROM runs_run r JOIN runs_job j ON j.run_id = r.id "
        'JOIN runs_step s ON s.job_id = j.id AND s."index" = 0 WHERE r.ref = %s',
        ref,
    )[0]
    return {
        "received": epoch(received),
        "run_created": epoch(run_created),
        "job_started": epoch(job_started),
        "step_started": epoch(step_started),
        "step_finished": epoch(step_finished),
        "job_finished": epoch(job_finished),
    }
