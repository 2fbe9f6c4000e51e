"""The seam through which analysis reads the instances' CPU and memory: a provider turns the
instances of each role and a window into per-instance averages for the engine.

One provider per target, chosen by `controller.runtime.Runtime.resource_provider`:
`DockerStats` (the Docker stats API of each host, over the Docker target's own connections)
for Applications on Docker hosts; `PodMetrics` (the resource metrics API, metrics.k8s.io,
served by metrics-server) for Applications on Kubernetes, whose instances are
`<namespace>/<pod>` (`KubernetesFleet.resource_instances`). A provider never raises for a
figure it cannot read: the sample says why in `error`.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from lockgate.engine import MetricsSample, VersionMetrics
from lockgate.engine.model import Role
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import DockerTargetError
from lockgate.kube import Kube

from .kube_resources import PodUsage, QuantityError, pod_usage


@dataclass(frozen=True, slots=True)
class Usage:
    """One role's resource use, per instance, averaged over the window (None: unknown)."""

    cpu: float | None = None  # cores
    memory: float | None = None  # bytes, without the reclaimable file cache


@dataclass(frozen=True, slots=True)
class ResourceSample:
    usage: Mapping[Role, Usage] = field(default_factory=dict)
    error: str | None = None  # why figures are missing (some or all)


class ResourceUsageProvider(Protocol):
    async def usage(
        self, instances: Mapping[Role, Sequence[str]], start: datetime, at: datetime
    ) -> ResourceSample:
        """Per role, the per-instance average CPU and memory of `instances` (the target's
        own instance ids) over [start, at]. Never raises: `error` says what is missing."""
        ...

    async def keep(self, instances: Mapping[Role, Sequence[str]], at: datetime) -> None:
        """Remember what a later window starting at `at` needs (cumulative counters)."""
        ...


def with_resources(sample: MetricsSample, resources: ResourceSample) -> MetricsSample:
    """The traffic sample with each role's CPU and memory figures added."""

    def add(metrics: VersionMetrics | None, role: Role) -> VersionMetrics | None:
        usage = resources.usage.get(role)
        if usage is None:
            return metrics
        base = metrics if metrics is not None else VersionMetrics(0)
        return dataclasses.replace(base, cpu=usage.cpu, memory=usage.memory)

    return dataclasses.replace(
        sample,
        canary=add(sample.canary, "canary"),
        stable=add(sample.stable, "stable"),
        resource_error=resources.error,
    )


# ---------------------------------------------------------------------- Docker stats API


@dataclass(frozen=True, slots=True)
class StatsPoint:
    """One reading of a container's stats (GET /containers/{id}/stats, one-shot)."""

    cpu_total: int  # cpu_stats.cpu_usage.total_usage: ns of CPU used since it started
    system: int | None  # cpu_stats.system_cpu_usage: ns of host CPU time (all CPUs)
    online_cpus: int  # CPUs the system figure counts
    memory: int | None  # bytes in use without the inactive file cache


def parse_stats(stats: Mapping[str, Any]) -> StatsPoint | None:
    """A stats answer as a StatsPoint; None for a container that is not running (the daemon
    answers zeros and no memory figures then)."""
    cpu = stats.get("cpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    if not total:
        return None
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or ())
    memory_stats = stats.get("memory_stats") or {}
    usage = memory_stats.get("usage")
    memory = None
    if usage is not None:
        detail = memory_stats.get("stats") or {}
        # cgroup v1: total_inactive_file (hierarchical); v2: inactive_file (`docker stats`).
        inactive = detail.get("total_inactive_file", detail.get("inactive_file", 0))
        memory = usage - inactive if inactive < usage else usage
    return StatsPoint(int(total), cpu.get("system_cpu_usage"), int(online or 1), memory)


def cpu_cores(
    before: StatsPoint, after: StatsPoint, before_at: datetime, after_at: datetime
) -> float | None:
    """Cores used between two readings of one container's cumulative counter: its share of
    the host's CPU time times the CPUs counted, or (without the system figure) CPU seconds
    per second. None when the counter went back (the container restarted) or no time passed."""
    used = after.cpu_total - before.cpu_total
    if used < 0:
        return None
    if before.system is not None and after.system is not None:
        system = after.system - before.system
        if system > 0:
            return used / system * after.online_cpus
    seconds = (after_at - before_at).total_seconds()
    return used / 1e9 / seconds if seconds > 0 else None


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


