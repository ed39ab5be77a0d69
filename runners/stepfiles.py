"""The step files: GITHUB_ENV, GITHUB_OUTPUT, GITHUB_PATH, GITHUB_STEP_SUMMARY (and CICD_*).

A step appends to them; after the step we read them back. GITHUB_ENV and GITHUB_OUTPUT use
GitHub's format: `NAME=value` lines, or the multi-line form

    NAME<<DELIMITER
    line one
    line two
    DELIMITER
"""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")
STEP_FILE_NAMES = ("env", "output", "path", "summary")
# Each step file is exposed under both names; the CICD_ one is ours, the GITHUB_ one lets people
# bring their workflows unchanged.
STEP_FILE_VARIABLES = {
    "env": ("GITHUB_ENV", "CICD_ENV"),
    "output": ("GITHUB_OUTPUT", "CICD_OUTPUT"),
    "path": ("GITHUB_PATH", "CICD_PATH"),
    "summary": ("GITHUB_STEP_SUMMARY", "CICD_STEP_SUMMARY"),
}


class StepFileError(ValueError):
    """A step wrote a step file in a form we cannot read; the message says which line."""


def parse_assignments(text: str, file_variable: str) -> dict[str, str]:
    """Parse the GITHUB_ENV / GITHUB_OUTPUT format. Later assignments win."""
    values: dict[str, str] = {}
    lines = text.replace("\r\n", "\n").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if line.strip() == "":
            continue
        heredoc = re.match(r"^([^=<]+)<<(.+)$", line)
        if heredoc and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = heredoc.group(1).strip(), heredoc.group(2)
            _check_name(name, file_variable, index)
            body: list[str] = []
            while index < len(lines) and lines[index] != delimiter:
                body.append(lines[index])
                index += 1
            if index >= len(lines):
                raise StepFileError(
                    f"{file_variable}: '{name}<<{delimiter}' at line {index - len(body)} "
                    f"has no closing line '{delimiter}'"
                )
            index += 1  # the delimiter line
            values[name] = "\n".join(body)
            continue
        if "=" not in line:
            raise StepFileError(
                f"{file_variable}: line {index} is not NAME=value or NAME<<DELIMITER: {line[:80]!r}"
            )
        name, value = line.split("=", 1)
        _check_name(name, file_variable, index)
        values[name] = value
    return values


def _check_name(name: str, file_variable: str, line_number: int) -> None:
    if not ENV_NAME.match(name):
        raise StepFileError(f"{file_variable}: line {line_number}: {name!r} is not a valid name")


def parse_path_additions(text: str) -> list[str]:
    """GITHUB_PATH: one directory per line, in the order written."""
    return [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
