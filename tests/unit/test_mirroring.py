"""Mirroring (`setMirror` canary steps, a dark launch): the API, the plan, the engine judging
the canary on mirrored requests alone, the file provider's config and the IngressRoute
router's order of writes."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from lockgate.api.deployment import MSG_MIRROR, CanaryStep
from lockgate.engine import (
    NO_ROUTES,
    EnsureInstances,
    HeaderRule,
    Routes,
    SetRoutes,
    SetWeights,
    compile_plan,
    cross_check,
)
from lockgate.traffic.traefik_file import FileConfig, RouteConfig, dump, parse, render
from tests.support.fakeworld import Driver, FakeWorld, app_spec, dep_spec
from tests.unit.controller_fakes import NS, FakeKube
from tests.unit.test_header_routes import FakeTraefik, crd_router, routed_app

ANALYSIS = {"intervalSeconds": 5, "minRequests": 20, "maxConsecutiveFailures": 2}
DARK_LAUNCH = {
    "type": "Canary",
    "canary": {"steps": [{"setMirror": {"percent": 20}}, {"setWeight": 10}, 100]},
}


@pytest.mark.parametrize(
    "step",
    [
        {"setMirror": {"percent": 101}},
        {"setMirror": {"percent": -1}},
        {"setMirror": {"percent": 20.0}},
        {"setMirror": {"percent": None}},
        {"setMirror": {}},
        {"setMirror": {"percent": 20, "other": 1}},
    ],
)
def test_a_malformed_mirror_is_refused(step: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as err:
        CanaryStep.model_validate(step)
    assert MSG_MIRROR in str(err.value) or "setMirror." in str(err.value)


def test_mirroring_needs_the_applications_route() -> None:
    problem = cross_check(app_spec(4), dep_spec(strategy=DARK_LAUNCH))
    assert problem is not None
    assert problem.startswith("spec.strategy.canary.steps[0].setMirror: needs")
    assert cross_check(routed_app(), dep_spec(strategy=DARK_LAUNCH)) is None


def test_the_plan_gates_the_mirror_on_analysis_and_ends_it_at_the_first_weight() -> None:
    plan = compile_plan(
        routed_app(), dep_spec(strategy=DARK_LAUNCH, analysis=ANALYSIS), has_stable=True
    )
    steps = [(s.kind, s.weight, s.routes.mirror, s.gate) for s in plan.steps]
    assert steps[:3] == [
        ("start", 0, 0, False),
        ("shift", 0, 20, True),  # judged on mirrored requests before any client reaches it
        ("shift", 10, 0, True),
    ]
    assert plan.steps[1].description == "setMirror 20% (analysis gate)"
    assert plan.steps[-1].routes == NO_ROUTES
    stop = {
        "type": "Canary",
        "canary": {"steps": [{"setMirror": {"percent": 5}}, {"setMirror": {"percent": 0}}, 100]},
    }
    plan = compile_plan(routed_app(), dep_spec(strategy=stop), has_stable=True)
    assert plan.steps[2].description == "stop mirroring" and plan.steps[2].routes == NO_ROUTES


def test_a_healthy_canary_passes_on_mirrored_requests_and_then_gets_clients() -> None:
    app = routed_app()
    world = FakeWorld(units=app.units())
    driver = Driver(app, dep_spec(strategy=DARK_LAUNCH, analysis=ANALYSIS), world)
    status = driver.run()
    assert status.phase == "Succeeded", status.message
    judged = [r for r in status.analysis if r.step == 1]
    assert judged and judged[-1].verdict == "Passed"
    assert judged[-1].canary is not None and judged[-1].canary.requests == 200  # 20% copied
    assert world.routes == NO_ROUTES
    mirrored = [a for a in world.applied if isinstance(a, SetRoutes) and a.routes.mirror]
    assert mirrored and all(ready > 0 for _, r, ready in world.route_log if r)


def test_a_canary_failing_every_mirrored_request_is_rolled_back_before_any_client_reaches_it() -> (
    None
):
    app = routed_app()
    world = FakeWorld(units=app.units(), error_rates={"app:2": 1.0}, route_delay=2.0)
    status = Driver(app, dep_spec(strategy=DARK_LAUNCH, analysis=ANALYSIS), world).run()
    assert status.phase == "RolledBack", status.message
    assert "analysis failed at step 2" in (status.message or "")
    assert all(a.canary == 0 for a in world.applied if isinstance(a, SetWeights))
    assert world.routes == NO_ROUTES and not world.canary.started
    removed = max(i for i, a in enumerate(world.applied) if a == SetRoutes(NO_ROUTES))
    gone = next(
        i
        for i, a in enumerate(world.applied)
        if isinstance(a, EnsureInstances) and a.role == "canary" and not a.units
    )
    assert removed < gone
    assert world.removed_under_route == [], "removed while Traefik still mirrored to them"


def test_a_mirror_waiting_for_its_analysis_sleeps_only_until_the_window_is_due() -> None:
    """A waiting rollout sleeps until an event or its own timer. At weight 0 the copies are
    the only traffic analysis judges: without the window's timer, a failing canary behind a
    mirror on Kubernetes was judged once, at the step's deadline, and rolled back by the
    deadline rather than by its analysis."""
    app = routed_app()
    world = FakeWorld(units=app.units())
    driver = Driver(app, dep_spec(strategy=DARK_LAUNCH, analysis=ANALYSIS), world)
    waits: list[float | None] = []  # of the rounds after which the driver sleeps
    for _ in range(100):
        before = driver.status
        decision = driver.step()
        s = driver.status
        if s.analysis:
            break
        mirrored = s.step is not None and s.step.index == 1 and s.routes and s.routes.mirror_percent
        if mirrored and s == before:  # a round that changed the status is followed at once
            waits.append(decision.requeue_after)
        world.now += timedelta(seconds=1)
    assert driver.status.analysis, "the mirrored requests were judged"
    assert waits and all(w is not None and w <= ANALYSIS["intervalSeconds"] for w in waits), (
        f"each round waiting for the first window asks to be woken for it: {waits}"
    )


# --- file provider ---------------------------------------------------------------------------


def config(mirror: int, canary: tuple[str, ...] = ("http://h2:1",)) -> FileConfig:
    return FileConfig(
        app="shop",
        weights=(100, 0),
        servers={"stable": ("http://h1:1",), "canary": canary},
        route=RouteConfig("Host(`shop.test`)"),
        routes=Routes(mirror=mirror),
    )


def test_the_file_routes_through_a_mirroring_service_while_the_mirror_holds() -> None:
    http = render(config(20))["http"]
    assert http["routers"]["shop"]["service"] == "shop-mirror"
    assert http["services"]["shop-mirror"] == {
        "mirroring": {"service": "shop", "mirrors": [{"name": "shop-canary", "percent": 20}]}
    }
    assert parse("shop", dump(config(20))) == config(20)
    idle = render(config(0))["http"]
    assert idle["routers"]["shop"]["service"] == "shop" and "shop-mirror" not in idle["services"]
    empty = render(config(20, canary=()))["http"]
    assert empty["routers"]["shop"]["service"] == "shop", "no mirror to a canary without servers"


def test_the_files_router_retries_except_while_it_mirrors() -> None:
    """Traefik hands the mirrored copy the request's retry state: a copy starting as the
    client's answer is checked sends the request again into the answer already written, and
    the client's connection is closed (seen as a failed client request about once in 2,000
    copies on Docker hosts). No retry while mirroring; the retry is back once it ends."""
    assert "middlewares" not in render(config(20))["http"]["routers"]["shop"]
    assert render(config(0))["http"]["routers"]["shop"]["middlewares"] == ["shop-retry"]
    header = FileConfig(
        app="shop",
        weights=(100, 0),
        servers={"stable": ("http://h1:1",), "canary": ("http://h2:1",)},
        route=RouteConfig("Host(`shop.test`)"),
        routes=Routes(header=(HeaderRule(header="X-Canary", exact="always"),), mirror=20),
    )
    routers = render(header)["http"]["routers"]
    assert routers["shop-header"]["middlewares"] == ["shop-retry"], "no mirror on that route"


# --- IngressRoute router ---------------------------------------------------------------------


def test_the_route_moves_to_the_mirror_only_once_traefik_has_it_and_back_before_it_parks() -> None:
    kube = FakeKube()
    traefik = FakeTraefik(kube)
    router = crd_router(kube, traefik)
    routes = Routes(mirror=20)

    def main_target() -> str:
        return str(
            kube.store[("ingressroutes", NS, "shop")]["spec"]["routes"][0]["services"][0]["name"]
        )

    async def scenario() -> None:
        await router.ensure_route()
        traefik.sync()
        await router.set_routes(routes)
        mirror = kube.store[("traefikservices", NS, "shop-mirror")]["spec"]["mirroring"]
        assert mirror["name"] == "shop" and mirror["kind"] == "TraefikService"
        assert mirror["mirrors"] == [{"name": "shop-canary", "port": 8080, "percent": 20}]
        assert main_target() == "shop", "no route to the mirror before Traefik has it"
        traefik.sync()
        await router.set_routes(routes)
        assert main_target() == "shop-mirror"
        assert await router.declared_routes() == routes
        assert await router.live_routes() is None
        traefik.sync()
        assert await router.live_routes() == routes
        await router.set_routes(NO_ROUTES)
        assert main_target() == "shop"
        parked = kube.store[("traefikservices", NS, "shop-mirror")]["spec"]["mirroring"]
        assert parked["mirrors"] == [], "parked: a pass-through, never deleted"
        assert await router.live_routes() is None, "Traefik still routes to it"
        traefik.sync()
        assert await router.live_routes() == NO_ROUTES

    asyncio.run(scenario())


def test_lockgate_plan_shows_the_mirror_and_what_its_gate_waits_for() -> None:
    from pathlib import Path

    from lockgate.cli.plan import plan_command

    root = Path(__file__).parents[2] / "manifests/examples/kubernetes"
    text = plan_command([root / "canary-mirror.yaml", root / "application.yaml"])
    line = next(line for line in text.splitlines() if "setMirror 20%" in line)
    assert "100/0 +mirror 20%" in line
    assert "mirror live, then a passed analysis of the copies alone" in line
    weight = next(line for line in text.splitlines() if "setWeight 10" in line)
    assert "+mirror" not in weight, "the first weight ends the mirror"
