"""Webhook deliveries end to end inside the server: signed POST -> stored delivery -> runs.

Every source (GitHub, Gitea, GitLab, the post-receive hook) goes through the same checks; the
workflows are read from a real git repository through the server's mirror.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from runs.models import AuditEntry, Run
from runs.states import State
from webhooks.keys import add_secret
from webhooks.models import Delivery, WebhookSecret
from webhooks.processing import process_delivery

from .conftest import ZERO, post, pull_request_payload, push_payload

pytestmark = pytest.mark.django_db

SOURCES = ["github", "gitea", "gitlab", "git"]

CI = """\
name: ci
on:
  push:
    branches: [main]
    paths: ['src/**']
  pull_request:
    branches: [main]
jobs:
  test:
    runs-on: linux
    steps:
      - run: echo test
"""
DOCS = """\
name: docs
on:
  push:
    branches: ['**']
    paths: ['docs/**']
jobs:
  build:
    runs-on: linux
    steps:
      - run: echo docs
"""
RELEASE = """\
name: release
on:
  push:
    tags: ['v*']
jobs:
  publish:
    runs-on: linux
    steps:
      - run: echo publish
"""


@pytest.fixture
def commits(origin):
    """main: base (workflows) -> src change; a docs-only change on top."""
    base = origin.commit(
        {
            ".cicd/workflows/ci.yml": CI,
            ".cicd/workflows/docs.yml": DOCS,
            ".cicd/workflows/release.yml": RELEASE,
            "README": "hi\n",
        }
    )
    src = origin.commit({"src/app.py": "print(1)\n"})
    docs = origin.commit({"docs/index.md": "# docs\n"})
    return {"base": base, "src": src, "docs": docs}


def workflows_of(delivery: Delivery) -> set[tuple[str, str]]:
    return {(run.workflow_name, run.sha) for run in Run.objects.filter(id__in=delivery.run_ids)}


def deliver_and_process(client, enqueued, source, event, payload, **kwargs):
    response = post(client, source, event, payload, **kwargs)
    assert response.status_code == 202, response.content
    delivery = Delivery.objects.get(pk=enqueued[-1])
    process_delivery(delivery.pk)
    delivery.refresh_from_db()
    assert delivery.state == Delivery.DONE, delivery.error
    return delivery


@pytest.mark.parametrize("source", SOURCES)
def test_a_push_starts_the_workflows_whose_filters_match(
    client, repository, enqueued, commits, source
):
    event, payload = push_payload(source, "refs/heads/main", commits["base"], commits["src"])
    delivery = deliver_and_process(client, enqueued, source, event, payload)
    assert workflows_of(delivery) == {("ci", commits["src"])}
    run = Run.objects.get(id=delivery.run_ids[0])
    assert (run.event, run.ref, run.actor) == ("push", "refs/heads/main", "alice")
    assert run.state == State.QUEUED

    event, payload = push_payload(source, "refs/heads/main", commits["src"], commits["docs"])
    delivery = deliver_and_process(client, enqueued, source, event, payload)
    assert workflows_of(delivery) == {("docs", commits["docs"])}


@pytest.mark.parametrize("source", SOURCES)
def test_tag_pushes_start_tag_workflows_and_deletions_start_nothing(
    client, repository, enqueued, commits, source
):
    event, payload = push_payload(source, "refs/tags/v1.0", ZERO, commits["docs"])
    delivery = deliver_and_process(client, enqueued, source, event, payload)
    assert workflows_of(delivery) == {("release", commits["docs"])}
    assert Run.objects.get(id=delivery.run_ids[0]).ref == "refs/tags/v1.0"

    event, payload = push_payload(source, "refs/heads/main", commits["docs"], ZERO)
    delivery = deliver_and_process(client, enqueued, source, event, payload)
    assert delivery.run_ids == []
    assert Run.objects.count() == 1


@pytest.mark.parametrize("source", SOURCES)
def test_a_redelivery_is_answered_200_and_starts_nothing_more(
    client, repository, enqueued, commits, source
):
    event, payload = push_payload(source, "refs/heads/main", commits["base"], commits["src"])
    deliver_and_process(client, enqueued, source, event, payload, delivery_id="same-id")
    again = post(client, source, event, payload, delivery_id="same-id")
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert len(enqueued) == 1  # a finished delivery is not processed again
    assert Delivery.objects.count() == 1
    assert Run.objects.count() == 1


def test_the_same_push_through_two_sources_starts_one_run_per_workflow(
    client, repository, enqueued, commits
):
    for source in ("github", "git"):
        event, payload = push_payload(source, "refs/heads/main", commits["base"], commits["src"])
        deliver_and_process(client, enqueued, source, event, payload)
    assert Delivery.objects.count() == 2
    assert Run.objects.count() == 1


@pytest.mark.parametrize("source", SOURCES)
def test_a_bad_or_missing_signature_is_401_audited_and_stores_nothing(
    client, repository, enqueued, commits, source
):
    event, payload = push_payload(source, "refs/heads/main", commits["base"], commits["src"])
    response = post(client, source, event, payload, secret="not-the-right-secret")
    assert response.status_code == 401
    assert "signature" in response.json()["error"]
    body = json.dumps(payload).encode()
    unsigned = client.generic(
        "POST", f"/hooks/{source}/acme/widgets", body, content_type="application/json"
    )
    assert unsigned.status_code == 401
    assert Delivery.objects.count() == 0 and enqueued == []
    entries = AuditEntry.objects.filter(action="webhook.rejected", repository=repository)
    assert entries.count() == 2
    assert entries.first().detail["source"] == source


@pytest.mark.parametrize("source", SOURCES)
def test_secrets_rotate_with_two_active_at_once(client, repository, enqueued, commits, source):
    add_secret(repository, label="new", value="the-new-webhook-secret")
    event, payload = push_payload(source, "refs/heads/main", commits["base"], commits["src"])
    assert post(client, source, event, payload).status_code == 202
    assert post(client, source, event, payload, secret="the-new-webhook-secret").status_code == 202
    WebhookSecret.objects.filter(label="test").update(active=False)
    assert post(client, source, event, payload).status_code == 401
    assert post(client, source, event, payload, secret="the-new-webhook-secret").status_code == 202


@pytest.mark.parametrize("source", SOURCES)
def test_a_body_over_the_limit_is_413_before_anything_else(
    client, repository, settings, enqueued, source
):
    settings.CICD_WEBHOOK_MAX_MB = 0.01  # about 10 KB
    body = json.dumps({"ref": "refs/heads/main", "padding": "x" * 20_000}).encode()
    response = post(client, source, "push", None, body=body, secret="unsigned-does-not-matter")
    assert response.status_code == 413
    assert Delivery.objects.count() == 0


def test_unknown_repository_and_source_are_404(client, repository, commits):
    event, payload = push_payload("github", "refs/heads/main", commits["base"], commits["src"])
    assert post(client, "github", event, payload, path="acme/nothing").status_code == 404
    response = client.post("/hooks/bitbucket/acme/widgets", b"{}", content_type="application/json")
    assert response.status_code == 404
    assert client.get("/hooks/github/acme/widgets").status_code == 405


@pytest.mark.parametrize("source", SOURCES)
def test_malformed_bodies_are_400_and_store_nothing(client, repository, enqueued, source):
    event = {"gitlab": "Push Hook"}.get(source, "push")
    for body in (
        b"{not json",
        b"[1, 2]",
        b'{"ref": 12}',
        "\udcff".encode("utf-8", "surrogatepass"),
    ):
        response = post(client, source, event, None, body=body)
        assert response.status_code == 400, (body, response.content)
        assert response.json()["error"]
    assert Delivery.objects.count() == 0


@pytest.mark.parametrize("source", SOURCES)
@hypothesis_settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    body=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=20),
            lambda children: (
                st.lists(children, max_size=4)
                | st.dictionaries(st.text(max_size=10), children, max_size=4)
            ),
            max_leaves=20,
        ).map(lambda value: json.dumps(value).encode()),
    ),
    event=st.sampled_from(["push", "pull_request", "ping", "Push Hook", "Merge Request Hook"]),
)
def test_signed_random_bodies_never_give_a_500(client, repository, enqueued, source, body, event):
    response = post(client, source, event, None, body=body)
    assert response.status_code in (202, 400), response.content
    assert "error" in response.json() or response.status_code == 202


def test_ping_is_stored_as_ignored_and_starts_nothing(client, repository, enqueued):
    response = post(client, "github", "ping", {"zen": "Keep it simple.", "hook_id": 1})
    assert response.status_code == 202
    assert response.json()["status"] == "ignored"
    assert Delivery.objects.get().state == Delivery.IGNORED
    assert enqueued == []


@pytest.mark.parametrize("source", ["github", "gitea", "gitlab"])
def test_pull_requests_run_at_the_head_and_forks_are_marked(
    client, repository, enqueued, origin, commits, source
):
    origin.git("checkout", "-q", "-b", "feature")
    head = origin.commit({"src/feature.py": "x = 1\n"})
    origin.git("checkout", "-q", "main")
    for number, (action, fork) in enumerate(
        [("opened", False), ("synchronize", True), ("reopened", False)], start=1
    ):
        event, payload = pull_request_payload(
            source,
            number=number,
            action=action,
            head_sha=head,
            head_branch="feature",
            base_branch="main",
            base_sha=commits["docs"],
            fork=fork,
        )
        delivery = deliver_and_process(client, enqueued, source, event, payload)
        (run,) = Run.objects.filter(id__in=delivery.run_ids)
        assert (run.workflow_name, run.event, run.sha) == ("ci", "pull_request", head)
        assert run.ref == f"refs/pull/{number}/head"
        assert run.from_fork is fork


def test_a_pull_request_into_another_branch_starts_nothing(
    client, repository, enqueued, origin, commits
):
    event, payload = pull_request_payload(
        "github",
        number=7,
        action="opened",
        head_sha=commits["src"],
        head_branch="feature",
        base_branch="release",
        base_sha=commits["base"],
    )
    assert deliver_and_process(client, enqueued, "github", event, payload).run_ids == []


def test_an_unreachable_repository_gives_a_failed_run_with_the_reason(
    client, repository, enqueued, commits
):
    repository.clone_url = "/nonexistent/repository.git"
    repository.save()
    event, payload = push_payload("github", "refs/heads/main", commits["base"], commits["src"])
    delivery = deliver_and_process(client, enqueued, "github", event, payload)
    (run,) = Run.objects.filter(id__in=delivery.run_ids)
    assert run.state == State.FAILURE
    assert "/nonexistent/repository.git" in run.error
    assert (run.sha, run.ref) == (commits["src"], "refs/heads/main")


def test_processing_that_failed_half_way_is_completed_by_a_redelivery(
    client, repository, enqueued, commits, monkeypatch
):
    import runs.triggering

    real = runs.triggering.create_run
    calls = []

    def create_one_then_fail(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("database went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(runs.triggering, "create_run", create_one_then_fail)
    # One delivery of the hook carrying two ref updates: a branch and a tag.
    body = json.dumps(
        {
            "pusher": "alice",
            "updates": [
                {"ref": "refs/heads/main", "before": commits["base"], "after": commits["src"]},
                {"ref": "refs/tags/v2", "before": ZERO, "after": commits["src"]},
            ],
        }
    ).encode()
    assert post(client, "git", "push", None, body=body, delivery_id="d1").status_code == 202
    process_delivery(enqueued[-1])
    delivery = Delivery.objects.get()
    assert delivery.state == Delivery.FAILED
    assert "database went away" in delivery.error
    assert Run.objects.count() == 1

    again = post(client, "git", "push", None, body=body, delivery_id="d1")
    assert again.status_code == 200 and again.json()["resumed"] is True
    process_delivery(enqueued[-1])
    delivery.refresh_from_db()
    assert delivery.state == Delivery.DONE
    assert sorted(Run.objects.values_list("workflow_name", flat=True)) == ["ci", "release"]


def test_the_sweeper_requeues_deliveries_whose_message_was_lost(
    client, repository, enqueued, commits, monkeypatch, settings
):
    from datetime import timedelta

    from django.utils import timezone

    from webhooks.processing import retry_unfinished

    sent = []
    monkeypatch.setattr("webhooks.tasks.process_delivery.delay", sent.append)
    event, payload = push_payload("github", "refs/heads/main", commits["base"], commits["src"])
    post(client, "github", event, payload)
    pk = enqueued[-1]
    assert retry_unfinished() == 0  # too recent: its own message may still arrive
    later = timezone.now() + timedelta(seconds=settings.CICD_WEBHOOK_RETRY_SECONDS + 1)
    assert retry_unfinished(later) == 1 and sent == [pk]
    process_delivery(pk)
    assert Delivery.objects.get(pk=pk).state == Delivery.DONE
    assert retry_unfinished(later + timedelta(hours=1)) == 0
    assert sent == [pk]


def test_a_new_push_cancels_the_branch_runs_its_concurrency_group_names(
    client, repository, enqueued, origin
):
    workflow = """\
