"""The web pages through Django's test client: who may see and do what, the run lists with
their filters and cursor, the run page's graph and summaries, the job page, the raw log, the
manual-run form and the approvals page."""

from __future__ import annotations

import json
import re
import warnings
from html.parser import HTMLParser

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test import AsyncClient
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from runs.models import AuditEntry, Job, Repository, Run, Step
from runs.states import State
from tests.gitrepo import Origin

from .conftest import GRAPH, add_log, finish, jobs_of, start_run

PERSONAS_WHO_READ = ["owner", "reader", "writer"]
PERSONAS_WHO_DO_NOT = ["outsider", "anonymous"]


class _Elements(HTMLParser):
    """Every start tag of a page with its attributes, to look elements up by class or id."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, dict[str, str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, {name: value or "" for name, value in attrs}))


def elements(response, css_class: str = "", *, id: str = "") -> list[dict[str, str]]:
    parser = _Elements()
    parser.feed(response.content.decode())
    return [
        attrs | {"tag": tag}
        for tag, attrs in parser.found
        if (not css_class or css_class in attrs.get("class", "").split())
        and (not id or attrs.get("id") == id)
    ]


def urls_of(run: Run, job: Job) -> dict[str, str]:
    base = f"/{run.repository.organisation.slug}/{run.repository.slug}"
    return {
        "run list": f"{base}/",
        "run": f"{base}/runs/{run.number}/",
        "job": f"{base}/runs/{run.number}/jobs/{job.id}/",
        "raw log": f"{base}/runs/{run.number}/jobs/{job.id}/log.txt",
        "badge": f"{base}/badge.svg",
    }


def first_job(run: Run) -> Job:
    return Job.objects.filter(run=run).order_by("id").first()


# ------------------------------------------------------------------------------ permissions


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS_WHO_DO_NOT)
def test_a_private_repository_does_not_exist_for_outsiders_and_anonymous_visitors(
    request, world, persona
):
    client = request.getfixturevalue(persona)
    run = start_run(world.private)
    job = first_job(run)
    add_log(job, [[1.0, "stdout", "top secret"]])
    for page, url in urls_of(run, job).items():
        response = client.get(url)
        assert response.status_code == 404, page
        assert b"top secret" not in response.content
    base = "/acme/secret"
    for url in (
        f"{base}/runs/{run.number}/cancel/",
        f"{base}/runs/{run.number}/rerun/",
        f"{base}/runs/{run.number}/rerun-failed/",
        f"{base}/dispatch/",
    ):
        assert client.post(url).status_code == 404, url
    assert client.get(f"{base}/dispatch/").status_code == 404
    assert Run.objects.get(id=run.id).state == State.QUEUED  # nothing was cancelled


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS_WHO_READ)
def test_members_with_a_role_read_every_page_of_the_private_repository(request, world, persona):
    client = request.getfixturevalue(persona)
    run = start_run(world.private)
    job = first_job(run)
    for page, url in urls_of(run, job).items():
        assert client.get(url).status_code == 200, page


@pytest.mark.django_db
@pytest.mark.parametrize("persona", PERSONAS_WHO_DO_NOT)
def test_a_public_repository_is_readable_by_anyone_but_not_controllable(request, world, persona):
    client = request.getfixturevalue(persona)
    run = start_run(world.public)
    job = first_job(run)
    for page, url in urls_of(run, job).items():
        assert client.get(url).status_code == 200, page
    page = client.get(f"/acme/open/runs/{run.number}/")
    assert not elements(page, id="cancel-run")
    assert client.post(f"/acme/open/runs/{run.number}/cancel/").status_code == 403
    assert client.get("/acme/open/dispatch/").status_code == 403
    assert Run.objects.get(id=run.id).state == State.QUEUED


@pytest.mark.django_db
def test_a_reader_may_not_cancel_rerun_or_dispatch_and_the_refusal_is_audited(world, reader):
    running = start_run(world.private)
    ended = start_run(world.private)
    assert reader.post(f"/acme/secret/runs/{ended.number}/cancel/").status_code == 403
    assert not elements(reader.get(f"/acme/secret/runs/{running.number}/"), id="cancel-run")
    assert reader.post(f"/acme/secret/runs/{running.number}/cancel/").status_code == 403
    assert reader.post(f"/acme/secret/runs/{running.number}/rerun/").status_code == 403
    assert reader.post(f"/acme/secret/runs/{running.number}/rerun-failed/").status_code == 403
    assert reader.get("/acme/secret/dispatch/").status_code == 403
    assert reader.post("/acme/secret/dispatch/", {"workflow": "x"}).status_code == 403
    assert Run.objects.get(id=running.id).state == State.QUEUED
    assert Run.objects.get(id=running.id).attempt == 1
    denied = AuditEntry.objects.filter(action__endswith=".denied", actor="rita")
    assert sorted(denied.values_list("action", flat=True)) == [
        "run.cancel.denied",
        "run.cancel.denied",
        "run.dispatch.denied",
        "run.rerun.denied",
        "run.rerun_failed.denied",
    ]
    assert set(denied.values_list("repository_id", flat=True)) == {world.private.id}


@pytest.mark.django_db
def test_a_writer_cancels_a_run_and_it_ends_cancelled(world, writer):
    run = start_run(world.private)
    page = writer.get(f"/acme/secret/runs/{run.number}/")
    assert elements(page, id="cancel-run")

    response = writer.post(f"/acme/secret/runs/{run.number}/cancel/")

    assert response.status_code == 302
    assert response["Location"] == f"/acme/secret/runs/{run.number}/"
    assert Run.objects.get(id=run.id).state == State.CANCELLED
    assert {job.state for job in jobs_of(run).values()} == {State.CANCELLED}
    entry = AuditEntry.objects.get(action="run.cancel")
    assert (entry.actor, entry.repository_id, entry.detail["run"]) == (
        "walter",
        world.private.id,
        run.id,
    )
    after = writer.get(response["Location"])
    assert not elements(after, id="cancel-run")
    assert elements(after, id="rerun-all") and elements(after, id="rerun-failed")


@pytest.mark.django_db
def test_control_pages_only_answer_post(world, writer):
    run = start_run(world.private)
    for action in ("cancel", "rerun", "rerun-failed"):
        assert writer.get(f"/acme/secret/runs/{run.number}/{action}/").status_code == 405
    assert Run.objects.get(id=run.id).state == State.QUEUED


@pytest.mark.django_db
def test_a_writer_reruns_all_jobs_as_a_new_attempt_and_the_old_one_stays_viewable(world, writer):
    run = start_run(world.private)
    finish(run, "build", "failure")
    finish(run, "lint")
    run.refresh_from_db()
    assert run.state == State.FAILURE
    old_jobs = set(Job.objects.filter(run=run, attempt=1).values_list("id", flat=True))

    response = writer.post(f"/acme/secret/runs/{run.number}/rerun/")

    assert response.status_code == 302
    run.refresh_from_db()
    assert run.attempt == 2
    new_jobs = set(Job.objects.filter(run=run, attempt=2).values_list("id", flat=True))
    assert len(new_jobs) == len(old_jobs) and not new_jobs & old_jobs
    assert AuditEntry.objects.get(action="run.rerun").detail["attempt"] == 2

    latest = writer.get(f"/acme/secret/runs/{run.number}/")
    attempts = elements(latest, "attempt")
    assert [(a["data-attempt"], a["data-state"]) for a in attempts] == [
        ("1", "failure"),
        ("2", run.state),
    ]
    shown = {int(row["data-job-id"]) for row in elements(latest, "job-row")}
    assert shown == new_jobs
    older = writer.get(f"/acme/secret/runs/{run.number}/?attempt=1")
    assert {int(row["data-job-id"]) for row in elements(older, "job-row")} == old_jobs
    assert elements(older, id="run-state")[0]["data-state"] == "failure"


@pytest.mark.django_db
def test_a_writer_reruns_only_the_failed_jobs(world, writer):
    run = start_run(world.private)
    finish(run, "build")
    finish(run, "lint")
    finish(run, "test-3.11", "failure")  # fail-fast cancels test-3.12
    run.refresh_from_db()
    assert run.state == State.FAILURE

    assert writer.post(f"/acme/secret/runs/{run.number}/rerun-failed/").status_code == 302

    states = {key: job.state for key, job in jobs_of(run).items()}
    assert run.attempt == 2
    # Succeeded jobs are carried over; the failed and cancelled ones run again, and what
    # needs them waits.
    assert states["build"] == states["lint"] == State.SUCCESS
    assert states["test-3.11"] == states["test-3.12"] == State.QUEUED
    assert states["deploy"] == State.PENDING
    assert AuditEntry.objects.filter(action="run.rerun_failed").count() == 1


@pytest.mark.django_db
def test_rerunning_a_run_that_has_not_ended_says_why_and_changes_nothing(world, writer):
    run = start_run(world.private)
    response = writer.post(f"/acme/secret/runs/{run.number}/rerun/", follow=True)
    assert response.status_code == 200
    assert "cancel it first" in response.content.decode()
    assert Run.objects.get(id=run.id).attempt == 1
    assert not AuditEntry.objects.filter(action="run.rerun").exists()


# ------------------------------------------------------------------------------------- home


@pytest.mark.django_db
def test_home_shows_anonymous_visitors_the_public_repositories_and_the_login(world, anonymous):
    start_run(world.private)
    body = anonymous.get("/").content.decode()
    assert "acme/open" in body
    assert "acme/secret" not in body
    assert "/accounts/login/" in body


@pytest.mark.django_db
def test_home_shows_a_member_their_repositories_with_the_latest_run(world, reader, outsider):
    start_run(world.private)
    latest = start_run(world.private)
    Run.objects.filter(id=latest.id).update(state=State.FAILURE)
    rows = {row["data-repository"]: row for row in elements(reader.get("/"), "repository-row")}
    assert set(rows) == {"acme/open", "acme/secret"}
    page = reader.get("/").content.decode()
    assert f"/acme/secret/runs/{latest.number}/" in page
    assert 'data-state="failure"' in page
    assert [row["data-repository"] for row in elements(outsider.get("/"), "repository-row")] == [
        "acme/open"
    ]


@pytest.mark.django_db
def test_login_page_logs_a_user_in(world, client):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("lena", password="a-long-password-1")
    form = client.get("/accounts/login/?next=/runs/")
    assert form.status_code == 200 and elements(form, id="login-form")
    response = client.post(
        "/accounts/login/",
        {"username": "lena", "password": "a-long-password-1", "next": "/runs/"},
    )
    assert response.status_code == 302 and response["Location"] == "/runs/"
    assert "lena" in client.get("/").content.decode()


# -------------------------------------------------------------------------------- run lists


def _bulk_runs(repository: Repository, count: int, **fields) -> list[Run]:
    """`count` runs numbered after the repository's last, without jobs (fast)."""
    start = Run.objects.filter(repository=repository).count()
    runs = [
        Run(
            repository=repository,
            number=start + index + 1,
            workflow_path=".cicd/workflows/ci.yml",
            workflow_name="CI",
            workflow_source=GRAPH,
            event="push",
            ref="refs/heads/main",
            sha=f"{start + index:040x}",
            idempotency_key=f"bulk-{repository.id}-{start + index}",
            state=State.SUCCESS,
            **fields,
        )
        for index in range(count)
    ]
    return Run.objects.bulk_create(runs)


