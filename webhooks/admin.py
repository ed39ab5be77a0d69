"""Operators' view of webhooks: secrets (write-only, rotatable), deliveries, and the audit log."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from runs.models import AuditEntry
from webhooks.keys import MIN_SECRET_LENGTH, encrypt, new_secret_value
from webhooks.models import Delivery, WebhookSecret


class WebhookSecretForm(forms.ModelForm):
    value = forms.CharField(
        required=False,
        min_length=MIN_SECRET_LENGTH,
        widget=forms.PasswordInput(render_value=False),
        help_text="Write-only. Leave empty when adding to generate one (shown once). To rotate: "
        "add a new secret, give it to the git host, then deactivate the old one.",
    )

    class Meta:
        model = WebhookSecret
        fields = ("repository", "label", "active")


@admin.register(WebhookSecret)
class WebhookSecretAdmin(admin.ModelAdmin):
    form = WebhookSecretForm
    list_display = ("repository", "label", "active", "created_at")
    list_filter = ("active",)

    def get_fields(self, request: HttpRequest, obj: WebhookSecret | None = None) -> list[str]:
        # The value is set once, when the secret is added; rotating means adding another.
        return ["repository", "label", "active"] + ([] if obj else ["value"])

    def save_model(
        self, request: HttpRequest, obj: WebhookSecret, form: WebhookSecretForm, change: bool
    ) -> None:
        if not change:
            value = form.cleaned_data.get("value") or None
            shown = new_secret_value(value)
            obj.ciphertext = encrypt(shown)
            if value is None:
                self.message_user(
                    request, f"Generated secret (shown only now): {shown}", level=messages.WARNING
                )
        super().save_model(request, obj, form, change)


@admin.register(Delivery)
class DeliveryAdmin(admin.ModelAdmin):
    list_display = ("delivery_id", "source", "repository", "event", "state", "received_at")
    list_filter = ("state", "source", "event")
    search_fields = ("delivery_id",)
    readonly_fields = [field.name for field in Delivery._meta.fields]
    actions = ["process_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.action(description="Process again (starts only what is missing)")
    def process_again(self, request: HttpRequest, queryset: QuerySet[Delivery]) -> None:
        from webhooks.processing import UNFINISHED
        from webhooks.tasks import process_delivery

        pks = list(queryset.filter(state__in=UNFINISHED).values_list("pk", flat=True))
        for pk in pks:
            process_delivery.delay(pk)
        self.message_user(request, f"{len(pks)} unfinished deliveries queued again.")


@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("at", "action", "repository", "actor", "remote_address")
    list_filter = ("action",)
    readonly_fields = ("at", "action", "repository", "actor", "remote_address", "detail")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
