"""Starting runs for events: a push, a pull request, a schedule slot, a manual dispatch.

Every trigger ends here, whatever brought it (a webhook of any source, the post-receive hook,
the scheduler, the API or CLI). Workflows are read from the server's mirror at the event's commit;
which of them start is decided by `pipelines.triggers.workflow_runs_for`. Each run has an
idempotency key made of what identifies the event (repository, event, ref, sha, workflow path,
and a request id for manual and scheduled runs), unique in the database: the same push delivered
twice, through two sources, or by two processes at once, starts one run per workflow.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from pipelines import WorkflowError, parse_workflow
from pipelines.dispatch import InputError, coerce_inputs
from pipelines.model import Workflow
from pipelines.schedule import cron_matches, minutes_between
from pipelines.triggers import BRANCH_PREFIX, TAG_PREFIX, Event, workflow_runs_for
from runs.mirror import (
    GIT_TIMEOUT_SECONDS,
    ZERO_SHA,
    MirrorError,
    changed_paths,
    fetch,
    has_commit,
    mirror_with,
    pull_request_changes,
    workflow_files,
)
from runs.models import Repository, Run, Schedule
from runs.scheduling import RunRequest, create_run

log = logging.getLogger(__name__)

# The workflow path of a run that stands for a trigger that failed before any workflow was read.
TRIGGER_FAILED_PATH = "(trigger)"


def idempotency_key(event: str, repository: Repository, *parts: object) -> str:
    """`event:<sha256 of the identifying parts>`: fixed length, whatever the paths and refs."""
    text = "\0".join(str(part) for part in (repository.id, *parts))
    return f"{event}:{hashlib.sha256(text.encode()).hexdigest()}"


# ------------------------------------------------------------------------------------- push


def start_push(
    repository: Repository,
    *,
    ref: str,
    before: str,
    after: str,
    actor: str = "",
    payload: Mapping[str, Any] | None = None,
) -> list[Run]:
    """Runs for a push of `ref` from `before` to `after`. A deleted branch or tag starts nothing."""
    if not after or after == ZERO_SHA or set(after) == {"0"}:
        return []
    if not ref.startswith((BRANCH_PREFIX, TAG_PREFIX)):
        return []
    payload = payload or {"ref": ref, "before": before, "after": after, "pusher": {"name": actor}}
    try:
        mirror = mirror_with(repository, after)
        files = workflow_files(mirror, after)
        # Path filters do not apply to tags (GitHub), so no diff is needed for them.
        changed = changed_paths(mirror, before, after) if ref.startswith(BRANCH_PREFIX) else None
    except MirrorError as error:
        return [_trigger_failed(repository, "push", ref, after, str(error), actor, payload)]
    if ref == BRANCH_PREFIX + repository.default_branch:
        refresh_schedules(repository, after, files)
    event = Event("push", ref, changed_paths=changed)
    return _start_matching(
        repository,
        files,
        event,
        sha=after,
        key=lambda path: idempotency_key("push", repository, ref, after, path),
        actor=actor,
        payload=payload,
    )


# ------------------------------------------------------------------------------ pull request


def start_pull_request(
    repository: Repository,
    *,
    number: int,
    action: str,
    head_sha: str,
    head_ref: str,
    base_ref: str,
    base_sha: str | None = None,
    from_fork: bool = False,
    actor: str = "",
    payload: Mapping[str, Any] | None = None,
) -> list[Run]:
    """Runs for a pull request event, at the head commit. The head is fetched from the base
    repository by sha (hosts publish pull request heads there, e.g. refs/pull/N/head), so a fork
    needs no credentials of its own."""
    ref = f"refs/pull/{number}/head"
    payload = payload or {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "head": {"ref": head_ref, "sha": head_sha},
            "base": {"ref": base_ref, "sha": base_sha},
        },
        "sender": {"login": actor},
    }
    try:
        mirror = mirror_with(repository, head_sha)
        files = workflow_files(mirror, head_sha)
        base = base_sha if base_sha and has_commit(mirror, base_sha) else base_ref
        changed = pull_request_changes(mirror, base, head_sha)
    except MirrorError as error:
        return [
            _trigger_failed(
                repository, "pull_request", ref, head_sha, str(error), actor, payload, from_fork
            )
        ]
    event = Event("pull_request", head_ref, changed_paths=changed, base_ref=base_ref, action=action)
    return _start_matching(
        repository,
        files,
        event,
        sha=head_sha,
        key=lambda path: idempotency_key(
            "pull_request", repository, number, action, head_sha, path
        ),
        actor=actor,
        payload=payload,
        ref=ref,
        from_fork=from_fork,
    )


# ----------------------------------------------------------------------------------- shared


def _start_matching(
    repository: Repository,
    files: Mapping[str, str],
    event: Event,
    *,
    sha: str,
    key: Any,
    actor: str,
    payload: Mapping[str, Any],
    ref: str | None = None,
    from_fork: bool = False,
) -> list[Run]:
    runs = []
    for path, source in files.items():
        workflow = _parse(source, path)
        # A workflow that does not parse cannot say which events it wants: it gets a failed run
        # with its problems, as on GitHub, so the mistake is seen.
        if workflow is not None and not workflow_runs_for(workflow.triggers, event):
            continue
        runs.append(
            create_run(
                repository,
                RunRequest(
                    workflow_path=path,
                    source=source,
                    event=event.name,
                    ref=ref or event.ref,
                    sha=sha,
                    idempotency_key=key(path),
                    actor=actor,
                    event_payload=payload,
                    from_fork=from_fork,
                ),
            )
        )
    return runs


def _parse(source: str, path: str) -> Workflow | None:
    try:
        return parse_workflow(
            source,
            path,
            matrix_cap=settings.CICD_MATRIX_CAP,
            max_bytes=settings.CICD_WORKFLOW_MAX_BYTES,
        )
    except WorkflowError:
        return None


def _trigger_failed(
    repository: Repository,
    event: str,
    ref: str,
    sha: str,
    error: str,
    actor: str,
    payload: Mapping[str, Any],
    from_fork: bool = False,
    *,
    request_id: str = "",
) -> Run:
    log.warning("%s %s of %s could not be read: %s", event, ref, repository, error)
    return create_run(
        repository,
        RunRequest(
            workflow_path=TRIGGER_FAILED_PATH,
            source="",
            event=event,
            ref=ref,
            sha=sha,
            idempotency_key=idempotency_key(f"{event}-failed", repository, ref, sha, request_id),
            actor=actor,
            event_payload=payload,
            from_fork=from_fork,
            error=error,
        ),
    )


def resolve_ref(mirror: Path, ref: str) -> str | None:
    """The commit a branch, tag or full ref names in the mirror (a sha is returned as is)."""
    candidates = [ref] if ref.startswith("refs/") else [BRANCH_PREFIX + ref, TAG_PREFIX + ref, ref]
    for candidate in candidates:
        result = subprocess.run(
            [
                "git",
                "-C",
                str(mirror),
                "rev-parse",
                "--verify",
                "--quiet",
                f"{candidate}^{{commit}}",
            ],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
        )
        if result.returncode == 0:
            return result.stdout.strip()
    return None


# ---------------------------------------------------------------------------------- schedules


def refresh_schedules(repository: Repository, sha: str, files: Mapping[str, str]) -> None:
    """Record the `on.schedule` entries of the default branch's workflows at `sha`."""
    wanted: set[tuple[str, str]] = set()
    for path, source in files.items():
        workflow = _parse(source, path)
        if workflow is not None:
            wanted.update((path, " ".join(cron.split())) for cron in workflow.triggers.schedule)
    with transaction.atomic():
        existing = {(s.workflow_path, s.cron): s for s in Schedule.objects.filter(
            repository=repository
        )}  # fmt: skip
        for entry, schedule in existing.items():
            if entry not in wanted:
                schedule.delete()
        for path, cron in wanted:
            if (path, cron) in existing:
                Schedule.objects.filter(id=existing[(path, cron)].id).update(sha=sha)
            else:
                try:
                    with transaction.atomic():
                        Schedule.objects.create(
                            repository=repository, workflow_path=path, cron=cron, sha=sha
                        )
                except IntegrityError:
                    pass  # refreshed by another process at the same moment