def _numbers(response) -> list[int]:
    return [
        int(number)
        for number in re.findall(
            r'class="run-number"><a href="[^"]+">#(\d+)', str(response.content)
        )
    ]


def _next_link(response) -> str | None:
    link = elements(response, id="page-next")
    return link[0]["href"] if link else None


@pytest.mark.django_db
def test_a_repository_run_list_pages_by_cursor_without_overlap(world, reader):
    _bulk_runs(world.private, 120)
    first = reader.get("/acme/secret/")
    assert _numbers(first) == list(range(120, 70, -1))
    second = reader.get("/acme/secret/" + _next_link(first))
    assert _numbers(second) == list(range(70, 20, -1))
    third = reader.get("/acme/secret/" + _next_link(second))
    assert _numbers(third) == list(range(20, 0, -1))
    assert _next_link(third) is None
    assert elements(third, id="page-first")


@pytest.mark.django_db
def test_run_lists_never_count_or_offset_and_make_few_queries(world, owner):
    _bulk_runs(world.private, 120)
    first = owner.get("/acme/secret/")
    for url in ("/acme/secret/" + _next_link(first), "/runs/" + _next_link(owner.get("/runs/"))):
        with CaptureQueriesContext(connection) as queries:
            assert owner.get(url).status_code == 200
        sql = " ".join(query["sql"].upper() for query in queries.captured_queries)
        assert "COUNT(" not in sql
        assert "OFFSET" not in sql
        assert len(queries.captured_queries) <= 12, [q["sql"] for q in queries.captured_queries]


