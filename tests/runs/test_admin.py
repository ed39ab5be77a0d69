"""Operators manage tenants and secrets in the admin; secret values are write-only there."""

from __future__ import annotations

import pytest

from runs.models import Secret
from runs.vault import secrets_for

pytestmark = pytest.mark.django_db


def test_a_secret_added_in_the_admin_is_stored_encrypted_and_never_shown(admin_client, repository):
    response = admin_client.post(
        "/admin/runs/secret/add/",
        {
            "name": "DEPLOY_KEY",
            "repository": repository.id,
            "environment": "",
            "value": "very-secret-value",
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    secret = Secret.objects.get(name="DEPLOY_KEY")
    assert b"very-secret-value" not in bytes(secret.ciphertext)
    assert secrets_for(repository) == {"DEPLOY_KEY": "very-secret-value"}

    page = admin_client.get(f"/admin/runs/secret/{secret.id}/change/").content.decode()
    assert "DEPLOY_KEY" in page
    assert "very-secret-value" not in page
    assert "ciphertext" not in page


def test_an_invalid_secret_name_is_a_form_error_and_stores_nothing(admin_client, repository):
    response = admin_client.post(
        "/admin/runs/secret/add/",
        {"name": "GITHUB_X", "repository": repository.id, "value": "v"},
    )
    assert response.status_code == 200
    assert "reserved" in response.content.decode()
    assert not Secret.objects.exists()


@pytest.mark.parametrize(
    "path",
    [
        "/admin/runs/organisation/",
        "/admin/runs/repository/",
        "/admin/runs/run/",
        "/admin/runs/job/",
        "/admin/runs/secret/",
        "/admin/runners/worker/",
    ],
)
def test_admin_lists_open(admin_client, repository, path):
    assert admin_client.get(path).status_code == 200


def test_runs_cannot_be_added_by_hand(admin_client):
    assert admin_client.get("/admin/runs/run/add/").status_code == 403


def repository_form(repository, **credential: str) -> dict:
    return {
        "organisation": repository.organisation_id,
        "slug": repository.slug,
        "clone_url": repository.clone_url,
        "default_branch": repository.default_branch,
        "priority": repository.priority,
        "max_concurrent_jobs": repository.max_concurrent_jobs,
        "git_username": "x-access-token",
        # The roles inline's management form, as the page sends it (no role changes).
        "roles-TOTAL_FORMS": "0",
        "roles-INITIAL_FORMS": "0",
        **credential,
    }


def test_a_git_credential_is_set_replaced_and_removed_in_the_admin_and_never_shown(
    admin_client, repository
):
    from runs.vault import GitCredential, git_credential_for

    page = f"/admin/runs/repository/{repository.id}/change/"
    assert "none: the mirror fetches without credentials" in admin_client.get(page).content.decode()

    response = admin_client.post(
        page, repository_form(repository, git_token="ghs_adminT0ken", git_username="oauth2")
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert git_credential_for(repository) == GitCredential("token", "oauth2", "ghs_adminT0ken")
    shown = admin_client.get(page).content.decode()
    assert "a token (write-only)" in shown
    assert "ghs_adminT0ken" not in shown
    assert 'value="oauth2"' in shown  # the user name is kept for the next token
    assert secrets_for(repository) == {}

    key = "\r\n".join(
        [
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "c2VjcmV0LWtleS1ib2R5",
            "-----END OPENSSH PRIVATE KEY-----",
        ]
    )
    response = admin_client.post(page, repository_form(repository, ssh_private_key=key))
    assert response.status_code == 302
    credential = git_credential_for(repository)
    assert credential is not None and credential.kind == "ssh_key"
    shown = admin_client.get(page).content.decode()
    assert "an SSH private key (write-only)" in shown
    assert "c2VjcmV0LWtleS1ib2R5" not in shown

    response = admin_client.post(page, repository_form(repository, clear_git_credential="on"))
    assert response.status_code == 302
    assert git_credential_for(repository) is None


def test_a_bad_git_credential_is_a_form_error_that_does_not_echo_it(admin_client, repository):
    from runs.vault import git_credential_for

    page = f"/admin/runs/repository/{repository.id}/change/"
    not_a_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPUBLICpart me@host"
    response = admin_client.post(
        page, repository_form(repository, git_token="ghs_both", ssh_private_key=not_a_key)
    )
    assert response.status_code == 200
    text = response.content.decode()
    assert "exactly one of them" in text
    assert "ghs_both" not in text and "PUBLICpart" not in text

    response = admin_client.post(page, repository_form(repository, ssh_private_key=not_a_key))
    assert response.status_code == 200
    assert "must be a private key" in response.content.decode()
    assert "PUBLICpart" not in response.content.decode()
    assert git_credential_for(repository) is None
