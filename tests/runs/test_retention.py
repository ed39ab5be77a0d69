"""Retention with a fixed clock: what is past its time goes with its bytes counted, what is
fresh or in use stays, a dry run removes nothing and reports the same items; blobs are pruned
safely beside concurrent stores; orphaned workspaces go; the commands and the beat task."""

from __future__ import annotations

import io
import os
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection

from runners.executor import LOCAL, RunnerConfig
from runners.models import Worker
from runners.registry import (
    STORAGE_REPORT_SECONDS,
    record_worker,
    report_storage,
    tree_size,
    worker_beat,
)
from runs import retention
from runs.execution import execute
from runs.models import Artifact, Blob, CacheEntry, Job, LogChunk, Run
from runs.states import State
from runs.storage import blob_name, blob_storage, delete_unused_blob, store_blob

from .conftest import execute as finish
from .conftest import jobs_of, start_run
from .test_execution import make_repository

NOW = datetime(2031, 6, 15, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
OLD = datetime(2020, 1, 1, tzinfo=UTC)  # stored long before anything expires

WORKFLOW = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo build
"""


@pytest.fixture
def run(repository) -> Run:
    """A run that ended, with one job."""
    started = start_run(repository, WORKFLOW)
    finish(started, "build")
    started.refresh_from_db()
    assert started.state == State.SUCCESS
    return started


def blob(content: bytes, *, stored: datetime = OLD) -> Blob:
    stored_blob = store_blob(io.BytesIO(content))
    Blob.objects.filter(id=stored_blob.id).update(last_stored_at=stored)
    stored_blob.refresh_from_db()
    return stored_blob


def artifact(run: Run, name: str, content: bytes, *, expires: datetime) -> Artifact:
    return Artifact.objects.create(
        run=run, name=name, blob=blob(content), size=len(content), file_count=1, expires_at=expires
    )


def cache(run: Run, key: str, content: bytes, *, used: datetime) -> CacheEntry:
    stored = blob(content)
    return CacheEntry.objects.create(
        repository=run.repository,
        scope=run.ref,
        key=key,
        version="v1",
        blob=stored,
        size=stored.size,
        run=run,
        created_at=used,
        last_used_at=used,
    )


def stored(sha256: str) -> bool:
    return blob_storage().exists(blob_name(sha256))


def same_items(dry: retention.Report, real: retention.Report) -> None:
    assert dry.dry_run and not real.dry_run
    assert [(i.description, i.bytes) for i in dry.items] == [
        (i.description, i.bytes) for i in real.items
    ]


# ---------------------------------------------------------------------------------- artifacts


@pytest.mark.django_db
def test_expired_artifacts_go_with_the_blobs_only_they_used(run, blob_dir):
    gone = artifact(run, "gone", b"only mine", expires=NOW - DAY)
    fresh = artifact(run, "fresh", b"shared", expires=NOW + DAY)
    sharing = artifact(run, "sharing", b"shared", expires=NOW - DAY)
    twice_a = artifact(run, "twice-a", b"expired twice", expires=NOW - 2 * DAY)
    twice_b = artifact(run, "twice-b", b"expired twice", expires=NOW - DAY)
    assert sharing.blob_id == fresh.blob_id and twice_a.blob_id == twice_b.blob_id

    dry = retention.expire_artifacts(now=NOW, dry_run=True)
    assert Artifact.objects.count() == 5 and Blob.objects.count() == 3
    real = retention.expire_artifacts(now=NOW)
    same_items(dry, real)

    assert list(Artifact.objects.values_list("name", flat=True)) == ["fresh"]
    freed = {item.description.split("'")[1]: item.bytes for item in real.items}
    # The shared blob is still used; the one used twice is freed once, by the last of them.
    assert freed == {
        "gone": gone.blob.size,
        "sharing": 0,
        "twice-a": 0,
        "twice-b": twice_b.blob.size,
    }
    assert real.bytes == gone.blob.size + twice_b.blob.size
    assert list(Blob.objects.values_list("id", flat=True)) == [fresh.blob_id]
    assert stored(fresh.blob.sha256)
    assert not stored(gone.blob.sha256) and not stored(twice_a.blob.sha256)
    assert "acme/widgets #1 (attempt 1), expired 2031-06-14 12:00 UTC" in real.items[0].description

    again = retention.expire_artifacts(now=NOW)
    assert again.count == 0


@pytest.mark.django_db
def test_an_expired_artifacts_blob_stored_again_within_the_grace_stays(run, blob_dir, settings):
    settings.CICD_BLOB_PRUNE_GRACE_MINUTES = 60
    gone = artifact(run, "gone", b"content", expires=NOW - DAY)
    Blob.objects.filter(id=gone.blob_id).update(last_stored_at=NOW - timedelta(minutes=5))
    report = retention.expire_artifacts(now=NOW)
    assert report.count == 1 and report.bytes == 0
    assert Blob.objects.filter(id=gone.blob_id).exists() and stored(gone.blob.sha256)
    # Once the grace has passed, pruning takes it.
    later = retention.prune_blobs(now=NOW + timedelta(hours=2))
    assert [item.bytes for item in later.items] == [gone.blob.size]
    assert not stored(gone.blob.sha256)


# ------------------------------------------------------------------------------------- caches


@pytest.mark.django_db
def test_caches_unused_for_the_retention_go_and_recently_used_ones_stay(run, blob_dir, settings):
    settings.CICD_CACHE_UNUSED_DAYS = 7
    old = cache(run, "deps-old", b"old deps", used=NOW - 8 * DAY)
    recent = cache(run, "deps-new", b"new deps", used=NOW - 6 * DAY)
    also_artifact = cache(run, "deps-shared", b"shared with an artifact", used=NOW - 30 * DAY)
    artifact(run, "kept", b"shared with an artifact", expires=NOW + DAY)

    dry = retention.expire_caches(now=NOW, dry_run=True)
    assert CacheEntry.objects.count() == 3
    real = retention.expire_caches(now=NOW)
    same_items(dry, real)

    assert list(CacheEntry.objects.values_list("key", flat=True)) == ["deps-new"]
    assert [(item.description.split("'")[1], item.bytes) for item in real.items] == [
        ("deps-old", old.size),
        ("deps-shared", 0),
    ]
    assert not stored(old.blob.sha256)
    assert stored(recent.blob.sha256) and stored(also_artifact.blob.sha256)


@pytest.mark.django_db
def test_a_cache_restored_after_it_was_chosen_is_not_removed(run, blob_dir, monkeypatch):
    entry = cache(run, "deps", b"deps", used=NOW - 30 * DAY)
    choose = retention._batches

    def chosen_then_restored(*args, **kwargs):
        for batch in choose(*args, **kwargs):
            CacheEntry.objects.update(last_used_at=NOW)  # a job restores it right now
            yield batch

    monkeypatch.setattr(retention, "_batches", chosen_then_restored)
    report = retention.expire_caches(now=NOW)
    assert report.count == 0
    assert CacheEntry.objects.filter(id=entry.id).exists() and stored(entry.blob.sha256)


# --------------------------------------------------------------------------------------- logs


def add_chunk(job: Job, lines: list[str], sequence: int = 0) -> LogChunk:
    text = "".join(f'[1.0, "stdout", "{line}"]\n' for line in lines)
    return LogChunk.objects.create(
        job=job, sequence=sequence, offset=sequence * 10, line_count=len(lines), text=text
    )


@pytest.mark.django_db
def test_logs_of_runs_ended_long_ago_are_removed_and_the_run_says_so(repository, settings):
    settings.CICD_LOG_RETENTION_DAYS = 30
    runs = {}
    for name, ended in (("old", NOW - 31 * DAY), ("recent", NOW - 29 * DAY)):
        runs[name] = started = start_run(repository, WORKFLOW)
        finish(started, "build")
        job = jobs_of(started)["build"]
        add_chunk(job, ["hello", "world"])
        add_chunk(job, ["bye"], sequence=1)
        Run.objects.filter(id=started.id).update(finished_at=ended)
        Job.objects.filter(id=job.id).update(finished_at=ended)
    running = start_run(repository, WORKFLOW)
    add_chunk(jobs_of(running)["build"], ["still going"])
    Run.objects.filter(id=running.id).update(finished_at=NOW - 90 * DAY)  # an old re-run's

    removed = sum(len(chunk.text) for chunk in LogChunk.objects.filter(job__run=runs["old"]))
    dry = retention.expire_logs(now=NOW, dry_run=True)
    assert LogChunk.objects.count() == 5
    real = retention.expire_logs(now=NOW)
    same_items(dry, real)

    old = Run.objects.get(id=runs["old"].id)
    assert [item.description for item in real.items] == [
        f"logs of acme/widgets #{old.number} (1 jobs, 3 lines), run ended 2031-05-15 12:00 UTC"
    ]
    assert real.bytes == removed
    assert old.logs_removed_at == NOW
    assert not LogChunk.objects.filter(job__run=old).exists()
    assert LogChunk.objects.filter(job__run=runs["recent"]).count() == 2
    assert LogChunk.objects.filter(job__run=running).count() == 1
    assert Run.objects.get(id=runs["recent"].id).logs_removed_at is None

    job = jobs_of(old)["build"]
    assert (
        retention.logs_removed_note(old, job) == "this log was removed by retention on 2031-06-15"
    )
    assert retention.logs_removed_note(runs["recent"], jobs_of(runs["recent"])["build"]) is None
    assert retention.expire_logs(now=NOW).count == 0


@pytest.mark.django_db
def test_a_run_re_run_after_its_logs_were_removed_is_due_again_later(repository):
    started = start_run(repository, WORKFLOW)
    finish(started, "build")
    add_chunk(jobs_of(started)["build"], ["first attempt"])
    Run.objects.filter(id=started.id).update(finished_at=NOW - 40 * DAY)
    assert retention.expire_logs(now=NOW).count == 1
    # A re-run ended after the removal: its new lines are kept until they are old too.
    new_job = jobs_of(started)["build"]
    add_chunk(new_job, ["second attempt"], sequence=1)
    Run.objects.filter(id=started.id).update(finished_at=NOW + DAY)
    assert retention.expire_logs(now=NOW + 2 * DAY).count == 0
    assert retention.expire_logs(now=NOW + 40 * DAY).count == 1
    assert not LogChunk.objects.filter(job__run=started).exists()


@pytest.mark.django_db(transaction=True)
def test_a_real_runs_artifacts_and_logs_expire_and_its_blob_is_pruned(
    repository, tmp_path, blob_dir, settings
):
    settings.CICD_WORK_DIR = tmp_path / "work"
    workflow = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: mkdir out && echo hello > out/a.txt
      - uses: actions/upload-artifact@v4
        with:
          name: dist
          path: out
          retention-days: 3
"""
    sha = make_repository(tmp_path / "repo")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    started = start_run(repository, workflow, sha=sha)
    config = RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)
    assert execute(jobs_of(started)["build"].id, worker="w1", config=config) == State.SUCCESS
    stored_blob = Artifact.objects.get(run=started).blob
    assert stored(stored_blob.sha256) and LogChunk.objects.filter(job__run=started).exists()
    assert list((tmp_path / "work").iterdir()) == []  # the executor removed its job directory

    now = stored_blob.last_stored_at + 2 * DAY
    assert retention.cleanup(now=now)[0].count == 0  # not expired yet
    later = stored_blob.last_stored_at + 31 * DAY
    reports = {report.kind: report for report in retention.cleanup(now=later, dry_run=True)}
    assert Artifact.objects.exists() and stored(stored_blob.sha256)
    assert (reports["artifacts"].count, reports["logs"].count) == (1, 1)
    assert reports["artifacts"].bytes == stored_blob.size
    reports = {report.kind: report for report in retention.cleanup(now=later)}
    assert (reports["artifacts"].count, reports["logs"].count, reports["blobs"].count) == (1, 1, 0)
    assert reports["artifacts"].bytes == stored_blob.size
    assert not Artifact.objects.exists() and not Blob.objects.exists()
    assert not stored(stored_blob.sha256)
    assert not LogChunk.objects.filter(job__run=started).exists()


