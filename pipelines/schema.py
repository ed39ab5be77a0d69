"""The JSON Schemas (Draft 2020-12) of the supported workflow and action syntax, and their messages.

`WORKFLOW_SCHEMA` covers the subset of GitHub Actions' workflow syntax listed in SPEC section 3;
`ACTION_SCHEMA` the metadata file (`action.yml`) of a composite action. They only
checks shapes (which keys exist, their types); rules that need more than one value at a time
(needs, cycles, actions, cron, expressions, ids) live in `pipelines.parser`.

Extension: `retry`, on a job or a step, re-runs it when it fails:

    retry:
      max-attempts: 3          # required, 1..10, counting the first attempt
      backoff-seconds: 10      # wait before the second attempt (default 10), doubled each time
      max-backoff-seconds: 300 # ceiling of the wait (default 300)

Messages: jsonschema's own are written for schema authors ("'x' is not valid under any of the
given schemas"). `schema_problems` rewrites each error into what a workflow author needs: what
was expected, placed on the offending key or value. Subschemas that accept several shapes carry
an `expected` annotation (ignored by the validator) that names them in plain words.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError

from pipelines.errors import Problem
from pipelines.yamlload import Document, Path, describe_type, scalar_text

SHELLS = ("bash", "sh", "pwsh", "python", "cmd", "powershell")
EVENTS = ("push", "pull_request", "workflow_dispatch", "schedule")
INPUT_TYPES = ("string", "boolean", "choice", "number", "environment")
MAX_RETRY_ATTEMPTS = 10

# ---------------------------------------------------------------------------------------------
# Building blocks

_EXPRESSION_PATTERN = r"^\s*\$\{\{[\s\S]*\}\}\s*$"
EXPRESSION = {"type": "string", "pattern": _EXPRESSION_PATTERN, "expected": "an expression"}
STRING = {"type": "string", "expected": "a string"}
# Where GitHub expects a string it also takes numbers and booleans, using their text as written.
STRINGISH = {"type": ["string", "number", "boolean"], "expected": "a string"}
NULLABLE_STRINGISH = {"type": ["string", "number", "boolean", "null"], "expected": "a string"}
BOOLEAN = {"type": "boolean", "expected": "a boolean (true or false)"}


def _one_of_shapes(expected: str, *shapes: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": list(shapes), "expected": expected}


def _mapping(
    properties: dict[str, Any], *, required: tuple[str, ...] = (), **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "additionalProperties": False,
        "expected": "a mapping",
    }
    if required:
        schema["required"] = list(required)
    schema.update(extra)
    return schema


def _map_of(values: dict[str, Any], expected: str = "a mapping") -> dict[str, Any]:
    return {"type": "object", "additionalProperties": values, "expected": expected}


def _list_of(items: dict[str, Any], expected: str = "a list", **extra: Any) -> dict[str, Any]:
    return {"type": "array", "items": items, "expected": expected, **extra}


def _string_or_list(expected: str) -> dict[str, Any]:
    return _one_of_shapes(expected, STRINGISH, _list_of(STRINGISH, "a list of strings"))


def _or_expression(schema: dict[str, Any], expected: str) -> dict[str, Any]:
    return _one_of_shapes(f"{expected} or an expression", schema, EXPRESSION)


ENV = _map_of(NULLABLE_STRINGISH, "a mapping of variable names to values")
POSITIVE_NUMBER = {"type": "number", "exclusiveMinimum": 0, "expected": "a number"}
TIMEOUT = _or_expression(POSITIVE_NUMBER, "a number")
CONTINUE_ON_ERROR = _or_expression(BOOLEAN, "a boolean")
SHELL = _one_of_shapes(
    f"one of: {', '.join(SHELLS)}",
    {"enum": list(SHELLS)},
    EXPRESSION,
)
RUN_DEFAULTS = _mapping({"shell": SHELL, "working-directory": STRINGISH})
DEFAULTS = _mapping({"run": RUN_DEFAULTS})
CONCURRENCY = _one_of_shapes(
    "a group name or a mapping with 'group' and 'cancel-in-progress'",
    STRINGISH,
    _mapping(
        {"group": STRINGISH, "cancel-in-progress": _or_expression(BOOLEAN, "a boolean")},
        required=("group",),
    ),
)
PERMISSION_LEVEL = {"enum": ["read", "write", "none"], "expected": "one of: read, write, none"}
PERMISSIONS = _one_of_shapes(
    "read-all, write-all, or a mapping of scopes to read, write or none",
    {"enum": ["read-all", "write-all"]},
    _map_of(PERMISSION_LEVEL, "a mapping of scopes to read, write or none"),
)
RETRY = _mapping(
    {
        "max-attempts": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_RETRY_ATTEMPTS,
            "expected": "a whole number",
        },
        "backoff-seconds": {"type": "number", "minimum": 0, "expected": "a number"},
        "max-backoff-seconds": {"type": "number", "minimum": 0, "expected": "a number"},
    },
    required=("max-attempts",),
)

# ---------------------------------------------------------------------------------------------
# on:

PATTERNS = _string_or_list("a list of patterns")
FILTERS = {
    "branches": PATTERNS,
    "branches-ignore": PATTERNS,
    "tags": PATTERNS,
    "tags-ignore": PATTERNS,
    "paths": PATTERNS,
    "paths-ignore": PATTERNS,
}
PULL_REQUEST_TYPES = (
    "assigned",
    "unassigned",
    "labeled",
    "unlabeled",
    "opened",
    "edited",
    "closed",
    "reopened",
    "synchronize",
    "converted_to_draft",
    "ready_for_review",
    "locked",
    "unlocked",
    "review_requested",
    "review_request_removed",
    "auto_merge_enabled",
    "auto_merge_disabled",
    "milestoned",
    "demilestoned",
    "enqueued",
    "dequeued",
)
PULL_REQUEST_TYPE = {"enum": list(PULL_REQUEST_TYPES), "noun": "pull_request activity type"}


def _event_filter(properties: dict[str, Any]) -> dict[str, Any]:
    return _one_of_shapes(
        "a mapping of filters, or nothing", {"type": "null"}, _mapping(properties)
    )


PUSH_FILTER = _event_filter(FILTERS)
PULL_REQUEST_FILTER = _event_filter(
    {
        **FILTERS,
        "types": _one_of_shapes(
            "an activity type or a list of them",
            PULL_REQUEST_TYPE,
            _list_of(PULL_REQUEST_TYPE, "a list of activity types"),
        ),
    }
)
DISPATCH_INPUT = _mapping(
    {
        "description": STRINGISH,
        "required": BOOLEAN,
        "default": {"type": ["string", "number", "boolean"], "expected": "a value"},
        "type": {"enum": list(INPUT_TYPES), "expected": f"one of: {', '.join(INPUT_TYPES)}"},
        "options": _list_of(STRINGISH, "a list of options"),
    }
)
WORKFLOW_DISPATCH = _one_of_shapes(
    "a mapping with 'inputs', or nothing",
    {"type": "null"},
    _mapping({"inputs": _map_of(DISPATCH_INPUT, "a mapping of input names to inputs")}),
)
SCHEDULE = _list_of(
    _mapping({"cron": STRING}, required=("cron",)),
    "a list of entries like '- cron: \"0 3 * * *\"'",
    minItems=1,
)
# `noun` makes an enum mistake read "unsupported event 'x'" rather than "must be one of".
EVENT_NAME = {"enum": list(EVENTS), "noun": "event"}
ON = _one_of_shapes(
    "an event name, a list of event names, or a mapping of events",
    EVENT_NAME,
    _list_of(EVENT_NAME, "a list of event names", minItems=1),
    _mapping(
        {
            "push": PUSH_FILTER,
            "pull_request": PULL_REQUEST_FILTER,
            "workflow_dispatch": WORKFLOW_DISPATCH,
            "schedule": SCHEDULE,
        },
        minProperties=1,
    ),
)

# ---------------------------------------------------------------------------------------------
# jobs:

CREDENTIALS = _mapping({"username": STRINGISH, "password": STRINGISH})
CONTAINER_PROPERTIES = {
    "image": STRINGISH,
    "env": ENV,
    "options": STRINGISH,
    "ports": _list_of(STRINGISH, "a list of ports"),
    "volumes": _list_of(STRINGISH, "a list of volumes"),
    "credentials": CREDENTIALS,
}
CONTAINER = _one_of_shapes(
    "an image name or a mapping with 'image'",
    STRINGISH,
    _mapping(CONTAINER_PROPERTIES, required=("image",)),
)
SERVICE = _mapping(CONTAINER_PROPERTIES, required=("image",))
RUNS_ON = _one_of_shapes(
    "a runner label, a list of labels, or a mapping with 'group' and 'labels'",
    STRINGISH,
    _list_of(STRINGISH, "a list of labels", minItems=1),
    _mapping({"group": STRINGISH, "labels": _string_or_list("a list of labels")}),
)
MATRIX_VALUES = _one_of_shapes(
    "a list of values or an expression",
    {"type": "array", "expected": "a list of values"},
    EXPRESSION,
)
MATRIX_ENTRIES = _one_of_shapes(
    "a list of mappings or an expression",
    _list_of({"type": "object", "expected": "a mapping"}, "a list of mappings"),
    EXPRESSION,
)
MATRIX = _one_of_shapes(
    "a mapping of matrix values or an expression",
    {
        "type": "object",
        "properties": {"include": MATRIX_ENTRIES, "exclude": MATRIX_ENTRIES},
        "additionalProperties": MATRIX_VALUES,
        "expected": "a mapping",
    },
    EXPRESSION,
)
STRATEGY = _mapping(
    {
        "matrix": MATRIX,
        "fail-fast": _or_expression(BOOLEAN, "a boolean"),
        "max-parallel": _or_expression(
            {"type": "integer", "minimum": 1, "expected": "a whole number"}, "a whole number"
        ),
    }
)
ENVIRONMENT = _one_of_shapes(
    "an environment name or a mapping with 'name' and 'url'",
    STRINGISH,
    _mapping({"name": STRINGISH, "url": STRINGISH}, required=("name",)),
)
CONDITION = {"type": ["string", "boolean", "number"], "expected": "a condition"}
STEP = _mapping(
    {
        "id": STRING,
        "name": STRINGISH,
        "if": CONDITION,
        "run": STRINGISH,
        "shell": SHELL,
        "working-directory": STRINGISH,
        "env": ENV,
        "timeout-minutes": TIMEOUT,
        "continue-on-error": CONTINUE_ON_ERROR,
        "uses": STRING,
        "with": _map_of(NULLABLE_STRINGISH, "a mapping of inputs"),
        "retry": RETRY,
    }
)
JOB = _mapping(
    {
        "name": STRINGISH,
        "needs": _one_of_shapes(
            "a job id or a list of job ids", STRING, _list_of(STRING, "a list of job ids")
        ),
        "if": CONDITION,
        "runs-on": RUNS_ON,
        "container": CONTAINER,
        "services": _map_of(SERVICE, "a mapping of service names to services"),
        "env": ENV,
        "defaults": DEFAULTS,
        "strategy": STRATEGY,
        "timeout-minutes": TIMEOUT,
        "continue-on-error": CONTINUE_ON_ERROR,
        "outputs": _map_of(STRINGISH, "a mapping of output names to values"),
        "environment": ENVIRONMENT,
        "concurrency": CONCURRENCY,
        "permissions": PERMISSIONS,
        "steps": _list_of(STEP, "a list of steps", minItems=1),
        "retry": RETRY,
    },
    required=("runs-on", "steps"),
)
WORKFLOW_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **_mapping(
        {
            "name": STRINGISH,
            "run-name": STRINGISH,
            "on": ON,
            "env": ENV,
            "defaults": DEFAULTS,
            "concurrency": CONCURRENCY,
            "permissions": PERMISSIONS,
            "jobs": _map_of(JOB, "a mapping of job ids to jobs") | {"minProperties": 1},
        },
        required=("on", "jobs"),
    ),
}


# ---------------------------------------------------------------------------------------------
# action.yml of a composite action (`pipelines.actions`)

# GitHub's keys of a step of a composite action: no timeout-minutes, no retry.
COMPOSITE_STEP = _mapping(
    {
        key: STEP["properties"][key]
        for key in (
            "id",
            "name",
            "if",
            "run",
            "shell",
            "working-directory",
            "env",
            "uses",
            "with",
            "continue-on-error",
        )
    }
)
ACTION_INPUT = _one_of_shapes(
    "a mapping with 'description', 'required' and 'default', or nothing",
    {"type": "null"},
    _mapping(
        {
            "description": STRINGISH,
            # Many published actions write `required: 'false'`, which GitHub accepts.
            "required": _one_of_shapes(
                "a boolean (true or false)", BOOLEAN, {"enum": ["true", "false"]}
            ),
            "default": NULLABLE_STRINGISH,
            "deprecationMessage": STRINGISH,
        }
    ),
)
ACTION_OUTPUT = _mapping({"description": STRINGISH, "value": STRINGISH}, required=("value",))
ACTION_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    **_mapping(
        {
            "name": STRINGISH,
            "description": STRINGISH,
            "author": STRINGISH,
            "branding": _mapping({"icon": STRINGISH, "color": STRINGISH}),
            "inputs": _map_of(ACTION_INPUT, "a mapping of input ids to inputs"),
            "outputs": _map_of(ACTION_OUTPUT, "a mapping of output ids to outputs"),
            "runs": _mapping(
                {
                    "using": STRINGISH,
                    "steps": _list_of(COMPOSITE_STEP, "a list of steps", minItems=1),
                },
                required=("using", "steps"),
            ),
        },
        required=("runs",),
    ),
}


# Numbers in a workflow must be finite: `.nan` would pass every range check (NaN compares false).
def _is_finite_number(checker: Any, value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_whole_number(checker: Any, value: Any) -> bool:
    return _is_finite_number(checker, value) and float(value).is_integer()


_WorkflowValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine_many(
        {"number": _is_finite_number, "integer": _is_whole_number}
    ),
)
Draft202012Validator.check_schema(WORKFLOW_SCHEMA)
Draft202012Validator.check_schema(ACTION_SCHEMA)
_VALIDATOR = _WorkflowValidator(WORKFLOW_SCHEMA)
_ACTION_VALIDATOR = _WorkflowValidator(ACTION_SCHEMA)

# ---------------------------------------------------------------------------------------------
# Messages

_TYPE_NAMES = {
    "string": "a string",
    "object": "a mapping",
    "array": "a list",
    "number": "a number",
    "integer": "a whole number",
    "boolean": "a boolean",
    "null": "nothing",
}
# YAML 1.1 booleans that YAML 1.2 (and GitHub) read as strings.
_YAML11_BOOLEANS = {"yes", "no", "on", "off", "y", "n", "Yes", "No", "On", "Off", "YES", "NO"}


@dataclass(frozen=True, slots=True)
class _Finding:
    """A message about `path`, placed on its key (`on_key`) or on its value."""

    path: Path
    on_key: bool
    message: str


def schema_problems(document: Document, file: str, *, action: bool = False) -> list[Problem]:
    """Every schema violation of the document, at most one per position, in file order.

    The document is a workflow, or with `action` the `action.yml` of a composite action.
    """
    validator = _ACTION_VALIDATOR if action else _VALIDATOR
    findings: list[_Finding] = []
    for error in validator.iter_errors(document.value):
        findings.extend(_explain(error))
    problems: dict[tuple[int, int], Problem] = {}
    for finding in findings:
        if finding.on_key:
            line, column = document.key_position(finding.path)
        else:
            line, column = document.value_position(finding.path)
        # The first finding at a position wins: later ones are cascades of the same mistake.
        problems.setdefault((line, column), Problem(file, line, column, finding.message))
    return sorted(problems.values())


def _explain(error: ValidationError) -> list[_Finding]:
    path: Path = tuple(error.absolute_path)
    kind = error.validator
    if kind in ("anyOf", "oneOf"):
        return _explain_alternatives(error, path)
    if kind == "additionalProperties" and error.schema.get("additionalProperties") is False:
        return _unknown_keys(error, path)
    if kind == "required":
        missing = _missing_keys(error, path)
        return [missing] if missing else []
    subject = subject_of(path)
    if kind == "type":
        message = (
            f"{subject} must be {_expected(error.schema)}, got {describe_value(error.instance)}"
        )
        return [_Finding(path, False, message + _yaml11_hint(error.instance, error.schema))]
    if kind == "enum" and "noun" in error.schema:
        return [_Finding(path, False, _unsupported_choice(error))]
    if kind in ("enum", "pattern", "const"):
        return [
            _Finding(
                path,
                False,
                f"{subject} must be {_expected(error.schema)}, got "
                f"{describe_value(error.instance)}",
            )
        ]
    if kind in ("minItems", "minProperties"):
        return [_Finding(path, False, f"{subject} must not be empty")]
    return [_Finding(path, False, f"{subject} {_range_message(error)}")]


def _unsupported_choice(error: ValidationError) -> str:
    noun = error.schema["noun"]
    choices = [str(choice) for choice in error.validator_value]
    shown = (
        scalar_text(error.instance) if _is_scalar(error.instance) else describe_type(error.instance)
    )
    suggestion = did_you_mean(shown, choices) if isinstance(error.instance, str) else ""
    return f"unsupported {noun} '{shown}'{suggestion}; supported {noun}s are: {', '.join(choices)}"


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def _range_message(error: ValidationError) -> str:
    limit = error.validator_value
    shown = describe_value(error.instance)
    if error.validator == "minimum":
        return f"must be at least {limit}, got {shown}"
    if error.validator == "exclusiveMinimum":
        return f"must be more than {limit}, got {shown}"
    if error.validator == "maximum":
        return f"must be at most {limit}, got {shown}"
    return f"is invalid: {error.message}"


def _explain_alternatives(error: ValidationError, path: Path) -> list[_Finding]:
    """An anyOf failed. When the value's type picks exactly one alternative (a mapping where one
    alternative is a mapping, a number where one is a number...), the errors inside it are the
    specific ones; otherwise say which shapes were expected."""
    alternatives = error.schema[error.validator]
    chosen = [
        index
        for index, alternative in enumerate(alternatives)
        if _type_matches(alternative, error.instance)
    ]
    if len(chosen) == 1:
        inner = [e for e in error.context or [] if e.relative_schema_path[0] == chosen[0]]
        if inner:
            return [finding for e in inner for finding in _explain(e)]
    message = (
        f"{subject_of(path)} must be {_expected(error.schema)}, "
        f"got {describe_value(error.instance)}"
    )
    return [_Finding(path, False, message + _yaml11_hint(error.instance, error.schema))]


def _type_matches(schema: dict[str, Any], instance: Any) -> bool:
    """Is `schema` the alternative meant for a value of this type?

    The expression alternative never is: "must be an expression" would hide the other shapes.
    """
    if schema is EXPRESSION:
        return False
    if "enum" in schema:
        return any(type(value) is type(instance) for value in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    return any(_VALIDATOR.is_type(instance, name) for name in types)


def _expected(schema: dict[str, Any]) -> str:
    if "expected" in schema:
        return schema["expected"]
    if "enum" in schema:
        return "one of: " + ", ".join(str(v) for v in schema["enum"])
    types = schema.get("type", [])
    types = [types] if isinstance(types, str) else types
    return " or ".join(_TYPE_NAMES.get(t, t) for t in types) or "something else"


def _yaml11_hint(instance: Any, schema: dict[str, Any]) -> str:
    """`yes`/`no`/`on`/`off` are strings in YAML 1.2, a classic surprise for booleans."""
    if (
        isinstance(instance, str)
        and instance in _YAML11_BOOLEANS
        and "boolean" in _expected(schema)
    ):
        return "; YAML reads yes/no/on/off as strings: write true or false"
    return ""


def _unknown_keys(error: ValidationError, path: Path) -> list[_Finding]:
    allowed = list(error.schema.get("properties", {}))
    findings = []
    for key in error.instance:
        if key in allowed:
            continue
        message = _unknown_key_message(key, path, allowed)
        findings.append(_Finding((*path, key), True, message))
    return findings


def _unknown_key_message(key: str, path: Path, allowed: list[str]) -> str:
    suggestion = did_you_mean(key, allowed)
    if path == ("on",):
        supported = ", ".join(sorted(EVENTS))
        return f"unsupported event '{key}' in 'on'{suggestion}; supported events are: {supported}"
    if len(path) == 2 and path[0] == "jobs" and key == "uses":
        return (
            f"job '{path[1]}' uses a reusable workflow ('uses' on a job), which is not "
            "supported; give the job 'runs-on' and 'steps'"
        )
    return f"unknown key '{key}' {where_in(path)}{suggestion}"


def did_you_mean(word: str, choices: list[str] | tuple[str, ...]) -> str:
    """` (did you mean 'x'?)` for the closest choice, or '' when nothing is close."""
    choice = did_you_mean_choice(word, choices)
    return f" (did you mean '{choice}'?)" if choice else ""


def did_you_mean_choice(word: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The choice closest to `word` (ignoring case and '_' vs '-'), or None."""
    normalised = {choice.lower().replace("_", "-"): choice for choice in choices}
    match = difflib.get_close_matches(word.lower().replace("_", "-"), list(normalised), n=1)
    return normalised[match[0]] if match else None


