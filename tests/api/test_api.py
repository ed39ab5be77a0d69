"""The JSON API: who sees and does what, pagination, log paging, and bad input."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.middleware.csrf import _get_new_csrf_string
from django.test import AsyncClient, Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.api import create_token
from runs.models import ApiToken, AuditEntry, Job, LogChunk, Repository, Run
from runs.states import State
from runs.transitions import move_job
from tests.api.builders import add_chunk, execute, jobs_of, start
from tests.api.conftest import PERSONAS, call, get

pytestmark = pytest.mark.django_db

# Who may read the private repository acme/secret (everyone may read acme/open).
READS_PRIVATE = {"superuser", "org_admin", "reader", "writer"}


def status_for(persona: str, repository: str) -> int:
    if repository == "public" or persona in READS_PRIVATE:
        return 200
    return 404


# --------------------------------------------------------------------------------- reading


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("repository", ["private", "public"])
def test_every_read_endpoint_hides_private_repositories_from_those_who_may_not_read_them(
    client, world, persona, repository
):
    run = world.runs[repository]
    job = jobs_of(run)["build"]
    add_chunk(job, [[1.0, "stdout", "secret line"]])
    expected = status_for(persona, repository)
    for path in (
        f"/api/v1/runs/{run.id}",
        f"/api/v1/runs/{run.id}/artifacts",
        f"/api/v1/jobs/{job.id}",
        f"/api/v1/jobs/{job.id}/logs",
        f"/api/v1/jobs/{job.id}/logs.txt",
        f"/api/v1/repos/{run.repository.full_name}/runs",
        f"/api/v1/runs?repository={run.repository.full_name}",
    ):
        response = get(client, world, persona, path)
        assert response.status_code == expected, (path, response.content[:300])
        body = b"".join(response.streaming_content) if response.streaming else response.content
        if expected == 404:
            assert b"secret line" not in body
            assert response.json()["error"].startswith("no ")
        elif path.endswith("logs.txt"):
            assert body.endswith(b" secret line\n")


def test_a_missing_run_and_an_unreadable_one_answer_alike(client, world):
    hidden = world.runs["private"]
    missing = Run.objects.order_by("-id").first().id + 1000
    a = get(client, world, "outsider", f"/api/v1/runs/{hidden.id}")
    b = get(client, world, "outsider", f"/api/v1/runs/{missing}")
    assert (a.status_code, b.status_code) == (404, 404)
    assert a.json()["error"].replace(str(hidden.id), "N") == b.json()["error"].replace(
        str(missing), "N"
    )


def test_organisation_admins_see_only_their_organisation(client, world):
    path = f"/api/v1/runs/{world.runs['foreign'].id}"
    assert get(client, world, "org_admin", path).status_code == 404
    assert get(client, world, "superuser", path).status_code == 200


@pytest.mark.parametrize(
    ("persona", "visible"),
    [
        ("superuser", {"acme/secret", "acme/open", "globex/hidden"}),
        ("org_admin", {"acme/secret", "acme/open"}),
        ("reader", {"acme/secret", "acme/open"}),
        ("writer", {"acme/secret", "acme/open"}),
        ("outsider", {"acme/open"}),
        ("anonymous", {"acme/open"}),
    ],
)
def test_the_run_list_holds_the_runs_of_readable_repositories_only(client, world, persona, visible):
    response = get(client, world, persona, "/api/v1/runs")
    assert response.status_code == 200
    assert {run["repository"] for run in response.json()["runs"]} == visible


def test_a_run_shows_its_jobs_and_an_earlier_attempt_on_request(client, world):
    run = world.runs["private"]
    execute(run, "build")
    execute(run, "test", "failure")
    first_jobs = {job.id for job in jobs_of(run).values()}
    again = call(client, world, "writer", "POST", f"/api/v1/runs/{run.id}/rerun")
    assert again.status_code == 201, again.content
    assert again.json()["run"]["attempt"] == 2

    latest = get(client, world, "reader", f"/api/v1/runs/{run.id}").json()
    assert latest["attempt"] == 2 and latest["run"]["attempt"] == 2
    assert {job["id"] for job in latest["jobs"]}.isdisjoint(first_jobs)
    earlier = get(client, world, "reader", f"/api/v1/runs/{run.id}", attempt=1).json()
    assert {job["id"] for job in earlier["jobs"]} == first_jobs
    assert {job["key"]: job["state"] for job in earlier["jobs"]} == {
        "build": "success",
        "test": "failure",
    }
    assert get(client, world, "reader", f"/api/v1/runs/{run.id}", attempt=3).status_code == 404


def test_a_job_shows_its_steps(client, world):
    job = start(world.runs["public"], "build")
    job.steps.create(index=0, name="Run echo build", state="running")
    job.steps.create(index=1, name="Upload", state="pending")
    answer = get(client, world, "anonymous", f"/api/v1/jobs/{job.id}").json()
    assert answer["job"]["state"] == "running" and answer["job"]["runner"] == "test-worker"
    assert [(s["index"], s["name"], s["state"]) for s in answer["steps"]] == [
        (0, "Run echo build", "running"),
        (1, "Upload", "pending"),
    ]
    assert answer["run"]["id"] == job.run_id


def test_artifacts_are_an_empty_list_for_now(client, world):
    response = get(client, world, "reader", f"/api/v1/runs/{world.runs['private'].id}/artifacts")
    assert response.json() == {"artifacts": []}


def test_the_current_user_endpoint_names_the_token(client, world):
    answer = get(client, world, "reader", "/api/v1/user").json()
    assert answer["username"] == "rita" and answer["via"] == "token"
    assert answer["scopes"] == ["read", "write"] and answer["token"]["prefix"].startswith("cicd_")
    anonymous = get(client, world, "anonymous", "/api/v1/user")
    assert anonymous.status_code == 401 and "WWW-Authenticate" in anonymous.headers


# ------------------------------------------------------------------------------- pagination


def make_runs(repository, count: int, **fields) -> list[Run]:
    """Rows only (no jobs): enough for the lists, fast for hundreds."""
    last = Run.objects.filter(repository=repository).order_by("-number").first()
    start_number = last.number + 1 if last else 1
    rows = [
        Run(
            repository=repository,
            number=start_number + i,
            workflow_path=".cicd/workflows/ci.yml",
            workflow_name="CI",
            workflow_source="",
            event=fields.get("event", "push"),
            ref=fields.get("ref", "refs/heads/main"),
            sha="b" * 40,
            idempotency_key=f"{repository.id}-{start_number + i}",
            state=fields.get("state", State.SUCCESS),
        )
        for i in range(count)
    ]
    Run.objects.bulk_create(rows)
    return list(Run.objects.filter(repository=repository).order_by("-id"))


@pytest.mark.parametrize("per_repository", [True, False])
def test_pages_walk_all_runs_newest_first_without_gaps_or_repeats(client, world, per_repository):
    expected = [run.id for run in make_runs(world.private, 120)]
    path = "/api/v1/repos/acme/secret/runs" if per_repository else "/api/v1/runs"
    params = {} if per_repository else {"repository": "acme/secret"}
    seen: list[int] = []
    pages = 0
    after = None
    while True:
        query = {**params, "limit": 50, **({"after": after} if after else {})}
        with CaptureQueriesContext(connection) as queries:
            answer = get(client, world, "reader", path, **query).json()
        sql = " ".join(q["sql"].upper() for q in queries.captured_queries)
        assert " OFFSET " not in sql and "COUNT(" not in sql
        seen += [run["id"] for run in answer["runs"]]
        pages += 1
        after = answer["next"]
        if after is None:
            break
    assert seen == expected and pages == 3


def test_the_global_list_pages_across_repositories(client, world):
    make_runs(world.public, 30)
    make_runs(world.private, 30)
    make_runs(world.foreign, 30)
    seen: list[int] = []
    after = None
    while True:
        answer = get(
            client, world, "reader", "/api/v1/runs", limit=7, **({"after": after} if after else {})
        ).json()
        seen += [run["id"] for run in answer["runs"]]
        after = answer["next"]
        if after is None:
            break
    readable = Run.objects.filter(repository__in=[world.public, world.private])
    assert seen == sorted(readable.values_list("id", flat=True), reverse=True)


def test_run_filters(client, world):
    make_runs(world.private, 5, state=State.FAILURE, ref="refs/heads/feature", event="schedule")
    make_runs(world.private, 4, state=State.SUCCESS)

    def ids(**params):
        answer = get(client, world, "writer", "/api/v1/repos/acme/secret/runs", **params).json()
        return [(run["state"], run["branch"], run["event"]) for run in answer["runs"]]

    assert ids(status="failure") == [("failure", "feature", "schedule")] * 5
    assert (
        ids(branch="feature", event="schedule", limit=2) == [("failure", "feature", "schedule")] * 2
    )
    assert len(ids(branch="refs/heads/main")) == 5  # 4 made + the world's own run
    assert ids(workflow="CI", status="success") == [("success", "main", "push")] * 4
    assert ids(workflow=".cicd/workflows/other.yml") == []


# ------------------------------------------------------------------------------------- logs


def lines(first: int, count: int, stream: str = "stdout") -> list[list]:
    return [[1_700_000_000 + n, stream, f"line {n}"] for n in range(first, first + count)]


def test_log_pages_are_cut_exactly_at_the_offset_across_chunk_boundaries(client, world):
    job = start(world.runs["private"], "build")
    add_chunk(job, lines(1, 5), step_index=None)
    add_chunk(job, lines(6, 7), step_index=0)
    add_chunk(job, lines(13, 3), step_index=1)
    path = f"/api/v1/jobs/{job.id}/logs"

    page = get(client, world, "reader", path, offset=3, limit=6).json()
    assert [line["n"] for line in page["lines"]] == [4, 5, 6, 7, 8, 9]
    assert [line["text"] for line in page["lines"]] == [f"line {n}" for n in range(4, 10)]
    assert [line["step"] for line in page["lines"]] == [None, None, 0, 0, 0, 0]
    assert page["lines"][0]["ts"] == "2023-11-14T22:13:24.000Z"
    assert (page["offset"], page["next_offset"], page["complete"]) == (3, 9, False)

    # Following from next_offset in small pages yields every line once, in order.
    offset, texts = 0, []
    while True:
        page = get(client, world, "reader", path, offset=offset, limit=4).json()
        if not page["lines"]:
            break
        texts += [line["text"] for line in page["lines"]]
        offset = page["next_offset"]
    assert texts == [f"line {n}" for n in range(1, 16)]

    end = get(client, world, "reader", path, offset=15).json()
    assert end["lines"] == [] and end["next_offset"] == 15 and not end["complete"]
    assert move_job(job.id, State.SUCCESS, from_states={State.RUNNING})
    assert get(client, world, "reader", path, offset=15).json()["complete"] is True
    not_yet = get(client, world, "reader", path, offset=10, limit=2).json()
    assert not_yet["complete"] is False and not_yet["next_offset"] == 12
    assert get(client, world, "reader", path, offset=10).json()["state"] == "success"


def test_a_page_stops_before_a_gap_instead_of_skipping_lines(client, world):
    job = start(world.runs["private"], "build")
    add_chunk(job, lines(1, 3))
    # A chunk whose predecessor is not visible yet (still being committed elsewhere).
    LogChunk.objects.create(
        job=job, step_index=0, sequence=5, offset=10, line_count=1, text='[1, "stdout", "late"]'
    )
    page = get(client, world, "reader", f"/api/v1/jobs/{job.id}/logs", offset=1).json()
    assert [line["n"] for line in page["lines"]] == [2, 3] and page["next_offset"] == 3


def test_annotations_keep_their_properties_and_the_raw_log_marks_them(client, world):
    job = start(world.runs["public"], "build")
    location = {"file": "app.py", "line": 3, "title": "Lint"}
    add_chunk(
        job,
        [
            [1.5, "group", "Install"],
            [1.5, "stdout", "\x1b[32mok\x1b[0m"],
            [1.5, "endgroup", ""],
            [2.0, "error", "bad thing", location],
            "not even json",
        ],
    )
    page = get(client, world, "anonymous", f"/api/v1/jobs/{job.id}/logs").json()
    assert page["lines"][3]["properties"] == location
    assert "properties" not in page["lines"][0]
    assert page["lines"][4]["n"] == 5  # an unreadable line still counts

    raw = get(client, world, "anonymous", f"/api/v1/jobs/{job.id}/logs.txt")
    assert raw["Content-Type"] == "text/plain; charset=utf-8"
    text = b"".join(raw.streaming_content).decode()
    assert text.splitlines() == [
        "1970-01-01T00:00:01.500Z ##[group]Install",
        "1970-01-01T00:00:01.500Z \x1b[32mok\x1b[0m",
        "1970-01-01T00:00:01.500Z ##[endgroup]",
        "1970-01-01T00:00:02.000Z ##[error]bad thing",
        '- "not even json"',
    ]


def test_the_raw_log_streams_many_chunks_in_order(client, world):
    job = start(world.runs["private"], "build")
    for first in range(1, 2001, 4):
        add_chunk(job, lines(first, 4))
    raw = get(client, world, "reader", f"/api/v1/jobs/{job.id}/logs.txt")
    assert raw.streaming
    text = b"".join(raw.streaming_content).decode().splitlines()
    assert [row.split(" ", 1)[1] for row in text] == [f"line {n}" for n in range(1, 2001)]


# ---------------------------------------------------------------------------------- control


@pytest.mark.parametrize(
    ("persona", "status"),
    [
        ("superuser", 202),
        ("org_admin", 202),
        ("writer", 202),
        ("reader", 403),
        ("outsider", 404),
        ("anonymous", 401),
    ],
)
def test_cancelling_a_run_needs_the_write_role(client, world, persona, status):
    run = world.runs["private"]
    response = call(
        client, world, persona, "POST", f"/api/v1/runs/{run.id}/cancel", REMOTE_ADDR="10.1.2.3"
    )
    assert response.status_code == status, response.content
    run.refresh_from_db()
    if status == 202:
        assert response.json()["run"]["state"] == run.state == "cancelled"
        entry = AuditEntry.objects.get(action="run.cancel")
        assert (entry.actor, entry.remote_address, entry.repository) == (
            world.users[persona].username,
            "10.1.2.3",
            world.private,
        )
        assert entry.detail == {"run": run.id, "via": "token"}
    else:
        assert run.state != "cancelled"
        assert not AuditEntry.objects.filter(action="run.cancel").exists()


def test_a_reader_of_a_public_repository_cannot_change_it(client, world):
    run = world.runs["public"]
    for path in (f"/api/v1/runs/{run.id}/cancel", f"/api/v1/runs/{run.id}/rerun"):
        response = call(client, world, "outsider", "POST", path)
        assert response.status_code == 403
        assert "write role" in response.json()["error"]


def test_cancelling_a_running_job_asks_its_worker_and_an_ended_one_is_a_conflict(client, world):
    run = world.runs["private"]
    job = start(run, "build")
    path = f"/api/v1/jobs/{job.id}/cancel"
    assert call(client, world, "reader", "POST", path).status_code == 403
    assert call(client, world, "outsider", "POST", path).status_code == 404
    first = call(client, world, "writer", "POST", path)
    assert first.status_code == 202
    job.refresh_from_db()
    assert job.cancel_requested and job.state == "running"
    assert call(client, world, "writer", "POST", path).status_code == 202  # still stopping
    assert AuditEntry.objects.filter(action="job.cancel", actor="walt").count() == 2

    queued_test = jobs_of(run)["test"]  # pending on build: cancelled at once
    answer = call(client, world, "writer", "POST", f"/api/v1/jobs/{queued_test.id}/cancel")
    assert answer.status_code == 202 and answer.json()["job"]["state"] == "cancelled"
    again = call(client, world, "writer", "POST", f"/api/v1/jobs/{queued_test.id}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["error"]


def test_cancelling_an_ended_run_is_a_conflict(client, world):
    run = world.runs["private"]
    execute(run, "build")
    execute(run, "test")
    response = call(client, world, "writer", "POST", f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 409
    assert response.json()["error"] == f"run {run.id} has already ended (success)"


def test_rerun_failed_jobs_carries_successes_over(client, world):
    run = world.runs["private"]
    assert call(client, world, "writer", "POST", f"/api/v1/runs/{run.id}/rerun").status_code == 409
    execute(run, "build")
    execute(run, "test", "failure")
    assert call(client, world, "reader", "POST", f"/api/v1/runs/{run.id}/rerun").status_code == 403

    response = call(
        client, world, "writer", "POST", f"/api/v1/runs/{run.id}/rerun", {"failed_only": True}
    )
    assert response.status_code == 201, response.content
    assert response.json()["run"]["attempt"] == 2
    assert {key: job.state for key, job in jobs_of(run).items()} == {
        "build": "success",
        "test": "queued",
    }
    entry = AuditEntry.objects.get(action="run.rerun")
    assert entry.detail == {"run": run.id, "attempt": 2, "failed_only": True, "via": "token"}

    execute(run, "test")
    nothing_failed = call(client, world, "writer", "POST", f"/api/v1/runs/{run.id}/rerun-failed")
    assert nothing_failed.status_code == 409
    assert "no failed jobs" in nothing_failed.json()["error"]
    everything = call(client, world, "writer", "POST", f"/api/v1/runs/{run.id}/rerun")
    assert everything.status_code == 201 and everything.json()["run"]["attempt"] == 3


def test_approve_answers_that_nothing_waits_for_an_approval(client, world):
    job = jobs_of(world.runs["private"])["build"]
    path = f"/api/v1/jobs/{job.id}/approve"
    assert call(client, world, "outsider", "POST", path).status_code == 404
    assert call(client, world, "writer", "POST", path).status_code == 403
    response = call(client, world, "org_admin", "POST", path)
    assert response.status_code == 409
    assert response.json()["error"] == "no approval is pending for this job"


# ------------------------------------------------------------------------ tokens, sessions


def test_token_scopes_and_revocation(client, world):
    user = world.users["writer"]
    reading = create_token(user, name="r", scopes=["read"])
    writing = create_token(user, name="w", scopes=["write"])
    run = world.runs["private"]

    def as_token(token, method, path):
        return client.generic(method, path, b"", headers={"Authorization": f"Bearer {token}"})

    assert as_token(reading, "GET", f"/api/v1/runs/{run.id}").status_code == 200
    refused = as_token(reading, "POST", f"/api/v1/runs/{run.id}/cancel")
    assert refused.status_code == 403 and "'write' scope" in refused.json()["error"]
    assert as_token(writing, "GET", f"/api/v1/runs/{run.id}").status_code == 403
    assert as_token(writing, "POST", f"/api/v1/runs/{run.id}/cancel").status_code == 202
    assert ApiToken.objects.get(name="r").last_used_at is not None

    ApiToken.objects.filter(name="r").update(revoked_at=timezone.now())
    revoked = as_token(reading, "GET", f"/api/v1/runs/{run.id}")
    assert revoked.status_code == 401 and revoked.headers["WWW-Authenticate"].startswith("Bearer")
    for header in ("Bearer cicd_unknown", "Basic cm9vdDpyb290", "Bearer ", "cicd_x"):
        response = client.get("/api/v1/runs", headers={"Authorization": header})
        assert response.status_code == 401, header
    user.is_active = False
    user.save()
    assert as_token(writing, "GET", f"/api/v1/runs/{run.id}").status_code == 401


def test_last_use_is_recorded_at_most_once_a_minute(client, world):
    token = ApiToken.objects.get(user=world.users["reader"])
    long_ago = timezone.now() - timedelta(hours=1)
    ApiToken.objects.filter(id=token.id).update(last_used_at=long_ago)
    get(client, world, "reader", "/api/v1/runs")
    first = ApiToken.objects.get(id=token.id).last_used_at
    assert first > long_ago
    get(client, world, "reader", "/api/v1/runs")
    assert ApiToken.objects.get(id=token.id).last_used_at == first


def test_the_browser_session_works_and_its_posts_need_the_csrf_token(world):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(world.users["writer"])
    run = world.runs["private"]
    assert browser.get(f"/api/v1/runs/{run.id}").status_code == 200
    forged = browser.post(f"/api/v1/runs/{run.id}/cancel")
    assert forged.status_code == 403 and "CSRF" in forged.json()["error"]
    csrf = _get_new_csrf_string()  # what a page with a form would have set as the cookie
    browser.cookies["csrftoken"] = csrf
    ok = browser.post(f"/api/v1/runs/{run.id}/cancel", headers={"X-CSRFToken": csrf})
    assert ok.status_code == 202, ok.content
    assert AuditEntry.objects.get(action="run.cancel").detail["via"] == "session"


# ------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/api/v1/runs", {"limit": "abc"}, "limit"),
        ("/api/v1/runs", {"limit": "0"}, "limit"),
        ("/api/v1/runs", {"limit": "101"}, "limit"),
        ("/api/v1/runs", {"after": "-1"}, "after"),
        ("/api/v1/runs", {"after": "99999999999999999999999"}, "after"),
        ("/api/v1/runs", {"status": "green"}, "status"),
        ("/api/v1/runs", {"branch": "a\x00b"}, "branch"),
        ("/api/v1/runs", {"stauts": "failure"}, "stauts"),
        ("/api/v1/runs", {"repository": "no-slash"}, "repository"),
        ("/api/v1/runs/RUN", {"attempt": "two"}, "attempt"),
        ("/api/v1/jobs/JOB/logs", {"offset": "1.5"}, "offset"),
        ("/api/v1/jobs/JOB/logs", {"limit": "5001"}, "limit"),
        ("/api/v1/jobs/JOB/logs", {"offset": "-3"}, "offset"),
    ],
)
def test_bad_query_parameters_are_a_400_naming_them(client, world, path, params, field):
    run = world.runs["private"]
    path = path.replace("RUN", str(run.id)).replace("JOB", str(jobs_of(run)["build"].id))
    response = get(client, world, "reader", path, **params)
    assert response.status_code == 400, response.content
    answer = response.json()
    assert field in answer["fields"] and any(field in p for p in answer["problems"])


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"{oops", "not valid JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        ({"failed_only": "yes"}, "failed_only"),
        ({"failed_only": True, "extra": 1}, "extra"),
        ({"failed_only": "\x00"}, "NUL"),
        (b"[" * 100_000, "not valid JSON"),
    ],
)
def test_malformed_bodies_are_a_400_saying_why(client, world, body, needle):
    run = world.runs["private"]
    execute(run, "build")
    execute(run, "test", "failure")
    response = call(client, world, "writer", "POST", f"/api/v1/runs/{run.id}/rerun", body)
    assert response.status_code == 400, response.content
    answer = response.json()
    assert needle in " ".join([answer["error"], *answer["problems"], *answer["fields"]])
    assert Run.objects.get(id=run.id).attempt == 1


def test_ids_beyond_any_row_are_not_found(client, world):
    for path in ("/api/v1/runs/99999999999999999999999", "/api/v1/jobs/9223372036854775808/logs"):
        assert get(client, world, "superuser", path).status_code == 404


def test_wrong_methods_are_a_405_with_allow(client, world):
    run = world.runs["private"]
    response = call(client, world, "writer", "DELETE", f"/api/v1/runs/{run.id}")
    assert response.status_code == 405 and response.headers["Allow"] == "GET, HEAD"
    response = get(client, world, "writer", f"/api/v1/runs/{run.id}/cancel")
    assert response.status_code == 405 and response.headers["Allow"] == "POST"
    assert response.json()["error"] == "use POST"


def test_unknown_api_paths_are_a_json_404(client, world):
    response = get(client, world, "reader", "/api/v1/runs/")
    assert response.status_code == 404 and "trailing slash" in response.json()["error"]
    assert get(client, world, "reader", "/api/v1/nothing").json()["error"] == (
        "no such API endpoint"
    )


QUERY_NAMES = st.sampled_from(
    ["repository", "status", "branch", "workflow", "event", "after", "limit", "offset", "x"]
)
QUERY_VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.sampled_from(["acme/secret", "acme/open", "a/b/c", "/", "running", "", "\x00"]),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    params=st.dictionaries(QUERY_NAMES, QUERY_VALUES, max_size=4), persona=st.sampled_from(PERSONAS)
)
def test_no_query_string_makes_a_500(client, world, params, persona):
    job = Job.objects.filter(run=world.runs["private"]).first()
    for path in ("/api/v1/runs", "/api/v1/repos/acme/secret/runs", f"/api/v1/jobs/{job.id}/logs"):
        response = get(client, world, persona, path, **params)
        assert response.status_code in (200, 400, 404), (path, params, response.content)
        if response.status_code != 200:
            assert set(response.json()) == {"error", "problems", "fields"}


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=10), children, max_size=3)
    ),
    max_leaves=10,
)
BODIES = st.one_of(
    st.binary(max_size=60),
    JSON_VALUES.map(lambda value: json.dumps(value).encode()),
    st.fixed_dictionaries(
        {},
        optional={
            "failed_only": JSON_VALUES,
            "workflow": JSON_VALUES,
            "ref": JSON_VALUES,
            "inputs": JSON_VALUES,
            "request_id": JSON_VALUES,
        },
    ).map(lambda value: json.dumps(value).encode()),
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=BODIES)
def test_no_body_makes_a_500(client, world, body):
    run = world.runs["public"]
    job = jobs_of(run)["build"]
    for path in (
        f"/api/v1/runs/{run.id}/rerun",
        f"/api/v1/jobs/{job.id}/cancel",
        "/api/v1/repos/acme/open/dispatches",
    ):
        response = call(client, world, "writer", "POST", path, body)
        assert response.status_code < 500, (path, body, response.content)
        if response.status_code >= 400:
            assert set(response.json()) == {"error", "problems", "fields"}


# ----------------------------------------------------------------------------------- scale

FILL_RUNS = """
INSERT INTO runs_run (repository_id, number, attempt, workflow_path, workflow_name,
    workflow_source, event, ref, sha, actor, inputs, from_fork, event_payload, idempotency_key,
    state, concurrency_group, error, created_at)
