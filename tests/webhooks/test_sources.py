"""Webhook sources: signatures, delivery ids and payload parsing for GitHub, GitLab, Gitea and our
own post-receive hook. Pure functions, no database.

The sample payloads are trimmed copies of the examples in each forge's webhook documentation.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import urllib.parse
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from webhooks.sources import (
    EVENTS,
    SOURCES,
    ParsedDelivery,
    RefUpdate,
    WebhookError,
    delivery_id_of,
    header,
    parse_delivery,
    signature_valid,
)

ZERO = "0" * 40
DELIVERY = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
SECRET = "whsec-rotation-new-0123456789"

# ---------------------------------------------------------------------------------------------
# Sample payloads

CODERTOCAT_REPO = {
    "id": 186853002,
    "node_id": "MDEwOlJlcG9zaXRvcnkxODY4NTMwMDI=",
    "name": "Hello-World",
    "full_name": "Codertocat/Hello-World",
    "private": False,
    "owner": {"login": "Codertocat", "id": 21031067, "type": "User"},
    "html_url": "https://github.com/Codertocat/Hello-World",
    "default_branch": "master",
}
CODERTOCAT = {"login": "Codertocat", "id": 21031067, "type": "User", "site_admin": False}

# GitHub's push example: the deletion of a tag.
GITHUB_TAG_DELETION = {
    "ref": "refs/tags/simple-tag",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": ZERO,
    "created": False,
    "deleted": True,
    "forced": False,
    "base_ref": None,
    "compare": "https://github.com/Codertocat/Hello-World/compare/6113728f27ae...000000000000",
    "commits": [],
    "head_commit": None,
    "repository": CODERTOCAT_REPO,
    "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
    "sender": CODERTOCAT,
}
GITHUB_PUSH = {
    **GITHUB_TAG_DELETION,
    "ref": "refs/heads/master",
    "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "after": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
    "deleted": False,
    "commits": [
        {
            "id": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            "message": "Update README.md",
            "timestamp": "2019-05-15T15:20:30-05:00",
            "author": {"name": "Codertocat", "username": "Codertocat"},
            "added": [],
            "removed": [],
            "modified": ["README.md"],
        }
    ],
    "head_commit": {"id": "ec26c3e57ca3a959ca5aad62de7213c562f8c821"},
}
GITHUB_TAG_PUSH = {
    **GITHUB_TAG_DELETION,
    "before": ZERO,
    "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
    "created": True,
    "deleted": False,
}
# GitHub's pull_request "opened" example.
GITHUB_PULL_REQUEST = {
    "action": "opened",
    "number": 2,
    "pull_request": {
        "url": "https://api.github.com/repos/Codertocat/Hello-World/pulls/2",
        "id": 279147437,
        "number": 2,
        "state": "open",
        "locked": False,
        "title": "Update the README with new information.",
        "user": CODERTOCAT,
        "body": "This is a pretty simple change that we need to pull into master.",
        "draft": False,
        "head": {
            "label": "Codertocat:changes",
            "ref": "changes",
            "sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            "user": CODERTOCAT,
            "repo": CODERTOCAT_REPO,
        },
        "base": {
            "label": "Codertocat:master",
            "ref": "master",
            "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
            "user": CODERTOCAT,
            "repo": CODERTOCAT_REPO,
        },
        "merged": False,
        "commits": 1,
    },
    "repository": CODERTOCAT_REPO,
    "sender": CODERTOCAT,
}
GITHUB_PING = {
    "zen": "Non-blocking is better than blocking.",
    "hook_id": 30,
    "hook": {
        "type": "Repository",
        "id": 30,
        "name": "web",
        "active": True,
        "events": ["push", "pull_request"],
        "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://ci.example/"},
    },
    "repository": CODERTOCAT_REPO,
    "sender": CODERTOCAT,
}

GITEA_USER = {
    "id": 1,
    "login": "gitea",
    "full_name": "Gitea",
    "email": "someone@gitea.io",
    "avatar_url": "https://localhost:3000/avatars/1",
    "username": "gitea",
}
GITEA_REPO = {
    "id": 140,
    "owner": GITEA_USER,
    "name": "webhooks",
    "full_name": "gitea/webhooks",
    "private": False,
    "fork": False,
    "html_url": "http://localhost:3000/gitea/webhooks",
    "default_branch": "master",
}
# Gitea's push example.
GITEA_PUSH = {
    "secret": "3gEsCfjlV2ugRwgpU#w1*WaW*wa4NXgGmpCfkbG3",
    "ref": "refs/heads/develop",
    "before": "28e1879d029cb852e4844d9c718537df08844e03",
    "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
    "compare_url": "http://localhost:3000/gitea/webhooks/compare/"
    "28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
    "commits": [
        {
            "id": "bffeb74224043ba2feb48d137756c8a9331c449a",
            "message": "Webhooks Yay!",
            "url": "http://localhost:3000/gitea/webhooks/commit/"
            "bffeb74224043ba2feb48d137756c8a9331c449a",
            "author": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
            "committer": {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"},
            "timestamp": "2017-03-13T13:52:11-04:00",
        }
    ],
    "repository": GITEA_REPO,
    "pusher": GITEA_USER,
    "sender": GITEA_USER,
}
GITEA_PULL_REQUEST = {
    "action": "synchronized",
    "number": 4,
    "pull_request": {
        "id": 111,
        "url": "http://localhost:3000/gitea/webhooks/pulls/4",
        "number": 4,
        "user": GITEA_USER,
        "title": "Auto-created pull request from dev to master",
        "body": "",
        "state": "open",
        "mergeable": True,
        "merged": False,
        "base": {
            "label": "master",
            "ref": "master",
            "sha": "28e1879d029cb852e4844d9c718537df08844e03",
            "repo_id": 140,
            "repo": GITEA_REPO,
        },
        "head": {
            "label": "dev",
            "ref": "dev",
            "sha": "bffeb74224043ba2feb48d137756c8a9331c449a",
            "repo_id": 140,
            "repo": GITEA_REPO,
        },
    },
    "repository": GITEA_REPO,
    "sender": GITEA_USER,
    "review": None,
}

GITLAB_PROJECT = {
    "id": 15,
    "name": "Diaspora",
    "web_url": "http://example.com/mike/diaspora",
    "git_http_url": "http://example.com/mike/diaspora.git",
    "namespace": "Mike",
    "path_with_namespace": "mike/diaspora",
    "default_branch": "master",
}
# GitLab's push and tag push examples.
GITLAB_PUSH = {
    "object_kind": "push",
    "event_name": "push",
    "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
    "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    "ref": "refs/heads/master",
    "ref_protected": True,
    "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
    "user_id": 4,
    "user_name": "John Smith",
    "user_username": "jsmith",
    "user_email": "john@example.com",
    "project_id": 15,
    "project": GITLAB_PROJECT,
    "commits": [
        {
            "id": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
            "message": "Update Catalan translation to e38cb41.\n\nSee https://gitlab.com/gitlab-org"
            "/gitlab for more information",
            "title": "Update Catalan translation to e38cb41.",
            "timestamp": "2011-12-12T14:27:31+02:00",
            "author": {"name": "Jordi Mallach", "email": "jordi@softcatala.org"},
            "added": ["CHANGELOG"],
            "modified": ["app/controller/application.rb"],
            "removed": [],
        }
    ],
    "total_commits_count": 4,
}
GITLAB_TAG_PUSH = {
    "object_kind": "tag_push",
    "event_name": "tag_push",
    "before": ZERO,
    "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
    "ref": "refs/tags/v1.0.0",
    "ref_protected": True,
    "checkout_sha": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
    "user_id": 1,
    "user_name": "John Smith",
    "user_username": "jsmith",
    "project_id": 1,
    "project": {**GITLAB_PROJECT, "id": 1, "path_with_namespace": "jsmith/example"},
    "commits": [],
    "total_commits_count": 0,
}
# GitLab's merge request example.
GITLAB_MERGE_REQUEST = {
    "object_kind": "merge_request",
    "event_type": "merge_request",
    "user": {
        "id": 1,
        "name": "Administrator",
        "username": "root",
        "email": "admin@example.com",
    },
    "project": {**GITLAB_PROJECT, "id": 1, "path_with_namespace": "gitlabhq/gitlab-test"},
    "object_attributes": {
        "id": 99,
        "iid": 1,
        "target_branch": "master",
        "source_branch": "ms-viewport",
        "source_project_id": 14,
        "author_id": 51,
        "title": "MS-Viewport",
        "created_at": "2013-12-03T17:23:34Z",
        "state": "opened",
        "merge_status": "unchecked",
        "target_project_id": 14,
        "description": "",
        "last_commit": {
            "id": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            "message": "fixed readme",
            "title": "Update file README.md",
            "timestamp": "2012-01-03T23:36:29+02:00",
            "author": {"name": "GitLab dev user", "email": "gitlabdev@dv6700.(none)"},
        },
        "work_in_progress": False,
        "url": "http://example.com/diaspora/merge_requests/1",
        "action": "open",
    },
    "labels": [],
    "changes": {},
}

GIT_PUSH = {
    "pusher": "alice",
    "updates": [
        {
            "ref": "refs/heads/main",
            "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
            "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        },
        {
            "ref": "refs/tags/v2.0",
            "before": ZERO,
            "after": "82b3d5ae55f7080f1e6022629cdb57bfae7cccc7",
        },
        {
            "ref": "refs/heads/old",
            "before": "b6568db1bc1dcd7f8b4d5a946b0b91f9dacd7327",
            "after": ZERO,
        },
    ],
}

# (source, event header value, payload) of every sample that parses.
SAMPLES = [
    ("github", "push", GITHUB_PUSH),
    ("github", "push", GITHUB_TAG_PUSH),
    ("github", "push", GITHUB_TAG_DELETION),
    ("github", "pull_request", GITHUB_PULL_REQUEST),
    ("github", "ping", GITHUB_PING),
    ("gitea", "push", GITEA_PUSH),
    ("gitea", "pull_request", GITEA_PULL_REQUEST),
    ("gitlab", "Push Hook", GITLAB_PUSH),
    ("gitlab", "Tag Push Hook", GITLAB_TAG_PUSH),
    ("gitlab", "Merge Request Hook", GITLAB_MERGE_REQUEST),
    ("git", "push", GIT_PUSH),
]

# ---------------------------------------------------------------------------------------------
# Helpers

EVENT_HEADER = {
    "github": "X-GitHub-Event",
    "gitea": "X-Gitea-Event",
    "gitlab": "X-Gitlab-Event",
    "git": "X-Cicd-Event",
}
DELIVERY_HEADER = {
    "github": "X-GitHub-Delivery",
    "gitea": "X-Gitea-Delivery",
    "gitlab": "X-Gitlab-Event-UUID",
    "git": "X-Cicd-Delivery",
}


def headers_for(source: str, event: str, **extra: str) -> dict[str, str]:
    return {
        EVENT_HEADER[source]: event,
        DELIVERY_HEADER[source]: DELIVERY,
        "Content-Type": "application/json",
        **extra,
    }


def parse(source: str, event: str, payload: Any, **extra: str) -> ParsedDelivery:
    return parse_delivery(source, headers_for(source, event, **extra), json.dumps(payload).encode())


def rejection(source: str, event: str, payload: Any) -> str:
    with pytest.raises(WebhookError) as caught:
        parse(source, event, payload)
    assert caught.value.status == 400
    return caught.value.message


def with_pull(payload: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of a GitHub-like pull request payload with `pull_request` keys changed."""
    changed = copy.deepcopy(payload)
    changed["pull_request"].update(changes)
    return changed


