"""Deployments on the server side: the recorder a deployment reports to, the environment's
deployment lock, one-action rollbacks, and the sweep of deployments whose worker died.

A `cicd/deploy` step (runners.deploy) reports through a `DatabaseDeploymentRecorder`: `begin`
creates the Deployment and takes its environment's lock, waiting while another deployment holds
it; steps, traffic splits and the outcome are stored as they happen; `finish` releases the lock.

The lock is a lease on the Environment row (`lock_token`, `lock_deployment`, `lock_expires_at`):
taken by a conditional UPDATE that succeeds only while the lock is free or its lease has
expired, renewed every third of CICD_DEPLOY_LOCK_SECONDS by a thread of the deploying worker,
released by `finish` (conditional on its token). A worker that dies stops renewing, so the
environment is free again one lease later: the next deployment takes it over, and the sweep
(`fail_stale_deployments`, from beat) marks the dead one failed. Nothing ever deadlocks.

A rollback (`request_rollback`) redeploys the version of the environment's previous successful
deployment with that deployment's inputs, in a Celery task on the job workers' queue (a
deployment takes minutes), with no job: what it says is kept in `Deployment.log`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.models import F, Q, Value
from django.db.models.functions import Concat
from django.utils import timezone

from deployments.models import Deployment, DeploymentStep, Environment, EnvironmentGate
from runners.deploy.request import short_image_id
from runners.events import CancelToken
from runs import live
from runs.models import AuditEntry, Job
from runs.states import State
from runs.threads import BackgroundLoop
from runs.vault import seal, unseal

if TYPE_CHECKING:
    from runners.deploy import DeployRequest

log = logging.getLogger(__name__)

# How often a deployment waiting for the lock tries again, and says that it waits.
LOCK_POLL_SECONDS = 0.5
LOCK_SAY_SECONDS = 10.0
ACTIVE = (Deployment.QUEUED, Deployment.IN_PROGRESS)


class RollbackRefused(Exception):
    """A rollback that cannot be done now (the API answers 409); the message says why."""


class _Gone(Exception):
    """The deployment is no longer queued (cancelled, or run by another delivery)."""


# ------------------------------------------------------------------------------------ history


def current_deployment(environment: Environment) -> Deployment | None:
    """What runs in the environment now: its latest successful deployment."""
    return (
        Deployment.objects.filter(environment=environment, state=Deployment.SUCCESS)
        .select_related("run", "job")
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .first()
    )


def previous_successful(environment: Environment) -> Deployment | None:
    """The version a rollback returns to: the latest successful deployment of another image
    than the current one (None without a current one, or when every success was this image)."""
    current = current_deployment(environment)
    if current is None:
        return None
    return (
        Deployment.objects.filter(environment=environment, state=Deployment.SUCCESS)
        .exclude(image_digest="")
        .exclude(image_digest=current.image_digest)
        .select_related("run", "job")
        .order_by(F("finished_at").desc(nulls_last=True), "-id")
        .first()
    )


def lock_holder(environment: Environment, *, now: datetime | None = None) -> Deployment | None:
    """The deployment holding the environment's lock with a lease that has not expired."""
    now = now or timezone.now()
    row = (
        Environment.objects.filter(id=environment.id)
        .values_list("lock_deployment_id", "lock_token", "lock_expires_at")
        .first()
    )
    if row is None or not row[1] or row[2] is None or row[2] < now or row[0] is None:
        return None
    return Deployment.objects.select_related("run").filter(id=row[0]).first()


def describe(deployment: Deployment) -> str:
    """'deployment #12 (run #7)' or 'deployment #13 (a rollback by alice)', for messages."""
    if deployment.run_id is not None and deployment.run is not None:
        return f"deployment #{deployment.id} (run #{deployment.run.number})"
    if deployment.rollback_of_id is not None:
        return f"deployment #{deployment.id} (a rollback by {deployment.triggered_by or '?'})"
    return f"deployment #{deployment.id}"


# ----------------------------------------------------------------------------------- recorder


