"""Matrix expansion: GitHub's documented examples, every rule, and a naive reference model."""

from __future__ import annotations

import copy
import itertools
import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipelines.matrix import (
    MatrixError,
    combination_count,
    expand,
    expand_with_display_names,
    job_display_name,
)

# ---------------------------------------------------------------------------------------------
# The examples of GitHub's "Using a matrix for your jobs", with their documented results


def test_docs_order_of_combinations_follows_the_axes_as_written() -> None:
    matrix = {"version": [10, 12, 14], "os": ["ubuntu-latest", "windows-latest"]}
    assert expand(matrix) == [
        {"version": 10, "os": "ubuntu-latest"},
        {"version": 10, "os": "windows-latest"},
        {"version": 12, "os": "ubuntu-latest"},
        {"version": 12, "os": "windows-latest"},
        {"version": 14, "os": "ubuntu-latest"},
        {"version": 14, "os": "windows-latest"},
    ]
    assert combination_count(matrix) == 6


def test_docs_multi_dimension_matrix_with_objects() -> None:
    matrix = {
        "os": ["ubuntu-latest", "macos-latest"],
        "node": [
            {"version": 14},
            {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"},
        ],
    }
    assert expand(matrix) == [
        {"os": "ubuntu-latest", "node": {"version": 14}},
        {
            "os": "ubuntu-latest",
            "node": {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"},
        },
        {"os": "macos-latest", "node": {"version": 14}},
        {
            "os": "macos-latest",
            "node": {"version": 20, "env": "NODE_OPTIONS=--openssl-legacy-provider"},
        },
    ]


def test_docs_expanding_or_adding_matrix_configurations_fruit_animal() -> None:
    matrix = {
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    }
    assert expand(matrix) == [
        {"fruit": "apple", "animal": "cat", "color": "pink", "shape": "circle"},
        {"fruit": "apple", "animal": "dog", "color": "green", "shape": "circle"},
        {"fruit": "pear", "animal": "cat", "color": "pink"},
        {"fruit": "pear", "animal": "dog", "color": "green"},
        {"fruit": "banana"},
        {"fruit": "banana", "animal": "cat"},
    ]
    assert combination_count(matrix) == 6


def test_docs_expanding_configurations_os_node_npm() -> None:
    matrix = {
        "os": ["windows-latest", "ubuntu-latest"],
        "node": [12, 14, 16],
        "include": [{"os": "windows-latest", "node": 16, "npm": 6}],
    }
    assert expand(matrix) == [
        {"os": "windows-latest", "node": 12},
        {"os": "windows-latest", "node": 14},
        {"os": "windows-latest", "node": 16, "npm": 6},
        {"os": "ubuntu-latest", "node": 12},
        {"os": "ubuntu-latest", "node": 14},
        {"os": "ubuntu-latest", "node": 16},
    ]


def test_docs_adding_configurations_os_version() -> None:
    matrix = {
        "os": ["macos-latest", "windows-latest", "ubuntu-latest"],
        "version": [12, 14, 16],
        "include": [{"os": "windows-latest", "version": 17}],
    }
    combinations = expand(matrix)
    assert len(combinations) == 10
    assert combination_count(matrix) == 10
    assert combinations[:9] == [
        {"os": os, "version": version}
        for os in ["macos-latest", "windows-latest", "ubuntu-latest"]
        for version in [12, 14, 16]
    ]
    assert combinations[9] == {"os": "windows-latest", "version": 17}


def test_docs_include_only_matrix_runs_each_entry() -> None:
    matrix = {
        "include": [
            {"site": "production", "datacenter": "site-a"},
            {"site": "staging", "datacenter": "site-b"},
        ]
    }
    assert expand(matrix) == [
        {"site": "production", "datacenter": "site-a"},
        {"site": "staging", "datacenter": "site-b"},
    ]
    assert combination_count(matrix) == 2


def test_docs_perl_example_seven_jobs() -> None:
    matrix = {
        "os": ["ubuntu-latest"],
        "perl": ["5.16", "5.20", "5.26", "5.30", "latest"],
        "include": [
            {"os": "macos-latest", "perl": "5.26"},
            {"os": "macos-latest", "perl": "latest"},
        ],
    }
    combinations = expand(matrix)
    assert len(combinations) == 7
    assert combinations[-2:] == [
        {"os": "macos-latest", "perl": "5.26"},
        {"os": "macos-latest", "perl": "latest"},
    ]


def test_docs_exclude_example_nine_jobs() -> None:
    matrix = {
        "os": ["macos-latest", "windows-latest"],
        "version": [12, 14, 16],
        "environment": ["staging", "production"],
        "exclude": [
            {"os": "macos-latest", "version": 12, "environment": "production"},
            {"os": "windows-latest", "version": 16},
        ],
    }
    combinations = expand(matrix)
    assert len(combinations) == 9
    assert combination_count(matrix) == 9
    assert {"os": "macos-latest", "version": 12, "environment": "production"} not in combinations
    assert {"os": "macos-latest", "version": 12, "environment": "staging"} in combinations
    assert not [c for c in combinations if c["os"] == "windows-latest" and c["version"] == 16]


def test_docs_include_adds_back_an_excluded_combination() -> None:
    matrix = {
        "os": ["linux", "windows"],
        "exclude": [{"os": "windows"}],
        "include": [{"os": "windows", "experimental": True}],
    }
    assert expand(matrix) == [{"os": "linux"}, {"os": "windows", "experimental": True}]
    assert combination_count(matrix) == 2


# ---------------------------------------------------------------------------------------------
# Individual rules


def test_include_never_overwrites_an_original_value_but_overwrites_added_ones() -> None:
    matrix = {
        "os": ["linux"],
        "include": [{"label": "first"}, {"label": "second"}, {"os": "mac", "label": "third"}],
    }
    assert expand(matrix) == [{"os": "linux", "label": "second"}, {"os": "mac", "label": "third"}]


def test_include_does_not_merge_into_appended_combinations() -> None:
    matrix = {"os": ["linux"], "include": [{"os": "mac"}, {"os": "mac", "arch": "arm64"}]}
    assert expand(matrix) == [{"os": "linux"}, {"os": "mac"}, {"os": "mac", "arch": "arm64"}]


def test_appended_include_lists_axis_keys_first_then_extras() -> None:
    # GitHub builds an unmatched include from its axis keys, then its other keys.
    matrix = {"os": ["linux"], "node": [1], "include": [{"npm": 6, "node": 2, "os": "mac"}]}
    appended = expand(matrix)[1]
    assert list(appended) == ["node", "os", "npm"]


def test_include_with_equal_axis_value_is_added_not_appended() -> None:
    matrix = {"os": ["linux", "mac"], "include": [{"os": "linux", "extra": 1}]}
    assert expand(matrix) == [{"os": "linux", "extra": 1}, {"os": "mac"}]


def test_exclude_partial_entry_removes_every_combination_with_those_values() -> None:
    matrix = {"a": [1, 2], "b": [1, 2], "c": [1, 2], "exclude": [{"b": 2}]}
    assert expand(matrix) == [
        {"a": 1, "b": 1, "c": 1},
        {"a": 1, "b": 1, "c": 2},
        {"a": 2, "b": 1, "c": 1},
        {"a": 2, "b": 1, "c": 2},
    ]


def test_exclude_compares_objects_deeply_and_leaf_by_leaf() -> None:
    matrix = {
        "os": ["linux"],
        "node": [{"version": 14}, {"version": 20, "env": "x"}],
        "exclude": [{"node": {"version": 20}}],
    }
    # The exclude names only one leaf of the object: it matches {"version": 20, "env": "x"}.
    assert expand(matrix) == [{"os": "linux", "node": {"version": 14}}]
    exact = {**matrix, "exclude": [{"node": {"version": 20, "env": "x"}}]}
    assert expand(exact) == [{"os": "linux", "node": {"version": 14}}]
    different = {**matrix, "exclude": [{"node": {"version": 20, "env": "y"}}]}
    assert len(expand(different)) == 2


def test_exclude_with_lists_compares_element_by_element() -> None:
    matrix = {"flags": [["-O2", "-g"], ["-O0"]], "exclude": [{"flags": ["-O0"]}]}
    assert expand(matrix) == [{"flags": ["-O2", "-g"]}]


def test_values_are_compared_like_github_expressions() -> None:
    # GitHub evaluates `matrix.os == 'Ubuntu-Latest'`: strings compare case-insensitively and
    # a number equals the string that spells it.
    matrix = {
        "os": ["ubuntu-latest", "windows-latest"],
        "node": [12, 14],
        "exclude": [{"os": "Ubuntu-Latest", "node": "12"}],
    }
    assert expand(matrix) == [
        {"os": "ubuntu-latest", "node": 14},
        {"os": "windows-latest", "node": 12},
        {"os": "windows-latest", "node": 14},
    ]
    assert combination_count(matrix) == 3


def test_booleans_and_strings_do_not_match_unrelated_values() -> None:
    matrix = {"flag": [True, False, "yes"], "exclude": [{"flag": "true"}]}
    # 'true' is not a number, so it never equals the boolean true (NaN == 1 is false).
    assert len(expand(matrix)) == 3


def test_values_are_kept_exactly_as_given() -> None:
    matrix = {"python": ["3.10", "3.9"], "n": [1, 2.5], "flag": [None, False]}
    combinations = expand(matrix)
    assert combinations[0] == {"python": "3.10", "n": 1, "flag": None}
    assert type(combinations[0]["python"]) is str
    assert type(combinations[0]["n"]) is int


def test_result_does_not_alias_the_input_or_other_combinations() -> None:
    node = {"version": 14, "opts": ["a"]}
    matrix = {"os": ["linux", "mac"], "node": [node], "include": [{"extra": {"k": 1}}]}
    before = copy.deepcopy(matrix)
    combinations = expand(matrix)
    combinations[0]["node"]["opts"].append("mutated")
    combinations[0]["extra"]["k"] = 2
    assert matrix == before
    assert combinations[1]["node"] == {"version": 14, "opts": ["a"]}
    assert combinations[1]["extra"] == {"k": 1}


def test_duplicate_axis_values_give_duplicate_combinations() -> None:
    matrix = {"a": [1, 1]}
    assert expand(matrix) == [{"a": 1}, {"a": 1}]
    assert combination_count(matrix) == 2


def test_tuples_are_accepted_as_lists() -> None:
    assert expand({"a": (1, 2)}) == [{"a": 1}, {"a": 2}]


# ---------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ({}, "matrix has no combinations"),
        ({"include": []}, "matrix has no combinations"),
        ({"exclude": []}, "matrix has no combinations"),
        ({"os": "linux"}, "matrix axis 'os' must be a non-empty list"),
        ({"os": {"a": 1}}, "matrix axis 'os' must be a non-empty list"),
        ({"os": 3}, "matrix axis 'os' must be a non-empty list"),
        ({"os": None}, "matrix axis 'os' must be a non-empty list"),
        ({"os": []}, "matrix axis 'os' must be a non-empty list"),
        ({"os": ["a"], "include": {"x": 1}}, "matrix 'include' must be a list of mappings"),
        ({"os": ["a"], "include": ["x"]}, "matrix 'include' entry 1 must be a mapping"),
        ({"os": ["a"], "include": [{}]}, "matrix 'include' entry 1 is empty"),
        ({"os": ["a"], "exclude": "x"}, "matrix 'exclude' must be a list of mappings"),
        ({"os": ["a"], "exclude": [{"os": "a"}, 3]}, "matrix 'exclude' entry 2 must be a mapping"),
        ({"os": ["a"], "exclude": [{}]}, "matrix 'exclude' entry 1 is empty"),
        (
            {"os": ["a"], "exclude": [{"arch": "x64"}]},
            "key 'arch' does not match any axis",
        ),
        ({1: ["a"]}, "matrix keys must be strings"),
        ({"os": ["a"], "include": [{1: "x"}]}, "non-string key"),
        (["os"], "matrix must be a mapping"),
        ({"os": ["a", "b"], "exclude": [{"os": "a"}, {"os": "b"}]}, "exclude"),
    ],
)
def test_invalid_matrices_raise_a_clear_error(matrix: Any, message: str) -> None:
    with pytest.raises(MatrixError, match=message):
        expand(matrix)
    with pytest.raises(MatrixError, match=message):
        combination_count(matrix)


