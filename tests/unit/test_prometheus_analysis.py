"""Analysis through Prometheus: the PromQL lockgate asks for each role, the custom queries'
substitutions and bounds, and never a pass without an answer (unreachable, refused, no
series, NaN), against an in-process Prometheus (tests/unit/fake_prometheus.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from lockgate.api.deployment import Analysis, AnalysisQuery
from lockgate.cli.main import main
from lockgate.engine import MetricsSample, VersionMetrics
from lockgate.engine.analysis import Judgement, judge
from lockgate.engine.model import Role
from lockgate.probes.prometheus import PrometheusMetrics
from tests.unit.fake_prometheus import FakePrometheus, traffic

ROOT = Path(__file__).resolve().parents[2]
URL = "http://prom:9090"
T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
KUBERNETES: dict[Role, str] = {"stable": "prod-shop-stable-", "canary": "prod-shop-canary-"}
DOCKER: dict[Role, str] = {"stable": "shop.eu-stable", "canary": "shop.eu-canary"}


def sample_from(
    prom: FakePrometheus,
    sources: dict[Role, str] = KUBERNETES,
    queries: Sequence[AnalysisQuery] = (),
    seconds: int = 60,
) -> MetricsSample:
    async def scenario() -> MetricsSample:
        async with prom.client() as http:
            provider = PrometheusMetrics(http, URL)
            return await provider.window(sources, T0, T0 + timedelta(seconds=seconds), queries)

    return asyncio.run(scenario())


# --- the PromQL of each role ------------------------------------------------------------------

KUBERNETES_TRAFFIC = {
    "prod-shop-stable-8080@kubernetescrd": traffic(900, 9, p95=0.05),
    "prod-shop-canary-8080@kubernetescrd": traffic(70, 30, p95=0.2),
    # Not the application's: another namespace, another application.
    "staging-shop-canary-8080@kubernetescrd": traffic(5000, 5000, p95=9.0),
    "prod-shopping-canary-8080@kubernetescrd": traffic(5000, 5000, p95=9.0),
}


def test_each_role_is_read_by_its_own_promql_over_the_window() -> None:
    prom = FakePrometheus(KUBERNETES_TRAFFIC)
    sample = sample_from(prom)
    assert sample.error is None, sample.error
    assert sample.canary == VersionMetrics(100, 30, 0.2)
    assert sample.stable == VersionMetrics(909, 9, 0.05)
    assert sample.source == f"prometheus {URL}"
    assert prom.asked == [
        'sum by (code) (increase(traefik_service_requests_total{service=~"prod-shop-stable-.*"}'
        "[60s]))",
        "histogram_quantile(0.95, sum by (le) (rate(traefik_service_request_duration_seconds"
        '_bucket{service=~"prod-shop-stable-.*"}[60s])))',
        'sum by (code) (increase(traefik_service_requests_total{service=~"prod-shop-canary-.*"}'
        "[60s]))",
        "histogram_quantile(0.95, sum by (le) (rate(traefik_service_request_duration_seconds"
        '_bucket{service=~"prod-shop-canary-.*"}[60s])))',
    ]
    # Evaluated at the window's end, over a range as long as the window.
    at = T0 + timedelta(seconds=60)
    assert set(prom.times) == {f"{at.timestamp():.3f}"}


def test_docker_roles_are_the_file_providers_load_balancers_matched_literally() -> None:
    prom = FakePrometheus(
        {
            "shop.eu-stable@file": traffic(80),
            "shop.eu-canary@file": traffic(20, 2),
            "shopXeu-canary@file": traffic(999, 999),  # matched only if "." were a wildcard
        }
    )
    sample = sample_from(prom, DOCKER, seconds=30)
    assert sample.canary == VersionMetrics(22, 2, 0.05)
    assert sample.stable == VersionMetrics(80, 0, 0.05)
    assert 'service=~"shop\\\\.eu-canary.*"' in prom.asked[2]
    assert set(prom.windows) == {30}


def test_a_stable_without_traffic_counts_nothing_and_keeps_the_canary_figures() -> None:
    prom = FakePrometheus({"prod-shop-canary-8080@kubernetescrd": traffic(50)})
    sample = sample_from(prom)
    assert sample.error is None
    assert sample.stable == VersionMetrics(0)
    assert sample.canary == VersionMetrics(50, 0, 0.05)


# --- custom queries ---------------------------------------------------------------------------

RATIO = (
    'sum(rate(traefik_service_requests_total{service=~"$canary",code=~"5.."}[$window]))'
    ' / sum(rate(traefik_service_requests_total{service=~"$stable"}[$window]))'
)
RATIO_ASKED = (
    'sum(rate(traefik_service_requests_total{service=~"prod-shop-canary-.*",code=~"5.."}[60s]))'
    ' / sum(rate(traefik_service_requests_total{service=~"prod-shop-stable-.*"}[60s]))'
)


def query(promql: str = RATIO, name: str = "ratio", **bounds: float) -> AnalysisQuery:
    return AnalysisQuery.model_validate({"name": name, "promql": promql, **(bounds or {"max": 1})})


def test_a_custom_query_gets_each_roles_services_and_the_window() -> None:
    prom = FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: 0.03, "up": 1})
    sample = sample_from(prom, queries=[query(), query("up", name="up")])
    assert sample.error is None, sample.error
    assert sample.queries == {"ratio": 0.03, "up": 1.0}
    assert prom.asked[-2:] == [RATIO_ASKED, "up"]


def test_an_analysis_asks_its_queries_side_by_side() -> None:
    """A round holds one of the operator's turns while it waits for Prometheus: the roles'
    four queries go out at once, then the custom ones at once, so it waits for the slowest
    of each, not for the sum."""
    prom = FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: 0.03, "up": 1})
    in_flight = 0
    asked_beside: list[int] = []  # queries in flight as each one is asked, itself included

    async def answer(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight
        in_flight += 1
        asked_beside.append(in_flight)
        for _ in range(10):  # the round's other queries get their turn to be asked
            await asyncio.sleep(0)
        in_flight -= 1
        return prom.handler(request)

    async def scenario() -> MetricsSample:
        async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
            provider = PrometheusMetrics(http, URL)
            return await provider.window(
                KUBERNETES, T0, T0 + timedelta(seconds=60), [query(), query("up", name="up")]
            )

    sample = asyncio.run(scenario())
    assert sample.error is None, sample.error
    assert sample.canary == VersionMetrics(100, 30, 0.2)
    assert sample.queries == {"ratio": 0.03, "up": 1.0}
    assert asked_beside == [1, 2, 3, 4, 1, 2]


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        (None, "no series"),
        ("NaN", "NaN: 0/0, a rate of nothing"),
    ],
)
def test_a_custom_query_without_a_number_has_no_result(answer: str | None, why: str) -> None:
    prom = FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: answer})
    sample = sample_from(prom, queries=[query()])
    assert sample.error is None
    assert sample.queries == {"ratio": None}, why


def test_an_infinite_result_is_kept_for_the_bounds() -> None:
    prom = FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: "+Inf"})
    assert sample_from(prom, queries=[query()]).queries == {"ratio": math.inf}


# --- no answer is never a figure ---------------------------------------------------------


def unanswered(prom: FakePrometheus, queries: Sequence[AnalysisQuery] = ()) -> str:
    sample = sample_from(prom, queries=queries)
    assert sample.error is not None, sample
    assert sample.canary is None and sample.stable is None and not sample.queries
    assert sample.source == f"prometheus {URL}"
    return sample.error


def test_unreachable_prometheus_is_named() -> None:
    error = unanswered(FakePrometheus(KUBERNETES_TRAFFIC, down=True))
    assert error.startswith(f"Prometheus at {URL} unreachable: "), error
    assert "Connection refused" in error


def test_a_failing_prometheus_is_named_with_its_status() -> None:
    error = unanswered(FakePrometheus(KUBERNETES_TRAFFIC, status=503))
    assert error == f"Prometheus at {URL} refused stable requests (HTTP 503): overloaded"


def test_no_series_for_the_canary_is_named() -> None:
    error = unanswered(FakePrometheus({"prod-shop-stable-8080@kubernetescrd": traffic(100)}))
    assert error == (
        f"Prometheus at {URL} has no series for the canary over 60s "
        '(traefik_service_requests_total{service=~"prod-shop-canary-.*"})'
    )


def test_a_refused_custom_query_is_named() -> None:
    error = unanswered(FakePrometheus(KUBERNETES_TRAFFIC), [query("sum(", name="broken")])
    assert error.startswith(f"Prometheus at {URL} refused query broken (HTTP 400): 1:1: parse")


def test_a_custom_query_of_several_series_is_no_number() -> None:
    prom = FakePrometheus(KUBERNETES_TRAFFIC, answers={"up": [1.0, 0.0]})
    error = unanswered(prom, [query("up", name="up")])
    assert error == (
        f"Prometheus at {URL}: query up returned 2 series, not one number "
        "(aggregate it, e.g. sum(...) or max(...))"
    )


def test_an_answer_that_is_not_prometheus_is_named() -> None:
    error = unanswered(FakePrometheus(KUBERNETES_TRAFFIC, garbage="<html>proxy</html>"))
    assert error == f"Prometheus at {URL} refused stable requests (HTTP 200): <html>proxy</html>"


# --- the verdicts on what Prometheus answers ---------------------------------------------


def analysis(*queries: dict[str, object], min_requests: int = 10) -> Analysis:
    return Analysis.model_validate(
        {"minRequests": min_requests, "maxErrorRate": 0.5, "queries": list(queries)}
    )


def verdict(prom: FakePrometheus, spec: Analysis) -> Judgement:
    sample = sample_from(prom, queries=spec.queries)
    return judge(spec, sample, canary_ready=1, canary_wanted=1)


@pytest.mark.parametrize(
    ("value", "bounds", "failure"),
    [
        (0.03, {"max": 0.05}, None),
        (0.08, {"max": 0.05}, "query ratio = 0.08 > max 0.05"),
        (0.5, {"min": 0.9}, "query ratio = 0.5 < min 0.9"),
        (0.9, {"min": 0.5, "max": 1}, None),
        (0.5, {"min": 0.5, "max": 0.5}, None),
        ("+Inf", {"max": 1}, "query ratio = inf > max 1"),
    ],
)
def test_each_query_is_held_to_its_bounds(
    value: float | str, bounds: dict[str, float], failure: str | None
) -> None:
    prom = FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: value})
    judgement = verdict(prom, analysis({"name": "ratio", "promql": RATIO, **bounds}))
    if failure is None:
        assert judgement.verdict == "Passed", judgement.reason
    else:
        assert judgement.verdict == "Failed"
        assert judgement.reason == f"{failure} (from prometheus {URL})"


def test_the_builtin_figures_fail_naming_prometheus() -> None:
    spec = Analysis.model_validate({"minRequests": 10, "maxErrorRate": 0.05})
    judgement = verdict(FakePrometheus(KUBERNETES_TRAFFIC), spec)
    assert judgement.verdict == "Failed"
    assert judgement.reason == f"canary 5xx ratio 0.30 > maxErrorRate 0.05 (from prometheus {URL})"


NO_ANSWER = [
    pytest.param(FakePrometheus(KUBERNETES_TRAFFIC, down=True), "unreachable", id="down"),
    pytest.param(FakePrometheus(KUBERNETES_TRAFFIC, status=503), "HTTP 503", id="http-503"),
    pytest.param(
        FakePrometheus({"prod-shop-stable-8080@kubernetescrd": traffic(100)}),
        "no series for the canary",
        id="no-canary-series",
    ),
    pytest.param(
        FakePrometheus(KUBERNETES_TRAFFIC, garbage="<html>"), "HTTP 200", id="not-prometheus"
    ),
    pytest.param(
        FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: None}),
        "no result from Prometheus for query ratio",
        id="query-no-series",
    ),
    pytest.param(
        FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: "NaN"}),
        "no result from Prometheus for query ratio",
        id="query-nan",
    ),
    pytest.param(
        FakePrometheus(KUBERNETES_TRAFFIC, answers={RATIO_ASKED: [0.01, 0.02]}),
        "returned 2 series",
        id="query-several-series",
    ),
]


@pytest.mark.parametrize(("prom", "why"), NO_ANSWER)
def test_no_answer_from_prometheus_is_inconclusive_naming_it(
    prom: FakePrometheus, why: str
) -> None:
    """Never a pass, even with minRequests 0 and bounds any number would meet."""
    spec = analysis({"name": "ratio", "promql": RATIO, "min": -1e9}, min_requests=0)
    judgement = verdict(prom, spec)
    assert judgement.verdict == "Inconclusive", judgement.reason
    assert "Prometheus" in judgement.reason and why in judgement.reason, judgement.reason


# --- lockgate plan --------------------------------------------------------------------------


def test_plan_names_the_queries_and_where_the_figures_come_from(
    capsys: pytest.CaptureFixture[str],
) -> None:
    example = ROOT / "manifests/examples/kubernetes/prometheus/canary.yaml"
    assert main(["plan", "-f", str(example)]) == 0
    out = capsys.readouterr().out
    assert "query canary-p99 (max 0.5), query canary-5xx-per-second (max 1)" in out
    assert "figures:     from Prometheus at http://prometheus.monitoring:9090" in out
    assert "INVALID" not in out


def test_plan_refuses_queries_without_prometheus(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "application.yaml").write_text(
        "apiVersion: lockgate.dev/v1alpha1\nkind: Application\nmetadata: {name: shop}\n"
        "spec: {kubernetes: {replicas: 2}}\n"
    )
    (tmp_path / "canary.yaml").write_text(
        "apiVersion: lockgate.dev/v1alpha1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {application: shop, image: 'shop:2', strategy: {type: Canary, canary: "
        "{steps: [50, 100]}}, analysis: {queries: [{name: up, promql: up, min: 1}]}}\n"
    )
    main(["plan", "-f", str(tmp_path / "canary.yaml")])
    out = capsys.readouterr().out
    assert "INVALID:     spec.analysis.queries: PromQL gates need spec.metrics.prometheus" in out
    assert "figures:     from Traefik's metrics" in out
