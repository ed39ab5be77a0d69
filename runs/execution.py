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

from deployments.gates import passed_environment
from deployments.service import JobDeployments
from runners.events import CancelToken, JobResult, StepResult
from runners.executor import RunnerConfig, run_job
from runners.from_workflow import ServiceOptionsError, job_spec_for
from runners.logs import Annotation, GroupEnd, GroupStart, LogEvent, LogLine
from runners.spec import JobSpec
from runs import live
from runs.artifacts import DatabaseArtifactStore
from runs.caches import DatabaseCacheStore
from runs.claims import claim_job, claim_next, heartbeat
from runs.control import cancel_requested
from runs.dispatch import notify_workers
from runs.mirror import MirrorError, checkout_source
from runs.models import Job, LogChunk, Step
from runs.scheduling import finish_job, need_context, run_contexts, workflow_of
from runs.states import FINAL_STATES, State
from runs.threads import BackgroundLoop
from runs.vault import secrets_for

log = logging.getLogger(__name__)

LOG_FLUSH_LINES = 200
LOG_FLUSH_SECONDS = 0.25
# Lines per stored chunk at most, so a reader (a live viewer, the API) holds a bounded amount in
# memory per chunk however much a step printed at once.
LOG_CHUNK_MAX_LINES = 1000
# Viewers are woken at most this often per job for new lines (a wake-up costs a channel-layer
# round trip, and a step printing fast flushes hundreds of times a second); one held back is
# sent by the next flush, at most LOG_FLUSH_SECONDS later.
LOG_NOTIFY_SECONDS = 0.05
ANNOTATION_PROPERTIES = ("file", "line", "end_line", "column", "end_column", "title")


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
    cancel = CancelToken()
    keeper = _LeaseKeeper(job_id, token, cancel, worker=worker)
    # Started before the spec is built: fetching the commit into the mirror can outlast a lease.
    keeper.start()
    try:
        spec = _spec_for(job)
    except (ServiceOptionsError, MirrorError) as error:
        keeper.stop()
        finish_job(job_id, State.FAILURE, token=token, error=str(error), worker=worker)
        return State.FAILURE
    except BaseException:
        keeper.stop()
        raise
    flusher = _LogFlusher(sink, cancel)
    flusher.start()
    # A job that passed its environment's rules may deploy there (`uses: cicd/deploy`).
    deployments = JobDeployments(job_id, token) if spec.environment else None
    try:
        artifacts = DatabaseArtifactStore(job_id, token)
        caches = DatabaseCacheStore(job_id, token)
        result = run_job(
            spec,
            sink,
            config,
            cancel=cancel,
            artifacts=artifacts,
            caches=caches,
            deployments=deployments,
        )
        flusher.stop()
        sink.flush()
    except StaleToken:
        # Another worker holds the job now (our lease expired): stop quietly, write nothing.
        log.warning("job %s: lease lost by %s; its results are discarded", job_id, worker)
        return State.CANCELLED
    finally:
        flusher.stop()
        if deployments is not None:
            deployments.close()
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
    contexts = run_contexts(run)
    # Only a job that passed its environment's rules gets its variables and secrets. A job
    # whose workflow names no environment never entered one: no query on the claim path.
    environment = passed_environment(job) if definition.environment is not None else None
    environment_name = environment.name if environment is not None else ""
    if environment is not None:
        contexts["vars"] = {
            variable.name: variable.value for variable in environment.variables.all()
        }
    contexts["github"]["job"] = job.workflow_job_id
    contexts |= {
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
        # A fork's pull request runs code nobody here reviewed: it gets no secrets.
        secrets={} if run.from_fork else secrets_for(run.repository, environment=environment_name),
        checkout=checkout_source(run.repository, run.sha, run.ref),
        display_name=job.name,
        environment=environment_name,
    )


class _LeaseKeeper(BackgroundLoop):
    """Heartbeats while the job runs; a refused heartbeat (re-claimed, cancelled) stops it."""

    def __init__(self, job_id: int, token: str, cancel: CancelToken, *, worker: str = "") -> None:
        super().__init__(f"lease-{job_id}")
        self.job_id, self.token, self.cancel = job_id, token, cancel
        self.worker = worker  # its Worker row's heartbeat and storage follow the lease's

    def loop(self) -> None:
        from runners.registry import worker_beat

        # The cancel flag is polled more often than the lease is renewed: reading one row is
        # cheap, and a cancel must stop the step within seconds, not a heartbeat interval.
        beat_every = settings.CICD_HEARTBEAT_SECONDS
        poll_every = min(settings.CICD_CANCEL_POLL_SECONDS, beat_every)
        next_beat = time.monotonic() + beat_every
        while not self._stop.wait(poll_every):
            if time.monotonic() >= next_beat:
                next_beat = time.monotonic() + beat_every
                if not heartbeat(
                    self.job_id, token=self.token, lease_seconds=settings.CICD_LEASE_SECONDS
                ):
                    self.cancel.cancel("the job is no longer held by this worker")
                    return
                if self.worker:
                    worker_beat(self.worker)  # never raises; measures storage ≤ once a minute
            # Once cancelled, keep the lease alive while the executor stops (TERM, KILL).
            if not self.cancel.cancelled and cancel_requested(self.job_id, token=self.token):
                self.cancel.cancel("the job was cancelled")


