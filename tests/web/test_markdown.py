"""The step-summary Markdown renderer: what it renders, and that nothing from the text can
become markup of its own, however the text is written."""

from __future__ import annotations

import re
import time

import pytest

from runs.markdown import MAX_CHARS, render


def test_headings_emphasis_code_lists_quotes_and_rules():
    html = render(
        "# Title\n\nSome **bold**, *em*, _em_, ~~gone~~ and `a <b> c`.\n"
        "snake_case_name stays\n\n- one\n- two\n  - nested\n\n1. first\n2. second\n\n"
        "> quoted\n\n---\n\n```python\nif a < b:\n    print('&')\n```\n"
    )
    assert "<h1>Title</h1>" in html
    assert "<strong>bold</strong>" in html
    assert html.count("<em>em</em>") == 2
    assert "<del>gone</del>" in html
    assert "<code>a &lt;b&gt; c</code>" in html
    assert "snake_case_name stays" in html
    assert "<ul><li>one</li><li>two\n<ul><li>nested</li></ul></li></ul>" in html
    assert "<ol><li>first</li><li>second</li></ol>" in html
    assert "<blockquote><p>quoted</p></blockquote>" in html
    assert "<hr>" in html
    assert "<pre><code>if a &lt; b:\n    print(&#x27;&amp;&#x27;)</code></pre>" in html


def test_tables_with_alignment_and_escaped_pipes():
    html = render("| name | count |\n|:--|--:|\n| a \\| b | **3** |\n| <i>x</i> |\n")
    assert html == (
        "<table><thead><tr>"
        '<th style="text-align: left">name</th><th style="text-align: right">count</th>'
        "</tr></thead><tbody><tr>"
        '<td style="text-align: left">a | b</td>'
        '<td style="text-align: right"><strong>3</strong></td>'
        "</tr><tr>"
        '<td style="text-align: left">&lt;i&gt;x&lt;/i&gt;</td><td style="text-align: right"></td>'
        "</tr></tbody></table>"
    )


@pytest.mark.parametrize(
    ("text", "link"),
    [
        ("[docs](https://example.org/a?b=1&c=2)", '<a href="https://example.org/a?b=1&amp;c=2"'),
        ("see https://example.org/x.", '<a href="https://example.org/x" '),
        ("![chart](http://example.org/c.png)", '<a href="http://example.org/c.png"'),
    ],
)
def test_http_links_are_links(text, link):
    html = render(text)
    assert link in html
    assert 'rel="nofollow noopener noreferrer"' in html
    assert "<img" not in html  # an image would tell a third party who looks at the run


@pytest.mark.parametrize(
    "text",
    [
        "<script>alert(1)</script>",
        '<img src=x onerror="alert(1)">',
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt:alert`1`)",
        "[x](data:text/html;base64,PHNjcmlwdD4=)",
        '[x](https://example.org/" onmouseover="alert(1))',
        "`</code><script>alert(1)</script>`",
        "**<svg onload=alert(1)>**",
        "| <script> | x |\n|---|---|\n| <b onclick=y> | z |",
        "```\n</pre><script>x</script>\n```",
        "> <iframe src=//evil>",
        "# <style>*{display:none}</style>",
        "https://example.org/<script>",
        '"><svg/onload=alert(1)>',
    ],
)
def test_nothing_in_the_text_becomes_markup(text):
    html = render(text)
    for dangerous in ("<script", "<img", "<svg", "<iframe", "<style"):
        assert dangerous not in html.lower()
    assert 'href="javascript' not in html.lower()
    assert 'href="data' not in html.lower()
    # Every tag in the output is one the renderer makes, with only the attributes it sets:
    # an "onload=" left in the output is text between tags, shown, never run.
    for tag in re.findall(r"<([^>]*)>", html):
        name = tag.lstrip("/").split()[0] if tag.strip("/") else ""
        assert name in {
            "h1", "h2", "h3", "h4", "h5", "h6", "p", "ul", "ol", "li", "blockquote", "pre",
            "code", "table", "thead", "tbody", "tr", "th", "td", "strong", "em", "del", "a",
            "hr",
        }, tag  # fmt: skip
        if name == "a" and not tag.startswith("/"):
            assert re.fullmatch(r'a href="https?://[^"]*" rel="nofollow noopener noreferrer"', tag)


@pytest.mark.parametrize(
    "text",
    [
        "**a " * 50_000,
        "*a " * 50_000,
        "_a " * 50_000,
        "~~a " * 50_000,
        "[" * 100_000,
        "`a ``b " * 30_000,
        "https://" + "." * 100_000 + "x",
        " https://a" + "!" * 100_000,
        "> " * 100_000,
        "- " * 100_000,
        "| a " * 30_000 + "\n|---|\n" + "| b " * 30_000,
    ],
)
def test_rendering_stays_linear_on_hostile_text(text):
    start = time.monotonic()
    render(text)
    assert time.monotonic() - start < 2  # quadratic patterns take minutes on these


def test_a_summary_over_the_limit_is_cut_with_a_note():
    html = render("a" * (MAX_CHARS + 10))
    assert "cut: the summary is longer than" in html
    assert html.count("a") < MAX_CHARS + 200
