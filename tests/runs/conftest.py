"""Builders for the control-plane tests: a tenant, a repository, runs from workflow text."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from django.core.files.storage import storages

from runs.claims import claim_job
from runs.models import Job, Organisation, Repository, Run
from runs.scheduling import RunRequest, create_run, finish_job

_keys = itertools.count(1)


@pytest.fixture
def repository(db) -> Repository:
    organisation = Organisation.objects.create(slug="acme", name="Acme")
    return Repository.objects.create(
        organisation=organisation, slug="widgets", clone_url="/srv/git/widgets.git"
    )


@pytest.fixture
def blob_dir(tmp_path, settings) -> Path:
    """Blob storage of the test's own (artifacts, caches; pruning walks all of it)."""
    location = tmp_path / "blobs"
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(location)},
        },
    }
    assert Path(storages["blobs"].location) == location
    return location


def start_run(repository: Repository, source: str, **overrides) -> Run:
    fields = {
        "workflow_path": ".cicd/workflows/ci.yml",
        "source": source,
        "event": "push",
        "ref": "refs/heads/main",
        "sha": "a" * 40,
        "idempotency_key": f"test-{next(_keys)}",
    }
    fields.update(overrides)
    return create_run(repository, RunRequest(**fields))


def jobs_of(run: Run) -> dict[str, Job]:
    return {job.key: job for job in Job.objects.filter(run=run, attempt=run.attempt)}


def states(run: Run) -> dict[str, str]:
    return {key: job.state for key, job in jobs_of(run).items()}


def execute(run: Run, key: str, conclusion: str = "success", outputs: dict | None = None) -> None:
    """What a worker does: claim the queued job, then report its end with the token."""
    job = jobs_of(run)[key]
    token = claim_job(job.id, worker="test-worker", lease_seconds=60)
    assert token, f"{key} was not claimable (state {job.state})"
    assert finish_job(job.id, conclusion, token=token, outputs=outputs or {})
