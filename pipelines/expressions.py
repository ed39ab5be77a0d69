"""GitHub Actions expressions: `${{ ... }}` templates, `if:` conditions, and their evaluation.

The language is small and fixed, so it is implemented by hand: a tokenizer, a precedence-climbing
parser that builds an immutable AST, and a tree-walking evaluator that follows the coercion rules of
GitHub's "Evaluate expressions in workflows and actions". Nothing here does I/O; hashFiles(), the
one function that needs the filesystem, calls back into the caller through `EvalOptions`.

Every mistake is reported as `ExpressionError` with a character offset, never as another exception.
"""

from __future__ import annotations

import difflib
import functools
import json
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, ParamSpec, TypeAlias, TypeVar

from pipelines.errors import ExpressionError

__all__ = [
    "MAX_DEPTH",
    "MAX_STRING_LENGTH",
    "BinaryOp",
    "ContextRef",
    "EvalOptions",
    "Expr",
    "FunctionCall",
    "IndexAccess",
    "Literal",
    "Not",
    "PropertyAccess",
    "Template",
    "Wildcard",
    "evaluate",
    "evaluate_condition",
    "find_templates",
    "is_truthy",
    "parse",
    "parse_condition",
    "referenced_contexts",
    "render",
    "render_deep",
    "render_labels",
    "to_string",
    "uses_status_function",
]

# How deeply expressions may nest (parentheses, `!`, arguments, chains of operators and property
# accesses). Bounding it keeps every recursive walk far below Python's recursion limit.
MAX_DEPTH = 100

# The longest string format(), join() and toJSON() may build, in the spirit of GitHub's 1 MiB
# expression memory cap. Without it `toJSON(toJSON(...))` doubles the size at every level.
MAX_STRING_LENGTH = 1_048_576


