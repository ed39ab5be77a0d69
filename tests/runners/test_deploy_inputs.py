"""The `with:` of `uses: cicd/deploy` and the pure parts of the engine (no Docker needed)."""

from __future__ import annotations

import pytest

from pipelines.errors import WorkflowError
from pipelines.parser import parse_workflow
from runners.deploy import (
    DeployError,
    DeployRequest,
    canary_weights,
    parse_deploy_inputs,
    sanitise_service_name,
    service_url,
)


def parse(**inputs: str) -> DeployRequest:
    return parse_deploy_inputs(
        {name.replace("_", "-"): value for name, value in inputs.items()},
        default_service="acme/Widgets-production",
    )


def test_defaults_and_the_default_service_name() -> None:
    request = parse(image="app:v2")
    assert request.service == "acme-widgets-production"
    assert request.image == "app:v2"
    assert (request.replicas, request.port, request.listen) == (2, 8080, "127.0.0.1:8080")
    assert request.strategy == "rolling"
    assert request.canary_steps == (5, 25, 50, 100)
    assert request.max_error_rate == 5.0
    assert request.skip_analysis is False


def test_every_input_is_read() -> None:
    request = parse(
        image="registry.example.com/app@sha256:" + "a" * 64,
        service="web",
        replicas="3",
        port="9000",
        listen="0.0.0.0:80",
        strategy="Canary",
        max_surge="2",
        canary_steps="10, 30,60",
        step_pause="1.5",
        switch_back="2m",
        health_path="/health?deep=1",
        health_timeout="500ms",
        max_error_rate="2.5%",
        max_latency_ms="250",
        min_requests="7",
        prometheus_url="http://prometheus:9090",
        prometheus_query='sum(rate(http_errors_total{job="web"}[1m]))',
        prometheus_max="0.5",
        env="# settings\nGREETING=hello=world\n\n  MODE = fast\n",
        docker_host="tcp://10.0.0.5:2375",
        skip_analysis="TRUE",
    )
    assert request.service == "web"
    assert (request.replicas, request.port, request.listen) == (3, 9000, "0.0.0.0:80")
    assert request.strategy == "canary"
    assert request.max_surge == 2
    assert request.canary_steps == (10, 30, 60, 100)  # a canary ends with all the traffic
    assert request.step_pause_seconds == 1.5
    assert request.switch_back_seconds == 120.0
    assert request.health_path == "/health?deep=1"
    assert request.health_timeout_seconds == 0.5
    assert request.max_error_rate == 2.5
    assert request.max_latency_ms == 250.0
    assert request.min_requests == 7
    assert request.prometheus_max == 0.5
    assert dict(request.env) == {"GREETING": "hello=world", "MODE": " fast"}
    assert request.docker_host == "tcp://10.0.0.5:2375"
    assert request.skip_analysis is True


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ({}, "with.image is required"),
        ({"replicas": "x"}, "with.replicas must be a whole number from 1 to 30, got 'x'"),
        ({"replicas": "0"}, "with.replicas must be a whole number from 1 to 30, got 0"),
        ({"replicas": "31"}, "with.replicas must be a whole number from 1 to 30, got 31"),
        ({"port": "70000"}, "with.port must be a whole number from 1 to 65535"),
        ({"strategy": "big-bang"}, "with.strategy must be one of rolling, blue-green, canary"),
        ({"canary-steps": "50,25"}, "with.canary-steps must be increasing percentages"),
        ({"canary-steps": "5,abc"}, "with.canary-steps must be percentages"),
        ({"canary-steps": "0,100"}, "with.canary-steps must be increasing percentages"),
        ({"step-pause": "soon"}, "with.step-pause must be a duration in seconds"),
        ({"max-error-rate": "lots"}, "with.max-error-rate must be a number, got 'lots'"),
        ({"max-error-rate": "120%"}, "with.max-error-rate must be a number from 0 to 100"),
        ({"listen": "localhost"}, "with.listen must be host:port"),
        ({"listen": "127.0.0.1:99999"}, "with.listen must be host:port"),
        ({"health-path": "health"}, "with.health-path must be a path starting with '/'"),
        ({"service": "Bad Name"}, "with.service must be 1 to 48 lower case letters"),
        ({"service": "../etc"}, "with.service must be 1 to 48 lower case letters"),
        ({"env": "GOOD=1\nnot a pair"}, "with.env line 2 must be NAME=VALUE"),
        ({"env": "1BAD=x"}, "with.env line 1 must be NAME=VALUE"),
        ({"docker-host": "10.0.0.5:2375"}, "with.docker-host must be unix://PATH"),
        ({"skip-analysis": "yes"}, "with.skip-analysis must be true or false, got 'yes'"),
        ({"prometheus-url": "http://p:9090"}, "with.prometheus-query is required"),
        (
            {"prometheus-url": "p:9090", "prometheus-query": "up", "prometheus-max": "1"},
            "with.prometheus-url must be an http(s):// URL",
        ),
        ({"prometheus-max": "x"}, "with.prometheus-max must be a number, got 'x'"),
        ({"min-requests": "-3"}, "with.min-requests must be a whole number from 1"),
    ],
)
def test_bad_inputs_are_named(inputs: dict[str, str], message: str) -> None:
    given = {"image": "app:v2", **inputs} if inputs else {}
    with pytest.raises(DeployError) as raised:
        parse_deploy_inputs(given, default_service="acme/widgets-production")
    assert message in str(raised.value)


