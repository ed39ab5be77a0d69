"""Runs from workflows, and the DAG: which jobs become ready, which are skipped, how runs end.

`create_run` snapshots the workflow and creates its jobs; `advance_run` is called after anything
that may unblock jobs (a job finished, a run was created or cancelled). Both are idempotent: they
decide from the rows and move them with conditional updates, so calling them twice, or from two
processes at once, changes nothing more.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from pipelines import WorkflowError, build_plan, parse_workflow
from pipelines.errors import ExpressionError
from pipelines.expressions import (
    EvalOptions,
    evaluate_condition,
    is_truthy,
    parse_condition,
    render,
    render_deep,
    render_labels,
    to_string,
)
from pipelines.expressions import uses_status_function as _uses_status_function
from pipelines.matrix import MatrixError, expand_with_display_names
from pipelines.model import Environment, Workflow, thaw
from pipelines.triggers import ref_name
from runs.dispatch import notify_workers
from runs.models import Job, Repository, Run
from runs.states import FINAL_STATES, State, worst
from runs.transitions import move_job, move_run

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What a trigger asks for: run this workflow file, at this commit, for this event."""

    workflow_path: str
    source: str  # the workflow file's text at `sha`
    event: str
    ref: str
    sha: str
    idempotency_key: str
    actor: str = ""
    inputs: Mapping[str, Any] | None = None
    event_payload: Mapping[str, Any] | None = None
    from_fork: bool = False
    # Set when the trigger itself failed (e.g. the commit could not be fetched): the run is
    # created failed with this reason, so the event is visible rather than lost.
    error: str = ""


def create_run(repository: Repository, request: RunRequest) -> Run:
    """Create the run (or return the one this idempotency key already made) and its jobs.

    A workflow that does not parse still gets a run, failed with the problems as its error, so a
    push with a broken workflow is visible rather than silently ignored.
    """
    existing = Run.objects.filter(idempotency_key=request.idempotency_key).first()
    if existing is not None:
        return existing
    if request.error:
        workflow, problems = None, request.error
    else:
        workflow, problems = _parse(request.source, request.workflow_path)
    try:
        with transaction.atomic():
            # Lock the repository row: run numbers are handed out one at a time per repository.
            Repository.objects.select_for_update().filter(id=repository.id).first()
            last = Run.objects.filter(repository=repository).aggregate(n=Max("number"))["n"]
            run = Run.objects.create(
                repository=repository,
                number=(last or 0) + 1,
                workflow_path=request.workflow_path,
                workflow_name=workflow.display_name if workflow else request.workflow_path,
                workflow_source=request.source,
                event=request.event,
                ref=request.ref,
                sha=request.sha,
                actor=request.actor,
                inputs=dict(request.inputs or {}),
                event_payload=dict(request.event_payload or {}),
                from_fork=request.from_fork,
                idempotency_key=request.idempotency_key,
            )
            if workflow is None:
                reason = "trigger failed" if request.error else "invalid workflow"
                move_run(run.id, State.FAILURE, reason=reason, error=problems)
            else:
                _create_jobs(run, workflow)
                _control().enter_concurrency_group(run, workflow)
    except IntegrityError:
        # Another process created the run for this key between our check and our insert.
        return Run.objects.get(idempotency_key=request.idempotency_key)
    advance_run(run.id)
    run.refresh_from_db()
    return run


def _parse(source: str, path: str) -> tuple[Workflow | None, str]:
    try:
        return parse_workflow(source, path, matrix_cap=settings.CICD_MATRIX_CAP), ""
    except WorkflowError as error:
        return None, "\n".join(str(problem) for problem in error.problems)


def _create_jobs(run: Run, workflow: Workflow) -> None:
    plan = build_plan(workflow)
    jobs = []
    for planned in plan.jobs:
        job = workflow.jobs[planned.job_id]
        common = {
            "run": run,
            "attempt": run.attempt,
            "workflow_job_id": planned.job_id,
            "needs": list(job.needs),
            "runs_on": list(job.runs_on),
            "priority": run.repository.priority,
        }
        if planned.instances is None:
            # The matrix is an expression over `needs`: expanded when the job becomes ready.
            jobs.append(Job(key=planned.job_id, name=job.display_name, matrix={}, **common))
            continue
        for instance in planned.instances:
            jobs.append(
                Job(
                    key=instance.key,
                    name=instance.display_name,
                    matrix=thaw(dict(instance.matrix)),
                    **common,
                )
            )
    Job.objects.bulk_create(jobs)