# --------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass(frozen=True, slots=True)
class _Node:
    # Computed once at construction so the parser can refuse over-deep trees in O(1) per node.
    depth: int = field(default=1, init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        deepest_child = max((child.depth for child in self.children()), default=0)
        object.__setattr__(self, "depth", deepest_child + 1)

    def children(self) -> tuple[Expr, ...]:
        return ()


@dataclass(frozen=True, slots=True)
class Literal(_Node):
    """`null`, `true`, `false`, a number or a string."""

    value: bool | int | float | str | None
    position: int


@dataclass(frozen=True, slots=True)
class ContextRef(_Node):
    """A top-level context such as `github` or `matrix`, spelled as written."""

    name: str
    position: int


@dataclass(frozen=True, slots=True)
class PropertyAccess(_Node):
    """`target.name`."""

    target: Expr
    name: str
    position: int

    def children(self) -> tuple[Expr, ...]:
        return (self.target,)


@dataclass(frozen=True, slots=True)
class IndexAccess(_Node):
    """`target[index]`."""

    target: Expr
    index: Expr
    position: int

    def children(self) -> tuple[Expr, ...]:
        return (self.target, self.index)


@dataclass(frozen=True, slots=True)
class Wildcard(_Node):
    """The object filter `target.*` (also written `target[*]`)."""

    target: Expr
    position: int

    def children(self) -> tuple[Expr, ...]:
        return (self.target,)


@dataclass(frozen=True, slots=True)
class Not(_Node):
    """`!operand`."""

    operand: Expr
    position: int

    def children(self) -> tuple[Expr, ...]:
        return (self.operand,)


@dataclass(frozen=True, slots=True)
class BinaryOp(_Node):
    """`left <operator> right`; `position` is the operator's."""

    operator: str
    left: Expr
    right: Expr
    position: int

    def children(self) -> tuple[Expr, ...]:
        return (self.left, self.right)


@dataclass(frozen=True, slots=True)
class FunctionCall(_Node):
    """`name(args...)`; `name` is the canonical spelling (`startsWith`), whatever was written."""

    name: str
    args: tuple[Expr, ...]
    position: int

    def children(self) -> tuple[Expr, ...]:
        return self.args


Expr: TypeAlias = (
    Literal | ContextRef | PropertyAccess | IndexAccess | Wildcard | Not | BinaryOp | FunctionCall
)


@dataclass(frozen=True, slots=True)
class Template:
    """One `${{ ... }}` in a string: `text[start:end]` is the whole of it, `source` its inside."""

    start: int
    end: int
    source: str


# --------------------------------------------------------------------------------------------------
# Functions


@dataclass(frozen=True, slots=True)
class _Signature:
    name: str
    min_args: int
    max_args: int | None  # None: no upper limit

    def describe_arity(self) -> str:
        if self.max_args == 0:
            return "no arguments"
        if self.max_args == self.min_args:
            return f"exactly {_plural(self.min_args, 'argument')}"
        if self.max_args is None:
            return f"at least {_plural(self.min_args, 'argument')}"
        return f"{self.min_args} or {self.max_args} arguments"


_SIGNATURES: dict[str, _Signature] = {
    signature.name.lower(): signature
    for signature in (
        _Signature("contains", 2, 2),
        _Signature("startsWith", 2, 2),
        _Signature("endsWith", 2, 2),
        _Signature("format", 1, None),
        _Signature("join", 1, 2),
        _Signature("toJSON", 1, 1),
        _Signature("fromJSON", 1, 1),
        _Signature("hashFiles", 1, None),
        _Signature("success", 0, 0),
        _Signature("failure", 0, 0),
        _Signature("always", 0, 0),
        _Signature("cancelled", 0, 0),
    )
}

_STATUS_FUNCTIONS = frozenset({"success", "failure", "always", "cancelled"})


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _unknown_function_message(name: str) -> str:
    close = difflib.get_close_matches(name.lower(), _SIGNATURES, n=1)
    if close:
        return f"unknown function '{name}' (did you mean '{_SIGNATURES[close[0]].name}'?)"
    known = ", ".join(signature.name for signature in _SIGNATURES.values())
    return f"unknown function '{name}' (the functions are {known})"


# --------------------------------------------------------------------------------------------------
# Tokenizer


@dataclass(frozen=True, slots=True)
class _Token:
    # "number", "string", "identifier", "end", or the symbol itself ("(", "==", ".", ...).
    kind: str
    text: str
    position: int
    value: Any = None  # the number or string a literal token stands for


_TWO_CHARACTER_SYMBOLS = frozenset({"==", "!=", "<=", ">=", "&&", "||"})
_ONE_CHARACTER_SYMBOLS = frozenset("()[],.*!<>")
# A `.` after these dereferences a property; anywhere else it can only start a number like `.5`.
_DEREFERENCEABLE = frozenset({"identifier", ")", "]", "*"})
_MISTYPED_OPERATORS = {"=": "==", "&": "&&", "|": "||"}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
# Greedy on purpose, like GitHub's lexer: `12abc` is one bad number, not a number and a name.
_NUMBER_LEXEME = re.compile(r".[0-9A-Za-z_.+\-]*")
_DIGITS = frozenset("0123456789")
_KEYWORDS: dict[str, bool | float | None] = {
    "null": None,
    "true": True,
    "false": False,
    "NaN": math.nan,  # the same float object every time, so equal literals compare equal
    "Infinity": math.inf,
}


def _tokenize(text: str, offset: int) -> list[_Token]:
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        if text[index].isspace():
            index += 1
            continue
        previous_kind = tokens[-1].kind if tokens else None
        token = _read_token(text, index, offset, previous_kind)
        tokens.append(token)
        index += len(token.text)
    tokens.append(_Token("end", "", offset + len(text)))
    return tokens


def _read_token(text: str, index: int, offset: int, previous_kind: str | None) -> _Token:
    char = text[index]
    position = offset + index
    if char == "'":
        return _read_string(text, index, offset)
    if _starts_number(text, index, previous_kind):
        return _read_number(text, index, offset)
    if identifier := _IDENTIFIER.match(text, index):
        return _Token("identifier", identifier.group(), position)
    if text[index : index + 2] in _TWO_CHARACTER_SYMBOLS:
        return _Token(text[index : index + 2], text[index : index + 2], position)
    if char in _ONE_CHARACTER_SYMBOLS:
        return _Token(char, char, position)
    raise ExpressionError(_unexpected_character_message(text, index), position)


def _starts_number(text: str, index: int, previous_kind: str | None) -> bool:
    char = text[index]
    if char in _DIGITS or char in "+-":
        return True
    following = text[index + 1 : index + 2]
    return char == "." and following in _DIGITS and previous_kind not in _DEREFERENCEABLE


def _unexpected_character_message(text: str, index: int) -> str:
    char = text[index]
    if char in _MISTYPED_OPERATORS:
        return f"unexpected token '{char}' (did you mean '{_MISTYPED_OPERATORS[char]}'?)"
    if char == '"':
        return "unexpected '\"' (strings use single quotes: 'text')"
    if text.startswith("${{", index):
        return "unexpected '${{' (an expression cannot contain another ${{ }})"
    return f"unexpected character {char!r}"


def _read_string(text: str, start: int, offset: int) -> _Token:
    pieces: list[str] = []
    index = start + 1
    while True:
        closing = text.find("'", index)
        if closing == -1:
            raise ExpressionError(
                "unterminated string (no closing '; a quote inside a string is written '')",
                offset + start,
            )
        pieces.append(text[index:closing])
        if text.startswith("''", closing):
            pieces.append("'")
            index = closing + 2
            continue
        return _Token("string", text[start : closing + 1], offset + start, "".join(pieces))


def _read_number(text: str, start: int, offset: int) -> _Token:
    lexeme = _NUMBER_LEXEME.match(text, start)
    assert lexeme is not None  # the first character was already checked to start a number
    source = lexeme.group()
    value = _parse_number_text(source)
    if math.isnan(value):
        if source in ("+", "-"):
            message = f"unexpected '{source}' (there is no arithmetic; a negative number is -2)"
        else:
            message = f"invalid number '{source}'"
        raise ExpressionError(message, offset + start)
    return _Token("number", source, offset + start, _integral_if_exact(value))


# --------------------------------------------------------------------------------------------------
# Parser

_BINARY_PRECEDENCE = {"||": 1, "&&": 2, "==": 3, "!=": 3, "<": 4, "<=": 4, ">": 4, ">=": 4}
_LOWEST_PRECEDENCE = 1


class _Parser:
    """Recursive descent for operands, precedence climbing for binary operators."""

    def __init__(self, text: str, offset: int) -> None:
        self._tokens = _tokenize(text, offset)
        self._index = 0
        self._nesting = 0

    def parse(self) -> Expr:
        if self._peek().kind == "end":
            raise ExpressionError("expected an expression but found nothing", self._peek().position)
        expr = self._parse_binary(_LOWEST_PRECEDENCE)
        token = self._peek()
        if token.kind != "end":
            raise ExpressionError(_trailing_token_message(token), token.position)
        return expr

    def _parse_binary(self, min_precedence: int) -> Expr:
        left = self._parse_unary()
        while (precedence := _BINARY_PRECEDENCE.get(self._peek().kind, 0)) >= min_precedence:
            operator = self._advance()
            # Operands of equal precedence are parsed by the loop, so operators are left-assoc.
            right = self._parse_binary(precedence + 1)
            left = _within_depth(BinaryOp(operator.kind, left, right, operator.position))
        return left

    def _parse_unary(self) -> Expr:
        self._nesting += 1
        try:
            if self._nesting > MAX_DEPTH:
                raise ExpressionError(_too_deep_message(), self._peek().position)
            if self._peek().kind == "!":
                bang = self._advance()
                return _within_depth(Not(self._parse_unary(), bang.position))
            return self._parse_postfix(self._parse_primary())
        finally:
            self._nesting -= 1

    def _parse_postfix(self, expr: Expr) -> Expr:
        while (kind := self._peek().kind) in (".", "["):
            accessed = self._parse_property(expr) if kind == "." else self._parse_index(expr)
            expr = _within_depth(accessed)
        return expr

    def _parse_property(self, target: Expr) -> Expr:
        self._advance()  # the "."
        name = self._advance()
        if name.kind == "*":
            return Wildcard(target, name.position)
        if name.kind == "identifier":
            return PropertyAccess(target, name.text, name.position)
        raise ExpressionError(
            f"expected a property name or '*' after '.' but found {_describe(name)}", name.position
        )

    def _parse_index(self, target: Expr) -> Expr:
        bracket = self._advance()
        closing = f"expected ']' to close '[' at character {bracket.position + 1}"
        if self._peek().kind == "*":
            self._advance()
            self._expect("]", closing)
            return Wildcard(target, bracket.position)
        index = self._parse_binary(_LOWEST_PRECEDENCE)
        self._expect("]", closing)
        return IndexAccess(target, index, bracket.position)

    def _parse_primary(self) -> Expr:
        previous = self._tokens[self._index - 1] if self._index else None
        token = self._advance()
        if token.kind in ("number", "string"):
            return Literal(token.value, token.position)
        if token.kind == "identifier":
            return self._parse_name(token)
        if token.kind == "(":
            inner = self._parse_binary(_LOWEST_PRECEDENCE)
            self._expect(")", f"expected ')' to close '(' at character {token.position + 1}")
            return inner
        if token.kind == "*":
            raise ExpressionError(
                "unexpected '*' (the '*' filter goes after a value: 'items.*' or 'items[*]')",
                token.position,
            )
        after = f" after {_describe(previous)}" if previous else ""
        raise ExpressionError(
            f"expected a value{after} but found {_describe(token)}", token.position
        )

    def _parse_name(self, name: _Token) -> Expr:
        if self._peek().kind == "(":
            return self._parse_call(name)
        if name.text in _KEYWORDS:
            return Literal(_KEYWORDS[name.text], name.position)
        return ContextRef(name.text, name.position)

    def _parse_call(self, name: _Token) -> Expr:
        signature = _SIGNATURES.get(name.text.lower())
        if signature is None:
            raise ExpressionError(_unknown_function_message(name.text), name.position)
        open_paren = self._advance()
        args: list[Expr] = []
        if self._peek().kind != ")":
            args.append(self._parse_binary(_LOWEST_PRECEDENCE))
            while self._peek().kind == ",":
                self._advance()
                args.append(self._parse_binary(_LOWEST_PRECEDENCE))
        self._expect(
            ")",
            f"expected ',' or ')' in the arguments of {signature.name}() "
            f"(opened at character {open_paren.position + 1})",
        )
        too_few = len(args) < signature.min_args
        too_many = signature.max_args is not None and len(args) > signature.max_args
        if too_few or too_many:
            raise ExpressionError(
                f"{signature.name}() takes {signature.describe_arity()}, got {len(args)}",
                name.position,
            )
        return _within_depth(FunctionCall(signature.name, tuple(args), name.position))

    def _peek(self, ahead: int = 0) -> _Token:
        return self._tokens[min(self._index + ahead, len(self._tokens) - 1)]

    def _advance(self) -> _Token:
        token = self._peek()
        if token.kind != "end":
            self._index += 1
        return token

    def _expect(self, kind: str, expectation: str) -> None:
        token = self._peek()
        if token.kind != kind:
            raise ExpressionError(f"{expectation} but found {_describe(token)}", token.position)
        self._advance()


def _within_depth(expr: Expr) -> Expr:
    if expr.depth > MAX_DEPTH:
        raise ExpressionError(_too_deep_message(), expr.position)
    return expr


def _too_deep_message() -> str:
    return f"expression is nested too deeply (the limit is {MAX_DEPTH} levels)"


def _describe(token: _Token) -> str:
    if token.kind == "end":
        return "the end of the expression"
    if token.kind == "string":
        text = token.text if len(token.text) <= 30 else token.text[:26] + "...'"
        return f"string {text}"
    if token.kind == "number":
        return f"number {token.text}"
    return f"'{token.text}'"


def _trailing_token_message(token: _Token) -> str:
    if token.kind in (")", "]"):
        opener = "(" if token.kind == ")" else "["
        return f"unexpected '{token.kind}' (there is no '{opener}' for it to close)"
    return (
        f"unexpected {_describe(token)} (expected an operator such as '==', '&&' or '||', "
        "or the end of the expression)"
    )


# --------------------------------------------------------------------------------------------------
# Values and GitHub's coercion rules

_MISSING = object()


class _FilteredArray(list[Any]):
    """The result of a `*` filter: indexing it indexes every item, collecting what exists."""


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, list | tuple):
        return "array"
    # str, and any other scalar a caller put in a context (e.g. a YAML date), which acts as text.
    return "string"


