"""A round's questions to Traefik answered from the observer's look (`LookReads`) instead of
four requests of its own: every round asking at once shares one look, no look older than
its limit is used, and never one begun before the Application's route objects last changed
(a split written after a look is not confirmed by it). Against the fake Traefik API, whose
filters stand in for Traefik's (the integration test `test_traffic_routes.py` compares the
answers with the real Traefik's)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any, cast

from hypothesis import given, settings
from hypothesis import strategies as st

from lockgate.api import ApplicationSpec
from lockgate.engine.model import NO_ROUTES, HeaderRule, Routes
from lockgate.kube import WatchedObjects
from lockgate.traffic.traefik_api import HttpReads, Look, TraefikReads, listing_in
from lockgate.traffic.traefik_crd import TraefikCrdRouter
from lockgate.traffic.traefik_observer import LookReads, TraefikObserver, TraefikObservers
from tests.unit.controller_fakes import NS, FakeKube
from tests.unit.fake_traefik import API_URL, FakeTraefikApi

SPEC: dict[str, Any] = {"kubernetes": {"replicas": 2}}
FOREVER = 3600.0  # a look this old still counts: only the changes decide


def routers(
    kube: FakeKube,
    traefik: FakeTraefikApi,
    n: int,
    looks: bool = True,
    watched: WatchedObjects | None = None,
    spec: dict[str, Any] = SPEC,
) -> list[TraefikCrdRouter]:
    """The routers of n rounds of Applications shop0..: reading through one observer's looks
    (as the operator does), or each read a request."""
    watched = WatchedObjects() if watched is None else watched  # an empty one is falsy
    observers = TraefikObservers(traefik.client())
    out = []
    for i in range(n):
        name = f"shop{i}"
        app_obj = kube.store.get(("applications", NS, name)) or kube.add_application(name, spec)
        out.append(
            TraefikCrdRouter(
                kube,  # type: ignore[arg-type]
                app_obj,
                ApplicationSpec.model_validate(spec),
                API_URL,
                traefik.client(),
                "traefik.io/v1alpha1",
                watched,
                observers if looks else None,
            )
        )
    return out


async def observation(router: TraefikCrdRouter) -> tuple[Any, Any]:
    return await router.live_weights(), await router.serving()


def test_rounds_asking_at_once_share_one_look_and_get_what_requests_would() -> None:
    """Twenty rounds observing at once: one request in all (each used to send four), and
    each answer is the one its own requests get. (The route objects are known, as their watch
    keeps them: one seen for the first time counts as changed then.)"""
    kube, traefik, watched = FakeKube(), FakeTraefikApi(), WatchedObjects()

    async def scenario() -> None:
        by_requests = routers(kube, traefik, 20, looks=False, watched=watched)
        for i, router in enumerate(by_requests):
            await router.set_weights(100 - i, i)
        traefik.load_crd_objects(kube.store)
        expected = [await observation(r) for r in by_requests]
        assert expected[7][0] == (93, 7)
        traefik.requests.clear()

        looking = routers(kube, traefik, 20, watched=watched)
        answers = await asyncio.gather(*(observation(r) for r in looking))
        assert answers == expected
        assert dict(traefik.requests) == {"/api/rawdata": 1}, "one look, nothing else"

    asyncio.run(scenario())


def test_a_split_written_after_the_latest_look_is_confirmed_only_by_a_later_look() -> None:
    """Traefik serves 100/0 when a round looks; the rollout then moves to 70/30 (Traefik loads
    it) and aborts back to 100/0 (not loaded yet). That first look says 100/0, but it is
    older than the write: confirming the abort from it would take the canary's Pods away
    while Traefik still sends them 30%. Nor does the write send a look of its own: the
    observer's next one (its waiters') tells."""
    kube, traefik = FakeKube(), FakeTraefikApi()

    async def scenario() -> None:
        (router,) = routers(kube, traefik, 1)
        observer = cast(LookReads, router.reads).observer
        await router.ensure_route()  # the probe route: which Pod addresses Traefik serves
        await router.set_weights(100, 0)
        traefik.load_crd_objects(kube.store)
        assert await router.live_weights() == (100, 0)
        await router.set_weights(70, 30)
        traefik.load_crd_objects(kube.store)
        await router.set_weights(100, 0)
        looks = traefik.looks
        assert await router.live_weights() is None, "a look from before the write"
        served = await router.serving()
        assert served is not None and served["stable"] == {"10.246.0.1"}, "not tied to the split"
        assert traefik.looks == looks, "no look of its own"
        await observer.look_since(time.monotonic())  # the observer's next look
        assert await router.live_weights() is None, "Traefik serves 70/30"
        traefik.load_crd_objects(kube.store)
        await observer.look_since(time.monotonic())
        assert await router.live_weights() == (100, 0)
        assert traefik.looks == looks + 2

    asyncio.run(scenario())


def test_reading_a_route_object_for_the_first_time_is_no_change() -> None:
    """A round reads the parked backends it has never seen (absent here): what it finds is
    how things are, not a change Traefik has yet to show, so the next round's questions are
    answered from the same look."""
    kube, traefik = FakeKube(), FakeTraefikApi()
    routed = {**SPEC, "traffic": {"traefik": {"route": {"match": "Host(`shop.test`)"}}}}

    async def scenario() -> None:
        (router,) = routers(kube, traefik, 1, spec=routed)
        await router.ensure_route()
        await router.set_weights(100, 0)
        traefik.load_crd_objects(kube.store)
        for _ in range(2):
            assert await router.live_weights() == (100, 0)
            assert await router.live_routes() == NO_ROUTES
        assert traefik.looks == 1

    asyncio.run(scenario())


def test_a_header_route_is_not_taken_as_gone_while_traefik_cannot_say() -> None:
    """Once the header route is dropped and its backend parked, the route counts as gone
    when Traefik no longer routes to that backend, not when Traefik's API cannot be read
    (nor, reading from looks, while the latest look is older than the change)."""
    kube, traefik = FakeKube(), FakeTraefikApi()
    routed = {**SPEC, "traffic": {"traefik": {"route": {"match": "Host(`shop.test`)"}}}}
    tester = Routes(header=(HeaderRule(header="X-Canary", exact="always"),))

    async def scenario() -> None:
        (router,) = routers(kube, traefik, 1, looks=False, spec=routed)
        await router.ensure_route()
        await router.set_weights(100, 0)
        for _ in range(3):  # the backend, Traefik loads it, the route to it
            traefik.load_crd_objects(kube.store)
            await router.set_routes(tester)
        traefik.load_crd_objects(kube.store)
        assert await router.live_routes() == tester
        for _ in range(2):  # the route dropped, then the backend parked
            await router.set_routes(NO_ROUTES)
        assert await router.live_routes() is None, "Traefik still routes to the backend"
        traefik.down = True
        assert await router.live_routes() is None, "not known to be gone"

    asyncio.run(scenario())


def reads(traefik: FakeTraefikApi, max_age: float, changed: float = 0.0) -> LookReads:
    return LookReads(TraefikObserver(traefik.client(), API_URL), lambda: changed, max_age)


async def weighted(reads: TraefikReads) -> Any:
    answer = await reads.service(f"{NS}-shop", "kubernetescrd")
    return answer and answer["weighted"]["services"][1]["weight"]


def test_a_look_older_than_its_limit_is_looked_again_and_a_younger_one_shared() -> None:
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop", 90, 10)

    async def scenario() -> None:
        young, old = reads(traefik, FOREVER), reads(traefik, 0.0)
        assert [await weighted(young) for _ in range(3)] == [10, 10, 10]
        assert traefik.looks == 1
        traefik.app(NS, "shop", 80, 20)  # Traefik reloads
        assert await weighted(young) == 10, "no change of the Application's: the look holds"
        assert [await weighted(old) for _ in range(3)] == [20, 20, 20]
        assert traefik.looks == 4, "every read of a 0 s limit looks again"

    asyncio.run(scenario())


def test_a_failed_look_confirms_nothing_and_a_later_read_looks_again() -> None:
    traefik = FakeTraefikApi()
    traefik.app(NS, "shop", 90, 10)

    async def scenario() -> None:
        look = reads(traefik, 0.0)
        assert await weighted(look) == 10
        traefik.down = True
        assert await weighted(look) is None, "not the answer of the look before"
        assert await look.listing("routers", search="shop") is None
        traefik.down = False
        assert await weighted(look) == 10
        assert await weighted(HttpReads(traefik.client(), API_URL)) == 10

    asyncio.run(scenario())


# --- Look: the same answers as going through every entry -------------------------------------

NAMES = st.text(alphabet="abAB-@x0", min_size=0, max_size=6)
ENTRIES = st.dictionaries(
    st.tuples(st.sampled_from(["router:", "service:"]), NAMES).map("".join),
    st.fixed_dictionaries(
        {},
        optional={
            "rule": NAMES,
            "service": NAMES,
            "status": st.sampled_from(["enabled", "disabled", "Enabled", "warning"]),
        },
    ),
    max_size=12,
)


def part_of(words: list[str]) -> st.SearchStrategy[str]:
    """Any string, or (mostly) a piece of one of `words`: what a search finds."""
    pieces = st.sampled_from(words or [""]).flatmap(
        lambda w: st.tuples(st.integers(0, len(w)), st.integers(0, len(w))).map(
            lambda ij: w[min(ij) : max(ij)]
        )
    )
    return st.one_of(NAMES, pieces, pieces.map(str.upper))


@settings(max_examples=400, deadline=None)
@given(entries=ENTRIES, kind=st.sampled_from(["routers", "services"]), data=st.data())
def test_a_looks_indexes_answer_as_going_through_every_entry(
    entries: dict[str, Any], kind: str, data: st.DataObject
) -> None:
    """`Look.listing` finds candidates in its text and service index; `listing_in` (whose
    filters the integration test holds against the real Traefik's) checks every entry."""
    words = [k.partition(":")[2] for k in entries] + [
        str(v) for e in entries.values() for v in e.values()
    ]
    search, service = data.draw(part_of(words)), data.draw(part_of(words))
    status = data.draw(st.sampled_from(["", "enabled", "ENABLED", "disabled"]))
    look = Look(entries)
    query = {"search": search, "status": status, "serviceName": service}
    assert look.listing(kind, **query) == listing_in(entries, kind, **query)
    assert look.listing(kind, serviceName=service) == listing_in(entries, kind, serviceName=service)


def test_a_write_traefik_already_serves_wakes_its_waiter_at_the_first_look_after_it() -> None:
    """A round asks for 70/30 and the next, aborting, for 90/10 again before Traefik loaded
    70/30: Traefik serves 90/10 throughout, so no look sees a change. The round could not
    confirm 90/10 from the look it read (begun before the write), so its watch asks to be
    woken by the first look begun after the write, change or not: it used to look again
    every 2 s instead, whatever the reason it waited (at 1,000 Applications, with Traefik
    taking 20 to 110 s to load a split, 10 to 55 rounds per weight). A round that read a
    look begun after the write waits for a change only."""
    from tests.unit.test_traefik_observer import fast, until

    kube, traefik = FakeKube(), FakeTraefikApi()

    async def scenario() -> None:
        (router,) = routers(kube, traefik, 1)
        observers = TraefikObservers(traefik.client(), fast)
        router.reads = observers.reads(API_URL, cast(LookReads, router.reads).changed)
        observer = observers.get(API_URL)
        await router.ensure_route()
        await router.set_weights(90, 10)
        traefik.load_crd_objects(kube.store)
        assert await router.live_weights() == (90, 10)
        await router.set_weights(70, 30)
        await router.set_weights(90, 10)  # before Traefik loaded 70/30
        assert await router.live_weights() is None, "a look from before the write"
        watch = router.watch()
        assert watch is not None and watch.fresh_after is not None
        woken: list[str] = []
        observers.watch("rollout", watch, observers.marks(), lambda: woken.append("after"))
        await until(lambda: bool(woken), "woken by a look after the write, with no change")
        assert await router.live_weights() == (90, 10)

        # Its reads now come from a look begun after the write: only a change wakes it.
        watch = router.watch()
        assert watch is not None and watch.fresh_after is None
        observers.watch("rollout", watch, observers.marks(), lambda: woken.append("change"))
        looks = traefik.looks
        await until(lambda: traefik.looks >= looks + 5, "five more looks")
        assert woken == ["after"], "unchanged looks wake nobody"
        await router.set_weights(70, 30)
        traefik.load_crd_objects(kube.store)
        await until(lambda: woken == ["after", "change"], "woken by Traefik's change")
        await observer.aclose()

    asyncio.run(scenario())


def test_the_wait_of_a_round_for_a_fresh_look_is_measured(monkeypatch: Any) -> None:
    """`lockgate_traefik_look_wait_seconds`: how long a round's read waited for a look recent
    enough to answer it, while it held its turn."""
    from prometheus_client import REGISTRY

    from lockgate.traffic import traefik_observer

    clock = [50.0]

    class SlowObserver:
        answered_at: float | None = None

        async def look_since(self, since: float) -> Look:
            clock[0] += 3.0  # the next look answers 3 s after the round asked
            self.answered_at = clock[0]
            return Look({})

    def in_bucket() -> float:
        bucket = "lockgate_traefik_look_wait_seconds_bucket"
        five = REGISTRY.get_sample_value(bucket, {"le": "5.0"}) or 0.0
        return five - (REGISTRY.get_sample_value(bucket, {"le": "2.5"}) or 0.0)

    monkeypatch.setattr(traefik_observer, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    reads = LookReads(cast(TraefikObserver, SlowObserver()))
    before = in_bucket()
    asyncio.run(reads.service("web@kubernetescrd", "kubernetescrd"))
    assert in_bucket() - before == 1
