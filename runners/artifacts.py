"""Artifacts (`actions/upload-artifact`, `actions/download-artifact`) as the executor sees them.

The executor knows nothing of where artifacts are kept: it talks to an `ArtifactStore` (the
orchestration layer gives one backed by the database and blob storage; tests give the in-memory
one here). This module also holds the pure part of an upload: which files of the workspace the
`path:` patterns select, and the archive that carries them.

Selection follows GitHub's upload-artifact v4:
- `path` holds one pattern a line; `*`, `?`, `[...]` match within a path segment, `**` any number
  of segments; a pattern naming a directory takes everything under it; a line starting with `!`
  excludes what it matches; when several lines match a file the last one decides.
- Hidden files (a path segment starting with `.`) are left out unless `include-hidden-files`.
- The archive keeps paths relative to the least common ancestor of the patterns' search paths
  (the part of each pattern before its first wildcard; a single file's own directory).
- Symbolic links are followed only when they stay inside the workspace; a link pointing outside
  it (or to a directory) is skipped with a warning, so an upload can never carry a file of the
  host or of the image that the job did not put in its workspace.
"""

from __future__ import annotations

import fnmatch
import gzip
import io
import os
import posixpath
import re
import stat
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

DEFAULT_NAME = "artifact"
IF_NO_FILES_FOUND = ("warn", "error", "ignore")
# Characters GitHub refuses in artifact names (they would break file names and URLs).
FORBIDDEN_NAME_CHARACTERS = '"\\/:<>|*?\r\n'
MAX_NAME_LENGTH = 200
MAX_LINK_DEPTH = 40


class ArtifactError(Exception):
    """An upload or download the user can fix: no files, over the cap, a duplicate name..."""


@dataclass(frozen=True, slots=True)
class ArtifactInfo:
    name: str
    size: int  # bytes of the files (before compression)
    file_count: int
    id: str = ""
    digest: str = ""  # sha256 of the stored archive


class ArtifactStore(Protocol):
    """Where one job's uploads go and its downloads come from (the artifacts of its run)."""

    max_bytes: int  # the largest artifact accepted (sum of its files' sizes)
    max_retention_days: int

    def upload(
        self,
        name: str,
        archive: BinaryIO,
        *,
        file_count: int,
        size: int,
        retention_days: int | None,
    ) -> ArtifactInfo:
        """Keep the archive (a tar.gz, read to its end) as the run's artifact `name`; raises
        ArtifactError when the run already has one of that name."""
        ...

    def list(self) -> list[ArtifactInfo]:
        """The artifacts this job may download (the run's), by name."""
        ...

    def open(self, name: str) -> BinaryIO:
        """The archive of artifact `name` (a tar.gz stream; the caller closes it); raises
        ArtifactError when there is none."""
        ...


def check_name(name: str) -> str:
    """The artifact name, or ArtifactError saying what is wrong with it."""
    name = name.strip()
    if not name:
        raise ArtifactError("the artifact name must not be empty")
    bad = sorted({c for c in name if c in FORBIDDEN_NAME_CHARACTERS})
    if bad:
        shown = " ".join(repr(c) for c in bad)
        raise ArtifactError(f"the artifact name {name!r} contains a forbidden character: {shown}")
    if len(name) > MAX_NAME_LENGTH:
        raise ArtifactError(f"the artifact name is longer than {MAX_NAME_LENGTH} characters")
    return name


# ------------------------------------------------------------------------------ patterns


@dataclass(frozen=True, slots=True)
class Pattern:
    text: str  # as written, for messages
    exclude: bool
    segments: tuple[str, ...]  # relative to the workspace, normalised
    regex: re.Pattern[str]

    @property
    def search_path(self) -> str:
        """The literal directory (or file) the pattern starts from, relative to the workspace."""
        literal: list[str] = []
        for segment in self.segments:
            if _has_magic(segment):
                break
            literal.append(segment)
        return "/".join(literal)

    def matches(self, relative: str) -> bool:
        """The path or one of its parent directories matches (a directory takes its content)."""
        parts = relative.split("/")
        return any(self.regex.fullmatch("/".join(parts[:i])) for i in range(len(parts), 0, -1))


