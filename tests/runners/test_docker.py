"""The Docker executor's own cases (the shared executor suite runs on it too, see conftest.py).

These need a real Docker engine and fail (never skip) without one: bin/test starts one.
"""

from __future__ import annotations

import contextlib
import io
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker
import pytest
from django.core.management import call_command
from docker.errors import NotFound

from runners.docker import LABEL_CREATED, LABEL_JOB, LABEL_RUN, DockerBackend, run_docker_job
from runners.events import CANCELLED, FAILURE, SUCCESS, TIMED_OUT, CancelToken, RecordingSink
from runners.job import JobSetupError
from runners.reaper import reap_orphans
from runners.spec import JobSpec, ResourceLimits, ServiceSpec, StepSpec
from tests.runners.conftest import GitRepo
from tests.runners.images import (
    WEB_PAGE,
    docker_client,
    ensure_busybox_image,
    ensure_service_image,
)

pytestmark = pytest.mark.docker

GRACE = 1.0


@pytest.fixture(scope="session")
def client() -> Iterator[docker.DockerClient]:
    client = docker_client()
    yield client
    client.close()


@pytest.fixture(scope="session")
def busybox(client: docker.DockerClient) -> str:
    return ensure_busybox_image(client)


@pytest.fixture(scope="session")
def web_image(client: docker.DockerClient) -> str:
    return ensure_service_image(client)


@pytest.fixture(scope="session")
def slow_web_image(client: docker.DockerClient) -> str:
    return ensure_service_image(client, slow=True)


def make_job(*steps: str | dict[str, Any], **kw: Any) -> JobSpec:
    specs = []
    for index, item in enumerate(steps):
        fields = {"run": item} if isinstance(item, str) else dict(item)
        specs.append(StepSpec(index=index, name=f"step {index}", **fields))
    kw.setdefault("job_id", f"dockertest-{uuid.uuid4().hex[:12]}")
    kw.setdefault("run_id", "run-1")
    kw.setdefault("name", "test")
    return JobSpec(steps=tuple(specs), **kw)


def run(
    client: docker.DockerClient, image: str, spec: JobSpec, cancel: CancelToken | None = None
) -> tuple[Any, RecordingSink]:
    sink = RecordingSink()
    result = run_docker_job(
        spec, sink, cancel=cancel, client=client, default_image=image, grace_seconds=GRACE
    )
    return result, sink


def leftovers(client: docker.DockerClient, job_ids: set[str]) -> list[str]:
    """Containers, networks and volumes still labelled with one of these jobs."""
    api = client.api
    found = []
    for container in api.containers(all=True, filters={"label": LABEL_JOB}):
        if container["Labels"].get(LABEL_JOB) in job_ids:
            found.append(f"container {container['Names']}")
    for network in api.networks(filters={"label": LABEL_JOB}):
        if (network.get("Labels") or {}).get(LABEL_JOB) in job_ids:
            found.append(f"network {network['Name']}")
    for volume in api.volumes(filters={"label": LABEL_JOB}).get("Volumes") or []:
        if (volume.get("Labels") or {}).get(LABEL_JOB) in job_ids:
            found.append(f"volume {volume['Name']}")
    return found


def web_service(image: str, **kw: Any) -> ServiceSpec:
    kw.setdefault("health_interval_seconds", 0.2)
    kw.setdefault("health_retries", 50)
    return ServiceSpec(id="web", image=image, **kw)


# ------------------------------------------------------------------------------------ services


def test_service_is_reachable_by_its_id_as_host_name(
    client: docker.DockerClient, busybox: str, web_image: str
) -> None:
    spec = make_job(
        "wget -qO- http://web:8080/",
        services=(web_service(web_image, wait_for_port=8080),),
    )
    result, sink = run(client, busybox, spec)
    assert result.conclusion == SUCCESS, sink.lines()
    assert WEB_PAGE.strip() in sink.lines(0)
    assert leftovers(client, {spec.job_id}) == []


def test_health_command_is_waited_for(
    client: docker.DockerClient, busybox: str, slow_web_image: str
) -> None:
    # httpd starts 3 s after the service container: without waiting, the first fetch fails.
    service = web_service(
        slow_web_image,
        health_cmd="wget -qO- http://127.0.0.1:8080/ >/dev/null",
        health_interval_seconds=0.5,
        health_retries=30,
    )
    started = time.monotonic()
    result, sink = run(client, busybox, make_job("wget -qO- http://web:8080/", services=(service,)))
    assert result.conclusion == SUCCESS, sink.lines()
    assert WEB_PAGE.strip() in sink.lines(0)
    assert time.monotonic() - started >= 3


