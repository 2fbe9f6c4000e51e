"""Header and cookie routes (`setHeaderRoute` canary steps): the API, the plan, the engine in
the fake world, the Traefik rules, the file provider's config and the IngressRoute router."""

from __future__ import annotations

import asyncio
import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from lockgate.api import ApplicationSpec
from lockgate.api.deployment import MSG_HEADER_ROUTE, MSG_STEP_ONE_OF, CanaryStep
from lockgate.engine import (
    NO_ROUTES,
    EnsureInstances,
    HeaderRule,
    Promote,
    Routes,
    SetRoutes,
    SetWeights,
    compile_plan,
    cross_check,
)
from lockgate.traffic.traefik_crd import HEADER_ROUTE_ANNOTATION, TraefikCrdRouter
from lockgate.traffic.traefik_file import FileConfig, RouteConfig, dump, parse, render
from lockgate.traffic.traefik_rules import condition, header_priority, header_rule
from tests.support.fakeworld import (
    Driver,
    FakeWorld,
    Outage,
    app_spec,
    dep_spec,
    docker_app_spec,
)
from tests.unit.controller_fakes import NS, FakeKube

ROUTE = {"traefik": {"route": {"match": "Host(`shop.test`)"}}}
TESTERS = {"setHeaderRoute": {"match": [{"header": "X-Canary", "exact": "always"}]}}
HEADER_THEN_WEIGHTS = {
    "type": "Canary",
    "canary": {
        "steps": [TESTERS, {"pause": {"seconds": 20}}, {"setWeight": 25}, {"setWeight": 100}]
    },
}
ANALYSIS = {"intervalSeconds": 5, "minRequests": 20}
RULE = HeaderRule(header="X-Canary", exact="always")


def routed_app(replicas: int = 4) -> ApplicationSpec:
    return app_spec(replicas, traffic=ROUTE)


