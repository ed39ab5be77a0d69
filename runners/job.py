"""Runs the steps of one job on a backend (Docker container or local sandbox).

The step semantics live here once, so both executors behave the same: expression evaluation with the
`steps`/`env` contexts, step files, `if:` with status functions, continue-on-error, timeouts,
cancellation, masking, outputs. A backend only knows how to start, run one command, move files,
check out the repository, and clean up.

Local composite actions (`uses: ./path`) run their steps through the same `_run_step` inside the
step that uses them, with a `_JobState` of their own (see `_run_local_action`).

The built-in actions run here too: checkout, upload/download-artifact (runners.artifacts), the
cache actions (runners.caches) and `cicd/deploy` (runners.deploy: the deployment runs in the
worker process and reports to the recorder of the job's environment). `actions/cache` owes a
save at the end of the job: after the last step, before the backend closes, the driver runs
those saves (GitHub's post steps), newest first. `hashFiles()` works in every step-level
expression, over the workspace at that moment.
"""

from __future__ import annotations

import logging
import random
import shlex
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from pipelines.errors import ExpressionError
from pipelines.expressions import EvalOptions, evaluate_condition, render, to_string
from runners.artifacts import ArtifactError, ArtifactStore, run_download, run_upload
from runners.caches import (
    CACHE_ACTIONS,
    CACHE_SAVE,
    CacheError,
    CacheStore,
    PendingSave,
    TreeEntry,
    hash_files,
    run_restore,
    run_save,
    save_cache,
)
from runners.composite import (
    MAX_ACTION_DEPTH,
    LocalActionError,
    action_inputs,
    action_steps,
    is_local_action,
    load_local_action,
)
from runners.deploy import CANCELLED as DEPLOY_CANCELLED
from runners.deploy import (
    DEPLOY_ACTION,
    DEPLOY_INPUTS,
    DeployError,
    DeploymentRecorderFactory,
    deploy,
    parse_deploy_inputs,
    service_url,
)
from runners.deploy import SUCCESS as DEPLOY_SUCCESS
from runners.events import (
    CANCELLED,
    FAILURE,
    SKIPPED,
    SUCCESS,
    TIMED_OUT,
    CancelToken,
    EventSink,
    JobResult,
    StepResult,
)
from runners.logs import LogLine, SecretMasker, StepOutput
from runners.spec import CheckoutSource, JobSpec, StepSpec
from runners.stepfiles import (
    STEP_FILE_NAMES,
    STEP_FILE_VARIABLES,
    StepFileError,
    parse_assignments,
    parse_path_additions,
)

log = logging.getLogger(__name__)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# GitHub's shells: {0} is the script file.
SHELLS = {
    "bash": "bash --noprofile --norc -eo pipefail {0}",
    "sh": "sh -e {0}",
    "python": "python3 {0}",
    "pwsh": "pwsh -command . '{0}'",
    "powershell": "pwsh -command . '{0}'",
}
SCRIPT_SUFFIX = {"python": ".py", "pwsh": ".ps1", "powershell": ".ps1"}
ARTIFACT_ACTIONS = ("actions/upload-artifact", "actions/download-artifact")


class JobSetupError(Exception):
    """The job could not start for a reason the user can act on (image missing, service down)."""


@dataclass(frozen=True, slots=True)
class CommandResult:
    exit_code: int | None
    timed_out: bool = False
    cancelled: bool = False


class Backend(Protocol):
    workspace: str  # the workspace path as steps see it
    temp_dir: str  # RUNNER_TEMP as steps see it
    os_name: str  # runner.os: Linux
    home: str  # HOME as steps see it: `~` in actions/cache paths

    def start(self) -> None: ...

    def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        on_output: Callable[[str, bytes], None],
        deadline: float | None,
        cancel: CancelToken,
    ) -> CommandResult: ...

    def write_file(self, path: str, data: bytes) -> None: ...

    def read_file(self, path: str) -> bytes: ...

    def has_command(self, name: str) -> bool: ...

    def checkout(self, source: CheckoutSource, subdir: str, *, fetch_depth: int = 1) -> None: ...

    # For the artifact actions: a host directory showing the workspace (at least the given
    # workspace-relative paths), and unpacking a stored artifact into a directory of the job.
    def workspace_view(self, roots: Sequence[str]) -> AbstractContextManager[Path]: ...

    def extract_archive(self, archive: BinaryIO, target: str) -> tuple[int, int]: ...

    # For the cache actions (see runners.caches.TreeEntry): the entries under absolute paths of
    # the job, symbolic links not followed; and writing entries named by absolute paths, each
    # inside the workspace or HOME, without writing through a link out of those.
    def read_tree(self, paths: Sequence[str]) -> Generator[TreeEntry, None, None]: ...

    def write_tree(self, entries: Iterable[TreeEntry]) -> None: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _ActionScope:
    """Where the steps of a local composite action run (inside the job step that uses it)."""

    uses: str  # ./path, as the step wrote it
    path: str  # the action's directory as steps see it: github.action_path
    inputs: Mapping[str, str]  # the `inputs` context
    env: Mapping[str, str]  # `env` of the step(s) that used the action, already evaluated
    depth: int  # 1 for an action used by a job step, 2 for one used by that action...
    limit: str  # what bounds the action's time, for messages: "timeout-minutes: 5"
    cancel_exempt: bool  # started after the cancel request: its steps run to their end


