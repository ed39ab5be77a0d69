"""Wake-ups for live viewers: "run 12 changed", "job 34 changed", nothing more.

The database is the only source of truth. After a state change or a log chunk commits, a tiny
message goes through the Channels layer to the groups `run.<id>` and `job.<id>`; the WebSocket
consumers (`runs.consumers.LiveConsumer`) then read what changed from the database at their own
pace. So a lost or late wake-up costs latency, never data: consumers also poll.

Sending is best effort. A channel layer that is down, slow or absent is logged and ignored: a
viewer must never be able to fail or stall a state change or a running job.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.db import transaction

log = logging.getLogger(__name__)

MESSAGE_TYPE = "live.changed"
# A wake-up that cannot be handed to the layer in this time is dropped: the consumers' polling
# catches up anyway, and the caller (a worker flushing logs) must not wait on a sick Redis.
SEND_TIMEOUT_SECONDS = 1.0

_background_sends: set[asyncio.Task] = set()
# The event loop of this process's WebSocket consumers, when it has any (daphne).
_consumers_loop: asyncio.AbstractEventLoop | None = None


def run_group(run_id: int) -> str:
    return f"run.{run_id}"


def job_group(job_id: int) -> str:
    return f"job.{job_id}"


def notify_run(run_id: int) -> None:
    """Tell the viewers of a run that it changed, once the current transaction commits."""
    _schedule({run_group(run_id): _message("run", run_id)})


def notify_job(job_id: int, *, run_id: int | None = None) -> None:
    """Tell the viewers of a job that it changed (state, steps or new log lines), once the
    current transaction commits. With `run_id`, the viewers of its run too (its job list
    shows the job's state)."""
    groups = {job_group(job_id): _message("job", job_id)}
    if run_id is not None:
        groups[run_group(run_id)] = _message("run", run_id)
    _schedule(groups)


def consumers_run_in(loop: asyncio.AbstractEventLoop) -> None:
    """Called by the consumers: wake-ups sent from any thread of this process then go through
    their loop. The in-memory layer works only inside the loop its consumers wait in; a send
    from another loop (async_to_sync in a plain thread) would never wake them."""
    global _consumers_loop
    _consumers_loop = loop


def _message(kind: str, object_id: int) -> dict:
    return {"type": MESSAGE_TYPE, "kind": kind, "id": object_id}


class _Batch:
    """The wake-ups of one transaction, sent together after it commits: cancelling a run of
    200 jobs sends one message per group, not one per job."""

    def __init__(self) -> None:
        self.groups: dict[str, dict] = {}

    def __call__(self) -> None:
        _send(self.groups)


def _schedule(groups: Mapping[str, dict]) -> None:
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        _send(groups)
        return
    # A batch still in the commit hooks belongs to this transaction (or to a savepoint of it
    # that is still open or was released); a rolled-back savepoint's hooks are gone already.
    for _savepoints, hook, _robust in reversed(connection.run_on_commit):
        if isinstance(hook, _Batch):
            hook.groups.update(groups)
            return
    batch = _Batch()
    batch.groups.update(groups)
    transaction.on_commit(batch, robust=True)


def _send(groups: Mapping[str, dict]) -> None:
    if not groups:
        return
    # `at`: after the change committed, so a viewer's read that started later sees it; the
    # viewers of one process may then share such a read (runs.consumers).
    at = time.time()
    groups = {group: {**message, "at": at} for group, message in groups.items()}
    try:
        layer = get_channel_layer()
        if layer is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        consumers_loop = _consumers_loop
        if running is not None:
            # Called from inside an event loop (async code committing): async_to_sync would
            # refuse to block it, so the send runs as a task of that loop.
            task = running.create_task(_send_all(layer, dict(groups)))
            _background_sends.add(task)
            task.add_done_callback(_background_sends.discard)
        elif consumers_loop is not None and consumers_loop.is_running():
            # Not waited for: the caller (a worker thread, a view) has no reason to.
            asyncio.run_coroutine_threadsafe(_send_all(layer, dict(groups)), consumers_loop)
        else:
            async_to_sync(_send_all)(layer, dict(groups))
    except Exception:
        log.warning("live updates: could not notify %s", ", ".join(groups), exc_info=True)


async def _send_all(layer: object, groups: dict[str, dict]) -> None:
    for group, message in groups.items():
        try:
            await asyncio.wait_for(layer.group_send(group, message), SEND_TIMEOUT_SECONDS)
        except Exception:
            log.warning("live updates: could not notify %s", group, exc_info=True)
