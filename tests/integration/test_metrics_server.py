"""Real per-Pod CPU and memory: the process kubelet measures each Pod's processes, metrics-server
scrapes it, the aggregation layer serves metrics.k8s.io, and lockgate's reader
(lockgate.probes.kube_resources.pod_usage) and `kubectl top pod` see a busy Pod use clearly more
CPU than an idle one."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from lockgate.kube import Kube
from lockgate.probes.kube_resources import PodUsage, pod_usage
from tests.support.cluster import Cluster
from tests.support.kubelet_fixtures import ProcessKubelet
from tests.support.metrics_server_fixtures import MetricsServer
from tests.support.rollouts import pod_versions, wait_for

pytestmark = pytest.mark.integration

PORT = 8080
# Busy: at least this many cores, and this many times the idle Pod's figure. The demo app
# serving a stream of requests uses tens of millicores; an idle one well under one.
BUSY_MIN_CORES = 0.02
BUSY_OVER_IDLE = 5.0


@pytest.fixture(scope="module")
def api(cluster: Cluster) -> Iterator[ApiClient]:
    with cluster.api_client() as api_client:
        yield api_client


@pytest.fixture
def namespace(pod_namespace: str) -> str:
    return pod_namespace


def create_demo_pod(api: ApiClient, namespace: str, name: str) -> None:
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "demo:v1",
                    "ports": [{"name": "http", "containerPort": PORT}],
                    "readinessProbe": {
                        "httpGet": {"path": "/health", "port": "http"},
                        "periodSeconds": 1,
                    },
                }
            ]
        },
    }
    k8s.CoreV1Api(api).create_namespaced_pod(namespace, body)


def ready_ip(api: ApiClient, namespace: str, name: str) -> str | None:
    try:
        pod = k8s.CoreV1Api(api).read_namespaced_pod(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    return pod.status.pod_ip if ready else None


class Load:
    """Requests to one Pod from a few threads, as fast as they go, until stopped: the demo app
    has no CPU burner, so the work it does is serving them."""

    def __init__(self, url: str, threads: int = 3) -> None:
        self.url = url
        self.stop = threading.Event()
        self.served = 0
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        with httpx.Client(trust_env=False, timeout=5.0) as http:
            while not self.stop.is_set():
                try:
                    if http.get(self.url).status_code == 200:
                        self.served += 1
                except httpx.HTTPError:
                    time.sleep(0.05)

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)


def test_busy_pod_uses_more_cpu_than_idle_one(
    api: ApiClient,
    cluster: Cluster,
    namespace: str,
    metrics_server: MetricsServer,
    kubelet: ProcessKubelet,
) -> None:
    create_demo_pod(api, namespace, "busy")
    create_demo_pod(api, namespace, "idle")
    busy_ip = wait_for(
        "pod busy Ready",
        lambda: ready_ip(api, namespace, "busy"),
        lambda: pod_versions(k8s.CoreV1Api(api), namespace),
    )
    wait_for(
        "pod idle Ready",
        lambda: ready_ip(api, namespace, "idle"),
        lambda: pod_versions(k8s.CoreV1Api(api), namespace),
    )
    kube = Kube(api)
    seen: dict[str, PodUsage] = {}

    def busy_clearly_busier() -> bool:
        nonlocal seen
        try:
            seen = asyncio.run(pod_usage(kube, namespace, ["busy", "idle"]))
        except ApiException as exc:  # 503 while metrics-server (re)starts
            print(f"metrics.k8s.io: {exc.status} {exc.reason}")
            return False
        if set(seen) != {"busy", "idle"}:
            return False
        busy, idle = seen["busy"], seen["idle"]
        return busy.cpu_cores >= max(BUSY_MIN_CORES, BUSY_OVER_IDLE * idle.cpu_cores)

    with Load(f"http://{busy_ip}:{PORT}/") as load:
        # What moves towards the answer: the Pods the metrics API reports on. metrics-server
        # needs two scrapes of a Pod (10 s apart at its shortest resolution), and the busy
        # Pod's window must then hold mostly load.
        try:
            wait_for("busy clearly busier", busy_clearly_busier, lambda: sorted(seen), every=1.0)
        except AssertionError as err:
            pytest.fail(
                f"{err}; {load.served} requests served by busy, the metrics API says {seen}; "
                f"expected busy >= max({BUSY_MIN_CORES}, {BUSY_OVER_IDLE} x idle) cores."
                f"\nmetrics-server log:\n{metrics_server.log_tail(15)}",
                pytrace=False,
            )
        print(f"{load.served} requests served; usage: {seen}")
        assert seen["busy"].memory_bytes > 0
        assert seen["idle"].memory_bytes > 0

        # The same through kubectl: `kubectl top pod` reads metrics.k8s.io too.
        top = cluster.kubectl("top", "pod", "-n", namespace, "--no-headers")
    assert top.returncode == 0, top.stderr
    rows = {line.split()[0]: line.split()[1:] for line in top.stdout.splitlines() if line.strip()}
    assert set(rows) == {"busy", "idle"}, top.stdout
    print(top.stdout)
