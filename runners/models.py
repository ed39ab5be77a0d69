"""Workers as the control plane sees them: which labels they offer, when they were last heard."""

from __future__ import annotations

from django.db import models


class Worker(models.Model):
    name = models.CharField(max_length=200, unique=True)
    labels = models.JSONField(default=list, blank=True, help_text="runs-on labels it serves")
    executor = models.CharField(max_length=20, blank=True)
    started_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    current_job = models.ForeignKey(
        "runs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    # Reported by the worker itself (it alone sees its disk): runs.retention / the usage API.
    workspace_bytes = models.BigIntegerField(null=True, blank=True)
    disk_free_bytes = models.BigIntegerField(null=True, blank=True)
    disk_total_bytes = models.BigIntegerField(null=True, blank=True)
    storage_reported_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.name
