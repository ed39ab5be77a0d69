"""The environment pages: a repository's environments; one environment with what runs there now,
the live progress of a deployment, its history and a one-action rollback; the approvals page,
and the approve / reject form of a job waiting at an environment (there and on the job page).

Access is the run pages' (`runs.views.repository_for`): a private repository the user cannot
read answers 404, and rolling back needs the write role. Who may review a waiting job is the
environment's rules' business (`deployments.gates`), asked on every page and POST.
A deployment in progress is followed by polling `environment_status` (static/js/environment.js):
one small JSON document a second while a deployment is queued or in progress, every few seconds
otherwise; a deployment's traffic changes a few times a minute, and a page showing one
environment does not need a subscription for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.db.models import Count, Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from deployments import gates, service
from deployments.models import Approval, Deployment, DeploymentStep, Environment, EnvironmentGate
from runners.deploy.request import short_image_id
from runs import permissions
from runs.models import Job, Repository, RepositoryRole
from runs.states import State
from runs.views import (
    _count,
    duration_text,
    job_for,
    job_url,
    ref_name,
    repository_for,
    run_for,
    run_url,
)

HISTORY_PAGE_SIZE = 30
MAX_WAITING_SHOWN = 200
MAX_COMMENT_CHARS = 4000
ACTIVE_STATES = (Deployment.QUEUED, Deployment.IN_PROGRESS)
ACTIVE_POLL_MS = 1000
IDLE_POLL_MS = 5000
# .traffic-colour-<n> in cicd.css: blue for the version being deployed, grey then others.
NEW_VERSION_COLOUR = 1
OTHER_VERSION_COLOURS = (0, 2, 4, 5, 3)
User = get_user_model()


# ------------------------------------------------------------------------------------ lookup


def environment_for(repository: Repository, name: str) -> Environment:
    environment = (
        Environment.objects.filter(repository=repository, name=name)
        .select_related("lock_deployment")
        .first()
    )
    if environment is None:
        raise Http404(f"{repository.full_name} has no environment {name[:100]!r}")
    environment.repository = repository
    return environment


def environment_url(environment: Environment, view: str = "environment") -> str:
    repository = environment.repository
    return reverse(view, args=[repository.organisation.slug, repository.slug, environment.name])


def _back(request: HttpRequest, default: str) -> str:
    """Where a form returns to: its `next` field when that is a page of this site."""
    target = request.POST.get("next", "")
    if target.startswith("/") and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return default


# -------------------------------------------------------------------------------- the rules


@dataclass
class Rules:
    """An environment's protection rules, as the pages say them."""

    reviewers: str
    refs: str
    wait: str
    self_review: str

    @property
    def none(self) -> bool:
        return not (self.reviewers or self.refs or self.wait)


def reviewer_count(environment: Environment) -> int:
    """How many users may review (M in "N of M"), as `gates.is_reviewer` decides: the listed
    reviewers and the holders of the reviewer role or a higher one; when neither is set, the
    repository's admins (organisation admins hold admin on every repository)."""
    listed = list(environment.reviewers.all())
    roles = []
    if environment.reviewer_role:
        roles = permissions.roles_at_least(environment.reviewer_role)
    elif not listed:
        roles = [RepositoryRole.ADMIN]
    candidates = {user.id: user for user in listed}
    if roles:
        holders = User.objects.filter(
            Q(repository_roles__repository_id=environment.repository_id)
            & Q(repository_roles__role__in=roles)
            | Q(
                memberships__organisation_id=environment.repository.organisation_id,
                memberships__is_admin=True,
            )
        )
        candidates.update((user.id, user) for user in holders.distinct())
    return sum(1 for user in candidates.values() if gates.is_reviewer(environment, user))


def rules_of(environment: Environment) -> Rules:
    reviewers = ""
    if environment.required_approvals:
        who = [user.get_username() for user in environment.reviewers.all()]
        if environment.reviewer_role:
            who.append(f"the {environment.reviewer_role} role or higher")
        reviewers = (
            f"{environment.required_approvals} of {reviewer_count(environment)} reviewers "
            f"({'; '.join(who) or 'the admins'})"
        )
    refs = ", ".join(str(pattern) for pattern in environment.allowed_refs or [])
    minutes = environment.wait_timer_minutes
    wait = f"{minutes} minute{'s' if minutes != 1 else ''}" if minutes else ""
    self_review = "no self-review" if environment.prevent_self_review else ""
    return Rules(reviewers=reviewers, refs=refs, wait=wait, self_review=self_review)


