"""Start a workflow by hand on the server (its `workflow_dispatch` trigger, typed inputs).

    cicd manage dispatch acme/widgets .cicd/workflows/deploy.yml --ref main -i level=debug

The same as the API's dispatch endpoint (and `cicd dispatch`, its client), for operators on the
server itself.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.models import Repository
from runs.triggering import DispatchError, dispatch


class Command(BaseCommand):
    help = "Dispatch a workflow (on.workflow_dispatch) with inputs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="organisation/repository")
        parser.add_argument("workflow", help="path of the workflow file in the repository")
        parser.add_argument("--ref", help="branch, tag or sha (default: the default branch)")
        parser.add_argument(
            "-i", "--input", action="append", default=[], metavar="NAME=VALUE", dest="inputs"
        )
        parser.add_argument("--actor", default="cli")

    def handle(self, *args: Any, **options: Any) -> None:
        org_slug, _, repo_slug = options["repository"].partition("/")
        repository = Repository.objects.filter(organisation__slug=org_slug, slug=repo_slug).first()
        if repository is None:
            raise CommandError(f"no repository {options['repository']!r}")
        inputs = {}
        for item in options["inputs"]:
            name, equals, value = item.partition("=")
            if not equals or not name:
                raise CommandError(f"--input {item!r} is not NAME=VALUE")
            inputs[name] = value
        try:
            run = dispatch(
                repository,
                workflow_path=options["workflow"],
                ref=options["ref"] or repository.default_branch,
                inputs=inputs,
                actor=options["actor"],
            )
        except DispatchError as error:
            raise CommandError("\n".join(error.problems)) from None
        self.stdout.write(f"run {run.id} ({repository} #{run.number}): {run.state}")
