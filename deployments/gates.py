"""The protection rules of an environment: a job with `environment:` waits here until they hold.

`runs.scheduling` hands a ready job whose workflow job names an environment to
`enter_environment` instead of queueing it. The job then waits (state `waiting`) at an
`EnvironmentGate` until `evaluate` finds every rule of its environment met, in this order:

1. allowed refs: the run's branch or tag matches one of the environment's patterns (else the job
   fails at once, naming the ref, the environment and the patterns);
2. no rejection: one reviewer's rejection fails the job with their comment;
3. required reviewers: `required_approvals` approvals from eligible reviewers;
4. the wait timer: `wait_timer_minutes` have passed since the job arrived.

Then it is queued, and its worker gives it the environment's secrets and variables
(`runs.execution`). Reviewers decide through `review` (the web page, the API and the CLI all
call it); each decision and each refused attempt is in the audit log. Beat calls `sweep` every
CICD_GATE_SWEEP_SECONDS, which lets jobs whose wait timer ran out go.

Eligible reviewers are the environment's `reviewers` plus everyone with `reviewer_role` (or a
higher role) on the repository; when neither is set, the repository's admins. With
`prevent_self_review`, whoever triggered the run may not approve it.

Every decision is a conditional update of the gate and of the job, made once, in a transaction
that holds the gate's row lock: two evaluators at once (an approval and the sweep) change
nothing more than one. A cancelled job leaves its gate pending; nothing evaluates it again.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from types import ModuleType
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from deployments.models import Approval, Environment, EnvironmentGate
from pipelines.triggers import (
    BRANCH_PREFIX,
    TAG_PREFIX,
    FilterPatternError,
    pattern_matches,
    validate_pattern,
)
from runs import permissions
from runs.dispatch import notify_workers
from runs.models import AuditEntry, Job, Run
from runs.states import FINAL_STATES, State
from runs.transitions import move_job

log = logging.getLogger(__name__)

# What `evaluate` says about a job that entered an environment.
QUEUED, WAITING, FAILED = "queued", "waiting", "failed"
# The answer for a job that never entered an environment; kept as the API always said it.
NO_APPROVAL = "no approval is pending for this job"
MAX_NAME_LENGTH = Environment._meta.get_field("name").max_length


class ReviewRefused(Exception):
    """A review that may not be made: `status` is 404 (the reviewer may not see the job), 403
    (not an eligible reviewer, or self-review) or 409 (nothing to review now)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class _Lost(Exception):
    """Another process moved the gate or the job first: undo this attempt's writes."""


# ------------------------------------------------------------------------------------ entering


def check_name(name: str) -> str:
    """The problem with a rendered environment name, or "" when it can be used."""
    if not name.strip():
        return "the environment's name is empty"
    if len(name) > MAX_NAME_LENGTH:
        return f"the environment's name is longer than {MAX_NAME_LENGTH} characters"
    if "\x00" in name:
        return "the environment's name contains a NUL character"
    return ""


def enter_environment(
    job_id: int, environment_name: str, *, url: str = "", runs_on: Sequence[Any] | None = None
) -> bool:
    """A pending job whose needs are done arrives at its environment (created on first use with
    no rules, as on GitHub): it moves to `waiting`, keeping `runs_on` as `queue_job` would, and
    is evaluated at once. Returns whether this call moved the job (False: another process did).
    Called from `runs.scheduling` inside `advance_run`, which moves on with the job's new state.
    """
    try:
        with transaction.atomic():
            job = Job.objects.select_related("run").filter(id=job_id, state=State.PENDING).first()
            if job is None:
                return False
            environment, _ = Environment.objects.get_or_create(
                repository_id=job.run.repository_id, name=environment_name
            )
            EnvironmentGate.objects.get_or_create(
                job=job, defaults={"environment": environment, "url": url[:1000]}
            )
            fields = {} if runs_on is None else {"runs_on": list(runs_on)}
            moved = move_job(
                job_id,
                State.WAITING,
                from_states={State.PENDING},
                reason=f"waiting for environment {environment_name}",
                **fields,
            )
            if not moved:
                raise _Lost
    except _Lost:
        return False
    _evaluate(job_id)
    return True


# ---------------------------------------------------------------------------------- evaluating


