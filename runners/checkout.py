"""Checking out the triggering commit: a git work tree at exactly one sha, detached.

Runs on the server (the worker), with the real `git` binary and argv lists (never a shell). The
local executor checks out straight into the job's workspace; the Docker executor can check out into
a directory on the host and copy the tree into the job's volume, so the job image needs no git.

    git init
    git -c uploadpack.allowAnySHA1InWant=true fetch --depth N <repository> <sha> [<ref>]
    git checkout --force --detach FETCH_HEAD

Every failure (no such repository, unknown sha, unreachable URL, git missing) becomes a
`JobSetupError` whose message names the repository and the sha and quotes git's own complaint.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from runners.job import JobSetupError
from runners.spec import CheckoutSource

__all__ = ["GIT_TIMEOUT_SECONDS", "prepare_checkout", "redact_url"]

GIT_TIMEOUT_SECONDS = 600.0
_STDERR_LIMIT = 600


def prepare_checkout(
    source: CheckoutSource,
    dest: Path,
    *,
    fetch_depth: int = 1,
    timeout: float = GIT_TIMEOUT_SECONDS,
) -> None:
    """Make `dest` a git work tree at exactly `source.sha` (detached HEAD).

    `source.repository` is a local path (bare or not) or anything `git fetch` understands.
    `fetch_depth` 0 fetches the whole history. `source.ref`, when given, is fetched as well
    (best effort), so `origin/<branch>` or the tag resolves inside the work tree. Files already in
    `dest` that the commit tracks are overwritten; a second checkout into the same place works.
    """
    repository = source.repository
    sha = (source.sha or "").strip()
    shown = redact_url(repository)
    if not sha:
        raise JobSetupError(f"cannot check out {shown}: no commit sha was given")
    if fetch_depth < 0:
        raise JobSetupError(f"fetch-depth must be 0 (all history) or more, got {fetch_depth}")
    if _is_local_path(repository):
        if not Path(repository).exists():
            raise JobSetupError(
                f"cannot check out {sha} from {shown}: the repository path does not exist"
            )
        # git runs inside `dest`: a relative path must not be read from there.
        repository = str(Path(repository).resolve())
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)

    def git(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return _git(dest, args, timeout=timeout, repository=shown, sha=sha, check=check)

    fresh = not (dest / ".git").exists()
    git("init", "-q")
    # So `origin/<branch>` means something inside the steps; never with credentials in it.
    remote_url = repository if _is_local_path(repository) else redact_url(repository)
    if fresh:
        git("remote", "add", "origin", remote_url)
    else:
        git("config", "remote.origin.url", remote_url)

    fetch = ["-c", "uploadpack.allowAnySHA1InWant=true", "fetch", "--quiet", "--no-tags"]
    fetch += ["--no-recurse-submodules"]
    if fetch_depth > 0:
        fetch += [f"--depth={fetch_depth}"]
    elif (dest / ".git" / "shallow").exists():
        fetch += ["--unshallow"]
    # `--` keeps a repository or sha starting with "-" from being read as an option.
    base = [*fetch, "--", repository, sha]
    refspec = _ref_refspec(source.ref, sha)
    done = False
    if refspec:
        done = git(*base, refspec, check=False).returncode == 0
    if not done:
        # Without the ref (it may have moved or been deleted since): the sha alone is what counts.
        git(*base)
    git("checkout", "--quiet", "--force", "--detach", "FETCH_HEAD")


def redact_url(repository: str) -> str:
    """`repository` with any user name or password taken out, for messages and git config."""
    if "://" not in repository:
        return repository
    try:
        parts = urlsplit(repository)
    except ValueError:
        return repository
    if parts.username is None and parts.password is None:
        return repository
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# ------------------------------------------------------------------------------------ internals


def _git(
    cwd: Path,
    args: tuple[str, ...] | list[str],
    *,
    timeout: float,
    repository: str,
    sha: str,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.update(
        {
            "GIT_TERMINAL_PROMPT": "0",  # never wait for a password on a terminal
            "GIT_ASKPASS": "true",
            "SSH_ASKPASS": "true",
            "GIT_SSH_COMMAND": env.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
            "LC_ALL": "C",
        }
    )
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY"):
        env.pop(name, None)  # the worker's own environment must not redirect us
    try:
        completed = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise JobSetupError(
            f"cannot check out {sha} from {repository}: git is not installed on this worker"
        ) from None
    except subprocess.TimeoutExpired:
        raise JobSetupError(
            f"cannot check out {sha} from {repository}: git {args[0]} took longer than "
            f"{timeout:g} seconds"
        ) from None
    if check and completed.returncode != 0:
        raise JobSetupError(
            f"cannot check out {sha} from {repository}: {_trim(completed.stderr, repository)}"
        )
    return completed


def _trim(stderr: str, repository: str) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    lines = [line for line in lines if not line.lower().startswith(("hint:", "warning:"))]
    text = " ".join(lines) or "git failed without saying why"
    text = _CREDENTIALS.sub(r"\1***@", text)
    if len(text) > _STDERR_LIMIT:
        text = text[: _STDERR_LIMIT - 1] + "…"
    return text


_CREDENTIALS = re.compile(r"([a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)


def _is_local_path(repository: str) -> bool:
    if "://" in repository:
        return False
    # scp-like syntax, `host:path`, is remote; a path with a slash before the colon is not.
    head, colon, _ = repository.partition(":")
    return not colon or "/" in head


def _ref_refspec(ref: str, sha: str) -> str:
    """A refspec that stores `ref` where a normal clone would have it; "" when none is needed."""
    ref = (ref or "").strip()
    if not ref or ref == sha or ref.startswith("-") or ":" in ref or " " in ref:
        return ""
    if ref.startswith("refs/heads/"):
        return f"+{ref}:refs/remotes/origin/{ref.removeprefix('refs/heads/')}"
    if ref.startswith("refs/tags/"):
        return f"+{ref}:{ref}"
    if ref.startswith("refs/"):
        return f"+{ref}:{ref}"
    return f"+{ref}:refs/remotes/origin/{ref}"
