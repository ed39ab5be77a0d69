"""The web pages: run lists, a run with its job graph, a job with its live log, manual runs
and status badges (the approvals and environment pages are `deployments.views`).

Access goes through `repository_for` on every page: a private repository the user cannot read
answers 404 (it does not exist for them), a read-only user asking to change something 403.
Live updates come from the WebSocket `/ws/live/` (run and job pages) and, for run lists, from
polling `run_states` every few seconds: a list shows up to a page of runs from many
repositories, and one small JSON request for all of them is cheaper than as many subscriptions.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.core.handlers.asgi import ASGIRequest
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.db.models.fields.json import KT
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    HttpResponseBase,
    HttpResponseNotModified,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from pipelines import WorkflowError, parse_workflow
from pipelines.model import Workflow
from pipelines.triggers import BRANCH_PREFIX, TAG_PREFIX, DispatchInput
from runs import control, permissions
from runs.artifacts import artifacts_of, zip_response
from runs.badges import badge_for
from runs.graph import GROUP_STATE_ORDER, job_graph
from runs.markdown import render as render_markdown
from runs.mirror import GIT_TIMEOUT_SECONDS, MirrorError, fetch, workflow_files
from runs.models import AuditEntry, Job, LogChunk, Repository, Run, Step
from runs.retention import logs_removed_note
from runs.states import FINAL_STATES, State, worst
from runs.triggering import DispatchError, dispatch, resolve_ref

PAGE_SIZE = 50
MAX_POLLED_RUNS = 100
MAX_FILTER_CHARS = 500
MAX_BRANCHES_LISTED = 500
LOG_CHUNKS_PER_QUERY = 20
LIVE_SOCKET_PATH = "/ws/live/"
KNOWN_EVENTS = ("push", "pull_request", "workflow_dispatch", "schedule")


# ------------------------------------------------------------------------------------ access


def repository_for(
    request: HttpRequest,
    organisation: str,
    repository: str,
    *,
    level: str = permissions.READ,
    action: str = "",
) -> Repository:
    """The repository, if the user may act on it at `level`: 404 if they cannot even read it
    (a private repository does not exist for them), 403 if they may read but not do this.
    A refused `action` (e.g. "run.cancel") asked for with POST is written to the audit log."""
    found = (
        Repository.objects.select_related("organisation")
        .filter(organisation__slug=organisation, slug=repository)
        .first()
    )
    if found is None or not permissions.can_read(request.user, found):
        raise Http404("no such repository")
    if level != permissions.READ and not permissions.allows(request.user, found, level):
        if action and request.method == "POST":
            _audit(request, f"{action}.denied", found, {"path": request.path[:500]})
        raise PermissionDenied(f"this needs the {level} role on {found.full_name}")
    return found


def run_for(repository: Repository, number: int) -> Run:
    run = Run.objects.filter(repository=repository, number=number).first()
    if run is None:
        raise Http404("no such run")
    run.repository = repository
    return run


def job_for(run: Run, job_id: int) -> Job:
    job = Job.objects.filter(run=run, id=job_id).first()
    if job is None:
        raise Http404("no such job")
    job.run = run
    return job


def _audit(request: HttpRequest, action: str, repository: Repository, detail: dict) -> None:
    AuditEntry.objects.create(
        action=action,
        repository=repository,
        actor=request.user.get_username() if request.user.is_authenticated else "",
        remote_address=request.META.get("REMOTE_ADDR", ""),
        detail=detail,
    )


# ---------------------------------------------------------------------------------- display


def duration_text(start: datetime | None, end: datetime | None, now: datetime) -> str:
    if start is None:
        return ""
    seconds = max(0, int(((end or now) - start).total_seconds()))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"


def ref_name(ref: str) -> str:
    for prefix in (BRANCH_PREFIX, TAG_PREFIX):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _count(text: str) -> int | None:
    """`text` as a whole number that fits a database id, or None. ASCII digits only: "²" is a
    digit to str.isdigit, but not to int()."""
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        return None
    return int(text)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def run_url(run: Run) -> str:
    repository = run.repository
    return reverse("run", args=[repository.organisation.slug, repository.slug, run.number])


def job_url(run: Run, job_id: int) -> str:
    repository = run.repository
    return reverse("job", args=[repository.organisation.slug, repository.slug, run.number, job_id])


# -------------------------------------------------------------------------------------- home


def repositories_with_latest_run(user: Any) -> QuerySet[Repository]:
    """The repositories the user may read, each with its latest run's number and state."""
    latest = Run.objects.filter(repository=OuterRef("pk")).order_by("-number")
    return (
        permissions.visible_repositories(user)
        .annotate(
            latest_number=Subquery(latest.values("number")[:1]),
            latest_state=Subquery(latest.values("state")[:1]),
            latest_created_at=Subquery(latest.values("created_at")[:1]),
        )
        .order_by("organisation__slug", "slug")
    )


