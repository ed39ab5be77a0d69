"""parse_workflow: the model it builds, and every rule with its exact message and position."""

from __future__ import annotations

import textwrap

import pytest

from pipelines import WorkflowError, parse_workflow
from pipelines.model import (
    BuiltinAction,
    Concurrency,
    Container,
    Environment,
    FrozenMap,
    LocalAction,
    RetryPolicy,
    RunDefaults,
    Service,
    Workflow,
)
from pipelines.parser import allowed_contexts, cron_problem, find_cycles, parse_uses
from pipelines.schema import PULL_REQUEST_TYPES
from pipelines.triggers import DispatchInput, EventFilter

JOB = "    runs-on: ubuntu-latest\n    steps:\n      - run: make\n"


def parse(text: str, **options: int) -> Workflow:
    return parse_workflow(textwrap.dedent(text), "ci.yml", **options)


def problems(text: str, **options: int) -> list[tuple[int, int, str]]:
    with pytest.raises(WorkflowError) as info:
        parse(text, **options)
    assert all(p.file == "ci.yml" for p in info.value.problems)
    return [(p.line, p.column, p.message) for p in info.value.problems]


def only_problem(text: str, **options: int) -> tuple[int, int, str]:
    found = problems(text, **options)
    assert len(found) == 1, found
    return found[0]


# =============================================================================================
# The model


FULL = """\
name: CI
run-name: Build ${{ github.ref }}
on:
  push:
    branches: [main, 3.10, 'release/**']
    tags: [v*]
    paths-ignore: [docs/**]
  pull_request:
    types: [opened]
  workflow_dispatch:
    inputs:
      level:
        type: choice
        options: [low, high]
        default: low
      debug: {type: boolean, default: false}
      count: {type: number, default: 3}
      note: {description: A note, required: true}
  schedule:
    - cron: '0 3 * * 1-5'
env:
  PORT: 0080
  DEBUG: yes
defaults:
  run: {shell: bash, working-directory: src}
concurrency: {group: 'ci-${{ github.ref }}', cancel-in-progress: true}
permissions: {contents: read}
jobs:
  build:
    name: Build
    runs-on: [self-hosted, linux]
    container:
      image: python:3.12
      env: {A: 1}
      options: --cpus 2
      ports: [8080]
    services:
      db:
        image: postgres:16
        env: {POSTGRES_PASSWORD: x}
        ports: ['5432:5432']
    env: {VERSION: 3.10}
    strategy:
      matrix:
        python: [3.10, '3.11']
        os: [ubuntu]
      fail-fast: false
      max-parallel: 2
    timeout-minutes: 30
    continue-on-error: ${{ matrix.python == '3.11' }}
    outputs: {version: '${{ steps.v.outputs.version }}'}
    retry: {max-attempts: 3, backoff-seconds: 5}
    steps:
      - uses: actions/checkout@v4
        with: {fetch-depth: 0}
      - id: v
        name: Version
        run: echo version=1 >> $GITHUB_OUTPUT
        shell: sh
        working-directory: app
        env: {X: '1'}
        if: ${{ success() }}
        timeout-minutes: 5
        continue-on-error: true
        retry: {max-attempts: 2}
      - uses: ./.github/actions/setup
  deploy:
    needs: build
    if: github.ref == 'refs/heads/main'
    runs-on: {group: deployers, labels: linux}
    environment: {name: production, url: 'https://example.com'}
    concurrency: deploy
    steps:
      - run: ./deploy
"""


@pytest.fixture(scope="module")
def full() -> Workflow:
    return parse_workflow(FULL, ".cicd/workflows/ci.yml")


def test_workflow_fields(full: Workflow) -> None:
    assert full.path == ".cicd/workflows/ci.yml"
    assert full.name == "CI"
    assert full.run_name == "Build ${{ github.ref }}"
    assert full.env == {"PORT": "0080", "DEBUG": "yes"}
    assert full.defaults == RunDefaults(shell="bash", working_directory="src")
    assert full.concurrency == Concurrency(group="ci-${{ github.ref }}", cancel_in_progress=True)
    assert full.permissions == {"contents": "read"}
    assert list(full.jobs) == ["build", "deploy"]


def test_triggers(full: Workflow) -> None:
    triggers = full.triggers
    assert triggers.push == EventFilter(
        branches=("main", "3.10", "release/**"), tags=("v*",), paths_ignore=("docs/**",)
    )
    assert triggers.pull_request == EventFilter(types=("opened",))
    assert triggers.schedule == ("0 3 * * 1-5",)
    assert triggers.workflow_dispatch == (
        DispatchInput("level", "choice", default="low", options=("low", "high")),
        DispatchInput("debug", "boolean", default=False),
        DispatchInput("count", "number", default=3),
        DispatchInput("note", description="A note", required=True),
    )


