"""Create an API token for a user and print it (it is shown only this once).

cicd manage create_token alice --name laptop --scope read --scope write
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.api import SCOPES, create_token


class Command(BaseCommand):
    help = "Create an API token for a user; prints the token once."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("username")
        parser.add_argument("--name", default="cli", help="what the token is for")
        parser.add_argument("--scope", action="append", choices=SCOPES, dest="scopes")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"no user {options['username']!r}")
        scopes = options["scopes"] or ["read"]
        self.stdout.write(create_token(user, name=options["name"], scopes=scopes))
