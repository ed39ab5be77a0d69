"""The metadata file of a local composite action: `action.yml` text in, `CompositeAction` or every
problem out.

A workflow step `uses: ./path` names a directory of the repository. The runner reads
`<workspace>/<path>/action.yml` (or `action.yaml`) when the step runs, because the repository is
only in the workspace then, and parses it here. Like `parse_workflow`, this is pure: text in,
model or `WorkflowError` out, each problem with file, line and column.

GitHub's rules for composite actions apply:
- `runs.using` must be `composite`; JavaScript (`node20`...) and Docker actions cannot run here,
  and that is the only problem reported for them (their other keys are not composite keys);
- a step may have id, name, if, run, shell, env, working-directory, uses, with and
  continue-on-error; every `run` step says its `shell` (a workflow's `defaults.run` does not
  reach into an action);
- `uses` inside may be a built-in action or another local action (`./path`, from the root of the
  workspace, as on GitHub);
- expressions in steps and output values read github, env, vars, inputs, steps, job, runner,
  strategy and matrix; never `secrets` (a workflow passes a secret in through `with`).
"""

from __future__ import annotations

from typing import Any

from pipelines import expressions
from pipelines.errors import Problem, WorkflowError
from pipelines.model import ActionInput, ActionOutput, CompositeAction, FrozenMap
from pipelines.parser import (
    ID_PATTERN,
    ID_RULE,
    DocumentChecks,
    build_step,
    raise_problems,
)
from pipelines.schema import did_you_mean, schema_problems, subject_of
from pipelines.yamlload import DEFAULT_MAX_BYTES, Document, Path, load_document, scalar_text

ACTION_FILE_NAMES = ("action.yml", "action.yaml")  # looked for in this order, as on GitHub

# What expressions may read: in steps and output values, and in input defaults (evaluated where
# the action is used, before any of its steps ran).
STEP_CONTEXTS = frozenset(
    {"github", "env", "vars", "inputs", "steps", "job", "runner", "strategy", "matrix"}
)
DEFAULT_CONTEXTS = STEP_CONTEXTS - {"inputs", "steps"}

_EMPTY_FILE = "expected an action mapping with 'runs' (using: composite, and its steps)"


def parse_action(text: str, path: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> CompositeAction:
    """Parse and validate the action file `path` (e.g. `.github/actions/x/action.yml`).

    Raises `WorkflowError` listing every problem of the file, each with line and column.
    """
    document = load_document(
        text, path, max_bytes=max_bytes, keep_going=True, empty_means=_EMPTY_FILE
    )
    not_composite = _using_problem(document, path)
    if not_composite is not None:
        raise WorkflowError([*document.problems, not_composite])
    checks = _ActionChecks(document, path)
    raise_problems(document, schema_problems(document, path, action=True) + checks.run())
    return _build(document.value, path)


def _using_problem(document: Document, path: str) -> Problem | None:
    runs = document.value.get("runs")
    if not isinstance(runs, dict) or "using" not in runs:
        return None  # the schema says what is missing
    using = runs["using"]
    if isinstance(using, str) and using.strip().lower() == "composite":
        return None
    line, column = document.value_position(("runs", "using"))
    message = (
        f"unsupported action type 'using: {scalar_text(using)}'; only composite actions "
        "('using: composite', with 'steps') run on this server, not JavaScript (node) or "
        "Docker actions"
    )
    return Problem(path, line, column, message)


class _ActionChecks(DocumentChecks):
    """The rules of an action file that its schema cannot express. `run()` returns them."""

    def run(self) -> list[Problem]:
        raw = self.document.value
        for kind, noun in (("inputs", "input"), ("outputs", "output")):
            for name in _mapping(raw.get(kind)):
                if not ID_PATTERN.match(name):
                    self._on_key((kind, name), f"invalid {noun} id '{name}': {noun} ids {ID_RULE}")
        steps = _sequence(_mapping(raw.get("runs")).get("steps"))
        self._check_step_list(steps, ("runs", "steps"), "the action", "an action")
        for index, step in enumerate(steps):
            if isinstance(step, dict) and "run" in step and "shell" not in step:
                path = ("runs", "steps", index)
                self._on_key(
                    (*path, "run"),
                    f"{subject_of(path)} has 'run' but no 'shell'; each 'run' step of a "
                    "composite action must name its shell, e.g. 'shell: bash' (the "
                    "workflow's defaults do not apply inside actions)",
                )
        self._check_expressions()
        return self.problems

    # -- expression rules

    def _expressions_checked_at(self, path: Path) -> bool:
        # Names and descriptions are text for people: `${{ ... }}` there is not evaluated.
        return (
            path[:2] == ("runs", "steps")
            or (len(path) == 3 and path[0] == "outputs" and path[2] == "value")
            or (len(path) == 3 and path[0] == "inputs" and path[2] == "default")
        )

    def _allowed_contexts(self, path: Path) -> frozenset[str] | None:
        if path[0] == "inputs":
            return DEFAULT_CONTEXTS
        if len(path) == 4 and path[:2] == ("runs", "steps") and path[3] in ("uses", "id"):
            return None
        return STEP_CONTEXTS

    def _is_condition(self, path: Path) -> bool:
        return len(path) == 4 and path[:2] == ("runs", "steps") and path[3] == "if"

    def _reads_workspace(self, path: Path) -> bool:
        return path[0] in ("runs", "outputs")

    def _check_reference(self, path: Path, node: expressions.PropertyAccess, offset: int) -> None:
        """`inputs.x` of an input the action does not declare is always empty: a typo."""
        target = node.target
        if not (isinstance(target, expressions.ContextRef) and target.name.lower() == "inputs"):
            return
        declared = list(_mapping(self.document.value.get("inputs")))
        if node.name.lower() in {name.lower() for name in declared}:
            return
        listed = ", ".join(declared) if declared else "none"
        self._inside_value(
            path,
            offset + node.position,
            f"the action has no input '{node.name}'{did_you_mean(node.name, declared)}; "
            f"its inputs are: {listed}",
        )


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _sequence(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


# ---------------------------------------------------------------------------------------------
# Building the model from a valid document


def _build(raw: dict[str, Any], path: str) -> CompositeAction:
    inputs = {
        name: _input(name, _mapping(spec)) for name, spec in _mapping(raw.get("inputs")).items()
    }
    outputs = {
        name: ActionOutput(
            id=name,
            value=scalar_text(spec["value"]),
            description=scalar_text(spec.get("description")),
        )
        for name, spec in _mapping(raw.get("outputs")).items()
    }
    return CompositeAction(
        path=path,
        name=None if raw.get("name") is None else scalar_text(raw["name"]),
        description=None if raw.get("description") is None else scalar_text(raw["description"]),
        inputs=FrozenMap(inputs),
        outputs=FrozenMap(outputs),
        steps=tuple(build_step(index, step) for index, step in enumerate(raw["runs"]["steps"])),
    )


def _input(name: str, spec: dict[str, Any]) -> ActionInput:
    default = spec.get("default")
    return ActionInput(
        id=name,
        description=scalar_text(spec.get("description")),
        required=spec.get("required") in (True, "true"),
        default=None if default is None else scalar_text(default),
    )
