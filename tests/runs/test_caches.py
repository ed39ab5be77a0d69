"""The server's cache store (runs.caches) on the real database and blob storage: which scopes a
run restores from, GitHub's lookup order, versions, the size limits and LRU eviction, counters,
the lease fence, and two jobs saving one key at once."""

from __future__ import annotations

import dataclasses
import io
import tarfile
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.utils import timezone

from runners.caches import CacheError
from runners.executor import DOCKER, RunnerConfig
from runs import execution
from runs.caches import DatabaseCacheStore, evict_over_limit, readable_scopes, record
from runs.claims import claim_job
from runs.execution import StaleToken, execute
from runs.models import Blob, CacheCounter, CacheEntry, Job, Repository
from runs.states import State
from runs.storage import open_blob
from tests.gitrepo import Origin
from tests.runners.images import docker_client, ensure_busybox_image

from .conftest import jobs_of, start_run
from .test_execution import log_lines

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo build
"""
VERSION = "a" * 64
OTHER_VERSION = "b" * 64
MAIN = "refs/heads/main"


def running_job(
    repository: Repository,
    ref: str = MAIN,
    *,
    event: str = "push",
    payload: dict[str, Any] | None = None,
) -> tuple[Job, str]:
    """A job of a new run of `ref`, claimed by a worker: (job, lease token)."""
    run = start_run(repository, WORKFLOW, ref=ref, event=event, event_payload=payload or {})
    job = jobs_of(run)["build"]
    token = claim_job(job.id, worker="test-worker", lease_seconds=600)
    assert token
    return job, token


def store_of(repository: Repository, ref: str = MAIN, **kwargs: Any) -> DatabaseCacheStore:
    job, token = running_job(repository, ref, **kwargs)
    return DatabaseCacheStore(job.id, token)


def pull_request(repository: Repository, number: int = 7, base: str = "main") -> DatabaseCacheStore:
    payload = {"number": number, "pull_request": {"base": {"ref": base}, "head": {"ref": "f"}}}
    return store_of(repository, f"refs/pull/{number}/head", event="pull_request", payload=payload)


def save(store: DatabaseCacheStore, key: str, content: bytes, version: str = VERSION) -> bool:
    return store.save(key, version, io.BytesIO(content), len(content))


def restored(store: DatabaseCacheStore, *keys: str, version: str = VERSION) -> bytes | None:
    hit = store.lookup(list(keys), version)
    if hit is None:
        return None
    with store.open(hit) as archive:
        return archive.read()


def tar_gz(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def unpacked(entry: CacheEntry) -> dict[str, bytes]:
    with open_blob(entry.blob) as stored, tarfile.open(fileobj=stored, mode="r:gz") as tar:
        return {
            member.name: tar.extractfile(member).read()  # type: ignore[union-attr]
            for member in tar
            if member.isfile()
        }


# ------------------------------------------------------------------------------------ scopes


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("saved_by", "read_by", "found"),
    [
        ("main", "main", True),
        ("main", "feature", True),  # the default branch is every run's fallback
        ("feature", "feature", True),
        ("feature", "main", False),  # another branch never reaches the default branch
        ("feature", "other", False),
        ("pr", "main", False),  # a pull request cannot poison the default branch
        ("pr", "pr", True),
        ("pr", "feature", False),
        ("pr", "other-pr", False),
        ("release", "pr-to-release", True),  # a pull request reads its base branch
        ("release", "pr", False),  # ... and only its own base
        ("release", "pr-to-full-release", True),
        ("tag", "main", False),
        ("main", "tag", True),
    ],
)
def test_which_scopes_a_run_restores_from(repository, blob_dir, saved_by, read_by, found):
    def store(who: str) -> DatabaseCacheStore:
        match who:
            case "main" | "feature" | "other" | "release":
                return store_of(repository, f"refs/heads/{who}")
            case "pr":
                return pull_request(repository, 7)
            case "other-pr":
                return pull_request(repository, 8)
            case "pr-to-release":
                return pull_request(repository, 9, base="release")
            case "pr-to-full-release":
                return pull_request(repository, 10, base="refs/heads/release")
            case "tag":
                return store_of(repository, "refs/tags/v1")
        raise AssertionError(who)

    assert save(store(saved_by), "deps-1", b"content")
    assert (restored(store(read_by), "deps-1", "deps-") == b"content") is found


@pytest.mark.django_db
def test_readable_scopes_in_order(repository):
    repository.default_branch = "trunk"
    repository.save()
    trunk = store_of(repository, "refs/heads/trunk")
    feature = store_of(repository, "refs/heads/feature")
    to_release = pull_request(repository, 3, base="release")
    to_trunk = pull_request(repository, 4, base="trunk")
    odd = store_of(
        repository,
        "refs/pull/5/head",
        event="pull_request",
        payload={"pull_request": {"base": {"ref": "refs/tags/v1"}}},
    )
    assert trunk.scopes() == ["refs/heads/trunk"]
    assert feature.scopes() == ["refs/heads/feature", "refs/heads/trunk"]
    assert to_release.scopes() == ["refs/pull/3/head", "refs/heads/release", "refs/heads/trunk"]
    assert to_trunk.scopes() == ["refs/pull/4/head", "refs/heads/trunk"]
    # Only a branch can be a base: anything else in the payload is ignored.
    assert odd.scopes() == ["refs/pull/5/head", "refs/heads/trunk"]
    assert readable_scopes(odd.job.run) == odd.scopes()


# ------------------------------------------------------------------------------------ lookup


@pytest.mark.django_db
def test_the_own_scope_is_searched_before_the_default_branch(repository, blob_dir):
    main, feature = store_of(repository, MAIN), store_of(repository, "refs/heads/feature")
    assert save(main, "deps-1", b"main's")
    assert save(feature, "deps-1", b"feature's")
    assert restored(store_of(repository, "refs/heads/feature"), "deps-1") == b"feature's"
    assert restored(store_of(repository, MAIN), "deps-1") == b"main's"
    # Per scope: the exact key, then the prefixes, so the branch's own prefix match wins over
    # the default branch's exact match (GitHub's order).
    assert save(store_of(repository, MAIN), "deps-2", b"main's exact")
    reader = store_of(repository, "refs/heads/feature")
    hit = reader.lookup(["deps-2", "deps-"], VERSION)
    assert hit is not None and (hit.key, hit.exact) == ("deps-1", False)
    # Nothing of the keys in the branch: the default branch's exact entry is a hit.
    hit = reader.lookup(["deps-2"], VERSION)
    assert hit is not None and (hit.key, hit.exact) == ("deps-2", True)
    assert reader.lookup(["other-2", "other-"], VERSION) is None


@pytest.mark.django_db
def test_prefixes_find_the_newest_entry_in_the_order_of_the_keys(repository, blob_dir):
    for key in ("deps-linux-a", "deps-linux-b", "deps-mac-z", "Deps-upper", "depsXunderscore"):
        assert save(store_of(repository), key, key.encode())
    now = timezone.now()
    for age, key in enumerate(["deps-mac-z", "deps-linux-b", "deps-linux-a", "depsXunderscore"]):
        CacheEntry.objects.filter(key=key).update(created_at=now - timedelta(hours=age))
    CacheEntry.objects.filter(key="Deps-upper").update(created_at=now + timedelta(hours=1))
    reader = store_of(repository)

    def found(*keys: str) -> tuple[str, bool] | None:
        hit = reader.lookup(list(keys), VERSION)
        return (hit.key, hit.exact) if hit else None

    assert found("deps-linux-b") == ("deps-linux-b", True)
    assert found("deps-linux-c", "deps-linux-", "deps-") == ("deps-linux-b", False)
    assert found("deps-linux-c", "deps-") == ("deps-mac-z", False)  # newest of the prefix
    assert found("deps-linux-c", "deps-windows-", "deps-linux-") == ("deps-linux-b", False)
    # The primary key is a prefix too.
    assert found("deps-linux") == ("deps-linux-b", False)
    # Prefixes are case-sensitive (SQLite's LIKE is not) and take `_`, `%` literally.
    assert found("DEPS-") is None
    assert found("deps_") is None
    assert found("deps%") is None
    assert found("Deps-") == ("Deps-upper", False)
    assert found("nothing", "none-") is None
    with pytest.raises(CacheError, match="needs a key"):
        reader.lookup([], VERSION)


@pytest.mark.django_db
def test_versions_are_separate_entries(repository, blob_dir):
    assert save(store_of(repository), "deps-1", b"for paths A", VERSION)
    assert save(store_of(repository), "deps-1", b"for paths B", OTHER_VERSION)
    assert not save(store_of(repository), "deps-1", b"A again", VERSION)
    assert CacheEntry.objects.count() == 2
    assert restored(store_of(repository), "deps-1", version=VERSION) == b"for paths A"
    assert restored(store_of(repository), "deps-1", version=OTHER_VERSION) == b"for paths B"
    assert restored(store_of(repository), "deps-", version="c" * 64) is None


@pytest.mark.django_db
def test_open_marks_the_entry_used_and_a_removed_entry_is_a_clear_error(repository, blob_dir):
    assert save(store_of(repository), "deps-1", b"content")
    long_ago = timezone.now() - timedelta(days=3)
    CacheEntry.objects.update(last_used_at=long_ago)
    reader = store_of(repository)
    hit = reader.lookup(["deps-1"], VERSION)
    assert hit is not None and hit.size == len(b"content")
    reader.open(hit).close()
    assert CacheEntry.objects.get().last_used_at > long_ago
    CacheEntry.objects.all().delete()
    with pytest.raises(CacheError, match="'deps-1' was removed before it could be restored"):
        reader.open(hit)


# -------------------------------------------------------------------------------------- save


@pytest.mark.django_db
def test_an_existing_key_is_not_saved_again_nor_stored(repository, blob_dir):
    assert save(store_of(repository), "deps-1", b"first")
    assert not save(store_of(repository), "deps-1", b"second")
    assert list(Blob.objects.values_list("size", flat=True)) == [len(b"first")]
    entry = CacheEntry.objects.get()
    assert (entry.scope, entry.key, entry.size) == (MAIN, "deps-1", len(b"first"))
    # Another ref has its own entry of the key.
    assert save(store_of(repository, "refs/heads/feature"), "deps-1", b"second")


@pytest.mark.django_db
def test_an_entry_over_the_size_limit_is_refused_clearly(repository, blob_dir, settings):
    settings.CICD_CACHE_ENTRY_MAX_MB = 1  # 1 MiB
    store = store_of(repository)
    assert store.max_entry_bytes == 1024 * 1024
    big = b"x" * (1024 * 1024 * 3 // 2)
    with pytest.raises(CacheError) as refused:
        save(store, "deps-1", big)
    assert str(refused.value) == (
        "cache 'deps-1' is 1.5 MiB, over the limit of 1.0 MiB per entry: cache fewer paths "
        "(the server's CICD_CACHE_ENTRY_MAX_MB); nothing was saved"
    )
    assert not CacheEntry.objects.exists() and not Blob.objects.exists()
    # The archive's real size counts, whatever size the caller announced.
    with pytest.raises(CacheError, match="over the limit"):
        store.save("deps-1", VERSION, io.BytesIO(big), 10)
    assert not CacheEntry.objects.exists()
    assert save(store, "deps-1", b"x" * 1024 * 1024)


@pytest.mark.django_db
def test_bad_keys_are_refused_before_anything_is_stored(repository, blob_dir):
    store = store_of(repository)
    with pytest.raises(CacheError, match="at most 512"):
        save(store, "k" * 513, b"x")
    with pytest.raises(CacheError, match="NUL"):
        save(store, "a\x00b", b"x")
    with pytest.raises(CacheError, match="not a valid version"):
        save(store, "deps", b"x", version="")
    assert not Blob.objects.exists()


@pytest.mark.django_db
def test_a_worker_that_lost_the_job_cannot_save(repository, blob_dir):
    job, token = running_job(repository)
    store = DatabaseCacheStore(job.id, token)
    Job.objects.filter(id=job.id).update(lease_token="someone-else")
    with pytest.raises(StaleToken):
        save(store, "deps-1", b"content")
    assert not CacheEntry.objects.exists()


@pytest.mark.django_db
def test_deleting_an_entry_keeps_its_blob_shared_by_content(repository, blob_dir):
    assert save(store_of(repository), "deps-1", b"same bytes")
    assert save(store_of(repository, "refs/heads/feature"), "deps-1", b"same bytes")
    first, second = CacheEntry.objects.order_by("id")
    assert first.blob_id == second.blob_id
    first.delete()
    assert Blob.objects.filter(id=second.blob_id).exists()
    second.delete()
    assert Blob.objects.count() == 1  # pruning is retention's job


# ---------------------------------------------------------------------------------- eviction


@pytest.mark.django_db
def test_least_recently_used_entries_are_evicted_over_the_repository_limit(
    repository, blob_dir, settings
):
    settings.CICD_CACHE_REPO_MAX_GB = 2500 / 1024**3  # room for two entries of 1000 bytes
    now = timezone.now()
    assert save(store_of(repository), "a", b"a" * 1000)
    assert save(store_of(repository), "b", b"b" * 1000)
    # `a` was restored after `b` was saved: `b` is the least recently used.
    CacheEntry.objects.filter(key="a").update(last_used_at=now - timedelta(minutes=1))
    CacheEntry.objects.filter(key="b").update(last_used_at=now - timedelta(minutes=2))
    assert save(store_of(repository), "c", b"c" * 1000)
    assert set(CacheEntry.objects.values_list("key", flat=True)) == {"a", "c"}
    assert CacheCounter.objects.get(repository=repository).evictions == 1
    assert Blob.objects.count() == 3  # an evicted entry's blob waits for pruning

    # Under the limit nothing goes.
    assert evict_over_limit(repository.id).entries == 0
    # Another repository's entries neither count nor go.
    other = Repository.objects.create(
        organisation=repository.organisation, slug="other", clone_url="/x"
    )
    assert save(store_of(other), "z", b"z" * 2000)
    assert set(CacheEntry.objects.values_list("key", flat=True)) == {"a", "c", "z"}


@pytest.mark.django_db
def test_the_entry_just_saved_stays_unless_it_alone_is_over(repository, blob_dir, settings):
    settings.CICD_CACHE_REPO_MAX_GB = 1500 / 1024**3
    assert save(store_of(repository), "a", b"a" * 1000)
    # `a` looks more recently used than anything saved now: still, the new entry stays.
    later = timezone.now() + timedelta(hours=1)
    CacheEntry.objects.filter(key="a").update(last_used_at=later)
    assert save(store_of(repository), "b", b"b" * 1000)
    assert list(CacheEntry.objects.values_list("key", flat=True)) == ["b"]

    settings.CICD_CACHE_REPO_MAX_GB = 500 / 1024**3
    assert save(store_of(repository), "c", b"c" * 1000)  # saved, then evicted: alone it is over
    assert not CacheEntry.objects.exists()
    assert CacheCounter.objects.get(repository=repository).evictions == 3


# ---------------------------------------------------------------------------------- counters


@pytest.mark.django_db
def test_restores_and_saves_are_counted(repository):
    store = store_of(repository)
    store.record("hit", seconds=1.5, size=100)
    store.record("partial", seconds=0.5, size=50)
    store.record("miss", seconds=0.25, size=0)
    store.record("save", seconds=2.0, size=300)
    record(repository.id, "miss", seconds=0.25, size=0)
    counter = CacheCounter.objects.get(repository=repository)
    assert (counter.hits, counter.partial_hits, counter.misses, counter.saves) == (1, 1, 2, 1)
    assert (counter.restored_bytes, counter.saved_bytes) == (150, 300)
    assert (counter.restore_seconds, counter.save_seconds) == (2.5, 2.0)
    with pytest.raises(ValueError, match="unknown cache outcome 'maybe'"):
        store.record("maybe", seconds=0, size=0)


# -------------------------------------------------------------------------------- concurrency


class _MeetingReader(io.BytesIO):
    """An archive whose end is read only once every saver has read its start: both saves have
    then passed the "already saved?" check and race to create the row."""

    def __init__(self, data: bytes, barrier: threading.Barrier) -> None:
        super().__init__(data)
        self.barrier = barrier

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not chunk:
            self.barrier.wait(timeout=30)
        return chunk


@pytest.mark.django_db(transaction=True)
def test_two_jobs_saving_one_key_at_once_leave_one_complete_entry(repository, blob_dir):
    payloads = {
        name: tar_gz({f"{name}/file-{i}": bytes([65 + i]) * 200_000 for i in range(5)})
        for name in ("one", "two")
    }
    stores = {name: store_of(repository, "refs/heads/feature") for name in payloads}
    barrier = threading.Barrier(len(stores))
    results: dict[str, Any] = {}

    def saver(name: str) -> None:
        try:
            archive = _MeetingReader(payloads[name], barrier)
            results[name] = stores[name].save("deps-1", VERSION, archive, len(payloads[name]))
        except BaseException as error:  # reported by the assertion below
            results[name] = error
        finally:
            connection.close()  # this thread's own connection

    threads = [threading.Thread(target=saver, args=(name,)) for name in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(map(repr, results.values())) == ["False", "True"], results
    winner = next(name for name, saved in results.items() if saved is True)
    entry = CacheEntry.objects.get()
    assert entry.key == "deps-1" and entry.scope == "refs/heads/feature"
    files = unpacked(entry)
    assert files == {f"{winner}/file-{i}": bytes([65 + i]) * 200_000 for i in range(5)}
    assert entry.size == len(payloads[winner]) == entry.blob.size
    assert restored(store_of(repository, "refs/heads/feature"), "deps-1") == payloads[winner]


@pytest.mark.django_db(transaction=True)
def test_concurrent_evictions_free_the_excess_once(repository, blob_dir, settings, monkeypatch):
    settings.CICD_CACHE_REPO_MAX_GB = 3500 / 1024**3
    now = timezone.now()
    for age, key in enumerate(["c", "b", "a"]):
        assert save(store_of(repository), key, key.encode() * 1000)
        CacheEntry.objects.filter(key=key).update(last_used_at=now - timedelta(hours=age + 1))
    stores = {key: store_of(repository) for key in ("d", "e")}
    # Both new entries are committed before either save evicts: both see 5000 bytes.
    barrier = threading.Barrier(len(stores))
    evict = evict_over_limit

    def meeting(repository_id: int, **kwargs: Any) -> Any:
        barrier.wait(timeout=30)
        return evict(repository_id, **kwargs)

    monkeypatch.setattr("runs.caches.evict_over_limit", meeting)
    results: dict[str, Any] = {}

    def saver(key: str) -> None:
        try:
            results[key] = save(stores[key], key, key.encode() * 1000)
        except BaseException as error:  # reported by the assertion below
            results[key] = error
        finally:
            connection.close()

    threads = [threading.Thread(target=saver, args=(key,)) for key in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == {"d": True, "e": True}
    # 1500 bytes over: the two least recently used go, and only they.
    assert sorted(CacheEntry.objects.values_list("key", flat=True)) == ["c", "d", "e"]
    assert CacheCounter.objects.get(repository=repository).evictions == 2


# ------------------------------------------------------------------------------------- admin


@pytest.mark.django_db
def test_the_admin_lists_entries_and_deletes_them(admin_client, repository, blob_dir):
    assert save(store_of(repository), "deps-1", b"content")
    assert save(store_of(repository), "deps-2", b"more content")
    page = admin_client.get("/admin/runs/cacheentry/")
    assert page.status_code == 200 and "deps-1" in page.content.decode()
    assert admin_client.get("/admin/runs/cacheentry/add/").status_code == 403
    entry = CacheEntry.objects.get(key="deps-1")
    response = admin_client.post(
        "/admin/runs/cacheentry/",
        {"action": "delete_cache_entries", "_selected_action": [entry.id]},
        follow=True,
    )
    assert "1 cache entr(ies) deleted, 7 bytes." in response.content.decode()
    assert list(CacheEntry.objects.values_list("key", flat=True)) == ["deps-2"]
    assert Blob.objects.count() == 2


# -------------------------------------------------------------------- real jobs, through Docker

CACHE_WORKFLOW = """\
on: [push, pull_request]
jobs:
  build:
    runs-on: linux
    steps:
      - id: cache
        uses: actions/cache@v4
        with:
          path: deps
          key: deps-${{ hashFiles('lock.txt') }}
          restore-keys: |
            deps-
      - run: |
          echo "hit=${{ steps.cache.outputs.cache-hit }}"
          if [ -f deps/installed.txt ]; then
            echo "restored: $(cat deps/installed.txt)"
          else
            echo "nothing restored"
          fi
          mkdir -p deps && cp lock.txt deps/installed.txt
