"""The JSON API's endpoints, under /api/v1/ (described in `runs.openapi`, served as
/api/v1/openapi.json).

Reads need the `read` scope (or a session, or nothing for public repositories); changes need
the `write` scope and the write role on the repository. Changes go through `runs.control` and
`runs.triggering`, like the pages' buttons, and each one leaves an AuditEntry.
"""

from __future__ import annotations

from typing import Any

from django.core.handlers.asgi import ASGIRequest
from django.db.models import Q, QuerySet, Subquery
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse

from runs import control, permissions
from runs.api import access, logs
from runs.api.auth import SCOPES, Caller
from runs.api.http import (
    MAX_ID,
    ApiError,
    Query,
    endpoint,
    error_response,
    json_body,
    refuse_fields,
    unknown_fields,
)
from runs.api.serialise import artifact_dict, job_dict, run_dict, step_dict
from runs.artifacts import artifacts_of, is_expired, zip_response
from runs.models import AuditEntry, Job, Repository, Run, Step
from runs.retention import logs_removed_note
from runs.states import FINAL_STATES, State
from runs.triggering import DispatchError, dispatch

READ, WRITE, ADMIN = permissions.READ, permissions.WRITE, permissions.ADMIN
DEFAULT_PAGE = 30
MAX_PAGE = 100
DEFAULT_LOG_LINES = 1000
MAX_LOG_LINES = 5000
MAX_LOG_OFFSET = 2**62  # offset + limit stays a bigint
RUN_FILTERS = ("status", "branch", "workflow", "event", "after", "limit")


# ------------------------------------------------------------------------------------ runs


@endpoint("GET")
def runs(request: HttpRequest, caller: Caller) -> JsonResponse:
    """Runs of every repository the caller may read (or of `?repository=org/repo`), newest
    first, a page at a time."""
    query = Query(request, ("repository", *RUN_FILTERS))
    full_name = query.text("repository")
    filters = _run_filters(query)
    query.done()
    target = access.repository_by_name(caller, full_name, level=READ) if full_name else None
    return JsonResponse(_run_page(caller, target, **filters))


@endpoint("GET")
def repository_runs(
    request: HttpRequest, caller: Caller, organisation: str, repository: str
) -> JsonResponse:
    query = Query(request, RUN_FILTERS)
    filters = _run_filters(query)
    query.done()
    target = access.repository(caller, organisation, repository, level=READ)
    return JsonResponse(_run_page(caller, target, **filters))


def _run_filters(query: Query) -> dict[str, Any]:
    return {
        "status": query.choice("status", State.values),
        "branch": query.text("branch"),
        "workflow": query.text("workflow"),
        "event": query.text("event", max_length=50),
        "after": query.integer("after", default=None, minimum=1, maximum=MAX_ID),
        "limit": query.integer("limit", default=DEFAULT_PAGE, minimum=1, maximum=MAX_PAGE),
    }


