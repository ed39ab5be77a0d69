"""YAML loading: YAML 1.2 scalars, positions of keys and values, and every loading problem."""

from __future__ import annotations

import math

import pytest

from pipelines.errors import WorkflowError
from pipelines.yamlload import (
    Document,
    YamlFloat,
    YamlInt,
    load_document,
    resolve_plain,
    scalar_text,
)


def load(text: str, **limits: int) -> Document:
    return load_document(text, "w.yml", **limits)


def problems(text: str, **limits: int) -> list[tuple[int, int, str]]:
    with pytest.raises(WorkflowError) as info:
        load(text, **limits)
    return [(p.line, p.column, p.message) for p in info.value.problems]


# -- YAML 1.2 core schema ---------------------------------------------------------------------


def test_on_is_a_key_not_a_boolean() -> None:
    assert list(load("on: push\n").value) == ["on"]


@pytest.mark.parametrize("word", ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "tRue"])
def test_yaml11_booleans_are_strings(word: str) -> None:
    assert load(f"a: {word}\n").value["a"] == word


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("FALSE", False)],
)
def test_core_booleans(text: str, expected: bool) -> None:
    assert load(f"a: {text}\n").value["a"] is expected


@pytest.mark.parametrize("text", ["", "~", "null", "Null", "NULL"])
def test_nulls(text: str) -> None:
    assert load(f"a: {text}\n").value["a"] is None


@pytest.mark.parametrize(
    ("text", "number"), [("42", 42), ("-7", -7), ("0755", 755), ("0o17", 15), ("0x1F", 31)]
)
def test_integers_keep_their_text(text: str, number: int) -> None:
    value = load(f"a: {text}\n").value["a"]
    assert isinstance(value, YamlInt)
    assert value == number
    assert value.text == text
    assert scalar_text(value) == text


def test_floats_keep_their_text() -> None:
    value = load("python: 3.10\n").value["python"]
    assert isinstance(value, YamlFloat)
    assert value == 3.1
    assert value.text == "3.10"
    assert scalar_text(value) == "3.10"


def test_special_floats() -> None:
    value = load("a: [.inf, -.Inf, .nan, 1e3]\n").value["a"]
    assert value[0] == math.inf and value[1] == -math.inf and math.isnan(value[2])
    assert value[3] == 1000.0 and value[3].text == "1e3"


@pytest.mark.parametrize("text", ["'3.10'", '"yes"', "'true'", '"12"', "'null'"])
def test_quoted_scalars_are_strings(text: str) -> None:
    assert load(f"a: {text}\n").value["a"] == text[1:-1]


def test_block_scalars_are_strings() -> None:
    assert load("a: |\n  3.10\n").value["a"] == "3.10\n"


def test_plain_strings() -> None:
    assert resolve_plain("ubuntu-latest") == "ubuntu-latest"
    assert resolve_plain("1.2.3") == "1.2.3"
    assert resolve_plain("0x") == "0x"


def test_scalar_text_spells_booleans_and_null_like_github() -> None:
    assert scalar_text(True) == "true"
    assert scalar_text(False) == "false"
    assert scalar_text(None) == ""
    assert scalar_text("x") == "x"


def test_explicit_core_tags() -> None:
    value = load("a: !!str 3\nb: !!int '7'\nc: !!float 2\n").value
    assert value["a"] == "3"
    assert value["b"] == 7 and isinstance(value["b"], YamlInt)
    assert value["c"] == 2.0 and isinstance(value["c"], YamlFloat)


def test_unsupported_tag() -> None:
    assert problems("a: !Ref x\n") == [(1, 4, "unsupported YAML tag '!Ref'")]


def test_mismatched_core_tag() -> None:
    assert problems("a: !!int x\n") == [(1, 4, "'x' is not a valid !!int")]


# -- positions --------------------------------------------------------------------------------


def test_positions_of_keys_and_values_are_one_based() -> None:
    document = load("on: push\njobs:\n  build:\n    steps:\n      - run: make\n")
    assert document.key_marks[("on",)] == (1, 1)
    assert document.value_marks[("on",)] == (1, 5)
    assert document.key_marks[("jobs", "build")] == (3, 3)
    assert document.value_marks[("jobs", "build", "steps", 0)] == (5, 9)
    assert document.key_marks[("jobs", "build", "steps", 0, "run")] == (5, 9)
    assert document.value_marks[("jobs", "build", "steps", 0, "run")] == (5, 14)


def test_position_falls_back_to_the_nearest_known_parent() -> None:
    document = load("a:\n  b: 1\n")
    assert document.key_position(("a", "b", "missing")) == (2, 6)
    assert document.value_position(("nothing",)) == (1, 1)


def test_offset_position() -> None:
    document = load("a: 1\nbc: 2\n")
    assert document.offset_position(0) == (1, 1)
    assert document.offset_position(5) == (2, 1)
    assert document.offset_position(9) == (2, 5)


def test_byte_order_mark_is_not_a_column() -> None:
    document = load("\ufeffa: 1\n")
    assert document.value == {"a": 1}
    assert document.value_marks[("a",)] == (1, 4)
    assert document.source == "a: 1\n"


def test_scalar_spans_and_styles() -> None:
    text = "a: 'x'\nb: |\n  y\n"
    document = load(text)
    quoted = document.scalars[("a",)]
    assert text[quoted.start : quoted.end] == "'x'" and quoted.style == "'"
    assert document.scalars[("b",)].style == "|"


