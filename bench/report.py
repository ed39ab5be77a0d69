"""Figures, their statistics, the printed table and the JSON file.

A figure is a set of samples of one quantity under a stated load: per-repeat values (a rate
measured over each of several bursts) or per-event values (the latency of each delivery). Its
median and 99th percentile are computed here, always the same way (linear interpolation between
the closest ranks, as numpy's default), so that figures of different benchmarks compare.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import platform
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_VERSION = 1
# Samples kept in the JSON file per figure; beyond that only the statistics (a latency figure
# can have hundreds of thousands of samples).
MAX_SAMPLES_IN_JSON = 200


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def histogram_percentile(histogram: Mapping[int, int], q: float) -> float:
    """The q-th percentile of values counted per integer bucket ({value: count})."""
    total = sum(histogram.values())
    if total == 0:
        raise ValueError("no values")
    rank = (total - 1) * q / 100
    seen = 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen > rank:
            return float(value)
    return float(max(histogram))


@dataclass
class Target:
    """What we aim at: `op` is ">=" (more is better) or "<=" (less is better)."""

    op: str
    value: float

    def met_by(self, median: float) -> bool:
        return median >= self.value if self.op == ">=" else median <= self.value

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {_number(self.value)}"


@dataclass
class Figure:
    key: str  # "ingest.ack_rate": benchmark, dot, figure
    title: str
    unit: str
    load: str  # what was done to get the samples, in words
    setup: str  # the system it ran on
    samples: list[float] = field(default_factory=list)
    sample: str = "repeat"  # what one sample is: a repeat, a delivery, a line...
    target: Target | None = None
    details: dict[str, Any] = field(default_factory=dict)
    # For per-line latencies: the samples as {milliseconds: count} instead of a list.
    histogram: dict[int, int] | None = None

    @property
    def benchmark(self) -> str:
        return self.key.split(".", 1)[0]

    def statistics(self) -> dict[str, float | int]:
        if self.histogram is not None:
            counts = {int(k): v for k, v in self.histogram.items() if v}
            n = sum(counts.values())
            if not n:
                return {"n": 0}
            return {
                "n": n,
                "median": histogram_percentile(counts, 50),
                "p99": histogram_percentile(counts, 99),
                "min": float(min(counts)),
                "max": float(max(counts)),
                "mean": sum(k * v for k, v in counts.items()) / n,
            }
        if not self.samples:
            return {"n": 0}
        return {
            "n": len(self.samples),
            "median": percentile(self.samples, 50),
            "p99": percentile(self.samples, 99),
            "min": min(self.samples),
            "max": max(self.samples),
            "mean": sum(self.samples) / len(self.samples),
        }

    def as_json(self) -> dict[str, Any]:
        stats = self.statistics()
        data: dict[str, Any] = {
            "key": self.key,
            "benchmark": self.benchmark,
            "title": self.title,
            "unit": self.unit,
            **stats,
            "sample": self.sample,
            "load": self.load,
            "setup": self.setup,
            "target": str(self.target) if self.target else None,
            "meets_target": (
                self.target.met_by(stats["median"])
                if self.target is not None and "median" in stats
                else None
            ),
        }
        if self.histogram is None and len(self.samples) <= MAX_SAMPLES_IN_JSON:
            data["samples"] = self.samples
        if self.details:
            data["details"] = self.details
        return data


@dataclass
class Report:
    smoke: bool
    argv: list[str]
    figures: list[Figure] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: _now())
    durations: dict[str, float] = field(default_factory=dict)
    ranks: dict[int, tuple[int, int]] = field(default_factory=dict)  # id(figure): its place

    def as_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "smoke": self.smoke,
            "command": self.argv,
            "started_at": self.started_at,
            "finished_at": _now(),
            "commit": git_commit(),
            "machine": machine(),
            "figures": [figure.as_json() for figure in self.figures],
            "errors": self.errors,
            "seconds_per_benchmark": {k: round(v, 1) for k, v in self.durations.items()},
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.as_json(), indent=2, default=str) + "\n")

    def table(self) -> str:
        return render_table(self.figures)


def render_table(figures: Iterable[Figure]) -> str:
    """One line per figure under a heading per (benchmark, setup, load)."""
    lines: list[str] = []
    heading = None
    rows: list[tuple[str, ...]] = []

    def flush() -> None:
        if not rows:
            return
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        for row in rows:
            cells = [row[0].ljust(widths[0])]
            cells += [cell.rjust(width) for cell, width in zip(row[1:4], widths[1:4], strict=True)]
            cells += [cell.ljust(width) for cell, width in zip(row[4:], widths[4:], strict=True)]
            lines.append("  " + "  ".join(cells).rstrip())
        rows.clear()

    for figure in figures:
        current = (figure.benchmark, figure.setup, figure.load)
        if current != heading:
            flush()
            heading = current
            lines.append("")
            lines.append(f"{figure.benchmark}: {figure.setup}")
            lines.append(f"  load: {figure.load}")
            rows.append(("figure", "median", "p99", "n", "unit", "target"))
        stats = figure.statistics()
        verdict = ""
        if figure.target is not None and "median" in stats:
            met = figure.target.met_by(stats["median"])
            verdict = f"{figure.target} ({'met' if met else 'not met'})"
        rows.append(
            (
                figure.title,
                _number(stats.get("median")),
                _number(stats.get("p99")),
                f"{stats['n']:,}",
                figure.unit,
                verdict,
            )
        )
    flush()
    return "\n".join(lines).lstrip("\n")


def _number(value: float | int | None) -> str:
    if value is None:
        return "-"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 100 or (magnitude >= 10 and float(value).is_integer()):
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def git_commit() -> dict[str, Any]:
    """The commit benchmarked, and whether the working tree had changes on top of it."""

    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    sha = git("rev-parse", "HEAD")
    return {
        "sha": sha or None,
        "subject": git("log", "-1", "--format=%s") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")) if sha else None,
    }


def machine() -> dict[str, Any]:
    memory_kb = None
    cpu_model = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_mb": memory_kb // 1024 if memory_kb else None,
        "load_average_at_end": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "bubblewrap": shutil.which("bwrap") is not None,
        "hostname": platform.node(),
    }
