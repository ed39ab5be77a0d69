"""The deployment tests' images and helpers: the application (v1, v2 and a bad v2, built locally
from busybox) and the load generator come from bench/deployapp.py, which the deployment benchmark
uses too; here is an in-memory DeploymentRecorder.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.deployapp import (
    APP_PATH,
    BAD_V2,
    V1,
    V2,
    LoadGenerator,
    ensure_deploy_image,
    free_port,
    short_state_dir,
)
from runners.deploy import DeployRequest
from runners.events import CancelToken

__all__ = [
    "APP_PATH",
    "BAD_V2",
    "V1",
    "V2",
    "LoadGenerator",
    "RecordingRecorder",
    "ensure_deploy_image",
    "free_port",
    "short_state_dir",
]


@dataclass
class RecordingRecorder:
    """A DeploymentRecorder keeping everything in memory, in order."""

    began: list[tuple[DeployRequest, str]] = field(default_factory=list)
    steps: list[dict[str, Any]] = field(default_factory=list)
    splits: list[dict[str, int]] = field(default_factory=list)
    finished: tuple[str, str] | None = None
    allow: bool = True  # False: begin answers as if cancelled while waiting for the lock
    held_elsewhere: bool = False  # True: begin waits for the lock until its token stops it

    def begin(
        self,
        request: DeployRequest,
        image_digest: str,
        *,
        cancel: CancelToken,
        say: Callable[[str], None],
    ) -> bool:
        self.began.append((request, image_digest))
        if self.held_elsewhere:
            say("Waiting for the deployment lock: another deployment holds it")
            while not cancel.wait(0.05):
                pass
            return False
        return self.allow

    def step_started(self, name: str, detail: Mapping[str, Any]) -> int:
        self.steps.append({"name": name, "detail": dict(detail), "outcome": None})
        return len(self.steps) - 1

    def step_finished(self, index: int, outcome: str, detail: Mapping[str, Any]) -> None:
        self.steps[index].update(outcome=outcome, detail=dict(detail))

    def traffic(self, split: Mapping[str, int]) -> None:
        self.splits.append(dict(split))

    def finish(self, outcome: str, reason: str = "") -> None:
        assert self.finished is None, "finish called twice"
        self.finished = (outcome, reason)

    def step(self, prefix: str) -> dict[str, Any]:
        return next(s for s in self.steps if s["name"].startswith(prefix))
