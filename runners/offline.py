"""One workflow run in memory, on this machine, without a server: what `cicd exec` runs.

The DAG follows `runs.scheduling` (which cannot be imported here: it needs the Django models):

- a job becomes ready when every job it needs has ended; its `if` is then evaluated with the
  status functions over those results (`success()` by default), and it is skipped when the `if`
  is false, or when a job it needs was skipped and the `if` uses no status function;
- `needs.<id>` holds the worst result of the job's instances and their outputs (later instances
  win); a matrix given as an expression is expanded when its job is ready;
- fail-fast cancels the other instances of a matrix when one fails or times out; max-parallel
  bounds the running instances of one matrix job; `retry` runs a failed job again after its
  backoff, as the server does.

Jobs run on the same executors as on the server (`runners.executor.run_job`), in a thread pool.
Concurrency groups, environments' approvals and runner labels have no meaning on one machine and
are ignored.

The working tree is checked out through git plumbing: `snapshot_working_tree` commits it (tracked
changes and untracked files that are not ignored) into a temporary repository that borrows the
real one's objects, so the executors' normal checkout (`prepare_checkout`, a fetch of one sha)
copies it. The user's repository, index and refs are never written.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import re
import shutil
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pipelines.errors import ExpressionError
from pipelines.expressions import (
    EvalOptions,
    evaluate_condition,
    is_truthy,
    parse_condition,
    render,
    render_deep,
    render_labels,
    to_string,
    uses_status_function,
)
from pipelines.matrix import MatrixError, expand_with_display_names
from pipelines.model import FrozenMap, Job, Workflow, thaw
from pipelines.plan import build_plan
from pipelines.triggers import ref_name
from runners.artifacts import MemoryArtifactStore
from runners.caches import CacheStore, MemoryCacheStore
from runners.events import (
    CANCELLED,
    FAILURE,
    SKIPPED,
    SUCCESS,
    TIMED_OUT,
    CancelToken,
    JobResult,
    StepResult,
)
from runners.executor import RunnerConfig, run_job
from runners.from_workflow import ServiceOptionsError, job_spec_for
from runners.logs import LogEvent, LogLine
from runners.spec import CheckoutSource, JobSpec

__all__ = [
    "FINAL_STATES",
    "JobRecord",
    "OfflineRun",
    "RunObserver",
    "RunRequest",
    "RunResult",
    "Snapshot",
    "SnapshotError",
    "find_root",
    "github_context",
    "need_context",
    "repository_name",
    "snapshot_working_tree",
    "worst",
]

log = logging.getLogger(__name__)

PENDING, QUEUED, RUNNING = "pending", "queued", "running"
FINAL_STATES = frozenset({SUCCESS, FAILURE, CANCELLED, SKIPPED, TIMED_OUT})
# Worst wins, as `runs.states.CONCLUSION_PRECEDENCE` (duplicated: that module needs Django).
_PRECEDENCE = (FAILURE, TIMED_OUT, CANCELLED, SUCCESS, SKIPPED)
RETRY_JITTER = 0.25  # as runs.control: up to 25 % added to each backoff
_POLL_SECONDS = 0.2  # the scheduler re-checks a cancel request at least this often


def worst(states: Iterable[str]) -> str:
    """The rolled-up conclusion of ended jobs; none at all counts as skipped."""
    present = set(states)
    return next((state for state in _PRECEDENCE if state in present), SKIPPED)


# ------------------------------------------------------------------------------------ the run


@dataclass(eq=False, slots=True)
class JobRecord:
    """One job instance of the run and what happened to it. Changed only by `OfflineRun`."""

    workflow_job_id: str
    key: str  # unique in the run: `build`, `test-3.10`
    name: str  # as shown: `test (3.10)`
    matrix: dict[str, Any]
    needs: tuple[str, ...]
    state: str = PENDING
    outputs: dict[str, str] = field(default_factory=dict)
    # Why it failed, or why it was skipped or cancelled without running.
    reason: str = ""
    steps: tuple[StepResult, ...] = ()
    attempt: int = 1
    started_at: float | None = None  # time.monotonic()
    finished_at: float | None = None
    expression_matrix: bool = False  # a placeholder, expanded when the job is ready
    cancel: CancelToken = field(default_factory=CancelToken)

    @property
    def duration(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What is fixed for the whole run. `github` is the github context (without `job`, set per
    job, and `workspace`, set by the executor); `env` is added to the workflow's own `env`."""

    github: Mapping[str, Any]
    inputs: Mapping[str, Any] = field(default_factory=dict)
    vars: Mapping[str, Any] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)
    env: Mapping[str, str] = field(default_factory=dict)
    checkout: CheckoutSource | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    conclusion: str  # worst of the jobs' states
    jobs: tuple[JobRecord, ...]
    cancelled: bool  # cancel() was called


