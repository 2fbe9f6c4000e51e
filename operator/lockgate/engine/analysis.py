"""Analysis verdicts: Passed, Failed or Inconclusive, from one window of observations."""

from __future__ import annotations

import math
from dataclasses import dataclass

from lockgate.api.deployment import Analysis, MetricsFigures, Verdict, latency_increase_ratio

from .model import MetricsSample, VersionMetrics


@dataclass(frozen=True, slots=True)
class Judgement:
    verdict: Verdict
    reason: str


def _figures(m: VersionMetrics | None) -> MetricsFigures | None:
    if m is None:
        return None
    rate = m.error_rate
    return MetricsFigures(
        requests=m.requests,
        error_rate=None if rate is None else round(rate, 4),
        p95=None if m.p95 is None else round(m.p95, 4),
    )


def figures(sample: MetricsSample) -> tuple[MetricsFigures | None, MetricsFigures | None]:
    return _figures(sample.canary), _figures(sample.stable)


def query_results(sample: MetricsSample) -> dict[str, float] | None:
    """The custom queries' results as the status records them: those with a finite value
    (a status is JSON, which has no NaN or infinity; the reason names the others)."""
    kept = {
        name: value
        for name, value in sample.queries.items()
        if value is not None and math.isfinite(value)
    }
    return kept or None


def judge(
    analysis: Analysis,
    sample: MetricsSample,
    *,
    canary_ready: int,
    canary_wanted: int,
) -> Judgement:
    """Judge one window. Health comes first: traffic figures of missing instances mean little."""
    if canary_ready < canary_wanted:
        return Judgement("Failed", f"canary instances not ready: {canary_ready}/{canary_wanted}")
    if sample.error:
        return Judgement("Inconclusive", f"metrics unavailable: {sample.error}")
    canary, stable = sample.canary, sample.stable
    if canary is None or canary.requests < analysis.min_requests:
        served = 0 if canary is None else canary.requests
        return Judgement(
            "Inconclusive", f"canary served {served} requests < minRequests {analysis.min_requests}"
        )
    failures: list[str] = []
    rate = canary.error_rate or 0.0
    if analysis.max_error_rate is not None and rate > analysis.max_error_rate:
        failures.append(f"canary 5xx ratio {rate:.2f} > maxErrorRate {analysis.max_error_rate}")
    stable_rate = stable.error_rate if stable else None
    if analysis.max_error_rate_increase is not None and stable_rate is not None:
        increase = rate - stable_rate
        if increase > analysis.max_error_rate_increase:
            failures.append(
                f"canary 5xx ratio {rate:.2f} exceeds stable's {stable_rate:.2f} by {increase:.2f}"
                f" > maxErrorRateIncrease {analysis.max_error_rate_increase}"
            )
    if (
        analysis.max_latency_p95_increase is not None
        and canary.p95 is not None
        and stable is not None
        and stable.p95
    ):
        limit = latency_increase_ratio(analysis.max_latency_p95_increase)
        increase = canary.p95 / stable.p95 - 1
        if increase > limit:
            failures.append(
                f"canary p95 {canary.p95 * 1000:.0f}ms is {increase:.0%} over stable's"
                f" {stable.p95 * 1000:.0f}ms > maxLatencyP95Increase {limit:.0%}"
            )
    missing: list[str] = []
    for query in analysis.queries:
        value = sample.queries.get(query.name)
        if value is None:
            missing.append(query.name)
        elif query.max is not None and value > query.max:
            failures.append(f"query {query.name} = {value:g} > max {query.max:g}")
        elif query.min is not None and value < query.min:
            failures.append(f"query {query.name} = {value:g} < min {query.min:g}")
    if failures:
        origin = f" (from {sample.source})" if sample.source else ""
        return Judgement("Failed", "; ".join(failures) + origin)
    if missing:
        # PromQL gates are answered by Prometheus only; no series (or NaN) is no verdict.
        return Judgement(
            "Inconclusive", f"no result from Prometheus for query {', '.join(missing)}"
        )
    return Judgement("Passed", f"canary 5xx ratio {rate:.2f} over {canary.requests} requests")
