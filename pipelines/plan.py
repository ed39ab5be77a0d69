"""The execution plan of a workflow: which job instances run, in which order, after which others.

Pure and deterministic: the same workflow always gives an equal plan, so a plan can be stored with
a run and compared. Jobs are ordered topologically, ready jobs in file order; each job carries its
matrix instances (or one instance without a matrix), and the dependency layers for drawing the
graph.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

from pipelines.matrix import expand_with_display_names
from pipelines.model import EMPTY, FrozenMap, Job, Workflow, freeze, thaw

# Instance keys are used in URLs, log paths and container names: keep them short and plain.
_MAX_KEY_LENGTH = 100
_UNSAFE_KEY_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True, slots=True)
class JobInstance:
    """One job to run: a job, or one combination of its matrix.

    `key` is unique in the workflow and stable for the same text: `build`, `build-3.10-ubuntu`.
    """

    job_id: str
    key: str
    display_name: str
    matrix: FrozenMap[str, Any] = EMPTY


@dataclass(frozen=True, slots=True)
class PlannedJob:
    """A job of the plan. `instances` is None when the matrix is an expression, expanded when
    the job starts (its value depends on earlier jobs or inputs)."""

    job_id: str
    display_name: str
    needs: tuple[str, ...]
    layer: int
    instances: tuple[JobInstance, ...] | None
    fail_fast: bool | str = True
    max_parallel: int | str | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """The jobs in topological order and their dependency layers (layer 0 needs nothing)."""

    jobs: tuple[PlannedJob, ...]
    layers: tuple[tuple[str, ...], ...]

    def job(self, job_id: str) -> PlannedJob:
        for planned in self.jobs:
            if planned.job_id == job_id:
                return planned
        raise KeyError(job_id)

    @property
    def needs(self) -> FrozenMap[str, tuple[str, ...]]:
        """Each job id -> the ids of the jobs it needs."""
        return FrozenMap((planned.job_id, planned.needs) for planned in self.jobs)


def build_plan(workflow: Workflow) -> Plan:
    """The plan of a valid workflow (as returned by `parse_workflow`: no cycle, no missing need)."""
    order = topological_order(workflow)
    layer_of = _layers(workflow, order)
    used_keys = set(workflow.jobs)  # job ids are the keys of single-instance jobs
    planned = tuple(
        _planned_job(workflow.jobs[job_id], layer_of[job_id], used_keys) for job_id in order
    )
    depth = max(layer_of.values(), default=-1) + 1
    layers = tuple(
        tuple(job_id for job_id in workflow.jobs if layer_of[job_id] == layer)
        for layer in range(depth)
    )
    return Plan(jobs=planned, layers=layers)


def topological_order(workflow: Workflow) -> list[str]:
    """Job ids, each after the jobs it needs; among jobs that are ready, file order."""
    placed: list[str] = []
    done: set[str] = set()
    pending = list(workflow.jobs)
    while pending:
        ready = next(
            (job_id for job_id in pending if set(workflow.jobs[job_id].needs) <= done), None
        )
        if ready is None:
            raise ValueError(f"needs cycle among jobs: {', '.join(pending)}")
        pending.remove(ready)
        placed.append(ready)
        done.add(ready)
    return placed


def _layers(workflow: Workflow, order: list[str]) -> dict[str, int]:
    layer_of: dict[str, int] = {}
    for job_id in order:
        needs = workflow.jobs[job_id].needs
        layer_of[job_id] = 1 + max((layer_of[need] for need in needs), default=-1)
    return layer_of


def _planned_job(job: Job, layer: int, used_keys: set[str]) -> PlannedJob:
    strategy = job.strategy
    return PlannedJob(
        job_id=job.id,
        display_name=job.display_name,
        needs=job.needs,
        layer=layer,
        instances=_instances(job, used_keys),
        fail_fast=True if strategy is None else strategy.fail_fast,
        max_parallel=None if strategy is None else strategy.max_parallel,
    )


def _instances(job: Job, used_keys: set[str]) -> tuple[JobInstance, ...] | None:
    strategy = job.strategy
    if strategy is None or not strategy.matrix:
        return (JobInstance(job.id, job.id, job.display_name),)
    if strategy.combinations is None or isinstance(strategy.matrix, str):
        return None  # the matrix holds expressions: known when the job starts
    matrix = thaw(strategy.matrix)
    axes = [key for key in matrix if key not in ("include", "exclude")]
    instances = []
    for combination, display_name in expand_with_display_names(matrix, job.display_name):
        key = _unique_key(_instance_key(job.id, combination, axes), used_keys)
        instances.append(JobInstance(job.id, key, display_name, freeze(combination)))
    return tuple(instances)


def _instance_key(job_id: str, combination: dict[str, Any], axes: list[str]) -> str:
    """`build-3.10-ubuntu-latest`: the job id and the axis values, made URL-safe.

    Values an `include` adds to a combination are left out, as in the display name; a
    combination made only of include values is named by all of them.
    """
    named = [key for key in axes if key in combination] or list(combination)
    parts = [job_id, *(_value_slug(combination[key]) for key in named)]
    key = "-".join(part for part in parts if part)
    if len(key) > _MAX_KEY_LENGTH:
        digest = hashlib.sha256(key.encode()).hexdigest()[:10]
        key = f"{key[: _MAX_KEY_LENGTH - 11]}-{digest}"
    return key


def _value_slug(value: Any) -> str:
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, str | int | float):
        text = str(value)
    else:
        text = json.dumps(thaw(value), sort_keys=True, separators=(",", ":"))
    return _UNSAFE_KEY_CHARACTERS.sub("_", text).strip("_")


def _unique_key(key: str, used_keys: set[str]) -> str:
    """`key`, or `key-2`, `key-3`... when another instance or job already has it."""
    candidate, number = key, 1
    while candidate in used_keys:
        number += 1
        candidate = f"{key}-{number}"
    used_keys.add(candidate)
    return candidate
