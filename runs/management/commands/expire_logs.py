"""`cicd manage expire_logs [--dry-run]`: retention of logs now (see runs.retention).

Celery beat runs every kind (`cleanup`) each CICD_RETENTION_INTERVAL_MINUTES.
"""

from __future__ import annotations

from runs.management.commands._retention import RetentionCommand


class Command(RetentionCommand):
    help = "Remove the logs of runs that ended more than CICD_LOG_RETENTION_DAYS ago."
    kind = "logs"
