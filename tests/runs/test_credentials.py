"""Private repositories: the mirror fetches with the repository's stored git credential.

The HTTP tests run against a real authenticated remote: a bare repository served over git's
"dumb" HTTP protocol by a stdlib server that answers 401 unless the Basic credentials match.
"""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import threading
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from runners.executor import LOCAL, RunnerConfig
from runs.execution import execute
from runs.mirror import MirrorError, checkout_source, fetch, has_commit, mirror_path, workflow_files
from runs.models import LogChunk, Secret
from runs.states import State
from runs.vault import (
    GitCredential,
    SecretError,
    clear_credential,
    git_credential_for,
    secrets_for,
    store_credential,
    store_secret,
)

from .conftest import jobs_of, start_run
from .test_mirror import Origin

pytestmark = pytest.mark.django_db

TOKEN = "ghs_rightT0ken4242"
SSH_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\r\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ-not-a-real-key\r\n"
    "-----END OPENSSH PRIVATE KEY-----\r\n"
)


class GitHTTPServer:
    """A read-only dumb-HTTP git remote that wants `user`:`token` as Basic auth."""

    def __init__(self, bare: Path, user: str, token: str) -> None:
        self.bare = bare
        self.accepted = {user: token}
        self.seen_authorization: list[str] = []
        server = self

        class Handler(SimpleHTTPRequestHandler):
            def do_GET(self) -> None:
                if self._authorised():
                    super().do_GET()

            def do_HEAD(self) -> None:
                if self._authorised():
                    super().do_HEAD()

            def _authorised(self) -> bool:
                header = self.headers.get("Authorization", "")
                server.seen_authorization.append(header)
                if header.startswith("Basic "):
                    user, _, token = base64.b64decode(header[6:]).decode().partition(":")
                    if server.accepted.get(user) == token:
                        return True
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="git"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return False

            def log_message(self, format: str, *args: object) -> None:
                pass  # quiet test output

        handler = partial(Handler, directory=str(bare.parent))
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/{bare.name}"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> GitHTTPServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join()