def _run_page(
    caller: Caller,
    target: Repository | None,
    *,
    status: str | None,
    branch: str | None,
    workflow: str | None,
    event: str | None,
    after: int | None,
    limit: int,
) -> dict[str, Any]:
    """Keyset pagination: `after` is the id of the last run of the previous page. No OFFSET and
    no COUNT, so the thousandth page costs what the first does."""
    rows: QuerySet[Run] = Run.objects.select_related("repository__organisation").defer(
        "workflow_source", "event_payload"
    )
    if status:
        rows = rows.filter(state=status)
    if branch:
        rows = rows.filter(ref=branch if branch.startswith("refs/") else f"refs/heads/{branch}")
    if workflow:
        rows = rows.filter(Q(workflow_path=workflow) | Q(workflow_name=workflow))
    if event:
        rows = rows.filter(event=event)
    if target is not None:
        # Within a repository numbers grow with ids (both are handed out under the repository's
        # row lock), so the (repository, -number) index serves both the filter and the order.
        rows = rows.filter(repository=target)
        if after is not None:
            cursor = Run.objects.filter(id=after, repository=target).values("number")[:1]
            rows = rows.filter(number__lt=Subquery(cursor))
        rows = rows.order_by("-number")
    else:
        if not (caller.user.is_active and caller.user.is_superuser):
            visible = permissions.visible_repositories(caller.user).values("id")
            rows = rows.filter(repository__in=visible)
        if after is not None:
            rows = rows.filter(id__lt=after)
        rows = rows.order_by("-id")
    page = list(rows[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return {"runs": [run_dict(run) for run in page], "next": page[-1].id if more else None}


@endpoint("GET")
def run_detail(request: HttpRequest, caller: Caller, run_id: int) -> JsonResponse:
    """The run and the jobs of its latest attempt (or of `?attempt=N`)."""
    query = Query(request, ("attempt",))
    attempt = query.integer("attempt", default=None, minimum=1, maximum=MAX_ID)
    query.done()
    run = access.run(caller, run_id, level=READ)
    attempt = attempt or run.attempt
    if attempt > run.attempt:
        raise ApiError(404, f"run {run.id} has no attempt {attempt}; its latest is {run.attempt}")
    jobs = Job.objects.filter(run=run, attempt=attempt).order_by("id")
    return JsonResponse(
        {
            "run": run_dict(run),
            "attempt": attempt,
            "jobs": [job_dict(job) for job in jobs],
        }
    )


@endpoint("GET")
def run_artifacts(request: HttpRequest, caller: Caller, run_id: int) -> JsonResponse:
    """The run's artifacts, by name (for each name the one of the latest attempt)."""
    Query(request, ()).done()
    run = access.run(caller, run_id, level=READ)
    return JsonResponse({"artifacts": [artifact_dict(a) for a in artifacts_of(run)]})


@endpoint("GET")
def artifact_zip(request: HttpRequest, caller: Caller, artifact_id: int) -> HttpResponse:
    """The artifact's files as a zip, streamed; 410 once it has expired."""
    Query(request, ()).done()
    artifact = access.artifact(caller, artifact_id, level=READ)
    if is_expired(artifact):
        raise ApiError(410, f"artifact {artifact.id} ({artifact.name}) has expired")
    return zip_response(artifact, request)


@endpoint("POST")
def cancel_run(request: HttpRequest, caller: Caller, run_id: int) -> JsonResponse:
    run = access.run(caller, run_id, level=WRITE)
    refuse_fields(unknown_fields(json_body(request), ()))
    if run.state in FINAL_STATES or not control.cancel_run(
        run.id, reason="cancelled through the API", actor=caller.name
    ):
        raise ApiError(409, f"run {run.id} has already ended ({_state_of(run)})")
    _audit(request, caller, "run.cancel", run.repository, {"run": run.id})
    run.refresh_from_db()
    return JsonResponse({"run": run_dict(run)}, status=202)


@endpoint("POST")
def rerun(request: HttpRequest, caller: Caller, run_id: int) -> JsonResponse:
    """`{"failed_only": true}` re-runs only the jobs that did not succeed (and what needs them)."""
    run = access.run(caller, run_id, level=WRITE)
    body = json_body(request)
    fields = unknown_fields(body, ("failed_only",))
    failed_only = body.get("failed_only", False)
    if not isinstance(failed_only, bool):
        fields["failed_only"] = "must be true or false"
    refuse_fields(fields)
    return _rerun(request, caller, run, failed_only=failed_only)


@endpoint("POST")
def rerun_failed(request: HttpRequest, caller: Caller, run_id: int) -> JsonResponse:
    run = access.run(caller, run_id, level=WRITE)
    refuse_fields(unknown_fields(json_body(request), ()))
    return _rerun(request, caller, run, failed_only=True)


def _rerun(request: HttpRequest, caller: Caller, run: Run, *, failed_only: bool) -> JsonResponse:
    try:
        again = control.rerun(run.id, failed_only=failed_only, actor=caller.name)
    except control.NotRerunnable as error:
        raise ApiError(409, str(error)) from None
    except Run.DoesNotExist:
        raise ApiError(404, f"no run {run.id}") from None
    _audit(
        request,
        caller,
        "run.rerun",
        run.repository,
        {"run": run.id, "attempt": again.attempt, "failed_only": failed_only},
    )
    return JsonResponse({"run": run_dict(again)}, status=201)


# ------------------------------------------------------------------------------------ jobs


@endpoint("GET")
def job_detail(request: HttpRequest, caller: Caller, job_id: int) -> JsonResponse:
    Query(request, ()).done()
    job = access.job(caller, job_id, level=READ)
    steps = Step.objects.filter(job=job).order_by("index")
    return JsonResponse(
        {
            "job": job_dict(job),
            "run": run_dict(job.run),
            "steps": [step_dict(step) for step in steps],
        }
    )


@endpoint("GET")
def job_logs(request: HttpRequest, caller: Caller, job_id: int) -> JsonResponse:
    """A page of log lines from `offset` (0-based). `complete` turns true once the job has
    ended and the page reaches the last line: a follower stops there."""
    query = Query(request, ("offset", "limit"))
    offset = query.integer("offset", default=0, minimum=0, maximum=MAX_LOG_OFFSET)
    limit = query.integer("limit", default=DEFAULT_LOG_LINES, minimum=1, maximum=MAX_LOG_LINES)
    query.done()
    job = access.job(caller, job_id, level=READ)
    # The state is read before the lines: a job seen ended has flushed all of its lines, so
    # "complete" can never be claimed while a last chunk is still missing.
    page = logs.read_page(job.id, offset=offset, limit=limit)
    return JsonResponse(
        {
            "job": job.id,
            "state": job.state,
            "offset": page.offset,
            "lines": page.lines,
            "next_offset": page.next_offset,
            "complete": job.state in FINAL_STATES and page.next_offset >= page.total,
            "removed": logs_removed_note(job.run, job),
        }
    )


@endpoint("GET")
def job_logs_text(request: HttpRequest, caller: Caller, job_id: int) -> HttpResponse:
    """The whole log as plain text, streamed."""
    Query(request, ()).done()
    job = access.job(caller, job_id, level=READ)
    removed = logs_removed_note(job.run, job)
    if removed is not None:
        return HttpResponse(removed + "\n", content_type="text/plain; charset=utf-8")
    lines = (
        logs.raw_text_async(job.id) if isinstance(request, ASGIRequest) else logs.raw_text(job.id)
    )
    response = StreamingHttpResponse(lines, content_type="text/plain; charset=utf-8")
    response["Content-Disposition"] = f'inline; filename="job-{job.id}.log"'
    return response


@endpoint("POST")
def cancel_job(request: HttpRequest, caller: Caller, job_id: int) -> JsonResponse:
    job = access.job(caller, job_id, level=WRITE)
    refuse_fields(unknown_fields(json_body(request), ()))
    if job.state in FINAL_STATES:
        raise ApiError(409, f"job {job.id} has already ended ({job.state})")
    cancelled = control.cancel_job(job.id, reason="cancelled through the API", actor=caller.name)
    job.refresh_from_db()
    if not cancelled and not job.cancel_requested:
        raise ApiError(409, f"job {job.id} has already ended ({job.state})")
    _audit(request, caller, "job.cancel", job.run.repository, {"run": job.run_id, "job": job.id})
    return JsonResponse({"job": job_dict(job)}, status=202)


# Approving and rejecting a job waiting at an environment: `deployments.api`.


# ------------------------------------------------------------------------- dispatch, user


@endpoint("POST")
def dispatches(
    request: HttpRequest, caller: Caller, organisation: str, repository: str
) -> JsonResponse:
    """Start a workflow that has `on.workflow_dispatch`, with typed inputs:
    `{"workflow": path, "ref": "main", "inputs": {...}, "request_id": "optional"}`; the same
    request_id returns the run the first call started."""
    target = access.repository(caller, organisation, repository, level=WRITE)
    body = json_body(request)
    fields = unknown_fields(body, ("workflow", "ref", "inputs", "request_id"))
    if not isinstance(body.get("workflow"), str) or not body.get("workflow"):
        fields["workflow"] = "is required: the workflow file's path"
    for name in ("ref", "request_id"):
        if name in body and not (isinstance(body[name], str) and 0 < len(body[name]) <= 255):
            fields[name] = "must be a non-empty string of at most 255 characters"
    if "inputs" in body and not isinstance(body["inputs"], dict):
        fields["inputs"] = "must be an object of input names to values"
    refuse_fields(fields)
    try:
        run = dispatch(
            target,
            workflow_path=body["workflow"],
            ref=body.get("ref") or target.default_branch,
            inputs=body.get("inputs") or {},
            actor=caller.name,
            request_id=body.get("request_id"),
        )
    except DispatchError as error:
        status = 404 if error.not_found else 422
        raise ApiError(
            status, "the workflow cannot be dispatched", problems=error.problems
        ) from None
    _audit(
        request,
        caller,
        "run.dispatch",
        target,
        {"run": run.id, "workflow": run.workflow_path, "ref": run.ref},
    )
    return JsonResponse(run_dict(run), status=201)


@endpoint("GET")
def current_user(request: HttpRequest, caller: Caller) -> JsonResponse:
    """Who the token (or session) belongs to: `cicd login` checks a token with it."""
    Query(request, ()).done()
    if not caller.user.is_authenticated:
        raise ApiError(
            401,
            "not logged in: send an API token as 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": 'Bearer realm="cicd"'},
        )
    token = caller.token
    return JsonResponse(
        {
            "username": caller.name,
            "via": caller.via,
            "scopes": list(token.scopes) if token is not None else list(SCOPES),
            "token": {"name": token.name, "prefix": token.prefix} if token is not None else None,
        }
    )


def unknown_endpoint(request: HttpRequest, path: str = "") -> JsonResponse:
    """A JSON 404 for every path under /api/v1/ that names no endpoint."""
    hint = ""
    if path.endswith("/"):
        hint = f"; API paths have no trailing slash: /api/v1/{path.rstrip('/')[:200]}"
    return error_response(404, f"no such API endpoint{hint}")


def _audit(
    request: HttpRequest, caller: Caller, action: str, repository: Repository, detail: dict
) -> None:
    AuditEntry.objects.create(
        action=action,
        repository=repository,
        actor=caller.name,
        remote_address=request.META.get("REMOTE_ADDR", "")[:100],
        detail={**detail, "via": caller.via},
    )


def _state_of(run: Run) -> str:
    return Run.objects.filter(id=run.id).values_list("state", flat=True).first() or run.state