"""


@pytest.fixture
def docker_config(tmp_path, settings, monkeypatch) -> RunnerConfig:
    """Jobs run in Docker (busybox); mirrors under this test's own data directory."""
    settings.CICD_DATA_DIR = tmp_path / "data"
    image = ensure_busybox_image(docker_client())
    # Containers are named after job ids, which repeat across test databases on one engine.
    spec_for = execution._spec_for
    suffix = uuid.uuid4().hex[:10]
    monkeypatch.setattr(
        execution,
        "_spec_for",
        lambda job: dataclasses.replace(spec_for(job), job_id=f"{job.id}-{job.claims}-{suffix}"),
    )
    return RunnerConfig(
        executor=DOCKER, default_image=image, work_dir=tmp_path / "work", grace_seconds=1.0
    )


def run_build(
    repository: Repository, sha: str, config: RunnerConfig, ref: str = MAIN, **request: Any
) -> list[str]:
    """Run the workflow's job to its end; its log lines."""
    run = start_run(repository, CACHE_WORKFLOW, sha=sha, ref=ref, **request)
    job = jobs_of(run)["build"]
    assert execute(job.id, worker="w1", config=config) == State.SUCCESS, log_lines(job)
    return log_lines(job)


def cached_files(entry: CacheEntry) -> dict[str, bytes]:
    return {
        name.rsplit("/", 1)[-1]: data
        for name, data in unpacked(entry).items()
        if name.endswith("installed.txt")
    }


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_real_jobs_miss_save_hit_and_restore_older_keys(
    repository, tmp_path, blob_dir, docker_config
):
    origin = Origin(tmp_path / "origin")
    v1 = origin.commit({"lock.txt": "v1\n"})
    repository.clone_url = str(origin.path)
    repository.save()

    # First run: nothing to restore; the key missed, so the job saves it at its end.
    lines = run_build(repository, v1, docker_config)
    assert "hit=false" in lines and "nothing restored" in lines
    first = CacheEntry.objects.get()
    assert first.scope == MAIN and first.key.startswith("deps-") and len(first.key) > 20
    assert cached_files(first) == {"installed.txt": b"v1\n"}
    assert f"Cache not found for input keys: {first.key}, deps-" in lines
    assert any(line.startswith(f"Cache saved with key: {first.key} (") for line in lines)

    # Same lockfile: an exact hit, the step sees the restored files, nothing new is saved.
    lines = run_build(repository, v1, docker_config)
    assert "hit=true" in lines and "restored: v1" in lines
    assert any(line.startswith(f"Cache restored from key: {first.key} (") for line in lines)
    assert not any(line.startswith("Cache saved") for line in lines)
    assert CacheEntry.objects.count() == 1

    # A changed lockfile misses its key; restore-keys brings the older entry back.
    v2 = origin.commit({"lock.txt": "v2\n"})
    lines = run_build(repository, v2, docker_config)
    assert "hit=false" in lines and "restored: v1" in lines
    second = CacheEntry.objects.exclude(id=first.id).get()
    assert second.key != first.key and cached_files(second) == {"installed.txt": b"v2\n"}

    counter = CacheCounter.objects.get(repository=repository)
    assert (counter.misses, counter.hits, counter.partial_hits, counter.saves) == (1, 1, 1, 2)
    assert counter.restored_bytes == first.size * 2


