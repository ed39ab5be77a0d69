"""Tokens from the user's page and from the admin: shown once, stored hashed, revocable, and
the revoked ones stop working at once."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from runs.api.auth import digest
from runs.models import ApiToken, AuditEntry, Membership, RepositoryRole

pytestmark = [pytest.mark.django_db, pytest.mark.urls("tests.api.urls")]
PAGE = "/settings/tokens/"


def shown_token(html: str) -> str:
    found = re.findall(r'value="(cicd_[^"]+)"', html)
    assert len(found) == 1, found
    return found[0]


@pytest.fixture
def alice():
    return get_user_model().objects.create_user("alice", password="pw")


@pytest.fixture
def browser(alice) -> Client:
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def csrf(client: Client) -> str:
    page = client.get(PAGE)
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode())[1]


def test_the_page_needs_a_login():
    response = Client().get(PAGE)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_a_token_created_on_the_page_is_shown_once_and_works(browser, alice):
    response = browser.post(
        PAGE,
        {
            "action": "create",
            "name": "laptop",
            "scopes": ["read"],
            "csrfmiddlewaretoken": csrf(browser),
        },
    )
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]
    token = shown_token(response.content.decode())
    stored = ApiToken.objects.get(user=alice)
    assert (stored.name, stored.scopes, stored.digest) == ("laptop", ["read"], digest(token))
    assert token not in ApiToken.objects.values_list("prefix", flat=True)
    assert AuditEntry.objects.filter(action="token.create", actor="alice").exists()

    again = browser.get(PAGE).content.decode()
    assert token not in again and stored.prefix in again
    api = Client().get("/api/v1/user", headers={"Authorization": f"Bearer {token}"})
    assert api.json()["username"] == "alice" and api.json()["scopes"] == ["read"]


def test_the_form_refuses_bad_input_and_posts_without_csrf(browser, alice):
    token = csrf(browser)
    empty = browser.post(PAGE, {"action": "create", "name": "", "csrfmiddlewaretoken": token})
    assert empty.status_code == 400 and not ApiToken.objects.exists()
    forged = browser.post(PAGE, {"action": "create", "name": "x", "scopes": ["read"]})
    assert forged.status_code == 403 and not ApiToken.objects.exists()


def test_revoking_on_the_page_only_touches_ones_own_tokens(browser, alice):
    from runs.api import create_token

    mine = create_token(alice, name="mine", scopes=["read"])
    bob = get_user_model().objects.create_user("bob")
    theirs = create_token(bob, name="theirs", scopes=["read"])
    theirs_id = ApiToken.objects.get(user=bob).id
    token = csrf(browser)
    browser.post(PAGE, {"action": "revoke", "token": theirs_id, "csrfmiddlewaretoken": token})
    browser.post(PAGE, {"action": "revoke", "token": "nonsense", "csrfmiddlewaretoken": token})
    response = browser.post(
        PAGE,
        {
            "action": "revoke",
            "token": ApiToken.objects.get(user=alice).id,
            "csrfmiddlewaretoken": token,
        },
    )
    assert response.status_code == 303
    assert ApiToken.objects.get(user=bob).revoked_at is None
    assert ApiToken.objects.get(user=alice).revoked_at is not None
    for value, status in ((mine, 401), (theirs, 200)):
        answer = Client().get("/api/v1/user", headers={"Authorization": f"Bearer {value}"})
        assert answer.status_code == status
    assert "revoked" in browser.get(PAGE).content.decode()


# ---------------------------------------------------------------------------------- admin


def test_the_admin_creates_a_token_shows_it_once_and_revokes_it(admin_client, alice):
    response = admin_client.post(
        "/admin/runs/apitoken/add/",
        {"user": alice.id, "name": "deploy", "scopes": ["read", "write"]},
    )
    assert response.status_code == 200, response.content.decode()[:2000]
    token = shown_token(response.content.decode())
    stored = ApiToken.objects.get(user=alice)
    assert stored.digest == digest(token) and stored.scopes == ["read", "write"]
    change = admin_client.get(f"/admin/runs/apitoken/{stored.id}/change/").content.decode()
    assert token not in change and stored.digest not in change

    admin_client.post(
        "/admin/runs/apitoken/", {"action": "revoke", "_selected_action": [stored.id]}
    )
    assert ApiToken.objects.get(id=stored.id).revoked_at is not None
    answer = Client().get("/api/v1/user", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 401


def test_roles_and_memberships_are_edited_inline(admin_client, alice, world):
    page = admin_client.get(f"/admin/auth/user/{alice.id}/change/").content.decode()
    assert "memberships-TOTAL_FORMS" in page and "repository_roles-TOTAL_FORMS" in page
    repository_page = admin_client.get(f"/admin/runs/repository/{world.private.id}/change/")
    assert "roles-TOTAL_FORMS" in repository_page.content.decode()
    organisation_page = admin_client.get(
        f"/admin/runs/organisation/{world.private.organisation_id}/change/"
    )
    assert "memberships-TOTAL_FORMS" in organisation_page.content.decode()

    organisation = world.private.organisation
    existing = list(Membership.objects.filter(organisation=organisation).order_by("id"))
    form = {
        "slug": organisation.slug,
        "name": organisation.name,
        "max_concurrent_jobs": organisation.max_concurrent_jobs,
        "memberships-TOTAL_FORMS": len(existing) + 1,
        "memberships-INITIAL_FORMS": len(existing),
        f"memberships-{len(existing)}-user": alice.id,
        f"memberships-{len(existing)}-is_admin": "on",
    }
    for index, membership in enumerate(existing):
        form |= {
            f"memberships-{index}-id": membership.id,
            f"memberships-{index}-organisation": organisation.id,
            f"memberships-{index}-user": membership.user_id,
            **({f"memberships-{index}-is_admin": "on"} if membership.is_admin else {}),
        }
    saved = admin_client.post(f"/admin/runs/organisation/{organisation.id}/change/", form)
    assert saved.status_code == 302, saved.content.decode()[:3000]
    assert Membership.objects.get(user=alice).is_admin
    assert RepositoryRole.objects.filter(repository=world.private).count() == 2
