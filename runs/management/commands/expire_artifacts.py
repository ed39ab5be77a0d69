"""`cicd manage expire_artifacts [--dry-run]`: retention of artifacts now (see runs.retention).

Celery beat runs every kind (`cleanup`) each CICD_RETENTION_INTERVAL_MINUTES.
"""

from __future__ import annotations

from runs.management.commands._retention import RetentionCommand


class Command(RetentionCommand):
    help = (
        "Remove artifacts past their expiry (retention-days, default "
        "CICD_ARTIFACT_RETENTION_DAYS) and the blobs only they used."
    )
    kind = "artifacts"
