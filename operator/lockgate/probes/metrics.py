"""The one seam through which analysis reads traffic figures: a provider turns a window and
the names under which the proxy reports each role's traffic into numbers for the engine.

Traefik's own scrape (`traefik_metrics.TraefikMetrics`) is the provider today; a PromQL
provider (`prometheus.PrometheusMetrics`) implements the same protocol, and admission refuses
`metrics.prometheus` and `analysis.queries` until the controller chooses it per Application.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Protocol

from lockgate.engine import MetricsSample
from lockgate.engine.model import Role


class MetricsProvider(Protocol):
    async def window(
        self, sources: Mapping[Role, str], start: datetime, at: datetime
    ) -> MetricsSample:
        """Canary and stable requests, errors and p95 latency over [start, at]. `sources`:
        per role, the prefix of the leaf-service names the proxy reports that role's
        traffic under. A source that cannot be read is a sample with `error` set, never an
        exception."""
        ...

    async def keep(self, at: datetime) -> None:
        """Remember what a later window starting at `at` needs (a provider with its own
        history, like Prometheus, needs nothing)."""
        ...