@pytest.mark.django_db
def test_the_list_across_repositories_shows_only_readable_runs_newest_first(
    world, reader, outsider
):
    for _ in range(3):
        _bulk_runs(world.private, 20)
        _bulk_runs(world.public, 20)
    seen: list[int] = []
    url = "/runs/"
    while url:
        response = reader.get(url)
        ids = [int(row["data-run-id"]) for row in elements(response, "run-row")]
        seen += ids
        link = _next_link(response)
        url = "/runs/" + link if link else None
    assert seen == sorted(Run.objects.values_list("id", flat=True), reverse=True)
    assert len(seen) == 120

    outsider_ids = {int(row["data-run-id"]) for row in elements(outsider.get("/runs/"), "run-row")}
    assert outsider_ids and outsider_ids <= set(
        Run.objects.filter(repository=world.public).values_list("id", flat=True)
    )


@pytest.mark.django_db
def test_run_list_columns_show_branch_commit_message_actor_and_duration(world, reader):
    run = start_run(
        world.private,
        ref="refs/heads/feature/x",
        actor="bob",
        event_payload={"head_commit": {"message": "Fix the <parser>\n\nLong story."}},
    )
    now = timezone.now()
    Run.objects.filter(id=run.id).update(
        started_at=now - timezone.timedelta(seconds=95), finished_at=now, state=State.SUCCESS
    )
    row = reader.get("/acme/secret/").content.decode()
    assert "feature/x" in row
    assert "Fix the &lt;parser&gt;" in row and "Long story" not in row
    assert run.sha[:7] in row
    assert ">bob<" in row
    assert "1m 35s" in row
    assert ">CI<" in row


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("status=failure", {"failed"}),
        ("branch=dev", {"dev"}),
        ("branch=refs/heads/dev", {"dev"}),
        ("workflow=Deploy", {"deploy"}),
        ("workflow=.cicd/workflows/deploy.yml", {"deploy"}),
        ("event=pull_request", {"pr"}),
        ("status=success&branch=main&workflow=CI", {"plain"}),
        ("status=success&branch=main", {"plain", "deploy"}),
    ],
)
def test_run_list_filters(world, reader, query, expected):
    made = {
        "plain": start_run(world.private),
        "failed": start_run(world.private),
        "dev": start_run(world.private, ref="refs/heads/dev"),
        "deploy": start_run(
            world.private,
            workflow_path=".cicd/workflows/deploy.yml",
            source=GRAPH.replace("name: CI", "name: Deploy"),
        ),
        "pr": start_run(world.private, event="pull_request", ref="refs/pull/1/head"),
    }
    Run.objects.filter(repository=world.private).update(state=State.SUCCESS)
    Run.objects.filter(id=made["failed"].id).update(state=State.FAILURE)
    Run.objects.filter(id=made["dev"].id).update(state=State.CANCELLED)
    names = {run.id: name for name, run in made.items()}
    for url in (f"/acme/secret/?{query}", f"/runs/?{query}"):
        response = reader.get(url)
        shown = {names[int(row["data-run-id"])] for row in elements(response, "run-row")}
        assert shown == expected, url


