"""Traffic beyond weights, end to end on both targets: header routes (`setHeaderRoute`)
through real Traefik under real load — an IngressRoute on the local control plane, the file
provider for three real Docker hosts — with the operator running as `lockgate operator`."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from hack.tools.load import Load, by_version, failed
from lockgate.traffic.traefik_api import Look, listing_in, service_in
from lockgate.traffic.traefik_observer import look_entries
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
    routers = httpx.get(
        f"{traefik.api_url}/api/http/routers", params={"search": marker}, timeout=5
    ).json()
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
        wait_for(
            "the header route gone from Traefik",
            lambda: not header_routers(traefik, host),
            lambda: (header_routers(traefik, host), lockgate.status("shop-v2")),
        )
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
    parked = lockgate.custom.get_namespaced_custom_object(
        "traefik.io", "v1alpha1", lockgate.namespace, "traefikservices", "shop-headers"
    )
    assert parked["spec"]["weighted"]["services"] == [
        {"name": "shop", "kind": "TraefikService", "weight": 1}
    ], "parked over the weights once no route uses it"


def test_what_a_round_reads_from_a_look_is_what_traefiks_own_queries_answer(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    """A round asks Traefik for one service and for routers and services by `search`,
    `status` and `serviceName`; the operator answers those from the observer's
    /api/rawdata look with Traefik's filters done again in lockgate (`listing_in`). Here,
    with a header route live, every such question (and a few more, mixed case) is asked of
    the real Traefik and of a look taken just before and after it."""
    deploy_v1(lockgate)
    lockgate.create(deployment("shop-v2", "shop", "demo:v2", TESTERS_FIRST))
    lockgate.wait_phase("shop-v2", {"Paused"})
    ns = lockgate.namespace
    uid = lockgate.get("shop", "applications")["metadata"]["uid"]
    crd = "kubernetescrd"
    services = [f"{ns}-shop", f"{ns}-shop-headers", f"{ns}-shop-mirror", f"{ns}-gone"]
    lists: list[tuple[str, dict[str, str]]] = [
        ("routers", {"search": uid}),
        ("services", {"search": f"{ns}-shop-lockgate-probe"}),
        ("routers", {"serviceName": f"{ns}-shop@{crd}", "status": "enabled"}),
        ("routers", {"serviceName": f"{ns}-shop-headers@{crd}", "status": "enabled"}),
        ("routers", {"serviceName": f"{ns}-shop-headers", "status": "ENABLED"}),
        ("routers", {"search": ns.upper()}),
        ("routers", {"search": ns, "status": "disabled"}),
        ("services", {"search": ns, "status": "Enabled"}),
    ]

    def ours(raw: bytes) -> dict[str, Any]:
        return {k: v for k, v in look_entries(raw).items() if ns in k}

    def compared() -> tuple[list[str]] | None:
        """What differs between Traefik's answers and the look's; None when this test's
        routers or services changed between the two looks around its answers (every
        question is about this namespace's: other tests' changes do not matter)."""
        before = httpx.get(f"{traefik.api_url}/api/rawdata", timeout=5).content
        own: list[Any] = [
            httpx.get(f"{traefik.api_url}/api/http/services/{name}@{crd}", timeout=5)
            for name in services
        ] + [
            httpx.get(f"{traefik.api_url}/api/http/{kind}", params=query, timeout=5)
            for kind, query in lists
        ]
        if ours(httpx.get(f"{traefik.api_url}/api/rawdata", timeout=5).content) != ours(before):
            return None
        entries = look_entries(before)
        differ = []
        for name, answer in zip(services, own, strict=False):
            mine = service_in(entries, name, crd)
            theirs = traefiks(answer.json()) if answer.status_code == 200 else None
            if mine != theirs:
                differ.append(f"service {name}: look {mine}, Traefik {theirs}")
        for (kind, query), answer in zip(lists, own[len(services) :], strict=True):
            assert answer.status_code == 200, answer.text
            theirs_list = [traefiks(item) for item in answer.json()]
            for how, mine_list in (
                ("listing_in", listing_in(entries, kind, **query)),
                ("Look", Look(entries).listing(kind, **query)),
            ):
                if mine_list != theirs_list:
                    differ.append(f"{kind} {query}: {how} {mine_list}, Traefik {theirs_list}")
        return (differ,)

    (differ,) = wait_for(
        "two looks alike around Traefik's answers",
        compared,
        lambda: lockgate.status("shop-v2"),
    )
    assert differ == [], "\n".join(differ)
    assert len(look_entries(httpx.get(f"{traefik.api_url}/api/rawdata").content)) > 8


def traefiks(item: dict[str, Any]) -> dict[str, Any]:
    """Traefik's answer without what its API adds to the look's entry beside the name."""
    return {k: v for k, v in item.items() if k not in ("provider", "priorityStr", "type")}


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
    finished = lockgate.wait_finished(f"{app}-v1")
    assert finished["phase"] == "Succeeded", finished
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
        wait_for(
            "the header route gone from Traefik",
            lambda: not header_routers(traefik, host),
            lambda: (header_routers(traefik, host), lockgate.status(f"{app}-v2")),
        )
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


# --- sticky canaries -------------------------------------------------------------------------

STICKY = {"cookie": {"name": "lg_version", "httpOnly": True}}  # plain HTTP: not `secure`
GROWING = {
    "type": "Canary",
    "canary": {
        "steps": [
            {"setWeight": 10},
            {"pause": {"seconds": 8}},
            {"setWeight": 50},
            {"pause": {}},
            {"setWeight": 100},
        ]
    },
}


class Sessions:
    """Clients that keep their cookies (one httpx.Client each), activated in waves, each
    recording which version answered it; a few threads take turns over the active ones.
    They stop when the test's `with` block ends."""

    def __init__(self, url: str, host: str, threads: int = 3) -> None:
        self.url, self.host = url, host
        self.clients: list[httpx.Client] = []
        self.seen: list[list[tuple[int | None, str | None]]] = []
        self.lock = threading.Condition()
        self.stopped = threading.Event()
        self.workers = [
            threading.Thread(target=self._run, args=(i, threads), daemon=True)
            for i in range(threads)
        ]

    def add(self, count: int) -> list[int]:
        with self.lock:
            first = len(self.clients)
            for _ in range(count):
                self.clients.append(httpx.Client(timeout=3.0))
                self.seen.append([])
            return list(range(first, first + count))

    def _run(self, index: int, threads: int) -> None:
        turn = 0
        while not self.stopped.is_set():
            with self.lock:
                mine = [i for i in range(len(self.clients)) if i % threads == index]
            if not mine:
                time.sleep(0.05)
                continue
            i = mine[turn % len(mine)]
            turn += 1
            try:
                answer = self.clients[i].get(self.url, headers={"Host": self.host})
                item = (answer.status_code, answer.headers.get("x-version"))
            except httpx.HTTPError:
                item = (None, None)
            with self.lock:
                self.seen[i].append(item)
                self.lock.notify_all()
            time.sleep(0.005)

    def wait_each(self, clients: list[int], answers: int) -> None:
        """Until each of `clients` has `answers` more answers than now."""
        with self.lock:
            wanted = {i: len(self.seen[i]) + answers for i in clients}

        def answered() -> list[int]:
            with self.lock:
                return [len(self.seen[i]) for i in clients]

        wait_for(
            f"{answers} more answers for each of {len(clients)} clients",
            lambda: all(n >= wanted[i] for i, n in zip(clients, answered(), strict=True)),
            answered,
        )

    def snapshot(self) -> list[list[tuple[int | None, str | None]]]:
        with self.lock:
            return [list(s) for s in self.seen]

    def __enter__(self) -> Sessions:
        for worker in self.workers:
            worker.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for worker in self.workers:
            worker.join(timeout=10)
        for client in self.clients:
            client.close()


