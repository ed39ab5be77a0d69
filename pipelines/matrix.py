"""GitHub Actions matrix expansion: `strategy.matrix` -> the list of job combinations.

Pure: takes the already-parsed matrix mapping (axes, `include`, `exclude`) and returns plain dicts.

The rules are GitHub's ("Using a matrix for your jobs"), and where the docs are silent, the
behaviour of GitHub's own workflow parser (actions/runner, `MatrixBuilder`):

1. The cartesian product of the axes, in the order they are written (first axis varies slowest).
2. `exclude` removes every product combination matched by an exclude entry. An entry may name
   only some axes (partial match); nested objects match leaf by leaf, so an entry only has to
   name the leaves it cares about.
3. Each `include` entry is split into its axis keys (the filter) and its other keys (the extras).
   Its extras are added to every surviving product combination the filter matches; a later
   include may overwrite extras added by an earlier one, never an axis value. An include entry
   that matched no product combination is appended as a combination of its own (axis keys first,
   then extras), after all product combinations.

Values are compared the way GitHub's filter expressions compare them (`matrix.os == 'linux'`):
strings case-insensitively, and mixed types after converting both sides to numbers.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from typing import Any

__all__ = [
    "MatrixError",
    "combination_count",
    "expand",
    "expand_with_display_names",
    "job_display_name",
]

INCLUDE_KEY = "include"
EXCLUDE_KEY = "exclude"

# GitHub cuts display names at 100 characters ("...").
_MAX_DISPLAY_NAME_LENGTH = 100


class MatrixError(ValueError):
    """The matrix has an invalid shape, or it expands to no combination at all."""


# ---------------------------------------------------------------------------------------------
# Validation and normalisation


class _Matrix:
    """A validated matrix: axes in written order, exclude entries, include entries."""

    __slots__ = ("axes", "excludes", "includes")

    def __init__(
        self,
        axes: list[tuple[str, list[Any]]],
        excludes: list[Mapping[str, Any]],
        includes: list[Mapping[str, Any]],
    ) -> None:
        self.axes = axes
        self.excludes = excludes
        self.includes = includes

    @property
    def axis_names(self) -> list[str]:
        return [name for name, _ in self.axes]


def _describe_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _entries(matrix: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The `include`/`exclude` list, checked to be a list of non-empty string-keyed mappings."""
    raw = matrix.get(key)
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        raise MatrixError(f"matrix '{key}' must be a list of mappings, got {_describe_type(raw)}")
    entries: list[Mapping[str, Any]] = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise MatrixError(
                f"matrix '{key}' entry {index + 1} must be a mapping, got {_describe_type(entry)}"
            )
        if not entry:
            raise MatrixError(f"matrix '{key}' entry {index + 1} is empty")
        for entry_key in entry:
            if not isinstance(entry_key, str):
                raise MatrixError(
                    f"matrix '{key}' entry {index + 1} has a non-string key {entry_key!r}"
                )
        entries.append(entry)
    return entries


def _validate(matrix: Mapping[str, Any]) -> _Matrix:
    if not isinstance(matrix, Mapping):
        raise MatrixError(f"matrix must be a mapping, got {_describe_type(matrix)}")
    axes: list[tuple[str, list[Any]]] = []
    for key, values in matrix.items():
        if not isinstance(key, str):
            raise MatrixError(f"matrix keys must be strings, got {key!r}")
        if key in (INCLUDE_KEY, EXCLUDE_KEY):
            continue
        if not isinstance(values, (list, tuple)):
            raise MatrixError(
                f"matrix axis '{key}' must be a non-empty list of values, "
                f"got {_describe_type(values)}"
            )
        if not values:
            raise MatrixError(f"matrix axis '{key}' must be a non-empty list, got an empty list")
        axes.append((key, list(values)))

    excludes = _entries(matrix, EXCLUDE_KEY)
    axis_names = {name for name, _ in axes}
    for index, entry in enumerate(excludes):
        for key in entry:
            if key not in axis_names:
                # GitHub rejects this too: an exclude can only ever match axis values, so a
                # foreign key is almost certainly a typo that would silently exclude nothing.
                raise MatrixError(
                    f"matrix 'exclude' entry {index + 1}: key '{key}' does not match any axis "
                    f"of the matrix (axes: {', '.join(sorted(axis_names)) or 'none'})"
                )
    includes = _entries(matrix, INCLUDE_KEY)
    if not axes and not includes:
        raise MatrixError("matrix has no combinations: it defines no axis and no 'include' entry")
    return _Matrix(axes, excludes, includes)


