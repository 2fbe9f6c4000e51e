"""Host swaps on the local Docker hosts through Traefik's file provider (figures, never asserted).

Needs `hack/dockerhosts up` and `hack/traefik up`. One "swap" on a host, with the building
blocks the controller uses (lockgate.targets.docker, lockgate.traffic.traefik_file):

  start    ensure_instances of the new release (create + start; image already on the host)
  healthy  until the new containers answer /health from the operator's side, waited for as
           the operator waits: woken by the hosts' Docker events or lockgate's own check of
           a container Docker cannot report on (--wait events, the default), or by checking
           every 0.2 s (--wait poll, as the operator did before)
  traffic  the file rewritten with the new servers instead of the old ones, until Traefik's
           API serves them (TraefikFileRouter.live_weights)
  removed  the old release drained for --drain seconds, stopped (SIGTERM) and removed

Timed for one host at a time (each transport: host1 unix, host2 tcp+TLS, host3 ssh) and for
a batch of all three hosts in parallel (one file rewrite for the batch), median of --runs.
Requests flow through Traefik all along; failed ones are counted.

Usage: python -m bench.docker_swap [--runs 5] [--instances 1] [--drain 0] [--wait events|poll]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from hack.tools.load import Load, failed
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.spec import HostSpec
from lockgate.probes.health import check_health
from lockgate.targets.docker.containers import Instance, ensure_instances, remove_instances
from lockgate.targets.docker.events import ContainerWatch
from lockgate.targets.docker.resources import Resources
from lockgate.traffic.traefik_file import LocalStore, RouteConfig, TraefikFileRouter
from tests.support.cluster import traefik_info
from tests.support.docker_apps import remove_all
from tests.support.docker_listing import wait_healthy
from tests.support.dockerhosts import load_hosts

PHASES = ("start", "healthy", "traffic", "removed")


def read(path: Path | None) -> str | None:
    return path.read_text() if path is not None else None


@dataclass
class Swap:
    hosts: tuple[str, ...]
    phases: dict[str, float]  # cumulative seconds since the swap began


class Bench:
    def __init__(self, instances: int, drain: float, wait: str = "events") -> None:
        self.app = f"lgbench-{uuid.uuid4().hex[:6]}"
        self.instances = instances
        self.drain = drain
        self.wait = wait
        self.traefik = traefik_info()
        self.hosts = load_hosts()
        specs = []
        for h in self.hosts:
            specs.append(
                HostSpec(
                    h.name,
                    h.url,
                    h.address,
                    ssh_key=read(h.ssh_key),
                    known_hosts=read(h.known_hosts),
                    tls_ca=read(h.tls_ca),
                    tls_cert=read(h.tls_cert),
                    tls_key=read(h.tls_key),
                )
            )
        self.conns = HostConnections(specs)
        self.path = self.traefik.dynamic_dir / f"{self.app}.yaml"
        self.generation = 0
        self.current: dict[str, str] = {}  # host -> release serving there
        self.servers: dict[str, list[str]] = {}  # host -> server URLs in the file

    def release(self) -> str:
        self.generation += 1
        return f"{self.app}-g{self.generation}/1"

    async def _start(self, host: str, release: str, image: str) -> list[Instance]:
        return await ensure_instances(
            self.conns, host, self.app, release, image, self.instances, {}, Resources(), 8080
        )

    async def setup(self, http: httpx.AsyncClient) -> TraefikFileRouter:
        router = TraefikFileRouter(
            self.app,
            LocalStore(str(self.path)),
            api_url=self.traefik.api_url,
            http=http,
            route=RouteConfig(f"Host(`{self.app}.bench`)", ("web",)),
        )
        release = self.release()
        for host in self.conns.names:
            made = await self._start(host, release, "demo:v1")
            assert await wait_healthy(http, made, "/health", within=30)
            self.current[host] = release
            self.servers[host] = [i.url for i in made if i.url]
        await self._publish(router)
        return router

    async def _publish(self, router: TraefikFileRouter) -> None:
        urls = [u for h in self.conns.names for u in self.servers.get(h, [])]
        await router.apply((100, 0), {"stable": urls})
        deadline = time.monotonic() + 30
        live = await router.live_weights()
        while live != (100, 0):
            if time.monotonic() > deadline:
                raise RuntimeError("Traefik did not serve the new servers within 30 s")
            await asyncio.sleep(0.01)
            live = await router.live_weights()

    async def swap(
        self, http: httpx.AsyncClient, router: TraefikFileRouter, hosts: Sequence[str], image: str
    ) -> Swap:
        release = self.release()
        began = time.monotonic()
        phases: dict[str, float] = {}
        made = await asyncio.gather(*(self._start(h, release, image) for h in hosts))
        phases["start"] = time.monotonic() - began
        ok = await self.healthy(http, [i for m in made for i in m], within=60)
        assert ok, "new instances never became healthy"
        phases["healthy"] = time.monotonic() - began
        old = {h: self.current[h] for h in hosts}
        for h, m in zip(hosts, made, strict=True):
            self.servers[h] = [i.url for i in m if i.url]
            self.current[h] = release
        await self._publish(router)
        phases["traffic"] = time.monotonic() - began
        await asyncio.gather(
            *(
                remove_instances(self.conns, h, self.app, old[h], drain_seconds=self.drain)
                for h in hosts
            )
        )
        phases["removed"] = time.monotonic() - began
        return Swap(tuple(hosts), phases)

    async def healthy(
        self, http: httpx.AsyncClient, instances: list[Instance], within: float
    ) -> bool:
        if self.wait == "poll":
            return await wait_healthy(http, instances, "/health", within=within)

        async def probe(i: Instance) -> bool:
            return await check_health(http, i.running_url, "/health")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        watch = ContainerWatch(self.conns)
        try:
            while True:
                results = await asyncio.gather(*(probe(i) for i in instances))
                pending = [i for i, ok in zip(instances, results, strict=True) if not ok]
                if not pending:
                    return True
                if loop.time() > deadline:
                    return False
                woken = asyncio.Event()
                if not watch.follow(pending, woken.set, probe):  # events broken: poll
                    await asyncio.sleep(0.25)
                    continue
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - loop.time())):
                        await woken.wait()
        finally:
            await watch.aclose()

    def cleanup(self) -> None:
        self.path.unlink(missing_ok=True)
        remove_all({h.name: h for h in self.hosts}, self.app)
        self.conns.close()


def _median(swaps: list[Swap], phase: str) -> float:
    return statistics.median(s.phases[phase] for s in swaps)


async def run(runs: int, instances: int, drain: float, wait: str = "events") -> None:
    bench = Bench(instances, drain, wait)
    results: dict[str, list[Swap]] = {}
    try:
        async with httpx.AsyncClient() as http:
            router = await bench.setup(http)
            load = Load(bench.traefik.web_url, f"{bench.app}.bench", threads=1)
            with load:
                for n in range(runs):
                    image = "demo:v2" if n % 2 == 0 else "demo:v1"
                    for host in bench.conns.names:
                        swap = await bench.swap(http, router, [host], image)
                        results.setdefault(host, []).append(swap)
                    swap = await bench.swap(http, router, list(bench.conns.names), image)
                    results.setdefault("batch of 3", []).append(swap)
            bad = Counter(str(r.status) for r in failed(load.responses))
    finally:
        bench.cleanup()

    print(
        f"docker host swaps: {runs} runs, {instances} instance(s) per host, drain {drain:g} s, "
        f"health waited for by {wait}; median seconds since the swap began"
    )
    print(f"{'swap':<14}" + "".join(f"{p:>10}" for p in PHASES))
    for name, swaps in results.items():
        print(f"{name:<14}" + "".join(f"{_median(swaps, p):>10.3f}" for p in PHASES))
    singles = {n: _median(swaps, "removed") for n, swaps in results.items() if n != "batch of 3"}
    batch = _median(results["batch of 3"], "removed")
    slowest = max(singles, key=lambda k: singles[k])
    one = statistics.median(singles.values())
    print(
        f"batch of 3 in parallel: {batch:.3f} s = {batch / singles[slowest]:.2f}x the slowest "
        f"one-host swap ({slowest}, {singles[slowest]:.3f} s), {batch / one:.2f}x the median "
        f"one-host swap ({one:.3f} s), {batch / sum(singles.values()):.2f}x the three in a row"
    )
    print(f"requests through Traefik during the swaps: {len(load.responses)}, failed: {dict(bad)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--drain", type=float, default=0.0)
    parser.add_argument("--wait", choices=("events", "poll"), default="events")
    args = parser.parse_args()
    asyncio.run(run(args.runs, args.instances, args.drain, args.wait))


if __name__ == "__main__":
    main()
