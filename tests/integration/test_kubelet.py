"""The process kubelet: Deployments become Ready Pods with real pod IPs, EndpointSlices follow
readiness, deletion is graceful, and Traefik splits real HTTP between two Deployments."""

from __future__ import annotations

import http.client
import ipaddress
import socket
import struct
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from hack.tools.kubelet import BRIDGE, BRIDGE_ADDRESS, ip, is_demo_image, pod_netns
from tests.support.cluster import Cluster, Traefik
from tests.support.kubelet_fixtures import ProcessKubelet
from tests.support.rollouts import wait_for

pytestmark = pytest.mark.integration

PORT = 8080


# --- helpers ---------------------------------------------------------------------------------


def app_versions(api: ApiClient, namespace: str, app: str) -> list[tuple[str, str, str]]:
    """The kind, name and resource version of each Pod labelled app=`app` and of each
    EndpointSlice of Service `app`: what the kubelet (Pod status) and the controllers change
    on the way to whatever a test here waits for. Only that app's: a neighbour in back-off
    (a failed pull, a crash loop) changes its Pod every minute forever."""
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=f"app={app}")
    slices = k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={app}"
    )
    return [
        *(("Pod", p.metadata.name, p.metadata.resource_version) for p in pods.items),
        *(("EndpointSlice", e.metadata.name, e.metadata.resource_version) for e in slices.items),
    ]


def wait_until(
    api: ApiClient,
    namespace: str,
    app: str,
    what: str,
    check: Callable[[], Any],
    *,
    every: float = 0.1,
) -> Any:
    """Poll until check() returns something truthy and return it. No wall-clock limit: the
    wait goes on while the app's Pods or EndpointSlices change (a loaded machine only slows
    them), and fails naming `what` once they and the answer have stood still."""
    return wait_for(what, check, lambda: app_versions(api, namespace, app), every=every)


def traefik_loaded(traefik: Traefik, namespace: str) -> dict[str, Any]:
    """What Traefik has loaded from the namespace (its API's raw data): the routers and
    services, with their status and weights, on the way to the answers a test waits for."""
    raw = httpx.get(f"{traefik.api_url}/api/rawdata", timeout=5, trust_env=False).json()
    return {
        name: entry
        for kind in ("routers", "services")
        for name, entry in (raw.get(kind) or {}).items()
        if name.startswith(f"{namespace}-")
    }


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[ApiClient]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(pod_namespace: str) -> str:
    return pod_namespace


def demo_container(image: str, probe: bool = True, **extra: Any) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "app",
        "image": image,
        "ports": [{"name": "http", "containerPort": PORT}],
        **extra,
    }
    if probe:
        container["readinessProbe"] = {
            "httpGet": {"path": "/health", "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 1,
        }
    return container


def create_deployment(api: ApiClient, namespace: str, name: str, image: str, replicas: int) -> None:
    labels = {"app": name}
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [demo_container(image)]},
            },
        },
    }
    k8s.AppsV1Api(api).create_namespaced_deployment(namespace, body)


def create_service(api: ApiClient, namespace: str, name: str, selector: dict[str, str]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": "http"}]},
    }
    k8s.CoreV1Api(api).create_namespaced_service(namespace, body)


def create_pod(api: ApiClient, namespace: str, name: str, container: dict[str, Any]) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container]},
    }
    k8s.CoreV1Api(api).create_namespaced_pod(namespace, body)


def is_ready(pod: k8s.V1Pod) -> bool:
    conditions = pod.status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def ready_pods(api: ApiClient, namespace: str, selector: str) -> list[k8s.V1Pod]:
    pods = k8s.CoreV1Api(api).list_namespaced_pod(namespace, label_selector=selector).items
    return [p for p in pods if is_ready(p) and p.metadata.deletion_timestamp is None]


def ready_endpoints(api: ApiClient, namespace: str, service: str) -> set[str]:
    """Addresses the EndpointSlice controller lists as ready for the Service."""
    slices = k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return {
        address
        for eps in slices.items
        for endpoint in eps.endpoints or []
        if endpoint.conditions and endpoint.conditions.ready
        for address in endpoint.addresses
    }


def all_endpoints(api: ApiClient, namespace: str, service: str) -> list[Any]:
    slices = k8s.DiscoveryV1Api(api).list_namespaced_endpoint_slice(
        namespace, label_selector=f"kubernetes.io/service-name={service}"
    )
    return [endpoint for eps in slices.items for endpoint in eps.endpoints or []]


