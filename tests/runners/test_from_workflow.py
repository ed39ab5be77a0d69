"""From workflow text to a job result: parse, build the job spec, run it on the local executor."""

from __future__ import annotations

import pytest

from pipelines import build_plan, parse_workflow
from runners.events import FAILURE, SUCCESS, RecordingSink
from runners.executor import LOCAL, RunnerConfig, choose_executor, run_job
from runners.from_workflow import ServiceOptionsError, job_spec_for, parse_service_options

WORKFLOW = """\
on: push
env:
  GREETING: hello
jobs:
  test:
    runs-on: linux
    timeout-minutes: 5
    strategy:
      matrix:
        python: [3.10, "3.12"]
    env:
      TARGET: py${{ matrix.python }}
    outputs:
      flavour: ${{ steps.pick.outputs.flavour }}
    services:
      db:
        image: postgres:${{ matrix.python }}
        options: --health-cmd "pg_isready -U postgres" --health-interval 3s --health-retries 7
    steps:
      - id: pick
        run: |
          echo "$GREETING from $TARGET"
          echo "flavour=${{ matrix.python }}-${{ github.ref_name }}" >> "$GITHUB_OUTPUT"
      - if: ${{ matrix.python == '3.12' }}
        run: exit 3
"""


def specs(**kwargs):
    workflow = parse_workflow(WORKFLOW, ".cicd/workflows/ci.yml")
    plan = build_plan(workflow)
    job = workflow.jobs["test"]
    return [
        job_spec_for(
            workflow,
            job,
            job_id=f"t-{instance.key}",
            run_id="7",
            matrix=instance.matrix,
            display_name=instance.display_name,
            contexts={"github": {"ref_name": "main", "ref": "refs/heads/main"}},
            **kwargs,
        )
        for instance in plan.job("test").instances
    ]


def test_job_level_expressions_are_evaluated_and_versions_keep_their_text():
    first, second = specs()
    assert first.name == "test (3.10)"
    assert first.contexts["matrix"] == {"python": "3.10"}
    assert first.services[0].image == "postgres:3.10"
    assert first.services[0].health_cmd == "pg_isready -U postgres"
    assert first.services[0].health_interval_seconds == 3.0
    assert first.services[0].health_retries == 7
    assert first.timeout_minutes == 5.0
    assert second.services[0].image == "postgres:3.12"
    assert dict(first.env) == {"GREETING": "hello", "TARGET": "py${{ matrix.python }}"}


def test_a_parsed_job_runs_end_to_end_on_the_local_executor(tmp_path):
    config = RunnerConfig(executor=LOCAL, work_dir=tmp_path, grace_seconds=1.0)
    results = {}
    for spec in specs():
        local_spec = spec.__class__(**{**_fields(spec), "services": ()})
        sink = RecordingSink()
        results[spec.name] = (run_job(local_spec, sink, config), sink)

    ok, ok_sink = results["test (3.10)"]
    assert ok.conclusion == SUCCESS
    assert "hello from py3.10" in ok_sink.lines()
    assert ok.outputs == {"flavour": "3.10-main"}

    failed, failed_sink = results["test (3.12)"]
    # Once, in CI, the first step of this job failed instead (cause unknown): say why if again.
    assert failed.steps[0].conclusion == SUCCESS, (failed.steps[0], failed_sink.lines())
    assert failed.conclusion == FAILURE
    assert failed.steps[1].exit_code == 3


def _fields(spec):
    return {name: getattr(spec, name) for name in spec.__dataclass_fields__}


def test_choose_executor_honours_a_pinned_setting():
    assert choose_executor(RunnerConfig(executor=LOCAL)) == LOCAL


def test_runner_config_reads_the_settings(settings, tmp_path):
    settings.CICD_JOB_MEMORY_MB = 512
    settings.CICD_JOB_PIDS = 99
    settings.CICD_STEP_OUTPUT_CAP_MB = 0.5
    settings.CICD_WORK_DIR = tmp_path
    config = RunnerConfig.from_settings(settings)
    assert config.limits.memory_bytes == 512 * 1024 * 1024
    assert config.limits.pids == 99
    assert config.step_output_cap == 512 * 1024
    assert config.work_dir == tmp_path


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ("--privileged", "option --privileged is not supported"),
        ("--health-interval soon", "--health-interval 'soon' is not a duration"),
        ("--health-cmd", "option --health-cmd needs a value"),
        ('--health-cmd "unclosed', "No closing quotation"),
    ],
)
def test_service_options_we_cannot_honour_are_refused(options, message):
    with pytest.raises(ServiceOptionsError, match=message):
        parse_service_options("db", options)


def test_service_options_accept_equals_form_and_units():
    parsed = parse_service_options(
        "db", "--health-cmd=true --health-interval=500ms --health-retries 4"
    )
    assert parsed == {"cmd": "true", "interval": 0.5, "retries": 4}


def test_step_retry_reaches_the_spec():
    workflow = parse_workflow(
        "on: push\njobs:\n  a:\n    runs-on: x\n    steps:\n      - run: make\n"
        "        retry: {max-attempts: 4, backoff-seconds: 2}\n",
        "ci.yml",
    )
    spec = job_spec_for(workflow, workflow.jobs["a"], job_id="1", run_id="1")
    step = spec.steps[0]
    assert (step.retry_max_attempts, step.retry_backoff_seconds) == (4, 2.0)
