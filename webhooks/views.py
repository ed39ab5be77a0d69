"""Webhook endpoints: POST /hooks/<source>/<organisation>/<repository>.

The order of the checks matters. Size first (413, before reading a byte too many), then the
repository (404), the signature (401, audited, nothing stored), the payload's shape (400), the
rate limit (429 with Retry-After, nothing stored), and only then the durable write: the
delivery is in the database when the 202 goes out, and workflows are read later by a task.
"""

from __future__ import annotations

import logging
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from runs.models import AuditEntry, Repository
from webhooks import ratelimit
from webhooks.keys import active_secrets
from webhooks.models import Delivery
from webhooks.processing import UNFINISHED
from webhooks.sources import (
    SOURCES,
    WebhookError,
    delivery_id_of,
    parse_delivery,
    signature_valid,
)

log = logging.getLogger(__name__)

# The headers processing needs again later; never the signature or GitLab's token (a secret).
_KEPT_HEADERS = {
    "content-type",
    "x-github-event",
    "x-github-delivery",
    "x-gitea-event",
    "x-gitea-delivery",
    "x-forgejo-event",
    "x-forgejo-delivery",
    "x-gitlab-event",
    "x-gitlab-event-uuid",
    "idempotency-key",
    "x-cicd-event",
    "x-cicd-delivery",
}


def _error(status: int, message: str, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": message, **extra}, status=status)


@csrf_exempt
def receive(request: HttpRequest, source: str, organisation: str, repository: str) -> JsonResponse:
    if request.method != "POST":
        response = _error(405, "webhooks are delivered with POST")
        response["Allow"] = "POST"
        return response
    if source not in SOURCES:
        return _error(404, f"unknown webhook source {source[:40]!r}; use one of {list(SOURCES)}")
    limit = int(settings.CICD_WEBHOOK_MAX_MB * 1024 * 1024)
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _error(400, "Content-Length is not a number")
    if declared > limit:
        return _too_large(limit)
    body = request.read(limit + 1)
    if len(body) > limit:
        return _too_large(limit)

    target = (
        Repository.objects.select_related("organisation")
        .filter(organisation__slug=organisation, slug=repository)
        .first()
    )
    if target is None:
        return _error(404, f"no repository {organisation[:100]}/{repository[:100]}")
    headers = dict(request.headers)
    if not signature_valid(source, headers, body, active_secrets(target)):
        AuditEntry.objects.create(
            action="webhook.rejected",
            repository=target,
            remote_address=request.META.get("REMOTE_ADDR", ""),
            detail={"source": source, "reason": "missing or invalid signature"},
        )
        return _error(401, "missing or invalid signature")
    try:
        delivery_id = delivery_id_of(source, headers)
        parsed = parse_delivery(source, headers, body)
    except WebhookError as error:
        return _error(error.status, error.message)

    decision = ratelimit.take(target.id)
    if not decision.allowed:
        response = _error(
            429, f"too many deliveries for {target}; retry in {decision.retry_after} s"
        )
        response["Retry-After"] = str(decision.retry_after)
        return response

    starts_runs = parsed.event in ("push", "pull_request")
    kept = {name: value for name, value in headers.items() if name.lower() in _KEPT_HEADERS}
    try:
        with transaction.atomic():
            delivery = Delivery.objects.create(
                source=source,
                delivery_id=delivery_id,
                repository=target,
                event=parsed.event,
                headers=kept,
                # Only deliveries that start runs are read again; the parser has checked that
                # theirs is JSON (UTF-8, no raw NUL), which every database can store.
                body=body.decode("utf-8", "replace") if starts_runs else "",
                state=Delivery.RECEIVED if starts_runs else Delivery.IGNORED,
                error="" if starts_runs else parsed.ignored_reason,
            )
            if starts_runs:
                _enqueue_after_commit(delivery.pk)
    except IntegrityError:
        return _seen_before(source, delivery_id)
    body_out = {"status": "accepted", "delivery": delivery_id, "event": parsed.event}
    if not starts_runs:
        body_out["status"] = "ignored"
        body_out["reason"] = parsed.ignored_reason or "ping"
    return JsonResponse(body_out, status=202)


def _seen_before(source: str, delivery_id: str) -> JsonResponse:
    """A redelivery: nothing new starts, but one whose processing never ended is completed."""
    existing = Delivery.objects.get(source=source, delivery_id=delivery_id)
    resumed = existing.state in UNFINISHED
    if resumed:
        _enqueue(existing.pk)
    return JsonResponse(
        {
            "status": "duplicate",
            "delivery": delivery_id,
            "state": existing.state,
            "resumed": resumed,
        },
        status=200,
    )


def _too_large(limit: int) -> JsonResponse:
    return _error(413, f"the body is larger than the limit of {limit} bytes")


def _enqueue_after_commit(delivery_pk: int) -> None:
    transaction.on_commit(lambda: _enqueue(delivery_pk))


def _enqueue(delivery_pk: int) -> None:
    from webhooks.tasks import process_delivery

    try:
        process_delivery.apply_async(args=[delivery_pk], queue=settings.CELERY_QUEUE_CONTROL)
    except Exception:  # the delivery is stored; the sweeper will process it
        log.exception("could not queue delivery %s; the sweeper will pick it up", delivery_pk)
