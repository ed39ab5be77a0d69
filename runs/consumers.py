"""The live WebSocket (`/ws/live/`): run and job states and log lines as they happen.

Protocol (JSON text frames). The client sends
    {"subscribe": "run", "run": ID}
    {"subscribe": "job", "job": ID, "offset": FIRST_LINE_WANTED}   (0-based, default 0)
    {"unsubscribe": "run" | "job", "run" | "job": ID}
and the server sends
    {"type": "run", "run": {...}, "jobs": [{...}, ...]}   on subscribe and on each change
    {"type": "job", "job": {..., "log_lines": N}, "steps": [{...}, ...]}
    {"type": "log", "job": ID, "offset": N, "lines": [[ts, stream, text, step_index, props?]]}
    {"type": "resync", "job": ID, "offset": N}
    {"type": "error", "message": ..., "status": 400 | 404 | 429, ("run" | "job": ID)}

Log frames of a subscription are consecutive: each starts where the previous one ended, so the
client always knows its position and resumes after a reconnect by subscribing from it. A job
frame with a final state comes only after every line before it was sent (`log_lines` says how
many lines the job had when that state was read).

The database is the only source of truth, read by each connection at its own pace: a wake-up
from the channel layer (`runs.live`) makes a subscription re-read at once, and every
subscription is also re-read every POLL_SECONDS, because the embedded default's in-memory
channel layer does not reach across processes (workers write from other processes). A viewer
too slow to keep up never holds anything back: the job writes to the database regardless, and
a viewer that falls more than RESYNC_BEHIND_LINES behind while following is told to resync
instead of being buffered for.

Viewers of one job read the same rows: the connections of a process share their reads
(`_SharedReads`). A read is shared with every viewer for which it is fresh enough: started after
the change a wake-up announced (its `at`), or, on a poll, at most SHARED_POLL_STALENESS seconds
ago. With a hundred viewers of a busy job this reads, parses and checks each chunk once per
process instead of once per viewer (the live-log benchmark's profile: the web process spent its
time in those repeated queries and JSON parsing).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections

from runs import live
from runs.models import Job, LogChunk, Run, Step
from runs.permissions import can_read
from runs.states import FINAL_STATES

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
SHARED_POLL_STALENESS = 0.1  # a poll may use a read another viewer started this long ago
SHARED_READS_KEPT_SECONDS = 5.0
MAX_LINES_PER_FRAME = 1000
MAX_CHARS_PER_FRAME = 512 * 1024
# Lines read per subscription before the others get their turn: what one connection holds in
# memory at most, and what keeps a viewer catching up on a huge log from starving the others.
MAX_LINES_PER_ROUND = 5000
MAX_CHARS_PER_ROUND = 4 * 1024 * 1024
MAX_CHUNKS_PER_READ = 200
RESYNC_BEHIND_LINES = 50_000
MAX_SUBSCRIPTIONS = 100
DATABASE_THREADS = 8

_database_threads: ThreadPoolExecutor | None = None
_started_threads: list[threading.Thread] = []


def _database(function: Any) -> Any:
    """Runs `function` in a thread of a pool shared by the live connections.

    Not Channels' default (one thread for every consumer of the process, one query after the
    other): a slow read for one viewer would then delay every other viewer.
    """
    global _database_threads
    if _database_threads is None:
        _started_threads.clear()
        _database_threads = ThreadPoolExecutor(
            DATABASE_THREADS,
            thread_name_prefix="live-db",
            initializer=lambda: _started_threads.append(threading.current_thread()),
        )
    return database_sync_to_async(function, thread_sensitive=False, executor=_database_threads)


def close_database_threads() -> None:
    """Closes the database connections of the live connections' threads and stops them (for
    tests, which drop their database, and for a clean shutdown)."""
    global _database_threads
    threads, _database_threads = _database_threads, None
    if threads is None:
        return
    # One task per started thread, each held at the barrier until all run: so each thread gets
    # exactly one and closes its own connection.
    count = len(_started_threads)
    if count:
        barrier = threading.Barrier(count)

        def close_own_connection() -> None:
            barrier.wait(timeout=10)
            connections.close_all()

        for task in [threads.submit(close_own_connection) for _ in range(count)]:
            task.result()
    threads.shutdown(wait=True)


@dataclass(eq=False)
class _Subscription:
    kind: str  # "run" or "job"
    id: int
    cursor: int = 0  # job: the next line to send
    last_sent: Any = None
    following: bool = False  # job: has reached the end of the log once
    dirty: bool = True
    read_at: float = 0.0
    # Wall-clock time the next read must have started after (a wake-up's `at`): a shared read
    # older than that may predate the change it announced.
    fresh_after: float = 0.0

    @property
    def key(self) -> tuple[str, int]:
        return (self.kind, self.id)


class LiveConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self) -> None:
        self.subscriptions: dict[tuple[str, int], _Subscription] = {}
        self.wake = asyncio.Event()
        live.consumers_run_in(asyncio.get_running_loop())
        await self.accept()
        self.follower = asyncio.create_task(self._follow())

    async def disconnect(self, code: int) -> None:
        follower = getattr(self, "follower", None)
        if follower is not None:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
        for subscription in list(getattr(self, "subscriptions", {}).values()):
            await self._drop(subscription)

    @classmethod
    async def encode_json(cls, content: Any) -> str:
        return json.dumps(content, cls=DjangoJSONEncoder)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        try:
            content = json.loads(text_data) if text_data is not None else None
        except ValueError:
            content = None
        if not isinstance(content, dict):
            await self._error("messages are JSON objects", 400)
            return
        await self.receive_json(content)

    async def receive_json(self, content: dict, **kwargs: Any) -> None:
        if "subscribe" in content:
            await self._subscribe(content)
        elif "unsubscribe" in content:
            kind = content["unsubscribe"]
            if kind not in ("run", "job") or not _is_count(content.get(kind)):
                await self._error('"unsubscribe" names "run" or "job" and its id', 400)
                return
            subscription = self.subscriptions.get((kind, content[kind]))
            if subscription is not None:
                await self._drop(subscription)
        else:
            await self._error('expected "subscribe" or "unsubscribe"', 400)

    async def live_changed(self, event: dict) -> None:
        """A wake-up from `runs.live`: re-read that subscription now rather than at its poll."""
        subscription = self.subscriptions.get((event.get("kind"), event.get("id")))
        if subscription is not None:
            subscription.dirty = True
            at = event.get("at")
            announced = at if isinstance(at, float) else time.time()
            subscription.fresh_after = max(subscription.fresh_after, announced)
            self.wake.set()

    # -- subscriptions --------------------------------------------------------------------------

    async def _subscribe(self, content: dict) -> None:
        kind = content["subscribe"]
        if kind not in ("run", "job"):
            await self._error('"subscribe" is "run" or "job"', 400)
            return
        object_id = content.get(kind)
        offset = content.get("offset", 0) if kind == "job" else 0
        if not _is_count(object_id) or object_id < 1:
            await self._error(f'"{kind}" must be a positive integer', 400)
            return
        if not _is_count(offset):
            await self._error('"offset" must be an integer >= 0', 400, kind, object_id)
            return
        key = (kind, object_id)
        if key not in self.subscriptions and len(self.subscriptions) >= MAX_SUBSCRIPTIONS:
            await self._error(f"at most {MAX_SUBSCRIPTIONS} subscriptions", 429, kind, object_id)
            return
        if not await _database(_readable)(self.scope.get("user"), kind, object_id):
            await self._error("not found", 404, kind, object_id)
            return
        if key not in self.subscriptions:
            await self._join(_group(kind, object_id), join=True)
        # A new subscription to the same job (after a resync or to jump elsewhere) starts over
        # from its offset; the follower notices the replacement and drops the old cursor.
        self.subscriptions[key] = _Subscription(
            kind, object_id, cursor=offset, fresh_after=time.time()
        )
        self.wake.set()

    async def _drop(self, subscription: _Subscription) -> None:
        if self.subscriptions.get(subscription.key) is subscription:
            del self.subscriptions[subscription.key]
            await self._join(_group(subscription.kind, subscription.id), join=False)

    async def _join(self, group: str, *, join: bool) -> None:
        """Joins or leaves a group of wake-ups. A sick channel layer costs latency (the poll
        still runs), never the subscription."""
        if self.channel_layer is None:
            return
        try:
            if join:
                await self.channel_layer.group_add(group, self.channel_name)
            else:
                await self.channel_layer.group_discard(group, self.channel_name)
        except Exception:
            log.warning("live: the channel layer refused %s", group, exc_info=True)

    async def _error(
        self, message: str, status: int, kind: str | None = None, object_id: int | None = None
    ) -> None:
        frame: dict[str, Any] = {"type": "error", "message": message, "status": status}
        if kind is not None:
            frame[kind] = object_id
        await self.send_json(frame)

    # -- following ------------------------------------------------------------------------------

    async def _follow(self) -> None:
        try:
            await self._follow_subscriptions()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("live: the follower of %s stopped", self.channel_name)
            await self.close(code=1011)

    async def _follow_subscriptions(self) -> None:
        """Re-reads each subscription when woken for it, and at least every POLL_SECONDS."""
        while True:
            now = time.monotonic()
            due = [
                subscription
                for subscription in self.subscriptions.values()
                if subscription.dirty or now - subscription.read_at >= POLL_SECONDS
            ]
            for subscription in due:
                if self.subscriptions.get(subscription.key) is not subscription:
                    continue  # unsubscribed or replaced meanwhile
                if not subscription.dirty:  # a poll: a slightly older shared read will do
                    polled = time.time() - SHARED_POLL_STALENESS
                    subscription.fresh_after = max(subscription.fresh_after, polled)
                subscription.dirty = False
                subscription.read_at = time.monotonic()
                try:
                    if subscription.kind == "run":
                        await self._refresh_run(subscription)
                    else:
                        await self._refresh_job(subscription)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    # The database may be restarting: try again at the next poll.
                    log.warning(
                        "live: reading %s %s failed",
                        subscription.kind,
                        subscription.id,
                        exc_info=True,
                    )
            soonest = min(
                (s.read_at + POLL_SECONDS for s in self.subscriptions.values()),
                default=time.monotonic() + POLL_SECONDS,
            )
            if any(s.dirty for s in self.subscriptions.values()):
                continue
            self.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), max(0.0, soonest - time.monotonic()))

    async def _refresh_run(self, subscription: _Subscription) -> None:
        snapshot = await _shared_reads().get(
            ("run", subscription.id), subscription.fresh_after, _run_snapshot, subscription.id
        )
        if not self._current(subscription):
            return
        if snapshot is None:
            await self._gone(subscription)
            return
        if snapshot != subscription.last_sent:
            subscription.last_sent = snapshot
            await self.send_json({"type": "run", **snapshot})

    async def _refresh_job(self, subscription: _Subscription) -> None:
        # The state is read before the log: a final state was reached after the job's last line
        # was stored, so the log read next holds every line of a finished job.
        shared = _shared_reads()
        fresh_after = subscription.fresh_after
        snapshot = await shared.get(
            ("job", subscription.id), fresh_after, _job_snapshot, subscription.id
        )
        if not self._current(subscription):
            return
        if snapshot is None:
            await self._gone(subscription)
            return
        piece = await shared.get(
            ("log", subscription.id, subscription.cursor),
            fresh_after,
            read_log,
            subscription.id,
            subscription.cursor,
            MAX_LINES_PER_ROUND,
        )
        if not self._current(subscription):
            return
        if subscription.following and piece.end - subscription.cursor > RESYNC_BEHIND_LINES:
            await self.send_json(
                {"type": "resync", "job": subscription.id, "offset": subscription.cursor}
            )
            await self._drop(subscription)
            return
        # `log_lines` grows with every chunk: it goes out with the state, but a new count alone
        # is not a change worth a frame.
        state = {"job": {**snapshot["job"], "log_lines": None}, "steps": snapshot["steps"]}
        changed = state != subscription.last_sent
        if changed and not _is_final(snapshot):
            subscription.last_sent = state
            await self.send_json({"type": "job", **snapshot})
        await self._send_lines(subscription, piece)
        caught_up = subscription.cursor >= max(piece.end, snapshot["job"]["log_lines"])
        if caught_up:
            subscription.following = True
        else:
            subscription.dirty = True  # more to send: come back after the others had a turn
            if not piece.lines:
                # The shared log read predates lines the state already counts: read anew.
                subscription.fresh_after = time.time()
        if changed and _is_final(snapshot) and caught_up and self._current(subscription):
            subscription.last_sent = state
            await self.send_json({"type": "job", **snapshot})

    async def _send_lines(self, subscription: _Subscription, piece: LogPiece) -> None:
        lines = piece.lines
        start = 0
        while start < len(lines):
            end, size = start, 0
            while end < len(lines) and end - start < MAX_LINES_PER_FRAME:
                size += len(lines[end][2])
                if size > MAX_CHARS_PER_FRAME and end > start:
                    break
                end += 1
            if not self._current(subscription):
                return
            await self.send_json(
                {
                    "type": "log",
                    "job": subscription.id,
                    "offset": piece.offset + start,
                    "lines": lines[start:end],
                }
            )
            subscription.cursor = piece.offset + end
            start = end

    def _current(self, subscription: _Subscription) -> bool:
        return self.subscriptions.get(subscription.key) is subscription

    async def _gone(self, subscription: _Subscription) -> None:
        await self._drop(subscription)
        await self._error("not found", 404, subscription.kind, subscription.id)


# -- shared reads --------------------------------------------------------------------------------


class _SharedReads:
    """Reads done once for every connection of this process that wants the same thing (a job's
    state, its log from one line) at about the same time. Each entry is a read in progress or
    done, with the wall-clock time it started; a caller takes it when it started after the
    caller's `fresh_after`, else starts a new one that replaces it. Results are shared: callers
    never change them."""

    def __init__(self) -> None:
        self._entries: dict[tuple, tuple[float, asyncio.Future]] = {}

    async def get(self, key: tuple, fresh_after: float, function: Any, *args: Any) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[0] < fresh_after or _failed(entry[1]):
            self._sweep()
            started = time.time()
            future = asyncio.ensure_future(_database(function)(*args))
            entry = (started, future)
            self._entries[key] = entry
        # Shielded: one viewer leaving must not cancel the read the others wait for.
        return await asyncio.shield(entry[1])

    def _sweep(self) -> None:
        if len(self._entries) < 64:
            return
        old = time.time() - SHARED_READS_KEPT_SECONDS
        for key, (started, future) in list(self._entries.items()):
            if future.done() and started < old:
                del self._entries[key]


def _failed(future: asyncio.Future) -> bool:
    """A read that failed (the database restarting) is not shared on: the next caller retries."""
    return future.done() and (future.cancelled() or future.exception() is not None)


_shared_by_loop: dict[asyncio.AbstractEventLoop, _SharedReads] = {}


def _shared_reads() -> _SharedReads:
    """This event loop's shared reads (futures belong to one loop; tests run several)."""
    loop = asyncio.get_running_loop()
    shared = _shared_by_loop.get(loop)
    if shared is None:
        for other in [other for other in _shared_by_loop if other.is_closed()]:
            del _shared_by_loop[other]
        shared = _shared_by_loop[loop] = _SharedReads()
    return shared