def http_get(url: str, timeout: float) -> httpx.Response:
    """A direct GET: pod IPs and Traefik are on this machine, never behind a proxy."""
    with httpx.Client(trust_env=False, timeout=timeout) as direct:
        return direct.get(url)


def get_pod(api: ApiClient, namespace: str, name: str) -> k8s.V1Pod | None:
    try:
        return k8s.CoreV1Api(api).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def connected(connection: http.client.HTTPConnection) -> bool:
    try:
        connection.connect()
    except ConnectionRefusedError:
        return False
    return True


# --- tests -----------------------------------------------------------------------------------


def test_image_mapping() -> None:
    """Only a repository named demo runs (as the demo app); everything else fails to pull."""
    for image in ("demo:v1", "demo", "reg.example/shop/demo:v2-errors30", "h:5000/demo@sha256:ab"):
        assert is_demo_image(image), image
    for image in ("nginx:1.0", "demo-app:v1", "demo/nginx:1", "reg.example:5000/x/demox:v1"):
        assert not is_demo_image(image), image


def test_deployment_pods_become_ready_with_pod_ips_and_are_replaced(
    api: ApiClient, namespace: str, kubelet: ProcessKubelet
) -> None:
    create_service(api, namespace, "web", {"app": "web"})
    started = time.monotonic()
    create_deployment(api, namespace, "web", "demo:v1", replicas=3)
    pods = wait_until(
        api,
        namespace,
        "web",
        "3 ready pods",
        lambda: (p := ready_pods(api, namespace, "app=web")) and len(p) == 3 and p,
    )
    print(f"3-replica Deployment Ready in {time.monotonic() - started:.2f}s")
    ips = {p.status.pod_ip for p in pods}
    wait_until(
        api,
        namespace,
        "web",
        "3 ready endpoints",
        lambda: ready_endpoints(api, namespace, "web") == ips,
    )

    cidr = ipaddress.ip_network(kubelet.pod_cidr)
    for pod in pods:
        address = ipaddress.ip_address(pod.status.pod_ip)
        assert address in cidr and not address.is_loopback
        assert [i.ip for i in pod.status.pod_ips] == [pod.status.pod_ip]
        assert pod.spec.node_name == kubelet.node_name
        assert pod.status.phase == "Running" and pod.status.host_ip and pod.status.start_time
        kinds = {c.type: c.status for c in pod.status.conditions}
        assert kinds["PodScheduled"] == kinds["Initialized"] == kinds["ContainersReady"] == "True"
        (status,) = pod.status.container_statuses
        assert status.ready and status.started and status.restart_count == 0
        assert status.state.running is not None and status.image == "demo:v1"
        assert status.image_id.startswith("demo@sha256:")
        # Real HTTP from the root namespace to the pod's own address.
        response = http_get(f"http://{pod.status.pod_ip}:{PORT}/", timeout=5)
        assert response.status_code == 200
        assert response.headers["X-Version"] == "v1"
        assert response.headers["X-Instance"] == pod.metadata.name

    victim = pods[0]
    k8s.CoreV1Api(api).delete_namespaced_pod(victim.metadata.name, namespace)

    def replaced() -> list[k8s.V1Pod] | None:
        now = ready_pods(api, namespace, "app=web")
        names = {p.metadata.name for p in now}
        if len(now) == 3 and victim.metadata.name not in names:
            return now
        return None

    new_pods = wait_until(api, namespace, "web", "a replacement pod to become ready", replaced)
    new_ips = {p.status.pod_ip for p in new_pods}
    wait_until(
        api,
        namespace,
        "web",
        "3 ready endpoints again",
        lambda: ready_endpoints(api, namespace, "web") == new_ips,
    )
    wait_until(
        api,
        namespace,
        "web",
        "the old pod gone",
        lambda: get_pod(api, namespace, victim.metadata.name) is None,
    )


