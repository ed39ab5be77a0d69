"""What a deployment is asked to do (`DeployRequest`), read from the `with:` of `cicd/deploy`, and
the narrow interface through which a deployment reports (`DeploymentRecorder`).

Inputs arrive as strings (rendered expressions); `parse_deploy_inputs` turns them into a
validated request or raises DeployError naming the input ("with.replicas must be a whole number
from 1 to 30, got 'x'"). A request is also checked when built from stored data (`from_dict`, for
rollbacks), with the same messages.
"""

from __future__ import annotations

import math
import re
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Protocol

from pipelines.model import EMPTY, FrozenMap
from runners.events import CancelToken

DEPLOY_ACTION = "cicd/deploy"

ROLLING, BLUE_GREEN, CANARY = "rolling", "blue-green", "canary"
STRATEGIES = (ROLLING, BLUE_GREEN, CANARY)

# Outcomes of a deployment (DeployResult.outcome, DeploymentRecorder.finish).
SUCCESS, FAILED, ROLLED_BACK, CANCELLED = "success", "failed", "rolled_back", "cancelled"
OUTCOMES = (SUCCESS, FAILED, ROLLED_BACK, CANCELLED)

MAX_REPLICAS = 30
# Blue-green and canary run the new set beside the old: two full sets must fit in the
# HAProxy backend's slots (runners.deploy.haproxy.SLOTS).
MAX_SERVICE_NAME = 48
MAX_SECONDS = 24 * 3600.0

_SERVICE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*(ms|s|m|h)?$")
_DURATION_UNITS = {None: 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LISTEN = re.compile(r"^(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]*|\*):)?(\d{1,5})$")
# input -> (lowest, highest, whole numbers only) for the inputs checked by range.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "replicas": (1, MAX_REPLICAS, True),
    "port": (1, 65535, True),
    "max-surge": (1, MAX_REPLICAS, True),
    "min-requests": (1, 1_000_000, True),
    "step-pause": (0, MAX_SECONDS, False),
    "switch-back": (0, MAX_SECONDS, False),
    "health-timeout": (0.1, MAX_SECONDS, False),
    "max-error-rate": (0, 100, False),
    "max-latency-ms": (0.001, 3_600_000, False),
}


class DeployError(Exception):
    """A deployment that cannot be done as asked: a bad input, no Docker engine, no haproxy."""


