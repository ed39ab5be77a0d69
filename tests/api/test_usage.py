"""Storage usage through the API: the whole picture for staff only, a repository's own usage for
its readers; figures follow the data, and responses match the OpenAPI description."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from jsonschema import Draft202012Validator

from runners.models import Worker
from runs.api import create_token
from runs.models import Artifact, CacheEntry
from runs.storage import store_blob
from tests.api.builders import add_chunk, jobs_of
from tests.api.conftest import get
from tests.api.test_openapi import schema_for

pytestmark = pytest.mark.django_db

ZERO = {
    "artifact_count": 0,
    "artifact_bytes": 0,
    "cache_count": 0,
    "cache_bytes": 0,
    "log_lines": 0,
    "log_bytes": 0,
    "total_bytes": 0,
}


@pytest.fixture(autouse=True)
def blob_dir(tmp_path, settings):
    settings.STORAGES = {
        **settings.STORAGES,
        "blobs": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(tmp_path / "blobs")},
        },
    }


def keep(world, key: str, *, artifact: bytes = b"", cache: bytes = b"", lines: int = 0) -> None:
    run = world.runs[key]
    if artifact:
        blob = store_blob(io.BytesIO(artifact))
        Artifact.objects.create(
            run=run,
            name=f"a{Artifact.objects.count()}",
            blob=blob,
            size=len(artifact) * 2,
            file_count=1,
            expires_at=timezone.now() + timedelta(days=1),
        )
    if cache:
        blob = store_blob(io.BytesIO(cache))
        CacheEntry.objects.create(
            repository=run.repository,
            scope=run.ref,
            key=f"k{CacheEntry.objects.count()}",
            version="v",
            blob=blob,
            size=blob.size,
        )
    if lines:
        add_chunk(jobs_of(run)["build"], [[1.0, "stdout", "x" * 10]] * lines)


def check_schema(template: str, response) -> None:
    schema = schema_for(template, "get", response.status_code)
    errors = list(Draft202012Validator(schema).iter_errors(response.json()))
    assert not errors, [error.message for error in errors[:5]]


@pytest.mark.parametrize(
    ("persona", "status"),
    [
        ("superuser", 200),
        ("org_admin", 403),
        ("reader", 403),
        ("writer", 403),
        ("outsider", 403),
        ("anonymous", 401),
    ],
)
def test_the_whole_usage_is_for_staff_only(client, world, persona, status):
    response = get(client, world, persona, "/api/v1/usage")
    assert response.status_code == status, response.content
    check_schema("/api/v1/usage", response)
    if status == 401:
        assert response["WWW-Authenticate"] == 'Bearer realm="cicd"'


def test_a_staff_user_who_is_not_superuser_sees_it_too(client, world):
    staff = get_user_model().objects.create_user("stella", is_staff=True)
    token = create_token(staff, name="t", scopes=["read"])
    response = client.get("/api/v1/usage", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200
    client.force_login(staff)
    assert client.get("/api/v1/usage").status_code == 200


def test_the_whole_usage_follows_the_data(client, world):
    response = get(client, world, "superuser", "/api/v1/usage")
    body = response.json()
    assert [item["repository"] for item in body["repositories"]] == [
        "acme/open",
        "acme/secret",
        "globex/hidden",
    ]
    assert all({**item, "repository": None} == {**ZERO, "repository": None}
               for item in body["repositories"])  # fmt: skip
    assert body["blobs"] == {"count": 0, "bytes": 0} and body["workers"] == []

    keep(world, "private", artifact=b"a" * 100, cache=b"c" * 40, lines=3)
    keep(world, "private", artifact=b"a" * 100)  # the same content: stored once
    keep(world, "foreign", cache=b"f" * 7)
    Worker.objects.create(
        name="host:w1",
        executor="local",
        last_heartbeat=timezone.now(),
        workspace_bytes=123,
        disk_free_bytes=1000,
        disk_total_bytes=5000,
        storage_reported_at=timezone.now(),
    )
    Worker.objects.create(name="gone", last_heartbeat=timezone.now() - timedelta(days=3))

    response = get(client, world, "superuser", "/api/v1/usage")
    check_schema("/api/v1/usage", response)
    body = response.json()
    usage = {item["repository"]: item for item in body["repositories"]}
    secret = usage["acme/secret"]
    chunk_text = sum(len(c.text) for c in jobs_of(world.runs["private"])["build"].log_chunks.all())
    assert secret == {
        "repository": "acme/secret",
        "artifact_count": 2,
        "artifact_bytes": 200,
        "cache_count": 1,
        "cache_bytes": 40,
        "log_lines": 3,
        "log_bytes": chunk_text,
        "total_bytes": 240 + chunk_text,
    }
    assert usage["globex/hidden"]["cache_bytes"] == 7
    assert usage["acme/open"] == {**ZERO, "repository": "acme/open"}
    assert body["blobs"] == {"count": 3, "bytes": 147}
    [worker] = body["workers"]
    assert worker["name"] == "host:w1" and worker["busy"] is False
    assert (worker["workspace_bytes"], worker["disk_free_bytes"], worker["disk_total_bytes"]) == (
        123,
        1000,
        5000,
    )


@pytest.mark.parametrize(
    ("persona", "path", "status"),
    [
        ("reader", "/api/v1/repos/acme/secret/usage", 200),
        ("writer", "/api/v1/repos/acme/secret/usage", 200),
        ("org_admin", "/api/v1/repos/acme/secret/usage", 200),
        ("outsider", "/api/v1/repos/acme/secret/usage", 404),
        ("anonymous", "/api/v1/repos/acme/secret/usage", 404),
        ("anonymous", "/api/v1/repos/acme/open/usage", 200),
        ("org_admin", "/api/v1/repos/globex/hidden/usage", 404),
        ("superuser", "/api/v1/repos/globex/hidden/usage", 200),
        ("superuser", "/api/v1/repos/acme/nothing/usage", 404),
    ],
)
def test_a_repositorys_usage_needs_the_read_role(client, world, persona, path, status):
    keep(world, "private", artifact=b"a" * 10, lines=2)
    response = get(client, world, persona, path)
    assert response.status_code == status, response.content
    check_schema("/api/v1/repos/{organisation}/{repository}/usage", response)
    if path.endswith("secret/usage") and status == 200:
        body = response.json()
        assert (body["repository"], body["artifact_bytes"], body["log_lines"]) == (
            "acme/secret",
            10,
            2,
        )


def test_parameters_are_refused(client, world):
    response = get(client, world, "superuser", "/api/v1/usage", verbose="1")
    assert response.status_code == 400
    assert response.json()["fields"] == {"verbose": "this endpoint takes no parameters"}
    assert client.post("/api/v1/usage").status_code == 405
