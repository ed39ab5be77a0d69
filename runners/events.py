"""The one narrow interface between an executor and whoever listens to it.

An executor reports, in order: job started, then per step (started, log events, finished), then job
finished. The orchestration layer implements EventSink to store and publish these; `cicd exec`
implements it to print; tests implement it to record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from runners.logs import LogEvent

# Outcomes, as on GitHub: a step's `outcome` is what happened; its `conclusion` is the outcome
# after continue-on-error (a failed step that may fail concludes as success).
SUCCESS = "success"
FAILURE = "failure"
CANCELLED = "cancelled"
SKIPPED = "skipped"
TIMED_OUT = "timed_out"
OUTCOMES = (SUCCESS, FAILURE, CANCELLED, SKIPPED, TIMED_OUT)


@dataclass(frozen=True, slots=True)
class StepResult:
    index: int
    outcome: str
    conclusion: str
    exit_code: int | None = None
    outputs: Mapping[str, str] = field(default_factory=dict)
    started_at: float | None = None
    finished_at: float | None = None
    error: str = ""  # why, for the user: "timed out after 5 minutes", "image ... not found"
    summary: str = ""  # what the step appended to GITHUB_STEP_SUMMARY (Markdown)


@dataclass(frozen=True, slots=True)
class JobResult:
    conclusion: str
    outputs: Mapping[str, str] = field(default_factory=dict)
    error: str = ""
    steps: tuple[StepResult, ...] = ()


class EventSink(Protocol):
    def job_started(self) -> None: ...

    def step_started(self, index: int, name: str) -> None: ...

    def log(self, index: int | None, events: Sequence[LogEvent]) -> None: ...

    def step_finished(self, result: StepResult) -> None: ...

    def job_finished(self, result: JobResult) -> None: ...


class CancelToken:
    """Set by whoever wants the job stopped; executors check it while a step runs."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def cancel(self, reason: str = "cancelled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    @property
    def timed_out(self) -> bool:
        """Set by its deadline rather than cancelled (see `until`)."""
        return False

    def until(self, deadline: float | None) -> CancelToken:
        """This token, also set once time.monotonic() reaches `deadline` (reason "timed out"),
        for waits that must end with the step's time. Cancelling it cancels this one."""
        return self if deadline is None else _DeadlineToken(self, deadline)


class _DeadlineToken(CancelToken):
    def __init__(self, parent: CancelToken, deadline: float) -> None:
        super().__init__()
        self._parent = parent
        self._deadline = deadline

    def cancel(self, reason: str = "cancelled") -> None:
        self._parent.cancel(reason)

    @property
    def cancelled(self) -> bool:
        if self._parent.cancelled:
            self.reason = self._parent.reason
            return True
        if time.monotonic() >= self._deadline:
            self.reason = "timed out"
            return True
        return False

    @property
    def timed_out(self) -> bool:
        return not self._parent.cancelled and time.monotonic() >= self._deadline

    def wait(self, timeout: float) -> bool:
        self._parent.wait(max(0.0, min(timeout, self._deadline - time.monotonic())))
        return self.cancelled


@dataclass
class RecordingSink:
    """An EventSink that keeps everything, in order. Used by tests and `cicd exec --json`."""

    events: list[tuple] = field(default_factory=list)
    results: list[StepResult] = field(default_factory=list)
    job_result: JobResult | None = None

    def job_started(self) -> None:
        self.events.append(("job_started",))

    def step_started(self, index: int, name: str) -> None:
        self.events.append(("step_started", index, name))

    def log(self, index: int | None, events: Sequence[LogEvent]) -> None:
        for event in events:
            self.events.append(("log", index, event))

    def step_finished(self, result: StepResult) -> None:
        self.results.append(result)
        self.events.append(("step_finished", result.index, result.outcome))

    def job_finished(self, result: JobResult) -> None:
        self.job_result = result
        self.events.append(("job_finished", result.conclusion))

    def lines(self, index: int | None = None) -> list[str]:
        from runners.logs import LogLine

        return [
            e[2].text
            for e in self.events
            if e[0] == "log" and isinstance(e[2], LogLine) and (index is None or e[1] == index)
        ]
