"""Webhook deliveries from GitHub, GitLab, Gitea/Forgejo and our own post-receive hook ("git"):
verify the signature, parse the payload, and describe it in one shape, `ParsedDelivery`.

Pure: headers and body in, dataclasses or `WebhookError` out. Nothing here reads the database,
the network or git; the caller decides which secrets apply and what a delivery starts.

A verified signature only says who configured the hook, not that the payload is sane (any
repository admin can point a hook at us, and anyone can title a pull request), so every field
used is checked and `parse_delivery` answers `WebhookError` for anything else, never another
exception. Pull request events are normalised to GitHub's vocabulary (action names, full refs).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

SOURCES = ("github", "gitlab", "gitea", "git")  # "git": our own post-receive hook
EVENTS = ("push", "pull_request", "ping", "ignored")  # ParsedDelivery.event

MAX_DELIVERY_ID_LENGTH = 200
MAX_GIT_UPDATES = 1000  # one push of ours; a mirror push of more refs is split by the hook
MAX_REF_LENGTH = 1024
MAX_NUMBER = 2**31 - 1  # fits any integer column the number ends up in

_SHOWN = 80  # never echo more of the sender's input than this in a message
_SHA = re.compile(r"[0-9a-fA-F]{40}|[0-9a-fA-F]{64}")  # SHA-1, or SHA-256 repositories
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")
_DELIVERY_ID = re.compile(r"[\x20-\x7e]+")
_ACTION = re.compile(r"[a-z0-9_.-]{1,64}")
# git check-ref-format: no control characters, space, ~ ^ : ? * [ \, "..", "@{", empty
# components or components starting with "."; lone surrogates cannot be stored or passed to git.
_REF_FORBIDDEN = re.compile(r"[\x00-\x20\x7f~^:?*\[\\\ud800-\udfff]|\.\.|@\{|//|/\.|\.lock/")
_FORM = "application/x-www-form-urlencoded"

# GitLab and Gitea name some pull request actions differently from GitHub.
_GITLAB_ACTIONS = {"open": "opened", "reopen": "reopened", "close": "closed", "merge": "closed"}
_GITEA_ACTIONS = {"synchronized": "synchronize"}


class WebhookError(Exception):
    """A delivery we refuse: the HTTP status to answer and a message for the sender's log."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class RefUpdate:
    """One ref moved by a push. An all-zero sha is the missing side of a creation or deletion."""

    ref: str  # full ref: refs/heads/main, refs/tags/v1
    before: str  # lower-case hex sha, all zeros when the ref was created
    after: str  # lower-case hex sha, all zeros when the ref was deleted

    @property
    def deleted(self) -> bool:
        return _is_zero(self.after)

    @property
    def created(self) -> bool:
        return _is_zero(self.before)


@dataclass(frozen=True, slots=True)
class PullRequestEvent:
    """A pull (merge) request event, in GitHub's terms whatever the source."""

    number: int
    action: str  # opened, synchronize, reopened, closed, edited, ...; others lower-case as sent
    head_sha: str
    head_ref: str  # full ref of the source branch: refs/heads/feature
    base_ref: str  # full ref of the target branch: refs/heads/main
    base_sha: str | None  # None when the source does not say
    from_fork: bool  # the head lives outside the base repository (or we cannot tell)
    title: str
    head_fetch_ref: str  # where the base repository keeps the head: refs/pull/N/head, ...


@dataclass(frozen=True, slots=True)
class ParsedDelivery:
    """What one webhook delivery says, whichever source sent it."""

    source: str
    delivery_id: str
    event: str  # one of EVENTS
    pushes: tuple[RefUpdate, ...] = ()
    pull_request: PullRequestEvent | None = None
    actor: str = ""
    ignored_reason: str = ""  # for event "ignored": why nothing starts


