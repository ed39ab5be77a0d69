"""The GITHUB_ENV / GITHUB_OUTPUT / GITHUB_PATH parsers."""

from __future__ import annotations

import pytest

from runners.stepfiles import (
    STEP_FILE_NAMES,
    STEP_FILE_VARIABLES,
    StepFileError,
    parse_assignments,
    parse_path_additions,
)


def parse(text: str) -> dict[str, str]:
    return parse_assignments(text, "GITHUB_OUTPUT")


def test_simple_assignments() -> None:
    assert parse("a=1\nb=two words\n") == {"a": "1", "b": "two words"}


def test_value_keeps_equals_signs_and_spaces() -> None:
    assert parse("url=https://x/?a=b&c=d\npadded=  spaced  \n") == {
        "url": "https://x/?a=b&c=d",
        "padded": "  spaced  ",
    }


def test_empty_value_and_empty_text() -> None:
    assert parse("empty=\n") == {"empty": ""}
    assert parse("") == {}
    assert parse("\n\n") == {}


def test_later_assignments_win() -> None:
    assert parse("a=1\na=2\n") == {"a": "2"}


def test_last_line_without_newline() -> None:
    assert parse("a=1\nb=2") == {"a": "1", "b": "2"}


def test_blank_lines_are_ignored() -> None:
    assert parse("\na=1\n\n   \nb=2\n") == {"a": "1", "b": "2"}


def test_crlf_line_endings() -> None:
    assert parse("a=1\r\nb<<EOF\r\nx\r\ny\r\nEOF\r\n") == {"a": "1", "b": "x\ny"}


def test_names_allow_dashes_dots_and_underscores() -> None:
    assert parse("my-output=1\n_x.y=2\n") == {"my-output": "1", "_x.y": "2"}


def test_multiline_heredoc() -> None:
    text = "notes<<EOF\nline 1\n\nline 3\nEOF\nafter=yes\n"
    assert parse(text) == {"notes": "line 1\n\nline 3", "after": "yes"}


def test_heredoc_with_a_random_delimiter() -> None:
    text = 'json<<ghadelimiter_5f1a\n{"a": 1}\nEOF\nghadelimiter_5f1a\n'
    assert parse(text) == {"json": '{"a": 1}\nEOF'}


def test_heredoc_empty_body() -> None:
    assert parse("empty<<EOF\nEOF\n") == {"empty": ""}


def test_heredoc_body_may_contain_assignments_and_heredoc_markers() -> None:
    text = "x<<END\na=b\ny<<EOF\nEND\n"
    assert parse(text) == {"x": "a=b\ny<<EOF"}


def test_heredoc_delimiter_must_match_the_whole_line() -> None:
    text = "x<<END\n END\nEND \nEND\n"
    assert parse(text) == {"x": " END\nEND "}


def test_assignment_whose_value_contains_heredoc_marker() -> None:
    assert parse("a=b<<c\n") == {"a": "b<<c"}


def test_unterminated_heredoc_names_the_line() -> None:
    with pytest.raises(StepFileError) as caught:
        parse("a=1\nnotes<<EOF\nline 1\nline 2\n")
    message = str(caught.value)
    assert "GITHUB_OUTPUT" in message
    assert "notes<<EOF" in message
    assert "line 2" in message  # the line where the heredoc starts: 2
    assert "has no closing line 'EOF'" in message


def test_line_without_equals_is_an_error() -> None:
    with pytest.raises(StepFileError, match=r"GITHUB_ENV: line 2 is not NAME=value"):
        parse_assignments("a=1\njust some text\n", "GITHUB_ENV")


@pytest.mark.parametrize("line", ["=value", "bad name=1", "1abc=x", "a$b=c", " <<EOF"])
def test_invalid_names_are_errors(line: str) -> None:
    with pytest.raises(StepFileError) as caught:
        parse(line + "\n")
    assert "GITHUB_OUTPUT" in str(caught.value)


def test_long_malformed_line_is_shortened_in_the_message() -> None:
    with pytest.raises(StepFileError) as caught:
        parse("x" * 500 + "\n")
    assert len(str(caught.value)) < 200


def test_heredoc_name_is_validated() -> None:
    with pytest.raises(StepFileError, match="not a valid name"):
        parse("bad name<<EOF\nx\nEOF\n")


def test_path_additions_in_order() -> None:
    assert parse_path_additions("/opt/a/bin\n\n  /opt/b/bin  \r\n/opt/c\n") == [
        "/opt/a/bin",
        "/opt/b/bin",
        "/opt/c",
    ]
    assert parse_path_additions("") == []


def test_every_step_file_has_a_github_and_a_cicd_variable() -> None:
    assert set(STEP_FILE_VARIABLES) == set(STEP_FILE_NAMES)
    for names in STEP_FILE_VARIABLES.values():
        assert len(names) == 2
        assert names[0].startswith("GITHUB_") and names[1].startswith("CICD_")
