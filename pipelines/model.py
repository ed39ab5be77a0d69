"""The typed, immutable form of a valid workflow file.

Built by `pipelines.parser.parse_workflow` only after every check passed, so the fields hold
values of the documented types and nothing here validates again. Everything is frozen: tuples
instead of lists and `FrozenMap` instead of dicts, so a parsed workflow can be shared between
threads, cached and compared (two parses of the same text are equal).

Values that GitHub allows to be expressions (`timeout-minutes: ${{ inputs.t }}`) are kept as the
expression string; the runner evaluates them when the job starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pipelines.triggers import Triggers

K = TypeVar("K")
V = TypeVar("V")

DEFAULT_TIMEOUT_MINUTES = 360


class FrozenMap(Mapping[K, V], Generic[K, V]):
    """An immutable, hashable mapping that keeps insertion (file) order.

    Equality ignores order, like dict's; iteration follows the order the file wrote.
    """

    __slots__ = ("_hash", "_items")

    def __init__(self, items: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._items: dict[K, V] = dict(items)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._items.items()))
        return self._hash

    def __repr__(self) -> str:
        return f"FrozenMap({self._items!r})"


EMPTY: FrozenMap[Any, Any] = FrozenMap()


def freeze(value: Any) -> Any:
    """A deep immutable copy: mappings become FrozenMap, lists become tuples."""
    if isinstance(value, Mapping):
        return FrozenMap((key, freeze(item)) for key, item in value.items())
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    return value


def thaw(value: Any) -> Any:
    """The inverse of `freeze`: plain dicts and lists (e.g. for JSON or an expression context)."""
    if isinstance(value, Mapping):
        return {key: thaw(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [thaw(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The `retry` extension: run a failed job or step again, waiting longer each time."""

    max_attempts: int
    backoff_seconds: float = 10.0
    max_backoff_seconds: float = 300.0

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (2 for the first retry)."""
        if attempt <= 1:
            return 0.0
        return min(self.backoff_seconds * 2 ** (attempt - 2), self.max_backoff_seconds)


@dataclass(frozen=True, slots=True)
class Concurrency:
    """`concurrency`: at most one run (or job) per group; optionally cancel the older one."""

    group: str
    cancel_in_progress: bool | str = False  # str: an expression evaluated at run time


@dataclass(frozen=True, slots=True)
class Environment:
    """`environment` of a deployment job."""

    name: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class RunDefaults:
    """`defaults.run` of a workflow or a job: how `run` steps are started when they don't say."""

    shell: str | None = None
    working_directory: str | None = None


@dataclass(frozen=True, slots=True)
class Container:
    """`jobs.<id>.container`: the image the job's steps run in."""

    image: str
    env: FrozenMap[str, str] = EMPTY
    options: str | None = None
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    credentials: FrozenMap[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Service:
    """`jobs.<id>.services.<id>`: a sidecar container, reachable by its id as hostname."""

    id: str
    image: str
    env: FrozenMap[str, str] = EMPTY
    options: str | None = None
    ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    credentials: FrozenMap[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Strategy:
    """`jobs.<id>.strategy`.

    `matrix` is the matrix as written (values as text where YAML would lose digits), or an
    expression string. `combinations` is the expansion, or None when it can only be known at run
    time (the matrix, or one of its parts, is an expression).
    """

    matrix: FrozenMap[str, Any] | str
    fail_fast: bool | str = True
    max_parallel: int | str | None = None
    combinations: tuple[FrozenMap[str, Any], ...] | None = None


@dataclass(frozen=True, slots=True)
class BuiltinAction:
    """A `uses:` of one of the actions built into cicd, e.g. `actions/checkout@v4`."""

    name: str  # lower-case: actions/checkout
    ref: str  # the part after '@', recorded but not used: the built-in version always runs


@dataclass(frozen=True, slots=True)
class LocalAction:
    """A `uses: ./path` composite action from the repository being built."""

    path: str


@dataclass(frozen=True, slots=True)
class Step:
    """One entry of `jobs.<id>.steps`; `index` is its 0-based position in the job."""

    index: int
    id: str | None = None
    name: str | None = None
    if_condition: str | None = None
    run: str | None = None
    shell: str | None = None
    working_directory: str | None = None
    env: FrozenMap[str, str] = EMPTY
    with_args: FrozenMap[str, str] = EMPTY
    uses: str | None = None
    action: BuiltinAction | LocalAction | None = None
    timeout_minutes: float | str | None = None
    continue_on_error: bool | str = False
    retry: RetryPolicy | None = None

    @property
    def display_name(self) -> str:
        """The name shown in logs, as GitHub makes it up for unnamed steps."""
        if self.name:
            return self.name
        if self.uses:
            return f"Run {self.uses}"
        first_line = (self.run or "").strip().splitlines()
        return f"Run {first_line[0]}" if first_line else f"Step {self.index + 1}"


@dataclass(frozen=True, slots=True)
class Job:
    """One entry of `jobs`."""

    id: str
    name: str | None = None
    needs: tuple[str, ...] = ()
    if_condition: str | None = None
    runs_on: tuple[str, ...] = ()
    runner_group: str | None = None
    container: Container | None = None
    services: FrozenMap[str, Service] = EMPTY
    env: FrozenMap[str, str] = EMPTY
    defaults: RunDefaults = RunDefaults()
    strategy: Strategy | None = None
    timeout_minutes: float | str = DEFAULT_TIMEOUT_MINUTES
    continue_on_error: bool | str = False
    outputs: FrozenMap[str, str] = EMPTY
    environment: Environment | None = None
    concurrency: Concurrency | None = None
    permissions: str | FrozenMap[str, str] | None = None
    steps: tuple[Step, ...] = ()
    retry: RetryPolicy | None = None

    @property
    def display_name(self) -> str:
        return self.name or self.id


@dataclass(frozen=True, slots=True)
class Workflow:
    """A parsed workflow file. `jobs` keeps the order of the file."""

    path: str
    name: str | None = None
    run_name: str | None = None
    triggers: Triggers = field(default_factory=Triggers)
    env: FrozenMap[str, str] = EMPTY
    defaults: RunDefaults = RunDefaults()
    concurrency: Concurrency | None = None
    permissions: str | FrozenMap[str, str] | None = None
    jobs: FrozenMap[str, Job] = EMPTY

    @property
    def display_name(self) -> str:
        """`name`, or the file path as GitHub shows unnamed workflows."""
        return self.name or self.path


@dataclass(frozen=True, slots=True)
class ActionInput:
    """`inputs.<id>` of an action: what a step gives it under `with`."""

    id: str
    description: str = ""
    required: bool = False
    default: str | None = None  # may hold an expression, evaluated where the action is used


@dataclass(frozen=True, slots=True)
class ActionOutput:
    """`outputs.<id>` of a composite action: `value` is an expression over its `steps`."""

    id: str
    value: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class CompositeAction:
    """A parsed `action.yml` with `runs.using: composite` (see `pipelines.actions`).

    Its steps are `Step`s numbered from 0 inside the action; their ids are local to it.
    """

    path: str
    name: str | None = None
    description: str | None = None
    inputs: FrozenMap[str, ActionInput] = EMPTY
    outputs: FrozenMap[str, ActionOutput] = EMPTY
    steps: tuple[Step, ...] = ()

    @property
    def display_name(self) -> str:
        return self.name or self.path
