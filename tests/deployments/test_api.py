"""Environments, reviews, deployments and rollbacks through the JSON API, as each persona, with
every answer checked against the OpenAPI description."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone
from jsonschema import Draft202012Validator

from deployments.models import Deployment, DeploymentStep
from runs.models import AuditEntry
from runs.states import State
from tests.api.test_openapi import schema_for

from .conftest import call, jobs_of, waiting_run

pytestmark = pytest.mark.django_db

ENVIRONMENTS = "/api/v1/repos/acme/widgets/environments"


def checked(client, world, persona, method, path, template, body=None, *, status):
    """Call, check the status, and check the answer against the documented schema."""
    response = call(client, world, persona, method, path, body)
    assert response.status_code == status, response.content
    schema = schema_for(template, method.lower(), status)
    errors = list(Draft202012Validator(schema).iter_errors(response.json()))
    assert not errors, (path, status, [error.message for error in errors[:5]])
    return response.json()


def deployment(environment, version: int, state=Deployment.SUCCESS, **fields) -> Deployment:
    finished = timezone.now() - timedelta(minutes=10 - version)
    values = {
        "environment": environment,
        "image": f"widgets:{version}",
        "image_digest": f"sha256:{version}" + "0" * 63,
        "strategy": "rolling",
        "request": {"service": "widgets", "image": f"widgets:{version}", "env": {"KEY": "v"}},
        "state": state,
        "started_at": finished - timedelta(seconds=20),
        "finished_at": finished,
    }
    return Deployment.objects.create(**(values | fields))


def test_reviews_through_the_api(client, api_world):
    world = api_world
    world.environment(required_approvals=2, reviewers=["reviewer", "second"])
    _run, deploy = waiting_run(world)
    approve, reject = f"/api/v1/jobs/{deploy.id}/approve", f"/api/v1/jobs/{deploy.id}/reject"
    approve_doc, reject_doc = "/api/v1/jobs/{job_id}/approve", "/api/v1/jobs/{job_id}/reject"

    checked(client, world, "outsider", "POST", approve, approve_doc, status=404)
    refused = checked(client, world, "reader", "POST", approve, approve_doc, status=403)
    assert "rita is not a reviewer of environment production" in refused["error"]
    bad = checked(client, world, "reviewer", "POST", approve, approve_doc, {"comment": 3},
                  status=400)  # fmt: skip
    assert bad["fields"] == {"comment": "must be a string"}

    answer = checked(
        client, world, "reviewer", "POST", approve, approve_doc, {"comment": "lgtm"}, status=200
    )
    assert answer["job"]["state"] == State.WAITING  # one of two approvals
    assert answer["approval"] == {
        "reviewer": "bob",
        "decision": "approved",
        "comment": "lgtm",
        "at": answer["approval"]["at"],
    }
    assert answer["gate"]["environment"] == "production" and answer["gate"]["state"] == "pending"
    twice = checked(client, world, "reviewer", "POST", approve, approve_doc, status=409)
    assert twice["error"] == f"bob has already approved job {deploy.id}"

    no_reason = checked(client, world, "second", "POST", reject, reject_doc, status=400)
    assert no_reason["fields"] == {"comment": "is required: say why the deployment is rejected"}
    rejected = checked(
        client, world, "second", "POST", reject, reject_doc, {"comment": "too risky"}, status=200
    )
    assert rejected["job"]["state"] == State.FAILURE
    assert rejected["job"]["error"] == "rejected by carol: too risky"
    assert rejected["gate"]["state"] == "rejected"
    assert [a["decision"] for a in rejected["gate"]["approvals"]] == ["approved", "rejected"]

    entries = AuditEntry.objects.filter(action__startswith="environment.").order_by("id")
    assert [(e.action, e.actor) for e in entries] == [
        ("environment.review_refused", "otto"),
        ("environment.review_refused", "rita"),
        ("environment.approve", "bob"),
        ("environment.review_refused", "bob"),
        ("environment.reject", "carol"),
    ]
    assert entries[2].detail["via"] == "token"


def test_a_review_needs_the_write_scope_and_a_job_that_exists(client, api_world):
    from runs.api import create_token

    reading = create_token(api_world.users["reviewer"], name="r", scopes=["read"])
    response = client.post("/api/v1/jobs/1/approve", headers={"Authorization": f"Bearer {reading}"})
    assert response.status_code == 403 and "'write' scope" in response.json()["error"]
    missing = call(client, api_world, "reviewer", "POST", f"/api/v1/jobs/{2**63}/approve")
    assert missing.status_code == 404


def test_environments_their_detail_and_history(client, api_world):
    world = api_world
    environment = world.environment(
        required_approvals=1, reviewers=["reviewer"], allowed_refs=["main"], wait_timer_minutes=5
    )
    world.environment("staging")
    run, deploy = waiting_run(world)
    old = deployment(environment, 1, run=run, job=jobs_of(run)["build"])
    current = deployment(environment, 2)
    rolled_back = deployment(environment, 3, Deployment.ROLLED_BACK, reason="error rate 40%")
    DeploymentStep.objects.create(
        deployment=rolled_back,
        index=0,
        name="shift 5%",
        outcome="failed",
        detail={"error_rate": 40.0},
        started_at=timezone.now(),
        finished_at=timezone.now(),
    )

    listed = checked(
        client, world, "reader", "GET", ENVIRONMENTS,
        "/api/v1/repos/{organisation}/{repository}/environments", status=200,
    )  # fmt: skip
    assert [e["name"] for e in listed["environments"]] == ["production", "staging"]
    production = listed["environments"][0]
    assert production["rules"] == {
        "required_approvals": 1,
        "reviewers": ["bob"],
        "reviewer_role": None,
        "prevent_self_review": False,
        "allowed_refs": ["main"],
        "wait_timer_minutes": 5,
    }
    assert production["current"]["id"] == current.id
    assert (production["waiting"], production["lock"]) == (1, None)
    checked(client, world, "outsider", "GET", ENVIRONMENTS,
            "/api/v1/repos/{organisation}/{repository}/environments", status=404)  # fmt: skip

    detail_doc = "/api/v1/repos/{organisation}/{repository}/environments/{name}"
    detail = checked(
        client, world, "reader", "GET", f"{ENVIRONMENTS}/production", detail_doc, status=200
    )
    [waiting] = detail["waiting_jobs"]
    assert waiting["job"]["id"] == deploy.id and waiting["actor"] == "alice"
    assert waiting["gate"]["url"] == f"https://widgets.example/{run.sha}"
    assert detail["active"] == []
    missing = checked(client, world, "reader", "GET", f"{ENVIRONMENTS}/nowhere", detail_doc,
                      status=404)  # fmt: skip
    assert missing["error"] == "no environment 'nowhere' in acme/widgets"

    history_doc = detail_doc + "/deployments"
    page = checked(client, world, "reader", "GET", f"{ENVIRONMENTS}/production/deployments?limit=2",
                   history_doc, status=200)  # fmt: skip
    assert [d["id"] for d in page["deployments"]] == [rolled_back.id, current.id]
    assert page["next"] == current.id
    rest = checked(
        client, world, "reader", "GET",
        f"{ENVIRONMENTS}/production/deployments?limit=2&after={page['next']}",
        history_doc, status=200,
    )  # fmt: skip
    assert [d["id"] for d in rest["deployments"]] == [old.id] and rest["next"] is None
    assert rest["deployments"][0]["run_number"] == run.number
    checked(client, world, "reader", "GET", f"{ENVIRONMENTS}/production/deployments?limit=0",
            history_doc, status=400)  # fmt: skip

    one = checked(client, world, "reader", "GET", f"/api/v1/deployments/{rolled_back.id}",
                  "/api/v1/deployments/{deployment_id}", status=200)  # fmt: skip
    assert one["deployment"]["state"] == "rolled_back"
    assert one["deployment"]["reason"] == "error rate 40%"
    assert [(s["name"], s["outcome"]) for s in one["steps"]] == [("shift 5%", "failed")]
    assert one["request"]["env"] == {"KEY": "***"}  # the containers' environment may be secret
    checked(client, world, "outsider", "GET", f"/api/v1/deployments/{rolled_back.id}",
            "/api/v1/deployments/{deployment_id}", status=404)  # fmt: skip


def test_rollback_through_the_api(client, api_world):
    world = api_world
    environment = world.environment()
    path = f"{ENVIRONMENTS}/production/rollback"
    doc = "/api/v1/repos/{organisation}/{repository}/environments/{name}/rollback"
    nothing = checked(client, world, "writer", "POST", path, doc, status=409)
    assert "has no successful deployment" in nothing["error"]
    v1 = deployment(environment, 1)
    deployment(environment, 2)

    checked(client, world, "reader", "POST", path, doc, status=403)
    checked(client, world, "outsider", "POST", path, doc, status=404)
    bad = checked(client, world, "writer", "POST", path, doc, {"skip_analysis": "yes"}, status=400)
    assert bad["fields"] == {"skip_analysis": "must be true or false"}
    answer = checked(
        client, world, "writer", "POST", path, doc, {"skip_analysis": True}, status=202
    )
    queued = answer["deployment"]
    assert (queued["state"], queued["rollback_of"], queued["triggered_by"]) == (
        "queued",
        v1.id,
        "walt",
    )
    assert queued["image_digest"] == v1.image_digest and queued["skip_analysis"] is True
    entry = AuditEntry.objects.get(action="deployment.rollback")
    assert entry.detail["via"] == "token" and entry.detail["deployment"] == queued["id"]
    again = checked(client, world, "writer", "POST", path, doc, status=409)
    assert "already queued" in again["error"]
