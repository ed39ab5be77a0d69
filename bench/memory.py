"""Memory: resident set size of the web server and of a job worker, idle and after many runs.

Measured on a fresh system (this benchmark runs first on its system) once its workers answered
the startup ping and it has been idle a while, then again after a burst of runs of the one-step
`echo` job, all finished, and the same idle pause. The job worker is a Celery prefork worker:
its main process plus its pool's children (CICD_WORKER_CONCURRENCY, 2), which run the jobs;
"worker" below is all of them together, the honest cost of one worker. RSS counts pages shared
between the main process and its forked children once per process, so the PSS sum (shared pages
divided among their sharers) is given too, in the details.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from bench import procs
from bench.report import Figure, Target
from bench.system import BenchError, System
from bench.throughput import push_burst, wait_jobs_final


@dataclass(frozen=True)
class Load:
    runs: int
    repositories: int
    settle_seconds: float  # idle before sampling
    samples: int
    every_seconds: float


FULL = Load(runs=1000, repositories=10, settle_seconds=10, samples=5, every_seconds=1)
SMOKE = Load(runs=4, repositories=2, settle_seconds=0.2, samples=2, every_seconds=0.1)


def run(context: Any, system: System) -> list[Figure]:
    load = SMOKE if context.smoke else FULL
    idle = _sample(system, load)
    names = [f"memory-{i}" for i in range(load.repositories)]
    system.add_repositories(names)
    prefix = f"e-{uuid.uuid4().hex[:8]}-"
    push_burst(system, names, prefix, load.runs, connections=4)
    wait_jobs_final(system, prefix, load.runs, timeout=3600)
    after = _sample(system, load)
    setup = system.spec.label
    figures = []
    for phase, samples, words in (
        ("idle", idle, f"fresh system, idle {load.settle_seconds:g} s after start"),
        (
            "after_runs",
            after,
            f"after {load.runs:,} runs of a one-step `echo` job (pushed over {load.repositories} "
            f"repositories), idle {load.settle_seconds:g} s",
        ),
    ):
        words += f"; {load.samples} samples {load.every_seconds:g} s apart"
        label = "idle" if phase == "idle" else f"after {load.runs:,} runs"
        figures += [
            Figure(f"memory.web_{phase}", f"web server (daphne) RSS, {label}", "MB", words,
                   setup, samples["web"], sample="sample"),
            Figure(f"memory.worker_{phase}", f"job worker RSS (main + pool), {label}", "MB",
                   words, setup, samples["worker"], sample="sample",
                   details={"PSS MB (median)": _median(samples["worker_pss"]),
                            "main process RSS MB (median)": _median(samples["worker_main"]),
                            "pool children": samples["pool_size"]}),
            Figure(f"memory.web_worker_{phase}", f"web + job worker RSS, {label}", "MB", words,
                   setup, [w + k for w, k in zip(samples["web"], samples["worker"], strict=True)],
                   sample="sample", target=Target("<=", 300) if phase == "idle" else None),
            Figure(f"memory.control_{phase}", f"control worker with beat RSS, {label}", "MB",
                   words, setup, samples["control"], sample="sample"),
        ]  # fmt: skip
    return figures


def _sample(system: System, load: Load) -> dict[str, Any]:
    time.sleep(load.settle_seconds)
    roles = system.roles()
    missing = {"web", "control", "worker1"} - set(roles)
    if missing:
        raise BenchError(f"processes not found: {sorted(missing)} in {roles}")
    found: dict[str, Any] = {
        "web": [],
        "worker": [],
        "worker_main": [],
        "worker_pss": [],
        "control": [],
    }
    for index in range(load.samples):
        if index:
            time.sleep(load.every_seconds)
        worker = system.roles()["worker1"]
        found["web"].append(_mb(procs.rss_kb(roles["web"][0])))
        found["control"].append(_mb(sum(procs.rss_kb(pid) for pid in roles["control"])))
        found["worker"].append(_mb(sum(procs.rss_kb(pid) for pid in worker)))
        found["worker_main"].append(_mb(procs.rss_kb(worker[0])))
        found["worker_pss"].append(_mb(sum(procs.pss_kb(pid) for pid in worker)))
        found["pool_size"] = len(worker) - 1
    return found


def _mb(kb: int) -> float:
    return round(kb / 1024, 1)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]