class RunObserver(Protocol):
    """Told what happens, from the scheduler and the job threads. It must not call back into
    the run (it may be called with the run's lock held)."""

    def job_changed(self, job: JobRecord) -> None: ...

    def step_started(self, job: JobRecord, index: int, name: str) -> None: ...

    def log(self, job: JobRecord, index: int | None, events: Sequence[LogEvent]) -> None: ...

    def step_finished(self, job: JobRecord, result: StepResult) -> None: ...


class _NullObserver:
    def job_changed(self, job: JobRecord) -> None:
        pass

    def step_started(self, job: JobRecord, index: int, name: str) -> None:
        pass

    def log(self, job: JobRecord, index: int | None, events: Sequence[LogEvent]) -> None:
        pass

    def step_finished(self, job: JobRecord, result: StepResult) -> None:
        pass


class OfflineRun:
    """Runs one workflow to its end. `run()` blocks; `cancel()` may be called from any thread or
    a signal handler (it only sets a flag that the scheduler acts on).

    `only_job` runs just that job's instances, like `act -j`: the jobs it needs do not run, and
    its `needs` context is empty.
    """

    def __init__(
        self,
        workflow: Workflow,
        request: RunRequest,
        *,
        config: RunnerConfig,
        executor: str,
        observer: RunObserver | None = None,
        only_job: str | None = None,
        parallel: int | None = None,
        matrix_cap: int = 256,
        run_id: str = "exec",
        caches: CacheStore | None = None,
    ) -> None:
        if only_job is not None and only_job not in workflow.jobs:
            raise KeyError(only_job)
        if request.env:
            workflow = dataclasses.replace(workflow, env=FrozenMap({**workflow.env, **request.env}))
        self.workflow = workflow
        self.request = request
        self.config = config
        self.executor = executor
        self.observer: RunObserver = observer or _NullObserver()
        self.parallel = max(1, parallel or os.cpu_count() or 1)
        self.matrix_cap = matrix_cap
        self.run_id = run_id
        self.jobs: list[JobRecord] = _records(workflow, only_job)
        self._lock = threading.RLock()
        # Artifacts live as long as this run: a later job downloads what an earlier one uploaded.
        self.artifacts = MemoryArtifactStore()
        # Caches too (unless the caller keeps them longer): a later job restores what an
        # earlier one saved.
        self.caches: CacheStore = caches if caches is not None else MemoryCacheStore()
        self._wake = threading.Event()
        self._cancel_requested = threading.Event()
        self._cancel_reason = "cancelled"
        self._cancelling = False
        self._pool: ThreadPoolExecutor | None = None

    # ---------------------------------------------------------------- public

    def run(self) -> RunResult:
        with ThreadPoolExecutor(self.parallel, thread_name_prefix="cicd-exec") as pool:
            self._pool = pool
            try:
                while True:
                    self._wake.clear()
                    with self._lock:
                        if self._cancel_requested.is_set() and not self._cancelling:
                            self._cancel_all(self._cancel_reason)
                        while self._advance_once():
                            pass
                        if all(job.state in FINAL_STATES for job in self.jobs):
                            break
                    self._wake.wait(_POLL_SECONDS)
            except BaseException:
                # Leaving the pool waits for the running jobs: make them stop first.
                with self._lock:
                    self._cancel_all("interrupted")
                raise
        return RunResult(
            conclusion=worst(job.state for job in self.jobs),
            jobs=tuple(self.jobs),
            cancelled=self._cancel_requested.is_set(),
        )

    def cancel(self, reason: str = "cancelled") -> None:
        """Stop the run: jobs not started end cancelled, running ones are told to stop."""
        self._cancel_reason = reason
        self._cancel_requested.set()
        self._wake.set()

    # ---------------------------------------------------------------- the DAG

    def _advance_once(self) -> bool:
        by_workflow_job = self._by_workflow_job()
        changed = False
        for job in list(self.jobs):
            if job.state != PENDING:
                continue
            needed = (other for need in job.needs for other in by_workflow_job[need])
            if any(other.state not in FINAL_STATES for other in needed):
                continue
            if not self._slot_free(job, by_workflow_job):
                continue
            if self._decide(job, by_workflow_job):
                changed = True
        return changed

    def _by_workflow_job(self) -> dict[str, list[JobRecord]]:
        groups: dict[str, list[JobRecord]] = defaultdict(list)
        for job in self.jobs:
            groups[job.workflow_job_id].append(job)
        return groups

    def _slot_free(self, job: JobRecord, groups: Mapping[str, list[JobRecord]]) -> bool:
        strategy = self.workflow.jobs[job.workflow_job_id].strategy
        if strategy is None or strategy.max_parallel is None:
            return True
        limit = strategy.max_parallel
        if isinstance(limit, str):
            try:
                limit = int(float(to_string(render(limit, self._job_contexts(job, groups)))))
            except (ExpressionError, ValueError):
                return True  # as on the server, a limit that is not a number limits nothing
        busy = sum(1 for s in groups[job.workflow_job_id] if s.state in (QUEUED, RUNNING))
        return busy < max(1, limit)

    def _decide(self, job: JobRecord, groups: Mapping[str, list[JobRecord]]) -> bool:
        definition = self.workflow.jobs[job.workflow_job_id]
        contexts = self._job_contexts(job, groups)
        results = [need["result"] for need in contexts["needs"].values()]
        status = _status(results)
        condition = definition.if_condition
        try:
            guarded = condition is not None and uses_status_function(parse_condition(condition))
            if "skipped" in results and not guarded:
                should_run, reason = False, "a job it needs was skipped"
            else:
                should_run = evaluate_condition(condition, contexts, EvalOptions(status=status))
                reason = "" if should_run else _skip_reason(condition, status)
        except ExpressionError as error:
            should_run, reason = False, f"if: {error.message}"
        if not should_run:
            self._end(job, SKIPPED, reason=reason)
            return True
        if job.expression_matrix:
            return self._expand_matrix(job, definition, contexts)
        try:
            render_labels(definition.runs_on, contexts)
        except ExpressionError as error:
            self._end(job, FAILURE, reason=f"runs-on: {error.message}")
            return True
        job.state = QUEUED
        self.observer.job_changed(job)
        assert self._pool is not None
        self._pool.submit(self._execute, job)
        return True

    def _expand_matrix(self, job: JobRecord, definition: Job, contexts: Mapping[str, Any]) -> bool:
        """Replace the placeholder of a matrix written as an expression by one job per
        combination; they go through `_decide` on the next pass, with their matrix."""
        assert definition.strategy is not None
        try:
            matrix = render_deep(thaw(definition.strategy.matrix), contexts)
            if not isinstance(matrix, Mapping):
                raise MatrixError(
                    f"the matrix expression gave {type(matrix).__name__}, not a mapping"
                )
            combinations = expand_with_display_names(matrix, job.name)
            if len(combinations) > self.matrix_cap:
                raise MatrixError(
                    f"expands to {len(combinations)} combinations, "
                    f"more than the limit of {self.matrix_cap}"
                )
        except (ExpressionError, MatrixError) as error:
            self._end(job, FAILURE, reason=f"matrix: {getattr(error, 'message', str(error))}")
            return True
        expanded = [
            JobRecord(
                workflow_job_id=job.workflow_job_id,
                key=f"{job.key}-{number}",
                name=name,
                matrix=combination,
                needs=job.needs,
            )
            for number, (combination, name) in enumerate(combinations, start=1)
        ]
        position = self.jobs.index(job)
        self.jobs[position : position + 1] = expanded
        return True

    def _end(self, job: JobRecord, state: str, *, reason: str = "") -> None:
        job.state = state
        job.reason = reason
        if job.started_at is not None:
            job.finished_at = time.monotonic()
        self.observer.job_changed(job)
        self._wake.set()

    def _cancel_all(self, reason: str) -> None:
        self._cancelling = True
        for job in self.jobs:
            if job.state in (PENDING, QUEUED):
                self._end(job, CANCELLED, reason=reason)
            elif job.state == RUNNING:
                job.cancel.cancel(reason)

    def _fail_fast(self, failed: JobRecord) -> None:
        strategy = self.workflow.jobs[failed.workflow_job_id].strategy
        if strategy is None:
            return
        fail_fast = strategy.fail_fast
        if isinstance(fail_fast, str):
            contexts = self._job_contexts(failed, self._by_workflow_job())
            try:
                fail_fast = is_truthy(render(fail_fast, contexts))
            except ExpressionError:
                fail_fast = True  # GitHub's default
        if not fail_fast:
            return
        reason = f"fail-fast: {failed.name} failed"
        for sibling in self.jobs:
            if sibling is failed or sibling.workflow_job_id != failed.workflow_job_id:
                continue
            if sibling.state in (PENDING, QUEUED):
                self._end(sibling, CANCELLED, reason=reason)
            elif sibling.state == RUNNING:
                sibling.cancel.cancel(reason)

    # ---------------------------------------------------------------- contexts

    def _run_contexts(self) -> dict[str, Any]:
        return {
            "github": dict(self.request.github),
            "inputs": dict(self.request.inputs),
            "vars": dict(self.request.vars),
        }

    def _job_contexts(
        self, job: JobRecord, groups: Mapping[str, list[JobRecord]]
    ) -> dict[str, Any]:
        """What a job's `if`, `runs-on`, matrix expression and strategy may use."""
        needs = {need: need_context(groups.get(need, [])) for need in job.needs}
        return self._run_contexts() | {"needs": needs, "matrix": job.matrix}

    def _spec_for(self, job: JobRecord) -> JobSpec:
        definition = self.workflow.jobs[job.workflow_job_id]
        with self._lock:
            contexts = self._job_contexts(job, self._by_workflow_job())
        contexts.pop("matrix")
        contexts["github"]["job"] = job.workflow_job_id
        strategy = definition.strategy
        contexts["strategy"] = {
            "fail-fast": strategy.fail_fast if strategy else True,
            "max-parallel": strategy.max_parallel if strategy else None,
        }
        return job_spec_for(
            self.workflow,
            definition,
            job_id=f"{self.run_id}-{job.key}-{job.attempt}",
            run_id=self.run_id,
            matrix=job.matrix,
            contexts=contexts,
            secrets=dict(self.request.secrets),
            checkout=self.request.checkout,
            display_name=job.name,
        )

    # ---------------------------------------------------------------- running a job

    def _execute(self, job: JobRecord) -> None:
        """In a pool thread: run the job (and its retries) to the end."""
        with self._lock:
            if job.state != QUEUED:
                return  # cancelled while it waited for a thread
            job.state = RUNNING
            job.started_at = time.monotonic()
            self.observer.job_changed(job)
        try:
            conclusion, result = self._attempts(job)
        except Exception as error:  # an application error: shown on the job, not a crash
            log.exception("job %s: internal error", job.key)
            conclusion, result = FAILURE, JobResult(FAILURE, error=f"internal error: {error}")
        with self._lock:
            job.outputs = dict(result.outputs)
            job.steps = result.steps
            if conclusion == CANCELLED and job.cancel.cancelled:
                reason = job.cancel.reason  # who stopped it says more than the step's "cancelled"
            else:
                reason = result.error or self._failed_step(job, result)
            self._end(job, conclusion, reason=reason)
            if conclusion in (FAILURE, TIMED_OUT):
                self._fail_fast(job)

    def _attempts(self, job: JobRecord) -> tuple[str, JobResult]:
        policy = self.workflow.jobs[job.workflow_job_id].retry
        while True:
            try:
                spec = self._spec_for(job)
            except (ServiceOptionsError, ExpressionError, ValueError) as error:
                message = error.message if isinstance(error, ExpressionError) else str(error)
                self._system_line(job, f"Error: {message}")
                return FAILURE, JobResult(FAILURE, error=message)
            result = run_job(
                spec,
                _JobSink(self, job),
                self.config,
                cancel=job.cancel,
                executor=self.executor,
                artifacts=self.artifacts,
                caches=self.caches,
            )
            conclusion = result.conclusion
            if conclusion not in FINAL_STATES:
                conclusion = CANCELLED if job.cancel.cancelled else FAILURE
            if (
                policy is None
                or conclusion not in (FAILURE, TIMED_OUT)
                or job.attempt >= policy.max_attempts
                or job.cancel.cancelled
            ):
                return conclusion, result
            base = policy.delay_before(job.attempt + 1)
            delay = base + base * RETRY_JITTER * random.random()
            self._system_line(
                job,
                f"Attempt {job.attempt} of {policy.max_attempts} ended in {conclusion}; "
                f"retrying in {delay:.1f} s",
            )
            if job.cancel.wait(delay):
                return CANCELLED, JobResult(CANCELLED, error=job.cancel.reason)
            job.attempt += 1

    def _failed_step(self, job: JobRecord, result: JobResult) -> str:
        """Why a job failed, for its status line: its first failed step and the step's error."""
        steps = self.workflow.jobs[job.workflow_job_id].steps
        for step in result.steps:
            if step.conclusion in (FAILURE, TIMED_OUT, CANCELLED) and 0 <= step.index < len(steps):
                verb = {FAILURE: "failed", TIMED_OUT: "timed out"}.get(step.conclusion)
                error = f": {step.error}" if step.error else ""
                name = steps[step.index].display_name
                return f"step '{name}' {verb or 'was cancelled'}{error}"
        return ""

    def _system_line(self, job: JobRecord, text: str) -> None:
        self.observer.log(job, None, [LogLine(timestamp=time.time(), stream="system", text=text)])