class DatabaseDeploymentRecorder:
    """The DeploymentRecorder (runners.deploy) of one deployment to one environment: of a
    running job (`for_job`, its writes fenced by the job's lease token like every write of a
    running job) or of a queued rollback (`for_queued`).

    Step, traffic and outcome writes never raise into the deployment: a write that fails is
    logged, and a worker that lost its job or its lock is stopped through the cancel token (the
    job's lease keeper, or the lock renewer here)."""

    def __init__(
        self,
        environment: Environment,
        *,
        job: Job | None = None,
        token: str = "",
        deployment: Deployment | None = None,
        gate: EnvironmentGate | None = None,
    ) -> None:
        self.environment = environment
        self.job = job
        self.token = token
        self.gate = gate
        self.deployment_id: int | None = deployment.id if deployment is not None else None
        self.lock_token = uuid.uuid4().hex
        self.lease_seconds = float(settings.CICD_DEPLOY_LOCK_SECONDS)
        self._steps = 0
        self._renewer: _LockRenewer | None = None
        self._request: DeployRequest | None = None
        self._finished = False

    @classmethod
    def for_job(cls, job_id: int, token: str, environment_name: str) -> DatabaseDeploymentRecorder:
        """The recorder of a `cicd/deploy` step of a job that passed its environment's gate."""
        gate = (
            EnvironmentGate.objects.select_related("environment__repository", "job__run")
            .filter(job_id=job_id, state=EnvironmentGate.APPROVED)
            .first()
        )
        if gate is None or gate.environment.name != environment_name:
            raise ValueError(
                f"job {job_id} did not pass the rules of environment {environment_name!r}: "
                "it may not deploy there"
            )
        return cls(gate.environment, job=gate.job, token=token, gate=gate)

    @classmethod
    def for_queued(cls, deployment: Deployment) -> DatabaseDeploymentRecorder:
        """The recorder of a deployment queued without a job (a rollback)."""
        return cls(deployment.environment, deployment=deployment)

    # ------------------------------------------------------------------------------ begin

    def begin(
        self,
        request: DeployRequest,
        image_digest: str,
        *,
        cancel: CancelToken,
        say: Callable[[str], None],
    ) -> bool:
        self._request = request
        if self.job is not None:
            with self._fenced():
                self.deployment_id = self._create(request, image_digest).id
        elif (
            Deployment.objects.filter(id=self.deployment_id, state=Deployment.QUEUED).update(
                image_digest=image_digest[:100]
            )
            != 1
        ):
            return False  # cancelled, or another delivery of the same message runs it
        self._notify()
        said_at = claimed_at = float("-inf")
        while True:
            try:
                holder = self._try_lock()
            except _Gone:
                return False
            if holder is None:
                break
            if self.job is None and time.monotonic() - claimed_at >= self.lease_seconds / 3:
                claimed_at = time.monotonic()
                _renew_claim(self.deployment_id, self.lease_seconds)
            if time.monotonic() - said_at >= LOCK_SAY_SECONDS:
                said_at = time.monotonic()
                say(
                    f"Waiting for the deployment lock of {self.environment.name}: {holder} holds it"
                )
            if cancel.wait(LOCK_POLL_SECONDS):
                reason = cancel.reason or "cancelled"
                Deployment.objects.filter(id=self.deployment_id, state=Deployment.QUEUED).update(
                    state=Deployment.FAILED if cancel.timed_out else Deployment.CANCELLED,
                    reason=f"{reason} while waiting for the deployment lock",
                    finished_at=timezone.now(),
                )
                self._notify()
                return False
        say(f"Took the deployment lock of {self.environment.name}")
        self._renewer = _LockRenewer(self, cancel)
        self._renewer.start()
        self._notify()
        return True

    def _create(self, request: DeployRequest, image_digest: str) -> Deployment:
        assert self.job is not None
        run = self.job.run
        return Deployment.objects.create(
            environment=self.environment,
            job=self.job,
            run=run,
            sha=run.sha,
            ref=run.ref,
            image=request.image[:500],
            image_digest=image_digest[:100],
            strategy=request.strategy,
            request=stored_request(request),
            triggered_by=run.actor,
            approvals=approvals_snapshot(self.gate) if self.gate is not None else [],
            skip_analysis=request.skip_analysis,
        )

    def _try_lock(self) -> str | None:
        """Take the lock if it is free or expired (and start the deployment); else who holds it.
        A deployment taken over from an expired lease is failed on the way: its worker died."""
        now = timezone.now()
        with self._fenced():
            row = (
                Environment.objects.select_for_update()
                .filter(id=self.environment.id)
                .values_list("lock_token", "lock_deployment_id", "lock_expires_at")
                .first()
            )
            held_by = row[1] if row is not None else None
            free = Q(lock_token="") | Q(lock_expires_at__isnull=True) | Q(lock_expires_at__lt=now)
            taken = (
                Environment.objects.filter(id=self.environment.id)
                .filter(free)
                .update(
                    lock_token=self.lock_token,
                    lock_deployment_id=self.deployment_id,
                    lock_expires_at=now + timedelta(seconds=self.lease_seconds),
                )
            )
            if not taken:
                holder = Deployment.objects.select_related("run").filter(id=held_by).first()
                return describe(holder) if holder is not None else "another deployment"
            started = Deployment.objects.filter(
                id=self.deployment_id, state=Deployment.QUEUED
            ).update(state=Deployment.IN_PROGRESS, started_at=now)
            if started != 1:
                raise _Gone  # rolls the lock back with the rest of the transaction
            if held_by is not None and held_by != self.deployment_id:
                _fail_stale(held_by, self.environment.name, expired_at=row[2], now=now)
        return None

    # ------------------------------------------------------------------------ progress

    def step_started(self, name: str, detail: Mapping[str, Any]) -> int:
        index = self._steps
        self._steps += 1
        with self._quietly("step_started"):
            DeploymentStep.objects.create(
                deployment_id=self.deployment_id,
                index=index,
                name=name[:300],
                detail=dict(detail),
                started_at=timezone.now(),
            )
            self._notify()
        return index

    def step_finished(self, index: int, outcome: str, detail: Mapping[str, Any]) -> None:
        with self._quietly("step_finished"), transaction.atomic():
            step = (
                DeploymentStep.objects.select_for_update()
                .filter(deployment_id=self.deployment_id, index=index)
                .first()
            )
            if step is None:
                return
            step.outcome = outcome[:20]
            step.detail = {**(step.detail or {}), **dict(detail)}
            step.finished_at = timezone.now()
            step.save(update_fields=["outcome", "detail", "finished_at"])
            self._notify()

    def traffic(self, split: Mapping[str, int]) -> None:
        with self._quietly("traffic"):
            Deployment.objects.filter(id=self.deployment_id, state=Deployment.IN_PROGRESS).update(
                traffic=dict(split)
            )
            self._notify()

    def finish(self, outcome: str, reason: str = "") -> None:
        """Record the outcome (once, from in progress) and release the lock (if still ours)."""
        if self._finished:
            return
        self._finished = True
        if self._renewer is not None:
            self._renewer.stop()
        if outcome not in Deployment.FINAL:
            reason = f"the deployment ended with an unknown outcome {outcome!r}" + (
                f": {reason}" if reason else ""
            )
            outcome = Deployment.FAILED
        now = timezone.now()
        with self._quietly("finish"), transaction.atomic():
            Deployment.objects.filter(id=self.deployment_id, state=Deployment.IN_PROGRESS).update(
                state=outcome, reason=reason, finished_at=now
            )
            released: dict[str, Any] = {
                "lock_token": "",
                "lock_deployment": None,
                "lock_expires_at": None,
            }
            if outcome == Deployment.SUCCESS and self.job is not None:
                released["url"] = self._url()[:1000]
            Environment.objects.filter(id=self.environment.id, lock_token=self.lock_token).update(
                **released
            )
            self._notify()

    def close(self, reason: str) -> None:
        """The deployment's job or task is over: a deployment still in progress failed (the
        engine never reported its end), and the renewer stops in any case."""
        if self.deployment_id is not None and not self._finished:
            still_running = Deployment.objects.filter(
                id=self.deployment_id, state=Deployment.IN_PROGRESS
            ).exists()
            if still_running or self._renewer is not None:
                self.finish(Deployment.FAILED, reason)
        if self._renewer is not None:
            self._renewer.stop()

    def _url(self) -> str:
        """`environment.url` as the workflow rendered it, else where HAProxy serves."""
        from runners.deploy import service_url

        if self.gate is not None and self.gate.url:
            return self.gate.url
        return service_url(self._request.listen) if self._request is not None else ""

    # --------------------------------------------------------------------------- plumbing

    def _fenced(self) -> contextlib.AbstractContextManager[None]:
        """A transaction that, for a job's deployment, first checks the job is still ours."""
        if self.job is None:
            return transaction.atomic()
        from runs.execution import fenced  # it imports this module

        return fenced(self.job.id, self.token)

    @contextlib.contextmanager
    def _quietly(self, what: str) -> Iterator[None]:
        try:
            yield
        except Exception:
            log.warning(
                "deployment %s: recording %s failed", self.deployment_id, what, exc_info=True
            )

    def _notify(self) -> None:
        """Wake the viewers of the deploying job (its page shows the deployment)."""
        if self.job is not None:
            live.notify_job(self.job.id, run_id=self.job.run_id)


