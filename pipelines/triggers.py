"""Trigger types and matching: does a workflow run for this event?

Pure: the caller supplies the event (ref, changed paths, base ref); nothing here reads git.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The filters of one `on.<event>` entry. `None` means the filter was not given."""

    branches: tuple[str, ...] | None = None
    branches_ignore: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    tags_ignore: tuple[str, ...] | None = None
    paths: tuple[str, ...] | None = None
    paths_ignore: tuple[str, ...] | None = None
    # pull_request activity types; None means GitHub's default (opened, synchronize, reopened).
    types: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class DispatchInput:
    """One typed input of `on.workflow_dispatch.inputs`."""

    name: str
    type: str = "string"  # string | boolean | choice | number | environment
    description: str = ""
    required: bool = False
    default: Any = None
    options: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Triggers:
    """Which events start a workflow. An event absent here never starts it."""

    push: EventFilter | None = None
    pull_request: EventFilter | None = None
    # None: not dispatchable; () : dispatchable without inputs.
    workflow_dispatch: tuple[DispatchInput, ...] | None = None
    schedule: tuple[str, ...] = ()  # five-field cron expressions


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened to a repository, as the trigger layer describes it."""

    name: str  # push | pull_request | workflow_dispatch | schedule
    ref: str  # full ref: refs/heads/main, refs/tags/v1.2 (for pull_request: the head ref)
    changed_paths: tuple[str, ...] | None = None  # None: unknown, path filters do not exclude
    base_ref: str | None = None  # pull_request: the target branch, e.g. refs/heads/main
    action: str | None = None  # pull_request activity: opened, synchronize, reopened, ...
    cron: str | None = None  # schedule: the expression that fired


# ---------------------------------------------------------------------------------------------
# Filter patterns (GitHub's "Filter pattern cheat sheet")
#
#   *    zero or more characters, but not '/'
#   **   zero or more of any character; '**/' also matches no directory at all, so that
#        '**/README.md' matches 'README.md'
#   ?    zero or one of the preceding character
#   +    one or more of the preceding character
#   []   one character listed in the brackets; ranges only within a-z, A-Z and 0-9
#   !    at the start of a list entry: negates the entry (handled by filter_matches)
#   \    makes the next character literal
#
# Patterns compile to a small NFA that is simulated over the whole value, not to a Python regex:
# a backtracking regex such as '**a**a**a**b' against a long path takes exponential time, and
# patterns come from repository content that the server evaluates on every push.


class FilterPatternError(ValueError):
    """A branch, tag or path filter pattern that GitHub would not accept."""


_ANY = "any"  # matches every character
_NOT_SLASH = "not-slash"  # matches every character except '/'

# A character test: _ANY, _NOT_SLASH, a one-character string, or a frozenset of characters.
_CharTest = str | frozenset[str]


def _test_accepts(test: _CharTest, char: str) -> bool:
    if test == _ANY:
        return True
    if test == _NOT_SLASH:
        return char != "/"
    if isinstance(test, frozenset):
        return char in test
    return char == test


@dataclass(slots=True)
class _Token:
    """One element of a pattern: a literal/class with a repetition, or a wildcard."""

    kind: str  # "char" | "star" | "globstar" | "dirglob"
    test: _CharTest = _ANY
    min_count: int = 1
    unbounded: bool = False


_RANGE_GROUPS = ("az", "AZ", "09")


def _parse_class(pattern: str, start: int) -> tuple[frozenset[str], int]:
    """Parse '[...]' starting at the '['; returns the characters and the index after ']'."""
    position = start + 1
    members: set[str] = set()
    items: list[str] = []  # literal characters in order, to resolve ranges
    while position < len(pattern) and pattern[position] != "]":
        char = pattern[position]
        if char == "\\":
            if position + 1 >= len(pattern):
                break  # reported below as an unclosed '['
            items.append(pattern[position + 1])
            position += 2
            continue
        is_range = (
            char == "-" and items and position + 1 < len(pattern) and pattern[position + 1] != "]"
        )
        if is_range:
            low, high = items.pop(), pattern[position + 1]
            valid = low <= high and any(
                first <= low <= last and first <= high <= last for first, last in _RANGE_GROUPS
            )
            if not valid:
                raise FilterPatternError(
                    f"invalid range '{low}-{high}' in pattern {pattern!r}: "
                    "ranges can only include a-z, A-Z and 0-9, lowest first"
                )
            members.update(chr(code) for code in range(ord(low), ord(high) + 1))
            position += 2
            continue
        items.append(char)
        position += 1
    if position >= len(pattern):
        raise FilterPatternError(f"unbalanced '[' in pattern {pattern!r}: missing the closing ']'")
    members.update(items)
    if not members:
        raise FilterPatternError(f"empty brackets '[]' in pattern {pattern!r}")
    return frozenset(members), position + 1


def _tokenize(pattern: str) -> list[_Token]:
    if pattern == "":
        raise FilterPatternError("empty filter pattern")
    tokens: list[_Token] = []
    position = 0
    while position < len(pattern):
        char = pattern[position]
        if char == "*":
            if pattern.startswith("**", position):
                if pattern.startswith("**/", position):
                    tokens.append(_Token("dirglob"))
                    position += 3
                else:
                    tokens.append(_Token("globstar"))
                    position += 2
            else:
                tokens.append(_Token("star"))
                position += 1
        elif char in "?+":
            previous = tokens[-1] if tokens else None
            if previous is None:
                # Nothing precedes it: a plain character (there is nothing to repeat).
                tokens.append(_Token("char", char))
            elif previous.kind == "char":
                # Quantifiers compose: 'a+?' and 'a?+' both mean zero or more 'a'.
                if char == "?":
                    previous.min_count = 0
                else:
                    previous.unbounded = True
            # After a wildcard a quantifier changes nothing: (x*)? and (x*)+ are both x*.
            position += 1
        elif char == "[":
            members, position = _parse_class(pattern, position)
            tokens.append(_Token("char", members))
        elif char == "\\":
            if position + 1 >= len(pattern):
                raise FilterPatternError(
                    f"pattern {pattern!r} ends with '\\': nothing left to escape"
                )
            tokens.append(_Token("char", pattern[position + 1]))
            position += 2
        else:
            tokens.append(_Token("char", char))
            position += 1
    return tokens


class _Nfa:
    """Thompson NFA: state 0 is the start, `accept` the accepting state."""

    def __init__(self) -> None:
        self.moves: list[list[tuple[_CharTest, int]]] = []
        self.epsilons: list[list[int]] = []
        self.accept = 0

    def new_state(self) -> int:
        self.moves.append([])
        self.epsilons.append([])
        return len(self.moves) - 1

    def closure(self, states: set[int]) -> set[int]:
        pending = list(states)
        seen = set(states)
        while pending:
            for target in self.epsilons[pending.pop()]:
                if target not in seen:
                    seen.add(target)
                    pending.append(target)
        return seen

    def matches(self, value: str) -> bool:
        current = self.closure({0})
        for char in value:
            following = {
                target
                for state in current
                for test, target in self.moves[state]
                if _test_accepts(test, char)
            }
            if not following:
                return False
            current = self.closure(following)
        return self.accept in current


def _build_nfa(tokens: list[_Token]) -> _Nfa:
    nfa = _Nfa()
    state = nfa.new_state()
    for token in tokens:
        following = nfa.new_state()
        if token.kind in ("star", "globstar"):
            # x*: a looping state entered and left without consuming.
            test: _CharTest = _NOT_SLASH if token.kind == "star" else _ANY
            nfa.epsilons[state].append(following)
            nfa.moves[state].append((test, state))
        elif token.kind == "dirglob":
            # (.*/)?: nothing, or anything that ends with '/'.
            inside, after_slash = nfa.new_state(), nfa.new_state()
            nfa.epsilons[state].append(following)
            for origin in (state, inside, after_slash):
                nfa.moves[origin].append((_ANY, inside))
                nfa.moves[origin].append(("/", after_slash))
            nfa.epsilons[after_slash].append(following)
        else:
            # A character (or class) repeated min_count..1 or min_count..unbounded times.
            loop = nfa.new_state()
            nfa.moves[state].append((token.test, loop))
            if token.min_count == 0:
                nfa.epsilons[state].append(following)
            if token.unbounded:
                nfa.moves[loop].append((token.test, loop))
            nfa.epsilons[loop].append(following)
        state = following
    nfa.accept = state
    return nfa


@lru_cache(maxsize=1024)
def _compile(pattern: str) -> _Nfa:
    return _build_nfa(_tokenize(pattern))


def _split_negation(entry: str) -> tuple[bool, str]:
    if entry.startswith("!"):
        return True, entry[1:]
    return False, entry


def validate_pattern(pattern: str) -> None:
    """Raise FilterPatternError, saying what is wrong, if `pattern` is not a valid filter entry.

    `pattern` is a list entry as written, so a leading '!' (negation) is allowed.
    """
    if not isinstance(pattern, str):
        raise FilterPatternError(
            f"filter pattern must be a string, got {type(pattern).__name__}: {pattern!r}"
        )
    if pattern == "":
        raise FilterPatternError("empty filter pattern")
    negated, body = _split_negation(pattern)
    if negated and body == "":
        raise FilterPatternError("'!' alone is not a pattern: put the pattern to exclude after it")
    _compile(body)


def pattern_matches(pattern: str, value: str) -> bool:
    """Does one filter pattern (its '!' already removed) match the whole of `value`?

    `value` is a branch or tag name (without refs/heads/ or refs/tags/) or a repository path.
    A leading '!' here is an ordinary character. Raises FilterPatternError for invalid patterns.
    """
    return _compile(pattern).matches(value)


def filter_matches(patterns: Sequence[str], value: str) -> bool:
    """Does `value` pass an ordered filter list with '!' negations?

    Patterns are checked in order and the last one that matches decides: a positive pattern
    includes, a negative one excludes. A value that no pattern matches is not included, so a list
    made only of negative patterns includes nothing (GitHub requires a positive pattern).
    """
    if isinstance(patterns, str):
        raise TypeError("patterns must be a sequence of strings, not a single string")
    included = False
    for entry in patterns:
        validate_pattern(entry)
        negated, body = _split_negation(entry)
        if pattern_matches(body, value):
            included = not negated
    return included


# ---------------------------------------------------------------------------------------------
# Does a workflow run for an event?

BRANCH_PREFIX = "refs/heads/"
TAG_PREFIX = "refs/tags/"
PULL_PREFIX = "refs/pull/"

DEFAULT_PULL_REQUEST_TYPES = ("opened", "synchronize", "reopened")


def ref_name(ref: str) -> str:
    """The short name of a ref: refs/heads/main -> main, refs/tags/v1 -> v1,
    refs/pull/3/merge -> 3/merge; anything else is returned unchanged."""
    for prefix in (BRANCH_PREFIX, TAG_PREFIX, PULL_PREFIX):
        if ref.startswith(prefix):
            return ref[len(prefix) :]
    return ref


def _passes(include: tuple[str, ...] | None, ignore: tuple[str, ...] | None, value: str) -> bool:
    """One include/ignore filter pair. GitHub forbids giving both; if both are given anyway,
    the value must be included by the one and not ignored by the other."""
    if include is not None and not filter_matches(include, value):
        return False
    return not (ignore is not None and filter_matches(ignore, value))


def _paths_pass(event_filter: EventFilter, changed_paths: tuple[str, ...] | None) -> bool:
    if event_filter.paths is None and event_filter.paths_ignore is None:
        return True
    if changed_paths is None:
        return True  # unknown changes (e.g. diff too large): GitHub runs the workflow
    # With paths: at least one changed file must be included. With paths-ignore: at least one
    # changed file must not be ignored. Either way, no changed file at all means no run.
    return any(
        _passes(event_filter.paths, event_filter.paths_ignore, path) for path in changed_paths
    )


def _push_runs(event_filter: EventFilter, event: Event) -> bool:
    has_branch_filter = (
        event_filter.branches is not None or event_filter.branches_ignore is not None
    )
    has_tag_filter = event_filter.tags is not None or event_filter.tags_ignore is not None
    if event.ref.startswith(BRANCH_PREFIX):
        if has_tag_filter and not has_branch_filter:
            return False  # only tags were asked for
        name = ref_name(event.ref)
        if not _passes(event_filter.branches, event_filter.branches_ignore, name):
            return False
        return _paths_pass(event_filter, event.changed_paths)
    if event.ref.startswith(TAG_PREFIX):
        if has_branch_filter and not has_tag_filter:
            return False  # only branches were asked for
        # Path filters are not evaluated for tag pushes.
        return _passes(event_filter.tags, event_filter.tags_ignore, ref_name(event.ref))
    return False  # GitHub's push event only concerns branches and tags


def _pull_request_runs(event_filter: EventFilter, event: Event) -> bool:
    types = event_filter.types if event_filter.types is not None else DEFAULT_PULL_REQUEST_TYPES
    # An unknown action (None) does not exclude, like unknown changed paths.
    if event.action is not None and event.action not in types:
        return False
    # Branch filters apply to the branch the pull request targets; tag filters do not apply.
    if event.base_ref is not None and not _passes(
        event_filter.branches, event_filter.branches_ignore, ref_name(event.base_ref)
    ):
        return False
    return _paths_pass(event_filter, event.changed_paths)


def _normalise_cron(expression: str) -> str:
    return " ".join(expression.split())


def workflow_runs_for(triggers: Triggers, event: Event) -> bool:
    """Does a workflow with these triggers start for this event (GitHub's rules)?

    Invalid filter patterns raise FilterPatternError (the parser should have rejected them).
    """
    if event.name == "push":
        return triggers.push is not None and _push_runs(triggers.push, event)
    if event.name == "pull_request":
        return triggers.pull_request is not None and _pull_request_runs(
            triggers.pull_request, event
        )
    if event.name == "workflow_dispatch":
        return triggers.workflow_dispatch is not None
    if event.name == "schedule":
        if event.cron is None:
            return False
        fired = _normalise_cron(event.cron)
        return any(_normalise_cron(expression) == fired for expression in triggers.schedule)
    return False
