"""Workers claim queued jobs with a lease and a fencing token, and keep the lease alive.

A claim is a conditional move QUEUED -> RUNNING that stores a fresh token; every later write of
that worker (logs, steps, the result) names the token, and is refused once the job was handed to
someone else.

`claim_job` takes the job a message names; `claim_next` takes the best job this worker may run
(priority with aging, fair share between organisations, labels, concurrency limits), for which a
message on the jobs queue is only a wake-up.
"""

from __future__ import annotations

import math
import secrets
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, F, Q, Window
from django.db.models.functions import RowNumber
from django.utils import timezone

from runs.models import Job, JobTransition, Organisation, Repository
from runs.states import State
from runs.transitions import move_job


def claim_job(job_id: int, *, worker: str, lease_seconds: float) -> str | None:
    """Take a queued job. Returns the fencing token, or None if someone else got it first."""
    if Job.objects.filter(id=job_id, not_before__gt=timezone.now()).exists():
        return None  # a retry still waiting out its backoff
    token = secrets.token_hex(16)
    moved = move_job(
        job_id,
        State.RUNNING,
        from_states={State.QUEUED},
        reason="claimed",
        worker=worker,
        lease_token=token,
        lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds),
        claimed_by=worker,
        claims=F("claims") + 1,
    )
    return token if moved else None


def heartbeat(job_id: int, *, token: str, lease_seconds: float) -> bool:
    """Extend the lease; False means the job is no longer ours (requeued, cancelled, ended)."""
    return (
        Job.objects.filter(id=job_id, state=State.RUNNING, lease_token=token).update(
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds)
        )
        == 1
    )


# ------------------------------------------------------------------------------------- dispatch

# How many queued jobs of each (repository, runs-on) group are weighed per claim: the first
# CANDIDATES_PER_GROUP by priority and the first CANDIDATES_PER_GROUP by age. Every job of a group
# passes or fails the label and limit checks together, so a group's best job is always weighed.
CANDIDATES_PER_GROUP = 20
# Claims remembered to know when each organisation was last served (the fair-share memory).
RECENT_CLAIMS = 500


@dataclass(frozen=True, slots=True)
class _Candidate:
    id: int
    priority: int
    queued_at: datetime
    runs_on: list[str]
    repository_id: int
    repository_limit: int
    organisation_id: int
    organisation_limit: int


def claim_next(
    *, worker: str, labels: Sequence[str], lease_seconds: float, now: datetime | None = None
) -> tuple[int, str] | None:
    """Claim the best queued job this worker may run: returns (job id, fencing token), or None.

    A job may run here when it is queued, its `not_before` (retry backoff) has passed, every one
    of its `runs-on` labels is offered by the worker (case-insensitive; no labels: any worker),
    and its repository and organisation run fewer jobs than their `max_concurrent_jobs`.

    Order, in two levels, with A = CICD_PRIORITY_AGING_SECONDS and points counted whole:

    1. The organisation. Its score is the best, over its runnable jobs, of
       `priority + floor((now - max(queued_at, served)) / A)`, where `served` is when the
       organisation last had a job claimed. Highest score first; then the organisation with the
       fewest running jobs; then the one served longest ago (never served first).
    2. The job within that organisation: highest effective priority
       `priority + floor((now - queued_at) / A)`, then the oldest `queued_at`, then the lowest id.

    Why: aging alone would be first-come-first-served between tenants, so a backlog of 1,000 jobs
    queued a minute before another tenant's single job would run entirely before it. Counting an
    organisation's waiting time only since it was last served resets a busy tenant's advantage at
    every claim: after tenant A is served, B's job has at least A's score and wins the tie on
    "served longest ago", so it starts when the next slot frees. Within a tenant a job ages from
    its own queued_at, so a low-priority job overtakes a constant stream of high-priority ones
    after `A x (difference in priority)` seconds; across tenants the same holds because a tenant
    that is never served keeps aging while the served one is reset.

    Concurrency: candidates are read without locks, then tried in order. Each try is one
    transaction that locks the organisation and repository rows (so two workers cannot both take
    the last slot of a limit), recounts their running jobs, takes the job row with
    `FOR UPDATE SKIP LOCKED` on PostgreSQL (a job another worker is taking is skipped, not waited
    for) and moves it QUEUED -> RUNNING with a conditional update. On SQLite, which has no row
    locks, IMMEDIATE transactions serialise writers and the conditional update alone picks one
    winner. A lost try moves on to the next candidate.
    """
    now = now or timezone.now()
    offered = {label.lower() for label in labels}
    candidates = [c for c in _candidates(now) if _required(c.runs_on) <= offered]
    if not candidates:
        return None
    running_orgs, running_repos = _running_counts()
    candidates = [
        c
        for c in candidates
        if running_orgs.get(c.organisation_id, 0) < c.organisation_limit
        and running_repos.get(c.repository_id, 0) < c.repository_limit
    ]
    served = _last_served({c.organisation_id for c in candidates})
    for candidate in dispatch_order(candidates, now=now, running=running_orgs, served=served):
        token = _try_claim(candidate, worker=worker, lease_seconds=lease_seconds, now=now)
        if token is not None:
            return candidate.id, token
    return None