@dataclass(frozen=True, slots=True)
class DeployRequest:
    """The validated `with:` of `uses: cicd/deploy` (see the README for each input)."""

    service: str  # names the containers and the HAProxy instance
    image: str  # image reference or image id (sha256:...) to deploy
    replicas: int = 2
    port: int = 8080  # the container port the service listens on
    listen: str = "127.0.0.1:8080"  # HAProxy's frontend bind address (host:port)
    strategy: str = ROLLING
    max_surge: int = 1
    canary_steps: tuple[int, ...] = (5, 25, 50, 100)
    step_pause_seconds: float = 30.0  # canary: pause per step; all: the analysis window
    switch_back_seconds: float = 300.0  # blue-green: the old set is kept (disabled) this long
    health_path: str = "/"
    health_timeout_seconds: float = 60.0
    max_error_rate: float = 5.0  # percent of requests answered 5xx or failed
    max_latency_ms: float | None = None  # HAProxy's average response time (rtime) per server
    min_requests: int = 20  # fewer requests in a window: the error rate is not judged
    prometheus_url: str | None = None
    prometheus_query: str | None = None
    prometheus_max: float | None = None
    env: Mapping[str, str] = EMPTY  # the containers' environment
    docker_host: str | None = None  # else DOCKER_HOST of the worker, or the local engine
    skip_analysis: bool = False  # rollbacks on request: no analysis, no pauses

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", FrozenMap(dict(self.env)))
        object.__setattr__(self, "canary_steps", tuple(self.canary_steps))
        _check(self)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able, stored with the deployment (`env` included: it may hold secrets)."""
        data = {item.name: getattr(self, item.name) for item in fields(self)}
        data["env"] = dict(self.env)
        data["canary_steps"] = list(self.canary_steps)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DeployRequest:
        """A request stored by `as_dict` (for rollbacks); keys it does not know are ignored."""
        known = {item.name for item in fields(cls)}
        values = {name: value for name, value in data.items() if name in known}
        for required in ("service", "image"):
            if not isinstance(values.get(required), str):
                raise DeployError(f"a stored deployment request has no {required}")
        try:
            return cls(**values)
        except (TypeError, ValueError) as error:
            raise DeployError(f"a stored deployment request is not valid: {error}") from None


@dataclass(frozen=True, slots=True)
class DeployResult:
    outcome: str  # success | failed | rolled_back | cancelled
    reason: str = ""  # why, for people: which check, the measured value, the threshold
    image_digest: str = ""  # the image id deployed (sha256:...), "" when it was not resolved


class DeploymentRecorder(Protocol):
    """Where a deployment reports; the orchestration layer (deployments app) stores it."""

    def begin(
        self,
        request: DeployRequest,
        image_digest: str,
        *,
        cancel: CancelToken,
        say: Callable[[str], None],
    ) -> bool:
        """Take the environment's deployment lock (waiting, with a line said now and then,
        while another deployment holds it; the lock is a lease the recorder renews until
        finish) and record the deployment as in progress. False: cancelled while waiting
        (then `finish` is not called)."""
        ...

    def step_started(self, name: str, detail: Mapping[str, Any]) -> int:
        """A step of the deployment starts; returns its index for `step_finished`."""
        ...

    def step_finished(self, index: int, outcome: str, detail: Mapping[str, Any]) -> None:
        """outcome: success | failed | cancelled; detail: JSON-able, what the step measured."""
        ...

    def traffic(self, split: Mapping[str, int]) -> None:
        """The traffic split changed: percent per version, e.g. {"app:v1 (sha256:ab12…)": 95}."""
        ...

    def finish(self, outcome: str, reason: str = "") -> None:
        """The deployment ended (one of OUTCOMES); releases the lock."""
        ...


# Given to the job driver: the recorder of a deployment to the named environment.
DeploymentRecorderFactory = Callable[[str], DeploymentRecorder]


def service_url(listen: str) -> str:
    """The URL of a service behind HAProxy listening on `listen` (the `url` output); a
    wildcard bind is shown with this host's name."""
    host, _, port = listen.rpartition(":")
    if host in ("", "*", "0.0.0.0", "[::]"):
        host = socket.gethostname()
    return f"http://{host}:{port}"


# ------------------------------------------------------------------------------ parsing


def sanitise_service_name(text: str) -> str:
    """A service name made of `text` (e.g. "acme/Widgets-production" -> "acme-widgets-production"):
    lower case letters, digits, '.', '_', '-', starting with a letter or digit."""
    name = re.sub(r"[^a-z0-9_.-]+", "-", text.lower())
    name = re.sub(r"-{2,}", "-", name).lstrip("._-")[:MAX_SERVICE_NAME].rstrip("._-")
    return name or "service"


