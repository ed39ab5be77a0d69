"""The environments' test world: a repository with personas (organisation admin, a listed
reviewer, a reader who is not one, a writer, an outsider, and the user who pushes), runs of a
deploy workflow through the real scheduling path, and helpers to act as a worker would."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from deployments.models import Environment
from runs.api import create_token
from runs.claims import claim_job
from runs.models import Job, Membership, Organisation, Repository, RepositoryRole, Run
from runs.scheduling import RunRequest, create_run, finish_job

PERSONAS = ("admin", "reviewer", "second", "reader", "writer", "outsider", "pusher")

WORKFLOW = """\
name: Deploy
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo build
  deploy:
    needs: build
    runs-on: ${{ github.ref_name == 'main' && 'linux' || 'other' }}
    environment:
      name: production
      url: https://widgets.example/${{ github.sha }}
    steps:
      - run: echo deploy
  smoke:
    needs: deploy
    runs-on: linux
    steps:
      - run: echo smoke
"""

_keys = itertools.count(1)


@dataclass
class World:
    repository: Repository
    users: dict[str, Any]
    tokens: dict[str, str] = field(default_factory=dict)

    def environment(self, name: str = "production", **rules: Any) -> Environment:
        """The environment with these rules (created as a workflow would, then configured)."""
        reviewers = rules.pop("reviewers", None)
        environment, _ = Environment.objects.get_or_create(repository=self.repository, name=name)
        for key, value in rules.items():
            setattr(environment, key, value)
        environment.save()
        if reviewers is not None:
            environment.reviewers.set([self.users[persona] for persona in reviewers])
        return environment


@pytest.fixture(autouse=True)
def sent_jobs(monkeypatch) -> list[int]:
    """The jobs the gates told the workers about (sent on commit, which tests without
    transactions never reach); nothing is sent to a broker, nor are deployment messages."""
    sent: list[int] = []
    monkeypatch.setattr("runs.dispatch._send", lambda *args, **kwargs: None)
    monkeypatch.setattr(
        "deployments.gates.notify_workers", lambda job_id, **kwargs: sent.append(job_id)
    )
    monkeypatch.setattr("deployments.service._send", lambda deployment_id: None)
    return sent


@pytest.fixture
def world(db) -> World:
    users_model = get_user_model()
    organisation = Organisation.objects.create(slug="acme", name="Acme")
    repository = Repository.objects.create(
        organisation=organisation, slug="widgets", clone_url="/srv/git/widgets.git"
    )
    users = {
        "admin": users_model.objects.create_user("olga"),
        "reviewer": users_model.objects.create_user("bob"),
        "second": users_model.objects.create_user("carol"),
        "reader": users_model.objects.create_user("rita"),
        "writer": users_model.objects.create_user("walt"),
        "outsider": users_model.objects.create_user("otto"),
        "pusher": users_model.objects.create_user("alice"),
    }
    Membership.objects.create(user=users["admin"], organisation=organisation, is_admin=True)
    roles = {"reviewer": "read", "second": "read", "reader": "read", "writer": "write"}
    roles["pusher"] = "write"
    for persona, role in roles.items():
        RepositoryRole.objects.create(user=users[persona], repository=repository, role=role)
    return World(repository=repository, users=users)


@pytest.fixture
def api_world(world) -> World:
    world.tokens = {
        persona: create_token(user, name="test", scopes=["read", "write"])
        for persona, user in world.users.items()
    }
    return world


def start_run(
    repository: Repository,
    source: str = WORKFLOW,
    *,
    ref: str = "refs/heads/main",
    actor: str = "alice",
    **overrides: Any,
) -> Run:
    fields = {
        "workflow_path": ".cicd/workflows/deploy.yml",
        "source": source,
        "event": "push",
        "ref": ref,
        "sha": "c0ffee" + "0" * 34,
        "idempotency_key": f"deploy-test-{next(_keys)}",
        "actor": actor,
    }
    fields.update(overrides)
    return create_run(repository, RunRequest(**fields))


def jobs_of(run: Run) -> dict[str, Job]:
    run.refresh_from_db()
    return {job.key: job for job in Job.objects.filter(run=run, attempt=run.attempt)}


def states(run: Run) -> dict[str, str]:
    return {key: job.state for key, job in jobs_of(run).items()}


def execute(run: Run, key: str, conclusion: str = "success") -> None:
    """What a worker does: claim the queued job, then report its end."""
    job = jobs_of(run)[key]
    token = claim_job(job.id, worker="test-worker", lease_seconds=60)
    assert token, f"{key} was not claimable ({job.state})"
    assert finish_job(job.id, conclusion, token=token)


def claim(run: Run, key: str) -> tuple[Job, str]:
    job = jobs_of(run)[key]
    token = claim_job(job.id, worker="test-worker", lease_seconds=60)
    assert token, f"{key} was not claimable ({job.state})"
    job.refresh_from_db()
    return job, token


def waiting_run(world: World, **overrides: Any) -> tuple[Run, Job]:
    """A run whose deploy job waits at production (build done)."""
    run = start_run(world.repository, **overrides)
    execute(run, "build")
    return run, jobs_of(run)["deploy"]


def call(client, world: World, persona: str, method: str, path: str, body: Any = None):
    """Call the API as `persona` with its read+write token."""
    data = b"" if body is None else json.dumps(body)
    headers = {"Authorization": f"Bearer {world.tokens[persona]}"}
    return client.generic(method, path, data, content_type="application/json", headers=headers)
