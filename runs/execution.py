"""A worker runs one claimed job: builds its spec, runs it on an executor, stores what happens.

Everything the executor reports is written through DatabaseSink, which checks the job's lease
token in the same transaction as each write: once the job was handed to another worker (lease
expired) or ended, this worker's writes are refused and its executor is told to stop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from django.conf import settings
from django.db import transaction

from runners.events import CancelToken, JobResult, StepResult
from runners.executor import RunnerConfig, run_job
from runners.from_workflow import ServiceOptionsError, job_spec_for
from runners.logs import LogEvent, LogLine
from runners.spec import CheckoutSource, JobSpec
from runs.claims import claim_job, claim_next, heartbeat
from runs.control import cancel_requested
from runs.dispatch import notify_workers
from runs.models import Job, LogChunk, Step
from runs.scheduling import finish_job, need_context, run_contexts, workflow_of
from runs.states import FINAL_STATES, State
from runs.vault import secrets_for

log = logging.getLogger(__name__)

LOG_FLUSH_LINES = 200
LOG_FLUSH_SECONDS = 0.25


class StaleToken(Exception):
    """This worker no longer holds the job: its writes must stop."""


def execute(job_id: int, *, worker: str, config: RunnerConfig | None = None) -> str | None:
    """Claim a queued job and run it to the end. Returns its conclusion, or None when the job was
    not ours to run (already claimed, cancelled, ended: a replayed message)."""
    token = claim_job(job_id, worker=worker, lease_seconds=settings.CICD_LEASE_SECONDS)
    if token is None:
        return None
    return run_claimed_job(job_id, token, worker=worker, config=config)


def execute_next(
    *, worker: str, labels: Sequence[str], config: RunnerConfig | None = None
) -> str | None:
    """Claim the best job this worker may run (`claim_next`) and run it to the end. Returns its
    conclusion, or None when there was nothing this worker may run."""
    from runners.registry import record_worker

    config = config or RunnerConfig.from_settings(settings)
    claimed = claim_next(worker=worker, labels=labels, lease_seconds=settings.CICD_LEASE_SECONDS)
    if claimed is None:
        return None
    job_id, token = claimed
    seen = {"name": worker, "labels": labels, "executor": config.executor}
    record_worker(**seen, current_job_id=job_id)
    try:
        return run_claimed_job(job_id, token, worker=worker, config=config)
    finally:
        record_worker(**seen, current_job_id=None)
        # A slot of a concurrency limit just freed: the wake-up of a job that was held back by
        # that limit was consumed without a claim, so send one more while work is queued.
        waiting = Job.objects.filter(state=State.QUEUED).values_list("id", flat=True).first()
        if waiting is not None:
            notify_workers(waiting)


def run_claimed_job(
    job_id: int, token: str, *, worker: str, config: RunnerConfig | None = None
) -> str:
    config = config or RunnerConfig.from_settings(settings)
    job = Job.objects.select_related("run__repository__organisation").get(id=job_id)
    sink = DatabaseSink(job_id=job_id, token=token)
    try:
        spec = _spec_for(job)
    except ServiceOptionsError as error:
        finish_job(job_id, State.FAILURE, token=token, error=str(error), worker=worker)
        return State.FAILURE

    cancel = CancelToken()
    keeper = _LeaseKeeper(job_id, token, cancel)
    keeper.start()
    try:
        result = run_job(spec, sink, config, cancel=cancel)
        sink.flush()
    except StaleToken:
        # Another worker holds the job now (our lease expired): stop quietly, write nothing.
        log.warning("job %s: lease lost by %s; its results are discarded", job_id, worker)
        return State.CANCELLED
    finally:
        keeper.stop()
    conclusion = _conclusion(result, cancel)
    if not finish_job(
        job_id, conclusion, token=token, outputs=result.outputs, error=result.error, worker=worker
    ):
        log.warning("job %s: result refused, the job is no longer held by %s", job_id, worker)
    return conclusion


def _conclusion(result: JobResult, cancel: CancelToken) -> str:
    if result.conclusion in FINAL_STATES:
        return result.conclusion
    return State.CANCELLED if cancel.cancelled else State.FAILURE


def _spec_for(job: Job) -> JobSpec:
    run = job.run
    workflow = workflow_of(run.workflow_source, run.workflow_path)
    definition = workflow.jobs[job.workflow_job_id]
    needs = {}
    for need in job.needs:
        instances = list(Job.objects.filter(run=run, attempt=job.attempt, workflow_job_id=need))
        needs[need] = need_context(instances)
    strategy = definition.strategy
    contexts = run_contexts(run) | {
        "needs": needs,
        "strategy": {
            "fail-fast": strategy.fail_fast if strategy else True,
            "max-parallel": strategy.max_parallel if strategy else None,
        },
    }
    return job_spec_for(
        workflow,
        definition,
        job_id=f"{job.id}-{job.claims}",
        run_id=str(run.id),
        matrix=job.matrix,
        contexts=contexts,
        secrets=secrets_for(run.repository),
        checkout=CheckoutSource(run.repository.clone_url, run.sha, run.ref),
        display_name=job.name,
    )


class _LeaseKeeper:
    """Heartbeats while the job runs; a refused heartbeat (re-claimed, cancelled) stops it."""

    def __init__(self, job_id: int, token: str, cancel: CancelToken) -> None:
        self.job_id, self.token, self.cancel = job_id, token, cancel
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        from django.db import connection

        # The cancel flag is polled more often than the lease is renewed: reading one row is
        # cheap, and a cancel must stop the step within seconds, not a heartbeat interval.
        beat_every = settings.CICD_HEARTBEAT_SECONDS
        poll_every = min(settings.CICD_CANCEL_POLL_SECONDS, beat_every)
        next_beat = time.monotonic() + beat_every
        try:
            while not self._stop.wait(poll_every):
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + beat_every
                    if not heartbeat(
                        self.job_id, token=self.token, lease_seconds=settings.CICD_LEASE_SECONDS
                    ):
                        self.cancel.cancel("the job is no longer held by this worker")
                        return
                # Once cancelled, keep the lease alive while the executor stops (TERM, KILL).
                if not self.cancel.cancelled and cancel_requested(self.job_id, token=self.token):
                    self.cancel.cancel("the job was cancelled")
        finally:
            connection.close()  # this thread's own connection


@dataclass
class DatabaseSink:
    """The EventSink that stores a running job's events, each write fenced by the lease token."""

    job_id: int
    token: str
    _pending: list[tuple[int | None, list]] = field(default_factory=list)
    _pending_lines: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def job_started(self) -> None:
        self._check()

    def step_started(self, index: int, name: str) -> None:
        self.flush()
        with self._fenced():
            Step.objects.update_or_create(
                job_id=self.job_id,
                index=index,
                defaults={"name": name[:500], "state": State.RUNNING, "started_at": _now()},
            )

    def log(self, index: int | None, events: Sequence[LogEvent]) -> None:
        lines = [
            [event.timestamp, event.stream, event.text]
            for event in events
            if isinstance(event, LogLine)
        ]
        if not lines:
            return
        with self._lock:
            if self._pending and self._pending[-1][0] == index:
                self._pending[-1][1].extend(lines)
            else:
                self._pending.append((index, lines))
            self._pending_lines += len(lines)
            due = (
                self._pending_lines >= LOG_FLUSH_LINES
                or time.monotonic() - self._last_flush >= LOG_FLUSH_SECONDS
            )
        if due:
            self.flush()

    def step_finished(self, result: StepResult) -> None:
        self.flush()
        state = result.conclusion if result.outcome != State.SKIPPED else State.SKIPPED
        with self._fenced():
            Step.objects.update_or_create(
                job_id=self.job_id,
                index=result.index,
                defaults={
                    "state": state,
                    "outcome": result.outcome,
                    "exit_code": result.exit_code,
                    "outputs": dict(result.outputs),
                    "summary": result.summary,
                    "error": result.error,
                    "started_at": _timestamp(result.started_at),
                    "finished_at": _timestamp(result.finished_at) or _now(),
                },
            )

    def job_finished(self, result: JobResult) -> None:
        self.flush()

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
            self._pending_lines = 0
            self._last_flush = time.monotonic()
        if not pending:
            return
        with self._fenced():
            latest = LogChunk.objects.filter(job_id=self.job_id).order_by("-sequence").first()
            sequence = latest.sequence + 1 if latest else 0
            offset = latest.offset + latest.line_count if latest else 0
            for index, lines in pending:
                LogChunk.objects.create(
                    job_id=self.job_id,
                    step_index=index,
                    sequence=sequence,
                    offset=offset,
                    line_count=len(lines),
                    text="\n".join(json.dumps(line, ensure_ascii=False) for line in lines),
                )
                sequence += 1
                offset += len(lines)

    def _check(self) -> None:
        with self._fenced():
            pass

    @contextlib.contextmanager
    def _fenced(self) -> Iterator[None]:
        """One transaction that first checks, with the job row locked, that we still hold it."""
        with transaction.atomic():
            held = Job.objects.select_for_update().filter(
                id=self.job_id, state=State.RUNNING, lease_token=self.token
            )
            if not held.exists():
                raise StaleToken(f"job {self.job_id} is no longer held with this token")
            yield


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None
