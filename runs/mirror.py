"""The server's bare mirror of each repository: workflow files and changed paths at a commit.

Workflows are always read from the mirror at the pushed commit, never from a working tree, so
the run executes exactly what was pushed. Executors check out from the mirror too (a local path),
which is fast and leaves credentials on the server. The real `git` binary does the work; every
call is an argv list with a timeout and no terminal prompt.

A private repository's credential (`runs.vault.store_credential`) is given to the git calls that
talk to the remote only, and never on a command line (other users can read those): a token as an
HTTP header in git's environment-borne config, an SSH key as a 0600 file that exists only for
the duration of the call.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from pipelines.discovery import workflow_paths
from runners.spec import CheckoutSource
from runs.models import Repository
from runs.vault import GitCredential, git_credential_for

ZERO_SHA = "0" * 40
GIT_TIMEOUT_SECONDS = 300
WORKFLOW_FOLDERS = (".cicd/workflows", ".github/workflows")
_CREDENTIALS_IN_URL = re.compile(r"(://)[^/@\s]+@")
_REMOTE_UNREADABLE = "fatal: could not read from remote repository."
_GIT_BOILERPLATE = {
    "please make sure you have the correct access rights",
    "and the repository exists.",
}
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_AUTH_FAILED = re.compile(
    r"authentication failed|could not read (username|password)|permission denied \(publickey"
    r"|requested url returned error: (401|403)",
    re.IGNORECASE,
)


class MirrorError(Exception):
    """Fetching or reading failed for a reason to show on the run (bad URL, auth, no commit)."""


@dataclass(frozen=True, slots=True)
class _Remote:
    """What a git call that talks to the remote needs on top of the usual environment."""

    env: Mapping[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()  # never to appear in a message, whatever git prints
    credential: str = ""  # "token", "ssh_key" or "" (anonymous), for the hint on auth failures


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
    credential = git_credential_for(repository)
    with _locked(path), _remote_access(credential) as remote:
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            _git(path, "init", "--quiet", "--bare")
        source = repository.clone_url
        _git(
            path,
            "fetch", "--quiet", "--prune", "--force", "--no-tags", source,
            "+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*",
            what=f"fetch {_redact(source)}", remote=remote,
        )  # fmt: skip
        if want and not has_commit(path, want):
            # A commit no branch points at any more (force-pushed away): ask for it by name.
            try:
                _git(
                    path,
                    "-c", "uploadpack.allowAnySHA1InWant=true",
                    "fetch", "--quiet", source, want,
                    what=f"fetch commit {want[:12]}", remote=remote,
                )  # fmt: skip
            except MirrorError as error:
                raise MirrorError(f"commit {want} is not in {_redact(source)} ({error})") from None
    if want and not has_commit(path, want):
        raise MirrorError(f"commit {want} is not in {_redact(repository.clone_url)}")
    return path


def checkout_source(repository: Repository, sha: str, ref: str = "") -> CheckoutSource:
    """Where an executor checks `sha` out from: the mirror, fetched first if it lacks the commit.

    Executors then need no credential and no network access to the remote: the server's mirror
    is a local path. Raises MirrorError as `fetch` does."""
    return CheckoutSource(str(mirror_with(repository, sha)), sha, ref)


def mirror_with(repository: Repository, sha: str) -> Path:
    """The mirror, fetched first only if it lacks commit `sha` (a commit never changes, so a
    mirror that has it needs no fetch to read it)."""
    if not _SHA.match(sha):
        # It is given to git as an argument: anything but a full sha is refused, not interpreted.
        raise MirrorError(f"{sha[:80]!r} is not a full commit sha")
    path = mirror_path(repository)
    # The HEAD check keeps git from finding an enclosing repository when the mirror is missing.
    if not ((path / "HEAD").exists() and has_commit(path, sha)):
        fetch(repository, want=sha)
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


def _git(mirror: Path, *args: str, what: str = "", remote: _Remote | None = None) -> str:
    return _git_bytes(mirror, *args, what=what, remote=remote).decode("utf-8", "replace")


def _git_bytes(mirror: Path, *args: str, what: str = "", remote: _Remote | None = None) -> bytes:
    remote = remote or _Remote()
    try:
        result = subprocess.run(
            ["git", "-C", str(mirror), *args],
            capture_output=True,
            stdin=subprocess.DEVNULL,
            env={**_env(), **remote.env},
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        limit = GIT_TIMEOUT_SECONDS
        raise MirrorError(f"git {what or args[0]} took longer than {limit} s") from None
    if result.returncode != 0:
        reason = _reason(result.stderr.decode("utf-8", "replace"))
        detail = _redact(reason) if reason else f"exit status {result.returncode}"
        if _AUTH_FAILED.search(reason):
            detail += _auth_hint(remote.credential)
        for secret in remote.secrets:
            detail = detail.replace(secret, "***")
        raise MirrorError(f"git {what or args[0]} failed: {detail}")
    return result.stdout


def _reason(stderr: str) -> str:
    """The line of git's complaint that says what went wrong, usually its last one."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [
        line
        for line in lines
        if not line.lower().startswith(("hint:", "warning:"))
        and line.lower() not in _GIT_BOILERPLATE
    ]
    if len(lines) > 1 and lines[-1].lower() == _REMOTE_UNREADABLE:
        # Over SSH the cause ("Permission denied (publickey)", "Connection refused") is the
        # line before git's generic conclusion.
        return lines[-2]
    return lines[-1] if lines else ""