def evaluate(job_id: int) -> str:
    """Check a waiting job against its environment's rules and act: queue it (every rule holds),
    fail it (refused ref, rejection), or leave it waiting. Returns QUEUED (it passed, now or
    before), WAITING, or FAILED (refused, rejected, or it ended meanwhile, e.g. cancelled).
    A job that failed here lets its run advance (dependent jobs are skipped, the run ends)."""
    outcome = _evaluate(job_id)
    if outcome == FAILED:
        run_id = Job.objects.filter(id=job_id).values_list("run_id", flat=True).first()
        if run_id is not None:
            _scheduling().advance_run(run_id)
    return outcome


def _evaluate(job_id: int, *, now: datetime | None = None) -> str:
    now = now or timezone.now()
    with transaction.atomic():
        gate = (
            EnvironmentGate.objects.select_for_update(of=("self",))
            .select_related("environment__repository", "job__run")
            .filter(job_id=job_id)
            .first()
        )
        if gate is None:
            state = Job.objects.filter(id=job_id).values_list("state", flat=True).first()
            return FAILED if state is None or state in FINAL_STATES else QUEUED
        if gate.state == EnvironmentGate.APPROVED:
            return QUEUED
        if gate.state != EnvironmentGate.PENDING or gate.job.state != State.WAITING:
            return FAILED
        verdict, message = _verdict(gate, now=now)
        if verdict == WAITING:
            return WAITING
        try:
            with transaction.atomic():
                return _decide(gate, verdict, message, now=now)
        except _Lost:
            # The job was cancelled between our read and our move: the gate is left as it was.
            return FAILED


def _verdict(gate: EnvironmentGate, *, now: datetime) -> tuple[str, str]:
    """(EnvironmentGate.REFUSED / REJECTED / APPROVED, the job's error) or (WAITING, "")."""
    environment, run = gate.environment, gate.job.run
    refusal = ref_refusal(environment, run.ref)
    if refusal:
        return EnvironmentGate.REFUSED, refusal
    decisions = list(gate.approvals.select_related("reviewer").order_by("id"))
    for decision in decisions:
        if decision.decision == Approval.REJECTED:
            who = decision.reviewer.get_username()
            return EnvironmentGate.REJECTED, f"rejected by {who}" + (
                f": {decision.comment}" if decision.comment else ""
            )
    if environment.required_approvals:
        counted = [
            decision
            for decision in decisions
            if decision.decision == Approval.APPROVED
            and not _reviewer_refusal(environment, run, decision.reviewer)
        ]
        if len(counted) < environment.required_approvals:
            return WAITING, ""
    if now < wait_until(gate):
        return WAITING, ""
    return EnvironmentGate.APPROVED, ""


def _decide(gate: EnvironmentGate, verdict: str, message: str, *, now: datetime) -> str:
    """Apply a verdict: the gate and the job move together, or neither does (_Lost)."""
    updated = EnvironmentGate.objects.filter(id=gate.id, state=EnvironmentGate.PENDING).update(
        state=verdict, decided_at=now, reason=message
    )
    if updated != 1:
        raise _Lost
    name = gate.environment.name
    if verdict == EnvironmentGate.APPROVED:
        if not move_job(
            gate.job_id,
            State.QUEUED,
            from_states={State.WAITING},
            reason=f"environment {name}: its rules are met",
        ):
            raise _Lost
        notify_workers(gate.job_id)
        return QUEUED
    why = "refused by its rules" if verdict == EnvironmentGate.REFUSED else "rejected"
    if not move_job(
        gate.job_id,
        State.FAILURE,
        from_states={State.WAITING},
        reason=f"environment {name}: {why}",
        error=message,
    ):
        raise _Lost
    return FAILED


def ref_refusal(environment: Environment, ref: str) -> str:
    """Why `ref` may not deploy to the environment ("" when it may). Patterns match the branch
    or tag name (`main`, `release/*`, `v*`), or the full ref when they start with `refs/`; as in
    workflow filters, the last pattern that matches decides and `!` excludes."""
    patterns = [str(pattern) for pattern in environment.allowed_refs or []]
    if not patterns:
        return ""
    short = ref
    for prefix in (BRANCH_PREFIX, TAG_PREFIX):
        if ref.startswith(prefix):
            short = ref[len(prefix) :]
    allowed = False
    try:
        for pattern in patterns:
            validate_pattern(pattern)
            negated = pattern.startswith("!")
            body = pattern[1:] if negated else pattern
            if pattern_matches(body, ref if body.startswith("refs/") else short):
                allowed = not negated
    except FilterPatternError as error:
        return (
            f"the allowed refs of environment {environment.name} are invalid ({error}); "
            "an administrator must correct them"
        )
    if allowed:
        return ""
    return (
        f"{ref} may not deploy to environment {environment.name}: "
        f"its allowed branches and tags are {', '.join(patterns)}"
    )


