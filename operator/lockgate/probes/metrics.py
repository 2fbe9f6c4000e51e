"""The one seam through which analysis reads traffic figures: a provider turns a window and
the names under which the proxy reports each role's traffic into numbers for the engine.

Two providers: Traefik's own scrape (`traefik_metrics.TraefikMetrics`), the default, and
PromQL against a Prometheus server that scrapes Traefik (`prometheus.PrometheusMetrics`),
chosen per Application by `spec.metrics.prometheus` (`controller.runtime.Runtime`). Only the
latter answers a Deployment's `analysis.queries`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Protocol

from lockgate.api.deployment import AnalysisQuery
from lockgate.engine import MetricsSample
from lockgate.engine.model import Role


class MetricsProvider(Protocol):
    async def window(
        self,
        sources: Mapping[Role, str],
        start: datetime,
        at: datetime,
        queries: Sequence[AnalysisQuery] = (),
    ) -> MetricsSample:
        """Canary and stable requests, errors and p95 latency over [start, at], and the
        result of each custom query. `sources`: per role, the prefix of the leaf-service
        names the proxy reports that role's traffic under. A source that cannot be read is a
        sample with `error` set, never an exception; `source` says where figures come from."""
        ...

    async def keep(self, at: datetime) -> None:
        """Remember what a later window starting at `at` needs (a provider with its own
        history, like Prometheus, needs nothing)."""
        ...
