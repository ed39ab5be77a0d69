"""Celery tasks of the triggers: thin, they load ids and call into webhooks.* and runs.*."""

from __future__ import annotations

from celery import shared_task


@shared_task(name="webhooks.tasks.process_delivery", acks_late=True, ignore_result=True)
def process_delivery(delivery_pk: int) -> None:
    from webhooks.processing import process_delivery as process

    process(delivery_pk)


@shared_task(name="webhooks.tasks.retry_unfinished_deliveries", ignore_result=True)
def retry_unfinished_deliveries() -> None:
    from webhooks.processing import retry_unfinished

    retry_unfinished()


@shared_task(name="webhooks.tasks.fire_schedules", ignore_result=True)
def fire_schedules() -> None:
    from runs.triggering import fire_due_schedules

    fire_due_schedules()