def test_job_fields(full: Workflow) -> None:
    job = full.jobs["build"]
    assert job.name == "Build" and job.display_name == "Build"
    assert job.runs_on == ("self-hosted", "linux")
    assert job.container == Container(
        image="python:3.12", env=FrozenMap({"A": "1"}), options="--cpus 2", ports=("8080",)
    )
    assert job.services == {
        "db": Service(
            id="db",
            image="postgres:16",
            env=FrozenMap({"POSTGRES_PASSWORD": "x"}),
            ports=("5432:5432",),
        )
    }
    assert job.env == {"VERSION": "3.10"}
    assert job.timeout_minutes == 30
    assert job.continue_on_error == "${{ matrix.python == '3.11' }}"
    assert job.outputs == {"version": "${{ steps.v.outputs.version }}"}
    assert job.retry == RetryPolicy(max_attempts=3, backoff_seconds=5.0)
    assert job.needs == ()


def test_strategy_keeps_version_numbers_as_written(full: Workflow) -> None:
    strategy = full.jobs["build"].strategy
    assert strategy is not None
    assert strategy.matrix == {"python": ("3.10", "3.11"), "os": ("ubuntu",)}
    assert strategy.combinations == (
        {"python": "3.10", "os": "ubuntu"},
        {"python": "3.11", "os": "ubuntu"},
    )
    assert strategy.fail_fast is False
    assert strategy.max_parallel == 2


def test_steps(full: Workflow) -> None:
    checkout, version, local = full.jobs["build"].steps
    assert checkout.index == 0
    assert checkout.action == BuiltinAction("actions/checkout", "v4")
    assert checkout.with_args == {"fetch-depth": "0"}
    assert checkout.display_name == "Run actions/checkout@v4"
    assert version.id == "v" and version.name == "Version"
    assert version.shell == "sh" and version.working_directory == "app"
    assert version.if_condition == "${{ success() }}"
    assert version.timeout_minutes == 5
    assert version.continue_on_error is True
    assert version.retry == RetryPolicy(max_attempts=2)
    assert version.action is None and version.uses is None
    assert local.action == LocalAction("./.github/actions/setup")


def test_second_job(full: Workflow) -> None:
    job = full.jobs["deploy"]
    assert job.needs == ("build",)
    assert job.if_condition == "github.ref == 'refs/heads/main'"
    assert job.runs_on == ("linux",) and job.runner_group == "deployers"
    assert job.environment == Environment("production", "https://example.com")
    assert job.concurrency == Concurrency("deploy")
    assert job.timeout_minutes == 360
    assert job.strategy is None


def test_model_is_immutable_and_hashable(full: Workflow) -> None:
    with pytest.raises(AttributeError):
        full.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        full.jobs["x"] = full.jobs["build"]  # type: ignore[index]
    assert isinstance(full.jobs["build"].steps, tuple)
    assert hash(full.jobs["build"].strategy) == hash(full.jobs["build"].strategy)


def test_same_text_gives_equal_workflows() -> None:
    assert parse_workflow(FULL, "a.yml") == parse_workflow(FULL, "a.yml")


@pytest.mark.parametrize(
    ("on", "push", "pull_request", "dispatch"),
    [
        ("push", EventFilter(), None, None),
        ("[push, pull_request]", EventFilter(), EventFilter(), None),
        ("workflow_dispatch", None, None, ()),
        ("{push: }", EventFilter(), None, None),
    ],
)
def test_short_forms_of_on(on: str, push: object, pull_request: object, dispatch: object) -> None:
    workflow = parse(f"on: {on}\njobs:\n  build:\n{JOB}")
    assert workflow.triggers.push == push
    assert workflow.triggers.pull_request == pull_request
    assert workflow.triggers.workflow_dispatch == dispatch


def test_yaml_traps_where_strings_are_expected() -> None:
    workflow = parse(
        """\
        on:
          push:
            branches: [3.10, yes, on]
        env: {A: no, B: 1.50, C: true}
        jobs:
          build:
            runs-on: 3.10
            strategy:
              matrix:
                python: [3.10, 3.9]
                flag: [yes, no]
            steps:
              - uses: actions/checkout@v4
                with: {ref: 1.0}
        """
    )
    assert workflow.triggers.push is not None
    assert workflow.triggers.push.branches == ("3.10", "yes", "on")
    assert workflow.env == {"A": "no", "B": "1.50", "C": "true"}
    job = workflow.jobs["build"]
    assert job.runs_on == ("3.10",)
    assert job.strategy is not None and job.strategy.combinations is not None
    assert [dict(c) for c in job.strategy.combinations] == [
        {"python": "3.10", "flag": "yes"},
        {"python": "3.10", "flag": "no"},
        {"python": "3.9", "flag": "yes"},
        {"python": "3.9", "flag": "no"},
    ]
    assert job.steps[0].with_args == {"ref": "1.0"}


