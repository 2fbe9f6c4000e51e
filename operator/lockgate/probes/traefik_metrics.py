"""Analysis figures from Traefik's Prometheus endpoint.

Traefik exposes cumulative counters per service; a window's figures are the differences
between two scrapes. Traefik records requests on the leaf services (the Kubernetes Services
or the file provider's load balancers), not on the weighted parent, so canary and stable are
told apart by the leaf service name.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import httpx
from prometheus_client.parser import text_string_to_metric_families

from lockgate.api.deployment import MSG_QUERIES_NEED_PROMETHEUS, AnalysisQuery
from lockgate.engine import MetricsSample, VersionMetrics
from lockgate.engine.model import Role

REQUESTS = "traefik_service_requests"  # the parser drops the _total suffix
DURATION = "traefik_service_request_duration_seconds"


@dataclass
class ServiceCounters:
    requests: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count


Snapshot = dict[str, ServiceCounters]


def wanted_lines(text: str) -> str:
    """The lines of the two families analysis reads (and their # TYPE lines): with a
    hundred services, the other families are most of the text and of the parsing time."""
    keep = (f"{REQUESTS}_total", f"{DURATION}_bucket", "# TYPE traefik_service_request")
    return "\n".join(line for line in text.splitlines() if line.startswith(keep)) + "\n"


def parse(text: str) -> Snapshot:
    """Counters per Traefik service name (without the @provider suffix)."""
    out: Snapshot = {}
    for family in text_string_to_metric_families(wanted_lines(text)):
        if family.name not in (REQUESTS, DURATION):
            continue
        for sample in family.samples:
            service = sample.labels.get("service", "").split("@")[0]
            if not service:
                continue
            counters = out.setdefault(service, ServiceCounters())
            if family.name == REQUESTS and sample.name.endswith("_total"):
                counters.requests += sample.value
                if sample.labels.get("code", "").startswith("5"):
                    counters.errors += sample.value
            elif sample.name == f"{DURATION}_bucket":
                le = float(sample.labels["le"])
                counters.buckets[le] = counters.buckets.get(le, 0.0) + sample.value
    return out


def p95(buckets: dict[float, float]) -> float | None:
    """95th percentile from cumulative histogram buckets, interpolated within a bucket."""
    bounds = sorted(buckets)
    if not bounds:
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = 0.95 * total
    lower, below = 0.0, 0.0
    for le in bounds:
        count = buckets[le]
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None


def delta(new: ServiceCounters | None, old: ServiceCounters | None) -> VersionMetrics:
    if new is None:
        return VersionMetrics(0)
    old = old or ServiceCounters()
    requests = max(0.0, new.requests - old.requests)
    errors = max(0.0, new.errors - old.errors)
    buckets = {le: max(0.0, c - old.buckets.get(le, 0.0)) for le, c in new.buckets.items()}
    return VersionMetrics(round(requests), round(errors), p95(buckets))


def matching(snapshot: Snapshot, prefix: str) -> ServiceCounters | None:
    """Sum of the services whose name starts with `prefix` (a Service may have several ports)."""
    found = [c for name, c in snapshot.items() if name.startswith(prefix)]
    if not found:
        return None
    total = ServiceCounters()
    for c in found:
        total.requests += c.requests
        total.errors += c.errors
        for le, count in c.buckets.items():
            total.buckets[le] = total.buckets.get(le, 0.0) + count
    return total


@dataclass
class History:
    """Recent scrapes of one Traefik, so a window [start, now] can be measured."""

    keep_seconds: float = 900.0
    scrapes: deque[tuple[datetime, Snapshot]] = field(default_factory=deque)
    # The scrape in flight: windows that ask meanwhile share it instead of each reading
    # and parsing the whole page (100 canaries: 400 KiB, 100+ ms of CPU a parse).
    pending: asyncio.Future[Snapshot | str] | None = None
    # The first scrape this process kept (old ones are pruned; this is not).
    began: datetime | None = None

    async def shared(self, scrape: Callable[[], Awaitable[Snapshot | str]]) -> Snapshot | str:
        if self.pending is None:
            self.pending = asyncio.ensure_future(scrape())
            self.pending.add_done_callback(self._done)
        return await asyncio.shield(self.pending)

    def _done(self, finished: asyncio.Future[Snapshot | str]) -> None:
        if self.pending is finished:
            self.pending = None

    def add(self, at: datetime, snapshot: Snapshot) -> None:
        if self.scrapes and self.scrapes[-1][1] is snapshot:
            return  # a shared scrape, already kept at its first window's time
        self.scrapes.append((at, snapshot))
        if self.began is None:
            self.began = at
        while self.scrapes and (at - self.scrapes[0][0]).total_seconds() > self.keep_seconds:
            self.scrapes.popleft()

    def baseline(self, start: datetime) -> Snapshot | None:
        """The first scrape at or after `start` (or the oldest one, after a restart)."""
        found = self.baseline_at(start)
        return found[1] if found is not None else None

    def baseline_at(self, start: datetime) -> tuple[datetime, Snapshot] | None:
        """The first scrape at or after `start` (or the oldest one), with its time."""
        for at, snapshot in self.scrapes:
            if at >= start:
                return at, snapshot
        return self.scrapes[0] if self.scrapes else None

    def remembers(self, start: datetime) -> bool:
        """Whether this process was reading the counters at `start`: else it began after
        (the operator was restarted) and knows nothing of the time before. (A window longer
        than `keep_seconds` is measured from the oldest scrape kept, as before.)"""
        return self.began is not None and self.began <= start


class TraefikMetrics:
    """The MetricsProvider over Traefik's own /metrics: a window's figures are the counters
    now minus those of the first scrape at or after its start. `history` outlives one
    reconcile (one per metrics URL), so the next window finds its baseline."""

    def __init__(self, http: httpx.AsyncClient, url: str | None, history: History) -> None:
        self.http = http
        self.url = url
        self.history = history
        self.source = f"traefik {url}" if url else None

    async def _scrape(self) -> Snapshot | str:
        """The counters now, or why they could not be read."""
        if not self.url:
            return "no Traefik metricsURL configured"
        return await self.history.shared(self._read)

    async def _read(self) -> Snapshot | str:
        try:
            answer = await self.http.get(self.url or "", timeout=3.0)
            answer.raise_for_status()
        except Exception as err:
            return f"Traefik metrics at {self.url}: {str(err) or type(err).__name__}"
        return await asyncio.to_thread(parse, answer.text)  # CPU-bound: off the event loop

    async def window(
        self,
        sources: Mapping[Role, str],
        start: datetime,
        at: datetime,
        queries: Sequence[AnalysisQuery] = (),
    ) -> MetricsSample:
        if queries:
            # Admission cannot see both objects; the engine's cross-check refuses the pair
            # before a rollout starts, and this keeps one edited mid-rollout from passing.
            return MetricsSample(error=MSG_QUERIES_NEED_PROMETHEUS, source=self.source)
        snapshot = await self._scrape()
        if isinstance(snapshot, str):
            return MetricsSample(error=snapshot, source=self.source)
        found = self.history.baseline_at(start)
        # Figures that begin after `start` say so: the counters before were read by an
        # operator process that is gone (the engine then waits for a whole window).
        since = None if self.history.remembers(start) else (found[0] if found else at)
        self.history.add(at, snapshot)
        if found is None:
            return MetricsSample(
                error="first scrape: collecting a baseline", source=self.source, since=since
            )
        baseline = found[1]
        # Traefik counts requests on the leaf services (the weighted parent has none).
        figures = {
            role: delta(matching(snapshot, prefix), matching(baseline, prefix))
            for role, prefix in sources.items()
        }
        return MetricsSample(
            canary=figures.get("canary"),
            stable=figures.get("stable"),
            source=self.source,
            since=since,
        )

    async def keep(self, at: datetime) -> None:
        snapshot = await self._scrape()
        if not isinstance(snapshot, str):
            self.history.add(at, snapshot)
