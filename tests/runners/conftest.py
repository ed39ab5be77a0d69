"""Fixtures for the executor suite: the same tests run against every executor.

`EXECUTORS` maps an executor name to a *maker*: `maker(tmp_path, grace_seconds=...)` returns a
callable `run(spec, sink=None, cancel=None, **options) -> (JobResult, RecordingSink)` that runs one
job to its end on that executor. `options` may hold `step_output_cap`. A maker that cannot work
here (no Docker engine, say) fails: CI must never pass by skipping an executor. The `executor`
fixture is parametrised over the registry; a test that only makes sense on some executors checks
`executor.name`. "local" is the local executor as deployed (under bubblewrap when it works here),
"local-plain" the same without bubblewrap (plain process groups), so both of its modes go through
the whole suite.
"""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from runners.events import CancelToken, JobResult, RecordingSink
from runners.spec import CheckoutSource, JobSpec, StepSpec
from tests.runners.images import make_docker_runner

GRACE_SECONDS = 1.0

RunJob = Callable[..., tuple[JobResult, RecordingSink]]
Maker = Callable[..., RunJob]


def make_local_runner(
    tmp_path: Path, *, grace_seconds: float = GRACE_SECONDS, use_bwrap: bool | None = None
) -> RunJob:
    """The local executor as configured by default: under bubblewrap when it works here."""
    from runners.local import run_local_job

    work_root = tmp_path / "jobs"

    def run(
        spec: JobSpec,
        sink: RecordingSink | None = None,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> tuple[JobResult, RecordingSink]:
        sink = sink if sink is not None else RecordingSink()
        result = run_local_job(
            spec,
            sink,
            cancel=cancel,
            work_root=work_root,
            grace_seconds=grace_seconds,
            use_bwrap=use_bwrap,
            **options,
        )
        return result, sink

    return run


def make_local_plain_runner(tmp_path: Path, *, grace_seconds: float = GRACE_SECONDS) -> RunJob:
    """The local executor without bubblewrap: plain process groups (its fallback)."""
    return make_local_runner(tmp_path, grace_seconds=grace_seconds, use_bwrap=False)


EXECUTORS: dict[str, Maker] = {
    "local": make_local_runner,
    "local-plain": make_local_plain_runner,
    "docker": make_docker_runner,
}


# Seconds an executor may need to set a job up before its first step runs (create a container,
# start services). Tests of the job timeout, whose clock starts before the setup, add it.
SETUP_SECONDS: dict[str, float] = {"docker": 10.0}


@dataclass
class Executor:
    name: str
    run_job: RunJob
    setup_seconds: float = 0.0

    def __call__(
        self,
        spec: JobSpec,
        sink: RecordingSink | None = None,
        cancel: CancelToken | None = None,
        **options: Any,
    ) -> tuple[JobResult, RecordingSink]:
        return self.run_job(spec, sink, cancel, **options)


@pytest.fixture(params=sorted(EXECUTORS))
def executor(request: pytest.FixtureRequest, tmp_path: Path) -> Executor:
    maker = EXECUTORS[request.param]
    return Executor(
        request.param,
        maker(tmp_path, grace_seconds=GRACE_SECONDS),
        setup_seconds=SETUP_SECONDS.get(request.param, 0.0),
    )


# ------------------------------------------------------------------------ spec builders

GITHUB = {
    "sha": "0123456789abcdef0123456789abcdef01234567",
    "ref": "refs/heads/main",
    "ref_name": "main",
    "repository": "acme/widgets",
    "run_id": "4242",
    "run_number": "7",
    "run_attempt": "1",
    "event_name": "push",
    "actor": "alice",
    "job": "build",
}

_job_counter = 0


def step(run: str | None = None, **kw: Any) -> StepSpec:
    """A StepSpec; `index` and `name` are filled in by `job()` when not given."""
    kw.setdefault("index", -1)
    kw.setdefault("name", "")
    return StepSpec(run=run, **kw)


def job(*steps: StepSpec, **kw: Any) -> JobSpec:
    """A JobSpec with its steps numbered, a unique job id and the `github` context of a push."""
    global _job_counter
    _job_counter += 1
    numbered = [
        dataclasses.replace(s, index=index, name=_default_name(s, index))
        for index, s in enumerate(steps)
    ]
    contexts = dict(kw.pop("contexts", {}) or {})
    contexts.setdefault("github", dict(GITHUB))
    kw.setdefault("job_id", f"test-job-{_job_counter}")
    kw.setdefault("run_id", GITHUB["run_id"])
    kw.setdefault("name", "build")
    return JobSpec(steps=tuple(numbered), contexts=contexts, **kw)


def _default_name(s: StepSpec, index: int) -> str:
    if s.name:
        return s.name
    if s.uses:
        return f"Run {s.uses}"
    lines = (s.run or "").strip().splitlines()
    return f"Run {lines[0]}" if lines else f"step {index}"


# ------------------------------------------------------------------------ git repositories


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "HOME": str(cwd),
            "GIT_AUTHOR_NAME": "Test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "Test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
            "GIT_CONFIG_NOSYSTEM": "1",
        },
    ).stdout.strip()