# --------------------------------------------------------------------------------- run lists


@dataclass
class RunFilters:
    """The filters and cursor of a run list, from the query string."""

    status: str = ""
    branch: str = ""
    workflow: str = ""
    event: str = ""
    after: int | None = None
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, query: Any) -> RunFilters:
        found = cls(
            status=query.get("status", "").strip(),
            branch=query.get("branch", "").strip(),
            workflow=query.get("workflow", "").strip(),
            event=query.get("event", "").strip(),
        )
        for name in ("status", "branch", "workflow", "event"):
            if len(getattr(found, name)) > MAX_FILTER_CHARS:
                found.problems.append(f"{name} is longer than {MAX_FILTER_CHARS} characters")
                setattr(found, name, "")
        if found.status and found.status not in State.values:
            found.problems.append(
                f"unknown status {found.status!r}; use one of {', '.join(State.values)}"
            )
            found.status = ""
        after = query.get("after", "").strip()
        if after:
            if (number := _count(after)) is not None and number > 0:
                found.after = number
            else:
                found.problems.append(f"'after' must be a run id; got {after[:40]!r}")
        return found

    def apply(self, runs: QuerySet[Run]) -> QuerySet[Run]:
        if self.status:
            runs = runs.filter(state=self.status)
        if self.branch:
            runs = runs.filter(ref__in=[self.branch, BRANCH_PREFIX + self.branch])
        if self.workflow:
            runs = runs.filter(Q(workflow_path=self.workflow) | Q(workflow_name=self.workflow))
        if self.event:
            runs = runs.filter(event=self.event)
        return runs

    def query(self, **changes: Any) -> str:
        """The query string of these filters, with `changes` (None drops a key)."""
        values = {
            "status": self.status,
            "branch": self.branch,
            "workflow": self.workflow,
            "event": self.event,
        } | changes
        return urlencode({key: value for key, value in values.items() if value})

    @property
    def active(self) -> bool:
        return bool(self.status or self.branch or self.workflow or self.event)


def _listed(runs: QuerySet[Run]) -> QuerySet[Run]:
    # The commit message is read from inside the payload by the database: payloads of pushes
    # with many commits are large, and a page only needs one line of one of them.
    return (
        runs.select_related("repository__organisation")
        .defer("workflow_source", "event_payload", "inputs")
        .annotate(commit_message=KT("event_payload__head_commit__message"))
    )


def _decorate(runs: Iterable[Run]) -> list[Run]:
    now = timezone.now()
    shown = []
    for run in runs:
        run.url = run_url(run)
        run.ref_name = ref_name(run.ref)
        run.short_sha = run.sha[:7]
        message = getattr(run, "commit_message", None) or ""
        run.message_line = message.strip().splitlines()[0] if message.strip() else ""
        run.duration = duration_text(run.started_at, run.finished_at, now)
        run.is_final = run.state in FINAL_STATES
        shown.append(run)
    return shown


