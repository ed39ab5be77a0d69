"""The benchmarks' smoke mode: every benchmark runs end to end with a tiny load, so none can rot.

`python -m bench --smoke` starts the real systems (PostgreSQL + Redis with the local and the
Docker executor, the embedded default; Docker and HAProxy for the deployments) like `bin/bench`
does. Only the structure of what it reports is checked: every figure is there with numbers,
nothing was lost or duplicated, the machine and the commit are recorded. Never a speed:
machines are noisy, and the benchmarks report against their targets, they do not pass or fail
on them.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import POSTGRES_URL, redis_url_with_db

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parent.parent
EXPECTED = {
    "ingest": {"ack_rate", "ack_latency", "processed_rate", "lost", "duplicated"},
    "latency": {
        "first_step_local",
        "job_finished_local",
        "first_step_docker",
        "job_finished_docker",
    },
    "throughput": {
        "jobs_per_second_scaled",
        "jobs_per_second_embedded",
        "dispatch_sqlite",
        "dispatch_postgres",
    },
    "memory": {
        f"{what}_{phase}"
        for what in ("web", "worker", "web_worker", "control")
        for phase in ("idle", "after_runs")
    },
    "biglog": {f"{what}_{time}" for what in ("page", "raw", "ws") for time in ("ttfb", "total")},
    "deploy": {
        f"{what}_{strategy}"
        for what in ("seconds", "failed", "rollback")
        for strategy in ("rolling", "blue_green", "canary")
    }
    | {"first_deployment", "bad_canary_seconds", "bad_canary_failed_percent", "latency"},
}
LIVE_LOG_FIGURES = {"latency", "lost", "duplicated", "web_cpu", "web_rss"}


def test_every_benchmark_runs_in_smoke_mode_and_reports_every_figure(tmp_path):
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    # Redis databases 7 and 8: the smoke run's two PostgreSQL + Redis systems run side by side.
    env.update(CICD_BENCH_POSTGRES_URL=POSTGRES_URL, CICD_BENCH_REDIS_URL=redis_url_with_db(7))
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-6000:]
    report = json.loads(out.read_text())

    assert report["smoke"] is True
    assert report["errors"] == []
    assert isinstance(report["machine"]["cores"], int) and report["machine"]["cores"] >= 1
    assert re.fullmatch(r"[0-9a-f]{40}", report["commit"]["sha"])

    figures = {figure["key"]: figure for figure in report["figures"]}
    for benchmark, names in EXPECTED.items():
        assert {f"{benchmark}.{name}" for name in names} <= set(figures), benchmark
    live = {key.split(".", 1)[1].rsplit("_", 1)[0] for key in figures if key.startswith("live")}
    assert live == LIVE_LOG_FIGURES

    for key, figure in figures.items():
        assert figure["n"] >= 1, key
        for statistic in ("median", "p99", "min", "max"):
            assert isinstance(figure[statistic], (int, float)), (key, statistic)
            assert math.isfinite(figure[statistic]), (key, statistic)
        assert figure["min"] <= figure["median"] <= figure["p99"] <= figure["max"], key
        assert figure["unit"] and figure["load"] and figure["setup"] and figure["title"], key
        if key.split(".", 1)[1].startswith(("lost", "duplicated")):
            assert figure["max"] == 0, (key, figure)
        # The table shows every figure.
        assert figure["title"] in done.stdout, key
    assert figures["ingest.ack_rate"]["target"] == "≥ 1,000"
