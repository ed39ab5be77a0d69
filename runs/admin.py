"""The Django admin for operators: tenants, repositories, secrets (write-only), runs and jobs."""

from __future__ import annotations

from django import forms
from django.contrib import admin
from django.http import HttpRequest

from runs.models import Job, Organisation, Repository, Run, Secret
from runs.vault import SecretError, store_secret, validate_name


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "max_concurrent_jobs", "created_at")
    search_fields = ("slug", "name")


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    list_display = ("__str__", "clone_url", "default_branch", "priority", "max_concurrent_jobs")
    list_filter = ("organisation", "is_public")
    search_fields = ("slug", "clone_url")


class SecretForm(forms.ModelForm):
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only: the stored value is never shown. Enter a new one to replace it.",
    )

    class Meta:
        model = Secret
        fields = ("name", "organisation", "repository", "environment")

    def clean(self) -> dict:
        cleaned = super().clean()
        try:
            validate_name(cleaned.get("name") or "")
        except SecretError as error:
            self.add_error("name", str(error))
        if bool(cleaned.get("organisation")) == bool(cleaned.get("repository")):
            raise forms.ValidationError("Choose an organisation or a repository, not both.")
        return cleaned


@admin.register(Secret)
class SecretAdmin(admin.ModelAdmin):
    form = SecretForm
    list_display = ("name", "organisation", "repository", "environment", "updated_at")
    list_filter = ("organisation",)
    search_fields = ("name",)

    def save_model(self, request: HttpRequest, obj: Secret, form: SecretForm, change: bool) -> None:
        data = form.cleaned_data
        saved = store_secret(
            name=data["name"],
            value=data["value"],
            organisation=data.get("organisation"),
            repository=data.get("repository"),
            environment=data.get("environment") or "",
        )
        obj.pk = saved.pk


class ReadOnlyAdmin(admin.ModelAdmin):
    """Runs and jobs change only through the state machines, never by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "workflow_name", "event", "ref", "state", "created_at")
    list_filter = ("state", "event")
    search_fields = ("sha", "ref", "workflow_name")
    exclude = ("workflow_source",)


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("__str__", "state", "claimed_by", "claims", "queued_at", "finished_at")
    list_filter = ("state",)
    exclude = ("lease_token",)