def _is_primitive(value: Any) -> bool:
    return _kind(value) not in ("object", "array")


def is_truthy(value: Any) -> bool:
    """GitHub's truthiness: false, 0, -0, '', null and NaN are falsy; everything else is truthy."""
    kind = _kind(value)
    if kind == "null":
        return False
    if kind in ("boolean", "number"):
        return bool(value) and value == value  # `value == value` is False only for NaN
    if kind == "string":
        return to_string(value) != ""
    return True


def to_string(value: Any) -> str:
    """GitHub's string coercion, used wherever a value is interpolated into text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _format_number(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return "Object"
    if isinstance(value, list | tuple):
        return "Array"
    return str(value)


def _format_number(value: float) -> str:
    """Shortest round-tripping digits, laid out as JavaScript's Number#toString does."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "0"
    sign = "-" if value < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, digit_tuple)).rstrip("0")
    assert isinstance(exponent, int)  # finite numbers only reach this point
    # The value is 0.<digits> * 10**point.
    point = len(digit_tuple) + exponent
    if len(digits) <= point <= 21:
        return sign + digits + "0" * (point - len(digits))
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}e{'+' if point >= 1 else '-'}{abs(point - 1)}"


_DECIMAL_NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_NUMBER = re.compile(r"0x[0-9A-Fa-f]+")
_OCTAL_NUMBER = re.compile(r"0o[0-7]+")


