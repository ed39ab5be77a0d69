"""Live logs: one job printing fast, watched over the WebSocket by 1, 10 and 100 viewers.

Per round: viewer processes start first (each runs many viewers in one asyncio loop), a push
starts the `noisy` job, the viewers connect and subscribe to its log from line 0, and only then,
at a wall-clock time the tag name carries, does the step start printing numbered lines at the
rate asked for. Each viewer keeps every line it receives until the job's final state arrives
(which the server sends only after every line): latency is the time from the line's timestamp
(taken by the executor when it read the line from the step) to the viewer receiving it, and each
line's number says whether it was lost or came twice. A viewer told to resync, or that sees a
gap, subscribes again from where it is, as the job page does.

The web server's CPU (of one core) and RSS are sampled while the job prints.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench import procs
from bench.hooks import Poster, hook_path, push_body, signed_headers
from bench.report import Figure, Target, histogram_percentile
from bench.system import FINAL_STATES, BenchError, System, epoch
from bench.wsclient import Closed, WebSocket

SAMPLE_SECONDS = 0.5
MAX_RECONNECTS = 100


@dataclass(frozen=True)
class Load:
    rate: int  # lines per second
    seconds: float
    viewers: tuple[int, ...]
    processes: int  # viewer processes at most
    lead_seconds: float  # from the push to the first line: time to connect the viewers
    grace_seconds: float  # after the last line, for the viewers to catch up


FULL = Load(5000, 30, (1, 10, 100), processes=4, lead_seconds=6, grace_seconds=300)
SMOKE = Load(400, 1, (2,), processes=2, lead_seconds=2, grace_seconds=30)


def run(context: Any, system: System) -> list[Figure]:
    load = SMOKE if context.smoke else FULL
    system.add_repositories(["livelogs"])
    figures = []
    for viewers in load.viewers:
        figures += _round(system, load, viewers)
    return figures


def _round(system: System, load: Load, viewers: int) -> list[Figure]:
    total = int(load.rate * load.seconds)
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    count = min(viewers, load.processes)
    shares = [viewers // count + (1 if i < viewers % count else 0) for i in range(count)]
    job_queues = [spawn.Queue() for _ in shares]
    workers = [
        spawn.Process(target=viewer_process, args=(system.url, share, total, q, results),
                      daemon=True)
        for share, q in zip(shares, job_queues, strict=True)
    ]  # fmt: skip
    for process in workers:
        process.start()
    try:
        start = time.time() + load.lead_seconds
        tag = f"n-{int(start * 1000)}-{load.rate}-{load.seconds:g}-{uuid.uuid4().hex[:8]}"
        job_id = _push(system, tag)
        deadline = start + load.seconds + load.grace_seconds
        for q in job_queues:
            q.put((job_id, deadline))
        received: dict[str, list] = {"ready": [], "done": []}

        def collect(kind: str, timeout: float) -> None:
            while len(received[kind]) < len(workers):
                message = results.get(timeout=timeout)
                if message[0] == "error":
                    raise BenchError(f"a viewer process failed: {message[1]}")
                received[message[0]].append(message[1])

        collect("ready", 120)
        ready_at = received["ready"]
        samples = _watch(system, system.roles()["web"][0], job_id, start)
        collect("done", load.grace_seconds + load.seconds + 120)
        outcomes = received["done"]
    finally:
        for process in workers:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()

    latency: Counter = Counter()
    printed: Counter = Counter()
    per_viewer = [viewer for outcome in outcomes for viewer in outcome["viewers"]]
    for outcome in outcomes:
        latency.update({int(k): v for k, v in outcome["latency"].items()})
        printed.update({int(k): v for k, v in outcome["printed"].items()})
    finished = epoch(system.query("SELECT finished_at FROM runs_job WHERE id = %s", job_id)[0][0])
    words = (
        f"one job printing {load.rate:,} lines/s for {load.seconds:g} s ({total:,} lines), "
        f"{viewers} WebSocket viewer{'s' if viewers > 1 else ''} in {count} client "
        f"process{'es' if count > 1 else ''} on the same cores"
    )
    setup = system.spec.label
    details = {
        "print -> receipt ms (median, p99)": (
            [histogram_percentile(printed, 50), histogram_percentile(printed, 99)]
            if printed
            else None
        ),
        "resyncs": sum(v["resyncs"] for v in per_viewer),
        "WebSocket closed by the server and reconnected": sum(v["reconnects"] for v in per_viewer),
        "frames received": sum(v["frames"] for v in per_viewer),
        "bytes received": sum(v["bytes"] for v in per_viewer),
        "viewers still behind at the deadline": sum(1 for v in per_viewer if not v["finished"]),
        "viewers ready after printing began": sum(1 for t in ready_at if t > start),
        "last line received, seconds after the job finished": round(
            max(v["last_at"] for v in per_viewer) - finished, 2
        ),
        "worker CPU % of one core (main + pool, not the step)": samples["worker_cpu"],
    }
    key = f"livelogs.{{}}_{viewers}"
    target = Target("<=", 250) if viewers == 100 else None
    return [
        Figure(key.format("latency"), f"line timestamp -> viewer, {viewers} viewers", "ms",
               words, setup, histogram=dict(latency), sample="line received", target=target,
               details=details),
        Figure(key.format("lost"), f"lines lost per viewer, {viewers} viewers", "lines", words,
               setup, [float(v["lost"]) for v in per_viewer], sample="viewer"),
        Figure(key.format("duplicated"), f"lines duplicated per viewer, {viewers} viewers",
               "lines", words, setup, [float(v["duplicated"]) for v in per_viewer],
               sample="viewer"),
        Figure(key.format("web_cpu"), f"web server CPU, {viewers} viewers", "% of a core",
               words, setup, samples["cpu"], sample=f"{SAMPLE_SECONDS:g} s interval"),
        Figure(key.format("web_rss"), f"web server RSS, {viewers} viewers", "MB", words,
               setup, samples["rss"], sample=f"{SAMPLE_SECONDS:g} s interval"),
    ]  # fmt: skip


def _push(system: System, tag: str) -> int:
    poster = Poster(system.url)
    body = push_body("livelogs", tag, system.sha)
    status, _ = poster.post(hook_path("livelogs"), body, signed_headers(body, str(uuid.uuid4())))
    poster.close()
    if status != 202:
        raise BenchError(f"the push was answered {status}, not 202")
    found: list[tuple] = []

    def job_exists() -> bool:
        found[:] = system.query(
            "SELECT j.id FROM runs_job j JOIN runs_run r ON r.id = j.run_id WHERE r.ref = %s",
            f"refs/tags/{tag}",
        )
        return bool(found)

    system.wait_until(job_exists, timeout=120, what="the noisy job", every=0.05)
    return found[0][0]


def _watch(system: System, web: int, job_id: int, start: float) -> dict[str, Any]:
    """Samples the web server's CPU and RSS every SAMPLE_SECONDS from the first line printed
    until the job ended."""
    while time.time() < start:
        time.sleep(0.01)
    worker = system.roles().get("worker1", [])
    worker_cpu_start = sum(procs.cpu_seconds(pid) for pid in worker)
    began = time.monotonic()
    cpu, rss = [], []
    last_cpu, last_at = procs.cpu_seconds(web), time.monotonic()
    while True:
        time.sleep(SAMPLE_SECONDS)
        now, used = time.monotonic(), procs.cpu_seconds(web)
        cpu.append(100 * (used - last_cpu) / (now - last_at))
        rss.append(round(procs.rss_kb(web) / 1024, 1))
        last_cpu, last_at = used, now
        state = system.query("SELECT state FROM runs_job WHERE id = %s", job_id)[0][0]
        if state in FINAL_STATES:
            break
        if now - began > 3600:
            raise BenchError("the noisy job did not end within an hour")
    if state != "success":
        error = system.query("SELECT error FROM runs_job WHERE id = %s", job_id)[0][0]
        raise BenchError(f"the noisy job ended {state}: {error}")
    worker_cpu = sum(procs.cpu_seconds(pid) for pid in worker) - worker_cpu_start
    return {
        "cpu": cpu,
        "rss": rss,
        "worker_cpu": round(100 * worker_cpu / (time.monotonic() - began), 1),
    }


# -- the viewer processes --------------------------------------------------------------------


def viewer_process(url: str, viewers: int, total: int, jobs: Any, results: Any) -> None:
    try:
        job_id, deadline = jobs.get(timeout=300)
        asyncio.run(_viewers(url, viewers, total, job_id, deadline, results))
    except Exception as error:  # reported by the parent: a viewer must never just vanish
        results.put(("error", f"{type(error).__name__}: {error}"))


async def _viewers(
    url: str, viewers: int, total: int, job_id: int, deadline: float, results: Any
) -> None:
    latency: Counter = Counter()
    printed: Counter = Counter()
    watchers = [_Viewer(url, job_id, total, latency, printed) for _ in range(viewers)]
    await asyncio.gather(*(w.open() for w in watchers))
    results.put(("ready", time.time()))
    await asyncio.gather(*(w.follow(deadline) for w in watchers))
    results.put(
        ("done", {"viewers": [w.outcome() for w in watchers], "latency": dict(latency),
                  "printed": dict(printed)})
    )  # fmt: skip


class _Viewer:
    def __init__(self, url: str, job_id: int, total: int, latency: Counter, printed: Counter):
        self.url, self.job_id, self.total = url, job_id, total
        self.latency, self.printed = latency, printed
        self.seen = bytearray(total)
        self.position = 0
        self.frames = self.resyncs = self.reconnects = self.bytes = 0
        self.finished = False
        self.last_at = 0.0

    async def open(self) -> None:
        self.socket = await WebSocket.connect(self.url, "/ws/live/")
        await self._subscribe()
        # The first frame (the job's state) says the subscription is in place.
        self._handle(await self.socket.receive_text(), time.time())

    async def follow(self, deadline: float) -> None:
        try:
            while not self.finished:
                left = deadline - time.time()
                if left <= 0:
                    return
                try:
                    text = await asyncio.wait_for(self.socket.receive_text(), left)
                except TimeoutError:
                    return
                except (Closed, ConnectionError, asyncio.IncompleteReadError):
                    # As the job page does: connect again, subscribe from the lines held.
                    self.reconnects += 1
                    if self.reconnects > MAX_RECONNECTS:
                        closed = f"the live socket was closed {self.reconnects} times"
                        raise BenchError(closed) from None
                    self.bytes += self.socket.received_bytes
                    await self.socket.close()
                    self.socket = await WebSocket.connect(self.url, "/ws/live/")
                    await self._subscribe()
                    continue
                action = self._handle(text, time.time())
                if action == "resubscribe":
                    await self.socket.send_json({"unsubscribe": "job", "job": self.job_id})
                    await self._subscribe()
        finally:
            await self.socket.close()

    async def _subscribe(self) -> None:
        await self.socket.send_json(
            {"subscribe": "job", "job": self.job_id, "offset": self.position}
        )

    def _handle(self, text: str, now: float) -> str | None:
        frame = json.loads(text)
        self.frames += 1
        kind = frame.get("type")
        if kind == "log":
            if frame["offset"] > self.position:
                self.resyncs += 1  # a gap: take it again from where we are
                return "resubscribe"
            self.last_at = now
            seen, latency, printed = self.seen, self.latency, self.printed
            for line in frame["lines"]:
                text = line[2]
                if not text.startswith("L "):
                    continue
                _, number, at = text.split(" ")
                seen[int(number)] = min(255, seen[int(number)] + 1)
                printed[int((now - float(at)) * 1000)] += 1
                if line[0] is not None:
                    latency[int((now - line[0]) * 1000)] += 1
            self.position = max(self.position, frame["offset"] + len(frame["lines"]))
        elif kind == "resync":
            self.resyncs += 1
            return "resubscribe"
        elif kind == "job" and frame["job"]["state"] in FINAL_STATES:
            self.finished = True
        elif kind == "error":
            raise BenchError(f"the live socket answered {frame}")
        return None

    def outcome(self) -> dict[str, Any]:
        unique = sum(1 for count in self.seen if count)
        return {
            "lost": self.total - unique,
            "duplicated": sum(self.seen) - unique,
            "frames": self.frames,
            "bytes": self.bytes + self.socket.received_bytes,
            "resyncs": self.resyncs,
            "reconnects": self.reconnects,
            "finished": self.finished,
            "last_at": self.last_at,
        }
