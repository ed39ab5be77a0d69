"""A burst of signed deliveries against the real server on PostgreSQL + Redis, sent at once
from several threads, 30% of them repeated: every unique delivery starts exactly its run, none
is lost and none is doubled."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
import redis

from .conftest import redis_url_with_db
from .gitrepo import Origin
from .test_serve import BANNER_URL, ServeProcess, processes_with_data_dir, serve_env

pytestmark = pytest.mark.slow

UNIQUE = 1400
DUPLICATES = 600
THREADS = 8
SECRET = "burst-test-webhook-secret"
WORKFLOW = """\
on:
  push:
    tags: ['t*']
jobs:
  nothing:
    if: false
    runs-on: linux
    steps:
      - run: echo never
"""


def post_all(url: str, deliveries: list[tuple[str, bytes]], statuses: list[int]) -> None:
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    for delivery_id, body in deliveries:
        signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        connection.request(
            "POST",
            "/hooks/github/acme/burst",
            body,
            {
                "Content-Type": "application/json",
                "X-GitHub-Event": "push",
                "X-GitHub-Delivery": delivery_id,
                "X-Hub-Signature-256": signature,
            },
        )
        response = connection.getresponse()
        response.read()
        statuses.append(response.status)
    connection.close()


def test_a_burst_with_duplicates_starts_exactly_the_unique_runs(
    tmp_path: Path, fresh_postgres_database: str
):
    redis_url = redis_url_with_db(15)
    redis.Redis.from_url(redis_url).flushdb()
    data_dir = tmp_path / "data"
    env = serve_env(
        data_dir,
        DATABASE_URL=fresh_postgres_database,
        REDIS_URL=redis_url,
        CICD_EXECUTOR="local",
        CICD_WEBHOOK_RATE="0",
    )
    origin = Origin(tmp_path / "origin")
    sha = origin.commit({".cicd/workflows/tags.yml": WORKFLOW})
    server = ServeProcess(env)
    try:
        url = server.wait_for(BANNER_URL).group(1)
        setup = (
            "from runs.models import Organisation, Repository\n"
            "from webhooks.keys import add_secret\n"
            "o = Organisation.objects.create(slug='acme', name='acme')\n"
            "r = Repository.objects.create(organisation=o, slug='burst',\n"
            f"    clone_url={str(origin.path)!r})\n"
            f"add_secret(r, label='burst', value={SECRET!r})\n"
        )
        done = subprocess.run(
            [sys.executable, "-m", "cicd.cli", "manage", "shell", "-c", setup],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

        unique = [
            (
                f"delivery-{n}",
                json.dumps({"ref": f"refs/tags/t{n}", "before": "0" * 40, "after": sha}).encode(),
            )
            for n in range(UNIQUE)
        ]
        rng = random.Random(5)
        everything = unique + [rng.choice(unique) for _ in range(DUPLICATES)]
        rng.shuffle(everything)
        statuses: list[int] = []
        threads = [
            threading.Thread(target=post_all, args=(url, everything[i::THREADS], statuses))
            for i in range(THREADS)
        ]
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        print(f"\nwebhook ack rate: {len(everything) / elapsed:.0f} deliveries/s "
              f"({len(everything)} in {elapsed:.1f} s, {THREADS} client threads)")  # fmt: skip
        assert len(statuses) == UNIQUE + DUPLICATES
        assert set(statuses) <= {200, 202}, (sorted(set(statuses)), "".join(server.lines)[-6000:])
        assert statuses.count(202) == UNIQUE

        deadline = time.monotonic() + 300
        pending = -1
        with psycopg.connect(fresh_postgres_database, autocommit=True) as db:
            while time.monotonic() < deadline:
                (pending,) = db.execute(
                    "SELECT count(*) FROM webhooks_delivery WHERE state <> 'done'"
                ).fetchone()
                if pending == 0:
                    break
                time.sleep(1)
            assert pending == 0, "".join(server.lines)[-3000:]
            (deliveries,) = db.execute("SELECT count(*) FROM webhooks_delivery").fetchone()
            runs = db.execute("SELECT ref, count(*) FROM runs_run GROUP BY ref").fetchall()
        assert deliveries == UNIQUE
        assert len(runs) == UNIQUE, "a delivery was lost"
        assert all(count == 1 for _, count in runs), "a delivery started two runs"
    finally:
        assert server.stop() == 0, server.output_tail()
        redis.Redis.from_url(redis_url).flushdb()
    assert processes_with_data_dir(data_dir) == []
