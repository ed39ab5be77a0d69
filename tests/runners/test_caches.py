"""Caches on the executor side: hashFiles(), the three cache actions in real jobs on every executor
(with the in-memory store), the archive format, and unpacking that never leaves the workspace and
HOME."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from runners.caches import (
    CacheError,
    MemoryCacheStore,
    cache_version,
    input_lines,
    parse_cache_paths,
    restore_archive,
    run_restore,
    walk_tree,
    write_archive,
    write_tree_safely,
)
from runners.spec import StepSpec
from tests.runners.conftest import Executor, job, make_local_plain_runner, step
from tests.runners.images import make_docker_runner

PATHS = "deps\n~/.cache/tool"
VERSION = cache_version(input_lines(PATHS))
DEPS_VERSION = cache_version(["deps"])


def cache(uses: str = "actions/cache@v4", id: str = "cache", **with_args: str) -> StepSpec:
    return step(uses=uses, id=id, with_args=with_args)


def archive(*members: tuple) -> bytes:
    """A cache archive by hand: (name, content) files, (name, "dir"), (name, "sym", target),
    (name, "lnk", target), (name, "fifo")."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, what, *rest in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            data = None
            if what == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif what == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, rest[0]
            elif what == "lnk":
                info.type, info.linkname = tarfile.LNKTYPE, rest[0]
            elif what == "fifo":
                info.type = tarfile.FIFOTYPE
            else:
                data = what.encode()
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def put(store: MemoryCacheStore, key: str, data: bytes, version: str = DEPS_VERSION) -> None:
    assert store.save(key, version, io.BytesIO(data), len(data))


def members(store: MemoryCacheStore, key: str) -> dict[str, tuple[str, str]]:
    """name -> (kind, content or link target) of a stored entry."""
    entry = next(e for e in store.entries if e.key == key)
    found: dict[str, tuple[str, str]] = {}
    with tarfile.open(fileobj=io.BytesIO(entry.data), mode="r:gz") as tar:
        for member in tar:
            if member.isfile():
                found[member.name] = ("file", tar.extractfile(member).read().decode())
            elif member.isdir():
                found[member.name] = ("dir", "")
            elif member.issym():
                found[member.name] = ("sym", member.linkname)
            elif member.islnk():
                found[member.name] = ("lnk", member.linkname)
    return found


def expected_hash(files: dict[str, str]) -> str:
    """GitHub's hashFiles over `files` (path -> content): sha256 of the files' sha256 digests,
    in path order."""
    total = hashlib.sha256()
    for path in sorted(files):
        total.update(hashlib.sha256(files[path].encode()).digest())
    return total.hexdigest()


def outcomes(store: MemoryCacheStore) -> list[str]:
    return [outcome for outcome, _, _ in store.records]


# ------------------------------------------------------------------------ hashFiles


def test_hash_files_is_githubs_hash_of_the_matching_files(executor: Executor, tmp_path) -> None:
    outside = tmp_path / "outside.lock"
    outside.write_text("not hashed\n")
    spec = job(
        step(
            "mkdir -p a b .hidden && echo one > a/x.lock && echo two > b/y.lock && "
            f"echo three > .hidden/z.lock && echo see > c.txt && ln -s {outside} a/out.lock"
        ),
        step(
            "echo all=${{ hashFiles('**/*.lock') }}\n"
            "echo some=${{ hashFiles('**/*.lock', '!b/**') }}\n"
            "echo none=[${{ hashFiles('nothing/**') }}]\n"
            'echo "c=$C"',
            env={"C": "${{ hashFiles('c.txt') }}"},
        ),
        step("echo the if saw it", if_condition="hashFiles('c.txt') != ''"),
        step("echo ${{ hashFiles('/etc/passwd') }}"),
    )
    result, sink = executor(spec)
    assert [r.outcome for r in result.steps] == ["success", "success", "success", "failure"]
    lock_files = {".hidden/z.lock": "three\n", "a/x.lock": "one\n", "b/y.lock": "two\n"}
    see = "see\n"
    assert sink.lines(1) == [
        f"all={expected_hash(lock_files)}",
        f"some={expected_hash({k: v for k, v in lock_files.items() if k != 'b/y.lock'})}",
        "none=[]",
        f"c={expected_hash({'c.txt': see})}",
    ]
    assert sink.lines(2) == ["the if saw it"]
    assert "hashFiles() failed" in result.steps[3].error
    assert "outside the workspace" in result.steps[3].error