def with_attributes(**changes: Any) -> dict[str, Any]:
    changed = copy.deepcopy(GITLAB_MERGE_REQUEST)
    changed["object_attributes"].update(changes)
    return changed


def sign(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------
# Signatures

# GitHub's documented test vector ("Validating webhook deliveries").
VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_BODY = b"Hello, World!"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_github_documented_test_vector_verifies() -> None:
    headers = {"X-Hub-Signature-256": VECTOR_SIGNATURE}
    assert signature_valid("github", headers, VECTOR_BODY, [VECTOR_SECRET]) is True


def test_github_test_vector_fails_when_any_byte_of_the_body_changes() -> None:
    headers = {"X-Hub-Signature-256": VECTOR_SIGNATURE}
    for position in range(len(VECTOR_BODY)):
        for flip in (0x01, 0x80):
            body = bytearray(VECTOR_BODY)
            body[position] ^= flip
            assert not signature_valid("github", headers, bytes(body), [VECTOR_SECRET]), position
    assert not signature_valid("github", headers, VECTOR_BODY + b"\n", [VECTOR_SECRET])
    assert not signature_valid("github", headers, VECTOR_BODY[:-1], [VECTOR_SECRET])


def test_github_test_vector_fails_with_another_secret_or_a_changed_signature() -> None:
    assert not signature_valid(
        "github", {"X-Hub-Signature-256": VECTOR_SIGNATURE}, VECTOR_BODY, ["It's a secret"]
    )
    last = VECTOR_SIGNATURE[-1]
    changed = VECTOR_SIGNATURE[:-1] + ("0" if last != "0" else "1")
    assert not signature_valid(
        "github", {"X-Hub-Signature-256": changed}, VECTOR_BODY, [VECTOR_SECRET]
    )


def test_upper_case_hex_and_django_meta_keys_verify() -> None:
    upper = "sha256=" + VECTOR_SIGNATURE.removeprefix("sha256=").upper()
    assert signature_valid("github", {"x-hub-signature-256": upper}, VECTOR_BODY, [VECTOR_SECRET])
    meta = {"HTTP_X_HUB_SIGNATURE_256": VECTOR_SIGNATURE}
    assert signature_valid("github", meta, VECTOR_BODY, [VECTOR_SECRET])


def test_rotation_the_right_secret_second_in_the_list_verifies() -> None:
    headers = {"X-Hub-Signature-256": VECTOR_SIGNATURE}
    assert signature_valid("github", headers, VECTOR_BODY, ["an-old-secret", VECTOR_SECRET])
    assert not signature_valid("github", headers, VECTOR_BODY, ["an-old-secret", "another"])


def test_no_secrets_or_only_empty_ones_never_verify() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + sign("", VECTOR_BODY)}
    assert signature_valid("github", headers, VECTOR_BODY, []) is False
    assert signature_valid("github", headers, VECTOR_BODY, ()) is False
    # An empty HMAC key is known to everybody: it must not count as a configured secret.
    assert signature_valid("github", headers, VECTOR_BODY, [""]) is False


