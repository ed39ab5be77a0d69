"""The Docker target of a deployment: a service's replicas as labelled containers.

The containers are the source of truth of what runs: every one carries
- `cicd.deploy.service`: the service it belongs to;
- `cicd.deploy.version`: the image id it runs (`sha256:...`; a tag may move, the id does not);
- `cicd.deploy.slot`: its HAProxy server slot (1..64), unique within the service;
- `cicd.deploy.image`: the image reference as the workflow gave it, for people;
- `cicd.deploy.generation`: the deployment that started it (a set of replicas);
- `cicd.deploy.config`: a hash of what it runs besides the image (port, environment);
- `cicd.deploy.port`: the container port the service listens on;
- `cicd.deploy.health-path`: the path its readiness probe asks (a rollback probes it again).
So a crashed deployment or a restarted worker finds the current set by asking the engine.

Each replica publishes its port on an ephemeral host port: on 127.0.0.1 for a local engine (the
load balancer runs on the same host), on all interfaces for a remote engine (`tcp://` or
`ssh://` DOCKER_HOST), which is then reached at its host's address. Containers run with an init
process (signals reach the server, so a stop takes milliseconds) and restart unless stopped.
Images are never removed.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import docker
from docker.errors import DockerException, ImageNotFound, NotFound
from docker.utils import parse_repository_tag

from runners.deploy.request import DeployError

LABEL_SERVICE = "cicd.deploy.service"
LABEL_VERSION = "cicd.deploy.version"
LABEL_SLOT = "cicd.deploy.slot"
LABEL_IMAGE = "cicd.deploy.image"
LABEL_GENERATION = "cicd.deploy.generation"
LABEL_CONFIG = "cicd.deploy.config"
LABEL_PORT = "cicd.deploy.port"
LABEL_HEALTH_PATH = "cicd.deploy.health-path"


@dataclass(frozen=True, slots=True)
class Replica:
    """One container of a service, as the engine describes it."""

    id: str
    name: str
    slot: int
    version: str  # image id
    image: str  # image reference as given
    generation: str
    config: str
    port: int  # container port
    env: tuple[str, ...]  # NAME=VALUE as created: a rollback re-creates a removed replica
    health_path: str
    running: bool
    host_port: int | None  # the published port, None when not running
    created: str  # the engine's timestamp (ISO 8601): orders generations


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """What to start: everything but the slot."""

    version: str
    image: str
    generation: str
    config: str
    port: int
    env: tuple[str, ...]
    health_path: str


class DockerTarget:
    """A Docker engine running a service's replicas."""

    def __init__(self, docker_host: str | None) -> None:
        shown = docker_host or os.environ.get("DOCKER_HOST") or "the local Docker engine"
        try:
            self.client = (
                docker.DockerClient(base_url=docker_host, timeout=120)
                if docker_host
                else docker.from_env(timeout=120)
            )
            self.client.ping()
        except DockerException as error:
            raise DeployError(f"{shown} is not reachable: {short_reason(error)}") from None
        self.address, self.bind_address = _addresses(docker_host or os.environ.get("DOCKER_HOST"))

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    def resolve_image(self, reference: str) -> str:
        """The image id of `reference`, pulled when the engine does not have it."""
        try:
            return str(self.client.images.get(reference).id)
        except ImageNotFound:
            pass
        except DockerException as error:
            raise DeployError(
                f"image {reference!r} could not be inspected: {short_reason(error)}"
            ) from None
        if reference.startswith("sha256:"):
            raise DeployError(f"image {reference} is not on the Docker engine")
        repository, tag = parse_repository_tag(reference)
        try:
            self.client.api.pull(repository, tag=tag or "latest")
            return str(self.client.images.get(reference).id)
        except DockerException as error:
            raise DeployError(
                f"image {reference!r} is not on the Docker engine and could not be pulled: "
                f"{short_reason(error)}"
            ) from None

    def replicas(self, service: str) -> list[Replica]:
        """Every container of `service`, running or not, oldest first."""
        try:
            listed = self.client.api.containers(
                all=True, filters={"label": f"{LABEL_SERVICE}={service}"}
            )
            found = []
            for summary in listed:
                with contextlib.suppress(NotFound):  # removed meanwhile
                    found.append(_replica(self.client.api.inspect_container(summary["Id"])))
        except DockerException as error:
            raise DeployError(
                f"the containers of {service} could not be listed: {short_reason(error)}"
            ) from None
        return sorted(found, key=lambda replica: (replica.created, replica.slot))

    def start(self, service: str, slot: int, spec: ReplicaSpec) -> Replica:
        """Create and start one replica in `slot`; DeployError when it cannot start (the
        container is removed again)."""
        labels = {
            LABEL_SERVICE: service,
            LABEL_VERSION: spec.version,
            LABEL_SLOT: str(slot),
            LABEL_IMAGE: spec.image,
            LABEL_GENERATION: spec.generation,
            LABEL_CONFIG: spec.config,
            LABEL_PORT: str(spec.port),
            LABEL_HEALTH_PATH: spec.health_path,
        }
        name = f"cicd-deploy-{service}-{spec.generation}-slot{slot}"
        api = self.client.api
        try:
            created = api.create_container(
                spec.version,
                name=name,
                labels=labels,
                environment=list(spec.env),
                ports=[spec.port],
                host_config=api.create_host_config(
                    port_bindings={spec.port: (self.bind_address,)},
                    restart_policy={"Name": "unless-stopped"},
                    init=True,
                ),
            )
        except DockerException as error:
            raise DeployError(
                f"the container for slot{slot} could not be created: {short_reason(error)}"
            ) from None
        try:
            api.start(created["Id"])
            return _replica(api.inspect_container(created["Id"]))
        except DockerException as error:
            with contextlib.suppress(DockerException):
                api.remove_container(created["Id"], force=True, v=True)
            raise DeployError(
                f"the container for slot{slot} ({spec.image}) did not start: {short_reason(error)}"
            ) from None

    def state(self, replica: Replica) -> str:
        """Empty while the replica runs, else what happened to it (with its last output)."""
        try:
            attrs = self.client.api.inspect_container(replica.id)
        except NotFound:
            return "is gone"
        except DockerException as error:
            return f"could not be inspected: {short_reason(error)}"
        state = attrs.get("State") or {}
        if state.get("Running") and not state.get("Restarting"):
            return ""
        text = f"exited with code {state.get('ExitCode')}"
        if state.get("Restarting"):
            text = f"keeps restarting (last exit code {state.get('ExitCode')})"
        with contextlib.suppress(DockerException):
            output = self.client.api.logs(replica.id, tail=3).decode("utf-8", "replace")
            lines = [line.strip() for line in output.splitlines() if line.strip()]
            if lines:
                text += f"; its last output: {' | '.join(lines)[:300]}"
        return text

    def remove(self, replicas: Sequence[Replica], *, stop_seconds: int = 5) -> None:
        """Stop (a short grace) and remove replicas; ones already gone are fine."""
        api = self.client.api
        for replica in replicas:
            try:
                api.stop(replica.id, timeout=stop_seconds)
            except NotFound:
                continue
            except DockerException:
                pass  # stopping is a courtesy: the removal below forces it
            try:
                api.remove_container(replica.id, force=True, v=True)
            except NotFound:
                pass
            except DockerException as error:
                if "already in progress" not in str(getattr(error, "explanation", "")):
                    raise DeployError(
                        f"container {replica.name} could not be removed: {short_reason(error)}"
                    ) from None

    def remove_all(self, service: str) -> int:
        """Remove every container of `service`; how many there were."""
        replicas = self.replicas(service)
        self.remove(replicas, stop_seconds=2)
        return len(replicas)


