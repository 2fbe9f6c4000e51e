"""A rollout on Docker hosts waits for its new containers on the hosts' Docker events, not on
a poll of every host: the event wakes its driver at once, a stream that breaks falls back to
polling, and no stream outlives its wait. The route file is read once per round.

The real handlers and Docker fleet run over `FakeDockerHosts` (lockgate's HostConnections
with in-memory daemons) and its `FakeEventStream`s, all in one event loop, as in the
operator; lockgate's own health check asks a fake HTTP server.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote, urlparse

import httpx
import kopf
import pytest
import yaml

from lockgate.controller import handlers
from lockgate.controller.fleets import docker as docker_fleet
from lockgate.controller.fleets.docker import EVENTS_FALLBACK, POLL, FleetState
from lockgate.controller.runtime import Runtime, Settings
from lockgate.controller.wakeups import Wake
from lockgate.kube import Kube
from lockgate.traffic import traefik_file
from lockgate.traffic.traefik_observer import TraefikWatch
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import (
    NS,
    FakeDockerHosts,
    FakeEventStream,
    FakeKube,
    stable_container,
)

APP = "shop"
HOSTS = ("h1", "h2", "h3")
ROLLING = {"type": "Rolling", "rolling": {"batchSize": 1}}
RELEASE = "dep/1"
log = logging.getLogger("tests.docker_events")


class FileTraefik:
    """Traefik's API for the file provider, serving the route file as it was when Traefik
    last loaded it: at every request while `prompt`, else only at `load()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.prompt = True
        self.loaded: dict[str, Any] = {}

    def load(self) -> None:
        text = self.path.read_text() if self.path.exists() else "{}"
        self.loaded = (yaml.safe_load(text) or {}).get("http") or {}

    def answer(self, request: httpx.Request) -> httpx.Response:
        if self.prompt:
            self.load()
        routers = self.loaded.get("routers") or {}
        services = self.loaded.get("services") or {}
        path = unquote(request.url.path)
        if path.startswith("/api/http/services/"):
            name = path.rsplit("/", 1)[1].removesuffix("@file")
            if name not in services:
                return httpx.Response(404)
            return httpx.Response(200, json={**services[name], "status": "enabled"})
        if path == "/api/http/routers":
            search = request.url.params.get("search", "")
            found = [
                {**r, "name": f"{n}@file", "status": "enabled"}
                for n, r in routers.items()
                if search in n
            ]
            return httpx.Response(200, json=found)
        return httpx.Response(404)


class Env:
    """Application `shop` on h1..h3 (app:1 stable and healthy on each, route file local),
    and Deployment `dep` rolling app:2 host by host. `healthy` holds the published ports
    whose /health answers 200; everything else answers 503."""

    def __init__(
        self, tmp: Path, traefik_api_url: str | None = None, drain_seconds: int = 0
    ) -> None:
        self.kube = FakeKube()
        self.traefik = FileTraefik(tmp / "shop.yml")
        self.healthy: set[int] = set()
        self.checks: Counter[int] = Counter()  # health checks asked, per port
        http = httpx.AsyncClient(transport=httpx.MockTransport(self._answer))
        self.rt = Runtime(cast(Kube, self.kube), http, Settings(traefik_api_url=traefik_api_url))
        self.hosts = FakeDockerHosts()
        self.state = self.rt.fleets[(NS, APP)] = FleetState(self.hosts)
        self.wake = Wake()  # the driver's, as its daemon registers it
        self.rt.wakeups.register("deployments", NS, "dep", self.wake)
        hosts = [
            {"name": h, "url": f"unix:///run/fake/{h}.sock", "address": f"10.0.0.{i}"}
            for i, h in enumerate(HOSTS, 1)
        ]
        spec = {
            "docker": {"hosts": hosts, "drainSeconds": drain_seconds},
            "healthCheck": {"http": {"path": "/health"}},
            "traffic": {
                "traefik": {"fileProvider": {"host": "local", "path": str(tmp / "shop.yml")}}
            },
        }
        self.kube.add_application(APP, spec, stable={"image": "app:1", "release": "old/1"})
        for i, h in enumerate(HOSTS, 1):
            self.hosts.containers[h] = [stable_container(APP, h, "old/1", "app:1", 32000 + i)]
            self.healthy.add(32000 + i)
        self.kube.add_deployment("dep", dep_spec(strategy=ROLLING))

    def _answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == "traefik.test":
            return self.traefik.answer(request)
        port = urlparse(str(request.url)).port or 0
        self.checks[port] += 1
        return httpx.Response(200 if port in self.healthy else 503)

    async def drive(self) -> float | handlers.Poll:
        """One round of the Deployment's driver (its daemon's loop body)."""
        self.wake.clear()
        return await handlers._drive_once(self.rt, NS, "dep", self.kube.index(), log)

    async def drive_until(self, done: Callable[[], bool], limit: int = 20) -> float:
        """Rounds until `done()`; the delay the last round asked for."""
        for _ in range(limit):
            delay = await self.drive()
            if done():
                return delay if isinstance(delay, float) else -1.0
        raise AssertionError(f"not reached: {self.status().get('message')}")

    def status(self) -> dict[str, Any]:
        return dict(self.kube.deployment("dep").get("status") or {})

    def new_containers(self, host: str = "h1") -> list[dict[str, Any]]:
        return [
            c for c in self.hosts.containers[host] if c["Labels"]["lockgate.dev/release"] == RELEASE
        ]

    def new_container(self, host: str = "h1") -> dict[str, Any]:
        found = [
            c for c in self.hosts.containers[host] if c["Labels"]["lockgate.dev/release"] == RELEASE
        ]
        assert len(found) == 1, found
        return found[0]

    def watched(self) -> frozenset[str]:
        watch = self.state.watches.get(RELEASE)
        return watch.watching if watch is not None else frozenset()

    def step(self) -> int:
        return int((self.status().get("step") or {}).get("index", -1))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Env]:
    monkeypatch.setattr(
        traefik_file, "ssh_connect", lambda *_: pytest.fail("the route file is local")
    )
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    yield Env(tmp_path)


def run(env: Env, scenario: Callable[[Env], Awaitable[None]]) -> None:
    """The scenario in one event loop, as the operator runs (the watch lives across rounds),
    then the runtime closed in that loop."""

    async def main() -> None:
        try:
            await scenario(env)
        finally:
            await env.rt.aclose()

    asyncio.run(main())


async def started_and_waiting(env: Env) -> dict[str, Any]:
    """Rounds until h1's new container runs and the rollout waits for it to pass its check
    (the driver's next look then comes from an event, or a slow fallback poll)."""
    delay = await env.drive_until(lambda: any(env.watched() for _ in [0]) and env.step() == 0)
    container = env.new_container()
    assert container["State"] == "running"
    assert env.watched() == {container["Id"]}
    assert delay >= EVENTS_FALLBACK, "the round counts on the events, not on a quick poll"
    return container


async def first_asked(env: Env) -> None:
    """Until the watch has asked lockgate's check once, as it does right after subscribing
    (what changes after this is for the events, or its own later checks, to tell)."""
    await asyncio.wait_for(env.state.watches[RELEASE].asked.wait(), 30)


async def stream_of(env: Env, container_id: str) -> FakeEventStream:
    """The event stream the watch opened on h1 for the container (in a worker thread)."""
    await asyncio.to_thread(env.hosts.stream_opened.wait, 30)
    stream = env.hosts.streams[-1]
    assert stream.host == "h1"
    assert stream.filters == {
        "type": ["container"],
        "container": [container_id],
        "event": ["start", "die", "health_status"],
    }
    return stream


# --- woken by the event ------------------------------------------------------------------------


def test_a_health_event_wakes_the_rollout_without_waiting_for_a_poll(env: Env) -> None:
    async def scenario(env: Env) -> None:
        env.hosts.health_suffix = " (health: starting)"  # Docker checks it: no own probing
        container = await started_and_waiting(env)
        stream = await stream_of(env, container["Id"])
        await first_asked(env)
        assert not env.wake.is_set()

        port = container["Ports"][0]["PublicPort"]
        env.healthy.add(port)
        container["Status"] = "Up 2 seconds (healthy)"
        stream.send(container["Id"], "health_status: healthy")
        await asyncio.wait_for(env.wake.wait(), 30)  # a hang guard: the event, or nothing, wakes it

        # The round the event brought finds it healthy and moves past the start of batch 1.
        await env.drive_until(lambda: env.step() >= 1)
        assert env.checks[port] >= 1

    run(env, scenario)


def test_a_container_docker_cannot_report_on_is_asked_directly(env: Env) -> None:
    """Without a Docker healthcheck no event says the application answers: the watch asks
    lockgate's own check of that one container, and wakes the rollout when it passes."""

    async def scenario(env: Env) -> None:
        container = await started_and_waiting(env)
        await stream_of(env, container["Id"])
        await first_asked(env)
        port = container["Ports"][0]["PublicPort"]
        asked = env.checks[port]
        env.healthy.add(port)
        await asyncio.wait_for(env.wake.wait(), 30)
        assert env.checks[port] > asked
        await env.drive_until(lambda: env.step() >= 1)

    run(env, scenario)


# --- a broken stream ---------------------------------------------------------------------------


def test_a_stream_that_breaks_falls_back_to_polling(env: Env) -> None:
    async def scenario(env: Env) -> None:
        env.hosts.health_suffix = " (health: starting)"
        container = await started_and_waiting(env)
        stream = await stream_of(env, container["Id"])
        await first_asked(env)

        stream.fail(ConnectionResetError("connection reset by peer"))
        await asyncio.wait_for(env.wake.wait(), 30)  # the driver hears of it at once
        delay = await env.drive()
        assert delay == POLL, "polling again, quickly"
        assert env.watched() == frozenset()
        opened = len(env.hosts.streams)

        # Polling finds the container healthy though no event ever says so.
        env.healthy.add(container["Ports"][0]["PublicPort"])
        await env.drive_until(lambda: env.step() >= 1, limit=3)
        assert len(env.hosts.streams) == opened, "no new stream while the hosts' events are broken"

    run(env, scenario)


def test_a_host_that_refuses_the_event_stream_is_polled(env: Env) -> None:
    async def scenario(env: Env) -> None:
        env.hosts.health_suffix = " (health: starting)"
        env.hosts.no_events["h1"] = "daemon unreachable: Connection refused"
        await env.drive_until(lambda: any(env.new_containers()))
        await env.drive()  # it waits for the container: the watch cannot open its stream
        await asyncio.wait_for(env.wake.wait(), 30)
        assert await env.drive() == POLL
        env.healthy.add(env.new_container()["Ports"][0]["PublicPort"])
        await env.drive_until(lambda: env.step() >= 1, limit=3)

    run(env, scenario)


# --- closed afterwards -------------------------------------------------------------------------


def test_the_stream_is_closed_once_the_wait_ends(env: Env) -> None:
    async def scenario(env: Env) -> None:
        env.hosts.health_suffix = " (health: starting)"
        container = await started_and_waiting(env)
        stream = await stream_of(env, container["Id"])
        await first_asked(env)
        env.healthy.add(container["Ports"][0]["PublicPort"])
        stream.send(container["Id"], "health_status: healthy")
        await asyncio.wait_for(env.wake.wait(), 30)
        await asyncio.to_thread(stream.finished.wait, 30)
        assert stream.closed.is_set(), "closed by the watch, its reader thread out of its loop"

    run(env, scenario)


def test_no_stream_outlives_the_fleet(env: Env) -> None:
    async def scenario(env: Env) -> None:
        env.hosts.health_suffix = " (health: starting)"
        container = await started_and_waiting(env)
        stream = await stream_of(env, container["Id"])
        await first_asked(env)
        await env.rt.aclose()
        assert stream.closed.is_set()
        await asyncio.to_thread(stream.finished.wait, 30)

    run(env, scenario)


def test_a_rollout_no_longer_waiting_closes_its_stream(env: Env) -> None:
    """Healthy by a poll (the event missed): the next round ends the watch and its stream."""

    async def scenario(env: Env) -> None:
        env.hosts.health_suffix = " (health: starting)"
        container = await started_and_waiting(env)
        stream = await stream_of(env, container["Id"])
        await first_asked(env)
        env.healthy.add(container["Ports"][0]["PublicPort"])
        await env.drive_until(lambda: env.step() >= 1)
        await asyncio.to_thread(stream.finished.wait, 30)
        assert stream.closed.is_set()

    run(env, scenario)


# --- the route file ----------------------------------------------------------------------------


def test_the_route_file_is_read_once_per_round(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rounds that change the route (servers, then weights, then a host's old server out)
    read it once each, whatever they change."""

    async def scenario(env: Env) -> None:
        reads: list[int] = []
        read = traefik_file.LocalStore.read

        async def counting(store: traefik_file.LocalStore) -> str | None:
            reads[-1] += 1
            return await read(store)

        monkeypatch.setattr(traefik_file.LocalStore, "read", counting)
        writes: list[int] = []
        write = traefik_file.LocalStore.write

        async def counting_writes(store: traefik_file.LocalStore, text: str) -> None:
            writes[-1] += 1
            await write(store, text)

        monkeypatch.setattr(traefik_file.LocalStore, "write", counting_writes)
        monkeypatch.setattr(docker_fleet, "EVENTS_FALLBACK", EVENTS_FALLBACK)
        for c in env.hosts.containers.values():
            c[0]["Status"] = "Up 1 minute"
        env.hosts.health_suffix = ""
        env.healthy.update(range(33001, 33010))  # new containers answer at once
        for _ in range(30):
            reads.append(0)
            writes.append(0)
            await env.drive()
            if env.status().get("phase") == "Succeeded":
                break
        assert env.status().get("phase") == "Succeeded"
        assert max(reads) == 1, reads
        assert sum(writes) >= 5, "the rollout did change the route, round after round"

    run(env, scenario)


# --- Traefik loading the route file ------------------------------------------------------------


def test_a_rollout_waiting_for_traefik_to_load_its_route_file_is_handed_to_the_observer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The new container passes its check and its batch puts it in the route file; Traefik
    has yet to load it: the round waits on the Traefik observer, naming what the file
    provider calls the file's routers and services, not on a poll of the hosts."""
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    env = Env(tmp_path, traefik_api_url="http://traefik.test:8081")

    async def scenario(env: Env) -> None:
        env.healthy.update(range(33001, 33010))  # new containers answer at once
        await env.drive_until(lambda: any(env.new_containers()))
        env.traefik.prompt = False  # Traefik loads nothing more for now
        port = env.new_container()["Ports"][0]["PublicPort"]
        await env.drive_until(lambda: f":{port}" in (tmp_path / "shop.yml").read_text())
        delay = await env.drive()
        assert isinstance(delay, handlers.Poll), delay
        # The round asked for its split again (acted): the observer wakes it, the fleet's
        # Traefik fallback at the latest (the hosts' faster poll is off).
        assert delay.timer == docker_fleet.TRAEFIK_FALLBACK
        assert delay.watch == TraefikWatch(
            "http://traefik.test:8081",
            (
                "shop@file",
                "shop-stable@file",
                "shop-canary@file",
                "shop-header@file",
                "shop-mirror@file",
            ),
        )

    run(env, scenario)


def test_the_watches_of_rollouts_gone_are_dropped_and_a_broken_one_is_remembered() -> None:
    """A Deployment deleted mid-wait leaves its watch idle: the next rollout's first round
    drops it. One whose stream broke is kept, so its rollout goes on polling for a while
    rather than reconnecting every round."""

    async def scenario() -> None:
        state = FleetState(FakeDockerHosts())
        state.watch("gone/1")
        broken = state.watch("broken/1")
        broken._break("host h1: event stream ended (test)", lambda: None)
        state.watch("next/1")
        assert set(state.watches) == {"broken/1", "next/1"}
        await state.aclose()

    asyncio.run(scenario())


def test_each_host_changes_over_in_one_write_of_the_route(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Rolling batch keeps its host's new container out of the route until the batch
    moves traffic; then one write puts it in and takes the old one out (each write is a
    reload of Traefik, which takes no other for 2 s). No write routes a host to both."""

    async def scenario(env: Env) -> None:
        written: list[tuple[tuple[int, int], dict[str, list[str]]]] = []
        write = traefik_file.LocalStore.write
        host_at = {f"10.0.0.{i}": h for i, h in enumerate(HOSTS, 1)}

        async def recording(store: traefik_file.LocalStore, text: str) -> None:
            config = traefik_file.parse(APP, text)
            assert config is not None
            written.append(
                (
                    config.weights,
                    {
                        role: sorted(
                            host_at[urlparse(u).hostname or ""] for u in config.servers_of(role)
                        )
                        for role in ("stable", "canary")
                    },
                )
            )
            await write(store, text)

        monkeypatch.setattr(traefik_file.LocalStore, "write", recording)
        for c in env.hosts.containers.values():
            c[0]["Status"] = "Up 1 minute"
        env.hosts.health_suffix = ""
        env.healthy.update(range(33001, 33010))  # new containers answer at once
        for _ in range(30):
            await env.drive()
            if env.status().get("phase") == "Succeeded":
                break
        assert env.status().get("phase") == "Succeeded"
        all_stable = {"stable": ["h1", "h2", "h3"], "canary": []}
        assert written == [
            ((100, 0), all_stable),  # the first round's (the fake has no route file yet)
            ((67, 33), {"stable": ["h2", "h3"], "canary": ["h1"]}),
            ((33, 67), {"stable": ["h3"], "canary": ["h1", "h2"]}),
            ((0, 100), {"stable": [], "canary": ["h1", "h2", "h3"]}),
            ((100, 0), all_stable),  # promoted: the new containers are the stable ones
        ]

    run(env, scenario)


def test_a_rolling_batch_goes_on_while_its_old_container_drains(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A host's old container leaves the route with its batch's shift and stops once its
    drainSeconds are over; the next host's new container starts meanwhile (nothing waits
    for a container that serves no more); only the new ones run at the end."""
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)
    env = Env(tmp_path, drain_seconds=1)

    def old(host: str) -> dict[str, Any]:
        (found,) = [c for c in env.hosts.containers[host] if c not in env.new_containers(host)]
        return found

    async def scenario(env: Env) -> None:
        for c in env.hosts.containers.values():
            c[0]["Status"] = "Up 1 minute"
        env.hosts.health_suffix = ""
        env.healthy.update(range(33001, 33010))  # new containers answer at once
        await env.drive_until(lambda: any(env.new_containers("h2")))
        assert old("h1")["State"] == "running", "h1's old container drains meanwhile"
        port = old("h1")["Ports"][0]["PublicPort"]
        assert f":{port}" not in (tmp_path / "shop.yml").read_text(), "and serves no more"
        await env.drive_until(lambda: env.status().get("phase") == "Succeeded", limit=60)
        assert env.state.draining == {}
        running = [c for h in HOSTS for c in env.hosts.containers[h] if c["State"] == "running"]
        assert running == [env.new_container(h) for h in HOSTS]  # promoted: the old ones go

    run(env, scenario)
