"""The only code that changes a state column.

Each change is a conditional UPDATE on the state that was read (and, for a worker's writes, on its
lease token), committed together with its history row. Its row count says whether it happened, so
a replayed message or a second worker finds the row moved on and does nothing.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.utils import timezone

from runs import live
from runs.models import Job, JobTransition, Run, RunTransition
from runs.states import FINAL_STATES, JOB_TRANSITIONS, RUN_TRANSITIONS, State, can_move


class IllegalTransition(ValueError):
    """A caller asked for a move the state machine forbids (a bug, not a race)."""


def move_job(
    job_id: int,
    to_state: str,
    *,
    from_states: frozenset[str] | set[str] | None = None,
    token: str | None = None,
    reason: str = "",
    worker: str = "",
    **fields: Any,
) -> bool:
    """Move a job to `to_state` if it is in one of `from_states` (default: any state that may
    move there). With `token`, only while the job's lease token is still that one.
    Returns whether this call made the change."""
    allowed = _sources(JOB_TRANSITIONS, to_state, from_states)
    with transaction.atomic():
        row = Job.objects.filter(id=job_id).values_list("state", "run_id").first()
        if row is None or row[0] not in allowed:
            return False
        current, run_id = row
        updates = {**fields, "state": to_state, **_timestamps(to_state, fields, _JOB_STAMPS)}
        rows = Job.objects.filter(id=job_id, state=current)
        if token is not None:
            rows = rows.filter(lease_token=token)
        if rows.update(**updates) != 1:
            return False
        JobTransition.objects.create(
            job_id=job_id, from_state=current, to_state=to_state, reason=reason, worker=worker
        )
        live.notify_job(job_id, run_id=run_id)
    return True


def move_run(
    run_id: int,
    to_state: str,
    *,
    from_states: frozenset[str] | set[str] | None = None,
    reason: str = "",
    **fields: Any,
) -> bool:
    allowed = _sources(RUN_TRANSITIONS, to_state, from_states)
    with transaction.atomic():
        current = Run.objects.filter(id=run_id).values_list("state", flat=True).first()
        if current is None or current not in allowed:
            return False
        updates = {**fields, "state": to_state, **_timestamps(to_state, fields, _RUN_STAMPS)}
        if Run.objects.filter(id=run_id, state=current).update(**updates) != 1:
            return False
        RunTransition.objects.create(
            run_id=run_id, from_state=current, to_state=to_state, reason=reason
        )
        live.notify_run(run_id)
    return True


def _sources(
    table: dict[str, frozenset[str]], to_state: str, requested: frozenset[str] | set[str] | None
) -> set[str]:
    legal = {source for source in table if can_move(table, source, to_state)}
    if requested is None:
        return legal
    illegal = set(requested) - legal
    if illegal:
        sources = ", ".join(sorted(str(state) for state in illegal))
        raise IllegalTransition(f"cannot move from {sources} to {to_state}")
    return set(requested)


_JOB_STAMPS = frozenset({"queued_at", "started_at", "finished_at"})
_RUN_STAMPS = frozenset({"started_at", "finished_at"})


def _timestamps(to_state: str, fields: dict[str, Any], available: frozenset[str]) -> dict[str, Any]:
    """The time of the move, in the column that records reaching that state."""
    if to_state == State.QUEUED:
        column = "queued_at"
    elif to_state == State.RUNNING:
        column = "started_at"
    elif to_state in FINAL_STATES:
        column = "finished_at"
    else:
        return {}
    if column not in available or column in fields:
        return {}
    return {column: timezone.now()}