def _parse_number_text(text: str) -> float:
    """A number literal, or a string coerced to a number; NaN when it is neither."""
    if _DECIMAL_NUMBER.fullmatch(text):
        return float(text)
    if _HEX_NUMBER.fullmatch(text):
        return _int_to_float(int(text[2:], 16))
    if _OCTAL_NUMBER.fullmatch(text):
        return _int_to_float(int(text[2:], 8))
    if text in ("Infinity", "-Infinity"):
        return float(text)
    return math.nan


def _int_to_float(value: int) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _integral_if_exact(value: float) -> int | float:
    # GitHub has only doubles; Python callers get `3`, not `3.0`, for whole numbers a double holds.
    if value.is_integer() and abs(value) <= 2**53:
        return int(value)
    return value


def _to_number(value: Any) -> float:
    kind = _kind(value)
    if kind == "null":
        return 0.0
    if kind in ("boolean", "number"):
        return _int_to_float(value) if isinstance(value, int) else value
    if kind == "string":
        text = to_string(value).strip()
        return _parse_number_text(text) if text else 0.0
    return math.nan


def _fold_case(text: str) -> str:
    # GitHub compares with ToUpperInvariant; upper-casing also gives its ordering of '_' vs letters.
    return text.upper()


def _loose_equals(left: Any, right: Any) -> bool:
    left_kind, right_kind = _kind(left), _kind(right)
    if left_kind != right_kind:
        return _to_number(left) == _to_number(right)
    if left_kind == "string":
        return _fold_case(to_string(left)) == _fold_case(to_string(right))
    if left_kind in ("object", "array"):
        return left is right
    return bool(left == right)