@dataclass
class StatsHistory:
    """Recent readings per container (`host/id`), so a window [start, now] can be measured."""

    keep_seconds: float = 900.0
    every_seconds: float = 1.0  # readings closer together than this add nothing
    readings: dict[str, deque[tuple[datetime, StatsPoint]]] = field(default_factory=dict)

    def due(self, key: str, at: datetime) -> bool:
        kept = self.readings.get(key)
        return not kept or (at - kept[-1][0]).total_seconds() >= self.every_seconds

    def add(self, key: str, at: datetime, point: StatsPoint) -> None:
        kept = self.readings.setdefault(key, deque())
        kept.append((at, point))
        for name in list(self.readings):
            old = self.readings[name]
            while old and (at - old[0][0]).total_seconds() > self.keep_seconds:
                old.popleft()
            if not old:
                del self.readings[name]

    def window(self, key: str, start: datetime, at: datetime) -> Usage:
        """One container's CPU (from its first reading at or after `start` to its last) and
        mean memory over the readings in [start, at]."""
        inside = [(t, p) for t, p in self.readings.get(key, ()) if start <= t <= at]
        cpu = None
        if len(inside) >= 2:
            (t0, first), (t1, last) = inside[0], inside[-1]
            cpu = cpu_cores(first, last, t0, t1)
        memory = mean([p.memory for _, p in inside if p.memory is not None])
        return Usage(cpu, memory)


def split(instance: str) -> tuple[str, str]:
    host, _, container = instance.partition("/")
    return host, container


class DockerStats:
    """The ResourceUsageProvider of Docker hosts: each container's stats (one-shot, no
    two-cycle wait), read through the fleet's host connections in worker threads. CPU comes
    from the cumulative counter between the first reading at or after the window's start
    (kept by `keep` in a history that outlives one reconcile) and now; memory is the mean
    of the readings in the window."""

    def __init__(self, conns: HostConnections, history: StatsHistory) -> None:
        self.conns = conns
        self.history = history

    async def _read(self, instance: str) -> StatsPoint | str | None:
        host, container = split(instance)
        try:
            stats = await self.conns.run(
                host, lambda c: c.api.stats(container, stream=False, one_shot=True)
            )
        except DockerTargetError as err:
            return f"host {err.host}: {err.reason}"
        return parse_stats(stats)

    async def _sample(self, instances: Sequence[str], at: datetime, force: bool) -> list[str]:
        """Read and keep the instances due a reading; the errors."""
        keys = [i for i in instances if force or self.history.due(i, at)]
        errors: list[str] = []
        results = await asyncio.gather(*(self._read(i) for i in keys))
        for key, result in zip(keys, results, strict=True):
            if isinstance(result, str):
                errors.append(result)
            elif result is not None:
                self.history.add(key, at, result)
        return errors

    async def keep(self, instances: Mapping[Role, Sequence[str]], at: datetime) -> None:
        await self._sample([i for ids in instances.values() for i in ids], at, force=False)

    async def usage(
        self, instances: Mapping[Role, Sequence[str]], start: datetime, at: datetime
    ) -> ResourceSample:
        errors = await self._sample([i for ids in instances.values() for i in ids], at, True)
        return role_usage(instances, lambda i: self.history.window(i, start, at), errors)


def role_usage(
    instances: Mapping[Role, Sequence[str]],
    window: Callable[[str], Usage],
    errors: Sequence[str],
) -> ResourceSample:
    """Each role's per-instance mean of `window(instance)`, and why figures are missing."""
    usage: dict[Role, Usage] = {}
    for role, ids in instances.items():
        each = [window(i) for i in ids]
        cpu = mean([u.cpu for u in each if u.cpu is not None])
        memory = mean([u.memory for u in each if u.memory is not None])
        usage[role] = Usage(cpu, memory)
    if errors:
        return ResourceSample(usage, "; ".join(sorted(set(errors))))
    missing = [role for role in ("canary", "stable") if not instances.get(role)]
    if missing:
        return ResourceSample(usage, f"no running {' or '.join(missing)} instances")
    return ResourceSample(usage)


# ------------------------------------------------------------- Kubernetes: metrics.k8s.io


