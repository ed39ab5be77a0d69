"""The control plane's record of each worker: labels, executor, last contact, current job.

Kept apart from the executors (which know nothing of Django): the worker side of `runs` calls it
when it claims and when it finishes a job, so the UI can show who runs what.
"""

from __future__ import annotations

from collections.abc import Sequence

from django.utils import timezone

from runners.models import Worker


def record_worker(
    *, name: str, labels: Sequence[str], executor: str, current_job_id: int | None
) -> None:
    """Create or refresh this worker's row. Only the worker itself writes its row (the name is
    unique per process), so an upsert cannot overwrite anyone else's change."""
    Worker.objects.update_or_create(
        name=name[:200],
        defaults={
            "labels": list(labels),
            "executor": executor[:20],
            "last_heartbeat": timezone.now(),
            "current_job_id": current_job_id,
        },
    )
