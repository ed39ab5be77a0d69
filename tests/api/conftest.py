"""The API's test world: personas (superuser, organisation admin, read member, write member,
outsider, anonymous), a private and a public repository of one organisation and a private one
of another, runs in each, and helpers to call the API as any persona with a token."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from runs.api import create_token
from runs.models import Membership, Organisation, Repository, RepositoryRole, Run
from tests.api.builders import start_run

PERSONAS = ("superuser", "org_admin", "reader", "writer", "outsider", "anonymous")


@dataclass
class World:
    users: dict[str, Any]
    tokens: dict[str, str | None]
    private: Repository
    public: Repository
    foreign: Repository  # private, of another organisation
    runs: dict[str, Run] = field(default_factory=dict)


@pytest.fixture(autouse=True)
def _no_worker_messages(monkeypatch) -> None:
    """Nothing consumes job messages here: do not send them to a broker."""
    monkeypatch.setattr("runs.dispatch._send", lambda *args, **kwargs: None)


@pytest.fixture
def world(db) -> World:
    user_model = get_user_model()
    acme = Organisation.objects.create(slug="acme", name="Acme")
    globex = Organisation.objects.create(slug="globex", name="Globex")
    private = Repository.objects.create(organisation=acme, slug="secret", clone_url="/x")
    public = Repository.objects.create(
        organisation=acme, slug="open", clone_url="/y", is_public=True
    )
    foreign = Repository.objects.create(organisation=globex, slug="hidden", clone_url="/z")
    users: dict[str, Any] = {
        "superuser": user_model.objects.create_user("root", is_superuser=True, is_staff=True),
        "org_admin": user_model.objects.create_user("olga"),
        "reader": user_model.objects.create_user("rita"),
        "writer": user_model.objects.create_user("walt"),
        "outsider": user_model.objects.create_user("otto"),
        "anonymous": None,
    }
    Membership.objects.create(user=users["org_admin"], organisation=acme, is_admin=True)
    Membership.objects.create(user=users["reader"], organisation=acme)
    RepositoryRole.objects.create(user=users["reader"], repository=private, role="read")
    RepositoryRole.objects.create(user=users["writer"], repository=private, role="write")
    RepositoryRole.objects.create(user=users["writer"], repository=public, role="write")
    tokens = {
        name: create_token(user, name="test", scopes=["read", "write"]) if user else None
        for name, user in users.items()
    }
    world = World(users=users, tokens=tokens, private=private, public=public, foreign=foreign)
    for key, repository in (("private", private), ("public", public), ("foreign", foreign)):
        world.runs[key] = start_run(repository)
    return world


def call(
    client,
    world: World,
    persona: str,
    method: str,
    path: str,
    body: Any = None,
    **extra: Any,
):
    """Call the API as `persona` with its read+write token (anonymous: no header)."""
    token = world.tokens[persona]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if body is None:
        data: bytes | str = b""
    elif isinstance(body, bytes | str):
        data = body
    else:
        data = json.dumps(body)
    return client.generic(
        method, path, data, content_type="application/json", headers=headers, **extra
    )


def get(client, world: World, persona: str, path: str, **params: Any):
    token = world.tokens[persona]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return client.get(path, params, headers=headers)
