"""Install (or print) the post-receive hook that tells the server about pushes.

    cicd manage install_hook acme/widgets --bare /srv/git/widgets.git
    cicd manage install_hook acme/widgets --print > hooks/post-receive

With --bare, the repository is created on first use with the bare repository as its clone URL.
Each install makes a new webhook secret labelled `post-receive` and deactivates the previous
ones, so only the newest hook script can start runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from runs.models import Organisation, Repository
from webhooks.hook import MARKER, hook_script
from webhooks.keys import add_secret
from webhooks.models import WebhookSecret

LABEL = "post-receive"


class Command(BaseCommand):
    help = "Install or print the post-receive hook that starts workflows on every git push."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("repository", help="organisation/repository")
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--bare", help="bare repository to install the hook into")
        target.add_argument("--print", action="store_true", help="print the hook script")
        parser.add_argument(
            "--server",
            help="the server's URL as the hook sees it (default: CICD_PUBLIC_URL, else "
            "http://CICD_BIND_HOST:CICD_PORT)",
        )
        parser.add_argument(
            "--force", action="store_true", help="replace a post-receive hook cicd did not write"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        bare = Path(options["bare"]).resolve() if options["bare"] else None
        if bare is not None and not (bare / "HEAD").is_file():
            raise CommandError(f"{bare} is not a bare git repository (it has no HEAD file)")
        hook_path = bare / "hooks" / "post-receive" if bare else None
        foreign = (
            hook_path is not None
            and hook_path.exists()
            and MARKER not in hook_path.read_text(errors="replace")
        )
        if foreign and not options["force"]:
            raise CommandError(
                f"{hook_path} exists and was not written by cicd; pass --force to replace it"
            )
        server = (
            options["server"]
            or settings.CICD_PUBLIC_URL
            or f"http://{settings.CICD_BIND_HOST}:{settings.CICD_PORT}"
        )
        with transaction.atomic():
            repository = self._repository(options["repository"], bare)
            WebhookSecret.objects.filter(repository=repository, label=LABEL).update(active=False)
            secret = add_secret(repository, label=LABEL)
            url = f"{server.rstrip('/')}/hooks/git/{repository.organisation.slug}/{repository.slug}"
            script = hook_script(url=url, secret=secret, full_name=repository.full_name)
            if hook_path is None:
                self.stdout.write(script, ending="")
                return
            hook_path.parent.mkdir(exist_ok=True)
            temporary = hook_path.with_name(".post-receive.tmp")
            # Only its owner may read it: it holds the secret.
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
            with os.fdopen(fd, "w") as handle:
                handle.write(script)
            os.chmod(temporary, 0o700)
            temporary.replace(hook_path)
        self.stdout.write(f"installed {hook_path} -> {url}")

    def _repository(self, full_name: str, bare: Path | None) -> Repository:
        org_slug, _, repo_slug = full_name.partition("/")
        if not org_slug or not repo_slug or "/" in repo_slug:
            raise CommandError(f"repository {full_name!r} is not organisation/repository")
        existing = Repository.objects.filter(organisation__slug=org_slug, slug=repo_slug).first()
        if existing is not None:
            return existing
        if bare is None:
            raise CommandError(f"no repository {full_name}; pass --bare to create it")
        organisation, _ = Organisation.objects.get_or_create(
            slug=org_slug, defaults={"name": org_slug}
        )
        head = subprocess.run(
            ["git", "-C", str(bare), "symbolic-ref", "--quiet", "--short", "HEAD"],
            capture_output=True,
            text=True,
        )
        return Repository.objects.create(
            organisation=organisation,
            slug=repo_slug,
            clone_url=str(bare),
            default_branch=head.stdout.strip() or "main",
        )