@pytest.mark.django_db
@pytest.mark.parametrize(
    "query",
    [
        "status=bogus",
        "after=abc",
        "after=-3",
        "after=²",
        "after=" + "9" * 30,
        "branch=" + "x" * 600,
    ],
)
def test_bad_run_list_parameters_get_a_message_not_a_crash(world, reader, query):
    response = reader.get(f"/acme/secret/?{query}")
    assert response.status_code == 400
    assert elements(response, id="filter-problems")


@pytest.mark.django_db
def test_a_cursor_from_another_repository_is_refused(world, owner):
    other = start_run(world.public)
    start_run(world.private)
    response = owner.get(f"/acme/secret/?after={other.id}")
    assert response.status_code == 400
    assert "is not in acme/secret" in response.content.decode()


@pytest.mark.django_db
def test_run_states_answers_only_for_readable_runs(world, reader, outsider):
    private = start_run(world.private)
    public = start_run(world.public)
    Run.objects.filter(id=public.id).update(state=State.SUCCESS)
    ids = f"{private.id},{public.id},nonsense,²,{'9' * 40},999999"
    body = reader.get(f"/runs/states.json?ids={ids}").json()
    states = {run["id"]: (run["state"], run["final"]) for run in body["runs"]}
    assert states == {private.id: ("queued", False), public.id: ("success", True)}
    seen = {run["id"] for run in outsider.get(f"/runs/states.json?ids={ids}").json()["runs"]}
    assert seen == {public.id}