def test_exclude_removing_everything_names_the_cause() -> None:
    matrix = {"os": ["a", "b"], "exclude": [{"os": "a"}, {"os": "b"}]}
    with pytest.raises(MatrixError) as raised:
        expand(matrix)
    assert "no combinations" in str(raised.value)
    assert "exclude" in str(raised.value)


def test_matrix_error_is_a_value_error() -> None:
    assert issubclass(MatrixError, ValueError)


# ---------------------------------------------------------------------------------------------
# combination_count on huge matrices


def test_combination_count_of_a_huge_matrix_is_cheap() -> None:
    matrix: dict[str, Any] = {
        "a": list(range(100)),
        "b": list(range(100)),
        "c": list(range(100)),
        "exclude": [{"a": 0}, {"b": 1, "c": 2}, {"a": 5, "b": 5, "c": 5}],
        "include": [{"a": 1000}, {"a": 3, "extra": True}, {"a": 0, "b": 0}],
    }
    started = time.perf_counter()
    count = combination_count(matrix)
    elapsed = time.perf_counter() - started
    # 10^6 - {a=0}: 10^4 - {b=1,c=2, a!=0}: 99 - {5,5,5}: 1; +1 appended (a=1000);
    # {a:0, b:0} only matches excluded combinations, so it is appended too.
    assert count == 1_000_000 - 10_000 - 99 - 1 + 2
    assert elapsed < 2.0