def test_matrix_integers_stay_numbers() -> None:
    workflow = parse(
        "on: push\njobs:\n  build:\n    strategy:\n      matrix:\n        node: [18, 20]\n" + JOB
    )
    strategy = workflow.jobs["build"].strategy
    assert strategy is not None and strategy.combinations == ({"node": 18}, {"node": 20})


def test_matrix_expression_is_expanded_at_run_time() -> None:
    workflow = parse(
        """\
        on: push
        jobs:
          build:
            strategy:
              matrix: ${{ fromJSON(needs.setup.outputs.matrix) }}
            runs-on: x
            steps: [{run: make}]
          other:
            strategy:
              matrix:
                os: ${{ fromJSON('["a"]') }}
            runs-on: x
            steps: [{run: make}]
        """
    )
    build = workflow.jobs["build"].strategy
    other = workflow.jobs["other"].strategy
    assert build is not None and build.matrix == "${{ fromJSON(needs.setup.outputs.matrix) }}"
    assert build.combinations is None
    assert other is not None and other.combinations is None


def test_anchors_work_in_workflows() -> None:
    workflow = parse(
        """\
        on: push
        jobs:
          a:
            runs-on: &runner ubuntu-latest
            steps: &steps
              - run: make
          b:
            runs-on: *runner
            steps: *steps
        """
    )
    assert workflow.jobs["a"].steps == workflow.jobs["b"].steps


# =============================================================================================
# YAML-level problems come through parse_workflow


def test_empty_file() -> None:
    assert only_problem("") == (
        1,
        1,
        "the file is empty; expected a workflow mapping with 'on' and 'jobs'",
    )


def test_top_level_list() -> None:
    assert only_problem("- on: push\n") == (
        1,
        1,
        "expected a mapping at the top level, got a list",
    )


def test_file_too_big() -> None:
    line, column, message = only_problem("a: b\n", max_bytes=4)
    assert (line, column) == (1, 1)
    assert "5 bytes" in message and "limit of 4 bytes" in message


def test_duplicate_job() -> None:
    text = f"on: push\njobs:\n  build:\n{JOB}  build:\n{JOB}"
    assert only_problem(text) == (7, 3, "duplicate key 'build' (first defined at line 3)")


def test_duplicate_key_does_not_hide_other_mistakes() -> None:
    text = f"on: push\njobs:\n  build:\n{JOB}        run: again\n  other:\n    runs-on: x\n"
    text += "    steps: [{uses: foo/bar@v1}]\n"
    assert [p[:2] for p in problems(text)] == [(7, 9), (10, 20)]


def test_numeric_job_id_is_reported_once() -> None:
    assert only_problem(f"on: push\njobs:\n  1:\n{JOB}") == (
        3,
        3,
        "mapping key 1 must be a string, got a number; quote it: '1'",
    )


def test_tab() -> None:
    assert only_problem("on: push\njobs:\n  build:\n\truns-on: x\n")[:2] == (4, 1)


# =============================================================================================
# Schema messages


def test_unknown_key_with_suggestion() -> None:
    text = "on: push\njobs:\n  build:\n    runs_on: x\n    steps: [{run: make}]\n"
    assert only_problem(text) == (
        4,
        5,
        "unknown key 'runs_on' in job 'build' (did you mean 'runs-on'?)",
    )


def test_unknown_key_without_suggestion() -> None:
    assert only_problem(f"on: push\nzzz: 1\njobs:\n  build:\n{JOB}") == (
        2,
        1,
        "unknown key 'zzz' at the top level",
    )


def test_unknown_key_in_a_step() -> None:
    text = f"on: push\njobs:\n  build:\n{JOB}        wth: {{a: 1}}\n"
    assert only_problem(text) == (
        7,
        9,
        "unknown key 'wth' in step 1 of job 'build' (did you mean 'with'?)",
    )


def test_unknown_key_in_a_nested_mapping() -> None:
    text = f"on: push\njobs:\n  build:\n    strategy: {{fail_fast: false}}\n{JOB}"
    assert only_problem(text) == (
        4,
        16,
        "unknown key 'fail_fast' in 'strategy' of job 'build' (did you mean 'fail-fast'?)",
    )


def test_missing_required_key() -> None:
    text = "on: push\njobs:\n  build:\n    steps: [{run: make}]\n"
    assert only_problem(text) == (3, 3, "missing required key 'runs-on' in job 'build'")


def test_missing_required_keys_are_one_problem() -> None:
    text = "on: push\njobs:\n  build:\n    name: x\n"
    assert only_problem(text) == (
        3,
        3,
        "missing required keys 'runs-on' and 'steps' in job 'build'",
    )


