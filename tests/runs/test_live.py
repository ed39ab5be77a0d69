"""The live WebSocket (/ws/live/): authorisation, live lines, resume, states, wake-ups, resync."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from asgiref.sync import SyncToAsync, sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import connection, connections, transaction
from django.test import Client, override_settings

from cicd.asgi import application
from cicd.settings import redis_channel_layer
from runners.events import CancelToken
from runners.executor import LOCAL, RunnerConfig
from runners.logs import LogLine, SecretMasker, StepOutput
from runs import consumers, live
from runs.claims import claim_job
from runs.execution import LOG_CHUNK_MAX_LINES, DatabaseSink, _LogFlusher, execute
from runs.models import Job, LogChunk, Organisation, Repository, RepositoryRole, Step
from runs.scheduling import finish_job
from runs.states import State
from runs.transitions import move_job
from tests.conftest import redis_url_with_db

from .conftest import jobs_of, start_run
from .test_execution import make_repository

pytestmark = pytest.mark.django_db(transaction=True)

ONE_JOB = "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: x}]\n"
MEMORY_LAYER = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
REDIS_LAYER = {"default": redis_channel_layer(redis_url_with_db(2))}  # as the settings make it


@pytest.fixture(autouse=True)
def memory_layer() -> Iterator[None]:
    """The embedded default's layer unless a test says otherwise; a fresh one per test."""
    with override_settings(CHANNEL_LAYERS=MEMORY_LAYER):
        channel_layers.backends.clear()
        yield
    channel_layers.backends.clear()


@pytest.fixture(autouse=True)
def close_thread_connections() -> Iterator[None]:
    """The test database is dropped at the end: no thread may keep a connection to it."""
    yield
    consumers.close_database_threads()
    # Where `sync_to_async` runs the async tests' database calls (and Channels its session
    # lookups). An in-memory SQLite connection ignores close(): forget it instead, or the next
    # test without database access finds it there.
    SyncToAsync.single_thread_executor.submit(forget_connections).result()


def forget_connections() -> None:
    for opened in connections.all(initialized_only=True):
        opened.close()
        del connections[opened.alias]


# -- builders ---------------------------------------------------------------------------------


def make_repository_row(slug: str, *, public: bool = False) -> Repository:
    organisation, _ = Organisation.objects.get_or_create(slug="acme", defaults={"name": "Acme"})
    return Repository.objects.create(
        organisation=organisation, slug=slug, clone_url=f"/srv/git/{slug}.git", is_public=public
    )


def running_job(slug: str = "widgets", *, public: bool = False) -> tuple[Job, str]:
    """A claimed job of a new run, and the worker's token."""
    run = start_run(make_repository_row(slug, public=public), ONE_JOB)
    job = jobs_of(run)["a"]
    token = claim_job(job.id, worker="w1", lease_seconds=60)
    assert token
    return Job.objects.get(id=job.id), token


def reader_of(repository: Repository, name: str = "reader") -> str:
    """A user with the read role on the repository; returns their session cookie header."""
    user = get_user_model().objects.create_user(name, password="pw")
    RepositoryRole.objects.create(user=user, repository=repository, role=RepositoryRole.READ)
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


def write_lines(job_id: int, token: str, texts: list[str], *, step: int | None = 0) -> None:
    """What a worker does: lines through a DatabaseSink, stored as one flush."""
    sink = DatabaseSink(job_id=job_id, token=token)
    now = time.time()
    sink.log(step, [LogLine(now, "stdout", text) for text in texts])
    sink.flush()


async def connect(cookie: str | None = None) -> WebsocketCommunicator:
    headers = [(b"origin", b"http://localhost")]
    if cookie:
        headers.append((b"cookie", cookie.encode()))
    communicator = WebsocketCommunicator(application, "/ws/live/", headers=headers)
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def receive_until(
    communicator: WebsocketCommunicator, done: Callable[[list[dict]], bool], timeout: float = 10
) -> list[dict]:
    """Frames until `done(frames received so far)` holds."""
    frames: list[dict] = []
    deadline = time.monotonic() + timeout
    while not done(frames):
        frame = await communicator.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        frames.append(frame)
    return frames


