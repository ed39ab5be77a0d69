"""Status badges: the latest conclusion per branch and workflow, escaped text, caching headers,
and visibility (public only for public repositories)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree

import pytest

from runs.models import Run
from runs.states import State

from .conftest import start_run

SVG = "{http://www.w3.org/2000/svg}"


def texts(response) -> list[str]:
    """The badge's words, as an SVG renderer reads them (the XML must parse)."""
    root = ElementTree.fromstring(response.content)
    return [element.text or "" for element in root.iter(f"{SVG}text")]


def message(response) -> str:
    return texts(response)[-1]


def ended(run: Run, state: str) -> Run:
    Run.objects.filter(id=run.id).update(state=state)
    return run


@pytest.mark.django_db
def test_a_badge_shows_the_latest_conclusion_of_the_branch(world, anonymous):
    url = "/acme/open/badge.svg?branch=main"
    assert message(anonymous.get(url)) == "no runs"

    ended(start_run(world.public), State.SUCCESS)
    assert message(anonymous.get(url)) == "passing"

    ended(start_run(world.public), State.FAILURE)
    assert message(anonymous.get(url)) == "failing"

    # A newer run on another branch, or one that has not started, changes nothing for main.
    ended(start_run(world.public, ref="refs/heads/dev"), State.SUCCESS)
    start_run(world.public)  # queued
    assert message(anonymous.get(url)) == "failing"
    assert message(anonymous.get("/acme/open/badge.svg?branch=dev")) == "passing"

    running = start_run(world.public)
    ended(running, State.RUNNING)
    assert message(anonymous.get(url)) == "running"
    ended(running, State.CANCELLED)
    assert message(anonymous.get(url)) == "cancelled"
    ended(running, State.TIMED_OUT)
    assert message(anonymous.get(url)) == "failing"


@pytest.mark.django_db
def test_a_badge_for_one_workflow_by_path_file_name_or_name(world, anonymous):
    ended(start_run(world.public), State.FAILURE)  # CI
    ended(
        start_run(
            world.public,
            workflow_path=".cicd/workflows/docs.yml",
            source="name: Docs\non: push\njobs:\n  a:\n    runs-on: linux\n    steps: [{run: x}]\n",
        ),
        State.SUCCESS,
    )
    for workflow in (".cicd/workflows/docs.yml", "docs.yml", "Docs"):
        response = anonymous.get(f"/acme/open/badge.svg?workflow={workflow}")
        assert texts(response)[0] == "Docs"
        assert message(response) == "passing", workflow
    assert message(anonymous.get("/acme/open/badge.svg?workflow=CI")) == "failing"
    assert message(anonymous.get("/acme/open/badge.svg")) == "passing"  # the latest of all
    assert message(anonymous.get("/acme/open/badge.svg?workflow=nothing")) == "no runs"


@pytest.mark.django_db
def test_badge_text_is_xml_escaped(world, anonymous):
    name = "<script>alert(\"x\")</script> & 'co'"
    source = (
        f"name: >-\n  {name}\non: push\njobs:\n  a:\n    runs-on: linux\n    steps: [{{run: x}}]\n"
    )
    run = start_run(world.public, source=source)
    ended(run, State.SUCCESS)
    assert Run.objects.get(id=run.id).workflow_name == name

    response = anonymous.get(f"/acme/open/badge.svg?workflow={run.workflow_path}")

    body = response.content.decode()
    assert "<script" not in body
    assert "&lt;script&gt;" in body
    assert texts(response)[0] == name  # parsed back, the text is exactly the name
    assert response["Content-Type"] == "image/svg+xml; charset=utf-8"


@pytest.mark.django_db
def test_badge_etag_gives_304_until_the_conclusion_changes(world, anonymous):
    run = ended(start_run(world.public), State.SUCCESS)
    first = anonymous.get("/acme/open/badge.svg?branch=main")
    etag = first["ETag"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert "no-cache" in first["Cache-Control"]

    again = anonymous.get("/acme/open/badge.svg?branch=main", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    weak = anonymous.get(
        "/acme/open/badge.svg?branch=main", headers={"If-None-Match": f'"other", W/{etag}'}
    )
    assert weak.status_code == 304

    ended(run, State.FAILURE)
    changed = anonymous.get("/acme/open/badge.svg?branch=main", headers={"If-None-Match": etag})
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert message(changed) == "failing"


@pytest.mark.django_db
@pytest.mark.parametrize("persona", ["outsider", "anonymous"])
def test_a_private_repository_badge_is_not_found_for_who_cannot_read_it(request, world, persona):
    ended(start_run(world.private), State.SUCCESS)
    response = request.getfixturevalue(persona).get("/acme/secret/badge.svg")
    assert response.status_code == 404
    assert b"passing" not in response.content


@pytest.mark.django_db
def test_a_private_repository_badge_is_shown_to_members_and_never_cached_as_public(world, reader):
    ended(start_run(world.private), State.SUCCESS)
    response = reader.get("/acme/secret/badge.svg")
    assert response.status_code == 200
    assert message(response) == "passing"
    assert response["Cache-Control"] == "no-cache, private"


@pytest.mark.django_db
def test_overlong_badge_parameters_are_cut_not_refused(world, anonymous):
    response = anonymous.get(
        "/acme/open/badge.svg?workflow=" + "w" * 5000 + "&branch=" + "b" * 5000
    )
    assert response.status_code == 200
    assert message(response) == "no runs"
    assert len(texts(response)[0]) <= 60
