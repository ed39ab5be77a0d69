"""Controlling runs from outside the DAG: cancel, concurrency groups, re-runs and job retries.

Services with keyword-only arguments; each re-reads the rows it acts on and changes them only with
conditional moves (`runs.transitions`), so a double click, a replayed message or two processes at
once change nothing more. Cancelling is a database update, not a message: queued work ends at
once, and the worker of a running job sees `Job.cancel_requested` within
`CICD_CANCEL_POLL_SECONDS` and stops its executor (see `runs.execution._LeaseKeeper`).
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from pipelines import WorkflowError
from pipelines.errors import ExpressionError
from pipelines.expressions import is_truthy, render, to_string
from pipelines.model import Workflow
from runs.dispatch import notify_workers
from runs.models import Job, Repository, Run
from runs.scheduling import _create_jobs, advance_run, run_contexts, workflow_of
from runs.states import FINAL_STATES, State
from runs.transitions import move_job, move_run

log = logging.getLogger(__name__)

NOT_STARTED = frozenset({State.PENDING, State.QUEUED, State.WAITING})
ACTIVE_RUN_STATES = (State.QUEUED, State.WAITING, State.RUNNING)
RETRY_JITTER = 0.25  # up to 25 % added to each backoff, so retries of many jobs spread out


class NotRerunnable(ValueError):
    """A user asked to re-run a run that cannot be re-run now; the message is for the UI."""


# --------------------------------------------------------------------------------------- cancel


@transaction.atomic
def cancel_run(run_id: int, *, reason: str, actor: str = "") -> bool:
    """Cancel every job of the run's current attempt that has not ended. Returns whether there
    was anything to cancel (False for a run that already ended)."""
    run = Run.objects.filter(id=run_id).first()
    if run is None or run.state in FINAL_STATES:
        return False
    _lock_repository(run.repository_id)
    job_ids = Job.objects.filter(run_id=run_id, attempt=run.attempt).exclude(state__in=FINAL_STATES)
    for job_id in job_ids.values_list("id", flat=True):
        _cancel_one(job_id, reason=_with_actor(reason, actor))
    advance_run(run_id)
    return True


@transaction.atomic
def cancel_job(job_id: int, *, reason: str, actor: str = "") -> bool:
    """Cancel one job: at once if it has not started, through its worker if it runs."""
    job = Job.objects.select_related("run").filter(id=job_id).first()
    if job is None:
        return False
    _lock_repository(job.run.repository_id)
    run_id = job.run_id
    if not _cancel_one(job_id, reason=_with_actor(reason, actor)):
        return False
    advance_run(run_id)
    return True


def request_cancel(job_id: int) -> bool:
    """Ask the worker of a running job to stop it; it ends `cancelled` through `finish_job`."""
    return (
        Job.objects.filter(id=job_id, state=State.RUNNING, cancel_requested=False).update(
            cancel_requested=True
        )
        == 1
    )


def cancel_requested(job_id: int, *, token: str) -> bool:
    """Whether the worker holding `token` has been asked to stop (polled every second or so)."""
    return Job.objects.filter(id=job_id, lease_token=token, cancel_requested=True).exists()


def _cancel_one(job_id: int, *, reason: str) -> bool:
    if move_job(job_id, State.CANCELLED, from_states=NOT_STARTED, reason=reason):
        return True
    return request_cancel(job_id)


def _with_actor(reason: str, actor: str) -> str:
    return f"{reason} (by {actor})" if actor else reason


def _lock_repository(repository_id: int) -> None:
    """Every service here that may cancel or release runs locks the repository row first (as
    `create_run` does), so they all take row locks in one order and cannot deadlock."""
    Repository.objects.select_for_update().filter(id=repository_id).first()


# ---------------------------------------------------------------------------- concurrency groups


def enter_concurrency_group(run: Run, workflow: Workflow) -> None:
    """Apply the workflow's `concurrency` to a run that was just created or re-run (as GitHub):

    - the group expression is evaluated with `github` and `inputs` and stored on the run;
    - with `cancel-in-progress`, every older active run of the group is cancelled;
    - without it, an older *waiting* run of the group is cancelled (only the newest waits), and
      this run waits while an older one is queued or running; `release_next_in_group` starts it.

    Called inside the transaction that holds the repository row lock, which serialises group
    decisions with `release_next_in_group` (it takes the same lock).
    """
    concurrency = workflow.concurrency
    if concurrency is None:
        return
    contexts = run_contexts(run)
    try:
        group = to_string(render(concurrency.group, contexts)).strip()
        cancel_in_progress = concurrency.cancel_in_progress
        if isinstance(cancel_in_progress, str):
            cancel_in_progress = is_truthy(render(cancel_in_progress, contexts))
    except ExpressionError as error:
        message = f"concurrency: {getattr(error, 'message', error)}"
        for job_id in Job.objects.filter(run=run, attempt=run.attempt).values_list("id", flat=True):
            move_job(job_id, State.SKIPPED, from_states={State.PENDING}, reason=message)
        move_run(run.id, State.FAILURE, reason="invalid concurrency group", error=message)
        return
    if not group:
        return
    group = group[: Run._meta.get_field("concurrency_group").max_length]
    Run.objects.filter(id=run.id).update(concurrency_group=group)
    run.concurrency_group = group
    older = list(
        Run.objects.filter(
            repository_id=run.repository_id, concurrency_group=group, state__in=ACTIVE_RUN_STATES
        )
        .exclude(id=run.id)
        .order_by("created_at", "id")
    )
    reason = f"concurrency group {group!r}: superseded by run #{run.number}"
    waiting = [other for other in older if other.state == State.WAITING]
    busy = [other for other in older if other.state != State.WAITING]
    for other in waiting:
        cancel_run(other.id, reason=reason)
    if cancel_in_progress:
        for other in busy:
            cancel_run(other.id, reason=reason)
    elif busy:
        move_run(
            run.id,
            State.WAITING,
            from_states={State.QUEUED},
            reason=f"concurrency group {group!r}: waiting for run #{busy[0].number}",
        )
        run.state = State.WAITING


@transaction.atomic
def release_next_in_group(*, repository_id: int, group: str) -> Run | None:
    """Start the oldest waiting run of a group once no run of it is queued or running."""
    if not group:
        return None
    _lock_repository(repository_id)
    runs = Run.objects.filter(repository_id=repository_id, concurrency_group=group)
    if runs.filter(state__in=(State.QUEUED, State.RUNNING)).exists():
        return None
    waiting = runs.filter(state=State.WAITING).order_by("created_at", "id").first()
    if waiting is None:
        return None
    if not move_run(
        waiting.id, State.QUEUED, from_states={State.WAITING}, reason="concurrency group free"
    ):
        return None
    advance_run(waiting.id)
    return waiting


# ------------------------------------------------------------------------------------- re-runs


@transaction.atomic
def rerun(run_id: int, *, failed_only: bool, actor: str = "") -> Run:
    """Start a new attempt of an ended run. The previous attempt's jobs, steps and logs stay.

    `failed_only` (GitHub's "re-run failed jobs"): a job that succeeded and depends on no job
    that failed, was cancelled or skipped is carried over as a success with its outputs; the
    others start again.
    """
    repository_id = Run.objects.values_list("repository_id", flat=True).get(id=run_id)
    _lock_repository(repository_id)  # first, as everywhere: the group decision below needs it
    run = Run.objects.select_for_update().select_related("repository__organisation").get(id=run_id)
    if run.state not in FINAL_STATES:
        raise NotRerunnable(f"run #{run.number} is still {run.state}; cancel it first")
    try:
        workflow = workflow_of(run.workflow_source, run.workflow_path)
    except WorkflowError as error:  # the snapshot never parsed: nothing to run again
        raise NotRerunnable(f"the workflow of run #{run.number} is invalid") from error
    previous = list(Job.objects.filter(run=run, attempt=run.attempt).order_by("id"))
    if failed_only and all(job.state == State.SUCCESS for job in previous):
        raise NotRerunnable(f"run #{run.number} has no failed jobs to re-run")
    attempt = run.attempt + 1
    moved = move_run(
        run.id,
        State.QUEUED,
        from_states={run.state},
        reason=_with_actor(f"re-run ({'failed jobs' if failed_only else 'all jobs'})", actor),
        attempt=attempt,
        finished_at=None,
        error="",
    )
    if not moved:
        raise NotRerunnable(f"run #{run.number} changed meanwhile; try again")
    run.refresh_from_db()
    if failed_only:
        _copy_jobs_for_failed_rerun(run, workflow, previous)
    else:
        _create_jobs(run, workflow)
    enter_concurrency_group(run, workflow)
    advance_run(run.id)
    run.refresh_from_db()
    return run


def _copy_jobs_for_failed_rerun(run: Run, workflow: Workflow, previous: list[Job]) -> None:
    by_workflow_job: dict[str, list[Job]] = defaultdict(list)
    for job in previous:
        by_workflow_job[job.workflow_job_id].append(job)

    tainted: dict[str, bool] = {}

    def is_tainted(workflow_job_id: str) -> bool:
        """It did not fully succeed, or something it needs (transitively) did not."""
        if workflow_job_id not in tainted:
            tainted[workflow_job_id] = False  # `needs` is acyclic; this only guards recursion
            instances = by_workflow_job.get(workflow_job_id, [])
            tainted[workflow_job_id] = (
                not instances
                or any(job.state != State.SUCCESS for job in instances)
                or any(is_tainted(need) for need in workflow.jobs[workflow_job_id].needs)
            )
        return tainted[workflow_job_id]

    jobs = []
    for workflow_job_id, instances in by_workflow_job.items():
        needs_ok = not any(is_tainted(need) for need in workflow.jobs[workflow_job_id].needs)
        strategy = workflow.jobs[workflow_job_id].strategy
        expression_matrix = strategy is not None and strategy.combinations is None
        if expression_matrix and is_tainted(workflow_job_id):
            # Its combinations come from its needs' outputs: expand it again from scratch.
            template = instances[0]
            jobs.append(_copy(template, run, key=workflow_job_id, name="", matrix={}))
            continue
        for job in instances:
            if needs_ok and job.state == State.SUCCESS:
                jobs.append(_copy(job, run, carried=True))
            else:
                jobs.append(_copy(job, run))
    Job.objects.bulk_create(jobs)


def _copy(job: Job, run: Run, *, carried: bool = False, **overrides: object) -> Job:
    fields = {
        "run": run,
        "attempt": run.attempt,
        "workflow_job_id": job.workflow_job_id,
        "key": job.key,
        "name": job.name,
        "matrix": job.matrix,
        "needs": job.needs,
        "runs_on": job.runs_on,
        "priority": job.priority,
    }
    if carried:
        fields |= {
            "state": State.SUCCESS,
            "outputs": job.outputs,
            "started_at": job.started_at,
            "finished_at": job.finished_at,
        }
    fields |= overrides
    if not fields["name"]:
        fields["name"] = (
            workflow_of(run.workflow_source, run.workflow_path)
            .jobs[job.workflow_job_id]
            .display_name
        )
    return Job(**fields)


# ------------------------------------------------------------------------------------- retries


def retry_job(
    job_id: int, *, conclusion: str, token: str, error: str = "", worker: str = ""
) -> bool:
    """The `retry` extension: put a failed or timed-out job back in the queue for its next
    attempt after an exponential backoff with jitter, instead of ending it. Returns whether it
    did (False: no retry policy, attempts used up, cancel requested, or not our job any more).
    """
    if conclusion not in (State.FAILURE, State.TIMED_OUT):
        return False
    job = Job.objects.select_related("run").filter(id=job_id).first()
    if job is None or job.cancel_requested or job.lease_token != token:
        return False
    definition = workflow_of(job.run.workflow_source, job.run.workflow_path).jobs.get(
        job.workflow_job_id
    )
    policy = definition.retry if definition is not None else None
    if policy is None or job.retry_attempt >= policy.max_attempts:
        return False
    next_attempt = job.retry_attempt + 1
    base = policy.delay_before(next_attempt)
    delay = base + base * RETRY_JITTER * random.random()
    with transaction.atomic():
        moved = move_job(
            job_id,
            State.QUEUED,
            from_states={State.RUNNING},
            token=token,
            reason=(
                f"{conclusion}; retry {next_attempt}/{policy.max_attempts} in {delay:.1f}s"
                + (f": {error}" if error else "")
            ),
            worker=worker,
            retry_attempt=next_attempt,
            not_before=timezone.now() + timedelta(seconds=delay),
            lease_token="",
            lease_expires_at=None,
            claimed_by="",
        )
        if moved:
            notify_workers(job_id, countdown=delay)
    return moved
