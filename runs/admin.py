"""The Django admin for operators: tenants, repositories, secrets (write-only), runs and jobs."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.core.exceptions import ImproperlyConfigured
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone

from runs.api.auth import SCOPES, create_token, digest
from runs.caches import delete_entries
from runs.models import (
    ApiToken,
    CacheEntry,
    Job,
    Membership,
    Organisation,
    Repository,
    RepositoryRole,
    Run,
    Secret,
)
from runs.vault import (
    DEFAULT_GIT_USERNAME,
    GIT_SSH_KEY,
    GIT_TOKEN,
    SecretError,
    clear_credential,
    git_credential_for,
    store_credential,
    store_secret,
    validate_credential,
    validate_name,
)


class MembershipInline(admin.TabularInline):
    """Members of an organisation (on its page) or a user's organisations (on theirs)."""

    model = Membership
    extra = 0
    raw_id_fields = ("user",)


class RepositoryRoleInline(admin.TabularInline):
    """Who may read, write or administer a repository (on its page, or on the user's)."""

    model = RepositoryRole
    extra = 0
    raw_id_fields = ("user",)


@admin.register(Organisation)
class OrganisationAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "max_concurrent_jobs", "created_at")
    search_fields = ("slug", "name")
    inlines = [MembershipInline]


class WriteOnlyTextarea(forms.Textarea):
    """A textarea that is always rendered empty, even when the form comes back with an error."""

    def format_value(self, value: object) -> None:
        return None


class RepositoryForm(forms.ModelForm):
    """The repository, and a write-only way to set or remove the credential its mirror fetches
    with. Stored credentials are never rendered: the page only says which kind is set."""

    git_token = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="For HTTPS clone URLs: a token with read access (a GitHub App installation or "
        "fine-grained token, a GitLab deploy token...). Write-only; replaces the stored "
        "credential.",
    )
    git_username = forms.CharField(
        required=False,
        initial=DEFAULT_GIT_USERNAME,
        help_text=f"Sent with the token. {DEFAULT_GIT_USERNAME} for GitHub, oauth2 for GitLab, "
        "the deploy token's user name otherwise.",
    )
    ssh_private_key = forms.CharField(
        required=False,
        widget=WriteOnlyTextarea(attrs={"rows": 4, "autocomplete": "off"}),
        help_text="For SSH clone URLs: a deploy key without a passphrase. Write-only; replaces "
        "the stored credential.",
    )
    clear_git_credential = forms.BooleanField(
        required=False, label="Remove the stored git credential"
    )

    class Meta:
        model = Repository
        fields = "__all__"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The user name is not secret: keep it, so that a new token is not sent as another user.
        if self.instance.pk:
            try:
                credential = git_credential_for(self.instance)
            except ImproperlyConfigured:
                credential = None  # a lost key: this page is where a new credential is set
            if credential is not None and credential.kind == "token":
                self.fields["git_username"].initial = credential.username

    def clean(self) -> dict:
        cleaned = super().clean()
        token = cleaned.get("git_token") or ""
        key = cleaned.get("ssh_private_key") or ""
        if cleaned.get("clear_git_credential"):
            if token or key:
                raise forms.ValidationError(
                    "Either remove the git credential or give a new one, not both."
                )
        elif token or key:
            try:
                validate_credential(
                    token=token,
                    ssh_key=key,
                    username=cleaned.get("git_username") or DEFAULT_GIT_USERNAME,
                )
            except SecretError as error:
                raise forms.ValidationError(str(error)) from None
        return cleaned


CREDENTIAL_FIELDS = (
    "git_credential",
    "git_token",
    "git_username",
    "ssh_private_key",
    "clear_git_credential",
)


@admin.register(Repository)
class RepositoryAdmin(admin.ModelAdmin):
    form = RepositoryForm
    list_display = ("__str__", "clone_url", "default_branch", "priority", "max_concurrent_jobs")
    list_filter = ("organisation", "is_public")
    search_fields = ("slug", "clone_url")
    readonly_fields = ("git_credential",)
    inlines = [RepositoryRoleInline]

    def get_fieldsets(self, request: HttpRequest, obj: Repository | None = None) -> list:
        # Every other field, whatever the model gains later, then the credential in its section.
        [(_, options)] = super().get_fieldsets(request, obj)
        fields = [name for name in options["fields"] if name not in CREDENTIAL_FIELDS]
        return [
            (None, {"fields": fields}),
            ("Git credential (for private repositories)", {"fields": CREDENTIAL_FIELDS}),
        ]

    @admin.display(description="Stored credential")
    def git_credential(self, obj: Repository | None) -> str:
        # From the names alone: showing which kind is set must not need to decrypt it.
        names: set[str] = set()
        if obj is not None and obj.pk:
            names = set(
                Secret.objects.filter(
                    repository=obj, environment="", name__in=(GIT_TOKEN, GIT_SSH_KEY)
                ).values_list("name", flat=True)
            )
        if GIT_TOKEN in names:
            return "a token (write-only)"
        if GIT_SSH_KEY in names:
            return "an SSH private key (write-only)"
        return "none: the mirror fetches without credentials"

    def save_model(
        self, request: HttpRequest, obj: Repository, form: RepositoryForm, change: bool
    ) -> None:
        super().save_model(request, obj, form, change)
        data = form.cleaned_data
        if data.get("clear_git_credential"):
            clear_credential(obj)
        elif data.get("git_token"):
            store_credential(
                obj,
                token=data["git_token"],
                username=data.get("git_username") or DEFAULT_GIT_USERNAME,
            )
        elif data.get("ssh_private_key"):
            store_credential(obj, ssh_key=data["ssh_private_key"])


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


