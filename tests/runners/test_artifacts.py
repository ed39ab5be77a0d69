"""Artifacts on the executor side: which files `path:` selects, and the two actions in real jobs
(upload in one job, download in a later one) on every executor, with an in-memory store."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from runners.artifacts import (
    ArtifactError,
    MemoryArtifactStore,
    parse_patterns,
    run_upload,
    select_files,
)
from tests.runners.conftest import Executor, job, step

WORKSPACE = "/__w/workspace"


def selected(root: Path, text: str, **options) -> list[str]:
    return [name for _, name in select(root, text, **options).files]


def select(root: Path, text: str, **options):
    return select_files(root, parse_patterns(text, WORKSPACE), workspace=WORKSPACE, **options)


def tree(root: Path, files: dict[str, str]) -> Path:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    return tree(
        tmp_path / "ws",
        {
            "dist/app.whl": "wheel",
            "dist/sub/deep/lib.whl": "deep wheel",
            "dist/sub/notes.txt": "notes",
            "dist/tmp/scratch.whl": "scratch",
            "dist/.hidden/secret.whl": "hidden",
            "logs/a.log": "a",
            "README.md": "readme",
        },
    )


def test_a_directory_takes_everything_under_it_named_from_that_directory(workspace):
    assert selected(workspace, "dist") == [
        "app.whl",
        "sub/deep/lib.whl",
        "sub/notes.txt",
        "tmp/scratch.whl",
    ]


def test_double_star_matches_nested_directories_and_exclusions_apply(workspace):
    assert selected(workspace, "dist/**/*.whl\n!dist/tmp") == ["app.whl", "sub/deep/lib.whl"]


def test_the_last_matching_line_decides(workspace):
    assert selected(workspace, "dist\n!dist/sub\ndist/sub/notes.txt") == [
        "app.whl",
        "sub/notes.txt",
        "tmp/scratch.whl",
    ]


def test_several_paths_are_named_from_their_least_common_ancestor(workspace):
    assert selected(workspace, "dist/app.whl\nlogs/") == ["dist/app.whl", "logs/a.log"]


def test_a_single_file_is_stored_by_its_own_name(workspace):
    assert selected(workspace, "dist/sub/notes.txt") == ["notes.txt"]
    assert selected(workspace, f"{WORKSPACE}/dist/sub/notes.txt") == ["notes.txt"]


def test_hidden_files_only_when_asked(workspace):
    assert "dist/.hidden/secret.whl" not in selected(workspace, "**/*.whl")
    assert "dist/.hidden/secret.whl" in selected(workspace, "**/*.whl", include_hidden=True)


def test_paths_outside_the_workspace_are_refused(workspace):
    for text in ("../etc/passwd", "/etc/passwd", "dist/../../x"):
        with pytest.raises(ArtifactError, match="outside the workspace"):
            parse_patterns(text, WORKSPACE)
    with pytest.raises(ArtifactError, match="names no files"):
        parse_patterns("!dist\n\n", WORKSPACE)


def test_symlinks_are_followed_inside_the_workspace_only(workspace, tmp_path):
    outside = tmp_path / "host-secret.txt"
    outside.write_text("do not upload")
    os.symlink(outside, workspace / "dist" / "escape.txt")
    os.symlink("../../etc/passwd", workspace / "dist" / "relative-escape.txt")
    os.symlink("/etc/passwd", workspace / "dist" / "absolute-escape.txt")
    os.symlink("sub/notes.txt", workspace / "dist" / "inside.txt")
    os.symlink(f"{WORKSPACE}/README.md", workspace / "dist" / "absolute-inside.md")
    os.symlink("..", workspace / "dist" / "loop")

    selection = select(workspace, "dist")
    names = {name: path.read_text() for path, name in selection.files}
    assert names["inside.txt"] == "notes"
    assert names["absolute-inside.md"] == "readme"
    for skipped in ("escape.txt", "relative-escape.txt", "absolute-escape.txt", "loop"):
        assert skipped not in names
        assert any(w.startswith(f"skipped dist/{skipped}") for w in selection.warnings)
    assert "do not upload" not in names.values()


class Lines(list):
    def __call__(self, text: str) -> None:
        self.append(text)


class FakeBackend:
    """The two artifact methods of a backend over a host directory."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.workspace = WORKSPACE

    def workspace_view(self, roots):
        import contextlib

        return contextlib.nullcontext(self.root)


@pytest.mark.parametrize(
    ("choice", "fails", "line"),
    [
        ("warn", False, "Warning: No files were found"),
        ("error", True, None),
        ("ignore", False, "No files"),
    ],
)
def test_an_empty_match_under_each_if_no_files_found(workspace, choice, fails, line):
    store, say = MemoryArtifactStore(), Lines()
    inputs = {"path": "nothing/**", "if-no-files-found": choice}
    if fails:
        with pytest.raises(ArtifactError, match="No files were found with the provided path"):
            run_upload(FakeBackend(workspace), store, inputs, say)
    else:
        assert run_upload(FakeBackend(workspace), store, inputs, say) == {}
        assert say[-1].startswith(line)
        assert choice != "ignore" or not say[-1].startswith("Warning")
    assert store.archives == {}


