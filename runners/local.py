"""The local sandbox executor: runs a job's steps as processes on the worker itself.

This is the embedded default when no Docker engine is reachable. It is meant for trusted code
(your own repositories): the steps run as the worker's user, with the worker's tools and network.

- Each job gets its own directory `<work_root>/<job_id>/` holding `workspace/` (GITHUB_WORKSPACE),
  `temp/` (RUNNER_TEMP, the step scripts and step files), `home/` (HOME) and `tmp/`. `close()`
  kills whatever the job left running and removes the whole directory.
- Each step is one process in its own process group (its own session), so a timeout or a cancel
  stops the whole tree: SIGTERM to the group, SIGKILL after the grace period.
- When `bwrap` (bubblewrap) is installed and works, each step runs under it, in its own mount, PID
  and IPC namespaces: the whole file system read-only except the job directory; a fresh /dev and
  /proc; the job's own `tmp/` as /tmp; the Docker socket hidden; and, when the worker runs as
  root, only Docker's default capabilities. A step's background processes end with the step
  there (its PID namespace goes away). Without bwrap (or with `use_bwrap=False`) steps run as
  plain process groups and can write wherever the worker's user can; background processes then
  live until the job ends. A step whose sandbox failed to set up (bwrap races with mounts that
  come and go on the host) never ran: it is started again, and its log shows none of that.
- `container:` and `services:` need a Docker engine: such a job is refused at start.

`run_local_job` is the one-call form: builds the backend and runs the job with `JobDriver`, which
holds all the step semantics shared with the Docker executor.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import selectors
import shutil
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

from runners.artifacts import ArtifactError, ArtifactStore, safe_extract
from runners.caches import CacheStore, TreeEntry, walk_tree, write_tree_safely
from runners.checkout import prepare_checkout
from runners.deploy import DeploymentRecorderFactory
from runners.events import CancelToken, EventSink, JobResult
from runners.job import DEFAULT_PATH, CommandResult, JobDriver, JobSetupError
from runners.logs import DEFAULT_CAP_BYTES
from runners.spec import CheckoutSource, JobSpec

__all__ = ["LocalBackend", "bwrap_available", "run_local_job"]

log = logging.getLogger(__name__)

NEEDS_DOCKER = (
    "this job needs a Docker engine: 'container:' and 'services:' cannot run on the local executor"
)
POLL_SECONDS = 0.1  # how often a running step checks its deadline and the cancel token
DRAIN_SECONDS = 1.0  # at most this long reading what is left in the pipes after the step exits
READ_CHUNK = 64 * 1024
# bwrap copies the host's mount table while it builds the sandbox, and dies when a mount in it
# goes away meanwhile (Docker starting or stopping a container: containers/bubblewrap#650). The
# step never ran then, so it is started again, this many times in all (a bwrap that cannot work
# at all is found out once, by `bwrap_available`).
SANDBOX_ATTEMPTS = 8
# Runs inside the sandbox, in place of the step: says "the sandbox is up" through the FIFO ($0),
# then becomes the step. Whatever comes before that word is bwrap's own.
_STARTED_SHIM = ("/bin/sh", "-c", 'printf . >"$0" && exec "$@"')
# The HOME that JobDriver gives every step (right inside a container); here it becomes the job's.
_CONTAINER_HOME = "/root"
_DOCKER_SOCKETS = ("/run/docker.sock", "/var/run/docker.sock")
# Docker's default capability set: what a root step keeps under bwrap.
_DEFAULT_CAPS = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

_bwrap_lock = threading.Lock()
_bwrap_checked: dict[str, bool] = {}


def bwrap_available() -> bool:
    """True when `bwrap` is installed and can create the namespaces we use (checked once)."""
    path = shutil.which("bwrap")
    if path is None:
        return False
    with _bwrap_lock:
        if path not in _bwrap_checked:
            _bwrap_checked[path] = _check_bwrap(path)
        return _bwrap_checked[path]


def _check_bwrap(path: str) -> bool:
    argv = [path, *_bwrap_base_args(None), "--", "true"]
    for _ in range(SANDBOX_ATTEMPTS):  # a mount changing meanwhile must not disable the sandbox
        try:
            completed = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=10,
                check=False,
                env={"PATH": DEFAULT_PATH},
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            log.warning("bubblewrap does not work here (%s): steps run without a sandbox", error)
            return False
        if completed.returncode == 0:
            return True
    if completed.returncode != 0:
        reason = completed.stderr.decode("utf-8", "replace").strip()[:300]
        log.warning(
            "bubblewrap does not work here (%s): steps run as plain process groups, "
            "without a sandbox",
            reason or f"exit code {completed.returncode}",
        )
        return False
    return True


def _bwrap_base_args(job_dir: Path | None) -> list[str]:
    args = ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    if job_dir is not None:
        # The job's own /tmp, kept between its steps (as in a container); the other jobs of this
        # worker hidden (their workspaces and step files); then the job's own directory.
        args += ["--bind", str(job_dir / "tmp"), "/tmp"]
        args += ["--tmpfs", str(job_dir.parent)]
        args += ["--bind", str(job_dir), str(job_dir)]
    else:
        args += ["--tmpfs", "/tmp"]
    seen: set[str] = set()
    for socket_path in _DOCKER_SOCKETS:
        real = os.path.realpath(socket_path)
        if real not in seen and os.path.exists(real):
            seen.add(real)
            args += ["--ro-bind", "/dev/null", real]
    args += ["--unshare-pid", "--unshare-ipc", "--die-with-parent"]
    if os.geteuid() == 0:
        args += ["--cap-drop", "ALL"]
        for cap in _DEFAULT_CAPS:
            args += ["--cap-add", cap]
    return args


class LocalBackend:
    """The Backend of `runners.job` for steps run as local processes."""

    os_name = "Linux"

    def __init__(
        self,
        spec: JobSpec,
        work_root: Path,
        *,
        grace_seconds: float = 10.0,
        use_bwrap: bool | None = None,
    ) -> None:
        self.spec = spec
        self.grace_seconds = grace_seconds
        self.job_dir = Path(work_root).resolve() / _safe_name(spec.job_id)
        self.workspace = str(self.job_dir / "workspace")
        self.temp_dir = str(self.job_dir / "temp")
        self.home = str(self.job_dir / "home")
        self._use_bwrap = use_bwrap
        self._bwrap: str | None = None
        self._bwrap_args: list[str] = []
        # Process groups that outlived their step: pgid -> its members then, (pid, start time).
        self._groups: dict[int, frozenset[tuple[int, int]]] = {}
        self._started = False

    @property
    def sandboxed(self) -> bool:
        """Whether steps run under bubblewrap (known after `start()`)."""
        return self._bwrap is not None

    # ------------------------------------------------------------------ Backend protocol

    def start(self) -> None:
        if self.spec.image or self.spec.services:
            raise JobSetupError(NEEDS_DOCKER)
        if self.job_dir.exists():
            # A leftover of a worker that died mid-job: nothing in it belongs to this attempt.
            _remove_tree(self.job_dir)
        self._started = True
        try:
            for name in ("workspace", "temp", "home", "tmp"):
                (self.job_dir / name).mkdir(parents=True, exist_ok=True)
            os.chmod(self.job_dir / "tmp", 0o1777)
        except OSError as error:
            raise JobSetupError(
                f"cannot create the job directory {self.job_dir}: {error.strerror or error}"
            ) from None
        if self._use_bwrap is not False:
            if bwrap_available():
                self._bwrap = shutil.which("bwrap")
                self._bwrap_args = _bwrap_base_args(self.job_dir)
            elif self._use_bwrap:
                log.warning("bubblewrap was asked for but does not work here: no sandbox")

    def run(
        self,
        argv: list[str],
        *,
        env: Mapping[str, str],
        cwd: str,
        on_output: Callable[[str, bytes], None],
        deadline: float | None,
        cancel: CancelToken,
    ) -> CommandResult:
        env = self._env(env)
        if not os.path.isdir(cwd):
            raise JobSetupError(f"the working directory {cwd} does not exist")
        program = shutil.which(argv[0], path=env.get("PATH", DEFAULT_PATH))
        if program is None:
            raise JobSetupError(f"cannot run {argv[0]!r}: it is not installed on this runner")
        command = [program, *argv[1:]]
        if self._bwrap is None:
            return self._run_process(command, env, cwd, on_output, deadline, cancel, name=argv[0])
        problem = ""
        for attempt in range(1, SANDBOX_ATTEMPTS + 1):
            started = self.job_dir / "sandbox-started"
            with contextlib.suppress(FileNotFoundError):
                started.unlink()
            os.mkfifo(started, 0o600)
            sandboxed = [
                self._bwrap,
                *self._bwrap_args,
                "--chdir",
                cwd,
                "--",
                *_STARTED_SHIM,
                str(started),
                *command,
            ]
            try:
                return self._run_process(
                    sandboxed,
                    env,
                    cwd,
                    on_output,
                    deadline,
                    cancel,
                    name=argv[0],
                    started_fifo=started,
                )
            except _SandboxNotStarted as error:
                problem = str(error)
                log.warning("bubblewrap failed to set up, attempt %d: %s", attempt, problem)
                if attempt < SANDBOX_ATTEMPTS:
                    time.sleep(0.05 * attempt)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    started.unlink()
        raise JobSetupError(
            f"the step's sandbox (bubblewrap) could not be set up in {SANDBOX_ATTEMPTS} "
            f"attempts: {problem or 'no reason given'}"
        )

    def _run_process(
        self,
        command: list[str],
        env: Mapping[str, str],
        cwd: str,
        on_output: Callable[[str, bytes], None],
        deadline: float | None,
        cancel: CancelToken,
        *,
        name: str,
        started_fifo: Path | None = None,
    ) -> CommandResult:
        # Opened before the step starts, so the shim's write never waits for a reader.
        started_fd = (
            os.open(started_fifo, os.O_RDONLY | os.O_NONBLOCK) if started_fifo is not None else None
        )
        try:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as error:
            if started_fd is not None:
                os.close(started_fd)
            raise JobSetupError(f"cannot start {name!r}: {error.strerror or error}") from None
        supervisor = _Supervisor(
            process,
            self.grace_seconds,
            on_output,
            deadline,
            cancel,
            sandboxed=self._bwrap is not None,
            started_fd=started_fd,
        )
        return supervisor.run(self._groups)

    def write_file(self, path: str, data: bytes) -> None:
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)

    def read_file(self, path: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except (FileNotFoundError, IsADirectoryError):
            return b""  # a step removed its step file: as if it wrote nothing

    def has_command(self, name: str) -> bool:
        return shutil.which(name, path=DEFAULT_PATH) is not None

    def checkout(self, source: CheckoutSource, subdir: str, *, fetch_depth: int = 1) -> None:
        dest = Path(self.workspace)
        if subdir:
            dest = (dest / subdir).resolve()
            if not dest.is_relative_to(Path(self.workspace)):
                raise JobSetupError(f"checkout path {subdir!r} is outside the workspace")
        prepare_checkout(source, dest, fetch_depth=fetch_depth)

    @contextlib.contextmanager
    def workspace_view(self, roots: Sequence[str]) -> Iterator[Path]:
        yield Path(self.workspace)  # the steps' own files, read in place

    def extract_archive(self, archive: BinaryIO, target: str) -> tuple[int, int]:
        # The executor writes as the worker, outside any sandbox: only into the job's directory,
        # and not through a link a step placed there.
        dest = Path(target).resolve()
        if not dest.is_relative_to(self.job_dir):
            raise ArtifactError(f"download path {target!r} is outside this job's directory")
        return safe_extract(archive, dest)

    def read_tree(self, paths: Sequence[str]) -> Generator[TreeEntry, None, None]:
        # Read in place, links never followed: nothing outside the workspace and HOME.
        return walk_tree(paths, (self.workspace, self.home))

    def write_tree(self, entries: Iterable[TreeEntry]) -> None:
        # As for downloads: the worker writes, so only into the job's own workspace and HOME,
        # and never through a link a step left there.
        write_tree_safely(entries, (self.workspace, self.home))

    def close(self) -> None:
        for pgid, members in sorted(self._groups.items()):
            # Once every member is gone the number is free: another program's group may carry
            # it now (PIDs wrap), so only a group that still holds one of them is killed.
            if _still_holds(pgid, members):
                _kill_group(pgid, signal.SIGKILL)
        self._groups.clear()
        if self._started or self.job_dir.exists():
            _remove_tree(self.job_dir)

    # ------------------------------------------------------------------ helpers

    def _env(self, env: Mapping[str, str]) -> dict[str, str]:
        env = dict(env)
        if env.get("HOME", _CONTAINER_HOME) == _CONTAINER_HOME:
            env["HOME"] = self.home
        if self._bwrap is None:
            env.setdefault("TMPDIR", str(self.job_dir / "tmp"))
        return env


_STARTED = "started"  # the selector's name for the sandbox's FIFO


class _SandboxNotStarted(Exception):
    """bwrap exited before the step started: its set-up failed (the message is bwrap's)."""


class _Supervisor:
    """Runs one step process to its end: streams its output, enforces deadline and cancel.

    With `started_fd` (the sandbox's FIFO) the output before the sandbox says it is up is bwrap's
    own: it is held back, and when the process ends without that word, `run` raises
    `_SandboxNotStarted` with it instead of returning a result."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        grace_seconds: float,
        on_output: Callable[[str, bytes], None],
        deadline: float | None,
        cancel: CancelToken,
        *,
        sandboxed: bool = False,
        started_fd: int | None = None,
    ) -> None:
        self.process = process
        self.started_fd = started_fd
        self.started = started_fd is None
        self.held_back: list[tuple[str, bytes]] = []
        self.sandboxed = sandboxed
        self.pgid = process.pid  # start_new_session: the step leads its own group
        self.grace = grace_seconds
        self.on_output = on_output
        self.deadline = deadline
        self.cancel = cancel
        self.timed_out = False
        self.cancelled = False
        self.terminated_at: float | None = None
        self.killed = False

    def run(self, leftover_groups: dict[int, frozenset[tuple[int, int]]]) -> CommandResult:
        process = self.process
        selector = selectors.DefaultSelector()
        streams = {process.stdout: "stdout", process.stderr: "stderr"}
        for pipe, name in streams.items():
            assert pipe is not None
            selector.register(pipe.fileno(), selectors.EVENT_READ, name)
        if self.started_fd is not None:
            selector.register(self.started_fd, selectors.EVENT_READ, _STARTED)
        try:
            self._pump(selector)
        except BaseException:
            _kill_group(self.pgid, signal.SIGKILL)
            process.wait()
            raise
        finally:
            selector.close()
            for pipe in streams:
                if pipe is not None:
                    pipe.close()
            if self.started_fd is not None:
                os.close(self.started_fd)
        if not self.started and not (self.timed_out or self.cancelled):
            said = b"".join(data for _, data in self.held_back)
            raise _SandboxNotStarted(said.decode("utf-8", "replace").strip())
        if self.timed_out or self.cancelled:
            # The step was told to stop: nothing of it may outlive it.
            _kill_group(self.pgid, signal.SIGKILL)
        elif _group_alive(self.pgid):
            found = _group_members(self.pgid)
            members = frozenset((pid, start) for pid, (_, start) in found.items())
            if members:
                leftover_groups[self.pgid] = members
        code = process.returncode
        if code is not None and code < 0:
            code = 128 - code  # killed by a signal: report it as a shell would
        return CommandResult(exit_code=code, timed_out=self.timed_out, cancelled=self.cancelled)

    def _pump(self, selector: selectors.BaseSelector) -> None:
        exited_at: float | None = None
        while True:
            now = time.monotonic()
            self._enforce(now)
            if exited_at is None and self.process.poll() is not None:
                exited_at = now
            if exited_at is not None:
                # The step is over. What it wrote is in the pipes already; a background process
                # may hold them open, so read only what is ready, for a bounded time.
                if not self._output_open(selector) or now - exited_at > DRAIN_SECONDS:
                    return
                if not self._read_ready(selector, 0.05):
                    return
                continue
            if not self._output_open(selector):
                # The step closed both pipes but still runs.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=self._wait_time(now))
                continue
            self._read_ready(selector, self._wait_time(now))

    def _read_ready(self, selector: selectors.BaseSelector, timeout: float) -> bool:
        ready = selector.select(timeout)
        # The sandbox's word first: the step's output in the same batch came after it.
        for key, _ in sorted(ready, key=lambda item: item[0].data != _STARTED):
            data = os.read(key.fd, READ_CHUNK)  # type: ignore[arg-type]
            if key.data == _STARTED:
                selector.unregister(key.fd)
                self.started = bool(data)  # the shim closing it unwritten: it could not start
                if self.started:
                    for stream, held in self.held_back:  # nothing, unless bwrap itself warned
                        self.on_output(stream, held)
                    self.held_back.clear()
            elif not data:
                selector.unregister(key.fd)
            elif self.started:
                self.on_output(key.data, data)
            else:
                self.held_back.append((key.data, data))
        return bool(ready)

    @staticmethod
    def _output_open(selector: selectors.BaseSelector) -> bool:
        return any(key.data != _STARTED for key in selector.get_map().values())

    def _wait_time(self, now: float) -> float:
        wait = POLL_SECONDS
        if self.terminated_at is None and self.deadline is not None:
            wait = min(wait, self.deadline - now)
        elif self.terminated_at is not None and not self.killed:
            wait = min(wait, self.terminated_at + self.grace - now)
        return max(wait, 0.0)

    def _enforce(self, now: float) -> None:
        if self.terminated_at is None:
            if self.cancel.cancelled:
                self.cancelled = True
            elif self.deadline is not None and now >= self.deadline:
                self.timed_out = True
            else:
                return
            self.terminated_at = now
            self._terminate()
        elif not self.killed and now >= self.terminated_at + self.grace:
            self.killed = True
            _kill_group(self.pgid, signal.SIGKILL)

    def _terminate(self) -> None:
        """SIGTERM to the step's processes, so they can clean up during the grace period."""
        if not self.sandboxed:
            _kill_group(self.pgid, signal.SIGTERM)
            return
        # Under bwrap the group leader is bwrap itself, and its child is the init of the step's
        # PID namespace: a TERM would end either at once, and the namespace with it (everything
        # in it gets SIGKILL). So TERM goes to the step's own processes only; when the step's
        # main process exits, bwrap exits and takes the rest of the namespace with it.
        members = _group_members(self.pgid)
        for pid, (ppid, _) in members.items():
            if pid != self.pgid and ppid != self.pgid:
                _kill_pid(pid, signal.SIGTERM)


def run_local_job(
    spec: JobSpec,
    sink: EventSink,
    *,
    cancel: CancelToken | None = None,
    work_root: Path,
    grace_seconds: float = 10.0,
    use_bwrap: bool | None = None,
    step_output_cap: int = DEFAULT_CAP_BYTES,
    artifacts: ArtifactStore | None = None,
    caches: CacheStore | None = None,
    deployments: DeploymentRecorderFactory | None = None,
    deploy_state_dir: Path | None = None,
) -> JobResult:
    """Run one job on the local executor and return its result (the sink saw everything)."""
    backend = LocalBackend(spec, work_root, grace_seconds=grace_seconds, use_bwrap=use_bwrap)
    driver = JobDriver(
        spec,
        backend,
        sink,
        cancel=cancel or CancelToken(),
        step_output_cap=step_output_cap,
        artifacts=artifacts,
        caches=caches,
        deployments=deployments,
        deploy_state_dir=deploy_state_dir,
    )
    return driver.run()


# ------------------------------------------------------------------------------------ helpers


def _safe_name(job_id: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", job_id).strip(".") or "job"
    return name[:200]


def _kill_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _kill_pid(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


def _group_members(pgid: int) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start time) of every process in the process group `pgid` (/proc)."""
    members: dict[int, tuple[int, int]] = {}
    try:
        entries = os.listdir("/proc")
    except OSError:
        return members
    for entry in entries:
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat[1] == pgid:
                members[int(entry)] = (stat[0], stat[2])
    return members


def _stat(pid: int) -> tuple[int, int, int] | None:
    """(parent pid, process group, start time) of a process, None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # "pid (comm) state ppid pgrp session ... starttime": comm may hold spaces and parentheses.
    fields = data[data.rfind(b")") + 2 :].split()
    if len(fields) < 20:
        return None
    return int(fields[1]), int(fields[2]), int(fields[19])


def _still_holds(pgid: int, members: frozenset[tuple[int, int]]) -> bool:
    """Whether one of `members` (pid, start time) still lives in process group `pgid`: while
    one does, the number cannot name anyone else's group."""
    for pid, start in members:
        stat = _stat(pid)
        if stat is not None and stat[1] == pgid and stat[2] == start:
            return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_tree(path: Path) -> None:
    """rmtree that also removes read-only directories (a Go module cache, say)."""

    def on_error(function: Callable[..., object], failed: str, _info: object) -> None:
        parent = os.path.dirname(failed)
        try:
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IRWXU)
            if os.path.isdir(failed) and not os.path.islink(failed):
                os.chmod(failed, os.stat(failed).st_mode | stat.S_IRWXU)
            function(failed)
        except FileNotFoundError:
            pass
        except OSError:
            log.warning("could not remove %s", failed, exc_info=True)

    if path.exists():
        shutil.rmtree(path, onerror=on_error)
