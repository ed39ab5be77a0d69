"""A small, safe Markdown renderer for step summaries (`GITHUB_STEP_SUMMARY`).

Summaries are written by the jobs, that is by whoever can push a commit, and shown to everyone
who can read the run: they must never carry HTML or script into the page. So every character of
the input is HTML-escaped first, and the only markup in the output is the tags made here:
headings, paragraphs, lists, block quotes, code, tables, emphasis, rules, and links whose target
is http(s) (an image becomes a link: loading it would tell a third party who looks at the run).

Written here rather than taken from a library because the needed subset is small and a library
would still need a sanitiser behind it; anything not understood stays visible as escaped text.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable

MAX_CHARS = 1024 * 1024  # GitHub's limit on one step's summary
MAX_DEPTH = 8  # nested quotes and lists deeper than this stay text: bounded recursion

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_HEADING = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?[ \t]*(?:[ \t]#+[ \t]*)?$")
_RULE = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_QUOTE = re.compile(r"^ {0,3}> ?(.*)$")
_ITEM = re.compile(r"^( *)([-*+]|\d{1,9}[.)])(?:[ \t]+(.*)|$)")
_TABLE_SEPARATOR = re.compile(r"^ *\|? *:?-+:? *(?:\| *:?-+:? *)*\|? *$")

_PLACEHOLDER = "\x00{}\x00"
_PLACEHOLDER_BACK = re.compile("\x00(\\d+)\x00")
_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.DOTALL)
# The escaped text: quotes are &quot; / &#x27;, so a URL can never leave its attribute.
# An escaped character ends a URL (`&quot;`, `&lt;`...) except `&amp;`, the escaped `&`.
_URL_CHARS = r"(?:[^()\s\x00&]|&amp;)"
_LINK = re.compile(rf"(!?)\[([^\[\]\x00]*)\]\(\s*({_URL_CHARS}+)(?:\s+&quot;.*?&quot;)?\s*\)")
_BARE_URL = re.compile(rf"(?<![\w/=])https?://{_URL_CHARS}+")
_TRAILING_PUNCTUATION = ".,;:!?"
_SAFE_URL = re.compile(r"^https?://[^\s\x00]+$", re.IGNORECASE)
# The content of a span never holds its delimiter character: each match attempt stops at the
# next delimiter, which keeps rendering linear (a lazy `.+?` is quadratic on "**a **a **a...").
_EMPHASIS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\*\*(?=[^\s*])([^*]+?)(?<=\S)\*\*"), "strong"),
    (re.compile(r"(?<!\w)__(?=[^\s_])([^_]+?)(?<=\S)__(?!\w)"), "strong"),
    (re.compile(r"\*(?=[^\s*])([^*]+?)(?<=\S)\*"), "em"),
    (re.compile(r"(?<!\w)_(?=[^\s_])([^_]+?)(?<=\S)_(?!\w)"), "em"),
    (re.compile(r"~~(?=[^\s~])([^~]+?)(?<=\S)~~"), "del"),
]


def render(text: str) -> str:
    """The summary as HTML: safe to insert into a page as is."""
    if len(text) > MAX_CHARS:
        cut = f"*(cut: the summary is longer than {MAX_CHARS:,} characters)*"
        text = text[:MAX_CHARS] + "\n\n" + cut
    lines = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").split("\n")
    return "\n".join(_blocks(lines, depth=0))


# ---------------------------------------------------------------------------------- blocks


def _blocks(lines: list[str], *, depth: int) -> list[str]:
    out: list[str] = []
    paragraph: list[str] = []

    def close_paragraph() -> None:
        if paragraph:
            out.append(f"<p>{_inline(chr(10).join(line.strip() for line in paragraph))}</p>")
            paragraph.clear()

    index = 0
    while index < len(lines):
        line = lines[index]
        fence = _FENCE.match(line)
        if fence:
            close_paragraph()
            index = _code_block(lines, index, fence.group(1), out)
            continue
        if not line.strip():
            close_paragraph()
            index += 1
            continue
        heading = _HEADING.match(line)
        if heading:
            close_paragraph()
            level = len(heading.group(1))
            out.append(f"<h{level}>{_inline(heading.group(2) or '')}</h{level}>")
            index += 1
            continue
        if _RULE.match(line):
            close_paragraph()
            out.append("<hr>")
            index += 1
            continue
        if "|" in line and index + 1 < len(lines) and _TABLE_SEPARATOR.match(lines[index + 1]):
            close_paragraph()
            index = _table(lines, index, out)
            continue
        if _QUOTE.match(line) and depth < MAX_DEPTH:
            close_paragraph()
            quoted = []
            while index < len(lines) and (match := _QUOTE.match(lines[index])):
                quoted.append(match.group(1))
                index += 1
            inner = "\n".join(_blocks(quoted, depth=depth + 1))
            out.append(f"<blockquote>{inner}</blockquote>")
            continue
        if _ITEM.match(line) and depth < MAX_DEPTH:
            close_paragraph()
            index = _list(lines, index, out, depth=depth)
            continue
        paragraph.append(line)
        index += 1
    close_paragraph()
    return out


def _code_block(lines: list[str], start: int, fence: str, out: list[str]) -> int:
    """A fenced block, verbatim (escaped) up to the closing fence or the end of the text."""
    closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}[ \t]*$")
    body: list[str] = []
    index = start + 1
    while index < len(lines) and not closing.match(lines[index]):
        body.append(lines[index])
        index += 1
    out.append(f"<pre><code>{html.escape(chr(10).join(body))}</code></pre>")
    return index + 1


def _table(lines: list[str], start: int, out: list[str]) -> int:
    header = _cells(lines[start])
    alignments = [_alignment(cell) for cell in _cells(lines[start + 1])]
    width = len(header)
    alignments = (alignments + [""] * width)[:width]

    def row(cells: list[str], tag: str) -> str:
        cells = (cells + [""] * width)[:width]
        return (
            "<tr>"
            + "".join(
                f"<{tag}{align}>{_inline(cell)}</{tag}>"
                for cell, align in zip(cells, alignments, strict=True)
            )
            + "</tr>"
        )

    parts = ["<table>", "<thead>", row(header, "th"), "</thead>", "<tbody>"]
    index = start + 2
    while index < len(lines) and lines[index].strip() and "|" in lines[index]:
        parts.append(row(_cells(lines[index]), "td"))
        index += 1
    parts += ["</tbody>", "</table>"]
    out.append("".join(parts))
    return index


def _cells(line: str) -> list[str]:
    line = line.strip()
    if line.startswith("|"):
        line = line[1:]
    if line.endswith("|") and not line.endswith("\\|"):
        line = line[:-1]
    # `\|` is a pipe inside a cell, not a column break.
    return [cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", line)]


def _alignment(cell: str) -> str:
    left, right = cell.startswith(":"), cell.endswith(":")
    if left and right:
        return ' style="text-align: center"'
    if right:
        return ' style="text-align: right"'
    if left:
        return ' style="text-align: left"'
    return ""


def _list(lines: list[str], start: int, out: list[str], *, depth: int) -> int:
    """Consecutive items (nested by indentation) and their continuation lines."""
    first = _ITEM.match(lines[start])
    assert first is not None
    base_indent = len(first.group(1))
    ordered = first.group(2)[0].isdigit()
    tag = "ol" if ordered else "ul"
    items: list[list[str]] = []
    index = start
    while index < len(lines):
        line = lines[index]
        item = _ITEM.match(line)
        if item and len(item.group(1)) <= base_indent + 1:
            if item.group(2)[0].isdigit() != ordered:
                break
            items.append([item.group(3) or ""])
            index += 1
            continue
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() and items and (indent > base_indent or not _starts_block(line)):
            # An indented line (a nested list, or a continuation) belongs to the item above;
            # so does a lazy continuation of its text.
            items[-1].append(line[base_indent + 2 :] if indent > base_indent else line)
            index += 1
            continue
        break
    parts = [f"<{tag}>"]
    for item_lines in items:
        nested = _blocks(item_lines, depth=depth + 1) if len(item_lines) > 1 else None
        if nested is None:
            parts.append(f"<li>{_inline(item_lines[0].strip())}</li>")
        else:
            # A single paragraph stays unwrapped, as in a "tight" Markdown list.
            body = "\n".join(nested)
            if nested and nested[0].startswith("<p>"):
                body = nested[0][3:-4] + "\n" + "\n".join(nested[1:])
            parts.append(f"<li>{body.strip()}</li>")
    parts.append(f"</{tag}>")
    out.append("".join(parts))
    return index


def _starts_block(line: str) -> bool:
    return bool(
        _ITEM.match(line)
        or _HEADING.match(line)
        or _FENCE.match(line)
        or _QUOTE.match(line)
        or _RULE.match(line)
    )


# ---------------------------------------------------------------------------------- inline


def _inline(text: str) -> str:
    """Escape, then turn the Markdown of one block's text into tags."""
    held: list[str] = []

    def hold(markup: str) -> str:
        held.append(markup)
        return _PLACEHOLDER.format(len(held) - 1)

    escaped = html.escape(text, quote=True)
    # Code first: nothing inside a code span is Markdown.
    escaped = _CODE_SPAN.sub(lambda m: hold(f"<code>{m.group(2).strip()}</code>"), escaped)
    escaped = _LINK.sub(lambda m: hold(_link(m, _emphasis)), escaped)
    escaped = _BARE_URL.sub(lambda m: _bare_url(m.group(0), hold), escaped)
    escaped = _emphasis(escaped)
    return _restore(escaped, held)


