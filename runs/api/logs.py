"""Reading a job's log from its stored chunks: a page of lines by offset, or all of it as text.

A chunk holds consecutive lines (`offset` = lines before it), one JSON array per line:
`[timestamp, stream, text]` or `[timestamp, stream, text, properties]`. Line number n (1-based,
as in `#L123`) is line offset n - 1. Pages are cut exactly at the requested offset, whatever the
chunk boundaries, and stop before a gap (a chunk not committed yet), so a reader that continues
from `next_offset` never skips or repeats a line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from asgiref.sync import sync_to_async

from runs.models import LogChunk

RAW_BATCH_CHUNKS = 200
_RAW_MARKERS = {
    "group": "##[group]",
    "endgroup": "##[endgroup]",
    "error": "##[error]",
    "warning": "##[warning]",
    "notice": "##[notice]",
}


@dataclass(frozen=True, slots=True)
class LogPage:
    offset: int
    lines: list[dict[str, Any]]
    next_offset: int
    total: int  # lines stored so far


def read_page(job_id: int, *, offset: int, limit: int) -> LogPage:
    """Up to `limit` lines from line offset `offset` (0-based)."""
    end = offset + limit
    last = (
        LogChunk.objects.filter(job_id=job_id)
        .order_by("-offset")
        .values_list("offset", "line_count")
        .first()
    )
    total = last[0] + last[1] if last else 0
    start_chunk = (
        LogChunk.objects.filter(job_id=job_id, offset__lte=offset)
        .order_by("-offset")
        .values_list("offset", flat=True)
        .first()
    )
    chunks = LogChunk.objects.filter(
        job_id=job_id, offset__gte=start_chunk or 0, offset__lt=end
    ).order_by("offset", "sequence")
    lines: list[dict[str, Any]] = []
    position = offset  # the next line wanted
    for chunk in chunks.only("offset", "line_count", "step_index", "text"):
        if chunk.offset > position:
            break  # a gap: the chunk before this one is not visible yet
        for index, raw in enumerate(_split(chunk.text)):
            number = chunk.offset + index
            if number < position:
                continue
            if number >= end:
                break
            lines.append(line_dict(number + 1, raw, chunk.step_index))
            position = number + 1
        if position >= end:
            break
    return LogPage(offset=offset, lines=lines, next_offset=position, total=max(total, position))


def line_dict(number: int, raw: str, step_index: int | None) -> dict[str, Any]:
    ts, stream, text, properties = parse_line(raw)
    line: dict[str, Any] = {
        "n": number,
        "ts": ts,
        "stream": stream,
        "text": text,
        "step": step_index,
    }
    if properties:
        line["properties"] = properties
    return line


def parse_line(raw: str) -> tuple[str | None, str, str, dict[str, Any] | None]:
    """(ISO timestamp, stream, text, properties) of a stored line; a line that does not parse
    is shown as it is stored rather than lost, so numbering stays right."""
    try:
        value = json.loads(raw)
    except ValueError:
        return None, "system", raw, None
    if not isinstance(value, list) or len(value) < 3:
        return None, "system", raw, None
    ts, stream, text = value[0], value[1], value[2]
    properties = value[3] if len(value) > 3 and isinstance(value[3], dict) else None
    return _iso_timestamp(ts), str(stream), text if isinstance(text, str) else str(text), properties


def raw_text(job_id: int) -> Iterator[str]:
    """The whole log as text, GitHub's raw log format: `timestamp text`, with `##[group]` and
    friends marking groups and annotations. Read in batches of chunks, never all at once."""
    after = -1
    while True:
        batch = _raw_batch(job_id, after)
        if not batch:
            return
        after = batch[-1][0]
        for _, text in batch:
            yield text


async def raw_text_async(job_id: int) -> AsyncIterator[str]:
    """`raw_text` for the ASGI server, which would otherwise read a synchronous iterator whole
    into memory before sending it."""
    after = -1
    while True:
        batch = await sync_to_async(_raw_batch)(job_id, after)
        if not batch:
            return
        after = batch[-1][0]
        for _, text in batch:
            yield text


def _raw_batch(job_id: int, after_sequence: int) -> list[tuple[int, str]]:
    chunks = (
        LogChunk.objects.filter(job_id=job_id, sequence__gt=after_sequence)
        .order_by("sequence")
        .values_list("sequence", "text")[:RAW_BATCH_CHUNKS]
    )
    return [
        (sequence, "".join(_raw_line(raw) for raw in _split(text))) for sequence, text in chunks
    ]


def _raw_line(raw: str) -> str:
    ts, stream, text, _ = parse_line(raw)
    return f"{ts or '-'} {_RAW_MARKERS.get(stream, '')}{text}\n"


def _split(text: str) -> list[str]:
    # Only "\n" separates lines: JSON escapes it inside strings, but not U+2028 and friends,
    # which str.splitlines() would also split on.
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def _iso_timestamp(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            moment = datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            return None
        return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return None