on: push
concurrency:
  group: ci-${{ github.ref }}
  cancel-in-progress: true
jobs:
  test:
    runs-on: linux
    steps:
      - run: echo test
"""
    first = origin.commit({".cicd/workflows/ci.yml": workflow})
    second = origin.commit({"src/a.py": "a = 1\n"})
    origin.git("checkout", "-q", "-b", "other")
    elsewhere = origin.commit({"src/b.py": "b = 1\n"})
    runs = []
    for ref, before, after in [
        ("refs/heads/main", ZERO, first),
        ("refs/heads/other", first, elsewhere),
        ("refs/heads/main", first, second),
    ]:
        event, payload = push_payload("github", ref, before, after)
        runs += deliver_and_process(client, enqueued, "github", event, payload).run_ids
    old_main, other, new_main = (Run.objects.get(id=run_id) for run_id in runs)
    assert old_main.state == State.CANCELLED
    reasons = [t.reason for t in old_main.transitions.all()]
    reasons += [t.reason for job in old_main.jobs.all() for t in job.transitions.all()]
    assert any("superseded by run #3" in reason for reason in reasons), reasons
    assert other.state == State.QUEUED
    assert new_main.state == State.QUEUED


@pytest.mark.parametrize("backend", ["database", "redis"])
def test_the_rate_limit_answers_429_with_retry_after_and_stores_nothing(
    client, repository, enqueued, commits, settings, backend
):
    import redis

    from tests.conftest import redis_url_with_db
    from webhooks import ratelimit

    settings.CICD_WEBHOOK_RATE = 0.01  # one token per 100 s
    settings.CICD_WEBHOOK_BURST = 3
    settings.REDIS_URL = redis_url_with_db(9) if backend == "redis" else None
    ratelimit._script.cache_clear()
    if settings.REDIS_URL:
        redis.Redis.from_url(settings.REDIS_URL).flushdb()
    try:
        event, payload = push_payload("github", "refs/heads/main", commits["base"], commits["src"])
        # Badly signed requests do not use up the repository's budget.
        for _ in range(5):
            assert post(client, "github", event, payload, secret="wrong").status_code == 401
        answers = [post(client, "github", event, payload) for _ in range(5)]
        assert [answer.status_code for answer in answers] == [202, 202, 202, 429, 429]
        assert 1 <= int(answers[3]["Retry-After"]) <= 100
        assert Delivery.objects.count() == 3
    finally:
        if settings.REDIS_URL:
            redis.Redis.from_url(settings.REDIS_URL).flushdb()
        ratelimit._script.cache_clear()


def test_a_fork_pull_request_job_gets_no_secrets_and_a_same_repository_one_does(
    client, repository, enqueued, origin, commits
):
    from runs.execution import _spec_for
    from runs.models import Job
    from runs.vault import store_secret

    store_secret(name="DEPLOY_KEY", value="hunter2-hunter2", repository=repository)
    origin.git("checkout", "-q", "-b", "feature")
    head = origin.commit({"src/feature.py": "x = 1\n"})
    secrets_seen = {}
    for number, fork in [(1, True), (2, False)]:
        event, payload = pull_request_payload(
            "github",
            number=number,
            action="opened",
            head_sha=head,
            head_branch="feature",
            base_branch="main",
            base_sha=commits["docs"],
            fork=fork,
        )
        delivery = deliver_and_process(client, enqueued, "github", event, payload)
        job = Job.objects.select_related("run__repository__organisation").get(
            run_id=delivery.run_ids[0]
        )
        secrets_seen[fork] = dict(_spec_for(job).secrets)
    assert secrets_seen == {True: {}, False: {"DEPLOY_KEY": "hunter2-hunter2"}}