# -------------------------------------------------------------------------------------- blobs


@pytest.mark.django_db
def test_prune_keeps_referenced_and_recent_blobs_and_removes_leftovers(run, blob_dir, settings):
    settings.CICD_BLOB_PRUNE_GRACE_MINUTES = 60
    referenced = artifact(run, "kept", b"referenced", expires=NOW + DAY).blob
    cached = cache(run, "deps", b"cached", used=NOW).blob
    recent = blob(b"recent, not referenced yet", stored=NOW - timedelta(minutes=30))
    unused = blob(b"unreferenced and old")
    old_time = (NOW - timedelta(hours=2)).timestamp()
    new_time = (NOW - timedelta(minutes=10)).timestamp()

    def put(name: str, content: bytes, mtime: float) -> Path:
        path = blob_dir / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        os.utime(path, (mtime, mtime))
        return path

    stray_sha = "ab" * 32
    stray = put(blob_name(stray_sha), b"no row", old_time)
    young_stray = put(blob_name("cd" * 32), b"no row, new", new_time)
    collision = put(blob_name(stray_sha) + "_AbC1234", b"collision", old_time)
    spool = put(".incoming/blob-x1", b"half an upload", old_time)
    live_spool = put(".incoming/blob-x2", b"uploading", new_time)
    unknown = put("ab/ab/README", b"not ours", old_time)

    dry = retention.prune_blobs(now=NOW, dry_run=True)
    assert stray.exists() and spool.exists() and Blob.objects.count() == 4
    real = retention.prune_blobs(now=NOW)
    same_items(dry, real)

    assert [item.description for item in real.items] == [
        f"blob {unused.sha256[:16]} (unreferenced)",
        f"stored content {blob_name(stray_sha)} (no blob row)",
        f"leftover {blob_name(stray_sha)}_AbC1234",
        "unfinished upload blob-x1",
    ]
    assert real.bytes == unused.size + len(b"no row") + len(b"collision") + len(b"half an upload")
    assert set(Blob.objects.values_list("id", flat=True)) == {referenced.id, cached.id, recent.id}
    assert all(stored(b.sha256) for b in (referenced, cached, recent))
    assert not stored(unused.sha256)
    assert not stray.exists() and not collision.exists() and not spool.exists()
    assert young_stray.exists() and live_spool.exists() and unknown.exists()
    assert retention.prune_blobs(now=NOW).count == 0


