"""One look at Traefik for everything that waits on it (traffic/traefik_observer.py): the
rollouts and Application status loops waiting for Traefik to load a Pod, a split, a header
route or a mirror used to ask Traefik one by one, each on its own back-off under a shared
budget (500 waiting: one look every ~25 s each). Against a fake Traefik API; the intervals
are made tiny, and every assertion counts looks and requests, never time."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterator
from typing import cast

import httpx
import kopf
import pytest

from lockgate.api import ApplicationSpec
from lockgate.controller import applications, handlers
from lockgate.controller.fleets import Census
from lockgate.controller.runtime import Runtime, Settings
from lockgate.controller.wakeups import WATCHED_SAFETY_NET, Wake
from lockgate.engine.model import HeaderRule, Routes
from lockgate.kube import Kube
from lockgate.traffic.traefik_crd import TraefikCrdRouter
from lockgate.traffic.traefik_observer import TraefikObserver, TraefikWatch
from tests.support.fakeworld import FakeWorld, dep_spec
from tests.unit.controller_fakes import NS, FakeFleet, FakeKube, env_over_fakes
from tests.unit.fake_traefik import API_URL, FakeTraefikApi, unwatched
from tests.unit.test_header_routes import ROUTE
from tests.unit.test_waiting_costs_nothing import FOREVER, Env, Stopped, drive


def fast(http: httpx.AsyncClient, url: str) -> TraefikObserver:
    """An observer whose pauses are tiny (a look every millisecond or so)."""
    return TraefikObserver(http, url, tight=0.001, quiet_after=0.005, slowest=0.01)


def observer_of(traefik: FakeTraefikApi) -> TraefikObserver:
    return fast(traefik.client(), API_URL)


async def until(predicate: Callable[[], bool], what: str, looks: int = 500) -> None:
    """Lets the observer run until `predicate` holds. Bounded by the observer's progress,
    not by time (a loaded machine only makes each look slower): it fails once the fake
    Traefik answered `looks` more looks without it, or after STALLED pauses of the test
    without a single look (the observer stopped looking; it looks every millisecond or so)."""
    start = FakeTraefikApi.looks_made
    seen, still = start, 0
    while not predicate():
        made = FakeTraefikApi.looks_made
        if made - start > looks:
            raise AssertionError(f"never: {what} (after {made - start} looks)")
        still = still + 1 if made == seen else 0
        if still > STALLED:
            raise AssertionError(f"never: {what} (the observer stopped looking)")
        seen = made
        await asyncio.sleep(0.001)


STALLED = 60_000  # pauses of at least 1 ms: a minute without a look


class Woken:
    """The wake-up of each waiter, with the look it came after."""

    def __init__(self, observer: TraefikObserver) -> None:
        self.observer = observer
        self.after: dict[str, int] = {}

    def of(self, name: str) -> Callable[[], None]:
        def wake() -> None:
            assert name not in self.after, "woken once per registration"
            self.after[name] = self.observer.looks

        return wake


def test_five_hundred_waiters_cost_one_request_per_look() -> None:
    """Each waiter used to send its own requests: 500 waiting, 500 pollers. Now each look
    is one request whatever the number of waiters, and a change wakes only the waiters it
    concerns."""
    traefik = FakeTraefikApi()
    for i in range(500):
        traefik.app(NS, f"app{i}")

    async def scenario() -> tuple[TraefikObserver, Woken]:
        observer = observer_of(traefik)
        woken = Woken(observer)
        for i in range(500):
            observer.watch(f"app{i}", (f"{NS}-app{i}",), 0, woken.of(f"app{i}"))
        # The first look has nothing to compare with: it wakes everybody, who looked after
        # the previous one (their rounds), and registers again.
        await until(lambda: len(woken.after) == 500, "the first look woke all")
        assert set(woken.after.values()) == {1}
        woken.after.clear()
        since = observer.generation
        for i in range(500):
            observer.watch(f"app{i}", (f"{NS}-app{i}",), since, woken.of(f"app{i}"))
        traefik.before_look[traefik.looks + 5] = lambda: traefik.app(NS, "app7", 90, 10)
        await until(lambda: "app7" in woken.after, "app7 woken")
        await until(lambda: traefik.looks >= woken.after["app7"] + 5, "five more looks")
        await observer.aclose()
        return observer, woken

    observer, woken = asyncio.run(scenario())
    assert list(woken.after) == ["app7"], "only the waiter whose split changed"
    assert traefik.requests == {"/api/rawdata": observer.looks}, "one request per look"
    assert observer.looks < 500


def test_a_waiter_is_woken_by_the_first_look_after_traefik_changes() -> None:
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop")
    traefik.app(NS, "other")

    async def scenario() -> tuple[Woken, int]:
        observer = observer_of(traefik)
        woken = Woken(observer)
        observer.watch("first", (f"{NS}-other",), 0, woken.of("first"))
        await until(lambda: observer.generation == 1, "a first snapshot")
        observer.watch("shop", (f"{NS}-shop",), observer.generation, woken.of("shop"))
        other_changes = traefik.looks + 3
        shop_changes = traefik.looks + 6
        # Another Application changes first (it does not concern `shop`), then `shop`'s
        # canary Pod is loaded as a server (its leaf changes, as `serving` reads it).
        traefik.before_look[other_changes] = lambda: traefik.app(NS, "other", 50, 50)
        traefik.before_look[shop_changes] = lambda: traefik.services[
            f"{NS}-shop-canary-80@kubernetescrd"
        ]["loadBalancer"]["servers"].append({"url": "http://10.246.0.9:80"})
        observer.watch("keep", ("nothing-of-the-kind",), 1, woken.of("keep"))  # keeps it looking
        await until(lambda: "shop" in woken.after, "shop woken")
        await observer.aclose()
        return woken, shop_changes

    woken, shop_changes = asyncio.run(scenario())
    assert woken.after["shop"] == shop_changes, "woken by the very look that saw its change"
    assert woken.after["first"] == 1
    assert "keep" not in woken.after


def test_nobody_waiting_sends_nothing_and_the_last_waiter_woken_stops_the_looks() -> None:
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop")

    async def scenario() -> list[int]:
        observer = observer_of(traefik)
        counts = []
        for _ in range(200):  # every chance to look: nobody waits, so it does not
            await asyncio.sleep(0)
        counts.append(traefik.looks)
        woken = Woken(observer)
        observer.watch("shop", (f"{NS}-shop",), 0, woken.of("shop"))
        await until(lambda: "shop" in woken.after, "woken by the first look")
        observer.watch("shop", (f"{NS}-shop",), observer.generation, woken.of("again"))
        await until(lambda: traefik.looks >= 10, "looking while it waits")
        observer.forget("shop")  # its driver was woken by something else, or stopped
        await until(lambda: not observer.looking, "the looks end")
        counts.append(traefik.looks)
        for _ in range(200):
            await asyncio.sleep(0.001)
        counts.append(traefik.looks)
        return counts

    before, stopped, later = asyncio.run(scenario())
    assert before == 0
    assert later == stopped, "no request once nobody waits"


def test_a_change_seen_during_a_waiters_round_wakes_it_when_it_registers() -> None:
    """A waiter registers after its round, which read Traefik itself: a look that came in
    meanwhile and saw its part change (maybe after its own read) must not be lost."""
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop")
    traefik.app(NS, "other")

    async def scenario() -> Woken:
        observer = observer_of(traefik)
        woken = Woken(observer)
        observer.watch("first", ("nothing-of-the-kind",), 0, lambda: None)
        await until(lambda: observer.generation == 1, "a first snapshot")
        observer.watch("keep", ("nothing-of-the-kind",), 1, lambda: None)  # keeps it looking
        since = observer.generation  # the rounds of `shop` and `other` begin
        traefik.app(NS, "shop", 90, 10)
        await until(lambda: observer.generation == 2, "the look that saw it")
        observer.watch("shop", (f"{NS}-shop",), since, woken.of("shop"))
        observer.watch("other", (f"{NS}-other",), since, woken.of("other"))
        await observer.aclose()
        return woken

    woken = asyncio.run(scenario())
    assert list(woken.after) == ["shop"]


def test_traefik_back_after_failed_looks_wakes_every_waiter() -> None:
    """While its API could not be read, the rounds' own reads failed too (nothing was
    confirmed): the first answer after that wakes them all, changed or not."""
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop")

    async def scenario() -> Woken:
        observer = observer_of(traefik)
        woken = Woken(observer)
        observer.watch("first", ("nothing-of-the-kind",), 0, lambda: None)
        await until(lambda: observer.generation == 1, "a first snapshot")
        traefik.down = True
        observer.watch("shop", (f"{NS}-shop",), observer.generation, woken.of("shop"))
        failed = traefik.looks
        await until(lambda: traefik.looks >= failed + 3, "failed looks")
        assert not woken.after
        traefik.down = False
        await until(lambda: "shop" in woken.after, "woken once it answers")
        await observer.aclose()
        return woken

    woken = asyncio.run(scenario())
    assert list(woken.after) == ["shop"]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    yield from env_over_fakes(monkeypatch, Env, replicas=2, ready_after=1)


def test_a_rollout_waiting_on_traefik_sleeps_until_the_observer_sees_its_change(
    env: Env,
) -> None:
    """The driver as kopf runs it: a rollout whose split Traefik has not loaded yet no
    longer polls; it sleeps through the observer's looks until Traefik changes where it
    waits, then runs exactly one more round."""
    env.kube.add_deployment("dep", dep_spec(strategy=FOREVER))
    for _ in range(30):
        env.op.round("dep")
        if env.op.phase("dep") == "Paused":
            break
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop", 50, 50)
    rt = Runtime(env.op.rt.kube, traefik.client(), Settings(traefik_api_url=API_URL))
    rt.traefik._make = fast
    env.fleet.settling = True
    env.fleet.traefik_watch = TraefikWatch(API_URL, (f"{NS}-shop",))
    rounds: list[int] = []
    original = handlers._drive_once

    async def counted(*args: object, **kwargs: object) -> float | handlers.Poll:
        delay = await original(*args, **kwargs)  # type: ignore[arg-type]
        rounds.append(traefik.looks)
        return delay

    async def scenario() -> tuple[int, int]:
        stop = Stopped()
        memo = kopf.Memo(runtime=rt)
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(handlers, "_drive_once", counted)
            driver = asyncio.create_task(drive(env, stop, memo))
            # Its first round came before any look: the first look wakes it for a second.
            await until(lambda: len(rounds) == 2, "a round after the first look")
            observer = rt.traefik.get(API_URL)
            await until(lambda: observer.looks >= rounds[-1] + 20, "twenty looks more")
            quiet = len(rounds)
            changed_at = traefik.looks + 2
            traefik.before_look[changed_at] = lambda: traefik.app(NS, "shop", 0, 100)
            await until(lambda: len(rounds) == 3, "the round after the change")
            stop.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)
            handlers._wake(memo).set()
            await driver
        assert len(rt.polls) == 0, "never among the pollers"
        await rt.traefik.aclose()
        return quiet, changed_at

    quiet, changed_at = asyncio.run(scenario())
    assert quiet == 2, "no round while Traefik did not change"
    assert rounds[2] >= changed_at, "the round that followed the change"
    assert traefik.requests.keys() == {"/api/rawdata"}, "the rounds' fleet is faked"


def test_an_applications_status_waiting_on_traefik_is_woken_by_the_observer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Ready Pod Traefik has yet to load: the Application's status was recounted every
    second (stretched by the poll budget). Now its loop sleeps (only the safety net) until
    the observer sees Traefik change where the Application's routes are."""
    kube = FakeKube()
    body = kube.add_application("shop", {"kubernetes": {"replicas": 2}})
    fleet = FakeFleet(kube, FakeWorld(units=("replica-1", "replica-2")))
    census = fleet.census
    watch = TraefikWatch(API_URL, (f"{NS}-shop",))

    async def lagging(rolling_out: bool) -> Census:
        return dataclasses.replace(await census(rolling_out), settling=True, watch=watch)

    monkeypatch.setattr(fleet, "census", lagging)
    monkeypatch.setattr(applications, "fleet_for", fleet.made_for)
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop", 100, 0)
    rt = Runtime(cast(Kube, kube), traefik.client(), Settings(traefik_api_url=API_URL))
    rt.traefik._make = fast

    async def scenario() -> tuple[float, int, int]:
        loop_wake = Wake()
        rt.wakeups.register("applications", NS, "shop", loop_wake)
        memo = kopf.Memo(runtime=rt)
        delay = await handlers.application_tick(body=kopf.Body(body), patch=kopf.Patch(), memo=memo)
        observer = rt.traefik.get(API_URL)
        await until(loop_wake.is_set, "the first look wakes it (its round came before)")
        loop_wake.clear()
        await handlers.application_tick(body=kopf.Body(body), patch=kopf.Patch(), memo=memo)
        await until(lambda: observer.looks >= 10, "ten looks")
        quiet = loop_wake.is_set()
        changed_at = traefik.looks + 2
        traefik.before_look[changed_at] = lambda: traefik.services[
            f"{NS}-shop-canary-80@kubernetescrd"
        ]["loadBalancer"]["servers"].append({"url": "http://10.246.0.9:80"})
        await until(loop_wake.is_set, "woken once Traefik lists the Pod")
        woken_after = traefik.looks
        await rt.traefik.aclose()
        assert not quiet, "not woken while Traefik did not change"
        return delay, changed_at, woken_after

    delay, changed_at, woken_after = asyncio.run(scenario())
    assert delay >= WATCHED_SAFETY_NET, "no poll: only the safety net"
    assert woken_after >= changed_at
    assert len(rt.polls) == 0