@dataclass(slots=True)
class _JobSink:
    """The executor's EventSink for one job: forwards to the observer with the job."""

    run: OfflineRun
    job: JobRecord

    def job_started(self) -> None:
        pass

    def step_started(self, index: int, name: str) -> None:
        self.run.observer.step_started(self.job, index, name)

    def log(self, index: int | None, events: Sequence[LogEvent]) -> None:
        self.run.observer.log(self.job, index, events)

    def step_finished(self, result: StepResult) -> None:
        self.run.observer.step_finished(self.job, result)

    def job_finished(self, result: JobResult) -> None:
        pass


def _records(workflow: Workflow, only_job: str | None) -> list[JobRecord]:
    records: list[JobRecord] = []
    for planned in build_plan(workflow).jobs:
        if only_job is not None and planned.job_id != only_job:
            continue
        needs = () if only_job is not None else planned.needs
        if planned.instances is None:
            records.append(
                JobRecord(
                    workflow_job_id=planned.job_id,
                    key=planned.job_id,
                    name=planned.display_name,
                    matrix={},
                    needs=needs,
                    expression_matrix=True,
                )
            )
            continue
        for instance in planned.instances:
            records.append(
                JobRecord(
                    workflow_job_id=planned.job_id,
                    key=instance.key,
                    name=instance.display_name,
                    matrix=thaw(dict(instance.matrix)),
                    needs=needs,
                )
            )
    return records


