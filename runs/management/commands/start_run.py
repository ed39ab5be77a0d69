"""Start a run of a workflow file at a commit of a local repository, by hand.

    cicd manage start_run acme/widgets --clone-url /srv/git/widgets.git \
        --workflow .cicd/workflows/ci.yml --ref refs/heads/main

Useful before webhooks are set up, and for scripts; the repository (and its organisation) is
created on first use when --clone-url is given.
"""

from __future__ import annotations

import subprocess
import uuid
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.models import Organisation, Repository
from runs.scheduling import RunRequest, create_run


class Command(BaseCommand):
    help = "Start a run of a workflow file at a commit of a local git repository."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="organisation/repository")
        parser.add_argument("--clone-url", help="local path of the git repository")
        parser.add_argument("--workflow", required=True, help="path of the workflow file")
        parser.add_argument("--ref", default="refs/heads/main")
        parser.add_argument("--sha", help="commit (default: the tip of --ref)")
        parser.add_argument("--event", default="workflow_dispatch")
        parser.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")

    def handle(self, *args: Any, **options: Any) -> None:
        repository = self._repository(options["repository"], options["clone_url"])
        sha = options["sha"] or self._git(repository, "rev-parse", f"{options['ref']}^{{commit}}")
        source = self._git(repository, "show", f"{sha}:{options['workflow']}")
        inputs = {}
        for item in options["input"]:
            name, equals, value = item.partition("=")
            if not equals:
                raise CommandError(f"--input {item!r} is not NAME=VALUE")
            inputs[name] = value
        run = create_run(
            repository,
            RunRequest(
                workflow_path=options["workflow"],
                source=source,
                event=options["event"],
                ref=options["ref"],
                sha=sha,
                idempotency_key=f"manual:{uuid.uuid4()}",
                actor="cli",
                inputs=inputs,
            ),
        )
        self.stdout.write(f"run {run.id} ({repository} #{run.number}): {run.state}")
        if run.error:
            self.stdout.write(run.error)

    def _repository(self, full_name: str, clone_url: str | None) -> Repository:
        org_slug, _, repo_slug = full_name.partition("/")
        if not org_slug or not repo_slug:
            raise CommandError(f"repository {full_name!r} is not organisation/repository")
        existing = Repository.objects.filter(organisation__slug=org_slug, slug=repo_slug).first()
        if existing:
            return existing
        if not clone_url:
            raise CommandError(f"no repository {full_name}; pass --clone-url to create it")
        organisation, _ = Organisation.objects.get_or_create(
            slug=org_slug, defaults={"name": org_slug}
        )
        return Repository.objects.create(
            organisation=organisation, slug=repo_slug, clone_url=clone_url
        )

    def _git(self, repository: Repository, *args: str) -> str:
        result = subprocess.run(
            ["git", "-C", repository.clone_url, *args], capture_output=True, text=True
        )
        if result.returncode != 0:
            reason = result.stderr.strip().splitlines()[-1:] or ["git failed"]
            raise CommandError(f"git {' '.join(args)} in {repository.clone_url}: {reason[0]}")
        return result.stdout.strip() if args[0] == "rev-parse" else result.stdout
