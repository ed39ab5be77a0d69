"""Caches (`actions/cache`, `actions/cache/restore`, `actions/cache/save`) on the executor side.

The executor knows nothing of where caches are kept: it talks to a `CacheStore` (the
orchestration layer gives one backed by the database and blob storage, scoped to the run's git
ref; tests and `cicd exec` give the in-memory one here). This module holds the rest of the
executor's side: the three actions, `hashFiles()`, the archive of an entry, and the safe
unpacking of one on the local executor.

Semantics, after GitHub's actions/cache v4:
- Restore looks up `[key, *restore-keys]` for the entry's version: the primary key exactly, else
  for each key in order the newest entry whose key starts with it (`CacheStore.lookup`).
  `cache-hit` is 'true' only for an exact hit of the primary key (`actions/cache/restore` also
  sets `cache-primary-key` and `cache-matched-key`). Bad inputs fail the step (no key, a key
  over 512 characters or with a comma, more than 10 keys, a path outside the workspace and HOME,
  a bad boolean); anything that goes wrong after that (the store, a damaged or hostile entry) is
  a warning and counts as a miss: a cache speeds a build up, it never breaks one. Only
  `fail-on-cache-miss: true` fails the step, when no key matched at all.
- `lookup-only: true` checks that an entry exists without downloading it; as on GitHub it does
  not change what is saved at the end.
- `actions/cache` saves in a post-job phase: after the last step, before the job's container or
  directory goes away, one save per `actions/cache` step that ran, in the reverse order of those
  steps (as GitHub runs post steps). It saves only when the primary key did not hit exactly and
  the job has succeeded so far; `save-always: true` (deprecated on GitHub, where it never worked
  as documented) also saves after a failed or timed-out job, never after a cancel.
  `actions/cache/save` saves at once. A save never fails a job: a path that matches nothing,
  an entry over the store's limit, an entry another job saved first are warnings or notes.
- The version of an entry is GitHub's: sha256 of the `path` lines as written (trimmed, `! x`
  read as `!x`), the compression ("gzip") and a salt, joined by '|'. The same key with other
  paths is another entry. The lines are hashed before `~` is expanded, as GitHub does: on the
  local executor HOME is a per-job directory, so an expanded path would never match again.
- `path` lines are globs (`*`, `?`, `[...]`, `**`, a directory takes everything under it, `!`
  excludes, the last matching line decides: `runners.artifacts.parse_patterns`), relative to the
  workspace, or absolute inside the workspace or HOME; `~` is HOME (/root in a container, the
  job's own home directory on the local executor). Hidden files are included.

Archive format: a gzip'd tar (level 1, deflated on all CPUs in blocks, blocks that do not
compress stored as they are: caches are large, often hold compressed files, and a save sits at
the end of every job, so speed wins over a few percent of size; see `_ParallelGzip`; any gzip
reader unpacks it), members named under one of two root markers, `workspace/<path>` and
`home/<path>`, relative to the workspace and HOME of the job that saved it, so an entry restores
correctly on either executor whatever the absolute paths. Members are directories, regular
files, symbolic links and hard links (named by their target's member name); owners are dropped
and modes kept without set-id bits. Symbolic links are stored as links and never followed, so a
save reads nothing outside the workspace and HOME; a link whose absolute target is inside its own
root is stored relative, so it still points there after a restore elsewhere. An archive with a
member outside the two markers (absolute, `..`, another top directory), a hard link outside
them, or a device or fifo is refused.

Restoring never writes outside the workspace and HOME: on Docker the entry goes into the
container through the engine (nothing lands on the host; links resolve inside the container's
own file system, and one leading nowhere there fails the restore); on the local executor, where the
worker itself writes, every directory is opened relative to its parent without following links
(`_SafeTree`), so a link a step left in the way is replaced, never written through.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import hashlib
import io
import os
import posixpath
import re
import shutil
import stat
import struct
import tarfile
import tempfile
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from runners.artifacts import (
    ArtifactError,
    Pattern,
    human_size,
    parse_patterns,
    search_roots,
    select_files,
)

CACHE = "actions/cache"
CACHE_RESTORE = "actions/cache/restore"
CACHE_SAVE = "actions/cache/save"
CACHE_ACTIONS = (CACHE, CACHE_RESTORE, CACHE_SAVE)

# The inputs of each action (their action.yml); others get a warning, as on GitHub.
INPUTS = {
    CACHE: (
        "path",
        "key",
        "restore-keys",
        "upload-chunk-size",
        "enableCrossOsArchive",
        "fail-on-cache-miss",
        "lookup-only",
        "save-always",
    ),
    CACHE_RESTORE: (
        "path",
        "key",
        "restore-keys",
        "enableCrossOsArchive",
        "fail-on-cache-miss",
        "lookup-only",
    ),
    CACHE_SAVE: ("path", "key", "upload-chunk-size", "enableCrossOsArchive"),
}

MAX_KEY_LENGTH = 512
MAX_KEYS = 10
COMPRESSION = "gzip"
VERSION_SALT = "1.0"
COMPRESS_LEVEL = 1
WORKSPACE_ROOT = "workspace"
HOME_ROOT = "home"
COPY_CHUNK = 1024 * 1024
MAX_OPEN_DIRECTORIES = 256
# Compression: blocks deflated in parallel (see _ParallelGzip); a block whose sample does not
# shrink below SAMPLE_RATIO is stored as is (compressed tarballs, wheels, crates, zips).
BLOCK_BYTES = 1024 * 1024
SAMPLE_BYTES = 64 * 1024
SAMPLE_RATIO = 0.9
WINDOW_BYTES = 32 * 1024

NO_PATHS_WARNING = (
    "Path Validation Error: Path(s) specified in the action for caching do(es) not exist, "
    "hence no cache is being saved."
)

# One file-system entry on its way into or out of a cache archive: its header, named by its
# absolute path as the job sees it (hard links: `linkname` too), and for regular files (and hard
# links, when the reader can) a function opening its content, valid until the next entry.
TreeEntry = tuple[tarfile.TarInfo, Callable[[], BinaryIO | None] | None]


class CacheError(Exception):
    """A cache step the user can fix (no key, a key too long, an entry over the size limit...)."""


@dataclass(frozen=True, slots=True)
class CacheHit:
    key: str  # the key of the entry found (the primary key, or one a prefix matched)
    exact: bool  # found by the primary key itself: GitHub's `cache-hit` output is 'true'
    size: int  # bytes of the stored archive
    id: str = ""


class CacheStore(Protocol):
    """The caches one job may restore and where it saves (its run's scope)."""

    max_entry_bytes: int  # the largest archive accepted for one entry

    def lookup(self, keys: Sequence[str], version: str) -> CacheHit | None:
        """The entry to restore for `keys` (the primary key, then the restore-keys) among the
        entries of this `version` the job may read, or None.

        As on GitHub, in each readable scope (the run's own ref first, then the default
        branch): an entry whose key equals the primary key; else, for each key in order, the
        newest entry whose key starts with it."""
        ...

    def open(self, hit: CacheHit) -> BinaryIO:
        """The archive of a found entry (the caller closes it); marks the entry used."""
        ...

    def save(self, key: str, version: str, archive: BinaryIO, size: int) -> bool:
        """Keep `archive` (read to its end; `size` bytes) as entry `key` of `version` in this
        job's scope. False, keeping nothing new, when such an entry already exists (another job
        saved it first: entries are immutable). CacheError when over `max_entry_bytes`."""
        ...

    def record(self, outcome: str, *, seconds: float, size: int) -> None:
        """Count a restore ("hit", "partial", "miss") or a save ("save") for the metrics."""
        ...


class CacheBackend(Protocol):
    """What the cache steps need of an executor backend (see runners.job.Backend)."""

    workspace: str  # as steps see it
    home: str  # HOME as steps see it: `~` in paths

    def workspace_view(self, roots: Sequence[str]) -> AbstractContextManager[Path]: ...

    def read_tree(self, paths: Sequence[str]) -> Generator[TreeEntry, None, None]: ...

    def write_tree(self, entries: Iterable[TreeEntry]) -> None: ...


# ------------------------------------------------------------------------------ inputs


def input_lines(text: str) -> list[str]:
    """A multi-line input as GitHub's actions read one: trimmed lines, empty ones dropped."""
    lines = (line.strip() for line in (text or "").split("\n"))
    return [re.sub(r"^!\s+", "!", line) for line in lines if line]


def cache_version(path_lines: Sequence[str]) -> str:
    """GitHub's cache version: entries of other paths (or another compression) never mix."""
    components = [*path_lines, COMPRESSION, VERSION_SALT]
    return hashlib.sha256("|".join(components).encode()).hexdigest()


def check_keys(keys: Sequence[str]) -> None:
    if len(keys) > MAX_KEYS:
        raise CacheError(f"Key Validation Error: Keys are limited to a maximum of {MAX_KEYS}.")
    for key in keys:
        if len(key) > MAX_KEY_LENGTH:
            raise CacheError(
                f"Key Validation Error: {key} cannot be larger than {MAX_KEY_LENGTH} characters."
            )
        if "," in key:
            raise CacheError(f"Key Validation Error: {key} cannot contain commas.")


@dataclass(frozen=True, slots=True)
class CachePaths:
    lines: tuple[str, ...]  # the `path` input as read: what the version hashes
    roots: Mapping[str, str]  # root marker -> that root as steps see it
    patterns: Mapping[str, list[Pattern]]  # root marker -> its patterns (roots with an include)


def parse_cache_paths(text: str, *, workspace: str, home: str) -> CachePaths:
    """The `path` input: each line placed under the workspace or HOME; CacheError for a line
    outside both."""
    lines = input_lines(text)
    if not lines:
        raise CacheError("Input required and not supplied: path")
    roots = {WORKSPACE_ROOT: workspace.rstrip("/") or "/", HOME_ROOT: home.rstrip("/") or "/"}
    grouped: dict[str, list[str]] = {WORKSPACE_ROOT: [], HOME_ROOT: []}
    for line in lines:
        if line.startswith("#"):
            continue
        exclude = line.startswith("!")
        body = line[1:].strip() if exclude else line
        if body == "~" or body.startswith("~/"):
            body = roots[HOME_ROOT] + body[1:]
        marker, relative = _place(body, roots, line)
        grouped[marker].append(("!" if exclude else "") + relative)
    patterns: dict[str, list[Pattern]] = {}
    for marker, items in grouped.items():
        if any(not item.startswith("!") for item in items):
            try:
                patterns[marker] = parse_patterns("\n".join(items), roots[marker])
            except ArtifactError as error:
                raise CacheError(str(error)) from None
    return CachePaths(tuple(lines), roots, patterns)


def _place(body: str, roots: Mapping[str, str], line: str) -> tuple[str, str]:
    """(root marker, path relative to that root) of one `path` line."""
    if body.startswith("/"):
        normal = posixpath.normpath(body)
        # The longest root first, should one ever hold the other.
        for marker, root in sorted(roots.items(), key=lambda item: -len(item[1])):
            if normal == root or normal.startswith(root.rstrip("/") + "/"):
                return marker, normal[len(root) :].lstrip("/") or "."
    else:
        normal = posixpath.normpath(body)
        if normal != ".." and not normal.startswith("../"):
            return WORKSPACE_ROOT, normal
    raise CacheError(
        f"path {line!r} is outside the workspace ({roots[WORKSPACE_ROOT]}) and HOME "
        f"({roots[HOME_ROOT]}): a cache can only hold files under those"
    )


def _boolean(inputs: Mapping[str, str], name: str) -> bool:
    raw = (inputs.get(name) or "").strip()
    if raw.lower() in ("", "false"):
        return False
    if raw.lower() == "true":
        return True
    raise CacheError(f"{name} must be true or false, got {raw!r}")


def _warn_unexpected(action: str, inputs: Mapping[str, str], say: Callable[[str], None]) -> None:
    valid = INPUTS[action]
    unexpected = [name for name in inputs if name not in valid]
    if unexpected:
        shown = ", ".join(repr(name) for name in unexpected)
        say(f"Warning: Unexpected input(s) {shown}, valid inputs are {list(valid)}")


def _megabytes(size: int) -> str:
    if size < 100 * 1024:
        return human_size(size)  # "0.0 MB" would say nothing
    return f"{size / (1024 * 1024):.1f} MB"


# ------------------------------------------------------------------------------ hashFiles


def hash_files(backend: CacheBackend, patterns: Sequence[str]) -> str:
    """GitHub's hashFiles(): the files the patterns select in the workspace (the upload-artifact
    rules, hidden files included, links followed only inside the workspace), sorted by path; the
    sha256 of the concatenated sha256 digests of their contents. '' when nothing matches."""
    lines = [line.strip() for text in patterns for line in text.split("\n")]
    lines = [line for line in lines if line and not line.startswith("#")]
    if not any(not line.startswith("!") for line in lines):
        return ""
    try:
        parsed = parse_patterns("\n".join(lines), backend.workspace)
    except ArtifactError as error:
        raise CacheError(str(error)) from None
    with backend.workspace_view(search_roots(parsed)) as root:
        selection = select_files(root, parsed, workspace=backend.workspace, include_hidden=True)
        if not selection.files:
            return ""
        total = hashlib.sha256()
        for host_path, _ in selection.files:
            digest = hashlib.sha256()
            with open(host_path, "rb") as content:
                while chunk := content.read(COPY_CHUNK):
                    digest.update(chunk)
            total.update(digest.digest())
    return total.hexdigest()


# ------------------------------------------------------------------------------ the actions


@dataclass(frozen=True, slots=True)
class PendingSave:
    """What the post-job phase saves for one `actions/cache` step."""

    key: str
    paths: CachePaths
    version: str
    save_always: bool


def run_restore(
    backend: CacheBackend,
    store: CacheStore,
    inputs: Mapping[str, str],
    say: Callable[[str], None],
    *,
    action: str = CACHE,
) -> tuple[dict[str, str], PendingSave | None]:
    """`actions/cache` or `actions/cache/restore`: the step's outputs, and for `actions/cache`
    the save the job owes at its end (None after an exact hit). CacheError fails the step."""
    _warn_unexpected(action, inputs, say)
    key = (inputs.get("key") or "").strip()
    if not key:
        raise CacheError("Input required and not supplied: key")
    keys = [key, *input_lines(inputs.get("restore-keys") or "")]
    check_keys(keys)
    paths = parse_cache_paths(
        inputs.get("path") or "", workspace=backend.workspace, home=backend.home
    )
    version = cache_version(paths.lines)
    lookup_only = _boolean(inputs, "lookup-only")
    fail_on_miss = _boolean(inputs, "fail-on-cache-miss")
    save_always = action == CACHE and _boolean(inputs, "save-always")
    _boolean(inputs, "enableCrossOsArchive")  # checked, and meaningless here: one OS

    started = time.monotonic()
    hit: CacheHit | None = None
    try:
        hit = store.lookup(keys, version)
    except CacheError as error:
        say(f"Warning: Failed to restore: {error}")
    if hit is not None and lookup_only:
        say(f"Cache found and can be restored from key: {hit.key}")
        store.record(_outcome(hit), seconds=time.monotonic() - started, size=0)
    elif hit is not None:
        try:
            restore_entry(backend, store, hit)
        except CacheError as error:
            say(f"Warning: Failed to restore: {error}")
            hit = None
        else:
            seconds = time.monotonic() - started
            say(f"Cache restored from key: {hit.key} ({_megabytes(hit.size)} in {seconds:.1f} s)")
            store.record(_outcome(hit), seconds=seconds, size=hit.size)
    if hit is None:
        say(f"Cache not found for input keys: {', '.join(keys)}")
        store.record("miss", seconds=time.monotonic() - started, size=0)
        if fail_on_miss:
            raise CacheError(
                "Failed to restore cache entry. Exiting as fail-on-cache-miss is set. "
                f"Input key: {key}"
            )
    exact = hit is not None and hit.exact
    outputs = {"cache-hit": "true" if exact else "false"}
    if action == CACHE_RESTORE:
        outputs["cache-primary-key"] = key
        outputs["cache-matched-key"] = hit.key if hit is not None else ""
    pending = None
    if action == CACHE and not exact:
        pending = PendingSave(key, paths, version, save_always)
    return outputs, pending


def _outcome(hit: CacheHit) -> str:
    return "hit" if hit.exact else "partial"


def run_save(
    backend: CacheBackend,
    store: CacheStore,
    inputs: Mapping[str, str],
    say: Callable[[str], None],
) -> dict[str, str]:
    """`actions/cache/save`: saves at once. As on GitHub, every problem is a warning."""
    try:
        _warn_unexpected(CACHE_SAVE, inputs, say)
        key = (inputs.get("key") or "").strip()
        if not key:
            raise CacheError("Input required and not supplied: key")
        check_keys([key])
        paths = parse_cache_paths(
            inputs.get("path") or "", workspace=backend.workspace, home=backend.home
        )
        _boolean(inputs, "enableCrossOsArchive")
    except CacheError as error:
        say(f"Warning: {error}")
        say("Warning: Cache save failed.")
        return {}
    save_cache(backend, store, key, paths, cache_version(paths.lines), say)
    return {}


class _TooLarge(Exception):
    def __init__(self, size: int, files: int) -> None:
        super().__init__(size, files)
        self.size = size
        self.files = files


def save_cache(
    backend: CacheBackend,
    store: CacheStore,
    key: str,
    paths: CachePaths,
    version: str,
    say: Callable[[str], None],
) -> bool:
    """Archive `paths` and keep them as entry `key`: True when saved. Every problem is said as
    a warning: a cache that cannot be saved never fails a job."""
    started = time.monotonic()
    limit = store.max_entry_bytes
    try:
        with tempfile.TemporaryFile(prefix="cicd-cache-") as spool:
            built = write_archive(backend, paths, spool, limit=limit)
            for warning in built.warnings:
                say(f"Warning: {warning}")
            if not built.entries:
                say(f"Warning: {NO_PATHS_WARNING}")
                return False
            size = spool.tell()
            spool.seek(0)
            saved = store.save(key, version, spool, size)
    except _TooLarge as over:
        say(
            f"Warning: Cache not saved: the archive for key {key} is larger than the limit of "
            f"{human_size(limit)} per entry ({human_size(over.size)} after {over.files} "
            "file(s), when it was stopped)"
        )
        return False
    except CacheError as error:
        say(f"Warning: Cache not saved: {error}")
        return False
    except (OSError, tarfile.TarError) as error:
        say(f"Warning: Cache not saved: {error}")
        return False
    seconds = time.monotonic() - started
    if not saved:
        say(f"Cache not saved: another job saved key {key} first")
        return False
    store.record("save", seconds=seconds, size=size)
    say(f"Cache saved with key: {key} ({_megabytes(size)} in {seconds:.1f} s)")
    return True


# ------------------------------------------------------------------------------ archives


@dataclass(slots=True)
class ArchiveSummary:
    entries: int = 0  # members written
    files: int = 0  # regular files (hard links included)
    size: int = 0  # bytes of those files, before compression
    warnings: list[str] = field(default_factory=list)


def write_archive(
    backend: CacheBackend, paths: CachePaths, out: BinaryIO, *, limit: int | None = None
) -> ArchiveSummary:
    """The entries `paths` select, read through the backend, as a cache archive into `out`
    (see the module docstring). _TooLarge as soon as `out` holds more than `limit` bytes."""
    summary = ArchiveSummary()
    written: set[str] = set()
    with (
        _ParallelGzip(out) as packed,
        tarfile.open(fileobj=packed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        tar.copybufsize = COPY_CHUNK
        for marker, patterns in paths.patterns.items():
            root = paths.roots[marker]
            searches = [posixpath.join(root, s) if s else root for s in search_roots(patterns)]
            with contextlib.closing(backend.read_tree(searches)) as entries:
                for info, opener in entries:
                    relative = _relative(info.name, root)
                    if not relative or not _selected(relative, patterns):
                        continue
                    _add_member(tar, info, opener, marker, relative, paths, written, summary)
                    if limit is not None and out.tell() > limit:
                        raise _TooLarge(out.tell(), summary.files)
    if limit is not None and out.tell() > limit:
        raise _TooLarge(out.tell(), summary.files)
    return summary


class _ParallelGzip:
    """A gzip writer that deflates 1 MiB blocks on all CPUs, as pigz does: each block is
    compressed on its own (primed with the previous block's last 32 KiB, so the ratio stays
    close to plain gzip's) and ends on a byte boundary (Z_SYNC_FLUSH; the last one Z_FINISH),
    so the concatenation is one ordinary deflate stream in one gzip member that any gzip
    reader unpacks. zlib releases the GIL, so the blocks really run at the same time. A block
    whose 64 KiB sample does not compress is stored (level 0), at the speed of a copy."""

    def __init__(self, out: BinaryIO, *, level: int = COMPRESS_LEVEL) -> None:
        self._out = out
        self._level = level
        self._workers = os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="cicd-gzip")
        self._pending: deque[Future[bytes]] = deque()
        self._buffer = bytearray()
        self._window = b""
        self._crc = 0
        self._size = 0
        self._closed = False
        # The gzip header: deflate, no name, no time (same files, same archive), fastest, Unix.
        out.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x04\x03")

    def __enter__(self) -> _ParallelGzip:
        return self

    def __exit__(self, kind: object, *rest: object) -> None:
        if kind is None:
            self.close()
        else:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def tell(self) -> int:
        return self._size + len(self._buffer)

    def write(self, data: bytes) -> int:
        self._buffer += data
        while len(self._buffer) >= BLOCK_BYTES:
            self._submit(bytes(self._buffer[:BLOCK_BYTES]), last=False)
            del self._buffer[:BLOCK_BYTES]
        return len(data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._submit(bytes(self._buffer), last=True)
            self._buffer.clear()
            while self._pending:
                self._out.write(self._pending.popleft().result())
            self._out.write(struct.pack("<II", self._crc & 0xFFFFFFFF, self._size & 0xFFFFFFFF))
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def _submit(self, block: bytes, *, last: bool) -> None:
        self._crc = zlib.crc32(block, self._crc)
        self._size += len(block)
        self._pending.append(
            self._pool.submit(_deflate_block, block, self._window, self._level, last)
        )
        self._window = block[-WINDOW_BYTES:]
        # Written in order as they finish; a bounded number in flight bounds the memory.
        while len(self._pending) > 2 * self._workers or (self._pending and self._pending[0].done()):
            self._out.write(self._pending.popleft().result())


def _deflate_block(block: bytes, window: bytes, level: int, last: bool) -> bytes:
    if len(block) > SAMPLE_BYTES:
        sample = block[:SAMPLE_BYTES]
        if len(zlib.compress(sample, 1)) > SAMPLE_RATIO * len(sample):
            level = 0
    if window:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=window)
    else:
        compressor = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return compressor.compress(block) + compressor.flush(
        zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH
    )


def _relative(name: str, root: str) -> str:
    """`name` relative to `root`; '' for the root itself or a path outside it."""
    prefix = root.rstrip("/") + "/"
    return name[len(prefix) :] if name.startswith(prefix) else ""


def _selected(relative: str, patterns: Sequence[Pattern]) -> bool:
    decision = False
    for pattern in patterns:
        if pattern.matches(relative):
            decision = not pattern.exclude
    return decision


def _add_member(
    tar: tarfile.TarFile,
    info: tarfile.TarInfo,
    opener: Callable[[], BinaryIO | None] | None,
    marker: str,
    relative: str,
    paths: CachePaths,
    written: set[str],
    summary: ArchiveSummary,
) -> None:
    name = f"{marker}/{relative}"
    member = tarfile.TarInfo(name)
    member.mtime = int(info.mtime)
    member.mode = info.mode & 0o777
    content: BinaryIO | None = None
    if info.isdir():
        member.type = tarfile.DIRTYPE
    elif info.issym():
        member.type = tarfile.SYMTYPE
        member.linkname = _stored_link(info.linkname, info.name, paths.roots[marker])
    elif info.islnk():
        target = _member_name(info.linkname, paths.roots)
        if target is not None and target in written:
            member.type = tarfile.LNKTYPE
            member.linkname = target
        else:
            # Its first name was left out of the cache: store the content under this name.
            content = opener() if opener is not None else None
            if content is None:
                summary.warnings.append(
                    f"skipped {info.name}: a hard link to {info.linkname}, which is not cached"
                )
                return
            member.size = os.fstat(content.fileno()).st_size
    elif info.isfile():
        member.size = info.size
        content = opener() if opener is not None else None
        if content is None:
            return
    else:
        return  # devices, fifos, sockets: nothing anyone caches
    try:
        tar.addfile(member, content)
    finally:
        if content is not None:
            content.close()
    written.add(name)
    summary.entries += 1
    if member.isfile() or member.islnk():
        summary.files += 1
        summary.size += member.size


def _stored_link(target: str, location: str, root: str) -> str:
    """A link's target as stored: relative when it is absolute and inside its own root, so
    that it leads to the same file after a restore under another absolute root."""
    if target.startswith("/"):
        normal = posixpath.normpath(target)
        if normal == root or normal.startswith(root.rstrip("/") + "/"):
            return posixpath.relpath(normal, posixpath.dirname(location))
    return target


def _member_name(path: str, roots: Mapping[str, str]) -> str | None:
    for marker, root in roots.items():
        relative = _relative(path, root)
        if relative:
            return f"{marker}/{relative}"
    return None


def restore_entry(backend: CacheBackend, store: CacheStore, hit: CacheHit) -> tuple[int, int]:
    """Unpack the entry `hit` into the job through the backend: (files, bytes). CacheError for
    an archive that cannot be read or holds a member that must not be unpacked."""
    try:
        archive = store.open(hit)
    except OSError as error:
        raise CacheError(f"cannot read the cache entry {hit.key!r}: {error}") from None
    try:
        return restore_archive(backend, archive)
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise CacheError(
            f"the cache entry {hit.key!r} is not a readable archive: {error}"
        ) from None
    except OSError as error:
        raise CacheError(f"cannot unpack the cache entry {hit.key!r}: {error}") from None
    finally:
        archive.close()


def restore_archive(backend: CacheBackend, archive: BinaryIO) -> tuple[int, int]:
    roots = {WORKSPACE_ROOT: backend.workspace.rstrip("/"), HOME_ROOT: backend.home.rstrip("/")}
    counts = [0, 0]
    with tarfile.open(fileobj=archive, mode="r|gz", bufsize=COPY_CHUNK) as tar:
        backend.write_tree(_unpacked(tar, roots, counts))
    return counts[0], counts[1]


def _unpacked(
    tar: tarfile.TarFile, roots: Mapping[str, str], counts: list[int]
) -> Generator[TreeEntry, None, None]:
    """The members of a cache archive renamed to where they go in the job; CacheError at the
    first one that must not be unpacked."""
    for member in tar:
        marker, relative = _checked_name(member.name)
        if not relative:
            continue  # the root itself: it exists, and its mode is the job's
        info = member.replace(name=f"{roots[marker]}/{relative}", deep=False)
        opener: Callable[[], BinaryIO | None] | None = None
        if member.islnk():
            try:
                target_marker, target = _checked_name(member.linkname)
            except CacheError:
                target = ""
            if not target:
                raise CacheError(
                    "the cache entry holds a hard link that cannot be unpacked: "
                    f"{member.name!r} -> {member.linkname!r}"
                )
            info.linkname = f"{roots[target_marker]}/{target}"
            counts[0] += 1
        elif member.isfile():
            opener = _extractor(tar, member)
            counts[0] += 1
            counts[1] += member.size
        elif not (member.isdir() or member.issym()):
            raise CacheError(
                f"the cache entry holds {member.name!r}, which is neither a file, a directory "
                "nor a link"
            )
        yield info, opener


def _extractor(tar: tarfile.TarFile, member: tarfile.TarInfo) -> Callable[[], BinaryIO | None]:
    return lambda: tar.extractfile(member)  # type: ignore[return-value]


def _checked_name(name: str) -> tuple[str, str]:
    parts = name.split("/")
    if parts[0] not in (WORKSPACE_ROOT, HOME_ROOT) or any(p in ("", ".", "..") for p in parts):
        raise CacheError(
            f"the cache entry holds a member that cannot be unpacked: {name!r} (members must be "
            f"under {WORKSPACE_ROOT}/ or {HOME_ROOT}/, without '..')"
        )
    return parts[0], "/".join(parts[1:])


# ------------------------------------------------------------------------------ the local side


def walk_tree(paths: Sequence[str], roots: Sequence[str]) -> Generator[TreeEntry, None, None]:
    """`read_tree` of a backend whose job paths are host paths (the local executor): the
    entries under each of `paths`, links never followed. A path whose parent directories lead
    out of `roots` through a link yields nothing."""
    links: dict[tuple[int, int], str] = {}
    roots = [root.rstrip("/") for root in roots]
    for path in paths:
        path = path.rstrip("/")
        if path in roots:
            real = path  # a root itself: walked from there (when it is a link, only the link)
        else:
            parent, base = os.path.split(path)
            real_parent = os.path.realpath(parent)
            if not any(_inside(real_parent, root) for root in roots):
                continue
            real = os.path.join(real_parent, base)
        yield from _walk_host(real, path, links)


def _inside(path: str, root: str) -> bool:
    root = root.rstrip("/")
    return path == root or path.startswith(root + "/")


def _walk_host(
    real: str, name: str, links: dict[tuple[int, int], str]
) -> Generator[TreeEntry, None, None]:
    stack = [(real, name)]
    while stack:
        real, name = stack.pop()
        try:
            st = os.lstat(real)
        except OSError:
            continue  # gone meanwhile
        info = tarfile.TarInfo(name)
        info.mode = stat.S_IMODE(st.st_mode)
        info.mtime = int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            yield info, None
            try:
                children = sorted(os.listdir(real), reverse=True)
            except OSError:
                continue
            stack.extend((os.path.join(real, c), f"{name}/{c}") for c in children)
        elif stat.S_ISREG(st.st_mode):
            opener = _host_opener(real)
            if st.st_nlink > 1:
                inode = (st.st_dev, st.st_ino)
                if inode in links:
                    info.type = tarfile.LNKTYPE
                    info.linkname = links[inode]
                    yield info, opener
                    continue
                links[inode] = name
            info.size = st.st_size
            yield info, opener
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            try:
                info.linkname = os.readlink(real)
            except OSError:
                continue
            yield info, None


def _host_opener(path: str) -> Callable[[], BinaryIO | None]:
    def opener() -> BinaryIO | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None  # removed or replaced by a link since it was listed: left out
        return open(fd, "rb")

    return opener


def write_tree_safely(entries: Iterable[TreeEntry], roots: Sequence[str]) -> None:
    """`write_tree` of a backend whose job paths are host paths (the local executor): each entry
    written under one of `roots` without ever following a link (see `_SafeTree`)."""
    tree = _SafeTree(roots)
    try:
        for info, opener in entries:
            tree.write(info, opener)
    finally:
        tree.close()


class _SafeTree:
    """Writes under a few root directories through directory descriptors opened with
    O_NOFOLLOW, one path component at a time: a symbolic link (or a file) found where a
    directory must be is replaced by a directory, never followed, so nothing lands outside the
    roots whatever links the job left in them. The worker writes here with its own rights,
    outside any sandbox: this is what keeps a job from having it write elsewhere."""

    _DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, roots: Sequence[str]) -> None:
        # The longest root first, should one ever hold the other.
        self.roots = sorted((r.rstrip("/") for r in roots), key=len, reverse=True)
        self._fds: dict[tuple[str, ...], int] = {}

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def write(self, info: tarfile.TarInfo, opener: Callable[[], BinaryIO | None] | None) -> None:
        if len(self._fds) > MAX_OPEN_DIRECTORIES:
            self.close()
        root, parts = self._locate(info.name)
        if info.isdir():
            fd = self._directory(root, parts)
            os.fchmod(fd, (info.mode & 0o777) | 0o700)  # the owner keeps writing into it
            return
        parent = self._directory(root, parts[:-1])
        name = parts[-1]
        self._remove(parent, name, (root, *parts))
        if info.issym():
            os.symlink(info.linkname, name, dir_fd=parent)
        elif info.islnk():
            target_root, target_parts = self._locate(info.linkname)
            target_parent = self._directory(target_root, target_parts[:-1])
            os.link(
                target_parts[-1],
                name,
                src_dir_fd=target_parent,
                dst_dir_fd=parent,
                follow_symlinks=False,
            )
        elif info.isfile():
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(name, flags, 0o600, dir_fd=parent)
            with open(fd, "wb") as out:
                source = opener() if opener is not None else None
                if source is not None:
                    shutil.copyfileobj(source, out, COPY_CHUNK)
                out.flush()
                os.fchmod(fd, (info.mode & 0o777) | 0o400)
                os.utime(fd, (info.mtime, info.mtime))

    def _locate(self, name: str) -> tuple[str, list[str]]:
        for root in self.roots:
            if name.startswith(root + "/"):
                parts = name[len(root) + 1 :].split("/")
                if not any(part in ("", ".", "..") for part in parts):
                    return root, parts
                break
        raise CacheError(f"cannot unpack {name!r}: it is not inside the workspace or HOME")

    def _directory(self, root: str, parts: Sequence[str]) -> int:
        key = (root, *parts)
        fd = self._fds.get(key)
        if fd is not None:
            return fd
        if not parts:
            fd = self._open_root(root)
        else:
            parent = self._directory(root, parts[:-1])
            fd = self._open_child(parent, parts[-1], key)
        self._fds[key] = fd
        return fd

    def _open_root(self, root: str) -> int:
        try:
            return os.open(root, self._DIRECTORY)
        except FileNotFoundError:
            os.mkdir(root, 0o755)  # a step removed it; its parent is the executor's own
            return os.open(root, self._DIRECTORY)
        except OSError as error:
            if error.errno in (errno.ELOOP, errno.ENOTDIR):
                raise CacheError(
                    f"cannot restore into {root}: it is no longer a directory (a step replaced "
                    "it, with a symbolic link?)"
                ) from None
            raise

    def _open_child(self, parent: int, name: str, key: tuple[str, ...]) -> int:
        try:
            return os.open(name, self._DIRECTORY, dir_fd=parent)
        except FileNotFoundError:
            pass
        except OSError as error:
            if error.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            self._remove(parent, name, key)  # a link or a file where a directory goes
        os.mkdir(name, 0o755, dir_fd=parent)
        return os.open(name, self._DIRECTORY, dir_fd=parent)

    def _remove(self, parent: int, name: str, key: tuple[str, ...]) -> None:
        """Whatever is at `name` in `parent` goes (a directory with all it holds)."""
        try:
            os.unlink(name, dir_fd=parent)
            return
        except FileNotFoundError:
            return
        except IsADirectoryError:
            pass
        except PermissionError:
            if not stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                raise
        for cached in [k for k in self._fds if k[: len(key)] == key]:
            os.close(self._fds.pop(cached))
        shutil.rmtree(name, dir_fd=parent)


# ------------------------------------------------------------------------------ in memory


@dataclass
class _MemoryEntry:
    key: str
    version: str
    data: bytes
    sequence: int  # creation order: "newest" without a clock


@dataclass
class MemoryCacheStore:
    """A CacheStore in a dict, without scopes (every entry is readable): for tests and for
    `cicd exec`, whose jobs share one run's caches. Thread-safe: jobs run in parallel."""

    max_entry_bytes: int = 5 * 1024**3
    entries: list[_MemoryEntry] = field(default_factory=list)
    records: list[tuple[str, float, int]] = field(default_factory=list)  # (outcome, s, size)
    opened: list[str] = field(default_factory=list)  # keys, in the order they were restored
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def lookup(self, keys: Sequence[str], version: str) -> CacheHit | None:
        with self._lock:
            entries = [e for e in self.entries if e.version == version]
            primary = keys[0]
            for entry in entries:
                if entry.key == primary:
                    return self._hit(entry, primary)
            for key in keys:
                matches = [e for e in entries if e.key.startswith(key)]
                if matches:
                    return self._hit(max(matches, key=lambda e: e.sequence), primary)
        return None

    def _hit(self, entry: _MemoryEntry, primary: str) -> CacheHit:
        return CacheHit(entry.key, entry.key == primary, len(entry.data), id=str(entry.sequence))

    def open(self, hit: CacheHit) -> BinaryIO:
        with self._lock:
            for entry in self.entries:
                if str(entry.sequence) == hit.id:
                    self.opened.append(entry.key)
                    return io.BytesIO(entry.data)
        raise CacheError(f"the cache entry {hit.key!r} is gone")

    def save(self, key: str, version: str, archive: BinaryIO, size: int) -> bool:
        if size > self.max_entry_bytes:
            raise CacheError(
                f"the entry is {human_size(size)}, over the limit of "
                f"{human_size(self.max_entry_bytes)} per entry"
            )
        data = archive.read()
        with self._lock:
            if any(e.key == key and e.version == version for e in self.entries):
                return False
            sequence = max((e.sequence for e in self.entries), default=0) + 1
            self.entries.append(_MemoryEntry(key, version, data, sequence))
        return True

    def record(self, outcome: str, *, seconds: float, size: int) -> None:
        with self._lock:
            self.records.append((outcome, seconds, size))

    def keys(self) -> list[str]:
        """The keys of the entries, oldest first."""
        with self._lock:
            return [e.key for e in sorted(self.entries, key=lambda e: e.sequence)]
