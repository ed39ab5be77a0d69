"""Webhook deliveries, stored before they are acknowledged, and the secrets that sign them."""

from __future__ import annotations

from django.db import models

from runs.models import Repository


class WebhookSecret(models.Model):
    """A shared secret a git host signs deliveries with. Several may be active at once, so a
    secret can be rotated: add the new one, change the host, then deactivate the old one."""

    repository = models.ForeignKey(
        Repository, on_delete=models.CASCADE, related_name="webhook_secrets"
    )
    label = models.CharField(max_length=100, help_text="e.g. github, post-receive, 2026-rotation")
    ciphertext = models.BinaryField(editable=False)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.repository} {self.label}"


class Delivery(models.Model):
    """One webhook delivery, written before the 202 so that nothing acknowledged is lost.

    `state` moves received -> done (runs created, or nothing to start) or failed (kept for the
    sweeper and for a redelivery to complete); ping and events that start nothing are stored as
    ignored.
    """

    RECEIVED, DONE, FAILED, IGNORED = "received", "done", "failed", "ignored"
    STATES = [(s, s) for s in (RECEIVED, DONE, FAILED, IGNORED)]

    source = models.CharField(max_length=20)
    delivery_id = models.CharField(max_length=200)
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="deliveries")
    event = models.CharField(max_length=100)
    headers = models.JSONField(default=dict, help_text="the headers parsing needs")
    body = models.TextField()
    state = models.CharField(max_length=20, choices=STATES, default=RECEIVED)
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    run_ids = models.JSONField(default=list, blank=True)
    received_at = models.DateTimeField(auto_now_add=True)
    attempted_at = models.DateTimeField(null=True, blank=True)
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["source", "delivery_id"], name="delivery_unique_id")
        ]
        indexes = [
            models.Index(
                fields=["received_at"],
                name="delivery_unprocessed",
                condition=models.Q(state__in=["received", "failed"]),
            )
        ]
        verbose_name_plural = "deliveries"

    def __str__(self) -> str:
        return f"{self.source} {self.delivery_id}"


class RateBucket(models.Model):
    """The token bucket of a repository's webhook rate limit when there is no Redis."""

    repository = models.OneToOneField(Repository, on_delete=models.CASCADE, primary_key=True)
    tokens = models.FloatField()
    updated = models.FloatField(help_text="time.time() of the last refill")