# --------------------------------------------------------------------------------- run page


@pytest.mark.django_db
def test_the_run_page_draws_one_node_per_workflow_job_in_layers_with_states(world, reader):
    run = start_run(world.private)
    finish(run, "build")
    response = reader.get(f"/acme/secret/runs/{run.number}/")

    nodes = {node["data-workflow-job"]: node for node in elements(response, "graph-node")}
    assert set(nodes) == {"build", "test", "lint", "deploy"}
    layers = {name: int(node["data-layer"]) for name, node in nodes.items()}
    assert layers == {"build": 0, "lint": 0, "test": 1, "deploy": 2}
    for node in nodes.values():
        assert f"state-{node['data-state']}" in node["class"].split()
    assert nodes["build"]["data-state"] == "success"
    assert nodes["test"]["data-state"] == "queued"
    assert nodes["deploy"]["data-state"] == "pending"
    assert nodes["test"]["data-matrix"] == "true"
    job_ids = {job.key: job.id for job in jobs_of(run).values()}
    in_graph = {int(job["data-job-id"]) for job in elements(response, "graph-job")}
    assert in_graph == set(job_ids.values())  # every instance of the matrix has its row
    edges = {(edge["data-from"], edge["data-to"]) for edge in elements(response, "graph-edge")}
    assert edges == {("build", "test"), ("test", "deploy"), ("lint", "deploy")}


@pytest.mark.django_db
def test_a_matrix_box_takes_the_worst_live_state_of_its_instances(world, reader):
    run = start_run(world.private)
    finish(run, "build")
    finish(run, "test-3.11", "failure")
    response = reader.get(f"/acme/secret/runs/{run.number}/")
    nodes = {node["data-workflow-job"]: node for node in elements(response, "graph-node")}
    assert nodes["test"]["data-state"] in {"failure", "cancelled"}  # fail-fast may cancel 3.12


@pytest.mark.django_db
def test_step_summaries_are_rendered_and_sanitised(world, reader):
    run = start_run(world.private)
    job = first_job(run)
    Step.objects.create(
        job=job,
        index=0,
        name="report",
        state=State.SUCCESS,
        summary=(
            "## Results <script>alert(1)</script>\n\n"
            "| test | result |\n|---|---|\n| a | **ok** |\n\n"
            "[bad](javascript:alert(2)) [good](https://example.org/r?a=1&b=2) "
            '<img src=x onerror="alert(3)">'
        ),
    )
    body = reader.get(f"/acme/secret/runs/{run.number}/").content.decode()
    summary = body[body.index('id="summaries"') :]
    assert "<script>alert(1)" not in body
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in summary
    assert "<h2>Results" in summary
    assert "<td><strong>ok</strong></td>" in summary
    assert "javascript:" not in re.sub(r">[^<]*<", "><", summary)  # only as shown text
    assert '<a href="https://example.org/r?a=1&amp;b=2"' in summary
    assert "<img" not in summary