def has(kind: str, **expected: object) -> Callable[[list[dict]], bool]:
    """Whether a frame of that type arrived whose `kind` object has the expected fields."""

    def check(frames: list[dict]) -> bool:
        return any(
            frame["type"] == kind
            and all(frame[kind].get(name) == value for name, value in expected.items())
            for frame in frames
        )

    return check


def stored_lines(job: Job) -> list[list]:
    chunks = LogChunk.objects.filter(job=job).order_by("sequence").values_list("text", flat=True)
    return [json.loads(line) for text in chunks for line in text.split("\n")]


async def receive_lines(
    communicator: WebsocketCommunicator, job_id: int, offset: int, count: int, timeout: float = 15
) -> list[list]:
    """`count` lines of the job from `offset`, checking that log frames are consecutive."""
    lines: list[list] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count:
        frame = await communicator.receive_json_from(timeout=max(0.1, deadline - time.monotonic()))
        if frame["type"] != "log":
            continue
        assert frame["job"] == job_id
        assert frame["offset"] == offset + len(lines), "a gap or a duplicate"
        assert frame["lines"], "log frames are never empty"
        lines += frame["lines"]
    assert len(lines) == count
    return lines


def texts(lines: list[list]) -> list[str]:
    return [line[2] for line in lines]


# -- authorisation ------------------------------------------------------------------------------


async def test_a_private_job_and_run_do_not_exist_for_an_anonymous_viewer():
    job, token = await sync_to_async(running_job)("secret")
    await sync_to_async(write_lines)(job.id, token, ["classified"])
    communicator = await connect()

    await communicator.send_json_to({"subscribe": "job", "job": job.id, "offset": 0})
    assert await communicator.receive_json_from(timeout=5) == {
        "type": "error",
        "message": "not found",
        "status": 404,
        "job": job.id,
    }
    await communicator.send_json_to({"subscribe": "run", "run": job.run_id})
    refused = await communicator.receive_json_from(timeout=5)
    assert (refused["type"], refused["status"], refused["run"]) == ("error", 404, job.run_id)
    # Same answer as for a job that does not exist at all: nothing tells them it is there.
    await communicator.send_json_to({"subscribe": "job", "job": job.id + 1000})
    assert (await communicator.receive_json_from(timeout=5))["status"] == 404
    await communicator.receive_nothing(timeout=0.8)  # and no line leaks out by polling

    # The socket stays open for what they may read.
    public, public_token = await sync_to_async(running_job)("open", public=True)
    await sync_to_async(write_lines)(public.id, public_token, ["hello world"])
    await communicator.send_json_to({"subscribe": "job", "job": public.id})
    assert texts(await receive_lines(communicator, public.id, 0, 1)) == ["hello world"]
    await communicator.disconnect()


async def test_a_user_with_the_read_role_gets_the_job_its_steps_and_lines():
    job, token = await sync_to_async(running_job)("secret")
    repository = await sync_to_async(lambda: job.run.repository)()
    cookie = await sync_to_async(reader_of)(repository)
    other = await sync_to_async(make_repository_row)("other")
    outsider = await sync_to_async(reader_of)(other, "outsider")
    sink = DatabaseSink(job_id=job.id, token=token)
    await sync_to_async(sink.step_started)(0, "Build")
    await sync_to_async(write_lines)(job.id, token, ["one", "two"])

    communicator = await connect(cookie)
    await communicator.send_json_to({"subscribe": "job", "job": job.id, "offset": 0})
    first = await communicator.receive_json_from(timeout=5)
    assert first["type"] == "job"
    assert (first["job"]["id"], first["job"]["state"], first["job"]["key"]) == (
        job.id,
        "running",
        "a",
    )
    assert first["job"]["log_lines"] == 2
    assert [(s["index"], s["name"], s["state"]) for s in first["steps"]] == [
        (0, "Build", "running")
    ]
    lines = await receive_lines(communicator, job.id, 0, 2)
    assert texts(lines) == ["one", "two"]
    assert [(line[1], line[3]) for line in lines] == [("stdout", 0), ("stdout", 0)]
    await communicator.disconnect()

    # A reader of another repository is an outsider here.
    stranger = await connect(outsider)
    await stranger.send_json_to({"subscribe": "run", "run": job.run_id})
    assert (await stranger.receive_json_from(timeout=5))["status"] == 404
    await stranger.disconnect()


