"""How many jobs per second `claim_next` dispatches: claim the best job, finish it, repeat.

No-op jobs (claimed and reported successful at once), a backlog spread over several tenants and
repositories, on a scratch database: a fresh SQLite file by default, or with
`--postgres postgres://user@host:port/db` a new database created next to that one and dropped
after. This is the "scheduler dispatch rate alone" figure of `bin/bench --only throughput`.

Usage: .venv/bin/python -m bench.dispatch [--jobs 2000] [--postgres URL] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--postgres", default="")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    scratch = tempfile.mkdtemp(prefix="cicd-bench-dispatch-")
    os.environ["CICD_DATA_DIR"] = scratch
    os.environ.pop("REDIS_URL", None)
    name = ""
    if args.postgres:
        import psycopg

        name = f"cicd_bench_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(args.postgres, autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        os.environ["DATABASE_URL"] = args.postgres.rsplit("/", 1)[0] + f"/{name}"
    else:
        os.environ.pop("DATABASE_URL", None)
    try:
        result = run(args.jobs)
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"{result['vendor']}: {result['jobs']} no-op jobs from a backlog of "
                f"{result['backlog']} in {result['seconds']:.2f} s = "
                f"{result['per_second']:.0f} claims+finishes per second (one worker)"
            )
    finally:
        if name:
            from django.db import connections

            connections.close_all()
            with psycopg.connect(args.postgres, autocommit=True) as c:
                c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(scratch, ignore_errors=True)


def run(jobs: int) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "cicd.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from runs.claims import claim_next
    from runs.models import Job, Organisation, Repository, Run
    from runs.states import State
    from runs.transitions import move_job

    call_command("migrate", verbosity=0)
    now = timezone.now()
    repositories = []
    for t in range(5):
        organisation = Organisation.objects.create(slug=f"t{t}", name=f"t{t}")
        for r in range(4):
            repositories.append(
                Repository.objects.create(
                    organisation=organisation, slug=f"r{r}", clone_url="x", priority=r % 3
                )
            )
    rows = []
    for index, repository in enumerate(repositories):
        run = Run.objects.create(
            repository=repository,
            number=1,
            workflow_path="ci.yml",
            workflow_name="ci",
            workflow_source="",
            event="push",
            ref="refs/heads/main",
            sha="a" * 40,
            idempotency_key=f"bench-{index}",
            state=State.RUNNING,
        )
        rows += [
            Job(
                run=run,
                workflow_job_id="b",
                key=f"b-{i}",
                name="b",
                state=State.QUEUED,
                priority=repository.priority,
                queued_at=now,
            )
            for i in range(jobs // len(repositories))
        ]
    Job.objects.bulk_create(rows)
    total = len(rows)
    started = time.perf_counter()
    done = 0
    while True:
        claimed = claim_next(worker="bench", labels=["linux"], lease_seconds=60)
        if claimed is None:
            break
        job_id, token = claimed
        assert move_job(job_id, State.SUCCESS, from_states={State.RUNNING}, token=token)
        done += 1
    elapsed = time.perf_counter() - started
    assert done == total, (done, total)
    return {
        "vendor": connection.vendor,
        "jobs": done,
        "backlog": total,
        "seconds": elapsed,
        "per_second": done / elapsed,
    }


if __name__ == "__main__":
    main()
