"""The control plane's data: who owns what, and every run, job and step with its history.

The database is the source of truth. State columns are written only by `runs.transitions` with
conditional updates; the transition tables keep the history of each change.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from runs.states import State


class Organisation(models.Model):
    """A tenant: its repositories share quotas and fair-share scheduling."""

    slug = models.SlugField(max_length=100, unique=True)
    name = models.CharField(max_length=200)
    max_concurrent_jobs = models.PositiveIntegerField(
        default=20, help_text="jobs of this organisation running at once, at most"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.slug


class Repository(models.Model):
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="repositories"
    )
    slug = models.SlugField(max_length=100)
    clone_url = models.CharField(max_length=1000, help_text="git URL or local path")
    default_branch = models.CharField(max_length=255, default="main")
    priority = models.IntegerField(
        default=0, help_text="higher runs first; aging keeps low priorities from starving"
    )
    max_concurrent_jobs = models.PositiveIntegerField(default=10)
    is_public = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["organisation", "slug"], name="repository_unique_slug")
        ]
        verbose_name_plural = "repositories"

    def __str__(self) -> str:
        return f"{self.organisation.slug}/{self.slug}"

    @property
    def full_name(self) -> str:
        return str(self)


class Run(models.Model):
    """One execution of one workflow file at one commit (and its re-runs, as attempts)."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="runs")
    number = models.PositiveIntegerField(help_text="1, 2, 3... per repository")
    attempt = models.PositiveIntegerField(default=1)
    workflow_path = models.CharField(max_length=500)
    workflow_name = models.CharField(max_length=500)
    # The workflow file as it was at the commit: the run executes this, never the current file.
    workflow_source = models.TextField()
    event = models.CharField(max_length=50)
    ref = models.CharField(max_length=500)
    sha = models.CharField(max_length=64)
    actor = models.CharField(max_length=200, blank=True)
    inputs = models.JSONField(default=dict, blank=True)
    # A pull request from another repository (a fork): its code is untrusted, so its jobs get
    # no secrets and no write access.
    from_fork = models.BooleanField(default=False)
    event_payload = models.JSONField(default=dict, blank=True)
    idempotency_key = models.CharField(max_length=300, unique=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.QUEUED)
    concurrency_group = models.CharField(max_length=500, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Set when retention removed the run's logs (runs.retention): pages say so instead of empty.
    logs_removed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["repository", "number"], name="run_unique_number")
        ]
        indexes = [
            models.Index(fields=["repository", "-number"], name="run_by_repository"),
            models.Index(
                fields=["concurrency_group", "created_at"],
                name="run_active_by_group",
                condition=Q(state__in=["queued", "waiting", "running"]),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repository} #{self.number}"


class Job(models.Model):
    """One job instance: a job of the workflow, or one combination of its matrix."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="jobs")
    attempt = models.PositiveIntegerField(default=1, help_text="the run attempt it belongs to")
    workflow_job_id = models.CharField(max_length=100, help_text="the key under `jobs:`")
    key = models.CharField(max_length=120, help_text="unique in the run, e.g. test-3.10")
    name = models.CharField(max_length=300)
    matrix = models.JSONField(default=dict, blank=True)
    needs = models.JSONField(default=list, blank=True, help_text="workflow job ids")
    runs_on = models.JSONField(default=list, blank=True)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    outputs = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    priority = models.IntegerField(default=0)
    # Claiming: a worker owns the job while `lease_expires_at` is in the future; every write it
    # makes carries `lease_token`, so a worker whose lease was taken over is refused.
    lease_token = models.CharField(max_length=64, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    claimed_by = models.CharField(max_length=200, blank=True)
    claims = models.PositiveIntegerField(default=0, help_text="how often it was handed out")
    # Set by a cancel (of the job, its run, fail-fast, a concurrency group) while it runs: the
    # worker sees it on its next heartbeat and stops the executor.
    cancel_requested = models.BooleanField(default=False)
    # The `retry` extension: attempt number of this job within its run attempt, and when the
    # next attempt may start (exponential backoff with jitter).
    retry_attempt = models.PositiveIntegerField(default=1)
    not_before = models.DateTimeField(null=True, blank=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "attempt", "key"], name="job_unique_key")
        ]
        indexes = [
            models.Index(
                fields=["-priority", "queued_at"],
                name="job_queued_by_priority",
                condition=Q(state="queued"),
            ),
            models.Index(
                fields=["lease_expires_at"],
                name="job_running_by_lease",
                condition=Q(state="running"),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.run} {self.name}"


class Step(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveIntegerField()
    name = models.CharField(max_length=500)
    state = models.CharField(max_length=20, choices=State.choices, default=State.PENDING)
    outcome = models.CharField(max_length=20, blank=True)
    exit_code = models.IntegerField(null=True, blank=True)
    outputs = models.JSONField(default=dict, blank=True)
    summary = models.TextField(blank=True)
    error = models.TextField(blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["job", "index"], name="step_unique_index")]
        ordering = ["index"]


class Secret(models.Model):
    """An encrypted value given to jobs as `secrets.<NAME>`; never shown again once stored.

    Exactly one scope: the organisation, one repository, or one environment of a repository.
    The most specific scope wins when names collide.
    """

    name = models.CharField(max_length=200)
    organisation = models.ForeignKey(
        Organisation, null=True, blank=True, on_delete=models.CASCADE, related_name="secrets"
    )
    repository = models.ForeignKey(
        Repository, null=True, blank=True, on_delete=models.CASCADE, related_name="secrets"
    )
    environment = models.CharField(max_length=200, blank=True)
    ciphertext = models.BinaryField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["name", "organisation"],
                condition=Q(repository__isnull=True),
                name="secret_unique_in_organisation",
            ),
            models.UniqueConstraint(
                fields=["name", "repository", "environment"],
                condition=Q(repository__isnull=False),
                name="secret_unique_in_repository",
            ),
            models.CheckConstraint(
                condition=Q(organisation__isnull=False, repository__isnull=True, environment="")
                | Q(organisation__isnull=True, repository__isnull=False),
                name="secret_has_one_scope",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class LogChunk(models.Model):
    """A batch of consecutive log lines of a job, already masked and capped by the executor.

    Kept in the database (not files) so that a chunk is written in the same transaction that
    checks the writer's lease token, and so readers resume by `offset` with one indexed query.
    """

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_chunks")
    step_index = models.IntegerField(null=True, blank=True, help_text="null: job set-up lines")
    sequence = models.PositiveIntegerField(help_text="0, 1, 2... per job")
    offset = models.PositiveBigIntegerField(help_text="number of lines before this chunk")
    line_count = models.PositiveIntegerField()
    text = models.TextField(help_text="JSON lines: [timestamp, stream, text] per line")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "sequence"], name="logchunk_unique_sequence")
        ]
        indexes = [models.Index(fields=["job", "offset"], name="logchunk_by_offset")]


class RunTransition(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20)
    to_state = models.CharField(max_length=20)
    reason = models.TextField(blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class JobTransition(models.Model):
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="transitions")
    from_state = models.CharField(max_length=20)
    to_state = models.CharField(max_length=20)
    reason = models.TextField(blank=True)
    worker = models.CharField(max_length=200, blank=True)
    at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]


class Schedule(models.Model):
    """An `on.schedule` cron entry of a workflow on the repository's default branch.

    Refreshed whenever the default branch's workflows are read (a push to it, or `sync_schedules`),
    so the scheduler never has to read git every minute.
    """

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="schedules")
    workflow_path = models.CharField(max_length=500)
    cron = models.CharField(max_length=200)
    sha = models.CharField(max_length=64, help_text="the default branch commit it was read at")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "workflow_path", "cron"], name="schedule_unique_entry"
            )
        ]

    def __str__(self) -> str:
        return f"{self.repository} {self.workflow_path} ({self.cron})"


class AuditEntry(models.Model):
    """Who did what, when, from where: privileged actions and refused attempts."""

    action = models.CharField(max_length=100, help_text="e.g. webhook.bad_signature, run.dispatch")
    repository = models.ForeignKey(
        Repository, null=True, blank=True, on_delete=models.SET_NULL, related_name="audit"
    )
    actor = models.CharField(max_length=200, blank=True)
    remote_address = models.CharField(max_length=100, blank=True)
    detail = models.JSONField(default=dict, blank=True)
    at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.action}"


class ApiToken(models.Model):
    """A bearer token for the API and the CLI. Only a SHA-256 of it is stored: the token is
    shown once, when it is created. Scopes: read, write (dispatch, cancel, re-run)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=16, help_text="the token's first characters, to tell it")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.user} {self.name} ({self.prefix}...)"