def sticky_rollout(lg: Lockgate, traefik: Traefik, host: str, name: str, strategy: Any) -> None:
    """Three waves of clients — before the rollout, at 10%, at 50% — none of which flips
    version while the weight grows; an abort then puts every one of them on stable."""
    with Sessions(traefik.web_url, host) as sessions:
        before = sessions.add(15)
        sessions.wait_each(before, 3)
        lg.create(deployment(name, name.rsplit("-", 1)[0], "demo:v2", strategy))
        lg.wait_status(name, lambda s: (s.get("weights") or {}).get("canary") == 10, "weight 10")
        at_10 = sessions.add(20)
        sessions.wait_each(at_10, 3)
        lg.wait_status(name, lambda s: (s.get("weights") or {}).get("canary") == 50, "weight 50")
        at_50 = sessions.add(20)
        sessions.wait_each(at_50, 3)
        assert lg.wait_phase(name, {"Paused"})["weights"] == {"stable": 50, "canary": 50}
        sessions.wait_each(before + at_10 + at_50, 10)
        grown = sessions.snapshot()
        lg.annotate(name, "abort")
        status = lg.wait_phase(name, ENDED)
        everyone = before + at_10 + at_50
        sessions.wait_each(everyone, 10)
        ended = sessions.snapshot()
    assert status["phase"] == "Aborted", status.get("message")
    failures = [a for s in ended for a in s if a[0] != 200 or a[1] is None]
    assert failures == [], f"{len(failures)} failed answers: {failures[:5]}"
    versions = [{v for _, v in s} for s in grown]
    flipped = [i for i, vs in enumerate(versions) if len(vs) != 1]
    assert flipped == [], f"clients that flipped version: {[versions[i] for i in flipped]}"
    assert {"v1"} == versions[before[0]], "clients from before the rollout stay on stable"
    on_canary = [i for i in at_10 + at_50 if versions[i] == {"v2"}]
    assert on_canary, "some clients were drawn onto the canary"
    for i in everyone:
        assert {v for _, v in ended[i][-5:]} == {"v1"}, f"client {i} after rollback: {ended[i]}"