@functools.lru_cache(maxsize=256)
def workflow_of(source: str, path: str) -> Workflow:
    """The parsed snapshot of a run. Parsing is deterministic, so a cache is safe."""
    return parse_workflow(source, path, matrix_cap=settings.CICD_MATRIX_CAP)


# ------------------------------------------------------------------------------------------ DAG


def advance_run(run_id: int) -> None:
    """Queue the jobs whose needs are done and whose `if` holds, skip the others, and end the
    run when every job has ended. Repeats until nothing changes, so skips propagate."""
    run = Run.objects.select_related("repository").get(id=run_id)
    if run.state in FINAL_STATES:
        return
    workflow = workflow_of(run.workflow_source, run.workflow_path)
    # A run waiting for its concurrency group starts no job; it may still end (cancelled).
    while run.state != State.WAITING and _advance_once(run, workflow):
        pass
    _roll_up(run)


def _advance_once(run: Run, workflow: Workflow) -> bool:
    jobs = list(Job.objects.filter(run=run, attempt=run.attempt).order_by("id"))
    by_workflow_job: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_workflow_job[job.workflow_job_id].append(job)
    changed = False
    for job in jobs:
        if job.state != State.PENDING:
            continue
        group = [by_workflow_job[need] for need in job.needs]
        if any(other.state not in FINAL_STATES for members in group for other in members):
            continue
        if not _slot_free(run, job, by_workflow_job, workflow):
            continue
        if _decide(run, workflow, job, by_workflow_job):
            changed = True
            # Later jobs of this pass count it against max-parallel before the next re-read.
            job.state = Job.objects.values_list("state", flat=True).get(id=job.id)
    return changed


def _slot_free(run: Run, job: Job, jobs: Mapping[str, list[Job]], workflow: Workflow) -> bool:
    strategy = workflow.jobs[job.workflow_job_id].strategy
    limit = strategy.max_parallel if strategy else None
    if isinstance(limit, str):
        try:
            limit = int(float(to_string(_render_strategy(run, job, jobs, limit))))
        except (ExpressionError, ValueError):
            return True  # a limit that is not a number limits nothing
    if not isinstance(limit, int):
        return True
    siblings = jobs[job.workflow_job_id]
    busy = sum(1 for s in siblings if s.state in (State.QUEUED, State.RUNNING, State.WAITING))
    return busy < max(1, limit)


def _render_strategy(run: Run, job: Job, jobs: Mapping[str, list[Job]], value: str) -> Any:
    """`strategy.fail-fast` / `max-parallel` written as expressions: github, inputs, vars and
    the job's needs are available, as on GitHub."""
    needs = {need: need_context(jobs.get(need, [])) for need in job.needs}
    return render(value, run_contexts(run) | {"needs": needs})


def _decide(run: Run, workflow: Workflow, job: Job, jobs: Mapping[str, list[Job]]) -> bool:
    definition = workflow.jobs[job.workflow_job_id]
    needs = {need: need_context(jobs[need]) for need in job.needs}
    results = [context["result"] for context in needs.values()]
    status = _status(run, results)
    condition = definition.if_condition
    contexts = run_contexts(run) | {"needs": needs, "matrix": job.matrix}
    try:
        guarded = condition is not None and _uses_status_function(parse_condition(condition))
        if "skipped" in results and not guarded:
            should_run, reason = False, "a job it needs was skipped"
        else:
            should_run = evaluate_condition(condition, contexts, EvalOptions(status=status))
            reason = "" if should_run else _skip_reason(condition, status)
    except ExpressionError as error:
        return move_job(
            job.id, State.SKIPPED, from_states={State.PENDING}, reason=f"if: {error.message}"
        )
    if not should_run:
        return move_job(job.id, State.SKIPPED, from_states={State.PENDING}, reason=reason)
    strategy = definition.strategy
    if strategy and strategy.combinations is None and job.key == job.workflow_job_id:
        return _expand_matrix_now(job, strategy.matrix, contexts)
    try:
        runs_on = render_labels(definition.runs_on, contexts)
    except ExpressionError as error:
        return move_job(
            job.id,
            State.FAILURE,
            from_states={State.PENDING},
            reason="runs-on",
            error=error.message,
        )
    if definition.environment is not None:
        return _enter_environment(job, definition.environment, contexts, runs_on)
    return queue_job(job.id, reason="needs done", runs_on=runs_on)


