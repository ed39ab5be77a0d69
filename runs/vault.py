"""Secrets: encrypted at rest, write-only, resolved for a job by scope.

Values are encrypted with Fernet under CICD_SECRETS_KEY (several keys allow rotation: the first
encrypts, all decrypt) or, when unset, a key derived from SECRET_KEY with HKDF. Nothing here
returns a stored value except `secrets_for`, which the execution layer calls to hand them to a
job's masker and environment.
"""

from __future__ import annotations

import base64
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from runs.models import Organisation, Repository, Secret

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SECRET_BYTES = 48 * 1024  # GitHub's limit


class SecretError(ValueError):
    """A secret cannot be stored as asked; the message says why."""


def _fernet() -> MultiFernet:
    keys = list(settings.CICD_SECRETS_KEYS)
    if not keys:
        derived = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"cicd secrets v1"
        ).derive(settings.SECRET_KEY.encode())
        keys = [base64.urlsafe_b64encode(derived).decode()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as error:
        raise ImproperlyConfigured(
            "CICD_SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes), comma-separated; "
            f"make one with: python -c 'from cryptography.fernet import Fernet; "
            f"print(Fernet.generate_key().decode())' ({error})"
        ) from None


def validate_name(name: str) -> None:
    if not SECRET_NAME.match(name):
        raise SecretError(
            f"secret name {name!r} is invalid: use letters, digits and '_', "
            "not starting with a digit"
        )
    if name.upper().startswith(("GITHUB_", "CICD_")):
        raise SecretError(f"secret name {name!r} is invalid: GITHUB_ and CICD_ are reserved")


@transaction.atomic
def store_secret(
    *,
    name: str,
    value: str,
    organisation: Organisation | None = None,
    repository: Repository | None = None,
    environment: str = "",
) -> Secret:
    """Create or replace a secret in exactly one scope."""
    validate_name(name)
    if (organisation is None) == (repository is None):
        raise SecretError("a secret belongs to an organisation or to a repository, not both")
    if environment and repository is None:
        raise SecretError("environment secrets belong to a repository")
    if len(value.encode()) > MAX_SECRET_BYTES:
        raise SecretError(f"secret {name!r} is larger than {MAX_SECRET_BYTES // 1024} KB")
    ciphertext = _fernet().encrypt(value.encode())
    secret, _ = Secret.objects.update_or_create(
        name=name,
        organisation=organisation,
        repository=repository,
        environment=environment,
        defaults={"ciphertext": ciphertext},
    )
    return secret


def secrets_for(repository: Repository, *, environment: str = "") -> dict[str, str]:
    """The secrets a job of this repository gets: organisation, then repository, then (after an
    approval) environment secrets; the more specific scope wins a name clash."""
    fernet = _fernet()
    layers = [
        Secret.objects.filter(organisation_id=repository.organisation_id, repository=None),
        Secret.objects.filter(repository=repository, environment=""),
    ]
    if environment:
        layers.append(Secret.objects.filter(repository=repository, environment=environment))
    values: dict[str, str] = {}
    for layer in layers:
        for secret in layer:
            values[secret.name] = _decrypt(fernet, secret)
    return values


def _decrypt(fernet: MultiFernet, secret: Secret) -> str:
    try:
        return fernet.decrypt(bytes(secret.ciphertext)).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            f"secret {secret.name!r} (id {secret.id}) cannot be decrypted with the configured "
            "keys: was CICD_SECRETS_KEY or SECRET_KEY changed without keeping the old key?"
        ) from None