def _replica(attrs: Mapping) -> Replica:
    labels = (attrs.get("Config") or {}).get("Labels") or {}
    port = int(labels.get(LABEL_PORT) or 0)
    state = attrs.get("State") or {}
    running = bool(state.get("Running")) and not state.get("Restarting")
    host_port = None
    bindings = ((attrs.get("NetworkSettings") or {}).get("Ports") or {}).get(f"{port}/tcp") or []
    for binding in bindings:
        if ":" not in (binding.get("HostIp") or "") and binding.get("HostPort"):
            host_port = int(binding["HostPort"])
            break
    return Replica(
        id=attrs["Id"],
        name=(attrs.get("Name") or "").lstrip("/"),
        slot=int(labels.get(LABEL_SLOT) or 0),
        version=labels.get(LABEL_VERSION) or "",
        image=labels.get(LABEL_IMAGE) or "",
        generation=labels.get(LABEL_GENERATION) or "",
        config=labels.get(LABEL_CONFIG) or "",
        port=port,
        env=tuple((attrs.get("Config") or {}).get("Env") or ()),
        health_path=labels.get(LABEL_HEALTH_PATH) or "/",
        running=running,
        host_port=host_port if running else None,
        created=attrs.get("Created") or "",
    )


def _addresses(docker_host: str | None) -> tuple[str, str]:
    """(the address HAProxy and the probes reach published ports at, the host interface to
    publish them on) for an engine."""
    parts = urlsplit(docker_host or "")
    if parts.scheme not in ("tcp", "ssh", "http", "https") or not parts.hostname:
        return "127.0.0.1", "127.0.0.1"
    try:
        address = socket.getaddrinfo(parts.hostname, None, socket.AF_INET)[0][4][0]
    except OSError as error:
        raise DeployError(
            f"the host of DOCKER_HOST {docker_host!r} could not be resolved: {error}"
        ) from None
    if ipaddress.ip_address(address).is_loopback:
        return "127.0.0.1", "127.0.0.1"
    return str(address), "0.0.0.0"


def short_reason(error: BaseException) -> str:
    explanation = getattr(error, "explanation", None)
    text = explanation if explanation else str(error)
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    text = " ".join(str(text).split())
    return text[:300] if text else type(error).__name__