def test_a_single_string_instead_of_a_list_of_secrets_is_a_programming_error() -> None:
    with pytest.raises(TypeError):
        signature_valid("github", {}, b"", "a-secret")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "sha256=",
        VECTOR_SIGNATURE.removeprefix("sha256="),  # GitHub's header needs the prefix
        "sha1=" + VECTOR_SIGNATURE.removeprefix("sha256="),
        VECTOR_SIGNATURE[:-1],  # too short
        VECTOR_SIGNATURE + "0",  # too long
        VECTOR_SIGNATURE[:-1] + "g",  # not hex
        VECTOR_SIGNATURE[:-1] + "é",  # not ASCII: compare_digest on str would raise
        VECTOR_SIGNATURE + "," + VECTOR_SIGNATURE,  # the header sent twice, joined
        "sha256=" + "\ud800" * 64,
    ],
)
def test_malformed_github_signatures_are_false_never_an_error(value: str | None) -> None:
    headers = {} if value is None else {"X-Hub-Signature-256": value}
    assert signature_valid("github", headers, VECTOR_BODY, [VECTOR_SECRET]) is False


def test_gitea_signature_is_bare_hex_in_either_header() -> None:
    body = json.dumps(GITEA_PUSH).encode()
    digest = sign(SECRET, body)
    assert signature_valid("gitea", {"X-Gitea-Signature": digest}, body, [SECRET])
    assert signature_valid("gitea", {"X-Forgejo-Signature": digest}, body, [SECRET])
    both = {"X-Gitea-Signature": digest, "X-Forgejo-Signature": digest}
    assert signature_valid("gitea", both, body, ["old", SECRET])
    assert not signature_valid("gitea", {"X-Gitea-Signature": "sha256=" + digest}, body, [SECRET])
    assert not signature_valid("gitea", {"X-Gitea-Signature": digest}, body + b" ", [SECRET])
    # GitHub's header is not Gitea's: a gitea hook is verified with Gitea's own header.
    assert not signature_valid("gitea", {"X-Hub-Signature-256": "sha256=" + digest}, body, [SECRET])


def test_our_hook_signs_like_github() -> None:
    body = json.dumps(GIT_PUSH).encode()
    headers = {"X-Cicd-Signature-256": "sha256=" + sign(SECRET, body)}
    assert signature_valid("git", headers, body, [SECRET])
    assert not signature_valid("git", headers, body, ["not-the-secret"])
    github_style = {"X-Hub-Signature-256": headers["X-Cicd-Signature-256"]}
    assert not signature_valid("git", github_style, body, [SECRET])


def test_gitlab_token_must_equal_one_of_the_secrets() -> None:
    body = json.dumps(GITLAB_PUSH).encode()
    assert signature_valid("gitlab", {"X-Gitlab-Token": SECRET}, body, [SECRET])
    assert signature_valid("gitlab", {"HTTP_X_GITLAB_TOKEN": SECRET}, body, ["old", SECRET])
    assert not signature_valid("gitlab", {"X-Gitlab-Token": SECRET + "x"}, body, [SECRET])
    assert not signature_valid("gitlab", {"X-Gitlab-Token": SECRET[:-1]}, body, [SECRET])
    assert not signature_valid("gitlab", {"X-Gitlab-Token": SECRET.upper()}, body, [SECRET])
    assert not signature_valid("gitlab", {}, body, [SECRET])
    assert not signature_valid("gitlab", {"X-Gitlab-Token": ""}, body, [SECRET, ""])
    assert not signature_valid("gitlab", {"X-Gitlab-Token": SECRET}, body, [])
    # Non-ASCII tokens compare as UTF-8 bytes (hmac.compare_digest refuses non-ASCII str).
    token = "sécret-ñ-1234567"
    assert signature_valid("gitlab", {"X-Gitlab-Token": token}, body, [token])
    assert not signature_valid("gitlab", {"X-Gitlab-Token": "\udcff"}, body, [SECRET])
    # A GitLab hook is not verified by an HMAC header.
    signed = {"X-Hub-Signature-256": "sha256=" + sign(SECRET, body)}
    assert not signature_valid("gitlab", signed, body, [SECRET])


def test_unknown_source_never_verifies() -> None:
    headers = {"X-Hub-Signature-256": VECTOR_SIGNATURE}
    assert signature_valid("bitbucket", headers, VECTOR_BODY, [VECTOR_SECRET]) is False


# ---------------------------------------------------------------------------------------------
# Headers and delivery ids


def test_header_lookup_ignores_case_and_reads_django_meta() -> None:
    assert header({"x-github-event": " push "}, "X-GitHub-Event") == "push"
    assert header({"X-GITHUB-EVENT": "push"}, "X-GitHub-Event") == "push"
    assert header({"HTTP_X_GITHUB_EVENT": "push"}, "X-GitHub-Event") == "push"
    assert header({"CONTENT_TYPE": "application/json"}, "Content-Type") == "application/json"
    assert header({"HTTP_CONTENT_TYPE": "text/plain"}, "Content-Type") == "text/plain"
    assert header({"X-GitHub-Event": "push"}, "X-GitHub-Delivery") is None
    assert header({}, "X-GitHub-Event") is None


def test_header_lookup_never_matches_environment_variables_in_meta() -> None:
    # Django's runserver copies os.environ into META: IDEMPOTENCY_KEY there is no header.
    meta = {"IDEMPOTENCY_KEY": "from-env", "X_GITHUB_EVENT": "from-env", "wsgi.input": object()}
    assert header(meta, "Idempotency-Key") is None  # type: ignore[arg-type]
    assert header(meta, "X-GitHub-Event") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("source", SOURCES)
def test_delivery_id_comes_from_the_source_header(source: str) -> None:
    assert delivery_id_of(source, {DELIVERY_HEADER[source]: DELIVERY}) == DELIVERY


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("github", "X-GitHub-Delivery"),
        ("gitea", "X-Gitea-Delivery (or X-Forgejo-Delivery)"),
        ("gitlab", "Idempotency-Key (or X-Gitlab-Event-UUID)"),
        ("git", "X-Cicd-Delivery"),
    ],
)
def test_missing_delivery_header_is_a_400_naming_it(source: str, expected: str) -> None:
    for headers in ({}, {DELIVERY_HEADER[source]: ""}, {DELIVERY_HEADER[source]: "   "}):
        with pytest.raises(WebhookError) as caught:
            delivery_id_of(source, headers)
        assert caught.value.status == 400
        assert caught.value.message == f"missing header {expected}"
    with pytest.raises(WebhookError, match=expected.split()[0]):
        parse_delivery(source, {EVENT_HEADER[source]: "push"}, b"{}")


