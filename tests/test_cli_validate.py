"""`cicd validate`: file:line:col: message for every problem, exit status 1 when there are any."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

GOOD = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    steps:
      - run: echo hello
"""

BAD = """\
on: push
jobs:
  build:
    runs-on: ubuntu-latest
    needs: [tset]
    steps:
      - run: echo hello
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: someone/else@v1
"""

PROBLEM_LINE = re.compile(r"^(?P<file>.+):(?P<line>\d+):(?P<col>\d+): (?P<message>.+)$")


def validate(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cicd.cli", "validate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_valid_file_exits_zero(tmp_path):
    path = tmp_path / "ci.yml"
    path.write_text(GOOD)
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert "1 workflow file(s) valid" in result.stderr


def test_every_problem_is_printed_with_its_position(tmp_path):
    path = tmp_path / "ci.yml"
    path.write_text(BAD)
    result = validate(path)
    assert result.returncode == 1
    problems = [PROBLEM_LINE.match(line) for line in result.stdout.splitlines()]
    assert all(problems), result.stdout
    found = {(int(m["line"]), int(m["col"])): m["message"] for m in problems if m}
    assert all(m["file"] == str(path) for m in problems if m)
    assert "did you mean 'test'" in found[(5, 13)]
    assert "unsupported action 'someone/else@v1'" in found[(11, 15)]
    assert "actions/checkout" in found[(11, 15)]
    assert "2 problems in 1 file(s)" in result.stderr


def test_a_repository_directory_prefers_cicd_workflows(tmp_path):
    (tmp_path / ".cicd" / "workflows").mkdir(parents=True)
    (tmp_path / ".github" / "workflows").mkdir(parents=True)
    (tmp_path / ".cicd" / "workflows" / "ci.yml").write_text(GOOD)
    (tmp_path / ".github" / "workflows" / "broken.yml").write_text(BAD)
    assert validate(tmp_path).returncode == 0

    (tmp_path / ".cicd" / "workflows" / "ci.yml").unlink()
    fallback = validate(tmp_path)
    assert fallback.returncode == 1
    assert "broken.yml:5:13:" in fallback.stdout


def test_several_files_report_all_problems_and_fail(tmp_path):
    good, bad = tmp_path / "good.yml", tmp_path / "bad.yaml"
    good.write_text(GOOD)
    bad.write_text("on: push\njobs: {}\n\t\n")
    result = validate(good, bad)
    assert result.returncode == 1
    assert result.stdout.startswith(f"{bad}:")
    assert str(good) not in result.stdout


def test_missing_path_and_bad_encoding(tmp_path):
    missing = validate(tmp_path / "nope.yml")
    assert missing.returncode == 2
    assert "no such file or directory" in missing.stderr

    latin = tmp_path / "latin.yml"
    latin.write_bytes("on: push\nname: caf\xe9\n".encode("latin-1"))
    result = validate(latin)
    assert result.returncode == 1
    assert f"{latin}:1:1: the file is not valid UTF-8" in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