def _compare(left: Any, right: Any) -> int | None:
    """-1, 0 or 1 as `left` sorts before, with or after `right`; None when they are unordered."""
    left_kind, right_kind = _kind(left), _kind(right)
    ordered: tuple[Any, Any]
    if left_kind == right_kind == "string":
        ordered = (_fold_case(to_string(left)), _fold_case(to_string(right)))
    elif left_kind == right_kind == "number":
        ordered = (left, right)  # exact, even for ints too large for a float
    elif "object" in (left_kind, right_kind) or "array" in (left_kind, right_kind):
        return None
    else:
        ordered = (_to_number(left), _to_number(right))
    a, b = ordered
    if a != a or b != b:  # NaN is unordered
        return None
    return (a > b) - (a < b)


_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "==": _loose_equals,
    "!=": lambda left, right: not _loose_equals(left, right),
    "<": lambda left, right: _compare(left, right) == -1,
    "<=": lambda left, right: _compare(left, right) in (-1, 0),
    ">": lambda left, right: _compare(left, right) == 1,
    ">=": lambda left, right: _compare(left, right) in (0, 1),
}


def _get_property(mapping: Mapping[Any, Any], name: str) -> Any:
    """`mapping[name]` ignoring case, as GitHub's contexts do; _MISSING when absent."""
    if name in mapping:
        return mapping[name]
    folded = name.casefold()
    for key, value in mapping.items():
        if to_string(key).casefold() == folded:
            return value
    return _MISSING


def _array_position(index: Any) -> int | None:
    """The array slot an index value selects, following GitHub: coerce to a number and floor it."""
    if not _is_primitive(index):
        return None
    number = _to_number(index)
    if number != number or number < 0 or math.isinf(number):
        return None
    return math.floor(number)


def _index(target: Any, index: Any) -> Any:
    """`target[index]`, or _MISSING when there is nothing there."""
    if isinstance(target, Mapping):
        return _get_property(target, to_string(index)) if _is_primitive(index) else _MISSING
    if isinstance(target, list | tuple):
        position = _array_position(index)
        return target[position] if position is not None and position < len(target) else _MISSING
    return _MISSING


def _access(target: Any, index: Any) -> Any:
    if isinstance(target, _FilteredArray):
        found = (_index(item, index) for item in target)
        return _FilteredArray(value for value in found if value is not _MISSING)
    value = _index(target, index)
    return None if value is _MISSING else value


def _filter_all(target: Any) -> Any:
    if isinstance(target, _FilteredArray):
        return _FilteredArray(value for item in target for value in _all_values(item))
    if isinstance(target, Mapping | list | tuple):
        return _FilteredArray(_all_values(target))
    return None


def _all_values(container: Any) -> list[Any]:
    if isinstance(container, Mapping):
        return list(container.values())
    if isinstance(container, list | tuple):
        return list(container)
    return []


def _exported(value: Any) -> Any:
    return list(value) if isinstance(value, _FilteredArray) else value


# --------------------------------------------------------------------------------------------------
# Function implementations


class _CallFailed(Exception):
    """Raised by a function implementation; the evaluator adds the function name and position."""


