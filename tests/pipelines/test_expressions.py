"""The GitHub Actions expression engine: syntax, GitHub's coercion rules, functions, errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipelines.errors import ExpressionError
from pipelines.expressions import (
    MAX_DEPTH,
    MAX_STRING_LENGTH,
    BinaryOp,
    ContextRef,
    EvalOptions,
    FunctionCall,
    IndexAccess,
    Literal,
    Not,
    PropertyAccess,
    Template,
    Wildcard,
    evaluate,
    evaluate_condition,
    find_templates,
    is_truthy,
    parse,
    parse_condition,
    referenced_contexts,
    render,
    to_string,
    uses_status_function,
)

SHARED_LIST = [1, 2]

CONTEXTS: dict[str, Any] = {
    "github": {
        "ref": "refs/heads/main",
        "event_name": "push",
        "event": {
            "head_commit": {"message": "Fix the build"},
            "commits": [
                {"message": "first", "author": {"name": "ada"}},
                {"message": "second", "author": {"name": "bob"}},
                {"id": "no message here"},
            ],
            "labels": {"bug": {"name": "bug"}, "docs": {"name": "docs"}},
        },
    },
    "matrix": {"os": "ubuntu-latest", "node": 20, "python": 3.1, "flags": ["a", "b"]},
    "steps": {"my-step": {"outputs": {"out-1": "value-1"}, "outcome": "success"}},
    "needs": {"build": {"result": "success", "outputs": {"version": "1.2.3"}}},
    "env": {"EMPTY": "", "ZERO": "0", "NULLISH": None},
    "shared": {"left": SHARED_LIST, "right": SHARED_LIST, "copy": [1, 2], "object": {}},
}

HASH_OPTIONS = EvalOptions(hash_files=lambda patterns: "hash:" + "|".join(patterns))


def value_of(text: str, contexts: dict[str, Any] | None = None, **options: Any) -> Any:
    return evaluate(text, CONTEXTS if contexts is None else contexts, EvalOptions(**options))


def error_from(action: Callable[[], Any]) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        action()
    return caught.value


def same_value(left: Any, right: Any) -> bool:
    """Equality where NaN equals NaN, for comparing two evaluations of one expression."""
    if isinstance(left, float) and isinstance(right, float) and math.isnan(left):
        return math.isnan(right)
    return bool(left == right)


# --------------------------------------------------------------------------------------------------
# Literals


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null", None),
        ("true", True),
        ("false", False),
        ("42", 42),
        ("-2", -2),
        ("+7", 7),
        ("3.5", 3.5),
        ("-0.25", -0.25),
        (".5", 0.5),
        ("0x1F", 31),
        ("0o17", 15),
        ("1e3", 1000),
        ("1.5E-3", 0.0015),
        ("Infinity", math.inf),
        ("-Infinity", -math.inf),
        ("'hello'", "hello"),
        ("''", ""),
        ("'it''s'", "it's"),
        ("''''", "'"),
        ("'a \"quoted\" word'", 'a "quoted" word'),
    ],
)
def test_literals(text: str, expected: Any) -> None:
    value = value_of(text)
    assert value == expected
    assert type(value) is type(expected)


def test_nan_literal() -> None:
    assert math.isnan(value_of("NaN"))


def test_whole_number_literals_become_ints() -> None:
    assert parse("1e3") == Literal(1000, 0)
    assert isinstance(parse("1.0").value, int)  # type: ignore[union-attr]


def test_keywords_are_case_sensitive_like_github() -> None:
    # `True` is a context name, not the boolean; the workflow parser rejects unknown contexts.
    assert parse("True") == ContextRef("True", 0)


def test_double_quotes_are_not_strings() -> None:
    error = error_from(lambda: parse('a == "x"'))
    assert "single quotes" in error.message
    assert error.position == 5


def test_unterminated_string_points_at_its_quote() -> None:
    error = error_from(lambda: parse("a == 'abc"))
    assert error.message.startswith("unterminated string")
    assert error.position == 5


@pytest.mark.parametrize(("text", "position"), [("12abc", 0), ("a == 1.2.3", 5), ("0xZZ", 0)])
def test_invalid_numbers(text: str, position: int) -> None:
    error = error_from(lambda: parse(text))
    assert error.message.startswith("invalid number")
    assert error.position == position


def test_a_lone_minus_explains_there_is_no_arithmetic() -> None:
    error = error_from(lambda: parse("1 - 2"))
    assert "no arithmetic" in error.message
    assert error.position == 2


# --------------------------------------------------------------------------------------------------
# Operators and precedence


def test_syntax_tree_shape_and_positions() -> None:
    assert parse("!a.b || c[0] == 'x' && success()") == BinaryOp(
        "||",
        Not(PropertyAccess(ContextRef("a", 1), "b", 3), 0),
        BinaryOp(
            "&&",
            BinaryOp(
                "==", IndexAccess(ContextRef("c", 8), Literal(0, 10), 9), Literal("x", 16), 13
            ),
            FunctionCall("success", (), 23),
            20,
        ),
        5,
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("true || false && false", True),  # && binds tighter than ||
        ("(true || false) && false", False),
        ("1 == 1 && 2 == 3", False),  # == binds tighter than &&
        ("1 < 2 == true", True),  # < binds tighter than ==
        ("!true == false", True),  # ! binds tighter than ==
        ("!(1 == 2)", True),
        ("!!'x'", True),
        ("1 == 1 == true", True),  # left-associative: (1 == 1) == true
        ("3 > 2 > 1", False),  # (3 > 2) > 1 is true > 1 is 1 > 1
    ],
)
def test_precedence_and_associativity(text: str, expected: bool) -> None:
    assert value_of(text) is expected


def test_operators_are_left_associative() -> None:
    tree = parse("a == b != c")
    assert isinstance(tree, BinaryOp) and tree.operator == "!="
    assert isinstance(tree.left, BinaryOp) and tree.left.operator == "=="


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("'a' && 'b'", "b"),
        ("'' && 'b'", ""),
        ("0 && 'b'", 0),
        ("null || 'fallback'", "fallback"),
        ("'set' || 'fallback'", "set"),
        ("0 || ''", ""),
        ("env.EMPTY || 'default'", "default"),
        ("matrix.os == 'ubuntu-latest' && 'linux' || 'other'", "linux"),
    ],
)
def test_logical_operators_return_an_operand(text: str, expected: Any) -> None:
    assert value_of(text) == expected


def test_logical_operators_short_circuit() -> None:
    # The right-hand sides would fail if they were evaluated.
    assert value_of("false && fromJSON('not json')") is False
    assert value_of("true || hashFiles('**/*.lock')") is True


# --------------------------------------------------------------------------------------------------
# Property access


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("github.event.head_commit.message", "Fix the build"),
        ("github['event']['head_commit']['message']", "Fix the build"),
        ("matrix['os']", "ubuntu-latest"),
        ("GITHUB.Event.HEAD_COMMIT.Message", "Fix the build"),
        ("matrix['OS']", "ubuntu-latest"),
        ("needs.build.outputs.version", "1.2.3"),
        ("steps.my-step.outputs.out-1", "value-1"),
        ("github.event.commits[1].message", "second"),
        ("github.event.commits[1.9].message", "second"),  # GitHub floors the index
        ("github.event.commits['0'].message", "first"),  # and coerces it to a number
        ('fromJSON(\'{"a": {"b": 5}}\').a.b', 5),
        ("(github).ref", "refs/heads/main"),
        ("matrix[format('{0}', 'os')]", "ubuntu-latest"),
    ],
)
def test_property_access(text: str, expected: Any) -> None:
    assert value_of(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "nosuchcontext",
        "nosuchcontext.deeper.still",
        "github.event.nothing",
        "github.event.commits[3]",
        "github.event.commits[-1]",
        "github.event.commits['first']",
        "github.ref.length",
        "github.ref[0]",
        "matrix.node.value",
        "null.x",
        "github.event.commits[NaN]",
    ],
)
def test_undefined_properties_are_null(text: str) -> None:
    assert value_of(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("github.event.commits.*.message", ["first", "second"]),  # items without one are skipped
        ("github.event.commits[*].message", ["first", "second"]),
        ("github.event.commits.*.author.name", ["ada", "bob"]),
        ("github.event.labels.*.name", ["bug", "docs"]),  # on an object: its values
        ("matrix.flags.*", ["a", "b"]),
        ("github.event.commits.*.nothing", []),
        ("fromJSON('[[1, 2], [3]]').*.*", [1, 2, 3]),
        ("fromJSON('[[1, 2], [3]]').*[0]", [1, 3]),
    ],
)
def test_object_filters(text: str, expected: list[Any]) -> None:
    value = value_of(text)
    assert value == expected
    assert type(value) is list


def test_object_filter_on_a_scalar_is_null() -> None:
    assert value_of("github.ref.*") is None
    assert value_of("nosuchcontext.*.name") is None


def test_object_filter_in_functions() -> None:
    assert value_of("contains(github.event.commits.*.author.name, 'ADA')") is True
    assert value_of("join(github.event.commits.*.message, ', ')") == "first, second"


def test_exact_key_match_wins_over_a_case_insensitive_one() -> None:
    assert value_of("x.key", {"x": {"KEY": 1, "key": 2}}) == 2


# --------------------------------------------------------------------------------------------------
# Comparison and coercion


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("null == null", True),
        ("null == 0", True),
        ("null == ''", True),
        ("null == false", True),
        ("true == 1", True),
        ("true == '1'", True),
        ("false == ''", True),
        ("false == 'false'", False),  # 'false' is NaN as a number
        ("'abc' == 'ABC'", True),
        ("'abc' != 'ABD'", True),
        ("'0x10' == 16", True),
        ("' 12 ' == 12", True),
        ("'' == 0", True),
        ("'abc' == 0", False),
        ("1 == 1.0", True),
        ("NaN == NaN", False),
        ("NaN != NaN", True),
        ("matrix.node == '20'", True),
        ("shared.left == shared.right", True),  # the same list object
        ("shared.left == shared.copy", False),  # equal contents, different objects
        ("shared.object == 'Object'", False),  # objects become NaN
        ("matrix.flags == matrix.flags", True),
        ("matrix.flags == 0", False),
    ],
)
def test_loose_equality(text: str, expected: bool) -> None:
    assert value_of(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 < 2", True),
        ("2 <= 2", True),
        ("3 > 2", True),
        ("2 >= 3", False),
        ("'a' < 'B'", True),  # case-insensitive
        ("'B' > 'a'", True),
        ("'abc' <= 'ABC'", True),
        ("'2' < '10'", False),  # both strings: compared as text
        ("2 < '10'", True),  # mixed: compared as numbers
        ("null < 1", True),
        ("null <= null", True),
        ("false < true", True),
        ("NaN < 1", False),
        ("NaN >= NaN", False),
        ("'x' < 1", False),
        ("shared.left < shared.copy", False),
        ("shared.left >= shared.left", False),
    ],
)
def test_ordering(text: str, expected: bool) -> None:
    assert value_of(text) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, False),
        (False, False),
        (0, False),
        (-0.0, False),
        (math.nan, False),
        ("", False),
        (True, True),
        (1, True),
        (-1.5, True),
        ("false", True),
        ("0", True),
        ([], True),
        ({}, True),
    ],
)
def test_truthiness(value: Any, expected: bool) -> None:
    assert is_truthy(value) is expected
    assert value_of("!x", {"x": value}) is not expected


# --------------------------------------------------------------------------------------------------
# Functions


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("contains('Hello world', 'WORLD')", True),
        ("contains('Hello world', 'mars')", False),
        ("contains(matrix.flags, 'A')", True),
        ("contains(matrix.flags, 'c')", False),
        ("contains(fromJSON('[1, 2]'), '2')", True),  # items are compared loosely
        ("contains(12345, 34)", True),  # non-strings are cast to strings
        ("contains(true, 'ru')", True),
        ("contains(github.event, 'Object')", False),  # an object is not searched
        ("startsWith(github.ref, 'REFS/heads/')", True),
        ("startsWith(github.ref, 'heads')", False),
        ("endsWith(github.ref, '/MAIN')", True),
        ("endsWith(20, 0)", True),
        ("startsWith(matrix.flags, 'a')", False),
        ("CONTAINS('abc', 'b')", True),  # function names ignore case
        ("startswith('abc', 'a')", True),
    ],
)
def test_search_functions(text: str, expected: bool) -> None:
    assert value_of(text) is expected


def test_function_names_are_stored_canonically() -> None:
    assert parse("TOjson(1)") == FunctionCall("toJSON", (Literal(1, 7),), 0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("format('{0} {1}', 'a', 'b')", "a b"),
        ("format('{1}{0}{1}', 'x', 'y')", "yxy"),
        ("format('{{0}} is {0}', 'zero')", "{0} is zero"),
        ("format('{{{0}}}', 'braced')", "{braced}"),
        ("format('no placeholders')", "no placeholders"),
        ("format('{0}|{1}|{2}|{3}', null, true, 3.0, 0.5)", "|true|3|0.5"),
        ("format('{0}', matrix.flags)", "Array"),
        ("format('{0}', github)", "Object"),
        ("format(42)", "42"),
    ],
)
def test_format(text: str, expected: str) -> None:
    assert value_of(text) == expected


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("format('{0} {1}', 'a')", "refers to argument 1, but the number of arguments after"),
        ("format('{2}')", "refers to argument 2, but the number of arguments after"),
        ("format('{0', 'a')", "'{' at index 0 of the format string is never closed"),
        ("format('a}b', 'a')", "'}' at index 1 of the format string has no '{'"),
        ("format('{x}', 'a')", "invalid placeholder '{x}'"),
        ("format('{ 0 }', 'a')", "invalid placeholder '{ 0 }'"),
        ("format('{99999999999999999999}', 'a')", "refers to argument 99999999999999999999,"),
    ],
)
def test_format_errors(text: str, fragment: str) -> None:
    error = error_from(lambda: value_of("'pad' && " + text))
    assert error.message.startswith("format(): ")
    assert fragment in error.message
    assert error.position == 9  # the call, after the 'pad' && prefix


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("join(matrix.flags)", "a,b"),
        ("join(matrix.flags, ' + ')", "a + b"),
        ("join(fromJSON('[1, null, true, 2.5]'), '')", "1true2.5"),
        ("join('just text')", "just text"),
        ("join(7, '-')", "7"),
        ("join(null)", ""),
        ("join(github.event)", ""),
        ("join(fromJSON('[]'))", ""),
    ],
)
def test_join(text: str, expected: str) -> None:
    assert value_of(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            'toJSON(fromJSON(\'{"a": [1, 2.0], "b": null}\'))',
            '{\n  "a": [\n    1,\n    2\n  ],\n  "b": null\n}',
        ),
        ("toJSON('text')", '"text"'),
        ("toJSON('caf\u00e9')", '"caf\u00e9"'),
        ("toJSON(3.0)", "3"),
        ("toJSON(0.5)", "0.5"),
        ("toJSON(null)", "null"),
        ("toJSON(true)", "true"),
        ("toJSON(NaN)", "null"),
        ("toJSON(fromJSON('{}'))", "{}"),
        ("toJSON(fromJSON('[]'))", "[]"),
        ("toJSON(github.event.commits.*.message)", '[\n  "first",\n  "second"\n]'),
    ],
)
def test_to_json(text: str, expected: str) -> None:
    assert value_of(text) == expected


def test_to_json_round_trips_a_context() -> None:
    assert value_of("fromJSON(toJSON(needs))") == CONTEXTS["needs"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('fromJSON(\'{"include": [{"os": "linux"}]}\')', {"include": [{"os": "linux"}]}),
        ("fromJSON('[1, 2.5, \"x\", null, true]')", [1, 2.5, "x", None, True]),
        ("fromJSON('42')", 42),
        ("fromJSON(' \"text\" ')", "text"),
        ("fromJSON(needs.build.result == 'success')", True),  # non-strings are cast to strings
    ],
)
def test_from_json(text: str, expected: Any) -> None:
    assert value_of(text) == expected


@pytest.mark.parametrize("document", ["{not json}", "", "NaN", "[1, Infinity]", "[1,"])
def test_from_json_rejects_invalid_json(document: str) -> None:
    error = error_from(lambda: value_of(f"fromJSON('{document}')"))
    assert error.message.startswith("fromJSON(): invalid JSON")
    assert error.position == 0


def test_hash_files_calls_back_with_every_pattern() -> None:
    options = HASH_OPTIONS
    assert evaluate("hashFiles('**/*.lock', format('{0}.txt', 'b'))", {}, options) == (
        "hash:**/*.lock|b.txt"
    )


def test_hash_files_is_unavailable_without_a_callback() -> None:
    error = error_from(lambda: value_of("format('{0}', hashFiles('x'))"))
    assert error.message == "hashFiles is not available here"
    assert error.position == 14


def test_hash_files_failures_become_expression_errors() -> None:
    def broken(patterns: list[str]) -> str:
        raise OSError("disk on fire")

    error = error_from(lambda: evaluate("hashFiles('x')", {}, EvalOptions(hash_files=broken)))
    assert error.message == "hashFiles() failed: disk on fire"


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("success", {"success": True, "failure": False, "cancelled": False, "always": True}),
        ("failure", {"success": False, "failure": True, "cancelled": False, "always": True}),
        ("cancelled", {"success": False, "failure": False, "cancelled": True, "always": True}),
    ],
)
def test_status_functions(status: str, expected: dict[str, bool]) -> None:
    for function, result in expected.items():
        assert value_of(f"{function}()", status=status) is result


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("contains('a')", "contains() takes exactly 2 arguments, got 1"),
        ("startsWith('a', 'b', 'c')", "startsWith() takes exactly 2 arguments, got 3"),
        ("endsWith()", "endsWith() takes exactly 2 arguments, got 0"),
        ("format()", "format() takes at least 1 argument, got 0"),
        ("join()", "join() takes 1 or 2 arguments, got 0"),
        ("join(1, 2, 3)", "join() takes 1 or 2 arguments, got 3"),
        ("toJSON()", "toJSON() takes exactly 1 argument, got 0"),
        ("fromJSON('1', '2')", "fromJSON() takes exactly 1 argument, got 2"),
        ("hashFiles()", "hashFiles() takes at least 1 argument, got 0"),
        ("success(1)", "success() takes no arguments, got 1"),
        ("always(true)", "always() takes no arguments, got 1"),
    ],
)
def test_argument_counts_are_checked_when_parsing(text: str, message: str) -> None:
    error = error_from(lambda: parse("true && " + text))
    assert error.message == message
    assert error.position == 8


@pytest.mark.parametrize(
    ("name", "suggestion"),
    [
        ("contain", "contains"),
        ("fromjsn", "fromJSON"),
        ("startWith", "startsWith"),
        ("hashfile", "hashFiles"),
        ("sucess", "success"),
    ],
)
def test_unknown_functions_suggest_the_nearest_name(name: str, suggestion: str) -> None:
    error = error_from(lambda: parse(f"x || {name}('a')"))
    assert error.message == f"unknown function '{name}' (did you mean '{suggestion}'?)"
    assert error.position == 5


def test_unknown_function_without_a_near_match_lists_the_functions() -> None:
    error = error_from(lambda: parse("frobnicate()"))
    assert error.message.startswith("unknown function 'frobnicate' (the functions are contains,")


# --------------------------------------------------------------------------------------------------
# Syntax errors


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("(a", "expected ')' to close '(' at character 1 but found the end of the expression", 2),
        ("x && (a b)", "expected ')' to close '(' at character 6 but found 'b'", 8),
        ("a[0", "expected ']' to close '[' at character 2 but found the end of the expression", 3),
        ("a[*", "expected ']' to close '[' at character 2 but found the end of the expression", 3),
        ("a[* 1]", "expected ']' to close '[' at character 2 but found number 1", 4),
        ("a = b", "unexpected token '=' (did you mean '=='?)", 2),
        ("a & b", "unexpected token '&' (did you mean '&&'?)", 2),
        ("a | b", "unexpected token '|' (did you mean '||'?)", 2),
        ("", "expected an expression but found nothing", 0),
        ("   ", "expected an expression but found nothing", 3),
        ("1 ==", "expected a value after '==' but found the end of the expression", 4),
        ("a && || b", "expected a value after '&&' but found '||'", 5),
        ("!", "expected a value after '!' but found the end of the expression", 1),
        ("a b", "unexpected 'b' (expected an operator such as '==', '&&' or '||', or the end", 2),
        ("a 'b'", "unexpected string 'b' (expected an operator", 2),
        ("a)", "unexpected ')' (there is no '(' for it to close)", 1),
        ("a]", "unexpected ']' (there is no '[' for it to close)", 1),
        ("a.", "expected a property name or '*' after '.' but found the end of the expression", 2),
        ("a.5", "expected a property name or '*' after '.' but found number 5", 2),
        ("a..b", "expected a property name or '*' after '.' but found '.'", 2),
        ("a.'b'", "expected a property name or '*' after '.' but found string 'b'", 2),
        ("*", "unexpected '*' (the '*' filter goes after a value", 0),
        ("contains(a b)", "expected ',' or ')' in the arguments of contains() (opened at", 11),
        ("format('{0}',)", "expected a value after ',' but found ')'", 13),
        ("a @ b", "unexpected character '@'", 2),
        ("${{ a }}", "unexpected '${{' (an expression cannot contain another ${{ }})", 0),
        ("()", "expected a value after '(' but found ')'", 1),
    ],
)
def test_syntax_errors(text: str, message: str, position: int) -> None:
    error = error_from(lambda: parse(text))
    assert error.message.startswith(message)
    assert error.position == position


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_DEPTH + 1) + "a" + ")" * (MAX_DEPTH + 1),
        "!" * (MAX_DEPTH + 1) + "a",
        "a" + ".b" * MAX_DEPTH,
        "a" + "[0]" * MAX_DEPTH,
        "toJSON(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1),
        " || ".join(["a"] * (MAX_DEPTH + 1)),
        "(" * 100_000,
        "!" * 100_000,
    ],
)
def test_deep_nesting_is_reported_not_crashed(text: str) -> None:
    error = error_from(lambda: parse(text))
    assert "nested too deeply" in error.message
    assert 0 <= error.position <= len(text)


def test_nesting_up_to_the_limit_is_fine() -> None:
    depth = MAX_DEPTH - 1
    assert value_of("(" * depth + "1" + ")" * depth) == 1
    negations = depth - 1
    assert value_of("!" * negations + "true") is (negations % 2 == 0)
    assert value_of("contains(" * depth + "'t'" + ", 't')" * depth) is True


def test_exponential_string_growth_is_capped() -> None:
    text = "toJSON(" * 40 + "'\"'" + ")" * 40
    error = error_from(lambda: value_of(text))
    assert f"longer than {MAX_STRING_LENGTH} characters" in error.message
    long_text = {"x": "y" * (MAX_STRING_LENGTH // 2 + 1)}
    error = error_from(lambda: value_of("join(fromJSON('[1, 2, 3]'), x)", long_text))
    assert error.message.startswith("join(): the result would be longer than")
    error = error_from(lambda: value_of("format('{0}{0}', x)", long_text))
    assert error.message.startswith("format(): the result would be longer than")


def test_self_containing_values_do_not_crash_to_json() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    error = error_from(lambda: value_of("toJSON(loop)", {"loop": loop}))
    assert error.message.startswith("toJSON(): cannot convert the value to JSON")


# --------------------------------------------------------------------------------------------------
# Templates


def test_find_templates_reports_offsets_and_inner_text() -> None:
    text = "echo ${{ matrix.os }}-${{github.ref}}"
    assert find_templates(text) == [
        Template(5, 21, " matrix.os "),
        Template(22, 37, "github.ref"),
    ]
    for template in find_templates(text):
        assert text[template.start : template.end] == "${{" + template.source + "}}"


def test_closing_braces_inside_strings_do_not_end_a_template() -> None:
    text = "${{ format('a}}b{0}', 'it''s }}') }} tail"
    (template,) = find_templates(text)
    assert template.source == " format('a}}b{0}', 'it''s }}') "
    assert render(text, {}) == "a}bit's }} tail"  # `}}` in a format string is an escaped `}`


def test_find_templates_without_templates() -> None:
    assert find_templates("plain text with $ and {{ braces }}") == []
    assert find_templates("") == []


def test_unclosed_template_points_at_its_opening() -> None:
    error = error_from(lambda: find_templates("ok ${{ a }} then ${{ b"))
    assert error.message.startswith("'${{' is never closed")
    assert error.position == 17


def test_unterminated_string_in_a_template_is_blamed_on_the_string() -> None:
    text = "x ${{ 'abc }} y"
    (template,) = find_templates(text)
    assert template.source == " 'abc "
    error = error_from(lambda: render(text, {}))
    assert error.message.startswith("unterminated string")
    assert error.position == 6


def test_render_interpolates_strings() -> None:
    text = "${{ matrix.os }}/node-${{ matrix.node }}/py${{ matrix.python }}/${{ env.NULLISH }}/"
    assert render(text, CONTEXTS) == "ubuntu-latest/node-20/py3.1//"
    assert render("flag=${{ 1 == 1 }} list=${{ matrix.flags }}", CONTEXTS) == "flag=true list=Array"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('${{ fromJSON(\'{"os": ["a", "b"]}\') }}', {"os": ["a", "b"]}),
        ("  ${{ matrix.flags }}\n", ["a", "b"]),
        ("${{ matrix.node }}", 20),
        ("${{ 1 == 1 }}", True),
        ("${{ null }}", None),
        ("${{ github.event.commits.*.message }}", ["first", "second"]),
    ],
)
def test_render_returns_the_value_of_a_whole_template(text: str, expected: Any) -> None:
    assert render(text, CONTEXTS) == expected


def test_render_leaves_other_values_alone() -> None:
    assert render("no templates here", CONTEXTS) == "no templates here"
    assert render(3, CONTEXTS) == 3  # type: ignore[arg-type]
    assert render(True, CONTEXTS) is True  # type: ignore[arg-type]


def test_render_errors_are_positioned_in_the_whole_string() -> None:
    error = error_from(lambda: render("abc ${{ a = }}", {}))
    assert error.message == "unexpected token '=' (did you mean '=='?)"
    assert error.position == 10
    error = error_from(lambda: render("a ${{ 1 }} ${{ hashFiles('x') }}", {}))
    assert error.position == 15


# --------------------------------------------------------------------------------------------------
# Conditions


@pytest.mark.parametrize(
    ("condition", "status", "expected"),
    [
        (None, "success", True),
        (None, "failure", False),
        ("", "success", True),
        ("  ", "cancelled", False),
        (True, "success", True),
        (False, "success", False),
        (True, "failure", False),  # `if: true` still means success() && true
        ("true", "failure", False),
        ("github.ref == 'refs/heads/main'", "success", True),
        ("${{ github.ref == 'refs/heads/main' }}", "success", True),
        ("  ${{ github.ref == 'refs/heads/other' }}  ", "success", False),
        ("matrix.os", "success", True),
        ("env.EMPTY", "success", False),
        ("env.ZERO", "success", True),  # the string '0' is truthy
        ("failure()", "failure", True),
        ("failure()", "success", False),
        ("${{ always() }}", "failure", True),
        ("always() && env.EMPTY", "failure", False),
        ("cancelled()", "cancelled", True),
        ("!cancelled()", "failure", True),
        ("success() || failure()", "failure", True),
        ("${{ failure() && steps.my-step.outcome == 'success' }}", "failure", True),
    ],
)
def test_evaluate_condition(condition: Any, status: str, expected: bool) -> None:
    assert evaluate_condition(condition, CONTEXTS, EvalOptions(status=status)) is expected


def test_conditions_are_not_evaluated_after_a_failure() -> None:
    # Without a status function, success() && ... short-circuits: the error never happens.
    assert evaluate_condition("fromJSON('bad')", {}, EvalOptions(status="failure")) is False


def test_condition_errors_are_positioned_in_the_whole_condition() -> None:
    error = error_from(lambda: parse_condition("${{ a = b }}"))
    assert error.position == 6
    error = error_from(lambda: evaluate_condition("  a = b", {}))
    assert error.position == 4


def test_a_condition_must_be_one_expression() -> None:
    error = error_from(lambda: evaluate_condition("${{ a }} && ${{ b }}", {}))
    assert error.message.startswith("a condition must be one expression")
    assert error.position == 0
    error = error_from(lambda: parse_condition("github.ref == ${{ 'x' }}"))
    assert error.message.startswith("unexpected '${{'")
    assert error.position == 14
    # Inside a string literal of a bare condition, `${{` is just text.
    assert evaluate_condition("contains('${{', '$')", {}) is True


def test_parse_condition_of_an_empty_condition_is_success() -> None:
    assert parse_condition("") == FunctionCall("success", (), 0)
    assert parse_condition("${{ a }}") == ContextRef("a", 4)


# --------------------------------------------------------------------------------------------------
# Analysis helpers


def test_referenced_contexts() -> None:
    tree = parse("contains(Matrix.os, needs.build.result) && !env[github.ref] || steps.*.x")
    assert referenced_contexts(tree) == {"matrix", "needs", "env", "github", "steps"}
    assert referenced_contexts(parse("'literal' == format('{0}', 1)")) == set()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("success()", True),
        ("github.ref == 'x' || FAILURE()", True),
        ("toJSON(always())", True),
        ("!cancelled()", True),
        ("github.ref == 'success()'", False),
        ("contains(github.ref, 'x')", False),
        ("success", False),  # a context named success, not the function
    ],
)
def test_uses_status_function(text: str, expected: bool) -> None:
    assert uses_status_function(parse(text)) is expected


def test_syntax_trees_are_immutable_and_hashable() -> None:
    tree = parse("a.b[0] == 'x'")
    with pytest.raises(AttributeError):
        tree.operator = "!="  # type: ignore[misc, union-attr]
    assert hash(tree) == hash(parse("a.b[0] == 'x'"))
    assert isinstance(parse("a.*"), Wildcard)


# --------------------------------------------------------------------------------------------------
# String coercion


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, ""),
        (True, "true"),
        (False, "false"),
        (0, "0"),
        (-7, "-7"),
        (3.0, "3"),
        (3.1, "3.1"),
        (-0.0, "0"),
        (0.1 + 0.2, "0.30000000000000004"),
        (1e20, "100000000000000000000"),
        (1e21, "1e+21"),
        (1.5e300, "1.5e+300"),
        (0.000001, "0.000001"),
        (1e-7, "1e-7"),
        (-2.5e-10, "-2.5e-10"),
        (math.nan, "NaN"),
        (math.inf, "Infinity"),
        (-math.inf, "-Infinity"),
        ("text", "text"),
        ([1], "Array"),
        ((1,), "Array"),
        ({"a": 1}, "Object"),
    ],
)
def test_to_string(value: Any, expected: str) -> None:
    assert to_string(value) == expected


# --------------------------------------------------------------------------------------------------
# Properties

GRAMMAR_TOKENS = [
    "(", ")", "[", "]", ".", ",", "*", "!", "==", "!=", "<", "<=", ">", ">=", "&&", "||",
    "=", "&", "|", "'", "''", "'a'", "'}}'", "'{0}'", "'{'", "'}'", "'[1,2]'", "'{\"a\": 1}'",
    "'x''y'", '"', "1", "-2", "0x1F", "1e3", ".5", "-", "+", "1.", "true", "false", "null",
    "NaN", "Infinity", "github", "matrix", "steps", "env", "shared", "my-step", "event",
    "commits", "message", "contains", "startsWith", "endsWith", "format", "join", "toJSON",
    "fromJSON", "hashFiles", "success", "failure", "always", "cancelled", "${{", "}}", " ",
    "@", "\u00e9", "\n", "$",
]  # fmt: skip

token_soup = st.builds(
    lambda tokens, separator: separator.join(tokens),
    st.lists(st.sampled_from(GRAMMAR_TOKENS), max_size=40),
    st.sampled_from(["", " "]),
)

any_source = st.one_of(st.text(), token_soup, token_soup.map(lambda soup: "${{ " + soup + " }}"))


def only_expression_errors(action: Callable[[], Any], text: str) -> None:
    try:
        action()
    except ExpressionError as error:
        assert 0 <= error.position <= len(text), error


@given(any_source)
def test_nothing_but_expression_error_escapes(text: str) -> None:
    only_expression_errors(lambda: parse(text), text)
    only_expression_errors(lambda: find_templates(text), text)
    only_expression_errors(lambda: evaluate(text, CONTEXTS, HASH_OPTIONS), text)
    only_expression_errors(lambda: render(text, CONTEXTS, HASH_OPTIONS), text)
    only_expression_errors(lambda: evaluate_condition(text, CONTEXTS, HASH_OPTIONS), text)


@given(any_source)
def test_parsing_is_deterministic(text: str) -> None:
    try:
        first = parse(text)
    except ExpressionError as error:
        again = error_from(lambda: parse(text))
        assert (again.message, again.position) == (error.message, error.position)
        return
    assert parse(text) == first
    assert hash(parse(text)) == hash(first)


def quoted(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


LEAVES = st.one_of(
    st.sampled_from(["null", "true", "false", "NaN", "Infinity", "-Infinity", "0x1F", ".5"]),
    st.integers(-(10**6), 10**6).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.text(max_size=8).map(quoted),
    st.sampled_from(
        [
            "github.ref",
            "github.event.commits.*.message",
            "github.event.commits[0].author.name",
            "github.event.labels[*].name",
            "matrix.os",
            "matrix['OS']",
            "matrix.flags",
            "steps.my-step.outputs.out-1",
            "needs.build.result",
            "env.EMPTY",
            "shared.object",
            "nosuchcontext.x",
            "success()",
            "always()",
            "hashFiles('**/*.lock')",
        ]
    ),
)


def leaf_calls(leaf: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    # toJSON only wraps leaves: nested toJSON doubles string sizes at every level.
    return st.one_of(
        leaf,
        leaf.map(lambda value: f"toJSON({value})"),
        leaf.map(lambda value: f"fromJSON(toJSON({value}))"),
    )


def compound(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    operators = st.sampled_from(["==", "!=", "<", "<=", ">", ">=", "&&", "||"])
    searches = st.sampled_from(["contains", "startsWith", "endsWith", "CONTAINS"])
    return st.one_of(
        st.builds(lambda a, op, b: f"({a} {op} {b})", children, operators, children),
        children.map(lambda value: f"!{value}"),
        st.builds(lambda name, a, b: f"{name}({a}, {b})", searches, children, children),
        children.map(lambda value: f"join({value}, '-')"),
        st.lists(children, min_size=1, max_size=3).map(
            lambda args: "format('{0}-{{x}}', " + ", ".join(args) + ")"
        ),
        children.map(lambda value: f"({value})[0]"),
        children.map(lambda value: f"({value}).name"),
        children.map(lambda value: f"({value}).*"),
    )


valid_expressions = st.recursive(leaf_calls(LEAVES), compound, max_leaves=12)


@given(valid_expressions)
def test_valid_expressions_evaluate_and_render_consistently(text: str) -> None:
    value = evaluate(text, CONTEXTS, HASH_OPTIONS)
    assert same_value(render("${{ " + text + " }}", CONTEXTS, HASH_OPTIONS), value)
    assert render("<${{ " + text + " }}>", CONTEXTS, HASH_OPTIONS) == f"<{to_string(value)}>"
    assert isinstance(evaluate_condition(text, CONTEXTS, HASH_OPTIONS), bool)
    assert parse(text) == parse(text)


@given(valid_expressions)
def test_expressions_survive_being_placed_in_parentheses_and_negated(text: str) -> None:
    value = evaluate(text, CONTEXTS, HASH_OPTIONS)
    assert same_value(evaluate(f"({text})", CONTEXTS, HASH_OPTIONS), value)
    assert evaluate(f"!({text})", CONTEXTS, HASH_OPTIONS) is (not is_truthy(value))


@given(st.floats(allow_nan=False))
def test_numbers_print_in_a_form_that_parses_back(number: float) -> None:
    printed = to_string(number)
    assert float(printed) == number
    assert evaluate(printed, {}) == number


@given(st.text())
def test_any_string_can_be_quoted(text: str) -> None:
    assert evaluate(quoted(text), {}) == text


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children)
    ),
    max_leaves=8,
)


def is_primitive(value: Any) -> bool:
    return not isinstance(value, list | dict)


@given(json_values, json_values)
def test_comparisons_are_consistent(left: Any, right: Any) -> None:
    contexts = {"a": left, "b": right}

    def holds(text: str) -> bool:
        result = evaluate(text, contexts)
        assert isinstance(result, bool)
        return result

    assert holds("a == b") is holds("b == a")
    assert holds("a != b") is not holds("a == b")
    assert not (holds("a < b") and holds("b < a"))
    assert holds("a < b") is holds("b > a")
    if is_primitive(left) and is_primitive(right):
        assert holds("a <= b") is (holds("a < b") or holds("a == b"))


KEYWORDS = {"true", "false", "null", "nan", "infinity"}
names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,10}", fullmatch=True).filter(
    lambda name: name.lower() not in KEYWORDS
)


@given(names, json_values)
def test_context_and_property_names_ignore_case(name: str, value: Any) -> None:
    contexts = {name: {name: value}}
    expected = evaluate(f"{name}.{name}", contexts)
    assert same_value(evaluate(f"{name.upper()}.{name.lower()}", contexts), expected)
    assert same_value(evaluate(f"{name.swapcase()}['{name.upper()}']", contexts), expected)


@given(st.lists(st.text(alphabet="ab$'{} ", max_size=6), max_size=6))
def test_template_spans_map_back_to_the_text(pieces: list[str]) -> None:
    text = "".join(pieces)
    try:
        templates = find_templates(text)
    except ExpressionError:
        return
    previous_end = 0
    for template in templates:
        assert template.start >= previous_end
        assert text[template.start : template.end] == "${{" + template.source + "}}"
        previous_end = template.end
