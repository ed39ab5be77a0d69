"""Local composite actions (`uses: ./path`): finding and reading the action, and its inputs.

The step driver (`runners.job.JobDriver`) runs the action's steps; this module holds what does not
need the driver: the action file is read from the workspace through the backend (the repository
is only there once it was checked out), parsed by `pipelines.actions`, and the `inputs` context is
made from the step's `with` values and the action's defaults.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Protocol

from pipelines.actions import ACTION_FILE_NAMES, parse_action
from pipelines.errors import WorkflowError
from pipelines.model import CompositeAction
from runners.from_workflow import step_spec
from runners.spec import StepSpec

# How deep actions may use actions; deeper is almost surely an action that uses itself.
MAX_ACTION_DEPTH = 10


class LocalActionError(Exception):
    """The action cannot run; the message says why. `details` are more lines for the log."""

    def __init__(self, message: str, details: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.details = details


class _Files(Protocol):
    workspace: str

    def read_file(self, path: str) -> bytes: ...


def is_local_action(uses: str | None) -> bool:
    return (uses or "").startswith("./")


def load_local_action(backend: _Files, uses: str) -> tuple[CompositeAction, str]:
    """The action that `uses: ./path` names, and its directory as steps see it.

    As on GitHub, the path is relative to the root of the workspace (also inside an action).
    """
    relative = uses.removeprefix("./").strip("/")
    if ".." in relative.split("/"):
        raise LocalActionError(f"local action '{uses}' must stay inside the repository (no '..')")
    directory = f"{backend.workspace}/{relative}" if relative else backend.workspace
    tried = []
    for name in ACTION_FILE_NAMES:
        path = f"{directory}/{name}"
        data = backend.read_file(path)
        if data:  # b"": the file does not exist (an empty one would be invalid anyway)
            shown = f"{relative}/{name}" if relative else name
            return _parse(data, shown), directory
        tried.append(path)
    raise LocalActionError(
        f"cannot find the action '{uses}': neither {tried[0]} nor {tried[1]} exists; "
        "did you check out the repository first (actions/checkout)?"
    )


def _parse(data: bytes, shown: str) -> CompositeAction:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise LocalActionError(f"the action file {shown} is not UTF-8 text") from None
    try:
        return parse_action(text, shown)
    except WorkflowError as error:
        problems = tuple(str(problem) for problem in error.problems)
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise LocalActionError(
            f"the action file {shown} is invalid: {problems[0]}{more}", problems
        ) from None


def action_inputs(
    action: CompositeAction,
    uses: str,
    given: Mapping[str, str],
    default: Callable[[str], str],
) -> tuple[dict[str, str], list[str]]:
    """The `inputs` context of the action's steps, and the names in `given` it does not declare.

    `given` holds the step's `with` values (already evaluated); an input not given takes its
    default, evaluated by `default`. Names match without regard to case, as on GitHub.
    """
    by_name = {name.lower(): value for name, value in given.items()}
    inputs: dict[str, str] = {}
    missing = []
    for spec in action.inputs.values():
        if spec.id.lower() in by_name:
            inputs[spec.id] = by_name[spec.id.lower()]
        elif spec.default is not None:
            inputs[spec.id] = default(spec.default)
        elif spec.required:
            missing.append(spec.id)
        else:
            inputs[spec.id] = ""
    if missing:
        names = " and ".join(f"'{name}'" for name in missing)
        noun = "input" if len(missing) == 1 else "inputs"
        raise LocalActionError(
            f"{uses} needs the {noun} {names}: it is required and has no default; "
            f"give it under 'with'"
        )
    declared = {name.lower() for name in action.inputs}
    return inputs, [name for name in given if name.lower() not in declared]


def action_steps(action: CompositeAction, index: int) -> tuple[StepSpec, ...]:
    """The action's steps, to run inside the job's step `index` (they log to its index)."""
    return tuple(dataclasses.replace(step_spec(step), index=index) for step in action.steps)
