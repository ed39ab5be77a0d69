"""The workflow corpus: realistic files that must parse and plan, and broken files whose problems
are declared in their own header.

Each file under `corpus/invalid/` starts with comment lines such as

    # expect: 12:15: unsupported action 'foo/bar@v1'

one per problem the parser must report: the exact 1-based line and column, and a case-insensitive
substring of the message. The parser must report exactly those problems, all at once, and nothing
more (no cascades from one mistake).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipelines.errors import Problem, WorkflowError
from pipelines.parser import parse_workflow
from pipelines.plan import build_plan

CORPUS = Path(__file__).parent / "corpus"
VALID = sorted([*CORPUS.glob("valid/*.yml"), *CORPUS.glob("valid/*.yaml")])
INVALID = sorted([*CORPUS.glob("invalid/*.yml"), *CORPUS.glob("invalid/*.yaml")])

EXPECT = re.compile(r"#\s*expect:\s*(?P<line>\d+):(?P<column>\d+):\s*(?P<message>.+?)\s*$")

# The documented cap on the size of a workflow file.
SIZE_LIMIT = 512 * 1024


def _expectations(text: str) -> list[tuple[int, int, str]]:
    """The `# expect:` lines of the leading comment block."""
    found = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        match = EXPECT.match(line)
        if match:
            found.append((int(match["line"]), int(match["column"]), match["message"]))
    return found


def _describe(problems: list[Problem]) -> str:
    return "\n".join(f"  {p.line}:{p.column}: {p.message}" for p in problems) or "  (none)"


def _rel(path: Path) -> str:
    return str(path.relative_to(CORPUS))


def test_corpus_is_big_enough() -> None:
    assert len(VALID) >= 28
    assert len(INVALID) >= 28
    assert any(p.suffix == ".yaml" for p in VALID)


@pytest.mark.parametrize("path", VALID, ids=_rel)
def test_valid_workflow_parses_and_plans(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    try:
        workflow = parse_workflow(text, str(path))
    except WorkflowError as exc:
        pytest.fail(f"{_rel(path)} should be valid, got:\n{_describe(exc.problems)}")
    build_plan(workflow)


@pytest.mark.parametrize("path", INVALID, ids=_rel)
def test_invalid_workflow_reports_exactly_the_declared_problems(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    expected = _expectations(text)
    assert expected, f"{_rel(path)} declares no '# expect:' line"

    with pytest.raises(WorkflowError) as info:
        workflow = parse_workflow(text, str(path))
        # Some mistakes (needs cycles, matrix size) may only be found when planning.
        build_plan(workflow)
    problems = list(info.value.problems)
    report = f"{_rel(path)}: expected\n" + "\n".join(
        f"  {line}:{column}: ...{message}..." for line, column, message in expected
    )
    report += f"\ngot\n{_describe(problems)}"

    assert all(p.file == str(path) for p in problems), report
    unmatched = list(problems)
    missing = []
    for line, column, message in expected:
        for problem in unmatched:
            if (
                problem.line == line
                and problem.column == column
                and message.lower() in problem.message.lower()
            ):
                unmatched.remove(problem)
                break
        else:
            missing.append((line, column, message))
    assert not missing, report
    assert not unmatched, report


def _big_workflow(size: int) -> str:
    """A valid workflow padded to about `size` bytes with a long block-scalar script."""
    head = "on: push\njobs:\n  build:\n    runs-on: ubuntu-latest\n    steps:\n      - run: |\n"
    line = "          echo 'padding padding padding padding padding padding padding'\n"
    count = (size - len(head)) // len(line) + 1
    return head + line * count


def test_file_over_the_size_limit_is_rejected_with_one_problem() -> None:
    text = _big_workflow(SIZE_LIMIT + 1024)
    assert len(text.encode()) > SIZE_LIMIT
    with pytest.raises(WorkflowError) as info:
        build_plan(parse_workflow(text, "big.yml"))
    problems = info.value.problems
    assert len(problems) == 1, _describe(problems)
    message = problems[0].message.lower()
    assert "large" in message or "512" in message or "size" in message, message


def test_file_just_under_the_size_limit_is_accepted() -> None:
    text = _big_workflow(SIZE_LIMIT - 16 * 1024)
    assert len(text.encode()) < SIZE_LIMIT
    build_plan(parse_workflow(text, "almost-big.yml"))