def _run_list_page(
    request: HttpRequest, runs: QuerySet[Run], *, repository: Repository | None
) -> HttpResponse:
    filters = RunFilters.parse(request.GET)
    runs = filters.apply(runs)
    if repository is not None:
        # In one repository numbers grow with ids (both are handed out under the repository's
        # row lock), so the page walks the (repository, -number) index: fast however many runs.
        runs = runs.order_by("-number")
        if filters.after is not None:
            cursor = (
                Run.objects.filter(id=filters.after, repository=repository)
                .values_list("number", flat=True)
                .first()
            )
            if cursor is None:
                filters.problems.append(f"run {filters.after} is not in {repository.full_name}")
            else:
                runs = runs.filter(number__lt=cursor)
    else:
        runs = runs.order_by("-id")
        if filters.after is not None:
            runs = runs.filter(id__lt=filters.after)
    page: list[Run] = []
    if not filters.problems:
        page = _decorate(_listed(runs)[: PAGE_SIZE + 1])
    has_more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    context = {
        "repository": repository,
        "runs": page,
        "filters": filters,
        "states": State.values,
        "events": sorted({*KNOWN_EVENTS, *([filters.event] if filters.event else [])}),
        "next_query": filters.query(after=page[-1].id) if has_more else None,
        "first_query": filters.query() if filters.after else None,
        "can_write": repository is not None and permissions.can_write(request.user, repository),
        "poll_url": reverse("run-states"),
    }
    return render(request, "runs/run_list.html", context, status=400 if filters.problems else 200)


@require_GET
def repository_runs(request: HttpRequest, organisation: str, repository: str) -> HttpResponse:
    found = repository_for(request, organisation, repository)
    return _run_list_page(request, Run.objects.filter(repository=found), repository=found)


@require_GET
def all_runs(request: HttpRequest) -> HttpResponse:
    runs = Run.objects.all()
    if not (request.user.is_authenticated and request.user.is_active and request.user.is_superuser):
        visible = permissions.visible_repositories(request.user).values("id")
        runs = runs.filter(repository_id__in=visible)
    return _run_list_page(request, runs, repository=None)


@require_GET
def run_states(request: HttpRequest) -> JsonResponse:
    """The state of the listed runs, for the lists' live rows: `?ids=1,2,3`. Runs the user
    cannot read are left out, as if they did not exist."""
    ids: list[int] = []
    for part in request.GET.get("ids", "").split(",")[:MAX_POLLED_RUNS]:
        if (number := _count(part.strip())) is not None:
            ids.append(number)
    visible = permissions.visible_repositories(request.user).values("id")
    runs = Run.objects.filter(id__in=ids, repository_id__in=visible).only(
        "id", "state", "started_at", "finished_at"
    )
    now = timezone.now()
    return JsonResponse(
        {
            "runs": [
                {
                    "id": run.id,
                    "state": run.state,
                    "final": run.state in FINAL_STATES,
                    "started_at": _iso(run.started_at),
                    "finished_at": _iso(run.finished_at),
                    "duration": duration_text(run.started_at, run.finished_at, now),
                }
                for run in runs
            ]
        }
    )


# ---------------------------------------------------------------------------------- run page


@dataclass
class AttemptSummary:
    number: int
    state: str
    jobs: int
    url: str


def _attempts(run: Run) -> list[AttemptSummary]:
    states: dict[int, list[str]] = defaultdict(list)
    for attempt, state in Job.objects.filter(run=run).values_list("attempt", "state"):
        states[attempt].append(state)
    summaries = []
    for number in range(1, run.attempt + 1):
        if number == run.attempt:
            state = run.state
        else:
            ended = [state for state in states[number] if state in FINAL_STATES]
            state = worst(ended) if ended else State.CANCELLED
        url = run_url(run) + (f"?attempt={number}" if number != run.attempt else "")
        summaries.append(AttemptSummary(number, state, len(states[number]), url))
    return summaries


