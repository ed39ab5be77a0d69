"""A job with `environment:` waits at its environment's rules: required reviewers (N of M, no
self-review), allowed refs and a wait timer; reviewers decide, everything is audited, and a
rejection fails the job with the reviewer's comment."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from deployments import gates
from deployments.models import Approval, Environment, EnvironmentGate
from runs.control import cancel_job
from runs.models import AuditEntry, JobTransition
from runs.states import State

from .conftest import jobs_of, start_run, states, waiting_run

pytestmark = pytest.mark.django_db


def refused(job_id, user, *, approve=True, comment=""):
    with pytest.raises(gates.ReviewRefused) as caught:
        gates.review(job_id, user, approve=approve, comment=comment)
    return caught.value


# ------------------------------------------------------------------------------- entering


def test_an_environment_is_created_on_first_use_without_rules_and_lets_the_job_go(world, sent_jobs):
    run, deploy = waiting_run(world)
    environment = Environment.objects.get(repository=world.repository)
    assert environment.name == "production"
    assert (environment.required_approvals, environment.allowed_refs) == (0, [])
    assert deploy.state == State.QUEUED
    assert deploy.runs_on == ["linux"]  # rendered as queue_job would store it
    assert deploy.id in sent_jobs
    gate = EnvironmentGate.objects.get(job=deploy)
    assert gate.state == EnvironmentGate.APPROVED
    assert gate.url == f"https://widgets.example/{run.sha}"
    moves = list(JobTransition.objects.filter(job=deploy).values_list("from_state", "to_state"))
    assert moves == [("pending", "waiting"), ("waiting", "queued")]


def test_a_production_job_waits_for_its_reviewers_and_nothing_after_it_starts(world, sent_jobs):
    world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    assert states(run) == {"build": "success", "deploy": "waiting", "smoke": "pending"}
    assert deploy.runs_on == ["linux"]
    assert deploy.id not in sent_jobs
    run.refresh_from_db()
    assert run.state == State.QUEUED  # not ended, and not waiting (that is for concurrency)
    assert gates.evaluate(deploy.id) == gates.WAITING


def test_the_environment_name_and_url_are_rendered_like_runs_on(world):
    source = """\
on: push
jobs:
  deploy:
    runs-on: linux
    environment: ${{ github.ref_name == 'main' && 'production' || 'staging' }}
    steps:
      - run: echo deploy
