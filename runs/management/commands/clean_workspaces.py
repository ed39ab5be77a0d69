"""`cicd manage clean_workspaces [--dry-run]`: retention of workspaces now (see runs.retention).

Celery beat runs every kind (`cleanup`) each CICD_RETENTION_INTERVAL_MINUTES.
"""

from __future__ import annotations

from runs.management.commands._retention import RetentionCommand


class Command(RetentionCommand):
    help = (
        "Remove local job directories under CICD_WORK_DIR that no running job owns and "
        "nobody touched for CICD_WORKSPACE_ORPHAN_HOURS."
    )
    kind = "workspaces"