def test_missing_on_and_jobs() -> None:
    assert only_problem("name: x\n") == (
        1,
        1,
        "missing required keys 'on' and 'jobs' at the top level",
    )


def test_wrong_type() -> None:
    text = f"on: push\njobs:\n  build:\n    timeout-minutes: [1]\n{JOB}"
    assert only_problem(text) == (
        4,
        22,
        "'timeout-minutes' must be a number or an expression, got a list",
    )


def test_wrong_type_of_a_job() -> None:
    assert only_problem("on: push\njobs:\n  build: make\n") == (
        3,
        10,
        "job 'build' must be a mapping, got a string ('make')",
    )


def test_yaml11_boolean_hint() -> None:
    text = f"on: push\njobs:\n  build:\n    continue-on-error: yes\n{JOB}"
    assert only_problem(text) == (
        4,
        24,
        "'continue-on-error' must be a boolean or an expression, got a string ('yes'); "
        "YAML reads yes/no/on/off as strings: write true or false",
    )


def test_enum() -> None:
    text = f"on: push\njobs:\n  build:\n{JOB}        shell: zsh\n"
    assert only_problem(text) == (
        7,
        16,
        "'shell' must be one of: bash, sh, pwsh, python, cmd, powershell, got a string ('zsh')",
    )


def test_expression_accepted_where_github_accepts_one() -> None:
    parse(
        """\
        on: push
        jobs:
          build:
            runs-on: x
            timeout-minutes: ${{ inputs.minutes }}
            continue-on-error: ${{ matrix.experimental }}
            strategy:
              matrix: {v: [1]}
              fail-fast: ${{ inputs.ff }}
              max-parallel: ${{ inputs.n }}
            steps:
              - run: make
                shell: ${{ matrix.shell }}
                timeout-minutes: ${{ inputs.minutes }}
        """
    )


def test_minimum() -> None:
    text = f"on: push\njobs:\n  build:\n    strategy: {{max-parallel: 0}}\n{JOB}"
    assert only_problem(text) == (4, 30, "'max-parallel' must be at least 1, got a number (0)")


def test_empty_steps() -> None:
    assert only_problem("on: push\njobs:\n  build:\n    runs-on: x\n    steps: []\n") == (
        5,
        12,
        "'steps' must not be empty",
    )


def test_empty_jobs() -> None:
    assert only_problem("on: push\njobs: {}\n") == (2, 7, "'jobs' must not be empty")


def test_unsupported_event_in_a_list() -> None:
    assert only_problem(f"on: [push, release]\njobs:\n  build:\n{JOB}") == (
        1,
        12,
        "unsupported event 'release'; supported events are: "
        "push, pull_request, workflow_dispatch, schedule",
    )


def test_unsupported_event_in_a_mapping() -> None:
    assert only_problem(f"on:\n  pull-request:\njobs:\n  build:\n{JOB}") == (
        2,
        3,
        "unsupported event 'pull-request' in 'on' (did you mean 'pull_request'?); "
        "supported events are: pull_request, push, schedule, workflow_dispatch",
    )


def test_schedule_without_crons() -> None:
    line, column, message = only_problem(f"on: schedule\njobs:\n  build:\n{JOB}")
    assert (line, column) == (1, 5)
    assert message.startswith("'schedule' needs its cron entries")


def test_reusable_workflow_jobs_are_not_supported() -> None:
    text = "on: push\njobs:\n  call:\n    uses: org/repo/.github/workflows/x.yml@v1\n"
    assert only_problem(text) == (
        4,
        5,
        "job 'call' uses a reusable workflow ('uses' on a job), which is not supported; "
        "give the job 'runs-on' and 'steps'",
    )


def test_shape_alternatives_pick_the_matching_one() -> None:
    text = f"on: push\njobs:\n  build:\n    environment: {{name: prod, uri: x}}\n{JOB}"
    assert only_problem(text) == (
        4,
        31,
        "unknown key 'uri' in 'environment' of job 'build' (did you mean 'url'?)",
    )


def test_shape_alternatives_that_do_not_fit() -> None:
    text = f"on: push\njobs:\n  build:\n    environment: [prod]\n{JOB}"
    assert only_problem(text) == (
        4,
        18,
        "'environment' must be an environment name or a mapping with 'name' and 'url', got a list",
    )


def test_retry_extension_limits() -> None:
    text = f"on: push\njobs:\n  build:\n    retry: {{max-attempts: 0}}\n{JOB}"
    assert only_problem(text) == (4, 27, "'max-attempts' must be at least 1, got a number (0)")


def test_non_finite_numbers_are_rejected() -> None:
    text = f"on: push\njobs:\n  build:\n    timeout-minutes: .nan\n{JOB}"
    assert "'timeout-minutes' must be a number" in only_problem(text)[2]


