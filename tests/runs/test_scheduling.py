"""The DAG: needs, if, skip propagation, matrices, fail-fast, max-parallel, outputs, roll-up."""

from __future__ import annotations

import pytest

from runs.models import Job, Run
from runs.scheduling import advance_run
from runs.states import State

from .conftest import execute, jobs_of, start_run, states

pytestmark = pytest.mark.django_db

DIAMOND = """\
on: push
jobs:
  setup:
    runs-on: linux
    outputs:
      version: ${{ steps.v.outputs.version }}
    steps:
      - id: v
        run: echo version=1.2 >> "$GITHUB_OUTPUT"
  test:
    needs: setup
    runs-on: linux
    strategy:
      matrix:
        python: [3.10, "3.12"]
    steps:
      - run: pytest
  lint:
    needs: setup
    runs-on: linux
    steps:
      - run: ruff
  release:
    needs: [setup, test, lint]
    if: needs.setup.outputs.version != ''
    runs-on: linux
    steps:
      - run: release
"""


def test_a_diamond_with_a_matrix_runs_in_dependency_order(repository):
    run = start_run(repository, DIAMOND)
    assert run.number == 1
    assert states(run) == {
        "setup": "queued",
        "test-3.10": "pending",
        "test-3.12": "pending",
        "lint": "pending",
        "release": "pending",
    }
    assert jobs_of(run)["test-3.10"].name == "test (3.10)"
    assert jobs_of(run)["test-3.10"].matrix == {"python": "3.10"}

    execute(run, "setup", outputs={"version": "1.2"})
    assert states(run)["test-3.10"] == states(run)["lint"] == "queued"
    run.refresh_from_db()
    assert run.state == "queued"  # nothing runs right now

    execute(run, "test-3.10")
    execute(run, "lint")
    assert states(run)["release"] == "pending"  # test-3.12 still going
    execute(run, "test-3.12")
    assert states(run)["release"] == "queued"
    execute(run, "release")
    run.refresh_from_db()
    assert run.state == "success"
    assert run.finished_at is not None


def test_outputs_reach_dependants_through_needs(repository):
    source = DIAMOND.replace(
        "if: needs.setup.outputs.version != ''", "if: needs.setup.outputs.version == '9'"
    )
    run = start_run(repository, source)
    execute(run, "setup", outputs={"version": "1.2"})
    for key in ("test-3.10", "test-3.12", "lint"):
        execute(run, key)
    assert states(run)["release"] == "skipped"
    run.refresh_from_db()
    assert run.state == "success"  # skipped jobs do not fail a run


def test_a_failure_skips_dependants_transitively_unless_they_ask_for_always(repository):
    source = """\
on: push
jobs:
  build:
    runs-on: linux
    steps: [{run: make}]
  test:
    needs: build
    runs-on: linux
    steps: [{run: test}]
  deploy:
    needs: test
    runs-on: linux
    steps: [{run: deploy}]
  report:
    needs: deploy
    if: always()
    runs-on: linux
    steps: [{run: report}]
  on-failure:
    needs: build
    if: failure()
    runs-on: linux
    steps: [{run: alert}]
"""
    run = start_run(repository, source)
    execute(run, "build", "failure")
    assert states(run) == {
        "build": "failure",
        "test": "skipped",
        "deploy": "skipped",
        "report": "queued",
        "on-failure": "queued",
    }
    execute(run, "report")
    execute(run, "on-failure")
    run.refresh_from_db()
    assert run.state == "failure"


def test_fail_fast_cancels_the_other_combinations(repository):
    source = """\
on: push
jobs:
  test:
    runs-on: linux
    strategy:
      matrix:
        n: [1, 2, 3]
    steps: [{run: test}]
"""
    run = start_run(repository, source)
    execute(run, "test-1", "failure")
    assert states(run) == {"test-1": "failure", "test-2": "cancelled", "test-3": "cancelled"}
    run.refresh_from_db()
    assert run.state == "failure"


def test_without_fail_fast_the_others_go_on(repository):
    source = """\
on: push
jobs:
  test:
    runs-on: linux
    strategy:
      fail-fast: false
      matrix:
        n: [1, 2]
    steps: [{run: test}]
"""
    run = start_run(repository, source)
    execute(run, "test-1", "failure")
    assert states(run) == {"test-1": "failure", "test-2": "queued"}


def test_max_parallel_limits_how_many_combinations_are_queued(repository):
    source = """\
on: push
jobs:
  test:
    runs-on: linux
    strategy:
      max-parallel: 2
      matrix:
        n: [1, 2, 3, 4, 5]
    steps: [{run: test}]
"""
    run = start_run(repository, source)
    assert sorted(states(run).values()) == ["pending"] * 3 + ["queued"] * 2
    execute(run, "test-1")
    current = states(run)
    assert list(current.values()).count("queued") == 2
    for key in ("test-2", "test-3", "test-4", "test-5"):
        if states(run)[key] == "queued":
            execute(run, key)
    for key in ("test-2", "test-3", "test-4", "test-5"):
        if states(run)[key] == "queued":
            execute(run, key)
    assert set(states(run).values()) == {"success"}