def test_unready_image_never_ready_and_foreign_image_fails_to_pull(
    api: ApiClient, namespace: str
) -> None:
    create_service(api, namespace, "unready", {"app": "unready"})
    create_pod(api, namespace, "unready", demo_container("demo:v2-unready"))
    create_pod(api, namespace, "foreign", demo_container("nginx:1.0"))

    def running(name: str) -> bool:
        pod = get_pod(api, namespace, name)
        statuses = pod.status.container_statuses if pod else None
        return bool(statuses and statuses[0].state.running)

    wait_until(
        api, namespace, "unready", "the unready pod's process to run", lambda: running("unready")
    )
    # It has an endpoint (it has an IP), but never a ready one, over several probe periods.
    wait_until(
        api,
        namespace,
        "unready",
        "an endpoint for it",
        lambda: all_endpoints(api, namespace, "unready"),
    )
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pod = get_pod(api, namespace, "unready")
        assert pod is not None and not is_ready(pod)
        assert not pod.status.container_statuses[0].ready
        assert ready_endpoints(api, namespace, "unready") == set()
        time.sleep(0.25)
    # The app itself runs and answers; only its health says no.
    response = http_get(f"http://{pod.status.pod_ip}:{PORT}/health", timeout=5)
    assert response.status_code == 503

    def pull_failed() -> k8s.V1Pod | None:
        pod = get_pod(api, namespace, "foreign")
        statuses = pod.status.container_statuses if pod else None
        waiting = statuses[0].state.waiting if statuses else None
        return pod if waiting and waiting.reason == "ErrImagePull" else None

    pod = wait_until(api, namespace, "foreign", "ErrImagePull for nginx:1.0", pull_failed)
    (status,) = pod.status.container_statuses
    assert "nginx:1.0" in status.state.waiting.message
    assert pod.status.phase == "Pending" and not status.ready and not status.started
    assert not is_ready(pod)
    # And it stays that way: the back-off alternates reasons, never running.
    time.sleep(3)
    pod = get_pod(api, namespace, "foreign")
    assert pod is not None
    (status,) = pod.status.container_statuses
    assert status.state.running is None
    assert status.state.waiting.reason in ("ErrImagePull", "ImagePullBackOff")


def test_crashing_process_is_restarted_with_back_off(
    api: ApiClient, namespace: str, kubelet: ProcessKubelet
) -> None:
    # The demo app refuses an error share over 100% and exits 1 at once.
    create_pod(api, namespace, "crash", demo_container("demo:v1-errors101", probe=False))

    def restarted_twice() -> k8s.V1Pod | None:
        pod = get_pod(api, namespace, "crash")
        statuses = pod.status.container_statuses if pod else None
        return pod if statuses and statuses[0].restart_count >= 2 else None

    pod = wait_until(api, namespace, "crash", "two restarts", restarted_twice)
    (status,) = pod.status.container_statuses
    assert status.last_state.terminated is not None
    assert status.last_state.terminated.exit_code == 1
    assert not is_ready(pod)
    assert "errors101" in kubelet.container_log(namespace, "crash", "app")
    # A healthy pod next to it is unaffected: the kubelet survives its neighbour's crashes.
    create_pod(api, namespace, "healthy", demo_container("demo:v1"))
    wait_until(
        api,
        namespace,
        "healthy",
        "healthy",
        lambda: (p := get_pod(api, namespace, "healthy")) and is_ready(p),
    )