# ---------------------------------------------------------------------------------------------
# Value comparison (GitHub expression `==`)

_DECIMAL = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")


def _string_to_number(text: str) -> float:
    """GitHub's string -> number conversion: '' is 0, unparsable is NaN."""
    stripped = text.strip()
    if stripped == "":
        return 0.0
    lowered = stripped.lower()
    try:
        if lowered.startswith("0x"):
            return float(int(stripped[2:], 16))
        if lowered.startswith("0o"):
            return float(int(stripped[2:], 8))
    except ValueError:
        return math.nan
    if lowered in ("infinity", "+infinity"):
        return math.inf
    if lowered == "-infinity":
        return -math.inf
    if _DECIMAL.fullmatch(stripped):
        return float(stripped)
    return math.nan


def _to_number(value: Any) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        return _string_to_number(value)
    return math.nan  # objects and arrays never equal a scalar


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _scalars_equal(actual: Any, expected: Any) -> bool:
    """`actual == expected` with GitHub expression semantics; `expected` is a filter literal."""
    actual_kind, expected_kind = _kind(actual), _kind(expected)
    if actual_kind == expected_kind:
        if actual_kind == "string":
            return actual.casefold() == expected.casefold()
        if actual_kind == "other":
            return False  # an object is only equal to itself, never to a filter literal
        if actual_kind == "number":
            return float(actual) == float(expected)
        return actual == expected
    # Mixed types are compared as numbers; NaN (unparsable strings, objects) equals nothing.
    return _to_number(actual) == _to_number(expected)


def _lookup(container: Any, key: Any) -> Any:
    """`container[key]` as a GitHub expression evaluates it: missing -> null."""
    if isinstance(container, Mapping) and isinstance(key, str):
        return container.get(key)
    if isinstance(container, (list, tuple)) and isinstance(key, int):
        return container[key] if 0 <= key < len(container) else None
    return None


_Leaf = tuple[tuple[Any, ...], Any]  # (path inside the value, expected scalar literal)
_Filter = list[tuple[str, list[_Leaf]]]  # per axis key: the leaves its value must match


def _filter_leaves(value: Any, path: tuple[Any, ...] = ()) -> list[_Leaf]:
    """Every scalar leaf of a filter value with its path (GitHub compares leaf by leaf)."""
    if isinstance(value, Mapping):
        return [leaf for key, item in value.items() for leaf in _filter_leaves(item, (*path, key))]
    if isinstance(value, (list, tuple)):
        return [
            leaf
            for index, item in enumerate(value)
            for leaf in _filter_leaves(item, (*path, index))
        ]
    return [(path, value)]


def _compile_filter(items: Iterable[tuple[str, Any]]) -> _Filter:
    return [(key, _filter_leaves(expected)) for key, expected in items]


def _value_matches(actual: Any, leaves: list[_Leaf]) -> bool:
    """Does an axis value satisfy a filter value? Nested filters only constrain their leaves."""
    for path, literal in leaves:
        current = actual
        for step in path:
            current = _lookup(current, step)
        if not _scalars_equal(current, literal):
            return False
    return True


def _filter_matches(combination: Mapping[str, Any], compiled: _Filter) -> bool:
    return all(_value_matches(combination[key], leaves) for key, leaves in compiled)


# ---------------------------------------------------------------------------------------------
# Expansion


def _split_include(
    entry: Mapping[str, Any], axis_names: set[str]
) -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
    filter_items = [(key, value) for key, value in entry.items() if key in axis_names]
    extra_items = [(key, value) for key, value in entry.items() if key not in axis_names]
    return filter_items, extra_items