# --- API -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "step",
    [
        {"setHeaderRoute": {"match": [{"header": "X-A", "cookie": "c", "exact": "1"}]}},
        {"setHeaderRoute": {"match": [{"header": "X-A"}]}},
        {"setHeaderRoute": {"match": [{"header": "X-A", "exact": "1", "regex": "1"}]}},
        {"setHeaderRoute": {"match": [{"header": "X A", "exact": "1"}]}},
        {"setHeaderRoute": {"match": [{"header": "X-A", "exact": "a`b"}]}},
        {"setHeaderRoute": {"match": [{"header": "X-A", "exact": None}]}},
        {"setHeaderRoute": {"match": [{"header": "X", "exact": "1"}] * 11}},
    ],
)
def test_a_malformed_header_route_is_refused_naming_the_steps(step: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as err:
        CanaryStep.model_validate(step)
    assert MSG_HEADER_ROUTE in str(err.value)


def test_a_step_sets_exactly_one_thing() -> None:
    with pytest.raises(ValidationError) as err:
        CanaryStep.model_validate({"setWeight": 10, **TESTERS})
    assert MSG_STEP_ONE_OF in str(err.value)


def test_the_route_needs_an_application_route_and_a_valid_regex() -> None:
    spec = dep_spec(strategy=HEADER_THEN_WEIGHTS)
    assert cross_check(routed_app(), spec) is None
    problem = cross_check(app_spec(4), spec)
    assert problem is not None
    assert problem.startswith("spec.strategy.canary.steps[0].setHeaderRoute: needs")
    bad = dep_spec(
        strategy={
            "type": "Canary",
            "canary": {
                "steps": [{"setHeaderRoute": {"match": [{"cookie": "c", "regex": "(a"}]}}, 100]
            },
        }
    )
    problem = cross_check(routed_app(), bad)
    assert problem is not None
    assert "steps[0].setHeaderRoute.match[0].regex: not a regular expression" in problem


# --- plan ------------------------------------------------------------------------------------


def test_the_plan_starts_the_canary_before_its_route_and_holds_the_route_until_promotion() -> None:
    plan = compile_plan(routed_app(), dep_spec(strategy=HEADER_THEN_WEIGHTS), has_stable=True)
    kinds = [(s.kind, s.weight, s.routes) for s in plan.steps]
    held = Routes(header=(RULE,))
    assert kinds == [
        ("start", 0, NO_ROUTES),
        ("shift", 0, held),
        ("pause", 0, held),
        ("shift", 25, held),  # the one canary replica carries 25% of 4
        ("start", 25, held),
        ("shift", 100, held),
        ("promote", 100, NO_ROUTES),
    ]
    assert plan.steps[1].description == "setHeaderRoute header X-Canary = always"
    assert not plan.steps[1].gate, "testers' requests are no analysis gate"


def test_an_empty_header_route_step_removes_the_route() -> None:
    strategy = {
        "type": "Canary",
        "canary": {"steps": [{"setWeight": 10}, TESTERS, {"setHeaderRoute": {}}, 100]},
    }
    plan = compile_plan(routed_app(), dep_spec(strategy=strategy), has_stable=True)
    assert [s.description for s in plan.steps][2:4] == [
        "setHeaderRoute header X-Canary = always",
        "remove the header route",
    ]
    assert plan.steps[3].routes == NO_ROUTES


# --- engine ----------------------------------------------------------------------------------


def test_header_route_then_weights_succeeds_and_the_route_is_gone_before_promotion() -> None:
    app = routed_app()
    world = FakeWorld(units=app.units(), header_share=5)
    driver = Driver(app, dep_spec(strategy=HEADER_THEN_WEIGHTS, analysis=ANALYSIS), world)
    status = driver.run()
    assert status.phase == "Succeeded", status.message
    assert world.routes == NO_ROUTES
    routes = [a for a in world.applied if isinstance(a, SetRoutes)]
    assert routes[0].routes.header == (RULE,) and routes[-1].routes == NO_ROUTES
    # Never a route to a canary without a ready instance.
    assert all(ready > 0 for _, r, ready in world.route_log if r)
    # Removed before the promotion (which re-purposes the canary's backend).
    order = [a for a in world.applied if isinstance(a, SetRoutes | Promote)]
    assert isinstance(order[-1], Promote) and order[-2] == SetRoutes(NO_ROUTES)
    assert status.routes is not None and status.routes.header_route == []


def test_while_weight_is_zero_only_header_requests_reach_the_canary_and_are_analysed() -> None:
    app = routed_app()
    world = FakeWorld(units=app.units(), header_share=10)
    strategy = {"type": "Canary", "canary": {"steps": [TESTERS, {"pause": {}}, 100]}}
    driver = Driver(app, dep_spec(strategy=strategy, analysis=ANALYSIS), world)
    driver.run(until={"Paused"})
    assert world.weights == (100, 0) and world.routes.header == (RULE,)
    for _ in range(12):  # two analysis windows while paused
        driver.step()
        world.now += timedelta(seconds=1)
    status = driver.status
    assert status.routes is not None
    assert status.routes.header_route == ["header X-Canary = always"]
    assert status.weights is not None and status.weights.canary == 0
    runs = [r for r in status.analysis if r.canary is not None]
    assert runs and runs[-1].canary is not None and runs[-1].canary.requests == 100


def test_a_failing_canary_behind_a_header_route_is_rolled_back_and_the_route_removed_first() -> (
    None
):
    app = routed_app()
    world = FakeWorld(
        units=app.units(), header_share=10, error_rates={"app:2": 1.0}, route_delay=3.0
    )
    strategy = {"type": "Canary", "canary": {"steps": [TESTERS, {"pause": {}}, 100]}}
    status = Driver(app, dep_spec(strategy=strategy, analysis=ANALYSIS), world).run()
    assert status.phase == "RolledBack", status.message
    assert "canary 5xx ratio 1.00" in (status.message or "")
    assert world.routes == NO_ROUTES and not world.canary.started
    removed = next(i for i, a in enumerate(world.applied) if a == SetRoutes(NO_ROUTES) and i > 0)
    gone = next(
        i
        for i, a in enumerate(world.applied)
        if isinstance(a, EnsureInstances) and a.role == "canary" and not a.units
    )
    assert removed < gone, "the canary's instances go only once no route points at them"
    assert world.removed_under_route == [], "removed while Traefik still routed to them"


def test_a_canary_that_loses_its_ready_instance_loses_its_route_until_it_recovers() -> None:
    app = routed_app()
    world = FakeWorld(units=app.units(), header_share=10)
    strategy = {"type": "Canary", "canary": {"steps": [TESTERS, {"pause": {}}, 100]}}
    driver = Driver(app, dep_spec(strategy=strategy), world)
    driver.run(until={"Paused"})
    assert world.routes.header == (RULE,)
    start = world.now
    world.outages.append(Outage("app:2", "replica-1", start, start + timedelta(seconds=10)))
    for _ in range(20):
        driver.step()
        world.now += timedelta(seconds=1)
    assert world.routes.header == (RULE,), "back once the instance is ready again"
    served = [(at, r, ready) for at, r, ready in world.route_log if at >= start]
    assert served[0][1] == NO_ROUTES, "withdrawn while no canary instance was ready"
    assert all(ready > 0 for _, r, ready in world.route_log if r)


def test_weights_only_rollouts_never_touch_routes() -> None:
    app = routed_app()
    world = FakeWorld(units=app.units())
    strategy = {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 10}}
    status = Driver(app, dep_spec(strategy=strategy, analysis=ANALYSIS), world).run()
    assert status.phase == "Succeeded"
    assert not [a for a in world.applied if isinstance(a, SetRoutes)]
    assert status.routes is None
    assert any(isinstance(a, SetWeights) for a in world.applied)