class _LockRenewer(BackgroundLoop):
    """Renews the deployment lock's lease every third of it until stopped. A renewal refused
    (the lease expired and another deployment took the lock) stops the deployment."""

    def __init__(self, recorder: DatabaseDeploymentRecorder, cancel: CancelToken) -> None:
        super().__init__(f"deploy-lock-{recorder.deployment_id}")
        self.recorder = recorder
        self.cancel = cancel

    def loop(self) -> None:
        recorder = self.recorder
        every = recorder.lease_seconds / 3
        while not self._stop.wait(every):
            try:
                renewed = Environment.objects.filter(
                    id=recorder.environment.id, lock_token=recorder.lock_token
                ).update(lock_expires_at=timezone.now() + timedelta(seconds=recorder.lease_seconds))
            except Exception:
                # A database hiccup: the lease outlasts two more tries.
                log.warning("deployment lock renewal failed", exc_info=True)
                continue
            if not renewed:
                self.cancel.cancel(
                    f"the deployment lock of {recorder.environment.name} was lost (its lease "
                    "expired and another deployment took it)"
                )
                return


def approvals_snapshot(gate: EnvironmentGate) -> list[dict[str, Any]]:
    """The decisions a job passed, as they were, kept with its deployment."""
    return [
        {
            "reviewer": approval.reviewer.get_username(),
            "decision": approval.decision,
            "comment": approval.comment,
            "at": approval.at.isoformat(),
        }
        for approval in gate.approvals.select_related("reviewer").order_by("id")
    ]