def dispatch_order(
    candidates: Sequence[_Candidate],
    *,
    now: datetime,
    running: Mapping[int, int],
    served: Mapping[int, datetime],
) -> list[_Candidate]:
    """The candidates in claim order (see `claim_next`)."""
    aging = settings.CICD_PRIORITY_AGING_SECONDS

    def points(since: datetime) -> int:
        return math.floor(max((now - since).total_seconds(), 0.0) / aging)

    by_organisation: dict[int, list[_Candidate]] = defaultdict(list)
    for candidate in candidates:
        by_organisation[candidate.organisation_id].append(candidate)
    ordered: list[tuple[tuple, list[_Candidate]]] = []
    for organisation, jobs in by_organisation.items():
        last = served.get(organisation)
        jobs.sort(key=lambda c: (-(c.priority + points(c.queued_at)), c.queued_at, c.id))
        score = max(
            c.priority + points(max(c.queued_at, last) if last else c.queued_at) for c in jobs
        )
        # Never served (or not among the recent claims) sorts before any time of service.
        key = (
            -score,
            running.get(organisation, 0),
            last is not None,
            last or now,
            jobs[0].queued_at,
            organisation,
        )
        ordered.append((key, jobs))
    ordered.sort(key=lambda item: item[0])
    return [job for _, jobs in ordered for job in jobs]


def _required(runs_on: Sequence[str]) -> set[str]:
    """The labels a worker must offer. A label still holding `${{ }}` (jobs store runs-on as
    written) cannot be matched by anyone, so it is not required rather than never runnable."""
    return {label.lower() for label in runs_on if "${{" not in label}


def _candidates(now: datetime) -> list[_Candidate]:
    group = [F("run__repository_id"), F("runs_on")]
    rows = (
        Job.objects.filter(state=State.QUEUED)
        .filter(Q(not_before__isnull=True) | Q(not_before__lte=now))
        .annotate(
            by_priority=Window(
                RowNumber(), partition_by=group, order_by=[F("priority").desc(), "queued_at", "id"]
            ),
            by_age=Window(RowNumber(), partition_by=group, order_by=["queued_at", "id"]),
        )
        .filter(Q(by_priority__lte=CANDIDATES_PER_GROUP) | Q(by_age__lte=CANDIDATES_PER_GROUP))
        .values_list(
            "id",
            "priority",
            "queued_at",
            "runs_on",
            "run__repository_id",
            "run__repository__max_concurrent_jobs",
            "run__repository__organisation_id",
            "run__repository__organisation__max_concurrent_jobs",
        )
    )
    return [
        _Candidate(
            id=row[0],
            priority=row[1],
            queued_at=row[2] or now,
            runs_on=[str(label) for label in row[3] or []],
            repository_id=row[4],
            repository_limit=row[5],
            organisation_id=row[6],
            organisation_limit=row[7],
        )
        for row in rows
    ]


def _running_counts() -> tuple[dict[int, int], dict[int, int]]:
    organisations: dict[int, int] = defaultdict(int)
    repositories: dict[int, int] = {}
    rows = (
        Job.objects.filter(state=State.RUNNING)
        .values_list("run__repository_id", "run__repository__organisation_id")
        .annotate(n=Count("id"))
        .order_by()
    )
    for repository, organisation, count in rows:
        repositories[repository] = count
        organisations[organisation] += count
    return dict(organisations), repositories


def _last_served(organisations: set[int]) -> dict[int, datetime]:
    """When each organisation last had a job claimed, from the most recent claims (by id, so the
    primary key index answers it without reading the whole history)."""
    served: dict[int, datetime] = {}
    if not organisations:
        return served
    recent = (
        JobTransition.objects.filter(to_state=State.RUNNING)
        .order_by("-id")
        .values_list("job__run__repository__organisation_id", "job__started_at")[:RECENT_CLAIMS]
    )
    for organisation, started_at in recent:
        if organisation in organisations and started_at is not None:
            served[organisation] = max(started_at, served.get(organisation, started_at))
    return served


def _try_claim(
    candidate: _Candidate, *, worker: str, lease_seconds: float, now: datetime
) -> str | None:
    token = secrets.token_hex(16)
    with transaction.atomic():
        # Lock order organisation -> repository -> job everywhere, so claims cannot deadlock.
        list(Organisation.objects.select_for_update().filter(id=candidate.organisation_id))
        list(Repository.objects.select_for_update().filter(id=candidate.repository_id))
        running = Job.objects.filter(
            state=State.RUNNING, run__repository__organisation_id=candidate.organisation_id
        )
        if running.count() >= candidate.organisation_limit:
            return None
        if running.filter(run__repository_id=candidate.repository_id).count() >= (
            candidate.repository_limit
        ):
            return None
        free = Job.objects.select_for_update(skip_locked=True).filter(
            id=candidate.id, state=State.QUEUED
        )
        if not list(free.values_list("id", flat=True)):
            return None  # taken, or being taken, by another worker
        moved = move_job(
            candidate.id,
            State.RUNNING,
            from_states={State.QUEUED},
            reason="claimed",
            worker=worker,
            lease_token=token,
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds),
            claimed_by=worker,
            claims=F("claims") + 1,
            # The dispatch clock: `_last_served` reads it back, on the same clock as the aging.
            started_at=now,
        )
    return token if moved else None
