"""What every handler shares: API clients, HTTP client, scrape history, settings. One
Runtime lives in kopf's operator memo, from the startup handler to the cleanup handler."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx
import yaml

from lockgate.api import ApplicationSpec
from lockgate.api.application import NotificationTarget
from lockgate.engine import WebhookAnswer
from lockgate.kube import API_THREADS, ApiVersions, Kube, WatchedObjects, Written, load_config
from lockgate.names import shard_name_problem
from lockgate.outbound.http import BoundedClient
from lockgate.outbound.notifications import load_defaults
from lockgate.probes.metrics import MetricsProvider
from lockgate.probes.prometheus import PrometheusMetrics
from lockgate.probes.resources import (
    DockerStats,
    PodMetrics,
    PodMetricsHistory,
    ResourceUsageProvider,
    StatsHistory,
)
from lockgate.probes.traefik_metrics import History, TraefikMetrics
from lockgate.targets.kubernetes import PodInfo, PodSource, SlotInfo, SlotSource
from lockgate.traffic.traefik_observer import TraefikObservers

from .notifier import Notifier
from .redact import Redactor
from .turns import Turns
from .wakeups import WATCHED_PER_SECOND, ApplicationIndex, PollPace, Wakeups

log = logging.getLogger("lockgate.runtime")

ROUNDS_AT_ONCE = API_THREADS
"""Rounds of Deployments in progress at once by default (`Settings.api_threads`); the others
wait their turn before reading anything. A round holds its Deployment and its Application,
decoded, and their models (a few hundred KB once a status has its log and analysis runs)
until it ends; with hundreds of rollouts woken at once, the rounds beyond what the API
threads serve only queued for a thread, each holding all of that."""

if TYPE_CHECKING:  # the Docker fleet keeps its state here, and needs a Runtime to run
    from .fleets.docker import FleetState


def api_threads_from_env() -> int:
    value = os.environ.get("LOCKGATE_API_THREADS") or str(API_THREADS)
    threads = int(value) if value.isdigit() else 0
    if threads < 1:
        raise ValueError(f"LOCKGATE_API_THREADS: {value!r} is not a positive whole number")
    return threads


def shard_from_env() -> str:
    shard = os.environ.get("LOCKGATE_SHARD", "")
    problem = shard_name_problem(shard)
    if problem is not None:
        raise ValueError(f"LOCKGATE_SHARD: {problem}")
    return shard


@dataclass
class Settings:
    traefik_api_url: str | None = None
    traefik_metrics_url: str | None = None
    metrics_port: int = 9108
    notifications_file: str | None = None
    """A YAML or JSON list of notification targets every Application gets in addition to
    its own (docs/notifications.md)."""
    shard: str = ""
    """The shard this operator serves (`--shard`, LOCKGATE_SHARD): the Applications labelled
    `lockgate.dev/shard=<shard>`; "" is the default shard, those without the label."""
    api_threads: int = ROUNDS_AT_ONCE
    """Worker threads for API calls, pooled connections to the API server, and rounds of
    Deployments in progress at once (`--api-threads`, LOCKGATE_API_THREADS)."""

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            traefik_api_url=os.environ.get("LOCKGATE_TRAEFIK_API_URL") or None,
            traefik_metrics_url=os.environ.get("LOCKGATE_TRAEFIK_METRICS_URL") or None,
            metrics_port=int(os.environ.get("LOCKGATE_METRICS_PORT", "9108")),
            notifications_file=os.environ.get("LOCKGATE_NOTIFICATIONS_FILE") or None,
            shard=shard_from_env(),
            api_threads=api_threads_from_env(),
        )


@dataclass
class Runtime:
    kube: Kube
    http: httpx.AsyncClient
    settings: Settings
    redactor: Redactor = field(default_factory=Redactor)
    scrapes: dict[str, History] = field(default_factory=dict)  # metrics URL -> history
    # (namespace, application) -> host connections and route store of a Docker fleet
    fleets: dict[tuple[str, str], FleetState] = field(default_factory=dict)
    # (namespace, application) -> recent Docker stats readings of its containers
    stats: dict[tuple[str, str], StatsHistory] = field(default_factory=dict)
    # (namespace, application) -> recent metrics.k8s.io measurements of its Pods
    pod_metrics: dict[tuple[str, str], PodMetricsHistory] = field(default_factory=dict)
    # Webhook calls in flight or answered, by delivery id, until a round records the answer.
    webhook_calls: dict[str, asyncio.Task[WebhookAnswer]] = field(default_factory=dict)
    # Who to wake when an object changes (the drivers and status loops register here).
    wakeups: Wakeups = field(default_factory=Wakeups)
    # Who polls now, so that all polls together stay within a budget.
    polls: PollPace = field(default_factory=PollPace)
    # Who waits on the Traefik observer: their safety-net looks share a budget too.
    watched: PollPace = field(default_factory=lambda: PollPace(WATCHED_PER_SECOND))
    # Turns for the rounds of Deployments (`settings.api_threads` at a time, turns.py).
    rounds: Turns = field(init=False)
    # (namespace, name) -> a Deployment as this operator's last status write of it left it: the
    # next round reads it from here while the watch has brought nothing newer (handlers.py).
    deployment_writes: dict[tuple[str, str], Written] = field(default_factory=dict)
    # (namespace, name) -> the resourceVersion of a Deployment's last status write that needs
    # no round of its own (it recorded, it moved nothing): its watch event wakes nobody.
    quiet_writes: dict[tuple[str, str], str] = field(default_factory=dict)
    # (namespace, name) -> when (time.monotonic()) the current step's timed wait ends: the
    # round from then on moves the rollout on and takes its turn first (turns.py).
    step_ends: dict[tuple[str, str], float] = field(default_factory=dict)
    # (namespace, application, slot) -> its Pods: kopf's index, once a handler has seen it.
    pod_index: Mapping[tuple[str, str, str], Collection[PodInfo]] | None = None
    # (namespace, application, slot) -> its apps/v1 Deployment: likewise.
    slot_index: Mapping[tuple[str, str, str], Collection[SlotInfo]] | None = None
    # (namespace, name) -> the Application as kopf keeps it (kept.py): likewise.
    application_index: ApplicationIndex | None = None
    # (namespace, name) -> what this operator last wrote of an Application, and the version
    # that write replaced, which the index still held: used instead of the index until the
    # watch brings something newer.
    application_writes: dict[tuple[str, str], tuple[str, dict[str, Any]]] = field(
        default_factory=dict
    )
    # Traefik's route objects lockgate owns, as their watch keeps them (handlers.py).
    route_objects: WatchedObjects = field(default_factory=WatchedObjects)
    notifier: Notifier = field(init=False)
    # One observer per Traefik API URL, looking for everything that waits on Traefik.
    traefik: TraefikObservers = field(init=False)
    # Which version of an API group (Traefik's CRDs) the cluster serves, asked once a minute.
    api_versions: ApiVersions = field(init=False)

    def __post_init__(self) -> None:
        self.rounds = Turns(self.settings.api_threads)
        self.notifier = Notifier(self)
        self.traefik = TraefikObservers(self.http)
        self.api_versions = ApiVersions(self.kube)

    @classmethod
    def from_env(cls) -> Runtime:
        settings = Settings.from_env()
        rt = cls(Kube(load_config(settings.api_threads)), BoundedClient(), settings)
        rt.notifier.defaults = rt.default_notifications()
        return rt

    def default_notifications(self) -> list[NotificationTarget]:
        """The operator's default targets; their URLs are secrets like those of a Secret. A
        file that cannot be read or parsed is logged and ignored (never a crash loop)."""
        path = self.settings.notifications_file
        if not path:
            return []
        try:
            defaults = load_defaults(path)
        except (OSError, ValueError, yaml.YAMLError) as err:
            log.error("notifications file %s ignored: %s", path, self.redactor.text(str(err)))
            return []
        for target in defaults:
            if target.url:
                self.redactor.add(target.url)
        return defaults

    def metrics_provider(self, app: ApplicationSpec) -> MetricsProvider:
        """PromQL against the Application's `metrics.prometheus` when it sets one; otherwise
        Traefik's own counters, from the Application's metricsURL or the operator's default
        (the scrape history is per URL, so windows of every rollout share it)."""
        if app.metrics.prometheus is not None:
            return PrometheusMetrics(self.http, app.metrics.prometheus.url)
        url = app.traffic.traefik.metrics_url or self.settings.traefik_metrics_url
        history = self.scrapes.setdefault(url or "", History())
        return TraefikMetrics(self.http, url, history)

    def resource_provider(
        self, namespace: str, name: str, app: ApplicationSpec
    ) -> ResourceUsageProvider | str:
        """Where the Application's instances' CPU and memory figures come from, or why there
        are none: on Kubernetes the resource metrics API; on Docker hosts the Docker stats API
        through the fleet's host connections (after the fleet's observation made them)."""
        if app.docker is None:
            pods = self.pod_metrics.setdefault((namespace, name), PodMetricsHistory())
            return PodMetrics(self.kube, pods)
        state = self.fleets.get((namespace, name))
        if state is None:
            return "the Docker hosts are not connected yet"
        history = self.stats.setdefault((namespace, name), StatsHistory())
        return DockerStats(state.conns, history)

    def pod_source(self) -> PodSource | None:
        """The Pods of a slot from the watch's index (None before a handler saw it: list)."""
        index = self.pod_index
        if index is None:
            return None

        async def pods(namespace: str, app: str, slot: str) -> list[PodInfo]:
            return list(index.get((namespace, app, slot), ()))

        return pods

    def slot_source(self) -> SlotSource | None:
        """A slot's Deployment from the watch's index (None before a handler saw it: read)."""
        index = self.slot_index
        if index is None:
            return None

        async def slot(namespace: str, app: str, name: str) -> SlotInfo | None:
            return next(iter(index.get((namespace, app, name), ())), None)

        return slot

    async def application(self, namespace: str, name: str) -> dict[str, Any] | None:
        """An Application as a round reads it: from the watch (kopf's index, without its
        status's history), or as this operator last wrote it while the watch has not brought
        that write back yet (a round would otherwise take its own lock for free, say); from
        the API before a handler saw the index. Every write a round makes from it is
        conditional on its resourceVersion, so one a few milliseconds old loses a write,
        never overwrites a newer one."""
        index = self.application_index
        if index is None:
            return await self.kube.get_application(namespace, name)
        kept = next(iter(index.get((namespace, name), ())), None)
        written = self.application_writes.get((namespace, name))
        if written is not None:
            if _version(kept) == written[0]:
                return written[1]
            del self.application_writes[(namespace, name)]  # the watch has moved on
        return None if kept is None else dict(kept)

    def wrote_application(self, obj: Mapping[str, Any], over: str) -> None:
        """What the API answered to a write of an Application conditional on version `over`
        (see `application`). Kept only while the watch still shows `over`: once it shows
        anything else it has brought this write, or a newer one (another writer's, delivered
        before this answer came back), and the answer would be the stale copy."""
        index = self.application_index
        if index is None:
            return
        meta = obj.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        kept = next(iter(index.get(key, ())), None)
        if _version(kept) == over:
            self.application_writes[key] = (over, dict(obj))
        else:
            self.application_writes.pop(key, None)

    def application_moved(self, namespace: str, name: str, meta: Mapping[str, Any]) -> None:
        """The watch brought a version of an Application: what this operator wrote of it
        before is not needed any more, unless the watch still shows the version before that
        write."""
        written = self.application_writes.get((namespace, name))
        if written is not None and written[0] != meta.get("resourceVersion"):
            del self.application_writes[(namespace, name)]

    async def forget_application(self, namespace: str, name: str) -> None:
        """The Application is gone: close its host connections and drop its histories."""
        self.application_writes.pop((namespace, name), None)
        self.stats.pop((namespace, name), None)
        self.pod_metrics.pop((namespace, name), None)
        state = self.fleets.pop((namespace, name), None)
        if state is not None:
            await state.aclose()

    async def aclose(self) -> None:
        """Close the clients this runtime opened (HTTP, and the fleets' host connections)."""
        for task in self.webhook_calls.values():
            task.cancel()
        self.webhook_calls.clear()
        await self.notifier.aclose()
        await self.traefik.aclose()
        while self.fleets:
            _, state = self.fleets.popitem()
            await state.aclose()
        await self.http.aclose()


def _version(obj: Mapping[str, Any] | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")