class JobDeployments:
    """The `deployments=` of a running job (`runs.execution`): called with an environment name,
    gives a recorder bound to the job and its lease token. `close` when the job is over."""

    def __init__(self, job_id: int, token: str) -> None:
        self.job_id = job_id
        self.token = token
        self.recorders: list[DatabaseDeploymentRecorder] = []

    def __call__(self, environment: str) -> DatabaseDeploymentRecorder:
        recorder = DatabaseDeploymentRecorder.for_job(self.job_id, self.token, environment)
        self.recorders.append(recorder)
        return recorder

    def close(self) -> None:
        for recorder in self.recorders:
            recorder.close("the job ended before its deployment did")


# ---------------------------------------------------------------------------------- rollbacks


def request_rollback(
    environment: Environment,
    user: Any,
    *,
    skip_analysis: bool,
    remote_address: str = "",
    via: str = "",
) -> Deployment:
    """Queue a redeployment of the previous successful version (see `previous_successful`), with
    that deployment's inputs, and start it on a job worker once this commits. The caller has
    checked the user's write role. RollbackRefused when there is nothing to roll back to, or a
    rollback of this environment is already queued or running."""
    name = user.get_username() if user is not None and user.is_authenticated else ""
    with transaction.atomic():
        # One rollback request of an environment at a time: the checks below hold until commit.
        Environment.objects.select_for_update().filter(id=environment.id).first()
        pending = (
            Deployment.objects.filter(
                environment=environment, rollback_of__isnull=False, state__in=ACTIVE
            )
            .order_by("id")
            .first()
        )
        if pending is not None:
            raise RollbackRefused(
                f"a rollback of {environment.name} is already {pending.get_state_display()} "
                f"(deployment #{pending.id})"
            )
        current = current_deployment(environment)
        if current is None:
            raise RollbackRefused(
                f"{environment.name} has no successful deployment: there is nothing to roll back"
            )
        target = previous_successful(environment)
        if target is None:
            raise RollbackRefused(
                f"{environment.name} has no earlier successful deployment of another version "
                f"than the current one ({short_digest(current.image_digest)}, deployment "
                f"#{current.id})"
            )
        if not target.request:
            raise RollbackRefused(
                f"deployment #{target.id} kept no inputs to deploy again; deploy it from its run"
            )
        deployment = Deployment.objects.create(
            environment=environment,
            sha=target.sha,
            ref=target.ref,
            image=target.image,
            image_digest=target.image_digest,
            strategy=target.strategy,
            request=target.request,
            triggered_by=name,
            rollback_of=target,
            skip_analysis=skip_analysis,
            sent_at=timezone.now(),
        )
        AuditEntry.objects.create(
            action="deployment.rollback",
            repository_id=environment.repository_id,
            actor=name,
            remote_address=remote_address[:100],
            detail={
                "environment": environment.name,
                "deployment": deployment.id,
                "rollback_of": target.id,
                "from": current.id,
                "image_digest": target.image_digest,
                "skip_analysis": skip_analysis,
                **({"via": via} if via else {}),
            },
        )
        transaction.on_commit(functools.partial(_send, deployment.id))
    return deployment