def test_sticky_canary_on_kubernetes_keeps_each_client_on_its_version(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    app = application("shop", 2, namespace=lockgate.namespace)
    app["spec"]["traffic"]["traefik"]["sticky"] = STICKY
    lockgate.create(app)
    lockgate.create(deployment("shop-v1", "shop", "demo:v1"))
    lockgate.wait_phase("shop-v1", {"Succeeded"})
    sticky_rollout(lockgate, traefik, host_of("shop", lockgate.namespace), "shop-v2", GROWING)


def test_sticky_canary_on_docker_hosts_keeps_each_client_on_its_version(
    lockgate: Lockgate, app: str, fleet: dict[str, DockerHost], traefik: Traefik
) -> None:
    create_secrets(lockgate, fleet)
    manifest = docker_application(lockgate, app, fleet, traefik)
    manifest["spec"]["traffic"]["traefik"]["sticky"] = STICKY
    lockgate.create(manifest)
    lockgate.create(deployment(f"{app}-v1", app, "demo:v1"))
    finished = lockgate.wait_finished(f"{app}-v1")
    assert finished["phase"] == "Succeeded", finished
    strategy = {"type": "Canary", "canary": {"canaryHosts": 1, **GROWING["canary"]}}
    sticky_rollout(lockgate, traefik, host_of(app, lockgate.namespace), f"{app}-v2", strategy)
    wait_alone_everywhere(fleet, app, "demo:v1")


# --- mirroring -------------------------------------------------------------------------------

ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}


def service_requests(traefik: Traefik, service: str) -> int:
    """Requests Traefik's metrics count for a service (every code), by its name's prefix."""
    text = httpx.get(traefik.metrics_url, timeout=5).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith("traefik_service_requests_total{") and f'service="{service}' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def mirror_rollout(
    lg: Lockgate, traefik: Traefik, host: str, name: str, strategy: Any, leaves: dict[str, str]
) -> None:
    """A healthy canary behind a 20% mirror: it passes analysis on the copies alone (the
    rollout reaches the pause after the gate), gets 20% (+-3 points) of stable's requests
    while clients get only stable's answers, and the promotion removes the mirror."""
    with Load(traefik.web_url, host) as load:
        load.wait_answered(20)
        lg.create(deployment(name, name.rsplit("-", 1)[0], "demo:v2", strategy, analysis=ANALYSIS))
        status = lg.wait_phase(name, {"Paused"})
        assert status["routes"]["mirrorPercent"] == 20
        assert status["weights"] == {"stable": 100, "canary": 0}
        passed = [r for r in status["analysis"] if r["verdict"] == "Passed"]
        assert passed and passed[-1]["canary"]["requests"] >= ANALYSIS["minRequests"]
        before = {role: service_requests(traefik, leaf) for role, leaf in leaves.items()}
        start = len(load.responses)
        load.wait_answered(start + 2000)
        after = {role: service_requests(traefik, leaf) for role, leaf in leaves.items()}
        dark = load.responses[start:]
        lg.annotate(name, "promote")
        final = lg.wait_phase(name, ENDED)
        load.wait_answered(len(load.responses) + 100)
    responses = load.stop()
    stable = after["stable"] - before["stable"]
    canary = after["canary"] - before["canary"]
    assert stable >= 2000, (stable, canary)
    share = 100 * canary / stable
    assert abs(share - 20) <= 3, f"the canary got {share:.1f}% of stable's {stable} requests"
    assert {r.version for r in dark} == {"v1"}, by_version(dark)
    assert failed(responses) == [], by_version(responses)
    assert final["phase"] == "Succeeded", final.get("message")
    assert final["routes"]["mirrorPercent"] == 0
    assert {r.version for r in responses[-100:]} == {"v2"}


