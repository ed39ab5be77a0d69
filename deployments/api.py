"""Environments, approvals and deployments in the JSON API, under /api/v1/ (routes in
`runs.api_urls`, described in `runs.openapi`).

As everywhere in the API: a bearer token (scope `read` for GET, `write` for POST) or the session
with its CSRF token; a private repository the caller may not read answers 404; errors are JSON
with `problems`. Reviews go through `deployments.gates.review`, which decides who may review (the
environment's rules, not a role) and audits every decision and refused attempt; rollbacks need
the write role and go through `deployments.service.request_rollback`.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse

from deployments import gates, service
from deployments.models import (
    Approval,
    Deployment,
    DeploymentStep,
    Environment,
    EnvironmentGate,
)
from runs import permissions
from runs.api import access
from runs.api.auth import Caller
from runs.api.http import (
    MAX_ID,
    ApiError,
    Query,
    endpoint,
    json_body,
    not_found,
    refuse_fields,
    unknown_fields,
    valid_id,
)
from runs.api.serialise import duration_seconds, iso, job_dict
from runs.models import Job
from runs.states import State

READ, WRITE = permissions.READ, permissions.WRITE
DEFAULT_PAGE = 30
MAX_PAGE = 100
MAX_COMMENT = 4000
MAX_WAITING_SHOWN = 100
HIDDEN = "***"


# ------------------------------------------------------------------------------------ reviews


@endpoint("POST")
def approve_job(request: HttpRequest, caller: Caller, job_id: int) -> JsonResponse:
    """`{"comment": "..."}` (optional): approve a job waiting at an environment."""
    return _review(request, caller, job_id, approve=True)


@endpoint("POST")
def reject_job(request: HttpRequest, caller: Caller, job_id: int) -> JsonResponse:
    """`{"comment": "why"}` (required): reject it; the job fails with the comment."""
    return _review(request, caller, job_id, approve=False)


def _review(request: HttpRequest, caller: Caller, job_id: int, *, approve: bool) -> JsonResponse:
    if not valid_id(job_id):
        raise not_found(f"job {job_id}")
    body = json_body(request)
    fields = unknown_fields(body, ("comment",))
    comment = body.get("comment", "")
    if not isinstance(comment, str):
        fields["comment"] = "must be a string"
    elif len(comment) > MAX_COMMENT:
        fields["comment"] = f"must be at most {MAX_COMMENT} characters"
    elif not approve and not comment.strip():
        fields["comment"] = "is required: say why the deployment is rejected"
    refuse_fields(fields)
    try:
        approval = gates.review(
            job_id,
            caller.user,
            approve=approve,
            comment=comment.strip(),
            remote_address=request.META.get("REMOTE_ADDR", ""),
            via=caller.via,
        )
    except gates.ReviewRefused as refused:
        raise ApiError(refused.status, refused.message) from None
    job = Job.objects.select_related("run__repository__organisation").get(id=job_id)
    gate = EnvironmentGate.objects.select_related("environment").get(job=job)
    return JsonResponse(
        {"job": job_dict(job), "approval": approval_dict(approval), "gate": gate_dict(gate)}
    )


# ------------------------------------------------------------------------------- environments


@endpoint("GET")
def environments(
    request: HttpRequest, caller: Caller, organisation: str, repository: str
) -> JsonResponse:
    """The repository's environments with their rules and what runs in each now."""
    Query(request, ()).done()
    target = access.repository(caller, organisation, repository, level=READ)
    rows = Environment.objects.filter(repository=target).prefetch_related("reviewers")
    return JsonResponse(
        {"environments": [environment_dict(environment) for environment in rows.order_by("name")]}
    )