def _emphasis(escaped: str) -> str:
    for pattern, tag in _EMPHASIS:
        escaped = pattern.sub(lambda m, tag=tag: f"<{tag}>{m.group(1)}</{tag}>", escaped)
    return escaped


def _link(match: re.Match[str], inner: Callable[[str], str]) -> str:
    label, url = match.group(2), match.group(3)
    shown = inner(label) if label else url
    if not _SAFE_URL.match(url):
        return shown  # javascript:, data:, relative paths... the text stays, the link goes
    return _anchor(url, shown)


def _bare_url(url: str, hold: Callable[[str], str]) -> str:
    # The full stop after "see https://example.org." ends the sentence, not the URL.
    trimmed = url.rstrip(_TRAILING_PUNCTUATION)
    if len(trimmed) <= len("https://"):
        return url
    return hold(_anchor(trimmed, trimmed)) + url[len(trimmed) :]


def _anchor(url: str, shown: str) -> str:
    return f'<a href="{url}" rel="nofollow noopener noreferrer">{shown}</a>'


def _restore(text: str, held: list[str]) -> str:
    # Placeholders can nest (a code span inside a link's label): repeat until none is left.
    for _ in range(3):
        if "\x00" not in text:
            break
        text = _PLACEHOLDER_BACK.sub(lambda m: held[int(m.group(1))], text)
    return text.replace("\x00", "")
