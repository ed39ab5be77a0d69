"""The executor suite: every test runs on every executor of `conftest.EXECUTORS`.

Steps are plain POSIX shell (the Docker test image is busybox), and the tests never assume where
the workspace is: they ask the step.
"""

from __future__ import annotations

import base64
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from runners.events import (
    CANCELLED,
    FAILURE,
    SKIPPED,
    SUCCESS,
    TIMED_OUT,
    CancelToken,
    RecordingSink,
    StepResult,
)
from runners.logs import LogLine
from tests.runners.conftest import GITHUB, GRACE_SECONDS, Executor, GitRepo, job, step


def outcomes(result) -> list[str]:
    return [s.outcome for s in result.steps]


def step_result(result, index: int) -> StepResult:
    return next(s for s in result.steps if s.index == index)


def stdout(sink: RecordingSink, index: int) -> list[str]:
    return [
        e[2].text
        for e in sink.events
        if e[0] == "log" and e[1] == index and isinstance(e[2], LogLine) and e[2].stream == "stdout"
    ]


def values(sink: RecordingSink, index: int) -> dict[str, str]:
    """`NAME=value` lines a step printed."""
    pairs = (line.split("=", 1) for line in stdout(sink, index) if "=" in line)
    return {name: value for name, value in pairs}


# ------------------------------------------------------------------------ env, outputs, files


def test_env_flows_between_steps_through_github_env(executor: Executor) -> None:
    spec = job(
        step('echo "GREETING=hello world" >> "$GITHUB_ENV"'),
        step(
            "{ echo 'LETTER<<EOF'; echo 'Dear reader,'; echo; echo 'bye'; echo 'EOF'; }"
            ' >> "$GITHUB_ENV"'
        ),
        step('echo "VIA_CICD=yes" >> "$CICD_ENV"'),
        step(
            'echo "greeting=$GREETING"; printf "%s" "$LETTER" | tr "\\n" "|"; echo\n'
            'echo "cicd=$VIA_CICD"'
        ),
        step("echo 'expr=${{ env.GREETING }}'"),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 3) == ["greeting=hello world", "Dear reader,||bye", "cicd=yes"]
    assert stdout(sink, 4) == ["expr=hello world"]


