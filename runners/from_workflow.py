"""Build a JobSpec from a parsed workflow job: the bridge from `pipelines` to the executors.

Job-level expressions whose contexts are fixed before the job starts (container image, service
images and env, timeout) are evaluated here; step-level ones are left for the executor, which
knows `steps` and `env` as they change.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from typing import Any

from pipelines.expressions import render, to_string
from pipelines.model import Job, Service, Step, Workflow, thaw
from runners.spec import CheckoutSource, JobSpec, ServiceSpec, StepSpec, frozen

SUPPORTED_SERVICE_OPTIONS = (
    "--health-cmd",
    "--health-interval",
    "--health-retries",
    "--health-timeout",
    "--health-start-period",
)


class ServiceOptionsError(ValueError):
    """`services.<id>.options` holds something we cannot honour; the message says what."""


def job_spec_for(
    workflow: Workflow,
    job: Job,
    *,
    job_id: str,
    run_id: str,
    matrix: Mapping[str, Any] | None = None,
    contexts: Mapping[str, Any] | None = None,
    secrets: Mapping[str, str] | None = None,
    checkout: CheckoutSource | None = None,
    display_name: str | None = None,
    environment: str = "",
) -> JobSpec:
    """The spec of one job instance (one matrix combination) of a workflow run.

    `contexts` holds github, inputs, needs, vars, strategy; `matrix` is this instance's
    combination (values as written: "3.10" stays "3.10").
    """
    all_contexts: dict[str, Any] = dict(contexts or {})
    all_contexts["matrix"] = thaw(dict(matrix or {}))
    all_contexts.setdefault("secrets", dict(secrets or {}))
    evaluate = _evaluator(all_contexts)

    env = {**workflow.env, **job.env}
    container = job.container
    container_env = {k: evaluate(v) for k, v in container.env.items()} if container else {}
    return JobSpec(
        job_id=job_id,
        run_id=run_id,
        name=display_name or job.display_name,
        steps=tuple(step_spec(step) for step in job.steps),
        image=evaluate(container.image) if container else None,
        container_env=frozen(container_env),
        services=tuple(_service_spec(s, evaluate) for s in job.services.values()),
        env=frozen(env),
        secrets=frozen(secrets or {}),
        contexts=frozen(all_contexts),
        outputs=frozen(job.outputs),
        checkout=checkout,
        timeout_minutes=float(evaluate(job.timeout_minutes)),
        default_shell=job.defaults.shell or workflow.defaults.shell,
        default_working_directory=(
            job.defaults.working_directory or workflow.defaults.working_directory
        ),
        environment=environment,
    )


def _evaluator(contexts: Mapping[str, Any]) -> Callable[[Any], Any]:
    def evaluate(value: Any) -> Any:
        if isinstance(value, str) and "${{" in value:
            return to_string(render(value, contexts))
        return value

    return evaluate


def step_spec(step: Step) -> StepSpec:
    """The executor's form of a parsed step (of a job, or of a composite action)."""
    return StepSpec(
        index=step.index,
        name=step.display_name,
        id=step.id,
        if_condition=step.if_condition,
        run=step.run,
        shell=step.shell,
        working_directory=step.working_directory,
        env=frozen(step.env),
        uses=step.uses,
        with_args=frozen(step.with_args),
        timeout_minutes=step.timeout_minutes,
        continue_on_error=step.continue_on_error,
        **_retry_fields(step),
    )


def _retry_fields(step: Step) -> dict[str, Any]:
    policy = step.retry
    if policy is None:
        return {}
    return {
        "retry_max_attempts": policy.max_attempts,
        "retry_backoff_seconds": policy.backoff_seconds,
        "retry_max_backoff_seconds": policy.max_backoff_seconds,
    }


def _service_spec(service: Service, evaluate: Callable[[Any], Any]) -> ServiceSpec:
    health = parse_service_options(service.id, evaluate(service.options) if service.options else "")
    ports = tuple(str(p) for p in service.ports)
    return ServiceSpec(
        id=service.id,
        image=evaluate(service.image),
        env=frozen({k: evaluate(v) for k, v in service.env.items()}),
        ports=ports,
        health_cmd=health.get("cmd"),
        health_interval_seconds=health.get("interval", 2.0),
        health_retries=int(health.get("retries", 30)),
        wait_for_port=_container_port(ports[0]) if ports and not health.get("cmd") else None,
    )


def parse_service_options(service_id: str, options: str) -> dict[str, Any]:
    """The `docker create` options we honour for services: the --health-* family.

    Anything else is refused with a message rather than silently ignored, because options like
    --privileged or --network would weaken the job's isolation.
    """
    try:
        words = shlex.split(options or "")
    except ValueError as error:
        raise ServiceOptionsError(f"service '{service_id}': options: {error}") from None
    result: dict[str, Any] = {}
    index = 0
    while index < len(words):
        name, has_equals, value = words[index].partition("=")
        if name not in SUPPORTED_SERVICE_OPTIONS:
            raise ServiceOptionsError(
                f"service '{service_id}': option {name} is not supported; "
                f"supported: {', '.join(SUPPORTED_SERVICE_OPTIONS)}"
            )
        if not has_equals:
            if index + 1 >= len(words):
                raise ServiceOptionsError(f"service '{service_id}': option {name} needs a value")
            index += 1
            value = words[index]
        index += 1
        if name == "--health-cmd":
            result["cmd"] = value
        elif name == "--health-interval":
            result["interval"] = _seconds(service_id, name, value)
        elif name == "--health-retries":
            result["retries"] = int(_seconds(service_id, name, value))
        # --health-timeout and --health-start-period are accepted: the wait is bounded by
        # interval x retries anyway.
    return result


def _seconds(service_id: str, option: str, value: str) -> float:
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if value.endswith(suffix):
            number, factor = value[: -len(suffix)], units[suffix]
            break
    else:
        number, factor = value, 1.0
    try:
        return float(number) * factor
    except ValueError:
        raise ServiceOptionsError(
            f"service '{service_id}': {option} {value!r} is not a duration like 5s or 1m"
        ) from None


def _container_port(mapping: str) -> int | None:
    """'5432', '8080:80' or '127.0.0.1:8080:80/tcp' -> the container-side port."""
    last = mapping.split(":")[-1].split("/")[0]
    return int(last) if last.isdigit() else None