@pytest.mark.django_db
def test_a_run_whose_trigger_failed_shows_why_and_no_graph(world, reader):
    run = start_run(world.private, source="", error="commit 1234 is not in <origin>")
    assert run.state == State.FAILURE
    response = reader.get(f"/acme/secret/runs/{run.number}/")
    assert response.status_code == 200
    assert "commit 1234 is not in &lt;origin&gt;" in response.content.decode()
    assert elements(response, id="run-error")
    assert not elements(response, "graph-node")


@pytest.mark.django_db
@pytest.mark.parametrize("attempt", ["0", "2", "x", "-1", "²", "9" * 40])
def test_an_attempt_that_does_not_exist_is_not_found(world, reader, attempt):
    run = start_run(world.private)
    assert reader.get(f"/acme/secret/runs/{run.number}/?attempt={attempt}").status_code == 404


@pytest.mark.django_db
def test_unknown_runs_and_jobs_are_not_found(world, reader):
    run = start_run(world.private)
    other = start_run(world.public)
    assert reader.get("/acme/secret/runs/999/").status_code == 404
    huge = "9" * 30
    assert reader.get(f"/acme/secret/runs/{huge}/").status_code == 404
    assert reader.get(f"/acme/secret/runs/{run.number}/jobs/{huge}/").status_code == 404
    assert reader.get("/acme/nothing/").status_code == 404
    # A job of another run, through this run's address.
    stranger = first_job(other)
    assert reader.get(f"/acme/secret/runs/{run.number}/jobs/{stranger.id}/").status_code == 404
    assert (
        reader.get(f"/acme/secret/runs/{run.number}/jobs/{stranger.id}/log.txt").status_code == 404
    )


# --------------------------------------------------------------------------------- job page


@pytest.mark.django_db
def test_the_job_page_lists_steps_and_holds_the_live_log_viewer(world, reader):
    run = start_run(world.private)
    job = first_job(run)
    started = timezone.now() - timezone.timedelta(seconds=12)
    Step.objects.create(
        job=job, index=0, name="Check out", state=State.SUCCESS, started_at=started,
        finished_at=started + timezone.timedelta(seconds=3),
    )  # fmt: skip
    Step.objects.create(job=job, index=1, name="Build", state=State.RUNNING, started_at=started)
    response = reader.get(f"/acme/secret/runs/{run.number}/jobs/{job.id}/")

    steps = elements(response, "step")
    assert [(s["data-step-index"], s["data-state"]) for s in steps] == [
        ("0", "success"),
        ("1", "running"),
    ]
    assert "3s" in response.content.decode()
    log = elements(response, id="log")[0]
    assert log["data-job-id"] == str(job.id)
    for id in ("log-search", "log-search-next", "log-search-prev", "log-follow", "job-state"):
        assert elements(response, id=id), id
    raw = elements(response, id="log-raw")[0]
    assert raw["href"] == f"/acme/secret/runs/{run.number}/jobs/{job.id}/log.txt"
    config = re.search(
        r'<script id="job-config" type="application/json">(.*?)</script>',
        response.content.decode(),
    )
    assert json.loads(config.group(1)) == {"job": job.id, "run": run.id, "socket": "/ws/live/"}
    siblings = {int(s["data-job-id"]) for s in elements(response, "sibling-job")}
    assert siblings == {j.id for j in jobs_of(run).values()}


@pytest.mark.django_db
def test_the_raw_log_streams_every_line_as_text_with_ansi_kept(world, reader):
    run = start_run(world.private)
    job = first_job(run)
    add_log(job, [[1.0, "system", "Starting"]], step_index=None)
    add_log(
        job,
        [
            [1.1, "group", "Install"],
            [1.2, "stdout", "\x1b[32mgreen\x1b[0m and <html> & ünïcode"],
            [1.3, "endgroup", ""],
            [1.4, "error", "it broke", {"file": "a.py", "line": "3"}],
        ],
    )
    add_log(job, [[2.0, "stderr", "last line"]], step_index=1)

    response = reader.get(f"/acme/secret/runs/{run.number}/jobs/{job.id}/log.txt")

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/plain; charset=utf-8"
    assert response["Content-Disposition"] == (
        f'attachment; filename="acme-secret-run{run.number}-job{job.id}.log"'
    )
    text = b"".join(response.streaming_content).decode()
    assert text == (
        "Starting\nInstall\n\x1b[32mgreen\x1b[0m and <html> & ünïcode\n\nit broke\nlast line\n"
    )