# ------------------------------------------------------------------------ restore and save


def test_a_miss_saves_at_the_end_and_the_next_job_restores(executor: Executor) -> None:
    store = MemoryCacheStore()

    def spec():
        return job(
            step("echo lock > lock.txt"),
            cache(key="deps-${{ hashFiles('lock.txt') }}", path=PATHS),
            step(
                "echo hit=${{ steps.cache.outputs.cache-hit }}\n"
                "cat deps/a.txt deps/sub/b.txt ~/.cache/tool/c.txt 2>/dev/null || true\n"
                "mkdir -p deps/sub ~/.cache/tool\n"
                "echo a > deps/a.txt; echo b > deps/sub/b.txt; echo c > ~/.cache/tool/c.txt"
            ),
        )

    key = "deps-" + expected_hash({"lock.txt": "lock\n"})
    result, sink = executor(spec(), caches=store)
    assert result.conclusion == "success"
    assert result.steps[1].outputs == {"cache-hit": "false"}
    assert sink.lines(1)[0] == f"Cache not found for input keys: {key}"
    assert sink.lines(1)[1].startswith(f"Cache saved with key: {key} (")
    assert sink.lines(2) == ["hit=false"]
    assert store.keys() == [key]
    assert members(store, key) == {
        "workspace/deps": ("dir", ""),
        "workspace/deps/a.txt": ("file", "a\n"),
        "workspace/deps/sub": ("dir", ""),
        "workspace/deps/sub/b.txt": ("file", "b\n"),
        "home/.cache/tool": ("dir", ""),
        "home/.cache/tool/c.txt": ("file", "c\n"),
    }

    result, sink = executor(spec(), caches=store)
    assert result.conclusion == "success"
    assert result.steps[1].outputs == {"cache-hit": "true"}
    assert sink.lines(1)[0].startswith(f"Cache restored from key: {key} (")
    assert sink.lines(2) == ["hit=true", "a", "b", "c"]
    assert not any("Cache saved" in line for line in sink.lines())  # an exact hit saves nothing
    assert store.keys() == [key]
    assert store.opened == [key]
    assert outcomes(store) == ["miss", "save", "hit"]


def test_an_entry_saved_on_one_executor_restores_on_the_other(tmp_path: Path) -> None:
    local = make_local_plain_runner(tmp_path / "local")
    docker = make_docker_runner(tmp_path / "docker")
    save = (
        "mkdir -p deps ~/.cache/tool && echo from-$1 > deps/a.txt && "
        "echo home-$1 > ~/.cache/tool/c.txt && ln -s $PWD/deps/a.txt deps/abs-link"
    )
    show = "cat deps/a.txt ~/.cache/tool/c.txt deps/abs-link"
    for first, second, name in ((local, docker, "local"), (docker, local, "docker")):
        store = MemoryCacheStore()
        result, _ = first(
            job(cache(key="k", path=PATHS), step(f"sh -c '{save}' - {name}")), caches=store
        )
        assert result.conclusion == "success"
        result, sink = second(job(cache(key="k", path=PATHS), step(show)), caches=store)
        assert result.steps[0].outputs == {"cache-hit": "true"}
        assert sink.lines(1) == [f"from-{name}", f"home-{name}", f"from-{name}"]


