"""The inputs of a manual run: `on.workflow_dispatch.inputs` checked against what a user gave.

Pure: the caller (web form, API, CLI) passes the declared inputs from the parsed workflow and the
values it received; out comes the `inputs` context of the run, or every problem at once.

The rules are those of GitHub's "Run workflow" form and REST endpoint:

- Every declared input is in the result, in declaration order: the given value, else the
  workflow's default, else, for a required input, a problem, else the type's empty value.
  Empty values: "" for string, choice and environment (what GitHub gives an unset optional
  input), False for boolean, None for number (GitHub has no empty number; None is rendered as an
  empty string by the expression layer, which is what a workflow sees on GitHub).
- A None (JSON null) counts as not given, and so does "" where it cannot be a value: a blank
  number or environment, a choice without a "" option. The same holds for defaults, so
  `default: ''` on an environment input means "no default".
- Names are matched exactly; a name the workflow does not declare is a problem, as on GitHub.
- Values are coerced to the declared type: see `_coerce`. Numbers are IEEE doubles, as in
  GitHub's expression language; an integral value comes back as an int.
- Text must be storable: at most 64 KiB of UTF-8, no NUL character and no unpaired surrogate
  (PostgreSQL's text and jsonb refuse both).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pipelines.triggers import DispatchInput

__all__ = ["MAX_INPUTS", "MAX_VALUE_BYTES", "InputError", "coerce_inputs"]

# GitHub's limit on the inputs of one dispatch (it used to be 10).
MAX_INPUTS = 25
MAX_VALUE_BYTES = 64 * 1024

INPUT_TYPES = ("string", "boolean", "choice", "number", "environment")

# JavaScript's decimal literals (what GitHub's Number() accepts), ASCII only: Python's float()
# would also take "nan", "inf", "1_000" and non-ASCII digits.
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_SHOWN_LENGTH = 40


class InputError(ValueError):
    """The given inputs cannot start the workflow; `problems` says why, one entry per mistake.

    Each problem names the input it is about, so a form can show it next to the field.
    """

    def __init__(self, problems: str | Sequence[str]) -> None:
        self.problems: tuple[str, ...] = (
            (problems,) if isinstance(problems, str) else tuple(problems)
        )
        super().__init__("; ".join(self.problems))


def coerce_inputs(
    declared: tuple[DispatchInput, ...] | None, given: Mapping[str, Any]
) -> dict[str, Any]:
    """The `inputs` of a workflow_dispatch run: every declared input, coerced to its type.

    `declared` is `Triggers.workflow_dispatch` (None: the workflow cannot be dispatched).
    Raises InputError listing every problem; never raises anything else, whatever `given` holds.
    """
    if declared is None:
        raise InputError("the workflow has no workflow_dispatch trigger")
    problems: list[str] = []
    if len(given) > MAX_INPUTS:
        problems.append(f"too many inputs: {len(given)} given, at most {MAX_INPUTS} are allowed")
    names = {spec.name for spec in declared}
    listing = ", ".join(spec.name for spec in declared)
    for name in given:
        if name not in names:
            known = f"declares: {listing}" if listing else "declares no inputs"
            problems.append(f"unexpected input {_shown_name(name)} (the workflow {known})")
    result: dict[str, Any] = {}
    for spec in declared:
        if spec.type not in INPUT_TYPES:
            # The parser refuses unknown types; a hand-built DispatchInput could still have one.
            expected = ", ".join(INPUT_TYPES)
            problems.append(
                f"input '{spec.name}': unknown input type {_shown(spec.type)}; "
                f"expected one of {expected}"
            )
            continue
        value, source = given.get(spec.name), ""
        if _means_unset(spec, value):
            value, source = spec.default, " (the default in the workflow)"
        if _means_unset(spec, value):
            if spec.required:
                problems.append(f"input '{spec.name}' is required")
            else:
                result[spec.name] = _empty(spec.type)
            continue
        coerced, reason = _coerce(spec, value)
        if reason is not None:
            problems.append(f"input '{spec.name}': {reason}{source}")
        else:
            result[spec.name] = coerced
    if problems:
        raise InputError(problems)
    return result


def _means_unset(spec: DispatchInput, value: Any) -> bool:
    # HTML forms submit "" for a field left empty, and `default: ''` is how many workflows say
    # "no default". Where "" cannot be a value of the input's type it means "not given"; this
    # also lets a result be given back unchanged.
    if not isinstance(value, str):
        return value is None
    if spec.type in ("number", "environment"):
        return not value.strip()
    return spec.type == "choice" and value == "" and "" not in spec.options


def _empty(kind: str) -> Any:
    if kind == "boolean":
        return False
    if kind == "number":
        return None
    return ""


def _coerce(spec: DispatchInput, value: Any) -> tuple[Any, str | None]:
    """(the value as the input's type, None) or (None, why it cannot be)."""
    if isinstance(value, str):
        # Checked first so that no parsing below ever sees an oversized or unstorable string.
        reason = _text_problem(value)
        if reason is not None:
            return None, reason
    if spec.type == "string":
        return _to_text(value)
    if spec.type == "choice":
        text, reason = _to_text(value)
        if reason is None and text not in spec.options:
            options = ", ".join(spec.options) or "(the input has no options)"
            return None, f"must be one of {options}; got {_shown(value)}"
        return text, reason
    if spec.type == "environment":
        if not isinstance(value, str) or not value.strip():
            return None, f"must be the name of an environment; got {_shown(value)}"
        return value, None
    if spec.type == "boolean":
        return _to_boolean(value)
    return _to_number(value)


def _text_problem(text: str) -> str | None:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_VALUE_BYTES:
        return f"the value is {size:,} bytes, more than the limit of {MAX_VALUE_BYTES:,} bytes"
    if "\x00" in text:
        return "the value contains a NUL character"
    if any("\ud800" <= char <= "\udfff" for char in text):
        return "the value contains an unpaired surrogate (it is not valid UTF-8 text)"
    return None


def _to_text(value: Any) -> tuple[str | None, str | None]:
    if isinstance(value, str):
        return value, None
    if isinstance(value, bool):
        return ("true" if value else "false"), None
    if isinstance(value, int | float):
        number, reason = _to_number(value)
        if reason is not None:
            return None, reason
        return _number_text(number), None
    return None, f"must be a string; got {_shown(value)}"


def _number_text(number: int | float) -> str:
    # As JavaScript prints numbers (GitHub's inputs are JSON): 3.0 is "3", 1e21 stays "1e+21".
    if isinstance(number, int) and abs(number) < 10**21:
        return str(number)
    return repr(float(number))


def _to_boolean(value: Any) -> tuple[bool | None, str | None]:
    if isinstance(value, bool):
        return value, None
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true", None
    return None, f"must be true or false; got {_shown(value)}"


def _to_number(value: Any) -> tuple[int | float | None, str | None]:
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value.strip()):
            return None, f"must be a number; got {_shown(value)}"
        number = float(value.strip())
    elif isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None, f"must be a number between -1.8e308 and 1.8e308; got {_shown(value)}"
    else:
        return None, f"must be a number; got {_shown(value)}"
    if not math.isfinite(number):
        return None, f"must be a finite number; got {_shown(value)}"
    return (int(number) if number.is_integer() else number), None


def _shown(value: Any) -> str:
    """A value for 'got ...', short enough for a form: 'verbose', true, 3, a list."""
    if isinstance(value, str):
        return repr(value if len(value) <= _SHOWN_LENGTH else value[: _SHOWN_LENGTH - 3] + "...")
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        # str() of an int of more than 4300 digits raises ValueError.
        return str(value) if abs(value) < 10**_SHOWN_LENGTH else "a very large number"
    if value is None:
        return "null"
    return f"a {type(value).__name__}"


def _shown_name(name: Any) -> str:
    if not isinstance(name, str):
        return _shown(name)
    if len(name) > _SHOWN_LENGTH:
        name = name[: _SHOWN_LENGTH - 3] + "..."
    return f"'{name}'"
