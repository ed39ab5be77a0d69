"""`cicd manage expire_caches [--dry-run]`: retention of caches now (see runs.retention).

Celery beat runs every kind (`cleanup`) each CICD_RETENTION_INTERVAL_MINUTES.
"""

from __future__ import annotations

from runs.management.commands._retention import RetentionCommand


class Command(RetentionCommand):
    help = (
        "Remove cache entries not restored for CICD_CACHE_UNUSED_DAYS and the blobs only they used."
    )
    kind = "caches"