def test_all_schema_problems_are_reported_at_once() -> None:
    text = """\
    on: push
    jobs:
      a:
        runs-on: x
        timeout-minutes: soon
        steps: [{run: make, shel: bash}]
      b:
        runs-on: [x, 1.5]
        steps: make
    """
    assert [p[:2] for p in problems(text)] == [(5, 22), (6, 25), (9, 12)]


# =============================================================================================
# Semantic rules


def test_invalid_job_id() -> None:
    text = f"on: push\njobs:\n  build.linux:\n{JOB}"
    assert only_problem(text) == (
        3,
        3,
        "invalid job id 'build.linux': job ids must start with a letter or '_' and contain "
        "only letters, digits, '-' and '_'",
    )


def test_job_id_may_start_with_underscore() -> None:
    parse(f"on: push\njobs:\n  _build-1:\n{JOB}")


def test_invalid_step_id() -> None:
    text = f"on: push\njobs:\n  build:\n{JOB}        id: 1st\n"
    assert only_problem(text)[:2] == (7, 13)


def test_duplicate_step_id() -> None:
    text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n"
    text += "      - {id: s, run: a}\n      - {id: s, run: b}\n"
    assert only_problem(text) == (
        7,
        14,
        "duplicate step id 's' in job 'build' (first used by step 1); "
        "step ids must be unique in a job",
    )


def test_step_with_both_run_and_uses() -> None:
    text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n"
    text += "      - run: make\n        uses: actions/checkout@v4\n"
    assert only_problem(text) == (
        6,
        9,
        "step 1 of job 'build' has both 'run' and 'uses'; a step runs a command or uses an action",
    )


def test_step_with_neither_run_nor_uses() -> None:
    text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - name: nothing\n"
    assert only_problem(text) == (
        6,
        9,
        "step 1 of job 'build' has neither 'run' nor 'uses'; add one of them",
    )


def test_with_on_a_run_step() -> None:
    text = f"on: push\njobs:\n  build:\n{JOB}        with: {{a: 1}}\n"
    assert only_problem(text)[:2] == (7, 9)


def test_invalid_service_id() -> None:
    text = f"on: push\njobs:\n  build:\n    services:\n      my.db: {{image: x}}\n{JOB}"
    assert only_problem(text)[:2] == (5, 7)


# -- needs ------------------------------------------------------------------------------------


def test_needs_missing_job() -> None:
    text = f"on: push\njobs:\n  test:\n{JOB}  deploy:\n    needs: tests\n{JOB}"
    assert only_problem(text) == (
        8,
        12,
        "job 'deploy' needs 'tests', which is not a job in this workflow (did you mean 'test'?)",
    )


def test_needs_missing_job_in_a_list() -> None:
    text = f"on: push\njobs:\n  test:\n{JOB}  deploy:\n    needs: [test, zzz]\n{JOB}"
    assert only_problem(text) == (
        8,
        19,
        "job 'deploy' needs 'zzz', which is not a job in this workflow",
    )


def test_needs_cycle() -> None:
    text = f"""\
on: push
jobs:
  build:
    needs: test
{JOB}  test:
    needs: [build]
{JOB}"""
    assert only_problem(text) == (4, 12, "needs cycle: build -> test -> build")


def test_needs_cycle_starts_with_the_first_job_in_file_order() -> None:
    text = f"""\
on: push
jobs:
  lint:
{JOB}  c:
    needs: a
{JOB}  a:
    needs: b
{JOB}  b:
    needs: [lint, c]
{JOB}"""
    assert only_problem(text) == (8, 12, "needs cycle: c -> a -> b -> c")


def test_self_needs() -> None:
    text = f"on: push\njobs:\n  build:\n    needs: [build]\n{JOB}"
    assert only_problem(text) == (4, 13, "needs cycle: build -> build")


def test_one_problem_per_cycle() -> None:
    text = f"""\
on: push
jobs:
  a:
    needs: b
{JOB}  b:
    needs: a
{JOB}  c:
    needs: c
{JOB}  d:
    needs: [a]
{JOB}"""
    assert [p[2] for p in problems(text)] == ["needs cycle: a -> b -> a", "needs cycle: c -> c"]


def test_find_cycles_directly() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["b"], "d": ["d", "a"]}
    assert find_cycles(graph, ["a", "b", "c", "d"]) == [["b", "c", "b"], ["d", "d"]]
    assert find_cycles({"a": [], "b": ["a"]}, ["a", "b"]) == []


# -- matrix -----------------------------------------------------------------------------------


def _matrix_job(axes: str) -> str:
    return f"on: push\njobs:\n  build:\n    strategy:\n      matrix:\n{axes}{JOB}"