@pytest.fixture
def logged_job(world):
    run = start_run(world.private)
    job = first_job(run)
    for chunk in range(30):
        add_log(
            job, [[float(chunk), "stdout", f"\x1b[1mline\x1b[0m {chunk}-{n}"] for n in range(5)]
        )
    return run, job


@pytest.mark.django_db
def test_the_raw_log_streams_under_asgi_without_being_read_whole_first(reader, logged_job):
    run, job = logged_job
    client = AsyncClient()
    client.cookies = reader.cookies

    async def download():
        response = await client.get(f"/acme/secret/runs/{run.number}/jobs/{job.id}/log.txt")
        return response, [part async for part in response.streaming_content]

    with warnings.catch_warnings():
        # Django warns when it must read a synchronous iterator whole to serve it over ASGI.
        warnings.simplefilter("error")
        # From a synchronous test, the view's database calls come back to this thread: they
        # see the test's data, and leave no connection open in another thread.
        response, parts = async_to_sync(download)()
    assert response.status_code == 200
    assert response.is_async
    assert len(parts) == 30  # one piece per stored chunk, sent as read
    lines = b"".join(parts).decode().splitlines()
    assert lines == [f"\x1b[1mline\x1b[0m {c}-{n}" for c in range(30) for n in range(5)]


@pytest.mark.django_db
def test_the_raw_log_of_a_job_without_output_is_empty(world, reader):
    run = start_run(world.private)
    response = reader.get(f"/acme/secret/runs/{run.number}/jobs/{first_job(run).id}/log.txt")
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == b""


@pytest.mark.django_db
def test_the_raw_log_reads_a_long_log_a_page_of_chunks_at_a_time(world, reader):
    run = start_run(world.private)
    job = first_job(run)
    for chunk in range(45):
        add_log(job, [[float(chunk), "stdout", f"line {chunk}-{n}"] for n in range(10)])
    with CaptureQueriesContext(connection) as queries:
        response = reader.get(f"/acme/secret/runs/{run.number}/jobs/{job.id}/log.txt")
        lines = b"".join(response.streaming_content).decode().splitlines()
    assert lines == [f"line {chunk}-{n}" for chunk in range(45) for n in range(10)]
    reads = [q for q in queries.captured_queries if "runs_logchunk" in q["sql"]]
    # 20 chunks per query: neither the whole log at once nor one query per chunk.
    assert len(reads) == 4


# ------------------------------------------------------------------------------- manual run

DEPLOY = """\
name: Deploy
on:
  workflow_dispatch:
    inputs:
      level:
        type: choice
        description: How much to log
        options: [debug, info]
        default: info
      dry-run:
        type: boolean
        default: true
      replicas:
        type: number
        required: true
      note:
        type: string
      target:
        type: environment
jobs:
  deploy:
    runs-on: linux
    steps:
      - run: echo "${{ inputs.level }} ${{ inputs.replicas }}"
"""
PUSH_ONLY = "on: push\njobs:\n  a:\n    runs-on: linux\n    steps:\n      - run: echo\n"


@pytest.fixture
def origin(tmp_path, settings, world) -> Origin:
    settings.CICD_DATA_DIR = tmp_path / "data"
    origin = Origin(tmp_path / "origin")
    origin.commit({".cicd/workflows/deploy.yml": DEPLOY, ".cicd/workflows/ci.yml": PUSH_ONLY})
    origin.git("branch", "release")
    Repository.objects.filter(id=world.private.id).update(clone_url=str(origin.path))
    return origin


