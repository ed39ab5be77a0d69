"""The Docker executor: each job in a fresh, hardened container; each step one `docker exec`.

`DockerBackend` is the Backend of `runners.job` (which holds all the step semantics); it can also be
used as a context manager (`with DockerBackend(spec) as backend: ...`). Per job it creates, all
named after the job id and labelled `cicd.job`, `cicd.run`, `cicd.created`:

- a volume `cicd-job-<job>-workspace` mounted at `/__w` (workspace `/__w/workspace`, RUNNER_TEMP
  `/__w/_temp`, the executor's own `/__w/_cicd`), shared by all the job's steps;
- when the job has `services`, a bridge network `cicd-job-<job>` and one container per service
  `cicd-job-<job>-svc-<id>`, reachable from the job by the service id as host name;
- the job container `cicd-job-<job>`, whose main process is a watchdog shell: it only waits (at
  most the job's timeout plus a margin, so a container whose worker died stops by itself) and, on
  SIGUSR1 / SIGUSR2, sends SIGTERM / SIGKILL to the running step's process group.

Stopping a step goes through that watchdog rather than a `docker exec kill`: a signal to PID 1
needs no new process in the container, so it works even when a fork bomb has used up the pids
limit. Each step records its pid in `/__w/_cicd/step.pid` before it execs the command; `docker
exec` (runc) already starts every exec'd process as the leader of a new session, so that pid is
the step's process group. (Wrapping in `setsid` would fork away from an existing group leader and
make the exec end at once.)

`start()` removes the stale objects of a previous attempt of the same job first; `close()` removes
the containers, the network and the volume, whatever happened. `runners.reaper` removes what a
worker that crashed in between left behind. Service output is not streamed to the job's log: only
its last lines are quoted when a service does not come up.
"""

from __future__ import annotations

import contextlib
import io
import logging
import posixpath
import queue
import re
import socket
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import Healthcheck
from docker.utils import parse_repository_tag
from docker.utils.socket import STDERR, frames_iter

from runners.artifacts import (
    ArtifactError,
    ArtifactStore,
    IterReader,
    extract_keeping_links,
    spool_checked,
)
from runners.caches import COPY_CHUNK, CacheError, CacheStore, TreeEntry
from runners.checkout import prepare_checkout
from runners.deploy import DeploymentRecorderFactory
from runners.events import FAILURE, CancelToken, EventSink, JobResult
from runners.job import DEFAULT_PATH, CommandResult, JobDriver, JobSetupError
from runners.logs import DEFAULT_CAP_BYTES, LogLine
from runners.spec import CheckoutSource, JobSpec, ServiceSpec

__all__ = [
    "CAPABILITIES",
    "DEFAULT_IMAGE",
    "LABEL_CREATED",
    "LABEL_JOB",
    "LABEL_RUN",
    "DockerBackend",
    "JobNames",
    "run_docker_job",
]

log = logging.getLogger(__name__)

DEFAULT_IMAGE = "ubuntu:24.04"

LABEL_JOB = "cicd.job"
LABEL_RUN = "cicd.run"
LABEL_CREATED = "cicd.created"  # unix time: what the reaper compares with its threshold
LABEL_SERVICE = "cicd.service"

ROOT = "/__w"  # the job volume's mount point
WORKSPACE = f"{ROOT}/workspace"
TEMP_DIR = f"{ROOT}/_temp"
CONTROL_DIR = f"{ROOT}/_cicd"
HOME = "/root"  # the HOME JobDriver gives steps; in the container's own file system
PIDFILE = f"{CONTROL_DIR}/step.pid"

# What a step keeps of root's powers: enough to install packages and run services as another
# user; not enough to mount, trace, load modules or touch the network stack (NET_RAW: no ping).
CAPABILITIES = (
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
)

POLL_SECONDS = 0.1  # how often a running step checks its deadline and the cancel token
INSPECT_SECONDS = 0.5  # how often a running step asks the engine whether the exec has exited
DRAIN_SECONDS = 1.0  # reading on after the step exited (a background process may hold the pipe)
KILL_WAIT_SECONDS = 2.0  # after SIGKILL, waiting this long for the stream to end at most
WATCHDOG_MARGIN_SECONDS = 900  # the job container outlives the job timeout by this much at most
HEALTH_SLACK_SECONDS = 10.0
READ_CACHE_LIMIT = 16 * 1024 * 1024  # a directory read in one archive at most this large
_STREAMS = {STDERR: "stderr"}  # everything else is stdout