def parse_deploy_inputs(with_args: Mapping[str, str], *, default_service: str) -> DeployRequest:
    """The request of a `cicd/deploy` step from its rendered `with:` (inputs it does not know are
    left to the caller to warn about); DeployError names the first bad input."""
    inputs = {name: str(value).strip() for name, value in with_args.items()}
    image = inputs.get("image", "")
    if not image:
        raise DeployError("with.image is required: the image (or image id) to deploy")
    values: dict[str, Any] = {"image": image}
    values["service"] = inputs.get("service") or sanitise_service_name(default_service)
    numbers = (
        ("replicas", "replicas"),
        ("port", "port"),
        ("max-surge", "max_surge"),
        ("min-requests", "min_requests"),
    )
    for name, field_name in numbers:
        if inputs.get(name):
            values[field_name] = _whole_number(name, inputs[name])
    durations = (
        ("step-pause", "step_pause_seconds"),
        ("switch-back", "switch_back_seconds"),
        ("health-timeout", "health_timeout_seconds"),
    )
    for name, field_name in durations:
        if inputs.get(name):
            values[field_name] = _seconds(name, inputs[name])
    if inputs.get("listen"):
        values["listen"] = _listen(inputs["listen"])
    if inputs.get("strategy"):
        values["strategy"] = inputs["strategy"].lower()
    if inputs.get("canary-steps"):
        values["canary_steps"] = _canary_steps(inputs["canary-steps"])
    if inputs.get("health-path"):
        values["health_path"] = inputs["health-path"]
    if inputs.get("max-error-rate"):
        values["max_error_rate"] = _number("max-error-rate", inputs["max-error-rate"].rstrip("%"))
    if inputs.get("max-latency-ms"):
        values["max_latency_ms"] = _number("max-latency-ms", inputs["max-latency-ms"])
    if inputs.get("prometheus-url"):
        values["prometheus_url"] = inputs["prometheus-url"]
    if inputs.get("prometheus-query"):
        values["prometheus_query"] = inputs["prometheus-query"]
    if inputs.get("prometheus-max"):
        values["prometheus_max"] = _number("prometheus-max", inputs["prometheus-max"])
    if inputs.get("env"):
        values["env"] = _env(with_args.get("env") or "")
    if inputs.get("docker-host"):
        values["docker_host"] = inputs["docker-host"]
    if inputs.get("skip-analysis"):
        values["skip_analysis"] = _boolean("skip-analysis", inputs["skip-analysis"])
    return DeployRequest(**values)


def _whole_number(name: str, raw: str) -> int:
    if not re.fullmatch(r"\d+", raw):
        _in_range(name, raw)  # raises, naming the range
    return int(raw)