def test_job_env_and_step_env_with_expressions(executor: Executor) -> None:
    spec = job(
        step(
            'echo "a=$A b=$B c=$C"',
            env={"B": "step-${{ env.A }}", "C": "${{ github.event_name }}"},
        ),
        env={"A": "job"},
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS
    assert stdout(sink, 0) == ["a=job b=step-job c=push"]


def test_outputs_flow_to_later_steps_and_job_outputs(executor: Executor) -> None:
    spec = job(
        step(
            'echo "colour=blue" >> "$GITHUB_OUTPUT"\n'
            "{ echo 'notes<<END'; echo 'line 1'; echo 'line 2'; echo 'END'; }"
            ' >> "$GITHUB_OUTPUT"\n'
            'echo "size=42" >> "$CICD_OUTPUT"',
            id="produce",
        ),
        step("echo 'got=${{ steps.produce.outputs.colour }}-${{ steps.produce.outputs.size }}'"),
        outputs={
            "colour": "${{ steps.produce.outputs.colour }}",
            "notes": "${{ steps.produce.outputs.notes }}",
            "missing": "${{ steps.nothing.outputs.x }}",
        },
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert dict(step_result(result, 0).outputs) == {
        "colour": "blue",
        "notes": "line 1\nline 2",
        "size": "42",
    }
    assert stdout(sink, 1) == ["got=blue-42"]
    assert dict(result.outputs) == {"colour": "blue", "notes": "line 1\nline 2", "missing": ""}


def test_github_path_adds_to_path_of_later_steps(executor: Executor) -> None:
    spec = job(
        step(
            'mkdir -p "$GITHUB_WORKSPACE/tools"\n'
            "printf '#!/bin/sh\\necho tool ran with $1\\n' > \"$GITHUB_WORKSPACE/tools/mytool\"\n"
            'chmod +x "$GITHUB_WORKSPACE/tools/mytool"\n'
            'echo "$GITHUB_WORKSPACE/tools" >> "$GITHUB_PATH"'
        ),
        step("mytool 7"),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1) == ["tool ran with 7"]


def test_step_summary_is_reported(executor: Executor) -> None:
    spec = job(
        step('echo "## Results" >> "$GITHUB_STEP_SUMMARY"; echo "- ok" >> "$CICD_STEP_SUMMARY"'),
        step("true"),
    )
    result, _ = executor(spec)
    assert step_result(result, 0).summary == "## Results\n- ok\n"
    assert step_result(result, 1).summary == ""


def test_malformed_step_file_fails_the_step(executor: Executor) -> None:
    spec = job(step('echo "this is not an assignment" >> "$GITHUB_OUTPUT"'))
    result, _ = executor(spec)
    assert outcomes(result) == [FAILURE]
    assert "GITHUB_OUTPUT" in step_result(result, 0).error


def test_default_variables(executor: Executor) -> None:
    names = [
        "GITHUB_SHA",
        "GITHUB_REF",
        "GITHUB_REF_NAME",
        "GITHUB_REPOSITORY",
        "GITHUB_RUN_ID",
        "GITHUB_WORKSPACE",
        "GITHUB_EVENT_NAME",
        "CI",
        "CICD_SHA",
        "CICD_REF",
        "CICD_REF_NAME",
        "CICD_REPOSITORY",
        "CICD_RUN_ID",
        "CICD_WORKSPACE",
        "CICD_EVENT_NAME",
        "RUNNER_TEMP",
        "RUNNER_OS",
    ]
    script = "".join(f'echo "{name}=${name}"\n' for name in names) + 'echo "PWD=$(pwd)"'
    result, sink = executor(job(step(script)))
    assert result.conclusion == SUCCESS
    env = values(sink, 0)
    assert env["GITHUB_SHA"] == env["CICD_SHA"] == GITHUB["sha"]
    assert env["GITHUB_REF"] == env["CICD_REF"] == "refs/heads/main"
    assert env["GITHUB_REF_NAME"] == env["CICD_REF_NAME"] == "main"
    assert env["GITHUB_REPOSITORY"] == env["CICD_REPOSITORY"] == "acme/widgets"
    assert env["GITHUB_RUN_ID"] == env["CICD_RUN_ID"] == "4242"
    assert env["GITHUB_EVENT_NAME"] == env["CICD_EVENT_NAME"] == "push"
    assert env["CI"] == "true"
    assert env["RUNNER_OS"] == "Linux"
    assert env["GITHUB_WORKSPACE"] == env["CICD_WORKSPACE"] == env["PWD"]
    assert env["GITHUB_WORKSPACE"].startswith("/")
    assert env["RUNNER_TEMP"].startswith("/")


def test_workspace_and_temp_are_shared_by_the_steps_of_a_job(executor: Executor) -> None:
    spec = job(
        step('echo one > shared.txt; echo tmp > "$RUNNER_TEMP/t.txt"; echo x > /tmp/cross-step'),
        step('cat shared.txt "$RUNNER_TEMP/t.txt" /tmp/cross-step'),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1) == ["one", "tmp", "x"]


# ------------------------------------------------------------------------ status and if:


def test_failing_step_stops_the_job(executor: Executor) -> None:
    spec = job(step("echo before"), step("exit 3"), step("echo after"), step("echo later"))
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert outcomes(result) == [SUCCESS, FAILURE, SKIPPED, SKIPPED]
    failed = step_result(result, 1)
    assert failed.exit_code == 3
    assert failed.conclusion == FAILURE
    assert "exit code 3" in failed.error
    assert "after" not in sink.lines() and "later" not in sink.lines()
    # A skipped step is reported as finished but never as started.
    assert ("step_started", 2, "Run echo after") not in sink.events
    assert ("step_finished", 2, SKIPPED) in sink.events


def test_continue_on_error(executor: Executor) -> None:
    spec = job(step("exit 1", continue_on_error=True), step("echo next"))
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS
    first = step_result(result, 0)
    assert (first.outcome, first.conclusion) == (FAILURE, SUCCESS)
    assert stdout(sink, 1) == ["next"]


def test_status_functions_after_a_failure(executor: Executor) -> None:
    spec = job(
        step("exit 1"),
        step("echo always", if_condition="always()"),
        step("echo failure", if_condition="failure()"),
        step("echo success", if_condition="success()"),
        step("echo default"),
        step("echo cancelled", if_condition="${{ cancelled() }}"),
    )
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert outcomes(result) == [FAILURE, SUCCESS, SUCCESS, SKIPPED, SKIPPED, SKIPPED]
    assert [line for line in sink.lines() if not line.startswith("Error")] == [
        "always",
        "failure",
    ]


def test_if_on_step_outcome_and_conclusion(executor: Executor) -> None:
    spec = job(
        step("exit 4", id="risky", continue_on_error=True),
        step("echo saw-failure", if_condition="steps.risky.outcome == 'failure'"),
        step("echo saw-conclusion-failure", if_condition="steps.risky.conclusion == 'failure'"),
        step("echo ok", id="fine"),
        step("echo fine-ok", if_condition="${{ steps.fine.outcome == 'success' }}"),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS
    assert outcomes(result) == [FAILURE, SUCCESS, SKIPPED, SUCCESS, SUCCESS]
    assert stdout(sink, 1) == ["saw-failure"]
    assert stdout(sink, 4) == ["fine-ok"]


def test_unknown_command_fails_the_step(executor: Executor) -> None:
    result, sink = executor(job(step("no-such-command-cicd-test")))
    assert result.conclusion == FAILURE
    failed = step_result(result, 0)
    assert failed.outcome == FAILURE
    assert failed.exit_code == 127
    stderr = [e[2].text for e in sink.events if e[0] == "log" and e[2].stream == "stderr"]
    assert any("no-such-command-cicd-test" in line and "not found" in line for line in stderr)


def test_expression_error_in_run_fails_the_step(executor: Executor) -> None:
    spec = job(step("echo ${{ 1 + }}"), step("echo cleanup", if_condition="always()"))
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert outcomes(result) == [FAILURE, SUCCESS]
    error = step_result(result, 0).error
    assert error
    assert any(error in line for line in sink.lines(0)), sink.lines(0)
    assert step_result(result, 0).exit_code is None


def test_expression_error_in_if_fails_the_step(executor: Executor) -> None:
    result, _ = executor(job(step("echo hi", if_condition="nosuchfunction()")))
    assert result.conclusion == FAILURE
    assert "nosuchfunction" in step_result(result, 0).error


# ------------------------------------------------------------------------ shells, directories


def test_working_directory(executor: Executor) -> None:
    spec = job(
        step("mkdir -p sub/dir"),
        step("pwd", working_directory="sub/dir"),
        step('pwd; echo "ws=$GITHUB_WORKSPACE"'),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    (inside,) = stdout(sink, 1)
    assert inside.endswith("/sub/dir")
    root, ws = stdout(sink, 2)
    assert inside == f"{root}/sub/dir"
    assert ws == "ws=" + root


def test_default_working_directory_of_the_job(executor: Executor) -> None:
    spec = job(
        step("mkdir -p app", working_directory="."),
        step("pwd"),
        default_working_directory="app",
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1)[0].endswith("/app")


def test_missing_working_directory_fails_the_step(executor: Executor) -> None:
    spec = job(step("pwd", working_directory="does/not/exist"), step("echo next"))
    result, _ = executor(spec)
    assert result.conclusion == FAILURE
    assert outcomes(result) == [FAILURE, SKIPPED]


def test_shell_sh(executor: Executor) -> None:
    # sh -e: stops at the first failing command; no pipefail, so a failing pipe head is fine.
    spec = job(
        step('false | true; echo "bash=${BASH_VERSION:-none}"', shell="sh"),
        step("echo one; false; echo two", shell="sh"),
    )
    result, sink = executor(spec)
    assert stdout(sink, 0) == ["bash=none"]
    assert outcomes(result) == [SUCCESS, FAILURE]
    assert stdout(sink, 1) == ["one"]


def test_default_shell_is_bash_with_pipefail_when_present(executor: Executor) -> None:
    spec = job(
        step("if command -v bash >/dev/null; then echo has=yes; else echo has=no; fi", shell="sh"),
        step('echo "version=${BASH_VERSION:-}"'),
        step("false | true; echo after-pipe"),
        step("echo one; false; echo two", if_condition="always()"),
    )
    result, sink = executor(spec)
    has_bash = values(sink, 0)["has"] == "yes"
    if has_bash:
        assert values(sink, 1)["version"] != ""
        # bash --noprofile --norc -eo pipefail: the failing pipe head fails the step.
        assert outcomes(result)[2] == FAILURE
        assert stdout(sink, 2) == []
    else:
        assert values(sink, 1)["version"] == ""
        assert outcomes(result)[2] == SUCCESS
    assert stdout(sink, 3) == ["one"]
    assert outcomes(result)[3] == FAILURE


def test_python_shell_when_available(executor: Executor) -> None:
    spec = job(
        step("command -v python3 >/dev/null && echo has=yes || echo has=no", shell="sh"),
        step("import sys\nprint('py', sys.version_info[0])", shell="python"),
    )
    result, sink = executor(spec)
    if values(sink, 0)["has"] != "yes":
        pytest.skip("no python3 in this executor's environment")
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1) == ["py 3"]


def test_shell_template_with_placeholder(executor: Executor) -> None:
    spec = job(step("echo from-template", shell="sh -eu {0}"))
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS
    assert stdout(sink, 0) == ["from-template"]


# ------------------------------------------------------------------------ logs


@dataclass
class TimedSink(RecordingSink):
    """Records when (time.monotonic) each sink call happened."""

    times: list[tuple[float, tuple]] = field(default_factory=list)

    def log(self, index, events) -> None:
        super().log(index, events)
        for event in events:
            self.times.append((time.monotonic(), ("log", index, event)))

    def step_finished(self, result) -> None:
        super().step_finished(result)
        self.times.append((time.monotonic(), ("step_finished", result.index)))


def test_log_lines_arrive_while_the_step_runs(executor: Executor) -> None:
    sink = TimedSink()
    result, _ = executor(job(step("echo first; sleep 1; echo second")), sink=sink)
    assert result.conclusion == SUCCESS
    times = {
        entry[2].text if entry[0] == "log" else entry[0]: at
        for at, entry in sink.times
        if entry[0] == "step_finished" or isinstance(entry[2], LogLine)
    }
    assert times["second"] - times["first"] >= 0.8
    assert times["step_finished"] - times["first"] >= 0.8


def test_stdout_and_stderr_are_captured_in_order_with_their_stream(executor: Executor) -> None:
    spec = job(step("echo out1; echo err1 >&2; sleep 0.2; echo out2; echo err2 >&2"))
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS
    lines = [(e[2].stream, e[2].text) for e in sink.events if e[0] == "log" and e[1] == 0]
    assert ("stdout", "out1") in lines and ("stdout", "out2") in lines
    assert ("stderr", "err1") in lines and ("stderr", "err2") in lines
    assert lines.index(("stdout", "out1")) < lines.index(("stdout", "out2"))
    assert lines.index(("stderr", "err1")) < lines.index(("stderr", "err2"))
    assert lines.index(("stderr", "err1")) < lines.index(("stdout", "out2"))
    stamps = [e[2].timestamp for e in sink.events if e[0] == "log"]
    assert stamps == sorted(stamps)


def test_last_line_without_newline_and_binary_output(executor: Executor) -> None:
    spec = job(step("printf 'bin:\\377\\000x\\n'; printf 'no newline at end'"))
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS
    assert stdout(sink, 0) == ["bin:\ufffdx", "no newline at end"]


def test_workflow_commands_become_structured_events(executor: Executor) -> None:
    spec = job(
        step(
            "echo '::group::Build'; echo inside; echo '::endgroup::'\n"
            "echo '::error file=app.py,line=3::broken'"
        )
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS
    kinds = [type(e[2]).__name__ for e in sink.events if e[0] == "log" and e[1] == 0]
    assert "GroupStart" in kinds and "GroupEnd" in kinds and "Annotation" in kinds
    (annotation,) = [
        e[2] for e in sink.events if e[0] == "log" and type(e[2]).__name__ == "Annotation"
    ]
    assert (annotation.level, annotation.file, annotation.line) == ("error", "app.py", 3)


def test_secrets_are_masked_end_to_end(executor: Executor) -> None:
    secret = "hunter2-s3cr3t-value"
    added = "runtime-token-9876"
    later = "registered-in-step-one"
    spec = job(
        step(
            'echo "token is $TOKEN"\n'
            'printf %s "$TOKEN" | base64\n'
            f'echo "::add-mask::{added}"\n'
            f'echo "now {added} here"\n'
            f'echo "::add-mask::{later}"\n'
            'echo "$TOKEN" >&2',
            env={"TOKEN": "${{ secrets.API_TOKEN }}"},
        ),
        step(f'echo "again {later}"; echo "direct ${{{{ secrets.API_TOKEN }}}}"'),
        secrets={"API_TOKEN": secret},
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    everything = repr(sink.events) + repr(result)
    for clear in (secret, base64.b64encode(secret.encode()).decode(), added, later):
        assert clear not in everything
    lines = sink.lines()
    assert "token is ***" in lines
    assert "now *** here" in lines
    assert "again ***" in lines
    assert "direct ***" in lines
    assert lines.count("***") >= 2  # the base64 form on stdout and the value on stderr


def test_job_output_with_a_secret_is_dropped(executor: Executor) -> None:
    spec = job(
        step('echo "leak=$T" >> "$GITHUB_OUTPUT"', id="s", env={"T": "${{ secrets.T }}"}),
        outputs={"leak": "${{ steps.s.outputs.leak }}"},
        secrets={"T": "very-secret-value"},
    )
    result, sink = executor(spec)
    assert "leak" not in result.outputs
    assert "very-secret-value" not in repr(sink.events)


def test_output_cap_truncates_once_and_the_step_completes(executor: Executor) -> None:
    spec = job(
        step(
            'i=0; while [ $i -lt 3000 ]; do echo "line $i of a flood"; i=$((i+1)); done\n'
            "echo 'finished' > flood-done\n"
            "exit 7"
        ),
        step("cat flood-done", if_condition="always()"),
    )
    result, sink = executor(spec, step_output_cap=2000)
    flood = step_result(result, 0)
    assert flood.outcome == FAILURE
    assert flood.exit_code == 7  # the step ran to its end after the cap was reached
    notices = [e[2] for e in sink.events if e[0] == "log" and e[1] == 0 and e[2].stream == "system"]
    truncations = [n for n in notices if "truncated" in n.text]
    assert len(truncations) == 1
    kept = [line for line in stdout(sink, 0)]
    assert 0 < sum(len(line) for line in kept) <= 2000
    assert stdout(sink, 1) == ["finished"]


# ------------------------------------------------------------------------ timeouts and cancel


def step_seconds(result: StepResult) -> float:
    """How long a step ran, as the driver saw it (setting up the executor not included)."""
    assert result.started_at is not None and result.finished_at is not None
    return result.finished_at - result.started_at


def test_step_timeout(executor: Executor) -> None:
    spec = job(
        step("echo start; sleep 30; echo never", timeout_minutes=0.02),
        step("echo next"),
        step("echo cleanup", if_condition="always()"),
    )
    result, sink = executor(spec)
    timed_out = step_result(result, 0)
    assert step_seconds(timed_out) < 0.02 * 60 + GRACE_SECONDS + 2
    assert timed_out.outcome == TIMED_OUT
    assert timed_out.conclusion == TIMED_OUT
    assert "timed out" in timed_out.error
    assert outcomes(result) == [TIMED_OUT, SKIPPED, SUCCESS]
    assert result.conclusion == FAILURE
    assert "never" not in sink.lines()
    assert "start" in sink.lines()


def test_step_timeout_escalates_to_kill(executor: Executor) -> None:
    # TERM is ignored (and the ignore is inherited by sleep): only KILL after the grace ends it.
    spec = job(step("trap '' TERM; sleep 30", timeout_minutes=0.01))
    result, _ = executor(spec)
    killed = step_result(result, 0)
    assert killed.outcome == TIMED_OUT
    assert step_seconds(killed) >= 0.01 * 60 + GRACE_SECONDS - 0.2
    assert step_seconds(killed) < 0.01 * 60 + GRACE_SECONDS + 2


def test_timeout_sends_term_first_so_the_step_can_clean_up(executor: Executor) -> None:
    spec = job(
        step(
            "trap 'echo got TERM; exit 5' TERM; echo waiting; sleep 30 & wait", timeout_minutes=0.01
        )
    )
    result, sink = executor(spec)
    stopped = step_result(result, 0)
    assert stopped.outcome == TIMED_OUT
    assert stdout(sink, 0) == ["waiting", "got TERM"]
    assert stopped.exit_code == 5  # the trap's own exit: ended by TERM, not by KILL


def test_step_timeout_with_continue_on_error(executor: Executor) -> None:
    spec = job(step("sleep 30", timeout_minutes=0.01, continue_on_error=True), step("echo next"))
    result, sink = executor(spec)
    first = step_result(result, 0)
    assert (first.outcome, first.conclusion) == (TIMED_OUT, SUCCESS)
    assert result.conclusion == SUCCESS
    assert stdout(sink, 1) == ["next"]


def test_job_timeout(executor: Executor) -> None:
    # The job's clock starts before the executor is set up (as on GitHub), so the budget is
    # what the executor needs to start plus 1.2 s.
    minutes = (executor.setup_seconds + 1.2) / 60
    spec = job(step("sleep 30"), step("echo next"), timeout_minutes=minutes)
    started = time.monotonic()
    result, _ = executor(spec)
    assert time.monotonic() - started < minutes * 60 + GRACE_SECONDS + 2
    assert result.conclusion == TIMED_OUT
    assert outcomes(result) == [TIMED_OUT, SKIPPED]
    assert "job timeout" in step_result(result, 0).error


class CancelWhenSeen(RecordingSink):
    """Cancels the job `delay` seconds after the step printed `line` (so setup time is moot)."""

    def __init__(self, cancel: CancelToken, line: str, delay: float = 0.3) -> None:
        super().__init__()
        self.cancel, self.line, self.delay = cancel, line, delay
        self.cancelled_at: float | None = None  # time.time(), the clock of StepResult
        self.timer: threading.Timer | None = None

    def log(self, index, events) -> None:
        super().log(index, events)
        if self.timer is None and any(getattr(e, "text", None) == self.line for e in events):
            self.timer = threading.Timer(self.delay, self._fire)
            self.timer.start()

    def _fire(self) -> None:
        self.cancelled_at = time.time()
        self.cancel.cancel()


def test_cancel_stops_the_running_step(executor: Executor) -> None:
    cancel = CancelToken()
    spec = job(
        step("echo started; sleep 60"),
        step("echo next"),
        step("echo cleanup", if_condition="always()"),
        step("echo on-cancel", if_condition="cancelled()"),
    )
    sink = CancelWhenSeen(cancel, "started")
    try:
        result, _ = executor(spec, sink=sink, cancel=cancel)
    finally:
        if sink.timer is not None:
            sink.timer.cancel()
    assert sink.cancelled_at is not None
    stopped = step_result(result, 0)
    assert stopped.finished_at is not None
    assert stopped.finished_at - sink.cancelled_at < 5
    assert outcomes(result) == [CANCELLED, SKIPPED, SUCCESS, SUCCESS]
    assert stopped.conclusion == CANCELLED
    assert result.conclusion == CANCELLED
    assert stdout(sink, 2) == ["cleanup"]
    assert stdout(sink, 3) == ["on-cancel"]


def test_cancel_escalates_to_kill(executor: Executor) -> None:
    cancel = CancelToken()
    spec = job(step("trap '' TERM; echo started; sleep 60"))
    sink = CancelWhenSeen(cancel, "started", delay=0.1)
    try:
        result, _ = executor(spec, sink=sink, cancel=cancel)
    finally:
        if sink.timer is not None:
            sink.timer.cancel()
    stopped = step_result(result, 0)
    assert stopped.outcome == CANCELLED
    assert sink.cancelled_at is not None and stopped.finished_at is not None
    assert GRACE_SECONDS - 0.2 <= stopped.finished_at - sink.cancelled_at < 5


def test_cancel_before_the_job_starts_skips_normal_steps(executor: Executor) -> None:
    cancel = CancelToken()
    cancel.cancel()
    spec = job(step("echo normal"), step("echo cleanup", if_condition="always()"))
    result, sink = executor(spec, cancel=cancel)
    assert result.conclusion == CANCELLED
    assert outcomes(result) == [SKIPPED, SUCCESS]
    assert stdout(sink, 1) == ["cleanup"]


# ------------------------------------------------------------------------ checkout


def test_checkout_step(executor: Executor, git_repo: GitRepo) -> None:
    spec = job(
        step(uses="actions/checkout@v4"),
        step("cat src/app.txt; cat README.md; test ! -e NEW.md && echo no-new-file"),
        checkout=git_repo.source(git_repo.first),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1) == ["version 1", "# widgets", "no-new-file"]


def test_checkout_head_is_the_exact_sha(executor: Executor, git_repo: GitRepo) -> None:
    spec = job(
        step('command -v git >/dev/null && echo "git=yes" >> "$GITHUB_OUTPUT" || true', id="probe"),
        step(uses="actions/checkout@v4"),
        step("git rev-parse HEAD", if_condition="steps.probe.outputs.git == 'yes'"),
        checkout=git_repo.source(git_repo.first),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    if step_result(result, 2).outcome == SKIPPED:
        pytest.skip("no git inside this executor's steps")
    assert stdout(sink, 2) == [git_repo.first]


@pytest.mark.parametrize(("depth", "count"), [("1", "1"), ("0", "2")])
def test_checkout_fetch_depth(
    executor: Executor, git_repo: GitRepo, depth: str, count: str
) -> None:
    spec = job(
        step('command -v git >/dev/null && echo "git=yes" >> "$GITHUB_OUTPUT" || true', id="probe"),
        step(uses="actions/checkout@v4", with_args={"fetch-depth": depth}),
        step("git rev-list --count HEAD", if_condition="steps.probe.outputs.git == 'yes'"),
        checkout=git_repo.source(git_repo.second),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    if step_result(result, 2).outcome == SKIPPED:
        pytest.skip("no git inside this executor's steps")
    assert stdout(sink, 2) == [count]


def test_checkout_bad_fetch_depth(executor: Executor, git_repo: GitRepo) -> None:
    spec = job(
        step(uses="actions/checkout@v4", with_args={"fetch-depth": "all"}),
        checkout=git_repo.source(),
    )
    result, _ = executor(spec)
    assert outcomes(result) == [FAILURE]
    assert "fetch-depth" in step_result(result, 0).error


def test_checkout_into_a_subdirectory(executor: Executor, git_repo: GitRepo) -> None:
    spec = job(
        step(uses="actions/checkout@v4", with_args={"path": "sub"}),
        step("cat sub/src/app.txt; test ! -e src && echo root-clean"),
        checkout=git_repo.source(git_repo.first),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1) == ["version 1", "root-clean"]


def test_checkout_with_ref_input(executor: Executor, git_repo: GitRepo) -> None:
    spec = job(
        step(uses="actions/checkout@v4", with_args={"ref": "main"}),
        step("cat src/app.txt"),
        checkout=git_repo.source(git_repo.first),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1) == ["version 2"]


def test_checkout_of_unknown_sha_fails_with_a_clear_message(
    executor: Executor, git_repo: GitRepo
) -> None:
    missing = "f" * 40
    spec = job(
        step(uses="actions/checkout@v4"),
        step("echo next"),
        checkout=git_repo.source(missing),
    )
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert outcomes(result) == [FAILURE, SKIPPED]
    error = step_result(result, 0).error
    assert missing in error
    assert str(git_repo.path) in error
    assert "Traceback" not in repr(sink.events)


def test_checkout_without_a_source_fails(executor: Executor) -> None:
    result, _ = executor(job(step(uses="actions/checkout@v4")))
    assert outcomes(result) == [FAILURE]
    assert "no repository" in step_result(result, 0).error


def test_unsupported_action_fails_the_step(executor: Executor) -> None:
    result, _ = executor(job(step(uses="actions/setup-node@v4")))
    assert outcomes(result) == [FAILURE]
    assert "actions/setup-node@v4" in step_result(result, 0).error


# ------------------------------------------------------------------------ local composite actions

GREET = "./.github/actions/greet"


def system_lines(sink: RecordingSink, index: int) -> list[str]:
    return [
        e[2].text
        for e in sink.events
        if e[0] == "log" and e[1] == index and isinstance(e[2], LogLine) and e[2].stream == "system"
    ]


def test_local_action_inputs_outputs_and_env(executor: Executor, action_repo: GitRepo) -> None:
    spec = job(
        step(uses="actions/checkout@v4"),
        step(uses=GREET, id="greet", with_args={"who": "world"}, env={"FROM_STEP": "yes"}),
        step(
            'echo "got=${{ steps.greet.outputs.message }}"; echo "env=$GREETED"\n'
            'echo "nested=${{ steps.say.outputs.text }}"'
        ),
        step(uses=GREET, with_args={"who": "${{ github.actor }}", "greeting": "Hi"}),
        checkout=action_repo.source(),
        env={"FROM_JOB": "job"},
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert outcomes(result) == [SUCCESS] * 4
    # The nested steps log into the step that uses the action.
    assert stdout(sink, 1) == [
        "Hello, world!",
        "local say=Hello, world! path=greet",
        "from step=yes job=job yes",
    ]
    assert dict(step_result(result, 1).outputs) == {"message": "Hello, world!"}
    # Outputs reach later steps; GITHUB_ENV persists; the action's step ids stay inside it.
    assert stdout(sink, 2) == ["got=Hello, world!", "env=world", "nested="]
    assert stdout(sink, 3)[0] == "Hi, alice!"
    assert stdout(sink, 3)[2] == "from step=none job=job "
    # One step of the job each: the nested steps are not steps of the job.
    started = [e[1] for e in sink.events if e[0] == "step_started"]
    assert started == [0, 1, 2, 3]


def test_local_action_inside_a_local_action(executor: Executor, action_repo: GitRepo) -> None:
    spec = job(
        step(uses="./.github/actions/wrap/", id="wrap", with_args={"name": "nest"}),
        step("echo 'said=${{ steps.wrap.outputs.said }}'"),
        checkout=action_repo.source(),  # the automatic checkout before the first step
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 0)[0] == "Hi, nest!"
    assert stdout(sink, 1) == ["said=Hi, nest!"]


def test_local_action_missing_required_input_fails(
    executor: Executor, action_repo: GitRepo
) -> None:
    spec = job(
        step(uses=GREET, with_args={"greeting": "Hey", "whom": "typo"}),
        step("echo next"),
        checkout=action_repo.source(),
    )
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert outcomes(result) == [FAILURE, SKIPPED]
    error = step_result(result, 0).error
    assert error == (
        f"{GREET} needs the input 'who': it is required and has no default; give it under 'with'"
    )
    assert f"Error: {error}" in system_lines(sink, 0)
    assert stdout(sink, 0) == []


def test_local_action_failing_step_fails_the_step(executor: Executor, action_repo: GitRepo) -> None:
    spec = job(
        step(uses="./.github/actions/fail", id="fail"),
        step("echo after", if_condition="always()"),
        step("echo skipped"),
        checkout=action_repo.source(),
    )
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert outcomes(result) == [FAILURE, SUCCESS, SKIPPED]
    failed = step_result(result, 0)
    assert failed.exit_code == 3
    assert failed.error == (
        "step 'Break' of ./.github/actions/fail failed: Process completed with exit code 3."
    )
    # continue-on-error tolerates the first failure; failure() runs the clean-up step.
    assert stdout(sink, 0) == ["still here", "cleaning up"]


def test_local_action_failure_with_continue_on_error(
    executor: Executor, action_repo: GitRepo
) -> None:
    spec = job(
        step(uses="./.github/actions/fail", id="fail", continue_on_error=True),
        step("echo '${{ steps.fail.outcome }}/${{ steps.fail.conclusion }}'"),
        checkout=action_repo.source(),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 1) == ["failure/success"]


def test_local_action_ends_with_the_timeout_of_its_step(
    executor: Executor, action_repo: GitRepo
) -> None:
    spec = job(
        step(uses="./.github/actions/slow", timeout_minutes=0.02),
        step("echo next"),
        step("echo cleanup", if_condition="always()"),
        checkout=action_repo.source(),
    )
    result, sink = executor(spec)
    timed_out = step_result(result, 0)
    assert step_seconds(timed_out) < 0.02 * 60 + GRACE_SECONDS + 2
    assert (timed_out.outcome, timed_out.conclusion) == (TIMED_OUT, TIMED_OUT)
    assert timed_out.error == (
        "step 'Run echo start; sleep 30; echo never' of ./.github/actions/slow failed: "
        "timed out (timeout-minutes: 0.02)"
    )
    assert outcomes(result) == [TIMED_OUT, SKIPPED, SUCCESS]
    assert result.conclusion == FAILURE
    assert stdout(sink, 0) == ["start"]  # neither "never" nor the action's next step
    assert "Error: the step timed out (timeout-minutes: 0.02)." in system_lines(sink, 0)


def test_cancel_stops_a_local_action_and_always_runs_one_to_its_end(
    executor: Executor, action_repo: GitRepo
) -> None:
    cancel = CancelToken()
    spec = job(
        step(uses="./.github/actions/slow"),
        step("echo next"),
        step(uses=GREET, with_args={"who": "late"}, if_condition="always()"),
        checkout=action_repo.source(),
    )
    sink = CancelWhenSeen(cancel, "start")
    try:
        result, _ = executor(spec, sink=sink, cancel=cancel)
    finally:
        if sink.timer is not None:
            sink.timer.cancel()
    assert result.conclusion == CANCELLED
    assert outcomes(result) == [CANCELLED, SKIPPED, SUCCESS]
    assert stdout(sink, 0) == ["start"]  # the action's next step did not run
    # Started after the cancel request, the action's steps all run (as a step does).
    assert stdout(sink, 2)[:2] == ["Hello, late!", "local say=Hello, late! path=greet"]


def test_local_action_missing_action_file(executor: Executor) -> None:
    result, _ = executor(job(step(uses="./.github/actions/nowhere"), step("echo next")))
    assert outcomes(result) == [FAILURE, SKIPPED]
    error = step_result(result, 0).error
    assert error.startswith("cannot find the action './.github/actions/nowhere': neither /")
    assert "/.github/actions/nowhere/action.yml nor /" in error
    assert error.endswith(
        "/.github/actions/nowhere/action.yaml exists; "
        "did you check out the repository first (actions/checkout)?"
    )


def test_local_action_invalid_file_names_the_position(
    executor: Executor, action_repo: GitRepo
) -> None:
    spec = job(step(uses="./.github/actions/broken"), checkout=action_repo.source())
    result, _ = executor(spec)
    assert outcomes(result) == [FAILURE]
    error = step_result(result, 0).error
    assert error.startswith(
        "the action file .github/actions/broken/action.yml is invalid: "
        ".github/actions/broken/action.yml:5:7: step 1 of the action has 'run' but no 'shell'"
    )


def test_local_action_that_uses_itself_stops(executor: Executor, action_repo: GitRepo) -> None:
    spec = job(step(uses="./.github/actions/loop"), checkout=action_repo.source())
    result, _ = executor(spec)
    assert outcomes(result) == [FAILURE]
    assert step_result(result, 0).error == (
        "'./.github/actions/loop' would be local action 11 levels deep; local actions can be "
        "nested 10 levels deep at most (does an action use itself?)"
    )


# ------------------------------------------------------------------------ local executor only


def local_only(executor: Executor) -> None:
    if not executor.name.startswith("local"):
        pytest.skip("local executor only")


def test_local_refuses_container_and_services(executor: Executor) -> None:
    from runners.local import NEEDS_DOCKER
    from runners.spec import ServiceSpec

    local_only(executor)
    for extra in ({"image": "node:20"}, {"services": (ServiceSpec(id="db", image="postgres"),)}):
        result, sink = executor(job(step("echo hi"), **extra))
        assert result.conclusion == FAILURE
        assert result.error == NEEDS_DOCKER
        assert "Docker engine" in result.error
        assert "hi" not in sink.lines()
        assert sink.job_result == result
        assert sink.events[-1] == ("job_finished", FAILURE)


def test_local_removes_the_job_directory_and_leftover_processes(tmp_path: Path) -> None:
    from runners.local import run_local_job

    marker = tmp_path / "pid"
    spec = job(
        step(f"(sleep 300 & echo $! > {marker}); echo started"),
        step("echo second step"),
    )
    sink = RecordingSink()
    work_root = tmp_path / "jobs"
    started = time.monotonic()
    result = run_local_job(spec, sink, work_root=work_root, use_bwrap=False, grace_seconds=1)
    assert time.monotonic() - started < 3  # the background process did not hold the step
    assert result.conclusion == SUCCESS, sink.events
    assert not (work_root / spec.job_id).exists()
    pid = int(marker.read_text())
    deadline = time.monotonic() + 2
    while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
        stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
        if ") Z" in stat:
            break  # a zombie waiting for its parent: dead
        time.sleep(0.05)
    alive = (
        Path(f"/proc/{pid}/stat").exists() and ") Z" not in Path(f"/proc/{pid}/stat").read_text()
    )
    assert not alive


def test_a_leftover_group_that_ended_is_not_killed_when_its_number_names_another(
    tmp_path: Path,
) -> None:
    """A step's background process outlives the step; its group is killed when the job ends.
    When that group ended by itself meanwhile, its number may already name another program's
    group (PIDs wrap, 32,768 of them by default): that one must live."""
    import subprocess

    from runners.job import DEFAULT_PATH
    from runners.local import LocalBackend

    backend = LocalBackend(job(step("unused")), tmp_path / "jobs", use_bwrap=False)
    backend.start()
    try:
        result = backend.run(
            ["sh", "-c", "sleep 0.5 & echo started"],
            env={"PATH": DEFAULT_PATH},
            cwd=backend.workspace,
            on_output=lambda stream, data: None,
            deadline=None,
            cancel=CancelToken(),
        )
        assert result.exit_code == 0
        [(pgid, members)] = backend._groups.items()  # the background sleep outlived its step
        deadline = time.monotonic() + 10
        while Path(f"/proc/{pgid}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.6)  # the sleep is over, and its group with it
        other = subprocess.Popen(["sleep", "30"], start_new_session=True)
        # As if the numbers had wrapped: the group recorded now names the other program's.
        backend._groups = {other.pid: members}
    finally:
        backend.close()
    try:
        assert other.poll() is None, "close() killed a group that was not the job's"
    finally:
        other.kill()
        other.wait()


def test_local_job_directory_is_removed_after_failure_and_timeout(tmp_path: Path) -> None:
    from runners.local import run_local_job

    work_root = tmp_path / "jobs"
    for spec in (job(step("exit 1")), job(step("sleep 30", timeout_minutes=0.005))):
        run_local_job(spec, RecordingSink(), work_root=work_root, grace_seconds=1)
        assert not (work_root / spec.job_id).exists()
    assert list(work_root.iterdir()) == []


def test_local_bwrap_sandbox(tmp_path: Path) -> None:
    from runners.local import bwrap_available, run_local_job

    if not bwrap_available():
        pytest.skip("bubblewrap is not usable here")
    # Outside /tmp: under bwrap /tmp is the job's own.
    outside_dir = Path(tempfile.mkdtemp(prefix="cicd-test-", dir="/var/tmp"))
    outside = outside_dir / "outside.txt"
    spec = job(
        step(
            f"touch {outside} 2>/dev/null && echo outside=writable || echo outside=readonly\n"
            "touch inside.txt && echo inside=writable\n"
            "echo pid=$$\n"
            "test -S /run/docker.sock && echo docker=visible || echo docker=hidden\n"
            'touch "$HOME/.rc" && echo home=writable\n'
            'test -e "$GITHUB_WORKSPACE/../../other-job" && echo others=visible'
            " || echo others=hidden"
        )
    )
    (tmp_path / "jobs" / "other-job").mkdir(parents=True)
    sink = RecordingSink()
    try:
        result = run_local_job(spec, sink, work_root=tmp_path / "jobs", use_bwrap=True)
        assert not outside.exists()
    finally:
        shutil.rmtree(outside_dir)
    assert result.conclusion == SUCCESS, sink.events
    env = values(sink, 0)
    assert env["outside"] == "readonly"
    assert env["inside"] == "writable"
    assert int(env["pid"]) < 10  # its own PID namespace
    assert env["docker"] == "hidden"
    assert env["home"] == "writable"
    assert env["others"] == "hidden"  # the other jobs of the worker


def test_local_without_bwrap_runs_plain_process_groups(tmp_path: Path) -> None:
    from runners.local import run_local_job

    spec = job(step("echo pid=$$"), step('echo "tmp=$TMPDIR"'))
    sink = RecordingSink()
    result = run_local_job(spec, sink, work_root=tmp_path / "jobs", use_bwrap=False)
    assert result.conclusion == SUCCESS
    assert int(values(sink, 0)["pid"]) > 1
    assert values(sink, 1)["tmp"].startswith(str(tmp_path / "jobs"))


def test_local_missing_shell_fails_the_step(executor: Executor) -> None:
    local_only(executor)
    result, _sink = executor(job(step("echo hi", shell="no-such-shell-xyz")))
    assert outcomes(result) == [FAILURE]
    assert "no-such-shell-xyz" in step_result(result, 0).error


def test_local_falls_back_without_a_working_bwrap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from runners.local import run_local_job

    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to create new namespace' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    sink = RecordingSink()
    with caplog.at_level("WARNING", logger="runners.local"):
        result = run_local_job(
            job(step("echo pid=$$")), sink, work_root=tmp_path / "jobs", use_bwrap=None
        )
    assert result.conclusion == SUCCESS, sink.events
    assert int(values(sink, 0)["pid"]) > 1  # not in a PID namespace of its own
    assert any("No permissions to create new namespace" in r.getMessage() for r in caplog.records)


def log_lines(sink: RecordingSink, index: int) -> list[tuple[str, str]]:
    return [
        (e[2].stream, e[2].text)
        for e in sink.events
        if e[0] == "log" and e[1] == index and isinstance(e[2], LogLine)
    ]


# What bwrap says when a mount it copied went away while it built the sandbox.
MOUNT_RACE = (
    "bwrap: Can't bind mount /oldroot/ on /newroot/: Unable to apply mount flags: remount "
    '"/newroot/run/docker/runtime-runc/moby/x/runc.Ab12": No such file or directory\n'
)


def flaky_bwrap(tmp_path: Path, failures: int | None) -> Path:
    """A `bwrap` that fails its set-up as a mount race makes the real one fail, `failures` times
    (None: always), then is the real one. The availability check (`-- true`) always passes."""
    real = shutil.which("bwrap")
    if real is None:
        pytest.skip("bubblewrap is not installed")
    left = tmp_path / "failures-left"
    left.write_text("-1" if failures is None else str(failures))
    said = tmp_path / "bwrap-says"
    said.write_text(MOUNT_RACE)
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text(
        "#!/bin/sh\n"
        f'for last; do :; done; [ "$last" = true ] && exec {real} "$@"\n'
        f"left=$(cat {left})\n"
        f'[ "$left" = 0 ] && exec {real} "$@"\n'
        f'[ "$left" -gt 0 ] && echo $((left - 1)) > {left}\n'
        f"cat {said} >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    return fake.parent


def test_local_sandbox_that_fails_to_set_up_is_started_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from runners.local import bwrap_available, run_local_job

    if not bwrap_available():
        pytest.skip("bubblewrap is not usable here")
    monkeypatch.setenv("PATH", f"{flaky_bwrap(tmp_path, failures=3)}:/usr/bin:/bin")
    sink = RecordingSink()
    with caplog.at_level("WARNING", logger="runners.local"):
        result = run_local_job(
            job(step("echo pid=$$; echo oops >&2")),
            sink,
            work_root=tmp_path / "jobs",
            use_bwrap=True,
        )
    assert result.conclusion == SUCCESS, sink.events
    assert int(values(sink, 0)["pid"]) < 10  # it did run in the sandbox
    # The step ran once, and its log holds its own output only: not bwrap's failed attempts.
    assert [line for line in log_lines(sink, 0) if line[0] != "stdout"] == [("stderr", "oops")]
    retries = [r.getMessage() for r in caplog.records if "failed to set up" in r.getMessage()]
    assert len(retries) == 3
    assert "Can't bind mount /oldroot/" in retries[0]


def test_local_sandbox_that_never_sets_up_fails_the_step_with_bwraps_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from runners.local import SANDBOX_ATTEMPTS, bwrap_available, run_local_job

    if not bwrap_available():
        pytest.skip("bubblewrap is not usable here")
    monkeypatch.setenv("PATH", f"{flaky_bwrap(tmp_path, failures=None)}:/usr/bin:/bin")
    sink = RecordingSink()
    result = run_local_job(
        job(step("echo never"), step("echo neither")),
        sink,
        work_root=tmp_path / "jobs",
        use_bwrap=True,
    )
    assert result.conclusion == FAILURE
    assert outcomes(result) == [FAILURE, SKIPPED]
    error = step_result(result, 0).error
    assert error.startswith(
        f"the step's sandbox (bubblewrap) could not be set up in {SANDBOX_ATTEMPTS} attempts: "
        "bwrap: Can't bind mount /oldroot/ on /newroot/"
    )
    assert log_lines(sink, 0) == [("system", f"Error: {error}")]


class MountChurn:
    """Keeps bind mounts coming and going under `directory`, the way Docker's runtime does while
    it starts containers: each mount is unmounted and its file removed a few ms later."""

    def __init__(self, directory: Path, live: int = 5, pause: float = 0.002) -> None:
        import ctypes

        self.libc = ctypes.CDLL(None, use_errno=True)
        self.directory = directory
        self.live = live
        self.pause = pause
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._churn, daemon=True)

    def __enter__(self) -> MountChurn:
        self.directory.mkdir(parents=True)
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stopping.set()
        self.thread.join()

    def _churn(self) -> None:
        bind = 4096  # MS_BIND
        mounted: list[bytes] = []
        count = 0
        while not self.stopping.is_set():
            target = str(self.directory / f"m{count}").encode()
            Path(target.decode()).touch()
            if self.libc.mount(b"/etc/hostname", target, None, bind, None) == 0:
                mounted.append(target)
            count += 1
            while len(mounted) > self.live:
                self._remove(mounted.pop(0))
            time.sleep(self.pause)
        for target in mounted:
            self._remove(target)

    def _remove(self, target: bytes) -> None:
        self.libc.umount2(target, 2)  # MNT_DETACH
        Path(target.decode()).unlink()


def test_local_sandbox_starts_while_the_hosts_mounts_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The race of containers/bubblewrap#650, for real: steps started while mounts come and go
    all run, once each, whatever bwrap's set-up met."""
    import os

    from runners.local import bwrap_available, run_local_job

    if not bwrap_available():
        pytest.skip("bubblewrap is not usable here")
    if os.geteuid() != 0:
        pytest.skip("making mounts needs root")
    deadline = time.monotonic() + 60
    steps = 0
    with caplog.at_level("WARNING", logger="runners.local"), MountChurn(tmp_path / "mounts"):
        while time.monotonic() < deadline and not any(
            "failed to set up" in r.getMessage() for r in caplog.records
        ):
            sink = RecordingSink()
            spec = job(step(f"echo step {steps}"))
            result = run_local_job(spec, sink, work_root=tmp_path / "jobs", use_bwrap=True)
            assert result.conclusion == SUCCESS, sink.events
            assert log_lines(sink, 0) == [("stdout", f"step {steps}")]
            steps += 1
    retried = [r.getMessage() for r in caplog.records if "failed to set up" in r.getMessage()]
    assert retried, f"in {steps} steps the mounts never broke a sandbox's set-up: nothing tested"
    assert "mount" in retried[0]


def test_local_checkout_path_outside_the_workspace_fails(
    executor: Executor, git_repo: GitRepo
) -> None:
    local_only(executor)
    spec = job(
        step(uses="actions/checkout@v4", with_args={"path": "../escape"}),
        checkout=git_repo.source(),
    )
    result, _ = executor(spec)
    assert outcomes(result) == [FAILURE]
    assert "outside the workspace" in step_result(result, 0).error


def test_without_a_checkout_step_the_commit_is_checked_out_before_the_first_step(
    executor: Executor, git_repo: GitRepo
) -> None:
    spec = job(step("cat src/app.txt"), checkout=git_repo.source(git_repo.second))
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 0) == ["version 2"]
    assert any("Checking out" in line for line in sink.lines(None))


def test_a_failed_automatic_checkout_fails_the_job_before_any_step(
    executor: Executor, git_repo: GitRepo
) -> None:
    spec = job(step("echo never"), checkout=git_repo.source("0" * 40))
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert "0000000" in result.error
    assert result.steps == ()
    assert "never" not in sink.lines()


def test_a_step_with_retry_runs_again_until_it_passes(executor: Executor) -> None:
    flaky = (
        "n=$(cat tries 2>/dev/null || echo 0); n=$((n+1)); echo $n > tries; "
        'echo "try $n"; [ $n -ge 3 ]'
    )
    spec = job(
        step(flaky, retry_max_attempts=3, retry_backoff_seconds=0.05),
        step("echo after"),
    )
    result, sink = executor(spec)
    assert result.conclusion == SUCCESS, sink.events
    assert stdout(sink, 0) == ["try 1", "try 2", "try 3"]
    assert step_result(result, 0).outcome == SUCCESS
    assert sum("retrying in" in line for line in sink.lines(0)) == 2


def test_a_step_that_keeps_failing_stops_after_its_attempts(executor: Executor) -> None:
    spec = job(step("echo attempt; exit 7", retry_max_attempts=2, retry_backoff_seconds=0.05))
    result, sink = executor(spec)
    assert result.conclusion == FAILURE
    assert step_result(result, 0).exit_code == 7
    assert stdout(sink, 0) == ["attempt", "attempt"]
