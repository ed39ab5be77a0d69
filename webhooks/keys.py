"""Webhook secrets: encrypted at rest with the secrets' keys, several active for rotation."""

from __future__ import annotations

import secrets as random

from runs.models import Repository
from runs.vault import _fernet
from webhooks.models import WebhookSecret

MIN_SECRET_LENGTH = 16


class WebhookSecretError(ValueError):
    pass


def new_secret_value(value: str | None = None) -> str:
    """`value` checked, or a generated one when it is None."""
    value = value if value is not None else random.token_urlsafe(32)
    if len(value) < MIN_SECRET_LENGTH:
        raise WebhookSecretError(
            f"a webhook secret must be at least {MIN_SECRET_LENGTH} characters long"
        )
    return value


def encrypt(value: str) -> bytes:
    return _fernet().encrypt(value.encode())


def add_secret(repository: Repository, *, label: str, value: str | None = None) -> str:
    """Add an active secret (generated when `value` is None) and return its value."""
    value = new_secret_value(value)
    WebhookSecret.objects.create(repository=repository, label=label, ciphertext=encrypt(value))
    return value


def active_secrets(repository: Repository) -> list[str]:
    fernet = _fernet()
    return [
        fernet.decrypt(bytes(secret.ciphertext)).decode()
        for secret in WebhookSecret.objects.filter(repository=repository, active=True)
    ]
