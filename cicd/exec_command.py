"""`cicd exec`: run a workflow from the working tree on this machine, with no server.

Like `act` or `fly execute`: the workflow file is read from the working tree, the jobs check out
the working tree as it is now (uncommitted changes and untracked files included, what .gitignore
ignores left out), and they run on the same executors as on the server (`runners.offline`).

Nothing here needs Django settings: the runner is configured from the command line and the same
CICD_* environment variables the server reads (CICD_EXECUTOR, CICD_DEFAULT_IMAGE, CICD_JOB_*...),
and its work directories live in a temporary directory removed at the end.

Exit status: 0 every job succeeded or was skipped, 1 a job failed, timed out or was cancelled,
2 usage errors (a bad workflow prints its problems as file:line:col: message), 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:  # the runner is imported when the command runs, not when `cicd` starts
    from pipelines.model import Workflow
    from runners.events import StepResult
    from runners.logs import LogEvent
    from runners.offline import JobRecord

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

EVENTS_IN_ORDER = ("push", "workflow_dispatch", "pull_request", "schedule")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class UsageError(Exception):
    """Bad arguments or a bad workflow: printed as is, exit status 2."""


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """The `exec` subcommand on `cicd`'s subparsers."""
    parser = commands.add_parser(
        "exec",
        help="run a workflow from the working tree on this machine, without a server",
        description=(
            "Run a workflow from the current working tree with the server's executors and no "
            "server, like act. The jobs check out the working tree as it is (uncommitted "
            "changes and untracked files included, ignored files left out). WORKFLOW_FILE "
            "defaults to the only workflow in .cicd/workflows (else .github/workflows) of the "
            "repository. Exit status: 0 success, 1 a job failed, 2 usage error, 130 interrupted."
        ),
    )
    parser.add_argument("workflow", nargs="?", metavar="WORKFLOW_FILE")
    parser.add_argument(
        "-j", "--job", metavar="JOB_ID", help="run only this job (its needs do not run)"
    )
    parser.add_argument(
        "-e",
        "--event",
        help="the event name (default: push when the workflow has it, else its first trigger; "
        "workflow_dispatch when --input is given)",
    )
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        dest="inputs",
        help="a workflow_dispatch input, checked and typed as the workflow declares it",
    )
    parser.add_argument(
        "-s",
        "--secret",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        dest="secrets",
        help="a secret; without a value it is read from the environment variable NAME",
    )
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="added to the workflow's env (jobs' and steps' own env still win)",
    )
    parser.add_argument(
        "--executor",
        choices=("auto", "local", "docker"),
        default=None,
        help="where steps run (default: CICD_EXECUTOR, else auto: Docker when it answers)",
    )
    parser.add_argument(
        "--image", help="the Docker image of jobs without `container:` (CICD_DEFAULT_IMAGE)"
    )
    parser.add_argument(
        "-p",
        "--parallel",
        type=int,
        default=None,
        metavar="N",
        help="jobs running at once (default: the number of CPUs; 1 runs them one by one)",
    )
    return parser


