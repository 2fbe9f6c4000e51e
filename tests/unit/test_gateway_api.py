"""The Gateway API router (spec.traffic.gatewayAPI): the API and its refusals, the HTTPRoute
lockgate renders or patches, and what it confirms through a fake of Traefik's API that names
routers and services as Traefik's KubernetesGateway provider does."""

from __future__ import annotations

import asyncio
import copy
import hashlib
from typing import Any, cast

import httpx
import pytest
from kubernetes.client.rest import ApiException
from pydantic import ValidationError

from lockgate.api import ApplicationSpec
from lockgate.api.application import (
    MSG_GATEWAY_KUBERNETES,
    MSG_GATEWAY_ONE_ROUTE,
    MSG_GATEWAY_STICKY,
    MSG_GATEWAY_TRAEFIK_ROUTE,
)
from lockgate.engine import NO_ROUTES, HeaderRule, Routes, cross_check
from lockgate.traffic.gateway_api import (
    HEADER_ROUTE_ANNOTATION,
    GatewayApiRouter,
    normalize,
    patched_rules,
    rule_index,
)
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import NS, FakeKube

PARENT = {"name": "traefik", "namespace": "default"}
OWNED = {"gatewayAPI": {"route": {"parentRefs": [PARENT], "hostnames": ["shop.test"]}}}
REF = {"gatewayAPI": {"routeRef": {"name": "storefront", "rule": "shop"}}}
RULE = HeaderRule(header="X-Canary", exact="always")
COOKIE = HeaderRule(cookie="beta", exact="yes")
API = "http://traefik:8081"


def spec(traffic: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"kubernetes": {"replicas": 2}, "traffic": traffic, **extra}


# --- API -------------------------------------------------------------------------------------


