"""API tokens, and who is calling an endpoint.

A token is `cicd_` + 43 random characters; only its SHA-256 is stored, so it is shown once, when
it is created. Scopes: `read` for GET, `write` for POST (dispatch, cancel, re-run, approve).

A request is made by a token (`Authorization: Bearer cicd_...`), else by the browser session
(then unsafe methods must pass Django's CSRF check, as forms do), else by an anonymous visitor,
who may only read public repositories.
"""

from __future__ import annotations

import hashlib
import secrets as random
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Q
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils import timezone

from runs.models import ApiToken

SCOPES = ("read", "write")
TOKEN_PREFIX = "cicd_"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# `last_used_at` is written at most this often per token: `cicd logs --follow` polls twice a
# second, and a write per poll would contend with the jobs writing their logs.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class AuthError(Exception):
    """The request cannot go on: `status` 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a request: a user (maybe anonymous), and the token they used if any."""

    user: Any
    token: ApiToken | None = None

    @property
    def name(self) -> str:
        return self.user.get_username() if self.user.is_authenticated else "anonymous"

    @property
    def via(self) -> str:
        if self.token is not None:
            return "token"
        return "session" if self.user.is_authenticated else "anonymous"


def create_token(user: AbstractBaseUser, *, name: str, scopes: list[str]) -> str:
    """Create a token and return it; only its digest is kept."""
    unknown = sorted(set(scopes) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; use {', '.join(SCOPES)}")
    if not scopes:
        raise ValueError(f"give at least one scope: {', '.join(SCOPES)}")
    token = TOKEN_PREFIX + random.token_urlsafe(32)
    ApiToken.objects.create(
        user=user,
        name=name,
        prefix=token[: len(TOKEN_PREFIX) + 6],
        digest=digest(token),
        scopes=sorted(set(scopes)),
    )
    return token


def revoke_token(token_id: int, *, user: Any = None) -> bool:
    """Revoke a token (only one of `user`'s when given). Returns whether this call did it."""
    tokens = ApiToken.objects.filter(id=token_id, revoked_at__isnull=True)
    if user is not None:
        tokens = tokens.filter(user=user)
    return tokens.update(revoked_at=timezone.now()) == 1


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_from_header(header: str) -> ApiToken:
    """The live token an `Authorization` header names, or AuthError(401)."""
    kind, _, value = header.partition(" ")
    value = value.strip()
    if kind.lower() != "bearer" or not value:
        raise AuthError(401, "send an API token as 'Authorization: Bearer <token>'")
    found = (
        ApiToken.objects.select_related("user")
        .filter(digest=digest(value), revoked_at__isnull=True)
        .first()
    )
    if found is None or not found.user.is_active:
        raise AuthError(401, "the API token is unknown or revoked")
    now = timezone.now()
    ApiToken.objects.filter(id=found.id).filter(
        Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - LAST_USED_RESOLUTION)
    ).update(last_used_at=now)
    return found


def identify(request: HttpRequest) -> Caller:
    """Who makes the request, checked for what its method needs; AuthError when refused."""
    unsafe = request.method not in SAFE_METHODS
    header = request.headers.get("Authorization")
    if header is not None:
        token = token_from_header(header)
        scope = "write" if unsafe else "read"
        if scope not in token.scopes:
            raise AuthError(403, f"the API token lacks the {scope!r} scope")
        return Caller(user=token.user, token=token)
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        if unsafe:
            reason = _CsrfCheck(_no_response).process_view(request, None, (), {})
            if reason is not None:
                raise AuthError(403, f"CSRF check failed: {reason}")
        return Caller(user=user)
    if unsafe:
        raise AuthError(401, "log in, or send an API token as 'Authorization: Bearer <token>'")
    return Caller(user=AnonymousUser())


def authenticate(request: HttpRequest, scope: str) -> tuple[ApiToken | None, str]:
    """The token of the request if it is valid and has `scope`; else None and why."""
    try:
        token = token_from_header(request.headers.get("Authorization", ""))
    except AuthError as error:
        return None, error.message
    if scope not in token.scopes:
        return None, f"the API token lacks the {scope!r} scope"
    return token, ""


class _CsrfCheck(CsrfViewMiddleware):
    """Django's own CSRF check, run by hand for session-authenticated API calls (the API views
    are exempt from the middleware because token calls carry no cookie). It returns the reason
    of a refusal instead of a response."""

    def _reject(self, request: HttpRequest, reason: str) -> str:  # type: ignore[override]
        return reason


def _no_response(request: HttpRequest) -> None:
    return None