def _expand_vectors(matrix: Mapping[str, Any]) -> list[tuple[dict[str, Any], list[str]]]:
    """Each combination with the keys GitHub uses for its display name.

    Product combinations are named from their axis values only (GitHub builds the name before it
    merges the include extras); appended include entries are named from all their values.
    """
    spec = _validate(matrix)
    axis_names = spec.axis_names
    axis_name_set = set(axis_names)
    exclude_filters = [_compile_filter(entry.items()) for entry in spec.excludes]
    include_parts = [_split_include(entry, axis_name_set) for entry in spec.includes]
    include_filters = [_compile_filter(filter_items) for filter_items, _ in include_parts]
    include_matched = [False] * len(include_parts)

    results: list[tuple[dict[str, Any], list[str]]] = []
    if spec.axes:
        for values in itertools.product(*(axis_values for _, axis_values in spec.axes)):
            combination = dict(zip(axis_names, values, strict=True))
            if any(_filter_matches(combination, compiled) for compiled in exclude_filters):
                continue
            extras: dict[str, Any] = {}
            for index, (_, extra_items) in enumerate(include_parts):
                if _filter_matches(combination, include_filters[index]):
                    include_matched[index] = True
                    # Later includes overwrite earlier extras; axis values are never touched
                    # because extras by construction hold no axis key.
                    extras.update(extra_items)
            combination.update(extras)
            results.append((copy.deepcopy(combination), list(axis_names)))

    for (filter_items, extra_items), matched in zip(include_parts, include_matched, strict=True):
        if matched:
            continue
        appended = dict(filter_items)
        appended.update(extra_items)
        results.append((copy.deepcopy(appended), list(appended)))

    if not results:
        raise MatrixError(
            "matrix has no combinations: 'exclude' removes every combination of the matrix"
        )
    return results


def expand(matrix: Mapping[str, Any]) -> list[dict[str, Any]]:
    """All job combinations of `matrix`, in GitHub's order.

    Raises MatrixError for an invalid shape or when no combination remains.
    """
    return [combination for combination, _ in _expand_vectors(matrix)]


def expand_with_display_names(
    matrix: Mapping[str, Any], base_name: str
) -> list[tuple[dict[str, Any], str]]:
    """`expand()` paired with each combination's GitHub display name.

    Prefer this over calling `job_display_name` on `expand()` output: GitHub leaves the values
    an `include` merged into a product combination out of its name, and only the expansion knows
    which values those are.
    """
    return [
        (combination, job_display_name(base_name, combination, name_keys=name_keys))
        for combination, name_keys in _expand_vectors(matrix)
    ]


# ---------------------------------------------------------------------------------------------
# Counting without materialising the product


class _SurvivorCounter:
    """Counts product combinations that no exclude entry matches, without building the product.

    It walks the axes in order, tracking which exclude entries can still match (all their keys
    seen so far matched); an entry whose last key has matched removes the whole subtree. Values of
    one axis that leave the same set of live entries share one memoised sub-count, so the cost
    depends on how values and exclude entries interact, not on the size of the product.
    """

    def __init__(self, spec: _Matrix) -> None:
        self.axis_values = [values for _, values in spec.axes]
        axis_position = {name: position for position, name in enumerate(spec.axis_names)}
        exclude_filters = [_compile_filter(entry.items()) for entry in spec.excludes]
        self.entry_count = len(exclude_filters)
        # The axis position of each exclude entry's last key: where it has matched completely.
        self.last_position = [
            max(axis_position[key] for key, _ in compiled) for compiled in exclude_filters
        ]
        filters_by_axis: list[dict[int, list[_Leaf]]] = [{} for _ in self.axis_values]
        for entry_index, compiled in enumerate(exclude_filters):
            for key, leaves in compiled:
                filters_by_axis[axis_position[key]][entry_index] = leaves
        self.constrained = [frozenset(filters) for filters in filters_by_axis]
        # satisfied[position][value index] = the exclude entries that value matches at that axis
        self.satisfied = [
            [
                frozenset(
                    entry_index
                    for entry_index, leaves in filters_by_axis[position].items()
                    if _value_matches(value, leaves)
                )
                for value in values
            ]
            for position, values in enumerate(self.axis_values)
        ]

    def count(self, allowed: list[list[int]] | None = None) -> int:
        """Surviving combinations, using only the `allowed` value indices of each axis."""
        if allowed is None:
            allowed = [list(range(len(values))) for values in self.axis_values]
        # Per axis: (multiplicity, satisfied entries) for each distinct satisfied set.
        groups: list[list[tuple[int, frozenset[int]]]] = []
        for position, indices in enumerate(allowed):
            multiplicity: dict[frozenset[int], int] = {}
            for index in indices:
                satisfied = self.satisfied[position][index]
                multiplicity[satisfied] = multiplicity.get(satisfied, 0) + 1
            groups.append([(count, satisfied) for satisfied, count in multiplicity.items()])

        axis_count = len(allowed)
        # remaining_product[p] = number of completions of the axes from position p on.
        remaining_product = [1] * (axis_count + 1)
        for position in range(axis_count - 1, -1, -1):
            remaining_product[position] = remaining_product[position + 1] * len(allowed[position])

        @cache
        def survivors_from(position: int, live: frozenset[int]) -> int:
            if not live:
                return remaining_product[position]  # nothing left that could exclude
            constrained_here = self.constrained[position]
            total = 0
            for multiplicity_here, satisfied in groups[position]:
                # Entries constrained here survive only if this value satisfies them.
                still_live = (live - constrained_here) | (live & satisfied)
                if any(self.last_position[entry] == position for entry in still_live):
                    continue  # an exclude entry matched completely: all completions excluded
                total += multiplicity_here * survivors_from(position + 1, still_live)
            return total

        return survivors_from(0, frozenset(range(self.entry_count)))