def parse_patterns(text: str, workspace: str) -> list[Pattern]:
    """The `path:` input, one pattern a line; absolute ones must be inside `workspace` (the
    workspace path as steps see it)."""
    patterns: list[Pattern] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = line.startswith("!")
        body = line[1:].strip() if exclude else line
        if body.startswith("/"):
            root = workspace.rstrip("/")
            if body != root and not body.startswith(root + "/"):
                raise ArtifactError(f"path {line!r} is outside the workspace ({workspace})")
            body = body[len(root) :]
        normal = posixpath.normpath(body.lstrip("/") or ".")
        if normal == ".." or normal.startswith("../"):
            raise ArtifactError(f"path {line!r} is outside the workspace ({workspace})")
        segments = tuple(s for s in normal.split("/") if s and s != ".")
        regex = re.compile(_translate(segments) if segments else ".*")
        patterns.append(Pattern(line, exclude, segments, regex))
    if not patterns or all(p.exclude for p in patterns):
        raise ArtifactError("'path' names no files to upload (only empty or '!' lines)")
    return patterns


def _has_magic(segment: str) -> bool:
    return any(c in segment for c in "*?[")


def _translate(segments: Sequence[str]) -> str:
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            # Any number of segments, zero included.
            parts.append(".*" if last else "(?:[^/]+/)*")
            continue
        parts.append(_translate_segment(segment) + ("" if last else "/"))
    return "".join(parts)


def _translate_segment(segment: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2)
            if end == -1:
                out.append(re.escape(c))
            else:
                body = segment[i + 1 : end]
                negate = body.startswith("!")
                body = body[1:] if negate else body
                out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
                i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


# ------------------------------------------------------------------------------ selection


@dataclass(slots=True)
class Selection:
    files: list[tuple[Path, str]] = field(default_factory=list)  # (host path, name in archive)
    warnings: list[str] = field(default_factory=list)
    size: int = 0

    @property
    def file_count(self) -> int:
        return len(self.files)


def search_roots(patterns: Sequence[Pattern]) -> list[str]:
    """The workspace-relative paths an upload looks under: a backend copies only these."""
    roots = sorted({p.search_path for p in patterns if not p.exclude})
    kept: list[str] = []
    for root in roots:
        if not any(root == k or root.startswith(k + "/") or k == "" for k in kept):
            kept.append(root)
    return kept


def select_files(
    root: Path,
    patterns: Sequence[Pattern],
    *,
    workspace: str,
    include_hidden: bool = False,
) -> Selection:
    """The files `patterns` select under `root` (a host directory holding the workspace, or the
    search roots of it), named relative to the patterns' least common ancestor. `workspace` is
    the workspace path as steps see it: absolute symbolic links are read against it."""
    selection = Selection()
    found: dict[str, Path] = {}
    for search in search_roots(patterns):
        for relative, host_path in _walk(root, search, selection, workspace):
            if not include_hidden and any(part.startswith(".") for part in relative.split("/")):
                continue
            decision = None
            for pattern in patterns:
                if pattern.matches(relative):
                    decision = not pattern.exclude
            if decision:
                found[relative] = host_path
    base = _common_ancestor(root, patterns)
    for relative in sorted(found):
        host_path = found[relative]
        name = relative[len(base) + 1 :] if base else relative
        selection.files.append((host_path, name))
        selection.size += host_path.stat().st_size
    return selection


def _common_ancestor(root: Path, patterns: Sequence[Pattern]) -> str:
    searches = [p.search_path for p in patterns if not p.exclude]
    if len(searches) == 1:
        only = searches[0]
        target = root / only if only else root
        is_file = target.is_file() or (target.is_symlink() and not target.is_dir())
        return posixpath.dirname(only) if only and is_file else only
    split = [s.split("/") if s else [] for s in searches]
    common: list[str] = []
    for parts in zip(*split, strict=False):
        if len(set(parts)) != 1:
            break
        common.append(parts[0])
    return "/".join(common)