class _LogFlusher(BackgroundLoop):
    """Flushes the sink's buffered lines every LOG_FLUSH_SECONDS while the job runs.

    The sink flushes on its own only when the next line arrives or a step ends, so without this a
    step that prints one line and then sleeps would keep that line from its viewers until it
    wakes. A refused write (the job was re-claimed or ended) ends the loop and cancels the
    executor, as a refused heartbeat does; the executor's next write then raises StaleToken in
    the job's own thread, which discards the job quietly.
    """

    def __init__(self, sink: DatabaseSink, cancel: CancelToken) -> None:
        super().__init__(f"log-flush-{sink.job_id}")
        self.sink, self.cancel = sink, cancel

    def loop(self) -> None:
        try:
            while not self._stop.wait(LOG_FLUSH_SECONDS):
                self.sink.flush()
        except StaleToken:
            self.cancel.cancel("the job is no longer held by this worker")
        except Exception:
            # The executor's own flushes (step end, job end) still store the lines; losing the
            # timer only costs latency, so it must not take the job down.
            log.exception("job %s: the log flusher stopped", self.sink.job_id)


@dataclass
class DatabaseSink:
    """The EventSink that stores a running job's events, each write fenced by the lease token.

    Every event becomes one stored line `[timestamp, stream, text]`, in one ordered stream per
    job: output lines with their stream (stdout, stderr, system); `::group::` as stream "group"
    (text: the title) and `::endgroup::` as "endgroup" (text ""); annotations as "error",
    "warning" or "notice" (text: the message) with a fourth element holding the properties that
    were given (file, line, end_line, column, end_column, title).
    """

    job_id: int
    token: str
    _pending: list[tuple[int | None, list]] = field(default_factory=list)
    _pending_lines: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Held from taking the pending lines until they are stored, so that two flushes (the
    # executor's and the flusher thread's) store their lines in the order they were taken.
    _flush_lock: threading.Lock = field(default_factory=threading.Lock)
    _notified_at: float = 0.0
    _notify_owed: bool = False

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
            live.notify_job(self.job_id)

    def log(self, index: int | None, events: Sequence[LogEvent]) -> None:
        lines = _stored_lines(events)
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
            live.notify_job(self.job_id)

    def job_finished(self, result: JobResult) -> None:
        self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, []
                self._pending_lines = 0
                self._last_flush = time.monotonic()
            if not pending:
                if self._notify_owed:
                    self._notify_viewers()
                return
            try:
                self._store(pending)
            except StaleToken:
                raise
            except Exception:
                # Keep the lines for the next flush (a database hiccup must not lose them).
                with self._lock:
                    self._pending[:0] = pending
                    self._pending_lines += sum(len(lines) for _, lines in pending)
                raise

    def _store(self, pending: list[tuple[int | None, list]]) -> None:
        with self._fenced():
            latest = (
                LogChunk.objects.filter(job_id=self.job_id)
                .order_by("-sequence")
                .values_list("sequence", "offset", "line_count")
                .first()
            )
            sequence = latest[0] + 1 if latest else 0
            offset = latest[1] + latest[2] if latest else 0
            chunks = []
            for index, lines in pending:
                for start in range(0, len(lines), LOG_CHUNK_MAX_LINES):
                    piece = lines[start : start + LOG_CHUNK_MAX_LINES]
                    chunks.append(
                        LogChunk(
                            job_id=self.job_id,
                            step_index=index,
                            sequence=sequence,
                            offset=offset,
                            line_count=len(piece),
                            text="\n".join(json.dumps(line, ensure_ascii=False) for line in piece),
                        )
                    )
                    sequence += 1
                    offset += len(piece)
            LogChunk.objects.bulk_create(chunks)
            self._notify_owed = True
            if time.monotonic() - self._notified_at >= LOG_NOTIFY_SECONDS:
                self._notify_viewers()

    def _notify_viewers(self) -> None:
        """Called with `_flush_lock` held; inside a transaction, sent once it commits."""
        self._notify_owed = False
        self._notified_at = time.monotonic()
        live.notify_job(self.job_id)

    def _check(self) -> None:
        with self._fenced():
            pass

    def _fenced(self) -> contextlib.AbstractContextManager[None]:
        return fenced(self.job_id, self.token)


@contextlib.contextmanager
def fenced(job_id: int, token: str) -> Iterator[None]:
    """One transaction that first checks, with the job row locked, that the worker still holds
    the job with `token`: every write of a running job (log lines, artifacts, caches) goes
    through it, so a worker that lost its job writes nothing more. StaleToken otherwise."""
    with transaction.atomic():
        held = Job.objects.select_for_update().filter(
            id=job_id, state=State.RUNNING, lease_token=token
        )
        if not held.exists():
            raise StaleToken(f"job {job_id} is no longer held with this token")
        yield


def _stored_lines(events: Sequence[LogEvent]) -> list[list]:
    """The stored form of a batch of events (see DatabaseSink)."""
    lines: list[list] = []
    # Structured events carry no time of their own: they follow the command line that made them.
    timestamp: float | None = None
    for event in events:
        if isinstance(event, LogLine):
            timestamp = event.timestamp
            lines.append([event.timestamp, event.stream, event.text])
            continue
        at = timestamp if timestamp is not None else time.time()
        if isinstance(event, GroupStart):
            lines.append([at, "group", event.title])
        elif isinstance(event, GroupEnd):
            lines.append([at, "endgroup", ""])
        elif isinstance(event, Annotation):
            properties = {
                name: value
                for name in ANNOTATION_PROPERTIES
                if (value := getattr(event, name)) is not None
            }
            line = [at, event.level, event.message]
            if properties:
                line.append(properties)
            lines.append(line)
    return lines


def _now() -> datetime:
    return datetime.now(tz=UTC)


def _timestamp(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, tz=UTC) if value else None
