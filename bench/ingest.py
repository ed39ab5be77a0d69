"""Webhook ingest: signed push deliveries acknowledged per second, and none lost or doubled.

Several client processes (each with a few kept-alive connections, one thread each) send
distinct signed GitHub push deliveries to `cicd serve` over loopback as fast as they are
answered. A 202 means the delivery is in the database. Each repeat is one burst; after it the
harness waits until every delivery was processed, so the next burst does not compete with the
last one's processing, and compares the runs created with the deliveries acknowledged: each tag
pushed must have started exactly one run.

Bodies and signatures are made before the clock starts; the clients share the machine's cores
with the server, which the figures' load says.
"""

from __future__ import annotations

import multiprocessing
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

from bench.hooks import Poster, hook_path, push_body, signed_headers
from bench.report import Figure, Target
from bench.system import BenchError, System, epoch

REPOSITORIES = 4


@dataclass(frozen=True)
class Load:
    repeats: int
    deliveries: int  # per repeat
    processes: int
    connections: int  # per process


FULL = Load(repeats=3, deliveries=2000, processes=4, connections=4)
SMOKE = Load(repeats=1, deliveries=24, processes=2, connections=2)


def run(context: Any, system: System) -> list[Figure]:
    load = SMOKE if context.smoke else FULL
    names = [f"ingest-{i}" for i in range(REPOSITORIES)]
    system.add_repositories(names)
    words = (
        f"{load.repeats} burst{'s' if load.repeats > 1 else ''} of {load.deliveries:,} signed "
        "push deliveries (~6 KB each) over "
        f"{REPOSITORIES} repositories from {load.processes} client processes x "
        f"{load.connections} kept-alive connections, loopback, clients on the same cores"
    )
    rates, processed_rates, latencies_ms = [], [], []
    lost, duplicated, refused = [], [], Counter()
    for _ in range(load.repeats):
        prefix = f"i-{uuid.uuid4().hex[:8]}-"
        acked, statuses, seconds, latencies = _burst(system, names, prefix, load)
        refused.update({s: n for s, n in statuses.items() if s != 202})
        rates.append(acked / seconds)
        latencies_ms += [1000 * value for value in latencies]
        processed_rates.append(_wait_processed(system, prefix, acked))
        runs = dict(
            system.query(
                "SELECT ref, count(*) FROM runs_run WHERE ref LIKE %s GROUP BY ref",
                f"refs/tags/{prefix}%",
            )
        )
        lost.append(float(acked - len(runs)))
        duplicated.append(float(sum(count - 1 for count in runs.values())))
    if refused:
        raise BenchError(f"deliveries not acknowledged with 202: {dict(refused)}")
    setup = system.spec.label
    return [
        Figure(
            "ingest.ack_rate", "deliveries acknowledged (202) per second", "deliveries/s",
            words, setup, rates, target=Target(">=", 1000),
        ),
        Figure(
            "ingest.ack_latency", "acknowledgement latency", "ms", words, setup, latencies_ms,
            sample="delivery",
        ),
        Figure(
            "ingest.processed_rate", "deliveries processed into runs per second", "deliveries/s",
            words, setup, processed_rates,
            details={"measured": "first delivery received to last one processed, per burst"},
        ),
        Figure("ingest.lost", "acknowledged deliveries without a run", "deliveries", words,
               setup, lost),
        Figure("ingest.duplicated", "extra runs for one delivery", "runs", words, setup,
               duplicated),
    ]  # fmt: skip


def _burst(
    system: System, names: list[str], prefix: str, load: Load
) -> tuple[int, Counter, float, list[float]]:
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    ready = spawn.Barrier(load.processes + 1)
    go = spawn.Event()
    clients = [
        spawn.Process(
            target=client,
            args=(system.url, names, system.sha, prefix, load, index, ready, go, results),
            daemon=True,
        )
        for index in range(load.processes)
    ]
    for process in clients:
        process.start()
    try:
        ready.wait(timeout=120)
        go.set()
        outcomes = [results.get(timeout=900) for _ in clients]
    finally:
        for process in clients:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
    errors = [o["error"] for o in outcomes if o.get("error")]
    if errors:
        raise BenchError(f"a webhook client failed: {errors[0]}")
    statuses: Counter = Counter()
    latencies: list[float] = []
    for outcome in outcomes:
        statuses.update(outcome["statuses"])
        latencies += outcome["latencies"]
    started = min(o["started"] for o in outcomes)
    ended = max(o["ended"] for o in outcomes)
    return statuses[202], statuses, ended - started, latencies


def client(
    url: str,
    names: list[str],
    sha: str,
    prefix: str,
    load: Load,
    index: int,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    """One client process: its share of the deliveries over `load.connections` connections."""
    try:
        mine = range(index, load.deliveries, load.processes)
        prepared = []
        for number in mine:
            repository = names[number % len(names)]
            body = push_body(repository, f"{prefix}{number}", sha)
            headers = signed_headers(body, str(uuid.uuid4()))
            prepared.append((hook_path(repository), body, headers))
        shares = [prepared[i :: load.connections] for i in range(load.connections)]
        statuses: Counter = Counter()
        latencies: list[float] = []
        lock = threading.Lock()

        def send(share: list[tuple[str, bytes, dict[str, str]]]) -> None:
            poster = Poster(url)
            mine_statuses, mine_latencies = Counter(), []
            for path, body, headers in share:
                status, seconds = poster.post(path, body, headers)
                mine_statuses[status] += 1
                mine_latencies.append(seconds)
            poster.close()
            with lock:
                statuses.update(mine_statuses)
                latencies.extend(mine_latencies)

        threads = [threading.Thread(target=send, args=(share,)) for share in shares]
        ready.wait(timeout=120)
        go.wait(timeout=120)
        started = time.monotonic()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        ended = time.monotonic()
        results.put(
            {"statuses": dict(statuses), "latencies": latencies, "started": started,
             "ended": ended}
        )  # fmt: skip
    except Exception as error:  # reported by the parent: a client must never just vanish
        results.put({"error": f"{type(error).__name__}: {error}"})


def _wait_processed(system: System, prefix: str, acked: int) -> float:
    """Waits until every delivery of the burst was processed (a failed one counts: its runs
    are missing, which `lost` shows); returns deliveries per second from the first one received
    to the last one processed."""
    like = f'%"refs/tags/{prefix}%'

    def pending() -> int:
        return system.query(
            "SELECT count(*) FROM webhooks_delivery WHERE state = 'received' AND body LIKE %s",
            like,
        )[0][0]

    system.wait_until(lambda: pending() == 0, timeout=900, what="deliveries processed", every=0.5)
    first, last, count = system.query(
        "SELECT min(received_at), max(processed_at), count(*) FROM webhooks_delivery "
        "WHERE body LIKE %s",
        like,
    )[0]
    if count != acked:
        raise BenchError(f"{acked} deliveries acknowledged but {count} stored")
    return count / max(1e-6, epoch(last) - epoch(first))
