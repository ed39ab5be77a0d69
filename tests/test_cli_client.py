"""The `cicd` API client commands against a live server: login, runs list, run show, cancel,
rerun --failed, and logs --follow through dropped connections, a restarting server and a 502."""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from runs.api import create_token
from runs.models import Organisation, Repository, RepositoryRole, Run
from runs.states import State
from runs.transitions import move_job
from tests.api.builders import add_chunk, execute, jobs_of, start, start_run

pytestmark = pytest.mark.django_db(transaction=True)

TIMEOUT = 60


@pytest.fixture(autouse=True)
def _no_worker_messages(monkeypatch) -> None:
    monkeypatch.setattr("runs.dispatch._send", lambda *args, **kwargs: None)


@pytest.fixture
def home(tmp_path) -> dict[str, str]:
    """An environment whose HOME and XDG_CONFIG_HOME are the test's own, without CICD_*."""
    environ = {
        key: value for key, value in os.environ.items() if not key.startswith(("CICD_", "XDG_"))
    }
    environ |= {"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    return environ


@pytest.fixture
def setup(db):
    organisation = Organisation.objects.create(slug="acme", name="Acme")
    repository = Repository.objects.create(
        organisation=organisation, slug="widgets", clone_url="/x"
    )
    users = get_user_model().objects
    writer = users.create_user("walt")
    reader = users.create_user("rita")
    RepositoryRole.objects.create(user=writer, repository=repository, role="write")
    RepositoryRole.objects.create(user=reader, repository=repository, role="read")
    return {
        "repository": repository,
        "writer": create_token(writer, name="cli", scopes=["read", "write"]),
        "reader": create_token(reader, name="cli", scopes=["read", "write"]),
    }


def cicd(*args: str, env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cicd.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        input=stdin,
        timeout=TIMEOUT,
        start_new_session=True,  # no controlling terminal: getpass reads stdin
    )


def test_login_checks_the_token_and_saves_it_for_the_other_commands(live_server, setup, home):
    config = Path(home["XDG_CONFIG_HOME"]) / "cicd" / "config.json"
    refused = cicd("login", "--server", live_server.url, "--token", "cicd_wrong", env=home)
    assert refused.returncode == 1
    assert "unknown or revoked" in refused.stderr and "Traceback" not in refused.stderr
    assert not config.exists()

    # Without --token it is asked for (getpass reads stdin when there is no terminal).
    done = cicd("login", "--server", live_server.url + "/", env=home, stdin=setup["writer"] + "\n")
    assert done.returncode == 0, done.stderr
    assert "as walt" in done.stdout
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert json.loads(config.read_text()) == {"server": live_server.url, "token": setup["writer"]}

    start_run(setup["repository"])
    listed = cicd("runs", "list", env=home)
    assert listed.returncode == 0, listed.stderr
    assert "acme/widgets#1" in listed.stdout

    # The environment comes before the file, and flags before both.
    elsewhere = home | {"CICD_SERVER": "http://127.0.0.1:9"}
    assert cicd("runs", "list", env=elsewhere).returncode == 2
    assert cicd("runs", "list", "--server", live_server.url, env=elsewhere).returncode == 0
    as_reader = home | {"CICD_TOKEN": setup["reader"]}
    run = Run.objects.get()
    refused = cicd("cancel", str(run.id), env=as_reader)
    assert refused.returncode == 1 and "rita may read acme/widgets" in refused.stderr


def test_client_commands_need_neither_django_settings_nor_a_database(live_server, setup, home):
    start_run(setup["repository"])
    broken = home | {
        "DJANGO_SETTINGS_MODULE": "no.such.settings",
        "DATABASE_URL": "nonsense://",
        "CICD_SERVER": live_server.url,
        "CICD_TOKEN": setup["reader"],
    }
    listed = cicd("runs", "list", "acme/widgets", env=broken)
    assert listed.returncode == 0, listed.stderr


def test_missing_configuration_and_unreachable_servers_are_usage_errors(home):
    nothing = cicd("runs", "list", env=home)
    assert nothing.returncode == 2 and "cicd login" in nothing.stderr
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    unreachable = cicd("run", "show", "1", "--server", f"http://127.0.0.1:{port}", "--token", "t",
                       env=home)  # fmt: skip
    assert unreachable.returncode == 2 and "cannot reach" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
    bad_url = cicd("runs", "list", "--server", "ftp://x", "--token", "t", env=home)
    assert bad_url.returncode == 2 and "http://" in bad_url.stderr


def test_runs_list_run_show_cancel_and_rerun_failed(live_server, setup, home):
    env = home | {"CICD_SERVER": live_server.url, "CICD_TOKEN": setup["writer"]}
    repository = setup["repository"]
    finished = start_run(repository)
    execute(finished, "build")
    execute(finished, "test", "failure")
    running = start_run(repository, ref="refs/heads/feature")
    start(running, "build")

    listed = cicd("runs", "list", "acme/widgets", "--status", "failure", env=env)
    assert listed.returncode == 0, listed.stderr
    rows = listed.stdout.splitlines()
    assert rows[0].split() == ["ID", "RUN", "WORKFLOW", "EVENT", "BRANCH", "SHA", "STATE",
                               "STARTED", "TOOK"]  # fmt: skip
    assert len(rows) == 2 and rows[1].split()[:7] == [
        str(finished.id), "acme/widgets#1", "CI", "push", "main", "aaaaaaa", "failure"
    ]  # fmt: skip
    paged = cicd("runs", "list", "--limit", "1", env=env)
    assert paged.returncode == 0 and f"--after {running.id}" in paged.stderr

    shown = cicd("run", "show", str(running.id), env=env)
    assert shown.returncode == 0, shown.stderr
    running.refresh_from_db()
    header = f"acme/widgets #2 (run {running.id}, attempt 1 of 1): {running.state}\n"
    assert shown.stdout.startswith(header)
    jobs = {line.split()[2]: line.split()[1] for line in shown.stdout.splitlines()[3:]}
    assert jobs == {"build": "running", "test": "pending"}

    cancelled = cicd("cancel", str(running.id), env=env)
    assert cancelled.returncode == 0, cancelled.stderr
    assert jobs_of(running)["build"].cancel_requested
    assert jobs_of(running)["test"].state == State.CANCELLED

    again = cicd("rerun", str(finished.id), "--failed", env=env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"run {finished.id} (acme/widgets #1) attempt 2: ")
    assert {key: job.state for key, job in jobs_of(finished).items()} == {
        "build": "success",
        "test": "queued",
    }
    refused = cicd("rerun", str(finished.id), env=env)
    assert refused.returncode == 1 and "still" in refused.stderr
    missing = cicd("run", "show", "999999", env=env)
    assert missing.returncode == 1 and "no run 999999" in missing.stderr


# ------------------------------------------------------------------------------ logs --follow


class FlakyProxy:
    """A TCP proxy in front of the live server that fails on request: it cuts responses that
    contain a marker in the middle of their body, drops connections without an answer (a
    restarting server), or answers 502 (a reverse proxy whose upstream is gone)."""

    def __init__(self, upstream: str) -> None:
        parts = urllib.parse.urlsplit(upstream)
        self.upstream = (parts.hostname, parts.port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.cut_marker = b""
        self.cuts_left = self.drops_left = self.bad_gateways_left = 0
        self.failures = 0
        self.closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self, marker: str, times: int) -> None:
        with self.lock:
            self.cut_marker, self.cuts_left = marker.encode(), times

    def drop(self, times: int) -> None:
        with self.lock:
            self.drops_left = times

    def bad_gateway(self, times: int) -> None:
        with self.lock:
            self.bad_gateways_left = times

    def settled(self) -> bool:
        with self.lock:
            return not (self.cuts_left or self.drops_left or self.bad_gateways_left)

    def close(self) -> None:
        self.closing = True
        self.listener.close()

    def _accept(self) -> None:
        while not self.closing:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection:
            with self.lock:
                if self.drops_left:
                    self.drops_left -= 1
                    self.failures += 1
                    return  # closed without a word
            request = _read_request(connection)
            with self.lock:
                if self.bad_gateways_left:
                    self.bad_gateways_left -= 1
                    self.failures += 1
                    connection.sendall(BAD_GATEWAY)
                    return
            with socket.create_connection(self.upstream) as upstream:
                upstream.sendall(request)
                response = b"".join(iter(lambda: upstream.recv(65536), b""))
            with self.lock:
                if self.cuts_left and self.cut_marker and self.cut_marker in response:
                    self.cuts_left -= 1
                    self.failures += 1
                    connection.sendall(response[: response.index(self.cut_marker)])
                    return
            connection.sendall(response)


BAD_GATEWAY = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        body += connection.recv(65536)
    return head + b"\r\n\r\n" + body


@pytest.fixture
def proxy(live_server) -> Iterator[FlakyProxy]:
    flaky = FlakyProxy(live_server.url)
    yield flaky
    flaky.close()


def lines(first: int, count: int) -> list[list]:
    return [[time.time(), "stdout", f"line {n}"] for n in range(first, first + count)]


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_logs_follow_prints_a_running_jobs_lines_in_order_through_failures(
    live_server, proxy, setup, home
):
    run = start_run(setup["repository"])
    job = start(run, "build")
    add_chunk(job, lines(1, 3))
    env = home | {"CICD_SERVER": proxy.url, "CICD_TOKEN": setup["reader"]}
    follower = subprocess.Popen(
        [sys.executable, "-m", "cicd.cli", "logs", str(job.id), "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    printed: queue.Queue[str] = queue.Queue()
    threading.Thread(
        target=lambda: [printed.put(line) for line in follower.stdout], daemon=True
    ).start()
    output: list[str] = []

    def expect(*numbers: int) -> None:
        for _ in numbers:
            output.append(printed.get(timeout=TIMEOUT).rstrip("\n"))
        assert output[-len(numbers) :] == [f"line {n}" for n in numbers]

    try:
        expect(1, 2, 3)
        # The next answers that carry line 5 are cut off in the middle of their body.
        proxy.cut("line 5", times=2)
        add_chunk(job, lines(4, 3))
        expect(4, 5, 6)
        assert proxy.settled()
        # The server "restarts": connections are dropped while lines keep coming.
        proxy.drop(times=3)
        wait_until(proxy.settled, "the dropped connections")
        add_chunk(job, lines(7, 2), step_index=1)
        expect(7, 8)
        # A reverse proxy answers 502 while its upstream is down.
        proxy.bad_gateway(times=2)
        add_chunk(job, lines(9, 1500), step_index=1)  # more than one page at once
        expect(*range(9, 1509))
        assert move_job(job.id, State.SUCCESS, from_states={State.RUNNING})
        assert follower.wait(timeout=TIMEOUT) == 0
    finally:
        follower.kill()
        follower.wait()
    rest = []
    while not printed.empty():
        rest.append(printed.get().rstrip("\n"))
    assert rest == []
    assert output == [f"line {n}" for n in range(1, 1509)]
    assert proxy.failures == 2 + 3 + 2
    errors = follower.stderr.read()
    assert errors.count("retrying") == proxy.failures
    assert f"job {job.id} ended: success" in errors and "Traceback" not in errors


def test_logs_follow_exits_1_when_the_job_fails_and_logs_prints_once(live_server, setup, home):
    run = start_run(setup["repository"])
    job = start(run, "build")
    add_chunk(job, lines(1, 2))
    assert move_job(job.id, State.FAILURE, from_states={State.RUNNING})
    env = home | {"CICD_SERVER": live_server.url, "CICD_TOKEN": setup["reader"]}
    followed = cicd("logs", str(job.id), "--follow", env=env)
    assert followed.returncode == 1
    assert followed.stdout.splitlines() == ["line 1", "line 2"]
    assert f"job {job.id} ended: failure" in followed.stderr
    printed = cicd("logs", str(job.id), env=env)
    assert printed.returncode == 0 and printed.stdout.splitlines() == ["line 1", "line 2"]