def _enter_environment(
    job: Job, environment: Environment, contexts: dict[str, Any], runs_on: list[Any]
) -> bool:
    """A job with `environment:` waits for its environment's rules (`deployments.gates`) instead
    of being queued. Its name is rendered with the contexts of `runs-on`; its url may name step
    outputs, known only once the job ran, so a url that does not render yet is left empty."""
    from deployments import gates

    try:
        name = to_string(render(environment.name, contexts)).strip()
        problem = gates.check_name(name)
    except ExpressionError as error:
        problem = error.message
    if problem:
        return move_job(
            job.id,
            State.FAILURE,
            from_states={State.PENDING},
            reason="environment",
            error=f"environment: {problem}",
        )
    try:
        url = to_string(render(environment.url, contexts)) if environment.url else ""
    except ExpressionError:
        url = ""
    return gates.enter_environment(job.id, name, url=url, runs_on=runs_on)


def queue_job(job_id: int, *, reason: str, **fields: Any) -> bool:
    """Move a pending job to queued and, once that commits, tell the workers."""
    if not move_job(job_id, State.QUEUED, from_states={State.PENDING}, reason=reason, **fields):
        return False
    notify_workers(job_id)
    return True


def _status(run: Run, results: list[str]) -> str:
    if any(result == "cancelled" for result in results):
        return "cancelled"
    if any(result == "failure" for result in results):
        return "failure"
    return "success"


def _skip_reason(condition: str | None, status: str) -> str:
    if condition is None:
        return f"a job it needs ended in {status}"
    return f"if: {condition} was false"


def need_context(instances: list[Job]) -> dict[str, Any]:
    """`needs.<id>`: GitHub's result of a (matrix) job and its outputs (later instances win)."""
    conclusion = worst(job.state for job in instances)
    result = {State.TIMED_OUT: "failure"}.get(conclusion, str(conclusion))
    outputs: dict[str, Any] = {}
    for job in instances:
        outputs.update(job.outputs or {})
    return {"result": result, "outputs": outputs}


def _expand_matrix_now(job: Job, matrix_as_written: Any, contexts: dict[str, Any]) -> bool:
    """Turn the placeholder job of an expression matrix into one job per combination."""
    try:
        matrix = render_deep(thaw(matrix_as_written), contexts)
        if not isinstance(matrix, Mapping):
            raise MatrixError(f"the matrix expression gave {type(matrix).__name__}, not a mapping")
        combinations = expand_with_display_names(matrix, job.name)
        if len(combinations) > settings.CICD_MATRIX_CAP:
            raise MatrixError(
                f"expands to {len(combinations)} combinations, "
                f"more than the limit of {settings.CICD_MATRIX_CAP}"
            )
    except (ExpressionError, MatrixError) as error:
        message = getattr(error, "message", str(error))
        return move_job(
            job.id, State.FAILURE, from_states={State.PENDING}, reason="matrix", error=message
        )
    with transaction.atomic():
        (first, first_name), *rest = combinations
        claimed = Job.objects.filter(id=job.id, state=State.PENDING, key=job.key).update(
            key=f"{job.key}-1", name=first_name, matrix=first
        )
        if claimed != 1:
            return False  # another process expanded it
        for number, (combination, name) in enumerate(rest, start=2):
            Job.objects.create(
                run_id=job.run_id,
                attempt=job.attempt,
                workflow_job_id=job.workflow_job_id,
                key=f"{job.key}-{number}",
                name=name,
                matrix=combination,
                needs=job.needs,
                runs_on=job.runs_on,
                priority=job.priority,
            )
    return True


