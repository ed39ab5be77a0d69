"""Personas and builders for the page tests.

One organisation, "acme", with a private repository (`acme/secret`) and a public one
(`acme/open`). The personas: the owner (organisation admin), a reader and a writer (roles on
the private repository only), an outsider (a user with no role anywhere) and the anonymous
visitor.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from runs.claims import claim_job
from runs.models import Job, LogChunk, Membership, Organisation, Repository, RepositoryRole, Run
from runs.scheduling import RunRequest, create_run, finish_job

GRAPH = """\
name: CI
on: push
jobs:
  build:
    runs-on: linux
    steps: [{run: make}]
  test:
    needs: build
    runs-on: linux
    strategy:
      matrix:
        python: ["3.11", "3.12"]
    steps: [{run: make test}]
  lint:
    runs-on: linux
    steps: [{run: make lint}]
  deploy:
    needs: [test, lint]
    runs-on: linux
    steps: [{run: make deploy}]
"""

_keys = itertools.count(1)


@dataclass
class World:
    organisation: Organisation
    private: Repository
    public: Repository


@pytest.fixture
def world(db) -> World:
    organisation = Organisation.objects.create(slug="acme", name="Acme")
    private = Repository.objects.create(
        organisation=organisation, slug="secret", clone_url="/nowhere/secret.git"
    )
    public = Repository.objects.create(
        organisation=organisation, slug="open", clone_url="/nowhere/open.git", is_public=True
    )
    return World(organisation, private, public)


def _user(name: str):
    return get_user_model().objects.create_user(name, password="a-long-password-1")


def logged_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def owner(world) -> Client:
    user = _user("olivia")
    Membership.objects.create(user=user, organisation=world.organisation, is_admin=True)
    return logged_in(user)


@pytest.fixture
def reader(world) -> Client:
    user = _user("rita")
    Membership.objects.create(user=user, organisation=world.organisation)
    RepositoryRole.objects.create(user=user, repository=world.private, role="read")
    return logged_in(user)


@pytest.fixture
def writer(world) -> Client:
    user = _user("walter")
    Membership.objects.create(user=user, organisation=world.organisation)
    RepositoryRole.objects.create(user=user, repository=world.private, role="write")
    return logged_in(user)


@pytest.fixture
def outsider(world) -> Client:
    return logged_in(_user("oscar"))


@pytest.fixture
def anonymous(world) -> Client:
    return Client()


def start_run(repository: Repository, source: str = GRAPH, **overrides) -> Run:
    fields = {
        "workflow_path": ".cicd/workflows/ci.yml",
        "source": source,
        "event": "push",
        "ref": "refs/heads/main",
        "sha": "c0ffee" + "0" * 34,
        "idempotency_key": f"web-{next(_keys)}",
        "actor": "alice",
    }
    fields.update(overrides)
    return create_run(repository, RunRequest(**fields))


def jobs_of(run: Run) -> dict[str, Job]:
    run.refresh_from_db()
    return {job.key: job for job in Job.objects.filter(run=run, attempt=run.attempt)}


def finish(run: Run, key: str, conclusion: str = "success") -> None:
    """What a worker does: claim the queued job, then report how it ended."""
    job = jobs_of(run)[key]
    token = claim_job(job.id, worker="test-worker", lease_seconds=60)
    assert token, f"{key} was not claimable ({job.state})"
    assert finish_job(job.id, conclusion, token=token)


def add_log(job: Job, lines: list[list], *, step_index: int | None = 0) -> None:
    """Store lines as the executor does: one chunk, `[timestamp, stream, text]` per line."""
    latest = LogChunk.objects.filter(job=job).order_by("-sequence").first()
    LogChunk.objects.create(
        job=job,
        step_index=step_index,
        sequence=latest.sequence + 1 if latest else 0,
        offset=latest.offset + latest.line_count if latest else 0,
        line_count=len(lines),
        text="\n".join(json.dumps(line, ensure_ascii=False) for line in lines),
    )
