"""Trigger matching: GitHub's filter pattern cheat sheet, filter lists, and workflow_runs_for."""

from __future__ import annotations

import itertools
import re
import time

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from pipelines.triggers import (
    DispatchInput,
    Event,
    EventFilter,
    FilterPatternError,
    Triggers,
    filter_matches,
    pattern_matches,
    ref_name,
    validate_pattern,
    workflow_runs_for,
)

# ---------------------------------------------------------------------------------------------
# The cheat sheet, row by row ("Filter pattern cheat sheet" in GitHub's workflow syntax docs)

BRANCH_AND_TAG_ROWS = [
    (["feature/*"], "feature/my-branch"),
    (["feature/*"], "feature/your-branch"),
    (["feature/**"], "feature/beta-a/my-branch"),
    (["feature/**"], "feature/your-branch"),
    (["feature/**"], "feature/mona/the/octocat"),
    (["main", "releases/mona-the-octocat"], "main"),
    (["main", "releases/mona-the-octocat"], "releases/mona-the-octocat"),
    (["*"], "main"),
    (["*"], "releases"),
    (["**"], "all/the/branches"),
    (["**"], "every/tag"),
    (["*feature"], "mona-feature"),
    (["*feature"], "feature"),
    (["*feature"], "ver-10-feature"),
    (["v2*"], "v2"),
    (["v2*"], "v2.0"),
    (["v2*"], "v2.9"),
    (["v[12].[0-9]+.[0-9]+"], "v1.10.1"),
    (["v[12].[0-9]+.[0-9]+"], "v2.0.0"),
]

PATH_ROWS = [
    (["*"], "README.md"),
    (["*"], "server.rb"),
    (["*.jsx?"], "page.js"),
    (["*.jsx?"], "page.jsx"),
    (["**"], "all/the/files.md"),
    (["*.js"], "app.js"),
    (["*.js"], "index.js"),
    (["**.js"], "index.js"),
    (["**.js"], "js/index.js"),
    (["**.js"], "src/js/app.js"),
    (["docs/*"], "docs/README.md"),
    (["docs/*"], "docs/file.txt"),
    (["docs/**"], "docs/README.md"),
    (["docs/**"], "docs/mona/octocat.txt"),
    (["docs/**/*.md"], "docs/README.md"),
    (["docs/**/*.md"], "docs/mona/hello-world.md"),
    (["docs/**/*.md"], "docs/a/markdown/file.md"),
    (["**/docs/**"], "docs/hello.md"),
    (["**/docs/**"], "dir/docs/my-file.txt"),
    (["**/docs/**"], "space/docs/plan/space.doc"),
    (["**/README.md"], "README.md"),
    (["**/README.md"], "js/README.md"),
    (["**/*src/**"], "a/src/app.js"),
    (["**/*src/**"], "my-src/code/js/app.js"),
    (["**/*-post.md"], "my-post.md"),
    (["**/*-post.md"], "path/their-post.md"),
    (["**/migrate-*.sql"], "migrate-10909.sql"),
    (["**/migrate-*.sql"], "db/migrate-v1.0.sql"),
    (["**/migrate-*.sql"], "db/sept/migrate-v1.sql"),
    (["*.md", "!README.md"], "hello.md"),
    (["*.md", "!README.md", "README*"], "hello.md"),
    (["*.md", "!README.md", "README*"], "README.md"),
    (["*.md", "!README.md", "README*"], "README.doc"),
]

# What the rows' descriptions say must NOT match ("does not match slash", "Does not match", ...).
CHEAT_SHEET_NON_MATCHES = [
    (["feature/*"], "feature/beta-a/my-branch"),
    (["*"], "releases/mona-the-octocat"),
    (["v2*"], "v1.0"),
    (["v[12].[0-9]+.[0-9]+"], "v3.0.0"),
    (["v[12].[0-9]+.[0-9]+"], "v1.0"),
    (["*.js"], "js/index.js"),
    (["*.jsx?"], "page.jsxx"),
    (["docs/*"], "docs/mona/octocat.txt"),
    (["docs/**"], "src/docs/a.md"),
    (["**/*-post.md"], "post.md"),
    (["*.md", "!README.md"], "README.md"),
    (["*.md", "!README.md"], "docs/hello.md"),
]


