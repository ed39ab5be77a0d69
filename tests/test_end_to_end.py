"""A workflow with a diamond of jobs, a matrix and outputs runs end to end through the real
system (`cicd serve`: web, beat, Celery workers, local executor) on both setups."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
import redis

from .conftest import redis_url_with_db
from .test_serve import BANNER_URL, ServeProcess, processes_with_data_dir, serve_env

pytestmark = pytest.mark.slow

WORKFLOW = """\
name: ci
on: push
jobs:
  setup:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=$(cat VERSION)" >> "$GITHUB_OUTPUT"
  test:
    needs: setup
    runs-on: linux
    strategy:
      matrix:
        python: [3.10, "3.12"]
    steps:
      - run: echo "testing ${{ matrix.python }} against ${{ needs.setup.outputs.version }}"
  lint:
    needs: setup
    runs-on: linux
    steps:
      - run: echo lint ok
  release:
    needs: [setup, test, lint]
    runs-on: linux
    steps:
      - run: echo "released ${{ needs.setup.outputs.version }}"
"""


def make_repository(path: Path) -> None:
    (path / ".cicd" / "workflows").mkdir(parents=True)
    (path / ".cicd" / "workflows" / "ci.yml").write_text(WORKFLOW)
    (path / "VERSION").write_text("2.0.1\n")
    git = ["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "first"], check=True)


def query(database: str, sql: str, *params: object) -> list[tuple]:
    if database.startswith("postgres"):
        with psycopg.connect(database) as connection:
            return connection.execute(sql.replace("?", "%s"), params).fetchall()
    with sqlite3.connect(database, timeout=20) as connection:
        return connection.execute(sql, params).fetchall()


def run_workflow_through_the_system(tmp_path: Path, env: dict[str, str], database: str) -> None:
    make_repository(tmp_path / "repo")
    server = ServeProcess(env, "--workers", "2")
    try:
        server.wait_for(BANNER_URL)
        started = subprocess.run(
            [sys.executable, "-m", "cicd.cli", "manage", "start_run", "acme/widgets",
             "--clone-url", str(tmp_path / "repo"), "--workflow", ".cicd/workflows/ci.yml",
             "--event", "push"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        run_id = int(started.stdout.split()[1])

        deadline = time.monotonic() + 120
        state = ""
        while time.monotonic() < deadline:
            state = query(database, "SELECT state FROM runs_run WHERE id = ?", run_id)[0][0]
            if state in ("success", "failure", "cancelled", "timed_out"):
                break
            time.sleep(0.5)
        jobs = dict(query(database, "SELECT key, state FROM runs_job WHERE run_id = ?", run_id))
        assert state == "success", (state, jobs, "".join(server.lines)[-3000:])
        assert jobs == {
            "setup": "success",
            "test-3.10": "success",
            "test-3.12": "success",
            "lint": "success",
            "release": "success",
        }
        rows = query(
            database,
            "SELECT c.text FROM runs_logchunk c JOIN runs_job j ON j.id = c.job_id "
            "WHERE j.run_id = ? ORDER BY c.job_id, c.sequence",
            run_id,
        )
        lines = [json.loads(line)[2] for (text,) in rows for line in text.splitlines()]
        assert "testing 3.10 against 2.0.1" in lines
        assert "released 2.0.1" in lines
        # Exactly once: every job was claimed once and reached success once.
        claims = query(database, "SELECT claims FROM runs_job WHERE run_id = ?", run_id)
        assert sorted(c for (c,) in claims) == [1] * 5
    finally:
        assert server.stop() == 0, server.output_tail()


def test_embedded_default_runs_a_diamond_with_a_matrix(tmp_path):
    data_dir = tmp_path / "data"
    env = serve_env(data_dir, CICD_EXECUTOR="local")
    run_workflow_through_the_system(tmp_path, env, str(data_dir / "cicd.sqlite3"))
    assert processes_with_data_dir(data_dir) == []


def test_postgres_and_redis_with_two_workers_run_a_diamond_with_a_matrix(
    tmp_path, fresh_postgres_database
):
    redis_url = redis_url_with_db(12)
    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path / "data"
    env = serve_env(
        data_dir,
        CICD_EXECUTOR="local",
        DATABASE_URL=fresh_postgres_database,
        REDIS_URL=redis_url,
    )
    try:
        run_workflow_through_the_system(tmp_path, env, fresh_postgres_database)
    finally:
        redis.Redis.from_url(redis_url).flushdb()
    assert processes_with_data_dir(data_dir) == []