# --- Traefik rules ---------------------------------------------------------------------------


def test_conditions_in_traefik_rule_syntax() -> None:
    assert condition(RULE) == "Header(`X-Canary`, `always`)"
    assert condition(HeaderRule(header="User", regex="^(ann|bo)$")) == (
        "HeaderRegexp(`User`, `^(ann|bo)$`)"
    )
    cookie = condition(HeaderRule(cookie="canary", exact="a.b"))
    assert cookie == "HeaderRegexp(`Cookie`, `(?:^|;\\s*)canary=a\\.b(?:;|$)`)"
    pattern = re.search(r"`Cookie`, `(.*)`\)", cookie)
    assert pattern is not None
    assert re.search(pattern.group(1), "x=1; canary=a.b; y=2")
    assert not re.search(pattern.group(1), "canary=aXb")
    assert not re.search(pattern.group(1), "notcanary=a.b")
    regex = condition(HeaderRule(cookie="group", regex="^(beta|qa)$"))
    found = re.search(r"`Cookie`, `(.*)`\)", regex)
    assert found is not None
    assert re.search(found.group(1), "group=qa")
    assert not re.search(found.group(1), "group=qaz")


def test_the_header_route_outranks_the_application_route() -> None:
    base = "Host(`shop.test`)"
    rule = header_rule(base, [RULE, HeaderRule(cookie="c", exact="1")])
    assert rule.startswith(f"({base}) && (Header(`X-Canary`, `always`) || HeaderRegexp(")
    assert header_priority(base, [RULE]) > len(base)


# --- file provider ---------------------------------------------------------------------------


def config(routes: Routes, canary: tuple[str, ...] = ("http://h1:2",)) -> FileConfig:
    return FileConfig(
        app="shop",
        weights=(100, 0),
        servers={"stable": ("http://h1:1",), "canary": canary},
        route=RouteConfig("Host(`shop.test`)"),
        routes=routes,
    )