@dataclass
class PodMetricsHistory:
    """metrics-server's recent measurements per Pod (`namespace/pod`), each a CPU rate and a
    memory working set over its own window (its resolution, 10 s or more), kept so a longer
    analysis window averages every measurement that ended inside it."""

    keep_seconds: float = 900.0
    every_seconds: float = 5.0  # listings closer together than this add nothing new
    readings: dict[str, deque[PodUsage]] = field(default_factory=dict)
    listed_at: dict[str, datetime] = field(default_factory=dict)  # namespace -> last listing

    def due(self, namespace: str, at: datetime) -> bool:
        last = self.listed_at.get(namespace)
        return last is None or (at - last).total_seconds() >= self.every_seconds

    def add(self, key: str, usage: PodUsage, at: datetime) -> None:
        if usage.measured_at is None:
            usage = dataclasses.replace(usage, measured_at=at)
        kept = self.readings.setdefault(key, deque())
        if kept and kept[-1].measured_at == usage.measured_at:
            return  # the same measurement, listed again
        kept.append(usage)
        horizon = at - timedelta(seconds=self.keep_seconds)
        for name in list(self.readings):
            old = self.readings[name]
            while old and old[0].measured_at is not None and old[0].measured_at < horizon:
                old.popleft()
            if not old:
                del self.readings[name]

    def window(self, key: str, start: datetime, at: datetime) -> Usage:
        """The mean of the measurements that ended in [start, at]; when the window is shorter
        than metrics-server's resolution and none did, its newest one (what it serves now)."""
        kept = [u for u in self.readings.get(key, ()) if u.measured_at and u.measured_at <= at]
        inside = [u for u in kept if u.measured_at and u.measured_at >= start] or kept[-1:]
        return Usage(mean([u.cpu_cores for u in inside]), mean([u.memory_bytes for u in inside]))


def metrics_api_error(err: ApiException, namespace: str) -> str:
    if err.status == 404:
        return "metrics.k8s.io is not served by this cluster (is metrics-server installed?)"
    if err.status == 403:
        return f"the operator may not list pods.metrics.k8s.io in namespace {namespace} (RBAC)"
    if err.status == 503:
        return "metrics.k8s.io is unavailable (503: is metrics-server running?)"
    return f"metrics.k8s.io answered {err.status} {err.reason}"


class PodMetrics:
    """The ResourceUsageProvider of Kubernetes: each Pod's CPU and memory from the resource
    metrics API, one listing per namespace (at most every few seconds while a window runs,
    and at its end). A Pod metrics-server has not measured twice yet has no figure."""

    def __init__(self, kube: Kube, history: PodMetricsHistory) -> None:
        self.kube = kube
        self.history = history

    async def _list(self, instances: Sequence[str], at: datetime, force: bool) -> list[str]:
        """Read and keep the Pods' measurements, per namespace; the errors."""
        by_namespace: dict[str, list[str]] = {}
        for instance in instances:
            namespace, _, pod = instance.partition("/")
            by_namespace.setdefault(namespace, []).append(pod)
        errors: list[str] = []
        for namespace, pods in by_namespace.items():
            if not (force or self.history.due(namespace, at)):
                continue
            self.history.listed_at[namespace] = at
            try:
                measured = await pod_usage(self.kube, namespace, pods)
            except ApiException as err:
                errors.append(metrics_api_error(err, namespace))
                continue
            except (HTTPError, OSError, QuantityError) as err:
                errors.append(f"metrics.k8s.io: {err}")
                continue
            for pod, usage in measured.items():
                self.history.add(f"{namespace}/{pod}", usage, at)
        return errors

    async def keep(self, instances: Mapping[Role, Sequence[str]], at: datetime) -> None:
        await self._list([i for ids in instances.values() for i in ids], at, force=False)

    async def usage(
        self, instances: Mapping[Role, Sequence[str]], start: datetime, at: datetime
    ) -> ResourceSample:
        pods = [i for ids in instances.values() for i in ids]
        errors = await self._list(pods, at, True)
        windows = {i: self.history.window(i, start, at) for i in pods}
        sample = role_usage(instances, windows.__getitem__, errors)
        if sample.error is None:
            unmeasured = sorted(i.partition("/")[2] for i in pods if windows[i].cpu is None)
            if unmeasured:
                return ResourceSample(
                    sample.usage,
                    f"metrics.k8s.io has no figures yet for Pod {', '.join(unmeasured)}"
                    " (metrics-server measures a Pod from its second scrape)",
                )
        return sample