def test_an_upload_over_the_cap_fails_with_the_sizes(workspace):
    (workspace / "big.bin").write_bytes(b"x" * 5000)
    store = MemoryArtifactStore(max_bytes=4096)
    with pytest.raises(ArtifactError, match=r"is 4\.9 KiB \(1 files\), over the limit of 4\.0 KiB"):
        run_upload(FakeBackend(workspace), store, {"path": "big.bin", "name": "big"}, Lines())
    assert store.archives == {}


def test_bad_inputs_are_explained(workspace):
    backend, store = FakeBackend(workspace), MemoryArtifactStore()
    cases = [
        ({"path": "dist", "name": "a/b"}, "forbidden character"),
        ({"path": "dist", "if-no-files-found": "maybe"}, "if-no-files-found must be one of"),
        ({"path": "dist", "retention-days": "soon"}, "retention-days must be a whole number"),
    ]
    for inputs, message in cases:
        with pytest.raises(ArtifactError, match=message):
            run_upload(backend, store, inputs, Lines())
    say = Lines()
    run_upload(backend, MemoryArtifactStore(), {"path": "dist", "retention-days": "500"}, say)
    assert "kept 90 days" in say[-1]


# ------------------------------------------------------------------------ real jobs


def archive_names(store: MemoryArtifactStore, name: str) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(store.archives[name][0])) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


UPLOAD_JOB = (
    step("mkdir -p out/nested out/skip && echo one > out/a.txt && echo two > out/nested/b.txt"),
    step("echo no > out/skip/c.txt && ln -s /etc/passwd out/passwd"),
    step(uses="actions/upload-artifact@v4", with_args={"name": "build", "path": "out\n!out/skip"}),
    step(uses="actions/upload-artifact@v4", with_args={"name": "build", "path": "out"}),
)


def test_upload_in_one_job_and_download_in_a_later_one(executor: Executor) -> None:
    store = MemoryArtifactStore()
    result, sink = executor(job(*UPLOAD_JOB), artifacts=store)
    assert [r.outcome for r in result.steps] == ["success", "success", "success", "failure"]
    assert archive_names(store, "build") == {"a.txt": b"one\n", "nested/b.txt": b"two\n"}
    upload_log = sink.lines(2)
    skipped = [line for line in upload_log if line.startswith("Warning: skipped out/passwd")]
    assert skipped and "outside the workspace" in skipped[0]
    assert any("Uploaded artifact 'build': 2 file(s), 8 bytes" in line for line in upload_log)
    assert "already exists" in result.steps[3].error

    download = job(
        step(uses="actions/download-artifact@v4", with_args={"name": "build", "path": "got"}),
        step(uses="actions/download-artifact@v4"),
        step("cat got/a.txt got/nested/b.txt build/a.txt; test ! -e got/skip"),
        step(uses="actions/download-artifact@v4", with_args={"name": "missing"}),
    )
    result, sink = executor(download, artifacts=store)
    assert [r.outcome for r in result.steps] == ["success", "success", "success", "failure"]
    assert [line for line in sink.lines(2) if line in ("one", "two")] == ["one", "two", "one"]
    assert any("Downloaded artifact 'build': 2 file(s), 8 bytes" in line for line in sink.lines(0))
    assert "no artifact named 'missing'" in result.steps[3].error


def test_both_names_of_a_hard_linked_file_are_uploaded(executor: Executor) -> None:
    # The engine sends a file's second name as a hard link member: it must not be lost.
    store = MemoryArtifactStore()
    result, _ = executor(
        job(
            step("mkdir out && echo same > out/first && ln out/first out/second"),
            step(uses="actions/upload-artifact@v4", with_args={"name": "linked", "path": "out"}),
        ),
        artifacts=store,
    )
    assert [r.outcome for r in result.steps] == ["success", "success"]
    assert archive_names(store, "linked") == {"first": b"same\n", "second": b"same\n"}


def test_without_a_store_the_actions_fail_clearly(executor: Executor) -> None:
    result, _ = executor(job(step(uses="actions/upload-artifact@v4", with_args={"path": "x"})))
    assert result.steps[0].outcome == "failure"
    assert "not available where this job runs" in result.steps[0].error


def test_a_download_cannot_write_through_a_link_out_of_the_job(executor: Executor, tmp_path):
    store = MemoryArtifactStore()
    executor(
        job(
            step("echo hi > f.txt"),
            step(uses="actions/upload-artifact@v4", with_args={"path": "f.txt", "name": "f"}),
        ),
        artifacts=store,
    )
    target = tmp_path / "host-target"
    target.mkdir()
    spec = job(
        step(f"ln -s {target} escape"),
        step(uses="actions/download-artifact@v4", with_args={"name": "f", "path": "escape"}),
    )
    result, _ = executor(spec, artifacts=store)
    assert list(target.iterdir()) == []
    if executor.name != "docker":  # in a container the link leads to the container's own path
        assert result.steps[1].outcome == "failure"