def _walk(
    root: Path, search: str, selection: Selection, workspace: str
) -> Iterator[tuple[str, Path]]:
    """(workspace-relative name, host path of the content) of each file under `search`."""
    start = root / search if search else root
    if not os.path.lexists(start):
        return
    if start.is_symlink() or not start.is_dir():
        yield from _entry(root, search, selection, workspace)
        return
    for directory, dirnames, filenames in os.walk(start):
        here = Path(directory).relative_to(root).as_posix()
        here = "" if here == "." else here
        for name in sorted(dirnames):
            if (Path(directory) / name).is_symlink():
                dirnames.remove(name)
                filenames.append(name)  # reported by _entry
        dirnames.sort()
        for name in sorted(filenames):
            yield from _entry(root, f"{here}/{name}" if here else name, selection, workspace)


def _entry(
    root: Path, relative: str, selection: Selection, workspace: str
) -> Iterator[tuple[str, Path]]:
    path = root / relative
    mode = path.lstat().st_mode
    if stat.S_ISREG(mode):
        yield relative, path
        return
    if not stat.S_ISLNK(mode):
        return  # sockets, fifos, devices: not files anyone uploads
    target = _resolve_inside(root, relative, workspace)
    if target is None:
        selection.warnings.append(
            f"skipped {relative}: it is a symbolic link to {os.readlink(path)!r}, outside the "
            "workspace (links are not followed out of it)"
        )
    elif target.is_dir():
        selection.warnings.append(f"skipped {relative}: links to directories are not followed")
    elif target.is_file():
        yield relative, target
    else:
        selection.warnings.append(f"skipped {relative}: a broken symbolic link")


def _resolve_inside(root: Path, relative: str, workspace: str) -> Path | None:
    """Where the link `relative` leads under `root`, resolved one link at a time against the
    workspace (not the host); None when any step of the way leaves it."""
    parts = relative.split("/")
    resolved: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        candidate = root.joinpath(*resolved, part)
        if candidate.is_symlink():
            hops += 1
            if hops > MAX_LINK_DEPTH:
                return None
            link = os.readlink(candidate)
            if link.startswith("/"):
                base = workspace.rstrip("/")
                if link != base and not link.startswith(base + "/"):
                    return None
                resolved = []
                link = link[len(base) :]
            parts = [p for p in link.split("/") if p] + parts
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


# ------------------------------------------------------------------------------ archives


def write_archive(selection: Selection, out: BinaryIO) -> None:
    """The selected files as a tar.gz: regular files only, owner and mode bits normalised, and
    no time in the gzip header, so that the same files give the same archive (stored once)."""
    with (
        gzip.GzipFile(filename="", fileobj=out, mode="wb", compresslevel=6, mtime=0) as packed,
        tarfile.open(fileobj=packed, mode="w") as tar,
    ):
        for host_path, name in selection.files:
            info = tarfile.TarInfo(name)
            st = host_path.stat()
            info.size = st.st_size
            info.mtime = int(st.st_mtime)
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            with open(host_path, "rb") as content:
                tar.addfile(info, content)


def archive_contents(archive: BinaryIO) -> tuple[int, int]:
    """(file count, total size) of an archive: what a download reports."""
    count = size = 0
    with tarfile.open(fileobj=archive, mode="r|*") as tar:
        for member in tar:
            if member.isfile():
                count += 1
                size += member.size
    return count, size


def safe_extract(archive: BinaryIO, dest: Path) -> tuple[int, int]:
    """Unpack a stored artifact into `dest` (created when missing): nothing may land outside it,
    not even through a symbolic link the job placed there. Returns (files, bytes)."""
    dest.mkdir(parents=True, exist_ok=True)
    count = size = 0
    with tarfile.open(fileobj=archive, mode="r|*") as tar:
        for member in tar:
            if not (member.isfile() or member.isdir()):
                continue
            try:
                tar.extract(member, dest, filter="data")
            except tarfile.FilterError as error:
                raise ArtifactError(f"cannot unpack {member.name!r}: {error}") from None
            if member.isfile():
                count += 1
                size += member.size
    return count, size


def human_size(value: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value} bytes"