SELECT r.id, 100 + g.n, 1, 'w.yml', 'CI', '', 'push',
    CASE WHEN g.n % 10 = 0 THEN 'refs/heads/feature' ELSE 'refs/heads/main' END,
    'c', '', '{}', false, '{}', 'fill-' || r.id || '-' || g.n,
    CASE WHEN g.n % 97 = 0 THEN 'failure' ELSE 'success' END, '', '', CURRENT_TIMESTAMP
FROM numbers g, runs_repository r
"""


def plan_problems(sql: str) -> list[str]:
    """Plan steps that read every run: a sequential scan (PostgreSQL) or a sort of all of them
    before the LIMIT (either database). Walking the rowid table backwards is SQLite's index
    walk on the primary key."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}")
            plan = cursor.fetchone()[0]
            return list(_reads_every_run(json.loads(plan) if isinstance(plan, str) else plan))
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
        steps = [row[-1] for row in cursor.fetchall()]
        return [step for step in steps if "TEMP B-TREE FOR ORDER BY" in step]


def _reads_every_run(node: Any) -> Iterator[str]:
    if isinstance(node, list):
        for item in node:
            yield from _reads_every_run(item)
    elif isinstance(node, dict):
        kind = node.get("Node Type")
        if kind == "Seq Scan" and node.get("Relation Name") == "runs_run":
            yield "Seq Scan on runs_run"
        if kind == "Sort" and '"runs_run"' in json.dumps(node):
            yield "Sort of runs_run rows"
        for value in node.values():
            if isinstance(value, list | dict):
                yield from _reads_every_run(value)