def wait_until(gate: EnvironmentGate) -> datetime:
    """When the environment's wait timer lets the job go."""
    return gate.entered_at + timedelta(minutes=gate.environment.wait_timer_minutes)


def passed_environment(job: Job) -> Environment | None:
    """The environment whose rules the job passed (its worker then gives it the environment's
    secrets and variables, and lets it deploy there), or None."""
    gate = (
        EnvironmentGate.objects.select_related("environment")
        .filter(job=job, state=EnvironmentGate.APPROVED)
        .first()
    )
    return gate.environment if gate is not None else None


# ----------------------------------------------------------------------------------- reviewers


def is_reviewer(environment: Environment, user: Any) -> bool:
    """Whether the user is one of the environment's eligible reviewers (self-review aside)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return False
    repository = environment.repository
    if not permissions.can_read(user, repository):
        return False
    if environment.reviewers.filter(id=user.id).exists():
        return True
    if environment.reviewer_role:
        return permissions.allows(user, repository, environment.reviewer_role)
    return not environment.reviewers.exists() and permissions.can_admin(user, repository)


def _reviewer_refusal(environment: Environment, run: Run, user: Any) -> str:
    """Why the user may not review jobs of this run at this environment ("" when they may)."""
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    if not is_reviewer(environment, user):
        return f"{name} is not a reviewer of environment {environment.name}: " + reviewers_text(
            environment
        )
    if environment.prevent_self_review and run.actor and run.actor == name:
        return (
            f"{name} triggered run #{run.number} and environment {environment.name} prevents "
            "self-review: another reviewer must decide"
        )
    return ""


def reviewers_text(environment: Environment) -> str:
    """Who may review, in words, for refusals and pages."""
    names = sorted(user.get_username() for user in environment.reviewers.all())
    who = []
    if names:
        who.append(", ".join(names))
    if environment.reviewer_role:
        who.append(f"users with the {environment.reviewer_role} role or higher")
    if not who:
        who.append("the repository's admins")
    return "its reviewers are " + " and ".join(who)


def can_review(job: Job, user: Any) -> bool:
    """Whether the user may approve or reject this job now (for the pages' buttons)."""
    gate = EnvironmentGate.objects.select_related("environment__repository").filter(job=job).first()
    if gate is None or gate.state != EnvironmentGate.PENDING or job.state != State.WAITING:
        return False
    if not gate.environment.required_approvals:
        return False
    if _reviewer_refusal(gate.environment, job.run, user):
        return False
    return not Approval.objects.filter(gate=gate, reviewer_id=user.id).exists()


def waiting_for(user: Any) -> QuerySet[Job]:
    """The jobs waiting at an environment for this user's review (which they have not given)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return Job.objects.none()
    gates = (
        EnvironmentGate.objects.filter(
            state=EnvironmentGate.PENDING,
            job__state=State.WAITING,
            environment__required_approvals__gt=0,
            environment__repository__in=permissions.visible_repositories(user).values("id"),
        )
        .select_related("environment__repository", "job__run")
        .order_by("entered_at", "id")
    )
    ids = [gate.job_id for gate in gates if can_review(gate.job, user)]
    return (
        Job.objects.filter(id__in=ids)
        .select_related("run__repository__organisation", "environment_gate__environment")
        .order_by("id")
    )


# ------------------------------------------------------------------------------------- reviews


def review(
    job_id: int,
    user: Any,
    *,
    approve: bool,
    comment: str,
    remote_address: str = "",
    via: str = "",
) -> Approval:
    """Record a reviewer's approval or rejection of a waiting job, audit it, and evaluate the job
    (which may queue or fail it). ReviewRefused (audited too) when the user may not."""
    action = "approve" if approve else "reject"
    job = Job.objects.select_related("run__repository__organisation").filter(id=job_id).first()
    name = user.get_username() if user is not None and user.is_authenticated else "anonymous"
    context = _Refusals(job, name, action, comment, remote_address, via)
    if job is None or not permissions.can_read(user, job.run.repository):
        raise context.refuse(f"no job {job_id}", 404)
    gate = EnvironmentGate.objects.select_related("environment__repository").filter(job=job).first()
    if gate is None:
        # Nothing to review; as before environments existed, only admins are told so.
        if not permissions.can_admin(user, job.run.repository):
            raise context.refuse(
                f"{name} may read {job.run.repository.full_name} but reviewing needs the "
                "admin role",
                403,
            )
        raise context.refuse(NO_APPROVAL, 409)
    environment = gate.environment
    context.environment = environment.name
    refusal = _reviewer_refusal(environment, job.run, user)
    if refusal:
        raise context.refuse(refusal, 403)
    if job.state != State.WAITING or gate.state != EnvironmentGate.PENDING:
        raise context.refuse(f"job {job.id} is not waiting for a review (it is {job.state})", 409)
    if not environment.required_approvals:
        raise context.refuse(
            f"job {job.id} is not waiting for a review: environment {environment.name} needs "
            "none (it waits for its wait timer)",
            409,
        )
    try:
        with transaction.atomic():
            locked = EnvironmentGate.objects.select_for_update().get(id=gate.id)
            if locked.state != EnvironmentGate.PENDING:
                raise _Lost
            approval = Approval.objects.create(
                gate=gate,
                reviewer=user,
                decision=Approval.APPROVED if approve else Approval.REJECTED,
                comment=comment,
            )
            AuditEntry.objects.create(
                action=f"environment.{action}",
                repository=job.run.repository,
                actor=name,
                remote_address=remote_address[:100],
                detail=context.detail(),
            )
    except IntegrityError:
        earlier = Approval.objects.filter(gate=gate, reviewer=user).first()
        decided = earlier.decision if earlier is not None else "reviewed"
        raise context.refuse(f"{name} has already {decided} job {job.id}", 409) from None
    except _Lost:
        raise context.refuse(f"job {job.id} is not waiting for a review any more", 409) from None
    evaluate(job.id)
    return approval


class _Refusals:
    """The audit trail of one review attempt: every refusal is recorded before it is raised."""

    def __init__(
        self,
        job: Job | None,
        actor: str,
        action: str,
        comment: str,
        remote_address: str,
        via: str,
    ) -> None:
        self.job, self.actor, self.action, self.comment = job, actor, action, comment
        self.remote_address, self.via = remote_address, via
        self.environment = ""

    def detail(self, **extra: Any) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "job": self.job.id if self.job is not None else None,
            "run": self.job.run_id if self.job is not None else None,
            "environment": self.environment,
            "comment": self.comment,
            **extra,
        }
        if self.via:
            detail["via"] = self.via
        return detail

    def refuse(self, message: str, status: int) -> ReviewRefused:
        AuditEntry.objects.create(
            action="environment.review_refused",
            repository=self.job.run.repository if self.job is not None else None,
            actor=self.actor,
            remote_address=self.remote_address[:100],
            detail=self.detail(decision=self.action, status=status, reason=message),
        )
        return ReviewRefused(message, status)


# --------------------------------------------------------------------------------------- sweep


def sweep(*, now: datetime | None = None) -> list[int]:
    """Let the jobs whose wait timer ran out go (when nothing else holds them), and fail the
    waiting jobs whose environment was deleted under them. Returns the ids of the jobs moved."""
    now = now or timezone.now()
    moved = []
    timed = (
        EnvironmentGate.objects.filter(
            state=EnvironmentGate.PENDING,
            job__state=State.WAITING,
            environment__wait_timer_minutes__gt=0,
        )
        .select_related("environment")
        .order_by("entered_at", "id")
    )
    for gate in timed:
        if wait_until(gate) <= now and evaluate(gate.job_id) != WAITING:
            moved.append(gate.job_id)
    orphans = Job.objects.filter(state=State.WAITING, environment_gate__isnull=True)
    for job_id, run_id in orphans.values_list("id", "run_id"):
        if move_job(
            job_id,
            State.FAILURE,
            from_states={State.WAITING},
            reason="environment deleted",
            error="the environment this job waited for was deleted",
        ):
            moved.append(job_id)
            _scheduling().advance_run(run_id)
    return moved


def reevaluate(environment: Environment) -> list[int]:
    """Evaluate again every job waiting at the environment (its rules just changed)."""
    waiting = EnvironmentGate.objects.filter(
        environment=environment, state=EnvironmentGate.PENDING, job__state=State.WAITING
    ).values_list("job_id", flat=True)
    return [job_id for job_id in list(waiting) if evaluate(job_id) != WAITING]


def _scheduling() -> ModuleType:
    """`runs.scheduling` calls into this module; imported when first needed (import cycle)."""
    from runs import scheduling

    return scheduling
