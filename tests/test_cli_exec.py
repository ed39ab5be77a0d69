"""`cicd exec`: a workflow of the working tree run end to end by the real command, in a real
git repository, on the local executor (steps are real processes)."""

from __future__ import annotations

import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SAMPLE = """\
name: CI
on: [push, workflow_dispatch]
jobs:
  build:
    runs-on: linux
    outputs:
      version: ${{ steps.version.outputs.version }}
    steps:
      - id: version
        run: echo "version=$(cat VERSION)" >> "$GITHUB_OUTPUT"
      - name: Show the tree
        run: |
          echo "version $(cat VERSION)"
          ls
  test:
    needs: build
    runs-on: linux
    strategy:
      matrix:
        python: ["3.10", "3.12"]
    steps:
      - run: echo "testing ${{ matrix.python }} against ${{ needs.build.outputs.version }}"
  report:
    needs: test
    runs-on: linux
    steps:
      - run: echo "all ${{ needs.test.result }} on ${{ github.ref_name }} by ${{ github.actor }}"
"""

FAILING = """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo before
      - name: Break
        run: exit 3
      - run: echo never
  deploy:
    needs: build
    runs-on: linux
    steps:
      - run: echo never
"""

BROKEN = """\
on: push
jobs:
  build:
    runs-on: linux
    needs: [missing]
    steps:
      - run: echo hello
"""

DISPATCH = """\
on:
  workflow_dispatch:
    inputs:
      flag: {type: boolean, default: false}
      level: {type: choice, options: [low, high], required: true}
jobs:
  show:
    runs-on: linux
    steps:
      - run: |
          echo "event=${{ github.event_name }} level=${{ inputs.level }}"
          echo "flag=${{ inputs.flag == true }} secret=${{ secrets.TOKEN }}"
"""

SLOW = """\
on: push
jobs:
  slow:
    runs-on: linux
    steps:
      - run: echo started; sleep 60
  after:
    needs: slow
    runs-on: linux
    steps:
      - run: echo never
"""