def test_restore_keys_take_the_newest_entry_of_the_first_prefix_that_matches(
    executor: Executor,
) -> None:
    store = MemoryCacheStore()
    put(store, "deps-linux-1", archive(("workspace/deps/which.txt", "old\n")))
    put(store, "deps-linux-2", archive(("workspace/deps/which.txt", "new\n")))
    put(store, "deps-other", archive(("workspace/deps/which.txt", "other\n")))
    other_paths = archive(("workspace/deps/which.txt", "other paths\n"))
    put(store, "deps-linux-3", other_paths, version=cache_version(["elsewhere"]))

    restore_keys = "deps-linux-\ndeps-"
    spec = job(
        cache(key="deps-linux-9", path="deps", **{"restore-keys": restore_keys}),
        step("cat deps/which.txt"),
        cache(
            uses="actions/cache/restore@v4",
            id="again",
            key="deps-linux-9",
            path="deps",
            **{"restore-keys": restore_keys},
        ),
        cache(uses="actions/cache/restore@v4", id="other", key="deps-mac", path="deps"),
    )
    result, sink = executor(spec, caches=store)
    assert result.conclusion == "success"
    assert sink.lines(1) == ["new"]
    assert result.steps[0].outputs == {"cache-hit": "false"}
    assert sink.lines(0)[0].startswith("Cache restored from key: deps-linux-2 (")
    assert result.steps[2].outputs == {
        "cache-hit": "false",
        "cache-primary-key": "deps-linux-9",
        "cache-matched-key": "deps-linux-2",
    }
    assert result.steps[3].outputs == {
        "cache-hit": "false",
        "cache-primary-key": "deps-mac",
        "cache-matched-key": "",
    }
    # The primary key missed: the job saves it at its end, with what the steps left.
    assert store.keys()[-1] == "deps-linux-9"
    assert members(store, "deps-linux-9")["workspace/deps/which.txt"] == ("file", "new\n")
    assert outcomes(store) == ["partial", "partial", "miss", "save"]


def test_no_save_when_the_job_failed_unless_save_always(executor: Executor) -> None:
    store = MemoryCacheStore()
    build = step("mkdir -p deps && echo built > deps/out.txt && exit 1")
    result, sink = executor(job(cache(key="failed", path="deps"), build), caches=store)
    assert result.conclusion == "failure"
    assert sink.lines(0)[-1] == "Cache not saved (key failed): the job did not succeed"
    assert store.keys() == []

    spec = job(cache(key="always", path="deps", **{"save-always": "true"}), build)
    result, sink = executor(spec, caches=store)
    assert result.conclusion == "failure"
    assert sink.lines(0)[-1].startswith("Cache saved with key: always (")
    assert members(store, "always")["workspace/deps/out.txt"] == ("file", "built\n")


def test_lookup_only_checks_without_restoring_and_still_saves_a_miss(executor: Executor) -> None:
    store = MemoryCacheStore()
    put(store, "look-1", archive(("workspace/deps/f.txt", "cached\n")))
    spec = job(
        cache(key="look-1", path="deps", **{"lookup-only": "true"}),
        step("test ! -e deps/f.txt && echo hit=${{ steps.cache.outputs.cache-hit }}"),
    )
    result, sink = executor(spec, caches=store)
    assert result.conclusion == "success"
    assert sink.lines(0) == ["Cache found and can be restored from key: look-1"]
    assert sink.lines(1) == ["hit=true"]
    assert store.opened == []

    # As on GitHub, lookup-only does not change saving: a miss is saved at the end.
    spec = job(
        cache(key="look-2", path="deps", **{"lookup-only": "true"}),
        step("mkdir deps && echo made > deps/f.txt"),
    )
    result, sink = executor(spec, caches=store)
    assert result.conclusion == "success"
    assert sink.lines(0)[0] == "Cache not found for input keys: look-2"
    assert store.keys() == ["look-1", "look-2"]