# ---------------------------------------------------------------------------------------------
# Headers


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` without surrounding whitespace, or None when it is absent.

    `headers` may be a plain mapping of HTTP header names (any case) or Django's `request.META`,
    where `X-GitHub-Event` is `HTTP_X_GITHUB_EVENT` and `Content-Type` is `CONTENT_TYPE`. Other
    META keys (the server's environment variables) never match.
    """
    plain = name.lower()
    meta = name.upper().replace("-", "_")
    meta_keys = {f"HTTP_{meta}"}
    if meta in ("CONTENT_TYPE", "CONTENT_LENGTH"):  # the two headers WSGI keeps unprefixed
        meta_keys.add(meta)
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            continue
        if key.lower() == plain or key.upper() in meta_keys:
            return value.strip()
    return None


@dataclass(frozen=True, slots=True)
class _Source:
    event_headers: tuple[str, ...]
    delivery_headers: tuple[str, ...]  # the first one present wins
    signature_headers: tuple[str, ...]  # any one that verifies will do
    signature_prefix: str
    parse: Callable[[str, str, Mapping[str, str], bytes], ParsedDelivery]


def delivery_id_of(source: str, headers: Mapping[str, str]) -> str:
    """The sender's id of this delivery (a retry repeats it), from the source's header.

    Raises `WebhookError` (400) naming the header when it is missing, empty, longer than
    `MAX_DELIVERY_ID_LENGTH` or not printable ASCII; 404 for an unknown source.
    """
    names = _source(source).delivery_headers
    for name in names:
        value = header(headers, name)
        if value:
            break
    else:
        raise WebhookError(400, f"missing header {_either(names)}")
    if len(value) > MAX_DELIVERY_ID_LENGTH:
        raise WebhookError(400, f"header {name} is longer than {MAX_DELIVERY_ID_LENGTH} characters")
    if not _DELIVERY_ID.fullmatch(value):
        raise WebhookError(400, f"header {name} must be printable ASCII, got {_show(value)}")
    return value


# ---------------------------------------------------------------------------------------------
# Signatures


def signature_valid(
    source: str, headers: Mapping[str, str], body: bytes, secrets: Sequence[str]
) -> bool:
    """Whether the delivery proves knowledge of one of `secrets` (several during a rotation).

    GitHub, Gitea and our hook sign the raw body with HMAC-SHA256; GitLab sends the secret
    itself as `X-Gitlab-Token`. Empty secrets are skipped: an empty HMAC key is no secret.
    Whatever the sender put in the headers, the answer is True or False, never an exception.
    """
    if isinstance(secrets, str | bytes):
        # A bare string is a sequence of one-character secrets: refuse loudly, it is a bug.
        raise TypeError("secrets must be a sequence of strings, not a single string")
    keys = [_utf8(secret) for secret in secrets if secret]
    if not keys or source not in _SOURCES:
        return False
    if source == "gitlab":
        token = header(headers, "X-Gitlab-Token")
        if not token:
            return False
        given = _utf8(token)
        return any(hmac.compare_digest(given, key) for key in keys)
    spec = _SOURCES[source]
    claimed = []
    for name in spec.signature_headers:
        value = header(headers, name)
        if value is not None and value.startswith(spec.signature_prefix):
            digest = value.removeprefix(spec.signature_prefix)
            if _HEX_DIGEST.fullmatch(digest):
                claimed.append(digest.lower().encode("ascii"))
    if not claimed:
        return False
    expected = [hmac.new(key, body, hashlib.sha256).hexdigest().encode("ascii") for key in keys]
    return any(hmac.compare_digest(c, e) for c in claimed for e in expected)


# ---------------------------------------------------------------------------------------------
# Parsing


def parse_delivery(source: str, headers: Mapping[str, str], body: bytes) -> ParsedDelivery:
    """Parse a delivery (verify its signature first, with `signature_valid`).

    Raises `WebhookError`: 404 for an unknown source, 400 for a missing header or anything
    malformed in the body, with a message naming the header or field. Never raises anything
    else, whatever the headers and body. Pings and events that start nothing are answered
    without reading the body.
    """
    spec = _source(source)
    event = None
    for name in spec.event_headers:
        event = header(headers, name)
        if event:
            break
    if not event:
        raise WebhookError(400, f"missing header {_either(spec.event_headers)}")
    delivery_id = delivery_id_of(source, headers)
    return spec.parse(delivery_id, event, headers, body)


def _parse_github(
    delivery_id: str, event: str, headers: Mapping[str, str], body: bytes
) -> ParsedDelivery:
    if event == "ping":
        return ParsedDelivery("github", delivery_id, "ping")
    if event not in ("push", "pull_request"):
        return _ignored("github", delivery_id, event)
    payload = _Fields(_load_body(body, headers), f"github {event} payload")
    if event == "push":
        actor = _actor(payload, ("pusher", "name"), ("sender", "login"))
        return _github_like_push("github", delivery_id, payload, actor)
    return _github_like_pull_request("github", delivery_id, payload)


def _parse_gitea(
    delivery_id: str, event: str, headers: Mapping[str, str], body: bytes
) -> ParsedDelivery:
    # Gitea has no ping: its "test delivery" button sends a push.
    if event not in ("push", "pull_request"):
        return _ignored("gitea", delivery_id, event)
    payload = _Fields(_load_body(body, headers), f"gitea {event} payload")
    if event == "push":
        actor = _actor(
            payload,
            ("pusher", "login"),
            ("pusher", "username"),
            ("sender", "login"),
            ("sender", "username"),
        )
        return _github_like_push("gitea", delivery_id, payload, actor)
    return _github_like_pull_request("gitea", delivery_id, payload)


def _parse_gitlab(
    delivery_id: str, event: str, headers: Mapping[str, str], body: bytes
) -> ParsedDelivery:
    if event in ("Push Hook", "Tag Push Hook"):
        payload = _Fields(_load_json(body), f"gitlab {event} payload")
        update = _ref_update(payload)
        actor = _actor(payload, ("user_username",))
        return _push("gitlab", delivery_id, (update,), actor)
    if event == "Merge Request Hook":
        payload = _Fields(_load_json(body), f"gitlab {event} payload")
        return _gitlab_merge_request(delivery_id, payload)
    return _ignored("gitlab", delivery_id, event)


def _parse_git(
    delivery_id: str, event: str, headers: Mapping[str, str], body: bytes
) -> ParsedDelivery:
    if event == "ping":
        return ParsedDelivery("git", delivery_id, "ping")
    if event != "push":
        return _ignored("git", delivery_id, event)
    payload = _Fields(_load_json(body), "git push payload")
    pusher = _clean(payload.text("pusher"))
    items = payload.array("updates")
    if not 1 <= len(items) <= MAX_GIT_UPDATES:
        raise payload.error("updates", f"must list 1 to {MAX_GIT_UPDATES} refs, got {len(items)}")
    updates = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        where = f"updates[{index}]"
        if not isinstance(item, dict):
            raise payload.error(where, f"must be an object, got {_show(item)}")
        update = _ref_update(_Fields(item, payload.what, where))
        if update.ref in seen:
            raise payload.error(f"{where}.ref", f"repeats {_show(update.ref)}")
        seen.add(update.ref)
        updates.append(update)
    return _push("git", delivery_id, tuple(updates), pusher)


_SOURCES: dict[str, _Source] = {
    "github": _Source(
        event_headers=("X-GitHub-Event",),
        delivery_headers=("X-GitHub-Delivery",),
        signature_headers=("X-Hub-Signature-256",),
        signature_prefix="sha256=",
        parse=_parse_github,
    ),
    "gitlab": _Source(
        event_headers=("X-Gitlab-Event",),
        # Idempotency-Key (GitLab 17.4+) stays the same on retries; the event UUID is older.
        delivery_headers=("Idempotency-Key", "X-Gitlab-Event-UUID"),
        signature_headers=(),  # a token, see signature_valid
        signature_prefix="",
        parse=_parse_gitlab,
    ),
    "gitea": _Source(
        event_headers=("X-Gitea-Event", "X-Forgejo-Event"),
        delivery_headers=("X-Gitea-Delivery", "X-Forgejo-Delivery"),
        signature_headers=("X-Gitea-Signature", "X-Forgejo-Signature"),
        signature_prefix="",
        parse=_parse_gitea,
    ),
    "git": _Source(
        event_headers=("X-Cicd-Event",),
        delivery_headers=("X-Cicd-Delivery",),
        signature_headers=("X-Cicd-Signature-256",),
        signature_prefix="sha256=",
        parse=_parse_git,
    ),
}


def _source(source: str) -> _Source:
    spec = _SOURCES.get(source) if isinstance(source, str) else None
    if spec is None:
        raise WebhookError(404, f"unknown webhook source {_show(source)}")
    return spec


def _ignored(source: str, delivery_id: str, event: str) -> ParsedDelivery:
    return ParsedDelivery(
        source,
        delivery_id,
        "ignored",
        ignored_reason=f"event {_show(event)} does not start workflows",
    )


def _push(
    source: str, delivery_id: str, updates: tuple[RefUpdate, ...], actor: str
) -> ParsedDelivery:
    """A push delivery of the branch and tag updates; notes, review refs... start nothing."""
    kept = tuple(u for u in updates if u.ref.startswith(("refs/heads/", "refs/tags/")))
    if kept:
        return ParsedDelivery(source, delivery_id, "push", pushes=kept, actor=actor)
    if len(updates) == 1:
        reason = f"ref {_show(updates[0].ref)} is neither a branch nor a tag"
    else:
        reason = f"none of the {len(updates)} updated refs is a branch or a tag"
    return ParsedDelivery(source, delivery_id, "ignored", actor=actor, ignored_reason=reason)


def _ref_update(fields: _Fields) -> RefUpdate:
    update = RefUpdate(fields.full_ref("ref"), fields.sha("before"), fields.sha("after"))
    if update.created and update.deleted:
        raise fields.error("after", f"and {fields.name('before')!r} are both zero")
    return update


def _github_like_push(
    source: str, delivery_id: str, payload: _Fields, actor: str
) -> ParsedDelivery:
    # GitHub's own created/deleted flags say what the shas say; only their type is checked.
    payload.boolean_or_none("created")
    payload.boolean_or_none("deleted")
    return _push(source, delivery_id, (_ref_update(payload),), actor)


def _github_like_pull_request(source: str, delivery_id: str, payload: _Fields) -> ParsedDelivery:
    pull = payload.object("pull_request")
    action = payload.action("action")
    if source == "gitea":
        action = _GITEA_ACTIONS.get(action, action)
    number = payload.number("number") if payload.given("number") else pull.number("number")
    head = pull.object("head")
    base = pull.object("base")
    # Gitea reports refs/pull/N/head as the head ref when the head branch is gone, and for
    # AGit pull requests (pushed by anyone with read access to refs/for/<branch>).
    head_ref = head.branch("ref", full_ref_allowed=source == "gitea")
    from_fork = not head_ref.startswith("refs/heads/") or _repos_differ(head, base)
    title = pull.text_or_none("title")
    event = PullRequestEvent(
        number=number,
        action=action,
        head_sha=head.sha("sha"),
        head_ref=head_ref,
        base_ref=base.branch("ref"),
        base_sha=base.sha_or_none("sha"),
        from_fork=from_fork,
        title=_clean(title or ""),
        head_fetch_ref=f"refs/pull/{number}/head",
    )
    actor = _actor(payload, ("sender", "login"), ("sender", "username"))
    return ParsedDelivery(source, delivery_id, "pull_request", pull_request=event, actor=actor)


def _repos_differ(head: _Fields, base: _Fields) -> bool:
    """Whether head and base are different repositories; a deleted head repository is one."""
    head_repo = head.object_or_none("repo")
    if head_repo is None:
        return True
    base_repo = base.object("repo")
    compared = False
    # Any identifier that differs makes it a fork: wrongly calling a fork ours would hand
    # secrets to the fork's author, the other mistake only withholds them.
    for key, read in (("id", _Fields.integer_or_none), ("full_name", _Fields.text_or_none)):
        mine, theirs = read(head_repo, key), read(base_repo, key)
        if mine is None or theirs is None:
            continue
        if mine != theirs:
            return True
        compared = True
    if not compared:
        raise head_repo.error("id", "is missing (nor is 'full_name' given on both sides)")
    return False


def _gitlab_merge_request(delivery_id: str, payload: _Fields) -> ParsedDelivery:
    attributes = payload.object("object_attributes")
    number = attributes.number("iid")
    action = attributes.action("action")
    if action == "update":
        # GitLab sends oldrev only when the update brought new commits.
        pushed = attributes.sha_or_none("oldrev") is not None
        action = "synchronize" if pushed else "edited"
    action = _GITLAB_ACTIONS.get(action, action)
    diff_refs = attributes.object_or_none("diff_refs")
    source_project = attributes.integer("source_project_id")
    target_project = attributes.integer("target_project_id")
    title = attributes.text_or_none("title")
    event = PullRequestEvent(
        number=number,
        action=action,
        head_sha=attributes.object("last_commit").sha("id"),
        head_ref=attributes.branch("source_branch"),
        base_ref=attributes.branch("target_branch"),
        base_sha=diff_refs.sha_or_none("base_sha") if diff_refs is not None else None,
        from_fork=source_project != target_project,
        title=_clean(title or ""),
        head_fetch_ref=f"refs/merge-requests/{number}/head",
    )
    actor = _actor(payload, ("user", "username"))
    return ParsedDelivery("gitlab", delivery_id, "pull_request", pull_request=event, actor=actor)


def _actor(payload: _Fields, *paths: tuple[str, ...]) -> str:
    """The first non-empty name found at one of `paths`, or "" when none is given."""
    for path in paths:
        fields: _Fields | None = payload
        for key in path[:-1]:
            fields = fields.object_or_none(key)
            if fields is None:
                break
        else:
            name = fields.text_or_none(path[-1])
            if name:
                return _clean(name)
    return ""


# ---------------------------------------------------------------------------------------------
# Reading bodies and fields


def _load_body(body: bytes, headers: Mapping[str, str]) -> dict[str, Any]:
    """GitHub and Gitea send either JSON or a form whose `payload` field holds the JSON."""
    content_type = header(headers, "Content-Type") or ""
    if content_type.split(";", 1)[0].strip().lower() != _FORM:
        return _load_json(body)
    text = _utf8_text(body)
    try:
        fields = urllib.parse.parse_qs(
            text, keep_blank_values=True, errors="strict", max_num_fields=100
        )
    except ValueError as error:  # too many fields, or a %-escape that is not UTF-8
        raise WebhookError(400, f"form body is malformed: {_clip(str(error))}") from None
    payloads = fields.get("payload", [])
    if len(payloads) != 1:
        raise WebhookError(400, "form body must have exactly one 'payload' field")
    return _json_object(payloads[0])


def _load_json(body: bytes) -> dict[str, Any]:
    return _json_object(_utf8_text(body))


def _utf8_text(body: bytes) -> str:
    try:
        # Strict UTF-8: json.loads would also guess UTF-16 and UTF-32 from raw bytes.
        return bytes(body).decode("utf-8")
    except UnicodeDecodeError as error:
        raise WebhookError(
            400, f"body is not valid JSON: not UTF-8 at byte {error.start}"
        ) from None


def _json_object(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        raise WebhookError(400, f"body is not valid JSON: {_clip(str(error))}") from None
    if not isinstance(data, dict):
        raise WebhookError(400, f"body must be a JSON object, got {_show(data)}")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _Fields:
    """Typed reads from one JSON object of a payload; any failure is a 400 naming the field.

    The `*_or_none` reads take an absent field and a null one alike as "not given".
    """

    __slots__ = ("_data", "_path", "what")

    def __init__(self, data: dict[str, Any], what: str, path: str = "") -> None:
        self._data = data
        self.what = what  # e.g. "github push payload", the start of every message
        self._path = path

    def name(self, key: str) -> str:
        return f"{self._path}.{key}" if self._path else key

    def error(self, key: str, problem: str) -> WebhookError:
        return WebhookError(400, f"{self.what}: {self.name(key)!r} {problem}")

    def given(self, key: str) -> bool:
        return self._data.get(key) is not None

    def _required(self, key: str) -> Any:
        if key not in self._data:
            raise self.error(key, "is missing")
        return self._data[key]

    def object(self, key: str) -> _Fields:
        value = self._required(key)
        if not isinstance(value, dict):
            raise self.error(key, f"must be an object, got {_show(value)}")
        return _Fields(value, self.what, self.name(key))

    def object_or_none(self, key: str) -> _Fields | None:
        return self.object(key) if self.given(key) else None

    def array(self, key: str) -> list[Any]:
        value = self._required(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be an array, got {_show(value)}")
        return value

    def text(self, key: str) -> str:
        value = self._required(key)
        if not isinstance(value, str):
            raise self.error(key, f"must be a string, got {_show(value)}")
        return value

    def text_or_none(self, key: str) -> str | None:
        return self.text(key) if self.given(key) else None

    def boolean_or_none(self, key: str) -> bool | None:
        value = self._data.get(key)
        if value is not None and not isinstance(value, bool):
            raise self.error(key, f"must be true or false, got {_show(value)}")
        return value

    def integer(self, key: str) -> int:
        value = self._required(key)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"must be an integer, got {_show(value)}")
        return value

    def integer_or_none(self, key: str) -> int | None:
        return self.integer(key) if self.given(key) else None

    def number(self, key: str) -> int:
        """A pull request number: a positive integer."""
        value = self.integer(key)
        if not 1 <= value <= MAX_NUMBER:
            raise self.error(key, f"must be a positive integer, got {_show(value)}")
        return value

    def action(self, key: str) -> str:
        value = self.text(key).strip().lower()
        if not _ACTION.fullmatch(value):
            raise self.error(key, f"must be a short lower-case word, got {_show(value)}")
        return value

    def sha(self, key: str) -> str:
        """A commit sha, lower-cased."""
        value = self._required(key)
        if not isinstance(value, str) or not _SHA.fullmatch(value):
            raise self.error(
                key, f"must be a 40-character hex sha (64 for SHA-256), got {_show(value)}"
            )
        return value.lower()

    def sha_or_none(self, key: str) -> str | None:
        # Gitea sends "" for a sha it could not resolve (a deleted base branch).
        return self.sha(key) if self._data.get(key) not in (None, "") else None

    def full_ref(self, key: str) -> str:
        ref = self.text(key)
        if not ref.startswith("refs/"):
            raise self.error(key, f"must be a full ref starting with 'refs/', got {_show(ref)}")
        if not _valid_ref(ref):
            raise self.error(key, f"is not a valid git ref name, got {_show(ref)}")
        return ref

    def branch(self, key: str, *, full_ref_allowed: bool = False) -> str:
        """A branch name as the full ref refs/heads/<name>."""
        name = self.text(key)
        ref = name if full_ref_allowed and name.startswith("refs/") else f"refs/heads/{name}"
        if not _valid_ref(ref):
            raise self.error(key, f"is not a valid branch name, got {_show(name)}")
        return ref


def _valid_ref(ref: str) -> bool:
    return (
        len(ref) <= MAX_REF_LENGTH
        and ref.startswith("refs/")
        and not ref.endswith(("/", ".", ".lock"))
        and _REF_FORBIDDEN.search(ref) is None
    )


# ---------------------------------------------------------------------------------------------
# Small helpers


def _is_zero(sha: str) -> bool:
    return not sha.strip("0")


def _utf8(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    # surrogatepass: a header decoded oddly must compare unequal, not raise.
    return text.encode("utf-8", "surrogatepass")


def _clean(text: str) -> str:
    """Free text (titles, names) made storable: no NUL, no lone surrogates."""
    return text.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _either(names: tuple[str, ...]) -> str:
    first, *others = names
    return first + "".join(f" (or {other})" for other in others)


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN else text[: _SHOWN - 3] + "..."


def _show(value: Any) -> str:
    """A short description of a value the sender gave, safe to put in a message."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _clip(repr(value[:_SHOWN]))
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "a very large integer"
    if isinstance(value, float):
        return _clip(repr(value))
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