def test_matrix_over_the_cap() -> None:
    axes = (
        "        a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n        b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n"
    )
    axes += "        c: [1, 2, 3]\n"
    assert only_problem(_matrix_job(axes)) == (
        6,
        9,
        "matrix of job 'build' expands to 300 combinations, more than the limit of 256",
    )


def test_matrix_cap_is_configurable() -> None:
    axes = "        a: [1, 2, 3]\n        b: [1, 2]\n"
    assert only_problem(_matrix_job(axes), matrix_cap=5)[2] == (
        "matrix of job 'build' expands to 6 combinations, more than the limit of 5"
    )
    parse(_matrix_job(axes), matrix_cap=6)


def test_huge_matrix_is_rejected_without_expanding_it() -> None:
    values = "[" + ", ".join(str(n) for n in range(100)) + "]"
    axes = "".join(f"        a{n}: {values}\n" for n in range(6))
    assert "expands to 1000000000000 combinations" in only_problem(_matrix_job(axes))[2]


def test_matrix_errors_are_placed_at_the_matrix() -> None:
    axes = "        os: [a]\n        exclude: [{os: a}]\n"
    line, column, message = only_problem(_matrix_job(axes))
    assert (line, column) == (6, 9)
    assert message.startswith("invalid matrix in job 'build': matrix has no combinations")


def test_matrix_axis_must_be_a_list() -> None:
    assert only_problem(_matrix_job("        os: linux\n")) == (
        6,
        13,
        "'os' must be a list of values or an expression, got a string ('linux')",
    )


# -- uses -------------------------------------------------------------------------------------

UNSUPPORTED = (
    "; built-in actions are: actions/cache, actions/checkout, actions/download-artifact, "
    "actions/upload-artifact, cicd/deploy, and local actions (./path)"
)


def _uses(uses: str, with_args: str = "") -> str:
    text = f"on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - uses: {uses}\n"
    return text + (f"        with: {with_args}\n" if with_args else "")


@pytest.mark.parametrize("uses", ["foo/bar@v1", "docker://alpine:3", "actions/setup-node@v4"])
def test_unsupported_action(uses: str) -> None:
    assert only_problem(_uses(uses)) == (6, 15, f"unsupported action '{uses}'" + UNSUPPORTED)


@pytest.mark.parametrize(
    "uses",
    [
        "actions/checkout@v4",
        "actions/cache@v4.1.2",
        "Actions/Upload-Artifact@main",
        "actions/download-artifact@0123abcd",
    ],
)
def test_builtin_actions_at_any_ref(uses: str) -> None:
    required = {"cache": "{key: k, path: p}", "upload": "{path: p}"}
    with_args = next((args for name, args in required.items() if name in uses.lower()), "")
    parse(_uses(uses, with_args))


def test_builtin_action_needs_a_ref() -> None:
    assert only_problem(_uses("actions/checkout")) == (
        6,
        15,
        "action 'actions/checkout' needs a version after '@', e.g. 'actions/checkout@v4'",
    )


def test_local_action() -> None:
    assert parse_uses("./.github/actions/build") == LocalAction("./.github/actions/build")
    assert parse_uses("./a/../../x") == (
        "local action './a/../../x' must stay inside the repository (no '..')"
    )


def test_unknown_input_of_a_builtin_action() -> None:
    assert only_problem(_uses("actions/checkout@v4", "{fetch_depth: 0}")) == (
        7,
        16,
        "unknown input 'fetch_depth' for actions/checkout (did you mean 'fetch-depth'?); "
        "accepted inputs: clean, fetch-depth, lfs, path, persist-credentials, ref, repository, "
        "submodules, token",
    )


def test_required_inputs_of_a_builtin_action() -> None:
    assert only_problem(_uses("actions/cache@v4", "{path: x}")) == (
        7,
        9,
        "actions/cache needs the input 'key' (under 'with')",
    )
    assert only_problem(_uses("actions/upload-artifact@v4")) == (
        6,
        15,
        "actions/upload-artifact needs the input 'path' (under 'with')",
    )


# -- on: --------------------------------------------------------------------------------------


def _on(on: str) -> str:
    return f"on:\n{textwrap.indent(textwrap.dedent(on), '  ')}jobs:\n  build:\n{JOB}"


def test_invalid_cron() -> None:
    assert only_problem(_on("schedule:\n  - cron: '61 * * * *'\n")) == (
        3,
        13,
        "invalid cron '61 * * * *': minute 61 is out of range 0-59; "
        "expected five fields: minute hour day-of-month month day-of-week",
    )


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("* * * *", "it has 4 fields"),
        ("0 0 * * * *", "it has 6 fields"),
        ("@daily", "it has 1 field"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 0 * *", "day-of-month 0 is out of range 1-31"),
        ("0 0 * 13 *", "month 13 is out of range 1-12"),
        ("x * * * *", "minute 'x' is not a number (0-59)"),
        ("0 0 * * FOO", "day-of-week 'FOO' is not a number (0-7) or a name (SUN-SAT)"),
        ("0 0 * JANUARY *", "month 'JANUARY' is not a number (1-12) or a name (JAN-DEC)"),
        ("*/0 * * * *", "minute '*/0' has an invalid step '0'"),
        ("0 0 L * *", "day-of-month 'L' is not a number (1-31)"),
    ],
)
def test_cron_reasons(cron: str, reason: str) -> None:
    problem = cron_problem(cron)
    assert problem is not None and reason in problem


