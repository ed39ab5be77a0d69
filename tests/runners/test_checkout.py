"""prepare_checkout: a work tree at exactly one commit, from local repositories (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from runners.checkout import prepare_checkout, redact_url
from runners.job import JobSetupError
from runners.spec import CheckoutSource
from tests.runners.conftest import GitRepo, git


def test_checks_out_the_exact_commit_detached(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    prepare_checkout(git_repo.source(git_repo.first), dest)
    assert git(dest, "rev-parse", "HEAD") == git_repo.first
    assert (dest / "src" / "app.txt").read_text() == "version 1\n"
    assert not (dest / "NEW.md").exists()
    # Detached: HEAD is not a branch.
    assert git(dest, "rev-parse", "--abbrev-ref", "HEAD") == "HEAD"
    assert git(dest, "status", "--porcelain") == ""


def test_fetch_depth_one_is_shallow(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    prepare_checkout(git_repo.source(git_repo.second), dest, fetch_depth=1)
    assert git(dest, "rev-list", "--count", "HEAD") == "1"
    assert (dest / "NEW.md").exists()


def test_fetch_depth_zero_fetches_all_history(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    prepare_checkout(git_repo.source(git_repo.second), dest, fetch_depth=0)
    assert git(dest, "rev-list", "--count", "HEAD") == "2"
    assert git(dest, "rev-parse", "HEAD~1") == git_repo.first


def test_the_ref_is_fetched_too_so_the_branch_resolves(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    prepare_checkout(git_repo.source(git_repo.first, ref="refs/heads/main"), dest)
    assert git(dest, "rev-parse", "HEAD") == git_repo.first
    assert git(dest, "rev-parse", "origin/main") == git_repo.second
    assert git(dest, "config", "remote.origin.url") == str(git_repo.path)


def test_a_ref_that_no_longer_exists_does_not_matter(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    prepare_checkout(git_repo.source(git_repo.first, ref="refs/heads/deleted-branch"), dest)
    assert git(dest, "rev-parse", "HEAD") == git_repo.first


def test_a_tag_ref(git_repo: GitRepo, tmp_path: Path) -> None:
    git(git_repo.path, "tag", "v1.0", git_repo.first)
    dest = tmp_path / "work"
    prepare_checkout(git_repo.source(git_repo.first, ref="refs/tags/v1.0"), dest)
    assert git(dest, "rev-parse", "v1.0^{commit}") == git_repo.first


def test_a_branch_name_as_the_commit(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    prepare_checkout(CheckoutSource(str(git_repo.path), "main", "main"), dest)
    assert git(dest, "rev-parse", "HEAD") == git_repo.second


def test_from_a_bare_repository(git_repo: GitRepo, tmp_path: Path) -> None:
    bare = tmp_path / "bare.git"
    git(tmp_path, "clone", "-q", "--bare", str(git_repo.path), str(bare))
    dest = tmp_path / "work"
    prepare_checkout(CheckoutSource(str(bare), git_repo.first), dest)
    assert git(dest, "rev-parse", "HEAD") == git_repo.first


def test_from_a_file_url(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    prepare_checkout(CheckoutSource(git_repo.path.as_uri(), git_repo.first), dest, fetch_depth=0)
    assert git(dest, "rev-parse", "HEAD") == git_repo.first
    assert git(dest, "rev-list", "--count", "HEAD") == "1"


def test_from_a_relative_path(
    git_repo: GitRepo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(git_repo.path.parent)
    dest = tmp_path / "work"
    prepare_checkout(CheckoutSource(git_repo.path.name, git_repo.first), dest)
    assert git(dest, "rev-parse", "HEAD") == git_repo.first


def test_checking_out_again_moves_and_cleans_tracked_files(
    git_repo: GitRepo, tmp_path: Path
) -> None:
    dest = tmp_path / "work"
    prepare_checkout(git_repo.source(git_repo.first), dest)
    (dest / "src" / "app.txt").write_text("edited by a step\n")
    prepare_checkout(git_repo.source(git_repo.second), dest)
    assert git(dest, "rev-parse", "HEAD") == git_repo.second
    assert (dest / "src" / "app.txt").read_text() == "version 2\n"
    prepare_checkout(git_repo.source(git_repo.first), dest, fetch_depth=0)
    assert git(dest, "rev-parse", "HEAD") == git_repo.first


def test_into_a_directory_with_untracked_files(git_repo: GitRepo, tmp_path: Path) -> None:
    dest = tmp_path / "work"
    dest.mkdir()
    (dest / "NEW.md").write_text("in the way\n")
    prepare_checkout(git_repo.source(git_repo.second), dest)
    assert (dest / "NEW.md").read_text() == "new\n"


def test_unknown_sha_is_a_clear_job_setup_error(git_repo: GitRepo, tmp_path: Path) -> None:
    missing = "0" * 40
    with pytest.raises(JobSetupError) as caught:
        prepare_checkout(git_repo.source(missing), tmp_path / "work")
    message = str(caught.value)
    assert missing in message
    assert str(git_repo.path) in message
    assert "not our ref" in message  # git's own reason, quoted
    assert "\n" not in message
    assert "Traceback" not in message


def test_missing_repository_path(tmp_path: Path) -> None:
    path = tmp_path / "no-such-repo"
    with pytest.raises(JobSetupError) as caught:
        prepare_checkout(CheckoutSource(str(path), "a" * 40), tmp_path / "work")
    message = str(caught.value)
    assert str(path) in message and "a" * 40 in message
    assert "does not exist" in message


def test_a_directory_that_is_not_a_repository(tmp_path: Path) -> None:
    path = tmp_path / "plain-dir"
    path.mkdir()
    with pytest.raises(JobSetupError) as caught:
        prepare_checkout(CheckoutSource(str(path), "b" * 40), tmp_path / "work")
    message = str(caught.value)
    assert str(path) in message and "b" * 40 in message
    assert "not appear to be a git repository" in message


def test_bad_url_never_shows_credentials(tmp_path: Path) -> None:
    url = "nosuchscheme://user:hunter2@example.invalid/repo.git"
    with pytest.raises(JobSetupError) as caught:
        prepare_checkout(CheckoutSource(url, "c" * 40), tmp_path / "work")
    message = str(caught.value)
    assert "nosuchscheme://example.invalid/repo.git" in message
    assert "hunter2" not in message
    assert "c" * 40 in message


def test_empty_sha(git_repo: GitRepo, tmp_path: Path) -> None:
    with pytest.raises(JobSetupError, match="no commit sha"):
        prepare_checkout(CheckoutSource(str(git_repo.path), ""), tmp_path / "work")


def test_negative_fetch_depth(git_repo: GitRepo, tmp_path: Path) -> None:
    with pytest.raises(JobSetupError, match="fetch-depth"):
        prepare_checkout(git_repo.source(), tmp_path / "work", fetch_depth=-1)


def test_options_looking_arguments_are_not_options(git_repo: GitRepo, tmp_path: Path) -> None:
    marker = tmp_path / "injected"
    with pytest.raises(JobSetupError):
        prepare_checkout(
            CheckoutSource(str(git_repo.path), f"--upload-pack=touch {marker}"), tmp_path / "work"
        )
    with pytest.raises(JobSetupError):
        prepare_checkout(CheckoutSource(f"--upload-pack=touch {marker}", "d" * 40), tmp_path / "w")
    assert not marker.exists()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://x-access-token:abc@github.com/o/r.git", "https://github.com/o/r.git"),
        ("https://user@host:8443/r.git", "https://host:8443/r.git"),
        ("https://github.com/o/r.git", "https://github.com/o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
