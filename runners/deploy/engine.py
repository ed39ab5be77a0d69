"""The deployment engine: replaces the version a service runs, by strategy, behind its HAProxy.

`deploy` runs in the worker process (the `cicd/deploy` step, or a rollback task) and knows
nothing of Django: it reports through a DeploymentRecorder. One deployment of a service at a
time: the recorder holds the environment's lock, and a file lock in the service's state
directory guards the engine itself (two environments naming one service wait for each other).

What runs now is read from the engine (containers labelled with the service, see
runners.deploy.containers) and from `<state_dir>/<service>/state.json`, which says which set of
replicas (generation) is live and which one is kept for switch-back. When the file is missing or
names containers that are gone, the newest running set is live. Before anything else a
deployment brings HAProxy in line with that (live servers enabled, every other slot disabled)
and removes leftovers: the replicas of a deployment that crashed half-way, or an expired
switch-back set.

Strategies (each step recorded with timings and detail; every change of the traffic split
reported; cancel and the step's deadline honoured):
- first deployment (nothing runs): start the replicas, probe each, enable them all.
- rolling: `max-surge` replicas at a time: start and probe them, enable them, analyse the new
  servers for `step-pause` seconds, then drain and remove as many old ones. A rollback re-creates
  the old replicas already removed before the new ones go.
- blue-green: start and probe the whole new set beside the old, then switch at once (new ready,
  old disabled), analyse. The old set keeps running, disabled, for switch-back: a later
  deployment of that same version within `switch-back` seconds (the one-action rollback) switches
  back to it at once instead of starting new containers. It is removed by the next deployment
  of another version, or by `teardown`; nothing runs between deployments to remove it earlier.
- canary: start and probe the whole new set without traffic, then shift traffic by HAProxy
  weights through the `canary-steps` (new version ~step% of requests), analysing each step for
  `step-pause` seconds; at 100% (after its analysis) the old set is removed.
Any failed check (a replica that does not start, a readiness probe, an analysis) rolls back:
traffic returns to the old version, the new replicas are removed, and the outcome is
`rolled_back` with the check, the value measured and the threshold in the reason. With nothing to
return to (a first deployment) the outcome is `failed`; after a cancel it is `cancelled`; when
the step's deadline passes it is `failed`. An error of the engine or HAProxy also rolls back, and
the outcome is `failed`. A rollback never removes the last replicas serving: when no old one can
be brought back, the new ones stay and the outcome is `failed`.

Deploying the version that already runs, with the same port, environment and replica count,
changes nothing (success).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import json
import logging
import math
import os
import secrets
import time
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from runners.deploy.analysis import analyse
from runners.deploy.containers import DockerTarget, Replica, ReplicaSpec
from runners.deploy.haproxy import (
    DRAIN,
    MAINT,
    MAX_WEIGHT,
    SLOTS,
    STEADY_WEIGHT,
    Frontend,
    HAProxy,
    Server,
)
from runners.deploy.request import (
    BLUE_GREEN,
    CANARY,
    CANCELLED,
    FAILED,
    ROLLED_BACK,
    SUCCESS,
    DeployError,
    DeploymentRecorder,
    DeployRequest,
    DeployResult,
    check_service_name,
    short_image_id,
    version_label,
)
from runners.events import CancelToken

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
DRAIN_SECONDS = 15.0  # the longest wait for a drained server's requests to finish
PROBE_INTERVAL_SECONDS = 0.2
PROBE_REQUEST_SECONDS = 2.0
ROLLBACK_PROBE_SECONDS = 60.0  # a rollback's re-created old replicas: the longest probe

Say = Callable[[str], None]


def deploy(
    request: DeployRequest,
    recorder: DeploymentRecorder,
    *,
    state_dir: Path,
    cancel: CancelToken,
    say: Say,
    deadline: float | None = None,
) -> DeployResult:
    """Deploy `request.image` to `request.service`; `deadline` is a time.monotonic() value.
    Never raises for a deployment that fails: the result (and the recorder) says how it ended."""
    state_dir = Path(state_dir)
    try:
        target = DockerTarget(request.docker_host)
    except DeployError as error:
        return _failed_before_start(request, recorder, "", str(error), cancel, say)
    try:
        try:
            image_id = target.resolve_image(request.image)
        except DeployError as error:
            return _failed_before_start(request, recorder, "", str(error), cancel, say)
        try:
            haproxy = HAProxy(state_dir, request.service)
        except DeployError as error:
            return _failed_before_start(request, recorder, image_id, str(error), cancel, say)
        # The waits for the locks end with the step's time, as the deployment itself does.
        waiting = cancel.until(deadline)
        if not recorder.begin(request, image_id, cancel=waiting, say=say):
            result = _not_locked(waiting, "the deployment lock", image_id)
            say(f"Deployment {_OUTCOME_WORDS[result.outcome]}: {result.reason}")
            return result
        try:
            with _service_lock(haproxy.directory, waiting, say) as locked:
                if locked:
                    run = _Deployment(request, recorder, target, haproxy, image_id, cancel, say)
                    result = run.run(deadline)
                else:
                    result = _not_locked(waiting, "the service's lock", image_id)
        except Exception as error:  # the recorder must hear of it, or the lock waits its lease
            log.exception("deployment of %s failed", request.service)
            result = DeployResult(FAILED, f"the deployment failed unexpectedly: {error}", image_id)
        recorder.finish(result.outcome, result.reason)
        say(f"Deployment {_OUTCOME_WORDS[result.outcome]}: {result.reason}")
        return result
    finally:
        target.close()


def teardown(service: str, *, state_dir: Path, docker_host: str | None = None) -> None:
    """Remove a service: its containers, its HAProxy and its state (environment removal,
    tests). DeployError when the engine cannot be reached."""
    check_service_name(service)  # it names a directory
    haproxy = HAProxy(Path(state_dir), service)
    target = DockerTarget(docker_host)
    try:
        haproxy.stop()
        target.remove_all(service)
    finally:
        target.close()
    for name in (
        STATE_FILE,
        "haproxy.cfg",
        "haproxy.pid",
        "haproxy.log",
        "admin.sock",
        "lock",
    ):
        with contextlib.suppress(FileNotFoundError):
            (haproxy.directory / name).unlink()
    with contextlib.suppress(OSError):
        haproxy.directory.rmdir()


_OUTCOME_WORDS = {
    SUCCESS: "succeeded",
    FAILED: "failed",
    ROLLED_BACK: "rolled back",
    CANCELLED: "cancelled",
}


def _failed_before_start(
    request: DeployRequest,
    recorder: DeploymentRecorder,
    image_id: str,
    reason: str,
    cancel: CancelToken,
    say: Say,
) -> DeployResult:
    """Nothing could be tried (no engine, no image, no haproxy): still recorded, so the
    environment's history shows the attempt and why."""
    say(f"Error: {reason}")
    if not recorder.begin(request, image_id, cancel=cancel, say=say):
        return DeployResult(CANCELLED, "cancelled while waiting for the deployment lock")
    recorder.finish(FAILED, reason)
    return DeployResult(FAILED, reason, image_id)