def test_the_file_routes_header_requests_to_the_canary_load_balancer() -> None:
    routes = Routes(header=(RULE,))
    http = render(config(routes))["http"]
    router = http["routers"]["shop-header"]
    assert router["service"] == "shop-canary"
    assert router["rule"] == header_rule("Host(`shop.test`)", [RULE])
    assert router["priority"] > len(http["routers"]["shop"]["rule"])
    assert http["services"]["shop-canary"]["loadBalancer"]["servers"] == [{"url": "http://h1:2"}]
    assert parse("shop", dump(config(routes))) == config(routes)


def test_no_header_router_without_canary_servers_nor_once_removed() -> None:
    assert "shop-header" not in render(config(Routes(header=(RULE,)), canary=()))["http"]["routers"]
    assert "shop-header" not in render(config(NO_ROUTES))["http"]["routers"]
    assert parse("shop", dump(config(NO_ROUTES))) == config(NO_ROUTES)


def test_a_docker_canary_with_a_header_route_plans_its_canary_hosts_first() -> None:
    app = docker_app_spec(3)
    app = ApplicationSpec.model_validate({**app.wire(), "traffic": ROUTE})
    plan = compile_plan(app, dep_spec(strategy=HEADER_THEN_WEIGHTS), has_stable=True)
    assert plan.steps[0].kind == "start" and plan.steps[0].canary_units == ("h1",)
    assert plan.steps[1].routes.header == (RULE,)


# --- IngressRoute router ---------------------------------------------------------------------