# The job container's main process. "$0" is its lifetime in seconds. `read` and `kill` are shell
# builtins: stopping a step forks nothing, even when the pids limit is used up.
WATCHDOG = f"""\
stop_step() {{
  p=
  read -r p 2>/dev/null < {PIDFILE}
  [ -n "$p" ] || return 0
  kill -"$1" "-$p" 2>/dev/null || kill -"$1" "$p" 2>/dev/null
  return 0
}}
trap 'stop_step TERM' USR1
trap 'stop_step KILL' USR2
trap 'exit 0' TERM
sleep "$0" & s=$!
while kill -0 "$s" 2>/dev/null; do wait "$s"; done
"""
# Every step: record the pid (its process group, see the module docstring), make itself the
# kernel's first choice when the job's memory limit is hit, then become the step. Without the
# raised oom_score_adj the OOM killer may pick the watchdog or its `sleep` (all start at 0), which
# stops the whole container: the step then cannot be told it ran out of memory and the job's
# later `if: always()` steps cannot run. Raising one's own score needs no privilege.
# `;` not `&&`: a user that cannot write these files still runs its step.
STEP_WRAPPER = 'echo $$ > "$0"; echo 1000 2>/dev/null >/proc/self/oom_score_adj; exec "$@"'
# A TCP probe from the job container: `nc -z` where it exists; busybox's nc has no -z, so connect
# with stdin closed (a quiet server keeps nc waiting: still running after 2 s means connected);
# else bash's /dev/tcp. 127: no tool for it in the image.
PORT_PROBE = """\
h=$0 p=$1
if command -v nc >/dev/null 2>&1; then
  nc -z -w 1 "$h" "$p" >/dev/null 2>&1 && exit 0
  nc -w 1 "$h" "$p" </dev/null >/dev/null 2>&1 & n=$!
  i=0
  while [ "$i" -lt 20 ]; do
    kill -0 "$n" 2>/dev/null || { wait "$n"; exit $?; }
    sleep 0.1; i=$((i+1))
  done
  kill "$n" 2>/dev/null; exit 0
fi
command -v bash >/dev/null 2>&1 && exec bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$h" "$p" 2>/dev/null
exit 127
"""
OOM_COUNTER = (
    "cat /sys/fs/cgroup/memory.events /sys/fs/cgroup/memory/memory.oom_control 2>/dev/null"
)


class JobNames:
    """The deterministic names of everything one job creates."""

    def __init__(self, job_id: str) -> None:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", job_id).strip(".-") or "job"
        self.container = self.network = f"cicd-job-{safe}"
        self.volume = f"cicd-job-{safe}-workspace"

    def service(self, service_id: str) -> str:
        return f"{self.container}-svc-{re.sub(r'[^A-Za-z0-9_.-]', '-', service_id)}"