def test_a_crd_routers_watch_covers_everything_it_reads_of_traefik() -> None:
    """The observer wakes a waiter only for changes of the routers and services its router's
    watch names: every one the router reads (its weights, its Pods' servers, its header
    route and mirror) must be among them, or a change it waits for would never wake it.
    Two Applications are in Traefik; `shop` has a header route and a mirror."""
    kube = FakeKube()
    traefik = FakeTraefikApi()
    routers = {}
    for name in ("shop", "shopfront"):
        spec = {"kubernetes": {"replicas": 2}, "traffic": ROUTE}
        app_obj = kube.add_application(name, spec)
        routers[name] = TraefikCrdRouter(
            kube,  # type: ignore[arg-type]
            app_obj,
            ApplicationSpec.model_validate(spec),
            API_URL,
            traefik.client(),
            "traefik.io/v1alpha1",
        )
    routes = Routes(header=(HeaderRule(header="X-Canary", exact="yes"),), mirror=20)

    async def scenario() -> list[tuple[str, str]]:
        for router in routers.values():
            await router.ensure_route()
            await router.set_weights(90, 10)
        for _ in range(3):  # each backend is loaded before the route to it
            traefik.load_crd_objects(kube.store)
            await routers["shop"].set_routes(routes)
        traefik.load_crd_objects(kube.store)
        traefik.answered.clear()
        router = routers["shop"]
        assert await router.live_weights() == (90, 10)
        assert await router.live_routes() == routes
        assert await router.serving() == {
            "stable": frozenset({"10.246.0.1"}),
            "canary": frozenset({"10.246.0.1"}),
        }
        return list(traefik.answered)

    read = asyncio.run(scenario())
    watch = routers["shop"].watch()
    assert watch is not None and read
    assert unwatched(read, watch.names) == []