@pytest.mark.parametrize("cron", ["0 3 * * 1-5", "*/15 * * * *", "0 0 1 JAN MON", "30 2 * * 0,6"])
def test_valid_crons(cron: str) -> None:
    assert cron_problem(cron) is None


def test_pull_request_activity_types() -> None:
    assert only_problem(_on("pull_request:\n  types: [openned, closed]\n")) == (
        3,
        13,
        "unsupported pull_request activity type 'openned' (did you mean 'opened'?); "
        "supported pull_request activity types are: " + ", ".join(PULL_REQUEST_TYPES),
    )


def test_push_has_no_activity_types() -> None:
    assert only_problem(_on("push:\n  types: [opened]\n"))[2] == (
        "unknown key 'types' in 'on.push'"
    )


def test_invalid_filter_pattern() -> None:
    line, column, message = only_problem(_on("push:\n  branches: [main, '[z-a]']\n"))
    assert (line, column) == (3, 22)
    assert message.startswith("invalid pattern '[z-a]' in 'branches': ")


def test_include_and_ignore_filters_cannot_be_mixed() -> None:
    text = _on("push:\n  branches: [main]\n  branches-ignore: [dev]\n")
    assert only_problem(text) == (
        4,
        5,
        "'branches' and 'branches-ignore' cannot both be used for the same event; "
        "use '!' patterns in 'branches' instead",
    )


def test_choice_input_needs_options() -> None:
    text = _on("workflow_dispatch:\n  inputs:\n    level: {type: choice}\n")
    assert only_problem(text) == (
        4,
        7,
        "input 'level' of type choice needs a non-empty 'options' list",
    )


def test_choice_default_must_be_an_option() -> None:
    text = _on(
        "workflow_dispatch:\n  inputs:\n    level: {type: choice, options: [a, b], default: c}\n"
    )
    assert only_problem(text) == (
        4,
        55,
        "the default 'c' of input 'level' is not one of its options: a, b",
    )


def test_boolean_default_must_be_a_boolean() -> None:
    text = _on("workflow_dispatch:\n  inputs:\n    debug: {type: boolean, default: yes}\n")
    assert only_problem(text) == (
        4,
        39,
        "the default of boolean input 'debug' must be true or false, got a string ('yes')",
    )


def test_options_only_for_choice() -> None:
    text = _on("workflow_dispatch:\n  inputs:\n    name: {options: [a]}\n")
    assert only_problem(text)[2] == (
        "'options' is only used by inputs of type choice; input 'name' is a string"
    )


def test_unknown_input_type() -> None:
    text = _on("workflow_dispatch:\n  inputs:\n    x: {type: text}\n")
    assert only_problem(text) == (
        4,
        17,
        "'type' must be one of: string, boolean, choice, number, environment, "
        "got a string ('text')",
    )


# -- expressions ------------------------------------------------------------------------------


def _step_env(value: str) -> str:
    return f"on: push\njobs:\n  build:\n{JOB}        env:\n          A: {value}\n"


def test_bad_expression_position_inside_a_plain_scalar() -> None:
    # column of `A: ` value is 14; `x ${{ ` is 6 characters, then `1 +` puts '+' at 2.
    line, column, message = only_problem(_step_env("x ${{ 1 + }}"))
    assert (line, column) == (8, 22)
    assert message.startswith("invalid expression: ")


def test_bad_expression_position_inside_a_quoted_scalar() -> None:
    assert only_problem(_step_env("'x ${{ 1 + }}'"))[:2] == (8, 23)


def test_bad_expression_position_inside_a_literal_block() -> None:
    text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - run: |\n"
    text += "          echo ok\n          echo ${{ github.sha ) }}\n"
    line, column, message = only_problem(text)
    assert (line, column) == (8, 31)
    assert message == "invalid expression: unexpected ')' (there is no '(' for it to close)"


def test_repeated_lines_in_a_block_map_to_the_right_line() -> None:
    text = "on: push\njobs:\n  build:\n    runs-on: x\n    steps:\n      - run: |\n"
    text += "          echo ${{ a.b }}\n          echo ${{ a.b }}\n"
    assert [p[:2] for p in problems(text)] == [(7, 20), (8, 20)]


