"""Rollouts through a Gateway API HTTPRoute (`spec.traffic.gatewayAPI`), end to end: the
real control plane with the Gateway API CRDs, real Traefik serving Gateway default/traefik
with its KubernetesGateway provider, real HTTP under load, and the operator running as
`lockgate operator`. The split is read from Traefik's own API (the weighted service Traefik
builds from the HTTPRoute's rule), not from what lockgate declared."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import yaml

from hack.tools.load import Load, by_version, failed
from lockgate.names import GROUP, LABEL_APP, VERSION
from tests.support.cluster import REPO_ROOT, Traefik
from tests.support.rollouts import (
    Lockgate,
    Recording,
    application,
    deployment,
    host_of,
    wait_for,
)

pytestmark = pytest.mark.integration

EXAMPLE = REPO_ROOT / "manifests/examples/kubernetes/gateway-api/application.yaml"
GATEWAY = ("gateway.networking.k8s.io", "v1")
ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}
TESTER = {"X-Canary": "always"}
HEADER_ROUTE = {"setHeaderRoute": {"match": [{"header": "X-Canary", "exact": "always"}]}}
TESTERS_FIRST = {"type": "Canary", "canary": {"steps": [HEADER_ROUTE, {"pause": {}}, 100]}}
ENDED = {"Succeeded", "RolledBack", "Failed", "Aborted"}
COUNTED = 1000  # per client kind: >= 2,000 requests in all while the weight is 0


def gateway_application(lg: Lockgate, traefik: Traefik, name: str = "shop") -> dict[str, Any]:
    """The example Application (manifests/examples/kubernetes/gateway-api/application.yaml),
    on the test's own host name and the local Gateway."""
    doc = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    spec = doc["spec"]
    spec["healthCheck"]["intervalSeconds"] = 1
    route = spec["traffic"]["gatewayAPI"]["route"]
    assert route["parentRefs"] == [traefik.parent_ref()], "the example names the local Gateway"
    route["hostnames"] = [host_of(name, lg.namespace)]
    return {"kind": "Application", "metadata": {"name": name}, "spec": spec}


def deploy_v1(lg: Lockgate, traefik: Traefik) -> None:
    lg.create(gateway_application(lg, traefik))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    finished = lg.wait_finished("shop-v1")
    assert finished["phase"] == "Succeeded", finished


def load_for(traefik: Traefik, lg: Lockgate, **extra: Any) -> Load:
    return Load(traefik.web_url, host_of("shop", lg.namespace), **extra)


def route_prefix(lg: Lockgate, route: str = "shop") -> str:
    """How Traefik's routers built from the HTTPRoute begin."""
    return f"httproute-{lg.namespace}-{route}-gw-"


def traefik_routers(traefik: Traefik, prefix: str) -> list[dict[str, Any]]:
    routers: list[dict[str, Any]] = httpx.get(
        f"{traefik.api_url}/api/http/routers", params={"search": prefix}, timeout=5
    ).json()
    return [r for r in routers if r["name"].startswith(prefix)]


@dataclass
class RouteWeights(Recording):
    """Records the canary's share of the weighted rule as Traefik serves it: its router's
    `-wrr` service in Traefik's API, with timestamps."""

    api_url: str
    prefix: str  # route_prefix()
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, canary weight)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self._stop.is_set():
                with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
                    self._sample(http)
                self._stop.wait(0.1)

    def _sample(self, http: httpx.Client) -> None:
        routers = http.get(f"{self.api_url}/api/http/routers", params={"search": self.prefix})
        weighted = [
            r
            for r in routers.json()
            if r["name"].startswith(self.prefix) and "Header(" not in r["rule"]
        ]
        if len(weighted) != 1:
            return
        service = weighted[0]["service"]
        data = http.get(f"{self.api_url}/api/http/services/{service}@kubernetesgateway").json()
        children = (data.get("weighted") or {}).get("services") or []
        total = sum(int(c.get("weight", 1)) for c in children) or 1
        canary = sum(int(c.get("weight", 1)) for c in children if "-canary-" in c["name"])
        self.samples.append((time.monotonic(), round(100 * canary / total)))

    def windows(self, margin: float = 1.0) -> list[tuple[float, float, int]]:
        """(start, end, canary weight) per stretch of constant weight, shrunk by `margin`."""
        out: list[tuple[float, float, int]] = []
        if not self.samples:
            return out
        start, weight = self.samples[0]
        for at, value in self.samples[1:]:
            if value != weight:
                out.append((start + margin, at - margin, weight))
                start, weight = at, value
        out.append((start + margin, self.samples[-1][0] - margin, weight))
        return [w for w in out if w[1] > w[0]]


def served(responses: list[Any], version: str) -> int:
    return sum(1 for r in responses if r.version == version)


def http_route(lg: Lockgate, name: str = "shop") -> dict[str, Any]:
    route: dict[str, Any] = lg.custom.get_namespaced_custom_object(
        *GATEWAY, lg.namespace, "httproutes", name
    )
    return route