def test_unhealthy_service_fails_the_job_naming_the_service(
    client: docker.DockerClient, busybox: str, web_image: str
) -> None:
    service = web_service(web_image, health_cmd="exit 1", health_interval_seconds=0.2)
    service = ServiceSpec(**{**_fields(service), "health_retries": 3})
    spec = make_job("echo never", services=(service,))
    result, sink = run(client, busybox, spec)
    assert result.conclusion == FAILURE
    assert "service 'web' did not become healthy" in result.error
    assert sink.results == []  # no step ran
    assert leftovers(client, {spec.job_id}) == []


def test_backend_as_context_manager_cleans_up_when_start_fails(
    client: docker.DockerClient, busybox: str, web_image: str
) -> None:
    service = ServiceSpec(
        id="web",
        image=web_image,
        health_cmd="exit 1",
        health_interval_seconds=0.2,
        health_retries=2,
    )
    spec = make_job(image=busybox, services=(service,))
    with pytest.raises(JobSetupError, match="service 'web'"), DockerBackend(spec, client=client):
        pass
    assert leftovers(client, {spec.job_id}) == []


# ------------------------------------------------------------------------------------ images


def test_missing_image_is_a_clear_job_error_and_leaves_nothing(
    client: docker.DockerClient, busybox: str
) -> None:
    spec = make_job("echo never", image="cicd-test/does-not-exist:1")
    result, sink = run(client, busybox, spec)
    assert result.conclusion == FAILURE
    assert result.error.startswith(
        "image 'cicd-test/does-not-exist:1' is not available: not found locally and the pull "
        "failed: "
    )
    assert "Traceback" not in result.error
    assert any("cicd-test/does-not-exist:1" in line for line in sink.lines())
    assert leftovers(client, {spec.job_id}) == []


def test_missing_service_image_names_the_service(client: docker.DockerClient, busybox: str) -> None:
    service = ServiceSpec(id="db", image="cicd-test/no-such-db:9")
    spec = make_job("echo never", services=(service,))
    result, _ = run(client, busybox, spec)
    assert result.conclusion == FAILURE
    assert "service 'db'" in result.error
    assert "'cicd-test/no-such-db:9' is not available" in result.error
    assert leftovers(client, {spec.job_id}) == []


# ------------------------------------------------------------------------------------ hardening


def test_container_is_hardened(client: docker.DockerClient, busybox: str) -> None:
    limits = ResourceLimits(memory_bytes=256 * 1024**2, cpus=0.5, pids=100)
    spec = make_job(image=busybox, limits=limits)
    with DockerBackend(spec, client=client) as backend:
        host = client.api.inspect_container(backend.names.container)["HostConfig"]
        mounts = client.api.inspect_container(backend.names.container)["Mounts"]
    assert host["Privileged"] is False
    assert host["CapDrop"] == ["ALL"]
    assert "NET_RAW" not in host["CapAdd"] and "SYS_ADMIN" not in host["CapAdd"]
    assert "no-new-privileges" in host["SecurityOpt"]
    assert host["PidsLimit"] == 100
    assert host["Memory"] == 256 * 1024**2
    assert host["NanoCpus"] == 500_000_000
    assert host["NetworkMode"] not in ("host",)
    assert [m["Type"] for m in mounts] == ["volume"]
    assert leftovers(client, {spec.job_id}) == []


def test_allow_privileged_lifts_privileged_mode_only(client: docker.DockerClient) -> None:
    # Only the configuration: this CI's engine itself cannot start privileged containers.
    spec = make_job()
    trusted = DockerBackend(spec, client=client, allow_privileged=True)._host_config(network=None)
    default = DockerBackend(spec, client=client)._host_config(network=None)
    assert (trusted.get("Privileged"), default.get("Privileged", False)) == (True, False)
    assert {k: v for k, v in trusted.items() if k != "Privileged"} == {
        k: v for k, v in default.items() if k != "Privileged"
    }


def test_steps_see_no_docker_socket_no_new_privileges_and_few_capabilities(
    client: docker.DockerClient, busybox: str
) -> None:
    result, sink = run(
        client,
        busybox,
        make_job(
            "test ! -e /var/run/docker.sock && test ! -e /run/docker.sock && echo no-socket",
            "grep -E '^(NoNewPrivs|CapEff)' /proc/self/status",
        ),
    )
    assert result.conclusion == SUCCESS, sink.lines()
    assert sink.lines(0) == ["no-socket"]
    status = dict(line.split(":\t") for line in sink.lines(1))
    assert status["NoNewPrivs"] == "1"
    effective = int(status["CapEff"], 16)
    assert effective != 0 and effective.bit_count() <= 9  # the allow-list, not all ~40


