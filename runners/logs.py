"""The step log pipeline: raw stdout/stderr bytes in, masked and structured log events out.

Every executor feeds a step's output through a `StepOutput` before anything leaves the executor,
so nothing stored or sent (database, live log, annotations) ever holds an unmasked secret.

- `SecretMasker` holds the secret values of one job (shared by all of its steps, so a value
  registered with `::add-mask::` in step 1 is masked in step 2) and replaces them with `***`.
- `StepOutput` decodes the bytes of one step (UTF-8, undecodable bytes replaced, NULs stripped),
  splits them into lines per stream, runs GitHub's workflow commands (`::add-mask::`,
  `::group::`, `::error::`, `::stop-commands::` ...), masks every line, and enforces the per-step
  output cap.

Pure Python: no Django, no Docker, no I/O.
"""

from __future__ import annotations

import base64
import codecs
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import quote, quote_plus

__all__ = [
    "MASK",
    "MIN_DERIVED_LENGTH",
    "Annotation",
    "GroupEnd",
    "GroupStart",
    "LogEvent",
    "LogLine",
    "SecretMasker",
    "StepOutput",
]

MASK = "***"

MIN_DERIVED_LENGTH = 4
"""Shortest derived form (a line of a multi-line secret, a trimmed, base64 or URL-encoded form)
the masker registers. Derived forms shorter than this are mostly innocent text (`}` in a JSON
key file, `YQ==`), so masking them would destroy logs while hiding almost nothing. The value
itself is always registered, whatever its length."""

DEFAULT_CAP_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_LINE_BYTES = 64 * 1024


# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class LogLine:
    """One line (or one piece of an over-long line) of a step's output, already masked.

    `stream` is "stdout", "stderr", or "system" for lines the pipeline itself writes (the
    truncation notice). `timestamp` is the clock time at which the line was read complete.
    """

    timestamp: float
    stream: str
    text: str


@dataclass(frozen=True, slots=True)
class GroupStart:
    """`::group::TITLE`: the following lines belong to a collapsible group."""

    title: str


@dataclass(frozen=True, slots=True)
class GroupEnd:
    """`::endgroup::`: closes the innermost open group."""


@dataclass(frozen=True, slots=True)
class Annotation:
    """`::error …::`, `::warning …::` or `::notice …::`, with its (masked) properties."""

    level: str
    message: str
    file: str | None = None
    line: int | None = None
    end_line: int | None = None
    column: int | None = None
    end_column: int | None = None
    title: str | None = None


LogEvent = LogLine | GroupStart | GroupEnd | Annotation


# --------------------------------------------------------------------------------------------
# Secret masking


