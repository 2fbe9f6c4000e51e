"""Analysis figures from a Prometheus server (PromQL over HTTP)."""

from __future__ import annotations

import httpx

from lockgate.api.deployment import AnalysisQuery
from lockgate.engine import VersionMetrics


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