def _not_locked(waiting: CancelToken, lock: str, image_id: str) -> DeployResult:
    """How a deployment ends that never got `lock`: out of time (a failure), or cancelled."""
    if waiting.timed_out:
        return DeployResult(FAILED, f"timed out while waiting for {lock}", image_id)
    return DeployResult(CANCELLED, f"cancelled while waiting for {lock}", image_id)


@contextlib.contextmanager
def _service_lock(directory: Path, cancel: CancelToken, say: Say) -> Generator[bool, None, None]:
    """An exclusive lock on the service's state directory (False: cancelled while waiting)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "lock", "a+") as handle:
        said = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not said:
                    say(f"Waiting for another deployment of {directory.name} on this worker")
                    said = True
                if cancel.wait(0.5):
                    yield False
                    return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Abort(Exception):
    """Stops a deployment; `check`: a check failed (a rollback's outcome is rolled_back)."""

    def __init__(self, reason: str, *, check: bool = False, cancelled: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.check = check
        self.cancelled = cancelled


class _Deployment:
    def __init__(
        self,
        request: DeployRequest,
        recorder: DeploymentRecorder,
        target: DockerTarget,
        haproxy: HAProxy,
        image_id: str,
        cancel: CancelToken,
        say: Say,
    ) -> None:
        self.request = request
        self.recorder = recorder
        self.target = target
        self.haproxy = haproxy
        self.image_id = image_id
        self.cancel = cancel
        self.say = say
        self.deadline: float | None = None
        self.spec = ReplicaSpec(
            version=image_id,
            image=request.image,
            generation=_new_generation(),
            config=_config_hash(request),
            port=request.port,
            env=tuple(f"{name}={value}" for name, value in sorted(request.env.items())),
            health_path=request.health_path,
        )
        self.old: list[Replica] = []  # the live set when the deployment started, still there
        self.new: list[Replica] = []  # the new set, as far as it runs
        self.retired: list[Replica] = []  # old replicas already removed (rolling)
        self.standby: list[Replica] = []  # the set kept for switch-back, when it is deployed now
        self.old_label = ""
        self.last_split: dict[str, int] = {}  # the split last reported to the recorder
        self.new_label = version_label(request.image, image_id)

    # ---------------------------------------------------------------- the whole deployment

    def run(self, deadline: float | None) -> DeployResult:
        self.deadline = deadline
        request = self.request
        try:
            self._prepare()
            if not self.old:
                self._first_deployment()
                standby: list[Replica] = []
            elif self.standby:
                self._switch_back()
                standby = list(self.old) if request.switch_back_seconds > 0 else []
            elif self._unchanged():
                return DeployResult(
                    SUCCESS,
                    f"{self.new_label} already runs, {len(self.old)} replicas",
                    self.image_id,
                )
            elif request.strategy == BLUE_GREEN:
                self._blue_green()
                standby = list(self.old) if request.switch_back_seconds > 0 else []
            elif request.strategy == CANARY:
                self._canary()
                standby = []
            else:
                self._rolling()
                standby = []
        except _Abort as abort:
            return self._roll_back(abort)
        except DeployError as error:
            return self._roll_back(_Abort(str(error)))
        except Exception as error:
            log.exception("deployment of %s failed", request.service)
            return self._roll_back(_Abort(f"unexpected error: {error}"))
        if self.old and not standby:
            self._remove_quietly(self.old, "the old set")
        self._write_state(self.new, standby)
        if standby:
            self.say(
                f"The old set ({self.old_label}) keeps running, disabled, for switch-back: "
                f"deploying it again within {request.switch_back_seconds:g} s switches back at "
                "once"
            )
        return DeployResult(
            SUCCESS,
            f"{self.new_label} serves all traffic ({len(self.new)} replicas)",
            self.image_id,
        )

    def _prepare(self) -> None:
        """Find what runs, bring HAProxy in line with it, remove leftovers."""
        request = self.request
        with self._step("Prepare", service=request.service, listen=request.listen) as detail:
            replicas = self.target.replicas(request.service)
            state = self._read_state()
            generations: dict[str, list[Replica]] = {}
            for replica in replicas:
                generations.setdefault(replica.generation, []).append(replica)

            def serving(generation: str | None) -> list[Replica]:
                members = generations.get(generation or "", [])
                return [r for r in members if r.running and r.host_port and 1 <= r.slot <= SLOTS]

            live = state.get("live")
            if not serving(live):
                newest = [r for r in reversed(replicas) if serving(r.generation)]
                live = newest[0].generation if newest else None
            self.old = serving(live)
            standby = state.get("standby")
            candidates = serving(standby) if standby != live else []
            if candidates and self._may_switch_back(candidates, state):
                self.standby = candidates
            keep = {r.id for r in self.old + self.standby}
            leftovers = [r for r in replicas if r.id not in keep]

            if self.old:
                self.old_label = version_label(self.old[0].image, self.old[0].version)
                if self.old_label == self.new_label and not self.standby:
                    self.new_label += " (new set)"
            servers = {r.slot: self._server(r) for r in self.old}
            frontend = Frontend(request.listen, request.health_path)
            how = self.haproxy.ensure(frontend, servers)
            if how == "running":
                for replica in self.old:
                    self.haproxy.enable(replica.slot, self._server(replica))
            self.say(
                f"HAProxy for {request.service} on {request.listen}: {how} "
                f"(state in {self.haproxy.directory})"
            )
            if leftovers:
                self.say(f"Removing leftovers: {', '.join(r.name for r in leftovers)}")
                self._remove(leftovers)
            self._disable_unused_slots(keep_enabled={r.slot for r in self.old})
            if self.old:
                self.say(f"Now serving: {self.old_label}, {_slots(self.old)}")
                self._report({self.old_label: 100})
            else:
                self.say(f"Nothing runs for {request.service} yet: a first deployment")
            detail.update(
                haproxy=how,
                current_version=self.old[0].version if self.old else "",
                current_replicas=len(self.old),
                removed=[r.name for r in leftovers],
                switch_back_set=[r.name for r in self.standby],
            )

    def _may_switch_back(self, candidates: list[Replica], state: Mapping[str, Any]) -> bool:
        """The set kept for switch-back is exactly what is asked for, and still in time."""
        until = state.get("standby_until")
        return (
            isinstance(until, int | float)
            and time.time() < until
            and all(r.version == self.image_id for r in candidates)
            and all(r.config == self.spec.config for r in candidates)
            and len(candidates) == self.request.replicas
        )

    def _unchanged(self) -> bool:
        return (
            len(self.old) == self.request.replicas
            and all(r.version == self.image_id for r in self.old)
            and all(r.config == self.spec.config for r in self.old)
        )

    # ---------------------------------------------------------------- strategies

    def _first_deployment(self) -> None:
        count = self.request.replicas
        with self._step(f"Start {count} replicas of {self.new_label}") as detail:
            started = self._start(count)
            self._probe(started)
            detail.update(_replica_detail(started))
        with self._step("Enable the replicas") as detail:
            for replica in started:
                self.haproxy.enable(replica.slot, self._server(replica))
            self._traffic()
            detail.update(slots=[r.slot for r in started])

    def _rolling(self) -> None:
        request = self.request
        surge = min(request.max_surge, request.replicas)
        batches = math.ceil(request.replicas / surge)
        remaining = list(self.old)
        for batch in range(1, batches + 1):
            size = min(surge, request.replicas - len(self.new))
            of = f"batch {batch} of {batches}"
            with self._step(f"Start {_count(size)} of {self.new_label} ({of})") as detail:
                started = self._start(size)
                self._probe(started)
                for replica in started:
                    self.haproxy.enable(replica.slot, self._server(replica))
                self._traffic(remaining)
                detail.update(_replica_detail(started))
            self._analyse(f"Analysis ({of})")
            keep = max(0, request.replicas - len(self.new))
            going = remaining[: max(0, len(remaining) - keep)]
            if going:
                with self._step(
                    f"Remove {_count(len(going))} of {self.old_label} ({of})"
                ) as detail:
                    detail.update(_replica_detail(going))
                    self.retired.extend(going)
                    remaining = remaining[len(going) :]
                    self.old = remaining
                    self._remove(going, traffic_from=remaining)

    def _blue_green(self) -> None:
        count = self.request.replicas
        with self._step(f"Start the new set: {_count(count)} of {self.new_label}") as detail:
            started = self._start(count)
            self._probe(started)
            detail.update(_replica_detail(started))
        self._switch(f"Switch traffic to {self.new_label}")
        self._analyse("Analysis")

    def _switch_back(self) -> None:
        self.new = list(self.standby)
        label = f"Switch back to {self.new_label} (kept for switch-back)"
        with self._step(f"Probe the set kept for switch-back: {_slots(self.new)}") as detail:
            self._probe(self.new)
            detail.update(_replica_detail(self.new))
        self._switch(label)
        self._analyse("Analysis")

    def _switch(self, name: str) -> None:
        """All traffic to the new set at once; the old set stays, disabled."""
        with self._step(name) as detail:
            for replica in self.new:
                self.haproxy.enable(replica.slot, self._server(replica))
            for replica in self.old:
                self.haproxy.set_state(replica.slot, MAINT)
            self._traffic(old=[])
            detail.update(enabled=[r.slot for r in self.new], disabled=[r.slot for r in self.old])

    def _canary(self) -> None:
        request = self.request
        count = request.replicas
        with self._step(f"Start the canary set: {_count(count)} of {self.new_label}") as detail:
            started = self._start(count)
            self._probe(started)
            detail.update(_replica_detail(started))
        for percent in request.canary_steps:
            new_weight, old_weight = canary_weights(percent, len(self.new), len(self.old))
            with self._step(f"Canary {percent}%") as detail:
                for replica in self.new:
                    self.haproxy.enable(replica.slot, self._server(replica, weight=new_weight))
                for replica in self.old:
                    self.haproxy.set_weight(replica.slot, old_weight)
                self._report({self.old_label: 100 - percent, self.new_label: percent})
                detail.update(percent=percent, new_weight=new_weight, old_weight=old_weight)
            self._analyse(f"Analysis at {percent}%")

    # ---------------------------------------------------------------- rollback

    def _roll_back(self, abort: _Abort) -> DeployResult:
        """Traffic back to the old version, the new replicas removed; the result."""
        if abort.cancelled:
            outcome = CANCELLED
        elif abort.check and (self.old or self.retired):
            outcome = ROLLED_BACK
        else:
            outcome = FAILED
        reason = abort.reason
        self.say(f"Error: {reason}")
        if not self.new and not self.retired:
            return DeployResult(outcome, reason, self.image_id)
        try:
            with self._step("Roll back", reason=reason) as detail:
                restored = self._restore_retired()
                serving = self.old + restored
                for replica in serving:
                    self.haproxy.enable(replica.slot, self._server(replica))
                if serving or not (self.old or self.retired):
                    self._remove(self.new, traffic_from=serving)
                    gone, self.new = self.new, []
                    detail.update(removed=[r.name for r in gone], serving=_slots(serving))
                    self._write_state(serving, [])
                    if serving:
                        self.say(f"Rolled back: {self.old_label} serves all traffic again")
                else:
                    raise DeployError(
                        f"no replica of {self.old_label} could be brought back, so "
                        f"{self.new_label} keeps serving"
                    )
        except Exception as error:  # the rollback itself failed: say so, keep the first reason
            if not isinstance(error, DeployError | _Abort):
                log.exception("rollback of %s failed", self.request.service)
            shown = error.reason if isinstance(error, _Abort) else str(error)
            return DeployResult(FAILED, f"{reason}; the rollback failed: {shown}", self.image_id)
        return DeployResult(outcome, reason, self.image_id)

    def _restore_retired(self) -> list[Replica]:
        """Re-create the old replicas a rolling deployment already removed (same version,
        set, environment and health path), probed: those that got ready."""
        restored: list[Replica] = []
        for replica in self.retired:
            spec = ReplicaSpec(
                version=replica.version,
                image=replica.image,
                generation=replica.generation,
                config=replica.config,
                port=replica.port,
                env=replica.env,
                health_path=replica.health_path,
            )
            again = None
            try:
                again = self.target.start(self.request.service, self._free_slots(1)[0], spec)
                self._probe([again], rollback=True)
                restored.append(again)
            except (DeployError, _Abort) as error:
                shown = error.reason if isinstance(error, _Abort) else str(error)
                self.say(f"Warning: {replica.name} could not be brought back: {shown}")
                if again is not None:
                    self.target.remove([again])
        self.retired = []
        return restored

    # ---------------------------------------------------------------- building blocks

    def _start(self, count: int) -> list[Replica]:
        """Start `count` replicas of the new version in free slots (no traffic yet)."""
        started: list[Replica] = []
        for slot in self._free_slots(count):
            self._check_stop("starting the new replicas")
            try:
                replica = self.target.start(self.request.service, slot, self.spec)
            except DeployError as error:  # the new version's fault, as a failed probe is
                raise _Abort(str(error), check=True) from None
            self.new.append(replica)
            started.append(replica)
            if replica.host_port is None:
                raise _Abort(
                    f"slot{slot} ({replica.name}) stopped right after it started: "
                    f"{self.target.state(replica) or 'its port was not published'}",
                    check=True,
                )
        self.say(f"Started {', '.join(f'{r.name} on port {r.host_port}' for r in started)}")
        return started

    def _free_slots(self, count: int) -> list[int]:
        used = {r.slot for r in self.old + self.new + self.standby + self.retired}
        used |= {r.slot for r in self.target.replicas(self.request.service)}
        free = [slot for slot in range(1, SLOTS + 1) if slot not in used]
        if len(free) < count:
            raise DeployError(
                f"{self.request.service} has no free HAProxy slot left ({SLOTS} in all): remove "
                "leftover containers of the service, or deploy fewer replicas"
            )
        return free[:count]

    def _probe(self, replicas: Sequence[Replica], *, rollback: bool = False) -> None:
        """Wait until each replica answers its health path with 2xx/3xx."""
        timeout = ROLLBACK_PROBE_SECONDS if rollback else self.request.health_timeout_seconds
        for replica in replicas:
            path = replica.health_path
            url = f"http://{_host(self.target.address)}:{replica.host_port}{path}"
            started = time.monotonic()
            last, checked = "no answer yet", started
            while True:
                if not rollback:
                    self._check_stop(f"the readiness probe of slot{replica.slot}")
                answer = _http_status(self.target.address, replica.host_port or 0, path)
                if isinstance(answer, int) and 200 <= answer < 400:
                    self.say(
                        f"slot{replica.slot} is ready ({url}: HTTP {answer} after "
                        f"{time.monotonic() - started:.1f} s)"
                    )
                    break
                last = f"HTTP {answer}" if isinstance(answer, int) else answer
                now = time.monotonic()
                if now - checked >= 1.0:
                    checked = now
                    state = self.target.state(replica)
                    if state:
                        raise _Abort(
                            f"readiness probe of slot{replica.slot} ({url}) failed: the "
                            f"container {state}",
                            check=True,
                        )
                if now - started >= timeout:
                    raise _Abort(
                        f"readiness probe of slot{replica.slot} ({url}) failed after "
                        f"{timeout:g} s: {last}",
                        check=True,
                    )
                if rollback:
                    time.sleep(PROBE_INTERVAL_SECONDS)
                else:
                    self._sleep(
                        PROBE_INTERVAL_SECONDS, f"the readiness probe of slot{replica.slot}"
                    )

    def _analyse(self, name: str) -> None:
        """Analysis of the new servers for `step-pause` seconds (none with skip-analysis)."""
        request = self.request
        if request.skip_analysis or request.step_pause_seconds <= 0:
            return
        with self._step(name, seconds=request.step_pause_seconds) as detail:
            self.say(f"{name}: watching {_slots(self.new)} for {request.step_pause_seconds:g} s")
            verdict = analyse(
                self.haproxy,
                request,
                [r.slot for r in self.new],
                short_image_id(self.image_id),
                request.step_pause_seconds,
                wait=lambda seconds: self._sleep(seconds, name.lower()),
            )
            detail.update(verdict.detail)
            if not verdict.passed:
                raise _Abort(verdict.reason, check=True)
            self.say(f"{name} passed: {verdict.reason}")

    def _remove(self, replicas: Sequence[Replica], *, traffic_from: Iterable[Replica] = ()) -> None:
        """Take replicas out gracefully: drain, wait for their requests to finish (bounded),
        disable, then stop and remove the containers."""
        if not replicas:
            return
        slots = [r.slot for r in replicas]
        stats = self.haproxy.stats()
        for slot in slots:
            if slot in stats and not stats[slot].status.startswith("MAINT"):
                self.haproxy.set_state(slot, DRAIN)
        self._traffic(list(traffic_from), new=[r for r in self.new if r not in replicas])
        limit = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < limit:
            stats = self.haproxy.stats()
            if all(stats[slot].current_sessions == 0 for slot in slots if slot in stats):
                break
            time.sleep(0.1)
        for slot in slots:
            self.haproxy.set_state(slot, MAINT)
        self.target.remove(replicas)
        self.say(f"Removed {', '.join(r.name for r in replicas)}")

    def _remove_quietly(self, replicas: Sequence[Replica], what: str) -> None:
        """After a success: the old set goes; a failure here leaves a leftover the next
        deployment removes, never a failed deployment."""
        try:
            with self._step(f"Remove {what}: {_slots(replicas)}") as detail:
                detail.update(_replica_detail(replicas))
                self._remove(replicas, traffic_from=())
        except Exception as error:  # reported; the next deployment cleans up
            self.say(f"Warning: {what} could not be removed ({error}); the next deployment will")

    def _disable_unused_slots(self, keep_enabled: set[int]) -> None:
        for slot, stats in self.haproxy.stats().items():
            if slot not in keep_enabled and not stats.status.startswith("MAINT"):
                self.haproxy.set_state(slot, MAINT)

    def _server(self, replica: Replica, *, weight: int = STEADY_WEIGHT) -> Server:
        return Server(self.target.address, replica.host_port or 0, weight)

    def _traffic(
        self, old: Sequence[Replica] | None = None, new: Sequence[Replica] | None = None
    ) -> None:
        """Report the split of equally weighted servers: old and new replicas serving."""
        old = self.old if old is None else old
        new = self.new if new is None else new
        total = len(old) + len(new)
        if total == 0:
            return
        new_percent = round(100 * len(new) / total)
        self._report({self.old_label: 100 - new_percent, self.new_label: new_percent})

    def _report(self, split: Mapping[str, int]) -> None:
        shown = {label: percent for label, percent in split.items() if label and percent > 0}
        if shown == self.last_split:
            return
        self.last_split = shown
        self._tell("traffic split", lambda: self.recorder.traffic(shown))
        self.say("Traffic: " + ", ".join(f"{label} {p}%" for label, p in shown.items()))

    def _check_stop(self, during: str) -> None:
        if self.cancel.cancelled:
            raise _Abort(f"{self.cancel.reason or 'cancelled'} during {during}", cancelled=True)
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise _Abort(f"the step's time limit was reached during {during}")

    def _sleep(self, seconds: float, during: str) -> None:
        if self.deadline is not None:
            seconds = min(seconds, max(0.0, self.deadline - time.monotonic()))
        self.cancel.wait(seconds)
        self._check_stop(during)

    @contextlib.contextmanager
    def _step(self, name: str, **detail: Any) -> Generator[dict[str, Any], None, None]:
        """A recorded step: its detail (filled in by the body), timing and outcome."""
        index = self._tell("step", lambda: self.recorder.step_started(name, dict(detail)))
        self.say(f"— {name}")
        started = time.monotonic()
        result = dict(detail)
        try:
            yield result
        except _Abort as abort:
            result.update(error=abort.reason, seconds=round(time.monotonic() - started, 3))
            outcome = CANCELLED if abort.cancelled else FAILED
            self._finish_step(index, outcome, result)
            raise
        except Exception as error:
            result.update(error=str(error), seconds=round(time.monotonic() - started, 3))
            self._finish_step(index, FAILED, result)
            raise
        result["seconds"] = round(time.monotonic() - started, 3)
        self._finish_step(index, SUCCESS, result)

    def _finish_step(self, index: int | None, outcome: str, detail: dict[str, Any]) -> None:
        if index is not None:
            self._tell("step", lambda: self.recorder.step_finished(index, outcome, detail))

    def _tell(self, what: str, call: Callable[[], Any]) -> Any:
        """Report to the recorder. Its storage failing must not stop a deployment half-way,
        nor its rollback: the deployment goes on, with a warning (None returned)."""
        try:
            return call()
        except Exception as error:
            log.exception("the recorder of %s failed", self.request.service)
            self.say(f"Warning: the deployment's {what} could not be recorded: {error}")
            return None

    # ---------------------------------------------------------------- state file

    def _read_state(self) -> dict[str, Any]:
        try:
            data = json.loads((self.haproxy.directory / STATE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write_state(self, live: Sequence[Replica], standby: Sequence[Replica]) -> None:
        """Which set is live and which is kept for switch-back (and until when)."""
        data: dict[str, Any] = {"live": live[0].generation if live else None}
        if standby:
            data["standby"] = standby[0].generation
            data["standby_until"] = time.time() + self.request.switch_back_seconds
        path = self.haproxy.directory / STATE_FILE
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)


# ------------------------------------------------------------------------------ helpers


def canary_weights(percent: int, new_count: int, old_count: int) -> tuple[int, int]:
    """(weight of each new server, weight of each old server) giving the new version about
    `percent` of the requests: HAProxy weights are 0..256, so the larger per-server share gets
    the most of that range."""
    if percent >= 100 or old_count == 0:
        return STEADY_WEIGHT, 0
    scale = MAX_WEIGHT / max(percent / new_count, (100 - percent) / old_count)
    new_weight = max(1, min(MAX_WEIGHT, round(percent / new_count * scale)))
    old_weight = max(1, min(MAX_WEIGHT, round((100 - percent) / old_count * scale)))
    return new_weight, old_weight


def _http_status(address: str, port: int, path: str) -> int | str:
    """The status of GET path, or why there is none."""
    connection = http.client.HTTPConnection(address, port, timeout=PROBE_REQUEST_SECONDS)
    try:
        connection.request("GET", path, headers={"User-Agent": "cicd-deploy-probe"})
        response = connection.getresponse()
        response.read(65536)
        return response.status
    except (OSError, http.client.HTTPException) as error:
        return str(error) or type(error).__name__
    finally:
        connection.close()


def _new_generation() -> str:
    # Sorts by time: the newest set is the live one when the state file is lost.
    return f"{time.strftime('%Y%m%d%H%M%S', time.gmtime())}-{secrets.token_hex(3)}"


def _config_hash(request: DeployRequest) -> str:
    """What a replica runs besides its image: a change means new containers."""
    text = json.dumps({"port": request.port, "env": dict(sorted(request.env.items()))})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _count(count: int) -> str:
    return f"{count} replica" + ("" if count == 1 else "s")


def _slots(replicas: Iterable[Replica]) -> str:
    return ", ".join(f"slot{r.slot}" for r in replicas) or "none"


def _replica_detail(replicas: Sequence[Replica]) -> dict[str, Any]:
    return {
        "slots": [r.slot for r in replicas],
        "containers": [r.name for r in replicas],
        "ports": [r.host_port for r in replicas],
    }