class PrivateRemote:
    """A working repository whose pushes land in the served bare one."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "served" / "repo.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.bare)], check=True)
        self.work = Origin(root / "work")
        self.work.git("remote", "add", "origin", str(self.bare))

    def push(self, files: dict[str, str | None]) -> str:
        sha = self.work.commit(files)
        self.work.git("push", "-q", "origin", "HEAD:refs/heads/main")
        # The dumb protocol reads info/refs and objects/info/packs: keep them current.
        subprocess.run(["git", "-C", str(self.bare), "update-server-info"], check=True)
        return sha


@pytest.fixture
def remote(tmp_path, settings) -> PrivateRemote:
    settings.CICD_DATA_DIR = tmp_path / "data"
    return PrivateRemote(tmp_path)


@pytest.fixture
def server(remote, repository) -> Iterator[GitHTTPServer]:
    with GitHTTPServer(remote.bare, "x-access-token", TOKEN) as server:
        repository.clone_url = server.url
        repository.save()
        yield server


# ------------------------------------------------------------------------------- the vault


def test_a_credential_is_one_kind_at_a_time_and_never_a_job_secret(repository):
    assert git_credential_for(repository) is None
    store_secret(name="DEPLOY", value="for-jobs", repository=repository)

    store_credential(repository, token=TOKEN)
    assert git_credential_for(repository) == GitCredential("token", "x-access-token", TOKEN)
    assert TOKEN not in repr(git_credential_for(repository))
    assert secrets_for(repository) == {"DEPLOY": "for-jobs"}
    assert secrets_for(repository, environment="production") == {"DEPLOY": "for-jobs"}

    store_credential(repository, ssh_key=SSH_KEY)
    credential = git_credential_for(repository)
    assert credential is not None and credential.kind == "ssh_key"
    assert credential.value == SSH_KEY.replace("\r\n", "\n")  # OpenSSH wants LF line ends
    assert set(Secret.objects.values_list("name", flat=True)) == {"DEPLOY", "CICD_GIT_SSH_KEY"}

    store_credential(repository, token="glpat-other", username="oauth2")
    assert git_credential_for(repository) == GitCredential("token", "oauth2", "glpat-other")
    assert not Secret.objects.filter(name="CICD_GIT_SSH_KEY").exists()
    assert secrets_for(repository) == {"DEPLOY": "for-jobs"}

    clear_credential(repository)
    assert git_credential_for(repository) is None
    assert list(Secret.objects.values_list("name", flat=True)) == ["DEPLOY"]


def test_no_server_secret_reaches_a_job_whatever_its_scope(repository):
    # Not even one written around the vault: it would not decrypt, and must not be tried.
    Secret.objects.create(name="CICD_X", organisation=repository.organisation, ciphertext=b"?")
    Secret.objects.create(name="cicd_y", repository=repository, ciphertext=b"?")
    Secret.objects.create(name="CICD_Z", repository=repository, environment="prod", ciphertext=b"?")
    assert secrets_for(repository, environment="prod") == {}


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "exactly one"),
        ({"token": TOKEN, "ssh_key": SSH_KEY}, "exactly one"),
        ({"token": "two words"}, "printable ASCII without spaces"),
        ({"token": "abc\r\nX-Injected: 1"}, "printable ASCII without spaces"),
        ({"token": TOKEN, "username": "a:b"}, "user name"),
        ({"ssh_key": "ssh-ed25519 AAAA... a public key"}, "private key"),
    ],
)
def test_unusable_credentials_are_refused_without_echoing_them(repository, given, message):
    with pytest.raises(SecretError, match=message) as caught:
        store_credential(repository, **given)
    for value in given.values():
        assert value not in str(caught.value)
    assert not Secret.objects.exists()


def test_the_reserved_names_stay_reserved_for_users(repository):
    with pytest.raises(SecretError, match="reserved"):
        store_secret(name="CICD_GIT_TOKEN", value="x", repository=repository)


# ------------------------------------------------------------------------ an HTTPS remote


def test_without_a_credential_the_fetch_fails_on_authentication(remote, server, repository):
    remote.push({".cicd/workflows/ci.yml": "name: private\n"})
    with pytest.raises(MirrorError) as caught:
        fetch(repository)
    message = str(caught.value)
    assert "Authentication failed" in message
    assert "needs a git credential" in message

    # Credentials written into the URL are not repeated in the message either.
    repository.clone_url = server.url.replace("http://", "http://bot:url-s3cret@")
    repository.save()
    with pytest.raises(MirrorError) as caught:
        fetch(repository)
    assert "Authentication failed" in str(caught.value)
    assert "url-s3cret" not in str(caught.value)


def test_with_the_token_the_workflows_are_read_at_the_pushed_commit(remote, server, repository):
    sha = remote.push({".cicd/workflows/ci.yml": "name: private\n", "app.py": "x"})
    store_credential(repository, token=TOKEN)
    mirror = fetch(repository, want=sha)
    assert workflow_files(mirror, sha) == {".cicd/workflows/ci.yml": "name: private\n"}
    expected = "Basic " + base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
    assert expected in server.seen_authorization


def test_a_wrong_token_is_an_error_that_does_not_contain_it(remote, server, repository):
    remote.push({"a": "a"})
    store_credential(repository, token="ghs_wrongT0ken")
    with pytest.raises(MirrorError) as caught:
        fetch(repository)
    message = str(caught.value)
    assert "git token was refused" in message
    encoded = base64.b64encode(b"x-access-token:ghs_wrongT0ken").decode()
    for secret in ("ghs_wrongT0ken", encoded):
        assert secret not in message
        assert secret not in repr(caught.value)


def test_rotating_the_token(remote, server, repository):
    first = remote.push({"a": "1"})
    store_credential(repository, token=TOKEN)
    fetch(repository, want=first)

    server.accepted = {"x-access-token": "ghs_rotated"}  # the old token was revoked
    second = remote.push({"a": "2"})
    with pytest.raises(MirrorError, match="git token was refused"):
        fetch(repository, want=second)
    store_credential(repository, token="ghs_rotated")
    assert has_commit(fetch(repository, want=second), second)


def test_the_token_is_not_on_the_command_line(remote, server, repository, monkeypatch):
    seen: list[tuple[list[str], dict[str, str]]] = []
    real_run = subprocess.run

    def recording_run(argv, **kwargs):
        seen.append((list(argv), kwargs.get("env") or {}))
        return real_run(argv, **kwargs)

    monkeypatch.setattr(subprocess, "run", recording_run)
    sha = remote.push({"a": "a"})
    store_credential(repository, token=TOKEN)
    fetch(repository, want=sha)
    fetches = [(argv, env) for argv, env in seen if "fetch" in argv]
    assert fetches
    for argv, env in fetches:
        assert not any(TOKEN in arg or "Authorization" in arg for arg in argv)
        assert env["GIT_CONFIG_VALUE_0"].startswith("Authorization: Basic ")
    # Local reads of the mirror get no credential at all.
    assert all("GIT_CONFIG_COUNT" not in env for argv, env in seen if "fetch" not in argv)


# --------------------------------------------------------------------------- an SSH remote


def test_an_ssh_key_is_a_private_file_only_while_git_runs(
    repository, settings, tmp_path, monkeypatch
):
    # No sshd here: a fake `ssh` records its arguments, then the mode and the text of the key
    # file it was given, and fails as a refused key would.
    settings.CICD_DATA_DIR = tmp_path / "data"
    bin_dir, record = tmp_path / "bin", tmp_path / "ssh-call"
    bin_dir.mkdir()
    fake = bin_dir / "ssh"
    fake.write_text(
        "#!/bin/sh\n"
        f"out={str(record)!r}\n"
        'printf "%s\\n" "$@" > "$out"\n'
        'echo "--- mode" >> "$out"\n'
        'stat -c %a "$2" >> "$out"\n'
        'cat "$2" >> "$out"\n'
        'echo "git@127.0.0.1: Permission denied (publickey)." >&2\n'
        "exit 255\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    repository.clone_url = "ssh://git@127.0.0.1:1/x.git"
    repository.save()
    store_credential(repository, ssh_key=SSH_KEY)

    with pytest.raises(MirrorError) as caught:
        fetch(repository)

    assert "SSH key was refused" in str(caught.value)
    assert "PRIVATE KEY" not in str(caught.value)
    arguments, _, seen = record.read_text().partition("--- mode\n")
    arguments = arguments.splitlines()
    assert arguments[0] == "-i"
    key_file = Path(arguments[1])
    assert not key_file.exists() and not key_file.parent.exists()
    known_hosts = settings.CICD_DATA_DIR / "known_hosts"
    for option in (
        "IdentitiesOnly=yes",
        "StrictHostKeyChecking=accept-new",
        f"UserKnownHostsFile={known_hosts}",
        "BatchMode=yes",
    ):
        assert option in arguments
    mode, _, key = seen.partition("\n")
    assert mode == "600"
    assert key == SSH_KEY.replace("\r\n", "\n")


def test_a_real_ssh_failure_is_a_mirror_error_and_leaves_no_key(
    repository, settings, tmp_path, monkeypatch
):
    settings.CICD_DATA_DIR = tmp_path / "data"
    keys = tmp_path / "tmp"
    keys.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(keys))
    repository.clone_url = "ssh://git@127.0.0.1:1/x.git"
    repository.save()
    store_credential(repository, ssh_key=SSH_KEY)
    with pytest.raises(
        MirrorError,
        match=r"git fetch ssh://\*\*\*@127\.0\.0\.1:1/x\.git failed: ssh: connect to host",
    ):
        fetch(repository)
    assert list(keys.iterdir()) == []


# ------------------------------------------------------------------------ checkout source


def test_checkout_source_fetches_a_commit_the_mirror_lacks(repository, settings, tmp_path):
    settings.CICD_DATA_DIR = tmp_path / "data"
    origin = Origin(tmp_path / "origin")
    repository.clone_url = str(origin.path)
    repository.save()
    first = origin.commit({"a": "1"})
    fetch(repository)
    second = origin.commit({"a": "2"})
    assert not has_commit(mirror_path(repository), second)

    source = checkout_source(repository, second, "refs/heads/main")
    assert (source.repository, source.sha, source.ref) == (
        str(mirror_path(repository)),
        second,
        "refs/heads/main",
    )
    assert has_commit(mirror_path(repository), second)
    assert checkout_source(repository, first, "").sha == first  # already there: no fetch

    with pytest.raises(MirrorError, match=f"commit {'b' * 40} is not in"):
        checkout_source(repository, "b" * 40, "")
    with pytest.raises(MirrorError, match="not a full commit sha"):
        checkout_source(repository, "--upload-pack=touch /tmp/x", "")


def test_checkout_source_uses_the_credential(remote, server, repository):
    store_credential(repository, token=TOKEN)
    sha = remote.push({"a": "a"})
    source = checkout_source(repository, sha, "refs/heads/main")
    assert source.repository == str(mirror_path(repository))
    assert has_commit(mirror_path(repository), sha)
    assert stat.S_ISDIR(os.stat(source.repository).st_mode)


# ------------------------------------------------------------------------------- execution


@pytest.mark.django_db(transaction=True)  # the lease keeper thread has its own connection
def test_a_job_of_a_private_repository_checks_out_from_the_mirror(remote, server, repository):
    sha = remote.push({"VERSION": "7.1\n"})
    store_credential(repository, token=TOKEN)
    source = "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: cat VERSION\n"
    run = start_run(repository, source, sha=sha)
    job = jobs_of(run)["a"]
    config = RunnerConfig(executor=LOCAL, work_dir=remote.bare.parent / "work", grace_seconds=1.0)

    # The job runs without ever asking the remote: the commit was fetched into the mirror.
    assert execute(job.id, worker="w1", config=config) == State.SUCCESS
    lines = "".join(LogChunk.objects.filter(job=job).values_list("text", flat=True))
    assert "7.1" in lines
    assert TOKEN not in lines


@pytest.mark.django_db(transaction=True)
def test_a_commit_the_mirror_cannot_get_fails_the_job_with_the_reason(remote, server, repository):
    missing = "c" * 40
    remote.push({"a": "a"})
    store_credential(repository, token="ghs_revoked")
    source = "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: x}]\n"
    run = start_run(repository, source, sha=missing)
    job = jobs_of(run)["a"]
    config = RunnerConfig(executor=LOCAL, work_dir=remote.bare.parent / "work", grace_seconds=1.0)

    assert execute(job.id, worker="w1", config=config) == State.FAILURE
    job.refresh_from_db()
    assert job.state == State.FAILURE
    assert "git token was refused" in job.error
    assert "ghs_revoked" not in job.error