def need_context(instances: Sequence[JobRecord]) -> dict[str, Any]:
    """`needs.<id>`: the worst result of a (matrix) job, and its outputs (later ones win)."""
    conclusion = worst(job.state for job in instances)
    outputs: dict[str, Any] = {}
    for job in instances:
        outputs.update(job.outputs)
    return {"result": FAILURE if conclusion == TIMED_OUT else conclusion, "outputs": outputs}


def _status(results: list[str]) -> str:
    if CANCELLED in results:
        return CANCELLED
    if FAILURE in results:
        return FAILURE
    return SUCCESS


def _skip_reason(condition: str | None, status: str) -> str:
    if condition is None:
        return f"a job it needs ended in {status}"
    return f"if: {condition} was false"


# ------------------------------------------------------------------------------ the working tree


class SnapshotError(Exception):
    """The working tree cannot be turned into a commit; the message says why."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The working tree as a commit that the executors can check out, and the git facts of the
    github context. `checkout.sha` is HEAD itself when the tree has no change."""

    root: Path  # the top of the work tree
    checkout: CheckoutSource
    head_sha: str  # "" without a commit
    ref: str  # refs/heads/<branch>, refs/tags/<tag> when detached on one, else ""
    dirty: bool
    remote_url: str  # "" without a remote