# -- reads (in database threads) ----------------------------------------------------------------


def _group(kind: str, object_id: int) -> str:
    return live.run_group(object_id) if kind == "run" else live.job_group(object_id)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_final(snapshot: dict) -> bool:
    return snapshot["job"]["state"] in FINAL_STATES


def _readable(user: Any, kind: str, object_id: int) -> bool:
    if kind == "run":
        run = Run.objects.select_related("repository").filter(id=object_id).first()
    else:
        job = Job.objects.select_related("run__repository").filter(id=object_id).first()
        run = job.run if job is not None else None
    return run is not None and can_read(user, run.repository)


RUN_FIELDS = (
    "id",
    "number",
    "attempt",
    "state",
    "workflow_name",
    "workflow_path",
    "event",
    "ref",
    "sha",
    "actor",
    "error",
    "created_at",
    "started_at",
    "finished_at",
)
JOB_FIELDS = (
    "id",
    "run_id",
    "attempt",
    "retry_attempt",
    "key",
    "name",
    "workflow_job_id",
    "needs",
    "matrix",
    "state",
    "error",
    "queued_at",
    "started_at",
    "finished_at",
)
STEP_FIELDS = ("index", "name", "state", "outcome", "exit_code", "started_at", "finished_at")


def _run_snapshot(run_id: int) -> dict | None:
    run = Run.objects.filter(id=run_id).values(*RUN_FIELDS).first()
    if run is None:
        return None
    # The job graph of the current attempt; earlier attempts' jobs stay viewable on their own.
    jobs = Job.objects.filter(run_id=run_id, attempt=run["attempt"]).order_by("id")
    return {"run": run, "jobs": list(jobs.values(*JOB_FIELDS))}


