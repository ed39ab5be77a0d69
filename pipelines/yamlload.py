"""Load workflow YAML into plain Python values, remembering where every key and value was written.

PyYAML's own constructors follow YAML 1.1, where `on`, `yes` and `no` are booleans and `3.10` is
the float 3.1. Workflow files are written for GitHub, which reads them as YAML 1.2 (core schema),
so here PyYAML only composes the node tree (with positions) and the values are built by this module:

- `true`/`True`/`TRUE` and `false`/`False`/`FALSE` are booleans; every other word is a string,
  so `on:` stays the key "on" and `yes`/`no`/`off` stay strings;
- `null`, `~` and empty values are None;
- decimal, `0o` and `0x` integers are `YamlInt` and floats are `YamlFloat`: real numbers that also
  keep the text as written (`.text`), so that wherever a string is expected the model can use
  `3.10` rather than `3.1`;
- quoted and block scalars are always strings.

Every problem (tabs, syntax, duplicate keys, size, alias bombs...) becomes a `Problem` with a
1-based line and column; they are all raised together as one `WorkflowError`. Some problems leave
a usable document behind (a duplicate key keeps its first value, a bad key is skipped); with
`keep_going=True` those are returned in `Document.problems` instead, so that the caller can
report them together with the mistakes it finds in the rest of the file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from pipelines.errors import Problem, WorkflowError

Path = tuple[str | int, ...]
Position = tuple[int, int]  # 1-based (line, column)

DEFAULT_MAX_BYTES = 512 * 1024
DEFAULT_MAX_NODES = 100_000
# GitHub workflows are rarely nested more than ten levels; the cap keeps every later recursive
# pass (schema, expressions, model) far away from Python's recursion limit.
DEFAULT_MAX_DEPTH = 64

_PLAIN_TAG = "tag:cicd:plain"
_STANDARD_TAG = "tag:yaml.org,2002:"

_NULL = re.compile(r"^(?:null|Null|NULL|~|)$")
_BOOL = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
_INT_DECIMAL = re.compile(r"^[-+]?[0-9]+$")
_INT_OCTAL = re.compile(r"^0o[0-7]+$")
_INT_HEX = re.compile(r"^0x[0-9a-fA-F]+$")
_FLOAT = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?$")
_FLOAT_INF = re.compile(r"^[-+]?\.(?:inf|Inf|INF)$")
_FLOAT_NAN = re.compile(r"^\.(?:nan|NaN|NAN)$")


class YamlInt(int):
    """An integer that remembers how it was written (`0755` is 755, with `.text` "0755")."""

    text: str

    def __new__(cls, value: int, text: str) -> YamlInt:
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __repr__(self) -> str:
        return f"YamlInt({int(self)!r}, {self.text!r})"


class YamlFloat(float):
    """A float that remembers how it was written (`3.10` is 3.1, with `.text` "3.10")."""

    text: str

    def __new__(cls, value: float, text: str) -> YamlFloat:
        number = super().__new__(cls, value)
        number.text = text
        return number

    def __repr__(self) -> str:
        return f"YamlFloat({float(self)!r}, {self.text!r})"


def scalar_text(value: Any) -> str:
    """The text of a scalar as the user wrote it: how numbers and booleans become strings.

    Booleans are spelled as GitHub spells them (`true`/`false`) and null becomes the empty string.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, YamlInt | YamlFloat):
        return value.text
    return str(value)


@dataclass(frozen=True, slots=True)
class ScalarSource:
    """Where a scalar value was written: its character span in the file and its YAML style.

    `style` is PyYAML's: None for plain, `'` or `"` for quoted, `|` or `>` for block scalars.
    """

    start: int
    end: int
    style: str | None