def test_fail_on_cache_miss(executor: Executor) -> None:
    store = MemoryCacheStore()
    put(store, "base-1", archive(("workspace/deps/f.txt", "base\n")))
    spec = job(
        cache(key="missing", path="deps", **{"fail-on-cache-miss": "true"}),
        step("mkdir -p deps && echo never > deps/f.txt"),
    )
    result, _ = executor(spec, caches=store)
    assert result.conclusion == "failure"
    assert result.steps[0].error == (
        "Failed to restore cache entry. Exiting as fail-on-cache-miss is set. Input key: missing"
    )
    assert store.keys() == ["base-1"]

    # A restore key that matches is not a miss.
    with_fallback = {"fail-on-cache-miss": "true", "restore-keys": "base-"}
    spec = job(cache(key="base-2", path="deps", **with_fallback), step("cat deps/f.txt"))
    result, sink = executor(spec, caches=store)
    assert result.conclusion == "success"
    assert sink.lines(1) == ["base"]

    result, _ = executor(job(cache(key="k", path="deps")))  # no store where this job runs
    assert result.steps[0].outcome == "failure"
    assert result.steps[0].error == "actions/cache is not available where this job runs"


def test_restore_and_save_as_separate_steps(executor: Executor) -> None:
    store = MemoryCacheStore()

    def spec():
        return job(
            cache(uses="actions/cache/restore@v4", id="restore", key="split-1", path="deps"),
            step("mkdir -p deps && echo split > deps/f.txt"),
            cache(
                uses="actions/cache/save@v4",
                id="save",
                key="${{ steps.restore.outputs.cache-primary-key }}",
                path="deps",
            ),
            step("echo after the save"),
        )

    result, sink = executor(spec(), caches=store)
    assert result.conclusion == "success"
    assert result.steps[0].outputs == {
        "cache-hit": "false",
        "cache-primary-key": "split-1",
        "cache-matched-key": "",
    }
    assert sink.lines(2)[0].startswith("Cache saved with key: split-1 (")
    assert sink.lines(0) == ["Cache not found for input keys: split-1"]  # no post-job save
    assert store.keys() == ["split-1"]

    result, sink = executor(spec(), caches=store)
    assert result.conclusion == "success"
    assert result.steps[0].outputs["cache-hit"] == "true"
    assert result.steps[0].outputs["cache-matched-key"] == "split-1"
    assert sink.lines(2) == ["Cache not saved: another job saved key split-1 first"]
    assert store.keys() == ["split-1"]


def test_a_cache_step_in_a_composite_action_saves_at_the_end_of_the_job(
    executor: Executor,
) -> None:
    action = (
        "runs:\n  using: composite\n  steps:\n"
        "    - uses: actions/cache@v4\n      with: {key: composite, path: deps}\n"
    )
    store = MemoryCacheStore()
    spec = job(
        step(
            f"mkdir -p .github/actions/c && printf '%s' '{action}' > .github/actions/c/action.yml"
        ),
        step(uses="./.github/actions/c"),
        step("mkdir -p deps && echo late > deps/f.txt"),
    )
    result, sink = executor(spec, caches=store)
    assert result.conclusion == "success", result.steps
    assert sink.lines(1)[-1].startswith("Cache saved with key: composite (")
    assert members(store, "composite")["workspace/deps/f.txt"] == ("file", "late\n")


def test_an_entry_over_the_limit_is_not_saved_and_the_job_succeeds(executor: Executor) -> None:
    store = MemoryCacheStore(max_entry_bytes=2048)
    spec = job(
        cache(key="big", path="deps"),
        step("mkdir deps && head -c 65536 /dev/urandom > deps/big.bin"),
    )
    result, sink = executor(spec, caches=store)
    assert result.conclusion == "success"
    warning = sink.lines(0)[-1]
    assert warning.startswith("Warning: Cache not saved: the archive for key big is larger than")
    assert "the limit of 2.0 KiB per entry" in warning
    assert store.keys() == []


