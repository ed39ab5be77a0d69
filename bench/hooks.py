"""Signed GitHub push deliveries, as GitHub sends them, over kept-alive HTTP connections.

The body has the shape and about the size of a real push delivery (the repository object with its
URLs, pusher, sender, head commit: some 6 KB), so that parsing and storing it costs what a real
one does. A tag push is used throughout: each new tag name starts its own run at the same commit,
and the workflows in bench/workloads.py pick theirs by the tag's prefix.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import time
from urllib.parse import urlsplit

SECRET = "bench-webhook-secret"
ORGANISATION = "bench"
ZERO_SHA = "0" * 40


def push_body(repository: str, tag: str, sha: str) -> bytes:
    full_name = f"{ORGANISATION}/{repository}"
    html = f"https://github.example.org/{full_name}"
    api = f"https://api.github.example.org/repos/{full_name}"
    user = {
        "name": "bench",
        "email": "bench@example.org",
        "login": "bench",
        "id": 1,
        "node_id": "MDQ6VXNlcjE=",
        "avatar_url": "https://avatars.example.org/u/1?v=4",
        "url": "https://api.github.example.org/users/bench",
        "html_url": "https://github.example.org/bench",
        "type": "User",
        "site_admin": False,
    }
    repository_object = {
        "id": 1296269,
        "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5",
        "name": repository,
        "full_name": full_name,
        "private": False,
        "owner": user,
        "html_url": html,
        "description": "a repository the benchmarks push to",
        "fork": False,
        "url": html,
        **{
            f"{name}_url": f"{api}/{name}{{/id}}"
            for name in (
                "forks", "keys", "collaborators", "teams", "hooks", "issue_events", "events",
                "assignees", "branches", "tags", "blobs", "git_tags", "git_refs", "trees",
                "statuses", "languages", "stargazers", "contributors", "subscribers",
                "subscription", "commits", "git_commits", "comments", "issue_comment", "contents",
                "compare", "merges", "archive", "downloads", "issues", "pulls", "milestones",
                "notifications", "labels", "releases", "deployments",
            )
        },
        "created_at": 1700000000,
        "updated_at": "2026-01-01T00:00:00Z",
        "pushed_at": 1700000000,
        "git_url": f"git://github.example.org/{full_name}.git",
        "ssh_url": f"git@github.example.org:{full_name}.git",
        "clone_url": f"{html}.git",
        "homepage": None,
        "size": 1234,
        "stargazers_count": 0,
        "watchers_count": 0,
        "language": "Python",
        "default_branch": "main",
        "master_branch": "main",
    }  # fmt: skip
    commit = {
        "id": sha,
        "tree_id": "f" * 40,
        "distinct": True,
        "message": "Make the thing faster\n\nA longer explanation of why, as commits have.",
        "timestamp": "2026-01-01T00:00:00Z",
        "url": f"{html}/commit/{sha}",
        "author": {"name": "bench", "email": "bench@example.org", "username": "bench"},
        "committer": {"name": "bench", "email": "bench@example.org", "username": "bench"},
        "added": [],
        "removed": [],
        "modified": ["README.md"],
    }
    payload = {
        "ref": f"refs/tags/{tag}",
        "before": ZERO_SHA,
        "after": sha,
        "created": True,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "compare": f"{html}/compare/{tag}",
        "commits": [commit],
        "head_commit": commit,
        "repository": repository_object,
        "pusher": {"name": "bench", "email": "bench@example.org"},
        "sender": user,
    }
    return json.dumps(payload).encode()


def signed_headers(body: bytes, delivery_id: str, secret: str = SECRET) -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/bench",
        "X-GitHub-Event": "push",
        "X-GitHub-Delivery": delivery_id,
        "X-Hub-Signature-256": signature,
    }


class Poster:
    """One kept-alive connection to the server; reconnects when the server closed it."""

    def __init__(self, base_url: str, *, timeout: float = 120) -> None:
        parts = urlsplit(base_url)
        self.host, self.port, self.timeout = parts.hostname, parts.port, timeout
        self.connection: http.client.HTTPConnection | None = None

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, float]:
        """POSTs; returns the status and the seconds from sending to the whole answer read."""
        for attempt in (1, 2):
            if self.connection is None:
                self.connection = http.client.HTTPConnection(
                    self.host, self.port, timeout=self.timeout
                )
            started = time.perf_counter()
            try:
                self.connection.request("POST", path, body, headers)
                response = self.connection.getresponse()
                response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A kept-alive connection the server closed meanwhile: once more on a new one.
                self.close()
                if attempt == 2:
                    raise
                continue
            elapsed = time.perf_counter() - started
            if response.getheader("Connection", "").lower() == "close":
                self.close()
            return response.status, elapsed
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None


def hook_path(repository: str) -> str:
    return f"/hooks/github/{ORGANISATION}/{repository}"
