"""Traefik's own metrics behind probes.metrics.MetricsProvider, against an in-process
stand-in for its endpoint (httpx.MockTransport: no port, no server). The Prometheus provider:
test_prometheus_analysis.py."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

import httpx

from lockgate.api.deployment import AnalysisQuery
from lockgate.engine import VersionMetrics
from lockgate.probes.metrics import MetricsProvider
from lockgate.probes.traefik_metrics import History, TraefikMetrics

T0 = datetime(2025, 1, 1, 12, 0, 0)
SOURCES = {"stable": "prod-shop-stable-", "canary": "prod-shop-canary-"}


def traefik_text(stable: int, canary: int, canary_errors: int) -> str:
    def line(service: str, code: int, n: int) -> str:
        return (
            f'traefik_service_requests_total{{code="{code}",method="GET",protocol="http",'
            f'service="{service}@kubernetescrd"}} {n}'
        )

    return "\n".join(
        [
            "# TYPE traefik_service_requests_total counter",
            line("prod-shop-stable-8080", 200, stable),
            line("prod-shop-canary-8080", 200, canary - canary_errors),
            line("prod-shop-canary-8080", 500, canary_errors),
            line("other-app-stable-8080", 200, 999),
            "",
        ]
    )


def test_traefik_provider_measures_a_window_from_its_baseline() -> None:
    answers = iter([traefik_text(100, 10, 0), traefik_text(190, 20, 2)])

    def handler(request: httpx.Request) -> httpx.Response:
        assert str(request.url) == "http://traefik:9100/metrics"
        return httpx.Response(200, text=next(answers))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            provider: MetricsProvider = TraefikMetrics(
                http, "http://traefik:9100/metrics", History()
            )
            await provider.keep(T0)
            sample = await provider.window(SOURCES, T0, T0 + timedelta(seconds=30))
        assert sample.error is None
        assert sample.stable == VersionMetrics(90, 0, None)
        assert sample.canary == VersionMetrics(10, 2, None)

    asyncio.run(scenario())


def test_traefik_provider_says_why_it_has_no_figures() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(503)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as http:
            none = await TraefikMetrics(http, None, History()).window(SOURCES, T0, T0)
            down = await TraefikMetrics(http, "http://t/metrics", History()).window(SOURCES, T0, T0)
        assert none.error == "no Traefik metricsURL configured"
        assert down.error is not None and down.error.startswith("Traefik metrics at http://t/")

    asyncio.run(scenario())


def test_traefik_provider_first_window_collects_a_baseline() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=traefik_text(1, 1, 0))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            provider = TraefikMetrics(http, "http://t/metrics", History())
            first = await provider.window(SOURCES, T0, T0)
            second = await provider.window(SOURCES, T0, T0 + timedelta(seconds=5))
        assert first.error == "first scrape: collecting a baseline"
        assert second.error is None and second.canary == VersionMetrics(0, 0, None)

    asyncio.run(scenario())


def test_traefik_provider_names_its_source_and_cannot_answer_promql() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=traefik_text(1, 1, 0))

    query = AnalysisQuery(name="up", promql="up", max=1)

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            provider = TraefikMetrics(http, "http://t/metrics", History())
            sample = await provider.window(SOURCES, T0, T0, [query])
        assert sample.source == "traefik http://t/metrics"
        assert sample.error is not None
        assert sample.error.startswith("spec.analysis.queries: PromQL gates need spec.metrics")

    asyncio.run(scenario())


def test_traefik_windows_asked_at_once_share_one_scrape() -> None:
    """A hundred rollouts analysing in the same moment read Traefik's page once, not a
    hundred times (with 100 canaries the page is 400 KiB: each read and parse costs 100+ ms
    of CPU, and a hundred at once ran past the read timeout: bench.analysis_cost)."""
    reads = 0
    answers = iter([traefik_text(100, 10, 0), traefik_text(190, 20, 2)])

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.05)  # still in flight when the other windows ask
        return httpx.Response(200, text=next(answers))

    async def scenario() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            history = History()
            await TraefikMetrics(http, "http://traefik:9100/metrics", history).keep(T0)
            providers = [
                TraefikMetrics(http, "http://traefik:9100/metrics", history) for _ in range(100)
            ]
            at = T0 + timedelta(seconds=30)
            samples = await asyncio.gather(*(p.window(SOURCES, T0, at) for p in providers))
        assert reads == 2
        assert {s.canary for s in samples} == {VersionMetrics(10, 2, None)}
        assert len(history.scrapes) == 2

    asyncio.run(scenario())