def _attempt_param(request: HttpRequest, run: Run) -> int:
    raw = request.GET.get("attempt", "").strip()
    if not raw:
        return run.attempt
    number = _count(raw)
    if number is None or not 1 <= number <= run.attempt:
        raise Http404(f"run #{run.number} has no attempt {raw[:20]!r}")
    return number


@require_GET
def run_detail(
    request: HttpRequest, organisation: str, repository: str, number: int
) -> HttpResponse:
    from deployments.views import run_gate_panels  # deployments builds on runs, as for jobs

    found = repository_for(request, organisation, repository)
    run = run_for(found, number)
    attempt = _attempt_param(request, run)
    jobs = list(Job.objects.filter(run=run, attempt=attempt).order_by("id"))
    now = timezone.now()
    for job in jobs:
        job.url = job_url(run, job.id)
        job.duration = duration_text(job.started_at, job.finished_at, now)
    summaries = []
    steps = Step.objects.filter(job__in=jobs).exclude(summary="").order_by("job_id", "index")
    by_id = {job.id: job for job in jobs}
    for step in steps:
        summaries.append(
            {"job": by_id[step.job_id], "step": step, "html": render_markdown(step.summary)}
        )
    can_write = permissions.can_write(request.user, found)
    latest = attempt == run.attempt
    attempts = _attempts(run)
    context = {
        "repository": found,
        "run": run,
        "run_ref_name": ref_name(run.ref),
        "run_duration": duration_text(run.started_at, run.finished_at, now),
        "commit_message": _commit_message(run),
        "attempt": attempt,
        "is_latest_attempt": latest,
        "attempts": attempts,
        "shown_state": attempts[attempt - 1].state,
        "jobs": jobs,
        "graph": job_graph(run, jobs, lambda job: job.url),
        "summaries": summaries,
        "gates": run_gate_panels(request, jobs),
        "artifacts": _artifact_rows(run, attempt, now),
        "can_cancel": can_write and run.state not in FINAL_STATES,
        "can_rerun": can_write and run.state in FINAL_STATES,
        "can_rerun_failed": can_write
        and run.state in FINAL_STATES
        and (
            Job.objects.filter(run=run, attempt=run.attempt).exclude(state=State.SUCCESS).exists()
        ),
        "live_config": {
            "socket": LIVE_SOCKET_PATH,
            "run": run.id,
            "attempt": attempt,
            "isLatest": latest,
            "groupStateOrder": list(GROUP_STATE_ORDER),
        },
    }
    return render(request, "runs/run_detail.html", context)


def _artifact_rows(run: Run, attempt: int, now: datetime) -> list[dict[str, Any]]:
    rows = []
    for artifact in artifacts_of(run, attempt):
        expired = artifact.expires_at <= now
        url = reverse(
            "run-artifact",
            args=[run.repository.organisation.slug, run.repository.slug, run.number, artifact.name],
        )
        if attempt != run.attempt:
            url += f"?attempt={attempt}"
        rows.append({"artifact": artifact, "expired": expired, "url": None if expired else url})
    return rows


@require_GET
def run_artifact(
    request: HttpRequest, organisation: str, repository: str, number: int, name: str
) -> StreamingHttpResponse:
    """An artifact of the run (of its latest attempt, or `?attempt=N`) as a zip."""
    found = repository_for(request, organisation, repository)
    run = run_for(found, number)
    attempt = _attempt_param(request, run)
    artifact = next((a for a in artifacts_of(run, attempt) if a.name == name), None)
    if artifact is None or artifact.expires_at <= timezone.now():
        raise Http404("no such artifact, or it has expired")
    return zip_response(artifact, request)