def test_paths_that_match_nothing_are_a_warning(executor: Executor) -> None:
    store = MemoryCacheStore()
    result, sink = executor(job(cache(key="none", path="nothing/**\n~/nothing")), caches=store)
    assert result.conclusion == "success"
    assert sink.lines(0)[-1] == (
        "Warning: Path Validation Error: Path(s) specified in the action for caching do(es) not "
        "exist, hence no cache is being saved."
    )
    assert store.keys() == []


# ------------------------------------------------------------------------ links and escapes


def test_links_are_stored_as_links_and_never_followed(executor: Executor, tmp_path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("do not cache\n")
    outside = tmp_path / "outside-dir"
    outside.mkdir()
    (outside / "secret.txt").write_text("do not cache\n")
    store = MemoryCacheStore()
    spec = job(
        step(
            f"mkdir -p deps && ln -s {secret} deps/escape && ln -s {outside} deps/escape-dir && "
            "echo in > deps/in.txt && ln -s in.txt deps/inside && "
            "ln -s $PWD/deps/in.txt deps/absolute-inside"
        ),
        cache(key="links", path="deps\ndeps/escape-dir/secret.txt"),
    )
    result, _ = executor(spec, caches=store)
    assert result.conclusion == "success"
    stored = members(store, "links")
    assert stored["workspace/deps/escape"] == ("sym", str(secret))
    assert stored["workspace/deps/escape-dir"] == ("sym", str(outside))
    assert stored["workspace/deps/inside"] == ("sym", "in.txt")
    # An absolute link inside the workspace is stored relative: it works wherever restored.
    assert stored["workspace/deps/absolute-inside"] == ("sym", "in.txt")
    assert not any(content == "do not cache\n" for _, content in stored.values())
    assert set(stored) == {
        "workspace/deps",
        "workspace/deps/in.txt",
        "workspace/deps/escape",
        "workspace/deps/escape-dir",
        "workspace/deps/inside",
        "workspace/deps/absolute-inside",
    }

    spec = job(cache(key="links", path="deps\ndeps/escape-dir/secret.txt"), step("cat deps/inside"))
    result, sink = executor(spec, caches=store)
    assert sink.lines(1) == ["in"]


def test_a_restore_never_writes_outside_the_workspace_and_home(
    executor: Executor, tmp_path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    store = MemoryCacheStore()
    hostile = {
        "dotdot": archive(("workspace/deps/ok.txt", "ok"), ("../escape.txt", "x")),
        "absolute": archive((f"{tmp_path}/absolute.txt", "x")),
        "nested": archive(("workspace/../../escape.txt", "x")),
        "other-root": archive(("etc/passwd", "x")),
        "hard-link": archive(("workspace/deps/h", "lnk", "/etc/passwd")),
        "fifo": archive(("workspace/deps/fifo", "fifo")),
    }
    for key, data in hostile.items():
        put(store, key, data)
    through_links = {
        # A link the entry itself creates, then a file "under" it.
        "own-link": archive(
            ("workspace/deps/link", "sym", str(outside)), ("workspace/deps/link/a", "x")
        ),
        # A link a step left where the entry has a directory.
        "step-link": archive(("workspace/deps/pre/b", "x")),
    }
    for key, data in through_links.items():
        put(store, key, data)

    steps = [step(f"mkdir -p deps && ln -s {outside} deps/pre")]
    steps += [cache(key=key, path="deps", id=key) for key in [*hostile, *through_links]]
    steps.append(step("ls deps/link deps/pre || true"))
    result, sink = executor(job(*steps), caches=store)
    assert result.conclusion == "success", sink.lines()
    for index in range(1, len(hostile) + 1):
        warning = sink.lines(index)[0]
        assert warning.startswith("Warning: Failed to restore: "), warning
        assert result.steps[index].outputs == {"cache-hit": "false"}
    assert "cannot be unpacked: '../escape.txt'" in sink.lines(1)[0]
    assert f"cannot be unpacked: '{tmp_path}/absolute.txt'" in sink.lines(2)[0]
    assert "cannot be unpacked: 'etc/passwd'" in sink.lines(4)[0]
    assert "hard link" in sink.lines(5)[0]
    assert "neither a file, a directory nor a link" in sink.lines(6)[0]
    for index in (7, 8):
        if executor.name == "docker":
            # The engine resolves links itself, inside the container's file system; one that
            # leads nowhere there fails the restore (a warning).
            assert sink.lines(index)[0].startswith("Warning: Failed to restore: cannot unpack")
        else:
            assert sink.lines(index)[0].startswith("Cache restored from key: ")
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "absolute.txt").exists()
    assert not (tmp_path / "escape.txt").exists()
    if executor.name != "docker":
        # The worker wrote here itself: the links are gone, real directories in their place.
        assert "a" in sink.lines(9) and "b" in sink.lines(9)


# ------------------------------------------------------------------------ inputs and the store


class Lines(list):
    def __call__(self, text: str) -> None:
        self.append(text)


class FakeBackend:
    """Workspace and HOME on host directories (the local executor's read and write)."""

    def __init__(self, root: Path) -> None:
        self.workspace = str(root / "workspace")
        self.home = str(root / "home")
        os.makedirs(self.workspace, exist_ok=True)
        os.makedirs(self.home, exist_ok=True)

    def read_tree(self, paths):
        return walk_tree(paths, (self.workspace, self.home))

    def write_tree(self, entries):
        write_tree_safely(entries, (self.workspace, self.home))


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({"path": "deps"}, "Input required and not supplied: key"),
        ({"key": "k"}, "Input required and not supplied: path"),
        ({"key": "a,b", "path": "deps"}, "Key Validation Error: a,b cannot contain commas."),
        ({"key": "k" * 513, "path": "deps"}, "cannot be larger than 512 characters"),
        (
            {"key": "k", "path": "deps", "restore-keys": "\n".join("r" * 10)},
            "Keys are limited to a maximum of 10",
        ),
        ({"key": "k", "path": "/etc"}, "path '/etc' is outside the workspace"),
        ({"key": "k", "path": "deps\n../up"}, "path '../up' is outside the workspace"),
        ({"key": "k", "path": "deps", "lookup-only": "maybe"}, "lookup-only must be true or"),
    ],
)
def test_bad_inputs_fail_the_restore_step_with_a_clear_message(tmp_path, inputs, message):
    store = MemoryCacheStore()
    with pytest.raises(CacheError, match=message.replace("(", r"\(").replace(".", r"\.")):
        run_restore(FakeBackend(tmp_path), store, inputs, Lines())
    assert store.records == []


