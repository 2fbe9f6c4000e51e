"""Analysis figures from a Prometheus server (PromQL over its HTTP API, `/api/v1/query`).

The controller chooses this provider for an Application that sets `metrics.prometheus`.
Prometheus scrapes Traefik, so the figures are Traefik's counters as for the Traefik provider,
selected by the same leaf-service names, but the window is PromQL's: each figure is one
instant query evaluated at the window's end over a range as long as the window.

Per role (canary, stable), two queries:
- requests and 5xx by status code:
  `sum by (code) (increase(traefik_service_requests_total{service=~"<role>"}[<window>]))`
  (`increase` is `rate` times the window: a count of requests, which `minRequests` compares);
- p95 latency: `histogram_quantile(0.95, sum by (le) (rate(
  traefik_service_request_duration_seconds_bucket{service=~"<role>"}[<window>])))`.
Then each of the Deployment's `analysis.queries` with `$canary`, `$stable` (the same regular
expressions) and `$window` (e.g. `30s`) replaced.

Nothing here ever passes for lack of data: Prometheus unreachable or refusing a query, or no
series for the canary, is a sample with `error` set (the engine judges it Inconclusive), and a
custom query without a value (no series, NaN) is left without a result (Inconclusive too).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar, cast

import httpx

from lockgate.api.deployment import AnalysisQuery
from lockgate.engine import MetricsSample, VersionMetrics
from lockgate.engine.model import Role

REQUESTS = "traefik_service_requests_total"
DURATION_BUCKETS = "traefik_service_request_duration_seconds_bucket"
TIMEOUT_S = 5.0


class PrometheusError(RuntimeError):
    """Prometheus gave no usable answer; the message names it (and the query, if any)."""


Series = list[tuple[dict[str, str], float]]  # an instant vector: (labels, value) per series


def regex_literal(text: str) -> str:
    """`text` matched literally by a regular expression written inside a PromQL double-quoted
    string (re.escape would write `\\-`, which PromQL's Go-style string escapes refuse)."""
    return "".join("\\\\" + c if c in ".*+?^$()[]{}|\\" else c for c in text)


def service_regex(prefix: str) -> str:
    """The Traefik services of one role: those whose name starts with `prefix`, as
    traefik_metrics.matching selects them (Prometheus anchors the match at both ends)."""
    return regex_literal(prefix) + ".*"


def window_text(seconds: int) -> str:
    return f"{max(1, seconds)}s"


def requests_query(regex: str, window: str) -> str:
    """Requests of one role over the window, one series per status code."""
    return f'sum by (code) (increase({REQUESTS}{{service=~"{regex}"}}[{window}]))'


def p95_query(regex: str, window: str) -> str:
    """The 95th percentile latency of one role over the window, in seconds."""
    return (
        "histogram_quantile(0.95, sum by (le) ("
        f'rate({DURATION_BUCKETS}{{service=~"{regex}"}}[{window}])))'
    )


def substitute(promql: str, canary: str, stable: str, window: str) -> str:
    """A custom query with its placeholders replaced: `$canary` and `$stable` by the regular
    expressions of the roles' Traefik services (for `service=~"$canary"`), `$window` by the
    analysis window."""
    return promql.replace("$canary", canary).replace("$stable", stable).replace("$window", window)


def _number(text: Any) -> float:
    return float(text)  # Prometheus writes numbers as strings: "0.25", "NaN", "+Inf"


async def query(
    http: httpx.AsyncClient, base_url: str, promql: str, at: datetime, what: str = "query"
) -> Series:
    """Evaluate `promql` at `at`: the series of an instant vector (a scalar is one series
    without labels). Raises PrometheusError naming Prometheus and `what`."""
    where = f"Prometheus at {base_url}"
    try:
        answer = await http.get(
            f"{base_url.rstrip('/')}/api/v1/query",
            params={"query": promql, "time": f"{at.timestamp():.3f}"},
            timeout=TIMEOUT_S,
        )
    except httpx.HTTPError as err:
        raise PrometheusError(f"{where} unreachable: {str(err) or type(err).__name__}") from None
    try:
        body = answer.json()
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("status") != "success":
        detail = body.get("error") if isinstance(body, dict) else None
        raise PrometheusError(
            f"{where} refused {what} (HTTP {answer.status_code}): "
            f"{detail or answer.text[:200] or 'no answer'}"
        )
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if not isinstance(result, list):
        raise PrometheusError(f"{where}: {what} gave a malformed result, not a number")
    try:
        if kind == "scalar":
            return [({}, _number(result[1]))]
        if kind == "vector":
            return [(dict(s.get("metric") or {}), _number(s["value"][1])) for s in result]
    except (TypeError, KeyError, IndexError, ValueError):
        pass
    raise PrometheusError(f"{where}: {what} gave a {kind or 'malformed'} result, not a number")


T = TypeVar("T")


async def _all(calls: Sequence[Awaitable[T]]) -> list[T]:
    """The answers of `calls` run side by side: a round holding one of the turns waits for
    the slowest query, not for the sum of them (an analysis asks four). All end before the
    first failure in their order is raised: the same error as one after another, and no
    query left behind."""
    answers = await asyncio.gather(*calls, return_exceptions=True)
    for answer in answers:
        if isinstance(answer, BaseException):
            raise answer
    return cast(list[T], answers)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


async def version_metrics(
    http: httpx.AsyncClient, base_url: str, regex: str, window: str, at: datetime, role: Role
) -> VersionMetrics | None:
    """One role's figures over the window; None when Prometheus has no series for it."""
    by_code, latency = await _all(
        [
            query(http, base_url, requests_query(regex, window), at, f"{role} requests"),
            query(http, base_url, p95_query(regex, window), at, f"{role} p95"),
        ]
    )
    if not by_code:
        return None
    counts = [(labels.get("code", ""), value) for labels, value in by_code if math.isfinite(value)]
    requests = sum(value for _, value in counts)
    errors = sum(value for code, value in counts if code.startswith("5"))
    p95 = _finite(latency[0][1]) if len(latency) == 1 else None  # NaN: no requests
    return VersionMetrics(round(requests), round(errors), p95)


async def custom_query(
    http: httpx.AsyncClient, base_url: str, q: AnalysisQuery, promql: str, at: datetime
) -> float | None:
    """The one number a custom query returns; None when it has no series or is NaN."""
    series = await query(http, base_url, promql, at, f"query {q.name}")
    if len(series) > 1:
        raise PrometheusError(
            f"Prometheus at {base_url}: query {q.name} returned {len(series)} series, not "
            "one number (aggregate it, e.g. sum(...) or max(...))"
        )
    if not series or math.isnan(series[0][1]):
        return None
    return series[0][1]


class PrometheusMetrics:
    """The MetricsProvider over PromQL: Traefik's counters as a Prometheus server scraped
    them, so no history is kept here."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url
        self.source = f"prometheus {base_url}"

    async def window(
        self,
        sources: Mapping[Role, str],
        start: datetime,
        at: datetime,
        queries: Sequence[AnalysisQuery] = (),
    ) -> MetricsSample:
        window = window_text(round((at - start).total_seconds()))
        regex: dict[Role, str] = {role: service_regex(p) for role, p in sources.items()}
        try:
            answers = await _all(
                [
                    version_metrics(self.http, self.base_url, r, window, at, role)
                    for role, r in regex.items()
                ]
            )
            figures = dict(zip(regex, answers, strict=True))
            if "canary" in regex and figures.get("canary") is None:
                return self._error(
                    f"Prometheus at {self.base_url} has no series for the canary over {window}"
                    f' ({REQUESTS}{{service=~"{regex["canary"]}"}})'
                )
            numbers = await _all(
                [
                    custom_query(
                        self.http,
                        self.base_url,
                        q,
                        substitute(
                            q.promql, regex.get("canary", ""), regex.get("stable", ""), window
                        ),
                        at,
                    )
                    for q in queries
                ]
            )
            results = {q.name: number for q, number in zip(queries, numbers, strict=True)}
        except PrometheusError as err:
            return self._error(str(err))
        return MetricsSample(
            canary=figures.get("canary"),
            stable=figures.get("stable") or VersionMetrics(0),
            queries=results,
            source=self.source,
        )

    def _error(self, why: str) -> MetricsSample:
        return MetricsSample(error=why, source=self.source)

    async def keep(self, at: datetime) -> None:
        return None  # Prometheus keeps the history itself