@pytest.mark.parametrize(("patterns", "value"), BRANCH_AND_TAG_ROWS + PATH_ROWS)
def test_cheat_sheet_example_matches(patterns: list[str], value: str) -> None:
    assert filter_matches(patterns, value)


@pytest.mark.parametrize(("patterns", "value"), CHEAT_SHEET_NON_MATCHES)
def test_cheat_sheet_example_non_matches(patterns: list[str], value: str) -> None:
    assert not filter_matches(patterns, value)


# ---------------------------------------------------------------------------------------------
# Pattern syntax


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        # '*' stops at '/', '**' does not
        ("a*", "a", True),
        ("a*", "abc", True),
        ("a*", "a/b", False),
        ("a**", "a/b/c", True),
        ("**", "", True),
        ("*", "", True),
        # '**/' also matches no directory at all
        ("**/x", "x", True),
        ("**/x", "a/b/x", True),
        ("**/x", "ax", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("a/**", "a/", True),
        ("a/**", "a", False),
        # '?' and '+' apply to the preceding character
        ("colou?r", "color", True),
        ("colou?r", "colour", True),
        ("colou?r", "colouur", False),
        ("v1+", "v1", True),
        ("v1+", "v111", True),
        ("v1+", "v", False),
        ("Octoc?t", "Octoct", True),
        # composed quantifiers: zero or more
        ("ab+?c", "ac", True),
        ("ab?+c", "abbbc", True),
        ("ab??c", "abbc", False),
        ("ab++c", "ac", False),
        # a quantifier with nothing before it is an ordinary character
        ("?x", "?x", True),
        ("+x", "+x", True),
        ("+x", "x", False),
        # after a wildcard a quantifier changes nothing
        ("a*+", "abc", True),
        ("a**?", "a/b", True),
        # classes and ranges
        ("[CB]at", "Cat", True),
        ("[CB]at", "Bat", True),
        ("[CB]at", "Rat", False),
        ("[1-2]00", "100", True),
        ("[1-2]00", "200", True),
        ("[1-2]00", "300", False),
        ("[0-9a-z]", "7", True),
        ("[0-9a-z]", "q", True),
        ("[0-9a-z]", "Q", False),
        ("[A-Z]+", "ABC", True),
        ("[-_]x", "-x", True),
        ("[a-]x", "-x", True),
        # '.' and other regex metacharacters are literal
        ("v1.0", "v1x0", False),
        ("a|b", "a|b", True),
        ("(x)", "(x)", True),
        ("^$", "^$", True),
        # escapes
        ("\\*", "*", True),
        ("\\*", "x", False),
        ("release/v1\\+", "release/v1+", True),
        ("release/v1\\+", "release/v11", False),
        ("a\\?", "a?", True),
        ("\\[x\\]", "[x]", True),
        ("escape\\\\backslash", "escape\\backslash", True),
        ("[\\]]", "]", True),
        # whole-value matching, case-sensitive
        ("main", "main2", False),
        ("main", "xmain", False),
        ("Main", "main", False),
        # a leading '!' passed to pattern_matches is an ordinary character
        ("!file", "!file", True),
    ],
)
def test_pattern_syntax(pattern: str, value: str, expected: bool) -> None:
    assert pattern_matches(pattern, value) is expected


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty filter pattern"),
        ("!", "'!' alone"),
        ("[abc", "unbalanced '\\['"),
        ("release/[0-9", "unbalanced '\\['"),
        ("[]", "empty brackets"),
        ("[]abc", "empty brackets"),
        ("abc\\", "ends with"),
        ("[z-a]", "invalid range 'z-a'"),
        ("[a-Z]", "invalid range 'a-Z'"),
        ("[!-~]", "invalid range '!-~'"),
        ("[0-z]", "invalid range '0-z'"),
        ("![x", "unbalanced"),
    ],
)
def test_invalid_patterns_are_rejected_with_a_clear_message(pattern: str, message: str) -> None:
    with pytest.raises(FilterPatternError, match=message):
        validate_pattern(pattern)