def sync_schedules(repository: Repository) -> int:
    """Fetch the default branch and refresh the repository's schedules; how many there are."""
    mirror = fetch(repository)
    sha = resolve_ref(mirror, BRANCH_PREFIX + repository.default_branch)
    if sha is None:
        raise MirrorError(f"the default branch {repository.default_branch!r} does not exist")
    refresh_schedules(repository, sha, workflow_files(mirror, sha))
    return Schedule.objects.filter(repository=repository).count()


def fire_due_schedules(now: datetime | None = None) -> list[Run]:
    """Start the scheduled runs due since the last few minutes. Safe to call from several
    schedulers at once, and again for the same minutes: each (workflow, cron, minute) slot has
    its idempotency key, so it starts one run."""
    now = now or timezone.now()
    minutes = minutes_between(now - timedelta(minutes=settings.CICD_SCHEDULE_CATCHUP_MINUTES), now)
    started = []
    for schedule in Schedule.objects.select_related("repository__organisation"):
        for minute in minutes:
            if minute <= schedule.created_at:
                continue  # the entry did not exist yet at that minute
            try:
                due = cron_matches(schedule.cron, minute)
            except ValueError:
                log.warning("schedule %s has an invalid cron expression", schedule)
                break
            if due:
                run = start_scheduled(schedule, minute)
                if run is not None:
                    started.append(run)
    return started