def _commit_message(run: Run) -> str:
    head = run.event_payload.get("head_commit") if isinstance(run.event_payload, dict) else None
    message = head.get("message") if isinstance(head, dict) else None
    if not isinstance(message, str) or not message.strip():
        return ""
    return message.strip().splitlines()[0]


# ------------------------------------------------------------------------- cancel and re-run


def _control_target(
    request: HttpRequest, organisation: str, repository: str, number: int, *, action: str
) -> tuple[Repository, Run]:
    found = repository_for(
        request, organisation, repository, level=permissions.WRITE, action=action
    )
    return found, run_for(found, number)


@require_POST
def run_cancel(
    request: HttpRequest, organisation: str, repository: str, number: int
) -> HttpResponse:
    found, run = _control_target(request, organisation, repository, number, action="run.cancel")
    actor = request.user.get_username()
    if control.cancel_run(run.id, reason="cancelled from the web page", actor=actor):
        _audit(request, "run.cancel", found, {"run": run.id, "number": run.number})
        messages.success(request, f"Run #{run.number} is being cancelled.")
    else:
        messages.info(request, f"Run #{run.number} had already ended.")
    return redirect(run_url(run))


@require_POST
def run_rerun(
    request: HttpRequest, organisation: str, repository: str, number: int
) -> HttpResponse:
    return _rerun(request, organisation, repository, number, failed_only=False)


@require_POST
def run_rerun_failed(
    request: HttpRequest, organisation: str, repository: str, number: int
) -> HttpResponse:
    return _rerun(request, organisation, repository, number, failed_only=True)


def _rerun(
    request: HttpRequest, organisation: str, repository: str, number: int, *, failed_only: bool
) -> HttpResponse:
    action = "run.rerun_failed" if failed_only else "run.rerun"
    found, run = _control_target(request, organisation, repository, number, action=action)
    try:
        rerun = control.rerun(run.id, failed_only=failed_only, actor=request.user.get_username())
    except control.NotRerunnable as error:
        messages.error(request, str(error))
        return redirect(run_url(run))
    _audit(request, action, found, {"run": run.id, "number": run.number, "attempt": rerun.attempt})
    what = "failed jobs of run" if failed_only else "run"
    messages.success(request, f"Re-running the {what} #{run.number} (attempt {rerun.attempt}).")
    return redirect(run_url(run))


# ---------------------------------------------------------------------------------- job page


@require_GET
def job_detail(
    request: HttpRequest, organisation: str, repository: str, number: int, job_id: int
) -> HttpResponse:
    # deployments builds on runs (its views use these helpers): imported here, not at the top.
    from deployments.views import gate_panel

    found = repository_for(request, organisation, repository)
    run = run_for(found, number)
    job = job_for(run, job_id)
    now = timezone.now()
    steps = list(job.steps.all())
    for step in steps:
        step.duration = duration_text(step.started_at, step.finished_at, now)
    siblings = list(
        Job.objects.filter(run=run, attempt=job.attempt)
        .order_by("id")
        .only("id", "name", "state", "workflow_job_id")
    )
    for sibling in siblings:
        sibling.url = job_url(run, sibling.id)
    context = {
        "repository": found,
        "run": run,
        "job": job,
        "job_duration": duration_text(job.started_at, job.finished_at, now),
        "steps": steps,
        "siblings": siblings,
        "run_url": run_url(run) + (f"?attempt={job.attempt}" if job.attempt != run.attempt else ""),
        "log_url": reverse(
            "job-log", args=[found.organisation.slug, found.slug, run.number, job.id]
        ),
        "live_config": {"job": job.id, "run": run.id, "socket": LIVE_SOCKET_PATH},
        "logs_removed": logs_removed_note(run, job),
        "gate": gate_panel(request, job),
    }
    return render(request, "runs/job_detail.html", context)