@pytest.mark.django_db
def test_storing_renews_a_blob_and_restores_content_that_went_missing(blob_dir):
    first = blob(b"payload")
    assert first.last_stored_at == OLD
    (blob_dir / blob_name(first.sha256)).unlink()  # a crash, or a prune racing (below)
    again = store_blob(io.BytesIO(b"payload"))
    assert again.id == first.id and again.last_stored_at > OLD
    assert blob_storage().open(blob_name(first.sha256)).read() == b"payload"


@pytest.mark.django_db
def test_a_blob_stored_again_after_it_was_chosen_is_not_pruned(blob_dir):
    chosen = blob(b"payload")
    cutoff = chosen.last_stored_at + DAY  # chosen as old and unreferenced...
    store_blob(io.BytesIO(b"payload"))  # ...then an upload of the same content renews it
    assert delete_unused_blob(chosen.id, stored_before=cutoff) is None
    assert Blob.objects.filter(id=chosen.id).exists() and stored(chosen.sha256)
    assert delete_unused_blob(chosen.id, stored_before=NOW + 1000 * DAY).id == chosen.id
    assert delete_unused_blob(chosen.id, stored_before=NOW + 1000 * DAY) is None  # idempotent
    assert not stored(chosen.sha256)


@pytest.mark.django_db(transaction=True)
def test_a_store_racing_a_prune_of_the_same_content_leaves_row_and_content(blob_dir, monkeypatch):
    """The prune has deleted the row (not committed) and is about to delete the content when a
    store of the same content starts: the store must wait, then write the content anew."""
    chosen = blob(b"payload")
    storage = blob_storage()
    delete_content = storage.delete
    outcome: dict[str, object] = {}
    connected = threading.Event()

    def store() -> None:
        try:
            connection.ensure_connection()
            if connection.vendor == "postgresql":
                outcome["pid"] = connection.connection.info.backend_pid
            connected.set()
            outcome["blob"] = store_blob(io.BytesIO(b"payload"))
        except BaseException as error:
            outcome["error"] = error
        finally:
            connected.set()
            connection.close()

    racer = threading.Thread(target=store)

    def delete_while_a_store_starts(name: str) -> None:
        racer.start()
        assert connected.wait(timeout=30)
        if connection.vendor == "postgresql":
            # Deterministic: go on once the store waits for a lock this transaction holds (the
            # row it deleted). pg_locks, not pg_stat_activity: that one is a snapshot per
            # transaction.
            deadline = time.monotonic() + 30
            while racer.is_alive() and time.monotonic() < deadline:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT count(*) FROM pg_locks WHERE pid = %s AND NOT granted",
                        [outcome["pid"]],
                    )
                    if cursor.fetchone()[0]:
                        break
                time.sleep(0.01)
            assert racer.is_alive(), "the store did not wait for the prune's transaction"
        # SQLite: the prune holds the database's write lock, so the store waits at its first
        # write whenever it gets there.
        delete_content(name)

    monkeypatch.setattr(storage, "delete", delete_while_a_store_starts)
    assert delete_unused_blob(chosen.id, stored_before=NOW) is not None
    racer.join(timeout=60)
    assert "error" not in outcome, outcome.get("error")
    renewed = Blob.objects.get(sha256=chosen.sha256)
    assert renewed.id != chosen.id and outcome["blob"].id == renewed.id
    monkeypatch.undo()
    assert storage.open(blob_name(chosen.sha256)).read() == b"payload"