def test_an_owned_route_and_a_route_ref_are_accepted() -> None:
    owned = ApplicationSpec.model_validate(spec(OWNED)).traffic.gateway_api
    assert owned is not None and owned.route_name("shop") == "shop"
    ref = ApplicationSpec.model_validate(spec(REF)).traffic.gateway_api
    assert ref is not None and ref.route_name("shop") == "storefront"


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (
            {
                "docker": {"hosts": [{"name": "h1", "url": "unix:///h1", "address": "h1"}]},
                "traffic": OWNED,
            },
            MSG_GATEWAY_KUBERNETES,
        ),
        (
            spec({**OWNED, "traefik": {"route": {"match": "Host(`shop.test`)"}}}),
            MSG_GATEWAY_TRAEFIK_ROUTE,
        ),
        (
            spec({**OWNED, "traefik": {"sticky": {"cookie": {"name": "v"}}}}),
            MSG_GATEWAY_STICKY,
        ),
        (spec({"gatewayAPI": {}}), MSG_GATEWAY_ONE_ROUTE),
        (
            spec({"gatewayAPI": {**OWNED["gatewayAPI"], **REF["gatewayAPI"]}}),
            MSG_GATEWAY_ONE_ROUTE,
        ),
    ],
)
def test_bad_combinations_are_refused_naming_the_field(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        ApplicationSpec.model_validate(doc)
    assert message in str(err.value)
    assert message.startswith("spec.traffic.")


def test_the_crd_carries_the_same_refusals_as_cel_rules() -> None:
    from lockgate.api.crdgen import OBJECT_RULES

    messages = {r["message"] for r in OBJECT_RULES["ApplicationSpec"]}
    assert {MSG_GATEWAY_KUBERNETES, MSG_GATEWAY_TRAEFIK_ROUTE, MSG_GATEWAY_STICKY} <= messages
    assert OBJECT_RULES["GatewayAPITraffic"][0]["message"] == MSG_GATEWAY_ONE_ROUTE


def test_a_mirror_step_with_a_gateway_route_is_refused_before_start_naming_the_step() -> None:
    app = ApplicationSpec.model_validate(spec(OWNED))
    mirror = dep_spec(
        strategy={"type": "Canary", "canary": {"steps": [{"setMirror": {"percent": 20}}, 100]}}
    )
    problem = cross_check(app, mirror)
    assert problem is not None
    assert problem.startswith("spec.strategy.canary.steps[0].setMirror: not supported with")
    assert "spec.traffic.gatewayAPI" in problem
    header = dep_spec(
        strategy={
            "type": "Canary",
            "canary": {
                "steps": [{"setHeaderRoute": {"match": [{"header": "X", "exact": "1"}]}}, 100]
            },
        }
    )
    assert cross_check(app, header) is None, "header routes work through an HTTPRoute"


# --- what lockgate writes ----------------------------------------------------------------------


def test_the_owned_route_weights_the_two_services_and_leaves_a_zero_weight_out() -> None:
    _, _, router = owned_router()
    body = router.owned_route((90, 10), ())
    assert body["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert body["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", **PARENT}
    ]
    assert body["spec"]["hostnames"] == ["shop.test"]
    (rule,) = body["spec"]["rules"]
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert rule["backendRefs"] == [
        {"name": "shop-stable", "port": 8080, "weight": 90},
        {"name": "shop-canary", "port": 8080, "weight": 10},
    ]
    (rule,) = router.owned_route((100, 0), ())["spec"]["rules"]
    assert rule["backendRefs"] == [{"name": "shop-stable", "port": 8080, "weight": 100}]
    assert body["metadata"]["ownerReferences"][0]["name"] == "shop"


def test_a_header_route_is_a_rule_to_the_canary_before_the_weighted_one() -> None:
    _, _, router = owned_router()
    body = router.owned_route((100, 0), (RULE, COOKIE))
    header, weighted = body["spec"]["rules"]
    assert header["backendRefs"] == [{"name": "shop-canary", "port": 8080, "weight": 1}]
    path = {"type": "PathPrefix", "value": "/"}
    assert header["matches"] == [
        {"path": path, "headers": [{"type": "Exact", "name": "X-Canary", "value": "always"}]},
        {
            "path": path,
            "headers": [
                {
                    "type": "RegularExpression",
                    "name": "Cookie",
                    "value": r"(?:^|;\s*)beta=yes(?:;|$)",
                }
            ],
        },
    ]
    assert weighted["backendRefs"] == [{"name": "shop-stable", "port": 8080, "weight": 100}]
    assert body["metadata"]["annotations"][HEADER_ROUTE_ANNOTATION]


USER_RULES: list[dict[str, Any]] = [
    {
        "name": "static",
        "matches": [{"path": {"type": "PathPrefix", "value": "/static"}}],
        "backendRefs": [{"name": "cdn", "port": 80}],
    },
    {
        "name": "shop",
        "matches": [{"path": {"type": "PathPrefix", "value": "/shop"}, "method": "GET"}],
        "filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": []}}],
        "backendRefs": [{"name": "legacy", "port": 80}],
    },
]


def test_a_route_ref_gets_only_its_rules_backends_and_a_header_rule_right_before_it() -> None:
    rules = patched_rules(USER_RULES, "shop", "shop", 8080, (75, 25), (RULE,))
    static, header, shop = rules
    assert static == USER_RULES[0], "other rules untouched"
    assert shop["backendRefs"] == [
        {"name": "shop-stable", "port": 8080, "weight": 75},
        {"name": "shop-canary", "port": 8080, "weight": 25},
    ]
    assert {k: v for k, v in shop.items() if k != "backendRefs"} == {
        k: v for k, v in USER_RULES[1].items() if k != "backendRefs"
    }
    assert header["name"] == "shop-header-route"
    assert header["filters"] == USER_RULES[1]["filters"], "the rule's filters apply to testers"
    assert header["matches"] == [
        {
            "path": {"type": "PathPrefix", "value": "/shop"},
            "method": "GET",
            "headers": [{"type": "Exact", "name": "X-Canary", "value": "always"}],
        }
    ]
    assert header["backendRefs"] == [{"name": "shop-canary", "port": 8080, "weight": 1}]
    # Removing the header route (weights as they are) leaves the user's rules and ours.
    again = patched_rules(rules, "shop", "shop", 8080, None, ())
    assert again == [USER_RULES[0], shop]
    with pytest.raises(KeyError):
        patched_rules(USER_RULES, "missing", "shop", 8080, (100, 0), ())