def find_root(directory: Path) -> Path:
    """The top of the git work tree holding `directory`, or `directory` itself outside git."""
    completed = _run_git(["rev-parse", "--show-toplevel"], cwd=directory, check=False)
    if completed.returncode == 0 and completed.stdout.strip():
        return Path(completed.stdout.strip())
    return directory


def snapshot_working_tree(root: Path, scratch: Path) -> Snapshot:
    """Commit the work tree at `root` (tracked files as they are now, untracked files that are
    not ignored) into a bare repository made in `scratch`.

    Inside a git repository the new objects go to `scratch` only: the snapshot repository
    borrows the real one's objects (alternates), and `git add` runs on a copy of the index with
    its object directory redirected there. Outside git the directory is committed whole (what its
    .gitignore files allow).
    """
    if shutil.which("git") is None:
        raise SnapshotError("git is not installed: it is needed to copy the working tree")
    root = root.resolve()
    store = scratch / "snapshot.git"
    _run_git(["init", "--bare", "--quiet", str(store)], cwd=scratch)
    objects = store / "objects"
    inside = _run_git(["rev-parse", "--is-inside-work-tree"], cwd=root, check=False)
    in_repository = inside.returncode == 0 and inside.stdout.strip() == "true"
    index = scratch / "index"
    env = {"GIT_INDEX_FILE": str(index), "GIT_OBJECT_DIRECTORY": str(objects)}
    head_sha = ref = remote_url = ""
    if in_repository:
        real_objects = _git_path(root, "objects")
        (objects / "info" / "alternates").write_text(f"{real_objects}\n")
        real_index = _git_path(root, "index")
        if real_index.exists():
            # Its stat data spares hashing every unchanged file again.
            shutil.copyfile(real_index, index)
        head = _run_git(
            ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], cwd=root, check=False
        )
        head_sha = head.stdout.strip() if head.returncode == 0 else ""
        ref = _current_ref(root)
        remote_url = _remote_url(root)
    else:
        env |= {"GIT_DIR": str(store), "GIT_WORK_TREE": str(root)}
    _run_git(["add", "--all", "--", "."], cwd=root, env=env)
    tree = _run_git(["write-tree"], cwd=root, env=env).stdout.strip()
    head_tree = ""
    if head_sha:
        head_tree = _run_git(["rev-parse", f"{head_sha}^{{tree}}"], cwd=root).stdout.strip()
    dirty = tree != head_tree
    if dirty:
        parents = ["-p", head_sha] if head_sha else []
        message = ["-m", f"cicd exec: the working tree of {root}"]
        sha = _run_git(
            ["commit-tree", tree, *parents, *message], cwd=root, env=env | _IDENTITY
        ).stdout.strip()
    else:
        sha = head_sha
    _copy_refs(root if in_repository else None, store, ref, sha)
    return Snapshot(
        root=root,
        checkout=CheckoutSource(repository=str(store), sha=sha, ref=ref),
        head_sha=head_sha,
        ref=ref,
        dirty=dirty,
        remote_url=remote_url,
    )


