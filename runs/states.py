"""States of runs, jobs and steps, the transitions allowed between them, and the roll-up order.

Every state change goes through `runs.transitions`, which checks these tables and performs a
conditional update; nothing else writes a `state` column.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models


class State(models.TextChoices):
    PENDING = "pending", "Pending"  # a job whose `needs` have not all finished yet
    QUEUED = "queued", "Queued"
    WAITING = "waiting", "Waiting"  # for an approval or a concurrency group
    RUNNING = "running", "Running"
    SUCCESS = "success", "Success"
    FAILURE = "failure", "Failure"
    CANCELLED = "cancelled", "Cancelled"
    SKIPPED = "skipped", "Skipped"
    TIMED_OUT = "timed_out", "Timed out"


FINAL_STATES = frozenset(
    {State.SUCCESS, State.FAILURE, State.CANCELLED, State.SKIPPED, State.TIMED_OUT}
)
ACTIVE_STATES = frozenset({State.PENDING, State.QUEUED, State.WAITING, State.RUNNING})
_ENDINGS = {State.SUCCESS, State.FAILURE, State.CANCELLED, State.TIMED_OUT}

JOB_TRANSITIONS: dict[str, frozenset[str]] = {
    # PENDING -> FAILURE: the job cannot even start (its matrix expression is invalid).
    State.PENDING: frozenset(
        {State.QUEUED, State.WAITING, State.SKIPPED, State.CANCELLED, State.FAILURE}
    ),
    State.WAITING: frozenset({State.QUEUED, State.SKIPPED, State.CANCELLED, State.FAILURE}),
    State.QUEUED: frozenset({State.RUNNING, State.WAITING, State.CANCELLED, State.FAILURE}),
    # RUNNING -> QUEUED: the worker's lease expired and the job is given to another worker.
    State.RUNNING: frozenset(_ENDINGS | {State.QUEUED}),
}
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    State.QUEUED: frozenset({State.WAITING, State.RUNNING} | _ENDINGS | {State.SKIPPED}),
    State.WAITING: frozenset({State.QUEUED, State.RUNNING, State.CANCELLED}),
    State.RUNNING: frozenset(_ENDINGS),
    # An ended run goes back to queued only for a re-run (`runs.control.rerun`): a new attempt
    # with new job rows; the ended attempt's jobs keep their states.
    **{final: frozenset({State.QUEUED}) for final in sorted(FINAL_STATES)},
}
STEP_TRANSITIONS: dict[str, frozenset[str]] = {
    State.PENDING: frozenset({State.RUNNING, State.SKIPPED, State.CANCELLED}),
    State.RUNNING: frozenset(_ENDINGS),
}

# Worst wins when jobs roll up into a run: one failure makes the run a failure, whatever else.
CONCLUSION_PRECEDENCE: tuple[str, ...] = (
    State.FAILURE,
    State.TIMED_OUT,
    State.CANCELLED,
    State.SUCCESS,
    State.SKIPPED,
)


def can_move(table: dict[str, frozenset[str]], current: str, target: str) -> bool:
    return target in table.get(current, frozenset())


def worst(conclusions: Iterable[str]) -> str:
    """The rolled-up conclusion; an empty set (a run with no jobs) counts as skipped."""
    present = set(conclusions)
    for conclusion in CONCLUSION_PRECEDENCE:
        if conclusion in present:
            return conclusion
    return State.SKIPPED