class Membership(models.Model):
    """A user in an organisation. Organisation admins may do everything on all its repositories;
    other members see only the repositories they have a role on (or public ones)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    organisation = models.ForeignKey(
        Organisation, on_delete=models.CASCADE, related_name="memberships"
    )
    is_admin = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "organisation"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.organisation}{' (admin)' if self.is_admin else ''}"


class RepositoryRole(models.Model):
    """What a user may do on one repository: read (see runs and logs), write (also trigger,
    cancel, re-run), admin (also settings, secrets, approvals)."""

    READ, WRITE, ADMIN = "read", "write", "admin"
    ROLES = [(READ, "read"), (WRITE, "write"), (ADMIN, "admin")]

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="repository_roles"
    )
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="roles")
    role = models.CharField(max_length=10, choices=ROLES)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "repository"], name="repository_role_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.role} on {self.repository}"


class Blob(models.Model):
    """Stored content, named by its SHA-256 (`runs.storage`): identical archives are kept once,
    however many artifacts (and later caches) point at them."""

    sha256 = models.CharField(max_length=64, unique=True)
    size = models.BigIntegerField(help_text="bytes stored")
    created_at = models.DateTimeField(auto_now_add=True)
    # Renewed each time the same content is stored again: blob pruning leaves a blob alone for a
    # while after this, so an upload whose Artifact/CacheEntry row is not written yet keeps it.
    last_stored_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.sha256[:12]} ({self.size} bytes)"


class Artifact(models.Model):
    """A named archive uploaded by a job (`actions/upload-artifact`), downloadable by later jobs
    of the same run and from the run page until it expires. As with GitHub's v4 artifacts a name
    is uploaded once per run attempt."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="artifacts")
    attempt = models.PositiveIntegerField(default=1)
    job = models.ForeignKey(
        Job, null=True, blank=True, on_delete=models.SET_NULL, related_name="artifacts"
    )
    name = models.CharField(max_length=200)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="artifacts")
    size = models.BigIntegerField(help_text="bytes of the files, before compression")
    file_count = models.PositiveIntegerField()
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["run", "attempt", "name"], name="artifact_unique_name_per_attempt"
            )
        ]

    def __str__(self) -> str:
        return f"{self.run} {self.name}"


