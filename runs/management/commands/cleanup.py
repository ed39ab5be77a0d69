"""`cicd manage cleanup [--dry-run]`: every kind of retention at once (see runs.retention), as
the Celery beat task does each CICD_RETENTION_INTERVAL_MINUTES."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs import retention


class Command(BaseCommand):
    help = (
        "Expire artifacts, caches and logs, remove orphaned workspaces, prune unused blobs; "
        "print each item removed and the bytes freed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be removed; remove nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        reports = retention.cleanup(dry_run=dry_run)
        for report in reports:
            for line in retention.report_lines(report):
                self.stdout.write(line)
        count = sum(report.count for report in reports)
        size = sum(report.bytes for report in reports)
        self.stdout.write(retention.summary("total", count, size, dry_run=dry_run))
        failed = [kind for kind in retention.KINDS if kind not in {r.kind for r in reports}]
        if failed:
            raise CommandError(f"retention of {', '.join(failed)} failed: see the log")
