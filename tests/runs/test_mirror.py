"""The bare mirror: fetch, workflow files at a commit, changed paths, clear failures."""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path

import pytest

from runs.mirror import (
    MirrorError,
    changed_paths,
    fetch,
    mirror_path,
    pull_request_changes,
    workflow_files,
)

pytestmark = pytest.mark.django_db


class Origin:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir()
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str) -> str:
        return subprocess.run(
            ["git", "-C", str(self.path), "-c", "user.name=t", "-c", "user.email=t@example.org",
             *args],
            check=True, capture_output=True, text=True,
        ).stdout.strip()  # fmt: skip

    def commit(self, files: dict[str, str | None], message: str = "change") -> str:
        for name, text in files.items():
            target = self.path / name
            if text is None:
                target.unlink()
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD")


@pytest.fixture
def origin(tmp_path, repository, settings) -> Origin:
    settings.CICD_DATA_DIR = tmp_path / "data"
    origin = Origin(tmp_path / "origin")
    repository.clone_url = str(origin.path)
    repository.save()
    return origin


def test_workflows_are_read_at_the_pushed_commit_not_the_current_one(origin, repository):
    first = origin.commit({".cicd/workflows/ci.yml": "name: one\n", "app.py": "x"})
    origin.commit({".cicd/workflows/ci.yml": "name: two\n"})
    mirror = fetch(repository, want=first)
    assert mirror == mirror_path(repository)
    assert (mirror / "HEAD").exists() and not (mirror / "app.py").exists()  # bare
    assert workflow_files(mirror, first) == {".cicd/workflows/ci.yml": "name: one\n"}


def test_github_folder_is_the_fallback(origin, repository):
    sha = origin.commit(
        {".github/workflows/a.yml": "a\n", ".github/workflows/b.yaml": "b\n", "x/y.yml": "no\n"}
    )
    assert workflow_files(fetch(repository, want=sha), sha) == {
        ".github/workflows/a.yml": "a\n",
        ".github/workflows/b.yaml": "b\n",
    }
    later = origin.commit({".cicd/workflows/ci.yml": "c\n"})
    assert list(workflow_files(fetch(repository, want=later), later)) == [".cicd/workflows/ci.yml"]


def test_changed_paths_of_a_push_and_of_a_pull_request(origin, repository):
    base = origin.commit({"README.md": "r", "src/a.py": "a"})
    after = origin.commit({"src/a.py": "b", "docs/x.md": "x", "README.md": None})
    mirror = fetch(repository, want=after)
    assert changed_paths(mirror, base, after) == ("README.md", "docs/x.md", "src/a.py")
    assert changed_paths(mirror, "0" * 40, after) is None  # a new branch: unknown
    origin.git("checkout", "-q", "-b", "feature", base)
    head = origin.commit({"feature.txt": "f"})
    mirror = fetch(repository, want=head)
    assert pull_request_changes(mirror, after, head) == ("feature.txt",)


def test_a_missing_commit_is_a_clear_error(origin, repository):
    origin.commit({"a": "a"})
    with pytest.raises(MirrorError, match=f"commit {'b' * 40} is not in"):
        fetch(repository, want="b" * 40)


def test_a_bad_url_is_a_clear_error_without_credentials(repository, settings, tmp_path):
    settings.CICD_DATA_DIR = tmp_path / "data"
    repository.clone_url = "https://bot:s3cr3t-token@127.0.0.1:9/nothing.git"
    repository.save()
    with pytest.raises(MirrorError) as caught:
        fetch(repository)
    message = str(caught.value)
    assert message.startswith("git fetch https://***@127.0.0.1:9/nothing.git failed:")
    assert "s3cr3t" not in message


def test_concurrent_fetches_of_one_mirror_both_succeed(origin, repository):
    sha = origin.commit({"a": "a"})
    errors: list[BaseException] = []

    def fetch_once() -> None:
        try:
            fetch(repository, want=sha)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=fetch_once) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_start_run_reads_the_workflow_from_the_mirror(origin, repository):
    import io

    from django.core.management import CommandError, call_command

    from runs.models import Run

    origin.commit(
        {".cicd/workflows/ci.yml": "on: push\njobs:\n  a:\n    runs-on: x\n    steps: [{run: x}]\n"}
    )
    out = io.StringIO()
    call_command("start_run", str(repository), "--workflow", ".cicd/workflows/ci.yml", stdout=out)
    run = Run.objects.get()
    assert out.getvalue().startswith(f"run {run.id} ({repository} #1): queued")
    assert run.sha == origin.git("rev-parse", "HEAD")
    with pytest.raises(CommandError, match=r"no workflow \.cicd/workflows/nope\.yml at"):
        call_command("start_run", str(repository), "--workflow", ".cicd/workflows/nope.yml")
    with pytest.raises(CommandError, match="ref refs/heads/nope is not in the repository"):
        call_command("start_run", str(repository), "--workflow", "x", "--ref", "refs/heads/nope")