def test_delivery_id_longer_than_200_characters_or_unprintable_is_refused() -> None:
    assert delivery_id_of("github", {"X-GitHub-Delivery": "d" * 200}) == "d" * 200
    with pytest.raises(WebhookError, match="X-GitHub-Delivery is longer than 200") as caught:
        delivery_id_of("github", {"X-GitHub-Delivery": "d" * 201})
    assert caught.value.status == 400
    with pytest.raises(WebhookError, match="X-GitHub-Delivery must be printable ASCII"):
        delivery_id_of("github", {"X-GitHub-Delivery": "abc\x00def"})
    with pytest.raises(WebhookError, match="printable ASCII"):
        delivery_id_of("github", {"X-GitHub-Delivery": "délivery"})


def test_gitlab_prefers_the_idempotency_key_and_falls_back_to_the_event_uuid() -> None:
    both = {"Idempotency-Key": "key-1", "X-Gitlab-Event-UUID": "uuid-1"}
    assert delivery_id_of("gitlab", both) == "key-1"
    assert delivery_id_of("gitlab", {"X-Gitlab-Event-UUID": "uuid-1"}) == "uuid-1"
    assert delivery_id_of("gitlab", {"Idempotency-Key": "", "X-Gitlab-Event-UUID": "u"}) == "u"


def test_forgejo_headers_are_accepted_for_gitea() -> None:
    headers = {"X-Forgejo-Event": "push", "X-Forgejo-Delivery": "forgejo-1"}
    parsed = parse_delivery("gitea", headers, json.dumps(GITEA_PUSH).encode())
    assert (parsed.event, parsed.delivery_id) == ("push", "forgejo-1")


def test_unknown_source_is_a_404() -> None:
    with pytest.raises(WebhookError) as caught:
        parse_delivery("bitbucket", {"X-Event-Key": "repo:push"}, b"{}")
    assert caught.value.status == 404
    with pytest.raises(WebhookError) as caught:
        delivery_id_of("bitbucket", {})
    assert caught.value.status == 404


@pytest.mark.parametrize("source", SOURCES)
def test_missing_event_header_is_a_400_naming_it(source: str) -> None:
    with pytest.raises(WebhookError, match=f"missing header {EVENT_HEADER[source]}") as caught:
        parse_delivery(source, {DELIVERY_HEADER[source]: DELIVERY}, b"{}")
    assert caught.value.status == 400


# ---------------------------------------------------------------------------------------------
# GitHub


def test_github_push() -> None:
    parsed = parse("github", "push", GITHUB_PUSH)
    assert parsed == ParsedDelivery(
        source="github",
        delivery_id=DELIVERY,
        event="push",
        pushes=(
            RefUpdate(
                "refs/heads/master",
                "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
                "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            ),
        ),
        actor="Codertocat",
    )
    assert not parsed.pushes[0].created and not parsed.pushes[0].deleted


def test_github_tag_push_and_tag_deletion() -> None:
    (created,) = parse("github", "push", GITHUB_TAG_PUSH).pushes
    assert created.ref == "refs/tags/simple-tag"
    assert created.created and not created.deleted
    (deleted,) = parse("github", "push", GITHUB_TAG_DELETION).pushes
    assert deleted.deleted and not deleted.created
    assert deleted.after == ZERO


def test_github_branch_deletion() -> None:
    payload = {**GITHUB_PUSH, "after": ZERO, "deleted": True, "head_commit": None}
    (update,) = parse("github", "push", payload).pushes
    assert update.ref == "refs/heads/master"
    assert update.deleted


def test_github_push_actor_falls_back_to_the_sender() -> None:
    payload = {key: value for key, value in GITHUB_PUSH.items() if key != "pusher"}
    assert parse("github", "push", payload).actor == "Codertocat"
    del payload["sender"]
    assert parse("github", "push", payload).actor == ""


def test_github_pull_request_opened() -> None:
    parsed = parse("github", "pull_request", GITHUB_PULL_REQUEST)
    assert parsed.event == "pull_request"
    assert parsed.actor == "Codertocat"
    assert parsed.pushes == ()
    pull = parsed.pull_request
    assert pull is not None
    assert pull.number == 2
    assert pull.action == "opened"
    assert pull.head_sha == "ec26c3e57ca3a959ca5aad62de7213c562f8c821"
    assert pull.head_ref == "refs/heads/changes"
    assert pull.base_ref == "refs/heads/master"
    assert pull.base_sha == "f95f852bd8fca8fcc58a9a2d6c842781e32a215e"
    assert pull.from_fork is False
    assert pull.title == "Update the README with new information."
    assert pull.head_fetch_ref == "refs/pull/2/head"


@pytest.mark.parametrize(
    "action", ["opened", "synchronize", "reopened", "closed", "edited", "labeled"]
)
def test_github_pull_request_actions_pass_through(action: str) -> None:
    parsed = parse("github", "pull_request", {**GITHUB_PULL_REQUEST, "action": action})
    assert parsed.pull_request is not None
    assert parsed.pull_request.action == action


def test_github_pull_request_action_is_lower_cased() -> None:
    parsed = parse("github", "pull_request", {**GITHUB_PULL_REQUEST, "action": "Ready_For_Review"})
    assert parsed.pull_request is not None
    assert parsed.pull_request.action == "ready_for_review"


def test_github_pull_request_number_may_come_from_the_pull_request() -> None:
    payload = {key: value for key, value in GITHUB_PULL_REQUEST.items() if key != "number"}
    parsed = parse("github", "pull_request", payload)
    assert parsed.pull_request is not None
    assert parsed.pull_request.number == 2
    assert parsed.pull_request.head_fetch_ref == "refs/pull/2/head"


def _github_fork(**head_repo: Any) -> dict[str, Any]:
    payload = copy.deepcopy(GITHUB_PULL_REQUEST)
    payload["pull_request"]["head"]["repo"] = head_repo or None
    return payload


@pytest.mark.parametrize(
    ("head_repo", "fork"),
    [
        ({"id": 186853002, "full_name": "Codertocat/Hello-World"}, False),
        ({"id": 186853003, "full_name": "octocat/Hello-World"}, True),
        ({"id": 186853003, "full_name": "Codertocat/Hello-World"}, True),
        ({"full_name": "octocat/Hello-World"}, True),
        ({"id": 186853002}, False),
        ({}, True),  # null: the fork was deleted
    ],
)
def test_github_fork_detection(head_repo: dict[str, Any], fork: bool) -> None:
    parsed = parse("github", "pull_request", _github_fork(**head_repo))
    assert parsed.pull_request is not None
    assert parsed.pull_request.from_fork is fork


def test_github_fork_detection_needs_a_comparable_identifier() -> None:
    message = rejection("github", "pull_request", _github_fork(name="Hello-World"))
    assert "'pull_request.head.repo.id' is missing" in message


def test_github_ping_and_ignored_events() -> None:
    assert parse("github", "ping", GITHUB_PING) == ParsedDelivery("github", DELIVERY, "ping")
    parsed = parse("github", "issues", {"action": "opened"})
    assert parsed.event == "ignored"
    assert parsed.ignored_reason == "event 'issues' does not start workflows"
    assert parsed.pushes == () and parsed.pull_request is None


def test_ignored_events_and_pings_do_not_read_the_body() -> None:
    headers = headers_for("github", "ping")
    assert parse_delivery("github", headers, b"").event == "ping"
    headers = headers_for("github", "workflow_run")
    assert parse_delivery("github", headers, b"\xff not json").event == "ignored"


def test_github_form_encoded_payload() -> None:
    body = urllib.parse.urlencode({"payload": json.dumps(GITHUB_PULL_REQUEST)}).encode()
    headers = headers_for("github", "pull_request")
    headers["Content-Type"] = "application/x-www-form-urlencoded"
    parsed = parse_delivery("github", headers, body)
    assert parsed.pull_request is not None
    assert parsed.pull_request.head_ref == "refs/heads/changes"
    # As Django's request.META has it.
    meta = {
        "CONTENT_TYPE": "application/x-www-form-urlencoded; charset=utf-8",
        "HTTP_X_GITHUB_EVENT": "push",
        "HTTP_X_GITHUB_DELIVERY": DELIVERY,
        "PATH": "/usr/bin",
    }
    body = urllib.parse.urlencode({"payload": json.dumps(GITHUB_PUSH)}).encode()
    assert parse_delivery("github", meta, body).pushes[0].ref == "refs/heads/master"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "exactly one 'payload' field"),
        (b"payloadx=1", "exactly one 'payload' field"),
        (b"payload=1&payload=2", "exactly one 'payload' field"),
        (b"payload=%7B%22a%22%3A", "body is not valid JSON"),
        (b"payload=%FF", "form body is malformed"),
        (b"payload=%5B%5D", "must be a JSON object, got an array"),
        (b"a=1&" * 200 + b"payload=%7B%7D", "form body is malformed"),
    ],
)
def test_github_malformed_form_bodies(body: bytes, message: str) -> None:
    headers = headers_for("github", "push", **{"Content-Type": "application/x-www-form-urlencoded"})
    with pytest.raises(WebhookError, match=message) as caught:
        parse_delivery("github", headers, body)
    assert caught.value.status == 400