PROBLEM_LINE = re.compile(r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def make_repo(path: Path, workflows: dict[str, str], files: dict[str, str] | None = None) -> Path:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    for name, text in workflows.items():
        target = path / ".cicd" / "workflows" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for name, text in (files or {}).items():
        (path / name).write_text(text)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    return path


def environment(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CICD_", "GIT_"))}
    env |= {"CICD_EXECUTOR": "local", "CICD_KILL_GRACE_SECONDS": "1", "USER": "ada"}
    return env | extra


def cicd_exec(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cicd.cli", "exec", *args],
        cwd=cwd,
        env=environment(**env),
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines_of(stdout: str, job: str) -> list[str]:
    prefix = f"[{job}] "
    return [line[len(prefix) :] for line in stdout.splitlines() if line.startswith(prefix)]


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table: job name -> [result, time, reason...]."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("JOB "))
    rows = {}
    for line in lines[start + 1 :]:
        if " job(s) in " in line:
            break
        name, rest = re.split(r"\s{2,}", line, maxsplit=1)
        rows[name] = re.split(r"\s{2,}", rest.strip())
    return rows


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    return make_repo(tmp_path / "widgets", {"ci.yml": SAMPLE}, {"VERSION": "1.0\n"})


def test_runs_the_workflow_with_needs_and_matrix(sample: Path) -> None:
    result = cicd_exec(sample)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout

    build = lines_of(out, "build")
    assert build[0] == "● started"
    assert build[-1].startswith("✓ success in ")
    expected = [
        "▸ Show the tree",
        "version 1.0",
        "VERSION",
    ]
    assert [line for line in build if line in expected] == expected
    assert any(line.startswith("✓ Show the tree (") for line in build)
    for python in ("3.10", "3.12"):
        test = lines_of(out, f"test ({python})")
        assert test[0] == "● started"
        assert f"testing {python} against 1.0" in test
        assert test[-1].startswith("✓ success in ")
    report = lines_of(out, "report")
    assert "all success on main by ada" in report

    # needs: every job starts after what it needs has ended
    all_lines = out.splitlines()
    position = {line: index for index, line in enumerate(all_lines)}
    build_done = next(i for i, line in enumerate(all_lines) if line.startswith("[build] ✓ success"))
    assert all(position[f"[test ({python})] ● started"] > build_done for python in ("3.10", "3.12"))
    tests_done = max(
        i for i, line in enumerate(all_lines) if re.match(r"\[test \(.*\)\] ✓ success", line)
    )
    assert position["[report] ● started"] > tests_done

    rows = summary_rows(out)
    assert list(rows) == ["build", "test (3.10)", "test (3.12)", "report"]
    assert all(row[0] == "success" for row in rows.values())
    assert out.rstrip().splitlines()[-1].endswith(": 4 success")
    assert "push on main" in result.stderr


def test_uncommitted_changes_are_what_the_steps_see(sample: Path) -> None:
    (sample / "VERSION").write_text("2.0-dirty\n")
    (sample / "untracked.txt").write_text("new\n")
    (sample / ".gitignore").write_text("*.log\n")
    (sample / "debug.log").write_text("ignored\n")
    result = cicd_exec(sample, "--job", "build")
    assert result.returncode == 0, result.stdout + result.stderr
    build = lines_of(result.stdout, "build")
    assert "version 2.0-dirty" in build
    assert "untracked.txt" in build
    assert "debug.log" not in build
    assert "with uncommitted changes" in result.stderr
    # the repository is as it was: nothing staged, nothing committed
    assert git(sample, "diff", "--cached", "--name-only") == ""
    assert git(sample, "rev-list", "--count", "--all") == "1"
    assert git(sample, "status", "--porcelain").splitlines() == [
        "M VERSION",  # (git() strips the leading space of " M")
        "?? .gitignore",
        "?? untracked.txt",
    ]


def test_only_the_chosen_job_runs(sample: Path) -> None:
    result = cicd_exec(sample, "-j", "test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert list(summary_rows(result.stdout)) == ["test (3.10)", "test (3.12)"]
    # its needs did not run: their outputs are empty
    assert "testing 3.10 against " in lines_of(result.stdout, "test (3.10)")


def test_a_failing_step_fails_the_run(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"ci.yml": FAILING})
    result = cicd_exec(repo)
    assert result.returncode == 1, result.stdout + result.stderr
    build = lines_of(result.stdout, "build")
    assert build.index("before") < build.index("▸ Break")
    assert "Error: Process completed with exit code 3." in build
    assert any(line.startswith("✗ Break (failure, exit code 3") for line in build)
    assert "- Run echo never (skipped)" in build
    assert build[-1].startswith("✗ failure in ")
    assert lines_of(result.stdout, "deploy") == ["- skipped: a job it needs ended in failure"]
    rows = summary_rows(result.stdout)
    assert rows["build"][0] == "failure"
    assert rows["build"][2] == "step 'Break' failed: Process completed with exit code 3."
    assert rows["deploy"] == ["skipped", "-", "a job it needs ended in failure"]


def test_a_broken_workflow_exits_2_with_file_line_col(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"ci.yml": BROKEN})
    result = cicd_exec(repo)
    assert result.returncode == 2
    assert result.stdout == ""
    problems = [m for m in map(PROBLEM_LINE.match, result.stderr.splitlines()) if m]
    assert problems, result.stderr
    assert problems[0]["file"] == ".cicd/workflows/ci.yml"
    assert (problems[0]["line"], problems[0]["col"]) == ("5", "13")
    assert "missing" in problems[0]["message"]


def test_usage_errors_exit_2(tmp_path: Path, sample: Path) -> None:
    several = make_repo(tmp_path / "several", {"a.yml": SAMPLE, "b.yml": FAILING})
    result = cicd_exec(several)
    assert result.returncode == 2
    assert ".cicd/workflows/a.yml" in result.stderr and ".cicd/workflows/b.yml" in result.stderr
    # naming one of them works
    result = cicd_exec(several, ".cicd/workflows/b.yml", "--job", "deploy")
    assert result.returncode == 0, result.stderr

    for args, message in [
        (["--job", "nope"], "no job 'nope'"),
        (["--input", "level=high"], "bad inputs"),
        (["--event", "push", "--input", "x=1"], "--input is for workflow_dispatch"),
        (["--secret", "NOT_SET_ANYWHERE"], "no value given"),
        (["missing.yml"], "missing.yml: no such file"),
    ]:
        result = cicd_exec(sample, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr

    empty = tmp_path / "empty"
    empty.mkdir()
    result = cicd_exec(empty)
    assert result.returncode == 2
    assert "no workflow file" in result.stderr


def test_dispatch_inputs_are_coerced_and_secrets_masked(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"deploy.yml": DISPATCH})
    result = cicd_exec(repo, "-i", "level=high", "-i", "flag=true", "--secret", "TOKEN")
    assert result.returncode == 2  # TOKEN is not in the environment
    result = cicd_exec(
        repo, "-i", "level=high", "-i", "flag=true", "--secret", "TOKEN", TOKEN="s3cr3t-value"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    show = lines_of(result.stdout, "show")
    assert "event=workflow_dispatch level=high" in show
    assert "flag=true secret=***" in show
    assert "s3cr3t-value" not in result.stdout


def test_ctrl_c_cancels_the_jobs_and_exits_130(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "r", {"ci.yml": SLOW})
    process = subprocess.Popen(
        [sys.executable, "-m", "cicd.cli", "exec"],
        cwd=repo,
        env=environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if line.strip() == "[slow] started":
            break
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    rest, err = process.communicate(timeout=60)
    assert time.monotonic() - started < 15
    assert process.returncode == 130, "".join(seen) + rest + err
    rows = summary_rows("".join(seen) + rest)
    assert rows["slow"][0] == "cancelled"
    assert rows["slow"][2] == "cancelled: interrupted"
    assert rows["after"] == ["cancelled", "-", "cancelled: interrupted"]
    assert "cancelling the jobs" in err


def test_on_a_terminal_lines_have_colours_and_a_spinner_runs(sample: Path) -> None:
    """stdout and stderr on a pseudo-terminal: colours, the spinner line on stderr."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "cicd.cli", "exec", "-j", "build"],
        cwd=sample,
        env=environment(TERM="xterm", COLUMNS="120"),
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    output = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if not ready:
            if process.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process ended
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=30) == 0
    text = output.decode("utf-8", "replace")
    assert "\x1b[32m✓ success in " in text  # a coloured status line
    assert "\x1b[36m[build]\x1b[0m version 1.0" in text  # the job's prefix in its colour
    assert "\r\x1b[K\x1b[2m⠋ " in text  # the spinner's first frame


def test_a_directory_outside_git_runs_too(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / ".github" / "workflows").mkdir(parents=True)
    (plain / ".github" / "workflows" / "ci.yml").write_text(SAMPLE)
    (plain / "VERSION").write_text("3.0\n")
    result = cicd_exec(plain, "--job", "build")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "version 3.0" in lines_of(result.stdout, "build")
    assert not (plain / ".git").exists()


@pytest.mark.docker
def test_the_docker_executor_checks_out_the_working_tree(sample: Path) -> None:
    from tests.runners.images import docker_client, ensure_busybox_image

    image = ensure_busybox_image(docker_client())
    (sample / "VERSION").write_text("4.0-in-a-container\n")
    result = cicd_exec(sample, "--executor", "docker", "--image", image, "--job", "build")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "version 4.0-in-a-container" in lines_of(result.stdout, "build")
    assert f"docker executor, image {image}" in result.stderr