# ------------------------------------------------------------------------------ deployments


def short_digest(digest: str) -> str:
    """An image id ("sha256:4f2a…") as its first 12 hex digits, as `docker images` shows it."""
    return digest.partition(":")[2][:12] if ":" in digest else digest[:12]


def version_text(deployment: Deployment) -> str:
    digest = short_digest(deployment.image_digest)
    return f"{deployment.image} ({digest})" if digest else deployment.image


def _percent(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0, min(100, round(value)))


def traffic_of(deployment: Deployment) -> list[dict[str, Any]]:
    """The traffic split as bar segments, ordered by version name (the database keeps no key
    order, and segments must not swap places between two updates). The version this deployment
    brings is marked `new` and keeps one colour from its first percent to its last; the engine
    names versions with `version_label`, so the deployment's short image id finds it."""
    split = deployment.traffic if isinstance(deployment.traffic, dict) else {}
    marker = short_image_id(deployment.image_digest)
    segments = []
    others = 0
    for version in sorted(split, key=str):
        percent = _percent(split[version])
        if percent is None:
            continue
        new = bool(marker) and marker in str(version)
        if new:
            colour = NEW_VERSION_COLOUR
        else:
            colour = OTHER_VERSION_COLOURS[others % len(OTHER_VERSION_COLOURS)]
            others += 1
        segments.append({"version": str(version), "percent": percent, "new": new, "colour": colour})
    return segments


def _detail_text(detail: Any) -> str:
    if isinstance(detail, dict):
        return ", ".join(f"{key}: {value}" for key, value in detail.items())
    return "" if detail in (None, "") else str(detail)


def _approval_lines(approvals: Any) -> list[str]:
    """A deployment's approvals "as they were", one line each, whatever shape they were kept in."""
    lines = []
    for entry in approvals if isinstance(approvals, list) else []:
        if isinstance(entry, dict):
            who = entry.get("reviewer") or entry.get("user") or "?"
            decision = entry.get("decision", "approved")
            comment = entry.get("comment") or ""
            lines.append(f"{who} {decision}" + (f": {comment}" if comment else ""))
        else:
            lines.append(str(entry))
    return lines


def _shown_steps(steps: list[DeploymentStep], now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "index": step.index,
            "name": step.name,
            "outcome": step.outcome,
            "state": step.outcome or ("running" if step.finished_at is None else ""),
            "detail": _detail_text(step.detail),
            "started_at": step.started_at.isoformat() if step.started_at else None,
            "finished_at": step.finished_at.isoformat() if step.finished_at else None,
            "duration": duration_text(step.started_at, step.finished_at, now),
        }
        for step in steps
    ]


def shown(deployment: Deployment, now: datetime, *, steps: bool = True) -> Deployment:
    """The deployment with what the pages show of it as attributes."""
    run = deployment.run
    deployment.short_digest = short_digest(deployment.image_digest)
    deployment.version = version_text(deployment)
    deployment.short_sha = deployment.sha[:7]
    deployment.ref_name = ref_name(deployment.ref)
    deployment.run_url = run_url(run) if run is not None else ""
    deployment.run_number = run.number if run is not None else None
    deployment.job_url = (
        job_url(run, deployment.job_id) if run is not None and deployment.job_id else ""
    )
    deployment.is_active = deployment.state in ACTIVE_STATES
    deployment.duration = duration_text(deployment.started_at, deployment.finished_at, now)
    deployment.traffic_segments = traffic_of(deployment)
    deployment.approval_lines = _approval_lines(deployment.approvals)
    deployment.shown_steps = _shown_steps(list(deployment.steps.all()), now) if steps else []
    return deployment