# ---------------------------------------------------------------------------------------------
# Gitea


def test_gitea_push() -> None:
    parsed = parse("gitea", "push", GITEA_PUSH)
    assert parsed.event == "push"
    assert parsed.actor == "gitea"
    assert parsed.pushes == (
        RefUpdate(
            "refs/heads/develop",
            "28e1879d029cb852e4844d9c718537df08844e03",
            "bffeb74224043ba2feb48d137756c8a9331c449a",
        ),
    )


def test_gitea_tag_push_and_branch_deletion() -> None:
    tag = {**GITEA_PUSH, "ref": "refs/tags/v1.21.0", "before": ZERO, "commits": []}
    (update,) = parse("gitea", "push", tag).pushes
    assert update.ref == "refs/tags/v1.21.0" and update.created
    deletion = {**GITEA_PUSH, "after": ZERO, "commits": []}
    (update,) = parse("gitea", "push", deletion).pushes
    assert update.deleted and update.ref == "refs/heads/develop"


def test_gitea_push_actor_reads_login_then_username() -> None:
    payload = {**GITEA_PUSH, "pusher": {"id": 2, "username": "forgejo-user"}}
    assert parse("gitea", "push", payload).actor == "forgejo-user"


@pytest.mark.parametrize(
    ("sent", "normalised"),
    [
        ("opened", "opened"),
        ("synchronized", "synchronize"),
        ("reopened", "reopened"),
        ("closed", "closed"),
        ("edited", "edited"),
        ("label_updated", "label_updated"),
    ],
)
def test_gitea_pull_request_actions(sent: str, normalised: str) -> None:
    parsed = parse("gitea", "pull_request", {**GITEA_PULL_REQUEST, "action": sent})
    pull = parsed.pull_request
    assert pull is not None
    assert pull.action == normalised
    assert pull.number == 4
    assert pull.head_ref == "refs/heads/dev"
    assert pull.base_ref == "refs/heads/master"
    assert pull.head_sha == "bffeb74224043ba2feb48d137756c8a9331c449a"
    assert pull.base_sha == "28e1879d029cb852e4844d9c718537df08844e03"
    assert pull.head_fetch_ref == "refs/pull/4/head"
    assert pull.from_fork is False
    assert parsed.actor == "gitea"


def test_gitea_fork_detection_by_repository_id() -> None:
    payload = copy.deepcopy(GITEA_PULL_REQUEST)
    payload["pull_request"]["head"]["repo"] = {**GITEA_REPO, "id": 141, "full_name": "bob/webhooks"}
    pull = parse("gitea", "pull_request", payload).pull_request
    assert pull is not None and pull.from_fork is True
    payload["pull_request"]["head"]["repo"] = None  # the fork was deleted
    pull = parse("gitea", "pull_request", payload).pull_request
    assert pull is not None and pull.from_fork is True


def test_gitea_head_ref_of_an_agit_pull_request_counts_as_a_fork() -> None:
    # AGit pull requests are pushed to refs/for/<branch> by anyone with read access; Gitea then
    # reports refs/pull/N/head and the base repository as the head's.
    payload = copy.deepcopy(GITEA_PULL_REQUEST)
    payload["pull_request"]["head"].update(ref="refs/pull/4/head", label="")
    pull = parse("gitea", "pull_request", payload).pull_request
    assert pull is not None
    assert pull.head_ref == "refs/pull/4/head"
    assert pull.from_fork is True


def test_gitea_empty_base_sha_means_unknown() -> None:
    payload = copy.deepcopy(GITEA_PULL_REQUEST)
    payload["pull_request"]["base"]["sha"] = ""
    pull = parse("gitea", "pull_request", payload).pull_request
    assert pull is not None and pull.base_sha is None


def test_gitea_ignored_events() -> None:
    for event in ("create", "delete", "issues", "pull_request_approved", "ping"):
        parsed = parse("gitea", event, {})
        assert parsed.event == "ignored"
        assert parsed.ignored_reason == f"event {event!r} does not start workflows"


def test_gitea_form_encoded_payload() -> None:
    body = urllib.parse.urlencode({"payload": json.dumps(GITEA_PUSH)}).encode()
    headers = headers_for("gitea", "push", **{"Content-Type": "application/x-www-form-urlencoded"})
    assert parse_delivery("gitea", headers, body).pushes[0].ref == "refs/heads/develop"


# ---------------------------------------------------------------------------------------------
# GitLab


def test_gitlab_push() -> None:
    parsed = parse("gitlab", "Push Hook", GITLAB_PUSH)
    assert parsed == ParsedDelivery(
        source="gitlab",
        delivery_id=DELIVERY,
        event="push",
        pushes=(
            RefUpdate(
                "refs/heads/master",
                "95790bf891e76fee5e1747ab589903a6a1f80f22",
                "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
            ),
        ),
        actor="jsmith",
    )


def test_gitlab_tag_push_and_deletions() -> None:
    (tag,) = parse("gitlab", "Tag Push Hook", GITLAB_TAG_PUSH).pushes
    assert tag.ref == "refs/tags/v1.0.0" and tag.created
    tag_deletion = {**GITLAB_TAG_PUSH, "before": tag.after, "after": ZERO, "checkout_sha": None}
    assert parse("gitlab", "Tag Push Hook", tag_deletion).pushes[0].deleted
    branch_deletion = {**GITLAB_PUSH, "after": ZERO, "checkout_sha": None, "commits": []}
    (update,) = parse("gitlab", "Push Hook", branch_deletion).pushes
    assert update.deleted and update.ref == "refs/heads/master"


