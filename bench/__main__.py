"""`python -m bench`: run the benchmarks, print the table, write the JSON file.

    python -m bench [--only ingest,latency,...] [--smoke] [--out bench-results.json]
                    [--postgres URL] [--redis URL]

Benchmarks that need the same kind of system share one, started once, in the order below (a
system has run everything before it: the memory benchmark goes first so that "idle" means a
fresh system). Only one system runs at a time. A benchmark that fails is reported (in the
table's output and the JSON's `errors`) and the others still run; the exit status is then 1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench import biglog, deploy, ingest, latency, livelogs, memory, throughput
from bench.report import ROOT, Figure, Report
from bench.system import BenchError, Services, System, SystemSpec

BENCHMARKS = ("ingest", "latency", "throughput", "livelogs", "memory", "biglog", "deploy")
# The scaled setup with its default worker count: the memory figures are per process, and every
# figure that is not about throughput shares it. Throughput's own has two job workers.
SCALED = SystemSpec("postgres", executor="local")
SCALED_TWO_WORKERS = SystemSpec("postgres", executor="local", workers=2)
EMBEDDED = SystemSpec("sqlite", executor="local")


def docker_spec() -> SystemSpec:
    from bench.images import ensure_busybox_image

    return SystemSpec(
        "postgres", executor="docker", env=(("CICD_DEFAULT_IMAGE", ensure_busybox_image()),)
    )


@dataclass(frozen=True)
class Part:
    benchmark: str
    name: str
    spec: SystemSpec | Callable[[], SystemSpec] | None
    run: Callable[..., list[Figure]]


PARTS = (
    Part("memory", "memory", SCALED, memory.run),
    Part("ingest", "ingest", SCALED, ingest.run),
    Part("latency", "local executor", SCALED, latency.run_local),
    Part("biglog", "biglog", SCALED, biglog.run),
    Part("livelogs", "livelogs", SCALED, livelogs.run),
    Part("throughput", "PostgreSQL + Redis", SCALED_TWO_WORKERS, throughput.run_system),
    Part("latency", "Docker executor", docker_spec, latency.run_docker),
    Part("throughput", "embedded", EMBEDDED, throughput.run_system),
    Part("throughput", "dispatch", None, throughput.run_dispatch),
    Part("deploy", "deploy", None, deploy.run),
)


@dataclass
class Context:
    """What a lane of parts shares: the mode, a scratch directory, the services, the one
    system it runs at a time, and what a part that runs no system asks to be removed when the
    lane stops before it could (an interrupted deployment benchmark's services)."""

    smoke: bool
    scratch: Path
    services: Services
    running: System | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def system(self, spec: SystemSpec) -> System:
        if self.running is not None and self.running.spec == spec:
            return self.running
        self.stop()
        system = System(spec, scratch=self.scratch, services=self.services)
        self.running = system
        log(f"starting cicd serve: {spec.label}")
        system.start()
        return system

    def stop(self) -> None:
        while self.cleanups:
            cleanup = self.cleanups.pop()
            try:
                cleanup()
            except Exception as error:  # the others must still run
                log(f"cleanup failed: {error}")
        if self.running is not None:
            running, self.running = self.running, None
            running.stop()


def log(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def lanes(parts: list[Part], smoke: bool) -> list[list[Part]]:
    """The parts, in lanes that run one after the other (the figures) or, with --smoke, side by
    side (a smoke run checks that everything works: it measures nothing, and is kept short)."""
    if not smoke:
        return [parts] if parts else []
    grouped: dict[object, list[Part]] = {}
    for part in parts:
        # One PostgreSQL + Redis system with two workers serves every part that can share it.
        key = SCALED_TWO_WORKERS if part.spec == SCALED else part.spec
        grouped.setdefault(key, []).append(part)
    return list(grouped.values())


def spec_of(part: Part, smoke: bool) -> SystemSpec | None:
    if part.spec is None:
        return None
    if smoke and part.spec == SCALED:
        return SCALED_TWO_WORKERS
    return part.spec() if callable(part.spec) else part.spec


def run_lane(lane: list[Part], context: Context, report: Report) -> None:
    try:
        for part in lane:
            log(f"{part.benchmark}: {part.name}")
            started = time.monotonic()
            try:
                spec = spec_of(part, context.smoke)
                if spec is None:
                    figures = part.run(context)
                else:
                    figures = part.run(context, context.system(spec))
                for index, figure in enumerate(figures):
                    report.figures.append(figure)
                    report.ranks[id(figure)] = (PARTS.index(part), index)
            except Exception as error:
                message = str(error) if isinstance(error, BenchError) else traceback.format_exc()
                report.errors.append(
                    {"benchmark": part.benchmark, "part": part.name, "error": message}
                )
                log(f"{part.benchmark} ({part.name}) failed: {message}")
                context.stop()  # the next part starts from a fresh system
            finally:
                key = part.benchmark
                report.durations[key] = report.durations.get(key, 0.0) + time.monotonic() - started
    finally:
        context.stop()


def _interrupt(signum: int, frame: object) -> None:
    """SIGTERM (a test's timeout, a CI runner) stops the systems as Ctrl-C does."""
    raise KeyboardInterrupt


def redis_urls(first: str, count: int) -> list[str]:
    """`first` and the logical databases after it: lanes running side by side each need one
    (Celery's queues and the channel layer live in it)."""
    base, _, number = first.rstrip("/").rpartition("/")
    if not number.isdigit():
        base, number = first.rstrip("/"), "0"
    return [f"{base}/{int(number) + i}" for i in range(count)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bin/bench", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=",".join(BENCHMARKS),
        help=f"comma-separated benchmarks to run (default all: {','.join(BENCHMARKS)})",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny loads: checks, not figures")
    parser.add_argument("--out", default=str(ROOT / "bench-results.json"), help="the JSON file")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "CICD_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres"
        ),
        help="a PostgreSQL database to connect to; each system gets a new one next to it",
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("CICD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/5"),
        help="a Redis logical database the benchmarks flush (default db 5; with --smoke, "
        "the next one too)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    args = parser.parse_args(argv)
    only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(only) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown: {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")

    signal.signal(signal.SIGTERM, _interrupt)
    given = argv if argv is not None else sys.argv[1:]
    report = Report(smoke=args.smoke, argv=["bin/bench", *given])
    scratch = Path(tempfile.mkdtemp(prefix="cicd-bench-"))
    planned = lanes([part for part in PARTS if part.benchmark in only], args.smoke)
    urls = iter(redis_urls(args.redis, len(planned)))
    contexts = [
        Context(
            args.smoke,
            scratch,
            Services(
                args.postgres,
                next(urls) if any(p.spec not in (None, EMBEDDED) for p in lane) else "",
            ),
        )
        for lane in planned
    ]
    try:
        threads = [
            threading.Thread(target=run_lane, args=(lane, context, report), daemon=True)
            for lane, context in zip(planned, contexts, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
    finally:
        for context in contexts:
            context.stop()
        if args.keep:
            log(f"scratch directory kept: {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    order = {name: index for index, name in enumerate(BENCHMARKS)}
    report.figures.sort(key=lambda f: (order[f.benchmark], report.ranks.get(id(f), (0, 0))))
    out = Path(args.out)
    report.write(out)
    print(report.table())
    for error in report.errors:
        print(f"\nFAILED {error['benchmark']} ({error['part']}):\n{error['error']}")
    print(f"\nJSON: {out}")
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
