"""`cicd serve` starts the whole system: web, scheduler, workers; on both setups.

These start real processes (daphne, Celery workers with beat) and talk to them over HTTP.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
import requests

from .conftest import redis_url_with_db

pytestmark = pytest.mark.slow

BANNER_URL = re.compile(r"cicd is running at (http://\S+)")
BANNER_LOGIN = re.compile(r"login: (\S+) / (\S+)")


class ServeProcess:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cicd.cli", "serve", "--port", "0", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line)

    def wait_for(self, pattern: re.Pattern[str], timeout: float = 120) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                match = pattern.search(line)
                if match:
                    return match
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matched {pattern.pattern}:\n{''.join(self.lines)[-4000:]}")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=30)

    def output_tail(self) -> str:
        """The end of what the system printed: why it stopped, when it stopped too early."""
        return "".join(self.lines)[-4000:]


def processes_with_data_dir(data_dir: Path) -> list[int]:
    marker = f"CICD_DATA_DIR={data_dir}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def serve_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY"}
    }
    env.update(CICD_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", CICD_LOG_LEVEL="WARNING")
    env.update(extra)
    return env


def check_running_system(url: str, username: str, password: str) -> None:
    home = requests.get(url, timeout=10)
    assert home.status_code == 200
    assert "cicd is running" in home.text

    # The startup ping travels web process -> broker -> worker -> cache -> web.
    deadline = time.monotonic() + 60
    health = {}
    while time.monotonic() < deadline:
        health = requests.get(url + "healthz", timeout=10).json()
        if health["worker_last_ping_nonce"] == "serve-startup":
            break
        time.sleep(0.3)
    assert health["worker_last_ping_nonce"] == "serve-startup", health

    session = requests.Session()
    login_page = session.get(url + "admin/login/", timeout=10)
    assert login_page.status_code == 200
    response = session.post(
        url + "admin/login/?next=/admin/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
            "next": "/admin/",
        },
        headers={"Referer": url + "admin/login/"},
        timeout=10,
    )
    assert response.status_code == 200
    assert "Site administration" in response.text
    assert "Log out" in response.text


def test_embedded_default_serves_pages_runs_a_worker_and_remembers_the_admin(tmp_path):
    data_dir = tmp_path / "data"
    server = ServeProcess(serve_env(data_dir))
    try:
        url = server.wait_for(BANNER_URL).group(1)
        username, password = server.wait_for(BANNER_LOGIN).groups()
        assert username == "admin"
        assert "embedded (SQLite, no Redis)" in "".join(server.lines)
        check_running_system(url, username, password)
    finally:
        assert server.stop() == 0, server.output_tail()
    assert (data_dir / "cicd.sqlite3").exists()
    assert processes_with_data_dir(data_dir) == []

    again = ServeProcess(serve_env(data_dir))
    try:
        assert again.wait_for(BANNER_LOGIN).groups() == (username, password)
    finally:
        assert again.stop() == 0


def test_scaled_setup_with_postgres_redis_and_two_workers(tmp_path, fresh_postgres_database):
    redis_url = redis_url_with_db(14)
    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path / "data"
    env = serve_env(data_dir, DATABASE_URL=fresh_postgres_database, REDIS_URL=redis_url)
    server = ServeProcess(env, "--workers", "2")
    try:
        url = server.wait_for(BANNER_URL).group(1)
        username, password = server.wait_for(BANNER_LOGIN).groups()
        output = "".join(server.lines)
        assert "scaled (Redis)" in output
        assert "database postgresql" in output
        assert "workers: 2" in output
        check_running_system(url, username, password)
    finally:
        assert server.stop() == 0, server.output_tail()
        redis.Redis.from_url(redis_url).flushdb()
    assert not (data_dir / "cicd.sqlite3").exists()
    assert processes_with_data_dir(data_dir) == []


def test_a_port_in_use_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "cicd.cli", "serve", "--port", str(port)],
            env=serve_env(tmp_path / "data"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in result.stderr
