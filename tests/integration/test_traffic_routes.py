"""Traffic beyond weights, end to end on both targets: header routes (`setHeaderRoute`)
through real Traefik under real load — an IngressRoute on the local control plane, the file
provider for three real Docker hosts — with the operator running as `lockgate operator`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hack.tools.load import Load, by_version, failed
from tests.support.cluster import Traefik
from tests.support.docker_apps import (
    create_secrets,
    delete_application,
    docker_application,
    remove_all,
    wait_alone_everywhere,
)
from tests.support.dockerhosts import DockerHost
from tests.support.rollouts import Lockgate, application, deployment, host_of, wait_for

pytestmark = pytest.mark.integration

TESTER = {"X-Canary": "always"}
HEADER_ROUTE = {"setHeaderRoute": {"match": [{"header": "X-Canary", "exact": "always"}]}}
# Testers only, until a promote (or an abort); then everyone.
TESTERS_FIRST = {"type": "Canary", "canary": {"steps": [HEADER_ROUTE, {"pause": {}}, 100]}}
ENDED = {"Succeeded", "RolledBack", "Failed", "Aborted"}
COUNTED = 1000  # per client kind: >= 2,000 requests in all while the weight is 0


def header_routers(traefik: Traefik, marker: str) -> list[dict[str, Any]]:
    """Traefik's routers (its API) whose rule holds the header route's condition for the
    test's own host name."""
    routers = httpx.get(f"{traefik.api_url}/api/http/routers", timeout=5).json()
    return [r for r in routers if marker in r.get("rule", "") and "X-Canary" in r["rule"]]


def loads(traefik: Traefik, host: str) -> tuple[Load, Load]:
    return Load(traefik.web_url, host, threads=2, headers=TESTER), Load(
        traefik.web_url, host, threads=2
    )


def count_while_weight_zero(
    lg: Lockgate, name: str, testers: Load, others: Load
) -> tuple[list[Any], list[Any]]:
    """Each client kind's answers while the rollout holds weight 0 with the route live,
    from the moment the route is confirmed live (the step after it is the pause)."""
    status = lg.wait_phase(name, {"Paused"})
    assert status["weights"] == {"stable": 100, "canary": 0}, status["weights"]
    assert status["routes"]["headerRoute"] == ["header X-Canary = always"]
    start_t, start_o = len(testers.responses), len(others.responses)
    testers.wait_answered(start_t + COUNTED)
    others.wait_answered(start_o + COUNTED)
    assert lg.status(name)["weights"] == {"stable": 100, "canary": 0}
    return testers.responses[start_t:], others.responses[start_o:]


def assert_split(tester_answers: list[Any], other_answers: list[Any]) -> None:
    assert len(tester_answers) + len(other_answers) >= 2000
    assert {r.version for r in tester_answers} == {"v2"}, by_version(tester_answers)
    assert {r.version for r in other_answers} == {"v1"}, by_version(other_answers)


# --- Kubernetes ------------------------------------------------------------------------------


def deploy_v1(lg: Lockgate) -> None:
    lg.create(application("shop", 2, namespace=lg.namespace))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    lg.wait_phase("shop-v1", {"Succeeded"})