def start_scheduled(schedule: Schedule, minute: datetime) -> Run | None:
    """The run of one schedule slot, at the default branch's current commit."""
    repository = schedule.repository
    key = idempotency_key(
        "schedule", repository, schedule.workflow_path, schedule.cron, minute.isoformat()
    )
    existing = Run.objects.filter(idempotency_key=key).first()
    if existing is not None:
        return existing
    ref = BRANCH_PREFIX + repository.default_branch
    payload = {"schedule": schedule.cron}
    try:
        mirror = fetch(repository)
        sha = resolve_ref(mirror, ref)
        if sha is None:
            raise MirrorError(f"the default branch {repository.default_branch!r} does not exist")
        files = workflow_files(mirror, sha)
    except MirrorError as error:
        return _trigger_failed(
            repository, "schedule", ref, "", str(error), "schedule", payload,
            request_id=key,
        )  # fmt: skip
    source = files.get(schedule.workflow_path)
    workflow = _parse(source, schedule.workflow_path) if source is not None else None
    event = Event("schedule", ref, cron=schedule.cron)
    if workflow is None or not workflow_runs_for(workflow.triggers, event):
        # The file changed since the entry was recorded and nobody told us: catch up.
        refresh_schedules(repository, sha, files)
        return None
    return create_run(
        repository,
        RunRequest(
            workflow_path=schedule.workflow_path,
            source=source,
            event="schedule",
            ref=ref,
            sha=sha,
            idempotency_key=key,
            actor="schedule",
            event_payload=payload,
        ),
    )


# ----------------------------------------------------------------------------- manual dispatch


class DispatchError(Exception):
    """A manual run cannot start as asked; `problems` say why (shown to the user as they are)."""

    def __init__(self, problems: list[str], *, not_found: bool = False) -> None:
        self.problems = problems
        self.not_found = not_found
        super().__init__("; ".join(problems))


def dispatch(
    repository: Repository,
    *,
    workflow_path: str,
    ref: str,
    inputs: Mapping[str, Any] | None = None,
    actor: str = "",
    request_id: str | None = None,
) -> Run:
    """Start `workflow_path` at `ref` (a branch, tag, full ref or sha) with typed `inputs`.

    The workflow must have `on.workflow_dispatch`; inputs are checked against its declarations
    (types, choices, required) and defaults filled in. A `request_id` makes the call safe to
    retry: the same id returns the run it started the first time.
    """
    if request_id is not None:
        existing = Run.objects.filter(
            idempotency_key=idempotency_key("workflow_dispatch", repository, request_id)
        ).first()
        if existing is not None:
            return existing
    try:
        mirror = fetch(repository)
        sha = resolve_ref(mirror, ref)
        if sha is None:
            raise DispatchError([f"ref {ref!r} is not a branch, tag or commit of {repository}"])
        files = workflow_files(mirror, sha)
    except MirrorError as error:
        raise DispatchError([str(error)]) from None
    source = files.get(workflow_path)
    if source is None:
        found = ", ".join(files) or "none"
        raise DispatchError(
            [f"no workflow {workflow_path!r} at {ref} (found: {found})"], not_found=True
        )
    try:
        workflow = parse_workflow(
            source,
            workflow_path,
            matrix_cap=settings.CICD_MATRIX_CAP,
            max_bytes=settings.CICD_WORKFLOW_MAX_BYTES,
        )
    except WorkflowError as error:
        raise DispatchError([str(problem) for problem in error.problems]) from None
    if workflow.triggers.workflow_dispatch is None:
        raise DispatchError([f"workflow {workflow_path!r} has no workflow_dispatch trigger"])
    try:
        values = coerce_inputs(workflow.triggers.workflow_dispatch, dict(inputs or {}))
    except InputError as error:
        raise DispatchError(list(error.problems)) from None
    full_ref = ref
    if not ref.startswith("refs/"):
        full_ref = next(
            (
                prefix + ref
                for prefix in (BRANCH_PREFIX, TAG_PREFIX)
                if resolve_ref(mirror, prefix + ref) == sha
            ),
            ref,  # a sha given as the ref stays as it is
        )
    return create_run(
        repository,
        RunRequest(
            workflow_path=workflow_path,
            source=source,
            event="workflow_dispatch",
            ref=full_ref,
            sha=sha,
            idempotency_key=idempotency_key(
                "workflow_dispatch", repository, request_id or uuid.uuid4().hex
            ),
            actor=actor,
            inputs=values,
            event_payload={"inputs": values, "ref": full_ref, "sender": {"login": actor}},
        ),
    )
