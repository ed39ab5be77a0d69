"""`manage.py reap_containers`: remove Docker objects that jobs left behind (see runners.reaper)."""

from __future__ import annotations

from typing import Any

import docker
from django.core.management.base import BaseCommand, CommandError, CommandParser
from docker.errors import DockerException

from runners.reaper import DEFAULT_OLDER_THAN_SECONDS, reap_orphans


class Command(BaseCommand):
    help = (
        "Remove containers, networks and volumes labelled cicd.job that are older than a "
        "threshold (left behind by a worker that died mid-job)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=DEFAULT_OLDER_THAN_SECONDS,
            metavar="SECONDS",
            help=f"only objects created more than this long ago "
            f"(default {DEFAULT_OLDER_THAN_SECONDS:g}; longer than the longest job)",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="list what would be removed; remove nothing"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if options["older_than"] < 0:
            raise CommandError("--older-than must be 0 or more seconds")
        try:
            client = docker.from_env()
            removed = reap_orphans(
                client, older_than_seconds=options["older_than"], dry_run=options["dry_run"]
            )
        except DockerException as error:
            raise CommandError(f"cannot reach the Docker engine: {error}") from error
        verb = "would remove" if options["dry_run"] else "removed"
        for item in removed:
            self.stdout.write(f"{verb} {item}")
        self.stdout.write(f"{verb} {len(removed)} object(s) in all")
