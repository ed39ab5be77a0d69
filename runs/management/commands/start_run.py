"""Start a run of a workflow file at a commit of a repository, by hand.

    cicd manage start_run acme/widgets --clone-url /srv/git/widgets.git \
        --workflow .cicd/workflows/ci.yml --ref refs/heads/main

Useful before webhooks are set up, and for scripts. The workflow is read from the server's bare
mirror at that commit (fetched first); the repository (and its organisation) is created on first
use when --clone-url is given.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.mirror import MirrorError, fetch, workflow_files
from runs.models import Organisation, Repository
from runs.scheduling import RunRequest, create_run


class Command(BaseCommand):
    help = "Start a run of a workflow file at a commit of a git repository."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="organisation/repository")
        parser.add_argument("--clone-url", help="git URL or local path of the repository")
        parser.add_argument("--workflow", required=True, help="path of the workflow file")
        parser.add_argument("--ref", default="refs/heads/main")
        parser.add_argument("--sha", help="commit (default: the tip of --ref)")
        parser.add_argument("--event", default="workflow_dispatch")
        parser.add_argument("--input", action="append", default=[], metavar="NAME=VALUE")

    def handle(self, *args: Any, **options: Any) -> None:
        repository = self._repository(options["repository"], options["clone_url"])
        try:
            mirror = fetch(repository, want=options["sha"])
            sha = options["sha"] or self._resolve(mirror, options["ref"])
            files = workflow_files(mirror, sha)
        except MirrorError as error:
            raise CommandError(str(error)) from None
        if options["workflow"] not in files:
            found = ", ".join(files) or "none"
            raise CommandError(f"no workflow {options['workflow']} at {sha[:12]} (found: {found})")
        source = files[options["workflow"]]
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

    def _resolve(self, mirror: Path, ref: str) -> str:
        result = subprocess.run(
            ["git", "-C", str(mirror), "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise CommandError(f"ref {ref} is not in the repository")
        return result.stdout.strip()
