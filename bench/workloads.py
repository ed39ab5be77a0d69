"""The workflows every benchmark system's repositories hold, one commit, chosen by tag prefix.

- `i*` (ingest): a run whose one job is skipped (`if: false`): ingesting and processing the
  delivery is all that is measured, no worker time.
- `e*` (echo): one job with one step, `echo`: the trivial job of the latency, throughput and
  memory figures.
- `n*` (noisy): one step printing numbered lines at a given rate from a given wall-clock time,
  both read from the tag name `n-<start ms>-<lines per s>-<seconds>-<id>` (the live-log
  benchmark starts its viewers first, then lets the job print).
"""

from __future__ import annotations

import os
import sys

INGEST_WORKFLOW = """\
on:
  push:
    tags: ['i*']
jobs:
  skipped:
    if: false
    runs-on: linux
    steps:
      - run: echo never
"""

ECHO_WORKFLOW = """\
on:
  push:
    tags: ['e*']
jobs:
  echo:
    runs-on: linux
    steps:
      - run: echo hello
"""

# Lines are "L <number> <time printed>", written in batches every few milliseconds at the rate
# asked for, so the executor reads them in small pieces as a chatty build would produce them.
PRINTER = """\
import sys, time
_, start_ms, rate, seconds, _ = sys.argv[1].split("-")
rate, total = int(rate), int(int(rate) * float(seconds))
start = int(start_ms) / 1000
while time.time() < start:
    time.sleep(min(0.01, max(0.0, start - time.time())))
out, written, began = sys.stdout, 0, time.time()
while written < total:
    due = min(total, int((time.time() - began) * rate) + 1)
    if due > written:
        now = time.time()
        out.write("".join(f"L {i} {now:.6f}\\n" for i in range(written, due)))
        out.flush()
        written = due
    time.sleep(0.004)
"""


def noisy_workflow(python: str) -> str:
    script = "\n".join("          " + line for line in PRINTER.splitlines())
    return (
        "on:\n"
        "  push:\n"
        "    tags: ['n*']\n"
        "jobs:\n"
        "  noisy:\n"
        "    runs-on: linux\n"
        "    steps:\n"
        "      - run: |\n"
        f"          {python} - '${{{{ github.ref_name }}}}' <<'EOF'\n"
        f"{script}\n"
        "          EOF\n"
    )


def step_python() -> str:
    """A Python the noisy step can run on the host (local executor). The printer needs only the
    standard library, so the interpreter behind the benchmarks' venv will do; the venv itself
    may not: the local executor's sandbox gives each job its own /tmp, which hides a fresh
    clone's venv under /tmp (seen: the job failed at once)."""
    base = os.path.realpath(getattr(sys, "_base_executable", "") or sys.executable)
    for candidate in (base, "/usr/bin/python3"):
        if not candidate.startswith("/tmp/") and os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def workflow_files() -> dict[str, str]:
    return {
        ".cicd/workflows/ingest.yml": INGEST_WORKFLOW,
        ".cicd/workflows/echo.yml": ECHO_WORKFLOW,
        ".cicd/workflows/noisy.yml": noisy_workflow(step_python()),
        "README.md": "Pushed to by the cicd benchmarks.\n",
    }