def failing_mirror_rollout(
    lg: Lockgate, traefik: Traefik, host: str, name: str, strategy: Any
) -> dict[str, Any]:
    """A canary failing every request behind a 50% mirror: rolled back by analysis on the
    copies, before any client request reaches it, with no failed client request."""
    with Load(traefik.web_url, host) as load:
        load.wait_answered(20)
        lg.create(
            deployment(
                name, name.rsplit("-", 1)[0], "demo:v2-errors100", strategy, analysis=ANALYSIS
            )
        )
        status = lg.wait_phase(name, ENDED)
        load.wait_answered(len(load.responses) + 100)
    responses = load.stop()
    assert status["phase"] == "RolledBack", status.get("message")
    assert "analysis failed at step 2" in status["message"], status["message"]
    assert "canary 5xx ratio 1.00" in status["message"]
    assert {r.version for r in responses} == {"v1"}, "no client request reached the canary"
    assert failed(responses) == [], by_version(responses)
    assert all((t.get("weights") or {}).get("canary", 0) == 0 for t in status["transitions"]), (
        "the canary never had weight"
    )
    assert status["routes"]["mirrorPercent"] == 0
    return status


MIRROR_THEN_WEIGHTS = {
    "type": "Canary",
    "canary": {"steps": [{"setMirror": {"percent": 20}}, {"pause": {}}, {"setWeight": 100}]},
}
FAILING_MIRROR = {
    "type": "Canary",
    "canary": {"steps": [{"setMirror": {"percent": 50}}, {"setWeight": 10}, {"setWeight": 100}]},
}


def test_mirror_on_kubernetes_copies_its_share_to_the_canary_and_clients_see_stable(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    deploy_v1(lockgate)
    ns = lockgate.namespace
    leaves = {"stable": f"{ns}-shop-stable-", "canary": f"{ns}-shop-canary-"}
    mirror_rollout(lockgate, traefik, host_of("shop", ns), "shop-v2", MIRROR_THEN_WEIGHTS, leaves)
    parked = lockgate.custom.get_namespaced_custom_object(
        "traefik.io", "v1alpha1", ns, "traefikservices", "shop-mirror"
    )
    assert parked["spec"]["mirroring"]["mirrors"] == [], "parked: no mirror left"


def test_a_canary_failing_every_mirrored_request_on_kubernetes_never_meets_a_client(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    deploy_v1(lockgate)
    failing_mirror_rollout(
        lockgate, traefik, host_of("shop", lockgate.namespace), "shop-bad", FAILING_MIRROR
    )


def test_mirror_on_docker_hosts_copies_its_share_to_the_canary_and_clients_see_stable(
    lockgate: Lockgate, app: str, fleet: dict[str, DockerHost], traefik: Traefik
) -> None:
    create_secrets(lockgate, fleet)
    lockgate.create(docker_application(lockgate, app, fleet, traefik))
    lockgate.create(deployment(f"{app}-v1", app, "demo:v1"))
    finished = lockgate.wait_finished(f"{app}-v1")
    assert finished["phase"] == "Succeeded", finished
    strategy = {"type": "Canary", "canary": {"canaryHosts": 1, **MIRROR_THEN_WEIGHTS["canary"]}}
    leaves = {"stable": f"{app}-stable@file", "canary": f"{app}-canary@file"}
    mirror_rollout(
        lockgate, traefik, host_of(app, lockgate.namespace), f"{app}-v2", strategy, leaves
    )
    assert "mirroring" not in (traefik.dynamic_dir / f"{app}.yaml").read_text()
    wait_alone_everywhere(fleet, app, "demo:v2")


def test_a_canary_failing_every_mirrored_request_on_docker_hosts_never_meets_a_client(
    lockgate: Lockgate, app: str, fleet: dict[str, DockerHost], traefik: Traefik
) -> None:
    create_secrets(lockgate, fleet)
    lockgate.create(docker_application(lockgate, app, fleet, traefik))
    lockgate.create(deployment(f"{app}-v1", app, "demo:v1"))
    finished = lockgate.wait_finished(f"{app}-v1")
    assert finished["phase"] == "Succeeded", finished
    strategy = {"type": "Canary", "canary": {"canaryHosts": 1, **FAILING_MIRROR["canary"]}}
    failing_mirror_rollout(
        lockgate, traefik, host_of(app, lockgate.namespace), f"{app}-bad", strategy
    )
    wait_alone_everywhere(fleet, app, "demo:v1")
