"""Benchmarks: the figures that tell how fast and how big cicd is on this machine.

`python -m bench` (or `bin/bench`, which also starts PostgreSQL, Redis and Docker) starts the
real system (`cicd serve`: daphne, Celery workers with beat) on PostgreSQL + Redis, and on the
embedded default where a figure says so, drives it over HTTP and WebSockets like a git host and
browsers would, reads what happened from the database, prints a table and writes every figure to
a JSON file (`bench.report`).

Each benchmark is a module with `run(context)` returning its figures:

    memory      RSS of the web server and the workers, idle and after many runs
    ingest      signed webhook deliveries acknowledged per second; none lost or doubled
    latency     push to first step running and to job finished (local and Docker executors)
    throughput  trivial jobs finished per second; scheduler dispatch rate alone
    biglog      a 1,000,000-line log: job page, raw log, the whole log over the WebSocket
    livelogs    one job printing fast, watched by 1, 10 and 100 WebSocket viewers
    deploy      cicd/deploy by each strategy under load (no server: the engine, Docker, HAProxy)

Nothing here imports Django: the harness is a client of the system, as a git host or a browser
is; it reads results with plain SQL and sets data up through `cicd manage shell`. `--smoke` runs
every benchmark with a tiny load, so that the test suite keeps them working
(tests/test_bench_smoke.py); benchmarks never pass or fail on speed.
"""