def test_gitlab_merge_request_opened() -> None:
    parsed = parse("gitlab", "Merge Request Hook", GITLAB_MERGE_REQUEST)
    assert parsed.event == "pull_request"
    assert parsed.actor == "root"
    pull = parsed.pull_request
    assert pull is not None
    assert pull.number == 1
    assert pull.action == "opened"
    assert pull.head_sha == "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"
    assert pull.head_ref == "refs/heads/ms-viewport"
    assert pull.base_ref == "refs/heads/master"
    assert pull.base_sha is None
    assert pull.from_fork is False
    assert pull.title == "MS-Viewport"
    assert pull.head_fetch_ref == "refs/merge-requests/1/head"


@pytest.mark.parametrize(
    ("changes", "action"),
    [
        ({"action": "open"}, "opened"),
        ({"action": "reopen"}, "reopened"),
        ({"action": "close"}, "closed"),
        ({"action": "merge"}, "closed"),
        ({"action": "update", "oldrev": "95790bf891e76fee5e1747ab589903a6a1f80f22"}, "synchronize"),
        ({"action": "update"}, "edited"),
        ({"action": "update", "oldrev": None}, "edited"),
        ({"action": "approved"}, "approved"),
        ({"action": "Unapproval"}, "unapproval"),
    ],
)
def test_gitlab_merge_request_actions(changes: dict[str, Any], action: str) -> None:
    parsed = parse("gitlab", "Merge Request Hook", with_attributes(**changes))
    assert parsed.pull_request is not None
    assert parsed.pull_request.action == action


def test_gitlab_merge_request_from_a_fork_and_its_base_sha() -> None:
    base = "95790bf891e76fee5e1747ab589903a6a1f80f22"
    payload = with_attributes(
        source_project_id=15,
        diff_refs={"base_sha": base, "head_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7"},
    )
    pull = parse("gitlab", "Merge Request Hook", payload).pull_request
    assert pull is not None
    assert pull.from_fork is True
    assert pull.base_sha == base
    pull = parse("gitlab", "Merge Request Hook", with_attributes(diff_refs=None)).pull_request
    assert pull is not None and pull.base_sha is None


def test_gitlab_other_hooks_are_ignored() -> None:
    for event in ("System Hook", "Note Hook", "Pipeline Hook", "push"):
        parsed = parse("gitlab", event, GITLAB_PUSH)
        assert parsed.event == "ignored", event
        assert event in parsed.ignored_reason


# ---------------------------------------------------------------------------------------------
# Our post-receive hook


def test_git_push_of_several_refs() -> None:
    parsed = parse("git", "push", GIT_PUSH)
    assert parsed.event == "push"
    assert parsed.actor == "alice"
    assert [u.ref for u in parsed.pushes] == ["refs/heads/main", "refs/tags/v2.0", "refs/heads/old"]
    main, tag, old = parsed.pushes
    assert not main.created and not main.deleted
    assert tag.created
    assert old.deleted


def test_git_ping_and_unknown_events() -> None:
    assert parse("git", "ping", {}).event == "ping"
    assert parse("git", "tag", GIT_PUSH).event == "ignored"


def test_git_push_keeps_branches_and_tags_only() -> None:
    notes = {"ref": "refs/notes/commits", "before": ZERO, "after": "a" * 40}
    parsed = parse("git", "push", {"pusher": "alice", "updates": [notes, GIT_PUSH["updates"][0]]})
    assert [u.ref for u in parsed.pushes] == ["refs/heads/main"]
    parsed = parse("git", "push", {"pusher": "alice", "updates": [notes]})
    assert parsed.event == "ignored"
    assert parsed.ignored_reason == "ref 'refs/notes/commits' is neither a branch nor a tag"
    review = {"ref": "refs/changes/01/1/1", "before": ZERO, "after": "b" * 40}
    parsed = parse("git", "push", {"pusher": "", "updates": [notes, review]})
    assert parsed.event == "ignored"
    assert parsed.ignored_reason == "none of the 2 updated refs is a branch or a tag"


def test_git_push_takes_1_to_1000_updates() -> None:
    update = {"before": ZERO, "after": "c" * 40}
    many = [{**update, "ref": f"refs/heads/b{i}"} for i in range(1000)]
    assert len(parse("git", "push", {"pusher": "alice", "updates": many}).pushes) == 1000
    extra = [*many, {**update, "ref": "refs/heads/one-more"}]
    message = rejection("git", "push", {"pusher": "alice", "updates": extra})
    assert message == "git push payload: 'updates' must list 1 to 1000 refs, got 1001"
    message = rejection("git", "push", {"pusher": "alice", "updates": []})
    assert message == "git push payload: 'updates' must list 1 to 1000 refs, got 0"


def test_git_push_errors_name_the_update() -> None:
    bad = copy.deepcopy(GIT_PUSH)
    bad["updates"][1]["after"] = "xyz"
    assert rejection("git", "push", bad) == (
        "git push payload: 'updates[1].after' must be a 40-character hex sha "
        "(64 for SHA-256), got 'xyz'"
    )
    bad["updates"][1] = "refs/heads/main"
    assert "'updates[1]' must be an object, got 'refs/heads/main'" in rejection("git", "push", bad)
    twice = {"pusher": "alice", "updates": [GIT_PUSH["updates"][0]] * 2}
    assert "'updates[1].ref' repeats 'refs/heads/main'" in rejection("git", "push", twice)
    assert "'pusher' is missing" in rejection("git", "push", {"updates": GIT_PUSH["updates"]})
    assert "'pusher' must be a string, got null" in rejection(
        "git", "push", {**GIT_PUSH, "pusher": None}
    )


# ---------------------------------------------------------------------------------------------
# Validation, for every source


def test_sha256_repositories_and_upper_case_shas() -> None:
    long_sha = "ab" * 32
    payload = {**GITHUB_PUSH, "before": "0" * 64, "after": long_sha.upper()}
    (update,) = parse("github", "push", payload).pushes
    assert update.after == long_sha and update.created