_LOCATION_VARIABLES = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_COMMON_DIR",
        "GIT_NAMESPACE",
    }
)
_IDENTITY = {
    "GIT_AUTHOR_NAME": "cicd exec",
    "GIT_AUTHOR_EMAIL": "cicd-exec@localhost",
    "GIT_COMMITTER_NAME": "cicd exec",
    "GIT_COMMITTER_EMAIL": "cicd-exec@localhost",
}


def _copy_refs(root: Path | None, store: Path, ref: str, sha: str) -> None:
    """Branches and tags into the snapshot repository, so `actions/checkout` with a `ref` and
    `origin/<branch>` work; the current branch points at the snapshot."""
    lines: list[str] = []
    if root is not None:
        listing = _run_git(
            ["for-each-ref", "--format=%(objectname) %(refname)", "refs/heads", "refs/tags"],
            cwd=root,
        ).stdout
        for line in listing.splitlines():
            object_name, _, name = line.partition(" ")
            if name and name != ref:
                lines.append(f"update {name} {object_name}\n")
    if ref:
        lines.append(f"update {ref} {sha}\n")
    if lines:
        _run_git(["update-ref", "--stdin"], cwd=store, input="".join(lines))


def _git_path(root: Path, name: str) -> Path:
    text = _run_git(["rev-parse", "--git-path", name], cwd=root).stdout.strip()
    return (root / text).resolve()