def test_combination_count_with_many_excludes_is_cheap() -> None:
    matrix: dict[str, Any] = {f"axis{i}": list(range(6)) for i in range(6)}
    matrix["exclude"] = [{f"axis{i}": i, f"axis{(i + 1) % 6}": i} for i in range(6)] + [
        {f"axis{i}": 5, f"axis{(i + 2) % 6}": 4} for i in range(6)
    ]
    started = time.perf_counter()
    count = combination_count(matrix)
    assert time.perf_counter() - started < 2.0
    assert count == _reference_count_by_enumeration(matrix)


def _reference_count_by_enumeration(matrix: dict[str, Any]) -> int:
    axes = [(k, v) for k, v in matrix.items() if k not in ("include", "exclude")]
    names = [k for k, _ in axes]
    total = 0
    for values in itertools.product(*(v for _, v in axes)):
        combination = dict(zip(names, values, strict=True))
        if not any(
            all(combination[k] == v for k, v in entry.items()) for entry in matrix["exclude"]
        ):
            total += 1
    return total


# ---------------------------------------------------------------------------------------------
# Display names


def test_display_name_lists_values_in_combination_order() -> None:
    assert job_display_name("build", {"python": "3.10", "os": "ubuntu-latest"}) == (
        "build (3.10, ubuntu-latest)"
    )