def _send(deployment_id: int) -> None:
    from deployments.tasks import run_deployment

    # A deployment takes minutes: it runs on a job worker, not on the control queue.
    run_deployment.apply_async(args=[deployment_id], queue=settings.CELERY_QUEUE_JOBS)


def run_queued_deployment(deployment_id: int, *, cancel: CancelToken | None = None) -> str | None:
    """Run a queued deployment without a job (a rollback) through the deployment engine, with
    the stored inputs on the stored image id (skipping analysis when asked). Returns the
    outcome, or None when it was not queued (a replayed message, or cancelled)."""
    from runners.deploy import DeployError, deploy

    deployment = (
        Deployment.objects.select_related("environment__repository__organisation")
        .filter(id=deployment_id)
        .first()
    )
    if deployment is None or deployment.state != Deployment.QUEUED:
        return None
    if not _claim(deployment.id):
        return None  # a second message (beat sent it again) while a worker has it
    say = functools.partial(append_log, deployment.id)
    try:
        request = dataclasses.replace(
            replayed_request(deployment.request),
            image=deployment.image_digest or deployment.image,
            skip_analysis=deployment.skip_analysis,
        )
    except (DeployError, TypeError, ValueError, ImproperlyConfigured) as error:
        say(f"Cannot deploy: {error}")
        Deployment.objects.filter(id=deployment.id, state=Deployment.QUEUED).update(
            state=Deployment.FAILED, reason=str(error), finished_at=timezone.now()
        )
        return Deployment.FAILED
    if deployment.rollback_of_id is not None:
        target = deployment.rollback_of
        say(
            f"Rolling {deployment.environment.name} back to {short_digest(deployment.image_digest)}"
            + (f" (deployment #{target.id})" if target is not None else "")
            + (", skipping analysis" if deployment.skip_analysis else "")
        )
    recorder = DatabaseDeploymentRecorder.for_queued(deployment)
    try:
        result = deploy(
            request,
            recorder,
            state_dir=Path(settings.CICD_DEPLOY_DIR),
            cancel=cancel or CancelToken(),
            say=say,
        )
    finally:
        recorder.close("the deployment engine stopped before the deployment ended")
    say(
        f"Deployment #{deployment.id}: {result.outcome}"
        + (f": {result.reason}" if result.reason else "")
    )
    return result.outcome


def _unclaimed(now: datetime) -> Q:
    return Q(claimed_until__isnull=True) | Q(claimed_until__lt=now)


def _claim(deployment_id: int) -> bool:
    """Take a queued rollback for this worker (a lease of CICD_DEPLOY_LOCK_SECONDS, renewed
    while it waits for the lock). False: another worker has it, or it is not queued."""
    now = timezone.now()
    until = now + timedelta(seconds=settings.CICD_DEPLOY_LOCK_SECONDS)
    claimed = (
        Deployment.objects.filter(id=deployment_id, state=Deployment.QUEUED, job__isnull=True)
        .filter(_unclaimed(now))
        .update(claimed_until=until)
    )
    return claimed == 1


def _renew_claim(deployment_id: int, lease_seconds: float) -> None:
    Deployment.objects.filter(id=deployment_id, state=Deployment.QUEUED).update(
        claimed_until=timezone.now() + timedelta(seconds=lease_seconds)
    )