@pytest.mark.slow
def test_run_lists_walk_indexes_with_a_hundred_thousand_runs(client, world):
    count = 100_000 // Repository.objects.count()
    with connection.cursor() as cursor:
        numbers = "SELECT generate_series(1, %s) AS n" if connection.vendor == "postgresql" else (
            "WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < %s) "
            "SELECT n FROM s"
        )  # fmt: skip
        cursor.execute(f"WITH numbers AS ({numbers}) " + FILL_RUNS.replace("%", "%%"), [count])
        cursor.execute("ANALYZE")
    assert Run.objects.count() >= 99_000
    middle = Run.objects.filter(repository=world.private).order_by("id")[count // 2].id
    for persona, path, params in [
        ("reader", "/api/v1/runs", {}),
        ("reader", "/api/v1/runs", {"after": middle, "status": "failure"}),
        ("superuser", "/api/v1/runs", {"branch": "feature"}),
        ("anonymous", "/api/v1/runs", {"after": middle}),
        ("reader", "/api/v1/repos/acme/secret/runs", {"after": middle}),
        ("reader", "/api/v1/repos/acme/secret/runs", {"status": "failure"}),
    ]:
        with CaptureQueriesContext(connection) as queries:
            response = get(client, world, persona, path, limit=100, **params)
        assert response.status_code == 200 and response.json()["runs"]
        listing = [
            q["sql"] for q in queries.captured_queries if '"runs_run"."workflow_path"' in q["sql"]
        ]
        assert len(listing) == 1
        assert plan_problems(listing[0]) == [], (persona, path, params)


def test_the_raw_log_streams_under_asgi_without_reading_it_whole(world):
    job = start(world.runs["private"], "build")
    for first in range(1, 601, 3):
        add_chunk(job, lines(first, 3))
    headers = {"Authorization": f"Bearer {world.tokens['reader']}"}

    async def fetch() -> tuple[object, bytes]:
        response = await AsyncClient().get(f"/api/v1/jobs/{job.id}/logs.txt", headers=headers)
        return response, b"".join([part async for part in response.streaming_content])

    with warnings.catch_warnings():
        # Django warns when it must read a synchronous iterator whole to serve it over ASGI.
        warnings.simplefilter("error")
        response, body = async_to_sync(fetch)()
    assert response.status_code == 200 and response.is_async
    assert [row.split(" ", 1)[1] for row in body.decode().splitlines()] == [
        f"line {n}" for n in range(1, 601)
    ]
