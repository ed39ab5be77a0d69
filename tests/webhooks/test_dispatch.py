"""Manual dispatch with typed inputs: through the API (token auth, the write role on the
repository), the CLI client and the management command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from django.contrib.auth import get_user_model

from runs.api import create_token
from runs.models import ApiToken, AuditEntry, RepositoryRole, Run

DEPLOY = """\
on:
  workflow_dispatch:
    inputs:
      level:
        type: choice
        options: [debug, info]
        default: info
      dry-run:
        type: boolean
        default: false
      replicas:
        type: number
        required: true
      note:
        type: string
jobs:
  deploy:
    runs-on: linux
    steps:
      - run: echo "${{ inputs.level }} ${{ inputs.replicas }}"
"""
PUSH_ONLY = "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo\n"


@pytest.fixture
def workflows(origin):
    return origin.commit(
        {".cicd/workflows/deploy.yml": DEPLOY, ".cicd/workflows/ci.yml": PUSH_ONLY}
    )


@pytest.fixture
def token(db, repository) -> str:
    user = get_user_model().objects.create_user("alice", password="x")
    RepositoryRole.objects.create(user=user, repository=repository, role="write")
    return create_token(user, name="test", scopes=["read", "write"])


def dispatch(client, token, body, path="acme/widgets"):
    return client.post(
        f"/api/v1/repos/{path}/dispatches",
        body if isinstance(body, bytes) else json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"} if token else {},
    )


@pytest.mark.django_db
def test_dispatch_coerces_inputs_and_fills_defaults(client, repository, workflows, token):
    response = dispatch(
        client,
        token,
        {"workflow": ".cicd/workflows/deploy.yml", "ref": "main", "inputs": {"replicas": "3"}},
    )
    assert response.status_code == 201, response.content
    run = Run.objects.get(id=response.json()["id"])
    assert (run.event, run.ref, run.sha, run.actor) == (
        "workflow_dispatch", "refs/heads/main", workflows, "alice"
    )  # fmt: skip
    assert run.inputs == {"level": "info", "dry-run": False, "replicas": 3, "note": ""}
    assert AuditEntry.objects.filter(action="run.dispatch", actor="alice").count() == 1
    assert ApiToken.objects.get().last_used_at is not None


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"workflow": ".cicd/workflows/deploy.yml", "inputs": {}}, 422, "'replicas' is required"),
        (
            {"workflow": ".cicd/workflows/deploy.yml", "inputs": {"replicas": 1, "level": "x"}},
            422,
            "level",
        ),
        (
            {"workflow": ".cicd/workflows/deploy.yml", "inputs": {"replicas": 1, "typo": "1"}},
            422,
            "typo",
        ),
        ({"workflow": ".cicd/workflows/ci.yml"}, 422, "no workflow_dispatch trigger"),
        ({"workflow": ".cicd/workflows/nothing.yml"}, 404, "no workflow"),
        ({"workflow": ".cicd/workflows/deploy.yml", "ref": "no-such-branch"}, 422, "no-such"),
        ({"ref": "main"}, 400, "'workflow' is required"),
        ({"workflow": ".cicd/workflows/deploy.yml", "inputs": [1]}, 400, "'inputs' must be"),
        (b"{oops", 400, "not valid JSON"),
        (b"[]", 400, "JSON object"),
    ],
)
def test_bad_dispatches_say_what_is_wrong_and_start_nothing(
    client, repository, workflows, token, body, status, needle
):
    response = dispatch(client, token, body)
    assert response.status_code == status, response.content
    answer = response.json()
    assert needle in " ".join([answer["error"], *answer["problems"]])
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_dispatch_needs_a_write_scoped_token_of_a_user_with_the_write_role(
    client, repository, workflows, token
):
    body = {"workflow": ".cicd/workflows/deploy.yml", "inputs": {"replicas": 1}}
    users = get_user_model().objects
    assert dispatch(client, None, body).status_code == 401
    assert dispatch(client, "cicd_nonsense", body).status_code == 401
    # A writer's token without the write scope.
    alice = users.get(username="alice")
    assert dispatch(client, create_token(alice, name="r", scopes=["read"]), body).status_code == 403
    # A token with the write scope, of a user who may only read the repository.
    reader = users.create_user("bob")
    RepositoryRole.objects.create(user=reader, repository=repository, role="read")
    refused = dispatch(client, create_token(reader, name="w", scopes=["write"]), body)
    assert refused.status_code == 403 and "write role" in refused.json()["error"]
    # Someone who may not even see the private repository: it does not exist for them.
    outsider = users.create_user("eve")
    hidden = dispatch(client, create_token(outsider, name="w", scopes=["write"]), body)
    assert hidden.status_code == 404 and hidden.json()["error"] == "no repository acme/widgets"
    # Staff status alone no longer grants anything.
    staff = users.create_user("sam", is_staff=True)
    assert (
        dispatch(client, create_token(staff, name="w", scopes=["write"]), body).status_code == 404
    )
    ApiToken.objects.filter(user__username="alice").update(revoked_at="2026-01-01T00:00:00Z")
    assert dispatch(client, token, body).status_code == 401
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_a_request_id_makes_a_retried_dispatch_return_the_same_run(
    client, repository, workflows, token
):
    body = {
        "workflow": ".cicd/workflows/deploy.yml",
        "inputs": {"replicas": 2},
        "request_id": "retry-safe-1",
    }
    first, second = dispatch(client, token, body), dispatch(client, token, body)
    assert first.json()["id"] == second.json()["id"]
    assert Run.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_cli_dispatches_through_the_api(live_server, repository, workflows, token):
    command = [
        sys.executable, "-m", "cicd.cli", "dispatch", "acme/widgets", ".cicd/workflows/deploy.yml",
        "--ref", "main", "-i", "replicas=4", "-i", "dry-run=true",
        "--server", live_server.url, "--token", token,
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    run = Run.objects.get()
    assert done.stdout.startswith(f"run {run.id} (acme/widgets #1)")
    assert run.inputs["replicas"] == 4 and run.inputs["dry-run"] is True

    refused = subprocess.run(
        [*command[:-6], "-i", "level=loud", "--server", live_server.url, "--token", token],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 1
    assert "level" in refused.stderr and "Traceback" not in refused.stderr
    assert Run.objects.count() == 1
