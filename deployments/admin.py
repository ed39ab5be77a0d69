"""The admin of environments (protection rules, reviewers, variables) and of deployments and
their steps, which are read-only: only deployments themselves write them."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from deployments import gates
from deployments.models import (
    Approval,
    Deployment,
    DeploymentStep,
    Environment,
    EnvironmentGate,
    EnvironmentVariable,
)
from pipelines.triggers import FilterPatternError, validate_pattern


class EnvironmentVariableInline(admin.TabularInline):
    """`vars.<NAME>` of the jobs that passed the environment's rules."""

    model = EnvironmentVariable
    extra = 0


class EnvironmentForm(forms.ModelForm):
    """The rules, with the allowed refs as one pattern a line."""

    allowed_refs = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text="One branch or tag pattern a line ('main', 'release/*', 'v*'; a pattern "
        "starting with refs/ matches the full ref; '!' excludes). Empty: any ref may deploy.",
    )

    class Meta:
        model = Environment
        fields = (
            "repository",
            "name",
            "url",
            "required_approvals",
            "reviewers",
            "reviewer_role",
            "prevent_self_review",
            "allowed_refs",
            "wait_timer_minutes",
        )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial["allowed_refs"] = "\n".join(self.instance.allowed_refs or [])

    def clean_allowed_refs(self) -> list[str]:
        patterns = [line.strip() for line in self.cleaned_data.get("allowed_refs", "").splitlines()]
        patterns = [pattern for pattern in patterns if pattern]
        for pattern in patterns:
            try:
                validate_pattern(pattern)
            except FilterPatternError as error:
                raise forms.ValidationError(f"{pattern!r}: {error}") from None
        return patterns


@admin.register(Environment)
class EnvironmentAdmin(admin.ModelAdmin):
    form = EnvironmentForm
    list_display = (
        "name",
        "repository",
        "required_approvals",
        "reviewer_role",
        "wait_timer_minutes",
        "lock_deployment",
        "url",
    )
    list_filter = ("repository",)
    search_fields = ("name", "repository__slug")
    filter_horizontal = ("reviewers",)
    readonly_fields = ("lock_deployment", "lock_expires_at", "created_at")
    inlines = [EnvironmentVariableInline]

    def save_related(
        self, request: HttpRequest, form: forms.ModelForm, formsets: Any, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        # The rules may have changed: the jobs waiting there are judged by the new ones now.
        moved = gates.reevaluate(form.instance)
        if moved:
            self.message_user(request, f"{len(moved)} waiting job(s) moved on under the new rules.")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Written by gates and deployments only."""

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False

    def has_add_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


class DeploymentStepInline(ReadOnlyInline):
    model = DeploymentStep
    fields = ("index", "name", "outcome", "started_at", "finished_at", "detail")


@admin.register(Deployment)
class DeploymentAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "environment",
        "state",
        "strategy",
        "short_digest",
        "triggered_by",
        "rollback_of",
        "created_at",
        "finished_at",
    )
    list_filter = ("state", "strategy")
    search_fields = ("environment__name", "image", "image_digest", "sha", "triggered_by")
    raw_id_fields = ("environment", "job", "run", "rollback_of")
    exclude = ("request",)  # the containers' environment may hold secrets
    inlines = [DeploymentStepInline]

    @admin.display(description="image id")
    def short_digest(self, obj: Deployment) -> str:
        return obj.image_digest[:19]


class ApprovalInline(ReadOnlyInline):
    model = Approval
    fields = ("reviewer", "decision", "comment", "at")


@admin.register(EnvironmentGate)
class EnvironmentGateAdmin(ReadOnlyAdmin):
    """Jobs at an environment's rules, and the reviewers' decisions."""

    list_display = ("job", "environment", "state", "entered_at", "decided_at")
    list_filter = ("state",)
    raw_id_fields = ("job", "environment")
    inlines = [ApprovalInline]
