"""Error types of the workflow language.

Everything in `pipelines/` reports user mistakes through these types and nothing else, so callers
(the validate command, the trigger pipeline, the API) can show them without a stack trace.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True, order=True)
class Problem:
    """One mistake in a workflow file, at a 1-based line and column."""

    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class WorkflowError(Exception):
    """A workflow file is invalid; `problems` holds every mistake found in it, in file order."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ExpressionError(ValueError):
    """An expression cannot be parsed or evaluated.

    `position` is the 0-based character offset inside the expression text (the part between
    `${{` and `}}`, or the whole text of an `if:`), so callers can turn it into a file column.
    """

    def __init__(self, message: str, position: int = 0) -> None:
        self.message = message
        self.position = position
        super().__init__(f"{message} (at character {position + 1})")
