"""Deployments: how long `cicd/deploy` takes to replace a version, and what its users notice.

No cicd server: the deployment engine (`runners.deploy.deploy`) is called directly, as a job
worker calls it, with a real Docker engine and a real HAProxy per service. The service is the
tiny busybox application of bench/deployapp.py (v1, v2, and a bad v2 answering HTTP 500 to half
of its requests); a load generator sends a constant stream of requests through HAProxy (a new
connection each) for as long as the service runs, and counts what it got back.

For each strategy (rolling, blue-green, canary), each repeat on a new service:
- the first deployment of v1 (nothing runs yet);
- the request latency through HAProxy while no deployment runs (a few seconds of the load);
- v1 → v2 under the load: seconds from the call to its return (the old set removed, or kept
  disabled for blue-green's switch-back), and the requests that failed meanwhile;
- the rollback as `cicd rollback --skip-analysis` does it (the same request on v1's image id,
  no analysis, no pauses): seconds until only v1 serves again, and the requests failed.
Then, on new services, a canary to the bad v2: seconds from the call until it was rolled back,
and the share of requests that failed meanwhile (the bad version's 500s reach users until the
analysis sees them).

Every deployment's analysis window (`step-pause`) is stated in the figures' load: most of a
deployment's time is that window, by design. Every service (containers, HAProxy, state
directory) is removed afterwards, also when a deployment fails or the run is interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from bench.deployapp import (
    BAD_V2,
    HEALTH_PATH,
    V1,
    V2,
    LoadGenerator,
    Tally,
    ensure_deploy_image,
    free_port,
    short_state_dir,
)
from bench.report import Figure, Target
from bench.system import BenchError
from runners.deploy import (
    BLUE_GREEN,
    CANARY,
    ROLLED_BACK,
    ROLLING,
    SUCCESS,
    DeployError,
    DeployRequest,
    DeployResult,
    deploy,
    teardown,
)
from runners.deploy.haproxy import find_haproxy
from runners.events import CancelToken


@dataclass(frozen=True)
class Load:
    repeats: int  # per strategy, and of the canary to the bad version
    replicas: int
    rate: float  # requests per second through HAProxy
    step_pause: float  # seconds: the analysis window (canary: of each step)
    min_requests: int  # fewer in a window: the error rate is not judged
    steady_seconds: float  # the latency sample, with no deployment running


FULL = Load(repeats=3, replicas=3, rate=100.0, step_pause=5.0, min_requests=20, steady_seconds=5.0)
SMOKE = Load(repeats=1, replicas=2, rate=100.0, step_pause=0.5, min_requests=5, steady_seconds=1.0)
STRATEGIES = (ROLLING, BLUE_GREEN, CANARY)
CANARY_STEPS = (5, 25, 50, 100)
CLIENT_THREADS = 8
DEPLOY_SECONDS = 300.0  # the longest a deployment may take (its step's deadline)
HEALTH_TIMEOUT_SECONDS = 30.0
FAILED_PERCENT_TARGET = 10.0  # the canary to the bad version: the share of requests failed


@dataclass
class _Step:
    name: str
    outcome: str = ""
    seconds: float = 0.0
    detail: dict[str, Any] = field(default_factory=dict)


class _Recorder:
    """A DeploymentRecorder keeping each step's outcome and seconds (no lock to take: one
    deployment of a service at a time, on one machine)."""

    def __init__(self) -> None:
        self.steps: list[_Step] = []

    def begin(
        self,
        request: DeployRequest,
        image_digest: str,
        *,
        cancel: CancelToken,
        say: Callable[[str], None],
    ) -> bool:
        return True

    def step_started(self, name: str, detail: Mapping[str, Any]) -> int:
        self.steps.append(_Step(name))
        return len(self.steps) - 1

    def step_finished(self, index: int, outcome: str, detail: Mapping[str, Any]) -> None:
        step = self.steps[index]
        step.outcome = outcome
        step.seconds = float(detail.get("seconds", 0.0))
        step.detail = dict(detail)

    def traffic(self, split: Mapping[str, int]) -> None:
        pass

    def finish(self, outcome: str, reason: str = "") -> None:
        pass

    def analysis_seconds(self) -> float:
        return sum(s.seconds for s in self.steps if s.name.startswith("Analysis"))

    def failed_step(self) -> str:
        return next((s.name for s in self.steps if s.outcome == "failed"), "")


@dataclass
class _Deployed:
    """One deployment measured: how it ended, how long it took, what the load saw meanwhile."""

    result: DeployResult
    seconds: float
    recorder: _Recorder
    requests: int = 0
    failures: int = 0


@dataclass
class _Service:
    name: str
    state_dir: Path
    listen: str
    cancel: CancelToken = field(default_factory=CancelToken)
    lines: list[str] = field(default_factory=list)  # what the engine said

    def deploy(self, request: DeployRequest, load: LoadGenerator | None = None) -> _Deployed:
        recorder = _Recorder()
        before = load.tally() if load else None
        started = time.monotonic()
        result = deploy(
            request,
            recorder,
            state_dir=self.state_dir,
            cancel=self.cancel,
            say=self.lines.append,
            deadline=started + DEPLOY_SECONDS,
        )
        deployed = _Deployed(result, time.monotonic() - started, recorder)
        if load is not None and before is not None:
            after = load.tally()
            deployed.requests = after.requests - before.requests
            deployed.failures = after.failures - before.failures
        return deployed

    def expect(self, deployed: _Deployed, outcome: str, what: str) -> None:
        if deployed.result.outcome != outcome:
            said = "\n".join(self.lines[-15:])
            raise BenchError(
                f"{what} of {self.name}: {deployed.result.outcome} ({deployed.result.reason}), "
                f"expected {outcome}; the engine said last:\n{said}"
            )

    def tear_down(self) -> None:
        try:
            teardown(self.name, state_dir=self.state_dir)
        except DeployError as error:
            print(f"==> deploy: could not tear {self.name} down: {error}", file=sys.stderr)
        shutil.rmtree(self.state_dir, ignore_errors=True)


class _Benchmark:
    def __init__(self, context: Any, load: Load, images: dict[str, str]) -> None:
        self.context = context
        self.load = load
        self.images = images
        self.first_deployments: list[float] = []
        self.latencies: list[float] = []  # seconds, requests answered with no deployment running
        self.rates: list[float] = []  # requests per second the load generator achieved

    @contextlib.contextmanager
    def service(self) -> Iterator[_Service]:
        """A new service, removed at the end; when the run is interrupted (the lane's context
        stops) it is cancelled and removed from there."""
        service = _Service(f"bench-{uuid.uuid4().hex[:8]}", short_state_dir(), "")
        service.listen = f"127.0.0.1:{free_port()}"

        def interrupted() -> None:
            service.cancel.cancel("the benchmark was interrupted")
            service.tear_down()

        self.context.cleanups.append(interrupted)
        try:
            yield service
        finally:
            with contextlib.suppress(ValueError):
                self.context.cleanups.remove(interrupted)
            service.tear_down()

    def request(self, service: _Service, image: str, **options: Any) -> DeployRequest:
        values: dict[str, Any] = {
            "service": service.name,
            "image": image,
            "listen": service.listen,
            "replicas": self.load.replicas,
            "health_path": HEALTH_PATH,
            "health_timeout_seconds": HEALTH_TIMEOUT_SECONDS,
            "step_pause_seconds": self.load.step_pause,
            "min_requests": self.load.min_requests,
            "canary_steps": CANARY_STEPS,
        }
        values.update(options)
        return DeployRequest(**values)

    @contextlib.contextmanager
    def traffic(self, service: _Service) -> Iterator[LoadGenerator]:
        generator = LoadGenerator(service.listen, rate=self.load.rate, threads=CLIENT_THREADS)
        started = time.monotonic()
        with generator:
            generator.wait_for_answers(2 * CLIENT_THREADS)
            yield generator
        self.rates.append(generator.requests / (time.monotonic() - started))

    def first_deployment(self, service: _Service) -> None:
        first = service.deploy(self.request(service, V1))
        service.expect(first, SUCCESS, "the first deployment of v1")
        self.first_deployments.append(first.seconds)

    def steady_latency(self, load: LoadGenerator) -> None:
        before = load.tally()
        time.sleep(self.load.steady_seconds)
        after = load.tally()
        if after.failures != before.failures:
            raise BenchError(f"requests failed with no deployment running: {load.summary()}")
        self.latencies += _latencies(load, before, after)

    def serves_only(self, service: _Service, load: LoadGenerator, version: str) -> None:
        """The next answers (after those in flight) all come from `version`."""
        load.wait_for_answers(2 * CLIENT_THREADS + 10)
        with load.lock:
            recent = load.recent[-10:]
        if recent != [version] * 10:
            raise BenchError(
                f"{service.name} should serve only {version} now, the last answers were "
                f"{recent} ({load.summary()})"
            )

    def upgrade_and_roll_back(self, strategy: str) -> tuple[_Deployed, _Deployed]:
        """v1, then v1 → v2 by `strategy` under the load, then the rollback to v1."""
        with self.service() as service:
            self.first_deployment(service)
            with self.traffic(service) as load:
                self.steady_latency(load)
                upgrade = service.deploy(self.request(service, V2, strategy=strategy), load)
                service.expect(upgrade, SUCCESS, f"v1 → v2 by {strategy}")
                self.serves_only(service, load, "v2")
                # As a rollback replays it: the stored request, on v1's image id, no analysis.
                back = self.request(service, self.images[V1], strategy=strategy)
                rollback = service.deploy(dataclasses.replace(back, skip_analysis=True), load)
                service.expect(rollback, SUCCESS, f"the rollback to v1 ({strategy})")
                self.serves_only(service, load, "v1")
        return upgrade, rollback

    def bad_canary(self) -> _Deployed:
        with self.service() as service:
            self.first_deployment(service)
            with self.traffic(service) as load:
                request = self.request(service, BAD_V2, strategy=CANARY)
                canary = service.deploy(request, load)
                service.expect(canary, ROLLED_BACK, "the canary of the bad v2")
                self.serves_only(service, load, "v1")
        return canary


def run(context: Any) -> list[Figure]:
    load = SMOKE if context.smoke else FULL
    find_haproxy()  # a clear error when haproxy is missing
    client = docker.from_env()
    try:
        client.ping()
        images = {name: ensure_deploy_image(client, name) for name in (V1, V2, BAD_V2)}
        setup = _setup(client)
    finally:
        client.close()
    bench = _Benchmark(context, load, images)
    upgrades: dict[str, list[_Deployed]] = {}
    rollbacks: dict[str, list[_Deployed]] = {}
    for strategy in STRATEGIES:
        for _ in range(load.repeats):
            upgrade, rollback = bench.upgrade_and_roll_back(strategy)
            upgrades.setdefault(strategy, []).append(upgrade)
            rollbacks.setdefault(strategy, []).append(rollback)
    bad = [bench.bad_canary() for _ in range(load.repeats)]
    return _figures(load, setup, bench, upgrades, rollbacks, bad)


def _figures(
    load: Load,
    setup: str,
    bench: _Benchmark,
    upgrades: dict[str, list[_Deployed]],
    rollbacks: dict[str, list[_Deployed]],
    bad: list[_Deployed],
) -> list[Figure]:
    traffic = (
        f"under {load.rate:g} requests/s through HAProxy ({CLIENT_THREADS} client threads, a new "
        "connection per request)"
    )
    words = (
        f"{load.replicas} replicas, v1 → v2 then rollback to v1, step-pause {load.step_pause:g} s "
        f"(the analysis window; canary: per step of {', '.join(map(str, CANARY_STEPS))} %), "
        f"min-requests {load.min_requests}, max-surge 1, {load.repeats} repeat(s) per strategy "
        f"on a new service, {traffic}"
    )
    figures: list[Figure] = []
    for strategy in STRATEGIES:
        key = strategy.replace("-", "_")
        done = upgrades[strategy]
        figures.append(
            Figure(
                f"deploy.seconds_{key}",
                f"deployment v1 → v2, {strategy}",
                "s",
                words,
                setup,
                [d.seconds for d in done],
                sample="deployment",
                details={
                    "seconds of analysis in each": [
                        round(d.recorder.analysis_seconds(), 2) for d in done
                    ],
                    "steps (name: seconds) of the first": {
                        s.name: round(s.seconds, 2) for s in done[0].recorder.steps
                    },
                },
            )
        )
    for strategy in STRATEGIES:
        key = strategy.replace("-", "_")
        done = upgrades[strategy]
        figures.append(
            Figure(
                f"deploy.failed_{key}",
                f"requests failed during v1 → v2, {strategy}",
                "requests",
                words,
                setup,
                [float(d.failures) for d in done],
                sample="deployment",
                target=Target("<=", 0),
                details={"requests during each": [d.requests for d in done]},
            )
        )
    for strategy in STRATEGIES:
        key = strategy.replace("-", "_")
        done = rollbacks[strategy]
        figures.append(
            Figure(
                f"deploy.rollback_{key}",
                f"rollback to v1 with skip-analysis, {strategy}: until only v1 serves",
                "s",
                words,
                setup,
                [d.seconds for d in done],
                sample="rollback",
                details={
                    "requests failed during each": [d.failures for d in done],
                    "requests during each": [d.requests for d in done],
                },
            )
        )
    figures.append(
        Figure(
            "deploy.first_deployment",
            f"first deployment: {load.replicas} replicas of v1 and a new HAProxy",
            "s",
            words,
            setup,
            bench.first_deployments,
            sample="deployment",
        )
    )
    bad_words = (
        f"{load.replicas} replicas of v1, canary to a v2 answering HTTP 500 to half of its "
        f"requests, steps {', '.join(map(str, CANARY_STEPS))} %, step-pause {load.step_pause:g} s, "
        f"max-error-rate 5 %, min-requests {load.min_requests}, {load.repeats} repeat(s) on a new "
        f"service, {traffic}"
    )
    figures += [
        Figure(
            "deploy.bad_canary_seconds",
            "canary to a bad v2: from start to rolled back",
            "s",
            bad_words,
            setup,
            [d.seconds for d in bad],
            sample="deployment",
            details={
                "rolled back at": [d.recorder.failed_step() for d in bad],
                "reasons": [d.result.reason for d in bad],
            },
        ),
        Figure(
            "deploy.bad_canary_failed_percent",
            "requests failed during the canary to a bad v2",
            "%",
            bad_words,
            setup,
            [100.0 * d.failures / d.requests if d.requests else 0.0 for d in bad],
            sample="deployment",
            target=Target("<=", FAILED_PERCENT_TARGET),
            details={
                "requests failed during each": [d.failures for d in bad],
                "requests during each": [d.requests for d in bad],
            },
        ),
    ]
    if not bench.latencies:
        raise BenchError("no request was answered while no deployment ran")
    figures.append(
        Figure(
            "deploy.latency",
            "request latency through HAProxy, no deployment running",
            "ms",
            f"{load.replicas} replicas of v1 (a busybox httpd CGI script), "
            f"{load.steady_seconds:g} s before each v1 → v2, {traffic}",
            setup,
            [1000 * seconds for seconds in bench.latencies],
            sample="request",
            details={"requests/s achieved, per service": [round(rate, 1) for rate in bench.rates]},
        )
    )
    return figures


def _latencies(load: LoadGenerator, before: Tally, after: Tally) -> list[float]:
    with load.lock:
        return load.latencies[before.answered : after.answered]


def _setup(client: docker.DockerClient) -> str:
    info = client.info()
    version = subprocess.run(
        [find_haproxy(), "-v"], capture_output=True, text=True, check=False
    ).stdout.split()
    haproxy = version[2] if len(version) > 2 else "?"
    return (
        f"Docker {info.get('ServerVersion', '?')} ({info.get('Driver', '?')} storage driver), "
        f"HAProxy {haproxy}, the engine called directly (no cicd server)"
    )
