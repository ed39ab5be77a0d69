"""Read the `on.schedule` entries of repositories' default branches now.

Pushes to the default branch refresh them by themselves; this is for a repository just added, or
one whose pushes do not reach the server.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from runs.mirror import MirrorError
from runs.models import Repository
from runs.triggering import sync_schedules


class Command(BaseCommand):
    help = "Refresh the cron schedules of repositories from their default branch."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repositories", nargs="*", help="organisation/repository (all)")

    def handle(self, *args: Any, **options: Any) -> None:
        repositories = Repository.objects.select_related("organisation")
        failed = 0
        for repository in repositories:
            if options["repositories"] and repository.full_name not in options["repositories"]:
                continue
            try:
                count = sync_schedules(repository)
            except MirrorError as error:
                failed += 1
                self.stderr.write(f"{repository}: {error}")
                continue
            self.stdout.write(f"{repository}: {count} schedule(s)")
        if failed:
            raise SystemExit(1)