# ------------------------------------------------------------------------------ in memory


@dataclass
class MemoryArtifactStore:
    """An ArtifactStore in a dict: for tests, and for runs that keep nothing."""

    max_bytes: int = 1024**3
    max_retention_days: int = 90
    archives: dict[str, tuple[bytes, ArtifactInfo, int | None]] = field(default_factory=dict)

    def upload(
        self,
        name: str,
        archive: BinaryIO,
        *,
        file_count: int,
        size: int,
        retention_days: int | None,
    ) -> ArtifactInfo:
        if name in self.archives:
            raise ArtifactError(f"an artifact named {name!r} already exists in this run")
        info = ArtifactInfo(name, size, file_count, id=str(len(self.archives) + 1))
        self.archives[name] = (archive.read(), info, retention_days)
        return info

    def list(self) -> list[ArtifactInfo]:
        return [info for _, info, _ in sorted(self.archives.values(), key=lambda v: v[1].name)]

    def open(self, name: str) -> BinaryIO:
        if name not in self.archives:
            raise ArtifactError(f"no artifact named {name!r} in this run")
        return io.BytesIO(self.archives[name][0])


# ------------------------------------------------------------------------------ workspace copies


class IterReader(io.RawIOBase):
    """A readable file over an iterator of byte chunks (a Docker archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, target: bytearray | memoryview) -> int:  # type: ignore[override]
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        size = min(len(target), len(self._buffer))
        target[:size] = self._buffer[:size]
        self._buffer = self._buffer[size:]
        return size


def extract_keeping_links(archive: BinaryIO, dest: Path) -> None:
    """Unpack a copy of (part of) a workspace into `dest`, symbolic links kept as links so that
    `select_files` can judge where they lead. Nothing is written outside `dest`: a member whose
    path would go through a link, hard links leading outside it and special files are skipped."""
    with tarfile.open(fileobj=archive, mode="r|*") as tar:
        for member in tar:
            try:
                if member.issym():
                    # The link is created, never followed here: check its own location only.
                    tarfile.data_filter(member.replace(linkname=".", deep=False), str(dest))
                    tar.extract(member, dest, filter=lambda m, _path: m)
                elif member.isfile() or member.isdir() or member.islnk():
                    # Hard links too: the engine sends a file's second name as one (pnpm
                    # stores); the data filter keeps its target inside `dest`.
                    tar.extract(member, dest, filter="data")
            except (tarfile.TarError, OSError):  # FilterError is a TarError
                continue


def spool_checked(archive: BinaryIO, spool: BinaryIO) -> tuple[int, int]:
    """Copy a stored artifact into `spool` and return its (files, bytes); ArtifactError when a
    member could land outside the directory it is unpacked in."""
    while chunk := archive.read(1024 * 1024):
        spool.write(chunk)
    spool.seek(0)
    count = size = 0
    with tarfile.open(fileobj=spool, mode="r|*") as tar:
        for member in tar:
            name = member.name
            if (
                name.startswith("/")
                or ".." in name.split("/")
                or not (member.isfile() or member.isdir())
            ):
                raise ArtifactError(
                    f"the artifact holds an entry that cannot be unpacked: {name!r}"
                )
            if member.isfile():
                count += 1
                size += member.size
    spool.seek(0)
    return count, size


# ------------------------------------------------------------------------------ the two steps


class ArtifactBackend(Protocol):
    """What the artifact steps need of an executor backend (see runners.job.Backend)."""

    workspace: str

    def workspace_view(self, roots: Sequence[str]) -> AbstractContextManager[Path]: ...

    def extract_archive(self, archive: BinaryIO, target: str) -> tuple[int, int]: ...


def run_upload(
    backend: ArtifactBackend,
    store: ArtifactStore,
    inputs: Mapping[str, str],
    say: Callable[[str], None],
) -> dict[str, str]:
    """`actions/upload-artifact`: returns the step's outputs; ArtifactError fails the step."""
    name = check_name(inputs.get("name") or DEFAULT_NAME)
    if_none = (inputs.get("if-no-files-found") or "warn").strip().lower()
    if if_none not in IF_NO_FILES_FOUND:
        raise ArtifactError(
            f"if-no-files-found must be one of {', '.join(IF_NO_FILES_FOUND)}, got {if_none!r}"
        )
    retention = _retention(inputs.get("retention-days", ""), store, say)
    include_hidden = _boolean(inputs.get("include-hidden-files", ""), "include-hidden-files")
    patterns = parse_patterns(inputs.get("path", ""), backend.workspace)
    with backend.workspace_view(search_roots(patterns)) as root:
        selection = select_files(
            root, patterns, workspace=backend.workspace, include_hidden=include_hidden
        )
        for warning in selection.warnings:
            say(f"Warning: {warning}")
        if not selection.files:
            shown = ", ".join(p.text for p in patterns)
            message = f"No files were found with the provided path: {shown}."
            if if_none == "error":
                raise ArtifactError(message)
            say(("Warning: " if if_none == "warn" else "") + message + " Nothing was uploaded.")
            return {}
        if selection.size > store.max_bytes:
            raise ArtifactError(
                f"artifact {name!r} is {human_size(selection.size)} ({selection.file_count} "
                f"files), over the limit of {human_size(store.max_bytes)} per artifact"
            )
        with tempfile.TemporaryFile(prefix="cicd-artifact-") as spool:
            write_archive(selection, spool)
            spool.seek(0)
            info = store.upload(
                name,
                spool,
                file_count=selection.file_count,
                size=selection.size,
                retention_days=retention,
            )
    kept = f", kept {retention} days" if retention else ""
    say(
        f"Uploaded artifact {name!r}: {selection.file_count} file(s), "
        f"{human_size(selection.size)}{kept}"
    )
    return {"artifact-id": info.id, "artifact-digest": info.digest}