# --------------------------------------------------------------------------------- workspaces


@pytest.mark.django_db
def test_orphaned_workspaces_go_and_running_or_recent_ones_stay(repository, tmp_path, settings):
    settings.CICD_WORKSPACE_ORPHAN_HOURS = 24
    settings.CICD_WORK_DIR = work = tmp_path / "work"
    running_run = start_run(repository, WORKFLOW)
    running_job = jobs_of(running_run)["build"]
    Job.objects.filter(id=running_job.id).update(state=State.RUNNING)
    ended_run = start_run(repository, WORKFLOW)
    finish(ended_run, "build")
    ended_job = jobs_of(ended_run)["build"]
    old = (NOW - 25 * timedelta(hours=1)).timestamp()
    new = (NOW - timedelta(hours=1)).timestamp()

    def job_dir(name: str, mtime: float, size: int = 10) -> Path:
        path = work / name
        (path / "workspace" / "sub").mkdir(parents=True)
        (path / "workspace" / "sub" / "file").write_bytes(b"x" * size)
        os.utime(path, (mtime, mtime))
        return path

    long_job = job_dir(f"{running_job.id}-1", old)  # runs for longer than the threshold
    orphan = job_dir(f"{ended_job.id}-2", old, size=1000)
    readonly = orphan / "workspace" / "sub"
    readonly.chmod(0o500)  # a Go module cache, say
    recent = job_dir(f"{ended_job.id}-3", new)
    job_dir("not-a-job", old, size=5)
    half_removed = job_dir(".removing-99-1-abcd1234", new, size=7)
    (work / "a-file").write_text("files are not workspaces")
    os.utime(work / "a-file", (old, old))

    dry = retention.clean_workspaces(now=NOW, dry_run=True)
    assert orphan.exists() and half_removed.exists()
    real = retention.clean_workspaces(now=NOW)
    same_items(dry, real)
    assert [(item.description, item.bytes) for item in real.items] == [
        ("workspace .removing-99-1-abcd1234", 7),
        (f"workspace {ended_job.id}-2 of job {ended_job.id}", 1000),
        ("workspace not-a-job", 5),
    ]
    assert sorted(p.name for p in work.iterdir()) == sorted([long_job.name, recent.name, "a-file"])
    assert retention.clean_workspaces(now=NOW).count == 0