def test_fork_bomb_is_contained_by_the_pids_limit(
    client: docker.DockerClient, busybox: str
) -> None:
    spec = make_job(
        {"run": "bomb() { bomb | bomb & }; bomb; sleep 60", "timeout_minutes": 0.05},
        {"run": "echo survived", "if_condition": "always()"},
        limits=ResourceLimits(pids=64),
    )
    started = time.monotonic()
    _, sink = run(client, busybox, spec)
    assert [r.outcome for r in sink.results][1] == SUCCESS, sink.lines()
    assert sink.results[0].outcome in (TIMED_OUT, FAILURE)
    assert "survived" in sink.lines(1)
    assert time.monotonic() - started < 30
    assert leftovers(client, {spec.job_id}) == []


def test_running_out_of_memory_is_reported(client: docker.DockerClient, busybox: str) -> None:
    spec = make_job(
        "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo never",
        {"run": "echo still-here; cat /proc/self/oom_score_adj", "if_condition": "always()"},
        limits=ResourceLimits(memory_bytes=48 * 1024**2),
    )
    result, sink = run(client, busybox, spec)
    assert result.conclusion == FAILURE
    assert sink.results[0].exit_code == 137
    assert any("ran out of memory" in line for line in sink.lines(0)), sink.lines(0)
    # Steps are the OOM killer's first choice, so the container (and its later steps) survive.
    assert sink.lines(1) == ["still-here", "1000"]


# ------------------------------------------------------------------------------------ cleanup


def test_nothing_is_left_after_jobs_that_pass_fail_time_out_and_get_cancelled(
    client: docker.DockerClient, busybox: str, web_image: str
) -> None:
    jobs: list[tuple[JobSpec, CancelToken | None, str]] = []
    for n in range(5):
        service = web_service(web_image, wait_for_port=8080) if n < 2 else None
        jobs.append(
            (
                make_job("echo ok", services=(service,) if service else ()),
                None,
                SUCCESS,
            )
        )
        jobs.append((make_job("echo failing; exit 3", "echo never"), None, FAILURE))
        jobs.append((make_job("sleep 30", timeout_minutes=0.02), None, TIMED_OUT))
        jobs.append((make_job("sleep 30"), CancelToken(), CANCELLED))

    def one(item: tuple[JobSpec, CancelToken | None, str]) -> str:
        spec, cancel, _ = item
        if cancel is not None:
            threading.Timer(1.5, cancel.cancel).start()
        result, _ = run(client, busybox, spec, cancel)
        return result.conclusion

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=5) as pool:
        conclusions = list(pool.map(one, jobs))
    assert conclusions == [expected for _, _, expected in jobs]
    assert leftovers(client, {spec.job_id for spec, _, _ in jobs}) == []
    assert time.monotonic() - started < 60


def test_stale_objects_of_a_previous_attempt_are_removed_on_start(
    client: docker.DockerClient, busybox: str
) -> None:
    spec = make_job("echo second attempt", image=busybox)
    first = DockerBackend(spec, client=client)
    first.start()  # a worker that died here: nothing was cleaned up
    result, sink = run(client, busybox, spec)
    assert result.conclusion == SUCCESS, sink.lines()
    assert leftovers(client, {spec.job_id}) == []


def test_step_output_streams_while_the_step_runs(client: docker.DockerClient, busybox: str) -> None:
    seen: list[float] = []

    class Sink(RecordingSink):
        def log(self, index: int | None, events: Any) -> None:
            if index == 0:
                seen.append(time.monotonic())
            super().log(index, events)

    spec = make_job("echo first; sleep 2; echo second")
    sink = Sink()
    run_docker_job(spec, sink, client=client, default_image=busybox, grace_seconds=GRACE)
    assert sink.lines(0) == ["first", "second"]
    assert seen[-1] - seen[0] >= 1.5


def test_background_process_holding_the_output_does_not_hang_the_step(
    client: docker.DockerClient, busybox: str
) -> None:
    started = time.monotonic()
    result, sink = run(client, busybox, make_job("sleep 30 & echo started", "echo next"))
    assert result.conclusion == SUCCESS, sink.lines()
    assert sink.lines(1) == ["next"]
    assert time.monotonic() - started < 15