def deployment_dict(deployment: Deployment | None, now: datetime) -> dict[str, Any] | None:
    if deployment is None:
        return None
    shown(deployment, now)
    return {
        "id": deployment.id,
        "state": deployment.state,
        "final": deployment.state in Deployment.FINAL,
        "image": deployment.image,
        "image_digest": deployment.image_digest,
        "short_digest": deployment.short_digest,
        "version": deployment.version,
        "sha": deployment.sha,
        "ref": deployment.ref,
        "ref_name": deployment.ref_name,
        "run_url": deployment.run_url,
        "job_url": deployment.job_url,
        "triggered_by": deployment.triggered_by,
        "strategy": deployment.strategy,
        "rollback_of": deployment.rollback_of_id,
        "skip_analysis": deployment.skip_analysis,
        "approvals": deployment.approval_lines,
        "reason": deployment.reason,
        "created_at": deployment.created_at.isoformat(),
        "started_at": deployment.started_at.isoformat() if deployment.started_at else None,
        "finished_at": deployment.finished_at.isoformat() if deployment.finished_at else None,
        "duration": deployment.duration,
        "traffic": deployment.traffic_segments,
        "steps": deployment.shown_steps,
    }


def _with_relations(deployments: QuerySet[Deployment]) -> QuerySet[Deployment]:
    return deployments.select_related("run__repository__organisation").prefetch_related(
        Prefetch("steps", queryset=DeploymentStep.objects.order_by("index"))
    )


def followed_deployment(environment: Environment) -> Deployment | None:
    """The deployment whose progress the page follows: the one in progress, else the next one
    queued, else the latest."""
    deployments = _with_relations(Deployment.objects.filter(environment=environment))
    return (
        deployments.filter(state=Deployment.IN_PROGRESS).order_by("-id").first()
        or deployments.filter(state=Deployment.QUEUED).order_by("id").first()
        or deployments.order_by("-id").first()
    )


def _current(environment: Environment) -> Deployment | None:
    current = service.current_deployment(environment)
    if current is None:
        return None
    # The service's answer may lack what the page shows; one query brings it.
    return _with_relations(Deployment.objects.filter(id=current.id)).first()


def lock_of(environment: Environment, now: datetime) -> dict[str, Any] | None:
    if environment.lock_deployment_id is None:
        return None
    expires = environment.lock_expires_at
    return {
        "deployment": environment.lock_deployment_id,
        "expires_at": expires.isoformat() if expires else None,
        "expired": expires is not None and expires <= now,
    }


# ----------------------------------------------------------------------------- waiting jobs


@dataclass
class WaitingJob:
    """A job waiting at an environment's rules, as the approvals page and the job and
    environment pages show it."""

    job: Job
    gate: EnvironmentGate
    environment: Environment
    approvals: list[Approval] = field(default_factory=list)
    approved: int = 0
    required: int = 0
    can_review: bool = False
    waiting: str = ""
    wait_remaining: str = ""
    run_url: str = ""
    job_url: str = ""
    environment_url: str = ""
    review_url: str = ""
    ref_name: str = ""


def _waiting_job(job: Job, user: Any, now: datetime) -> WaitingJob:
    gate = job.environment_gate
    environment = gate.environment
    run = job.run
    environment.repository = run.repository
    approvals = list(gate.approvals.all())
    timer = timedelta(minutes=environment.wait_timer_minutes)
    remaining = gate.entered_at + timer - now if environment.wait_timer_minutes else None
    repository = run.repository
    return WaitingJob(
        job=job,
        gate=gate,
        environment=environment,
        approvals=approvals,
        approved=sum(1 for approval in approvals if approval.decision == Approval.APPROVED),
        required=environment.required_approvals,
        can_review=gates.can_review(job, user),
        waiting=duration_text(gate.entered_at, None, now),
        wait_remaining=duration_text(now, now + remaining, now)
        if remaining is not None and remaining.total_seconds() > 0
        else "",
        run_url=run_url(run),
        job_url=job_url(run, job.id),
        environment_url=environment_url(environment),
        review_url=reverse(
            "job-review", args=[repository.organisation.slug, repository.slug, run.number, job.id]
        ),
        ref_name=ref_name(run.ref),
    )