def combination_count(matrix: Mapping[str, Any]) -> int:
    """The exact number of combinations `expand(matrix)` returns, computed without building the
    product, so that a huge matrix can be rejected against a cap cheaply.

    Raises the same MatrixError as `expand` for an invalid or empty matrix.
    """
    spec = _validate(matrix)
    if not spec.axes:
        # Nothing to match against: every include entry is a combination of its own.
        return len(spec.includes)

    counter = _SurvivorCounter(spec)
    survivors = counter.count()

    appended = 0
    axis_name_set = set(spec.axis_names)
    for entry in spec.includes:
        filter_items, _ = _split_include(entry, axis_name_set)
        leaves_by_axis = dict(_compile_filter(filter_items))
        # The include is appended iff it matches no surviving product combination: count the
        # survivors among the values its filter accepts.
        allowed = [
            [
                index
                for index, value in enumerate(values)
                if name not in leaves_by_axis or _value_matches(value, leaves_by_axis[name])
            ]
            for name, values in spec.axes
        ]
        if counter.count(allowed) == 0:
            appended += 1

    total = survivors + appended
    if total == 0:
        raise MatrixError(
            "matrix has no combinations: 'exclude' removes every combination of the matrix"
        )
    return total


# ---------------------------------------------------------------------------------------------
# Display names

# GitHub only appends matrix values to a literal name: a name with an expression is evaluated
# per job instead (and is expected to mention the matrix values itself).
_EXPRESSION = re.compile(r"\$\{\{.*?\}\}", re.DOTALL)


def _format_scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        # GitHub formats numbers with 15 significant digits: 16 -> "16", 3.1 -> "3.1".
        return format(number, ".15G")
    return str(value)


def _name_segments(value: Any) -> list[str]:
    """Scalar leaves in document order; null and empty strings contribute nothing (as on GitHub)."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        return [segment for item in value.values() for segment in _name_segments(item)]
    if isinstance(value, (list, tuple)):
        return [segment for item in value for segment in _name_segments(item)]
    text = _format_scalar(value)
    return [text] if text else []


def job_display_name(
    base_name: str,
    combination: Mapping[str, Any],
    *,
    name_keys: Sequence[str] | None = None,
) -> str:
    """GitHub's display name of one matrix job: `build (3.10, ubuntu-latest)`.

    Values are listed in combination order (or in `name_keys` order when given); nested objects
    and lists contribute their scalar leaves, as GitHub does. A name that contains an expression
    (`${{ matrix.os }}`) is returned unchanged, and so is an empty name. Names are cut at 100
    characters with "...".
    """
    if not base_name or _EXPRESSION.search(base_name):
        return base_name
    keys = list(combination) if name_keys is None else [k for k in name_keys if k in combination]
    segments = [segment for key in keys for segment in _name_segments(combination[key])]
    name = f"{base_name} ({', '.join(segments)})" if segments else base_name
    if len(name) > _MAX_DISPLAY_NAME_LENGTH:
        name = name[: _MAX_DISPLAY_NAME_LENGTH - 3] + "..."
    return name
