"""Operators set an environment's rules in the admin; deployments there are read-only."""

from __future__ import annotations

import pytest
from django.utils import timezone

from deployments.models import Deployment, DeploymentStep, Environment, EnvironmentVariable
from runs.states import State

from .conftest import states, waiting_run

pytestmark = pytest.mark.django_db


def form(environment: Environment, **changes) -> dict:
    data = {
        "repository": environment.repository_id,
        "name": environment.name,
        "url": "",
        "required_approvals": environment.required_approvals,
        "reviewers": [user.id for user in environment.reviewers.all()],
        "reviewer_role": environment.reviewer_role,
        "allowed_refs": "\n".join(environment.allowed_refs),
        "wait_timer_minutes": environment.wait_timer_minutes,
        "variables-TOTAL_FORMS": "0",
        "variables-INITIAL_FORMS": "0",
    }
    return data | changes


def test_rules_and_variables_are_set_in_the_admin(admin_client, world):
    environment = world.environment(required_approvals=1, reviewers=["reviewer"])
    run, _deploy = waiting_run(world)
    page = admin_client.get(f"/admin/deployments/environment/{environment.id}/change/")
    assert page.status_code == 200

    data = form(
        environment,
        required_approvals="0",
        allowed_refs="main\n\n  release/*  \n",
        **{
            "variables-TOTAL_FORMS": "1",
            "variables-0-name": "REGION",
            "variables-0-value": "eu-west",
        },
    )
    response = admin_client.post(
        f"/admin/deployments/environment/{environment.id}/change/", data, follow=True
    )
    assert response.status_code == 200, response.content.decode()[:3000]
    assert "1 waiting job(s) moved on under the new rules" in response.content.decode()
    environment.refresh_from_db()
    assert environment.allowed_refs == ["main", "release/*"]
    assert EnvironmentVariable.objects.get(environment=environment).value == "eu-west"
    assert states(run)["deploy"] == State.QUEUED  # no review needed any more


def test_a_broken_ref_pattern_is_a_form_error(admin_client, world):
    environment = world.environment()
    response = admin_client.post(
        f"/admin/deployments/environment/{environment.id}/change/",
        form(environment, allowed_refs="main\n[oops"),
    )
    assert response.status_code == 200
    assert "&#x27;[oops&#x27;:" in response.content.decode()
    environment.refresh_from_db()
    assert environment.allowed_refs == []


def test_deployments_are_read_only_and_their_inputs_are_not_shown(admin_client, world):
    environment = world.environment()
    deployment = Deployment.objects.create(
        environment=environment,
        image="widgets:1",
        strategy="rolling",
        request={"env": {"TOKEN": "very-secret-value"}},
        state=Deployment.SUCCESS,
    )
    DeploymentStep.objects.create(
        deployment=deployment, index=0, name="probe replica 1", started_at=timezone.now()
    )
    page = admin_client.get(f"/admin/deployments/deployment/{deployment.id}/change/")
    assert page.status_code == 200
    text = page.content.decode()
    assert "probe replica 1" in text and "very-secret-value" not in text
    assert admin_client.get("/admin/deployments/deployment/add/").status_code == 403
    for path in (
        "/admin/deployments/environment/",
        "/admin/deployments/deployment/",
        "/admin/deployments/environmentgate/",
    ):
        assert admin_client.get(path).status_code == 200, path