def test_a_stored_request_round_trips_and_is_checked_again() -> None:
    request = parse(image="app:v2", strategy="blue-green", env="A=1", canary_steps="20")
    data = request.as_dict()
    assert data["env"] == {"A": "1"}
    assert data["canary_steps"] == [20, 100]
    assert DeployRequest.from_dict({**data, "added_later": True}) == request
    with pytest.raises(DeployError, match=r"with\.replicas must be a whole number"):
        DeployRequest.from_dict({**data, "replicas": "2"})
    with pytest.raises(DeployError, match="has no image"):
        DeployRequest.from_dict({"service": "web"})


def test_service_names_are_made_safe() -> None:
    assert sanitise_service_name("acme/My_App--Prod") == "acme-my_app-prod"
    assert sanitise_service_name("../../etc") == "etc"
    assert sanitise_service_name("///") == "service"
    assert len(sanitise_service_name("x" * 200)) == 48


def test_service_url() -> None:
    assert service_url("127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert service_url(":80").startswith("http://") and service_url(":80").endswith(":80")
    assert ":80" in service_url("0.0.0.0:80") and "0.0.0.0" not in service_url("0.0.0.0:80")


@pytest.mark.parametrize("percent", [1, 5, 25, 50, 75, 99])
@pytest.mark.parametrize(("new", "old"), [(1, 1), (2, 2), (1, 5), (5, 1), (30, 30)])
def test_canary_weights_give_the_new_version_its_share(percent: int, new: int, old: int) -> None:
    new_weight, old_weight = canary_weights(percent, new, old)
    assert 1 <= new_weight <= 256 and 1 <= old_weight <= 256
    share = 100 * new * new_weight / (new * new_weight + old * old_weight)
    assert abs(share - percent) < 1.5, (new_weight, old_weight, share)


def test_canary_weights_at_100_percent_leave_the_old_set_without_traffic() -> None:
    assert canary_weights(100, 2, 2) == (100, 0)


def test_workflows_may_use_cicd_deploy_with_its_inputs() -> None:
    workflow = parse_workflow(
        "on: push\n"
        "jobs:\n"
        "  deploy:\n"
        "    runs-on: self-hosted\n"
        "    environment: production\n"
        "    steps:\n"
        "      - uses: cicd/deploy@v1\n"
        "        with:\n"
        "          image: shop:${{ github.sha }}\n"
        "          strategy: canary\n",
        ".github/workflows/deploy.yml",
    )
    assert workflow.jobs["deploy"].steps[0].uses == "cicd/deploy@v1"
    with pytest.raises(WorkflowError) as raised:
        parse_workflow(
            "on: push\njobs:\n  d:\n    runs-on: x\n    steps:\n"
            "      - uses: cicd/deploy@v1\n        with: {imag: x}\n",
            "w.yml",
        )
    assert "unknown input 'imag' for cicd/deploy" in str(raised.value)
    assert "cicd/deploy needs the input 'image'" in str(raised.value)
