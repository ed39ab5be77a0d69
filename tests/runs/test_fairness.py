"""Dispatch: effective priority with aging, fair share between tenants, labels, limits, races.

Jobs are built directly in the queued state with chosen `queued_at` times, and `claim_next` is
given fixed `now` values, so aging is tested without sleeping.
"""

from __future__ import annotations

import itertools
import socket
import threading
from datetime import datetime, timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone

from runs.claims import claim_next
from runs.models import Job, Organisation, Repository, Run
from runs.states import State
from runs.transitions import move_job

pytestmark = pytest.mark.django_db(transaction=True)

LINUX = ["self-hosted", "linux"]
_numbers = itertools.count(1)


def tenant(slug: str, *, limit: int = 20, repository_limit: int = 10, priority: int = 0):
    organisation, _ = Organisation.objects.get_or_create(
        slug=slug, defaults={"name": slug, "max_concurrent_jobs": limit}
    )
    return Repository.objects.create(
        organisation=organisation,
        slug=f"{slug}-{next(_numbers)}",
        clone_url="/srv/git/x.git",
        priority=priority,
        max_concurrent_jobs=repository_limit,
    )


def queue(
    repository: Repository,
    count: int = 1,
    *,
    at: datetime,
    priority: int | None = None,
    runs_on: list[str] | None = None,
    not_before: datetime | None = None,
) -> list[int]:
    """`count` queued jobs of one new run, queued at `at` (each a microsecond later)."""
    number = next(_numbers)
    run = Run.objects.create(
        repository=repository,
        number=number,
        workflow_path="ci.yml",
        workflow_name="ci",
        workflow_source="",
        event="push",
        ref="refs/heads/main",
        sha="a" * 40,
        idempotency_key=f"fair-{number}",
        state=State.RUNNING,
    )
    jobs = Job.objects.bulk_create(
        Job(
            run=run,
            workflow_job_id="build",
            key=f"build-{i}",
            name=f"build {i}",
            runs_on=runs_on or [],
            state=State.QUEUED,
            priority=repository.priority if priority is None else priority,
            queued_at=at + timedelta(microseconds=i),
            not_before=not_before,
        )
        for i in range(count)
    )
    return [job.id for job in jobs]


def claim(now: datetime, labels: list[str] = LINUX, worker: str = "w1") -> tuple[int, str] | None:
    return claim_next(worker=worker, labels=labels, lease_seconds=60, now=now)


def finish(claimed: tuple[int, str] | None) -> int:
    assert claimed is not None, "nothing was claimed"
    job_id, token = claimed
    assert move_job(job_id, State.SUCCESS, from_states={State.RUNNING}, token=token)
    return job_id


def run_one(now: datetime, labels: list[str] = LINUX) -> int:
    """One slot: claim the next job and finish it."""
    return finish(claim(now, labels))


@pytest.fixture
def t0() -> datetime:
    return timezone.now()


# ------------------------------------------------------------------------------------- priority


def test_higher_priority_runs_first_then_oldest(t0):
    repository = tenant("acme")
    low = queue(repository, at=t0, priority=0)
    high = queue(repository, at=t0 + timedelta(seconds=2), priority=5)
    middle = queue(repository, 2, at=t0 + timedelta(seconds=1), priority=2)
    now = t0 + timedelta(seconds=3)
    assert [run_one(now) for _ in range(4)] == high + middle + low
    assert claim(now) is None


def test_a_job_in_its_backoff_is_not_claimed(t0):
    repository = tenant("acme")
    later = queue(repository, at=t0, priority=9, not_before=t0 + timedelta(minutes=1))
    now_ready = queue(repository, at=t0)
    assert run_one(t0 + timedelta(seconds=1)) == now_ready[0]
    assert claim(t0 + timedelta(seconds=2)) is None
    assert run_one(t0 + timedelta(minutes=2)) == later[0]


@pytest.mark.parametrize("stream_from", ["same tenant", "other tenant"])
def test_aging_lets_a_low_priority_job_run_under_a_stream_of_high_priority_jobs(t0, stream_from):
    assert settings.CICD_PRIORITY_AGING_SECONDS == 60
    low_repository = tenant("low")
    high_repository = tenant("low" if stream_from == "same tenant" else "high", priority=5)
    (low,) = queue(low_repository, at=t0)
    claimed = []
    for minute in range(10):
        # Every minute a new high-priority job arrives and the one slot runs the best job.
        queue(high_repository, at=t0 + timedelta(minutes=minute))
        claimed.append(run_one(t0 + timedelta(minutes=minute, seconds=1)))
    # 5 points behind, one point per minute: level at minute 5, where the older job wins.
    assert claimed.index(low) == 5


# --------------------------------------------------------------------------------------- labels


def test_a_gpu_job_goes_only_to_a_worker_offering_gpu(t0):
    repository = tenant("acme")
    (gpu,) = queue(repository, at=t0, runs_on=["self-hosted", "gpu"], priority=9)
    now = t0 + timedelta(seconds=1)
    assert claim(now, labels=["self-hosted", "linux"]) is None
    assert finish(claim(now, labels=["Self-Hosted", "GPU"])) == gpu  # case-insensitive


