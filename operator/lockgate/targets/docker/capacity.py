"""Whether hosts have room for the instances a rollout adds: `docker info` totals against
the limits of the running containers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import DockerTargetError

from .resources import Resources

if TYPE_CHECKING:
    import docker

StrategyType = Literal["Recreate", "Rolling", "BlueGreen", "Canary"]


@dataclass(frozen=True)
class HostCapacity:
    """What a host has and what running containers reserve by their limits."""

    host: str
    total: Resources
    reserved: Resources

    @property
    def free(self) -> Resources:
        return Resources(
            self.total.nano_cpus - self.reserved.nano_cpus, self.total.memory - self.reserved.memory
        )


@dataclass(frozen=True)
class Shortfall:
    host: str
    resource: Literal["cpu", "memory"]
    needed: int  # nano-CPUs or bytes
    available: int

    def __str__(self) -> str:
        if self.resource == "cpu":
            return (
                f"host {self.host}: not enough CPU: needs {self.needed / 1e9:g} more, "
                f"{max(self.available, 0) / 1e9:g} free"
            )
        return (
            f"host {self.host}: not enough memory: needs {_mib(self.needed)} more, "
            f"{_mib(max(self.available, 0))} free"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}Mi"


def extra_instances(
    strategy: StrategyType,
    hosts: Sequence[str],
    instances_per_host: int,
    *,
    canary_units: Sequence[str] = (),
    existing: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Instances each host must hold beyond what runs there now, at the rollout's peak.

    Every host gets a new set beside the old one at some point (blue-green all at once,
    rolling one batch at a time, start-first), so each needs room for `instances_per_host`
    more; a canary needs that only on the hosts its first step starts it on (`canary_units`,
    from the engine's plan; the operator checks each host again when it first starts the
    new set there). Recreate stops the old set
    first: a host needs room only for what it does not already run (`existing`, the
    application's instances there).
    """
    if strategy == "Recreate":
        have = existing or {}
        return {h: max(0, instances_per_host - have.get(h, 0)) for h in hosts}
    if strategy == "Canary":
        return {h: (instances_per_host if h in canary_units else 0) for h in hosts}
    return dict.fromkeys(hosts, instances_per_host)


def shortfalls(
    capacity: Mapping[str, HostCapacity],
    extra: Mapping[str, int],
    per_instance: Resources,
) -> list[Shortfall]:
    """Hosts that cannot hold their extra instances, per resource. A resource without a
    limit (0) is not checked: docker cannot reserve what is not limited."""
    out: list[Shortfall] = []
    for host, n in extra.items():
        if n <= 0 or host not in capacity:
            continue
        need = per_instance.times(n)
        free = capacity[host].free
        if need.nano_cpus and need.nano_cpus > free.nano_cpus:
            out.append(Shortfall(host, "cpu", need.nano_cpus, free.nano_cpus))
        if need.memory and need.memory > free.memory:
            out.append(Shortfall(host, "memory", need.memory, free.memory))
    return out


def _capacity_sync(client: docker.DockerClient, host: str) -> HostCapacity:
    import docker.errors  # loaded with the first Docker host (tests/unit/test_footprint.py)

    info = client.info()
    total = Resources(int(info.get("NCPU", 0)) * 1_000_000_000, int(info.get("MemTotal", 0)))
    reserved = Resources()
    for c in client.api.containers(filters={"status": "running"}):
        try:
            hc = client.api.inspect_container(c["Id"]).get("HostConfig") or {}
        except docker.errors.NotFound:
            # Removed since the listing (other applications' containers come and go on a
            # shared host): it reserves nothing now. Raised, it refused a good rollout.
            continue
        nano = int(hc.get("NanoCpus") or 0)
        if not nano and hc.get("CpuQuota") and hc.get("CpuPeriod"):
            nano = int(hc["CpuQuota"] * 1_000_000_000 / hc["CpuPeriod"])
        reserved = reserved + Resources(nano, int(hc.get("Memory") or 0))
    return HostCapacity(host, total, reserved)


async def host_capacity(conns: HostConnections, host: str) -> HostCapacity:
    """`docker info` totals and the limits of the host's running containers."""
    return await conns.run(host, lambda c: _capacity_sync(c, host))


async def check_capacity(
    conns: HostConnections, extra: Mapping[str, int], per_instance: Resources
) -> list[Shortfall]:
    """Shortfalls of the hosts given the extra instances each needs; a host that cannot be
    asked raises its DockerTargetError (the first, by host order)."""
    hosts = [h for h, n in extra.items() if n > 0]
    found = await conns.each(hosts, lambda h: host_capacity(conns, h))
    capacity: dict[str, HostCapacity] = {}
    for host in hosts:
        result = found[host]
        if isinstance(result, DockerTargetError):
            raise result
        capacity[host] = result
    return shortfalls(capacity, extra, per_instance)