def test_non_string_pattern_is_rejected() -> None:
    with pytest.raises(FilterPatternError, match="must be a string"):
        validate_pattern(3)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "pattern", ["main", "!main", "**", "'*'", "v[12].[0-9]+", "\\!file", "[a-zA-Z0-9_.]"]
)
def test_valid_patterns_pass_validation(pattern: str) -> None:
    validate_pattern(pattern)


def test_invalid_pattern_in_a_filter_list_raises() -> None:
    with pytest.raises(FilterPatternError):
        filter_matches(["main", "[oops"], "main")
    with pytest.raises(FilterPatternError):
        pattern_matches("", "main")


def test_filter_pattern_error_is_a_value_error() -> None:
    assert issubclass(FilterPatternError, ValueError)


def test_pathological_patterns_run_in_linear_time() -> None:
    # A backtracking regex would need astronomically many steps here.
    value = "a" * 5000
    started = time.perf_counter()
    assert not pattern_matches("**a**a**a**a**a**a**a**a**b", value)
    assert not pattern_matches("*a*a*a*a*a*a*a*a*a*a*b", value)
    assert not pattern_matches("a+a+a+a+a+a+a+a+b", value)
    assert pattern_matches("**a**a**a**a**a**a**a**a", value)
    assert time.perf_counter() - started < 5.0


# ---------------------------------------------------------------------------------------------
# Filter lists


def test_last_matching_pattern_wins() -> None:
    patterns = ["releases/**", "!releases/**-alpha", "releases/keep-alpha"]
    assert filter_matches(patterns, "releases/1.0")
    assert not filter_matches(patterns, "releases/1.0-alpha")
    assert filter_matches(patterns, "releases/keep-alpha")
    assert not filter_matches(patterns, "main")


def test_only_negative_patterns_never_include() -> None:
    assert not filter_matches(["!main"], "feature")
    assert not filter_matches(["!main"], "main")
    assert not filter_matches(["!a", "!b"], "c")


def test_empty_filter_list_includes_nothing() -> None:
    assert not filter_matches([], "main")


def test_escaped_bang_is_a_positive_pattern() -> None:
    assert filter_matches(["\\!file"], "!file")
    assert not filter_matches(["\\!file"], "file")


def test_filter_list_must_not_be_a_single_string() -> None:
    with pytest.raises(TypeError):
        filter_matches("main", "main")


def test_filter_matches_accepts_tuples() -> None:
    assert filter_matches(("main",), "main")


# ---------------------------------------------------------------------------------------------
# ref_name


@pytest.mark.parametrize(
    ("ref", "name"),
    [
        ("refs/heads/main", "main"),
        ("refs/heads/feature/x", "feature/x"),
        ("refs/tags/v1", "v1"),
        ("refs/tags/v1.2.3", "v1.2.3"),
        ("refs/pull/3/merge", "3/merge"),
        ("refs/notes/commits", "refs/notes/commits"),
        ("main", "main"),
        ("refs/heads/refs/heads/x", "refs/heads/x"),
    ],
)
def test_ref_name(ref: str, name: str) -> None:
    assert ref_name(ref) == name


# ---------------------------------------------------------------------------------------------
# workflow_runs_for: push


def push(ref: str, changed_paths: tuple[str, ...] | None = None) -> Event:
    return Event(name="push", ref=ref, changed_paths=changed_paths)


def on_push(**filters: tuple[str, ...]) -> Triggers:
    return Triggers(push=EventFilter(**filters))


def test_push_without_filters_runs_for_branches_and_tags() -> None:
    triggers = on_push()
    assert workflow_runs_for(triggers, push("refs/heads/main"))
    assert workflow_runs_for(triggers, push("refs/heads/feature/deep/name"))
    assert workflow_runs_for(triggers, push("refs/tags/v1.0"))