@pytest.mark.django_db
def test_workspaces_of_a_missing_work_directory_are_nothing(tmp_path):
    assert retention.clean_workspaces(now=NOW, work_dir=tmp_path / "none").count == 0


# ------------------------------------------------------------------------ worker storage report


@pytest.mark.django_db
def test_a_worker_reports_its_storage_at_most_once_a_minute(tmp_path, settings):
    settings.CICD_WORK_DIR = tmp_path / "work"
    (tmp_path / "work" / "7-1").mkdir(parents=True)
    (tmp_path / "work" / "7-1" / "big").write_bytes(b"x" * 4096)
    record_worker(name="w1", labels=["linux"], executor="local", current_job_id=None)
    worker = Worker.objects.get(name="w1")
    assert worker.workspace_bytes == 4096
    assert 0 < worker.disk_free_bytes <= worker.disk_total_bytes
    first = worker.storage_reported_at
    assert first is not None

    (tmp_path / "work" / "7-1" / "more").write_bytes(b"x" * 1000)
    record_worker(name="w1", labels=["linux"], executor="local", current_job_id=None)
    worker.refresh_from_db()
    assert (worker.workspace_bytes, worker.storage_reported_at) == (4096, first)  # not due

    later = first + timedelta(seconds=STORAGE_REPORT_SECONDS)
    assert report_storage("w1", now=later)
    worker.refresh_from_db()
    assert (worker.workspace_bytes, worker.storage_reported_at) == (5096, later)
    assert not report_storage("w1", now=later + timedelta(seconds=1))
    assert not report_storage("unknown-worker")