async def test_bad_messages_get_an_error_frame_and_the_socket_stays_open():
    job, _ = await sync_to_async(running_job)("open", public=True)
    communicator = await connect()
    for message, status in [
        ("not json", 400),
        ("[1, 2]", 400),
        ('{"hello": 1}', 400),
        ('{"subscribe": "artifact", "artifact": 1}', 400),
        ('{"subscribe": "job", "job": "1"}', 400),
        ('{"subscribe": "job", "job": true}', 400),
        (f'{{"subscribe": "job", "job": {job.id}, "offset": -3}}', 400),
        ('{"unsubscribe": ["job"], "job": 1}', 400),
        ('{"subscribe": "run", "run": 99999999}', 404),
    ]:
        await communicator.send_to(text_data=message)
        frame = await communicator.receive_json_from(timeout=5)
        assert (frame["type"], frame["status"]) == ("error", status), message
    await communicator.send_json_to({"subscribe": "run", "run": job.run_id})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "run"
    await communicator.disconnect()


# -- log lines ----------------------------------------------------------------------------------


async def test_lines_written_while_subscribed_arrive_in_order():
    job, token = await sync_to_async(running_job)("open", public=True)
    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id, "offset": 0})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "job"

    await sync_to_async(write_lines)(job.id, token, ["first"])
    assert texts(await receive_lines(communicator, job.id, 0, 1)) == ["first"]
    await sync_to_async(write_lines)(job.id, token, ["second", "third"], step=1)
    lines = await receive_lines(communicator, job.id, 1, 2)
    assert [(line[2], line[3]) for line in lines] == [("second", 1), ("third", 1)]
    await communicator.disconnect()


async def test_resuming_from_the_middle_of_a_chunk_has_no_gap_and_no_duplicate():
    job, token = await sync_to_async(running_job)("open", public=True)
    for batch in range(3):
        await sync_to_async(write_lines)(
            job.id, token, [f"line {batch * 10 + i}" for i in range(10)]
        )
    offsets = await sync_to_async(
        lambda: list(
            LogChunk.objects.filter(job=job).order_by("offset").values_list("offset", flat=True)
        )
    )()
    assert offsets == [0, 10, 20]

    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id, "offset": 15})
    lines = await receive_lines(communicator, job.id, 15, 15)
    assert texts(lines) == [f"line {n}" for n in range(15, 30)]
    await communicator.receive_nothing(timeout=0.8)  # nothing more, nothing twice

    # A reconnect resumes where the viewer stopped, as new lines keep coming.
    await communicator.disconnect()
    await sync_to_async(write_lines)(job.id, token, ["line 30", "line 31"])
    again = await connect()
    await again.send_json_to({"subscribe": "job", "job": job.id, "offset": 29})
    assert texts(await receive_lines(again, job.id, 29, 3)) == ["line 29", "line 30", "line 31"]
    await again.disconnect()


