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