"""
    start_run(world.repository, source)
    start_run(world.repository, source, ref="refs/heads/feature")
    names = sorted(Environment.objects.values_list("name", flat=True))
    assert names == ["production", "staging"]

    broken = source.replace("github.ref_name == 'main'", "fromJSON('{')")
    run = start_run(world.repository, broken)
    job = jobs_of(run)["deploy"]
    assert job.state == State.FAILURE
    assert job.error.startswith("environment: ")
    assert JobTransition.objects.filter(job=job, reason="environment").exists()

    empty = source.replace("${{ github.ref_name == 'main' && 'production' || 'staging' }}", "''")
    job = jobs_of(start_run(world.repository, empty))["deploy"]
    assert (job.state, job.error) == (State.FAILURE, "environment: the environment's name is empty")


# -------------------------------------------------------------------------------- reviewers


def test_an_outsider_cannot_see_a_reader_cannot_approve_a_reviewer_can(world, sent_jobs):
    world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    users = world.users

    assert refused(deploy.id, users["outsider"]).status == 404
    rejected_reader = refused(deploy.id, users["reader"])
    assert rejected_reader.status == 403
    assert "rita is not a reviewer of environment production" in rejected_reader.message
    assert "its reviewers are bob" in rejected_reader.message
    # A writer, even the repository's admin, is no reviewer when reviewers are listed.
    assert refused(deploy.id, users["writer"]).status == 403
    assert refused(deploy.id, users["admin"]).status == 403
    assert states(run)["deploy"] == State.WAITING
    assert not Approval.objects.exists()

    approval = gates.review(
        deploy.id, users["reviewer"], approve=True, comment="ship it", remote_address="10.0.0.7"
    )
    assert approval.decision == Approval.APPROVED
    assert states(run)["deploy"] == State.QUEUED
    assert deploy.id in sent_jobs

    entry = AuditEntry.objects.get(action="environment.approve")
    assert (entry.actor, entry.remote_address) == ("bob", "10.0.0.7")
    assert entry.repository == world.repository
    assert entry.detail == {
        "job": deploy.id,
        "run": run.id,
        "environment": "production",
        "comment": "ship it",
    }
    refusals = AuditEntry.objects.filter(action="environment.review_refused").order_by("id")
    assert [(e.actor, e.detail["status"]) for e in refusals] == [
        ("otto", 404),
        ("rita", 403),
        ("walt", 403),
        ("olga", 403),
    ]
    assert refusals[1].detail["reason"] == rejected_reader.message

    again = refused(deploy.id, users["reviewer"])
    assert again.status == 409 and "not waiting for a review" in again.message


def test_n_of_m_needs_n_approvals_and_each_reviewer_decides_once(world):
    world.environment(required_approvals=2, reviewers=["reviewer", "second", "reader"])
    run, deploy = waiting_run(world)
    gates.review(deploy.id, world.users["reviewer"], approve=True, comment="")
    assert states(run)["deploy"] == State.WAITING
    twice = refused(deploy.id, world.users["reviewer"])
    assert twice.status == 409 and twice.message == f"bob has already approved job {deploy.id}"
    assert gates.can_review(deploy, world.users["second"])
    assert not gates.can_review(deploy, world.users["reviewer"])  # has decided already
    gates.review(deploy.id, world.users["second"], approve=True, comment="")
    assert states(run)["deploy"] == State.QUEUED
    assert Approval.objects.filter(gate__job=deploy).count() == 2


def test_a_reviewer_role_and_the_admins_by_default(world):
    environment = world.environment(required_approvals=1, reviewer_role="write")
    run, deploy = waiting_run(world)
    assert refused(deploy.id, world.users["reader"]).status == 403
    assert gates.is_reviewer(environment, world.users["admin"])  # admin is above write
    gates.review(deploy.id, world.users["writer"], approve=True, comment="")
    assert states(run)["deploy"] == State.QUEUED

    environment.reviewer_role = ""
    environment.save()
    run, deploy = waiting_run(world)
    writer = refused(deploy.id, world.users["writer"])
    assert writer.status == 403 and "the repository's admins" in writer.message
    gates.review(deploy.id, world.users["admin"], approve=True, comment="")
    assert states(run)["deploy"] == State.QUEUED


def test_prevent_self_review_refuses_the_pusher_but_not_others(world):
    environment = world.environment(
        required_approvals=1, reviewers=["pusher", "reviewer"], prevent_self_review=True
    )
    run, deploy = waiting_run(world, actor="alice")
    own = refused(deploy.id, world.users["pusher"])
    assert own.status == 403 and "prevents self-review" in own.message
    assert not gates.can_review(deploy, world.users["pusher"])
    gates.review(deploy.id, world.users["reviewer"], approve=True, comment="")
    assert states(run)["deploy"] == State.QUEUED

    environment.prevent_self_review = False
    environment.save()
    run, deploy = waiting_run(world, actor="alice")
    gates.review(deploy.id, world.users["pusher"], approve=True, comment="mine, allowed")
    assert states(run)["deploy"] == State.QUEUED


def test_a_rejection_fails_the_job_with_the_comment_and_skips_what_needs_it(world):
    world.environment(required_approvals=2, reviewers=["reviewer", "second"])
    run, deploy = waiting_run(world)
    gates.review(deploy.id, world.users["second"], approve=True, comment="fine by me")
    gates.review(deploy.id, world.users["reviewer"], approve=False, comment="not on a Friday")
    deploy.refresh_from_db()
    assert deploy.state == State.FAILURE
    assert deploy.error == "rejected by bob: not on a Friday"
    assert states(run) == {"build": "success", "deploy": "failure", "smoke": "skipped"}
    run.refresh_from_db()
    assert run.state == State.FAILURE
    gate = EnvironmentGate.objects.get(job=deploy)
    assert (gate.state, gate.reason) == (EnvironmentGate.REJECTED, deploy.error)
    entry = AuditEntry.objects.get(action="environment.reject")
    assert entry.detail["comment"] == "not on a Friday"
    assert refused(deploy.id, world.users["second"]).status == 409


def test_a_job_that_waits_for_no_environment_has_nothing_to_review(world):
    run = start_run(world.repository)
    build = jobs_of(run)["build"]
    assert refused(build.id, world.users["writer"]).status == 403
    nothing = refused(build.id, world.users["admin"])
    assert (nothing.status, nothing.message) == (409, gates.NO_APPROVAL)


def test_waiting_for_lists_the_jobs_a_user_may_review(world):
    world.environment(required_approvals=1, reviewers=["reviewer"])
    _run, deploy = waiting_run(world)
    assert list(gates.waiting_for(world.users["reviewer"])) == [deploy]
    assert not gates.waiting_for(world.users["reader"]).exists()
    assert not gates.waiting_for(world.users["outsider"]).exists()
    gates.review(deploy.id, world.users["reviewer"], approve=True, comment="")
    assert not gates.waiting_for(world.users["reviewer"]).exists()


# ------------------------------------------------------------------------------ refs, timer


@pytest.mark.parametrize(
    ("ref", "allowed"),
    [
        ("refs/heads/main", True),
        ("refs/heads/feature", False),
        ("refs/heads/release/2.0", True),
        ("refs/tags/v1.2.0", True),
        ("refs/tags/nightly", False),
        ("refs/pull/7/head", False),
    ],
)
def test_allowed_refs_refuse_a_feature_branch_and_allow_main_and_a_tag_pattern(world, ref, allowed):
    world.environment(allowed_refs=["main", "release/*", "refs/tags/v*"])
    source = (
        "on: push\njobs:\n  deploy:\n    runs-on: linux\n    environment: production\n"
        "    steps:\n      - run: echo deploy\n"
    )
    run = start_run(world.repository, source, ref=ref)
    deploy = jobs_of(run)["deploy"]
    gate = EnvironmentGate.objects.get(job=deploy)
    if allowed:
        assert (deploy.state, gate.state) == (State.QUEUED, EnvironmentGate.APPROVED)
        return
    assert (deploy.state, gate.state) == (State.FAILURE, EnvironmentGate.REFUSED)
    assert deploy.error == (
        f"{ref} may not deploy to environment production: its allowed branches and tags are "
        "main, release/*, refs/tags/v*"
    )
    run.refresh_from_db()
    assert run.state == State.FAILURE


def test_a_negated_pattern_excludes_and_a_broken_one_refuses(world):
    environment = world.environment(allowed_refs=["release/*", "!release/old*"])
    assert gates.ref_refusal(environment, "refs/heads/release/2") == ""
    assert "may not deploy" in gates.ref_refusal(environment, "refs/heads/release/old-1")
    environment.allowed_refs = ["main", "[oops"]
    assert "are invalid" in gates.ref_refusal(environment, "refs/heads/main")


def test_the_wait_timer_holds_the_job_until_the_sweep_releases_it(world, sent_jobs):
    world.environment(wait_timer_minutes=10)
    run, deploy = waiting_run(world)
    assert deploy.state == State.WAITING
    assert gates.sweep() == []
    assert states(run)["deploy"] == State.WAITING
    review = refused(deploy.id, world.users["admin"])
    assert review.status == 409 and "wait timer" in review.message

    gate = EnvironmentGate.objects.get(job=deploy)
    EnvironmentGate.objects.filter(id=gate.id).update(
        entered_at=timezone.now() - timedelta(minutes=10, seconds=1)
    )
    assert gates.sweep() == [deploy.id]
    assert states(run)["deploy"] == State.QUEUED
    assert deploy.id in sent_jobs
    assert gates.sweep() == []


def test_approvals_and_the_wait_timer_are_both_needed(world):
    world.environment(required_approvals=1, reviewers=["reviewer"], wait_timer_minutes=5)
    run, deploy = waiting_run(world)
    gates.review(deploy.id, world.users["reviewer"], approve=True, comment="")
    assert states(run)["deploy"] == State.WAITING
    EnvironmentGate.objects.filter(job=deploy).update(
        entered_at=timezone.now() - timedelta(minutes=6)
    )
    assert gates.sweep() == [deploy.id]
    assert states(run)["deploy"] == State.QUEUED


def test_a_beat_task_sweeps_the_gates(world, settings):
    from cicd.celery import app
    from deployments.tasks import sweep

    world.environment(wait_timer_minutes=1)
    run, deploy = waiting_run(world)
    EnvironmentGate.objects.filter(job=deploy).update(
        entered_at=timezone.now() - timedelta(minutes=2)
    )
    sweep.apply()
    assert states(run)["deploy"] == State.QUEUED

    app.finalize()
    [entry] = [e for e in app.conf.beat_schedule.values() if e["task"] == sweep.name]
    assert entry["schedule"] == settings.CICD_GATE_SWEEP_SECONDS


# ------------------------------------------------------------------------ cancels, changes


def test_cancelling_a_waiting_job_still_works_and_leaves_its_gate(world):
    world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    assert cancel_job(deploy.id, reason="not now", actor="walt")
    assert states(run) == {"build": "success", "deploy": "cancelled", "smoke": "skipped"}
    assert EnvironmentGate.objects.get(job=deploy).state == EnvironmentGate.PENDING
    assert gates.evaluate(deploy.id) == gates.FAILED
    assert refused(deploy.id, world.users["reviewer"]).status == 409
    assert gates.sweep() == []


def test_changed_rules_are_applied_to_waiting_jobs(world):
    environment = world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    environment.required_approvals = 0
    environment.save()
    assert gates.reevaluate(environment) == [deploy.id]
    assert states(run)["deploy"] == State.QUEUED


def test_a_job_whose_environment_was_deleted_fails_at_the_next_sweep(world):
    environment = world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    environment.delete()
    assert gates.sweep() == [deploy.id]
    deploy.refresh_from_db()
    assert deploy.error == "the environment this job waited for was deleted"
    assert states(run)["smoke"] == State.SKIPPED


def test_evaluating_twice_moves_the_job_once(world, sent_jobs):
    environment = world.environment(required_approvals=1, reviewers=["reviewer"])
    _run, deploy = waiting_run(world)
    Approval.objects.create(
        gate=EnvironmentGate.objects.get(job=deploy),
        reviewer=world.users["reviewer"],
        decision=Approval.APPROVED,
    )
    assert gates.evaluate(deploy.id) == gates.QUEUED
    assert gates.evaluate(deploy.id) == gates.QUEUED
    assert gates.reevaluate(environment) == []
    assert JobTransition.objects.filter(job=deploy, to_state="queued").count() == 1
    assert sent_jobs.count(deploy.id) == 1


@pytest.mark.django_db(transaction=True)
def test_evaluators_racing_on_postgresql_move_the_job_once(world, sent_jobs):
    if connection.vendor != "postgresql":
        pytest.skip("row locks and true concurrency need PostgreSQL")
    world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    Approval.objects.create(
        gate=EnvironmentGate.objects.get(job=deploy),
        reviewer=world.users["reviewer"],
        decision=Approval.APPROVED,
    )
    barrier = threading.Barrier(4)
    outcomes: list[str] = []

    def evaluator() -> None:
        try:
            barrier.wait(timeout=10)
            outcomes.append(gates.evaluate(deploy.id))
        finally:
            connection.close()

    threads = [threading.Thread(target=evaluator) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert outcomes == [gates.QUEUED] * 4
    assert JobTransition.objects.filter(job=deploy, to_state="queued").count() == 1
    assert sent_jobs.count(deploy.id) == 1
    assert states(run)["deploy"] == State.QUEUED


def test_a_retried_run_attempt_waits_again(world):
    from runs.control import rerun

    world.environment(required_approvals=1, reviewers=["reviewer"])
    run, deploy = waiting_run(world)
    gates.review(deploy.id, world.users["reviewer"], approve=False, comment="no")
    run.refresh_from_db()
    assert run.state == State.FAILURE
    rerun(run.id, failed_only=True, actor="walt")
    run.refresh_from_db()
    again = jobs_of(run)["deploy"]
    assert again.id != deploy.id and again.state == State.WAITING