@pytest.mark.parametrize("end", ["promote", "abort"])
def test_header_route_on_kubernetes_sends_testers_and_only_them_to_the_canary(
    lockgate: Lockgate, traefik: Traefik, end: str
) -> None:
    deploy_v1(lockgate)
    host = host_of("shop", lockgate.namespace)
    testers, others = loads(traefik, host)
    with testers, others:
        testers.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", TESTERS_FIRST))
        counted = count_while_weight_zero(lockgate, "shop-v2", testers, others)
        assert header_routers(traefik, host), "the router is in Traefik"
        lockgate.annotate("shop-v2", end)
        status = lockgate.wait_phase("shop-v2", ENDED)
        wait_for("the header route gone from Traefik", lambda: not header_routers(traefik, host))
        after = len(testers.responses)
        testers.wait_answered(after + 200)
        late = testers.responses[after:]
    all_testers, all_others = testers.stop(), others.stop()
    assert_split(*counted)
    expected = {"promote": ("Succeeded", "v2"), "abort": ("Aborted", "v1")}[end]
    assert status["phase"] == expected[0], status.get("message")
    assert {r.version for r in late} == {expected[1]}, by_version(late)
    assert failed(all_testers) == [], by_version(all_testers)
    assert failed(all_others) == [], by_version(all_others)
    assert status["routes"]["headerRoute"] == []
    ingress = lockgate.custom.get_namespaced_custom_object(
        "traefik.io", "v1alpha1", lockgate.namespace, "ingressroutes", "shop"
    )
    assert len(ingress["spec"]["routes"]) == 1, "only the Application's own route is left"
    wait_for(
        "TraefikService shop-headers deleted",
        lambda: (
            not [
                s
                for s in lockgate.custom.list_namespaced_custom_object(
                    "traefik.io", "v1alpha1", lockgate.namespace, "traefikservices"
                )["items"]
                if s["metadata"]["name"] == "shop-headers"
            ]
        ),
    )


# --- Docker hosts ----------------------------------------------------------------------------


@pytest.fixture
def app(lockgate: Lockgate) -> str:
    return f"hdr-{lockgate.namespace[-8:]}"


@pytest.fixture
def fleet(
    lockgate: Lockgate, app: str, docker_hosts_by_name: dict[str, DockerHost], traefik: Traefik
) -> Iterator[dict[str, DockerHost]]:
    remove_all(docker_hosts_by_name, app)
    yield docker_hosts_by_name
    delete_application(lockgate, app)
    remove_all(docker_hosts_by_name, app)
    (traefik.dynamic_dir / f"{app}.yaml").unlink(missing_ok=True)


@pytest.mark.parametrize("end", ["promote", "abort"])
def test_header_route_on_docker_hosts_sends_testers_and_only_them_to_the_canary(
    lockgate: Lockgate, app: str, fleet: dict[str, DockerHost], traefik: Traefik, end: str
) -> None:
    create_secrets(lockgate, fleet)
    lockgate.create(docker_application(lockgate, app, fleet, traefik))
    lockgate.create(deployment(f"{app}-v1", app, "demo:v1"))
    assert lockgate.wait_finished(f"{app}-v1")["phase"] == "Succeeded"
    host = host_of(app, lockgate.namespace)
    strategy = {
        "type": "Canary",
        "canary": {"canaryHosts": 1, "steps": TESTERS_FIRST["canary"]["steps"]},
    }
    testers, others = loads(traefik, host)
    with testers, others:
        testers.wait_answered(20)
        lockgate.create(deployment(f"{app}-v2", app, "demo:v2", strategy))
        counted = count_while_weight_zero(lockgate, f"{app}-v2", testers, others)
        assert header_routers(traefik, host), "the router is in Traefik"
        lockgate.annotate(f"{app}-v2", end)
        status = lockgate.wait_phase(f"{app}-v2", ENDED)
        wait_for("the header route gone from Traefik", lambda: not header_routers(traefik, host))
        after = len(testers.responses)
        testers.wait_answered(after + 200)
        late = testers.responses[after:]
    all_testers, all_others = testers.stop(), others.stop()
    assert_split(*counted)
    expected = {"promote": ("Succeeded", "v2"), "abort": ("Aborted", "v1")}[end]
    assert status["phase"] == expected[0], status.get("message")
    assert {r.version for r in late} == {expected[1]}, by_version(late)
    assert failed(all_testers) == [], by_version(all_testers)
    assert failed(all_others) == [], by_version(all_others)
    assert "lockgate-header-route" not in (traefik.dynamic_dir / f"{app}.yaml").read_text()
    wait_alone_everywhere(fleet, app, f"demo:{expected[1]}")
