"""`runners.offline`: a whole workflow run in memory, on the local executor, with real steps.

The DAG rules are the server's (`runs.scheduling`); these tests pin them for the offline run:
order, outputs through needs, matrices (literal and expression), `if` with status functions,
skips that propagate, fail-fast, max-parallel, retries, cancel, and `--job`.
"""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pipelines import parse_workflow
from runners.events import StepResult
from runners.executor import LOCAL, RunnerConfig
from runners.logs import LogEvent, LogLine
from runners.offline import (
    JobRecord,
    OfflineRun,
    RunRequest,
    RunResult,
    find_root,
    github_context,
    repository_name,
    snapshot_working_tree,
)
from runners.spec import CheckoutSource

GITHUB = {
    "event_name": "push",
    "ref": "refs/heads/main",
    "ref_name": "main",
    "sha": "0" * 40,
    "repository": "acme/widgets",
    "actor": "alice",
}


@dataclass
class Recorder:
    """A RunObserver that keeps what happened, in order, with the time it happened."""

    events: list[tuple[float, str, str, object]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    step_started_event: threading.Event = field(default_factory=threading.Event)

    def job_changed(self, job: JobRecord) -> None:
        self._add(job, "state", job.state)

    def step_started(self, job: JobRecord, index: int, name: str) -> None:
        self._add(job, "step", name)
        self.step_started_event.set()

    def log(self, job: JobRecord, index: int | None, events: Sequence[LogEvent]) -> None:
        for event in events:
            if isinstance(event, LogLine):
                self._add(job, "line", event.text)

    def step_finished(self, job: JobRecord, result: StepResult) -> None:
        self._add(job, "step_done", result.outcome)

    def _add(self, job: JobRecord, kind: str, value: object) -> None:
        with self.lock:
            self.events.append((time.monotonic(), job.key, kind, value))

    def lines(self, key: str) -> list[str]:
        return [str(v) for _, k, kind, v in self.events if k == key and kind == "line"]

    def states(self, key: str) -> list[str]:
        return [str(v) for _, k, kind, v in self.events if k == key and kind == "state"]

    def when(self, key: str, state: str) -> float:
        states = (t for t, k, kind, v in self.events if k == key and kind == "state" and v == state)
        return next(states)


def run_workflow(
    text: str,
    tmp_path: Path,
    *,
    only_job: str | None = None,
    parallel: int = 4,
    request: RunRequest | None = None,
    recorder: Recorder | None = None,
    cancel_after_first_step: bool = False,
) -> tuple[RunResult, Recorder]:
    workflow = parse_workflow(text, "ci.yml")
    recorder = recorder or Recorder()
    config = RunnerConfig(executor=LOCAL, grace_seconds=1.0, work_dir=tmp_path / "jobs")
    run = OfflineRun(
        workflow,
        request or RunRequest(github=GITHUB),
        config=config,
        executor=LOCAL,
        observer=recorder,
        only_job=only_job,
        parallel=parallel,
    )
    if cancel_after_first_step:

        def cancel_soon() -> None:
            recorder.step_started_event.wait(30)
            time.sleep(0.3)
            run.cancel("cancelled by the test")

        threading.Thread(target=cancel_soon, daemon=True).start()
    return run.run(), recorder


def states(result: RunResult) -> dict[str, str]:
    return {job.key: job.state for job in result.jobs}


def job(result: RunResult, key: str) -> JobRecord:
    return next(j for j in result.jobs if j.key == key)


# ------------------------------------------------------------------------ DAG and outputs


DAG = """\
on: push
jobs:
  report:
    needs: [build, test]
    runs-on: linux
    steps:
      - run: |
          echo "version=${{ needs.build.outputs.version }}"
          echo "tested=${{ needs.test.outputs.tested }}"
          echo "result=${{ needs.test.result }}"
  build:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo "version=1.$((40 + 2))" >> "$GITHUB_OUTPUT"
  test:
    needs: build
    runs-on: linux
    outputs:
      tested: ${{ steps.t.outputs.tested }}
    strategy:
      matrix:
        python: ["3.10", "3.12"]
    steps:
      - id: t
        run: |
          echo "python ${{ matrix.python }} of ${{ needs.build.outputs.version }}"
          echo "tested=${{ matrix.python }}" >> "$GITHUB_OUTPUT"
"""


def test_jobs_run_after_their_needs_and_see_their_outputs(tmp_path: Path) -> None:
    result, recorder = run_workflow(DAG, tmp_path)
    assert states(result) == {
        "build": "success",
        "test-3.10": "success",
        "test-3.12": "success",
        "report": "success",
    }, [j.reason for j in result.jobs]
    assert result.conclusion == "success"
    assert [j.name for j in result.jobs] == ["build", "test (3.10)", "test (3.12)", "report"]
    assert recorder.lines("test-3.10")[-1] == "python 3.10 of 1.42"
    assert recorder.lines("test-3.12")[-1] == "python 3.12 of 1.42"
    # A matrix job's outputs: the later instance wins, as on the server.
    assert recorder.lines("report")[-3:] == ["version=1.42", "tested=3.12", "result=success"]
    for instance in ("test-3.10", "test-3.12"):
        assert recorder.when("build", "success") <= recorder.when(instance, "running")
        assert recorder.when(instance, "success") <= recorder.when("report", "running")
    assert job(result, "build").outputs == {"version": "1.42"}


def test_independent_jobs_run_at_the_same_time(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  a: {runs-on: linux, steps: [{run: echo a}]}
  b: {runs-on: linux, steps: [{run: echo b}]}
  c: {runs-on: linux, steps: [{run: echo c}]}
"""
    # Each job's first step waits (in its own thread) until all three have started one: run
    # one after the other, the barrier would break and the jobs fail.
    barrier = threading.Barrier(3, timeout=30)

    class Rendezvous(Recorder):
        def step_started(self, job: JobRecord, index: int, name: str) -> None:
            super().step_started(job, index, name)
            barrier.wait()

    result, recorder = run_workflow(text, tmp_path, parallel=3, recorder=Rendezvous())
    assert states(result) == {"a": "success", "b": "success", "c": "success"}
    assert not barrier.broken
    assert [recorder.lines(key)[-1] for key in "abc"] == ["a", "b", "c"]


def test_one_at_a_time_with_parallel_one(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  a: {runs-on: linux, steps: [{run: sleep 0.3}]}
  b: {runs-on: linux, steps: [{run: sleep 0.3}]}
"""
    result, recorder = run_workflow(text, tmp_path, parallel=1)
    assert result.conclusion == "success"
    assert recorder.when("a", "success") <= recorder.when("b", "running")


# ------------------------------------------------------------------------ matrices


def test_expression_matrix_is_expanded_from_needs_outputs(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  setup:
    runs-on: linux
    outputs:
      targets: ${{ steps.list.outputs.targets }}
    steps:
      - id: list
        run: echo 'targets=["arm", "x86"]' >> "$GITHUB_OUTPUT"
  build:
    needs: setup
    runs-on: linux
    strategy:
      matrix:
        target: ${{ fromJSON(needs.setup.outputs.targets) }}
        mode: [debug]
    steps:
      - run: echo "building ${{ matrix.target }} ${{ matrix.mode }}"
  after:
    needs: build
    runs-on: linux
    steps:
      - run: echo "build ${{ needs.build.result }}"
"""
    result, recorder = run_workflow(text, tmp_path)
    assert states(result) == {
        "setup": "success",
        "build-1": "success",
        "build-2": "success",
        "after": "success",
    }
    assert [job(result, k).name for k in ("build-1", "build-2")] == [
        "build (arm, debug)",
        "build (x86, debug)",
    ]
    assert recorder.lines("build-1")[-1] == "building arm debug"
    assert recorder.lines("build-2")[-1] == "building x86 debug"
    assert recorder.lines("after")[-1] == "build success"
    assert recorder.when("build-2", "success") <= recorder.when("after", "running")


def test_an_expression_matrix_that_is_not_a_mapping_fails_the_job(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  build:
    runs-on: linux
    strategy:
      matrix: ${{ fromJSON('[1, 2]') }}
    steps:
      - run: echo never
  after:
    needs: build
    runs-on: linux
    steps: [{run: echo never}]
"""
    result, _ = run_workflow(text, tmp_path)
    assert states(result) == {"build": "failure", "after": "skipped"}
    assert job(result, "build").reason.startswith("matrix: ")
    assert result.conclusion == "failure"


def test_fail_fast_cancels_the_other_instances(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  test:
    runs-on: linux
    strategy:
      matrix:
        n: [1, 2, 3]
    steps:
      - run: |
          if [ "${{ matrix.n }}" = 1 ]; then sleep 0.5; exit 3; fi
          sleep 30
"""
    started = time.monotonic()
    result, _ = run_workflow(text, tmp_path, parallel=2)
    assert time.monotonic() - started < 15
    assert states(result) == {"test-1": "failure", "test-2": "cancelled", "test-3": "cancelled"}
    assert job(result, "test-2").reason == "fail-fast: test (1) failed"
    # test-2 was running (stopped through its token), test-3 had not started.
    assert job(result, "test-2").started_at is not None
    assert job(result, "test-3").started_at is None
    assert job(result, "test-3").reason == "fail-fast: test (1) failed"
    assert result.conclusion == "failure"


def test_without_fail_fast_the_other_instances_finish(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  test:
    runs-on: linux
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    steps:
      - run: |
          if [ "${{ matrix.n }}" = 1 ]; then exit 3; fi
          sleep 0.5; echo "n=${{ matrix.n }} done"
"""
    result, recorder = run_workflow(text, tmp_path)
    assert states(result) == {"test-1": "failure", "test-2": "success"}
    assert recorder.lines("test-2")[-1] == "n=2 done"


def test_max_parallel_bounds_the_running_instances(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  test:
    runs-on: linux
    strategy:
      max-parallel: 1
      matrix:
        n: [1, 2, 3]
    steps:
      - run: sleep 0.2
"""
    result, recorder = run_workflow(text, tmp_path, parallel=3)
    assert result.conclusion == "success"
    spans = sorted(
        (recorder.when(key, "running"), recorder.when(key, "success"))
        for key in ("test-1", "test-2", "test-3")
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


# ------------------------------------------------------------------------ if, skips


def test_status_functions_and_skips_after_a_failure(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  build:
    runs-on: linux
    steps: [{run: exit 1}]
  deploy:
    needs: build
    runs-on: linux
    steps: [{run: echo never}]
  notify:
    needs: build
    if: failure()
    runs-on: linux
    steps:
      - run: echo "build ${{ needs.build.result }}"
  cleanup:
    needs: [deploy, notify]
    if: always()
    runs-on: linux
    steps:
      - run: echo "deploy ${{ needs.deploy.result }} notify ${{ needs.notify.result }}"
"""
    result, recorder = run_workflow(text, tmp_path)
    assert states(result) == {
        "build": "failure",
        "deploy": "skipped",
        "notify": "success",
        "cleanup": "success",
    }
    assert job(result, "deploy").reason == "a job it needs ended in failure"
    assert job(result, "build").reason == (
        "step 'Run exit 1' failed: Process completed with exit code 1."
    )
    assert recorder.lines("notify")[-1] == "build failure"
    assert recorder.lines("cleanup")[-1] == "deploy skipped notify success"
    assert recorder.states("deploy") == ["skipped"]  # never queued, never started
    assert result.conclusion == "failure"


def test_a_skipped_job_skips_its_dependents_unless_they_use_a_status_function(
    tmp_path: Path,
) -> None:
    text = """\
on: push
jobs:
  first:
    if: github.ref == 'refs/heads/release'
    runs-on: linux
    steps: [{run: echo never}]
  second:
    needs: first
    if: true
    runs-on: linux
    steps: [{run: echo never}]
  third:
    needs: second
    runs-on: linux
    steps: [{run: echo never}]
  last:
    needs: third
    if: ${{ !cancelled() }}
    runs-on: linux
    steps:
      - run: echo "third ${{ needs.third.result }}"
"""
    result, recorder = run_workflow(text, tmp_path)
    assert states(result) == {
        "first": "skipped",
        "second": "skipped",
        "third": "skipped",
        "last": "success",
    }
    assert job(result, "first").reason == "if: github.ref == 'refs/heads/release' was false"
    assert job(result, "second").reason == "a job it needs was skipped"
    assert recorder.lines("last")[-1] == "third skipped"
    assert result.conclusion == "success"


def test_a_job_the_local_executor_cannot_run_fails_with_the_reason(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  db:
    runs-on: linux
    container: postgres:16
    steps: [{run: echo never}]
"""
    result, _ = run_workflow(text, tmp_path)
    assert states(result) == {"db": "failure"}
    assert "Docker engine" in job(result, "db").reason


# ------------------------------------------------------------------------ contexts and env


def test_contexts_secrets_and_env_given_to_the_run(tmp_path: Path) -> None:
    text = """\
on: workflow_dispatch
env:
  LEVEL: workflow
  KEPT: from-workflow
jobs:
  show:
    runs-on: linux
    env:
      JOB_LEVEL: job
    steps:
      - run: |
          echo "level=$LEVEL kept=$KEPT extra=$EXTRA job=$JOB_LEVEL"
          echo "input=${{ inputs.name }} event=${{ github.event_name }} job=${{ github.job }}"
          echo "secret=${{ secrets.TOKEN }}"
"""
    request = RunRequest(
        github=GITHUB | {"event_name": "workflow_dispatch"},
        inputs={"name": "ada"},
        secrets={"TOKEN": "hunter2"},
        env={"LEVEL": "cli", "EXTRA": "yes", "JOB_LEVEL": "cli"},
    )
    result, recorder = run_workflow(text, tmp_path, request=request)
    assert result.conclusion == "success"
    assert recorder.lines("show")[-3:] == [
        "level=cli kept=from-workflow extra=yes job=job",
        "input=ada event=workflow_dispatch job=show",
        "secret=***",
    ]


def test_retry_runs_a_failed_job_again(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  flaky:
    runs-on: linux
    retry: {max-attempts: 2, backoff-seconds: 0.1}
    steps: [{run: echo "try"; exit 1}]
"""
    result, recorder = run_workflow(text, tmp_path)
    flaky = job(result, "flaky")
    assert flaky.state == "failure"
    assert flaky.attempt == 2
    lines = recorder.lines("flaky")
    assert lines.count("try") == 2
    assert any(line.startswith("Attempt 1 of 2 ended in failure; retrying in") for line in lines)


# ------------------------------------------------------------------------ --job, cancel


def test_only_job_runs_that_job_alone_with_empty_needs(tmp_path: Path) -> None:
    result, recorder = run_workflow(DAG, tmp_path, only_job="test")
    assert states(result) == {"test-3.10": "success", "test-3.12": "success"}
    assert recorder.lines("test-3.10")[-1] == "python 3.10 of "


def test_an_unknown_only_job_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyError):
        run_workflow(DAG, tmp_path, only_job="nope")


def test_cancel_stops_running_jobs_and_cancels_the_rest(tmp_path: Path) -> None:
    text = """\
on: push
jobs:
  slow:
    runs-on: linux
    steps:
      - run: echo started; sleep 30
      - if: always()
        run: echo cleaning up
  after:
    needs: slow
    if: always()
    runs-on: linux
    steps: [{run: echo never}]
"""
    started = time.monotonic()
    result, recorder = run_workflow(text, tmp_path, cancel_after_first_step=True)
    assert time.monotonic() - started < 15
    assert result.cancelled
    assert states(result) == {"slow": "cancelled", "after": "cancelled"}
    assert job(result, "after").reason == "cancelled by the test"
    assert job(result, "slow").reason == "cancelled by the test"
    assert "cleaning up" in recorder.lines("slow")  # always() steps still run, as on GitHub
    assert result.conclusion == "cancelled"


# ------------------------------------------------------------------------ the working tree


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def repository_state(path: Path) -> tuple[str, str, str, str]:
    """What the snapshot must not change: status, objects, refs and the index file."""
    index = hashlib.sha256((path / ".git" / "index").read_bytes()).hexdigest()
    objects = sorted(p.name for p in (path / ".git" / "objects").rglob("*") if p.is_file())
    return git(path, "status", "--porcelain"), str(objects), git(path, "show-ref"), index


@pytest.fixture
def work_tree(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "app.txt").write_text("committed\n")
    (path / "gone.txt").write_text("deleted later\n")
    (path / ".gitignore").write_text("build/\n")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "first")
    git(path, "remote", "add", "origin", "git@example.org:acme/widgets.git")
    return path


def checkout(source: CheckoutSource, dest: Path) -> Path:
    from runners.checkout import prepare_checkout

    prepare_checkout(source, dest)
    return dest


def test_snapshot_holds_the_working_tree_and_leaves_the_repository_alone(
    work_tree: Path, tmp_path: Path
) -> None:
    (work_tree / "app.txt").write_text("changed, not committed\n")
    (work_tree / "gone.txt").unlink()
    (work_tree / "new.txt").write_text("untracked\n")
    (work_tree / "build").mkdir()
    (work_tree / "build" / "out.bin").write_text("ignored\n")
    before = repository_state(work_tree)
    head = git(work_tree, "rev-parse", "HEAD")
    scratch = tmp_path / "scratch"
    scratch.mkdir()

    snapshot = snapshot_working_tree(work_tree / ".", scratch)

    assert repository_state(work_tree) == before
    assert snapshot.dirty
    assert snapshot.head_sha == head
    assert snapshot.ref == "refs/heads/main"
    assert snapshot.checkout.sha != head
    tree = checkout(snapshot.checkout, tmp_path / "out")
    assert (tree / "app.txt").read_text() == "changed, not committed\n"
    assert (tree / "new.txt").read_text() == "untracked\n"
    assert not (tree / "gone.txt").exists()
    assert not (tree / "build").exists()
    # origin/main in the checkout is the snapshot, so a workflow's `git diff origin/main` is empty
    assert git(tree, "rev-parse", "origin/main") == snapshot.checkout.sha


def test_a_clean_tree_checks_out_head_itself(work_tree: Path, tmp_path: Path) -> None:
    snapshot = snapshot_working_tree(work_tree, tmp_path)
    assert not snapshot.dirty
    assert snapshot.checkout.sha == git(work_tree, "rev-parse", "HEAD")
    assert (checkout(snapshot.checkout, tmp_path / "out") / "app.txt").read_text() == (
        "committed\n"
    )


def test_a_subdirectory_means_its_repository(work_tree: Path) -> None:
    (work_tree / "sub").mkdir()
    assert find_root(work_tree / "sub") == work_tree.resolve()


def test_a_directory_outside_git_is_taken_whole(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "a.txt").write_text("a\n")
    (plain / ".gitignore").write_text("*.log\n")
    (plain / "debug.log").write_text("ignored\n")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    assert find_root(plain) == plain
    snapshot = snapshot_working_tree(plain, scratch)
    assert snapshot.head_sha == "" and snapshot.ref == ""
    tree = checkout(snapshot.checkout, tmp_path / "out")
    assert (tree / "a.txt").read_text() == "a\n"
    assert not (tree / "debug.log").exists()
    assert not (plain / ".git").exists()


def test_the_working_tree_is_what_the_jobs_check_out(work_tree: Path, tmp_path: Path) -> None:
    (work_tree / "app.txt").write_text("edited\n")
    snapshot = snapshot_working_tree(work_tree, tmp_path)
    github = github_context(
        snapshot, event_name="push", actor="alice", workflow_name="CI", event={}
    )
    assert github["sha"] == snapshot.head_sha
    assert github["repository"] == "acme/widgets"
    assert github["ref_name"] == "main"
    text = """\
on: push
jobs:
  implicit:
    runs-on: linux
    steps: [{run: cat app.txt}]
  explicit:
    runs-on: linux
    steps:
      - uses: actions/checkout@v4
        with: {path: src}
      - run: cat src/app.txt
"""
    request = RunRequest(github=github, checkout=snapshot.checkout)
    result, recorder = run_workflow(text, tmp_path, request=request)
    assert result.conclusion == "success"
    assert recorder.lines("implicit")[-1] == "edited"
    assert recorder.lines("explicit")[-1] == "edited"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/acme/widgets.git", "acme/widgets"),
        ("https://user:token@git.example.org/acme/widgets", "acme/widgets"),
        ("git@github.com:acme/widgets.git", "acme/widgets"),
        ("ssh://git@host:2222/group/sub/widgets.git/", "sub/widgets"),
        ("/srv/git/acme/widgets.git", "acme/widgets"),
        ("", "local/checkout"),
    ],
)
def test_repository_name_from_the_remote(url: str, expected: str) -> None:
    assert repository_name(url, Path("/home/alice/checkout")) == expected


def test_a_later_job_downloads_what_an_earlier_one_uploaded(tmp_path: Path) -> None:
    result, recorder = run_workflow(
        """\
on: push
jobs:
  build:
    runs-on: linux
    steps:
      - run: mkdir -p dist && echo "built by build" > dist/out.txt
      - uses: actions/upload-artifact@v4
        with:
          name: dist
          path: dist
  use:
    needs: build
    runs-on: linux
    steps:
      - uses: actions/download-artifact@v4
        with:
          name: dist
          path: got
      - run: cat got/out.txt
""",
        tmp_path,
    )
    assert states(result) == {"build": "success", "use": "success"}, [j.reason for j in result.jobs]
    assert recorder.lines("use")[-1] == "built by build"
