"""What /healthz reports: can we reach the database, and when did a worker last answer."""

from __future__ import annotations

import time
from dataclasses import dataclass

from django.core.cache import cache
from django.db import connection

WORKER_PING_KEY = "cicd:worker:last-ping"
_PING_TTL_SECONDS = 24 * 3600


def record_worker_ping(nonce: str = "") -> None:
    cache.set(WORKER_PING_KEY, {"at": time.time(), "nonce": nonce}, _PING_TTL_SECONDS)


def last_worker_ping() -> dict | None:
    return cache.get(WORKER_PING_KEY)


@dataclass(frozen=True, slots=True)
class Health:
    database_ok: bool
    database_error: str
    worker_seconds_ago: float | None
    worker_nonce: str

    @property
    def ok(self) -> bool:
        return self.database_ok

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "database": "ok" if self.database_ok else f"error: {self.database_error}",
            "database_vendor": connection.vendor,
            "worker_last_ping_seconds_ago": self.worker_seconds_ago,
            "worker_last_ping_nonce": self.worker_nonce,
        }


def check() -> Health:
    database_ok, database_error = True, ""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any driver error means "not healthy", reported, not raised
        database_ok, database_error = False, type(exc).__name__
    ping = last_worker_ping()
    return Health(
        database_ok=database_ok,
        database_error=database_error,
        worker_seconds_ago=round(time.time() - ping["at"], 1) if ping else None,
        worker_nonce=ping.get("nonce", "") if ping else "",
    )