# --- a fake Traefik serving HTTPRoutes as its KubernetesGateway provider does -----------------


def traefik_rule(hostnames: list[str], match: dict[str, Any]) -> str:
    """buildMatchRule, for the matches lockgate writes."""
    path = match.get("path") or {"type": "PathPrefix", "value": "/"}
    parts = [f'PathPrefix("{path["value"]}")']
    for h in match.get("headers") or []:
        op = "Header" if h.get("type", "Exact") == "Exact" else "HeaderRegexp"
        parts.append(f'{op}("{h["name"]}","{h["value"]}")'.replace("\\", "\\\\"))
    rule = " && ".join(parts)
    if hostnames:
        rule = f'Host("{hostnames[0]}") && {rule}'
    return rule


class FakeGatewayTraefik:
    """Traefik's API over the HTTPRoutes in the fake store, as of its last `sync`."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.endpoints: dict[str, list[str]] = {}  # Service -> ready IPs
        self.routers: list[dict[str, Any]] = []
        self.services: dict[str, dict[str, Any]] = {}

    def sync(self) -> None:
        self.routers, self.services = [], {}
        for (plural, ns, name), obj in self.kube.store.items():
            if plural != "httproutes":
                continue
            spec = obj["spec"]
            for i, rule in enumerate(spec.get("rules") or []):
                key = normalize(f"httproute-{ns}-{name}-gw-default-traefik-ep-web-{i}")
                for match in rule.get("matches") or [{}]:
                    text = traefik_rule(spec.get("hostnames") or [], match)
                    digest = hashlib.sha256(text.encode()).hexdigest()[:20]  # Go: %.10x of it
                    router = f"{key}-{digest}"
                    children = []
                    for ref in rule.get("backendRefs") or []:
                        leaf = normalize(f"{ns}-{ref['name']}-http") + f"-{ref['port']}"
                        children.append(
                            {"name": f"{leaf}@kubernetesgateway", "weight": ref.get("weight", 1)}
                        )
                        self.services[f"{leaf}@kubernetesgateway"] = {
                            "status": "enabled",
                            "loadBalancer": {
                                "servers": [
                                    {"url": f"http://{ip}:{ref['port']}"}
                                    for ip in self.endpoints.get(ref["name"], [])
                                ]
                            },
                        }
                    self.services[f"{router}-wrr@kubernetesgateway"] = {
                        "status": "enabled",
                        "weighted": {"services": children},
                    }
                    self.routers.append(
                        {
                            "name": f"{router}@kubernetesgateway",
                            "rule": text,
                            "service": f"{router}-wrr",
                            "status": "enabled",
                        }
                    )

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/http/routers":
            search = request.url.params.get("search", "")
            return httpx.Response(
                200, json=[r for r in self.routers if search in r["name"] or search in r["rule"]]
            )
        name = path.removeprefix("/api/http/services/")
        if name in self.services:
            return httpx.Response(200, json=self.services[name])
        return httpx.Response(404)


def make_router(
    traffic: dict[str, Any],
) -> tuple[FakeKube, FakeGatewayTraefik, GatewayApiRouter]:
    kube = FakeKube()
    traefik = FakeGatewayTraefik(kube)
    app_obj = kube.add_application("shop", spec(traffic))
    app = ApplicationSpec.model_validate(spec(traffic))
    http = httpx.AsyncClient(transport=httpx.MockTransport(traefik.answer))

    def patch(
        group: str, version: str, ns: str, plural: str, name: str, body: Any, **_: Any
    ) -> Any:
        return kube._patch(plural, ns, name, body)

    kube.custom.patch_namespaced_custom_object = patch  # type: ignore[attr-defined]
    router = GatewayApiRouter(kube, app_obj, app, API, http)  # type: ignore[arg-type]
    return kube, traefik, router


def owned_router() -> tuple[FakeKube, FakeGatewayTraefik, GatewayApiRouter]:
    return make_router(OWNED)


def route(kube: FakeKube, name: str = "shop") -> dict[str, Any]:
    return kube.store[("httproutes", NS, name)]


def test_traefiks_router_names_give_the_rule_index() -> None:
    name = "httproute-ns-1-shop-gw-default-traefik-ep-web-1-1ad1f3cb49b963d1b6fc@kubernetesgateway"
    assert rule_index(name) == 1
    assert rule_index("ns-1-shop-lockgate-probe@kubernetescrd") is None


def test_weights_count_as_live_only_once_traefik_serves_them() -> None:
    kube, traefik, router = owned_router()

    async def scenario() -> None:
        await router.ensure_route()
        assert route(kube)["spec"]["rules"][0]["backendRefs"] == [
            {"name": "shop-stable", "port": 8080, "weight": 100}
        ]
        assert ("httproutes", NS, "shop-lockgate-probe") in kube.store
        assert await router.live_weights() is None, "Traefik has not loaded the route"
        traefik.sync()
        assert await router.live_weights() == (100, 0)
        await router.set_weights(90, 10)
        assert await router.declared_weights() == (90, 10)
        assert await router.live_weights() is None, "Traefik still serves 100/0"
        traefik.sync()
        assert await router.live_weights() == (90, 10)
        await router.ensure_route()  # the Application's upkeep keeps the rollout's weights
        assert await router.declared_weights() == (90, 10)

    asyncio.run(scenario())


def test_a_header_route_is_live_once_traefik_routes_the_header_and_gone_once_removed() -> None:
    kube, traefik, router = owned_router()
    routes = Routes(header=(RULE,))

    async def scenario() -> None:
        await router.ensure_route()
        traefik.sync()
        assert await router.live_routes() == NO_ROUTES
        await router.set_routes(routes)
        assert [r["name"] for r in route(kube)["spec"]["rules"]] == ["header-route", "weighted"]
        assert await router.declared_routes() == routes
        assert await router.live_routes() is None, "not live until Traefik serves it"
        traefik.sync()
        assert await router.live_routes() == routes
        assert await router.live_weights() == (100, 0), "the weighted rule moved to index 1"
        await router.ensure_route()
        assert len(route(kube)["spec"]["rules"]) == 2, "upkeep keeps the rollout's route"
        await router.set_routes(NO_ROUTES)
        assert [r["name"] for r in route(kube)["spec"]["rules"]] == ["weighted"]
        assert HEADER_ROUTE_ANNOTATION not in (route(kube)["metadata"].get("annotations") or {})
        assert await router.live_routes() is None, "Traefik still routes the header"
        traefik.sync()
        assert await router.live_routes() == NO_ROUTES

    asyncio.run(scenario())


def test_pods_count_as_served_once_traefik_lists_them_through_the_probe_route() -> None:
    kube, traefik, router = owned_router()

    async def scenario() -> None:
        await router.ensure_route()
        traefik.endpoints = {"shop-stable": ["10.0.0.1", "10.0.0.2"], "shop-canary": ["10.0.0.3"]}
        assert await router.serving() == {"stable": frozenset(), "canary": frozenset()}
        traefik.sync()
        assert await router.serving() == {
            "stable": frozenset({"10.0.0.1", "10.0.0.2"}),
            "canary": frozenset({"10.0.0.3"}),
        }
        probe = route(kube, "shop-lockgate-probe")["spec"]
        assert probe["parentRefs"] == route(kube)["spec"]["parentRefs"]
        uid = router.app_obj["metadata"]["uid"]
        assert [r["matches"][0]["headers"][0]["value"] for r in probe["rules"]] == [
            f"{uid}-stable",
            f"{uid}-canary",
        ]

    asyncio.run(scenario())


def ref_router() -> tuple[FakeKube, FakeGatewayTraefik, GatewayApiRouter]:
    kube, traefik, router = make_router(REF)
    kube.put(
        "httproutes",
        NS,
        {
            "metadata": {"name": "storefront", "annotations": {"team": "web"}},
            "spec": {"parentRefs": [PARENT], "rules": copy.deepcopy(USER_RULES)},
        },
    )
    return kube, traefik, router


def test_a_route_ref_is_patched_in_its_rule_only_and_confirmed_live() -> None:
    kube, traefik, router = ref_router()

    async def scenario() -> None:
        assert await router.problem() is None
        await router.ensure_route()
        assert route(kube, "storefront")["spec"]["rules"] == USER_RULES, (
            "the user's backends stay until a rollout sets weights"
        )
        assert route(kube, "shop-lockgate-probe")["spec"]["parentRefs"] == [PARENT]
        assert await router.declared_weights() is None
        await router.set_weights(100, 0)
        await router.set_routes(Routes(header=(RULE,)))
        static, header, shop = route(kube, "storefront")["spec"]["rules"]
        assert static == USER_RULES[0]
        assert header["name"] == "shop-header-route"
        assert shop["backendRefs"] == [{"name": "shop-stable", "port": 8080, "weight": 100}]
        assert route(kube, "storefront")["metadata"]["annotations"]["team"] == "web"
        traefik.sync()
        assert await router.live_weights() == (100, 0)
        assert await router.live_routes() == Routes(header=(RULE,))
        await router.set_routes(NO_ROUTES)
        assert route(kube, "storefront")["spec"]["rules"][1]["name"] == "shop"
        annotations = route(kube, "storefront")["metadata"]["annotations"]
        assert annotations == {"team": "web"}

    asyncio.run(scenario())


def test_a_route_ref_write_over_a_stale_read_is_refused_not_overwriting_an_edit() -> None:
    kube, _, router = ref_router()

    async def scenario() -> None:
        stale = copy.deepcopy(route(kube, "storefront"))
        kube._patch("httproutes", NS, "storefront", {"metadata": {"labels": {"edited": "yes"}}})
        with pytest.raises(ApiException) as err:
            await router._write(stale, (50, 50), ())
        assert err.value.status == 409
        assert route(kube, "storefront")["spec"]["rules"] == USER_RULES

    asyncio.run(scenario())


def test_a_missing_route_or_rule_is_a_problem_naming_the_field() -> None:
    kube, _, router = make_router(REF)

    async def scenario() -> None:
        assert await router.problem() == (
            f"spec.traffic.gatewayAPI.routeRef.name: HTTPRoute {NS}/storefront not found"
        )
        kube.put(
            "httproutes",
            NS,
            {"metadata": {"name": "storefront"}, "spec": {"rules": [USER_RULES[0]]}},
        )
        problem = await router.problem()
        assert problem is not None
        assert problem.startswith("spec.traffic.gatewayAPI.routeRef.rule: ")

    asyncio.run(scenario())


def test_the_router_is_chosen_from_the_application_in_one_place() -> None:
    from lockgate.controller.fleets.kubernetes import KubernetesFleet
    from lockgate.controller.runtime import Runtime, Settings
    from lockgate.traffic.traefik_crd import TraefikCrdRouter

    kube = FakeKube()
    rt = Runtime(kube, httpx.AsyncClient(), Settings())  # type: ignore[arg-type]
    for traffic, kind in (
        (OWNED, GatewayApiRouter),
        ({"traefik": {"route": {"match": "Host(`x`)"}}}, TraefikCrdRouter),
    ):
        app_obj = kube.add_application("shop", spec(traffic))
        fleet = KubernetesFleet(rt, app_obj, ApplicationSpec.model_validate(spec(traffic)), None)
        assert isinstance(asyncio.run(fleet.router()), kind)


@pytest.mark.parametrize(
    ("served", "written"),
    [
        ({"v1", "v1beta1"}, "gateway.networking.k8s.io/v1"),
        ({"v1beta1"}, "gateway.networking.k8s.io/v1beta1"),  # Gateway API before v1.0
    ],
)
def test_the_httproute_is_written_in_the_newest_version_the_cluster_serves(
    served: set[str], written: str
) -> None:
    from lockgate.controller.fleets.kubernetes import KubernetesFleet
    from lockgate.controller.runtime import Runtime, Settings

    kube = FakeKube()
    kube.served["gateway.networking.k8s.io"] = frozenset(
        f"gateway.networking.k8s.io/{v}" for v in served
    )
    rt = Runtime(kube, httpx.AsyncClient(), Settings())  # type: ignore[arg-type]
    app_obj = kube.add_application("shop", spec(OWNED))
    fleet = KubernetesFleet(rt, app_obj, ApplicationSpec.model_validate(spec(OWNED)), None)
    asyncio.run(fleet.ensure_owned())
    assert route(kube)["apiVersion"] == written


def test_a_cluster_without_the_gateway_api_makes_the_fleet_unusable_naming_the_field() -> None:
    from lockgate.controller.fleets import FleetUnusable
    from lockgate.controller.fleets.kubernetes import KubernetesFleet
    from lockgate.controller.runtime import Runtime, Settings
    from lockgate.kube import DISCOVERY_GRACE_S, ApiVersions, DiscoveryPending, Kube

    kube = FakeKube()
    del kube.served["gateway.networking.k8s.io"]
    rt = Runtime(kube, httpx.AsyncClient(), Settings())  # type: ignore[arg-type]
    now = [0.0]
    rt.api_versions = ApiVersions(cast(Kube, kube), clock=lambda: now[0])
    app_obj = kube.add_application("shop", spec(OWNED))
    fleet = KubernetesFleet(rt, app_obj, ApplicationSpec.model_validate(spec(OWNED)), None)
    with pytest.raises(DiscoveryPending):
        asyncio.run(fleet.ensure_owned())
    now[0] = DISCOVERY_GRACE_S
    with pytest.raises(FleetUnusable) as refused:
        asyncio.run(fleet.ensure_owned())
    assert refused.value.reason == (
        "spec.traffic.gatewayAPI: the cluster serves none of gateway.networking.k8s.io/v1, "
        "gateway.networking.k8s.io/v1beta1: are the Gateway API's CRDs installed?"
    )


def test_a_route_no_gateway_accepts_is_a_problem_naming_the_field() -> None:
    kube, _, router = owned_router()

    async def scenario() -> None:
        await router.ensure_route()
        assert await router.problem() is None, "no Gateway has said anything yet"
        obj = route(kube)
        generation = obj["metadata"]["generation"]

        def parents(status: str, generation: int) -> dict[str, Any]:
            return {
                "parents": [
                    {
                        "parentRef": PARENT,
                        "controllerName": "traefik.io/gateway-controller",
                        "conditions": [
                            {
                                "type": "Accepted",
                                "status": status,
                                "reason": "NoMatchingListenerHostname",
                                "observedGeneration": generation,
                            }
                        ],
                    }
                ]
            }

        obj["status"] = parents("True", generation)
        assert await router.problem() is None
        obj["status"] = parents("False", generation - 1)
        assert await router.problem() is None, "said of an earlier generation"
        obj["status"] = parents("False", generation)
        assert await router.problem() == (
            f"spec.traffic.gatewayAPI.route.parentRefs: HTTPRoute {NS}/shop is accepted by "
            "none of its Gateways (default/traefik: NoMatchingListenerHostname)"
        )

    asyncio.run(scenario())


def test_plan_names_the_route_it_moves() -> None:
    from pathlib import Path

    from lockgate.cli.plan import plan_command

    examples = Path(__file__).resolve().parents[2] / "manifests/examples/kubernetes"
    text = plan_command([examples / "gateway-api/canary.yaml"])
    assert "traffic:     Gateway API, HTTPRoute shop (owned)" in text
    assert "+header" in text, "the header route step is planned"
    ref = plan_command(
        [examples / "gateway-api/canary.yaml", examples / "gateway-ref/application.yaml"]
    )
    assert (
        "traffic:     Gateway API, rule shop of HTTPRoute storefront (its backendRefs only)" in ref
    )


@pytest.mark.parametrize(
    ("traffic", "shown"),
    [
        (OWNED, "Route:     Gateway API, HTTPRoute shop (owned)"),
        (
            {"gatewayAPI": {"routeRef": {"name": "storefront", "rule": "shop"}}},
            "Route:     Gateway API, rule shop of HTTPRoute storefront (its backendRefs only)",
        ),
        (
            {"traefik": {"route": {"match": "Host(`shop.test`)"}}},
            "Route:     TraefikService shop, IngressRoute shop (Host(`shop.test`))",
        ),
        ({}, "Route:     TraefikService shop (routed to by a route of yours)"),
    ],
)
def test_the_kubectl_plugins_status_names_the_route_that_carries_the_split(
    traffic: dict[str, Any], shown: str
) -> None:
    from datetime import UTC, datetime

    from lockgate.cli.kubectl_view import render_status

    obj = {
        "metadata": {"name": "shop-v2", "namespace": NS},
        "spec": {"application": "shop", "image": "demo:v2"},
        "status": {"phase": "Progressing", "weights": {"stable": 90, "canary": 10}},
    }
    view = render_status(obj, datetime(2026, 1, 1, tzinfo=UTC), app_spec=spec(traffic))
    assert shown in view.splitlines()
    assert "Route:" not in render_status(obj, datetime(2026, 1, 1, tzinfo=UTC))


@pytest.mark.parametrize("traffic", [OWNED, REF], ids=["owned route", "routeRef"])
def test_the_routers_watch_covers_everything_it_reads_of_traefik(traffic: dict[str, Any]) -> None:
    """The Traefik observer wakes a waiting rollout only for changes of the routers and
    services its router's watch names: every one the router reads (weights, a header route,
    the Services' servers) must be among them, or a change it waits for never wakes it."""
    _, traefik, router = ref_router() if traffic is REF else owned_router()
    answered: list[tuple[str, str]] = []
    answer = traefik.answer

    def recorded(request: httpx.Request) -> httpx.Response:
        response = answer(request)
        if response.status_code == 200:
            body = response.json()
            for entry in body if isinstance(body, list) else [body]:
                name = entry.get("name") or request.url.path.rpartition("/")[2]
                answered.append((name, str(entry.get("service", ""))))
        return response

    router.http = httpx.AsyncClient(transport=httpx.MockTransport(recorded))
    traefik.endpoints = {"shop-stable": ["10.244.0.5"], "shop-canary": ["10.244.0.6"]}

    async def scenario() -> None:
        await router.ensure_route()
        await router.set_weights(90, 10)
        await router.set_routes(Routes(header=(RULE,)))
        traefik.sync()
        answered.clear()
        assert await router.live_weights() == (90, 10)
        assert await router.live_routes() == Routes(header=(RULE,))
        assert await router.serving() == {
            "stable": frozenset({"10.244.0.5"}),
            "canary": frozenset({"10.244.0.6"}),
        }

    asyncio.run(scenario())
    watch = router.watch()
    assert watch is not None and answered
    uncovered = [
        (name, service)
        for name, service in answered
        if not any(n in name or n in service for n in watch.names)
    ]
    assert uncovered == []