def test_push_not_configured_never_runs() -> None:
    assert not workflow_runs_for(Triggers(), push("refs/heads/main"))
    assert not workflow_runs_for(Triggers(pull_request=EventFilter()), push("refs/heads/main"))


def test_push_branches_filter() -> None:
    triggers = on_push(branches=("main", "releases/**"))
    assert workflow_runs_for(triggers, push("refs/heads/main"))
    assert workflow_runs_for(triggers, push("refs/heads/releases/1/2"))
    assert not workflow_runs_for(triggers, push("refs/heads/feature"))


def test_push_branches_ignore_filter() -> None:
    triggers = on_push(branches_ignore=("mona/octocat", "releases/**-alpha"))
    assert workflow_runs_for(triggers, push("refs/heads/main"))
    assert not workflow_runs_for(triggers, push("refs/heads/mona/octocat"))
    assert not workflow_runs_for(triggers, push("refs/heads/releases/beta/3-alpha"))


def test_push_ignore_list_with_negation_re_includes() -> None:
    triggers = on_push(branches_ignore=("releases/**", "!releases/keep"))
    assert workflow_runs_for(triggers, push("refs/heads/releases/keep"))
    assert not workflow_runs_for(triggers, push("refs/heads/releases/other"))


def test_push_docs_example_including_and_excluding_branches() -> None:
    triggers = on_push(branches=("releases/**", "!releases/**-alpha"))
    assert workflow_runs_for(triggers, push("refs/heads/releases/10"))
    assert workflow_runs_for(triggers, push("refs/heads/releases/beta/mona"))
    assert not workflow_runs_for(triggers, push("refs/heads/releases/10-alpha"))
    assert not workflow_runs_for(triggers, push("refs/heads/releases/beta/3-alpha"))


def test_push_only_tag_filters_means_no_branch_pushes() -> None:
    for triggers in (on_push(tags=("v*",)), on_push(tags_ignore=("v*",))):
        assert not workflow_runs_for(triggers, push("refs/heads/main"))
    assert workflow_runs_for(on_push(tags=("v*",)), push("refs/tags/v1"))
    assert not workflow_runs_for(on_push(tags=("v*",)), push("refs/tags/x1"))
    assert workflow_runs_for(on_push(tags_ignore=("v*",)), push("refs/tags/x1"))
    assert not workflow_runs_for(on_push(tags_ignore=("v*",)), push("refs/tags/v1"))


def test_push_only_branch_filters_means_no_tag_pushes() -> None:
    for triggers in (on_push(branches=("**",)), on_push(branches_ignore=("x",))):
        assert not workflow_runs_for(triggers, push("refs/tags/v1"))
        assert workflow_runs_for(triggers, push("refs/heads/main"))


def test_push_branch_and_tag_filters_together() -> None:
    triggers = on_push(branches=("main",), tags=("v[0-9]+",))
    assert workflow_runs_for(triggers, push("refs/heads/main"))
    assert not workflow_runs_for(triggers, push("refs/heads/dev"))
    assert workflow_runs_for(triggers, push("refs/tags/v10"))
    assert not workflow_runs_for(triggers, push("refs/tags/beta"))


def test_push_tag_filter_uses_the_tag_name_not_the_branch_filter() -> None:
    triggers = on_push(branches=("v1",), tags=("release",))
    assert not workflow_runs_for(triggers, push("refs/tags/v1"))
    assert not workflow_runs_for(triggers, push("refs/heads/release"))


def test_push_to_a_ref_that_is_neither_branch_nor_tag_does_not_run() -> None:
    assert not workflow_runs_for(on_push(), push("refs/notes/commits"))
    assert not workflow_runs_for(on_push(), push("main"))


def test_push_paths_filter() -> None:
    triggers = on_push(paths=("**.js",))
    assert workflow_runs_for(triggers, push("refs/heads/main", ("README.md", "src/app.js")))
    assert not workflow_runs_for(triggers, push("refs/heads/main", ("README.md",)))


