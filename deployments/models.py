"""Environments of a repository, their protection rules and approvals, and deployments to them.

A job with `environment:` enters the environment through an `EnvironmentGate`: it waits there
(job state `waiting`) until the environment's rules are met (allowed refs, required reviewers,
wait timer), and only then is queued with the environment's secrets and variables
(`deployments.gates`). A `cicd/deploy` step of such a job records a `Deployment`; one deployment
at a time holds the environment's lock, a lease renewed while it runs (`deployments.service`).
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from runs.models import Job, Repository, RepositoryRole, Run


class Environment(models.Model):
    """A deployment target of a repository (dev, staging, production), created by its first use
    in a workflow with no protection rules (as on GitHub), or in the admin."""

    repository = models.ForeignKey(
        Repository, on_delete=models.CASCADE, related_name="environments"
    )
    name = models.CharField(max_length=200)
    url = models.CharField(max_length=1000, blank=True, help_text="the last deployment's url")
    # Required reviewers: `required_approvals` approvals (N) from the listed reviewers and the
    # users holding `reviewer_role` or more on the repository (M). 0: no review needed.
    required_approvals = models.PositiveIntegerField(
        default=0, help_text="approvals needed before a job may deploy here; 0: none"
    )
    reviewer_role = models.CharField(
        max_length=10,
        blank=True,
        choices=RepositoryRole.ROLES,
        help_text="users with this role (or a higher one) on the repository may review",
    )
    reviewers = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="reviewed_environments"
    )
    prevent_self_review = models.BooleanField(
        default=False, help_text="whoever triggered the run may not approve its deployment"
    )
    allowed_refs = models.JSONField(
        default=list,
        blank=True,
        help_text="branch or tag patterns allowed to deploy ('main', 'release/*', 'v*'); "
        "empty: any",
    )
    wait_timer_minutes = models.PositiveIntegerField(
        default=0, help_text="minutes a job waits after entering before it may deploy"
    )
    # The deployment lock: held by one deployment at a time, as a lease its worker renews.
    lock_deployment = models.ForeignKey(
        "Deployment", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lock_token = models.CharField(max_length=64, blank=True)
    lock_expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "name"], name="environment_unique_name")
        ]

    def __str__(self) -> str:
        return f"{self.repository} {self.name}"


class EnvironmentVariable(models.Model):
    """A `vars.<NAME>` value given to jobs of this environment once they passed its rules."""

    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="variables")
    name = models.CharField(max_length=200)
    value = models.TextField(blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["environment", "name"], name="environment_variable_unique_name"
            )
        ]

    def __str__(self) -> str:
        return self.name


class EnvironmentGate(models.Model):
    """One job waiting at (or having passed) an environment's protection rules."""

    PENDING, APPROVED, REJECTED, REFUSED = "pending", "approved", "rejected", "refused"
    STATES = [
        (PENDING, "waiting"),
        (APPROVED, "passed"),
        (REJECTED, "rejected by a reviewer"),
        (REFUSED, "refused by the rules"),
    ]

    job = models.OneToOneField(Job, on_delete=models.CASCADE, related_name="environment_gate")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="gates")
    url = models.CharField(max_length=1000, blank=True, help_text="`environment.url` as rendered")
    state = models.CharField(max_length=10, choices=STATES, default=PENDING)
    entered_at = models.DateTimeField(auto_now_add=True)
    decided_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True)

    class Meta:
        indexes = [
            models.Index(
                fields=["environment", "entered_at"],
                name="gate_pending",
                condition=Q(state="pending"),
            )
        ]

    def __str__(self) -> str:
        return f"{self.job} at {self.environment.name}"


class Approval(models.Model):
    """A reviewer's decision on a waiting job, with the comment they gave."""

    APPROVED, REJECTED = "approved", "rejected"
    DECISIONS = [(APPROVED, "approved"), (REJECTED, "rejected")]

    gate = models.ForeignKey(EnvironmentGate, on_delete=models.CASCADE, related_name="approvals")
    reviewer = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="approvals"
    )
    decision = models.CharField(max_length=10, choices=DECISIONS)
    comment = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["gate", "reviewer"], name="approval_once_per_reviewer")
        ]
        ordering = ["id"]


class Deployment(models.Model):
    """One deployment of a version to an environment: by a job's `cicd/deploy` step, or a
    one-action rollback (no job) that redeploys an earlier successful deployment's version."""

    QUEUED, IN_PROGRESS = "queued", "in_progress"
    SUCCESS, FAILED, ROLLED_BACK, CANCELLED = "success", "failed", "rolled_back", "cancelled"
    STATES = [
        (QUEUED, "queued"),
        (IN_PROGRESS, "in progress"),
        (SUCCESS, "success"),
        (FAILED, "failed"),
        (ROLLED_BACK, "rolled back"),
        (CANCELLED, "cancelled"),
    ]
    FINAL = frozenset({SUCCESS, FAILED, ROLLED_BACK, CANCELLED})

    environment = models.ForeignKey(
        Environment, on_delete=models.CASCADE, related_name="deployments"
    )
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="deployments"
    )
    sha = models.CharField(max_length=64, blank=True, help_text="the commit deployed")
    ref = models.CharField(max_length=500, blank=True)
    image = models.CharField(max_length=500, help_text="the image as the workflow named it")
    image_digest = models.CharField(max_length=100, blank=True, help_text="the image id deployed")
    strategy = models.CharField(max_length=20)
    # The validated `cicd/deploy` inputs (runners.deploy.DeployRequest.as_dict()): a rollback
    # redeploys with exactly these, on another image.
    request = models.JSONField(default=dict)
    state = models.CharField(max_length=20, choices=STATES, default=QUEUED)
    reason = models.TextField(blank=True, help_text="why it failed or was rolled back")
    triggered_by = models.CharField(max_length=200, blank=True)
    approvals = models.JSONField(
        default=list, blank=True, help_text="the approvals its job passed, as they were"
    )
    rollback_of = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="rollbacks",
        help_text="for a rollback: the earlier deployment whose version it restores",
    )
    skip_analysis = models.BooleanField(default=False)
    traffic = models.JSONField(default=dict, blank=True, help_text="percent per version, now")
    # A job's deployment logs to the job; a rollback has no job, so what it says is kept here.
    log = models.TextField(blank=True)
    # A rollback has no job to carry it: the worker running it claims it, a lease renewed while
    # it waits for the lock, and beat sends its message again when nobody claimed it a lease
    # after it was last sent (the message was lost, or the worker died before the lock).
    claimed_until = models.DateTimeField(null=True, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["environment", "-id"], name="deployment_history"),
            # Beat's sweep reads the queued and in-progress deployments every few seconds.
            models.Index(fields=["state"], name="deployment_state"),
        ]

    def __str__(self) -> str:
        return f"{self.environment} #{self.id} {self.state}"


class DeploymentStep(models.Model):
    """A step of a deployment (start replicas, probe, shift traffic to 25 %, analyse...)."""

    deployment = models.ForeignKey(Deployment, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=300)
    outcome = models.CharField(max_length=20, blank=True, help_text="empty while it runs")
    detail = models.JSONField(default=dict, blank=True)
    started_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["deployment", "index"], name="deployment_step_unique_index"
            )
        ]
        ordering = ["index"]