def _check_length(length: int) -> None:
    if length > MAX_STRING_LENGTH:
        raise _CallFailed(f"the result would be longer than {MAX_STRING_LENGTH} characters")


def _contains(search: Any, item: Any) -> bool:
    if isinstance(search, list | tuple):
        return any(_loose_equals(element, item) for element in search)
    if _is_primitive(search) and _is_primitive(item):
        return _fold_case(to_string(item)) in _fold_case(to_string(search))
    return False


def _starts_with(text: Any, prefix: Any) -> bool:
    if not (_is_primitive(text) and _is_primitive(prefix)):
        return False
    return _fold_case(to_string(text)).startswith(_fold_case(to_string(prefix)))


def _ends_with(text: Any, suffix: Any) -> bool:
    if not (_is_primitive(text) and _is_primitive(suffix)):
        return False
    return _fold_case(to_string(text)).endswith(_fold_case(to_string(suffix)))


_FORMAT_PIECE = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")


def _format(template: Any, *values: Any) -> str:
    text = to_string(template)
    pieces: list[str] = []
    length = 0
    cursor = 0
    for piece in _FORMAT_PIECE.finditer(text):
        replacement = _format_piece(piece, values)
        length += piece.start() - cursor + len(replacement)
        _check_length(length)  # before joining: repeated placeholders multiply the size
        pieces += (text[cursor : piece.start()], replacement)
        cursor = piece.end()
    pieces.append(text[cursor:])
    return "".join(pieces)


def _format_piece(piece: re.Match[str], values: tuple[Any, ...]) -> str:
    matched, at = piece.group(), piece.start()
    if matched in ("{{", "}}"):
        return matched[0]
    if matched == "{":
        raise _CallFailed(f"'{{' at index {at} of the format string is never closed (write '{{{{')")
    if matched == "}":
        raise _CallFailed(f"'}}' at index {at} of the format string has no '{{' (write '}}}}')")
    spec = piece.group(1)
    if not re.fullmatch(r"[0-9]+", spec):
        raise _CallFailed(
            f"invalid placeholder '{matched}' at index {at} of the format string "
            "(placeholders are {0}, {1}, ...)"
        )
    # The length check first: Python refuses int() of absurdly long digit strings.
    if len(spec) > 9 or int(spec) >= len(values):
        raise _CallFailed(
            f"placeholder '{matched}' at index {at} of the format string refers to argument "
            f"{spec}, but the number of arguments after the format string is {len(values)}"
        )
    return to_string(values[int(spec)])


def _join(items: Any, separator: Any = ",") -> str:
    if not isinstance(items, list | tuple):
        return to_string(items) if _is_primitive(items) else ""
    texts = [to_string(item) for item in items]
    glue = to_string(separator)
    _check_length(sum(map(len, texts)) + len(glue) * max(len(texts) - 1, 0))
    return glue.join(texts)


def _to_json(value: Any) -> str:
    try:
        text = json.dumps(_json_ready(value), indent=2, ensure_ascii=False)
    except (ValueError, RecursionError) as error:
        raise _CallFailed(f"cannot convert the value to JSON ({_error_text(error)})") from None
    _check_length(len(text))
    return text


def _json_ready(value: Any) -> Any:
    if isinstance(value, float):
        if not math.isfinite(value):
            return None  # as JSON.stringify does
        return int(value) if value.is_integer() and abs(value) < 1e21 else value
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Mapping):
        return {to_string(key): _json_ready(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(item) for item in value]
    return to_string(value)


def _from_json(text: Any) -> Any:
    source = to_string(text)
    try:
        return json.loads(source, parse_constant=_reject_json_constant)
    except (ValueError, RecursionError) as error:
        preview = source if len(source) <= 40 else source[:37] + "..."
        raise _CallFailed(f"invalid JSON {preview!r}: {_error_text(error)}") from None


def _reject_json_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _error_text(error: BaseException) -> str:
    return "nested too deeply" if isinstance(error, RecursionError) else str(error)


_PURE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "contains": _contains,
    "startsWith": _starts_with,
    "endsWith": _ends_with,
    "format": _format,
    "join": _join,
    "toJSON": _to_json,
    "fromJSON": _from_json,
}


# --------------------------------------------------------------------------------------------------
# Evaluator


@dataclass(frozen=True)
class EvalOptions:
    """What an expression may know about its surroundings beyond the contexts."""

    status: str = "success"  # the current job/step status: "success" | "failure" | "cancelled"
    # Hashes the files matching the patterns. None where no workspace exists (e.g. job-level `if`).
    hash_files: Callable[[list[str]], str] | None = None