@require_GET
def job_log(
    request: HttpRequest, organisation: str, repository: str, number: int, job_id: int
) -> HttpResponseBase:
    """The job's whole log as text, one line per line (ANSI colours kept), streamed: a log can
    be far larger than what a worker should hold in memory."""
    found = repository_for(request, organisation, repository)
    run = run_for(found, number)
    job = job_for(run, job_id)
    # Under ASGI a synchronous iterator would be read whole into memory before the first byte
    # is sent; each server gets the kind it streams.
    streamed = isinstance(request, ASGIRequest)
    content = _log_text_async(job.id) if streamed else _log_text(job.id)
    removed = logs_removed_note(run, job)
    response: HttpResponseBase = (
        HttpResponse(removed + "\n", content_type="text/plain; charset=utf-8")
        if removed is not None
        else StreamingHttpResponse(content, content_type="text/plain; charset=utf-8")
    )
    filename = f"{found.organisation.slug}-{found.slug}-run{run.number}-job{job.id}.log"
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-cache"
    return response


def _chunk_page(job_id: int, after: int) -> list[tuple[int, str]]:
    return list(
        LogChunk.objects.filter(job_id=job_id, sequence__gt=after)
        .order_by("sequence")
        .values_list("sequence", "text")[:LOG_CHUNKS_PER_QUERY]
    )


def _log_text(job_id: int) -> Iterator[str]:
    after = -1
    while page := _chunk_page(job_id, after):
        for sequence, text in page:
            after = sequence
            yield _chunk_as_text(text)


async def _log_text_async(job_id: int) -> AsyncIterator[str]:
    after = -1
    while page := await sync_to_async(_chunk_page)(job_id, after):
        for sequence, text in page:
            after = sequence
            yield _chunk_as_text(text)


def _chunk_as_text(text: str) -> str:
    lines = []
    for raw in text.split("\n"):
        if not raw:
            continue
        try:
            line = json.loads(raw)
            lines.append(str(line[2]))
        except (ValueError, IndexError, TypeError, KeyError):
            lines.append(raw)  # never lose a line because it is not in the expected shape
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------------- manual run


@dataclass
class DispatchForm:
    """What the manual-run form shows: the dispatchable workflows at a ref and their inputs."""

    ref: str
    workflows: dict[str, Workflow] = field(default_factory=dict)
    branches: list[str] = field(default_factory=list)
    broken: list[str] = field(default_factory=list)
    problem: str = ""


def _dispatch_form(repository: Repository, ref: str) -> DispatchForm:
    form = DispatchForm(ref=ref)
    try:
        mirror = fetch(repository)
    except MirrorError as error:
        form.problem = f"The repository cannot be read: {error}"
        return form
    form.branches = _branches(mirror)
    sha = resolve_ref(mirror, ref)
    if sha is None:
        form.problem = f"{ref!r} is not a branch, tag or commit of {repository.full_name}."
        return form
    try:
        files = workflow_files(mirror, sha)
    except MirrorError as error:
        form.problem = f"The workflow files cannot be read: {error}"
        return form
    for path, source in files.items():
        try:
            workflow = parse_workflow(
                source,
                path,
                matrix_cap=settings.CICD_MATRIX_CAP,
                max_bytes=settings.CICD_WORKFLOW_MAX_BYTES,
            )
        except WorkflowError:
            form.broken.append(path)
            continue
        if workflow.triggers.workflow_dispatch is not None:
            form.workflows[path] = workflow
    return form