class DockerBackend:
    """The Backend of `runners.job` for one job in a Docker container."""

    os_name = "Linux"
    workspace = WORKSPACE
    temp_dir = TEMP_DIR

    def __init__(
        self,
        spec: JobSpec,
        *,
        client: docker.DockerClient | None = None,
        default_image: str = DEFAULT_IMAGE,
        grace_seconds: float = 10.0,
        allow_privileged: bool = False,
        cancel: CancelToken | None = None,
    ) -> None:
        self.spec = spec
        self._own_client = client is None
        self.client = client if client is not None else docker.from_env()
        self.api = self.client.api
        self.image = spec.image or default_image
        self.grace_seconds = grace_seconds
        self.allow_privileged = allow_privileged
        self.cancel = cancel or CancelToken()
        self.names = JobNames(spec.job_id)
        self.home = spec.container_env.get("HOME") or HOME
        self.created_at = time.time()
        self._containers: list[str] = []  # names, the job container last
        self._network: str | None = None
        self._volume: str | None = None
        self._container: str | None = None
        self._image_path = DEFAULT_PATH
        self._pending: dict[str, bytes] = {}  # writes not yet in the container
        self._known_dirs: set[str] = set()
        self._read_cache: dict[str, dict[str, bytes]] = {}  # directory -> its files, until a run
        self._commands: dict[str, bool] = {}
        self._oom_kills = 0

    def __enter__(self) -> DockerBackend:
        try:
            self.start()
        except BaseException:
            self.close()  # __exit__ does not run when __enter__ fails
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ Backend protocol

    def start(self) -> None:
        self._remove_stale()
        config = self._ensure_image(self.image, "image")
        self._image_path = _env_value(config.get("Env") or [], "PATH") or DEFAULT_PATH
        for service in self.spec.services:
            self._ensure_image(service.image, f"service '{service.id}': image")
        self._volume = self.names.volume
        self.api.create_volume(name=self._volume, labels=self._labels())
        if self.spec.services:
            self._network = self.names.network
            self.api.create_network(
                self._network, driver="bridge", labels=self._labels(), check_duplicate=True
            )
            for service in self.spec.services:
                self._start_service(service)
        self._start_job_container()
        # The job's directories go into the container with the first write (one archive).
        for directory in (WORKSPACE, TEMP_DIR, CONTROL_DIR):
            self._pending_dir(directory)
        self._pending[PIDFILE] = b""
        if self.spec.services:
            self._wait_for_services()

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
        container = self._require_container()
        self._pending[PIDFILE] = b""  # no stale pid for a stop that comes before the step wrote it
        self._flush()
        self._read_cache.clear()
        command = ["/bin/sh", "-c", STEP_WRAPPER, PIDFILE, *argv]
        try:
            execution = _Exec(self.api, container, command, env=self._exec_env(env), workdir=cwd)
        except APIError as error:
            raise self._exec_error(error) from None
        stopped = ""  # "cancelled" or "timed_out" once we decided to stop the step
        term_at = kill_at = exited_at = None
        next_inspect = time.monotonic() + INSPECT_SECONDS
        try:
            while True:
                item = execution.next(POLL_SECONDS)
                if item is _EOF:
                    break
                if item is not None:
                    on_output(_STREAMS.get(item[0], "stdout"), item[1])
                now = time.monotonic()
                if not stopped:
                    if cancel.cancelled:
                        stopped = "cancelled"
                    elif deadline is not None and now >= deadline:
                        stopped = "timed_out"
                    if stopped:
                        self._signal_step("SIGUSR1")
                        term_at = now
                elif kill_at is None and term_at is not None:
                    if now >= term_at + self.grace_seconds:
                        self._signal_step("SIGUSR2")
                        kill_at = now
                elif kill_at is not None and now >= kill_at + KILL_WAIT_SECONDS:
                    break  # killed; what still holds the stream open is no longer ours to wait for
                if exited_at is None and now >= next_inspect:
                    next_inspect = now + INSPECT_SECONDS
                    if not execution.running():
                        exited_at = now
                if exited_at is not None and now >= exited_at + DRAIN_SECONDS:
                    break  # the step is over; a background process it left holds the pipe
        finally:
            execution.abort()
        for stream, data in execution.leftovers():
            on_output(_STREAMS.get(stream, "stdout"), data)
        if stopped:
            self._signal_step("SIGUSR2")  # nothing of a stopped step may outlive it
        exit_code = execution.exit_code()
        if exit_code not in (0, None) and not stopped:
            message = self._oom_message()
            if message:
                on_output("stderr", f"\n{message}\n".encode())
        return CommandResult(
            exit_code=exit_code,
            timed_out=stopped == "timed_out",
            cancelled=stopped == "cancelled",
        )

    def write_file(self, path: str, data: bytes) -> None:
        # Batched: the step's script and its four step files reach the container in one archive
        # right before the step runs (a put_archive costs about as much as an exec).
        self._pending[path] = bytes(data)
        self._read_cache.pop(posixpath.dirname(path), None)

    def read_file(self, path: str) -> bytes:
        """The file's content; b"" when it does not exist (as if a step wrote nothing)."""
        if path in self._pending:
            return self._pending[path]
        directory, name = posixpath.split(path)
        files = self._read_cache.get(directory)
        if files is None:
            files = self._read_directory(directory)
            if files is None:
                return self._read_single(path)
            self._read_cache[directory] = files
        return files.get(name, b"")

    def has_command(self, name: str) -> bool:
        if name not in self._commands:
            script = 'PATH="$1"; command -v "$0" >/dev/null 2>&1'
            code, _ = self._run_quick(["/bin/sh", "-c", script, name, self._image_path])
            self._commands[name] = code == 0
        return self._commands[name]

    def checkout(self, source: CheckoutSource, subdir: str, *, fetch_depth: int = 1) -> None:
        """The repository at `source.sha` in the workspace, copied in: the image needs no git."""
        container = self._require_container()
        target = posixpath.normpath(posixpath.join(WORKSPACE, subdir)) if subdir else WORKSPACE
        if target != WORKSPACE and not target.startswith(WORKSPACE + "/"):
            raise JobSetupError(f"checkout path {subdir!r} is outside the workspace")
        self._flush()
        self._read_cache.clear()
        with tempfile.TemporaryDirectory(prefix="cicd-checkout-") as host_dir:
            tree = Path(host_dir) / "tree"
            prepare_checkout(source, tree, fetch_depth=fetch_depth)
            arcname = target.lstrip("/")

            def as_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                if info.name == arcname:
                    info.mode = 0o777  # the workspace stays writable for a non-root image user
                return info

            # Spooled to disk: a repository can be much larger than what we want in memory.
            with tempfile.TemporaryFile(dir=host_dir) as archive:
                with tarfile.open(fileobj=archive, mode="w") as tar:
                    tar.add(tree, arcname=arcname, filter=as_root)
                archive.seek(0)
                self.api.put_archive(container, "/", archive)

    @contextlib.contextmanager
    def workspace_view(self, roots: Sequence[str]) -> Iterator[Path]:
        """A host copy of the workspace paths `roots` (the only ones an upload looks under),
        symbolic links kept as links: the selection judges where they lead."""
        container = self._require_container()
        self._flush()
        with tempfile.TemporaryDirectory(prefix="cicd-artifact-") as host_dir:
            root = Path(host_dir) / posixpath.basename(WORKSPACE)
            for relative in roots:
                source = posixpath.join(WORKSPACE, relative) if relative else WORKSPACE
                try:
                    stream, _ = self.api.get_archive(container, source)
                except NotFound:
                    continue
                parent = (root / relative).parent if relative else Path(host_dir)
                parent.mkdir(parents=True, exist_ok=True)
                extract_keeping_links(IterReader(stream), parent)  # type: ignore[arg-type]
            root.mkdir(exist_ok=True)
            yield root

    def extract_archive(self, archive: BinaryIO, target: str) -> tuple[int, int]:
        """Unpack a stored artifact into `target` (a path in the container), through the
        engine: whatever the job did to its file system, nothing lands on the host."""
        container = self._require_container()
        self._flush()
        self._read_cache.clear()
        code, output = self._run_quick(["mkdir", "-p", "--", target])
        if code != 0:
            reason = output.decode("utf-8", "replace").strip() or f"exit code {code}"
            raise ArtifactError(f"cannot create {target}: {_trim(reason)}")
        with tempfile.TemporaryFile(prefix="cicd-artifact-") as spool:
            counts = spool_checked(archive, spool)
            self.api.put_archive(container, target, spool)
        return counts

    def read_tree(self, paths: Sequence[str]) -> Generator[TreeEntry, None, None]:
        """The entries under absolute container paths, streamed from the engine (never copied
        to the host's disk): a cache archive is written as they come."""
        container = self._require_container()
        self._flush()
        for path in paths:
            try:
                stream, _ = self.api.get_archive(container, path)
            except NotFound:
                continue
            except DockerException as error:
                reason = _short_reason(error)
                raise CacheError(f"cannot read {path} in the job container: {reason}") from None
            # The engine names members from the path's last component.
            base = posixpath.dirname(path.rstrip("/"))
            try:
                reader = IterReader(stream)  # type: ignore[arg-type]
                with tarfile.open(fileobj=reader, mode="r|", bufsize=COPY_CHUNK) as tar:
                    for member in tar:
                        member.name = posixpath.join(base, member.name)
                        if member.islnk():
                            member.linkname = posixpath.join(base, member.linkname)
                        opener = _member_opener(tar, member) if member.isfile() else None
                        yield member, opener
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

    def write_tree(self, entries: Iterable[TreeEntry]) -> None:
        """Unpack entries (absolute container paths under the workspace or HOME) through the
        engine, as one archive: links resolve inside the container, nothing lands on the host.
        The archive is complete before it is sent, so a refused entry writes nothing."""
        container = self._require_container()
        self._flush()
        self._read_cache.clear()
        roots = (WORKSPACE, self.home.rstrip("/"))
        with tempfile.TemporaryFile(prefix="cicd-cache-") as spool:
            with tarfile.open(fileobj=spool, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.copybufsize = COPY_CHUNK
                for info, opener in entries:
                    _check_inside(info.name, roots)
                    member = info.replace(
                        name=info.name.lstrip("/"),
                        uid=0,
                        gid=0,
                        uname="root",
                        gname="root",
                        deep=False,
                    )
                    member.mode = info.mode & 0o777
                    if info.isdir():
                        member.mode |= 0o700
                    content = None
                    if info.islnk():
                        _check_inside(info.linkname, roots)
                        member.linkname = info.linkname.lstrip("/")
                    elif info.isfile() and opener is not None:
                        content = opener()
                    tar.addfile(member, content)
            spool.seek(0)
            try:
                self.api.put_archive(container, "/", spool)
            except DockerException as error:
                raise CacheError(
                    f"cannot unpack the cache in the job container: {_short_reason(error)}"
                ) from None

    def close(self) -> None:
        """Remove what this job created, whatever happened; NotFound is fine.

        Every object is tried even when one fails; the first failure is raised at the end (the
        reaper removes what is left)."""
        actions: list[Callable[[], object]] = [
            lambda n=name: self.api.remove_container(n, force=True, v=True)
            for name in reversed(self._containers)
        ]
        if self._network is not None:
            actions.append(lambda n=self._network: self.api.remove_network(n))
        if self._volume is not None:
            actions.append(lambda n=self._volume: self._remove_volume(n))
        self._containers, self._container, self._network, self._volume = [], None, None, None
        failure: DockerException | None = None
        for action in actions:
            try:
                _ignore_missing(action)
            except DockerException as error:
                log.warning("job %s: cleanup: %s", self.spec.job_id, error)
                failure = failure or error
        if self._own_client:
            self.client.close()
        if failure is not None:
            raise failure

    # ------------------------------------------------------------------ start

    def _labels(self, **extra: str) -> dict[str, str]:
        return {
            LABEL_JOB: self.spec.job_id,
            LABEL_RUN: self.spec.run_id,
            LABEL_CREATED: str(int(self.created_at)),
            **extra,
        }

    def _remove_stale(self) -> None:
        """A retried job: whatever its previous attempt left behind goes first."""
        selector = {"label": f"{LABEL_JOB}={self.spec.job_id}"}
        for container in self.api.containers(all=True, filters=selector):
            _ignore_missing(lambda c=container: self.api.remove_container(c["Id"], force=True))
        for network in self.api.networks(filters=selector):
            _ignore_missing(lambda n=network: self.api.remove_network(n["Id"]))
        for volume in self.api.volumes(filters=selector).get("Volumes") or []:
            self._remove_volume(volume["Name"])

    def _ensure_image(self, image: str, what: str) -> dict[str, Any]:
        """The image's config; pulled when not here; a JobSetupError naming it when unavailable."""
        try:
            return self.api.inspect_image(image).get("Config") or {}
        except ImageNotFound:
            pass
        repository, tag = parse_repository_tag(image)
        reason = ""
        try:
            for event in self.api.pull(repository, tag=tag or "latest", stream=True, decode=True):
                if isinstance(event, dict) and event.get("error"):
                    reason = str(event["error"])
        except DockerException as error:
            reason = _short_reason(error)
        if not reason:
            try:
                return self.api.inspect_image(image).get("Config") or {}
            except ImageNotFound:
                reason = "the engine reported no error but has no such image"
        raise JobSetupError(
            f"{what} '{image}' is not available: not found locally and the pull failed: "
            f"{_trim(reason)}"
        )

    def _host_config(self, *, network: str | None, binds: list[str] | None = None) -> dict:
        limits = self.spec.limits
        return self.api.create_host_config(
            binds=binds,
            # Never the host network, never the Docker socket: only the job's own volume.
            network_mode=network or "bridge",
            privileged=self.allow_privileged,
            cap_drop=["ALL"],
            cap_add=list(CAPABILITIES),
            security_opt=["no-new-privileges"],
            pids_limit=limits.pids,
            mem_limit=limits.memory_bytes,
            memswap_limit=limits.memory_bytes,  # no swap on top: the limit is the limit
            nano_cpus=int(limits.cpus * 1e9),
            init=True,  # reaps what steps leave behind, so zombies do not eat the pids limit
        )

    def _start_service(self, service: ServiceSpec) -> None:
        name = self.names.service(service.id)
        healthcheck = None
        if service.health_cmd:
            interval = max(service.health_interval_seconds, 0.1)
            healthcheck = Healthcheck(
                test=["CMD-SHELL", service.health_cmd],
                interval=int(interval * 1e9),
                timeout=int(max(interval, 5.0) * 1e9),
                retries=max(service.health_retries, 1),
            )
        endpoint = self.api.create_endpoint_config(aliases=[service.id])
        self._containers.append(name)
        # Service ports are not published on the host: the job reaches them on the job network.
        self.api.create_container(
            service.image,
            name=name,
            detach=True,
            environment=dict(service.env),
            labels=self._labels(**{LABEL_SERVICE: service.id}),
            host_config=self._host_config(network=self._network),
            networking_config=self.api.create_networking_config({self._network: endpoint}),
            healthcheck=healthcheck,
        )
        self.api.start(name)

    def _start_job_container(self) -> None:
        name = self.names.container
        lifetime = int(self.spec.timeout_minutes * 60 + WATCHDOG_MARGIN_SECONDS)
        networking = None
        if self._network is not None:
            endpoint = self.api.create_endpoint_config()
            networking = self.api.create_networking_config({self._network: endpoint})
        self._containers.append(name)
        self.api.create_container(
            self.image,
            name=name,
            detach=True,
            entrypoint=["/bin/sh", "-c", WATCHDOG],
            command=[str(lifetime)],
            environment=dict(self.spec.container_env),
            labels=self._labels(),
            host_config=self._host_config(
                network=self._network, binds=[f"{self._volume}:{ROOT}:rw"]
            ),
            networking_config=networking,
        )
        self.api.start(name)
        self._container = name

    def _wait_for_services(self) -> None:
        for service in self.spec.services:
            if service.health_cmd:
                self._wait_healthy(service)
            elif service.wait_for_port:
                self._wait_port(service, service.wait_for_port)

    def _wait_healthy(self, service: ServiceSpec) -> None:
        name = self.names.service(service.id)
        interval = max(service.health_interval_seconds, 0.1)
        retries = max(service.health_retries, 1)
        bound = interval * (retries + 1) + HEALTH_SLACK_SECONDS
        deadline = time.monotonic() + bound
        while True:
            state = self.api.inspect_container(name).get("State") or {}
            health = state.get("Health") or {}
            status = health.get("Status")
            if status == "healthy":
                return
            if not state.get("Running"):
                raise JobSetupError(
                    f"service '{service.id}' stopped (exit code {state.get('ExitCode')}) "
                    f"before it became healthy{self._service_tail(name)}"
                )
            if status == "unhealthy" or time.monotonic() >= deadline:
                checks = health.get("Log") or []
                last = _trim(str(checks[-1].get("Output", "")).strip(), 200) if checks else ""
                said = f"; its last health check said: {last}" if last else ""
                raise JobSetupError(
                    f"service '{service.id}' did not become healthy within {bound:g} s "
                    f"(health command: {service.health_cmd}){said}{self._service_tail(name)}"
                )
            self._pause(min(0.25, interval / 2), f"waiting for service '{service.id}'")

    def _wait_port(self, service: ServiceSpec, port: int) -> None:
        name = self.names.service(service.id)
        interval = max(service.health_interval_seconds, 0.1)
        bound = interval * max(service.health_retries, 1)
        deadline = time.monotonic() + bound
        while True:
            if self._probe_port(service, port):
                return
            state = self.api.inspect_container(name).get("State") or {}
            if not state.get("Running"):
                raise JobSetupError(
                    f"service '{service.id}' stopped (exit code {state.get('ExitCode')}) "
                    f"before port {port} answered{self._service_tail(name)}"
                )
            if time.monotonic() >= deadline:
                raise JobSetupError(
                    f"service '{service.id}' did not answer on port {port} within {bound:g} s"
                    f"{self._service_tail(name)}"
                )
            self._pause(interval, f"waiting for service '{service.id}'")

    def _probe_port(self, service: ServiceSpec, port: int) -> bool:
        code, _ = self._run_quick(["/bin/sh", "-c", PORT_PROBE, service.id, str(port)])
        if code != 127:
            return code == 0
        # No nc and no bash in the job image: try from here (works when the worker runs on the
        # Docker host, as the embedded setup does).
        networks = (
            self.api.inspect_container(self.names.service(service.id))
            .get("NetworkSettings", {})
            .get("Networks", {})
        )
        address = (networks.get(self._network) or {}).get("IPAddress")
        if not address:
            return False
        try:
            with socket.create_connection((address, port), timeout=1.0):
                return True
        except OSError:
            return False

    def _service_tail(self, name: str, lines: int = 5) -> str:
        try:
            text = self.api.logs(name, tail=lines).decode("utf-8", "replace").strip()
        except DockerException:
            return ""
        return f"; its last output: {_trim(' | '.join(text.splitlines()), 400)}" if text else ""

    def _pause(self, seconds: float, what: str) -> None:
        if self.cancel.wait(seconds):
            raise JobSetupError(f"cancelled while {what}")

    # ------------------------------------------------------------------ helpers

    def _require_container(self) -> str:
        if self._container is None:
            raise RuntimeError("the job container is not running: start() first")
        return self._container

    def _exec_env(self, env: Mapping[str, str]) -> dict[str, str]:
        env = dict(env)
        # The driver's PATH ends in a generic default; in a container the image's PATH is the
        # right default (golang, node, python images put their tools in their own places).
        path = env.get("PATH", "")
        if path.endswith(DEFAULT_PATH) and self._image_path != DEFAULT_PATH:
            env["PATH"] = path[: len(path) - len(DEFAULT_PATH)] + self._image_path
        return env

    def _exec_error(self, error: APIError) -> JobSetupError:
        state: dict[str, Any] = {}
        with contextlib.suppress(DockerException):
            state = self.api.inspect_container(self._require_container()).get("State") or {}
        if state and not state.get("Running"):
            if state.get("OOMKilled"):
                return JobSetupError(
                    "the job container ran out of memory and was stopped "
                    f"(memory limit {_size(self.spec.limits.memory_bytes)})"
                )
            return JobSetupError(
                f"the job container is no longer running (exit code {state.get('ExitCode')})"
            )
        return JobSetupError(
            f"could not start the step in the job container: {_short_reason(error)}"
        )

    def _signal_step(self, signal_name: str) -> None:
        try:
            self.api.kill(self._require_container(), signal=signal_name)
        except DockerException as error:
            log.warning("job %s: could not signal the step: %s", self.spec.job_id, error)

    def _oom_message(self) -> str:
        """A line for the log when the kernel killed a process of this job for memory."""
        limit = _size(self.spec.limits.memory_bytes)
        try:
            state = self.api.inspect_container(self._require_container()).get("State") or {}
        except DockerException:
            state = {}
        if state and not state.get("Running"):
            # The engine may record OOMKilled a moment after the container stopped.
            for _ in range(10):
                if state.get("OOMKilled"):
                    break
                time.sleep(0.1)
                with contextlib.suppress(DockerException):
                    state = self.api.inspect_container(self._require_container())["State"]
        if state.get("OOMKilled"):
            return f"Error: the job ran out of memory (limit {limit}): the container was killed."
        code, output = self._run_quick(["/bin/sh", "-c", OOM_COUNTER])
        if code is None:
            return ""
        found = re.search(rb"^oom_kill (\d+)$", output, re.MULTILINE)
        kills = int(found.group(1)) if found else 0
        if kills <= self._oom_kills:
            return ""
        self._oom_kills = kills
        return (
            f"Error: the step ran out of memory (limit {limit}): "
            "the kernel killed one of its processes."
        )

    def _run_quick(self, argv: list[str], timeout: float = 10.0) -> tuple[int | None, bytes]:
        """Run a short command of our own in the job container: (exit code, its output)."""
        try:
            execution = _Exec(self.api, self._require_container(), argv, workdir="/")
        except APIError as error:
            log.warning("job %s: exec %s failed: %s", self.spec.job_id, argv[:2], error)
            return None, b""
        output = bytearray()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                item = execution.next(POLL_SECONDS)
                if item is _EOF:
                    break
                if item is not None:
                    output += item[1]
        finally:
            execution.abort()
        return execution.exit_code(), bytes(output)

    def _pending_dir(self, directory: str) -> None:
        self._known_dirs.add(directory)
        self._pending.setdefault(directory + "/", b"")

    def _flush(self) -> None:
        if not self._pending:
            return
        container = self._require_container()
        archive = io.BytesIO()
        now = time.time()
        with tarfile.open(fileobj=archive, mode="w") as tar:
            entries = dict(self._pending)
            for path in list(entries):
                parent = posixpath.dirname(path.rstrip("/"))
                if parent.startswith(ROOT + "/") and parent not in self._known_dirs:
                    entries.setdefault(parent + "/", b"")
                    self._known_dirs.add(parent)
            # Directories before the files in them; modes so that a non-root image user can
            # write its step files too (everything here belongs to this one job).
            for path in sorted(entries, key=lambda p: (not p.endswith("/"), p)):
                info = tarfile.TarInfo(path.strip("/"))
                info.mtime = int(now)
                if path.endswith("/"):
                    info.type = tarfile.DIRTYPE
                    info.mode = 0o777
                    tar.addfile(info)
                else:
                    info.mode = 0o666
                    info.size = len(entries[path])
                    tar.addfile(info, io.BytesIO(entries[path]))
        self.api.put_archive(container, "/", archive.getvalue())
        self._pending.clear()

    def _read_directory(self, directory: str) -> dict[str, bytes] | None:
        """The regular files directly in `directory`, in one archive; None when too large."""
        self._flush()
        try:
            stream, _ = self.api.get_archive(self._require_container(), directory)
        except NotFound:
            return {}
        data = bytearray()
        try:
            for chunk in stream:
                data += chunk
                if len(data) > READ_CACHE_LIMIT:
                    return None
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
        files: dict[str, bytes] = {}
        with tarfile.open(fileobj=io.BytesIO(bytes(data))) as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 2:
                    extracted = tar.extractfile(member)
                    files[parts[1]] = extracted.read() if extracted else b""
        return files

    def _read_single(self, path: str) -> bytes:
        try:
            stream, _ = self.api.get_archive(self._require_container(), path)
        except NotFound:
            return b""
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
            member = tar.next()
            if member is None or not member.isfile():
                return b""
            extracted = tar.extractfile(member)
            return extracted.read() if extracted else b""

    def _remove_volume(self, name: str) -> None:
        # Right after its container was force-removed the engine may still see the volume in use.
        for attempt in range(20):
            try:
                self.api.remove_volume(name, force=True)
                return
            except NotFound:
                return
            except APIError as error:
                if error.status_code != 409 or attempt == 19:
                    raise
                time.sleep(0.1)


_EOF = object()


class _Exec:
    """One `docker exec`: its output read by a thread into a queue, so the caller can watch the
    clock while it waits; `abort()` shuts the connection down to end the reading."""

    def __init__(
        self,
        api: docker.APIClient,
        container: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        workdir: str = "/",
    ) -> None:
        self.api = api
        created = api.exec_create(
            container,
            argv,
            stdout=True,
            stderr=True,
            stdin=False,
            tty=False,
            environment=dict(env) if env is not None else None,
            workdir=workdir,
        )
        self.id = created["Id"]
        self.sock = api.exec_start(self.id, socket=True)
        self.chunks: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._pump, name=f"exec-{self.id[:12]}", daemon=True)
        self.thread.start()
        self._ended = False

    def _pump(self) -> None:
        try:
            for stream, data in frames_iter(self.sock, tty=False):
                if data:
                    self.chunks.put((stream, data))
        except (OSError, ValueError):
            pass  # the connection was shut down under us: abort()
        finally:
            self.chunks.put(_EOF)

    def next(self, timeout: float) -> Any:
        """(stream, bytes), _EOF once the output ended, or None when nothing came in time."""
        if self._ended:
            return _EOF
        try:
            item = self.chunks.get(timeout=timeout)
        except queue.Empty:
            return None
        if item is _EOF:
            self._ended = True
        return item

    def leftovers(self) -> Iterable[tuple[int, bytes]]:
        """What was read but not yet taken when we stopped waiting."""
        while True:
            try:
                item = self.chunks.get_nowait()
            except queue.Empty:
                return
            if item is not _EOF:
                yield item

    def running(self) -> bool:
        try:
            return bool(self.api.exec_inspect(self.id).get("Running"))
        except DockerException:
            return False

    def exit_code(self, wait: float = 1.0) -> int | None:
        # The stream can end a moment before the engine has recorded the exit code.
        deadline = time.monotonic() + wait
        while True:
            try:
                info = self.api.exec_inspect(self.id)
            except DockerException:
                return None
            if not info.get("Running") and info.get("ExitCode") is not None:
                return int(info["ExitCode"])
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.02)

    def abort(self) -> None:
        target = getattr(self.sock, "_sock", self.sock)
        with contextlib.suppress(OSError, AttributeError):
            target.shutdown(socket.SHUT_RDWR)
        self.thread.join(timeout=1.0)
        for closable in (self.sock, target, getattr(self.sock, "_response", None)):
            try:
                if closable is not None:
                    closable.close()
            except Exception:  # closing is best effort
                pass