def _auth_hint(credential: str) -> str:
    if credential == "token":
        return " (the repository's git token was refused: is it expired, or without read access?)"
    if credential == "ssh_key":
        return " (the repository's SSH key was refused: is it a deploy key of this repository?)"
    return " (the repository needs a git credential: set a token or an SSH key on it)"


@contextmanager
def _remote_access(credential: GitCredential | None) -> Iterator[_Remote]:
    """The environment that authenticates git to the remote with `credential`, for one call or a
    few; an SSH key file is deleted when the block ends, whatever happened in it."""
    if credential is None:
        yield _Remote()
    elif credential.kind == "token":
        basic = base64.b64encode(f"{credential.username}:{credential.value}".encode()).decode()
        config = {
            # In the environment, not `-c` on the command line, which any local user can read.
            "http.extraHeader": f"Authorization: Basic {basic}",
            # No credential helper: a refused token must not be offered to (or erase entries
            # from) a helper configured for the server's user, nor a stored password be tried.
            "credential.helper": "",
        }
        yield _Remote(_config_env(config), (credential.value, basic), "token")
    else:
        with tempfile.TemporaryDirectory(prefix="cicd-ssh-") as folder:
            key = Path(folder) / "key"
            # Created 0600 from the start: ssh refuses a key others can read, and so should we.
            descriptor = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(credential.value)
            known_hosts = Path(settings.CICD_DATA_DIR) / "known_hosts"
            command = shlex.join(
                [
                    "ssh", "-i", str(key),
                    "-o", "IdentitiesOnly=yes",
                    "-o", "StrictHostKeyChecking=accept-new",
                    "-o", f"UserKnownHostsFile={known_hosts}",
                    "-o", "BatchMode=yes",
                ]
            )  # fmt: skip
            yield _Remote({"GIT_SSH_COMMAND": command}, (credential.value,), "ssh_key")


def _config_env(config: dict[str, str]) -> dict[str, str]:
    """`config` as GIT_CONFIG_COUNT/KEY_n/VALUE_n (git 2.31+), after any entries already there."""
    start = int(os.environ.get("GIT_CONFIG_COUNT") or 0)
    env = {"GIT_CONFIG_COUNT": str(start + len(config))}
    for index, (key, value) in enumerate(config.items(), start):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


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