def resend_unclaimed_rollbacks(*, now: datetime | None = None) -> list[int]:
    """Send again the message of each queued rollback that no worker has claimed within
    CICD_DEPLOY_LOCK_SECONDS of its last sending: the message was lost (the broker was down at
    commit) or its worker died before it took the lock. A message that was only slow to arrive
    is harmless twice: the second finds the rollback claimed or ended. Returns the ids sent."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.CICD_DEPLOY_LOCK_SECONDS)
    due = (
        Q(state=Deployment.QUEUED, job__isnull=True)
        & _unclaimed(now)
        & (Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, created_at__lt=cutoff))
    )
    resent = []
    for deployment_id in Deployment.objects.filter(due).values_list("id", flat=True)[:100]:
        with transaction.atomic():
            if Deployment.objects.filter(due, id=deployment_id).update(sent_at=now) == 1:
                transaction.on_commit(functools.partial(_send, deployment_id))
                resent.append(deployment_id)
    return resent


def stored_request(request: DeployRequest) -> dict[str, Any]:
    """The inputs as kept with the deployment: the containers' environment values may be
    secrets (`${{ secrets.X }}`), so they are sealed; their names stay readable."""
    stored = request.as_dict()
    env = stored.pop("env", {}) or {}
    stored["env"] = {name: "" for name in env}
    if env:
        stored["env_sealed"] = seal(json.dumps(env))
    return stored


def replayed_request(stored: dict[str, Any]) -> DeployRequest:
    """The request `stored_request` kept, with its environment unsealed (for a rollback)."""
    from runners.deploy import DeployRequest

    data = dict(stored)
    sealed = data.pop("env_sealed", None)
    if sealed:
        data["env"] = json.loads(unseal(sealed))
    return DeployRequest.from_dict(data)


def append_log(deployment_id: int, line: str) -> None:
    """Add a line (with the time) to a deployment's own log (rollbacks have no job log)."""
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M:%S")
    Deployment.objects.filter(id=deployment_id).update(
        log=Concat(F("log"), Value(f"{stamp} {line}\n"))
    )


def short_digest(digest: str) -> str:
    """sha256:0123456789ab... -> sha256:0123456789ab, for messages."""
    return short_image_id(digest) if digest else "an unknown image"


# ------------------------------------------------------------------------------------- sweep


def fail_stale_deployments(*, now: datetime | None = None) -> list[int]:
    """Fail the deployments in progress whose lock lease expired (their worker died: nothing
    renews it), releasing the lock; cancel the queued deployments of jobs that ended or started
    again before taking the lock. Returns the ids of the deployments ended."""
    now = now or timezone.now()
    ended = []
    running = Deployment.objects.filter(state=Deployment.IN_PROGRESS).select_related("environment")
    for deployment in running:
        environment = deployment.environment
        held = (
            environment.lock_deployment_id == deployment.id
            and environment.lock_token
            and environment.lock_expires_at is not None
            and environment.lock_expires_at >= now
        )
        if held:
            continue
        with transaction.atomic():
            row = (
                Environment.objects.select_for_update()
                .filter(id=environment.id)
                .values_list("lock_deployment_id", "lock_token", "lock_expires_at")
                .first()
            )
            expires_at = row[2] if row is not None else None
            renewed = row is not None and row[0] == deployment.id and row[1]
            if renewed and expires_at is not None and expires_at >= now:
                continue  # renewed meanwhile
            if _fail_stale(deployment.id, environment.name, expired_at=expires_at, now=now):
                ended.append(deployment.id)
            Environment.objects.filter(
                id=environment.id, lock_deployment_id=deployment.id, lock_expires_at__lt=now
            ).update(lock_token="", lock_deployment=None, lock_expires_at=None)
    queued = Deployment.objects.filter(state=Deployment.QUEUED, job__isnull=False).select_related(
        "job"
    )
    for deployment in queued:
        job = deployment.job
        restarted = job.started_at is not None and job.started_at > deployment.created_at
        if job.state == State.RUNNING and not restarted:
            continue
        cancelled = Deployment.objects.filter(id=deployment.id, state=Deployment.QUEUED).update(
            state=Deployment.CANCELLED,
            reason="its job stopped before the deployment took the lock",
            finished_at=now,
        )
        if cancelled:
            ended.append(deployment.id)
    return ended


def _fail_stale(
    deployment_id: int, environment_name: str, *, expired_at: datetime | None, now: datetime
) -> bool:
    when = f" at {expired_at:%Y-%m-%d %H:%M:%S} UTC" if expired_at is not None else ""
    return (
        Deployment.objects.filter(id=deployment_id, state=Deployment.IN_PROGRESS).update(
            state=Deployment.FAILED,
            reason=(
                f"its worker stopped renewing the deployment lock of {environment_name} (the "
                f"lease expired{when}): the worker probably died"
            ),
            finished_at=now,
        )
        == 1
    )