def test_unexpected_inputs_are_a_warning(tmp_path):
    say = Lines()
    run_restore(FakeBackend(tmp_path), MemoryCacheStore(), {"key": "k", "path": "d", "x": "1"}, say)
    assert say[0].startswith("Warning: Unexpected input(s) 'x', valid inputs are ['path', 'key'")


def test_the_version_is_githubs_over_the_path_lines_as_written() -> None:
    assert cache_version(["node_modules"]) == hashlib.sha256(b"node_modules|gzip|1.0").hexdigest()
    assert input_lines("  a\n\n!  b \n~/c\n") == ["a", "!b", "~/c"]
    assert cache_version(["a"]) != cache_version(["b"])


def test_paths_are_placed_under_the_workspace_or_home() -> None:
    paths = parse_cache_paths(
        "deps\n/w/abs/**\n~/.npm\n!~/.npm/_logs\n/h/.cargo",
        workspace="/w",
        home="/h",
    )
    assert paths.roots == {"workspace": "/w", "home": "/h"}
    assert [p.text for p in paths.patterns["workspace"]] == ["deps", "abs/**"]
    assert [p.text for p in paths.patterns["home"]] == [".npm", "!.npm/_logs", ".cargo"]


def test_memory_store_lookup_follows_githubs_order() -> None:
    store = MemoryCacheStore(max_entry_bytes=10)
    for key in ("npm-a", "npm-b", "npm-ab", "yarn"):
        assert store.save(key, "v1", io.BytesIO(b"x"), 1)
    assert not store.save("npm-a", "v1", io.BytesIO(b"y"), 1)  # first writer wins
    assert store.save("npm-a", "v2", io.BytesIO(b"y"), 1)  # another version: another entry
    assert store.lookup(["npm-a"], "v1").exact
    assert store.lookup(["npm-"], "v1").key == "npm-ab"  # a prefix: the newest
    assert not store.lookup(["npm-"], "v1").exact
    assert store.lookup(["go", "yarn", "npm-"], "v1").key == "yarn"  # keys in order
    assert store.lookup(["go"], "v1") is None
    assert store.lookup(["yarn"], "v2") is None
    with pytest.raises(CacheError, match="over the limit"):
        store.save("huge", "v1", io.BytesIO(b"x" * 11), 11)