def _waiting_jobs(jobs: QuerySet[Job], user: Any) -> list[WaitingJob]:
    now = timezone.now()
    loaded = (
        jobs.select_related(
            "run__repository__organisation", "environment_gate__environment__repository"
        )
        .prefetch_related(
            Prefetch(
                "environment_gate__approvals",
                queryset=Approval.objects.select_related("reviewer").order_by("id"),
            ),
            "environment_gate__environment__reviewers",
        )
        .defer("run__workflow_source", "run__event_payload")
        .order_by("environment_gate__entered_at", "id")[:MAX_WAITING_SHOWN]
    )
    return [_waiting_job(job, user, now) for job in loaded]


def _pending_at(environment: Environment) -> QuerySet[Job]:
    return Job.objects.filter(
        state=State.WAITING,
        environment_gate__environment=environment,
        environment_gate__state=EnvironmentGate.PENDING,
    )


def gate_panel(request: HttpRequest, job: Job) -> WaitingJob | None:
    """For the job page: the job's wait at an environment, while it waits there."""
    if job.state != State.WAITING:
        return None
    pending = Job.objects.filter(
        id=job.id, state=State.WAITING, environment_gate__state=EnvironmentGate.PENDING
    )
    found = _waiting_jobs(pending, request.user)
    return found[0] if found else None


def run_gate_panels(request: HttpRequest, jobs: list[Job]) -> list[WaitingJob]:
    """For the run page: the jobs of the attempt shown that wait at an environment."""
    ids = [job.id for job in jobs if job.state == State.WAITING]
    if not ids:
        return []
    pending = Job.objects.filter(
        id__in=ids, state=State.WAITING, environment_gate__state=EnvironmentGate.PENDING
    ).order_by("id")
    return _waiting_jobs(pending, request.user)


# ------------------------------------------------------------------------------------ pages


@require_GET
def environment_list(request: HttpRequest, organisation: str, repository: str) -> HttpResponse:
    found = repository_for(request, organisation, repository)
    now = timezone.now()
    environments = list(
        Environment.objects.filter(repository=found)
        .prefetch_related("reviewers")
        .annotate(
            waiting=Count(
                "gates",
                filter=Q(gates__state=EnvironmentGate.PENDING, gates__job__state=State.WAITING),
            )
        )
        .order_by("name")
    )
    for environment in environments:
        environment.repository = found
        environment.url = environment_url(environment)
        environment.rules = rules_of(environment)
        current = _current(environment)
        environment.current = shown(current, now, steps=False) if current else None
        latest = (
            Deployment.objects.filter(environment=environment)
            .order_by("-id")
            .only("id", "state", "created_at", "finished_at")
            .first()
        )
        environment.latest = latest
    context = {"repository": found, "environments": environments}
    return render(request, "deployments/environment_list.html", context)


@require_GET
def environment_detail(
    request: HttpRequest, organisation: str, repository: str, name: str
) -> HttpResponse:
    found = repository_for(request, organisation, repository)
    environment = environment_for(found, name)
    now = timezone.now()
    problems = []
    history = _with_relations(Deployment.objects.filter(environment=environment)).order_by("-id")
    after_text = request.GET.get("after", "").strip()
    after = _count(after_text) if after_text else None
    if after_text and after is None:
        problems.append(f"'after' must be a deployment id; got {after_text[:40]!r}")
    elif after is not None:
        history = history.filter(id__lt=after)
    page = [] if problems else list(history[: HISTORY_PAGE_SIZE + 1])
    has_more = len(page) > HISTORY_PAGE_SIZE
    page = [shown(deployment, now) for deployment in page[:HISTORY_PAGE_SIZE]]
    followed = followed_deployment(environment)
    current = _current(environment)
    can_write = permissions.can_write(request.user, found)
    target = service.previous_successful(environment) if can_write else None
    context = {
        "repository": found,
        "environment": environment,
        "rules": rules_of(environment),
        "current": shown(current, now) if current else None,
        "live": shown(followed, now) if followed else None,
        "history": page,
        "problems": problems,
        "next_after": page[-1].id if has_more else None,
        "is_first_page": after is None,
        "waiting": _waiting_jobs(_pending_at(environment), request.user),
        "waiting_count": _pending_at(environment).count(),
        # The url is rendered from a workflow: only a web address becomes a link.
        "environment_link": environment.url
        if environment.url.startswith(("https://", "http://"))
        else "",
        "lock": lock_of(environment, now),
        "can_write": can_write,
        "rollback_target": shown(target, now, steps=False) if target else None,
        "status_config": {
            "url": environment_url(environment, "environment-status"),
            "activeMs": ACTIVE_POLL_MS,
            "idleMs": IDLE_POLL_MS,
        },
    }
    return render(
        request,
        "deployments/environment_detail.html",
        context,
        status=400 if problems else 200,
    )


