"""The deployment engine against a real Docker engine and a real HAProxy (never skipped).

Every test deploys a service of its own (a unique name, a free listen port, a short state
directory) and tears it down, so the tests run in parallel. A load generator sends requests
through HAProxy during the deployments and counts what it got back: the versions and the
failures. Analysis windows are a second or so, with small min-requests, so that each test takes
seconds.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import docker
import pytest

from runners.deploy import (
    CANCELLED,
    FAILED,
    ROLLED_BACK,
    SUCCESS,
    DeployRequest,
    DeployResult,
    deploy,
    teardown,
)
from runners.deploy.containers import LABEL_SERVICE, LABEL_VERSION
from runners.deploy.haproxy import HAProxy, find_haproxy
from runners.events import CancelToken
from tests.runners.deploy_images import (
    BAD_V2,
    V1,
    V2,
    LoadGenerator,
    RecordingRecorder,
    ensure_deploy_image,
    free_port,
    short_state_dir,
)
from tests.runners.images import docker_client

pytestmark = pytest.mark.docker


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    find_haproxy()  # fails (never skips) when haproxy is missing
    client = docker_client()
    yield client
    client.close()


@pytest.fixture(scope="module")
def images(client: docker.DockerClient) -> dict[str, str]:
    """image reference -> image id."""
    return {name: ensure_deploy_image(client, name) for name in (V1, V2, BAD_V2)}


@dataclass
class Service:
    name: str
    state_dir: Path
    listen: str
    client: docker.DockerClient
    lines: list[str]

    def request(self, image: str, **options: Any) -> DeployRequest:
        values: dict[str, Any] = {
            "service": self.name,
            "image": image,
            "listen": self.listen,
            "replicas": 2,
            "health_path": "/health",
            "health_timeout_seconds": 20.0,
            "step_pause_seconds": 1.0,
            "min_requests": 10,
        }
        values.update(options)
        return DeployRequest(**values)

    def deploy(
        self,
        request: DeployRequest,
        recorder: RecordingRecorder | None = None,
        cancel: CancelToken | None = None,
    ) -> tuple[DeployResult, RecordingRecorder]:
        recorder = recorder if recorder is not None else RecordingRecorder()
        result = deploy(
            request,
            recorder,
            state_dir=self.state_dir,
            cancel=cancel or CancelToken(),
            say=self.lines.append,
            deadline=time.monotonic() + 120,
        )
        assert recorder.finished == (result.outcome, result.reason) or (
            result.outcome == CANCELLED and recorder.finished is None
        )
        return result, recorder

    def containers(self) -> list[Any]:
        return self.client.containers.list(
            all=True, filters={"label": f"{LABEL_SERVICE}={self.name}"}
        )

    def versions_running(self) -> list[str]:
        return sorted(c.labels[LABEL_VERSION] for c in self.containers() if c.status == "running")

    def haproxy(self) -> HAProxy:
        return HAProxy(self.state_dir, self.name)

    def enabled_slots(self) -> set[int]:
        return {
            slot
            for slot, stats in self.haproxy().stats().items()
            if not stats.status.startswith("MAINT") and stats.weight > 0
        }

    def answers(self, count: int = 20) -> set[str]:
        """The versions `count` fresh requests through HAProxy got (failures as text)."""
        with LoadGenerator(self.listen, rate=200) as load:
            load.wait_for_answers(count)
        return set(load.versions) | set(load.failures)


@pytest.fixture
def service(client: docker.DockerClient, images: dict[str, str]) -> Iterator[Service]:
    state_dir = short_state_dir()
    made = Service(
        name=f"t-{uuid.uuid4().hex[:10]}",
        state_dir=state_dir,
        listen=f"127.0.0.1:{free_port()}",
        client=client,
        lines=[],
    )
    try:
        yield made
    finally:
        teardown(made.name, state_dir=state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


def test_first_deployment_starts_the_replicas_behind_haproxy(
    service: Service, images: dict[str, str]
) -> None:
    result, recorder = service.deploy(service.request(V1, replicas=3))
    assert result == DeployResult(SUCCESS, result.reason, images[V1])
    assert recorder.began == [(service.request(V1, replicas=3), images[V1])]
    assert service.versions_running() == [images[V1]] * 3
    assert len(service.enabled_slots()) == 3
    assert service.answers() == {"v1"}
    assert recorder.steps[0]["name"] == "Prepare"
    assert all(s["outcome"] == SUCCESS for s in recorder.steps)
    assert recorder.splits[-1] == {f"{V1} ({images[V1][:19]})": 100}
    assert any("HAProxy for" in line and "started" in line for line in service.lines)

    # The same version again: nothing to change.
    again, _ = service.deploy(service.request(V1, replicas=3))
    assert again.outcome == SUCCESS and "already runs" in again.reason
    assert len(service.containers()) == 3


def test_rolling_v1_to_v2_fails_no_request(service: Service, images: dict[str, str]) -> None:
    service.deploy(service.request(V1))
    with LoadGenerator(service.listen) as load:
        load.wait_for_answers(20)
        result, recorder = service.deploy(service.request(V2, strategy="rolling"))
        load.wait_for_answers(20)
    assert result.outcome == SUCCESS, result.reason
    assert load.failures == [], load.summary()
    assert load.versions["v1"] > 0 and load.versions["v2"] > 0
    assert load.recent[-10:] == ["v2"] * 10
    assert service.versions_running() == [images[V2]] * 2
    assert service.answers() == {"v2"}
    v1, v2 = f"{V1} ({images[V1][:19]})", f"{V2} ({images[V2][:19]})"
    assert recorder.splits == [
        {v1: 100},
        {v1: 67, v2: 33},  # the first new replica beside both old ones
        {v1: 50, v2: 50},
        {v1: 33, v2: 67},
        {v2: 100},
    ]
    names = [s["name"] for s in recorder.steps]
    assert [n.split(" (")[0] for n in names if n.startswith("Analysis")] == ["Analysis"] * 2
    analysis = recorder.step("Analysis")
    assert analysis["outcome"] == SUCCESS and analysis["detail"]["requests"] >= 10
    assert analysis["detail"]["errors"] == 0


def test_blue_green_switches_at_once_and_back(service: Service, images: dict[str, str]) -> None:
    service.deploy(service.request(V1))
    old_ids = {c.id for c in service.containers()}
    with LoadGenerator(service.listen) as load:
        load.wait_for_answers(20)
        result, recorder = service.deploy(service.request(V2, strategy="blue-green"))
        load.wait_for_answers(20)
        assert result.outcome == SUCCESS, result.reason
        assert load.recent[-10:] == ["v2"] * 10

        # The old set keeps running, disabled, for switch-back.
        assert service.versions_running() == sorted([images[V1]] * 2 + [images[V2]] * 2)
        running = {c.id: c for c in service.containers()}
        v1_slots = {int(running[i].labels["cicd.deploy.slot"]) for i in old_ids}
        assert not v1_slots & service.enabled_slots()
        v1, v2 = f"{V1} ({images[V1][:19]})", f"{V2} ({images[V2][:19]})"
        assert recorder.splits == [{v1: 100}, {v2: 100}]

        # Deploying v1 again (the one-action rollback) switches back to the kept containers.
        back, recorder = service.deploy(service.request(V1, skip_analysis=True))
        load.wait_for_answers(20)
    assert back.outcome == SUCCESS, back.reason
    assert any(s["name"].startswith("Switch back to") for s in recorder.steps)
    assert not any(s["name"].startswith("Analysis") for s in recorder.steps)  # skip-analysis
    assert load.failures == [], load.summary()
    assert load.recent[-10:] == ["v1"] * 10
    assert old_ids <= {c.id for c in service.containers()}  # the very same containers
    assert service.answers() == {"v1"}

    # A deployment of another version removes the set kept for switch-back (v2 now).
    third, _ = service.deploy(service.request(V2, strategy="blue-green", switch_back_seconds=0))
    assert third.outcome == SUCCESS, third.reason
    assert service.versions_running() == [images[V2]] * 2


def test_canary_v1_to_bad_v2_rolls_back_at_the_first_step(
    service: Service, images: dict[str, str]
) -> None:
    service.deploy(service.request(V1))
    with LoadGenerator(service.listen) as load:
        load.wait_for_answers(20)
        request = service.request(
            BAD_V2, strategy="canary", canary_steps=(20, 50, 100), step_pause_seconds=5.0
        )
        result, recorder = service.deploy(request)
        load.wait_for_answers(40)
    assert result.outcome == ROLLED_BACK
    analysis = recorder.step("Analysis at 20%")
    assert analysis["outcome"] == "failed"
    measured = analysis["detail"]["error_rate"]
    assert measured > 5
    assert result.reason == (
        f"error rate {measured:.1f}% of {analysis['detail']['requests']} requests to "
        f"{images[BAD_V2][:19]} exceeded max-error-rate 5%"
    )
    assert not any(s["name"].startswith("Canary 50%") for s in recorder.steps)
    assert recorder.step("Roll back")["outcome"] == SUCCESS
    v1, bad = f"{V1} ({images[V1][:19]})", f"{BAD_V2} ({images[BAD_V2][:19]})"
    assert recorder.splits == [{v1: 100}, {v1: 80, bad: 20}, {v1: 100}]
    assert service.versions_running() == [images[V1]] * 2  # the canary's containers are gone
    assert load.recent[-10:] == ["v1"] * 10
    assert len(load.failures) < 0.1 * load.requests, load.summary()
    assert set(load.failures) <= {"HTTP 500"}


def test_canary_v1_to_v2_shifts_traffic_by_steps(service: Service, images: dict[str, str]) -> None:
    service.deploy(service.request(V1))
    with LoadGenerator(service.listen) as load:
        load.wait_for_answers(20)
        request = service.request(V2, strategy="canary", canary_steps=(25, 50, 100))
        result, recorder = service.deploy(request)
        load.wait_for_answers(20)
    assert result.outcome == SUCCESS, result.reason
    assert load.failures == [], load.summary()
    v1, v2 = f"{V1} ({images[V1][:19]})", f"{V2} ({images[V2][:19]})"
    assert recorder.splits == [{v1: 100}, {v1: 75, v2: 25}, {v1: 50, v2: 50}, {v2: 100}]
    for percent in (25, 50, 100):
        step = recorder.step(f"Canary {percent}%")
        assert step["outcome"] == SUCCESS and step["detail"]["percent"] == percent
        assert recorder.step(f"Analysis at {percent}%")["outcome"] == SUCCESS
    assert service.versions_running() == [images[V2]] * 2
    assert service.answers() == {"v2"}


def test_a_replica_that_never_gets_ready_rolls_back(
    service: Service, images: dict[str, str]
) -> None:
    service.deploy(service.request(V1))
    # v2 told to listen on a port where nothing answers: its probe never succeeds.
    request = service.request(V2, port=9999, health_timeout_seconds=1.5)
    result, _ = service.deploy(request)
    assert result.outcome == ROLLED_BACK
    assert result.reason.startswith("readiness probe of slot3 (http://127.0.0.1:")
    assert "/health) failed after 1.5 s:" in result.reason
    assert service.versions_running() == [images[V1]] * 2
    assert service.answers() == {"v1"}


def test_a_first_deployment_that_fails_leaves_nothing(
    service: Service, images: dict[str, str]
) -> None:
    result, _ = service.deploy(
        service.request(V1, health_path="/missing", health_timeout_seconds=1.0)
    )
    assert result.outcome == FAILED
    assert "failed after 1 s: HTTP 404" in result.reason
    assert service.containers() == []


def test_haproxy_killed_is_started_again_from_the_containers(
    service: Service, images: dict[str, str]
) -> None:
    service.deploy(service.request(V1))
    haproxy = service.haproxy()
    pid = int(haproxy.pid_path.read_text())
    os.kill(pid, signal.SIGKILL)
    (haproxy.directory / "state.json").unlink()  # the worker's state is lost too
    deadline = time.monotonic() + 5
    while haproxy.running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not haproxy.running()

    result, recorder = service.deploy(service.request(V2, skip_analysis=True))
    assert result.outcome == SUCCESS, result.reason
    prepare = recorder.step("Prepare")["detail"]
    assert prepare["haproxy"] == "started"
    assert prepare["current_version"] == images[V1]  # found from the containers' labels
    assert prepare["current_replicas"] == 2
    assert service.versions_running() == [images[V2]] * 2
    assert service.answers() == {"v2"}


def test_cancel_during_a_canary_returns_traffic_to_the_old_version(
    service: Service, images: dict[str, str]
) -> None:
    service.deploy(service.request(V1))
    cancel = CancelToken()

    class CancellingRecorder(RecordingRecorder):
        def traffic(self, split: Any) -> None:
            super().traffic(split)
            if len(self.splits) == 2:  # the first canary step
                cancel.cancel("cancelled by alice")

    request = service.request(V2, strategy="canary", step_pause_seconds=30.0)
    result, recorder = service.deploy(request, CancellingRecorder(), cancel)
    assert result.outcome == CANCELLED
    assert result.reason.startswith("cancelled by alice during analysis at 5%")
    assert recorder.step("Analysis at 5%")["outcome"] == CANCELLED
    assert service.versions_running() == [images[V1]] * 2
    assert service.answers() == {"v1"}


def test_prometheus_analysis(service: Service, images: dict[str, str]) -> None:
    queries: list[str] = []

    class Prometheus(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            queries.append(urllib.parse.parse_qs(url.query)["query"][0])
            body = {
                "status": "success",
                "data": {
                    "resultType": "vector",
                    "result": [
                        {"metric": {"pod": "a"}, "value": [time.time(), "0.2"]},
                        {"metric": {"pod": "b"}, "value": [time.time(), "0.9"]},
                    ],
                },
            }
            data = json.dumps(body).encode()
            self.send_response(200 if url.path == "/api/v1/query" else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Prometheus)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        service.deploy(service.request(V1))
        request = service.request(
            V2,
            strategy="blue-green",
            step_pause_seconds=0.5,
            prometheus_url=f"http://127.0.0.1:{server.server_port}",
            prometheus_query='max(errors{service="web"})',
            prometheus_max=0.5,
        )
        result, _ = service.deploy(request)
        assert result.outcome == ROLLED_BACK
        assert result.reason == (
            "prometheus query 'max(errors{service=\"web\"})' returned 0.9, over prometheus-max 0.5"
        )
        assert queries == ['max(errors{service="web"})']
        assert service.versions_running() == [images[V1]] * 2

        passing = replace(request, prometheus_max=1.0)
        result, recorder = service.deploy(passing)
        assert result.outcome == SUCCESS, result.reason
        assert recorder.step("Analysis")["detail"]["prometheus_value"] == 0.9
    finally:
        server.shutdown()
        server.server_close()


def test_teardown_removes_everything(service: Service, images: dict[str, str]) -> None:
    service.deploy(service.request(V1))
    haproxy = service.haproxy()
    pid = int(haproxy.pid_path.read_text())
    teardown(service.name, state_dir=service.state_dir)
    assert service.containers() == []
    assert not haproxy.directory.exists()
    deadline = time.monotonic() + 5
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{pid}").exists()
    host, port = service.listen.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):  # nothing listens any more
        socket.create_connection((host, int(port)), timeout=2).close()
    teardown(service.name, state_dir=service.state_dir)  # again: nothing left, no error


def test_no_engine_no_lock_no_deployment(service: Service, images: dict[str, str]) -> None:
    recorder = RecordingRecorder()
    result, recorder = service.deploy(
        service.request(V1, docker_host="tcp://127.0.0.1:1"), recorder
    )
    assert result.outcome == FAILED and "is not reachable" in result.reason
    assert recorder.began and recorder.began[0][1] == ""  # the attempt is recorded

    refused = RecordingRecorder(allow=False)
    result, refused = service.deploy(service.request(V1), refused)
    assert result.outcome == CANCELLED and refused.finished is None
    assert service.containers() == []


def test_a_new_listen_address_reloads_haproxy(service: Service, images: dict[str, str]) -> None:
    service.deploy(service.request(V1))
    old_pid = int(service.haproxy().pid_path.read_text())
    first_listen, service.listen = service.listen, f"127.0.0.1:{free_port()}"
    result, recorder = service.deploy(service.request(V2, skip_analysis=True))
    assert result.outcome == SUCCESS, result.reason
    assert recorder.step("Prepare")["detail"]["haproxy"] == "reloaded"
    assert int(service.haproxy().pid_path.read_text()) != old_pid
    assert service.answers() == {"v2"}
    deadline = time.monotonic() + 10
    while Path(f"/proc/{old_pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not Path(f"/proc/{old_pid}").exists()  # the old process finished and left
    host, port = first_listen.rsplit(":", 1)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((host, int(port)), timeout=2).close()


def test_a_listen_address_in_use_fails_clearly(service: Service) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        service.listen = f"127.0.0.1:{taken.getsockname()[1]}"
        result, recorder = service.deploy(service.request(V1))
    assert result.outcome == FAILED
    assert result.reason.startswith(f"haproxy for {service.name} did not start (exit code")
    assert "cannot bind socket" in result.reason and service.listen in result.reason
    assert recorder.steps[0]["outcome"] == "failed"
    assert service.containers() == []


def test_a_rolling_rollback_brings_back_the_old_replicas_already_removed(
    service: Service, images: dict[str, str]
) -> None:
    service.deploy(service.request(V1))
    first_ids = {c.id for c in service.containers()}
    cancel = CancelToken()
    v1 = f"{V1} ({images[V1][:19]})"

    class CancellingRecorder(RecordingRecorder):
        def traffic(self, split: Any) -> None:
            super().traffic(split)
            if split.get(v1) == 33:  # the second new replica is in: one old one is gone
                cancel.cancel("cancelled by bob")

    with LoadGenerator(service.listen) as load:
        load.wait_for_answers(20)
        request = service.request(V2, strategy="rolling", step_pause_seconds=2.0)
        result, recorder = service.deploy(request, CancellingRecorder(), cancel)
        load.wait_for_answers(20)
    assert result.outcome == CANCELLED
    assert result.reason.startswith("cancelled by bob during analysis (batch 2 of 2)")
    assert recorder.step("Roll back")["outcome"] == SUCCESS
    assert recorder.splits[-1] == {v1: 100}
    assert load.failures == [], load.summary()
    assert load.recent[-10:] == ["v1"] * 10
    assert service.versions_running() == [images[V1]] * 2
    assert len({c.id for c in service.containers()} - first_ids) == 1  # one re-created
    assert service.answers() == {"v1"}


class EngineOverTcp:
    """The local engine's API offered on tcp://<address>:<port>, as a remote engine is: every
    connection is passed through to the engine's Unix socket, byte for byte."""

    def __init__(self, address: str, engine_socket: str = "/var/run/docker.sock") -> None:
        self.engine_socket = engine_socket
        self.listener = socket.create_server((address, 0))
        self.url = f"tcp://{address}:{self.listener.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                outside, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            engine = socket.socket(socket.AF_UNIX)
            engine.connect(self.engine_socket)
            for source, sink in ((outside, engine), (engine, outside)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)