_DEFAULT_OPTIONS = EvalOptions()


class _Evaluator:
    def __init__(self, contexts: Mapping[str, Any], options: EvalOptions) -> None:
        self._contexts = contexts
        self._options = options

    def evaluate(self, expr: Expr) -> Any:
        match expr:
            case Literal():
                return expr.value
            case ContextRef():
                value = _get_property(self._contexts, expr.name)
                return None if value is _MISSING else value
            case PropertyAccess():
                return _access(self.evaluate(expr.target), expr.name)
            case IndexAccess():
                return _access(self.evaluate(expr.target), self.evaluate(expr.index))
            case Wildcard():
                return _filter_all(self.evaluate(expr.target))
            case Not():
                return not is_truthy(self.evaluate(expr.operand))
            case BinaryOp():
                return self._evaluate_binary(expr)
            case FunctionCall():
                return self._call(expr)
        raise ExpressionError(f"cannot evaluate {type(expr).__name__}", 0)

    def _evaluate_binary(self, expr: BinaryOp) -> Any:
        left = self.evaluate(expr.left)
        # `&&` and `||` short-circuit and yield an operand, not a boolean.
        if expr.operator == "&&":
            return self.evaluate(expr.right) if is_truthy(left) else left
        if expr.operator == "||":
            return left if is_truthy(left) else self.evaluate(expr.right)
        return _COMPARISONS[expr.operator](left, self.evaluate(expr.right))

    def _call(self, call: FunctionCall) -> Any:
        if call.name in _STATUS_FUNCTIONS:
            return call.name == "always" or self._options.status == call.name
        args = [self.evaluate(arg) for arg in call.args]
        if call.name == "hashFiles":
            return self._hash_files(args, call.position)
        try:
            return _PURE_FUNCTIONS[call.name](*args)
        except _CallFailed as failure:
            raise ExpressionError(f"{call.name}(): {failure}", call.position) from None

    def _hash_files(self, patterns: list[Any], position: int) -> str:
        if self._options.hash_files is None:
            raise ExpressionError("hashFiles is not available here", position)
        try:
            return self._options.hash_files([to_string(pattern) for pattern in patterns])
        except ExpressionError:
            raise
        except Exception as error:
            # The caller's callback may fail in any way; the contract is ExpressionError only.
            raise ExpressionError(f"hashFiles() failed: {error}", position) from error