def test_push_paths_filter_with_negation_order() -> None:
    triggers = on_push(paths=("sub-project/**", "!sub-project/docs/**"))
    assert workflow_runs_for(triggers, push("refs/heads/main", ("sub-project/app.py",)))
    assert not workflow_runs_for(triggers, push("refs/heads/main", ("sub-project/docs/x.md",)))
    assert workflow_runs_for(
        triggers, push("refs/heads/main", ("sub-project/docs/x.md", "sub-project/a.py"))
    )


def test_push_paths_ignore_runs_unless_all_changed_paths_are_ignored() -> None:
    triggers = on_push(paths_ignore=("docs/**",))
    assert not workflow_runs_for(triggers, push("refs/heads/main", ("docs/a.md", "docs/b/c.md")))
    assert workflow_runs_for(triggers, push("refs/heads/main", ("docs/a.md", "src/x.py")))


def test_push_unknown_changed_paths_do_not_exclude() -> None:
    assert workflow_runs_for(on_push(paths=("src/**",)), push("refs/heads/main", None))
    assert workflow_runs_for(on_push(paths_ignore=("**",)), push("refs/heads/main", None))


def test_push_no_changed_paths_with_path_filter_does_not_run() -> None:
    # GitHub: "If there are no files changed, the workflow will not run."
    assert not workflow_runs_for(on_push(paths=("**",)), push("refs/heads/main", ()))
    assert not workflow_runs_for(on_push(paths_ignore=("docs/**",)), push("refs/heads/main", ()))
    # Without a path filter the changed files do not matter.
    assert workflow_runs_for(on_push(), push("refs/heads/main", ()))


def test_push_paths_are_not_evaluated_for_tags() -> None:
    triggers = on_push(paths=("src/**",))
    assert workflow_runs_for(triggers, push("refs/tags/v1", ("README.md",)))
    assert workflow_runs_for(triggers, push("refs/tags/v1", ()))
    assert workflow_runs_for(on_push(tags=("v*",), paths=("src/**",)), push("refs/tags/v1", ()))


def test_push_branches_and_paths_must_both_be_satisfied() -> None:
    triggers = on_push(branches=("main",), paths=("src/**",))
    assert workflow_runs_for(triggers, push("refs/heads/main", ("src/a.py",)))
    assert not workflow_runs_for(triggers, push("refs/heads/main", ("README.md",)))
    assert not workflow_runs_for(triggers, push("refs/heads/dev", ("src/a.py",)))


def test_push_with_both_include_and_ignore_lists_applies_both() -> None:
    # GitHub rejects this combination; if it reaches us anyway both lists must agree.
    triggers = on_push(branches=("releases/**",), branches_ignore=("releases/old",))
    assert workflow_runs_for(triggers, push("refs/heads/releases/new"))
    assert not workflow_runs_for(triggers, push("refs/heads/releases/old"))


# ---------------------------------------------------------------------------------------------
# workflow_runs_for: pull_request


def pull_request(
    base: str | None = "refs/heads/main",
    action: str | None = "opened",
    changed_paths: tuple[str, ...] | None = None,
    head: str = "refs/heads/feature",
) -> Event:
    return Event(
        name="pull_request",
        ref=head,
        base_ref=base,
        action=action,
        changed_paths=changed_paths,
    )


def on_pull_request(**filters: tuple[str, ...]) -> Triggers:
    return Triggers(pull_request=EventFilter(**filters))


def test_pull_request_default_types() -> None:
    triggers = on_pull_request()
    for action in ("opened", "synchronize", "reopened"):
        assert workflow_runs_for(triggers, pull_request(action=action))
    for action in ("closed", "labeled", "edited"):
        assert not workflow_runs_for(triggers, pull_request(action=action))


def test_pull_request_explicit_types() -> None:
    triggers = on_pull_request(types=("closed", "labeled"))
    assert workflow_runs_for(triggers, pull_request(action="closed"))
    assert not workflow_runs_for(triggers, pull_request(action="opened"))


def test_pull_request_unknown_action_does_not_exclude() -> None:
    assert workflow_runs_for(on_pull_request(), pull_request(action=None))


