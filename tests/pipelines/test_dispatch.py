"""workflow_dispatch inputs: what a user gives, checked and coerced against what the workflow
declares (GitHub's "Run workflow" form and REST endpoint)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipelines.dispatch import MAX_INPUTS, MAX_VALUE_BYTES, InputError, coerce_inputs
from pipelines.parser import parse_workflow
from pipelines.triggers import DispatchInput

CORPUS = Path(__file__).parent / "corpus"


def text_input(name: str = "note", **fields: Any) -> DispatchInput:
    return DispatchInput(name=name, type="string", **fields)


def boolean_input(name: str = "flag", **fields: Any) -> DispatchInput:
    return DispatchInput(name=name, type="boolean", **fields)


def number_input(name: str = "count", **fields: Any) -> DispatchInput:
    return DispatchInput(name=name, type="number", **fields)


def choice_input(name: str = "level", **fields: Any) -> DispatchInput:
    fields.setdefault("options", ("debug", "info", "warn"))
    return DispatchInput(name=name, type="choice", **fields)


def environment_input(name: str = "target", **fields: Any) -> DispatchInput:
    return DispatchInput(name=name, type="environment", **fields)


def problems(declared: tuple[DispatchInput, ...] | None, given: dict[Any, Any]) -> tuple[str, ...]:
    with pytest.raises(InputError) as caught:
        coerce_inputs(declared, given)
    return caught.value.problems


def only_problem(declared: tuple[DispatchInput, ...] | None, given: dict[Any, Any]) -> str:
    (problem,) = problems(declared, given)
    return problem


def coerce_one(spec: DispatchInput, value: Any) -> Any:
    return coerce_inputs((spec,), {spec.name: value})[spec.name]


# ---------------------------------------------------------------------------------------------
# The error type


def test_input_error_is_a_value_error_joining_its_problems() -> None:
    error = InputError(["input 'a' is required", "input 'b' is required"])
    assert isinstance(error, ValueError)
    assert error.problems == ("input 'a' is required", "input 'b' is required")
    assert str(error) == "input 'a' is required; input 'b' is required"


def test_input_error_takes_a_single_problem_as_a_string() -> None:
    error = InputError("the workflow has no workflow_dispatch trigger")
    assert error.problems == ("the workflow has no workflow_dispatch trigger",)
    assert str(error) == "the workflow has no workflow_dispatch trigger"


# ---------------------------------------------------------------------------------------------
# Declared and given names


def test_a_workflow_without_workflow_dispatch_cannot_be_dispatched() -> None:
    assert problems(None, {}) == ("the workflow has no workflow_dispatch trigger",)
    assert problems(None, {"x": "1"}) == ("the workflow has no workflow_dispatch trigger",)


def test_a_workflow_without_inputs_takes_none() -> None:
    assert coerce_inputs((), {}) == {}
    assert only_problem((), {"x": "1"}) == "unexpected input 'x' (the workflow declares no inputs)"


def test_unexpected_inputs_are_listed_with_the_declared_names() -> None:
    declared = (text_input("a"), text_input("b"))
    assert problems(declared, {"x": "1", "a": "ok", "y": 2}) == (
        "unexpected input 'x' (the workflow declares: a, b)",
        "unexpected input 'y' (the workflow declares: a, b)",
    )


def test_names_are_matched_exactly() -> None:
    assert only_problem((text_input("level"),), {"Level": "x"}) == (
        "unexpected input 'Level' (the workflow declares: level)"
    )


def test_odd_and_long_names_are_shown_briefly() -> None:
    declared = (text_input("a"),)
    assert only_problem(declared, {3: "x"}) == "unexpected input 3 (the workflow declares: a)"
    long_name = "n" * 1000
    problem = only_problem(declared, {long_name: "x"})
    assert problem == f"unexpected input '{'n' * 37}...' (the workflow declares: a)"


def test_the_result_has_every_declared_input_in_declaration_order() -> None:
    declared = (text_input("z"), boolean_input("a"), number_input("m"))
    result = coerce_inputs(declared, {"m": "1", "z": "text"})
    assert list(result) == ["z", "a", "m"]
    assert result == {"z": "text", "a": False, "m": 1}


def test_at_most_25_inputs_may_be_given() -> None:
    declared = tuple(text_input(f"i{index}") for index in range(MAX_INPUTS + 1))
    allowed = {f"i{index}": "x" for index in range(MAX_INPUTS)}
    assert MAX_INPUTS == 25
    assert len(coerce_inputs(declared, allowed)) == MAX_INPUTS + 1
    too_many = {f"i{index}": "x" for index in range(MAX_INPUTS + 1)}
    assert only_problem(declared, too_many) == "too many inputs: 26 given, at most 25 are allowed"


# ---------------------------------------------------------------------------------------------
# Unset inputs: defaults, required, empty values


@pytest.mark.parametrize(
    ("spec", "empty"),
    [
        (text_input(), ""),
        (choice_input(), ""),
        (environment_input(), ""),
        (boolean_input(), False),
        (number_input(), None),
    ],
    ids=lambda value: value.type if isinstance(value, DispatchInput) else repr(value),
)
def test_an_unset_optional_input_without_default_gets_its_type_s_empty_value(
    spec: DispatchInput, empty: Any
) -> None:
    result = coerce_inputs((spec,), {})
    assert result == {spec.name: empty}
    assert type(result[spec.name]) is type(empty)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (text_input(default="hello"), "hello"),
        (choice_input(default="info"), "info"),
        (environment_input(default="staging"), "staging"),
        (boolean_input(default=True), True),
        (number_input(default=500), 500),
        (number_input(default=2.5), 2.5),
    ],
    ids=lambda value: value.type if isinstance(value, DispatchInput) else repr(value),
)
def test_an_unset_input_gets_its_default(spec: DispatchInput, expected: Any) -> None:
    assert coerce_inputs((spec,), {}) == {spec.name: expected}
    assert coerce_inputs((spec,), {spec.name: None}) == {spec.name: expected}


def test_a_required_input_must_be_given_unless_it_has_a_default() -> None:
    assert only_problem((text_input(required=True),), {}) == "input 'note' is required"
    assert only_problem((text_input(required=True),), {"note": None}) == (
        "input 'note' is required"
    )
    assert coerce_inputs((text_input(required=True, default="d"),), {}) == {"note": "d"}
    assert coerce_inputs((text_input(required=True),), {"note": ""}) == {"note": ""}


def test_a_blank_form_field_means_not_given_where_blank_is_no_value() -> None:
    assert coerce_inputs((number_input(default=7),), {"count": ""}) == {"count": 7}
    assert coerce_inputs((number_input(),), {"count": "  "}) == {"count": None}
    assert coerce_inputs((environment_input(default="prod"),), {"target": ""}) == {"target": "prod"}
    assert coerce_inputs((choice_input(default="warn"),), {"level": ""}) == {"level": "warn"}
    assert only_problem((choice_input(required=True),), {"level": ""}) == (
        "input 'level' is required"
    )
    # Where "" is a value it stays one.
    assert coerce_inputs((text_input(default="d"),), {"note": ""}) == {"note": ""}
    with_blank = choice_input(options=("", "x"), default="x")
    assert coerce_inputs((with_blank,), {"level": ""}) == {"level": ""}


def test_a_blank_default_means_no_default_where_blank_is_no_value() -> None:
    assert coerce_inputs((environment_input(default=""),), {}) == {"target": ""}
    assert only_problem((environment_input(default="", required=True),), {}) == (
        "input 'target' is required"
    )
    assert coerce_inputs((text_input(default="", required=True),), {}) == {"note": ""}


def test_a_given_value_wins_over_the_default() -> None:
    assert coerce_inputs((number_input(default=500),), {"count": 3}) == {"count": 3}
    assert coerce_inputs((boolean_input(default=True),), {"flag": False}) == {"flag": False}


def test_a_bad_default_is_a_problem_naming_the_default() -> None:
    assert only_problem((choice_input(default="verbose"),), {}) == (
        "input 'level': must be one of debug, info, warn; got 'verbose' "
        "(the default in the workflow)"
    )
    assert only_problem((boolean_input(default="yes"),), {}) == (
        "input 'flag': must be true or false; got 'yes' (the default in the workflow)"
    )
    assert only_problem((number_input(default=math.inf),), {}) == (
        "input 'count': must be a finite number; got inf (the default in the workflow)"
    )


def test_a_bad_default_does_not_matter_when_a_value_is_given() -> None:
    assert coerce_inputs((choice_input(default="verbose"),), {"level": "info"}) == {"level": "info"}


def test_the_corpus_dispatch_workflow() -> None:
    path = CORPUS / "valid" / "dispatch-inputs.yml"
    workflow = parse_workflow(path.read_text(encoding="utf-8"), str(path))
    declared = workflow.triggers.workflow_dispatch
    assert coerce_inputs(declared, {"target": "staging"}) == {
        "task": "vacuum",
        "target": "staging",
        "dry-run": True,
        "batch-size": 500,
        "note": "",
    }
    assert coerce_inputs(
        declared,
        {"task": "reindex", "target": "prod", "dry-run": "false", "batch-size": "20", "note": 1},
    ) == {"task": "reindex", "target": "prod", "dry-run": False, "batch-size": 20, "note": "1"}
    assert problems(declared, {"task": "drop-all", "dry-run": "maybe"}) == (
        "input 'task': must be one of vacuum, reindex, rotate-logs; got 'drop-all'",
        "input 'target' is required",
        "input 'dry-run': must be true or false; got 'maybe'",
    )


def test_every_problem_is_reported_at_once() -> None:
    declared = (choice_input(), number_input(), text_input(required=True))
    error_problems = problems(declared, {"level": "verbose", "count": "many", "other": 1})
    assert error_problems == (
        "unexpected input 'other' (the workflow declares: level, count, note)",
        "input 'level': must be one of debug, info, warn; got 'verbose'",
        "input 'count': must be a number; got 'many'",
        "input 'note' is required",
    )


# ---------------------------------------------------------------------------------------------
# Coercion by type


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("text", "text"),
        ("", ""),
        ("  spaced  ", "  spaced  "),
        (3, "3"),
        (-7, "-7"),
        (2.5, "2.5"),
        (3.0, "3"),
        (1e21, "1e+21"),
        (True, "true"),
        (False, "false"),
    ],
)
def test_string_inputs(given: Any, expected: str) -> None:
    assert coerce_one(text_input(), given) == expected


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (["a"], "input 'note': must be a string; got a list"),
        ({"a": 1}, "input 'note': must be a string; got a dict"),
        (b"bytes", "input 'note': must be a string; got a bytes"),
        (math.nan, "input 'note': must be a finite number; got nan"),
        (
            10**400,
            "input 'note': must be a number between -1.8e308 and 1.8e308; got a very large number",
        ),
    ],
)
def test_string_inputs_refuse(given: Any, problem: str) -> None:
    assert only_problem((text_input(),), {"note": given}) == problem


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("false", False),
        ("TRUE", True),
        ("False", False),
        (" true ", True),
    ],
)
def test_boolean_inputs(given: Any, expected: bool) -> None:
    assert coerce_one(boolean_input(), given) is expected


@pytest.mark.parametrize("given", ["yes", "1", "", "t", 1, 0, 1.0, ["true"]])
def test_boolean_inputs_refuse(given: Any) -> None:
    problem = only_problem((boolean_input(),), {"flag": given})
    assert problem.startswith("input 'flag': must be true or false; got ")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("3", 3),
        ("2.5", 2.5),
        ("-1e3", -1000),
        ("+4", 4),
        (".5", 0.5),
        ("5.", 5),
        (" 7 ", 7),
        ("1E2", 100),
        ("3.0", 3),
        (3, 3),
        (-3, -3),
        (2.5, 2.5),
        (4.0, 4),
        (0, 0),
    ],
)
def test_number_inputs(given: Any, expected: int | float) -> None:
    result = coerce_one(number_input(), given)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("many", "must be a number; got 'many'"),
        ("nan", "must be a number; got 'nan'"),
        ("inf", "must be a number; got 'inf'"),
        ("-Infinity", "must be a number; got '-Infinity'"),
        ("1_000", "must be a number; got '1_000'"),
        ("0x10", "must be a number; got '0x10'"),
        ("\u0663", "must be a number; got '\u0663'"),  # ARABIC-INDIC DIGIT THREE
        ("1e999", "must be a finite number; got '1e999'"),
        (True, "must be a number; got true"),
        (math.nan, "must be a finite number; got nan"),
        (-math.inf, "must be a finite number; got -inf"),
        ([1], "must be a number; got a list"),
    ],
)
def test_number_inputs_refuse(given: Any, problem: str) -> None:
    assert only_problem((number_input(),), {"count": given}) == f"input 'count': {problem}"


def test_number_inputs_are_doubles_like_github_s() -> None:
    assert coerce_one(number_input(), 2**53 + 1) == 2**53
    assert coerce_one(number_input(), "1e20") == 10**20


@pytest.mark.parametrize(
    ("given", "expected"),
    [("info", "info"), ("debug", "debug")],
)
def test_choice_inputs(given: Any, expected: str) -> None:
    assert coerce_one(choice_input(), given) == expected


def test_choice_inputs_compare_the_text_of_numbers_and_booleans() -> None:
    numbered = choice_input(options=("1", "2", "true"))
    assert coerce_one(numbered, 2) == "2"
    assert coerce_one(numbered, True) == "true"


@pytest.mark.parametrize("given", ["verbose", "INFO", " info", 3])
def test_choice_inputs_refuse(given: Any) -> None:
    problem = only_problem((choice_input(),), {"level": given})
    assert problem.startswith("input 'level': must be one of debug, info, warn; got ")


def test_choice_problem_reads_like_github_s() -> None:
    assert only_problem((choice_input(),), {"level": "verbose"}) == (
        "input 'level': must be one of debug, info, warn; got 'verbose'"
    )


def test_environment_inputs() -> None:
    assert coerce_one(environment_input(), "production") == "production"
    assert only_problem((environment_input(),), {"target": 3}) == (
        "input 'target': must be the name of an environment; got 3"
    )


def test_an_unknown_type_is_a_problem_not_a_crash() -> None:
    spec = DispatchInput(name="odd", type="date")
    assert only_problem((spec,), {"odd": "2024-01-01"}) == (
        "input 'odd': unknown input type 'date'; expected one of string, boolean, choice, "
        "number, environment"
    )


# ---------------------------------------------------------------------------------------------
# Storable text


def test_values_up_to_64_kib_are_accepted() -> None:
    assert MAX_VALUE_BYTES == 65536
    assert coerce_one(text_input(), "x" * MAX_VALUE_BYTES) == "x" * MAX_VALUE_BYTES
    # Bytes of UTF-8, not characters.
    assert coerce_one(text_input(), "\u00e9" * (MAX_VALUE_BYTES // 2)) == "\u00e9" * 32768


@pytest.mark.parametrize(
    ("spec", "value"),
    [
        (text_input(), "x" * (MAX_VALUE_BYTES + 1)),
        (text_input(), "\u00e9" * (MAX_VALUE_BYTES // 2) + "x"),
        (number_input(), "1" * (MAX_VALUE_BYTES + 1)),
        (choice_input(), "x" * (MAX_VALUE_BYTES + 1)),
    ],
)
def test_longer_values_are_refused(spec: DispatchInput, value: str) -> None:
    assert only_problem((spec,), {spec.name: value}) == (
        f"input '{spec.name}': the value is 65,537 bytes, more than the limit of 65,536 bytes"
    )


def test_a_long_default_is_refused_too() -> None:
    spec = text_input(default="x" * (MAX_VALUE_BYTES + 1))
    assert only_problem((spec,), {}).endswith("(the default in the workflow)")


def test_text_that_postgres_cannot_store_is_refused() -> None:
    assert only_problem((text_input(),), {"note": "a\x00b"}) == (
        "input 'note': the value contains a NUL character"
    )
    assert only_problem((text_input(),), {"note": "a\ud800b"}) == (
        "input 'note': the value contains an unpaired surrogate (it is not valid UTF-8 text)"
    )


def test_long_wrong_values_are_shortened_in_the_message() -> None:
    problem = only_problem((choice_input(),), {"level": "v" * 5000})
    assert problem == f"input 'level': must be one of debug, info, warn; got '{'v' * 37}...'"


# ---------------------------------------------------------------------------------------------
# Properties

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

NAMES = ["a", "b", "level", "count", "dry-run", "target"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**500), max_value=10**500),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["true", "FALSE", "3", "-2.5e1", "nan", "", " ", "debug", "1e999", "x"]),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), scalars, max_size=2),
    st.binary(max_size=3),
    # Around the size limit, in characters of one to four bytes.
    st.builds(
        lambda size, char: char * (size // len(char.encode())),
        st.integers(MAX_VALUE_BYTES - 4, MAX_VALUE_BYTES + 4),
        st.sampled_from(["x", "\u00e9", "\u20ac", "\U0001f600"]),
    ),
)
TYPES = ["string", "boolean", "choice", "number", "environment"]


@st.composite
def declared_inputs(draw: st.DrawFn) -> tuple[DispatchInput, ...]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    options = st.lists(st.sampled_from(["debug", "info", "3", "true", ""]), unique=True, max_size=4)
    return tuple(
        DispatchInput(
            name=name,
            type=draw(st.sampled_from([*TYPES, "unknown"])),
            required=draw(st.booleans()),
            default=draw(scalars),
            options=tuple(draw(options)),
        )
        for name in names
    )


given_mappings = st.dictionaries(
    st.one_of(st.sampled_from(NAMES), st.text(max_size=4), st.integers()), values, max_size=30
)


def _has_declared_type(spec: DispatchInput, value: Any) -> bool:
    if spec.type == "boolean":
        return isinstance(value, bool)
    if spec.type == "number":
        if value is None:
            return True
        return (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and (math.isfinite(value))
        )
    if spec.type == "choice":
        return value in spec.options or value == ""
    if spec.type == "environment":
        return isinstance(value, str) and (value.strip() != "" or not spec.required)
    return isinstance(value, str)


@PROPERTY_SETTINGS
@given(declared=st.one_of(st.none(), declared_inputs()), given_values=given_mappings)
def test_any_given_mapping_yields_the_declared_inputs_or_an_input_error(
    declared: tuple[DispatchInput, ...] | None, given_values: dict[Any, Any]
) -> None:
    try:
        result = coerce_inputs(declared, given_values)
    except InputError as error:
        assert error.problems
        assert str(error) == "; ".join(error.problems)
        assert all(isinstance(problem, str) and problem for problem in error.problems)
        return
    assert declared is not None
    assert list(result) == [spec.name for spec in declared]
    for spec in declared:
        assert _has_declared_type(spec, result[spec.name]), (spec, result[spec.name])


@PROPERTY_SETTINGS
@given(declared=declared_inputs(), given_values=given_mappings)
def test_a_result_given_back_is_accepted_unchanged(
    declared: tuple[DispatchInput, ...], given_values: dict[Any, Any]
) -> None:
    try:
        result = coerce_inputs(declared, given_values)
    except InputError:
        return
    assert coerce_inputs(declared, result) == result


@PROPERTY_SETTINGS
@given(
    spec=st.sampled_from([text_input(), boolean_input(), number_input(), choice_input()]),
    value=values,
)
def test_a_problem_names_the_input(spec: DispatchInput, value: Any) -> None:
    try:
        coerce_inputs((spec,), {spec.name: value})
    except InputError as error:
        assert all(f"'{spec.name}'" in problem for problem in error.problems)


storable_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"))
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
VALID_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "string": st.one_of(storable_text, st.integers(), finite_floats, st.booleans()),
    "boolean": st.one_of(st.booleans(), st.sampled_from(["true", "false", "True", "FALSE"])),
    "number": st.one_of(
        st.integers(-(2**53), 2**53),
        finite_floats,
        st.integers().map(str),
        finite_floats.map(repr),
    ),
    "choice": st.sampled_from(["debug", "info", "warn"]),
    "environment": st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True),
}


@st.composite
def valid_cases(draw: st.DrawFn) -> tuple[tuple[DispatchInput, ...], dict[str, Any]]:
    names = draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=len(NAMES)))
    declared = []
    given_values = {}
    for name in names:
        kind = draw(st.sampled_from(TYPES))
        values_of_kind = VALID_VALUES[kind]
        declared.append(
            DispatchInput(
                name=name,
                type=kind,
                required=draw(st.booleans()),
                default=draw(st.none() | values_of_kind),
                options=("debug", "info", "warn") if kind == "choice" else (),
            )
        )
        if draw(st.booleans()) or (declared[-1].required and declared[-1].default is None):
            given_values[name] = draw(values_of_kind)
    return tuple(declared), given_values


@PROPERTY_SETTINGS
@given(case=valid_cases())
def test_valid_values_are_always_accepted(
    case: tuple[tuple[DispatchInput, ...], dict[str, Any]],
) -> None:
    declared, given_values = case
    result = coerce_inputs(declared, given_values)
    assert list(result) == [spec.name for spec in declared]
    for spec in declared:
        value = result[spec.name]
        assert _has_declared_type(spec, value)
        sent = given_values.get(spec.name, spec.default)
        # Values already of the declared type come back unchanged.
        if spec.type == "number":
            unchanged = isinstance(sent, int | float)
        elif spec.type == "boolean":
            unchanged = isinstance(sent, bool)
        else:
            unchanged = isinstance(sent, str)
        if unchanged:
            assert value == sent
    assert coerce_inputs(declared, result) == result