@require_GET
def environment_status(
    request: HttpRequest, organisation: str, repository: str, name: str
) -> JsonResponse:
    """What the environment page follows live: the deployment in progress (else the latest) with
    its steps and traffic split, what runs now, the lock and how many jobs wait."""
    found = repository_for(request, organisation, repository)
    environment = environment_for(found, name)
    now = timezone.now()
    followed = followed_deployment(environment)
    active = followed is not None and followed.state in ACTIVE_STATES
    response = JsonResponse(
        {
            "environment": environment.name,
            "deployment": deployment_dict(followed, now),
            "current": deployment_dict(_current(environment), now),
            "lock": lock_of(environment, now),
            "waiting": _pending_at(environment).count(),
            "poll_ms": ACTIVE_POLL_MS if active else IDLE_POLL_MS,
        }
    )
    response["Cache-Control"] = "no-cache, private"
    return response


@require_POST
def environment_rollback(
    request: HttpRequest, organisation: str, repository: str, name: str
) -> HttpResponse:
    found = repository_for(
        request, organisation, repository, level=permissions.WRITE, action="deployment.rollback"
    )
    environment = environment_for(found, name)
    skip_analysis = request.POST.get("skip_analysis", "") in ("on", "true", "1")
    try:
        deployment = service.request_rollback(
            environment,
            request.user,
            skip_analysis=skip_analysis,
            remote_address=request.META.get("REMOTE_ADDR", ""),
            via="web",
        )
    except service.RollbackRefused as error:
        messages.error(request, str(error))
    else:
        target = deployment.rollback_of
        what = version_text(target) if target is not None else version_text(deployment)
        messages.success(
            request,
            f"Rolling {environment.name} back to {what}"
            + (" without analysis" if skip_analysis else "")
            + f" (deployment #{deployment.id}).",
        )
    return redirect(environment_url(environment))


@login_required
@require_GET
def approvals(request: HttpRequest) -> HttpResponse:
    """The jobs waiting at an environment the user may review, oldest first."""
    waiting = _waiting_jobs(gates.waiting_for(request.user), request.user)
    return render(request, "runs/approvals.html", {"waiting": waiting})


@require_POST
def job_review(
    request: HttpRequest, organisation: str, repository: str, number: int, job_id: int
) -> HttpResponse:
    """Approve or reject a waiting job (the form of the approvals, job and environment pages)."""
    found = repository_for(request, organisation, repository)
    run = run_for(found, number)
    job = job_for(run, job_id)
    back = _back(request, job_url(run, job.id))
    decision = request.POST.get("decision", "")
    comment = request.POST.get("comment", "").strip()
    if decision not in ("approve", "reject"):
        messages.error(request, f"decision must be 'approve' or 'reject', got {decision[:40]!r}")
        return redirect(back)
    if len(comment) > MAX_COMMENT_CHARS:
        messages.error(request, f"the comment is longer than {MAX_COMMENT_CHARS} characters")
        return redirect(back)
    try:
        gates.review(
            job.id,
            request.user,
            approve=decision == "approve",
            comment=comment,
            remote_address=request.META.get("REMOTE_ADDR", ""),
            via="web",
        )
    except gates.ReviewRefused as error:
        if error.status == 404:
            raise Http404(str(error)) from error
        messages.error(request, str(error))
    else:
        verb = "Approved" if decision == "approve" else "Rejected"
        messages.success(request, f"{verb} {job.name} of {run.workflow_name} #{run.number}.")
    return redirect(back)