def run_docker_job(
    spec: JobSpec,
    sink: EventSink,
    *,
    cancel: CancelToken | None = None,
    client: docker.DockerClient | None = None,
    default_image: str = DEFAULT_IMAGE,
    grace_seconds: float = 10.0,
    allow_privileged: bool = False,
    step_output_cap: int = DEFAULT_CAP_BYTES,
    artifacts: ArtifactStore | None = None,
    caches: CacheStore | None = None,
    deployments: DeploymentRecorderFactory | None = None,
    deploy_state_dir: Path | None = None,
) -> JobResult:
    """Run one job on the Docker executor and return its result (the sink saw everything)."""
    cancel = cancel or CancelToken()
    try:
        backend = DockerBackend(
            spec,
            client=client,
            default_image=default_image,
            grace_seconds=grace_seconds,
            allow_privileged=allow_privileged,
            cancel=cancel,
        )
    except DockerException as error:
        # No engine: the job still gets a visible result instead of an exception in the worker.
        message = f"the Docker engine is not reachable: {_short_reason(error)}"
        sink.job_started()
        sink.log(None, [LogLine(timestamp=time.time(), stream="system", text=f"Error: {message}")])
        result = JobResult(conclusion=FAILURE, error=message)
        sink.job_finished(result)
        return result
    driver = JobDriver(
        spec,
        backend,
        sink,
        cancel=cancel,
        step_output_cap=step_output_cap,
        artifacts=artifacts,
        caches=caches,
        deployments=deployments,
        deploy_state_dir=deploy_state_dir,
    )
    return driver.run()


# ------------------------------------------------------------------------------------ helpers


def _member_opener(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], BinaryIO | None]:
    return lambda: tar.extractfile(member)  # type: ignore[return-value]


def _check_inside(path: str, roots: Iterable[str]) -> None:
    normal = posixpath.normpath(path)
    if normal != path or not any(path.startswith(root + "/") for root in roots):
        raise CacheError(f"cannot unpack {path!r}: it is not inside the workspace or HOME")


def _ignore_missing(action: Callable[[], object]) -> None:
    try:
        action()
    except NotFound:
        pass
    except APIError as error:
        if error.status_code == 409 and "already in progress" in str(error.explanation or ""):
            return  # someone else (the reaper, a retry) is removing it right now
        raise


def _env_value(env: Iterable[str], name: str) -> str:
    for item in env:
        key, _, value = item.partition("=")
        if key == name:
            return value
    return ""


def _short_reason(error: DockerException) -> str:
    explanation = getattr(error, "explanation", None)
    text = explanation if explanation else str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return str(text).strip().splitlines()[0] if str(text).strip() else type(error).__name__


def _trim(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _size(value: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor:
            return f"{value / factor:g} {unit}"
    return f"{value} bytes"