def _branches(mirror: Path) -> list[str]:
    try:
        result = subprocess.run(
            [
                "git", "-C", str(mirror), "for-each-ref", f"--count={MAX_BRANCHES_LISTED}",
                "--sort=-committerdate", "--format=%(refname:strip=2)", "refs/heads",
            ],
            capture_output=True, text=True, timeout=GIT_TIMEOUT_SECONDS,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return []
    return result.stdout.split() if result.returncode == 0 else []


def _input_fields(
    declared: tuple[DispatchInput, ...], given: dict[str, str] | None
) -> list[dict[str, Any]]:
    fields = []
    for spec in declared:
        if given is not None and spec.name in given:
            value = given[spec.name]
        elif spec.default is None:
            value = ""
        elif isinstance(spec.default, bool):
            value = "true" if spec.default else "false"
        else:
            value = str(spec.default)
        fields.append(
            {
                "name": spec.name,
                "field": f"input:{spec.name}",
                "type": spec.type,
                "description": spec.description,
                "required": spec.required,
                "options": spec.options,
                "value": value,
                "checked": value.strip().lower() == "true",
            }
        )
    return fields


def _posted_inputs(request: HttpRequest) -> dict[str, str]:
    # A checkbox sends nothing when unticked; the form puts a hidden "false" before each one,
    # so the last value sent for a name is the one that counts.
    return {
        key.removeprefix("input:"): request.POST.getlist(key)[-1]
        for key in request.POST
        if key.startswith("input:")
    }


@require_http_methods(["GET", "POST"])
def dispatch_run(request: HttpRequest, organisation: str, repository: str) -> HttpResponse:
    found = repository_for(
        request, organisation, repository, level=permissions.WRITE, action="run.dispatch"
    )
    source = request.POST if request.method == "POST" else request.GET
    ref = source.get("ref", "").strip()[:255] or found.default_branch
    chosen = source.get("workflow", "").strip()[:500]
    given: dict[str, str] | None = None
    problems: list[str] = []
    if request.method == "POST":
        given = _posted_inputs(request)
        try:
            run = dispatch(
                found,
                workflow_path=chosen,
                ref=ref,
                inputs=given,
                actor=request.user.get_username(),
                request_id=(source.get("request_id") or "")[:100] or None,
            )
        except DispatchError as error:
            problems = list(error.problems)
        else:
            _audit(
                request,
                "run.dispatch",
                found,
                {"run": run.id, "workflow": run.workflow_path, "ref": run.ref},
            )
            messages.success(request, f"Started run #{run.number}.")
            return redirect(run_url(run))
    form = _dispatch_form(found, ref)
    if chosen not in form.workflows:
        if chosen and request.method == "GET":
            problems.append(f"{chosen!r} is not a workflow with workflow_dispatch at {ref}")
        chosen = next(iter(form.workflows), "")
    workflow = form.workflows.get(chosen)
    declared = workflow.triggers.workflow_dispatch if workflow else None
    context = {
        "repository": found,
        "form": form,
        "ref": ref,
        "chosen": chosen,
        "workflow": workflow,
        "fields": _input_fields(declared or (), given),
        "problems": problems,
        "request_id": uuid.uuid4().hex,
    }
    status = 400 if problems else 200
    return render(request, "runs/dispatch.html", context, status=status)


# ------------------------------------------------------------------------------------ badge


@require_GET
def badge(request: HttpRequest, organisation: str, repository: str) -> HttpResponse:
    found = repository_for(request, organisation, repository)
    shown = badge_for(
        found,
        branch=request.GET.get("branch", "").strip()[:255],
        workflow=request.GET.get("workflow", "").strip()[:500],
    )
    etag = shown.etag()
    cache_control = "no-cache" if found.is_public else "no-cache, private"
    if _matches(request.headers.get("If-None-Match", ""), etag):
        response: HttpResponse = HttpResponseNotModified()
    else:
        response = HttpResponse(shown.svg(), content_type="image/svg+xml; charset=utf-8")
        # Opened on its own, the SVG is a document: it may draw, never run or load anything.
        response["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response["ETag"] = etag
    response["Cache-Control"] = cache_control
    return response


def _matches(if_none_match: str, etag: str) -> bool:
    """Whether the client's copy is current (weak comparison, as RFC 9110 asks for GET)."""
    tags = {part.strip().removeprefix("W/") for part in if_none_match.split(",")}
    return "*" in tags or etag in tags