def _roll_up(run: Run) -> None:
    states = list(Job.objects.filter(run=run, attempt=run.attempt).values_list("state", flat=True))
    if states and all(state in FINAL_STATES for state in states):
        if move_run(run.id, worst(states), reason="all jobs ended") and run.concurrency_group:
            _control().release_next_in_group(
                repository_id=run.repository_id, group=run.concurrency_group
            )
    elif any(state == State.RUNNING for state in states):
        move_run(run.id, State.RUNNING, from_states={State.QUEUED}, reason="a job started")


def run_contexts(run: Run) -> dict[str, Any]:
    """The contexts fixed for the whole run: github, inputs, vars."""
    repository = run.repository
    github = {
        "event_name": run.event,
        "ref": run.ref,
        "ref_name": ref_name(run.ref),
        "sha": run.sha,
        "repository": repository.full_name,
        "repository_owner": repository.organisation.slug,
        "run_id": str(run.id),
        "run_number": str(run.number),
        "run_attempt": str(run.attempt),
        "actor": run.actor,
        "workflow": run.workflow_name,
        "event": run.event_payload,
        "ref_type": "tag" if run.ref.startswith("refs/tags/") else "branch",
        "head_ref": "",
        "base_ref": "",
    }
    pull_request = (run.event_payload or {}).get("pull_request")
    if run.event == "pull_request" and isinstance(pull_request, dict):
        for side in ("head", "base"):
            branch = pull_request.get(side)
            if isinstance(branch, dict) and isinstance(branch.get("ref"), str):
                github[f"{side}_ref"] = ref_name(branch["ref"])
    return {"github": github, "inputs": dict(run.inputs), "vars": {}}


# ------------------------------------------------------------------------------ job completion


def finish_job(
    job_id: int,
    conclusion: str,
    *,
    token: str,
    outputs: Mapping[str, str] | None = None,
    error: str = "",
    worker: str = "",
) -> bool:
    """Record a job's end, reported by the worker holding `token`. A stale worker is refused.
    Then apply fail-fast to its matrix siblings and advance the run. A failure of a job with a
    `retry` policy and attempts left puts it back in the queue instead (`runs.control`)."""
    if _control().retry_job(job_id, conclusion=conclusion, token=token, error=error, worker=worker):
        return True
    moved = move_job(
        job_id,
        conclusion,
        from_states={State.RUNNING},
        token=token,
        reason="reported by the worker",
        worker=worker,
        outputs=dict(outputs or {}),
        error=error,
        lease_expires_at=None,
    )
    if not moved:
        return False
    job = Job.objects.select_related("run").get(id=job_id)
    if conclusion in (State.FAILURE, State.TIMED_OUT):
        _fail_fast(job)
    advance_run(job.run_id)
    return True


def _fail_fast(job: Job) -> None:
    workflow = workflow_of(job.run.workflow_source, job.run.workflow_path)
    strategy = workflow.jobs[job.workflow_job_id].strategy
    if strategy is None:
        return
    fail_fast = strategy.fail_fast
    if isinstance(fail_fast, str):
        jobs: dict[str, list[Job]] = defaultdict(list)
        for other in Job.objects.filter(run_id=job.run_id, attempt=job.attempt):
            jobs[other.workflow_job_id].append(other)
        try:
            fail_fast = is_truthy(_render_strategy(job.run, job, jobs, fail_fast))
        except ExpressionError:
            fail_fast = True  # GitHub's default
    if fail_fast is not True:
        return
    siblings = Job.objects.filter(
        run_id=job.run_id,
        attempt=job.attempt,
        workflow_job_id=job.workflow_job_id,
        state__in=[State.PENDING, State.QUEUED, State.WAITING],
    ).exclude(id=job.id)
    for sibling_id in siblings.values_list("id", flat=True):
        move_job(sibling_id, State.CANCELLED, reason=f"fail-fast: {job.name} failed")
    # Running siblings are told to stop: their worker sees the flag and ends them cancelled.
    running = Job.objects.filter(
        run_id=job.run_id,
        attempt=job.attempt,
        workflow_job_id=job.workflow_job_id,
        state=State.RUNNING,
    ).exclude(id=job.id)
    for sibling_id in running.values_list("id", flat=True):
        _control().request_cancel(sibling_id)


def _control() -> ModuleType:
    """`runs.control` builds on this module (cancel, groups, re-runs, retries call advance_run);
    imported when first needed to break the import cycle."""
    from runs import control

    return control
