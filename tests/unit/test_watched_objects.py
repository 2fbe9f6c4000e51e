"""Traefik's route objects as their watch keeps them (`WatchedObjects`): a round reads them
there instead of four API calls, and still sees every change lockgate or anybody made."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import kopf

from lockgate.api import ApplicationSpec
from lockgate.controller import handlers
from lockgate.controller.fleets import fleet_for
from lockgate.controller.wakeups import Wake
from lockgate.kube import SWEEP_EVERY, WATCHED_TRUST_S, WatchedObjects
from lockgate.names import LABEL_APP
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import NS, FakeKube, runtime_over

ROUTED = {
    "kubernetes": {"replicas": 2},
    "traffic": {"traefik": {"route": {"match": "Host(`shop.test`)"}}},
}


def service(weights: tuple[int, int], annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {
            "name": "shop",
            "namespace": NS,
            "annotations": annotations or {},
            "managedFields": [{"manager": "lockgate"}],
        },
        "spec": {
            "weighted": {
                "services": [
                    {"name": "shop-stable", "port": 8080, "weight": weights[0]},
                    {"name": "shop-canary", "port": 8080, "weight": weights[1]},
                ]
            }
        },
        "status": {"whatever": 1},
    }


def test_a_watch_event_replaces_an_object_and_a_deletion_keeps_it_as_absent() -> None:
    kept = WatchedObjects()
    assert kept.get("traefikservices", NS, "shop") == (False, None), "never seen: read it"
    kept.seen("traefikservices", "ADDED", service((100, 0)))
    kept.seen("traefikservices", "MODIFIED", service((80, 20)))
    known, obj = kept.get("traefikservices", NS, "shop")
    assert known and obj is not None
    assert obj["spec"]["weighted"]["services"][1]["weight"] == 20
    kept.seen("traefikservices", "DELETED", service((80, 20)))
    assert kept.get("traefikservices", NS, "shop") == (True, None)


def test_only_spec_and_annotations_are_kept_and_as_a_copy() -> None:
    kept = WatchedObjects()
    body = service((100, 0), {"lockgate.dev/header-route": "[]"})
    kept.seen("traefikservices", "ADDED", body)
    body["spec"]["weighted"]["services"][0]["weight"] = 1  # kopf's body, reused: not ours
    _, obj = kept.get("traefikservices", NS, "shop")
    assert obj == {
        "metadata": {"name": "shop", "annotations": {"lockgate.dev/header-route": "[]"}},
        "spec": service((100, 0))["spec"],
    }


def test_what_nothing_confirmed_for_a_while_is_read_again_and_swept() -> None:
    now = [0.0]
    kept = WatchedObjects(clock=lambda: now[0])
    kept.put("traefikservices", NS, "shop", service((100, 0)))
    now[0] = WATCHED_TRUST_S - 1
    assert kept.get("traefikservices", NS, "shop")[0]
    now[0] = WATCHED_TRUST_S
    assert kept.get("traefikservices", NS, "shop") == (False, None)
    for i in range(SWEEP_EVERY - 1):  # a deleted Application's entries do not stay for ever
        kept.put("ingressroutes", NS, f"other-{i}", None)
    assert len(kept) == SWEEP_EVERY - 1, "the stale entry swept at the 1,024th write"


def test_the_watch_handlers_keep_what_kopf_delivers() -> None:
    rt = runtime_over(FakeKube())
    memo = kopf.Memo(runtime=rt)
    body = kopf.Body(service((50, 50)))
    asyncio.run(handlers.traefik_service_event(memo=memo, body=body, type="MODIFIED"))
    route = {"metadata": {"name": "shop", "namespace": NS}, "spec": {"routes": []}}
    asyncio.run(handlers.ingress_route_event(memo=memo, body=kopf.Body(route), type=None))
    assert rt.route_objects.get("traefikservices", NS, "shop")[1] == {
        "metadata": {"name": "shop", "annotations": {}},
        "spec": service((50, 50))["spec"],
    }
    assert rt.route_objects.get("ingressroutes", NS, "shop")[0]


def test_a_round_sees_its_own_write_at_once_and_anybody_elses_with_its_event() -> None:
    """No read per round; lockgate's write is what the next round sees even before its watch
    event comes; somebody else's change is seen once the watch delivers it."""
    kube = FakeKube()
    app_obj = kube.add_application("shop", ROUTED)
    rt = runtime_over(kube)
    app = ApplicationSpec.model_validate(ROUTED)
    reads: list[str] = []
    get = kube.custom.get_namespaced_custom_object

    def counted(group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        reads.append(f"{plural}/{name}")
        return get(group, version, namespace, plural, name)

    async def declared() -> tuple[int, int] | None:
        router = await fleet_for(rt, app_obj, app, "dep/1").router()  # type: ignore[attr-defined]
        weights: tuple[int, int] | None = await router.declared_weights()
        return weights

    async def scenario() -> None:
        await fleet_for(rt, app_obj, app, None).ensure_owned()
        kube.custom.get_namespaced_custom_object = counted  # type: ignore[method-assign]
        router = await fleet_for(rt, app_obj, app, "dep/1").router()  # type: ignore[attr-defined]
        await router.set_weights(80, 20)
        assert await declared() == (80, 20)
        # Somebody else sets 50/50: until its event comes, the kept object is lockgate's.
        cast(dict[str, Any], kube.store[("traefikservices", NS, "shop")]).update(service((50, 50)))
        assert await declared() == (80, 20)
        handlers._route_object_seen(
            kopf.Memo(runtime=rt), "traefikservices", "MODIFIED", kopf.Body(service((50, 50))), {}
        )
        assert await declared() == (50, 50)
        await rt.aclose()

    asyncio.run(scenario())
    assert reads == [], "every read answered by what lockgate wrote or the watch delivered"


def test_a_route_object_somebody_else_changed_wakes_the_rollouts_and_an_echo_does_not() -> None:
    """A split edited by hand wakes the Application's rollouts, which put back what they
    declared; the watch event of lockgate's own write (kept as its answer came) wakes none,
    or every write would cost a round more."""
    kube = FakeKube()
    kube.add_application("shop", ROUTED)
    kube.add_deployment("dep", dep_spec())
    rt = runtime_over(kube)
    woken = Wake()
    rt.wakeups.register("deployments", NS, "dep", woken)
    labelled = {**service((80, 20))}
    labelled["metadata"] = {**labelled["metadata"], "labels": {LABEL_APP: "shop"}}

    def event(body: dict[str, Any]) -> None:
        asyncio.run(
            handlers.traefik_service_event(
                memo=kopf.Memo(runtime=rt),
                body=kopf.Body(body),
                type="MODIFIED",
                deployments_by_application=kube.index(),
            )
        )

    rt.route_objects.put("traefikservices", NS, "shop", labelled)  # lockgate's write
    event(labelled)  # its echo
    assert not woken.is_set()
    edited = {**labelled, "spec": service((0, 100))["spec"]}
    event(edited)
    assert woken.is_set() and woken.by == "route"