class SecretMasker:
    """Replaces registered secret values with `***`.

    `add(value)` registers the value and the forms in which a step may print it:

    - each line of a multi-line value (stripped of `\\r`), because output is masked line by line,
      so the value as a whole can never match a single log line;
    - the value and each line with surrounding whitespace trimmed;
    - the standard base64 encoding, and the characters of the base64 encoding at each of the
      three byte alignments that do not depend on neighbouring bytes or padding (as GitHub's
      runner does), so the secret is caught inside a longer base64 blob such as
      `base64("user:" + secret)`;
    - the URL-encoded forms `quote(value, safe="")` and `quote_plus(value)`.

    Minimum length: the value itself is masked whatever its length (a one-character secret is
    masked too, as on GitHub: the author declared it secret, and a leak is worse than an ugly
    log). Empty and whitespace-only values are ignored. Derived forms are registered only when
    they are at least `MIN_DERIVED_LENGTH` (4) characters long, and only derived from lines or
    values of at least that length; so a line of a multi-line secret shorter than 4 characters
    (say the `}` of a JSON key) is not masked on its own.

    Masking costs one regex search per line, whatever the number of secrets: the registered
    strings are compiled into one alternation shaped as a trie, so a position in the text costs
    one walk down the trie instead of one comparison per secret. At a position the longest
    registered string wins, and occurrences that overlap or touch are merged into one `***`, so
    a value that contains (or overlaps) another is hidden completely.

    The regex is rebuilt lazily, on the first `mask` after an `add`. Compiling is the expensive
    part (about 2 µs per character of pattern), so strings added later (`::add-mask::` lines,
    which a step may print by the hundred, each followed by output to mask) are compiled into
    a smaller regex of their own rather than recompiling everything each time; small regexes
    are merged into bigger ones as they grow, binary-counter style, so there are at most
    log2(n) of them and each string is recompiled O(log n) times. Secrets given to the
    constructor form one regex.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._originals: set[str] = set()
        self._strings: set[str] = set()
        # Compiled alternations, each with its strings, largest (oldest) first; plus the strings
        # added since the last compile.
        self._levels: list[tuple[set[str], re.Pattern[str]]] = []
        self._pending: set[str] = set()
        self._max_length = 0
        # Bumped whenever the set of strings grows, so a caller holding match positions knows
        # they are stale.
        self._version = 0
        for secret in secrets:
            self.add(secret)

    @property
    def max_length(self) -> int:
        """Length of the longest registered string (0 when nothing is registered).

        A line cutter that keeps the last `max_length - 1` characters of an unfinished line
        never emits the beginning of a secret whose end has not been read yet.
        """
        return self._max_length

    @property
    def version(self) -> int:
        """Grows every time new strings are registered."""
        return self._version

    def add(self, value: str) -> None:
        """Registers `value` and its derived forms (see the class docstring)."""
        if not isinstance(value, str):
            raise TypeError(f"secret values are str, not {type(value).__name__}")
        if not value or value.isspace() or value in self._originals:
            return
        self._originals.add(value)
        new = _variants(value) - self._strings
        if not new:
            return
        self._strings |= new
        self._pending |= new
        self._max_length = max(self._max_length, *map(len, new))
        self._version += 1

    def mask(self, text: str) -> str:
        """`text` with every occurrence of a registered string replaced by `***`."""
        if not text:
            return text
        spans = self.spans(text)
        if not spans:
            return text
        parts: list[str] = []
        last = 0
        for start, end in spans:
            parts.append(text[last:start])
            parts.append(MASK)
            last = end
        parts.append(text[last:])
        return "".join(parts)

    def spans(self, text: str) -> list[tuple[int, int]]:
        """The sorted, disjoint `(start, end)` ranges of `text` that `mask` replaces."""
        levels = self._compiled_levels()
        if len(levels) == 1:
            return _occurrences(levels[0][1], text)
        found = [span for _, regex in levels for span in _occurrences(regex, text)]
        if not found:
            return []
        found.sort()
        spans = [found[0]]
        for start, end in found[1:]:
            if start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(spans[-1][1], end))
            else:
                spans.append((start, end))
        return spans

    def _compiled_levels(self) -> list[tuple[set[str], re.Pattern[str]]]:
        if self._pending:
            batch, self._pending = self._pending, set()
            # Fold in the newest regexes while they are not much bigger than the batch, so sizes
            # more than double from one regex to the previous one.
            while self._levels and len(self._levels[-1][0]) <= 2 * len(batch):
                batch |= self._levels.pop()[0]
            self._levels.append((batch, _compile_alternation(batch)))
        return self._levels


def _occurrences(regex: re.Pattern[str], text: str) -> list[tuple[int, int]]:
    """Sorted, disjoint ranges covering every occurrence of the strings of `regex` in `text`."""
    spans: list[tuple[int, int]] = []
    found = regex.search(text)
    while found is not None:
        start, end = found.span()
        # The search gives the longest string at the leftmost position; a string starting inside
        # that match may still run past its end (overlapping secrets), and its tail must not stay
        # visible. Matches are rare, so this per-character loop is cheap.
        pos = start + 1
        while pos < end:
            inner = regex.match(text, pos)
            if inner is not None and inner.end() > end:
                end = inner.end()
            pos += 1
        if spans and start <= spans[-1][1]:
            # Touching occurrences become one `***`: two masks side by side would tell the
            # reader where one secret ends.
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
        found = regex.search(text, end)
    return spans


def _variants(value: str) -> set[str]:
    """Every string to register for the secret `value`."""
    out = {value}
    bases = {value} if len(value) >= MIN_DERIVED_LENGTH else set()
    # How the value reads in our own logs when it holds bytes the decoder replaces or NULs it
    # strips (values from the environment can carry surrogate escapes).
    raw = _utf8(value)
    if raw is not None:
        in_log = raw.decode("utf-8", "replace").replace("\x00", "")
        if in_log != value and in_log.strip():
            out.add(in_log)
    lines = [line.strip("\r") for line in value.split("\n")]
    for candidate in (value.strip(), *lines, *(line.strip() for line in lines)):
        if len(candidate) >= MIN_DERIVED_LENGTH and not candidate.isspace():
            bases.add(candidate)
    for base in bases:
        out.add(base)
        for encoded in _encodings(base):
            if len(encoded) >= MIN_DERIVED_LENGTH:
                out.add(encoded)
    return out


def _utf8(value: str) -> bytes | None:
    try:
        return value.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return None


def _encodings(value: str) -> list[str]:
    """The base64 and URL-encoded forms of `value`."""
    raw = _utf8(value)
    if raw is None:
        return []
    # The whole encoding, padding included: what `printf %s "$SECRET" | base64` prints.
    out = [base64.b64encode(raw).decode("ascii")]
    for shift in range(3):
        # Prefixed by `shift` filler bytes, the value starts at every possible position inside a
        # 3-byte base64 group. Keep only the characters made of the value's bits alone: drop the
        # leading ones that contain filler bits and the trailing one that depends on whatever
        # follows the value (or on padding).
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        first = -(-8 * shift // 6)
        last = 8 * (shift + len(raw)) // 6
        out.append(encoded[first:last])
    out.append(quote(value, safe="", errors="surrogateescape"))
    out.append(quote_plus(value, safe="", errors="surrogateescape"))
    return out


class _TooDeep(Exception):
    pass


# Deepest nesting of groups in a trie regex. Real secret sets nest a few levels; the limit keeps
# this module's recursion and the regex compiler's far from Python's recursion limit.
_MAX_TRIE_DEPTH = 64


def _compile_alternation(strings: set[str]) -> re.Pattern[str]:
    try:
        return re.compile(_trie_pattern(sorted(strings), 0, 0))
    except _TooDeep:
        pass
    # Pathological sets (hundreds of values, each a prefix of the next) nest too deep. Split
    # them by length into sets small enough that their tries cannot nest that deep, and try
    # the sets longest first: a match from an earlier set is at least as long as any from a
    # later one, so the longest string still wins.
    by_length = sorted(strings, key=len, reverse=True)
    step = _MAX_TRIE_DEPTH // 2
    chunks = [sorted(by_length[i : i + step]) for i in range(0, len(by_length), step)]
    return re.compile("(?:" + "|".join(_trie_pattern(chunk, 0, 0) for chunk in chunks) + ")")


def _trie_pattern(strings: list[str], offset: int, depth: int) -> str:
    """A regex matching exactly `strings` (sorted, distinct, sharing their first `offset`
    characters) with those characters removed, preferring the longest match.

    Strings sharing a first character share one branch, so the regex engine tries at most one
    branch per character instead of every string; runs without a fork become one literal.
    A string ending at `offset` means "may end here": the continuation is an optional group,
    which the engine tries first (greedy), falling back to the shorter match. Each level of
    nesting holds fewer strings than the one above, so a trie of n strings nests at most n deep.
    """
    if depth >= _MAX_TRIE_DEPTH:
        raise _TooDeep
    ends_here = len(strings[0]) == offset
    rest = strings[1:] if ends_here else strings
    branches: list[str] = []
    i = 0
    while i < len(rest):
        first = rest[i][offset]
        j = i + 1
        while j < len(rest) and rest[j][offset] == first:
            j += 1
        if j == i + 1:
            branches.append(re.escape(rest[i][offset:]))
        else:
            # Sorted strings: the prefix common to the first and the last is common to all.
            low, high = rest[i], rest[j - 1]
            common = offset + 1
            while common < len(low) and low[common] == high[common]:
                common += 1
            branches.append(
                re.escape(low[offset:common]) + _trie_pattern(rest[i:j], common, depth + 1)
            )
        i = j
    if not branches:
        return ""
    if len(branches) == 1:
        return f"(?:{branches[0]})?" if ends_here else branches[0]
    body = "(?:" + "|".join(branches) + ")"
    return body + "?" if ends_here else body


# --------------------------------------------------------------------------------------------
# Workflow commands (GitHub's `::name key=value,key=value::message` syntax)

_DATA_ESCAPES = {"%25": "%", "%0D": "\r", "%0A": "\n"}
_PROPERTY_ESCAPES = {**_DATA_ESCAPES, "%3A": ":", "%2C": ","}
_DATA_ESCAPE_RE = re.compile("|".join(_DATA_ESCAPES))
_PROPERTY_ESCAPE_RE = re.compile("|".join(_PROPERTY_ESCAPES))
# The start of an `::add-mask::` line, recognised before the line is complete (see _cut).
_ADD_MASK_START = re.compile(r"\s*::add-mask::", re.IGNORECASE)
_ANNOTATION_LEVELS = frozenset({"error", "warning", "notice"})


def _unescape_data(text: str) -> str:
    # One pass, so `%250A` decodes to `%0A` and not to a newline.
    return _DATA_ESCAPE_RE.sub(lambda m: _DATA_ESCAPES[m.group()], text)


def _unescape_property(text: str) -> str:
    return _PROPERTY_ESCAPE_RE.sub(lambda m: _PROPERTY_ESCAPES[m.group()], text)


def _parse_command(line: str) -> tuple[str, dict[str, str], str] | None:
    """`(name, properties, raw message)` of a workflow command line, or None.

    Like GitHub's runner: leading whitespace is allowed, the command section runs to the next
    `::`, its name to the first space, properties are `key=value` pairs separated by commas
    (pairs without `=` or with an empty value are ignored), and everything after the second
    `::` is the message. Property values are unescaped here; the message is returned raw.
    """
    text = line.lstrip()
    if not text.startswith("::"):
        return None
    end = text.find("::", 2)
    if end < 0:
        return None
    name, _, properties_text = text[2:end].partition(" ")
    if not name:
        return None
    properties: dict[str, str] = {}
    for item in properties_text.split(","):
        key, sep, value = item.partition("=")
        key = key.strip()
        if sep and key and value:
            properties[key.lower()] = _unescape_property(value)
    return name, properties, text[end + 2 :]


def _int_or_none(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value.strip())
    except ValueError:
        return None


def _human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / (1024 * 1024):.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


# --------------------------------------------------------------------------------------------
# The per-step pipeline


@dataclass(slots=True)
class _Stream:
    """Decoder and unfinished line of one stream."""

    decoder: codecs.IncrementalDecoder
    parts: list[str] = field(default_factory=list)
    nbytes: int = 0  # UTF-8 size of `parts`
    pieces: int = 0  # pieces of the current line already emitted (it was cut before it ended)
    masking: bool = False  # the current line is an over-long `::add-mask::`; its pieces are secret
    prefix_left: int = 0  # characters of that line's `::add-mask::` not yet emitted


class StepOutput:
    """Turns one step's raw output into masked, timestamped `LogEvent`s.

    `feed(stream, data)` takes whatever the executor read from the step's stdout or stderr (any
    chunking: a line, a multi-byte character or a secret may be split across calls) and returns
    the events completed by it; `close()` flushes unfinished lines when the step ends.

    - Decoding: UTF-8 per stream with an incremental decoder; undecodable bytes become U+FFFD,
      NULs are dropped. `\\n` and `\\r\\n` end a line (the `\\r` is dropped); a lone `\\r`
      stays in the text. All lines completed by one `feed` get the clock time of that call.
    - Masking: every line is masked as a whole before it is emitted, so a secret split across
      reads is still caught.
    - Long lines: a line longer than `max_line_bytes` (UTF-8) is emitted in pieces of at most
      that size, cut where no secret occurrence straddles the cut. While the line is unfinished
      the last `masker.max_length - 1` characters are held back, so the beginning of a secret
      whose end has not arrived is never emitted. A line cut before it ended is not a workflow
      command; an over-long `::add-mask::` line registers each of its pieces as a secret.
    - Workflow commands, on a line of their own: `::add-mask::`, `::group::`, `::endgroup::`,
      `::error::`, `::warning::`, `::notice::`, `::debug::` and `::stop-commands::TOKEN` …
      `::TOKEN::`. The command line itself is emitted as a (masked) `LogLine`, followed by its
      structured event; `::add-mask::` registers its value first, so the echoed line shows
      `***`. Strings in structured events are masked too.
    - Cap: once the masked lines kept would exceed `cap_bytes` (UTF-8 bytes of line texts), one
      "system" `LogLine` says so and every later event is dropped. The rest of the output is
      still read (so the step runs to completion) and still scanned for `::add-mask::` and
      `::stop-commands::`, so masking stays correct for the rest of the job.

    `feed` never raises on any input bytes. `feed` and `close` may be called from two threads
    (one reading stdout, one stderr): they take a lock, which also serialises the use of the
    masker (itself not thread-safe; the steps of a job run one after another).
    """

    def __init__(
        self,
        masker: SecretMasker,
        *,
        cap_bytes: int = DEFAULT_CAP_BYTES,
        clock: Callable[[], float] = time.time,
        max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    ) -> None:
        if max_line_bytes < 4:
            # A piece must be able to hold any one character (up to 4 UTF-8 bytes).
            raise ValueError("max_line_bytes must be at least 4")
        self._masker = masker
        self._cap = cap_bytes
        self._clock = clock
        self._max_line_bytes = max_line_bytes
        self._streams: dict[str, _Stream] = {}
        self._stop_token: str | None = None
        self._closed = False
        self._lock = threading.Lock()
        self.truncated = False
        self.bytes_kept = 0

    @property
    def masker(self) -> SecretMasker:
        return self._masker

    def feed(self, stream: str, data: bytes) -> list[LogEvent]:
        """Events completed by `data`, read from `stream` ("stdout" or "stderr")."""
        with self._lock:
            state = self._stream(stream)
            return self._consume(stream, state, state.decoder.decode(data), final=False)

    def close(self) -> list[LogEvent]:
        """Events for whatever is left: incomplete characters (as U+FFFD) and unfinished lines."""
        with self._lock:
            if self._closed:
                return []
            self._closed = True
            events: list[LogEvent] = []
            for name, state in self._streams.items():
                text = state.decoder.decode(b"", final=True)
                events += self._consume(name, state, text, final=True)
            return events

    # -- internals ------------------------------------------------------------------------------

    def _stream(self, name: str) -> _Stream:
        state = self._streams.get(name)
        if state is None:
            decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
            state = self._streams[name] = _Stream(decoder)
        return state

    def _consume(self, stream: str, state: _Stream, text: str, *, final: bool) -> list[LogEvent]:
        if "\x00" in text:
            text = text.replace("\x00", "")
        events: list[LogEvent] = []
        if not text and not (final and (state.parts or state.pieces)):
            return events
        now = self._clock()
        segments = text.split("\n")
        for segment in segments[:-1]:
            if state.parts:
                segment = "".join(state.parts) + segment
            self._finish_line(stream, state, segment, now, events)
        tail = segments[-1]
        if tail:
            state.parts.append(tail)
            state.nbytes += len(tail.encode("utf-8"))
        if final:
            rest = "".join(state.parts)
            # A stream that ends in a bare "\r" (a progress bar's last redraw) has no line left.
            if rest not in ("", "\r") or state.pieces:
                self._finish_line(stream, state, rest, now, events)
        elif state.nbytes > self._max_line_bytes + 4 * self._hold():
            # Only cut once a full piece fits in front of the held-back tail (4 bytes per
            # character at most), so pieces come out full-sized even when fed byte by byte.
            buffered = "".join(state.parts)
            state.parts.clear()
            rest = buffered[self._cut(stream, state, buffered, now, events, complete=False) :]
            state.parts.append(rest)
            state.nbytes = len(rest.encode("utf-8"))
        return events

    def _hold(self) -> int:
        return max(1, self._masker.max_length - 1)

    def _finish_line(
        self, stream: str, state: _Stream, line: str, now: float, events: list[LogEvent]
    ) -> None:
        """Handles a line that has ended (`line` is what was not yet emitted of it)."""
        if line.endswith("\r"):
            line = line[:-1]
        follow: LogEvent | None = None
        if state.pieces == 0:
            if "::" in line:
                command = _parse_command(line)
                if command is not None:
                    follow = self._run_command(*command)
        elif state.masking:
            self._add_mask_fragment(state, line)
        if state.pieces == 0 or line:
            start = self._cut(stream, state, line, now, events, complete=True)
            kept = self._emit(stream, line[start:], now, events)
            if follow is not None and kept:
                events.append(follow)
        state.parts.clear()
        state.nbytes = 0
        state.pieces = 0
        state.masking = False
        state.prefix_left = 0

    def _cut(
        self,
        stream: str,
        state: _Stream,
        text: str,
        now: float,
        events: list[LogEvent],
        *,
        complete: bool,
    ) -> int:
        """Emits leading pieces of `text` while it is too long; returns where the rest starts.

        For a complete line the rest is at most `max_line_bytes`; for an unfinished one it also
        keeps the held-back tail.
        """
        limit = self._max_line_bytes
        if len(text) * 4 <= limit:
            return 0  # cannot be too long: skip encoding it
        remaining = len(text.encode("utf-8"))
        pos = 0
        if not complete and state.pieces == 0 and self._stop_token is None:
            # An `::add-mask::` line too long to wait for: see _add_mask_fragment. Matched on the
            # whole buffer, as the first piece may end inside the `::add-mask::` itself.
            head = _ADD_MASK_START.match(text)
            if head is not None:
                state.masking = True
                state.prefix_left = head.end()
        spans: list[tuple[int, int]] = []
        spans_version = -1
        index = 0
        while True:
            hold = 0 if complete else self._hold()
            if remaining <= limit + 4 * hold:
                return pos
            if not self.truncated and spans_version != self._masker.version:
                # Occurrences of secrets in the whole buffer: a cut must not split one.
                spans_version = self._masker.version
                spans = [(s + pos, e + pos) for s, e in self._masker.spans(text[pos:])]
                index = 0
            window = text[pos : pos + limit]
            encoded = window.encode("utf-8")
            fits = (
                len(window)
                if len(encoded) <= limit
                else len(encoded[:limit].decode("utf-8", "ignore"))
            )
            cut = min(pos + fits, len(text) - hold)
            while index < len(spans) and spans[index][1] <= cut:
                index += 1
            if index < len(spans) and spans[index][0] < cut:
                start, end = spans[index]
                # Cut before the secret; if it starts the piece, the piece is the secret.
                cut = start if start > pos else end
            if state.masking and not complete:
                # Keep each `%XX` escape whole within a piece, so each piece can be unescaped.
                escape = text.rfind("%", max(pos + 1, cut - 2), cut)
                if escape >= 0:
                    cut = escape
            if cut <= pos:
                return pos
            piece = text[pos:cut]
            if state.masking and not complete:
                self._add_mask_fragment(state, piece)
            self._emit(stream, piece, now, events)
            state.pieces += 1
            remaining -= len(piece.encode("utf-8"))
            pos = cut

    def _add_mask_fragment(self, state: _Stream, fragment: str) -> None:
        """Registers a piece of the value of an `::add-mask::` line cut before it ended.

        The value cannot be read whole, so each piece of it becomes a secret of its own, as
        echoed (escaped) and unescaped, line by line and whatever its length: neither the echoed
        line nor later output shows any of it. Only over-long values (more than
        `max_line_bytes`, still unfinished when read) take this path.
        """
        # The command itself (`::add-mask::`) is not part of the value.
        skip = min(state.prefix_left, len(fragment))
        state.prefix_left -= skip
        fragment = fragment[skip:]
        if not fragment or fragment.isspace():
            return
        self._masker.add(fragment)
        for line in _unescape_data(fragment).split("\n"):
            line = line.strip("\r")
            if line and not line.isspace():
                self._masker.add(line)

    def _emit(self, stream: str, text: str, now: float, events: list[LogEvent]) -> bool:
        """Masks and emits one line, unless the cap is reached; True when it was kept."""
        if self.truncated:
            return False
        masked = self._masker.mask(text)
        size = len(masked.encode("utf-8"))
        if self.bytes_kept + size > self._cap:
            self.truncated = True
            notice = (
                f"[cicd] output truncated: this step wrote more than {_human_size(self._cap)}; "
                "the rest of its output is not kept"
            )
            events.append(LogLine(now, "system", notice))
            return False
        self.bytes_kept += size
        events.append(LogLine(now, stream, masked))
        return True

    def _run_command(self, name: str, properties: dict[str, str], message: str) -> LogEvent | None:
        """Applies a workflow command; returns the structured event to emit after its line."""
        if self._stop_token is not None:
            # Commands are off until `::TOKEN::`, so output that cannot be trusted (a file
            # being printed) cannot inject commands.
            if name == self._stop_token:
                self._stop_token = None
            return None
        command = name.lower()
        if command == "add-mask":
            value = _unescape_data(message)
            self._masker.add(value)
            if message != value:
                # The echoed line shows the escaped form.
                self._masker.add(message)
            return None
        if command == "stop-commands":
            token = _unescape_data(message)
            if token.strip():
                self._stop_token = token
            return None
        if self.truncated:
            return None  # would be dropped anyway; skip the masking work
        mask = self._masker.mask
        if command == "group":
            return GroupStart(mask(_unescape_data(message)))
        if command == "endgroup":
            return GroupEnd()
        if command in _ANNOTATION_LEVELS:
            file = properties.get("file")
            title = properties.get("title")
            return Annotation(
                level=command,
                message=mask(_unescape_data(message)),
                file=None if file is None else mask(file),
                line=_int_or_none(properties.get("line")),
                end_line=_int_or_none(properties.get("endline")),
                column=_int_or_none(properties.get("col")),
                end_column=_int_or_none(properties.get("endcolumn")),
                title=None if title is None else mask(title),
            )
        return None  # `::debug::` and unknown commands are plain log lines
