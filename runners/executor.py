"""Choosing and running an executor: the one entry point the orchestration layer calls.

A worker host is configured once (RunnerConfig, built from settings by the caller); each job is a
JobSpec. Docker is used when an engine answers, the local sandbox otherwise, unless the runner is
pinned to one of them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runners.artifacts import ArtifactStore
from runners.caches import CacheStore
from runners.deploy import DeploymentRecorderFactory
from runners.events import CancelToken, EventSink, JobResult
from runners.spec import JobSpec, ResourceLimits

AUTO, DOCKER, LOCAL = "auto", "docker", "local"


@dataclass(frozen=True, slots=True)
class RunnerConfig:
    executor: str = AUTO  # auto | docker | local
    default_image: str = "debian:bookworm-slim"
    limits: ResourceLimits = field(default_factory=ResourceLimits)
    allow_privileged: bool = False
    grace_seconds: float = 10.0
    step_output_cap: int = 10 * 1024 * 1024
    work_dir: Path = Path("/tmp/cicd-work")
    deploy_dir: Path = Path("/tmp/cicd-deploy")  # cicd/deploy: each service's HAProxy and state

    @classmethod
    def from_settings(cls, settings: Any) -> RunnerConfig:
        """Read the CICD_* runner settings (see README: Configuration)."""
        return cls(
            executor=settings.CICD_EXECUTOR,
            default_image=settings.CICD_DEFAULT_IMAGE,
            limits=ResourceLimits(
                memory_bytes=settings.CICD_JOB_MEMORY_MB * 1024 * 1024,
                cpus=settings.CICD_JOB_CPUS,
                pids=settings.CICD_JOB_PIDS,
            ),
            allow_privileged=settings.CICD_ALLOW_PRIVILEGED,
            grace_seconds=settings.CICD_KILL_GRACE_SECONDS,
            step_output_cap=int(settings.CICD_STEP_OUTPUT_CAP_MB * 1024 * 1024),
            work_dir=Path(settings.CICD_WORK_DIR),
            deploy_dir=Path(settings.CICD_DEPLOY_DIR),
        )


def docker_engine_reachable() -> bool:
    import docker
    from docker.errors import DockerException

    try:
        client = docker.from_env(timeout=5)
    except DockerException:
        return False
    try:
        client.ping()
        return True
    except (DockerException, OSError):
        return False
    finally:
        client.close()


def choose_executor(config: RunnerConfig) -> str:
    if config.executor in (DOCKER, LOCAL):
        return config.executor
    return DOCKER if docker_engine_reachable() else LOCAL


def run_job(
    spec: JobSpec,
    sink: EventSink,
    config: RunnerConfig,
    *,
    cancel: CancelToken | None = None,
    executor: str | None = None,
    artifacts: ArtifactStore | None = None,
    caches: CacheStore | None = None,
    deployments: DeploymentRecorderFactory | None = None,
) -> JobResult:
    """Run one job to the end on the chosen executor; the sink sees every event.
    `deployments`: the recorders of the job's environment, for cicd/deploy steps."""
    chosen = executor or choose_executor(config)
    if spec.limits == ResourceLimits():
        spec = dataclasses.replace(spec, limits=config.limits)
    if chosen == DOCKER:
        from runners.docker import run_docker_job

        return run_docker_job(
            spec,
            sink,
            cancel=cancel,
            default_image=config.default_image,
            grace_seconds=config.grace_seconds,
            allow_privileged=config.allow_privileged,
            step_output_cap=config.step_output_cap,
            artifacts=artifacts,
            caches=caches,
            deployments=deployments,
            deploy_state_dir=config.deploy_dir,
        )
    from runners.local import run_local_job

    return run_local_job(
        spec,
        sink,
        cancel=cancel,
        work_root=config.work_dir,
        grace_seconds=config.grace_seconds,
        step_output_cap=config.step_output_cap,
        artifacts=artifacts,
        caches=caches,
        deployments=deployments,
        deploy_state_dir=config.deploy_dir,
    )