def _job_snapshot(job_id: int) -> dict | None:
    job = Job.objects.filter(id=job_id).values(*JOB_FIELDS).first()
    if job is None:
        return None
    steps = list(Step.objects.filter(job_id=job_id).order_by("index").values(*STEP_FIELDS))
    job["log_lines"] = _log_end(job_id)
    return {"job": job, "steps": steps}


def _log_end(job_id: int) -> int:
    last = (
        LogChunk.objects.filter(job_id=job_id)
        .order_by("-sequence")
        .values_list("offset", "line_count")
        .first()
    )
    return last[0] + last[1] if last else 0


@dataclass(frozen=True, slots=True)
class LogPiece:
    """Consecutive lines of a job's log from `offset`, and where the stored log ended."""

    offset: int
    lines: list[list]
    end: int


def read_log(
    job_id: int, start: int, max_lines: int, max_chars: int = MAX_CHARS_PER_ROUND
) -> LogPiece:
    """Consecutive lines from line `start` (0-based), each as `[timestamp, stream, text,
    step_index]` plus the stored properties when there are any. Whole chunks are read until
    `max_lines` lines or `max_chars` characters of stored text are reached (so a little more
    may come back).

    Chunk boundaries need not match `start`: the chunk holding it is sliced.
    """
    end = _log_end(job_id)
    if end <= start:
        return LogPiece(start, [], end)
    chunks = LogChunk.objects.filter(job_id=job_id).order_by("offset", "sequence")
    holding = (
        LogChunk.objects.filter(job_id=job_id, offset__lte=start)
        .order_by("-offset", "-sequence")
        .values_list("offset", flat=True)
        .first()
    )
    rows = chunks.filter(offset__gte=start if holding is None else holding).values_list(
        "offset", "line_count", "step_index", "text"
    )[:MAX_CHUNKS_PER_READ]
    lines: list[list] = []
    position = start
    chars = 0
    for offset, count, step_index, text in rows:
        if offset + count <= position:
            continue  # the chunk before `start`, already sent
        if offset > position:
            if lines:
                break  # lines of one piece are consecutive; the gap's far side comes next time
            position = offset  # nothing can fill a gap once later lines are stored
        stored = text.split("\n")[position - offset :]
        lines.extend(_line(raw, step_index) for raw in stored)
        position = offset + count
        chars += len(text)
        if len(lines) >= max_lines or chars >= max_chars:
            break
    first = position - len(lines)
    return LogPiece(first, lines, max(end, position))


def _line(raw: str, step_index: int | None) -> list:
    try:
        stored = json.loads(raw)
        timestamp, stream, text = stored[0], stored[1], stored[2]
    except (ValueError, TypeError, IndexError, KeyError):
        # A damaged line keeps its place, so line numbers and offsets stay right.
        return [None, "system", "[cicd] unreadable log line", step_index]
    line = [timestamp, stream, text, step_index]
    if len(stored) > 3 and stored[3]:
        line.append(stored[3])
    return line