@dataclass(frozen=True)
class GitRepo:
    path: Path
    first: str  # sha of the first commit: README.md and src/app.txt ("version 1")
    second: str  # sha of the second commit: app.txt says "version 2", NEW.md added; main's tip

    def source(self, sha: str | None = None, ref: str = "refs/heads/main") -> CheckoutSource:
        return CheckoutSource(repository=str(self.path), sha=sha or self.first, ref=ref)


@pytest.fixture
def git_repo(tmp_path: Path) -> GitRepo:
    """A small local repository with two commits on `main`."""
    path = tmp_path / "origin"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "README.md").write_text("# widgets\n")
    (path / "src").mkdir()
    (path / "src" / "app.txt").write_text("version 1\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "first")
    first = git(path, "rev-parse", "HEAD")
    (path / "src" / "app.txt").write_text("version 2\n")
    (path / "NEW.md").write_text("new\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "second")
    second = git(path, "rev-parse", "HEAD")
    return GitRepo(path=path, first=first, second=second)


# Composite actions in `action_repo`: steps use `shell: sh` (the Docker test image is busybox).
GREET_ACTION = """\
name: Greet
description: Say hello to someone
inputs:
  who:
    description: Whom to greet
    required: true
  greeting:
    description: The word to use
    default: Hello
outputs:
  message:
    description: What was said
    value: ${{ steps.say.outputs.text }}
runs:
  using: composite
  steps:
    - id: say
      shell: sh
      run: |
        echo "${{ inputs.greeting }}, ${{ inputs.who }}!"
        echo "text=${{ inputs.greeting }}, ${{ inputs.who }}!" >> "$GITHUB_OUTPUT"
        echo "GREETED=${{ inputs.who }}" >> "$GITHUB_ENV"
    - shell: sh
      run: |
        echo "local say=${{ steps.say.outputs.text }} path=${GITHUB_ACTION_PATH##*/}"
        echo "from step=${FROM_STEP:-none} job=${FROM_JOB:-none} ${{ env.FROM_STEP }}"
"""

# A tolerated failure, a real one, a skipped step and a clean-up step.
FAIL_ACTION = """\
name: Fail
runs:
  using: composite
  steps:
    - shell: sh
      run: exit 4
      continue-on-error: true
    - shell: sh
      run: echo still here
    - name: Break
      shell: sh
      run: exit 3
    - shell: sh
      run: echo never
    - shell: sh
      if: failure()
      run: echo cleaning up
"""

# Uses `greet` (a local action inside a local action, found from the workspace root).
WRAP_ACTION = """\
name: Wrap
inputs:
  name: {required: true}
outputs:
  said: {value: "${{ steps.inner.outputs.message }}"}
runs:
  using: composite
  steps:
    - id: inner
      uses: ./.github/actions/greet
      with:
        who: ${{ inputs.name }}
        greeting: Hi
"""

SLOW_ACTION = """\
name: Slow
runs:
  using: composite
  steps:
    - shell: sh
      run: echo start; sleep 30; echo never
    - shell: sh
      run: echo after
"""

LOOP_ACTION = """\
name: Loop
runs:
  using: composite
  steps:
    - uses: ./.github/actions/loop
"""

BROKEN_ACTION = """\
name: Broken
runs:
  using: composite
  steps:
    - run: echo no shell
"""


@pytest.fixture
def action_repo(tmp_path: Path) -> GitRepo:
    """A repository with local composite actions under .github/actions (one commit on main)."""
    path = tmp_path / "actions-origin"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    actions = {
        "greet": GREET_ACTION,
        "fail": FAIL_ACTION,
        "wrap": WRAP_ACTION,
        "slow": SLOW_ACTION,
        "loop": LOOP_ACTION,
        "broken": BROKEN_ACTION,
    }
    for name, text in actions.items():
        directory = path / ".github" / "actions" / name
        directory.mkdir(parents=True)
        (directory / "action.yml").write_text(text)
    (path / "README.md").write_text("# actions\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "actions")
    sha = git(path, "rev-parse", "HEAD")
    return GitRepo(path=path, first=sha, second=sha)
