"""What an executor is given: a plain, immutable description of one job.

Nothing here knows about Django models. The orchestration layer (or `cicd exec`) builds a JobSpec
from the parsed workflow and the run's contexts; an executor runs it and reports events.
Expressions inside steps (`if`, `env`, `run`, `with`, ...) are kept as written: they depend on the
`steps` and `env` contexts, which only exist while the job runs, so the executor evaluates them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines.model import EMPTY, FrozenMap


def frozen(mapping: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return FrozenMap(mapping or {})


@dataclass(frozen=True, slots=True)
class StepSpec:
    index: int
    name: str
    id: str | None = None
    if_condition: str | bool | None = None
    run: str | None = None
    shell: str | None = None
    working_directory: str | None = None
    env: Mapping[str, Any] = EMPTY
    uses: str | None = None  # a built-in action, e.g. "actions/checkout@v4"
    with_args: Mapping[str, Any] = EMPTY
    timeout_minutes: float | str | None = None
    continue_on_error: bool | str = False
    # The `retry` extension: attempts in all (1: no retry), and the backoff between them.
    retry_max_attempts: int = 1
    retry_backoff_seconds: float = 10.0
    retry_max_backoff_seconds: float = 300.0


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    id: str  # also the service's host name on the job network
    image: str
    env: Mapping[str, str] = EMPTY
    ports: tuple[str, ...] = ()
    # Parsed from `options: --health-cmd ... --health-interval 2s ...`; None: no health check.
    health_cmd: str | None = None
    health_interval_seconds: float = 2.0
    health_retries: int = 30
    wait_for_port: int | None = None  # a TCP port to probe when there is no health command


@dataclass(frozen=True, slots=True)
class CheckoutSource:
    """Where the repository comes from: a local git repository (bare or not) or a URL."""

    repository: str  # path or URL that `git` can fetch from
    sha: str
    ref: str = ""


@dataclass(frozen=True, slots=True)
class ResourceLimits:
    memory_bytes: int = 4 * 1024**3
    cpus: float = 2.0
    pids: int = 1024


@dataclass(frozen=True, slots=True)
class JobSpec:
    job_id: str  # unique per job attempt; names and labels containers, networks, volumes
    run_id: str
    name: str
    steps: tuple[StepSpec, ...]
    image: str | None = None  # None: the executor's default image
    container_env: Mapping[str, str] = EMPTY
    services: tuple[ServiceSpec, ...] = ()
    # Workflow `env` merged with job `env` (job wins); values may hold expressions.
    env: Mapping[str, Any] = EMPTY
    secrets: Mapping[str, str] = EMPTY
    # github, inputs, matrix, needs, vars, strategy: fixed for the whole job.
    contexts: Mapping[str, Any] = EMPTY
    outputs: Mapping[str, str] = EMPTY  # job outputs, as expressions over `steps`
    checkout: CheckoutSource | None = None
    timeout_minutes: float = 360.0
    default_shell: str | None = None
    default_working_directory: str | None = None
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    # The job's `environment:` name as rendered ("" without one): where cicd/deploy deploys.
    environment: str = ""