def _missing_keys(error: ValidationError, path: Path) -> _Finding | None:
    """Missing required keys, except those that an unknown key probably meant to give
    (`runs_on` for `runs-on`): the unknown key's "did you mean" already says it all."""
    if "uses" in error.instance and len(path) == 2 and path[0] == "jobs":
        return None  # a reusable-workflow job: the message about 'uses' says what to do
    properties = list(error.schema.get("properties", {}))
    misspelt = {
        did_you_mean_choice(key, properties) for key in error.instance if key not in properties
    }
    missing = [
        key for key in error.validator_value if key not in error.instance and key not in misspelt
    ]
    if not missing:
        return None
    names = " and ".join(f"'{key}'" for key in missing)
    noun = "key" if len(missing) == 1 else "keys"
    return _Finding(path, True, f"missing required {noun} {names} {where_in(path)}")


# ---------------------------------------------------------------------------------------------
# Naming places in a workflow


def describe_value(value: Any) -> str:
    """A short description of a value for 'got ...': `a string ('yes')`, `a list`."""
    kind = describe_type(value)
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"{kind} ({shown!r})"
    if isinstance(value, bool):
        return f"{kind} ({'true' if value else 'false'})"
    if isinstance(value, int | float):
        return f"{kind} ({getattr(value, 'text', value)})"
    return kind