def run_download(
    backend: ArtifactBackend,
    store: ArtifactStore,
    inputs: Mapping[str, str],
    say: Callable[[str], None],
) -> dict[str, str]:
    """`actions/download-artifact`: one artifact by name into `path`, or all of the run's (those
    matching `pattern`) each into `path/<name>/` (or all into `path` with merge-multiple)."""
    for other in ("run-id", "repository", "github-token"):
        if (inputs.get(other) or "").strip():
            raise ArtifactError(f"{other}: only artifacts of this run can be downloaded")
    target = (inputs.get("path") or "").strip()
    if not target.startswith("/"):
        target = posixpath.normpath(posixpath.join(backend.workspace, target))
    name = (inputs.get("name") or "").strip()
    merge = _boolean(inputs.get("merge-multiple", ""), "merge-multiple")
    if name:
        destinations = {check_name(name): target}
    else:
        wanted = (inputs.get("pattern") or "").strip()
        names = [a.name for a in store.list() if not wanted or fnmatch.fnmatchcase(a.name, wanted)]
        if not names:
            say("No artifacts to download" + (f" matching {wanted!r}" if wanted else "") + ".")
            return {"download-path": target}
        destinations = {n: target if merge else f"{target}/{n}" for n in names}
    for artifact, dest in destinations.items():
        archive = store.open(artifact)
        try:
            count, size = backend.extract_archive(archive, dest)
        finally:
            archive.close()
        say(f"Downloaded artifact {artifact!r}: {count} file(s), {human_size(size)} to {dest}")
    return {"download-path": target}


def _retention(raw: str, store: ArtifactStore, say: Callable[[str], None]) -> int | None:
    raw = (raw or "").strip()
    if not raw or raw == "0":
        return None  # the server's default
    if not raw.isdigit():
        raise ArtifactError(f"retention-days must be a whole number of days, got {raw!r}")
    days = int(raw)
    if days > store.max_retention_days:
        say(
            f"Warning: retention-days {days} is over this server's maximum; "
            f"the artifact is kept {store.max_retention_days} days"
        )
        return store.max_retention_days
    return days


def _boolean(raw: str, what: str) -> bool:
    value = (raw or "").strip().lower()
    if value in ("", "false"):
        return False
    if value == "true":
        return True
    raise ArtifactError(f"{what} must be true or false, got {raw!r}")