def test_unclosed_template() -> None:
    line, column, message = only_problem(_step_env("x ${{ github.sha"))
    assert (line, column) == (8, 16)
    assert "never closed" in message


def test_unknown_context() -> None:
    assert only_problem(_step_env("${{ foo.bar }}")) == (
        8,
        18,
        "unknown context 'foo'; available here: env, github, inputs, job, matrix, needs, "
        "runner, secrets, steps, strategy, vars",
    )


def test_bare_if_condition() -> None:
    text = f"on: push\njobs:\n  build:\n    if: github.ref == 'x' && foo\n{JOB}"
    assert only_problem(text) == (
        4,
        30,
        "unknown context 'foo'; available here: github, inputs, needs, vars",
    )


def test_wrapped_if_condition() -> None:
    text = f"on: push\njobs:\n  build:\n    if: ${{{{ github.ref == ) }}}}\n{JOB}"
    line, column, message = only_problem(text)
    assert (line, column) == (4, 27)
    assert message.startswith("invalid expression: ")


@pytest.mark.parametrize(
    ("where", "context"),
    [
        ("    if: steps.a.outputs.b\n", "steps"),
        ("    if: matrix.os\n", "matrix"),
        ("    runs-on: ${{ env.RUNNER }}\n    steps: [{run: make}]\n", "env"),
        ("    env: {A: '${{ steps.x.outputs.y }}'}\n", "steps"),
        ("    strategy: {max-parallel: '${{ matrix.n }}'}\n", "matrix"),
    ],
)
def test_contexts_not_available_at_job_level(where: str, context: str) -> None:
    base = "on: push\njobs:\n  build:\n" + where
    if "runs-on" not in where:
        base += JOB
    message = only_problem(base)[2]
    assert message.startswith(f"the '{context}' context is not available in ")


def test_secrets_are_not_available_in_step_if() -> None:
    text = f"on: push\njobs:\n  build:\n{JOB}        if: secrets.TOKEN != ''\n"
    assert only_problem(text)[2].startswith(
        "the 'secrets' context is not available in 'if' of step 1 of job 'build'"
    )


def test_status_functions_only_in_conditions() -> None:
    line, column, message = only_problem(_step_env("${{ always() }}"))
    assert (line, column) == (8, 18)
    assert "can only be used in 'if' conditions" in message


def test_expressions_not_supported_in_uses() -> None:
    assert only_problem(_uses("${{ matrix.action }}"))[2] == (
        "expressions are not supported in 'uses' of step 1 of job 'build'"
    )


def test_reading_needs_of_a_job_that_is_not_needed() -> None:
    env = "        env: {X: '${{ needs.a.outputs.v }}'}\n"
    text = f"on: push\njobs:\n  a:\n{JOB}  b:\n{JOB}{env}"
    assert only_problem(text)[2] == (
        "job 'b' reads needs.a but does not need 'a'; add it to the job's 'needs'"
    )


def test_hash_files_only_in_steps() -> None:
    text = f"on: push\njobs:\n  build:\n    if: hashFiles('*.lock') != ''\n{JOB}"
    assert only_problem(text) == (
        4,
        9,
        "hashFiles() is only available in steps (it reads the job's files), "
        "not in 'if' of job 'build'",
    )
    parse(f"on: push\njobs:\n  build:\n{JOB}        if: hashFiles('*.lock') != ''\n")


def test_all_contexts_are_fine_in_a_step() -> None:
    parse(
        _step_env(
            "${{ github.sha }}${{ env.A }}${{ vars.V }}${{ secrets.S }}${{ matrix.m }}"
            "${{ needs }}${{ steps.s.outputs.o }}${{ job.status }}${{ runner.os }}"
            "${{ inputs.i }}${{ strategy.job-index }}"
        )
    )


def test_allowed_contexts_table() -> None:
    assert allowed_contexts(("run-name",)) == {"github", "inputs", "vars"}
    assert allowed_contexts(("env", "A")) == {"github", "inputs", "vars", "secrets"}
    assert allowed_contexts(("jobs", "b", "if")) == {"github", "needs", "vars", "inputs"}
    assert allowed_contexts(("on", "push", "branches", 0)) is None
    step_if = allowed_contexts(("jobs", "b", "steps", 0, "if"))
    assert step_if is not None and "steps" in step_if and "secrets" not in step_if


# -- everything at once -----------------------------------------------------------------------


def test_all_problems_of_a_file_are_reported_in_file_order() -> None:
    text = """\
    on:
      schedule:
        - cron: '0 25 * * *'
    jobs:
      build:
        runs_on: x
        runs-on: x
        needs: [nope]
        steps:
          - uses: foo/bar@v1
          - run: echo ${{ 1 + }}
    """
    assert [p[:2] for p in problems(text)] == [(3, 13), (6, 5), (8, 13), (10, 15), (11, 25)]