def subject_of(path: Path) -> str:
    """What `path` is, for the start of a sentence: `job 'build'`, `'timeout-minutes'`."""
    named = _named_place(path)
    if named is not None:
        return named
    if not path:
        return "the workflow"
    last = path[-1]
    if isinstance(last, int):
        return f"item {last + 1} of {subject_of(path[:-1])}"
    return f"'{last}'"


def where_in(path: Path) -> str:
    """Where inside the workflow `path` is: `in job 'build'`, `in 'on.push'`."""
    if not path:
        return "at the top level"
    named = _named_place(path)
    if named is not None:
        return f"in {named}"
    for length in range(len(path) - 1, 0, -1):
        owner = _named_place(path[:length])
        if owner is not None:
            return f"in '{_dotted(path[length:])}' of {owner}"
    return f"in '{_dotted(path)}'"


def _named_place(path: Path) -> str | None:
    """Jobs, steps, services and inputs have names of their own (in workflows and actions)."""
    if len(path) == 2 and path[0] == "jobs":
        return f"job '{path[1]}'"
    if len(path) == 4 and path[0] == "jobs" and path[2] == "steps" and isinstance(path[3], int):
        return f"step {path[3] + 1} of job '{path[1]}'"
    if len(path) == 4 and path[0] == "jobs" and path[2] == "services":
        return f"service '{path[3]}' of job '{path[1]}'"
    if len(path) == 4 and path[:3] == ("on", "workflow_dispatch", "inputs"):
        return f"input '{path[3]}'"
    # action.yml: a workflow cannot have these paths (`runs`, `inputs` and `outputs` are not
    # workflow keys, so nothing is ever reported below them).
    if len(path) == 3 and path[:2] == ("runs", "steps") and isinstance(path[2], int):
        return f"step {path[2] + 1} of the action"
    if len(path) == 2 and path[0] in ("inputs", "outputs"):
        return f"{path[0][:-1]} '{path[1]}' of the action"
    return None


def _dotted(path: Path) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def iter_paths(value: Any, path: Path = ()) -> Iterator[tuple[Path, Any]]:
    """Every (path, value) pair of a loaded document, parents before children."""
    yield path, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from iter_paths(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_paths(item, (*path, index))