def test_env_from_configmap_and_field_refs(api: ApiClient, namespace: str) -> None:
    # The demo app answers with its INSTANCE variable as X-Instance: a window on the env.
    container = demo_container("demo:v1")
    container["env"] = [
        {"name": "INSTANCE", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "who"}}},
        {"name": "MY_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    create_pod(api, namespace, "env", container)

    def waiting_reason() -> str | None:
        pod = get_pod(api, namespace, "env")
        statuses = pod.status.container_statuses if pod else None
        waiting = statuses[0].state.waiting if statuses else None
        return waiting.reason if waiting else None

    # No ConfigMap yet: the container can't be configured, as a kubelet reports it.
    wait_until(
        api,
        namespace,
        "env",
        "a config error",
        lambda: waiting_reason() == "CreateContainerConfigError",
    )
    k8s.CoreV1Api(api).create_namespaced_config_map(
        namespace, {"metadata": {"name": "cfg"}, "data": {"who": "from-configmap"}}
    )
    pod = wait_until(
        api,
        namespace,
        "env",
        "env ready",
        lambda: (p := get_pod(api, namespace, "env")) and is_ready(p) and p,
    )
    response = http_get(f"http://{pod.status.pod_ip}:{PORT}/", timeout=5)
    assert response.headers["X-Instance"] == "from-configmap"


def test_failing_liveness_probe_restarts_the_container(api: ApiClient, namespace: str) -> None:
    container = demo_container("demo:v2-unready", probe=False)
    container["livenessProbe"] = {
        "httpGet": {"path": "/health", "port": "http"},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    create_pod(api, namespace, "sick", container)

    def restarted() -> k8s.V1Pod | None:
        pod = get_pod(api, namespace, "sick")
        statuses = pod.status.container_statuses if pod else None
        return pod if statuses and statuses[0].restart_count >= 1 else None

    pod = wait_until(api, namespace, "sick", "a restart after failed liveness probes", restarted)
    # SIGTERM: the demo app drains and exits 0, as it would in a container.
    assert pod.status.container_statuses[0].last_state.terminated is not None


def test_graceful_delete_lets_in_flight_request_finish(api: ApiClient, namespace: str) -> None:
    create_service(api, namespace, "slow", {"app": "slow"})
    create_pod(api, namespace, "slow", demo_container("demo:v2-slow5000"))
    pod = wait_until(
        api,
        namespace,
        "slow",
        "slow ready",
        lambda: (p := get_pod(api, namespace, "slow")) and is_ready(p) and p,
    )
    wait_until(
        api,
        namespace,
        "slow",
        "slice",
        lambda: ready_endpoints(api, namespace, "slow") == {pod.status.pod_ip},
    )
    url = f"http://{pod.status.pod_ip}:{PORT}/"
    result: dict[str, Any] = {}
    # The request is on its way before the delete: connected and sent (a thread given a
    # fixed head start sometimes had not even connected when the Pod began terminating).
    started = time.monotonic()
    connection = http.client.HTTPConnection(pod.status.pod_ip, PORT, timeout=15)
    connection.connect()
    connection.request("GET", "/")

    def answer() -> None:
        try:
            response = connection.getresponse()
            response.read()
            result["status"] = response.status
            result["version"] = response.getheader("X-Version")
        except (OSError, http.client.HTTPException) as exc:
            result["error"] = repr(exc)
        result["seconds"] = time.monotonic() - started
        connection.close()

    worker = threading.Thread(target=answer)
    worker.start()
    k8s.CoreV1Api(api).delete_namespaced_pod("slow", namespace, grace_period_seconds=30)

    # While it drains, it is Terminating and not ready.
    terminating = wait_until(
        api,
        namespace,
        "slow",
        "the pod marked not ready",
        lambda: (p := get_pod(api, namespace, "slow")) and not is_ready(p) and p,
        every=0.05,
    )
    assert terminating.metadata.deletion_timestamp is not None

    # ... and the EndpointSlice stops offering it: ready=false at once (deletionTimestamp),
    # serving=false once the not-ready status arrives, terminating=true.
    def drained() -> bool:
        endpoints = all_endpoints(api, namespace, "slow")
        return all(
            not e.conditions.ready and not e.conditions.serving and e.conditions.terminating
            for e in endpoints
        )

    wait_until(
        api,
        namespace,
        "slow",
        "the endpoint terminating, neither ready nor serving",
        drained,
        every=0.05,
    )
    assert "status" not in result, "the request finished before the pod began terminating"

    # No limit of its own: the connection's socket timeout (15 s without a byte) ends it.
    worker.join()
    assert result.get("status") == 200, result
    assert result["version"] == "v2" and result["seconds"] >= 4.5
    wait_until(
        api, namespace, "slow", "the pod deleted", lambda: get_pod(api, namespace, "slow") is None
    )
    # Its namespace and address are gone with it.
    with pytest.raises(httpx.TransportError):
        http_get(url, timeout=1)


def test_a_pod_answers_the_host_after_the_lowest_port_leaves_the_bridge(
    api: ApiClient, namespace: str
) -> None:
    """The gateway's MAC a Pod has learnt stays right when another port leaves the bridge, so
    its answer reaches the host at once. CI once lost a response this way: a bridge without a
    MAC of its own takes the lowest of its ports', so a deleted Pod's veth took the gateway's
    MAC with it, under the ARP cache of every Pod that had learnt it; a Pod hearing nothing
    new from the host (its request acknowledged, no probes) sent its answer to that MAC until
    the entry expired, 10 to 50 s later. The link here stands for the deleted Pod: its MAC
    (00:00:5e:00:53:01, documentation range) is below any random one."""
    link = f"lgt{uuid.uuid4().hex[:8]}"

    def unacknowledged(connection: http.client.HTTPConnection) -> int:
        assert connection.sock is not None
        info = connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return int(struct.unpack_from("I", info, 24)[0])  # struct tcp_info's tcpi_unacked

    def retransmitted(connection: http.client.HTTPConnection) -> int:
        assert connection.sock is not None
        info = connection.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return int(struct.unpack_from("I", info, 100)[0])  # tcpi_total_retrans

    ip(*f"link add {link} address 00:00:5e:00:53:01 type veth peer name {link}p".split())
    try:
        ip("link", "set", link, "master", BRIDGE, "up")
        # The Pod learns the gateway's MAC while the link is a port of the bridge. No
        # readiness probe: its packets from the host would teach the Pod the MAC anew.
        create_pod(api, namespace, "steady", demo_container("demo:v2-slow2000", probe=False))
        pod = wait_until(
            api,
            namespace,
            "steady",
            "an IP",
            lambda: (p := get_pod(api, namespace, "steady")) and p.status.pod_ip and p,
        )
        connection = http.client.HTTPConnection(pod.status.pod_ip, PORT, timeout=15)
        wait_until(api, namespace, "steady", "the app listening", lambda: connected(connection))
        connection.request("GET", "/")
        # What moves towards the acknowledgement: the segments outstanding and the kernel's
        # retransmissions of them (the Pod's objects stand still meanwhile).
        wait_for(
            "the request acknowledged",
            lambda: unacknowledged(connection) == 0,
            lambda: (unacknowledged(connection), retransmitted(connection)),
            every=0.01,
        )
        ip("link", "del", link)

        sandbox = pod_netns(pod.spec.node_name, pod.metadata.uid)
        learnt = ip("-n", sandbox, "neigh", "show", str(BRIDGE_ADDRESS.ip)).stdout.split()
        bridge = ip("-br", "link", "show", BRIDGE).stdout.split()
        assert learnt[learnt.index("lladdr") + 1] == bridge[2], (learnt, bridge)
        response = connection.getresponse()
        assert (response.status, response.getheader("X-Version")) == (200, "v2")
        connection.close()
    finally:
        ip("link", "del", link, check=False)


def test_traefik_splits_traffic_by_weight_between_two_deployments(
    api: ApiClient, namespace: str, traefik: Traefik
) -> None:
    for name, image in (("w-a", "demo:v1"), ("w-b", "demo:v2")):
        create_service(api, namespace, name, {"app": name})
        create_deployment(api, namespace, name, image, replicas=2)
    for name in ("w-a", "w-b"):
        wait_until(
            api,
            namespace,
            name,
            f"{name} ready",
            lambda n=name: len(ready_endpoints(api, namespace, n)) == 2,
        )

    custom = k8s.CustomObjectsApi(api)
    group, version = "traefik.io", "v1alpha1"

    def weighted(a: int, b: int) -> dict[str, Any]:
        return {
            "weighted": {
                "services": [
                    {"name": "w-a", "port": 80, "weight": a},
                    {"name": "w-b", "port": 80, "weight": b},
                ]
            }
        }

    custom.create_namespaced_custom_object(
        group, version, namespace, "traefikservices",
        {"apiVersion": f"{group}/{version}", "kind": "TraefikService",
         "metadata": {"name": "split"}, "spec": weighted(80, 20)},
    )  # fmt: skip
    host = f"{namespace}.test"
    custom.create_namespaced_custom_object(
        group, version, namespace, "ingressroutes",
        {"apiVersion": f"{group}/{version}", "kind": "IngressRoute", "metadata": {"name": "web"},
         "spec": {"entryPoints": ["web"], "routes": [{
             "match": f"Host(`{host}`)", "kind": "Rule",
             "services": [{"name": "split", "kind": "TraefikService"}]}]}},
    )  # fmt: skip

    with httpx.Client(
        base_url=traefik.web_url, headers={"Host": host}, timeout=5, trust_env=False
    ) as web:

        def versions(n: int) -> Counter[str]:
            """n requests in a row (each bounded by the client's timeout), counted by
            X-Version."""
            counts: Counter[str] = Counter()
            for _ in range(n):
                response = web.get("/")
                counts[response.headers.get("X-Version", str(response.status_code))] += 1
            return counts

        # What moves towards a live route: Traefik loading the namespace's routers and services.
        wait_for(
            "the route to be live",
            lambda: web.get("/").status_code == 200,
            lambda: traefik_loaded(traefik, namespace),
        )
        started = time.monotonic()
        counts = versions(2000)
        elapsed = time.monotonic() - started
        print(f"2000 requests through Traefik in {elapsed:.2f}s: {dict(counts)}")
        assert counts["v1"] + counts["v2"] == 2000, counts
        assert abs(counts["v1"] / 2000 - 0.80) <= 0.05, counts

        custom.patch_namespaced_custom_object(
            group, version, namespace, "traefikservices", "split", {"spec": weighted(0, 100)}
        )
        # Traefik applies the change after its provider throttle: poll while what it has
        # loaded (the split's weights) changes; not the answers, which vary at 80/20 forever.
        changed = time.monotonic()
        wait_for(
            "all traffic on v2",
            lambda: versions(20) == Counter({"v2": 20}),
            lambda: traefik_loaded(traefik, namespace),
            every=0.2,
        )
        print(f"weights 0/100 live after {time.monotonic() - changed:.2f}s")
        counts = versions(500)
        assert counts == Counter({"v2": 500}), counts
