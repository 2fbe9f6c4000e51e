"""Analysis figures from a Prometheus server (PromQL over HTTP).

Not chosen by the controller yet: admission refuses `metrics.prometheus` and
`analysis.queries` until it is (the next analysis issue wires it through `MetricsProvider`).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

import httpx

from lockgate.api.deployment import AnalysisQuery
from lockgate.engine import MetricsSample, VersionMetrics
from lockgate.engine.model import Role


class PrometheusError(RuntimeError):
    pass


async def query_scalar(http: httpx.AsyncClient, base_url: str, promql: str) -> float | None:
    try:
        answer = await http.get(
            f"{base_url.rstrip('/')}/api/v1/query", params={"query": promql}, timeout=5.0
        )
    except httpx.HTTPError as err:
        raise PrometheusError(f"Prometheus at {base_url} unreachable: {err}") from None
    if answer.status_code != 200:
        raise PrometheusError(f"Prometheus answered {answer.status_code}: {answer.text[:200]}")
    data = answer.json().get("data", {})
    result = data.get("result", [])
    if not result:
        return None
    value = float(result[0]["value"][1])
    return None if value != value else value  # NaN means no data


async def version_metrics(
    http: httpx.AsyncClient, base_url: str, service_regex: str, window_seconds: int
) -> VersionMetrics:
    selector = f'service=~"{service_regex}"'
    window = f"{max(1, window_seconds)}s"
    requests = await query_scalar(
        http, base_url, f"sum(increase(traefik_service_requests_total{{{selector}}}[{window}]))"
    )
    errors = await query_scalar(
        http,
        base_url,
        f'sum(increase(traefik_service_requests_total{{{selector},code=~"5.."}}[{window}]))',
    )
    latency = await query_scalar(
        http,
        base_url,
        "histogram_quantile(0.95, sum by (le) ("
        f"rate(traefik_service_request_duration_seconds_bucket{{{selector}}}[{window}])))",
    )
    return VersionMetrics(round(requests or 0), round(errors or 0), latency)


async def custom_queries(
    http: httpx.AsyncClient, base_url: str, queries: list[AnalysisQuery], canary: str, stable: str
) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for query in queries:
        promql = query.promql.replace("$canary", canary).replace("$stable", stable)
        out[query.name] = await query_scalar(http, base_url, promql)
    return out


def _regex_literal(text: str) -> str:
    """`text` matched literally by a regex inside a PromQL double-quoted string (re.escape
    would write `\\-`, which PromQL's Go-style string escapes refuse)."""
    return "".join("\\\\" + c if c in ".*+?^$()[]{}|\\" else c for c in text)


class PrometheusMetrics:
    """The MetricsProvider over PromQL: Traefik's counters as a Prometheus server scraped
    them, so no history is kept here."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self.http = http
        self.base_url = base_url

    async def window(
        self, sources: Mapping[Role, str], start: datetime, at: datetime
    ) -> MetricsSample:
        seconds = round((at - start).total_seconds())
        try:
            figures = {
                role: await version_metrics(
                    self.http, self.base_url, _regex_literal(prefix) + ".*", seconds
                )
                for role, prefix in sources.items()
            }
        except PrometheusError as err:
            return MetricsSample(error=str(err))
        return MetricsSample(canary=figures.get("canary"), stable=figures.get("stable"))

    async def keep(self, at: datetime) -> None:
        return None  # Prometheus keeps the history itself
