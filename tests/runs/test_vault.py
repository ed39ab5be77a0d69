"""Secrets are encrypted at rest, resolved by scope, masked in logs, and never read back."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from runs.models import Organisation, Repository, Secret
from runs.vault import SecretError, secrets_for, store_secret

pytestmark = pytest.mark.django_db


def test_values_are_encrypted_at_rest_and_resolved_most_specific_first(repository):
    store_secret(name="TOKEN", value="org-token", organisation=repository.organisation)
    store_secret(name="SHARED", value="from-org", organisation=repository.organisation)
    store_secret(name="SHARED", value="from-repo", repository=repository)
    store_secret(name="DEPLOY", value="prod-key", repository=repository, environment="production")

    raw = b"".join(bytes(s.ciphertext) for s in Secret.objects.all())
    for clear in (b"org-token", b"from-org", b"from-repo", b"prod-key"):
        assert clear not in raw

    assert secrets_for(repository) == {"TOKEN": "org-token", "SHARED": "from-repo"}
    assert secrets_for(repository, environment="production")["DEPLOY"] == "prod-key"


def test_other_organisations_secrets_are_not_given(repository):
    other = Organisation.objects.create(slug="other", name="Other")
    store_secret(name="THEIRS", value="x", organisation=other)
    elsewhere = Repository.objects.create(organisation=other, slug="r", clone_url="/x")
    store_secret(name="ALSO_THEIRS", value="y", repository=elsewhere)
    assert secrets_for(repository) == {}


def test_storing_again_replaces_the_value(repository):
    store_secret(name="K", value="one", repository=repository)
    store_secret(name="K", value="two", repository=repository)
    assert Secret.objects.filter(name="K").count() == 1
    assert secrets_for(repository) == {"K": "two"}


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("1ABC", "not starting with a digit"),
        ("MY-KEY", "use letters, digits and '_'"),
        ("GITHUB_TOKEN", "reserved"),
    ],
)
def test_bad_names_are_refused(repository, name, message):
    with pytest.raises(SecretError, match=message):
        store_secret(name=name, value="v", repository=repository)
    assert not Secret.objects.exists()


def test_scope_and_size_are_checked(repository):
    with pytest.raises(SecretError, match="not both"):
        store_secret(
            name="A", value="v", organisation=repository.organisation, repository=repository
        )
    with pytest.raises(SecretError, match="larger than 48 KB"):
        store_secret(name="A", value="x" * 50_000, repository=repository)


def test_keys_rotate_and_a_lost_key_is_a_clear_error(repository, settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CICD_SECRETS_KEYS = [old]
    store_secret(name="K", value="v", repository=repository)
    settings.CICD_SECRETS_KEYS = [new, old]
    assert secrets_for(repository) == {"K": "v"}
    settings.CICD_SECRETS_KEYS = [new]
    with pytest.raises(ImproperlyConfigured, match="cannot be decrypted"):
        secrets_for(repository)
    settings.CICD_SECRETS_KEYS = ["not-a-key"]
    with pytest.raises(ImproperlyConfigured, match="CICD_SECRETS_KEY must be Fernet keys"):
        secrets_for(repository)
