"""The Docker target seen the way the operator sees it, for tests and benches that drive
the target directly: every container of an application listed on its hosts, health-checked
by lockgate's own probe, and grouped into the engine's instance sets by the one rule the
operator uses (`instance_set`)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from lockgate.engine import InstanceSet
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import DockerTargetError
from lockgate.probes.health import check_health
from lockgate.targets.docker.containers import Instance, instance_set, list_instances
from tests.support.dockerhosts import container_progress
from tests.support.rollouts import QUIET_S, StandingStill


async def wait_for_async(
    what: str,
    predicate: Callable[[], Coroutine[Any, Any, Any]],
    progress: Callable[[], Coroutine[Any, Any, Any]],
    *,
    every: float = 0.25,
    quiet: float = QUIET_S,
) -> Any:
    """`rollouts.wait_for` for coroutines, by the same rule: no wall-clock limit; it fails
    naming `what` only once neither `predicate()`'s answer nor `progress()` has changed for
    `quiet` seconds. (Not `wait_for` run in a thread calling back into the loop: a wait
    cancelled mid-call would leave that thread blocked on a loop that is gone.)"""
    still = StandingStill(what, quiet)
    while not (last := await predicate()):
        still.check(last, await progress())
        await asyncio.sleep(every)
    return last


async def containers_progress(
    conns: HostConnections, instances: Sequence[Instance]
) -> tuple[Any, ...]:
    """A wait's progress while containers get ready: each one's state, process and CPU time
    (`container_progress`), inspected through `conns`; a container gone, its error."""

    async def one(i: Instance) -> Any:
        try:
            attrs = await conns.run(i.host, lambda c: c.api.inspect_container(i.id))
        except DockerTargetError as err:
            return str(err)
        return container_progress(attrs)

    return tuple(await asyncio.gather(*(one(i) for i in instances)))


async def healthy_ids(
    http: httpx.AsyncClient, instances: Sequence[Instance], path: str, check_seconds: float = 2.0
) -> frozenset[str]:
    """Ids of the instances whose check passes now (checked in parallel)."""
    results = await asyncio.gather(
        *(check_health(http, i.running_url, path, check_seconds) for i in instances)
    )
    return frozenset(i.id for i, ok in zip(instances, results, strict=True) if ok)


async def until_healthy(
    conns: HostConnections, http: httpx.AsyncClient, instances: Sequence[Instance], path: str
) -> None:
    """Until every instance passes its check, waited for while those that do not yet still
    start (their containers' states and CPU time); no wall-clock limit."""
    pending = list(instances)

    async def all_healthy() -> bool:
        nonlocal pending
        healthy = await healthy_ids(http, pending, path)
        pending = [i for i in pending if i.id not in healthy]
        return not pending

    await wait_for_async(
        f"{len(instances)} instance(s) healthy",
        all_healthy,
        lambda: containers_progress(conns, pending),
        every=0.2,
    )


async def wait_healthy(
    http: httpx.AsyncClient,
    instances: Sequence[Instance],
    path: str,
    *,
    within: float = 60.0,
    interval: float = 0.2,
) -> bool:
    """Until every instance passes its check (True) or `within` seconds pass (False). For
    bench/docker_swap, whose measurement bounds each step; tests wait with `until_healthy`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = list(instances)
    while pending:
        healthy = await healthy_ids(http, pending, path)
        pending = [i for i in pending if i.id not in healthy]
        if not pending or loop.time() > deadline:
            break
        await asyncio.sleep(interval)
    return not pending


@dataclass(frozen=True)
class Listing:
    hosts: tuple[str, ...]
    instances: tuple[Instance, ...]
    healthy: frozenset[str]

    def instance_set(self, release: str | None, per_host: int) -> InstanceSet:
        return instance_set(release, self.hosts, self.instances, self.healthy, per_host)

    def servers(self, release: str) -> tuple[str, ...]:
        """URLs of the release's healthy instances, as the operator routes to them."""
        return tuple(
            i.url for i in self.instances if i.release == release and i.id in self.healthy and i.url
        )


async def listing(
    conns: HostConnections,
    hosts: Sequence[str],
    app: str,
    http: httpx.AsyncClient,
    health_path: str = "/health",
) -> Listing:
    """Every container of the application on the hosts, and which pass their check; a host
    that cannot be listed fails the test."""
    listed = await conns.each(hosts, lambda h: list_instances(conns, h, app))
    instances: list[Instance] = []
    for host, result in listed.items():
        assert not isinstance(result, DockerTargetError), f"{host}: {result}"
        instances += result
    return Listing(tuple(hosts), tuple(instances), await healthy_ids(http, instances, health_path))