def test_display_name_formats_scalars_like_github() -> None:
    combination = {"flag": True, "off": False, "int": 16, "float": 3.5, "whole": 2.0}
    assert job_display_name("t", combination) == "t (true, false, 16, 3.5, 2)"


def test_display_name_skips_null_and_empty_strings() -> None:
    assert job_display_name("t", {"a": None, "b": "", "c": "x"}) == "t (x)"
    assert job_display_name("t", {"a": None}) == "t"


def test_display_name_uses_the_scalar_leaves_of_nested_values() -> None:
    combination = {"os": "linux", "node": {"version": 20, "env": "X=1"}, "flags": ["-a", "-b"]}
    assert job_display_name("t", combination) == "t (linux, 20, X=1, -a, -b)"


@pytest.mark.parametrize(
    "name",
    [
        "build ${{ matrix.os }}",
        "build ${{matrix['os']}}",
        "${{ format('{0}', matrix.os) }}",
        "Build for ${{ github.ref_name }}",
    ],
)
def test_display_name_with_an_expression_is_unchanged(name: str) -> None:
    assert job_display_name(name, {"os": "linux"}) == name


def test_display_name_without_values_or_base_name() -> None:
    assert job_display_name("build", {}) == "build"
    assert job_display_name("", {"os": "linux"}) == ""