@pytest.mark.parametrize(
    ("source", "event", "payload", "message"),
    [
        (
            "github",
            "pull_request",
            with_pull(GITHUB_PULL_REQUEST, head={"ref": "changes", "repo": None}),
            "github pull_request payload: 'pull_request.head.sha' is missing",
        ),
        (
            "github",
            "pull_request",
            with_pull(
                GITHUB_PULL_REQUEST,
                head={**GITHUB_PULL_REQUEST["pull_request"]["head"], "sha": "ec26c3e"},
            ),
            "github pull_request payload: 'pull_request.head.sha' must be a 40-character hex sha "
            "(64 for SHA-256), got 'ec26c3e'",
        ),
        (
            "github",
            "pull_request",
            {**GITHUB_PULL_REQUEST, "number": True},
            "github pull_request payload: 'number' must be an integer, got true",
        ),
        (
            "github",
            "pull_request",
            {**GITHUB_PULL_REQUEST, "number": 2.0},
            "github pull_request payload: 'number' must be an integer, got 2.0",
        ),
        (
            "github",
            "pull_request",
            {**GITHUB_PULL_REQUEST, "number": 0},
            "github pull_request payload: 'number' must be a positive integer, got 0",
        ),
        (
            "github",
            "pull_request",
            {**GITHUB_PULL_REQUEST, "pull_request": None},
            "github pull_request payload: 'pull_request' must be an object, got null",
        ),
        (
            "github",
            "pull_request",
            {**GITHUB_PULL_REQUEST, "action": "opened; rm -rf /"},
            "github pull_request payload: 'action' must be a short lower-case word, "
            "got 'opened; rm -rf /'",
        ),
        (
            "github",
            "push",
            {**GITHUB_PUSH, "ref": "master"},
            "github push payload: 'ref' must be a full ref starting with 'refs/', got 'master'",
        ),
        (
            "github",
            "push",
            {**GITHUB_PUSH, "ref": ["refs/heads/master"]},
            "github push payload: 'ref' must be a string, got an array",
        ),
        (
            "github",
            "push",
            {**GITHUB_PUSH, "deleted": "false"},
            "github push payload: 'deleted' must be true or false, got 'false'",
        ),
        (
            "github",
            "push",
            {**GITHUB_PUSH, "before": ZERO, "after": ZERO},
            "github push payload: 'after' and 'before' are both zero",
        ),
        (
            "github",
            "push",
            {**GITHUB_PUSH, "pusher": "Codertocat"},
            "github push payload: 'pusher' must be an object, got 'Codertocat'",
        ),
        (
            "gitea",
            "pull_request",
            with_pull(GITEA_PULL_REQUEST, base={"ref": "master"}),
            "gitea pull_request payload: 'pull_request.base.repo' is missing",
        ),
        (
            "gitlab",
            "Merge Request Hook",
            with_attributes(source_project_id="14"),
            "gitlab Merge Request Hook payload: 'object_attributes.source_project_id' must be an "
            "integer, got '14'",
        ),
        (
            "gitlab",
            "Merge Request Hook",
            with_attributes(last_commit=None),
            "gitlab Merge Request Hook payload: 'object_attributes.last_commit' must be an "
            "object, got null",
        ),
        (
            "gitlab",
            "Merge Request Hook",
            with_attributes(source_branch="feature..x"),
            "gitlab Merge Request Hook payload: 'object_attributes.source_branch' is not a valid "
            "branch name, got 'feature..x'",
        ),
        (
            "gitlab",
            "Merge Request Hook",
            with_attributes(target_branch=""),
            "gitlab Merge Request Hook payload: 'object_attributes.target_branch' is not a valid "
            "branch name, got ''",
        ),
        (
            "gitlab",
            "Push Hook",
            {key: value for key, value in GITLAB_PUSH.items() if key != "before"},
            "gitlab Push Hook payload: 'before' is missing",
        ),
    ],
)
def test_malformed_fields_are_400s_naming_the_field(
    source: str, event: str, payload: Any, message: str
) -> None:
    assert rejection(source, event, payload) == message


@pytest.mark.parametrize(
    "ref",
    [
        "refs/heads/a..b",
        "refs/heads/a b",
        "refs/heads/a~1",
        "refs/heads/a^",
        "refs/heads/a:b",
        "refs/heads/a?",
        "refs/heads/a*",
        "refs/heads/a[",
        "refs/heads/a\\b",
        "refs/heads/a@{1}",
        "refs/heads//a",
        "refs/heads/a/",
        "refs/heads/a.",
        "refs/heads/.a",
        "refs/heads/a.lock",
        "refs/heads/a.lock/b",
        "refs/heads/a\x00b",
        "refs/heads/a\x7f",
        "refs/heads/a\ud800",
        "refs/heads/" + "a" * 1024,
        "refs/heads/",
    ],
)
def test_invalid_git_ref_names_are_refused(ref: str) -> None:
    message = rejection("github", "push", {**GITHUB_PUSH, "ref": ref})
    assert message.startswith("github push payload: 'ref' is not a valid git ref name, got ")


def test_unusual_but_valid_branch_names_are_kept() -> None:
    for ref in ("refs/heads/feature/ümlaut", "refs/heads/a-b_c.d", "refs/heads/v1.2@x"):
        assert parse("github", "push", {**GITHUB_PUSH, "ref": ref}).pushes[0].ref == ref


def test_pushes_to_other_refs_are_ignored_with_the_reason() -> None:
    for source, event, payload in (
        ("github", "push", GITHUB_PUSH),
        ("gitea", "push", GITEA_PUSH),
        ("gitlab", "Push Hook", GITLAB_PUSH),
    ):
        parsed = parse(source, event, {**payload, "ref": "refs/pull/1/merge"})
        assert parsed.event == "ignored"
        assert parsed.pushes == ()
        assert parsed.ignored_reason == "ref 'refs/pull/1/merge' is neither a branch nor a tag"


def test_titles_and_names_are_made_storable() -> None:
    # NUL cannot be stored in PostgreSQL text, nor a lone surrogate encoded as UTF-8.
    body = json.dumps(with_pull(GITHUB_PULL_REQUEST, title="fix\u0000 \ud83d it")).encode()
    parsed = parse_delivery("github", headers_for("github", "pull_request"), body)
    assert parsed.pull_request is not None
    assert parsed.pull_request.title == "fix ? it"
    parsed.pull_request.title.encode("utf-8")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"\xff\xfe{}", "body is not valid JSON: not UTF-8 at byte 0"),
        ('{"ref": "é"}'.encode("utf-16"), "body is not valid JSON: not UTF-8 at byte 0"),
        (b"", "body is not valid JSON: Expecting value: line 1 column 1 (char 0)"),
        (b'{"ref": ', "body is not valid JSON: Expecting value: line 1 column 9 (char 8)"),
        (b'{"a": NaN}', "body is not valid JSON: NaN is not JSON"),
        (b'{"a": -Infinity}', "body is not valid JSON: -Infinity is not JSON"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON: "),
        (b'{"a": ' + b"9" * 5000 + b"}", "body is not valid JSON: Exceeds the limit"),
        (b"[]", "body must be a JSON object, got an array"),
        (b'"push"', "body must be a JSON object, got 'push'"),
        (b"null", "body must be a JSON object, got null"),
        (b"17", "body must be a JSON object, got 17"),
    ],
)
def test_bodies_that_are_not_a_json_object(body: bytes, message: str) -> None:
    for source, event, _ in SAMPLES:
        if event == "ping":
            continue
        with pytest.raises(WebhookError) as caught:
            parse_delivery(source, headers_for(source, event), body)
        assert caught.value.status == 400
        assert caught.value.message.startswith(message)
        assert len(caught.value.message) <= 120


def test_messages_never_echo_much_of_the_input() -> None:
    long_ref = "refs/heads/" + "x" * 10_000 + " "
    message = rejection("github", "push", {**GITHUB_PUSH, "ref": long_ref})
    assert len(message) < 200
    parsed = parse("github", "y" * 10_000, {})
    assert len(parsed.ignored_reason) < 150