@pytest.mark.django_db
def test_the_dispatch_form_shows_the_typed_inputs_of_a_workflow(origin, writer):
    response = writer.get("/acme/secret/dispatch/")

    assert response.status_code == 200
    body = response.content.decode()
    workflows = re.findall(r'<option value="([^"]+)"[^>]*>Deploy', body)
    assert workflows == [".cicd/workflows/deploy.yml"]
    assert ".cicd/workflows/ci.yml" not in body  # no workflow_dispatch: not offered
    inputs = {i["data-input"]: i["data-type"] for i in elements(response, "dispatch-input")}
    assert inputs == {
        "level": "choice",
        "dry-run": "boolean",
        "replicas": "number",
        "note": "string",
        "target": "environment",
    }
    fields = {e["name"]: e for e in elements(response) if e.get("name", "").startswith("input:")}
    assert fields["input:replicas"]["type"] == "number"
    assert fields["input:dry-run"]["type"] == "checkbox" and "checked" in fields["input:dry-run"]
    assert fields["input:note"]["type"] == "text"
    assert re.search(r'<option value="info" selected>info</option>', body)
    assert "How much to log" in body
    assert '<option value="release">' in body  # the branches, to choose from


@pytest.mark.django_db
def test_dispatching_with_a_bad_choice_shows_the_problems_in_the_form(origin, writer):
    response = writer.post(
        "/acme/secret/dispatch/",
        {
            "workflow": ".cicd/workflows/deploy.yml",
            "ref": "main",
            "input:level": "loud",
            "input:dry-run": "false",
            "input:replicas": "",
        },
    )
    assert response.status_code == 400
    problems = response.content.decode()
    assert "must be one of debug, info" in problems
    assert "input &#x27;replicas&#x27; is required" in problems
    assert not Run.objects.exists()
    # What was typed is kept.
    assert elements(response, id="dispatch-form")


@pytest.mark.django_db
def test_dispatching_starts_a_run_with_the_inputs_and_goes_to_it(origin, writer):
    response = writer.post(
        "/acme/secret/dispatch/",
        {
            "workflow": ".cicd/workflows/deploy.yml",
            "ref": "release",
            "input:level": "debug",
            "input:dry-run": ["false", "true"],  # the hidden field, then the ticked box
            "input:replicas": "3",
            "input:note": "",
            "input:target": "",
            "request_id": "form-1",
        },
    )
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/acme/secret/runs/{run.number}/"
    assert run.inputs == {
        "level": "debug",
        "dry-run": True,
        "replicas": 3,
        "note": "",
        "target": "",
    }
    assert (run.ref, run.event, run.actor) == ("refs/heads/release", "workflow_dispatch", "walter")
    assert AuditEntry.objects.get(action="run.dispatch").detail["run"] == run.id


@pytest.mark.django_db
def test_a_form_sent_twice_starts_one_run(origin, writer):
    form = {
        "workflow": ".cicd/workflows/deploy.yml",
        "ref": "main",
        "input:replicas": "1",
        "request_id": "double-click",
    }
    first = writer.post("/acme/secret/dispatch/", form)
    second = writer.post("/acme/secret/dispatch/", form)
    assert first["Location"] == second["Location"]
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_an_unreadable_repository_is_a_message_on_the_form_not_an_error(
    tmp_path, settings, world, owner
):
    settings.CICD_DATA_DIR = tmp_path / "data"
    response = owner.get("/acme/secret/dispatch/")  # its clone URL leads nowhere
    assert response.status_code == 200
    assert elements(response, id="dispatch-problem")
    assert "cannot be read" in response.content.decode()


@pytest.mark.django_db
def test_an_unknown_branch_is_a_message_on_the_form(origin, writer):
    response = writer.get("/acme/secret/dispatch/?ref=nope")
    assert response.status_code == 200
    assert "is not a branch, tag or commit" in response.content.decode()


# -------------------------------------------------------------------------------- approvals


@pytest.mark.django_db
def test_approvals_page_asks_to_log_in_then_shows_nothing_waiting(world, anonymous, reader):
    response = anonymous.get("/approvals/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    page = reader.get("/approvals/")
    assert page.status_code == 200
    assert elements(page, id="no-approvals")