def test_display_name_is_cut_at_100_characters() -> None:
    name = job_display_name("build", {"long": "x" * 200})
    assert len(name) == 100
    assert name.endswith("...")
    assert name.startswith("build (xxx")


def test_display_name_name_keys_select_and_order_the_values() -> None:
    combination = {"os": "linux", "node": 20, "extra": "e"}
    assert job_display_name("t", combination, name_keys=["node", "os"]) == "t (20, linux)"
    assert job_display_name("t", combination, name_keys=["missing"]) == "t"


def test_expand_with_display_names_leaves_include_extras_out_of_product_names() -> None:
    matrix = {
        "fruit": ["apple", "pear"],
        "animal": ["cat", "dog"],
        "include": [
            {"color": "green"},
            {"color": "pink", "animal": "cat"},
            {"fruit": "apple", "shape": "circle"},
            {"fruit": "banana"},
            {"fruit": "banana", "animal": "cat"},
        ],
    }
    named = expand_with_display_names(matrix, "job")
    assert [combination for combination, _ in named] == expand(matrix)
    assert [name for _, name in named] == [
        "job (apple, cat)",
        "job (apple, dog)",
        "job (pear, cat)",
        "job (pear, dog)",
        "job (banana)",
        "job (banana, cat)",
    ]


def test_expand_with_display_names_names_appended_includes_with_all_values() -> None:
    matrix = {"os": ["linux"], "include": [{"os": "mac", "npm": 6}]}
    assert [name for _, name in expand_with_display_names(matrix, "t")] == [
        "t (linux)",
        "t (mac, 6)",
    ]


# ---------------------------------------------------------------------------------------------
# Property tests against a naive reference implementation written from the docs


def _reference_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return float(int(value))
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        if value.strip() == "":
            return 0.0
        try:
            return float(value)
        except ValueError:
            return math.nan
    return math.nan


def _reference_equal(actual: Any, expected: Any) -> bool:
    """GitHub's `==` for a filter literal: case-insensitive strings, else numbers."""
    same_kind = (
        (isinstance(actual, str) and isinstance(expected, str))
        or (isinstance(actual, bool) and isinstance(expected, bool))
        or (actual is None and expected is None)
    )
    if same_kind:
        if isinstance(actual, str):
            return actual.lower() == expected.lower()
        return actual == expected
    if isinstance(actual, (dict, list)):
        return False
    return _reference_number(actual) == _reference_number(expected)


def _reference_matches(actual: Any, expected: Any) -> bool:
    """A filter value matches if every leaf it names matches (missing -> null)."""
    if isinstance(expected, dict):
        return all(
            _reference_matches(actual.get(k) if isinstance(actual, dict) else None, v)
            for k, v in expected.items()
        )
    if isinstance(expected, list):
        return all(
            _reference_matches(
                actual[i] if isinstance(actual, list) and i < len(actual) else None, v
            )
            for i, v in enumerate(expected)
        )
    return _reference_equal(actual, expected)


def _reference_expand(matrix: dict[str, Any]) -> tuple[list[dict[str, Any]], int, int, int]:
    """(combinations, product size, excluded count, appended count), per the docs' wording."""
    axes = [(k, v) for k, v in matrix.items() if k not in ("include", "exclude")]
    names = [k for k, _ in axes]
    product = (
        [
            dict(zip(names, values, strict=True))
            for values in itertools.product(*(v for _, v in axes))
        ]
        if axes
        else []
    )
    excludes = matrix.get("exclude", [])
    originals = [
        c
        for c in product
        if not any(all(_reference_matches(c[k], v) for k, v in e.items()) for e in excludes)
    ]
    results = [dict(c) for c in originals]
    appended = []
    for entry in matrix.get("include", []):
        added_somewhere = False
        for original, result in zip(originals, results, strict=True):
            # "added if none of the key:value pairs overwrite any of the original matrix values"
            if all(
                k not in original or _reference_matches(original[k], v) for k, v in entry.items()
            ):
                added_somewhere = True
                result.update({k: v for k, v in entry.items() if k not in original})
        if not added_somewhere:
            appended.append(
                {
                    **{k: v for k, v in entry.items() if k in names},
                    **{k: v for k, v in entry.items() if k not in names},
                }
            )
    return (
        results + appended,
        len(product),
        len(product) - len(originals),
        len(appended),
    )