async def test_a_large_log_comes_in_bounded_consecutive_frames():
    job, token = await sync_to_async(running_job)("open", public=True)
    total = 2 * consumers.MAX_LINES_PER_FRAME + 123
    await sync_to_async(write_lines)(job.id, token, [str(n) for n in range(total)])
    # One flush of many lines is stored in chunks of bounded size, so readers are bounded too.
    chunks = await sync_to_async(
        lambda: list(LogChunk.objects.filter(job=job).order_by("offset"))
    )()
    assert len(chunks) > 1
    assert all(chunk.line_count <= LOG_CHUNK_MAX_LINES for chunk in chunks)
    assert [chunk.offset for chunk in chunks] == [
        sum(chunk.line_count for chunk in chunks[:i]) for i in range(len(chunks))
    ]
    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id})
    frames = []
    while sum(len(f["lines"]) for f in frames) < total:
        frame = await communicator.receive_json_from(timeout=10)
        if frame["type"] == "log":
            frames.append(frame)
    assert all(len(f["lines"]) <= consumers.MAX_LINES_PER_FRAME for f in frames)
    assert [f["offset"] for f in frames] == [
        sum(len(f["lines"]) for f in frames[:i]) for i in range(len(frames))
    ]
    assert texts([line for f in frames for line in f["lines"]]) == [str(n) for n in range(total)]
    await communicator.disconnect()


async def test_unsubscribing_stops_the_lines():
    job, token = await sync_to_async(running_job)("open", public=True)
    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "job"
    await communicator.send_json_to({"unsubscribe": "job", "job": job.id})
    await communicator.receive_nothing(timeout=0.3)
    await sync_to_async(write_lines)(job.id, token, ["unseen"])
    await communicator.receive_nothing(timeout=1.2)
    await communicator.disconnect()


async def test_groups_and_annotations_are_stored_and_delivered_in_the_stream():
    job, token = await sync_to_async(running_job)("open", public=True)
    output = StepOutput(SecretMasker(["hunter2"]))
    events = output.feed(
        "stdout",
        b"::group::Install hunter2\n"
        b"installing\n"
        b"::endgroup::\n"
        b"::error file=app.py,line=3,col=7,title=Lint::bad name\n"
        b"::warning::careful\n",
    )
    sink = DatabaseSink(job_id=job.id, token=token)
    await sync_to_async(sink.log)(2, events)
    await sync_to_async(sink.flush)()

    stored = await sync_to_async(stored_lines)(job)
    structured = [line[1:] for line in stored if line[1] not in ("stdout", "stderr")]
    assert structured == [
        ["group", "Install ***"],
        ["endgroup", ""],
        ["error", "bad name", {"file": "app.py", "line": 3, "column": 7, "title": "Lint"}],
        ["warning", "careful"],
    ]
    assert all(isinstance(line[0], float) for line in stored)

    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id})
    lines = await receive_lines(communicator, job.id, 0, len(stored))
    by_stream = {line[1]: line for line in lines if line[1] != "stdout"}
    assert by_stream["group"][2:] == ["Install ***", 2]
    assert by_stream["endgroup"][2:] == ["", 2]
    assert by_stream["error"][2:] == [
        "bad name",
        2,
        {"file": "app.py", "line": 3, "column": 7, "title": "Lint"},
    ]
    assert by_stream["warning"][2:] == ["careful", 2]  # no properties given: no 5th element
    await communicator.disconnect()


async def test_a_continuously_written_log_is_followed_without_gap_or_duplicate():
    job, token = await sync_to_async(running_job)("open", public=True)
    total = 3000
    written = threading.Event()

    def writer() -> None:
        sink = DatabaseSink(job_id=job.id, token=token)
        try:
            n = 0
            sizes = [1, 7, 3, 40, 1, 250, 2, 13]
            while n < total:
                size = min(sizes[n % len(sizes)], total - n)
                sink.log(n % 3, [LogLine(time.time(), "stdout", f"{n + i}") for i in range(size)])
                n += size
                if n % 5 == 0:
                    time.sleep(0.002)
            sink.flush()
        finally:
            written.set()
            connection.close()

    early = await connect()
    await early.send_json_to({"subscribe": "job", "job": job.id, "offset": 0})
    thread = threading.Thread(target=writer)
    thread.start()
    late = await connect()
    await asyncio.sleep(0.05)
    await late.send_json_to({"subscribe": "job", "job": job.id, "offset": 500})
    try:
        seen_early, seen_late = await asyncio.gather(
            receive_lines(early, job.id, 0, total, timeout=60),
            receive_lines(late, job.id, 500, total - 500, timeout=60),
        )
    finally:
        await asyncio.to_thread(thread.join)
    assert written.is_set()
    assert texts(seen_early) == [str(n) for n in range(total)]
    assert texts(seen_late) == [str(n) for n in range(500, total)]
    await early.receive_nothing(timeout=0.8)
    await early.disconnect()
    await late.disconnect()