def test_pull_request_branch_filters_apply_to_the_base_branch() -> None:
    triggers = on_pull_request(branches=("main", "releases/**"))
    assert workflow_runs_for(triggers, pull_request(base="refs/heads/main"))
    assert workflow_runs_for(triggers, pull_request(base="refs/heads/releases/2"))
    assert not workflow_runs_for(triggers, pull_request(base="refs/heads/dev"))
    # The head branch is irrelevant.
    assert not workflow_runs_for(
        triggers, pull_request(base="refs/heads/dev", head="refs/heads/main")
    )


def test_pull_request_base_ref_given_as_a_short_name() -> None:
    assert workflow_runs_for(on_pull_request(branches=("main",)), pull_request(base="main"))


def test_pull_request_branches_ignore() -> None:
    triggers = on_pull_request(branches_ignore=("mona/octocat",))
    assert not workflow_runs_for(triggers, pull_request(base="refs/heads/mona/octocat"))
    assert workflow_runs_for(triggers, pull_request(base="refs/heads/main"))


def test_pull_request_tag_filters_are_irrelevant() -> None:
    triggers = on_pull_request(tags=("v*",))
    assert workflow_runs_for(triggers, pull_request(base="refs/heads/main"))


def test_pull_request_unknown_base_does_not_exclude() -> None:
    assert workflow_runs_for(on_pull_request(branches=("main",)), pull_request(base=None))


def test_pull_request_paths() -> None:
    triggers = on_pull_request(paths=("src/**",))
    assert workflow_runs_for(triggers, pull_request(changed_paths=("src/a.py",)))
    assert not workflow_runs_for(triggers, pull_request(changed_paths=("README.md",)))
    assert not workflow_runs_for(triggers, pull_request(changed_paths=()))
    assert workflow_runs_for(triggers, pull_request(changed_paths=None))
    ignoring = on_pull_request(paths_ignore=("docs/**",))
    assert not workflow_runs_for(ignoring, pull_request(changed_paths=("docs/a.md",)))
    assert workflow_runs_for(ignoring, pull_request(changed_paths=("docs/a.md", "x")))


def test_pull_request_types_branches_and_paths_combine() -> None:
    triggers = on_pull_request(types=("opened",), branches=("main",), paths=("src/**",))
    assert workflow_runs_for(triggers, pull_request(changed_paths=("src/x",)))
    assert not workflow_runs_for(
        triggers, pull_request(action="reopened", changed_paths=("src/x",))
    )
    assert not workflow_runs_for(
        triggers, pull_request(base="refs/heads/dev", changed_paths=("src/x",))
    )
    assert not workflow_runs_for(triggers, pull_request(changed_paths=("doc",)))


def test_pull_request_not_configured_never_runs() -> None:
    assert not workflow_runs_for(on_push(), pull_request())


# ---------------------------------------------------------------------------------------------
# workflow_runs_for: workflow_dispatch, schedule, unknown events


def test_workflow_dispatch() -> None:
    event = Event(name="workflow_dispatch", ref="refs/heads/main")
    assert not workflow_runs_for(Triggers(), event)
    assert workflow_runs_for(Triggers(workflow_dispatch=()), event)
    inputs = (DispatchInput(name="target", required=True),)
    assert workflow_runs_for(Triggers(workflow_dispatch=inputs), event)


def test_schedule_matches_the_cron_expression_exactly_after_whitespace_normalisation() -> None:
    triggers = Triggers(schedule=("30 5 * * 1,3", "0  0 * * *"))
    fired = Event(name="schedule", ref="refs/heads/main", cron="30 5 * * 1,3")
    assert workflow_runs_for(triggers, fired)
    spaced = Event(name="schedule", ref="refs/heads/main", cron=" 0 0  *\t* * ")
    assert workflow_runs_for(triggers, spaced)
    other = Event(name="schedule", ref="refs/heads/main", cron="30 5 * * 1")
    assert not workflow_runs_for(triggers, other)
    assert not workflow_runs_for(triggers, Event(name="schedule", ref="refs/heads/main"))
    assert not workflow_runs_for(Triggers(), fired)


