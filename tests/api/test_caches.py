"""A repository's caches through the API: readers list them, admins delete them (by id or by
key), everyone else gets what they get for any private repository: a 404."""

from __future__ import annotations

import hashlib
import itertools
from datetime import timedelta

import pytest
from django.utils import timezone
from jsonschema import Draft202012Validator

from runs.api import create_token
from runs.models import AuditEntry, Blob, CacheEntry, Repository
from tests.api.conftest import call, get
from tests.api.test_openapi import schema_for

pytestmark = pytest.mark.django_db

LIST = "/api/v1/repos/{organisation}/{repository}/caches"
ONE = "/api/v1/repos/{organisation}/{repository}/caches/{cache_id}"
_contents = itertools.count(1)


def entry(
    repository: Repository, key: str, *, ref: str = "refs/heads/main", size: int = 100, **fields
) -> CacheEntry:
    content = f"content {next(_contents)}".encode()
    blob = Blob.objects.create(sha256=hashlib.sha256(content).hexdigest(), size=size)
    return CacheEntry.objects.create(
        repository=repository,
        scope=ref,
        key=key,
        version=fields.pop("version", "v" * 64),
        blob=blob,
        size=size,
        **fields,
    )


def checked(response, template: str, method: str = "get") -> dict:
    """The response's JSON, after checking it against the schema documented for its status."""
    body = response.json()
    schema = schema_for(template, method, response.status_code)
    errors = [e.message for e in Draft202012Validator(schema).iter_errors(body)]
    assert not errors, (response.status_code, body, errors[:5])
    return body


@pytest.mark.parametrize(
    ("persona", "status"),
    [
        ("superuser", 200),
        ("org_admin", 200),
        ("reader", 200),
        ("writer", 200),
        ("outsider", 404),
        ("anonymous", 404),
    ],
)
def test_who_may_list_a_private_repositorys_caches(client, world, persona, status):
    entry(world.private, "deps-1")
    response = get(client, world, persona, "/api/v1/repos/acme/secret/caches")
    body = checked(response, LIST)
    assert response.status_code == status
    if status == 404:
        assert body["error"] == "no repository acme/secret"
    else:
        assert [cache["key"] for cache in body["caches"]] == ["deps-1"]


def test_the_list_shows_each_entry_and_the_repositorys_total_and_limits(client, world, settings):
    settings.CICD_CACHE_REPO_MAX_GB = 2
    settings.CICD_CACHE_ENTRY_MAX_MB = 100
    run = world.runs["private"]
    created = timezone.now() - timedelta(days=2)
    first = entry(world.private, "deps-linux-1", size=300, run=run, created_at=created)
    entry(world.private, "deps-linux-2", ref="refs/pull/7/head", size=200)
    entry(world.private, "Deps-mac", ref="refs/heads/feature", size=50)
    entry(world.public, "deps-linux-1", size=10_000)  # another repository's
    body = checked(get(client, world, "reader", "/api/v1/repos/acme/secret/caches"), LIST)
    assert [cache["key"] for cache in body["caches"]] == [
        "Deps-mac",
        "deps-linux-2",
        "deps-linux-1",
    ]
    assert body["caches"][2] == {
        "id": first.id,
        "key": "deps-linux-1",
        "ref": "refs/heads/main",
        "branch": "main",
        "version": "v" * 64,
        "size": 300,
        "run": run.id,
        "created_at": created.isoformat().replace("+00:00", "Z"),
        "last_used_at": first.last_used_at.isoformat().replace("+00:00", "Z"),
    }
    assert body["caches"][1]["branch"] is None
    assert (body["total_count"], body["total_size"]) == (3, 550)
    assert (body["size_limit"], body["entry_size_limit"]) == (2 * 1024**3, 100 * 1024**2)
    assert body["next"] is None


def test_the_list_filters_by_key_prefix_and_ref_and_pages(client, world):
    for index in range(5):
        entry(world.private, f"deps-{index}", ref="refs/heads/main")
    entry(world.private, "deps-pr", ref="refs/pull/3/head")
    entry(world.private, "Deps-upper")
    entry(world.private, "depsXunderscore")

    def keys(**params) -> list[str]:
        response = get(client, world, "reader", "/api/v1/repos/acme/secret/caches", **params)
        assert response.status_code == 200, response.json()
        return [cache["key"] for cache in response.json()["caches"]]

    assert keys(key="deps-") == ["deps-pr", "deps-4", "deps-3", "deps-2", "deps-1", "deps-0"]
    assert keys(key="deps_") == []  # a prefix, not a LIKE pattern; and case-sensitive:
    assert keys(key="Deps") == ["Deps-upper"]
    assert keys(ref="refs/pull/3/head") == ["deps-pr"]
    assert keys(ref="main", key="deps-") == ["deps-4", "deps-3", "deps-2", "deps-1", "deps-0"]
    assert keys(ref="feature") == []

    page = get(client, world, "reader", "/api/v1/repos/acme/secret/caches", key="deps-", limit=4)
    body = page.json()
    assert [cache["key"] for cache in body["caches"]] == ["deps-pr", "deps-4", "deps-3", "deps-2"]
    assert keys(key="deps-", limit=4, after=body["next"]) == ["deps-1", "deps-0"]

    bad = get(client, world, "reader", "/api/v1/repos/acme/secret/caches", limit=0, sort="size")
    body = checked(bad, LIST)
    assert bad.status_code == 400
    assert body["fields"] == {
        "limit": "must be a whole number from 1 to 100",
        "sort": "unknown parameter; use key, ref, after, limit",
    }