class FakeTraefik:
    """Traefik's API over what the fake cluster declares, once `sync()` loads it."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.routers: list[dict[str, Any]] = []
        self.services: dict[str, dict[str, Any]] = {}

    def sync(self) -> None:
        self.routers, self.services = [], {}
        for (plural, ns, name), obj in self.kube.store.items():
            if plural == "traefikservices":
                self.services[f"{ns}-{name}@kubernetescrd"] = {"status": "enabled", **obj["spec"]}
        for (plural, ns, _), obj in self.kube.store.items():
            if plural == "ingressroutes":
                for route in obj["spec"]["routes"]:
                    target = route["services"][0]
                    if target.get("kind") == "TraefikService":
                        service = f"{ns}-{target['name']}@kubernetescrd"
                        if service not in self.services:
                            continue  # Traefik drops a route to a missing service
                        self.routers.append(
                            {"rule": route["match"], "service": service, "status": "enabled"}
                        )

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/http/routers":
            wanted = request.url.params.get("serviceName")
            return httpx.Response(
                200, json=[r for r in self.routers if wanted in (None, r["service"])]
            )
        name = path.removeprefix("/api/http/services/")
        if name in self.services:
            return httpx.Response(200, json=self.services[name])
        return httpx.Response(404)


def crd_router(kube: FakeKube, traefik: FakeTraefik) -> TraefikCrdRouter:
    spec = {"kubernetes": {"replicas": 2}, "traffic": ROUTE}
    app_obj = kube.add_application("shop", spec)
    http = httpx.AsyncClient(transport=httpx.MockTransport(traefik.answer))
    app = ApplicationSpec.model_validate(spec)
    return TraefikCrdRouter(
        kube,  # type: ignore[arg-type]
        app_obj,
        app,
        "http://traefik:8081",
        http,
        "traefik.io/v1alpha1",
    )


def test_the_ingress_route_gets_the_header_route_only_after_traefik_has_its_backend() -> None:
    kube = FakeKube()
    traefik = FakeTraefik(kube)
    router = crd_router(kube, traefik)
    routes = Routes(header=(RULE,))

    async def scenario() -> None:
        await router.ensure_route()
        traefik.sync()
        assert await router.live_routes() == NO_ROUTES
        await router.set_routes(routes)
        ingress = kube.store[("ingressroutes", NS, "shop")]
        assert len(ingress["spec"]["routes"]) == 1, "no route before Traefik has its backend"
        assert ("traefikservices", NS, "shop-headers") in kube.store
        assert await router.live_routes() is None
        traefik.sync()
        await router.set_routes(routes)
        ingress = kube.store[("ingressroutes", NS, "shop")]
        main, header = ingress["spec"]["routes"]
        assert header["services"] == [{"name": "shop-headers", "kind": "TraefikService"}]
        assert header["priority"] > len(main["match"])
        assert ingress["metadata"]["annotations"][HEADER_ROUTE_ANNOTATION]
        assert await router.live_routes() is None, "not live until Traefik serves it"
        traefik.sync()
        assert await router.live_routes() == routes
        await router.ensure_route()  # the Application's own upkeep keeps the rollout's route
        assert len(kube.store[("ingressroutes", NS, "shop")]["spec"]["routes"]) == 2
        # Removal: the route goes, its backend is parked over the weights (never deleted).
        await router.set_routes(NO_ROUTES)
        assert len(kube.store[("ingressroutes", NS, "shop")]["spec"]["routes"]) == 1
        parked = kube.store[("traefikservices", NS, "shop-headers")]["spec"]["weighted"]
        assert parked["services"] == [{"name": "shop", "kind": "TraefikService", "weight": 1}]
        assert await router.live_routes() is None, "Traefik still routes to it"
        traefik.sync()
        assert await router.live_routes() == NO_ROUTES

    asyncio.run(scenario())


def test_a_kubernetes_rollout_keeps_looking_until_traefik_serves_its_header_route() -> None:
    """No watch event tells when Traefik loads a header route (or removes one): while it has
    not, the fleet reports settling, so the rollout's driver polls instead of sleeping until
    an event or its timer (it would wait for its safety net with the route long live)."""
    from lockgate.controller.fleets.kubernetes import KubernetesFleet
    from lockgate.controller.runtime import Runtime, Settings
    from lockgate.engine import InstanceSet

    kube = FakeKube()
    traefik = FakeTraefik(kube)
    router = crd_router(kube, traefik)
    http = httpx.AsyncClient(transport=httpx.MockTransport(traefik.answer))
    rt = Runtime(kube, http, Settings(traefik_api_url="http://traefik:8081"))  # type: ignore[arg-type]
    fleet = KubernetesFleet(rt, router.app_obj, router.app, f"{NS}/shop-v2/1")
    fleet._router = router

    async def sets(*, in_proxy: bool = True) -> tuple[InstanceSet, InstanceSet]:
        return InstanceSet(), InstanceSet()

    async def weights_live() -> tuple[int, int]:
        return (100, 0)  # the weights are served (FakeTraefik does not name leaves)

    fleet._sets = sets  # type: ignore[method-assign]
    router.live_weights = weights_live  # type: ignore[method-assign]

    async def scenario() -> None:
        await router.ensure_route()
        traefik.sync()
        assert (await fleet.observe()).live_routes == NO_ROUTES
        assert not fleet.settling, "nothing to wait for: asleep until an event or a timer"
        for _ in range(2):  # the backend first, then the route to it
            await fleet.set_routes(Routes(header=(RULE,)))
            assert (await fleet.observe()).live_routes is None
            assert fleet.settling, "Traefik has not loaded it: look again soon"
            traefik.sync()
        assert (await fleet.observe()).live_routes == Routes(header=(RULE,))
        assert not fleet.settling

    asyncio.run(scenario())


# --- what a person sees ----------------------------------------------------------------------


def test_kubectl_status_shows_the_live_header_route() -> None:
    from lockgate.cli.kubectl_view import render_status
    from tests.unit.test_kubectl_plugin import NOW, dep

    text = render_status(
        dep(
            "Paused",
            weights={"stable": 100, "canary": 0},
            routes={"headerRoute": ["header X-Canary = always", "cookie canary = always"]},
        ),
        NOW,
    )
    assert (
        "Header:    to canary whatever the weights: header X-Canary = always or "
        "cookie canary = always"
    ) in text
    assert "Mirror:" not in text
    plain = render_status(dep("Paused", weights={"stable": 100, "canary": 0}), NOW)
    assert "Header:" not in plain


def test_lockgate_plan_marks_the_steps_that_hold_a_header_route() -> None:
    from pathlib import Path

    from lockgate.cli.plan import plan_command

    root = Path(__file__).parents[2] / "manifests/examples/kubernetes"
    text = plan_command([root / "canary-header.yaml", root / "application.yaml"])
    lines = text.splitlines()
    route = next(line for line in lines if "setHeaderRoute" in line)
    assert "header X-Canary = always or cookie canary = always" in route
    assert "100/0 +header" in route
    assert any("90/10 +header" in line for line in lines)
    promote = next(line for line in lines if line.split()[1:2] == ["promote:"])
    assert "+header" not in promote


def test_the_dashboard_shows_the_live_header_route_and_mirror() -> None:
    from lockgate.cli import dashboard_view as view
    from tests.unit.test_kubectl_plugin import dep

    obj = dep(
        "Paused",
        weights={"stable": 100, "canary": 0},
        routes={"headerRoute": ["header X-Canary = <always>"], "mirrorPercent": 20},
    )
    html = view.render_deployment(obj, None, "csrf", {})["weights"]
    assert "header route to the canary: header X-Canary = &lt;always&gt;" in html
    assert "20% of requests mirrored to the canary" in html
    plain = view.render_deployment(dep("Paused", weights={"stable": 100}), None, "csrf", {})
    assert "routes" not in plain["weights"]


def test_an_observation_reads_each_route_object_once() -> None:
    """The live weights and the live routes both read the IngressRoute (its first route's
    target; its header route): one observation reads it once. An API call costs about a
    millisecond of the operator's CPU, most of what a round costs (bench/round_cost.py)."""
    from collections import Counter

    from lockgate.controller.fleets.kubernetes import KubernetesFleet
    from lockgate.controller.runtime import Runtime, Settings
    from lockgate.engine import InstanceSet
    from lockgate.kube import WATCHED_TRUST_S
    from tests.unit.fake_traefik import API_URL, FakeTraefikApi

    kube = FakeKube()
    spec = {"kubernetes": {"replicas": 2}, "traffic": ROUTE}
    app_obj = kube.add_application("shop", spec)
    traefik = FakeTraefikApi()
    rt = Runtime(kube, traefik.client(), Settings(traefik_api_url=API_URL))  # type: ignore[arg-type]
    fleet = KubernetesFleet(rt, app_obj, ApplicationSpec.model_validate(spec), None)
    reads: Counter[tuple[str, str]] = Counter()
    get = kube.custom.get_namespaced_custom_object

    def counted(group: str, version: str, namespace: str, plural: str, name: str) -> Any:
        reads[(plural, name)] += 1
        return get(group, version, namespace, plural, name)

    async def sets(*, in_proxy: bool = True) -> tuple[InstanceSet, InstanceSet]:
        return InstanceSet(), InstanceSet()

    fleet._sets = sets  # type: ignore[method-assign]

    now = [0.0]
    rt.route_objects.clock = lambda: now[0]

    async def scenario() -> None:
        await (await fleet.router()).ensure_route()
        traefik.load_crd_objects(kube.store)
        kube.custom.get_namespaced_custom_object = counted  # type: ignore[method-assign]
        for _ in range(2):  # the route objects as lockgate wrote them: no read of those
            view = await fleet.observe()
            assert view.live_weights == (100, 0) and view.live_routes == NO_ROUTES
        # Only the two parked backends, never written, are read: once, and kept as absent.
        parked = {("traefikservices", "shop-headers"), ("traefikservices", "shop-mirror")}
        assert reads == dict.fromkeys(parked, 1), reads
        reads.clear()
        for _ in range(2):  # nothing confirmed them for WATCHED_TRUST_S: read again
            now[0] += WATCHED_TRUST_S
            view = await fleet.observe()
            assert view.live_weights == (100, 0) and view.live_routes == NO_ROUTES
        await rt.aclose()

    asyncio.run(scenario())
    assert reads[("ingressroutes", "shop")] == 2, "read once per observation"
    assert set(reads.values()) == {2}, reads
