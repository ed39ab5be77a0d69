"""`cicd manage prune_blobs [--dry-run]`: retention of blobs now (see runs.retention).

Celery beat runs every kind (`cleanup`) each CICD_RETENTION_INTERVAL_MINUTES.
"""

from __future__ import annotations

from runs.management.commands._retention import RetentionCommand


class Command(RetentionCommand):
    help = (
        "Remove blobs no artifact or cache uses (after CICD_BLOB_PRUNE_GRACE_MINUTES), "
        "stored content with no row, and abandoned upload spools."
    )
    kind = "blobs"