_SCALARS = st.sampled_from(["a", "A", "b", "1", "01", "", "x y", 0, 1, 2, 1.0, True, False, None])
_VALUES = st.one_of(
    _SCALARS,
    st.dictionaries(st.sampled_from(["v", "w"]), _SCALARS, min_size=1, max_size=2),
    st.lists(_SCALARS, min_size=1, max_size=2),
)
_AXIS_NAMES = ["os", "node", "arch"]
_EXTRA_NAMES = ["npm", "label"]


@st.composite
def _matrices(draw: st.DrawFn) -> dict[str, Any]:
    axis_names = draw(st.lists(st.sampled_from(_AXIS_NAMES), unique=True, max_size=3))
    matrix: dict[str, Any] = {
        name: draw(st.lists(_VALUES, min_size=1, max_size=3)) for name in axis_names
    }
    if axis_names:
        exclude_entries = draw(
            st.lists(
                st.dictionaries(st.sampled_from(axis_names), _VALUES, min_size=1, max_size=3),
                max_size=3,
            )
        )
        # Also exclude values taken from the axes, so excludes actually hit.
        for entry in exclude_entries:
            for key in list(entry):
                if draw(st.booleans()):
                    entry[key] = draw(st.sampled_from(matrix[key]))
        if exclude_entries or draw(st.booleans()):
            matrix["exclude"] = exclude_entries
    include_keys = st.sampled_from(axis_names + _EXTRA_NAMES)
    include_entries = draw(
        st.lists(st.dictionaries(include_keys, _VALUES, min_size=1, max_size=3), max_size=3)
    )
    for entry in include_entries:
        for key in list(entry):
            if key in matrix and draw(st.booleans()):
                entry[key] = draw(st.sampled_from(matrix[key]))
    if include_entries or draw(st.booleans()):
        matrix["include"] = include_entries
    return matrix


@settings(max_examples=400, deadline=None)
@given(_matrices())
def test_expand_agrees_with_the_reference_and_the_count(matrix: dict[str, Any]) -> None:
    expected, product_size, excluded, appended = _reference_expand(matrix)
    if not expected:
        with pytest.raises(MatrixError, match="no combinations"):
            expand(matrix)
        with pytest.raises(MatrixError, match="no combinations"):
            combination_count(matrix)
        return
    before = copy.deepcopy(matrix)
    combinations = expand(matrix)
    assert combinations == expected
    # Key order is part of the result too (it drives display names).
    assert [list(c) for c in combinations] == [list(c) for c in expected]
    assert len(combinations) == combination_count(matrix)
    assert combination_count(matrix) == product_size - excluded + appended
    assert expand(matrix) == combinations  # deterministic
    assert matrix == before  # the input is not modified


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.integers(min_value=1, max_value=6), min_size=1, max_size=4),
    st.data(),
)
def test_combination_count_matches_enumeration_on_integer_grids(
    sizes: list[int], data: st.DataObject
) -> None:
    names = [f"k{i}" for i in range(len(sizes))]
    matrix: dict[str, Any] = {
        name: list(range(size)) for name, size in zip(names, sizes, strict=True)
    }
    matrix["exclude"] = data.draw(
        st.lists(
            st.dictionaries(
                st.sampled_from(names), st.integers(min_value=0, max_value=6), min_size=1
            ),
            max_size=6,
        )
    )
    expected, *_ = _reference_expand(matrix)
    if not expected:
        with pytest.raises(MatrixError):
            combination_count(matrix)
    else:
        assert combination_count(matrix) == len(expected) == len(expand(matrix))
