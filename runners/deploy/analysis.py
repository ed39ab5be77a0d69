"""The analysis of a deployment step: is the new version healthy under real traffic?

During a window (`step-pause` seconds) the analysis reads HAProxy's own statistics of the new
version's servers every quarter of a second. The counters are cleared when the window opens,
so every figure is the window's own (a slot reused from an earlier replica carries nothing
over):
- error rate: (5xx responses + failed responses + failed connections) / requests, judged once
  the new servers got `min-requests` requests in the window; over `max-error-rate` fails at
  once, without waiting for the window to end;
- latency: the highest of the new servers' average response times (HAProxy's `rtime`) against
  `max-latency-ms`, judged from the same number of requests;
- health: a new server that HAProxy's own health check marked DOWN fails the window;
- Prometheus (when `prometheus-url` is given): at the end of the window, the instant query's
  value (the highest of a vector's) against `prometheus-max`; a query that fails fails the
  window, since the check asked for cannot be made; an empty result is not judged.
Fewer than `min-requests` requests by the end of the window: the error rate and latency are not
judged (said in the step's detail), and the window passes.
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from runners.deploy.haproxy import HAProxy, ServerStats
from runners.deploy.request import DeployRequest

POLL_SECONDS = 0.25
PROMETHEUS_TIMEOUT_SECONDS = 10.0


@dataclass(slots=True)
class Verdict:
    passed: bool
    reason: str  # why it failed, or what was seen when it passed
    detail: dict[str, Any] = field(default_factory=dict)  # JSON-able, for the step's record


@dataclass(slots=True)
class _Window:
    requests: int = 0
    errors: int = 0
    responses_5xx: int = 0
    response_errors: int = 0
    connection_errors: int = 0
    slowest_ms: int = 0
    slowest_slot: int | None = None
    down: list[str] = field(default_factory=list)

    @property
    def error_rate(self) -> float:
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    def detail(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "responses_5xx": self.responses_5xx,
            "response_errors": self.response_errors,
            "connection_errors": self.connection_errors,
            "error_rate": round(self.error_rate, 2),
            "max_response_time_ms": self.slowest_ms,
        }


def analyse(
    haproxy: HAProxy,
    request: DeployRequest,
    slots: Sequence[int],
    version: str,
    seconds: float,
    *,
    wait: Callable[[float], None],
) -> Verdict:
    """Watch the servers in `slots` (the new version, shown as `version` in reasons) for
    `seconds`. `wait(seconds)` sleeps, raising to stop early (cancel, deadline)."""
    haproxy.clear_counters()
    baseline = haproxy.stats()
    end = time.monotonic() + seconds
    while True:
        current = haproxy.stats()
        window = _window(baseline, current, slots)
        failure = _judge(window, request, version)
        if failure:
            detail = window.detail()
            detail["seconds"] = round(seconds - max(0.0, end - time.monotonic()), 2)
            return Verdict(False, failure, detail)
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        wait(min(POLL_SECONDS, remaining))
    detail = window.detail()
    detail["seconds"] = seconds
    judged = window.requests >= request.min_requests
    if not judged:
        detail["not_judged"] = (
            f"{window.requests} requests < min-requests {request.min_requests}: error rate and "
            "latency not judged"
        )
    summary = (
        f"{window.requests} requests to {version}, {window.errors} errors "
        f"({window.error_rate:.1f}%), highest average response time {window.slowest_ms} ms"
    )
    if not judged:
        summary += f" (fewer than min-requests {request.min_requests}: not judged)"
    if request.prometheus_url and request.prometheus_query:
        failure, value = _prometheus(request)
        detail["prometheus_value"] = value
        if failure:
            return Verdict(False, failure, detail)
        if value is not None:
            summary += f"; prometheus {value:g}"
    return Verdict(True, summary, detail)


def _window(
    baseline: Mapping[int, ServerStats], current: Mapping[int, ServerStats], slots: Sequence[int]
) -> _Window:
    window = _Window()
    for slot in slots:
        now = current.get(slot)
        if now is None:
            continue
        before = baseline.get(slot)
        if before is None or now.requests < before.requests:
            before = None  # haproxy restarted meanwhile: its counters started again from zero

        def delta(name: str, now: ServerStats = now, before: ServerStats | None = before) -> int:
            return getattr(now, name) - (getattr(before, name) if before else 0)

        requests = delta("requests")
        window.requests += requests
        window.responses_5xx += delta("responses_5xx")
        window.response_errors += delta("response_errors")
        window.connection_errors += delta("connection_errors")
        if requests > 0 and now.response_time_ms >= window.slowest_ms:
            window.slowest_ms, window.slowest_slot = now.response_time_ms, slot
        if now.status.startswith("DOWN"):
            window.down.append(f"slot{slot}" + (f" ({now.check})" if now.check else ""))
    window.errors = window.responses_5xx + window.response_errors + window.connection_errors
    # A failed connection is not counted as a request: count it in both.
    window.requests = max(window.requests, window.errors)
    return window


def _judge(window: _Window, request: DeployRequest, version: str) -> str:
    """Why the window fails, or ""."""
    if window.down:
        return f"HAProxy's health check marked {', '.join(window.down)} of {version} down"
    if window.requests < request.min_requests:
        return ""
    if window.error_rate > request.max_error_rate:
        return (
            f"error rate {window.error_rate:.1f}% of {window.requests} requests to {version} "
            f"exceeded max-error-rate {request.max_error_rate:g}%"
        )
    limit = request.max_latency_ms
    if limit is not None and window.slowest_ms > limit:
        return (
            f"average response time {window.slowest_ms} ms of slot{window.slowest_slot} "
            f"({version}) exceeded max-latency-ms {limit:g}"
        )
    return ""


def _prometheus(request: DeployRequest) -> tuple[str, float | None]:
    """(why the query fails the window or "", its value)."""
    query = request.prometheus_query or ""
    try:
        value = query_prometheus(request.prometheus_url or "", query)
    except PrometheusError as error:
        return f"prometheus query {query!r} failed: {error}", None
    limit = request.prometheus_max
    if value is not None and limit is not None and (math.isnan(value) or value > limit):
        return (
            f"prometheus query {query!r} returned {value:g}, over prometheus-max {limit:g}",
            value,
        )
    return "", value


class PrometheusError(Exception):
    pass


def query_prometheus(url: str, query: str) -> float | None:
    """The value of an instant query (`GET {url}/api/v1/query`): a scalar's, or the highest of
    a vector's; None for an empty result."""
    address = f"{url.rstrip('/')}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    try:
        with urllib.request.urlopen(address, timeout=PROMETHEUS_TIMEOUT_SECONDS) as response:
            body = json.loads(response.read(4 * 1024 * 1024))
    except urllib.error.HTTPError as error:
        raise PrometheusError(f"{address} answered HTTP {error.code}") from None
    except (OSError, ValueError) as error:
        raise PrometheusError(f"{address}: {error}") from None
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(body, dict) or body.get("status") != "success" or not isinstance(data, dict):
        shown = body.get("error") if isinstance(body, dict) else None
        raise PrometheusError(f"{address} did not answer a result ({shown or 'no data'})")
    try:
        if data.get("resultType") == "scalar":
            return float(data["result"][1])
        if data.get("resultType") == "vector":
            values = [float(item["value"][1]) for item in data["result"]]
            return max(values) if values else None
    except (KeyError, IndexError, TypeError, ValueError):
        raise PrometheusError(f"{address} answered a result that is not a number") from None
    raise PrometheusError(
        f"{address} answered a {data.get('resultType')!r}: the query must give a scalar or an "
        "instant vector"
    )