# --------------------------------------------------------------------------------------------------
# Public API

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _no_recursion_error(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Last line of defence: a value nested deeper than the stack (e.g. a self-containing dict
    in a context) must still surface as an ExpressionError."""

    @functools.wraps(function)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return function(*args, **kwargs)
        except RecursionError:
            raise ExpressionError("expression or value is nested too deeply", 0) from None

    return wrapper


def _parse(text: str, offset: int) -> Expr:
    return _Parser(text, offset).parse()


@_no_recursion_error
def parse(text: str) -> Expr:
    """Parse one expression (the inside of `${{ }}`, or a bare `if:` condition)."""
    return _parse(text, 0)


def parse_condition(condition: str) -> Expr:
    """Parse an `if:` value, bare or wrapped entirely in `${{ }}`; empty means `success()`.

    Positions (in the tree and in errors) are offsets into `condition` itself. The implicit
    `success() && ...` is not added here; evaluate_condition applies it.
    """
    stripped = condition.strip()
    if not stripped:
        return FunctionCall("success", (), 0)
    if not stripped.startswith("${{"):
        # Bare: a `${{` outside a string literal is reported by the tokenizer.
        return parse(condition)
    templates = find_templates(condition)
    if len(templates) == 1 and _is_whole(condition, templates[0]):
        return _parse_template(templates[0])
    # GitHub would treat `${{ a }} && ${{ b }}` as text, which is always true: surely a mistake.
    raise ExpressionError(
        "a condition must be one expression: wrap all of it in a single ${{ }} or leave ${{ }} out",
        templates[0].start,
    )


def find_templates(text: str) -> list[Template]:
    """Every `${{ ... }}` in `text`, in order. `}}` inside a string literal does not end one."""
    templates: list[Template] = []
    search_from = 0
    while (start := text.find("${{", search_from)) != -1:
        closing = _find_template_end(text, start + 3)
        if closing == -1:
            raise ExpressionError(
                "'${{' is never closed (expected '}}' after the expression)", start
            )
        templates.append(Template(start, closing + 2, text[start + 3 : closing]))
        search_from = closing + 2
    return templates


_QUOTE_OR_CLOSE = re.compile(r"'|\}\}")


def _find_template_end(text: str, inner_start: int) -> int:
    in_string = False
    for found in _QUOTE_OR_CLOSE.finditer(text, inner_start):
        if found.group() == "'":
            in_string = not in_string  # `''` inside a string toggles twice, which is right
        elif not in_string:
            return found.start()
    # An unterminated string swallowed the `}}`: end at the first one so that parse() can point at
    # the string instead of at the `${{`.
    return text.find("}}", inner_start) if in_string else -1


def _is_whole(text: str, template: Template) -> bool:
    return not text[: template.start].strip() and not text[template.end :].strip()


def _parse_template(template: Template) -> Expr:
    return _parse(template.source, template.start + 3)


def referenced_contexts(expr: Expr) -> set[str]:
    """Lower-cased names of the top-level contexts `expr` reads, e.g. {"matrix", "needs"}."""
    return {node.name.lower() for node in _walk(expr) if isinstance(node, ContextRef)}


def uses_status_function(expr: Expr) -> bool:
    """Whether success(), failure(), always() or cancelled() appears anywhere in `expr`."""
    return any(
        isinstance(node, FunctionCall) and node.name in _STATUS_FUNCTIONS for node in _walk(expr)
    )


def _walk(expr: Expr) -> Iterator[Expr]:
    pending = [expr]
    while pending:
        node = pending.pop()
        yield node
        pending.extend(node.children())


@_no_recursion_error
def evaluate(
    expr: Expr | str, contexts: Mapping[str, Any], options: EvalOptions = _DEFAULT_OPTIONS
) -> Any:
    """The value of an expression; a `*` filter's result comes back as a plain list."""
    tree = parse(expr) if isinstance(expr, str) else expr
    return _exported(_Evaluator(contexts, options).evaluate(tree))


@_no_recursion_error
def evaluate_condition(
    condition: str | bool | None,
    contexts: Mapping[str, Any],
    options: EvalOptions = _DEFAULT_OPTIONS,
) -> bool:
    """Whether an `if:` holds. As on GitHub, a condition without a status function only runs
    while everything succeeded: it means `success() && (<condition>)`."""
    if not isinstance(condition, str):
        # None is an absent `if:`; YAML turns `if: true` into a bool, still subject to success().
        return options.status == "success" and (condition is None or is_truthy(condition))
    tree = parse_condition(condition)
    if not uses_status_function(tree) and options.status != "success":
        return False
    return is_truthy(_Evaluator(contexts, options).evaluate(tree))


@_no_recursion_error
def render(
    template: str, contexts: Mapping[str, Any], options: EvalOptions = _DEFAULT_OPTIONS
) -> Any:
    """Interpolate every `${{ }}` in a string.

    A string that is exactly one `${{ }}` (whitespace around it allowed) yields the value itself,
    which may be a list, dict or number, as GitHub does for `strategy.matrix: ${{ fromJSON(..) }}`.
    Error positions are offsets into `template`. Non-string values (YAML numbers, booleans) are
    returned unchanged.
    """
    if not isinstance(template, str):
        return template
    templates = find_templates(template)
    if not templates:
        return template
    evaluator = _Evaluator(contexts, options)
    if len(templates) == 1 and _is_whole(template, templates[0]):
        return _exported(evaluator.evaluate(_parse_template(templates[0])))
    pieces: list[str] = []
    cursor = 0
    for found in templates:
        pieces.append(template[cursor : found.start])
        pieces.append(to_string(evaluator.evaluate(_parse_template(found))))
        cursor = found.end
    pieces.append(template[cursor:])
    return "".join(pieces)


def render_deep(value: Any, contexts: Mapping[str, Any]) -> Any:
    """Evaluate every `${{ }}` inside a structure (a matrix written with expressions in some of
    its parts): strings are rendered, mappings and lists walked, other values kept."""
    if isinstance(value, str):
        return render(value, contexts) if "${{" in value else value
    if isinstance(value, Mapping):
        return {key: render_deep(item, contexts) for key, item in value.items()}
    if isinstance(value, list):
        return [render_deep(item, contexts) for item in value]
    return value


def render_labels(labels: Sequence[str], contexts: Mapping[str, Any]) -> list[str]:
    """The final `runs-on` labels: each may be an expression (`${{ matrix.os }}`) or yield a
    whole list (`${{ fromJSON(...) }}`); empty results are dropped."""
    rendered: list[str] = []
    for label in labels:
        value = render(label, contexts) if "${{" in label else label
        if isinstance(value, list):
            rendered.extend(to_string(item) for item in value)
        elif value not in (None, ""):
            rendered.append(to_string(value))
    return rendered
