"""Turning a stored delivery into runs, once, however often it is processed.

Processing may happen twice (a redelivery, the sweeper and the first Celery message racing): the
runs' idempotency keys make the second pass start nothing, and the delivery's state only moves
forward with conditional updates.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs

from django.conf import settings
from django.db.models import F, Q
from django.utils import timezone

from runs.triggering import start_pull_request, start_push
from webhooks.models import Delivery
from webhooks.sources import header, parse_delivery

log = logging.getLogger(__name__)

UNFINISHED = (Delivery.RECEIVED, Delivery.FAILED)


def process_delivery(delivery_pk: int) -> None:
    delivery = (
        Delivery.objects.select_related("repository__organisation").filter(pk=delivery_pk).first()
    )
    if delivery is None or delivery.state not in UNFINISHED:
        return
    Delivery.objects.filter(pk=delivery.pk).update(
        attempts=F("attempts") + 1, attempted_at=timezone.now()
    )
    try:
        run_ids = _start_runs(delivery)
    except Exception as error:  # kept on the delivery; the sweeper retries it
        log.exception("delivery %s (%s) failed", delivery.delivery_id, delivery.source)
        Delivery.objects.filter(pk=delivery.pk, state__in=UNFINISHED).update(
            state=Delivery.FAILED, error=f"{type(error).__name__}: {error}"[:4000]
        )
        return
    Delivery.objects.filter(pk=delivery.pk, state__in=UNFINISHED).update(
        state=Delivery.DONE, run_ids=run_ids, error="", processed_at=timezone.now()
    )


def _start_runs(delivery: Delivery) -> list[int]:
    parsed = parse_delivery(delivery.source, delivery.headers, delivery.body.encode())
    repository = delivery.repository
    payload = _github_shaped_payload(delivery)
    runs = []
    for update in parsed.pushes:
        runs += start_push(
            repository,
            ref=update.ref,
            before=update.before,
            after=update.after,
            actor=parsed.actor,
            payload=payload,
        )
    pull = parsed.pull_request
    if pull is not None:
        runs += start_pull_request(
            repository,
            number=pull.number,
            action=pull.action,
            head_sha=pull.head_sha,
            head_ref=pull.head_ref,
            base_ref=pull.base_ref,
            base_sha=pull.base_sha,
            from_fork=pull.from_fork,
            actor=parsed.actor,
            payload=payload,
        )
    return [run.id for run in runs]


def _github_shaped_payload(delivery: Delivery) -> dict[str, Any] | None:
    """`github.event` for the run: the delivery's own payload where it already has GitHub's
    shape (GitHub, Gitea); for the others the trigger layer builds a GitHub-shaped one."""
    if delivery.source not in ("github", "gitea"):
        return None
    body = delivery.body
    content_type = header(delivery.headers, "Content-Type") or ""
    if content_type.startswith("application/x-www-form-urlencoded"):
        body = (parse_qs(body).get("payload") or ["{}"])[0]
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) else None


def retry_unfinished(now: Any = None) -> int:
    """Queue again the deliveries whose processing never ended (a lost message, a crash, an
    error): each waits CICD_WEBHOOK_RETRY_SECONDS since its last attempt, and gives up after
    CICD_WEBHOOK_MAX_ATTEMPTS (it stays failed, with its error, for an operator)."""
    from webhooks.tasks import process_delivery as task

    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.CICD_WEBHOOK_RETRY_SECONDS)
    due = Delivery.objects.filter(
        Q(attempted_at__isnull=True, received_at__lt=cutoff) | Q(attempted_at__lt=cutoff),
        state__in=UNFINISHED,
        attempts__lt=settings.CICD_WEBHOOK_MAX_ATTEMPTS,
    ).values_list("pk", flat=True)[:500]
    pks = list(due)
    for pk in pks:
        task.delay(pk)
    return len(pks)