def test_canary_through_an_httproute_shifts_real_traffic_with_no_failed_request(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    deploy_v1(lockgate, traefik)
    canary = {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 12}}
    recorder = RouteWeights(traefik.api_url, route_prefix(lockgate))
    with recorder as weights, load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", canary, analysis=ANALYSIS))
        status = lockgate.wait_finished("shop-v2")
        wait_for(
            "enough requests", lambda: len(load.responses) >= 5000, lambda: len(load.responses)
        )
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    assert failed(responses) == [], (
        f"{len(failed(responses))} failed requests: {by_version(responses)}"
    )
    checked = set()
    for start, end, weight in weights.windows():
        window = [r for r in responses if start <= r.at <= end]
        if weight not in (10, 50) or len(window) < 200:
            continue
        share = 100 * served(window, "v2") / len(window)
        assert abs(share - weight) <= 5, f"weight {weight}: canary served {share:.1f}%"
        checked.add(weight)
    assert checked == {10, 50}, f"no measurable window for { ({10, 50} - checked) }"
    assert served(responses[-100:], "v2") == 100
    (rule,) = http_route(lockgate)["spec"]["rules"]
    assert rule["backendRefs"] == [
        {"group": "", "kind": "Service", "name": "shop-stable", "port": 8080, "weight": 100}
    ]