@dataclass(slots=True)
class _JobState:
    """What changes while a job runs; kept here, never on the backend or module globals.

    The steps of a composite action get a state of their own (`action` set): their own `steps`
    context and status, sharing the job's env and path files.
    """

    status: str = SUCCESS  # success | failure | cancelled: what success()/failure() look at
    timed_out: bool = False
    env_from_files: dict[str, str] = field(default_factory=dict)
    path_additions: list[str] = field(default_factory=list)
    steps: dict[str, dict[str, Any]] = field(default_factory=dict)
    results: list[StepResult] = field(default_factory=list)
    action: _ActionScope | None = None
    # (step index, save) of each actions/cache step that owes a save at the end of the job;
    # shared with composite actions, like the env and path files.
    cache_saves: list[tuple[int, PendingSave]] = field(default_factory=list)


@dataclass
class JobDriver:
    spec: JobSpec
    backend: Backend
    sink: EventSink
    cancel: CancelToken = field(default_factory=CancelToken)
    step_output_cap: int = 10 * 1024 * 1024
    clock: Callable[[], float] = time.time
    # Where upload-artifact puts and download-artifact finds artifacts; None: steps using them fail.
    artifacts: ArtifactStore | None = None
    # Where the cache actions look up and save entries; None: steps using them fail.
    caches: CacheStore | None = None
    # cicd/deploy: the recorder of a deployment to an environment, and where the engine keeps
    # each service's HAProxy and state (runners.deploy); None: deploy steps fail.
    deployments: DeploymentRecorderFactory | None = None
    deploy_state_dir: Path | None = None

    def run(self) -> JobResult:
        spec = self.spec
        self.masker = SecretMasker(v for v in spec.secrets.values() if v)
        state = _JobState()
        self.sink.job_started()
        job_deadline = time.monotonic() + spec.timeout_minutes * 60
        try:
            try:
                self.backend.start()
            except JobSetupError as error:
                self._system_line(None, f"Error: {error}")
                return self._finish(FAILURE, state, error=str(error))
            self._default_shell = self._pick_default_shell()
            checkout_error = self._automatic_checkout()
            if checkout_error:
                return self._finish(FAILURE, state, error=checkout_error)
            for step in spec.steps:
                self._run_step(step, state, job_deadline)
            self._save_caches(state)
            conclusion = self._job_conclusion(state)
            return self._finish(conclusion, state)
        finally:
            try:
                self.backend.close()
            except Exception:  # cleanup must not hide the job's result; the reaper retries
                log.exception("cleanup of job %s failed", spec.job_id)

    def _automatic_checkout(self) -> str:
        """Put the triggering commit in the workspace before the first step, as GitLab and Jenkins
        do. A job that has its own `actions/checkout` step gets exactly that step instead (as on
        GitHub, with its ref, path and fetch-depth), so GitHub workflows behave unchanged."""
        source = self.spec.checkout
        if source is None or any(_is_checkout(step.uses) for step in self.spec.steps):
            return ""
        shown = f"{source.sha[:12]}" + (f" ({source.ref})" if source.ref else "")
        self._system_line(None, f"Checking out {shown} into the workspace")
        try:
            self.backend.checkout(source, "", fetch_depth=1)
        except JobSetupError as error:
            self._system_line(None, f"Error: {error}")
            return str(error)
        return ""

    # ---------------------------------------------------------------- steps

    def _run_step(self, step: StepSpec, state: _JobState, job_deadline: float) -> None:
        """Run one step and record its result in `state`. For the steps of a composite action,
        `job_deadline` is the deadline of the step that uses the action."""
        cancel_exempt = state.action is not None and state.action.cancel_exempt
        if self.cancel.cancelled and state.status != CANCELLED and not cancel_exempt:
            state.status = CANCELLED
        if time.monotonic() >= job_deadline and not state.timed_out:
            state.timed_out = True
            state.status = CANCELLED  # as on GitHub: the rest runs only with always()/cancelled()
        try:
            contexts = self._contexts(state, step)
            should_run = evaluate_condition(step.if_condition, contexts, self._options(state))
        except ExpressionError as error:
            self._announce(step, state, step.name)
            self._record(step, state, self._failed(step, error.message), {})
            return
        if not should_run:
            result = StepResult(index=step.index, outcome=SKIPPED, conclusion=SKIPPED)
            self._record(step, state, result, {}, announce=False)
            return

        self._announce(step, state, self._step_name(step, contexts))
        started = self.clock()
        attempt = 1
        while True:
            outcome, exit_code, error, outputs, summary = self._attempt(
                step, state, contexts, job_deadline
            )
            delay = self._retry_delay(step, attempt, outcome, job_deadline)
            if delay is None:
                break
            self._system_line(
                step.index,
                f"Attempt {attempt} of {step.retry_max_attempts} ended in {outcome}; "
                f"retrying in {delay:.1f} s",
            )
            if self.cancel.wait(delay):
                break
            attempt += 1
        conclusion = outcome
        if outcome in (FAILURE, TIMED_OUT) and self._continue_on_error(step, contexts):
            conclusion = SUCCESS
        result = StepResult(
            index=step.index,
            outcome=outcome,
            conclusion=conclusion,
            exit_code=exit_code,
            outputs=outputs,
            started_at=started,
            finished_at=self.clock(),
            error=error,
            summary=summary,
        )
        self._record(step, state, result, outputs)

    def _attempt(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], job_deadline: float
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        try:
            return self._execute(step, state, contexts, job_deadline)
        except (ExpressionError, StepFileError, JobSetupError) as problem:
            # (not `as error`: Python unbinds the `as` name when the except block ends)
            message = problem.message if isinstance(problem, ExpressionError) else str(problem)
            self._system_line(step.index, f"Error: {message}")
            return FAILURE, None, message, {}, ""

    def _retry_delay(
        self, step: StepSpec, attempt: int, outcome: str, job_deadline: float
    ) -> float | None:
        """Seconds to wait before the step's next attempt (the `retry` extension), or None when
        it must not be retried: it did not fail, attempts are used up, or the job is ending."""
        if outcome not in (FAILURE, TIMED_OUT) or attempt >= step.retry_max_attempts:
            return None
        if self.cancel.cancelled:
            return None
        base = min(step.retry_backoff_seconds * 2 ** (attempt - 1), step.retry_max_backoff_seconds)
        delay = base * (1 + random.uniform(0, 0.25))  # jitter: retries of many jobs spread out
        if time.monotonic() + delay >= job_deadline:
            return None
        return delay

    def _execute(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], job_deadline: float
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        if step.uses:
            return self._run_action(step, state, contexts, job_deadline)
        step_dir = f"{self.backend.temp_dir}/_step_{step.index}"
        files = {name: f"{step_dir}/{name}" for name in STEP_FILE_NAMES}
        for path in files.values():
            self.backend.write_file(path, b"")

        shell = self._render_text(step.shell, contexts) or self.spec.default_shell
        shell = shell or self._default_shell
        template = SHELLS.get(shell, shell if "{0}" in (shell or "") else f"{shell} {{0}}")
        script_path = f"{step_dir}/script{SCRIPT_SUFFIX.get(shell, '.sh')}"
        script = to_string(render(step.run or "", contexts, self._options(state)))
        self.backend.write_file(script_path, script.encode())
        argv = [part.replace("{0}", script_path) for part in shlex.split(template)]

        env = self._step_env(step, state, contexts)
        for name, path in files.items():
            for variable in STEP_FILE_VARIABLES[name]:
                env[variable] = path
        # As on GitHub, a workflow's `defaults.run` does not reach into composite actions.
        default_directory = None if state.action else self.spec.default_working_directory
        cwd = self._working_directory(step, contexts, default_directory)
        deadline = self._step_deadline(step, contexts, job_deadline)

        output = StepOutput(self.masker, cap_bytes=self.step_output_cap, clock=self.clock)

        def on_output(stream: str, data: bytes) -> None:
            events = output.feed(stream, data)
            if events:
                self.sink.log(step.index, events)

        # A step that starts after the cancel request (an `always()` or `cancelled()` clean-up
        # step) runs to its end, as on GitHub: only its timeout stops it.
        cancel = CancelToken() if self.cancel.cancelled else self.cancel
        command = self.backend.run(
            argv, env=env, cwd=cwd, on_output=on_output, deadline=deadline, cancel=cancel
        )
        tail = output.close()
        if tail:
            self.sink.log(step.index, tail)

        outputs, summary = self._read_step_files(step, state, files)
        if command.cancelled:
            self._system_line(step.index, "The step was cancelled.")
            return CANCELLED, command.exit_code, "cancelled", outputs, summary
        if command.timed_out:
            minutes = self._timeout_text(step, state, contexts, job_deadline)
            self._system_line(step.index, f"Error: the step timed out ({minutes}).")
            if time.monotonic() >= job_deadline:
                state.timed_out = True
            return TIMED_OUT, command.exit_code, f"timed out ({minutes})", outputs, summary
        if command.exit_code != 0:
            message = f"Process completed with exit code {command.exit_code}."
            self._system_line(step.index, f"Error: {message}")
            return FAILURE, command.exit_code, message, outputs, summary
        return SUCCESS, 0, "", outputs, summary

    def _run_action(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], job_deadline: float
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        if _is_checkout(step.uses):
            return self._checkout(step, contexts)
        if is_local_action(step.uses):
            return self._run_local_action(step, state, contexts, job_deadline)
        action = (step.uses or "").split("@", 1)[0].lower()
        if action in ARTIFACT_ACTIONS:
            return self._artifact_step(step, contexts, action)
        if action in CACHE_ACTIONS:
            return self._cache_step(step, state, contexts, action)
        if action == DEPLOY_ACTION:
            return self._deploy_step(step, state, contexts, job_deadline)
        message = (
            f"'{step.uses}' is not available on this server yet: only actions/checkout, "
            "actions/upload-artifact, actions/download-artifact, actions/cache (and "
            "actions/cache/restore, actions/cache/save), cicd/deploy and local composite actions "
            "(./path) run in this version"
        )
        self._system_line(step.index, f"Error: {message}")
        return FAILURE, None, message, {}, ""

    def _checkout(
        self, step: StepSpec, contexts: dict[str, Any]
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        with_args = {k: self._render_value(str(v), contexts) for k, v in step.with_args.items()}
        source = self.spec.checkout
        if source is None:
            message = "there is no repository to check out for this job"
            self._system_line(step.index, f"Error: {message}")
            return FAILURE, None, message, {}, ""
        if with_args.get("ref"):
            source = CheckoutSource(source.repository, with_args["ref"], with_args["ref"])
        subdir = with_args.get("path", "").strip("/")
        depth = with_args.get("fetch-depth", "").strip() or "1"
        if not depth.isdigit():
            message = f"fetch-depth must be a whole number (0: all history), got {depth!r}"
            self._system_line(step.index, f"Error: {message}")
            return FAILURE, None, message, {}, ""
        shown = f"{source.sha[:12]}" + (f" ({source.ref})" if source.ref else "")
        self._system_line(step.index, f"Checking out {shown} into {subdir or 'the workspace'}")
        self.backend.checkout(source, subdir, fetch_depth=int(depth))
        return SUCCESS, 0, "", {}, ""

    def _artifact_step(
        self, step: StepSpec, contexts: dict[str, Any], action: str
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        """actions/upload-artifact and actions/download-artifact (runners.artifacts)."""
        with_args = {k: self._render_value(v, contexts) for k, v in step.with_args.items()}
        try:
            if self.artifacts is None or not hasattr(self.backend, "workspace_view"):
                raise ArtifactError(f"{action} is not available where this job runs")
            run = run_upload if action == "actions/upload-artifact" else run_download
            outputs = run(
                self.backend,  # type: ignore[arg-type]
                self.artifacts,
                with_args,
                lambda text: self._system_line(step.index, text),
            )
        except ArtifactError as error:
            self._system_line(step.index, f"Error: {error}")
            return FAILURE, None, str(error), {}, ""
        return SUCCESS, 0, "", outputs, ""

    def _cache_step(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], action: str
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        """actions/cache, actions/cache/restore and actions/cache/save (runners.caches)."""
        with_args = {k: self._render_value(v, contexts) for k, v in step.with_args.items()}

        def say(text: str) -> None:
            self._system_line(step.index, text)

        try:
            if self.caches is None:
                raise CacheError(f"{action} is not available where this job runs")
            if action == CACHE_SAVE:
                outputs = run_save(self.backend, self.caches, with_args, say)
            else:
                outputs, pending = run_restore(
                    self.backend, self.caches, with_args, say, action=action
                )
                if pending is not None:
                    state.cache_saves.append((step.index, pending))
        except CacheError as error:
            say(f"Error: {error}")
            return FAILURE, None, str(error), {}, ""
        return SUCCESS, 0, "", outputs, ""

    def _deploy_step(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], job_deadline: float
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        """cicd/deploy (runners.deploy): deploys to the job's environment from this process
        (the job's container, if any, only waits). The step fails unless the deployment
        succeeded; its outputs say how it ended either way."""
        with_args = {k: self._render_value(v, contexts) for k, v in step.with_args.items()}

        def say(text: str) -> None:
            self._system_line(step.index, text)

        unexpected = [name for name in with_args if name not in DEPLOY_INPUTS]
        if unexpected:
            shown = ", ".join(repr(name) for name in unexpected)
            say(f"Warning: Unexpected input(s) {shown}, valid inputs are {list(DEPLOY_INPUTS)}")
        environment = self.spec.environment
        try:
            if not environment:
                raise DeployError(
                    f"{DEPLOY_ACTION} deploys to the job's environment: give the job one "
                    "(`environment: <name>`)"
                )
            if self.deployments is None or self.deploy_state_dir is None:
                raise DeployError(f"{DEPLOY_ACTION} is not available where this job runs")
            repository = to_string((contexts.get("github") or {}).get("repository"))
            default_service = f"{repository}-{environment}" if repository else environment
            request = parse_deploy_inputs(with_args, default_service=default_service)
        except DeployError as error:
            say(f"Error: {error}")
            return FAILURE, None, str(error), {}, ""
        deadline = self._step_deadline(step, contexts, job_deadline)
        # As for a run step: one that starts after the cancel request runs to its end.
        cancel = CancelToken() if self.cancel.cancelled else self.cancel
        try:
            recorder = self.deployments(environment)
            result = deploy(
                request,
                recorder,
                state_dir=self.deploy_state_dir,
                cancel=cancel,
                say=say,
                deadline=deadline,
            )
        except Exception as error:  # the recorder's storage failed: the step fails, not the job
            log.exception("cicd/deploy of job %s failed", self.spec.job_id)
            say(f"Error: the deployment could not be recorded: {error}")
            return FAILURE, None, f"the deployment could not be recorded: {error}", {}, ""
        outputs = {
            "outcome": result.outcome,
            "image-digest": result.image_digest,
            "url": service_url(request.listen),
        }
        if result.outcome == DEPLOY_SUCCESS:
            return SUCCESS, 0, "", outputs, ""
        if result.outcome == DEPLOY_CANCELLED:
            return CANCELLED, None, result.reason or "cancelled", outputs, ""
        message = f"deployment {result.outcome.replace('_', ' ')}: {result.reason}"
        if time.monotonic() >= deadline:
            if time.monotonic() >= job_deadline:
                state.timed_out = True
            return TIMED_OUT, None, message, outputs, ""
        return FAILURE, None, message, outputs, ""

    def _save_caches(self, state: _JobState) -> None:
        """The saves the actions/cache steps owe (GitHub's post steps), newest step first: only
        while the job has succeeded, unless save-always (never after a cancel)."""
        store = self.caches
        if store is None:
            return
        for index, pending in reversed(state.cache_saves):

            def say(text: str, index: int = index) -> None:
                self._system_line(index, text)

            if self.cancel.cancelled:
                say(f"Cache not saved (key {pending.key}): the job was cancelled")
                continue
            if state.status != SUCCESS and not pending.save_always:
                say(f"Cache not saved (key {pending.key}): the job did not succeed")
                continue
            save_cache(self.backend, store, pending.key, pending.paths, pending.version, say)

    # ---------------------------------------------------------------- local composite actions

    def _run_local_action(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], job_deadline: float
    ) -> tuple[str, int | None, str, dict[str, str], str]:
        """Run the steps of the composite action `step.uses` (./path) as this one step.

        They have their own `steps` context and status, share the job's env and path files,
        log to this step, and end when this step's deadline passes. The step's outputs are the
        action's `outputs.<id>.value`, evaluated over those steps.
        """
        uses = step.uses or ""
        depth = state.action.depth + 1 if state.action else 1
        try:
            if depth > MAX_ACTION_DEPTH:
                raise LocalActionError(
                    f"'{uses}' would be local action {depth} levels deep; local actions can "
                    f"be nested {MAX_ACTION_DEPTH} levels deep at most (does an action use "
                    "itself?)"
                )
            action, directory = load_local_action(self.backend, uses)
            given = {name: self._render_value(v, contexts) for name, v in step.with_args.items()}
            inputs, unexpected = action_inputs(
                action, uses, given, lambda text: self._render_value(text, contexts)
            )
        except LocalActionError as error:
            self._system_line(step.index, f"Error: {error}")
            for line in error.details[1:]:  # the first one is in the message
                self._system_line(step.index, f"Error: {line}")
            return FAILURE, None, str(error), {}, ""
        if unexpected:
            self._system_line(
                step.index,
                f"Warning: unexpected input(s) {', '.join(map(repr, unexpected))}; "
                f"the inputs of {uses} are: {', '.join(action.inputs) or 'none'}",
            )
        deadline, limit = self._deadline_and_limit(step, state, contexts, job_deadline)
        inherited_env = dict(state.action.env) if state.action else {}
        inherited_env.update({name: contexts["env"][name] for name in step.env})
        scope = _ActionScope(
            uses=uses,
            path=directory,
            inputs=inputs,
            env=inherited_env,
            depth=depth,
            limit=limit,
            cancel_exempt=self.cancel.cancelled,
        )
        nested = _JobState(
            env_from_files=state.env_from_files,
            path_additions=state.path_additions,
            action=scope,
            cache_saves=state.cache_saves,
        )
        steps = action_steps(action, step.index)
        for nested_step in steps:
            self._run_step(nested_step, nested, deadline)
        outcome, exit_code, error = self._action_outcome(uses, steps, nested)
        if outcome == TIMED_OUT and time.monotonic() >= job_deadline:
            state.timed_out = True
        outputs = self._action_outputs(uses, action.outputs, nested)
        if isinstance(outputs, str) and outcome == SUCCESS:
            self._system_line(step.index, f"Error: {outputs}")
            outcome, error = FAILURE, outputs
        elif isinstance(outputs, str):
            self._system_line(step.index, f"Warning: {outputs}")
        summary = "".join(result.summary for result in nested.results)
        return outcome, exit_code, error, outputs if isinstance(outputs, dict) else {}, summary

    def _action_outcome(
        self, uses: str, steps: tuple[StepSpec, ...], nested: _JobState
    ) -> tuple[str, int | None, str]:
        """The outcome of a composite action from its steps', with the first failure's error."""
        failed = next(
            (
                (spec, result)
                for spec, result in zip(steps, nested.results, strict=True)
                if result.conclusion in (FAILURE, TIMED_OUT, CANCELLED)
            ),
            None,
        )
        if nested.timed_out or any(r.conclusion == TIMED_OUT for r in nested.results):
            outcome = TIMED_OUT
        elif nested.status == CANCELLED:
            outcome = CANCELLED
        elif nested.status == FAILURE:
            outcome = FAILURE
        else:
            return SUCCESS, 0, ""
        if failed is None:
            return outcome, None, "cancelled" if outcome == CANCELLED else f"{uses} timed out"
        spec, result = failed
        if is_local_action(spec.uses):
            return outcome, result.exit_code, result.error  # already names the innermost step
        return outcome, result.exit_code, f"step '{spec.name}' of {uses} failed: {result.error}"

    def _action_outputs(
        self, uses: str, outputs: Mapping[str, Any], nested: _JobState
    ) -> dict[str, str] | str:
        """The action's outputs over its steps; a message instead when one cannot be evaluated."""
        contexts = self._contexts(nested, None)
        values: dict[str, str] = {}
        for name, output in outputs.items():
            try:
                values[name] = to_string(render(output.value, contexts, self._step_options()))
            except ExpressionError as error:
                return f"output '{name}' of {uses}: {error.message}"
        return values

    def _deadline_and_limit(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], job_deadline: float
    ) -> tuple[float, str]:
        """The deadline of a step, and what sets it, for messages: its own timeout-minutes,
        that of a step using the action it belongs to, or the job's."""
        deadline = self._step_deadline(step, contexts, job_deadline)
        minutes = self._minutes(step.timeout_minutes, contexts)
        if minutes is not None and deadline < job_deadline:
            return deadline, f"timeout-minutes: {minutes:g}"
        if state.action is not None:
            return deadline, state.action.limit
        return deadline, f"job timeout-minutes: {self.spec.timeout_minutes:g}"

    # ---------------------------------------------------------------- helpers

    def _announce(self, step: StepSpec, state: _JobState, name: str) -> None:
        """A job step starts; a step of a composite action says so in its job step's log."""
        if state.action is None:
            self.sink.step_started(step.index, name)
        else:
            self._system_line(step.index, f"{state.action.uses}: {name}")

    def _record(
        self,
        step: StepSpec,
        state: _JobState,
        result: StepResult,
        outputs: Mapping[str, str],
        *,
        announce: bool = True,
    ) -> None:
        state.results.append(result)
        if step.id:
            state.steps[step.id] = {
                "outputs": dict(outputs),
                "outcome": result.outcome,
                "conclusion": result.conclusion,
            }
        if result.conclusion in (FAILURE, TIMED_OUT) and state.status == SUCCESS:
            state.status = FAILURE
        if result.outcome == CANCELLED:
            state.status = CANCELLED
        if state.action is None:  # a composite action's steps finish as part of their job step
            self.sink.step_finished(result)

    def _failed(self, step: StepSpec, message: str) -> StepResult:
        self._system_line(step.index, f"Error: {message}")
        now = self.clock()
        return StepResult(
            index=step.index,
            outcome=FAILURE,
            conclusion=FAILURE,
            error=message,
            started_at=now,
            finished_at=now,
        )

    def _job_conclusion(self, state: _JobState) -> str:
        if state.timed_out:
            return TIMED_OUT
        if self.cancel.cancelled:
            return CANCELLED
        return state.status

    def _finish(self, conclusion: str, state: _JobState, *, error: str = "") -> JobResult:
        outputs = self._job_outputs(state)
        result = JobResult(
            conclusion=conclusion, outputs=outputs, error=error, steps=tuple(state.results)
        )
        self.sink.job_finished(result)
        return result

    def _job_outputs(self, state: _JobState) -> dict[str, str]:
        contexts = self._contexts(state, None)
        outputs: dict[str, str] = {}
        for name, template in self.spec.outputs.items():
            try:
                value = to_string(render(str(template), contexts))
            except ExpressionError as error:
                self._system_line(None, f"Warning: job output '{name}': {error.message}")
                continue
            if self.masker.mask(value) != value:
                # As on GitHub: an output that would carry a secret to other jobs is dropped.
                self._system_line(None, f"Warning: skip output '{name}': it may contain a secret")
                continue
            outputs[name] = value
        return outputs

    def _contexts(self, state: _JobState, step: StepSpec | None) -> dict[str, Any]:
        contexts = {k: v for k, v in self.spec.contexts.items()}
        contexts["secrets"] = dict(self.spec.secrets)
        contexts["steps"] = {k: dict(v) for k, v in state.steps.items()}
        contexts["runner"] = {
            "os": self.backend.os_name,
            "arch": "X64",
            "temp": self.backend.temp_dir,
            "workspace": self.backend.workspace,
            "name": "cicd",
        }
        contexts["job"] = {"status": state.status}
        github = dict(contexts.get("github") or {})
        github.setdefault("workspace", self.backend.workspace)
        contexts["github"] = github
        env = self._job_env(state, contexts)
        if state.action is not None:
            # As on GitHub, an action sees its inputs, and secrets only through them.
            env.update(state.action.env)
            contexts["inputs"] = dict(state.action.inputs)
            contexts.pop("secrets", None)
            github["action_path"] = state.action.path
        if step is not None:
            scoped = {**contexts, "env": env}
            for name, value in step.env.items():
                env[name] = self._render_value(value, scoped)
        contexts["env"] = env
        return contexts

    def _job_env(self, state: _JobState, contexts: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        for name, value in self.spec.env.items():
            env[name] = self._render_value(value, {**contexts, "env": env})
        env.update(state.env_from_files)
        return env

    def _render_value(self, value: Any, contexts: Mapping[str, Any]) -> str:
        if isinstance(value, str):
            return to_string(render(value, contexts, self._step_options()))
        return to_string(value)

    def _render_text(self, value: str | None, contexts: Mapping[str, Any]) -> str | None:
        if value is None:
            return None
        return to_string(render(value, contexts, self._step_options()))

    def _step_env(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any]
    ) -> dict[str, str]:
        github = contexts.get("github") or {}
        env = {"PATH": DEFAULT_PATH, "HOME": "/root", "CI": "true"}
        env.update(self.spec.container_env)
        for key in ("sha", "ref", "ref_name", "repository", "run_id", "event_name", "actor"):
            value = to_string(github.get(key))
            env[f"GITHUB_{key.upper()}"] = value
            env[f"CICD_{key.upper()}"] = value
        for key in ("run_number", "run_attempt", "base_ref", "head_ref", "job", "server_url"):
            env[f"GITHUB_{key.upper()}"] = to_string(github.get(key))
        env.update(
            {
                "GITHUB_ACTIONS": "true",
                "CICD": "true",
                "GITHUB_WORKSPACE": self.backend.workspace,
                "CICD_WORKSPACE": self.backend.workspace,
                "RUNNER_TEMP": self.backend.temp_dir,
                "RUNNER_OS": self.backend.os_name,
                "GITHUB_STEP_INDEX": str(step.index),
            }
        )
        if state.action is not None:
            env["GITHUB_ACTION_PATH"] = state.action.path
        env.update(contexts["env"])
        if state.path_additions:
            env["PATH"] = ":".join([*reversed(state.path_additions), env["PATH"]])
        return env

    def _working_directory(
        self, step: StepSpec, contexts: dict[str, Any], default: str | None
    ) -> str:
        chosen = self._render_text(step.working_directory, contexts) or default
        if not chosen:
            return self.backend.workspace
        if chosen.startswith("/"):
            return chosen
        return f"{self.backend.workspace}/{chosen}"

    def _step_deadline(
        self, step: StepSpec, contexts: dict[str, Any], job_deadline: float
    ) -> float:
        minutes = self._minutes(step.timeout_minutes, contexts)
        if minutes is None:
            return job_deadline
        return min(job_deadline, time.monotonic() + minutes * 60)

    def _timeout_text(
        self, step: StepSpec, state: _JobState, contexts: dict[str, Any], job_deadline: float
    ) -> str:
        minutes = self._minutes(step.timeout_minutes, contexts)
        if time.monotonic() >= job_deadline - 0.5 or minutes is None:
            if state.action is not None:
                return state.action.limit
            return f"job timeout-minutes: {self.spec.timeout_minutes:g}"
        return f"timeout-minutes: {minutes:g}"

    def _minutes(self, value: float | str | None, contexts: dict[str, Any]) -> float | None:
        if value is None:
            return None
        if isinstance(value, str):
            rendered = render(value, contexts, self._step_options())
            try:
                return float(rendered)
            except (TypeError, ValueError):
                raise ExpressionError(
                    f"timeout-minutes must be a number, got {rendered!r}"
                ) from None
        return float(value)

    def _continue_on_error(self, step: StepSpec, contexts: dict[str, Any]) -> bool:
        value = step.continue_on_error
        if isinstance(value, str):
            try:
                rendered = render(value, contexts, self._step_options())
            except ExpressionError:
                return False
            return rendered is True or str(rendered).lower() == "true"
        return bool(value)

    def _options(self, state: _JobState) -> EvalOptions:
        return EvalOptions(status=state.status, hash_files=self._hash_files)

    def _step_options(self) -> EvalOptions:
        """For step-level expressions other than `if:` (status functions are not allowed
        there): hashFiles() works."""
        return EvalOptions(hash_files=self._hash_files)

    def _hash_files(self, patterns: list[str]) -> str:
        return hash_files(self.backend, patterns)

    def _read_step_files(
        self, step: StepSpec, state: _JobState, files: dict[str, str]
    ) -> tuple[dict[str, str], str]:
        env_text = self.backend.read_file(files["env"]).decode("utf-8", "replace")
        state.env_from_files.update(parse_assignments(env_text, "GITHUB_ENV"))
        path_text = self.backend.read_file(files["path"]).decode("utf-8", "replace")
        state.path_additions.extend(parse_path_additions(path_text))
        output_text = self.backend.read_file(files["output"]).decode("utf-8", "replace")
        outputs = parse_assignments(output_text, "GITHUB_OUTPUT")
        summary = self.backend.read_file(files["summary"]).decode("utf-8", "replace")
        return outputs, self.masker.mask(summary)

    def _step_name(self, step: StepSpec, contexts: dict[str, Any]) -> str:
        try:
            return self.masker.mask(to_string(render(step.name, contexts, self._step_options())))
        except ExpressionError:
            return step.name

    def _pick_default_shell(self) -> str:
        return "bash" if self.backend.has_command("bash") else "sh"

    def _system_line(self, index: int | None, text: str) -> None:
        line = LogLine(timestamp=self.clock(), stream="system", text=self.masker.mask(text))
        self.sink.log(index, [line])


def _is_checkout(uses: str | None) -> bool:
    return (uses or "").split("@", 1)[0].lower() == "actions/checkout"
