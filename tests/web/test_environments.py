"""The environment pages, the approvals page and the review form, through Django's test client:
who may see and do what (every page and POST, every persona), a reviewer's approval or
rejection moving the waiting job on, the live status document, the history with a rolled-back
deployment's reason, and the one-action rollback form."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from deployments.models import Approval, Deployment, DeploymentStep, Environment
from runs.models import AuditEntry, Job, Repository
from runs.states import State

from .conftest import start_run
from .test_pages import elements

PERSONAS_WHO_READ = ["owner", "reader", "writer"]
PERSONAS_WHO_DO_NOT = ["outsider", "anonymous"]

DEPLOY = """\
name: Release
on: push
jobs:
  deploy:
    runs-on: linux
    environment:
      name: production
      url: https://shop.example.test
    steps: [{run: make deploy}]
"""

V1 = "sha256:" + "1" * 64
V2 = "sha256:" + "2" * 64
V3 = "sha256:" + "3" * 64
ROLLED_BACK_REASON = (
    "canary analysis at step 1 (5 %): error rate 38.2 % over 61 requests "
    "(server web-v3-1: 23 of 61 answered 5xx), above the threshold max-error-rate 5.0 %\n"
    "traffic returned to shop:v2 (sha256:222222222222); the v3 replicas were removed"
)


def production(repository: Repository, **rules) -> Environment:
    """The environment the deploy job waits at: one approval from the write role or higher."""
    fields = {"required_approvals": 1, "reviewer_role": "write"} | rules
    environment, _ = Environment.objects.update_or_create(
        repository=repository, name="production", defaults=fields
    )
    return environment


def waiting_job(repository: Repository) -> Job:
    run = start_run(repository, DEPLOY, actor="alice")
    job = Job.objects.get(run=run)
    assert job.state == State.WAITING, job.error
    return job


def deployment(environment: Environment, digest: str, state: str, **fields) -> Deployment:
    now = timezone.now()
    values = {
        "environment": environment,
        "image": f"shop:{digest[7]}",
        "image_digest": digest,
        "sha": digest[7] * 40,
        "ref": "refs/heads/main",
        "strategy": "canary",
        "state": state,
        "triggered_by": "alice",
        "started_at": now,
        "finished_at": None if state in (Deployment.QUEUED, Deployment.IN_PROGRESS) else now,
    } | fields
    return Deployment.objects.create(**values)


def urls(repository: Repository, job: Job | None = None) -> dict[str, str]:
    base = f"/{repository.organisation.slug}/{repository.slug}"
    found = {
        "environments": f"{base}/environments/",
        "environment": f"{base}/environments/production/",
        "status": f"{base}/environments/production/status.json",
    }
    if job is not None:
        found["job"] = f"{base}/runs/{job.run.number}/jobs/{job.id}/"
    return found


def review_url(job: Job) -> str:
    repository = job.run.repository
    base = f"/{repository.organisation.slug}/{repository.slug}"
    return f"{base}/runs/{job.run.number}/jobs/{job.id}/review/"


def rollback_url(repository: Repository) -> str:
    return f"/{repository.organisation.slug}/{repository.slug}/environments/production/rollback/"


def messages_of(response) -> str:
    return " ".join(str(message) for message in response.context["messages"])


# ------------------------------------------------------------------------------ permissions


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS_WHO_DO_NOT)
def test_a_private_repositorys_environments_do_not_exist_for_outsiders_and_anonymous_visitors(
    request, world, persona
):
    client = request.getfixturevalue(persona)
    environment = production(world.private)
    deployment(environment, V1, Deployment.SUCCESS, reason="top secret")
    job = waiting_job(world.private)
    for page, url in urls(world.private, job).items():
        response = client.get(url)
        assert response.status_code == 404, page
        assert b"top secret" not in response.content
    assert client.post(rollback_url(world.private)).status_code == 404
    refused = client.post(review_url(job), {"decision": "approve", "comment": "sure"})
    assert refused.status_code == 404
    assert Job.objects.get(id=job.id).state == State.WAITING
    assert not Approval.objects.exists()
    assert Deployment.objects.count() == 1


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS_WHO_READ)
def test_members_with_a_role_read_every_environment_page(request, world, persona):
    client = request.getfixturevalue(persona)
    production(world.private)
    job = waiting_job(world.private)
    for page, url in urls(world.private, job).items():
        assert client.get(url).status_code == 200, page


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS_WHO_DO_NOT)
def test_a_public_repositorys_environments_are_readable_by_anyone_but_not_controllable(
    request, world, persona
):
    client = request.getfixturevalue(persona)
    environment = production(world.public)
    deployment(environment, V1, Deployment.SUCCESS)
    deployment(environment, V2, Deployment.SUCCESS)
    job = waiting_job(world.public)
    for page, url in urls(world.public, job).items():
        assert client.get(url).status_code == 200, page
    page = client.get(urls(world.public)["environment"])
    assert not elements(page, id="rollback-form") and not elements(page, "review-form")
    assert not elements(client.get(urls(world.public, job)["job"]), "review-form")
    assert client.post(rollback_url(world.public)).status_code == 403
    response = client.post(review_url(job), {"decision": "approve"}, follow=True)
    assert "not a reviewer of environment production" in messages_of(response)
    assert Job.objects.get(id=job.id).state == State.WAITING
    assert not Approval.objects.exists()
    assert Deployment.objects.count() == 2


@pytest.mark.django_db
def test_a_reader_sees_the_environment_without_forms_and_is_refused_both_posts(world, reader):
    environment = production(world.private)
    deployment(environment, V1, Deployment.SUCCESS)
    deployment(environment, V2, Deployment.SUCCESS)
    job = waiting_job(world.private)

    page = reader.get(urls(world.private)["environment"])
    assert page.status_code == 200
    assert [card["data-job-id"] for card in elements(page, "waiting-job")] == [str(job.id)]
    assert not elements(page, "review-form")
    assert not elements(page, id="rollback-form")
    job_page = reader.get(urls(world.private, job)["job"])
    assert elements(job_page, id="gate-panel") and not elements(job_page, "review-form")
    assert not elements(reader.get("/approvals/"), "waiting-job")

    assert reader.post(rollback_url(world.private), {"skip_analysis": "on"}).status_code == 403
    response = reader.post(
        review_url(job), {"decision": "approve", "comment": "looks fine"}, follow=True
    )
    assert response.status_code == 200
    assert "rita is not a reviewer of environment production" in messages_of(response)
    assert Job.objects.get(id=job.id).state == State.WAITING
    assert not Approval.objects.exists()
    assert Deployment.objects.count() == 2
    assert AuditEntry.objects.filter(
        action="deployment.rollback.denied", actor="rita", repository=world.private
    ).exists()
    assert AuditEntry.objects.filter(action="environment.review_refused", actor="rita").exists()


@pytest.mark.django_db
def test_review_and_rollback_only_answer_post(world, owner):
    production(world.private)
    job = waiting_job(world.private)
    assert owner.get(review_url(job)).status_code == 405
    assert owner.get(rollback_url(world.private)).status_code == 405


@pytest.mark.django_db
def test_an_unknown_environment_or_a_bad_cursor_is_answered_clearly(world, owner):
    production(world.private)
    assert owner.get("/acme/secret/environments/staging/").status_code == 404
    assert owner.get("/acme/secret/environments/staging/status.json").status_code == 404
    assert owner.post("/acme/secret/environments/staging/rollback/").status_code == 404
    response = owner.get("/acme/secret/environments/production/?after=x²")
    assert response.status_code == 400
    assert "must be a deployment id; got " in response.content.decode()


# -------------------------------------------------------------------------------- approvals


@pytest.mark.django_db
def test_a_reviewer_approves_on_the_approvals_page_and_the_job_moves_on(world, writer, owner):
    production(world.private)
    job = waiting_job(world.private)

    page = writer.get("/approvals/")
    cards = elements(page, "waiting-job")
    assert [(card["data-job-id"], card["data-environment"]) for card in cards] == [
        (str(job.id), "production")
    ]
    body = page.content.decode()
    assert "acme/secret" in body and "Release #" in body and "alice" in body
    assert "0 of 1" in body
    assert elements(page, "review-approve") and elements(page, "review-reject")

    response = writer.post(
        review_url(job),
        {"decision": "approve", "comment": "ship it", "next": "/approvals/"},
    )
    assert response.status_code == 302 and response["Location"] == "/approvals/"

    assert Job.objects.get(id=job.id).state == State.QUEUED
    approval = Approval.objects.get()
    assert (approval.reviewer.get_username(), approval.decision, approval.comment) == (
        "walter",
        Approval.APPROVED,
        "ship it",
    )
    entry = AuditEntry.objects.get(action="environment.approve")
    assert (entry.actor, entry.detail["comment"], entry.detail["via"]) == (
        "walter",
        "ship it",
        "web",
    )
    after = writer.get("/approvals/")
    assert "Approved deploy" in messages_of(after)
    assert elements(after, id="no-approvals")
    assert not elements(owner.get("/approvals/"), "waiting-job")


@pytest.mark.django_db
def test_a_reviewer_rejects_on_the_job_page_and_the_job_fails_with_the_comment(world, owner):
    production(world.private, required_approvals=2)
    job = waiting_job(world.private)
    job_page = urls(world.private, job)["job"]

    page = owner.get(job_page)
    panel = page.content.decode()
    assert elements(page, id="gate-panel")
    assert "Waiting for approval to deploy to" in panel and "0 of 2" in panel
    assert elements(page, "review-form")

    response = owner.post(
        review_url(job),
        {"decision": "reject", "comment": "not during the sale", "next": "https://evil.test/"},
    )
    # A `next` outside the site is ignored: the form returns to the job page.
    assert response["Location"] == job_page
    failed = Job.objects.get(id=job.id)
    assert failed.state == State.FAILURE
    assert "not during the sale" in failed.error
    assert not elements(owner.get(job_page), id="gate-panel")


@pytest.mark.django_db
def test_the_run_page_shows_the_jobs_waiting_to_deploy_with_the_review_form(world, owner, reader):
    production(world.private)
    job = waiting_job(world.private)
    base = f"/{world.private.organisation.slug}/{world.private.slug}"
    run_page = f"{base}/runs/{job.run.number}/"

    page = owner.get(run_page)
    assert elements(page, id="run-gates")
    assert [card["data-job-id"] for card in elements(page, "waiting-job")] == [str(job.id)]
    [form] = elements(page, "review-form")
    assert form["action"] == review_url(job)
    # A reader sees the wait, without the form.
    seen = reader.get(run_page)
    assert elements(seen, "waiting-job") and not elements(seen, "review-form")

    response = owner.post(
        review_url(job), {"decision": "approve", "comment": "ship it", "next": run_page}
    )
    assert response["Location"] == run_page  # the form returns to the run page
    assert Job.objects.get(id=job.id).state == State.QUEUED
    assert not elements(owner.get(run_page), id="run-gates")


@pytest.mark.django_db
def test_a_second_review_and_a_bad_decision_are_refused_as_messages(world, owner, writer):
    production(world.private, required_approvals=2)
    job = waiting_job(world.private)
    assert writer.post(review_url(job), {"decision": "approve"}).status_code == 302
    again = writer.post(review_url(job), {"decision": "approve"}, follow=True)
    assert "walter has already approved" in messages_of(again)
    bad = owner.post(review_url(job), {"decision": "maybe"}, follow=True)
    assert "decision must be 'approve' or 'reject'" in messages_of(bad)
    long = owner.post(review_url(job), {"decision": "approve", "comment": "x" * 5000}, follow=True)
    assert "longer than 4000 characters" in messages_of(long)
    assert Approval.objects.count() == 1
    assert Job.objects.get(id=job.id).state == State.WAITING
    page = owner.get(urls(world.private)["environment"]).content.decode()
    assert "1 of 2" in page and "walter approved" in page


@pytest.mark.django_db
def test_the_wait_timer_shows_what_is_left(world, owner):
    production(world.private, required_approvals=0, reviewer_role="", wait_timer_minutes=30)
    job = waiting_job(world.private)
    page = owner.get(urls(world.private, job)["job"])
    text = page.content.decode()
    assert "no review needed" in text
    timer = elements(page, "waiting-timer")
    assert timer
    assert "29m" in text or "30m" in text
    # Nothing to review: no form, and the job is not on anyone's approvals page.
    assert not elements(page, "review-form")
    assert not elements(owner.get("/approvals/"), "waiting-job")


# ------------------------------------------------------------------------------------ pages


@pytest.mark.django_db
def test_the_environment_list_summarises_rules_what_runs_now_and_the_last_deployment(
    world, owner, reader, writer
):
    environment = production(world.private, allowed_refs=["main", "release/*"])
    environment.reviewers.add(get_user_model().objects.get(username="rita"))
    Environment.objects.create(repository=world.private, name="dev")
    deployment(environment, V1, Deployment.SUCCESS)
    deployment(environment, V2, Deployment.IN_PROGRESS)
    waiting_job(world.private)

    repository_page = owner.get("/acme/secret/")
    assert elements(repository_page, id="environments-link")[0]["href"] == (
        "/acme/secret/environments/"
    )
    page = owner.get("/acme/secret/environments/")
    rows = {row["data-environment"]: row for row in elements(page, "environment-row")}
    assert list(rows) == ["dev", "production"]
    body = page.content.decode()
    # rita (listed), walter (write role) and olivia (organisation admin): three may review.
    assert "1 of 3 reviewers (rita; the write role or higher)" in body
    assert "main, release/*" in body
    assert "no protection rules" in body  # dev
    assert "111111111111" in body and "222222222222" not in body  # what runs now is v1
    assert 'data-state="in_progress"' in body and "1 job" in body


@pytest.mark.django_db
def test_the_environment_page_shows_now_the_deployment_in_progress_the_lock_and_the_history(
    world, writer
):
    environment = production(world.private)
    run = start_run(world.private, DEPLOY)
    first = deployment(environment, V1, Deployment.SUCCESS, run=run)
    rolled_back = deployment(
        environment, V3, Deployment.ROLLED_BACK, reason=ROLLED_BACK_REASON, triggered_by="bob"
    )
    current = deployment(
        environment,
        V2,
        Deployment.SUCCESS,
        approvals=[{"reviewer": "walter", "decision": "approved", "comment": "go"}],
    )
    moving = deployment(environment, V3, Deployment.IN_PROGRESS, traffic={"v2": 75, "v3": 25})
    started = timezone.now() - timedelta(seconds=90)
    DeploymentStep.objects.create(
        deployment=moving,
        index=0,
        name="start 2 replicas",
        outcome="success",
        started_at=started,
        finished_at=started + timedelta(seconds=12),
    )
    DeploymentStep.objects.create(
        deployment=moving, index=1, name="shift 25 % to v3", started_at=timezone.now()
    )
    DeploymentStep.objects.create(
        deployment=rolled_back,
        index=0,
        name="analyse step 1",
        outcome="failed",
        detail={"error_rate": 38.2},
        started_at=started,
        finished_at=started + timedelta(seconds=30),
    )
    Environment.objects.filter(id=environment.id).update(
        lock_deployment=moving, lock_expires_at=timezone.now() + timedelta(seconds=30)
    )

    page = writer.get("/acme/secret/environments/production/")
    body = page.content.decode()

    now = elements(page, id="now-facts")[0]
    assert now["data-deployment-id"] == str(current.id)
    assert "walter approved: go" in body
    live = elements(page, id="live")[0]
    assert (live["data-deployment-id"], live["data-state"]) == (str(moving.id), "in_progress")
    segments = elements(page, "traffic-segment")
    assert [(s["data-version"], s["data-percent"]) for s in segments] == [
        ("v2", "75"),
        ("v3", "25"),
    ]
    assert "width: 75%" in segments[0]["style"]
    steps = elements(page, "deploy-step")
    assert [(s["data-index"], s["data-state"]) for s in steps[:2]] == [
        ("0", "success"),
        ("1", "running"),
    ]
    assert "12s" in body
    assert f'held by deployment <span id="lock-holder">#{moving.id}</span>' in body

    rows = elements(page, "deployment-row")
    assert [row["data-deployment-id"] for row in rows] == [
        str(d.id) for d in (moving, current, rolled_back, first)
    ]
    # The reason in full, not cut: which check, which value, which threshold.
    assert ROLLED_BACK_REASON in body
    assert "error_rate: 38.2" in body
    assert f'href="/acme/secret/runs/{run.number}/"' in body


@pytest.mark.django_db
def test_the_history_is_paged_by_a_cursor(world, reader):
    environment = production(world.private)
    made = [deployment(environment, V1, Deployment.SUCCESS) for _ in range(35)]
    first = reader.get("/acme/secret/environments/production/")
    rows = [int(row["data-deployment-id"]) for row in elements(first, "deployment-row")]
    assert rows == [d.id for d in reversed(made)][:30]
    older = elements(first, id="page-next")[0]["href"]
    assert older == f"?after={rows[-1]}"
    second = reader.get("/acme/secret/environments/production/" + older)
    assert [int(row["data-deployment-id"]) for row in elements(second, "deployment-row")] == [
        d.id for d in reversed(made[:5])
    ]
    assert not elements(second, id="page-next") and elements(second, id="page-first")


@pytest.mark.django_db
def test_status_json_follows_the_deployment_in_progress_then_slows_down(world, reader):
    environment = production(world.private)
    current = deployment(environment, V1, Deployment.SUCCESS)
    # Named as the deployment engine names versions: the new one is found by its digest.
    old_version, new_version = "shop:1 (sha256:111111111111)", "shop:2 (sha256:222222222222)"
    moving = deployment(
        environment, V2, Deployment.IN_PROGRESS, traffic={new_version: 5, old_version: 95}
    )
    DeploymentStep.objects.create(
        deployment=moving,
        index=0,
        name="shift 5 % to shop:2",
        detail={"weights": "95/5"},
        started_at=timezone.now(),
    )
    production_job = waiting_job(world.private)
    assert production_job

    status = reader.get("/acme/secret/environments/production/status.json")
    assert status.status_code == 200
    assert status["Content-Type"] == "application/json"
    body = status.json()
    assert set(body) == {"environment", "deployment", "current", "lock", "waiting", "poll_ms"}
    assert (body["environment"], body["waiting"], body["poll_ms"], body["lock"]) == (
        "production",
        1,
        1000,
        None,
    )
    followed = body["deployment"]
    assert (followed["id"], followed["state"], followed["final"]) == (
        moving.id,
        "in_progress",
        False,
    )
    assert followed["traffic"] == [
        {"version": old_version, "percent": 95, "new": False, "colour": 0},
        {"version": new_version, "percent": 5, "new": True, "colour": 1},
    ]
    assert followed["short_digest"] == "222222222222"
    [step] = followed["steps"]
    assert (step["index"], step["name"], step["state"], step["detail"]) == (
        0,
        "shift 5 % to shop:2",
        "running",
        "weights: 95/5",
    )
    assert step["finished_at"] is None and step["started_at"]
    assert body["current"]["id"] == current.id

    Deployment.objects.filter(id=moving.id).update(
        state=Deployment.ROLLED_BACK,
        reason=ROLLED_BACK_REASON,
        traffic={old_version: 100},
        finished_at=timezone.now(),
    )
    done = reader.get("/acme/secret/environments/production/status.json").json()
    assert done["poll_ms"] == 5000
    assert (done["deployment"]["state"], done["deployment"]["final"]) == ("rolled_back", True)
    assert done["deployment"]["reason"] == ROLLED_BACK_REASON
    assert done["current"]["id"] == current.id


# --------------------------------------------------------------------------------- rollback


@pytest.mark.django_db
def test_a_writer_rolls_back_to_the_previous_version_in_one_action(world, writer):
    environment = production(world.private)
    previous = deployment(environment, V1, Deployment.SUCCESS, request={"service": "shop"})
    deployment(environment, V2, Deployment.SUCCESS, request={"service": "shop"})

    page = writer.get("/acme/secret/environments/production/")
    button = elements(page, id="rollback")
    assert button and "Roll back to shop:1 (111111111111)" in page.content.decode()

    response = writer.post(rollback_url(world.private), {"skip_analysis": "on"}, follow=True)

    assert response.status_code == 200
    rollback = Deployment.objects.order_by("-id").first()
    assert rollback.rollback_of_id == previous.id
    assert rollback.skip_analysis is True
    assert (rollback.image, rollback.image_digest) == (previous.image, V1)
    assert "Rolling production back to shop:1" in messages_of(response)


@pytest.mark.django_db
def test_a_rollback_with_no_earlier_version_says_so_instead_of_failing(world, owner):
    environment = production(world.private)
    deployment(environment, V1, Deployment.SUCCESS)
    page = owner.get("/acme/secret/environments/production/")
    assert not elements(page, id="rollback-form") and elements(page, id="no-rollback")

    response = owner.post(rollback_url(world.private), follow=True)

    assert response.status_code == 200
    assert response.redirect_chain[-1][0] == "/acme/secret/environments/production/"
    assert "no earlier" in messages_of(response).lower()
    assert Deployment.objects.count() == 1


@pytest.mark.django_db
def test_only_a_web_address_becomes_the_environments_link(world, owner):
    environment = production(world.private, url="https://shop.example.test/")
    link = elements(owner.get("/acme/secret/environments/production/"), id="environment-url")
    assert (link[0]["tag"], link[0]["href"]) == ("a", "https://shop.example.test/")
    Environment.objects.filter(id=environment.id).update(url="javascript:alert(1)")
    page = owner.get("/acme/secret/environments/production/")
    [shown] = elements(page, id="environment-url")
    assert shown["tag"] == "code" and "href" not in shown


def test_the_page_finds_the_deployments_own_version_in_the_engines_traffic_split():
    from deployments.views import traffic_of
    from runners.deploy import version_label

    new_id, old_id = "sha256:" + "ab" * 32, "sha256:" + "cd" * 32
    deployment = Deployment(
        image_digest=new_id,
        traffic={version_label("app:v2", new_id): 25, version_label("app:v1", old_id): 75},
    )
    segments = {s["version"]: s["new"] for s in traffic_of(deployment)}
    assert segments == {"app:v2 (sha256:abababababab)": True, "app:v1 (sha256:cdcdcdcdcdcd)": False}


def test_the_web_process_does_not_load_the_docker_sdk(tmp_path):
    import subprocess
    import sys

    from django.conf import settings

    script = (
        "import os, sys, django\n"
        "os.environ['DJANGO_SETTINGS_MODULE'] = 'cicd.settings'\n"
        "django.setup()\n"
        "import cicd.asgi, cicd.urls, deployments.views, deployments.api\n"
        "print(sorted(m for m in ('docker', 'runners.deploy.engine') if m in sys.modules))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "CICD_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=settings.BASE_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