def main(args: argparse.Namespace) -> int:
    try:
        return _exec(args)
    except UsageError as error:
        print(f"cicd exec: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED


def _exec(args: argparse.Namespace) -> int:
    from pipelines.errors import WorkflowError
    from pipelines.parser import parse_workflow
    from runners.caches import MemoryCacheStore
    from runners.executor import DOCKER, choose_executor, docker_engine_reachable
    from runners.offline import (
        OfflineRun,
        RunRequest,
        SnapshotError,
        find_root,
        github_context,
        snapshot_working_tree,
    )

    if args.parallel is not None and args.parallel < 1:
        raise UsageError("--parallel must be 1 or more")
    cwd = Path.cwd()
    root = find_root(cwd)
    path, shown = _workflow_file(args.workflow, root, cwd)
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{shown}:1:1: the file is not valid UTF-8 (byte {error.start})") from None
    except OSError as error:
        raise UsageError(f"{shown}: cannot read: {error.strerror}") from None
    matrix_cap = _env_int("CICD_MATRIX_CAP", 256, minimum=1)
    try:
        workflow = parse_workflow(text, shown, matrix_cap=matrix_cap)
    except WorkflowError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        count = len(error.problems)
        raise UsageError(f"{count} problem{'s' if count != 1 else ''} in {shown}") from None
    if args.job is not None and args.job not in workflow.jobs:
        raise UsageError(f"no job {args.job!r} in {shown}; its jobs: {', '.join(workflow.jobs)}")

    event = _event_name(args, workflow)
    inputs = _inputs(args, workflow, event)
    secrets = _secrets(args.secrets)
    env = _pairs(args.env, "--env")
    config = _runner_config(args)
    if config.executor == DOCKER and not docker_engine_reachable():
        raise UsageError("--executor docker: no Docker engine answers here")
    executor = choose_executor(config)
    if args.image and executor != DOCKER:
        print("cicd exec: warning: --image is used by the docker executor only", file=sys.stderr)

    scratch = Path(tempfile.mkdtemp(prefix="cicd-exec-"))
    try:
        try:
            snapshot = snapshot_working_tree(root, scratch)
        except SnapshotError as error:
            raise UsageError(str(error)) from None
        actor = os.environ.get("USER") or os.environ.get("LOGNAME") or "local"
        github = github_context(
            snapshot,
            event_name=event,
            actor=actor,
            workflow_name=workflow.display_name,
            event=_event_payload(event, snapshot, inputs, actor),
        )
        request = RunRequest(
            github=github, inputs=inputs, secrets=secrets, env=env, checkout=snapshot.checkout
        )
        printer = Printer.for_terminal(workflow)
        run = OfflineRun(
            workflow,
            request,
            config=dataclasses.replace(config, work_dir=scratch / "jobs"),
            executor=executor,
            observer=printer,
            only_job=args.job,
            parallel=args.parallel,
            matrix_cap=matrix_cap,
            run_id=f"exec-{os.getpid()}",
            # Caches live as long as this command: a job restores what an earlier one saved.
            caches=MemoryCacheStore(),
        )
        if snapshot.head_sha:
            where = snapshot.ref.removeprefix("refs/heads/") or "detached HEAD"
            where = f"on {where} at {snapshot.head_sha[:12]}"
            where += ", with uncommitted changes" if snapshot.dirty else ""
        else:
            where = f"of the files in {snapshot.root} (no commit)"
        image = f", image {config.default_image}" if executor == DOCKER else ""
        printer.note(
            f"{shown}: {event} {where}; {executor} executor{image}; {run.parallel} job(s) at a time"
        )
        started = time.monotonic()
        with _Interrupts(run) as interrupts:
            printer.start()
            try:
                result = run.run()
            finally:
                printer.stop()
        printer.summary(result.jobs, time.monotonic() - started)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if interrupts.signal_number is not None:
        return EXIT_TERMINATED if interrupts.signal_number == signal.SIGTERM else EXIT_INTERRUPTED
    return EXIT_OK if all(job.state in ("success", "skipped") for job in result.jobs) else 1


# ------------------------------------------------------------------------------ arguments


def _workflow_file(given: str | None, root: Path, cwd: Path) -> tuple[Path, str]:
    """The workflow file and how to name it in messages (relative to the current directory)."""
    from pipelines.discovery import WORKFLOW_DIRECTORIES, workflow_paths

    if given:
        path = Path(given)
        if not path.is_file():
            raise UsageError(f"{given}: no such file")
        return path, given
    listing = [
        f"{directory}/{entry.name}"
        for directory in WORKFLOW_DIRECTORIES
        if (root / directory).is_dir()
        for entry in (root / directory).iterdir()
        if entry.is_file()
    ]
    found = workflow_paths(listing)
    shown = [os.path.relpath(root / relative, cwd) for relative in found]
    if not found:
        folders = " or ".join(WORKFLOW_DIRECTORIES)
        raise UsageError(f"no workflow file in {folders} of {root}; give WORKFLOW_FILE")
    if len(found) > 1:
        raise UsageError(
            "several workflows; give one of them as WORKFLOW_FILE:\n  " + "\n  ".join(shown)
        )
    return root / found[0], shown[0]


def _event_name(args: argparse.Namespace, workflow: Workflow) -> str:
    triggers = workflow.triggers
    listens = [
        name
        for name, present in (
            ("push", triggers.push is not None),
            ("workflow_dispatch", triggers.workflow_dispatch is not None),
            ("pull_request", triggers.pull_request is not None),
            ("schedule", bool(triggers.schedule)),
        )
        if present
    ]
    if args.event:
        event = args.event.strip()
        if not re.fullmatch(r"[a-z_]+", event):
            raise UsageError(f"--event {args.event!r} is not an event name such as push")
        if event in EVENTS_IN_ORDER and event not in listens:
            print(
                f"cicd exec: warning: the workflow is not triggered by {event}; running it anyway",
                file=sys.stderr,
            )
        return event
    if args.inputs:
        return "workflow_dispatch"
    return listens[0] if listens else "push"


def _inputs(args: argparse.Namespace, workflow: Workflow, event: str) -> dict[str, Any]:
    from pipelines.dispatch import InputError, coerce_inputs

    given = _pairs(args.inputs, "--input")
    if event != "workflow_dispatch":
        if given:
            raise UsageError("--input is for workflow_dispatch runs (--event workflow_dispatch)")
        return {}
    try:
        return coerce_inputs(workflow.triggers.workflow_dispatch, given)
    except InputError as error:
        raise UsageError("bad inputs:\n  " + "\n  ".join(error.problems)) from None


def _pairs(items: Sequence[str], option: str) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals or not name:
            raise UsageError(f"{option} {item!r} is not NAME=VALUE")
        pairs[name] = value
    return pairs


def _secrets(items: Sequence[str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not _ENV_NAME.fullmatch(name):
            raise UsageError(f"--secret {name!r}: a secret name is letters, digits and _")
        if not equals:
            if name not in os.environ:
                raise UsageError(f"--secret {name}: no value given and no such variable is set")
            value = os.environ[name]
        secrets[name] = value
    return secrets


def _event_payload(event: str, snapshot: Any, inputs: Mapping[str, Any], actor: str) -> dict:
    from runners.offline import repository_name

    full_name = repository_name(snapshot.remote_url, snapshot.root)
    owner, _, name = full_name.partition("/")
    payload: dict[str, Any] = {
        "repository": {"full_name": full_name, "name": name, "owner": {"login": owner}},
        "sender": {"login": actor},
    }
    sha = snapshot.head_sha or snapshot.checkout.sha
    if event == "push":
        payload |= {"ref": snapshot.ref, "after": sha, "pusher": {"name": actor}}
    elif event == "workflow_dispatch":
        payload |= {"ref": snapshot.ref, "inputs": dict(inputs)}
    return payload


def _runner_config(args: argparse.Namespace) -> Any:
    """The server's runner settings, from the same variables, without loading Django settings
    (they would want a database and a data directory that a local run has no use for)."""
    from runners.executor import RunnerConfig
    from runners.spec import ResourceLimits

    executor = args.executor or (os.environ.get("CICD_EXECUTOR") or "auto").strip()
    if executor not in ("auto", "local", "docker"):
        raise UsageError(f"CICD_EXECUTOR={executor!r} is not one of: auto, local, docker")
    defaults = RunnerConfig()
    return RunnerConfig(
        executor=executor,
        default_image=args.image or os.environ.get("CICD_DEFAULT_IMAGE") or defaults.default_image,
        limits=ResourceLimits(
            memory_bytes=_env_int("CICD_JOB_MEMORY_MB", 4096, minimum=16) * 1024 * 1024,
            cpus=_env_float("CICD_JOB_CPUS", 2.0, minimum=0.1),
            pids=_env_int("CICD_JOB_PIDS", 1024, minimum=16),
        ),
        grace_seconds=_env_float("CICD_KILL_GRACE_SECONDS", 10.0, minimum=0.0),
        step_output_cap=int(_env_float("CICD_STEP_OUTPUT_CAP_MB", 10.0, minimum=0.001) * 2**20),
    )


def _env_int(name: str, default: int, *, minimum: int) -> int:
    return int(_env_number(name, default, minimum, int))


def _env_float(name: str, default: float, *, minimum: float) -> float:
    return float(_env_number(name, default, minimum, float))


def _env_number(name: str, default: float, minimum: float, kind: type) -> float:
    raw = (os.environ.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise UsageError(f"{name}={value} is too small; the minimum is {minimum}")
    return value


# ------------------------------------------------------------------------------ interrupts


class _Interrupts:
    """Ctrl-C (or SIGTERM) cancels the run cleanly; a second one quits at once."""

    def __init__(self, run: Any) -> None:
        self.run = run
        self.signal_number: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        for number in (signal.SIGINT, signal.SIGTERM):
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        # Only flags and a raw write here: the handler may run while a lock is held.
        if self.signal_number is not None:
            os.write(2, b"\ncicd exec: quitting without waiting for the jobs to stop\n")
            os._exit(EXIT_INTERRUPTED)
        self.signal_number = number
        os.write(2, b"\ncicd exec: cancelling the jobs (press Ctrl-C again to quit at once)\n")
        self.run.cancel("cancelled: interrupted" if number == signal.SIGINT else "terminated")


# ------------------------------------------------------------------------------ output


_SYMBOLS = {"ok": "✓", "fail": "✗", "skip": "-", "step": "▸", "start": "●", "group": "▾"}
_ASCII = {"ok": "ok", "fail": "x", "skip": "-", "step": ">", "start": "*", "group": "v"}
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
_PREFIX_COLOURS = ("36", "35", "34", "33", "32", "96", "95", "94")
_STATE_COLOURS = {
    "success": "32",
    "failure": "31",
    "timed_out": "31",
    "cancelled": "33",
    "skipped": "90",
}


class Printer:
    """The RunObserver that prints: each line prefixed with its job's name, status lines when
    jobs and steps start and end, a summary table. Colours and a spinner line (on stderr) only
    on a terminal. Called from the job threads: every write holds one lock."""

    def __init__(
        self,
        workflow: Workflow,
        out: TextIO,
        err: TextIO,
        *,
        colour: bool = False,
        spinner: bool = False,
    ) -> None:
        self.workflow = workflow
        self.out, self.err = out, err
        self.colour = colour
        self.spinner = spinner
        self.symbols = _SYMBOLS if _can_encode(out, "".join(_SYMBOLS.values())) else _ASCII
        self._lock = threading.RLock()
        self._running: dict[str, str] = {}  # key -> name, in start order
        self._ended = 0
        self._prefix_colour: dict[str, str] = {}
        self._step_names: dict[tuple[str, int], str] = {}  # as shown when the step started
        self._spinner_shown = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    @classmethod
    def for_terminal(cls, workflow: Workflow) -> Printer:
        terminal = sys.stdout.isatty()
        return cls(
            workflow,
            sys.stdout,
            sys.stderr,
            colour=terminal and not os.environ.get("NO_COLOR"),
            spinner=terminal and sys.stderr.isatty(),
        )

    # ------------------------------------------------------------ RunObserver

    def job_changed(self, job: JobRecord) -> None:
        with self._lock:
            if job.state == "running":
                self._running[job.key] = job.name
                self._line(job, self._paint("1", f"{self.symbols['start']} started"))
                return
            if job.state in ("pending", "queued"):
                return
            self._running.pop(job.key, None)
            self._ended += 1
            self._line(job, self._job_status(job))

    def step_started(self, job: JobRecord, index: int, name: str) -> None:
        with self._lock:
            self._step_names[job.key, index] = name
            self._line(job, self._paint("1", f"{self.symbols['step']} {name}"))

    def log(self, job: JobRecord, index: int | None, events: Sequence[LogEvent]) -> None:
        from runners.logs import Annotation, GroupEnd, GroupStart, LogLine

        with self._lock:
            for position, event in enumerate(events):
                if isinstance(event, LogLine):
                    following = events[position + 1] if position + 1 < len(events) else None
                    if isinstance(following, GroupStart | GroupEnd | Annotation):
                        continue  # the `::command::` line: what follows it says it better
                    text = event.text
                    if event.stream == "system":
                        text = self._paint("2", text)
                    self._line(job, text)
                elif isinstance(event, GroupStart):
                    self._line(job, self._paint("1", f"{self.symbols['group']} {event.title}"))
                elif isinstance(event, Annotation):
                    where = ":".join(
                        str(part) for part in (event.file, event.line, event.column) if part
                    )
                    text = f"{event.level}: {where + ': ' if where else ''}{event.message}"
                    colour = "31" if event.level == "error" else "33"
                    self._line(job, self._paint(colour, text))

    def step_finished(self, job: JobRecord, result: StepResult) -> None:
        with self._lock:
            name = self._step_names.pop((job.key, result.index), None)
            name = name or self._step_name(job, result.index)
            self._line(job, self._step_status(name, result))

    # ------------------------------------------------------------ other output

    def note(self, text: str) -> None:
        """A line about the run itself, on stderr."""
        with self._lock:
            self._clear_spinner()
            print(self._paint("2", f"cicd exec: {text}"), file=self.err, flush=True)

    def start(self) -> None:
        self._started = time.monotonic()
        if self.spinner:
            self._thread = threading.Thread(target=self._spin, name="cicd-exec-spinner")
            self._thread.daemon = True
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            self._clear_spinner()

    def summary(self, jobs: Sequence[JobRecord], seconds: float) -> None:
        """The table of every job, then one line with the counts."""
        rows = [
            (job.name, job.state, _duration(job.duration), (job.reason.splitlines() or [""])[0])
            for job in jobs
        ]
        name_width = max([len("JOB"), *(len(row[0]) for row in rows)])
        state_width = max([len("RESULT"), *(len(row[1]) for row in rows)])
        with self._lock:
            self._clear_spinner()
            write = self.out.write
            write("\n")
            write(self._paint("1", f"{'JOB':<{name_width}}  {'RESULT':<{state_width}}  TIME"))
            write("\n")
            for name, state, duration, reason in rows:
                shown_state = self._paint(_STATE_COLOURS.get(state, "0"), f"{state:<{state_width}}")
                line = f"{name:<{name_width}}  {shown_state}  {duration:>6}"
                if reason:
                    line += f"  {reason}"
                write(line.rstrip() + "\n")
            counts: dict[str, int] = {}
            for job in jobs:
                counts[job.state] = counts.get(job.state, 0) + 1
            listed = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
            write(f"{len(jobs)} job(s) in {_duration(seconds)}: {listed or 'none'}\n")
            self.out.flush()

    # ------------------------------------------------------------ helpers

    def _line(self, job: JobRecord, text: str) -> None:
        self._clear_spinner()
        prefix = self._paint(self._colour_of(job.key), f"[{job.name}]")
        self.out.write(f"{prefix} {text}\n")
        self.out.flush()

    def _colour_of(self, key: str) -> str:
        if key not in self._prefix_colour:
            self._prefix_colour[key] = _PREFIX_COLOURS[len(self._prefix_colour) % 8]
        return self._prefix_colour[key]

    def _job_status(self, job: JobRecord) -> str:
        state = job.state
        symbol = {"success": "ok", "skipped": "skip"}.get(state, "fail")
        text = f"{self.symbols[symbol]} {state}"
        if job.duration is not None:
            text += f" in {_duration(job.duration)}"
        if job.reason:
            text += f": {job.reason.splitlines()[0]}"
        return self._paint(_STATE_COLOURS.get(state, "0"), text)

    def _step_status(self, name: str, result: StepResult) -> str:
        outcome = result.outcome
        if outcome == "skipped":
            return self._paint("90", f"{self.symbols['skip']} {name} (skipped)")
        took = ""
        if result.started_at is not None and result.finished_at is not None:
            took = _duration(result.finished_at - result.started_at)
        if outcome == "success":
            return self._paint("32", f"{self.symbols['ok']} {name} ({took})")
        details = [outcome]
        if result.exit_code not in (None, 0) and outcome == "failure":
            details.append(f"exit code {result.exit_code}")
        if result.conclusion == "success":
            details.append("continue-on-error")
        if took:
            details.append(took)
        colour = "33" if result.conclusion == "success" or outcome == "cancelled" else "31"
        return self._paint(colour, f"{self.symbols['fail']} {name} ({', '.join(details)})")

    def _step_name(self, job: JobRecord, index: int) -> str:
        steps = self.workflow.jobs[job.workflow_job_id].steps
        return steps[index].display_name if 0 <= index < len(steps) else f"Step {index + 1}"

    def _paint(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour else text

    def _clear_spinner(self) -> None:
        if self._spinner_shown:
            self.err.write("\r\x1b[K")
            self.err.flush()
            self._spinner_shown = False

    def _spin(self) -> None:
        frames = itertools.cycle(_SPINNER if self.symbols is _SYMBOLS else "|/-\\")
        while True:
            with self._lock:
                running = list(self._running.values())
                elapsed = _duration(time.monotonic() - self._started)
                text = f"{next(frames)} {elapsed}"
                text += f" running: {', '.join(running)}" if running else " waiting"
                text += f" ({self._ended} done)"
                width = shutil.get_terminal_size((80, 24)).columns - 1
                self.err.write("\r\x1b[K" + self._paint("2", text[:width]))
                self.err.flush()
                self._spinner_shown = True
            if self._stop.wait(0.1):
                return


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


def _can_encode(stream: TextIO, text: str) -> bool:
    try:
        text.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return False
    return True
