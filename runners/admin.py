from __future__ import annotations

from django.contrib import admin

from runners.models import Worker


@admin.register(Worker)
class WorkerAdmin(admin.ModelAdmin):
    list_display = ("name", "executor", "labels", "last_heartbeat", "current_job")
    readonly_fields = ("started_at", "last_heartbeat", "current_job")