def _number(name: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise DeployError(f"with.{name} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise DeployError(f"with.{name} must be a number, got {raw!r}")
    return value


def _seconds(name: str, raw: str) -> float:
    match = _DURATION.fullmatch(raw.lower())
    if not match:
        raise DeployError(
            f"with.{name} must be a duration in seconds (e.g. 30, 1.5, 500ms, 2m), got {raw!r}"
        )
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def _listen(raw: str) -> str:
    if raw.isdigit():
        return f"127.0.0.1:{raw}"
    return raw


def _canary_steps(raw: str) -> tuple[int, ...]:
    parts = [part for part in re.split(r"[\s,]+", raw) if part]
    steps: list[int] = []
    for part in parts:
        text = part.rstrip("%")
        if not text.isdigit():
            raise DeployError(
                f"with.canary-steps must be percentages separated by commas (e.g. "
                f"'5,25,50,100'), got {raw!r}"
            )
        steps.append(int(text))
    if steps and steps[-1] != 100:
        steps.append(100)  # a canary that succeeds ends with all the traffic
    return tuple(steps)


def _env(raw: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for number, line in enumerate(raw.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, equals, value = stripped.partition("=")
        name = name.strip()
        if not equals or not _ENV_NAME.fullmatch(name):
            raise DeployError(
                f"with.env line {number} must be NAME=VALUE (a name of letters, digits and _), "
                f"got {stripped.split('=')[0][:40]!r}"
            )
        env[name] = value
    return env


def _boolean(name: str, raw: str) -> bool:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise DeployError(f"with.{name} must be true or false, got {raw!r}")


# ------------------------------------------------------------------------------ checks


def check_service_name(service: Any) -> None:
    """DeployError unless `service` is a valid service name (it names containers and a
    directory)."""
    if (
        not isinstance(service, str)
        or len(service) > MAX_SERVICE_NAME
        or not _SERVICE_NAME.fullmatch(service)
    ):
        raise DeployError(
            f"with.service must be 1 to {MAX_SERVICE_NAME} lower case letters, digits, '.', '_' "
            f"or '-', starting with a letter or digit, got {service!r}"
        )


def _check(request: DeployRequest) -> None:
    """DeployError naming the first input of `request` out of its range."""
    if (
        not isinstance(request.image, str)
        or not request.image
        or any(char.isspace() for char in request.image)
    ):
        raise DeployError(f"with.image must be an image reference, got {request.image!r}")
    check_service_name(request.service)
    _in_range("replicas", request.replicas)
    _in_range("port", request.port)
    _in_range("max-surge", request.max_surge)
    _in_range("min-requests", request.min_requests)
    _in_range("step-pause", request.step_pause_seconds)
    _in_range("switch-back", request.switch_back_seconds)
    _in_range("health-timeout", request.health_timeout_seconds)
    _in_range("max-error-rate", request.max_error_rate)
    if request.max_latency_ms is not None:
        _in_range("max-latency-ms", request.max_latency_ms)
    if request.strategy not in STRATEGIES:
        raise DeployError(
            f"with.strategy must be one of {', '.join(STRATEGIES)}, got {request.strategy!r}"
        )
    steps = request.canary_steps
    if (
        not steps
        or any(not isinstance(step, int) or isinstance(step, bool) for step in steps)
        or any(not 1 <= step <= 100 for step in steps)
        or list(steps) != sorted(set(steps))
        or steps[-1] != 100
    ):
        shown = ",".join(str(step) for step in steps)
        raise DeployError(
            f"with.canary-steps must be increasing percentages from 1 to 100, ending with 100, "
            f"got {shown!r}"
        )
    listen = _LISTEN.fullmatch(request.listen) if isinstance(request.listen, str) else None
    if not listen or not 1 <= int(listen.group(2)) <= 65535:
        raise DeployError(
            f"with.listen must be host:port with a port from 1 to 65535 (e.g. 127.0.0.1:8080, "
            f"0.0.0.0:80, :80), got {request.listen!r}"
        )
    if not isinstance(request.health_path, str) or not re.fullmatch(
        r"/[^\s]*", request.health_path
    ):
        raise DeployError(
            f"with.health-path must be a path starting with '/', without spaces, "
            f"got {request.health_path!r}"
        )
    _check_prometheus(request)
    for name, value in request.env.items():
        if not isinstance(name, str) or not _ENV_NAME.fullmatch(name):
            raise DeployError(f"with.env has a bad variable name: {name!r}")
        if not isinstance(value, str) or "\0" in value:
            raise DeployError(f"with.env value of {name} must be text")
    host = request.docker_host
    if host is not None and not re.fullmatch(r"(unix|tcp|ssh)://\S+", host):
        raise DeployError(
            f"with.docker-host must be unix://PATH, tcp://HOST:PORT or ssh://USER@HOST, "
            f"got {host!r}"
        )
    if not isinstance(request.skip_analysis, bool):
        raise DeployError(
            f"with.skip-analysis must be true or false, got {request.skip_analysis!r}"
        )


def _check_prometheus(request: DeployRequest) -> None:
    given = {
        "prometheus-url": request.prometheus_url,
        "prometheus-query": request.prometheus_query,
        "prometheus-max": request.prometheus_max,
    }
    if all(value is None for value in given.values()):
        return
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise DeployError(
            f"with.{missing[0]} is required when any of prometheus-url, prometheus-query, "
            "prometheus-max is given"
        )
    url = request.prometheus_url or ""
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", url):
        raise DeployError(f"with.prometheus-url must be an http(s):// URL, got {url!r}")
    if not isinstance(request.prometheus_max, int | float) or not math.isfinite(
        request.prometheus_max
    ):
        raise DeployError(f"with.prometheus-max must be a number, got {request.prometheus_max!r}")


def _in_range(name: str, value: Any) -> None:
    low, high, whole = _RANGES[name]
    kind = "a whole number" if whole else "a number"
    valid = isinstance(value, int) if whole else isinstance(value, int | float)
    valid = valid and not isinstance(value, bool) and math.isfinite(value)
    if not valid or not low <= value <= high:
        raise DeployError(
            f"with.{name} must be {kind} from {_shown(low)} to {_shown(high)}, got {value!r}"
        )


def _shown(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else f"{number:g}"


def short_image_id(image_id: str) -> str:
    """sha256:0123456789abcdef... -> sha256:0123456789ab: how messages and labels name a version."""
    return image_id[:19] if image_id.startswith("sha256:") else image_id[:12]


def version_label(image: str, image_id: str) -> str:
    """How a version is named in traffic splits and steps: "app:v2 (sha256:ab12cd34ef56)". The
    environment page finds a deployment's own version in a split by its `short_image_id`."""
    short = short_image_id(image_id)
    if not image or image == image_id or image.startswith(short):
        return short
    return f"{image} ({short})"