def test_checkout_copies_the_tree_with_its_git_directory(
    client: docker.DockerClient, busybox: str, git_repo: GitRepo
) -> None:
    # The image has no git: the worker checks out and copies the tree in, .git included.
    spec = make_job(
        {"uses": "actions/checkout@v4"},
        "cat src/app.txt; cat .git/HEAD",
        {"uses": "actions/checkout@v4", "with_args": {"path": "sub", "ref": git_repo.second}},
        "cat sub/src/app.txt; test -w . && echo writable",
        checkout=git_repo.source(),
    )
    result, sink = run(client, busybox, spec)
    assert result.conclusion == SUCCESS, sink.lines()
    assert sink.lines(1) == ["version 1", git_repo.first]
    assert sink.lines(3) == ["version 2", "writable"]


# ------------------------------------------------------------------------------------ reaper


def _leftover(client: docker.DockerClient, image: str, job_id: str, created: float) -> None:
    labels = {LABEL_JOB: job_id, LABEL_RUN: "r", LABEL_CREATED: str(int(created))}
    name = f"cicd-job-{job_id}"
    client.api.create_volume(name=f"{name}-workspace", labels=labels)
    client.api.create_network(name, labels=labels)
    client.api.create_container(image, ["true"], name=name, labels=labels)


def _exists(client: docker.DockerClient, job_id: str) -> list[str]:
    name = f"cicd-job-{job_id}"
    present = []
    for kind, inspect in (
        ("container", client.api.inspect_container),
        ("network", client.api.inspect_network),
        ("volume", lambda n: client.api.inspect_volume(f"{n}-workspace")),
    ):
        try:
            inspect(name)
            present.append(kind)
        except NotFound:
            pass
    return present


# One test, not two: reaping is global, so two reaper tests running at once (xdist) would take
# each other's leftovers.
def test_reaper_removes_old_leftovers_keeps_fresh_ones_and_dry_run_removes_nothing(
    client: docker.DockerClient, busybox: str
) -> None:
    token = uuid.uuid4().hex[:8]
    old, fresh, later = f"reap-old-{token}", f"reap-new-{token}", f"reap-cmd-{token}"
    now = time.time()
    _leftover(client, busybox, old, now - 1000)
    _leftover(client, busybox, fresh, now)
    try:
        out = io.StringIO()
        call_command("reap_containers", "--older-than", "500", "--dry-run", stdout=out)
        assert f"would remove container cicd-job-{old}" in out.getvalue()
        assert f"would remove volume cicd-job-{old}-workspace" in out.getvalue()
        assert fresh not in out.getvalue()
        assert _exists(client, old) == ["container", "network", "volume"]

        removed = reap_orphans(client, older_than_seconds=500, now=now)
        ours = [item for item in removed if old in item]
        assert ours == [
            f"container cicd-job-{old}",
            f"network cicd-job-{old}",
            f"volume cicd-job-{old}-workspace",
        ]
        assert not any(fresh in item for item in removed)
        assert _exists(client, old) == []
        assert _exists(client, fresh) == ["container", "network", "volume"]

        _leftover(client, busybox, later, now - 1000)
        out = io.StringIO()
        call_command("reap_containers", "--older-than", "500", stdout=out)
        assert f"removed network cicd-job-{later}" in out.getvalue()
        assert _exists(client, later) == []
    finally:
        for job_id in (old, fresh, later):
            _remove(client, job_id)


def _remove(client: docker.DockerClient, job_id: str) -> None:
    name = f"cicd-job-{job_id}"
    for action in (
        lambda: client.api.remove_container(name, force=True),
        lambda: client.api.remove_network(name),
        lambda: client.api.remove_volume(f"{name}-workspace"),
    ):
        with contextlib.suppress(NotFound):
            action()


def _fields(service: ServiceSpec) -> dict[str, Any]:
    return {name: getattr(service, name) for name in ServiceSpec.__dataclass_fields__}


def test_an_unreachable_engine_is_a_failed_job_not_an_exception(monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    sink = RecordingSink()
    spec = JobSpec(job_id="no-engine", run_id="1", name="x", steps=(StepSpec(0, "s", run="true"),))
    result = run_docker_job(spec, sink)
    assert result.conclusion == "failure"
    assert result.error.startswith("the Docker engine is not reachable")
    assert sink.job_result == result
    assert any("not reachable" in line for line in sink.lines())
