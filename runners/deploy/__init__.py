"""Deployments (`uses: cicd/deploy`): N replicas of an image as containers on a Docker engine,
behind an HAProxy this package starts and drives through its runtime API, replaced by a rolling,
blue-green or canary strategy with readiness probes, analysis and automatic rollback.

Nothing here knows Django: the orchestration layer (the deployments app) gives a
DeploymentRecorder, which holds the environment's lock and stores the deployment, its steps and
its traffic splits. See runners.deploy.engine for the strategies, runners.deploy.haproxy for the
load balancer, runners.deploy.containers for the Docker side and runners.deploy.analysis for the
checks.
"""

from __future__ import annotations

from typing import Any

from pipelines.parser import DEPLOY_INPUTS
from runners.deploy.request import (
    BLUE_GREEN,
    CANARY,
    CANCELLED,
    DEPLOY_ACTION,
    FAILED,
    OUTCOMES,
    ROLLED_BACK,
    ROLLING,
    STRATEGIES,
    SUCCESS,
    DeployError,
    DeploymentRecorder,
    DeploymentRecorderFactory,
    DeployRequest,
    DeployResult,
    parse_deploy_inputs,
    sanitise_service_name,
    service_url,
    short_image_id,
    version_label,
)

# The engine needs the Docker SDK, which the web process never should load to name a version.
_ENGINE = frozenset({"canary_weights", "deploy", "teardown"})


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        from runners.deploy import engine

        return getattr(engine, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BLUE_GREEN",
    "CANARY",
    "CANCELLED",
    "DEPLOY_ACTION",
    "DEPLOY_INPUTS",
    "FAILED",
    "OUTCOMES",
    "ROLLED_BACK",
    "ROLLING",
    "STRATEGIES",
    "SUCCESS",
    "DeployError",
    "DeployRequest",
    "DeployResult",
    "DeploymentRecorder",
    "DeploymentRecorderFactory",
    "canary_weights",
    "deploy",
    "parse_deploy_inputs",
    "sanitise_service_name",
    "service_url",
    "short_image_id",
    "teardown",
    "version_label",
]