def test_a_worker_without_the_label_takes_the_next_job_it_can_run(t0):
    repository = tenant("acme")
    queue(repository, at=t0, runs_on=["gpu"], priority=9)
    (plain,) = queue(repository, at=t0 + timedelta(seconds=1), runs_on=["LINUX"])
    (anywhere,) = queue(repository, at=t0 + timedelta(seconds=2))  # no runs-on: any worker
    now = t0 + timedelta(seconds=3)
    assert run_one(now, labels=["linux"]) == plain
    assert run_one(now, labels=["windows"]) == anywhere
    assert claim(now, labels=["linux"]) is None


def test_worker_labels_setting_always_offers_the_host_name():
    assert socket.gethostname().lower() in {label.lower() for label in settings.CICD_WORKER_LABELS}
    assert "self-hosted" in settings.CICD_WORKER_LABELS


# --------------------------------------------------------------------------------------- limits


def test_repository_limit_holds_back_its_jobs_but_not_others(t0):
    busy = tenant("acme", repository_limit=1)
    other = tenant("acme")
    first, second = queue(busy, 2, at=t0, priority=5)
    (elsewhere,) = queue(other, at=t0 + timedelta(seconds=1))
    now = t0 + timedelta(seconds=2)
    running = claim(now)
    assert running is not None and running[0] == first
    assert finish(claim(now)) == elsewhere
    assert claim(now) is None  # `second` waits for its repository's slot
    finish(running)
    assert finish(claim(now)) == second


def test_organisation_limit_counts_every_repository_of_the_tenant(t0):
    one = tenant("acme", limit=2)
    two = tenant("acme", limit=2)
    queue(one, 2, at=t0)
    queue(two, 2, at=t0)
    now = t0 + timedelta(seconds=1)
    held = [claim(now), claim(now)]
    assert all(held)
    assert claim(now) is None
    finish(held[0])
    assert claim(now) is not None
    assert Job.objects.filter(state=State.RUNNING).count() == 2


# ----------------------------------------------------------------------------------- fair share


@pytest.mark.parametrize("b_queued_after", [timedelta(seconds=1), timedelta(minutes=5)])
def test_a_backlog_of_one_tenant_delays_another_tenants_job_by_one_slot_at_most(t0, b_queued_after):
    a_jobs = queue(tenant("a"), 200, at=t0)
    b_at = t0 + b_queued_after
    now = b_at + timedelta(seconds=1)
    assert run_one(now) in a_jobs  # the slot was busy with A's job when B queued
    (b_job,) = queue(tenant("b"), at=b_at)
    # One slot frees; the next claim is B's, although 199 of A's jobs are older.
    assert run_one(now) == b_job
    assert run_one(now) in a_jobs


def test_among_equal_priorities_the_tenant_with_fewer_running_jobs_goes_first(t0):
    busy, idle = tenant("busy"), tenant("idle")
    queue(busy, 3, at=t0)
    (idle_job,) = queue(idle, at=t0 + timedelta(seconds=10))
    now = t0 + timedelta(seconds=20)
    first = claim(now)
    assert first is not None and first[0] != idle_job
    assert finish(claim(now)) == idle_job


def test_a_higher_priority_tenant_still_goes_first_until_aging_levels_it(t0):
    (low,) = queue(tenant("low"), at=t0)
    queue(tenant("high", priority=3), 10, at=t0)
    order = [run_one(t0 + timedelta(seconds=30 * slot + 1)) for slot in range(8)]
    # Three points behind, one point per minute: level after three minutes (the 7th slot of
    # 30 seconds), where the tenant served longest ago wins the tie.
    assert order.index(low) == 6


# ------------------------------------------------------------------------------------- races


def _race(count: int) -> list[tuple[int, str] | None]:
    barrier = threading.Barrier(count)
    results: list[tuple[int, str] | None] = [None] * count

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=10)
            results[index] = claim_next(worker=f"w{index}", labels=LINUX, lease_seconds=60)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    return results


@pytest.fixture
def postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks and true concurrency need PostgreSQL")


def test_two_workers_racing_for_one_job_exactly_one_wins(t0, postgres_only):
    (job,) = queue(tenant("acme"), at=t0 - timedelta(seconds=1))
    results = _race(2)
    winners = [result for result in results if result is not None]
    assert len(winners) == 1 and winners[0][0] == job
    assert Job.objects.get(id=job).claims == 1


def test_racing_workers_never_get_the_same_job(t0, postgres_only):
    jobs = queue(tenant("acme"), 4, at=t0 - timedelta(seconds=1))
    results = _race(4)
    assert all(results), results
    assert sorted(result[0] for result in results if result) == sorted(jobs)
    assert all(job.claims == 1 for job in Job.objects.filter(id__in=jobs))


def test_racing_workers_respect_the_organisation_limit(t0, postgres_only):
    queue(tenant("acme", limit=1), 3, at=t0 - timedelta(seconds=1))
    results = _race(3)
    assert len([result for result in results if result]) == 1