@dataclass(slots=True)
class Document:
    """A loaded YAML document: the value and the positions of every key and value in it.

    Paths are tuples of mapping keys and list indices, e.g. `("jobs", "build", "steps", 0)`. A
    value reached through an alias has the position of the anchored original.
    """

    value: Any
    source: str = ""
    key_marks: dict[Path, Position] = field(default_factory=dict)
    value_marks: dict[Path, Position] = field(default_factory=dict)
    scalars: dict[Path, ScalarSource] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)  # recoverable ones, see load_document
    _line_starts: list[int] | None = None

    def key_position(self, path: Path) -> Position:
        """Where the key of `path` was written (or its value, or the nearest enclosing node)."""
        if path in self.key_marks:
            return self.key_marks[path]
        return self.value_position(path)

    def value_position(self, path: Path) -> Position:
        """Where the value of `path` was written (or the nearest enclosing node)."""
        while path:
            if path in self.value_marks:
                return self.value_marks[path]
            if path in self.key_marks:
                return self.key_marks[path]
            path = path[:-1]
        return self.value_marks.get((), (1, 1))

    def offset_position(self, index: int) -> Position:
        """The (line, column) of a 0-based character index in the source text."""
        if self._line_starts is None:
            self._line_starts = _line_starts(self.source)
        line = _bisect_right(self._line_starts, index)
        return line, index - self._line_starts[line - 1] + 1


def load_document(
    text: str,
    path: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_nodes: int = DEFAULT_MAX_NODES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    keep_going: bool = False,
    empty_means: str = "expected a workflow mapping with 'on' and 'jobs'",
) -> Document:
    """Parse `text` (the file at `path`) into a `Document` whose top level is a mapping.

    Raises `WorkflowError` with every problem found; with `keep_going`, problems that leave a
    usable document (duplicate keys, bad keys, tags) are in `Document.problems` instead.
    `empty_means` completes the message about an empty file: what the file should hold.
    """
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_bytes:
        raise WorkflowError([Problem(path, 1, 1, _size_message(size, max_bytes))])
    # Editors do not count a byte-order mark as a column, and libyaml's offsets skip it.
    text = text.removeprefix("\ufeff")
    root = _compose(text, path)
    if root is None or _is_null_scalar(root):
        message = f"the file is empty; {empty_means}"
        raise WorkflowError([Problem(path, 1, 1, message)])
    builder = _Builder(path, text, max_nodes=max_nodes, max_depth=max_depth)
    value = builder.build(root)
    if builder.problems and (builder.stopped or not keep_going):
        raise WorkflowError(builder.problems)
    if not isinstance(value, dict):
        # Placed at the start of the file: the whole file is what has the wrong shape.
        message = f"expected a mapping at the top level, got {describe_type(value)}"
        raise WorkflowError([Problem(path, 1, 1, message)])
    return Document(
        value=value,
        source=text,
        key_marks=builder.key_marks,
        value_marks=builder.value_marks,
        scalars=builder.scalars,
        problems=builder.problems,
    )


def describe_type(value: Any) -> str:
    """A human name for the kind of a loaded value: 'a list', 'a string', ..."""
    if value is None:
        return "an empty value"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def _size_message(size: int, limit: int) -> str:
    return (
        f"the file is {size:,} bytes ({size / 1024:.1f} KB), "
        f"more than the limit of {limit:,} bytes ({limit / 1024:g} KB)"
    )