async def test_a_viewer_too_far_behind_while_following_is_told_to_resync(monkeypatch):
    monkeypatch.setattr(consumers, "RESYNC_BEHIND_LINES", 50)
    monkeypatch.setattr(consumers, "MAX_LINES_PER_ROUND", 20)
    job, token = await sync_to_async(running_job)("open", public=True)
    await sync_to_async(write_lines)(job.id, token, ["a", "b", "c"])
    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id})
    await receive_lines(communicator, job.id, 0, 3)

    # A burst far beyond what the viewer may lag by: it is not buffered for the viewer.
    await sync_to_async(write_lines)(job.id, token, [str(n) for n in range(200)])
    frames = await receive_until(communicator, lambda fs: bool(fs) and fs[-1]["type"] == "resync")
    assert frames[-1] == {"type": "resync", "job": job.id, "offset": 3}
    assert [frame for frame in frames if frame["type"] == "log"] == []
    await communicator.receive_nothing(timeout=0.8)  # the subscription ended

    # Re-subscribing from its offset catches up (in several rounds, no resync while catching up).
    await communicator.send_json_to({"subscribe": "job", "job": job.id, "offset": 3})
    assert texts(await receive_lines(communicator, job.id, 3, 200)) == [str(n) for n in range(200)]
    await communicator.disconnect()


# -- states -------------------------------------------------------------------------------------


async def test_run_and_job_frames_follow_state_changes():
    repository = await sync_to_async(make_repository_row)("open", public=True)
    run = await sync_to_async(start_run)(repository, ONE_JOB)
    job = (await sync_to_async(jobs_of)(run))["a"]
    communicator = await connect()
    await communicator.send_json_to({"subscribe": "run", "run": run.id})
    first = await communicator.receive_json_from(timeout=5)
    assert first["type"] == "run"
    assert (first["run"]["id"], first["run"]["number"]) == (run.id, run.number)
    assert [(j["id"], j["key"], j["state"]) for j in first["jobs"]] == [(job.id, "a", "queued")]
    await communicator.send_json_to({"subscribe": "job", "job": job.id})
    assert (await communicator.receive_json_from(timeout=5))["job"]["state"] == "queued"

    token = await sync_to_async(claim_job)(job.id, worker="w1", lease_seconds=60)

    def job_in_run(state: str) -> Callable[[list[dict]], bool]:
        return lambda frames: any(
            f["type"] == "run" and f["jobs"][0]["state"] == state for f in frames
        )

    frames = await receive_until(
        communicator, lambda fs: job_in_run("running")(fs) and has("job", state="running")(fs)
    )
    started = next(f for f in frames if f["type"] == "job")
    assert started["job"]["started_at"]

    await sync_to_async(write_lines)(job.id, token, ["last words"])
    assert await sync_to_async(finish_job)(job.id, State.SUCCESS, token=token)
    frames = await receive_until(
        communicator, lambda fs: has("run", state="success")(fs) and has("job", state="success")(fs)
    )
    # The final job frame comes after the job's last line, and says how many there are.
    final = next(i for i, f in enumerate(frames) if f["type"] == "job")
    assert [f["type"] for f in frames[:final]].count("log") == 1
    assert frames[final]["job"]["log_lines"] == 1
    assert frames[final]["job"]["finished_at"]
    assert job_in_run("success")(frames)
    await communicator.disconnect()


