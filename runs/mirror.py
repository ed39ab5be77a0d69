"""The server's bare mirror of each repository: workflow files and changed paths at a commit.

Workflows are always read from the mirror at the pushed commit, never from a working tree, so
the run executes exactly what was pushed. Executors check out from the mirror too (a local path),
which is fast and leaves credentials on the server. The real `git` binary does the work; every
call is an argv list with a timeout and no terminal prompt.
"""

from __future__ import annotations

import fcntl
import os
import re
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from django.conf import settings

from pipelines.discovery import workflow_paths
from runs.models import Repository

ZERO_SHA = "0" * 40
GIT_TIMEOUT_SECONDS = 300
WORKFLOW_FOLDERS = (".cicd/workflows", ".github/workflows")
_CREDENTIALS_IN_URL = re.compile(r"(://)[^/@\s]+@")


class MirrorError(Exception):
    """Fetching or reading failed for a reason to show on the run (bad URL, auth, no commit)."""


def mirror_path(repository: Repository) -> Path:
    return (
        Path(settings.CICD_DATA_DIR)
        / "mirrors"
        / repository.organisation.slug
        / f"{repository.slug}.git"
    )


def fetch(repository: Repository, *, want: str | None = None) -> Path:
    """Bring the mirror up to date (branches and tags), and make sure `want` (a sha) is in it."""
    path = mirror_path(repository)
    with _locked(path):
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            _git(path, "init", "--quiet", "--bare")
        source = repository.clone_url
        _git(
            path,
            "fetch", "--quiet", "--prune", "--force", "--no-tags", source,
            "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
            what=f"fetch {_redact(source)}",
        )  # fmt: skip
        if want and not has_commit(path, want):
            # A commit no branch points at any more (force-pushed away): ask for it by name.
            try:
                _git(
                    path,
                    "-c", "uploadpack.allowAnySHA1InWant=true",
                    "fetch", "--quiet", source, want,
                    what=f"fetch commit {want[:12]}",
                )  # fmt: skip
            except MirrorError as error:
                raise MirrorError(f"commit {want} is not in {_redact(source)} ({error})") from None
    if want and not has_commit(path, want):
        raise MirrorError(f"commit {want} is not in {_redact(repository.clone_url)}")
    return path


def has_commit(mirror: Path, sha: str) -> bool:
    result = subprocess.run(
        ["git", "-C", str(mirror), "cat-file", "-e", f"{sha}^{{commit}}"],
        capture_output=True,
        env=_env(),
        timeout=GIT_TIMEOUT_SECONDS,
    )
    return result.returncode == 0


def workflow_files(mirror: Path, sha: str) -> dict[str, str]:
    """The workflow files at `sha` (`.cicd/workflows`, else `.github/workflows`): path -> text.

    A file that is not UTF-8 is returned with replacement characters, so that the parser reports
    it at a position instead of the trigger failing as a whole."""
    listing = _git(
        mirror, "ls-tree", "-r", "--name-only", sha, "--", *WORKFLOW_FOLDERS,
        what=f"list workflows at {sha[:12]}",
    )  # fmt: skip
    chosen = workflow_paths(listing.splitlines())
    return {
        path: _git_bytes(mirror, "show", f"{sha}:{path}").decode("utf-8", "replace")
        for path in chosen
    }


def changed_paths(mirror: Path, before: str, after: str) -> tuple[str, ...] | None:
    """Files changed by a push from `before` to `after`; None when unknown (a new branch, or a
    `before` the mirror does not have after a force push), in which case path filters do not
    exclude the workflow, as on GitHub."""
    if not before or before == ZERO_SHA or not has_commit(mirror, before):
        return None
    return _diff(mirror, before, after)


def pull_request_changes(mirror: Path, base: str, head: str) -> tuple[str, ...] | None:
    """Files a pull request changes: from the merge base of base and head to head."""
    result = subprocess.run(
        ["git", "-C", str(mirror), "merge-base", base, head],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=GIT_TIMEOUT_SECONDS,
    )
    if result.returncode != 0:
        return None
    return _diff(mirror, result.stdout.strip(), head)


def _diff(mirror: Path, start: str, end: str) -> tuple[str, ...]:
    out = _git(mirror, "diff", "--name-only", "--no-renames", "-z", start, end, what="diff")
    return tuple(sorted(name for name in out.split("\0") if name))


def _git(mirror: Path, *args: str, what: str = "") -> str:
    return _git_bytes(mirror, *args, what=what).decode("utf-8", "replace")


def _git_bytes(mirror: Path, *args: str, what: str = "") -> bytes:
    try:
        result = subprocess.run(
            ["git", "-C", str(mirror), *args],
            capture_output=True,
            env=_env(),
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        limit = GIT_TIMEOUT_SECONDS
        raise MirrorError(f"git {what or args[0]} took longer than {limit} s") from None
    if result.returncode != 0:
        reason = result.stderr.decode("utf-8", "replace").strip().splitlines()
        detail = _redact(reason[-1]) if reason else f"exit status {result.returncode}"
        raise MirrorError(f"git {what or args[0]} failed: {detail}")
    return result.stdout


def _env() -> dict[str, str]:
    # Never wait for a password on a terminal nobody watches; fail instead.
    return {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C"}


def _redact(text: str) -> str:
    """Hide credentials in URLs (https://user:token@host/...) before they reach a message."""
    return _CREDENTIALS_IN_URL.sub(r"\1***@", text)


@contextmanager
def _locked(mirror: Path) -> Iterator[None]:
    """One fetch per mirror at a time: git's own ref locks make concurrent fetches fail."""
    mirror.parent.mkdir(parents=True, exist_ok=True)
    with open(mirror.parent / f".{mirror.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
