"""`git push` to a bare repository on the server's host runs its workflows end to end, on the
embedded default: the installed post-receive hook signs each push to the server, which reads
the workflows at the pushed commits and runs the ones whose filters match."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .gitrepo import Origin
from .test_serve import BANNER_URL, ServeProcess, processes_with_data_dir, serve_env

pytestmark = pytest.mark.slow

CI = """\
name: ci
on:
  push:
    branches: [main]
    paths-ignore: ['docs/**']
jobs:
  test:
    runs-on: linux
    steps:
      - run: echo "testing $GITHUB_SHA on $GITHUB_REF"
"""
RELEASE = """\
name: release
on:
  push:
    tags: ['v*']
jobs:
  publish:
    runs-on: linux
    steps:
      - run: echo "publishing ${{ github.ref_name }} at ${{ github.sha }}"
"""


def query(database: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(database, timeout=20) as connection:
        return connection.execute(sql).fetchall()


def test_git_push_to_a_hooked_bare_repository_runs_the_matching_workflows(tmp_path):
    data_dir = tmp_path / "data"
    database = data_dir / "cicd.sqlite3"
    env = serve_env(data_dir, CICD_EXECUTOR="local")
    server = ServeProcess(env)
    try:
        url = server.wait_for(BANNER_URL).group(1)
        bare = Origin(tmp_path / "widgets.git", bare=True)
        installed = subprocess.run(
            [sys.executable, "-m", "cicd.cli", "manage", "install_hook", "acme/widgets",
             "--bare", str(bare.path), "--server", url],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert installed.returncode == 0, installed.stderr
        assert (bare.path / "hooks" / "post-receive").stat().st_mode & 0o777 == 0o700

        subprocess.run(
            ["git", "clone", "-q", str(bare.path), str(tmp_path / "work")],
            check=True, capture_output=True,
        )  # fmt: skip
        work = Origin.__new__(Origin)
        work.path = tmp_path / "work"
        work.git("checkout", "-q", "-b", "main")

        def push(*refspecs: str) -> str:
            done = work.git("push", "--porcelain", "origin", *refspecs)
            return done

        first = work.commit(
            {".cicd/workflows/ci.yml": CI, ".cicd/workflows/release.yml": RELEASE, "src/a": "1"}
        )
        pushed = subprocess.run(
            ["git", "-C", str(work.path), "push", "origin", "main"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert "cicd: push received" in pushed.stderr, pushed.stderr
        second = work.commit({"src/a": "2"})
        docs_only = work.commit({"docs/readme.md": "words"})
        push("main")  # two commits in one push: src changed, so ci runs at the tip
        third = work.commit({"docs/more.md": "more words"})
        push("main")  # docs only: nothing runs
        work.git("tag", "v1.0")
        push("v1.0")

        expected = {("ci", first), ("ci", docs_only), ("release", third)}
        deadline = time.monotonic() + 180
        rows: list[tuple] = []
        while time.monotonic() < deadline:
            deliveries = query(database, "SELECT state FROM webhooks_delivery")
            rows = query(database, "SELECT workflow_name, sha, state, id FROM runs_run")
            settled = len(deliveries) == 4 and all(state == "done" for (state,) in deliveries)
            finished = all(state in ("success", "failure", "cancelled") for _, _, state, _ in rows)
            if settled and finished and len(rows) >= len(expected):
                break
            time.sleep(0.5)
        assert {(name, sha) for name, sha, _, _ in rows} == expected, (
            rows,
            "".join(server.lines)[-3000:],
        )
        assert len(rows) == 3
        assert all(state == "success" for _, _, state, _ in rows), rows
        assert second not in {sha for _, sha, _, _ in rows}

        release_id = next(run_id for name, _, _, run_id in rows if name == "release")
        chunks = query(
            database,
            "SELECT c.text FROM runs_logchunk c JOIN runs_job j ON j.id = c.job_id "
            f"WHERE j.run_id = {release_id} ORDER BY c.sequence",
        )
        lines = [json.loads(line)[2] for (text,) in chunks for line in text.splitlines()]
        assert f"publishing v1.0 at {third}" in lines
    finally:
        assert server.stop() == 0, server.output_tail()
    assert processes_with_data_dir(data_dir) == []