@admin.register(CacheEntry)
class CacheEntryAdmin(ReadOnlyAdmin):
    """Cache entries are made by jobs and immutable; an operator may only delete them (a job
    then misses and saves the key again). Their blobs stay until blob pruning."""

    list_display = (
        "key",
        "repository",
        "scope",
        "short_version",
        "size",
        "created_at",
        "last_used_at",
    )
    list_filter = ("repository",)
    search_fields = ("key", "scope")
    ordering = ("-last_used_at",)
    actions = ["delete_cache_entries"]

    def get_actions(self, request: HttpRequest) -> dict:
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # this one counts the bytes and locks the rows
        return actions

    @admin.display(description="version")
    def short_version(self, obj: CacheEntry) -> str:
        return obj.version[:12]

    @admin.action(description="Delete the selected cache entries", permissions=["delete"])
    def delete_cache_entries(self, request: HttpRequest, queryset: QuerySet[CacheEntry]) -> None:
        removed = delete_entries(queryset)
        self.message_user(
            request, f"{removed.entries} cache entr(ies) deleted, {removed.bytes} bytes."
        )


# ------------------------------------------------------------------------------ API tokens


class ApiTokenCreationForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(scope, scope) for scope in SCOPES],
        widget=forms.CheckboxSelectMultiple,
        initial=["read"],
        help_text="read: see runs, jobs and logs; write: dispatch, cancel and re-run.",
    )

    class Meta:
        model = ApiToken
        fields = ("user", "name")


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens are created here (the token is shown once, on the page after saving) and revoked
    with the list's action; nothing else about them changes."""

    list_display = ("name", "user", "prefix", "scopes", "created_at", "last_used_at", "revoked_at")
    list_filter = (("revoked_at", admin.EmptyFieldListFilter),)
    search_fields = ("name", "prefix", "user__username")
    raw_id_fields = ("user",)
    actions = ["revoke"]

    def get_form(self, request: HttpRequest, obj: ApiToken | None = None, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = ApiTokenCreationForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        if obj is None:
            return ("user", "name", "scopes")
        return ("user", "name", "prefix", "scopes", "created_at", "last_used_at", "revoked_at")

    def get_readonly_fields(self, request: HttpRequest, obj: ApiToken | None = None) -> Any:
        return () if obj is None else self.get_fields(request, obj)

    def save_model(
        self, request: HttpRequest, obj: ApiToken, form: forms.ModelForm, change: bool
    ) -> None:
        if change:
            return  # every field is read-only once created
        scopes = [scope for scope in SCOPES if scope in form.cleaned_data["scopes"]]
        token = create_token(obj.user, name=obj.name, scopes=scopes)
        saved = ApiToken.objects.get(digest=digest(token))
        for name in ("id", "prefix", "digest", "scopes", "created_at"):
            setattr(obj, name, getattr(saved, name))
        request._cicd_new_token = token  # type: ignore[attr-defined]

    def response_add(
        self, request: HttpRequest, obj: ApiToken, post_url_continue: str | None = None
    ) -> HttpResponse:
        # Shown on this response only: it is not stored, not put in a message cookie, and the
        # page is not cached.
        token = getattr(request, "_cicd_new_token", "")
        response = TemplateResponse(
            request,
            "admin/runs/apitoken/created.html",
            {
                **self.admin_site.each_context(request),
                "opts": self.model._meta,
                "title": "API token created",
                "object": obj,
                "token": token,
            },
        )
        response["Cache-Control"] = "no-store"
        return response

    @admin.action(description="Revoke the selected tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiToken]) -> None:
        revoked = queryset.filter(revoked_at__isnull=True).update(revoked_at=timezone.now())
        self.message_user(request, f"{revoked} token(s) revoked.")


class UserAdmin(DjangoUserAdmin):
    inlines = [*DjangoUserAdmin.inlines, MembershipInline, RepositoryRoleInline]


_user_model = get_user_model()
if admin.site.is_registered(_user_model):
    admin.site.unregister(_user_model)
admin.site.register(_user_model, UserAdmin)
