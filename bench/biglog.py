"""A large log: a job whose log has 1,000,000 lines, read the three ways a user reads it.

The log is written straight into the database as a worker would have stored it (chunks of
1,000 lines), for a job that stays queued. Then, over HTTP from `cicd serve`, each repeat times:

- the job page (HTML; the page holds no log lines, its script asks the WebSocket for them),
- the raw log (`.../log.txt`, streamed),
- the whole log over the live WebSocket from offset 0, as the job page's script loads it.

Time to first byte is from sending the request to the response's head being read (for the
WebSocket: to the first frame of log lines); total is until the last byte.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from bench.report import Figure
from bench.system import BenchError, System
from bench.wsclient import Closed, WebSocket

MAX_RECONNECTS = 100
LINE = "row {n}: compiling src/module_{m}.c with -O2 -g -Wall -Wextra -fPIC"


@dataclass(frozen=True)
class Load:
    lines: int
    repeats: int


FULL = Load(lines=1_000_000, repeats=3)
SMOKE = Load(lines=2_000, repeats=2)

CREATE = """\
import json
from runs.models import Job, LogChunk, Repository
from runs.scheduling import RunRequest, create_run
workflow = "on: push\\njobs:\\n  noisy:\\n    runs-on: no-such-runner\\n"
workflow += "    steps:\\n      - run: echo\\n"
run = create_run(
    Repository.objects.get(slug="biglog"),
    RunRequest(workflow_path=".cicd/workflows/noisy.yml", source=workflow, event="push",
               ref="refs/heads/main", sha="f" * 40, idempotency_key="bench-big-log"),
)
job = Job.objects.get(run=run)
size, total, line = 1000, LINES, LINE_FORMAT
def chunk(n):
    count = min(size, total - n * size)
    return LogChunk(job=job, step_index=0, sequence=n, offset=n * size, line_count=count,
        text="\\n".join(json.dumps([1767225600.0 + (n * size + i) / 1000, "stdout",
                                    line.format(n=n * size + i + 1, m=(n * size + i) % 997)])
                        for i in range(count)))
chunks = (total + size - 1) // size
for first in range(0, chunks, 100):
    LogChunk.objects.bulk_create(chunk(n) for n in range(first, min(chunks, first + 100)))
print(run.id, job.id, f"/bench/biglog/runs/{run.number}/jobs/{job.id}/")
"""


def run(context: Any, system: System) -> list[Figure]:
    load = SMOKE if context.smoke else FULL
    system.add_repositories(["biglog"])
    started = time.monotonic()
    script = CREATE.replace("LINES", str(load.lines)).replace("LINE_FORMAT", repr(LINE))
    run_id, job_id, path = system.manage(script).split()[-3:]
    created = time.monotonic() - started
    try:
        measured: dict[str, list[float]] = {}
        sizes: dict[str, int] = {}
        reconnects = []
        for _ in range(load.repeats):
            *ws, closed = asyncio.run(_websocket(system.url, int(job_id), load.lines))
            reconnects.append(closed)
            for name, (ttfb, total, size) in (
                ("page", _get(system.url, path)),
                ("raw", _get(system.url, path + "log.txt", expect_lines=load.lines)),
                ("ws", ws),
            ):
                measured.setdefault(f"{name}_ttfb", []).append(1000 * ttfb)
                measured.setdefault(f"{name}_total", []).append(1000 * total)
                sizes[name] = size
    finally:
        system.manage(f"from runs.models import Run\nRun.objects.filter(id={run_id}).delete()\n")
    words = (
        f"a job log of {load.lines:,} lines of ~70 characters (stored in chunks of 1,000), "
        f"{load.repeats} requests of each kind, one at a time, new connection each"
    )
    setup = system.spec.label
    details = {
        "bytes": sizes,
        "WebSocket closed by the server and reconnected, per request": reconnects,
        "seconds to write the log into the database": round(created, 1),
    }
    titles = {
        "page": "job page (HTML)",
        "raw": "raw log (log.txt)",
        "ws": "whole log over the WebSocket (as the job page loads it)",
    }
    figures = []
    for name, title in titles.items():
        first = "first log frame" if name == "ws" else "first byte"
        figures += [
            Figure(f"biglog.{name}_ttfb", f"{title}: time to {first}", "ms", words, setup,
                   measured[f"{name}_ttfb"], sample="request"),
            Figure(f"biglog.{name}_total", f"{title}: total transfer ({_size(sizes[name])})",
                   "ms", words, setup, measured[f"{name}_total"], sample="request",
                   details=details),
        ]  # fmt: skip
    return figures


def _size(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1e6 else f"{size / 1e3:.0f} kB"


def _get(base_url: str, path: str, *, expect_lines: int | None = None) -> tuple[float, float, int]:
    parts = urlsplit(base_url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=600)
    started = time.perf_counter()
    connection.request("GET", path)
    response = connection.getresponse()
    first = time.perf_counter() - started
    size = newlines = 0
    while piece := response.read(1 << 16):
        size += len(piece)
        newlines += piece.count(b"\n")
    total = time.perf_counter() - started
    connection.close()
    if response.status != 200:
        raise BenchError(f"GET {path} answered {response.status}")
    if expect_lines is not None and newlines != expect_lines:
        raise BenchError(f"the raw log had {newlines} lines, not {expect_lines}")
    return first, total, size


async def _websocket(base_url: str, job_id: int, lines: int) -> tuple[float, float, int, int]:
    """Loads the whole log as the job page does; when the server closes the socket, connects
    again and subscribes from the lines already held (as static/js/live.js does, without its
    back-off). Returns (first frame, total, bytes, reconnections)."""
    started = time.perf_counter()
    first = None
    position = received = reconnects = 0
    while position < lines:
        socket = await WebSocket.connect(base_url, "/ws/live/")
        try:
            await socket.send_json({"subscribe": "job", "job": job_id, "offset": position})
            while position < lines:
                frame = json.loads(await socket.receive_text())
                if frame["type"] == "error":
                    raise BenchError(f"the live socket answered {frame}")
                if frame["type"] != "log":
                    continue
                if first is None:
                    first = time.perf_counter() - started
                if frame["offset"] != position:
                    raise BenchError(f"log frame at {frame['offset']}, expected {position}")
                position += len(frame["lines"])
        except (Closed, ConnectionError, asyncio.IncompleteReadError):
            reconnects += 1
            if reconnects > MAX_RECONNECTS:
                raise BenchError(f"the live socket was closed {reconnects} times") from None
        finally:
            received += socket.received_bytes
            await socket.close()
    assert first is not None
    return first, time.perf_counter() - started, received, reconnects