# libyaml's parser is about five times faster than PyYAML's pure-Python one; both give the same
# nodes and marks (character offsets), so use it where the wheel has it.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_BaseLoader):  # type: ignore[misc,valid-type]
    """Composes nodes only; marks untagged plain scalars so that this module resolves them."""

    def resolve(self, kind: type, value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode and implicit[0]:
            return _PLAIN_TAG
        return super().resolve(kind, value, (False, False))


def _compose(text: str, path: str) -> Node | None:
    tab_problems = _tab_indentation_problems(text, path)
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as error:
        raise WorkflowError(tab_problems or [_syntax_problem(error, path)]) from None
    except yaml.YAMLError as error:
        raise WorkflowError(tab_problems or [_reader_problem(error, text, path)]) from None
    except RecursionError:
        message = "the YAML is nested too deeply to be a workflow"
        raise WorkflowError([Problem(path, 1, 1, message)]) from None


def _syntax_problem(error: yaml.MarkedYAMLError, path: str) -> Problem:
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    reason = error.problem or error.context or "not valid YAML"
    if error.context and error.problem:
        reason = f"{error.problem} ({error.context})"
    return Problem(path, line, column, f"invalid YAML: {reason}")


def _reader_problem(error: yaml.YAMLError, text: str, path: str) -> Problem:
    position = getattr(error, "position", None)
    line, column = (1, 1)
    if isinstance(position, int):
        line, column = Document(None, source=text).offset_position(position)
    character = getattr(error, "character", None)
    if isinstance(character, int):
        message = f"invalid YAML: the character {chr(character)!r} is not allowed in a YAML file"
    else:
        message = f"invalid YAML: {error}"
    return Problem(path, line, column, message)


# A line that opens a block scalar: `key: |`, `- >-`, `run: |2 # comment`...
_BLOCK_SCALAR_START = re.compile(r"(?:^|[\s:-])[|>][0-9+-]*\s*(?:#.*)?$")


def _tab_indentation_problems(text: str, path: str) -> list[Problem]:
    """Lines indented with tabs, which YAML forbids.

    Found by scanning the text before parsing; when the parse then fails, these problems are
    reported instead of the parser's own message ("found character '\\t' that cannot start any
    token"), which does not say what to do. Tabs after the indentation of a block scalar
    (`run: |`) are content, not indentation, so lines inside one are skipped.
    """
    problems = []
    block_parent_indent: int | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        content = line.lstrip(" ")
        indent = len(line) - len(content)
        if block_parent_indent is not None:
            if not content.strip(" \t") or indent > block_parent_indent:
                continue
            block_parent_indent = None
        if content.startswith("\t"):
            message = "tab character used for indentation; YAML indentation must use spaces"
            problems.append(Problem(path, number, indent + 1, message))
            continue
        if _BLOCK_SCALAR_START.search(line):
            block_parent_indent = indent
    return problems


def _is_null_scalar(node: Node) -> bool:
    return (
        isinstance(node, ScalarNode)
        and node.tag == _PLAIN_TAG
        and not node.style
        and bool(_NULL.match(node.value))
    )


def _mark(node: Node) -> Position:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Turns a composed node tree into Python values, recording positions and problems."""

    def __init__(self, path: str, text: str, *, max_nodes: int, max_depth: int) -> None:
        self.file = path
        self.text = text
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.node_count = 0
        self.problems: list[Problem] = []
        self.key_marks: dict[Path, Position] = {}
        self.value_marks: dict[Path, Position] = {}
        self.scalars: dict[Path, ScalarSource] = {}
        self._active: set[int] = set()  # ids of the nodes being built: detects recursive aliases
        self.stopped = False  # a problem that makes the rest of the document meaningless

    def build(self, root: Node) -> Any:
        return self._value(root, ())

    def _problem(self, node: Node, message: str) -> None:
        line, column = _mark(node)
        self.problems.append(Problem(self.file, line, column, message))

    def _value(self, node: Node, path: Path) -> Any:
        if self.stopped:
            return None
        self.node_count += 1
        if self.node_count > self.max_nodes:
            # Aliases let a few lines expand into billions of values ("billion laughs").
            message = (
                f"the document expands to more than {self.max_nodes:,} values "
                "(too many aliases?); workflows must be smaller"
            )
            self._problem(node, message)
            self.stopped = True
            return None
        if len(path) > self.max_depth:
            self._problem(node, f"the document is nested more than {self.max_depth} levels deep")
            self.stopped = True
            return None
        if id(node) in self._active:
            self._problem(node, "recursive alias: a value cannot contain itself")
            return None
        self.value_marks.setdefault(path, _mark(node))
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self._active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self._sequence(node, path)
            return self._mapping(node, path)
        finally:
            self._active.discard(id(node))

    def _sequence(self, node: SequenceNode, path: Path) -> list[Any]:
        if node.tag != _STANDARD_TAG + "seq":
            self._problem(node, f"unsupported YAML tag {node.tag!r} on a list")
        return [self._value(item, (*path, index)) for index, item in enumerate(node.value)]

    def _mapping(self, node: MappingNode, path: Path) -> dict[str, Any]:
        if node.tag != _STANDARD_TAG + "map":
            self._problem(node, f"unsupported YAML tag {node.tag!r} on a mapping")
        result: dict[str, Any] = {}
        first_seen: dict[str, Node] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if _is_merge_key(key_node):
                merges.append(value_node)
                continue
            key = self._key(key_node)
            if key is None:
                continue
            if key in first_seen:
                first_line = first_seen[key].start_mark.line + 1
                message = f"duplicate key {key!r} (first defined at line {first_line})"
                self._problem(key_node, message)
                continue
            first_seen[key] = key_node
            child = (*path, key)
            self.key_marks.setdefault(child, _mark(key_node))
            result[key] = self._value(value_node, child)
        for merge_node in merges:
            self._merge(merge_node, path, result)
        return result

    def _merge(self, node: Node, path: Path, result: dict[str, Any]) -> None:
        """YAML merge keys (`<<: *defaults`): keys written in the mapping itself win."""
        sources = node.value if isinstance(node, SequenceNode) else [node]
        for source in sources:
            if not isinstance(source, MappingNode):
                self._problem(source, "a merge key ('<<') needs a mapping or a list of mappings")
                continue
            merged = self._value(source, path)
            if isinstance(merged, dict):
                for key, value in merged.items():
                    result.setdefault(key, value)

    def _key(self, node: Node) -> str | None:
        if not isinstance(node, ScalarNode):
            self._problem(node, "mapping keys must be plain strings, not lists or mappings")
            return None
        key = self._scalar(node, None)
        if key is None:
            self._problem(node, "empty mapping key; keys must be non-empty strings")
            return None
        if not isinstance(key, str):
            message = (
                f"mapping key {node.value} must be a string, got {describe_type(key)}; "
                f"quote it: '{node.value}'"
            )
            self._problem(node, message)
            return node.value  # read on as if quoted, so the rest of the file is still checked
        return key

    def _scalar(self, node: ScalarNode, path: Path | None) -> Any:
        if path is not None and path not in self.scalars:
            # Plain scalars have style None from PyYAML and '' from libyaml.
            self.scalars[path] = ScalarSource(
                node.start_mark.index, node.end_mark.index, node.style or None
            )
        if node.tag == _PLAIN_TAG:
            return resolve_plain(node.value)
        if node.tag == _STANDARD_TAG + "str":
            return node.value
        return self._tagged_scalar(node)

    def _tagged_scalar(self, node: ScalarNode) -> Any:
        """Explicit core tags (`!!int "3"`) are honoured; anything else is an error."""
        wanted = node.tag.removeprefix(_STANDARD_TAG)
        if wanted not in {"null", "bool", "int", "float"}:
            self._problem(node, f"unsupported YAML tag {node.tag!r}")
            return node.value
        value = resolve_plain(node.value)
        kinds = {"null": type(None), "bool": bool, "int": YamlInt, "float": YamlFloat | YamlInt}
        if not isinstance(value, kinds[wanted]):
            self._problem(node, f"{node.value!r} is not a valid !!{wanted}")
            return node.value
        if wanted == "float" and isinstance(value, YamlInt):
            return YamlFloat(float(value), value.text)
        return value


def _is_merge_key(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _PLAIN_TAG and node.value == "<<"


def resolve_plain(text: str) -> Any:
    """Resolve a plain (unquoted) scalar with the YAML 1.2 core schema."""
    if _NULL.match(text):
        return None
    if text in _BOOL:
        return _BOOL[text]
    if _INT_DECIMAL.match(text):
        return YamlInt(int(text, 10), text)
    if _INT_OCTAL.match(text):
        return YamlInt(int(text[2:], 8), text)
    if _INT_HEX.match(text):
        return YamlInt(int(text[2:], 16), text)
    if _FLOAT.match(text):
        return YamlFloat(float(text), text)
    if _FLOAT_INF.match(text):
        return YamlFloat(float("-inf" if text.startswith("-") else "inf"), text)
    if _FLOAT_NAN.match(text):
        return YamlFloat(float("nan"), text)
    return text


def plain_value(value: Any) -> Any:
    """A deep copy of a loaded value with `YamlInt`/`YamlFloat` turned into plain numbers."""
    if isinstance(value, YamlInt):
        return int(value)
    if isinstance(value, YamlFloat):
        return float(value)
    if isinstance(value, Mapping):
        return {key: plain_value(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_value(item) for item in value]
    return value


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for index, character in enumerate(text):
        if character == "\n":
            starts.append(index + 1)
    return starts


def _bisect_right(starts: list[int], index: int) -> int:
    low, high = 0, len(starts)
    while low < high:
        middle = (low + high) // 2
        if starts[middle] <= index:
            low = middle + 1
        else:
            high = middle
    return low