def test_blue_green_through_an_httproute_switches_with_no_failed_request(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    deploy_v1(lockgate, traefik)
    strategy = {"type": "BlueGreen", "blueGreen": {"previewSeconds": 2, "scaleDownDelaySeconds": 3}}
    recorder = RouteWeights(traefik.api_url, route_prefix(lockgate))
    with recorder as weights, load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", strategy))
        status = lockgate.wait_finished("shop-v2")
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    assert failed(responses) == [], (
        f"{len(failed(responses))} of {len(responses)} failed: {by_version(responses)}"
    )
    assert served(responses[-100:], "v2") == 100
    seen = {w for _, w in weights.samples}
    assert 0 in seen and 100 in seen, f"Traefik served the switch: canary shares {sorted(seen)}"


def header_routers(traefik: Traefik, lg: Lockgate) -> list[dict[str, Any]]:
    """Traefik's routers built from the HTTPRoute that match the tester's header."""
    return [
        r
        for r in traefik_routers(traefik, route_prefix(lg))
        if 'Header("X-Canary","always")' in r["rule"]
    ]


@pytest.mark.parametrize("end", ["promote", "abort"])
def test_header_route_through_an_httproute_sends_testers_and_only_them_to_the_canary(
    lockgate: Lockgate, traefik: Traefik, end: str
) -> None:
    deploy_v1(lockgate, traefik)
    testers = load_for(traefik, lockgate, threads=2, headers=TESTER)
    others = load_for(traefik, lockgate, threads=2)
    with testers, others:
        testers.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", TESTERS_FIRST))
        status = lockgate.wait_phase("shop-v2", {"Paused"})
        assert status["weights"] == {"stable": 100, "canary": 0}, status["weights"]
        assert status["routes"]["headerRoute"] == ["header X-Canary = always"]
        start_t, start_o = len(testers.responses), len(others.responses)
        testers.wait_answered(start_t + COUNTED)
        others.wait_answered(start_o + COUNTED)
        assert lockgate.status("shop-v2")["weights"] == {"stable": 100, "canary": 0}
        tester_answers = testers.responses[start_t:]
        other_answers = others.responses[start_o:]
        assert header_routers(traefik, lockgate), "the header rule's router is in Traefik"
        rules = http_route(lockgate)["spec"]["rules"]
        assert [r["name"] for r in rules] == ["header-route", "weighted"]
        lockgate.annotate("shop-v2", end)
        status = lockgate.wait_phase("shop-v2", ENDED)
        wait_for(
            "the header rule gone from Traefik",
            lambda: not header_routers(traefik, lockgate),
            lambda: (header_routers(traefik, lockgate), lockgate.status("shop-v2")),
        )
        after = len(testers.responses)
        testers.wait_answered(after + 200)
        late = testers.responses[after:]
    all_testers, all_others = testers.stop(), others.stop()
    assert len(tester_answers) + len(other_answers) >= 2000
    assert {r.version for r in tester_answers} == {"v2"}, by_version(tester_answers)
    assert {r.version for r in other_answers} == {"v1"}, by_version(other_answers)
    expected = {"promote": ("Succeeded", "v2"), "abort": ("Aborted", "v1")}[end]
    assert status["phase"] == expected[0], status.get("message")
    assert {r.version for r in late} == {expected[1]}, by_version(late)
    assert failed(all_testers) == [], by_version(all_testers)
    assert failed(all_others) == [], by_version(all_others)
    assert status["routes"]["headerRoute"] == []
    assert [r["name"] for r in http_route(lockgate)["spec"]["rules"]] == ["weighted"]


def test_a_rule_of_someone_elses_httproute_carries_the_rollout_and_nothing_else_changes(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    """spec.traffic.gatewayAPI.routeRef: only the named rule's backendRefs move."""
    host = host_of("shop", lockgate.namespace)
    static = {
        "name": "static",
        "matches": [{"path": {"type": "Exact", "value": "/static"}}],
        "backendRefs": [{"group": "", "kind": "Service", "name": "cdn", "port": 80, "weight": 1}],
    }
    lockgate.custom.create_namespaced_custom_object(
        *GATEWAY,
        lockgate.namespace,
        "httproutes",
        {
            "apiVersion": "/".join(GATEWAY),
            "kind": "HTTPRoute",
            "metadata": {"name": "storefront", "labels": {"team": "web"}},
            "spec": {
                "parentRefs": [traefik.parent_ref()],
                "hostnames": [host],
                "rules": [
                    static,
                    {
                        "name": "shop",
                        "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                        "backendRefs": [{"name": "shop-legacy", "port": 8080}],
                    },
                ],
            },
        },
    )
    app = gateway_application(lockgate, traefik)
    app["spec"]["traffic"] = {"gatewayAPI": {"routeRef": {"name": "storefront", "rule": "shop"}}}
    lockgate.create(app)
    lockgate.create(deployment("shop-v1", "shop", "demo:v1"))
    finished = lockgate.wait_finished("shop-v1")
    assert finished["phase"] == "Succeeded", finished
    canary = {"type": "Canary", "canary": {"steps": [50, 100], "stepSeconds": 5}}
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", canary, analysis=ANALYSIS))
        status = lockgate.wait_finished("shop-v2")
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    assert failed(responses) == [], by_version(responses)
    assert served(responses, "v2") > 0 and served(responses[-100:], "v2") == 100
    route = http_route(lockgate, "storefront")
    assert route["metadata"]["labels"] == {"team": "web"}
    first, shop = route["spec"]["rules"]
    assert first == static, "the other rule is untouched"
    assert [(b["name"], b["weight"]) for b in shop["backendRefs"]] == [("shop-stable", 100)]


def route_objects(lg: Lockgate) -> set[str]:
    """The route objects of Application `shop` in the namespace (by lockgate's label)."""
    out = set()
    for group, version, plural in (
        ("traefik.io", "v1alpha1", "traefikservices"),
        ("traefik.io", "v1alpha1", "ingressroutes"),
        (*GATEWAY, "httproutes"),
    ):
        listed = lg.custom.list_namespaced_custom_object(
            group, version, lg.namespace, plural, label_selector=f"{LABEL_APP}=shop"
        )
        out |= {f"{plural}/{o['metadata']['name']}" for o in listed["items"]}
    return out


def patch_application(lg: Lockgate, spec: dict[str, Any]) -> None:
    lg.custom.patch_namespaced_custom_object(
        GROUP, VERSION, lg.namespace, "applications", "shop", {"spec": spec}
    )


def test_an_application_moved_to_an_httproute_and_back_serves_every_request_and_keeps_no_old_route(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    host = host_of("shop", lockgate.namespace)
    lockgate.create(application("shop", 3, namespace=lockgate.namespace))
    lockgate.create(deployment("shop-v1", "shop", "demo:v1"))
    finished = lockgate.wait_finished("shop-v1")
    assert finished["phase"] == "Succeeded", finished
    traefik_routes = {
        "traefikservices/shop",
        "ingressroutes/shop",
        "ingressroutes/shop-lockgate-probe",
    }
    assert route_objects(lockgate) == traefik_routes
    gateway = {"route": {"parentRefs": [traefik.parent_ref()], "hostnames": [host]}}
    ingress = {"entryPoints": ["web"], "match": f"Host(`{host}`)"}
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        patch_application(
            lockgate, {"traffic": {"traefik": {"route": None}, "gatewayAPI": gateway}}
        )
        wait_for(
            "only the HTTPRoutes left",
            lambda: (
                route_objects(lockgate) == {"httproutes/shop", "httproutes/shop-lockgate-probe"}
            ),
            lambda: (route_objects(lockgate), lockgate.application_status("shop")),
        )
        wait_for(
            "Traefik to drop the IngressRoute's router",
            lambda: not traefik_routers(traefik, f"{lockgate.namespace}-shop-"),
            lambda: traefik_routers(traefik, f"{lockgate.namespace}-shop-"),
        )
        load.wait_answered(len(load.responses) + 200)
        patch_application(
            lockgate, {"traffic": {"gatewayAPI": None, "traefik": {"route": ingress}}}
        )
        wait_for(
            "only the Traefik routes left",
            lambda: route_objects(lockgate) == traefik_routes,
            lambda: (route_objects(lockgate), lockgate.application_status("shop")),
        )
        wait_for(
            "Traefik to drop the HTTPRoute's routers",
            lambda: not traefik_routers(traefik, route_prefix(lockgate)),
            lambda: traefik_routers(traefik, route_prefix(lockgate)),
        )
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert failed(responses) == [], f"{len(failed(responses))} of {len(responses)} failed"
    assert served(responses, "v1") == len(responses)