@pytest.mark.parametrize("name", ["release", "issues", "PUSH", "", "pull_request_target"])
def test_unknown_events_never_run(name: str) -> None:
    everything = Triggers(
        push=EventFilter(),
        pull_request=EventFilter(),
        workflow_dispatch=(),
        schedule=("* * * * *",),
    )
    event = Event(name=name, ref="refs/heads/main", action="opened", cron="* * * * *")
    assert not workflow_runs_for(everything, event)


# ---------------------------------------------------------------------------------------------
# Properties

# Pieces of valid patterns, each with the regular expression it means, so that the NFA can be
# checked against Python's regex engine on short values.
_LITERALS = "ab/.-"
_PIECES = st.one_of(
    st.sampled_from(_LITERALS).map(lambda c: (c, re.escape(c))),
    st.sampled_from(_LITERALS).map(lambda c: (c + "?", re.escape(c) + "?")),
    st.sampled_from(_LITERALS).map(lambda c: (c + "+", re.escape(c) + "+")),
    st.sampled_from(["*", "+", "?", "[", "]", "!", "\\"]).map(lambda c: ("\\" + c, re.escape(c))),
    st.just(("[ab]", "[ab]")),
    st.just(("[a-b]+", "[ab]+")),
    st.just(("*", "[^/]*")),
    st.just(("**", ".*")),
    st.just(("**/", "(?:.*/)?")),
)


def _is_wildcard(piece: str) -> bool:
    return piece.startswith("*")


@st.composite
def _patterns_with_regex(draw: st.DrawFn) -> tuple[str, str]:
    pieces = draw(st.lists(_PIECES, min_size=1, max_size=6))
    for (before, _), (after, _) in itertools.pairwise(pieces):
        # Adjacent pieces must not fuse into a different token ('*' '*' -> '**',
        # '**' '/' -> '**/') or change what a quantifier applies to.
        assume(not (_is_wildcard(before) and (_is_wildcard(after) or after[0] in "/?+")))
    # A leading '?'/'+' is literal, which the piece regexes do not model: keep them out.
    assume(pieces[0][0][0] not in "?+")
    return "".join(p for p, _ in pieces), "".join(r for _, r in pieces)


@settings(max_examples=500, deadline=None)
@given(_patterns_with_regex(), st.text(alphabet="ab/.-*+?[]!\\", max_size=8))
def test_pattern_matches_agrees_with_the_equivalent_regex(
    pattern_and_regex: tuple[str, str], value: str
) -> None:
    pattern, regex = pattern_and_regex
    validate_pattern(pattern)
    assert pattern_matches(pattern, value) == bool(re.fullmatch(regex, value, re.DOTALL))


@settings(max_examples=300, deadline=None)
@given(st.lists(_patterns_with_regex(), min_size=1, max_size=4), st.lists(st.booleans()), st.text())
def test_filter_matches_never_raises_for_valid_patterns(
    patterns: list[tuple[str, str]], negations: list[bool], value: str
) -> None:
    entries = [
        ("!" if index < len(negations) and negations[index] else "") + pattern
        for index, (pattern, _) in enumerate(patterns)
    ]
    for entry in entries:
        validate_pattern(entry)
    result = filter_matches(entries, value)
    assert isinstance(result, bool)
    if all(entry.startswith("!") for entry in entries):
        assert result is False


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=1))
def test_escaping_every_character_matches_exactly_that_text(text: str) -> None:
    pattern = "".join("\\" + char for char in text)
    validate_pattern(pattern)
    assert pattern_matches(pattern, text)
    assert not pattern_matches(pattern, text + "x")


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_star_and_globstar_on_arbitrary_text(value: str) -> None:
    assert pattern_matches("**", value)
    assert pattern_matches("*", value) == ("/" not in value)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=20))
def test_validate_pattern_only_ever_raises_filter_pattern_error(pattern: str) -> None:
    try:
        validate_pattern(pattern)
    except FilterPatternError:
        return
    # A pattern that validates can be matched against anything.
    assert isinstance(pattern_matches(pattern.removeprefix("!"), "some/value"), bool)