def _current_ref(root: Path) -> str:
    branch = _run_git(["symbolic-ref", "--quiet", "HEAD"], cwd=root, check=False)
    if branch.returncode == 0:
        return branch.stdout.strip()
    tag = _run_git(["describe", "--tags", "--exact-match", "HEAD"], cwd=root, check=False)
    return f"refs/tags/{tag.stdout.strip()}" if tag.returncode == 0 else ""


def _remote_url(root: Path) -> str:
    remotes = _run_git(["remote"], cwd=root, check=False).stdout.split()
    if not remotes:
        return ""
    name = "origin" if "origin" in remotes else remotes[0]
    return _run_git(["remote", "get-url", name], cwd=root, check=False).stdout.strip()


_REPOSITORY_IN_URL = re.compile(r"[/:](?P<owner>[^/:]+)/(?P<name>[^/]+?)(?:\.git)?/*$")


def repository_name(remote_url: str, root: Path) -> str:
    """`owner/name` from the remote URL (any host, https or scp-like), else `local/<dir>`."""
    match = _REPOSITORY_IN_URL.search(remote_url)
    if match:
        return f"{match['owner']}/{match['name']}"
    return f"local/{root.name or 'workspace'}"


def github_context(
    snapshot: Snapshot, *, event_name: str, actor: str, workflow_name: str, event: Mapping
) -> dict[str, Any]:
    """The `github` context of a run of the working tree (what `runs.scheduling.run_contexts`
    gives on the server)."""
    repository = repository_name(snapshot.remote_url, snapshot.root)
    sha = snapshot.head_sha or snapshot.checkout.sha
    return {
        "event_name": event_name,
        "ref": snapshot.ref,
        "ref_name": ref_name(snapshot.ref),
        "sha": sha,
        "repository": repository,
        "repository_owner": repository.split("/", 1)[0],
        "run_id": "1",
        "run_number": "1",
        "run_attempt": "1",
        "actor": actor,
        "workflow": workflow_name,
        "event": dict(event),
        "ref_type": "tag" if snapshot.ref.startswith("refs/tags/") else "branch",
        "head_ref": "",
        "base_ref": "",
    }


def _run_git(
    args: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    # The caller's own GIT_DIR & co. (inside a git hook, say) must not redirect us.
    full_env = {k: v for k, v in os.environ.items() if k not in _LOCATION_VARIABLES}
    full_env.update({"LC_ALL": "C", "GIT_TERMINAL_PROMPT": "0"})
    full_env.update(env or {})
    try:
        completed = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=full_env,
            input=input,
            stdin=None if input is not None else subprocess.DEVNULL,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
    except OSError as error:
        raise SnapshotError(f"cannot run git: {error}") from None
    if check and completed.returncode != 0:
        complaint = " ".join(completed.stderr.split())[:600] or "no reason given"
        raise SnapshotError(f"git {args[0]} failed in {cwd}: {complaint}")
    return completed