async def test_a_finished_job_with_a_long_log_sends_its_final_state_after_every_line(monkeypatch):
    monkeypatch.setattr(consumers, "MAX_LINES_PER_ROUND", 100)
    job, token = await sync_to_async(running_job)("open", public=True)
    await sync_to_async(write_lines)(job.id, token, [str(n) for n in range(450)])
    assert await sync_to_async(finish_job)(job.id, State.FAILURE, token=token)
    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id})
    frames = await receive_until(communicator, has("job"))
    assert frames[-1]["job"]["state"] == "failure"
    assert sum(len(f["lines"]) for f in frames if f["type"] == "log") == 450
    await communicator.disconnect()


# -- wake-ups -----------------------------------------------------------------------------------


async def test_a_failed_shared_read_is_retried_by_the_next_viewer_not_shared():
    calls: list[int] = []

    def flaky(job_id: int) -> int:
        calls.append(job_id)
        if len(calls) == 1:
            raise ConnectionError("the database is restarting")
        return job_id

    shared = consumers._shared_reads()
    fresh_after = time.time()
    with pytest.raises(ConnectionError):
        await shared.get(("flaky", 7), fresh_after, flaky, 7)
    assert await shared.get(("flaky", 7), fresh_after, flaky, 7) == 7
    assert await shared.get(("flaky", 7), fresh_after, flaky, 7) == 7  # this one is shared
    assert calls == [7, 7]


async def test_viewers_of_one_job_woken_by_one_change_share_one_read(monkeypatch):
    # Polling out of reach: each round of reads below comes from one wake-up.
    monkeypatch.setattr(consumers, "POLL_SECONDS", 60)
    reads: list[int] = []
    real_read_log = consumers.read_log

    def counted(job_id: int, start: int, max_lines: int) -> consumers.LogPiece:
        reads.append(start)
        return real_read_log(job_id, start, max_lines)

    monkeypatch.setattr(consumers, "read_log", counted)
    job, token = await sync_to_async(running_job)("open", public=True)
    viewers = [await connect() for _ in range(8)]
    for viewer in viewers:
        await viewer.send_json_to({"subscribe": "job", "job": job.id})
        assert (await viewer.receive_json_from(timeout=5))["type"] == "job"
    for viewer in viewers:
        await viewer.receive_nothing(timeout=0.1)  # the first reads are done
    reads.clear()

    await sync_to_async(write_lines)(job.id, token, ["shared"])
    for viewer in viewers:
        assert texts(await receive_lines(viewer, job.id, 0, 1)) == ["shared"]
    # Eight viewers, one wake-up: the log from line 0 was read once (once more at most, when
    # a viewer's read began before the wake-up was stamped), not eight times.
    assert 1 <= reads.count(0) <= 2, reads
    for viewer in viewers:
        await viewer.disconnect()


@pytest.mark.parametrize("layers", [MEMORY_LAYER, REDIS_LAYER], ids=["memory", "redis"])
async def test_a_wake_up_through_the_channel_layer_beats_the_poll(layers, monkeypatch):
    # With polling pushed out of reach, only the layer's message can bring the line in time.
    monkeypatch.setattr(consumers, "POLL_SECONDS", 60)
    with override_settings(CHANNEL_LAYERS=layers):
        channel_layers.backends.clear()
        job, token = await sync_to_async(running_job)("open", public=True)
        communicator = await connect()
        await communicator.send_json_to({"subscribe": "job", "job": job.id})
        assert (await communicator.receive_json_from(timeout=5))["type"] == "job"
        await communicator.receive_nothing(timeout=0.3)  # the first read is done
        sink = DatabaseSink(job_id=job.id, token=token)
        flusher = _LogFlusher(sink, CancelToken())
        flusher.start()
        try:
            await sync_to_async(sink.log)(0, [LogLine(time.time(), "stdout", "woken")])
            await sync_to_async(sink.flush)()
            # Right after: this wake-up is held back (a job printing fast would send hundreds a
            # second); the flusher sends it on its next round.
            await sync_to_async(sink.log)(0, [LogLine(time.time(), "stdout", "again")])
            await sync_to_async(sink.flush)()
            lines = await receive_lines(communicator, job.id, 0, 2, timeout=5)
        finally:
            await asyncio.to_thread(flusher.stop)
        assert texts(lines) == ["woken", "again"]
        await sync_to_async(move_job)(job.id, State.CANCELLED, reason="test")
        frame = await communicator.receive_json_from(timeout=5)
        assert (frame["type"], frame["job"]["state"]) == ("job", "cancelled")
        await communicator.disconnect()
    channel_layers.backends.clear()


