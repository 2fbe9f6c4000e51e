"""CPU and memory of canary Pods against stable ones on Kubernetes (analysis.maxCpuIncrease,
maxMemoryIncrease): the process kubelet measures each Pod's processes, metrics-server serves
them as metrics.k8s.io, and the operator's analysis compares the two versions under real load
through Traefik. The demo images' -memN hold N resident MiB, -cpuN burn about N% of one core
(hack/demo-app)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from hack.tools.load import Load, failed
from tests.support.cluster import Traefik
from tests.support.metrics_server_fixtures import MetricsServer
from tests.support.rollouts import Lockgate, application, deployment, host_of, wait_for

pytestmark = pytest.mark.integration

ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}
# One canary Pod beside three stable ones. metrics-server measures a new Pod from its second
# scrape (10 s apart), so the first step's analysis is Inconclusive for a while: the deadline
# leaves room for that.
CANARY = {"type": "Canary", "canary": {"steps": [25, 100]}}
# A step under analysis waits for a passed window however short its pause: a canary that
# passes needs no minute-long pause to show it (a failing one keeps the minute, its time to
# fail after an early pass).
PASSING_CANARY = {"type": "Canary", "canary": {"steps": [25, 100], "stepSeconds": 5}}
DEADLINE_S = 240
MiB = 2**20


def resource_rollout(
    lg: Lockgate,
    traefik: Traefik,
    stable: str,
    canary: str,
    strategy: dict[str, Any] = CANARY,
    **gates: str,
) -> Any:
    """`stable` on three Pods, then a canary of `canary` judged on `gates` under load; the
    canary's final status and the load's responses."""
    lg.create(application("shop", 3, namespace=lg.namespace))
    lg.create(deployment("shop-v1", "shop", stable))
    first = lg.wait_finished("shop-v1")
    assert first["phase"] == "Succeeded", first.get("message")
    with Load(traefik.web_url, host_of("shop", lg.namespace)) as load:
        load.wait_answered(20)
        lg.create(
            deployment(
                "shop-v2",
                "shop",
                canary,
                strategy,
                analysis={**ANALYSIS, **gates},
                progressDeadlineSeconds=DEADLINE_S,
            )
        )
        status = lg.wait_finished("shop-v2")
    return status, load.stop()


SHOP_PODS = "lockgate.dev/application=shop"


def only_image_left(lg: Lockgate, image: str) -> None:
    def alone() -> bool:
        pods = lg.pods(SHOP_PODS)
        return bool(pods) and all(p.spec.containers[0].image == image for p in pods)

    wait_for(f"only {image} Pods left", alone, lambda: lg.pod_versions(SHOP_PODS))


def test_canary_pod_using_twice_the_memory_is_rolled_back_naming_memory(
    lockgate: Lockgate, traefik: Traefik, metrics_server: MetricsServer
) -> None:
    status, responses = resource_rollout(
        lockgate, traefik, "demo:v1-mem100", "demo:v2-mem200", maxMemoryIncrease="50%"
    )
    assert status["phase"] == "RolledBack", (status.get("message"), status["analysis"][-3:])
    assert re.search(
        r"canary memory \d+MiB is \d+% over stable's \d+MiB > maxMemoryIncrease", status["message"]
    ), status["message"]
    run = next(r for r in status["analysis"] if r["verdict"] == "Failed")
    assert run["canary"]["memory"] > 190 * MiB and 90 * MiB < run["stable"]["memory"] < 150 * MiB
    assert not failed(responses)
    only_image_left(lockgate, "demo:v1-mem100")


def test_canary_pod_burning_cpu_is_rolled_back_naming_cpu(
    lockgate: Lockgate, traefik: Traefik, metrics_server: MetricsServer
) -> None:
    status, responses = resource_rollout(
        lockgate, traefik, "demo:v1", "demo:v2-cpu60", maxCpuIncrease="50%"
    )
    assert status["phase"] == "RolledBack", (status.get("message"), status["analysis"][-3:])
    assert re.search(
        r"canary CPU [0-9.]+ cores is (\d+% )?over stable's [0-9.]+ cores > maxCpuIncrease",
        status["message"],
    ), status["message"]
    run = next(r for r in status["analysis"] if r["verdict"] == "Failed")
    assert run["canary"]["cpu"] > 0.1 > run["stable"]["cpu"]
    assert not failed(responses)
    only_image_left(lockgate, "demo:v1")


def test_canary_pod_using_what_stable_uses_passes_both_gates(
    lockgate: Lockgate, traefik: Traefik, metrics_server: MetricsServer
) -> None:
    status, responses = resource_rollout(
        lockgate,
        traefik,
        "demo:v1-mem100",
        "demo:v2-mem100",
        PASSING_CANARY,
        maxCpuIncrease="50%",
        maxMemoryIncrease="50%",
    )
    assert status["phase"] == "Succeeded", (status.get("message"), status["analysis"][-3:])
    passed = [r for r in status["analysis"] if r["verdict"] == "Passed"]
    assert passed, status["analysis"]
    for role in ("canary", "stable"):
        assert passed[-1][role]["memory"] > 90 * MiB and passed[-1][role]["cpu"] is not None
    assert not failed(responses)
    only_image_left(lockgate, "demo:v2-mem100")