def test_anyone_lists_a_public_repositorys_caches_but_only_admins_delete(client, world):
    cache = entry(world.public, "deps-1")
    response = get(client, world, "anonymous", "/api/v1/repos/acme/open/caches")
    assert [c["key"] for c in checked(response, LIST)["caches"]] == ["deps-1"]
    path = f"/api/v1/repos/acme/open/caches/{cache.id}"
    anonymous = call(client, world, "anonymous", "DELETE", path)
    assert anonymous.status_code == 401
    writer = call(client, world, "writer", "DELETE", path)
    assert writer.status_code == 403
    assert checked(writer, ONE, "delete")["error"] == (
        "walt may read acme/open but this needs the admin role"
    )
    assert CacheEntry.objects.filter(id=cache.id).exists()


@pytest.mark.parametrize(
    ("persona", "status"),
    [
        ("superuser", 200),
        ("org_admin", 200),
        ("writer", 403),
        ("reader", 403),
        ("outsider", 404),
        ("anonymous", 401),
    ],
)
def test_who_may_delete_an_entry(client, world, persona, status):
    cache = entry(world.private, "deps-1", size=123)
    response = call(
        client, world, persona, "DELETE", f"/api/v1/repos/acme/secret/caches/{cache.id}"
    )
    body = checked(response, ONE, "delete")
    assert response.status_code == status
    assert CacheEntry.objects.filter(id=cache.id).exists() is (status != 200)
    if status == 200:
        assert body == {"deleted": 1, "deleted_size": 123}
        assert Blob.objects.filter(id=cache.blob_id).exists()  # until pruning finds it unused
        audit = AuditEntry.objects.get(action="cache.delete")
        assert audit.repository == world.private
        assert audit.actor == world.users[persona].username
        assert audit.detail == {
            "cache": cache.id,
            "key": "deps-1",
            "entries": 1,
            "bytes": 123,
            "via": "token",
        }
    else:
        assert not AuditEntry.objects.filter(action="cache.delete").exists()


def test_an_entry_is_deleted_only_through_its_own_repository(client, world):
    foreign = entry(world.foreign, "deps-1")
    public = entry(world.public, "deps-1")
    for path in (
        f"/api/v1/repos/acme/secret/caches/{public.id}",
        f"/api/v1/repos/acme/secret/caches/{foreign.id}",
        "/api/v1/repos/acme/secret/caches/99999999",
        f"/api/v1/repos/acme/secret/caches/{2**64}",
    ):
        response = call(client, world, "org_admin", "DELETE", path)
        assert response.status_code == 404, path
        assert checked(response, ONE, "delete")["error"].startswith("no cache entry ")
    # The organisation admin of acme is an outsider to globex.
    response = call(
        client, world, "org_admin", "DELETE", f"/api/v1/repos/globex/hidden/caches/{foreign.id}"
    )
    assert response.status_code == 404 and response.json()["error"] == "no repository globex/hidden"
    assert CacheEntry.objects.count() == 2
    path = f"/api/v1/repos/acme/open/caches/{public.id}"
    assert call(client, world, "org_admin", "DELETE", path).status_code == 200
    assert call(client, world, "org_admin", "DELETE", path).status_code == 404


def test_deleting_by_key_takes_every_version_of_exactly_that_key(client, world):
    entry(world.private, "deps-1", size=10)
    entry(world.private, "deps-1", size=20, version="w" * 64)
    entry(world.private, "deps-1", size=40, ref="refs/heads/feature")
    entry(world.private, "deps-10", size=80)
    base = "/api/v1/repos/acme/secret/caches"

    response = call(client, world, "org_admin", "DELETE", f"{base}?key=deps-1&ref=feature")
    assert checked(response, LIST, "delete") == {"deleted": 1, "deleted_size": 40}
    response = call(client, world, "org_admin", "DELETE", f"{base}?key=deps-1")
    assert checked(response, LIST, "delete") == {"deleted": 2, "deleted_size": 30}
    assert list(CacheEntry.objects.values_list("key", flat=True)) == ["deps-10"]
    audit = AuditEntry.objects.filter(action="cache.delete").first()
    assert audit.detail == {"key": "deps-1", "ref": None, "entries": 2, "bytes": 30, "via": "token"}

    missing = call(client, world, "org_admin", "DELETE", f"{base}?key=deps-1")
    assert missing.status_code == 404
    assert checked(missing, LIST, "delete")["error"] == (
        "no cache entry with key 'deps-1' in acme/secret"
    )
    no_key = call(client, world, "org_admin", "DELETE", base)
    assert no_key.status_code == 400
    assert checked(no_key, LIST, "delete")["fields"] == {
        "key": "is required: the complete key of the entries to delete"
    }
    assert call(client, world, "writer", "DELETE", f"{base}?key=deps-10").status_code == 403
    assert call(client, world, "outsider", "DELETE", f"{base}?key=deps-10").status_code == 404
    assert CacheEntry.objects.count() == 1


def test_deleting_needs_a_token_with_the_write_scope(client, world):
    cache = entry(world.private, "deps-1")
    token = create_token(world.users["org_admin"], name="ro", scopes=["read"])
    response = client.delete(
        f"/api/v1/repos/acme/secret/caches/{cache.id}",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 403
    assert response.json()["error"] == "the API token lacks the 'write' scope"
    assert CacheEntry.objects.filter(id=cache.id).exists()
    other = client.post("/api/v1/repos/acme/secret/caches", headers={"Authorization": "x"})
    assert other.status_code == 405 and other["Allow"] == "GET, DELETE, HEAD"
