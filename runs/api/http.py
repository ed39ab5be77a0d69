"""The API's HTTP plumbing: JSON errors, allowed methods, query parameters and request bodies.

Every refusal is `{"error": message, "problems": [...], "fields": {name: message}}` with a 4xx
status. Input is checked before it reaches the database, so a malformed parameter or body is a
400 that names it, never a 500 (a NUL character or an id beyond 64 bits would be one).
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from runs.api.auth import AuthError, identify

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024
MAX_ID = 2**63 - 1  # the largest value of a bigint column: anything above is no row at all
MAX_TEXT = 500


class ApiError(Exception):
    """A refusal to answer with `status`, explained for the caller."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        problems: Iterable[str] = (),
        fields: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.problems = list(problems)
        self.fields = dict(fields or {})
        self.headers = dict(headers or {})

    def response(self) -> JsonResponse:
        response = error_response(self.status, self.message, self.problems, self.fields)
        for name, value in self.headers.items():
            response[name] = value
        return response


def error_response(
    status: int,
    message: str,
    problems: Iterable[str] = (),
    fields: Mapping[str, str] | None = None,
) -> JsonResponse:
    body = {"error": message, "problems": list(problems), "fields": dict(fields or {})}
    return JsonResponse(body, status=status)


def not_found(what: str) -> ApiError:
    return ApiError(404, f"no {what}")


View = Callable[..., HttpResponse]


def endpoint(*methods: str, authenticate: bool = True) -> Callable[[View], View]:
    """An API view answering `methods` (GET also answers HEAD). The view receives the `Caller`
    after the request was authenticated for what its method needs (see `runs.api.auth`), and
    may raise ApiError; anything else it raises is logged and answered as a JSON 500 with an id
    to find the log entry."""
    allowed = tuple(methods) + (("HEAD",) if "GET" in methods else ())

    def decorate(view: View) -> View:
        @csrf_exempt  # token calls carry no cookie; sessions are checked in `identify`
        @functools.wraps(view)
        def wrapper(request: HttpRequest, **kwargs: Any) -> HttpResponse:
            if request.method not in allowed:
                response = error_response(405, f"use {' or '.join(methods)}")
                response["Allow"] = ", ".join(allowed)
                return response
            try:
                if authenticate:
                    kwargs["caller"] = identify(request)
                return view(request, **kwargs)
            except AuthError as error:
                headers = {"WWW-Authenticate": 'Bearer realm="cicd"'} if error.status == 401 else {}
                return ApiError(error.status, error.message, headers=headers).response()
            except ApiError as error:
                return error.response()
            except Exception:
                incident = uuid.uuid4().hex[:12]
                log.exception(
                    "API internal error %s on %s %s", incident, request.method, request.path
                )
                return error_response(500, f"internal error (id {incident})")

        wrapper.allowed_methods = allowed  # type: ignore[attr-defined]
        return wrapper

    return decorate


class Query:
    """The query parameters of a request, checked one by one; `done()` raises a 400 naming
    every bad one. Unknown parameters are refused too: a misspelt filter must not silently
    return everything."""

    def __init__(self, request: HttpRequest, allowed: Iterable[str]) -> None:
        self._params = request.GET
        self.allowed = tuple(allowed)
        self.fields: dict[str, str] = {}
        unknown = sorted(set(self._params) - set(self.allowed))
        for name in unknown:
            self.fields[_printable(name)] = (
                f"unknown parameter; use {', '.join(self.allowed)}"
                if self.allowed
                else "this endpoint takes no parameters"
            )

    def text(self, name: str, *, max_length: int = MAX_TEXT) -> str | None:
        values = self._params.getlist(name)
        if not values:
            return None
        if len(values) > 1:
            self.fields[name] = "give it once"
            return None
        value = values[0]
        if "\x00" in value:
            self.fields[name] = "must not contain a NUL character"
            return None
        if len(value) > max_length:
            self.fields[name] = f"must be at most {max_length} characters"
            return None
        return value or None

    def integer(self, name: str, *, default: int | None, minimum: int, maximum: int) -> int | None:
        raw = self.text(name, max_length=30)
        if raw is None:
            return default
        try:
            value = int(raw, 10)
        except ValueError:
            value = None
        if value is None or not minimum <= value <= maximum:
            self.fields[name] = f"must be a whole number from {minimum} to {maximum}"
            return default
        return value

    def choice(self, name: str, choices: Iterable[str]) -> str | None:
        value = self.text(name)
        options = list(choices)
        if value is not None and value not in options:
            self.fields[name] = f"must be one of {', '.join(options)}"
            return None
        return value

    def done(self) -> None:
        if self.fields:
            problems = [f"{name}: {message}" for name, message in self.fields.items()]
            raise ApiError(400, "bad query parameters", problems=problems, fields=self.fields)


def json_body(request: HttpRequest) -> dict[str, Any]:
    """The request body as a JSON object (an empty body is `{}`), or a 400 saying why not."""
    raw = request.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        too_large = f"the body is larger than {MAX_BODY_BYTES} bytes"
        raise ApiError(400, "the request body is not valid", problems=[too_large])
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as error:
        message = f"body is not valid JSON: {error}"[:300]
        raise ApiError(400, "the request body is not valid", problems=[message]) from None
    if not isinstance(body, dict):
        raise ApiError(
            400, "the request body is not valid", problems=["body must be a JSON object"]
        )
    if _has_nul(body):
        # PostgreSQL cannot store them in text or JSON columns; no field has a use for them.
        raise ApiError(
            400, "the request body is not valid", problems=["body must not contain NUL characters"]
        )
    return body


def _has_nul(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def refuse_fields(fields: Mapping[str, str]) -> None:
    """Raise the 400 for a body whose fields are wrong, if any are."""
    if fields:
        problems = [f"'{name}' {message}" for name, message in fields.items()]
        raise ApiError(400, "the request body is not valid", problems=problems, fields=fields)


def unknown_fields(body: Mapping[str, Any], known: Iterable[str]) -> dict[str, str]:
    return {
        _printable(name): f"unknown field; use {', '.join(known) or 'none'}"
        for name in sorted(set(body) - set(known))
    }


def valid_id(value: int) -> bool:
    return 0 < value <= MAX_ID


def _printable(name: str) -> str:
    return name.replace("\x00", "\\0")[:100]