@endpoint("GET")
def environment_detail(
    request: HttpRequest, caller: Caller, organisation: str, repository: str, name: str
) -> JsonResponse:
    """One environment: its rules, what runs there, the deployment under way, the lock's holder
    and the jobs waiting at it (with their approvals)."""
    Query(request, ()).done()
    environment = _environment(caller, organisation, repository, name, level=READ)
    waiting = (
        EnvironmentGate.objects.filter(
            environment=environment, state=EnvironmentGate.PENDING, job__state=State.WAITING
        )
        .select_related("job__run__repository__organisation", "environment")
        .order_by("entered_at", "id")
    )
    active = (
        Deployment.objects.filter(environment=environment, state__in=service.ACTIVE)
        .select_related("environment__repository__organisation", "run")
        .order_by("id")
    )
    return JsonResponse(
        {
            "environment": environment_dict(environment),
            "active": [deployment_dict(deployment) for deployment in active],
            "waiting_jobs": [waiting_dict(gate) for gate in waiting[:MAX_WAITING_SHOWN]],
        }
    )


@endpoint("GET")
def environment_deployments(
    request: HttpRequest, caller: Caller, organisation: str, repository: str, name: str
) -> JsonResponse:
    """The environment's deployments, newest first, a page at a time (keyset on id)."""
    query = Query(request, ("after", "limit"))
    after = query.integer("after", default=None, minimum=1, maximum=MAX_ID)
    limit = query.integer("limit", default=DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE) or 1
    query.done()
    environment = _environment(caller, organisation, repository, name, level=READ)
    rows: QuerySet[Deployment] = Deployment.objects.filter(environment=environment).select_related(
        "environment__repository__organisation", "run"
    )
    if after is not None:
        rows = rows.filter(id__lt=after)
    page = list(rows.order_by("-id")[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return JsonResponse(
        {
            "deployments": [deployment_dict(deployment) for deployment in page],
            "next": page[-1].id if more else None,
        }
    )


@endpoint("POST")
def rollback(
    request: HttpRequest, caller: Caller, organisation: str, repository: str, name: str
) -> JsonResponse:
    """`{"skip_analysis": false}`: redeploy the previous successful version, now (202)."""
    environment = _environment(caller, organisation, repository, name, level=WRITE)
    body = json_body(request)
    fields = unknown_fields(body, ("skip_analysis",))
    skip_analysis = body.get("skip_analysis", False)
    if not isinstance(skip_analysis, bool):
        fields["skip_analysis"] = "must be true or false"
    refuse_fields(fields)
    try:
        deployment = service.request_rollback(
            environment,
            caller.user,
            skip_analysis=skip_analysis,
            remote_address=request.META.get("REMOTE_ADDR", ""),
            via=caller.via,
        )
    except service.RollbackRefused as refused:
        raise ApiError(409, str(refused)) from None
    return JsonResponse({"deployment": deployment_dict(deployment)}, status=202)


@endpoint("GET")
def deployment_detail(request: HttpRequest, caller: Caller, deployment_id: int) -> JsonResponse:
    """A deployment with its steps and timings, traffic split, approvals, outcome and log."""
    Query(request, ()).done()
    found = (
        Deployment.objects.select_related("environment__repository__organisation", "run")
        .filter(id=deployment_id)
        .first()
        if valid_id(deployment_id)
        else None
    )
    if found is None or not permissions.can_read(caller.user, found.environment.repository):
        raise not_found(f"deployment {deployment_id}")
    steps = DeploymentStep.objects.filter(deployment=found).order_by("index")
    return JsonResponse(
        {
            "deployment": deployment_dict(found),
            "request": request_dict(found.request),
            "approvals": found.approvals or [],
            "steps": [step_dict(step) for step in steps],
            "log": found.log,
        }
    )


def _environment(
    caller: Caller, organisation: str, repository: str, name: str, *, level: str
) -> Environment:
    target = access.repository(caller, organisation, repository, level=level)
    found = (
        Environment.objects.select_related("repository__organisation")
        .filter(repository=target, name=name[: gates.MAX_NAME_LENGTH])
        .first()
        if "\x00" not in name
        else None
    )
    if found is None:
        raise not_found(f"environment {name[:200]!r} in {target.full_name}")
    return found


# ---------------------------------------------------------------------------------- as JSON


def environment_dict(environment: Environment) -> dict[str, Any]:
    current = service.current_deployment(environment)
    holder = service.lock_holder(environment)
    waiting = EnvironmentGate.objects.filter(
        environment=environment, state=EnvironmentGate.PENDING, job__state=State.WAITING
    ).count()
    return {
        "name": environment.name,
        "repository": environment.repository.full_name,
        "url": environment.url,
        "rules": rules_dict(environment),
        "current": deployment_dict(current) if current is not None else None,
        "lock": (
            {"deployment": holder.id, "expires_at": iso(environment.lock_expires_at)}
            if holder is not None
            else None
        ),
        "waiting": waiting,
        "created_at": iso(environment.created_at),
    }


def rules_dict(environment: Environment) -> dict[str, Any]:
    return {
        "required_approvals": environment.required_approvals,
        "reviewers": sorted(user.get_username() for user in environment.reviewers.all()),
        "reviewer_role": environment.reviewer_role or None,
        "prevent_self_review": environment.prevent_self_review,
        "allowed_refs": [str(pattern) for pattern in environment.allowed_refs or []],
        "wait_timer_minutes": environment.wait_timer_minutes,
    }


def deployment_dict(deployment: Deployment) -> dict[str, Any]:
    run = deployment.run if deployment.run_id is not None else None
    return {
        "id": deployment.id,
        "environment": deployment.environment.name,
        "repository": deployment.environment.repository.full_name,
        "state": deployment.state,
        "strategy": deployment.strategy,
        "image": deployment.image,
        "image_digest": deployment.image_digest,
        "sha": deployment.sha,
        "ref": deployment.ref,
        "run": deployment.run_id,
        "run_number": run.number if run is not None else None,
        "job": deployment.job_id,
        "triggered_by": deployment.triggered_by,
        "rollback_of": deployment.rollback_of_id,
        "skip_analysis": deployment.skip_analysis,
        "reason": deployment.reason,
        "traffic": deployment.traffic or {},
        "created_at": iso(deployment.created_at),
        "started_at": iso(deployment.started_at),
        "finished_at": iso(deployment.finished_at),
        "duration_seconds": duration_seconds(deployment.started_at, deployment.finished_at),
    }


def step_dict(step: DeploymentStep) -> dict[str, Any]:
    return {
        "index": step.index,
        "name": step.name,
        "outcome": step.outcome,
        "detail": step.detail or {},
        "started_at": iso(step.started_at),
        "finished_at": iso(step.finished_at),
        "duration_seconds": duration_seconds(step.started_at, step.finished_at),
    }


def request_dict(stored: dict[str, Any]) -> dict[str, Any]:
    """The deployment's inputs; the containers' environment values are hidden (they may be
    secrets)."""
    shown = dict(stored or {})
    shown.pop("env_sealed", None)
    if isinstance(shown.get("env"), dict):
        shown["env"] = {name: HIDDEN for name in shown["env"]}
    return shown


def approval_dict(approval: Approval) -> dict[str, Any]:
    return {
        "reviewer": approval.reviewer.get_username(),
        "decision": approval.decision,
        "comment": approval.comment,
        "at": iso(approval.at),
    }


def gate_dict(gate: EnvironmentGate) -> dict[str, Any]:
    return {
        "environment": gate.environment.name,
        "state": gate.state,
        "url": gate.url,
        "entered_at": iso(gate.entered_at),
        "wait_until": iso(gates.wait_until(gate)),
        "decided_at": iso(gate.decided_at),
        "reason": gate.reason,
        "approvals": [
            approval_dict(approval)
            for approval in gate.approvals.select_related("reviewer").order_by("id")
        ],
    }


def waiting_dict(gate: EnvironmentGate) -> dict[str, Any]:
    run = gate.job.run
    return {
        "job": job_dict(gate.job),
        "run_number": run.number,
        "ref": run.ref,
        "sha": run.sha,
        "actor": run.actor,
        "gate": gate_dict(gate),
    }
