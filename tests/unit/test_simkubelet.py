"""The simulated-Pods kubelet of scale runs (hack/tools/simkubelet.py) against a fake API:
a Pod bound to it becomes Running and Ready with an address of its range in one status
patch, a Pod being deleted goes at once, and an address is used again once its Pod is gone."""

from __future__ import annotations

import ipaddress
from typing import Any

from hack.tools.simkubelet import SimulatedKubelet


class FakeApi:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    def patch_status(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("PATCH", path, body))
        return body

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        self.calls.append((method, path, kwargs.get("body")))
        return {}

    def close(self) -> None:
        pass


def pod(name: str, **meta: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", **meta},
        "spec": {"nodeName": "lg-sim-1", "containers": [{"name": "app", "image": "demo:v1"}]},
        "status": {"phase": "Pending"},
    }


def settle(kubelet: SimulatedKubelet) -> None:
    kubelet.pool.shutdown(wait=True)


def test_a_bound_pod_is_ready_with_an_address_of_the_range_in_one_patch() -> None:
    api = FakeApi()
    kubelet = SimulatedKubelet(api, "lg-sim-1", "10.246.0.0/16")  # type: ignore[arg-type]
    kubelet.handle("ADDED", pod("web-1"))
    kubelet.handle("MODIFIED", pod("web-1"))  # our own patch coming back: nothing more
    settle(kubelet)
    assert len(api.calls) == 1
    method, path, body = api.calls[0]
    assert (method, path) == ("PATCH", "/api/v1/namespaces/ns/pods/web-1/status")
    status = body["status"]
    assert status["phase"] == "Running"
    assert {c["type"]: c["status"] for c in status["conditions"]}["Ready"] == "True"
    assert ipaddress.ip_address(status["podIP"]) in ipaddress.ip_network("10.246.0.0/16")
    assert status["podIP"] != kubelet.host_ip
    assert body["metadata"]["uid"] == "uid-web-1"  # a precondition: never another Pod's


def test_a_deleted_pod_goes_at_once_and_its_address_is_used_again() -> None:
    api = FakeApi()
    kubelet = SimulatedKubelet(api, "lg-sim-1", "10.246.0.0/16")  # type: ignore[arg-type]
    kubelet.handle("ADDED", pod("web-1"))
    deleting = pod("web-1", deletionTimestamp="2026-01-01T00:00:00Z")
    kubelet.handle("MODIFIED", deleting)
    kubelet.handle("MODIFIED", deleting)  # once
    settle(kubelet)
    deletes = [c for c in api.calls if c[0] == "DELETE"]
    assert deletes == [
        (
            "DELETE",
            "/api/v1/namespaces/ns/pods/web-1",
            {"gracePeriodSeconds": 0, "preconditions": {"uid": "uid-web-1"}},
        )
    ]
    first = api.calls[0][2]["status"]["podIP"]
    kubelet.handle("DELETED", deleting)
    assert kubelet.sim.allocate() == first