# -- anchors, aliases, merge keys -------------------------------------------------------------


def test_anchors_and_aliases() -> None:
    value = load("base: &b [1, 2]\ncopy: *b\n").value
    assert value["copy"] == [1, 2]
    assert value["copy"] is not value["base"]


def test_merge_keys_let_explicit_keys_win() -> None:
    value = load("d: &d {a: 1, b: 2}\nm:\n  <<: *d\n  b: 3\n").value
    assert value["m"] == {"a": 1, "b": 3}


def test_alias_bomb_is_stopped() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        previous = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([previous] * 10)}]")
    found = problems("\n".join(lines) + "\n", max_nodes=100_000)
    assert len(found) == 1
    assert "more than 100,000 values" in found[0][2]


def test_recursive_alias() -> None:
    assert problems("a: &x [*x]\n") == [(1, 4, "recursive alias: a value cannot contain itself")]


def test_deep_nesting() -> None:
    found = problems("a: " + "[" * 70 + "]" * 70 + "\n")
    assert found and "nested" in found[0][2]


def test_very_deep_nesting_does_not_crash() -> None:
    found = problems("a: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nest" in found[0][2]


# -- problems ---------------------------------------------------------------------------------


def test_duplicate_key() -> None:
    text = "name: x\non: push\n\njobs: {}\njobs: {}\n"
    assert problems(text) == [(5, 1, "duplicate key 'jobs' (first defined at line 4)")]


def test_all_duplicate_keys_are_reported() -> None:
    text = "a: 1\na: 2\nb:\n  c: 1\n  c: 2\n"
    assert problems(text) == [
        (2, 1, "duplicate key 'a' (first defined at line 1)"),
        (5, 3, "duplicate key 'c' (first defined at line 4)"),
    ]


def test_keep_going_returns_recoverable_problems_with_the_document() -> None:
    document = load_document("a: 1\na: 2\n3: x\n", "w.yml", keep_going=True)
    assert document.value == {"a": 1, "3": "x"}
    assert [(p.line, p.column) for p in document.problems] == [(2, 1), (3, 1)]


def test_keep_going_still_raises_for_fatal_problems() -> None:
    with pytest.raises(WorkflowError):
        load_document("a: [\n", "w.yml", keep_going=True)


def test_tab_indentation() -> None:
    text = "on: push\njobs:\n\tbuild:\n"
    assert problems(text) == [
        (3, 1, "tab character used for indentation; YAML indentation must use spaces")
    ]


def test_tab_after_spaces_is_found_at_its_column() -> None:
    assert problems("a:\n  b: 1\n  \tc: 2\n")[0][:2] == (3, 3)


def test_tabs_inside_a_block_scalar_are_content() -> None:
    text = "run: |\n  cat <<EOF\n  \tindented\n  EOF\nnext: 1\n"
    assert load(text).value["run"] == "cat <<EOF\n\tindented\nEOF\n"


def test_syntax_error_is_placed_at_the_problem() -> None:
    line, column, message = problems("a: [1, 2\nb: 3\n")[0]
    assert (line, column) == (2, 2)
    assert message.startswith("invalid YAML: ")


def test_unclosed_quote() -> None:
    line, _column, message = problems("a: 'open\n")[0]
    assert line == 2 and message.startswith("invalid YAML: ")


def test_control_character() -> None:
    assert problems("a: b\x07\n") == [
        (1, 5, "invalid YAML: the character '\\x07' is not allowed in a YAML file")
    ]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "~\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert problems(text) == [
        (1, 1, "the file is empty; expected a workflow mapping with 'on' and 'jobs'")
    ]


@pytest.mark.parametrize(
    ("text", "kind"),
    [("- a\n- b\n", "a list"), ("just text\n", "a string"), ("42\n", "a number")],
)
def test_top_level_must_be_a_mapping(text: str, kind: str) -> None:
    assert problems(text) == [(1, 1, f"expected a mapping at the top level, got {kind}")]


def test_multiple_documents() -> None:
    assert "invalid YAML" in problems("a: 1\n---\nb: 2\n")[0][2]


def test_file_over_the_size_limit() -> None:
    text = "a: " + "x" * (512 * 1024) + "\n"
    assert problems(text) == [
        (
            1,
            1,
            "the file is 524,292 bytes (512.0 KB), more than the limit of 524,288 bytes (512 KB)",
        )
    ]


def test_size_limit_counts_utf8_bytes_and_is_configurable() -> None:
    text = "a: " + "é" * 10 + "\n"  # 14 characters, 24 bytes
    assert problems(text, max_bytes=20)[0][2].startswith("the file is 24 bytes")
    assert load(text, max_bytes=24).value == {"a": "é" * 10}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("1: x\n", "mapping key 1 must be a string, got a number; quote it: '1'"),
        ("true: x\n", "mapping key true must be a string, got a boolean; quote it: 'true'"),
        ("? [a]\n: x\n", "mapping keys must be plain strings, not lists or mappings"),
        ("~: x\n", "empty mapping key; keys must be non-empty strings"),
    ],
)
def test_keys_must_be_strings(text: str, message: str) -> None:
    assert problems(text)[0][2] == message


def test_quoted_number_keys_are_fine() -> None:
    assert load("'1': x\n").value == {"1": "x"}
