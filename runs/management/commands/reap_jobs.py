"""`manage.py reap_jobs`: requeue or fail the jobs of lost workers now (see runs.reaper).

Celery beat does this every CICD_REAP_LEASES_SECONDS; the command is for operators and scripts.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs.reaper import FAILED, REQUEUED, reap_lost_jobs


class Command(BaseCommand):
    help = (
        "Requeue running jobs whose worker stopped renewing its lease or ran past the job's "
        "timeout; fail those already claimed CICD_MAX_JOB_CLAIMS times."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be done; change nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        reaped = reap_lost_jobs(dry_run=dry_run)
        prefix = "would be " if dry_run else ""
        for lost in reaped:
            self.stdout.write(
                f"job {lost.job_id} {prefix}{lost.action}: {lost.why} "
                f"(worker {lost.worker or '?'}, claimed {lost.claims} times)"
            )
        requeued = sum(1 for lost in reaped if lost.action == REQUEUED)
        failed = sum(1 for lost in reaped if lost.action == FAILED)
        self.stdout.write(f"{prefix}requeued {requeued}, {prefix}failed {failed}")