def test_a_matrix_from_an_expression_is_expanded_when_its_needs_are_done(repository):
    source = """\
on: push
jobs:
  plan:
    runs-on: linux
    outputs:
      targets: ${{ steps.p.outputs.targets }}
    steps: [{id: p, run: plan}]
  build:
    needs: plan
    runs-on: linux
    strategy:
      matrix:
        target: ${{ fromJSON(needs.plan.outputs.targets) }}
    steps: [{run: build}]
"""
    run = start_run(repository, source)
    assert states(run) == {"plan": "queued", "build": "pending"}
    execute(run, "plan", outputs={"targets": '["arm", "x86"]'})
    built = jobs_of(run)
    assert {
        key: (job.name, job.matrix, job.state) for key, job in built.items() if key != "plan"
    } == {
        "build-1": ("build (arm)", {"target": "arm"}, "queued"),
        "build-2": ("build (x86)", {"target": "x86"}, "queued"),
    }


def test_a_matrix_expression_that_is_not_a_mapping_fails_that_job(repository):
    source = """\
on: push
jobs:
  plan:
    runs-on: linux
    steps: [{run: plan}]
  build:
    needs: plan
    runs-on: linux
    strategy:
      matrix: ${{ fromJSON('[1, 2]') }}
    steps: [{run: build}]
"""
    run = start_run(repository, source)
    execute(run, "plan")
    build = jobs_of(run)["build"]
    assert build.state == "failure"
    assert "not a mapping" in build.error
    run.refresh_from_db()
    assert run.state == "failure"


def test_an_invalid_workflow_makes_a_visible_failed_run(repository):
    run = start_run(
        repository, "on: push\njobs:\n  a:\n    needs: b\n    runs-on: x\n    steps: [{run: x}]\n"
    )
    assert run.state == "failure"
    assert "needs 'b', which is not a job" in run.error
    assert ".cicd/workflows/ci.yml:4:" in run.error
    assert not Job.objects.filter(run=run).exists()


def test_the_same_idempotency_key_gives_the_same_run_and_numbers_count_up(repository):
    first = start_run(repository, DIAMOND, idempotency_key="push-abc")
    again = start_run(repository, DIAMOND, idempotency_key="push-abc")
    other = start_run(repository, DIAMOND, idempotency_key="push-def")
    assert again.id == first.id
    assert (first.number, other.number) == (1, 2)
    assert Run.objects.count() == 2
    assert Job.objects.filter(run=first).count() == 5


def test_advancing_twice_changes_nothing_more(repository):
    run = start_run(repository, DIAMOND)
    execute(run, "setup")
    before = states(run)
    advance_run(run.id)
    advance_run(run.id)
    assert states(run) == before


def test_the_run_is_running_while_a_job_runs(repository):
    from runs.claims import claim_job

    run = start_run(repository, DIAMOND)
    claim_job(jobs_of(run)["setup"].id, worker="w", lease_seconds=60)
    advance_run(run.id)
    run.refresh_from_db()
    assert run.state == State.RUNNING
    assert run.started_at is not None


def test_runs_on_expressions_are_evaluated_when_the_job_is_queued(repository):
    source = """\
on: push
jobs:
  test:
    runs-on: ${{ matrix.os }}
    strategy:
      matrix:
        os: [linux, gpu-box]
    steps: [{run: test}]
"""
    run = start_run(repository, source)
    jobs = jobs_of(run)
    assert jobs["test-linux"].runs_on == ["linux"]
    assert jobs["test-gpu-box"].runs_on == ["gpu-box"]


def test_fail_fast_and_max_parallel_may_be_expressions(repository):
    source = """\
on: workflow_dispatch
jobs:
  test:
    runs-on: linux
    strategy:
      fail-fast: ${{ inputs.strict == 'yes' }}
      max-parallel: ${{ fromJSON(inputs.width) }}
      matrix:
        n: [1, 2, 3]
    steps: [{run: test}]
"""
    lenient = start_run(repository, source, inputs={"strict": "no", "width": "2"})
    assert sorted(states(lenient).values()) == ["pending", "queued", "queued"]
    execute(lenient, "test-1", "failure")
    assert states(lenient) == {"test-1": "failure", "test-2": "queued", "test-3": "queued"}

    strict = start_run(repository, source, inputs={"strict": "yes", "width": "3"})
    assert sorted(states(strict).values()) == ["queued"] * 3
    execute(strict, "test-1", "failure")
    assert states(strict) == {"test-1": "failure", "test-2": "cancelled", "test-3": "cancelled"}


def test_an_expression_matrix_names_its_jobs_as_the_static_plan_does(repository):
    source = """\
on: push
jobs:
  plan:
    runs-on: linux
    outputs:
      matrix: ${{ steps.m.outputs.m }}
    steps: [{id: m, run: plan}]
  test:
    needs: plan
    runs-on: linux
    strategy:
      matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}
    steps: [{run: test}]
"""
    run = start_run(repository, source)
    matrix = '{"os": ["linux", "mac"], "include": [{"os": "linux", "extra": "x"}]}'
    execute(run, "plan", outputs={"matrix": matrix})
    names = {job.name for key, job in jobs_of(run).items() if key.startswith("test")}
    # GitHub leaves values merged in by `include` out of the name.
    assert names == {"test (linux)", "test (mac)"}