async def test_an_idle_wait_on_the_redis_layer_outlasts_its_blocking_pop():
    # A viewer waits on the layer for as long as nothing changes. With redis-py 8's default
    # 5 s socket timeout this wait raised TimeoutError and closed the WebSocket.
    with override_settings(CHANNEL_LAYERS=REDIS_LAYER):
        channel_layers.backends.clear()
        layer = get_channel_layer()
        channel = await layer.new_channel()
        waiting = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(6.5)
        assert not waiting.done(), waiting.exception() if waiting.done() else None
        await layer.send(channel, {"type": "live.changed", "kind": "run", "id": 1})
        received = await asyncio.wait_for(waiting, 5)
    channel_layers.backends.clear()
    assert received["id"] == 1


async def test_notify_reaches_the_redis_layer_from_synchronous_code():
    with override_settings(CHANNEL_LAYERS=REDIS_LAYER):
        channel_layers.backends.clear()
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(live.run_group(424242), channel)
        await layer.group_add(live.job_group(737373), channel)
        try:
            await sync_to_async(live.notify_job)(737373, run_id=424242)
            received = [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(2)]
        finally:
            await layer.group_discard(live.run_group(424242), channel)
            await layer.group_discard(live.job_group(737373), channel)
    channel_layers.backends.clear()
    assert sorted((m["type"], m["kind"], m["id"]) for m in received) == [
        ("live.changed", "job", 737373),
        ("live.changed", "run", 424242),
    ]


async def test_one_transaction_sends_one_wake_up_per_group_and_only_after_commit():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(live.job_group(5), channel)

    def many_changes(commit: bool) -> None:
        try:
            with transaction.atomic():
                for _ in range(3):
                    live.notify_job(5)
                if not commit:
                    raise RuntimeError("roll back")
        except RuntimeError:
            pass

    await sync_to_async(many_changes)(False)
    before_commit = time.time()
    await sync_to_async(many_changes)(True)
    message = await asyncio.wait_for(layer.receive(channel), 5)
    sent_at = message.pop("at")
    assert message == {"type": "live.changed", "kind": "job", "id": 5}
    assert before_commit <= sent_at <= time.time()  # stamped when sent, after the commit
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(layer.receive(channel), 0.5)


async def test_without_wake_ups_viewers_still_get_lines_and_states_by_polling(monkeypatch):
    # The embedded default: the writer is a worker process, out of reach of the web process's
    # in-memory layer, so no wake-up ever arrives; the database alone must do.
    monkeypatch.setattr(live, "_send", lambda groups: None)
    job, token = await sync_to_async(running_job)("open", public=True)
    communicator = await connect()
    await communicator.send_json_to({"subscribe": "job", "job": job.id})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "job"
    await sync_to_async(write_lines)(job.id, token, ["polled"])
    started = time.monotonic()
    assert texts(await receive_lines(communicator, job.id, 0, 1, timeout=5)) == ["polled"]
    assert time.monotonic() - started < 5 * consumers.POLL_SECONDS  # by polling, not by luck
    assert await sync_to_async(finish_job)(job.id, State.SUCCESS, token=token)
    frames = await receive_until(communicator, has("job", state="success"), timeout=5)
    assert frames[-1]["job"]["log_lines"] == 1
    await communicator.disconnect()