def test_hard_links_are_kept_and_a_link_to_a_file_left_out_carries_its_content(tmp_path):
    backend = FakeBackend(tmp_path / "saved")
    deps = Path(backend.workspace) / "deps"
    (deps / "skip").mkdir(parents=True)
    (deps / "a.txt").write_text("shared\n")
    os.link(deps / "a.txt", deps / "b.txt")
    (deps / "skip" / "c.txt").write_text("first name left out\n")
    os.link(deps / "skip" / "c.txt", deps / "d.txt")
    paths = parse_cache_paths("deps\n!deps/skip", workspace=backend.workspace, home=backend.home)
    out = io.BytesIO()
    summary = write_archive(backend, paths, out)
    assert summary.files == 3
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:gz") as tar:
        kinds = {m.name: (m.type, m.linkname) for m in tar}
    assert kinds["workspace/deps/b.txt"] == (tarfile.LNKTYPE, "workspace/deps/a.txt")
    assert kinds["workspace/deps/d.txt"][0] == tarfile.REGTYPE

    restored = FakeBackend(tmp_path / "restored")
    out.seek(0)
    assert restore_archive(restored, out) == (3, len("shared\n") + len("first name left out\n"))
    target = Path(restored.workspace) / "deps"
    assert (target / "a.txt").stat().st_ino == (target / "b.txt").stat().st_ino
    assert (target / "d.txt").read_text() == "first name left out\n"
    assert not (target / "skip").exists()


def test_cicd_exec_jobs_share_the_runs_caches(tmp_path) -> None:
    from tests.runners.test_offline import run_workflow

    text = """\
on: push
jobs:
  first:
    runs-on: linux
    steps:
      - uses: actions/cache@v4
        with: {key: offline, path: deps}
      - run: mkdir -p deps && echo from-first > deps/f.txt
  second:
    needs: first
    runs-on: linux
    steps:
      - uses: actions/cache@v4
        id: c
        with: {key: offline, path: deps}
      - run: echo "${{ steps.c.outputs.cache-hit }} $(cat deps/f.txt)"
"""
    result, recorder = run_workflow(text, tmp_path)
    assert result.conclusion == "success"
    assert recorder.lines("second")[-1] == "true from-first"


@pytest.mark.parametrize("size", [0, 1, 3 * 1024 * 1024 + 5])
def test_the_parallel_gzip_is_one_ordinary_gzip_stream(size: int) -> None:
    import gzip

    from runners.caches import _ParallelGzip

    # Compressible and incompressible blocks (the latter are stored), written in odd pieces.
    data = (b"abc" * size)[: size // 2] + os.urandom(size - size // 2)
    out = io.BytesIO()
    with _ParallelGzip(out) as packed:
        for start in range(0, len(data), 100_003):
            packed.write(data[start : start + 100_003])
        assert packed.tell() == len(data)
    assert gzip.decompress(out.getvalue()) == data
