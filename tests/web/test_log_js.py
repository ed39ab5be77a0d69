"""The job page's log code (static/js/log.js) run in Node: resuming without gap or duplicate,
ANSI colours on escaped text, groups that fold. The browser tests drive the page itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

LOG_JS = Path(__file__).resolve().parents[2] / "static" / "js" / "log.js"
NODE = shutil.which("node") or shutil.which("nodejs")

pytestmark = pytest.mark.skipif(NODE is None, reason="needs Node.js to run the page's script")


def run_js(body: str):
    """Run `body` with `log` = the module's exports; it prints one JSON value."""
    script = f"const log = require({json.dumps(str(LOG_JS))});\n{body}"
    result = subprocess.run(
        [NODE, "-e", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_batches_that_overlap_after_a_reconnect_add_only_the_new_lines():
    result = run_js(
        """
        const buffer = new log.LogBuffer();
        const line = (n) => [n, "stdout", "line " + n, 0];
        const results = [];
        results.push(buffer.add(0, [line(0), line(1), line(2)]));
        // The server resends from an older offset: lines 1 and 2 are already here.
        results.push(buffer.add(1, [line(1), line(2), line(3), line(4)]));
        // A batch after a gap is refused, so the page subscribes again from its length.
        results.push(buffer.add(9, [line(9)]));
        results.push(buffer.add(5, [line(5)]));
        console.log(JSON.stringify({results, texts: buffer.texts}));
        """
    )
    assert result["results"] == [3, 2, -1, 1]
    assert result["texts"] == [f"line {n}" for n in range(6)]


def test_ansi_colours_become_classes_on_escaped_text():
    html = run_js(
        r"""
        console.log(JSON.stringify([
          log.ansiToHtml("\x1b[31mred <b>\x1b[0m plain & \x1b[1;92mbold bright\x1b[39m bold"),
          log.ansiToHtml("\x1b[44mbg\x1b[49m \x1b[38;5;3myellow\x1b[K gone \x1b]0;title\x07x"),
          log.ansiToHtml("<script>alert(1)</script>", "script"),
        ]));
        """
    )
    assert html[0] == (
        '<span class="fg-1">red &lt;b&gt;</span> plain &amp; '
        '<span class="fg-10 bold">bold bright</span><span class="bold"> bold</span>'
    )
    assert html[1] == (
        '<span class="bg-4">bg</span> <span class="fg-3">yellow</span>'
        '<span class="fg-3"> gone </span><span class="fg-3">x</span>'
    )
    assert html[2] == ("&lt;<mark>script</mark>&gt;alert(1)&lt;/<mark>script</mark>&gt;")


def test_groups_fold_and_a_hidden_line_is_revealed_by_a_link():
    result = run_js(
        """
        const buffer = new log.LogBuffer();
        const rows = new log.RowMap(buffer);
        buffer.add(0, [
          [0, "system", "set up", null],
          [1, "group", "Install", 0],
          [2, "stdout", "inside", 0],
          [3, "endgroup", "", 0],
          [4, "error", "broke", 0, {file: "a.py", line: 3}],
          [5, "group", "Unclosed", 0],
          [6, "stdout", "in unclosed", 0],
          [7, "stdout", "next step", 1],
        ]);
        rows.appendFrom(0);
        const open = rows.rows.slice();
        rows.toggle(1);
        rows.toggle(5);
        const folded = rows.rows.slice();
        rows.reveal(2);
        console.log(JSON.stringify({
          open, folded, revealed: rows.rows, annotations: buffer.annotations,
          shown: buffer.shownText(4), stepStarts: [...buffer.stepStarts.entries()],
          rowOfHidden: (() => { rows.toggle(1); return rows.rowOf(2); })(),
        }));
        """
    )
    assert result["open"] == [0, 1, 2, 4, 5, 6, 7]  # the endgroup line is never a row
    # The unclosed group ends with its step: line 7 belongs to the next step, not the group.
    assert result["folded"] == [0, 1, 4, 5, 7]
    assert result["revealed"] == [0, 1, 2, 4, 5, 7]
    assert result["annotations"] == [4]
    assert result["shown"] == "a.py:3: broke"
    assert result["stepStarts"] == [[0, 1], [1, 7]]
    assert result["rowOfHidden"] == 1  # the group's header row stands for its hidden lines


def test_a_million_lines_are_held_and_searched_quickly():
    result = run_js(
        """
        const buffer = new log.LogBuffer();
        const rows = new log.RowMap(buffer);
        const start = Date.now();
        for (let offset = 0; offset < 1000000; offset += 1000) {
          const batch = [];
          for (let i = 0; i < 1000; i++) {
            batch.push([0, "stdout", "\\x1b[32mline\\x1b[0m number " + (offset + i), 0]);
          }
          buffer.add(offset, batch);
          rows.appendFrom(offset);
        }
        const loaded = Date.now() - start;
        const searchStart = Date.now();
        let found = [];
        for (let i = 0; i < buffer.length; i++) {
          if (buffer.matches(i, "number 777777")) found.push(i);
        }
        console.log(JSON.stringify({
          length: buffer.length, rows: rows.rows.length, found, loaded,
          searched: Date.now() - searchStart, row: rows.rowOf(999999),
        }));
        """
    )
    assert result["length"] == result["rows"] == 1_000_000
    assert result["found"] == [777777]
    assert result["row"] == 999_999
    # Generous bounds: this is about being linear, not about this machine's speed.
    assert result["loaded"] < 10_000
    assert result["searched"] < 10_000