def test_a_broken_channel_layer_never_breaks_a_state_change(caplog):
    job, token = running_job()
    dead = {"default": {**REDIS_LAYER["default"], "CONFIG": {"hosts": ["redis://127.0.0.1:1/0"]}}}
    with override_settings(CHANNEL_LAYERS=dead):
        channel_layers.backends.clear()
        sink = DatabaseSink(job_id=job.id, token=token)
        sink.log(0, [LogLine(time.time(), "stdout", "still stored")])
        sink.flush()
        assert finish_job(job.id, State.SUCCESS, token=token)
    channel_layers.backends.clear()
    assert Job.objects.get(id=job.id).state == State.SUCCESS
    assert LogChunk.objects.filter(job=job).count() == 1
    assert "could not notify" in caplog.text


# -- the flusher --------------------------------------------------------------------------------


@pytest.fixture
def local_config(tmp_path) -> RunnerConfig:
    return RunnerConfig(executor=LOCAL, work_dir=tmp_path / "work", grace_seconds=1.0)


def test_a_lone_line_reaches_the_database_while_its_step_still_sleeps(tmp_path, local_config):
    sha = make_repository(tmp_path / "repo")
    repository = make_repository_row("widgets")
    repository.clone_url = str(tmp_path / "repo")
    repository.save()
    source = (
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n"
        "      - run: echo lonely; sleep 4; echo done\n"
    )
    job = jobs_of(start_run(repository, source, sha=sha))["a"]
    results: list[str | None] = []

    def work() -> None:
        try:
            results.append(execute(job.id, worker="w1", config=local_config))
        finally:
            connection.close()

    worker = threading.Thread(target=work)
    worker.start()
    try:
        # Until the line shows up or the job is over: only the first proves it came alone.
        stored = ""
        while "lonely" not in stored and worker.is_alive():
            time.sleep(0.05)
            stored = "".join(LogChunk.objects.filter(job=job).values_list("text", flat=True))
        assert "lonely" in stored
        assert "done" not in stored, "the line waited for the step to print again"
        assert Step.objects.get(job=job, index=0).state == State.RUNNING
    finally:
        worker.join(timeout=30)
    assert results == [State.SUCCESS]


def test_the_flusher_stores_buffered_lines_without_a_next_line():
    job, token = running_job()
    sink = DatabaseSink(job_id=job.id, token=token)
    sink.flush()  # a flush just happened: the next line alone is not due
    sink.log(0, [LogLine(time.time(), "stdout", "alone")])
    assert not LogChunk.objects.filter(job=job).exists()
    flusher = _LogFlusher(sink, CancelToken())
    flusher.start()
    try:
        deadline = time.monotonic() + 5
        while not LogChunk.objects.filter(job=job).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        flusher.stop()
    assert "alone" in LogChunk.objects.get(job=job).text


def test_a_refused_flush_stops_the_flusher_quietly_and_cancels_the_job():
    job, old = running_job()
    # The job was handed to another worker (the lease expired): the old worker's writes fail.
    assert move_job(job.id, State.QUEUED, from_states={State.RUNNING}, reason="lease expired")
    assert claim_job(job.id, worker="w2", lease_seconds=60)
    sink = DatabaseSink(job_id=job.id, token=old)
    sink.flush()
    sink.log(0, [LogLine(time.time(), "stdout", "from the past")])
    cancel = CancelToken()
    flusher = _LogFlusher(sink, cancel)
    flusher.start()
    assert cancel.wait(5)
    flusher._thread.join(timeout=5)
    assert not flusher._thread.is_alive()
    assert "no longer held" in cancel.reason
    flusher.stop()
    assert not LogChunk.objects.filter(job=job).exists()