@pytest.mark.parametrize(("source", "event", "payload"), SAMPLES)
def test_every_sample_parses_the_same_from_meta_style_headers(
    source: str, event: str, payload: dict[str, Any]
) -> None:
    body = json.dumps(payload).encode()
    meta = {
        "HTTP_" + name.upper().replace("-", "_"): value
        for name, value in headers_for(source, event).items()
        if name != "Content-Type"
    }
    meta["CONTENT_TYPE"] = "application/json"
    assert parse_delivery(source, meta, body) == parse_delivery(
        source, headers_for(source, event), body
    )


# ---------------------------------------------------------------------------------------------
# Properties: whatever arrives, the answer is a ParsedDelivery or a WebhookError

KEYS = sorted(
    {
        "ref", "before", "after", "created", "deleted", "pusher", "sender", "name", "login",
        "username", "action", "number", "pull_request", "head", "base", "sha", "repo", "id",
        "full_name", "title", "object_attributes", "iid", "oldrev", "last_commit",
        "source_branch", "target_branch", "source_project_id", "target_project_id",
        "diff_refs", "base_sha", "user", "user_username", "updates", "payload",
    }
)  # fmt: skip
WORDS = [
    ZERO, "0" * 64, "ec26c3e57ca3a959ca5aad62de7213c562f8c821", "AB" * 32, "refs/heads/main",
    "refs/tags/v1", "refs/notes/x", "refs/heads/a..b", "main", "", "opened", "update",
    "synchronized", "open", "merge", "refs/pull/1/head", "\x00", "\ud800", "é" * 90,
]  # fmt: skip
EVENT_NAMES = sorted(
    {event for _, event, _ in SAMPLES} | {"ping", "issues", "System Hook", "pull_request"}
)

scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
    | st.sampled_from(WORDS)
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), children, max_size=6)
    ),
    max_leaves=30,
)
events = st.sampled_from(EVENT_NAMES) | st.text(max_size=20)
header_text = st.text(max_size=40) | st.sampled_from(["", " ", DELIVERY, "x" * 300, "\udcff"])

PROPERTY_SETTINGS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_outcome(source: str, headers: dict[str, str], body: bytes) -> ParsedDelivery | None:
    try:
        parsed = parse_delivery(source, headers, body)
    except WebhookError as error:
        assert error.status == 400
        assert error.message and len(error.message) <= 250, error.message
        return None
    assert parsed.source == source
    assert parsed.event in EVENTS
    if parsed.event == "push":
        assert parsed.pushes and parsed.pull_request is None
        for update in parsed.pushes:
            assert update.ref.startswith(("refs/heads/", "refs/tags/"))
            for sha in (update.before, update.after):
                assert len(sha) in (40, 64) and sha == sha.lower()
            assert not (update.created and update.deleted)
    elif parsed.event == "pull_request":
        pull = parsed.pull_request
        assert pull is not None and not parsed.pushes
        assert pull.number >= 1 and pull.head_ref.startswith("refs/")
        assert pull.base_ref.startswith("refs/heads/")
        pull.title.encode("utf-8")
    elif parsed.event == "ignored":
        assert parsed.ignored_reason and len(parsed.ignored_reason) <= 150
    parsed.actor.encode("utf-8")
    return parsed


@PROPERTY_SETTINGS
@given(source=st.sampled_from(SOURCES), event=events, body=st.binary(max_size=300))
def test_arbitrary_bytes_never_raise_anything_but_webhook_error(
    source: str, event: str, body: bytes
) -> None:
    check_outcome(source, headers_for(source, event), body)


@PROPERTY_SETTINGS
@given(
    source=st.sampled_from(SOURCES),
    event=events,
    value=json_values,
    form=st.booleans(),
)
def test_arbitrary_json_never_raises_anything_but_webhook_error(
    source: str, event: str, value: Any, form: bool
) -> None:
    body = json.dumps(value).encode()
    headers = headers_for(source, event)
    if form:
        body = urllib.parse.urlencode({"payload": body}).encode()
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    check_outcome(source, headers, body)


@PROPERTY_SETTINGS
@given(
    source=st.sampled_from(SOURCES),
    event=header_text,
    delivery=header_text,
    content_type=header_text | st.just("application/x-www-form-urlencoded"),
    body=st.binary(max_size=100),
)
def test_arbitrary_headers_never_raise_anything_but_webhook_error(
    source: str, event: str, delivery: str, content_type: str, body: bytes
) -> None:
    headers = {
        EVENT_HEADER[source]: event,
        DELIVERY_HEADER[source]: delivery,
        "Content-Type": content_type,
    }
    check_outcome(source, headers, body)


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a key or list item inside `value`."""
    found = []
    children = value.items() if isinstance(value, dict) else enumerate(value)
    for key, child in children:
        found.append((*prefix, key))
        if isinstance(child, dict | list) and child:
            found += _paths(child, (*prefix, key))
    return found


@st.composite
def mutated_samples(draw: st.DrawFn) -> tuple[str, str, Any]:
    source, event, payload = draw(st.sampled_from(SAMPLES))
    mutated = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(mutated)
        if not paths:
            break
        *parents, last = draw(st.sampled_from(paths))
        container = mutated
        for key in parents:
            container = container[key]
        if draw(st.booleans()):
            del container[last]
        else:
            container[last] = draw(scalars | json_values)
    return source, event, mutated


@settings(PROPERTY_SETTINGS, max_examples=600)
@given(sample=mutated_samples())
def test_mutated_valid_payloads_never_raise_anything_but_webhook_error(
    sample: tuple[str, str, Any],
) -> None:
    source, event, payload = sample
    check_outcome(source, headers_for(source, event), json.dumps(payload).encode())


@PROPERTY_SETTINGS
@given(
    source=st.sampled_from([*SOURCES, "unknown"]),
    value=st.text(max_size=80) | st.sampled_from(["sha256=" + "a" * 64, "a" * 64]),
    body=st.binary(max_size=100),
    secrets=st.lists(st.text(max_size=20), max_size=3),
)
def test_signature_checks_never_raise(
    source: str, value: str, body: bytes, secrets: list[str]
) -> None:
    headers = {
        "X-Hub-Signature-256": value,
        "X-Gitea-Signature": value,
        "X-Forgejo-Signature": value,
        "X-Cicd-Signature-256": value,
        "X-Gitlab-Token": value,
    }
    assert signature_valid(source, headers, body, secrets) in (True, False)


@settings(max_examples=100, deadline=None)
@given(source=st.sampled_from(["github", "gitea", "git"]), body=st.binary(max_size=200))
def test_a_correct_signature_always_verifies(source: str, body: bytes) -> None:
    digest = sign(SECRET, body)
    name, prefix = {
        "github": ("X-Hub-Signature-256", "sha256="),
        "gitea": ("X-Gitea-Signature", ""),
        "git": ("X-Cicd-Signature-256", "sha256="),
    }[source]
    assert signature_valid(source, {name: prefix + digest}, body, ["other", SECRET])
    assert not signature_valid(source, {name: prefix + digest}, body + b"x", [SECRET])


def test_the_samples_cover_every_source() -> None:
    assert {source for source, _, _ in SAMPLES} == set(SOURCES)
    for source, event, payload in SAMPLES:
        assert check_outcome(source, headers_for(source, event), json.dumps(payload).encode())
