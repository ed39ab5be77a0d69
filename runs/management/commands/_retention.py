"""What the retention commands share: `--dry-run`, one line per item, then the total."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs import retention


class RetentionCommand(BaseCommand):
    kind = ""  # a key of runs.retention.KINDS

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be removed; remove nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        report = retention.KINDS[self.kind](dry_run=options["dry_run"])
        for line in retention.report_lines(report):
            self.stdout.write(line)
