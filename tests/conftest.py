"""Shared test helpers: the service URLs the suite runs against, and process helpers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

POSTGRES_URL = os.environ.get("CICD_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("CICD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_url_with_db(db: int) -> str:
    """The test Redis server with another logical database, so tests do not share keys.

    Each test that flushes or runs a whole system takes its own: 2 channel layers (health, live),
    5-6 `bin/bench`, 7-8 the bench smoke test, 9 webhook rate limit, 11 and 13 worker loss, 12
    end to end, 14 scaled serve, 15 webhook burst. Running tests in parallel (xdist) share
    nothing else.
    """
    base = REDIS_URL.rsplit("/", 1)[0] if REDIS_URL.count("/") > 2 else REDIS_URL
    return f"{base}/{db}"


@pytest.fixture
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for a test that starts its own processes."""
    import psycopg

    name = f"cicd_t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
