"""`on.schedule`: entries are read from the default branch, and each minute slot starts one
run, however many schedulers look at it."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection

from runs.models import Run, Schedule
from runs.triggering import fire_due_schedules, start_push, sync_schedules

NIGHTLY = """\
on:
  schedule:
    - cron: '*/5 * * * *'
    - cron: '0 3 * * 1'
  push:
    branches: [nothing]
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo nightly
"""


@pytest.mark.django_db
def test_schedules_follow_the_default_branch(repository, origin):
    first = origin.commit({".cicd/workflows/nightly.yml": NIGHTLY})
    assert sync_schedules(repository) == 2
    assert set(Schedule.objects.values_list("workflow_path", "cron", "sha")) == {
        (".cicd/workflows/nightly.yml", "*/5 * * * *", first),
        (".cicd/workflows/nightly.yml", "0 3 * * 1", first),
    }
    # A push to another branch changes nothing; a push to the default branch refreshes.
    origin.git("checkout", "-q", "-b", "feature")
    feature = origin.commit({".cicd/workflows/nightly.yml": NIGHTLY.replace("0 3", "0 4")})
    start_push(repository, ref="refs/heads/feature", before=first, after=feature)
    assert Schedule.objects.filter(cron="0 3 * * 1").exists()
    origin.git("checkout", "-q", "main")
    second = origin.commit({".cicd/workflows/nightly.yml": None})
    start_push(repository, ref="refs/heads/main", before=first, after=second)
    assert not Schedule.objects.exists()


@pytest.mark.django_db
def test_a_slot_fires_at_its_minutes_only(repository, origin):
    sha = origin.commit({".cicd/workflows/nightly.yml": NIGHTLY})
    sync_schedules(repository)
    created = Schedule.objects.get(cron="*/5 * * * *").created_at
    # The next */5 minute after the entry was recorded, seen 30 s late.
    slot = created.replace(second=0, microsecond=0) + timedelta(minutes=5 - created.minute % 5)
    runs = fire_due_schedules(slot + timedelta(seconds=30))
    assert [(run.event, run.ref, run.sha, run.actor) for run in runs] == [
        ("schedule", "refs/heads/main", sha, "schedule")
    ]
    assert runs[0].event_payload == {"schedule": "*/5 * * * *"}
    # The next tick, and one a minute later, start nothing new for that slot.
    assert fire_due_schedules(slot + timedelta(seconds=45)) == runs
    assert Run.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_start_each_slot_once(repository, origin):
    every_minute = NIGHTLY.replace("*/5 * * * *", "* * * * *")
    origin.commit({".cicd/workflows/nightly.yml": every_minute})
    sync_schedules(repository)
    created = Schedule.objects.get(cron="* * * * *").created_at
    now = created.replace(second=0, microsecond=0) + timedelta(minutes=3, seconds=10)
    barrier = threading.Barrier(4)
    errors = []

    def scheduler() -> None:
        try:
            barrier.wait()
            for _ in range(2):
                fire_due_schedules(now)
        except Exception as error:  # reported below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    # The slots after the entry was recorded: +1, +2 and +3 minutes.
    assert Run.objects.filter(event="schedule").count() == 3
