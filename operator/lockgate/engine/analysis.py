"""Analysis verdicts: Passed, Failed or Inconclusive, from one window of observations."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from lockgate.api.deployment import Analysis, MetricsFigures, Verdict, increase_ratio

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
        cpu=None if m.cpu is None else round(m.cpu, 4),
        memory=None if m.memory is None else round(m.memory),
    )


# Differences below these are noise, whatever the ratio (an idle process's CPU varies by
# multiples of itself): a canary is over stable only when it is over by more than this too.
CPU_FLOOR = 0.01  # cores (10 millicores)
MEMORY_FLOOR = 4 * 2**20  # bytes (4 MiB)


def cores(value: float) -> str:
    return f"{value:.3f} cores"


def mebibytes(value: float) -> str:
    return f"{value / 2**20:.0f}MiB"


@dataclass(frozen=True, slots=True)
class ResourceGate:
    """One resource threshold: CPU or memory, per instance, canary against stable."""

    name: str  # as the reason says it: "CPU", "memory"
    field: str  # the Analysis field, as the reason names it
    limit: int | str | None
    floor: float
    show: Callable[[float], str]

    def judge(self, canary: float | None, stable: float | None) -> str | None:
        """Why the canary fails this gate; None when it passes. Both figures are known."""
        assert self.limit is not None and canary is not None and stable is not None
        limit = increase_ratio(self.limit)
        if canary - stable <= self.floor:
            return None
        if stable > 0:
            increase = canary / stable - 1
            if increase <= limit:
                return None
            over = f"is {increase:.0%} over"
        else:
            over = "is over"
        return (
            f"canary {self.name} {self.show(canary)} {over} stable's {self.show(stable)}"
            f" > {self.field} {limit:.0%}"
        )


def resource_gates(analysis: Analysis) -> list[tuple[ResourceGate, str]]:
    """The resource thresholds the analysis sets, each with the VersionMetrics attribute."""
    gates = [
        (ResourceGate("CPU", "maxCpuIncrease", analysis.max_cpu_increase, CPU_FLOOR, cores), "cpu"),
        (
            ResourceGate(
                "memory", "maxMemoryIncrease", analysis.max_memory_increase, MEMORY_FLOOR, mebibytes
            ),
            "memory",
        ),
    ]
    return [(gate, attr) for gate, attr in gates if gate.limit is not None]


def wants_resources(analysis: Analysis | None) -> bool:
    """Whether the analysis needs the instances' CPU and memory figures."""
    return analysis is not None and bool(resource_gates(analysis))


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
        limit = increase_ratio(analysis.max_latency_p95_increase)
        increase = canary.p95 / stable.p95 - 1
        if increase > limit:
            failures.append(
                f"canary p95 {canary.p95 * 1000:.0f}ms is {increase:.0%} over stable's"
                f" {stable.p95 * 1000:.0f}ms > maxLatencyP95Increase {limit:.0%}"
            )
    unmeasured: list[str] = []
    for gate, attr in resource_gates(analysis):
        canary_value = getattr(canary, attr)
        stable_value = getattr(stable, attr) if stable is not None else None
        if sample.resource_error or canary_value is None or stable_value is None:
            unmeasured.append(gate.name)
            continue
        failure = gate.judge(canary_value, stable_value)
        if failure:
            failures.append(failure)
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
    if unmeasured:
        # A resource gate without both figures gives no verdict, never a pass.
        why = sample.resource_error or "no figures for both canary and stable"
        return Judgement("Inconclusive", f"{' and '.join(unmeasured)} use not measured: {why}")
    if missing:
        # PromQL gates are answered by Prometheus only; no series (or NaN) is no verdict.
        return Judgement(
            "Inconclusive", f"no result from Prometheus for query {', '.join(missing)}"
        )
    passed = f"canary 5xx ratio {rate:.2f} over {canary.requests} requests"
    for gate, attr in resource_gates(analysis):
        passed += (
            f"; {gate.name} {gate.show(getattr(canary, attr))}"
            f" against stable's {gate.show(getattr(stable, attr))}"
        )
    return Judgement("Passed", passed)
