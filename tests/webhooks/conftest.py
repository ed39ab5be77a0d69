"""Webhook test helpers: a repository backed by a real git origin, and signed deliveries in the
shape each source sends them."""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
from typing import Any

import pytest

from runs.models import Organisation, Repository
from tests.gitrepo import Origin
from webhooks.keys import add_secret

SECRET = "a-webhook-secret-for-tests"
ZERO = "0" * 40
_ids = itertools.count(1)


@pytest.fixture
def origin(tmp_path, settings) -> Origin:
    settings.CICD_DATA_DIR = tmp_path / "data"
    return Origin(tmp_path / "origin")


@pytest.fixture
def repository(db, origin) -> Repository:
    organisation = Organisation.objects.create(slug="acme", name="Acme")
    repository = Repository.objects.create(
        organisation=organisation, slug="widgets", clone_url=str(origin.path)
    )
    add_secret(repository, label="test", value=SECRET)
    return repository


@pytest.fixture
def enqueued(monkeypatch) -> list[int]:
    """The deliveries the views queued for processing (instead of sending Celery messages)."""
    queued: list[int] = []
    monkeypatch.setattr("webhooks.views._enqueue", queued.append)
    monkeypatch.setattr("webhooks.views._enqueue_after_commit", queued.append)
    return queued


def sign(source: str, body: bytes, secret: str = SECRET) -> dict[str, str]:
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "github": {"X-Hub-Signature-256": f"sha256={digest}"},
        "gitea": {"X-Gitea-Signature": digest},
        "gitlab": {"X-Gitlab-Token": secret},
        "git": {"X-Cicd-Signature-256": f"sha256={digest}"},
    }[source]


_EVENT_HEADER = {
    "github": "X-GitHub-Event",
    "gitea": "X-Gitea-Event",
    "gitlab": "X-Gitlab-Event",
    "git": "X-Cicd-Event",
}
_DELIVERY_HEADER = {
    "github": "X-GitHub-Delivery",
    "gitea": "X-Gitea-Delivery",
    "gitlab": "Idempotency-Key",
    "git": "X-Cicd-Delivery",
}


def headers_for(source: str, event: str, delivery_id: str) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        _EVENT_HEADER[source]: event,
        _DELIVERY_HEADER[source]: delivery_id,
    }


def push_payload(source: str, ref: str, before: str, after: str) -> tuple[str, dict[str, Any]]:
    """(event header value, payload) of a push as `source` sends it."""
    if source == "git":
        return "push", {
            "pusher": "alice",
            "updates": [{"ref": ref, "before": before, "after": after}],
        }
    payload: dict[str, Any] = {
        "ref": ref,
        "before": before,
        "after": after,
        "created": before == ZERO,
        "deleted": after == ZERO,
        "repository": {"id": 1, "full_name": "acme/widgets"},
        "pusher": {"name": "alice", "login": "alice", "username": "alice"},
        "sender": {"login": "alice", "username": "alice"},
    }
    if source == "gitlab":
        payload.update(user_username="alice", checkout_sha=after, object_kind="push")
        return ("Tag Push Hook" if ref.startswith("refs/tags/") else "Push Hook"), payload
    return "push", payload


def pull_request_payload(
    source: str,
    *,
    number: int,
    action: str,
    head_sha: str,
    head_branch: str,
    base_branch: str,
    base_sha: str,
    fork: bool = False,
) -> tuple[str, dict[str, Any]]:
    if source == "gitlab":
        attributes = {
            "iid": number,
            "action": {"opened": "open", "reopened": "reopen", "synchronize": "update"}[action],
            "source_branch": head_branch,
            "target_branch": base_branch,
            "source_project_id": 99 if fork else 1,
            "target_project_id": 1,
            "last_commit": {"id": head_sha},
            "diff_refs": {"base_sha": base_sha, "head_sha": head_sha},
            "title": "a change",
        }
        if action == "synchronize":
            attributes["oldrev"] = base_sha
        return "Merge Request Hook", {
            "object_kind": "merge_request",
            "user": {"username": "bob"},
            "object_attributes": attributes,
        }
    base_repo = {"id": 1, "full_name": "acme/widgets"}
    head_repo = {"id": 99, "full_name": "mallory/widgets"} if fork else base_repo
    gitea_action = {"synchronize": "synchronized"}.get(action, action)
    return "pull_request", {
        "action": gitea_action if source == "gitea" else action,
        "number": number,
        "pull_request": {
            "number": number,
            "title": "a change",
            "head": {"ref": head_branch, "sha": head_sha, "repo": head_repo},
            "base": {"ref": base_branch, "sha": base_sha, "repo": base_repo},
        },
        "sender": {"login": "bob", "username": "bob"},
    }


def post(
    client,
    source: str,
    event: str,
    payload: Any,
    *,
    delivery_id: str | None = None,
    secret: str = SECRET,
    path: str = "acme/widgets",
    body: bytes | None = None,
):
    body = body if body is not None else json.dumps(payload).encode()
    delivery_id = delivery_id or f"delivery-{next(_ids)}"
    headers = headers_for(source, event, delivery_id) | sign(source, body, secret)
    return client.generic(
        "POST",
        f"/hooks/{source}/{path}",
        body,
        content_type=headers.pop("Content-Type"),
        headers=headers,
    )
