"""/metrics: who may scrape it, and that the figures it exposes (parsed with prometheus_client's
own parser) follow what the database holds."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from runners.models import Worker
from runs.api import create_token
from runs.models import (
    Artifact,
    CacheCounter,
    CacheEntry,
    LogChunk,
    Organisation,
    Repository,
    Run,
)
from runs.storage import store_blob
from tests.runs.conftest import execute, jobs_of, start_run

pytestmark = pytest.mark.django_db

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo build
  test:
    needs: build
    runs-on: linux
    steps:
      - run: echo test
"""


@pytest.fixture(autouse=True)
def isolated(tmp_path, settings) -> None:
    """Blob storage and the usage cache of this test's own (the Redis cache is shared)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "blobs")},
        },
    }
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}


@pytest.fixture
def repository(db) -> Repository:
    acme = Organisation.objects.create(slug="acme", name="Acme")
    return Repository.objects.create(organisation=acme, slug="widgets", clone_url="/x")


@pytest.fixture
def staff_token(db) -> str:
    staff = get_user_model().objects.create_user("stella", is_staff=True)
    return create_token(staff, name="prometheus", scopes=["read"])


def scrape(client, token: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Sample (name, sorted labels) -> value."""
    from runs.usage import forget_cached_log_bytes

    forget_cached_log_bytes()
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain; version=0.0.4")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def repo(name: str) -> tuple[tuple[str, str], ...]:
    return (("repository", name),)


def test_anonymous_and_non_staff_callers_are_refused(client, db, staff_token):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="cicd"'
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401

    member = get_user_model().objects.create_user("mia")
    token = create_token(member, name="t", scopes=["read"])
    response = client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 403 and b"not staff" in response.content
    client.force_login(member)
    assert client.get("/metrics").status_code == 403

    superuser = get_user_model().objects.create_superuser("root", password="x")
    client.force_login(superuser)
    assert client.get("/metrics").status_code == 200
    assert client.post("/metrics").status_code == 405


def test_a_setting_makes_it_public(client, db, settings):
    settings.CICD_METRICS_PUBLIC = True
    assert client.get("/metrics").status_code == 200


def test_openmetrics_is_served_when_asked_for(client, staff_token):
    response = client.get(
        "/metrics",
        headers={
            "Authorization": f"Bearer {staff_token}",
            "Accept": "application/openmetrics-text; version=1.0.0",
        },
    )
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/openmetrics-text")
    assert response.content.endswith(b"# EOF\n")


def test_the_figures_follow_the_data(client, repository, staff_token):
    before = scrape(client, staff_token)
    assert before[("cicd_jobs_queued", ())] == 0
    assert before[("cicd_runs", (("state", "queued"),))] == 0
    assert before[("cicd_runs", (("state", "running"),))] == 0
    assert ("cicd_repository_artifact_bytes", repo("acme/widgets")) in before
    assert before[("cicd_repository_artifact_bytes", repo("acme/widgets"))] == 0
    assert before[("cicd_blob_bytes", ())] == 0

    run = start_run(repository, WORKFLOW)
    execute(run, "build")
    now = timezone.now()
    blob = store_blob(io.BytesIO(b"a" * 123))
    Artifact.objects.create(
        run=run, name="dist", blob=blob, size=500, file_count=2, expires_at=now + timedelta(1)
    )
    cached = store_blob(io.BytesIO(b"c" * 45))
    CacheEntry.objects.create(
        repository=repository, scope=run.ref, key="deps", version="v", blob=cached, size=45
    )
    LogChunk.objects.create(
        job=jobs_of(run)["build"], sequence=0, offset=0, line_count=2, text="x" * 30
    )
    CacheCounter.objects.create(
        repository=repository,
        hits=3,
        partial_hits=1,
        misses=2,
        saves=4,
        evictions=1,
        restore_seconds=1.5,
        restored_bytes=900,
    )
    Worker.objects.create(
        name="host:w1",
        executor="docker",
        last_heartbeat=now - timedelta(seconds=30),
        current_job=jobs_of(run)["test"],
        workspace_bytes=4096,
        disk_free_bytes=10_000,
        disk_total_bytes=50_000,
        storage_reported_at=now,
    )
    Worker.objects.create(name="host:never-reported", executor="local", last_heartbeat=now)

    after = scrape(client, staff_token)
    widgets = repo("acme/widgets")
    assert after[("cicd_repository_artifacts", widgets)] == 1
    assert after[("cicd_repository_artifact_bytes", widgets)] == 123
    assert after[("cicd_repository_cache_entries", widgets)] == 1
    assert after[("cicd_repository_cache_bytes", widgets)] == 45
    assert after[("cicd_repository_log_bytes", widgets)] == 30
    assert after[("cicd_repository_log_lines", widgets)] == 2
    assert after[("cicd_cache_hits_total", widgets)] == 3
    assert after[("cicd_cache_partial_hits_total", widgets)] == 1
    assert after[("cicd_cache_misses_total", widgets)] == 2
    assert after[("cicd_cache_saves_total", widgets)] == 4
    assert after[("cicd_cache_evictions_total", widgets)] == 1
    assert after[("cicd_cache_restore_seconds_total", widgets)] == 1.5
    assert after[("cicd_cache_restored_bytes_total", widgets)] == 900
    run_state = Run.objects.get(id=run.id).state
    assert after[("cicd_runs", (("state", str(run_state)),))] == 1
    assert sum(v for (name, _), v in after.items() if name == "cicd_runs") == 1
    assert after[("cicd_jobs", (("state", "success"),))] == 1
    assert after[("cicd_jobs", (("state", "queued"),))] == 1
    assert after[("cicd_jobs_queued", ())] == 1
    assert after[("cicd_jobs_queued_oldest_seconds", ())] >= 0
    assert after[("cicd_blobs", ())] == 2 and after[("cicd_blob_bytes", ())] == 168

    w1 = (("executor", "docker"), ("worker", "host:w1"))
    assert after[("cicd_worker_workspace_bytes", w1)] == 4096
    assert after[("cicd_worker_disk_free_bytes", w1)] == 10_000
    assert after[("cicd_worker_disk_total_bytes", w1)] == 50_000
    assert after[("cicd_worker_busy", w1)] == 1
    assert after[("cicd_worker_last_heartbeat_age_seconds", w1)] >= 30
    silent = (("executor", "local"), ("worker", "host:never-reported"))
    assert after[("cicd_worker_busy", silent)] == 0
    assert ("cicd_worker_disk_free_bytes", silent) not in after  # no false zero

    # Counters only grow as the database's do.
    CacheCounter.objects.filter(repository=repository).update(hits=10)
    assert scrape(client, staff_token)[("cicd_cache_hits_total", widgets)] == 10


def test_a_scrape_costs_the_same_few_queries_whatever_the_data(client, repository, staff_token):
    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            scrape(client, staff_token)
        return len(captured)

    few = queries()
    for number in range(5):
        other = Repository.objects.create(
            organisation=repository.organisation, slug=f"r{number}", clone_url="/x"
        )
        start_run(other, WORKFLOW)
        CacheCounter.objects.create(repository=other, hits=number)
        Worker.objects.create(name=f"w{number}", last_heartbeat=timezone.now())
    assert queries() == few <= 16
