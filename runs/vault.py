"""Secrets: encrypted at rest, write-only, resolved for a job by scope.

Values are encrypted with Fernet under CICD_SECRETS_KEY (several keys allow rotation: the first
encrypts, all decrypt) or, when unset, a key derived from SECRET_KEY with HKDF. Nothing here
returns a stored value except `secrets_for`, which the execution layer calls to hand them to a
job's masker and environment, and `git_credential_for`, which the mirror calls to fetch.

A repository's git credential is stored as repository secrets under reserved CICD_ names, which
users cannot choose and `secrets_for` never returns: the server's access to the repository is
not something a job (or a pull request's workflow) gets to see.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Literal

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction

from runs.models import Organisation, Repository, Secret

SECRET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_SECRET_BYTES = 48 * 1024  # GitHub's limit
RESERVED_PREFIXES = ("GITHUB_", "CICD_")

GIT_TOKEN = "CICD_GIT_TOKEN"
GIT_USERNAME = "CICD_GIT_USERNAME"
GIT_SSH_KEY = "CICD_GIT_SSH_KEY"
GIT_CREDENTIAL_NAMES = (GIT_TOKEN, GIT_USERNAME, GIT_SSH_KEY)
DEFAULT_GIT_USERNAME = "x-access-token"  # what GitHub expects with an app or personal token
_TOKEN_TEXT = re.compile(r"^[\x21-\x7e]+$")  # printable ASCII, no spaces: it goes in a header
_SSH_KEY_TEXT = re.compile(
    r"^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\n.+\n-----END [A-Z0-9 ]*PRIVATE KEY-----\n$", re.S
)


class SecretError(ValueError):
    """A secret cannot be stored as asked; the message says why."""


@dataclass(frozen=True, slots=True)
class GitCredential:
    """How the server authenticates to a repository's remote. `username` is empty for an SSH key
    (the user is part of the clone URL, as in git@host:path)."""

    kind: Literal["token", "ssh_key"]
    username: str
    value: str = field(repr=False)  # so a logged or printed credential does not show it


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


def seal(text: str) -> str:
    """`text` encrypted under the secrets keys, for values kept outside the Secret table (a
    deployment's container environment, which may hold secrets)."""
    return _fernet().encrypt(text.encode()).decode()


def unseal(token: str) -> str:
    """The text `seal` encrypted; ImproperlyConfigured when no configured key opens it."""
    try:
        return _fernet().decrypt(token.encode()).decode()
    except InvalidToken:
        raise ImproperlyConfigured(
            "a sealed value cannot be decrypted with the configured keys: was CICD_SECRETS_KEY "
            "or SECRET_KEY changed without keeping the old key?"
        ) from None


def validate_name(name: str) -> None:
    if not SECRET_NAME.match(name):
        raise SecretError(
            f"secret name {name!r} is invalid: use letters, digits and '_', "
            "not starting with a digit"
        )
    if name.upper().startswith(RESERVED_PREFIXES):
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
    return _put(
        name, value, organisation=organisation, repository=repository, environment=environment
    )


def _put(
    name: str,
    value: str,
    *,
    organisation: Organisation | None = None,
    repository: Repository | None = None,
    environment: str = "",
) -> Secret:
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


def validate_credential(
    *, token: str | None = None, ssh_key: str | None = None, username: str = DEFAULT_GIT_USERNAME
) -> None:
    """Raise SecretError unless exactly one usable credential is given (what `store_credential`
    accepts); forms call it before there is a repository to store it on."""
    _credential_values(token=token, ssh_key=ssh_key, username=username)


@transaction.atomic
def store_credential(
    repository: Repository,
    *,
    token: str | None = None,
    ssh_key: str | None = None,
    username: str = DEFAULT_GIT_USERNAME,
) -> None:
    """Set the credential the server fetches `repository` with: an HTTPS token (sent as Basic
    auth, `username`:`token`) or an SSH private key, replacing whichever kind was stored."""
    values = _credential_values(token=token, ssh_key=ssh_key, username=username)
    # One kind at a time: a stale SSH key beside a new token would leave it unclear which is used.
    Secret.objects.filter(
        repository=repository,
        environment="",
        name__in=[name for name in GIT_CREDENTIAL_NAMES if name not in values],
    ).delete()
    for name, value in values.items():
        _put(name, value, repository=repository)


def clear_credential(repository: Repository) -> None:
    """Forget the repository's git credential: the mirror fetches anonymously again."""
    Secret.objects.filter(
        repository=repository, environment="", name__in=GIT_CREDENTIAL_NAMES
    ).delete()


def git_credential_for(repository: Repository) -> GitCredential | None:
    """The credential to fetch `repository` with, or None to fetch anonymously."""
    fernet = _fernet()
    stored = {
        secret.name: secret
        for secret in Secret.objects.filter(
            repository=repository, environment="", name__in=GIT_CREDENTIAL_NAMES
        )
    }
    if GIT_TOKEN in stored:
        username = _decrypt(fernet, stored[GIT_USERNAME]) if GIT_USERNAME in stored else ""
        return GitCredential(
            "token", username or DEFAULT_GIT_USERNAME, _decrypt(fernet, stored[GIT_TOKEN])
        )
    if GIT_SSH_KEY in stored:
        return GitCredential("ssh_key", "", _decrypt(fernet, stored[GIT_SSH_KEY]))
    return None


def _credential_values(*, token: str | None, ssh_key: str | None, username: str) -> dict[str, str]:
    """The secrets to store for a credential, normalised, or SecretError."""
    token = (token or "").strip()
    ssh_key = (ssh_key or "").strip()
    if bool(token) == bool(ssh_key):
        raise SecretError("give a git token or an SSH private key, exactly one of them")
    if token:
        # Both end up in an HTTP header: a line break would let them add headers of their own.
        if not _TOKEN_TEXT.match(token):
            raise SecretError("the git token must be printable ASCII without spaces")
        username = username.strip()
        if not _TOKEN_TEXT.match(username) or ":" in username:
            raise SecretError(
                "the git user name must be printable ASCII without spaces or ':' "
                f"(for a GitHub token: {DEFAULT_GIT_USERNAME})"
            )
        return {GIT_TOKEN: token, GIT_USERNAME: username}
    # A textarea sends CRLF line ends, and OpenSSH refuses a key without its final newline.
    key = ssh_key.replace("\r\n", "\n").replace("\r", "\n") + "\n"
    if not _SSH_KEY_TEXT.match(key):
        raise SecretError(
            "the SSH key must be a private key in PEM or OpenSSH format "
            "(-----BEGIN ... PRIVATE KEY----- to -----END ... PRIVATE KEY-----)"
        )
    return {GIT_SSH_KEY: key}


def secrets_for(repository: Repository, *, environment: str = "") -> dict[str, str]:
    """The secrets a job of this repository gets: organisation, then repository, then (after an
    approval) environment secrets; the more specific scope wins a name clash. Never the server's
    own (CICD_) secrets, such as the git credential."""
    fernet = _fernet()
    layers = [
        Secret.objects.filter(organisation_id=repository.organisation_id, repository=None),
        Secret.objects.filter(repository=repository, environment=""),
    ]
    if environment:
        layers.append(Secret.objects.filter(repository=repository, environment=environment))
    values: dict[str, str] = {}
    for layer in layers:
        for secret in layer.exclude(name__istartswith="CICD_"):
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