class CacheEntry(models.Model):
    """An `actions/cache` entry: the archive of some paths saved under a key by a job.

    Entries are scoped to the git ref of the run that saved them (`refs/heads/feature`,
    `refs/pull/7/merge`); a run restores from its own ref and from the repository's default
    branch only (runs.caches), so a pull request cannot poison the default branch's caches.
    `version` is a hash of the cached paths (as on GitHub): the same key saved for other paths is
    another entry. An entry is immutable; (repository, scope, key, version) is unique, which is
    what makes two concurrent saves of one key leave exactly one entry.
    """

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="caches")
    scope = models.CharField(max_length=255, help_text="the git ref the entry was saved from")
    key = models.CharField(max_length=512)
    version = models.CharField(max_length=64)
    blob = models.ForeignKey(Blob, on_delete=models.PROTECT, related_name="caches")
    size = models.BigIntegerField(help_text="bytes of the stored archive")
    run = models.ForeignKey(
        Run, null=True, blank=True, on_delete=models.SET_NULL, related_name="saved_caches"
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["repository", "scope", "key", "version"], name="cache_unique_key"
            )
        ]
        indexes = [
            models.Index(fields=["repository", "scope", "version", "key"], name="cache_lookup"),
            models.Index(fields=["repository", "last_used_at"], name="cache_by_use"),
        ]

    def __str__(self) -> str:
        return f"{self.repository} {self.scope} {self.key}"


class CacheCounter(models.Model):
    """Cache lookups and saves of a repository, counted for `/metrics` (runs.caches)."""

    repository = models.OneToOneField(
        Repository, on_delete=models.CASCADE, related_name="cache_counter"
    )
    hits = models.PositiveBigIntegerField(default=0, help_text="restored by the primary key")
    partial_hits = models.PositiveBigIntegerField(default=0, help_text="restored by a prefix")
    misses = models.PositiveBigIntegerField(default=0)
    restore_seconds = models.FloatField(default=0.0)
    restored_bytes = models.PositiveBigIntegerField(default=0)
    saves = models.PositiveBigIntegerField(default=0)
    saved_bytes = models.PositiveBigIntegerField(default=0)
    save_seconds = models.FloatField(default=0.0)
    evictions = models.PositiveBigIntegerField(default=0)
