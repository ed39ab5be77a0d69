"""The page where a logged-in user creates API tokens (each shown once) and revokes them."""

from __future__ import annotations

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from runs.api.auth import SCOPES, TOKEN_PREFIX, create_token, revoke_token
from runs.models import ApiToken, AuditEntry


class TokenForm(forms.Form):
    name = forms.CharField(
        max_length=100, help_text="What it is for, e.g. 'laptop' or 'deploy script'."
    )
    scopes = forms.MultipleChoiceField(
        choices=[
            ("read", "read: see runs, jobs and logs"),
            ("write", "write: dispatch, cancel and re-run"),
        ],
        widget=forms.CheckboxSelectMultiple,
        initial=["read"],
    )


@never_cache  # the response that shows a new token must not be kept anywhere
@login_required
@require_http_methods(["GET", "POST"])
def tokens_page(request: HttpRequest) -> HttpResponse:
    form = TokenForm()
    created = ""
    status = 200
    if request.method == "POST":
        action = request.POST.get("action")
        if action == "revoke":
            _revoke(request)
            return HttpResponseRedirect(request.path, status=303)
        if action != "create":
            status = 400
        else:
            form = TokenForm(request.POST)
            if form.is_valid():
                created = create_token(
                    request.user,
                    name=form.cleaned_data["name"],
                    scopes=[scope for scope in SCOPES if scope in form.cleaned_data["scopes"]],
                )
                prefix = created[: len(TOKEN_PREFIX) + 6]
                _audit(request, "token.create", name=form.cleaned_data["name"], prefix=prefix)
                form = TokenForm()
            else:
                status = 400
    tokens = ApiToken.objects.filter(user=request.user).order_by("revoked_at", "-created_at")
    return render(
        request,
        "runs/tokens.html",
        {"form": form, "created": created, "tokens": tokens},
        status=status,
    )


def _revoke(request: HttpRequest) -> None:
    raw = request.POST.get("token", "")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        return
    token = ApiToken.objects.filter(id=int(raw), user=request.user).first()
    if token is not None and revoke_token(token.id, user=request.user):
        _audit(request, "token.revoke", name=token.name, prefix=token.prefix)


def _audit(request: HttpRequest, action: str, **detail: str) -> None:
    AuditEntry.objects.create(
        action=action,
        actor=request.user.get_username(),
        remote_address=request.META.get("REMOTE_ADDR", "")[:100],
        detail=detail,
    )