@pytest.mark.docker
@pytest.mark.django_db(transaction=True)
def test_a_pull_requests_cache_is_not_restored_on_main(
    repository, tmp_path, blob_dir, docker_config
):
    origin = Origin(tmp_path / "origin")
    origin.commit({"lock.txt": "v1\n"})
    origin.git("checkout", "-q", "-b", "feature")
    in_pull_request = origin.commit({"lock.txt": "poisoned\n"})
    origin.git("checkout", "-q", "main")
    repository.clone_url = str(origin.path)
    repository.save()
    payload = {"number": 1, "pull_request": {"base": {"ref": "main"}, "head": {"ref": "feature"}}}
    pull_request = {"ref": "refs/pull/1/head", "event": "pull_request", "event_payload": payload}

    # The pull request finds nothing, and saves its key in its own scope.
    lines = run_build(repository, in_pull_request, docker_config, **pull_request)
    assert "hit=false" in lines and "nothing restored" in lines
    saved_by_pr = CacheEntry.objects.get()
    assert saved_by_pr.scope == "refs/pull/1/head"
    assert cached_files(saved_by_pr) == {"installed.txt": b"poisoned\n"}

    # main gets the same lockfile: the pull request's entry has that very key, yet main misses.
    merged = origin.commit({"lock.txt": "poisoned\n"})
    lines = run_build(repository, merged, docker_config)
    assert "hit=false" in lines and "nothing restored" in lines
    own = CacheEntry.objects.get(scope=MAIN)
    assert own.key == saved_by_pr.key and own.id != saved_by_pr.id

    # The pull request's next run restores its own entry.
    lines = run_build(repository, in_pull_request, docker_config, **pull_request)
    assert "hit=true" in lines and "restored: poisoned" in lines
    assert CacheEntry.objects.count() == 2