@pytest.mark.django_db
def test_a_beat_from_a_running_job_refreshes_the_worker(tmp_path, settings):
    settings.CICD_WORK_DIR = tmp_path
    record_worker(name="w2", labels=[], executor="local", current_job_id=None)
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    Worker.objects.filter(name="w2").update(last_heartbeat=long_ago, storage_reported_at=long_ago)
    worker_beat("w2")
    worker = Worker.objects.get(name="w2")
    assert worker.last_heartbeat > long_ago and worker.storage_reported_at > long_ago
    worker_beat("never-registered")  # nothing to refresh, nothing raised


def test_the_work_directory_walk_is_capped(tmp_path):
    for index in range(30):
        (tmp_path / f"f{index}").write_bytes(b"x" * 10)
    (tmp_path / "link").symlink_to("/etc/passwd")
    assert tree_size(tmp_path) == tree_size(tmp_path, max_entries=100)
    assert tree_size(tmp_path).bytes == 300 and tree_size(tmp_path).complete
    capped = tree_size(tmp_path, max_entries=10)
    assert not capped.complete and capped.entries == 10 and capped.bytes <= 100


# ------------------------------------------------------------------------- commands and beat


@pytest.mark.django_db
def test_the_commands_print_each_item_and_the_total(run, blob_dir, tmp_path, settings):
    from django.utils import timezone

    settings.CICD_WORK_DIR = tmp_path / "work"
    settings.CICD_WORK_DIR.mkdir()
    gone = artifact(run, "dist", b"x" * 300, expires=timezone.now() - DAY)

    out = io.StringIO()
    call_command("expire_artifacts", "--dry-run", stdout=out)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("would remove artifact 'dist' of acme/widgets #1 (attempt 1)")
    assert lines[0].endswith(f"[{gone.blob.size} bytes]")
    assert lines[-1] == f"artifacts: 1 item, {gone.blob.size} bytes would be freed"
    assert Artifact.objects.exists()

    out = io.StringIO()
    call_command("cleanup", stdout=out)
    text = out.getvalue()
    assert "removed artifact 'dist' of acme/widgets #1" in text
    for kind in ("caches", "logs", "workspaces", "blobs"):
        assert f"{kind}: 0 items, 0 bytes freed" in text
    assert text.splitlines()[-1] == f"total: 1 item, {gone.blob.size} bytes freed"
    assert not Artifact.objects.exists() and not stored(gone.blob.sha256)

    for name in ("expire_caches", "expire_logs", "clean_workspaces", "prune_blobs"):
        out = io.StringIO()
        call_command(name, "--dry-run", stdout=out)
        assert out.getvalue().endswith("0 items, 0 bytes would be freed\n")


@pytest.mark.django_db
def test_the_beat_task_runs_every_kind_and_is_scheduled(run, blob_dir, settings, tmp_path):
    from django.utils import timezone

    from cicd.celery import app
    from runs.tasks import run_retention as task

    settings.CICD_WORK_DIR = tmp_path / "work"
    artifact(run, "dist", b"old", expires=timezone.now() - DAY)
    task.apply()
    assert not Artifact.objects.exists() and not Blob.objects.exists()

    app.finalize()
    [entry] = [e for e in app.conf.beat_schedule.values() if e["task"] == task.name]
    assert entry["schedule"] == settings.CICD_RETENTION_INTERVAL_MINUTES * 60