def test_an_engine_reached_over_tcp_is_deployed_to_at_its_address(
    service: Service, images: dict[str, str]
) -> None:
    """A remote engine (`docker-host: tcp://...`): its containers publish on all interfaces and
    HAProxy, on the worker, reaches them at the engine's address, not at 127.0.0.1. The engine is
    this machine's, offered on its Docker bridge address, which is not a loopback address."""
    ipam = service.client.networks.get("bridge").attrs["IPAM"]["Config"][0]
    # The engine's side of its bridge: its gateway, the subnet's first address unless told.
    bridge = ipam.get("Gateway") or str(next(ipaddress.ip_network(ipam["Subnet"]).hosts()))
    engine = EngineOverTcp(bridge)
    try:
        remote = replace(service.request(V1), docker_host=engine.url)
        result, _ = service.deploy(remote)
        assert result.outcome == SUCCESS, result.reason
        with LoadGenerator(service.listen) as load:
            load.wait_for_answers(20)
            result, _ = service.deploy(replace(remote, image=V2, strategy="rolling"))
            load.wait_for_answers(20)
        assert result.outcome == SUCCESS, result.reason
        assert load.failures == [], load.summary()
        assert service.answers() == {"v2"}
        assert engine.connections > 0  # the engine was driven over TCP

        for container in service.containers():
            bindings = container.attrs["HostConfig"]["PortBindings"]
            assert [b["HostIp"] for ports in bindings.values() for b in ports] == ["0.0.0.0"]
        state = service.haproxy().command("show servers state")
        serving = {f"slot{slot}" for slot in service.enabled_slots()}
        rows = [line.split() for line in state.splitlines()[2:] if line.strip()]
        assert len(serving) == 2
        assert {row[4] for row in rows if row[3] in serving} == {bridge}  # srv_name, srv_addr

        teardown(service.name, state_dir=service.state_dir, docker_host=engine.url)
        assert service.containers() == []
    finally:
        engine.close()
