"""A "simulated Pods" kubelet for scale runs: one Node whose Pods are marked Running and
Ready with an address at once, without starting any process.

The process kubelet (hack/tools/kubelet.py) runs each Pod as a process in its own network
namespace: real, but a thread, a process and a veth pair per Pod, and a /24 of addresses per
Node, so a few hundred Pods at most on 2 cores. Scale runs need thousands of Pods whose only
job is to exist: the ReplicaSet, EndpointSlice and scheduler controllers act on them as on
real ones, and Traefik loads their Services' endpoints (so lockgate's weights are still
confirmed through Traefik's API), but nothing ever connects to them (analysis reads a
deterministic PromQL source instead of traffic).

- the Node (`--node`, default lg-sim-1) is labelled `lockgate.dev/simulated=true` and tainted
  `lockgate.dev/simulated=true:NoSchedule`: only Pods that tolerate the taint (and select the
  label) land on it, so the test suite's Pods never do;
- each Pod bound to it gets, in one status patch, phase Running, Ready, and an address from
  `--pod-cidr` (default 10.246.0.0/16: 65,534 addresses). The addresses route nowhere: a
  blackhole route for the range keeps any packet to them on this machine;
- a Pod being deleted is removed at once (grace 0): no process to drain;
- the Node's Lease and status heartbeats are the process kubelet's (shared code).

    python -m hack.tools.simkubelet --kubeconfig KUBECONFIG [--node NAME] [--pod-cidr CIDR]

hack/simnodes starts and stops it in the background (never part of the test suite).
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from hack.tools.kubelet import (
    Api,
    ApiError,
    Kubelet,
    ip,
    rfc3339,
    run_until_signalled,
)

log = logging.getLogger("simkubelet")
JSON = dict[str, Any]
DEFAULT_POD_CIDR = "10.246.0.0/16"
LABEL = "lockgate.dev/simulated"
MAX_PODS = 10000
PATCH_WORKERS = 4


class SimNetwork:
    """Addresses for simulated Pods: allocated from the range, never configured anywhere."""

    def __init__(self, pod_cidr: ipaddress.IPv4Network) -> None:
        self.pod_cidr = pod_cidr
        self._free = iter(pod_cidr.hosts())
        self._released: list[str] = []
        self._lock = threading.Lock()

    def setup(self) -> None:
        # Nothing listens there: a packet sent to one (a stray request through Traefik) is
        # dropped here instead of following the default route off the machine.
        if os.geteuid() == 0:
            ip("route", "replace", "blackhole", str(self.pod_cidr), check=False)

    def teardown(self) -> None:
        if os.geteuid() == 0:
            ip("route", "del", "blackhole", str(self.pod_cidr), check=False)

    def allocate(self) -> str:
        with self._lock:
            if self._released:
                return self._released.pop()
            return str(next(self._free))

    def release(self, address: str) -> None:
        with self._lock:
            self._released.append(address)


class SimulatedKubelet(Kubelet):
    """The process kubelet's Node, Lease and heartbeat; Pods only in their status."""

    def __init__(self, api: Api, node: str, pod_cidr: str) -> None:
        # Not Kubelet.__init__: no demo app, no bridge, no probes, no metrics endpoint.
        self.api = api
        self.node = node
        self.max_pods = MAX_PODS
        self.metrics_port = 0
        self.network = SimNetwork(ipaddress.IPv4Network(pod_cidr))  # type: ignore[assignment]
        self.host_ip = self.sim.allocate()  # the range's first address stands for the Node
        self.node_uid = ""
        self._node_since = rfc3339()
        self.stop = threading.Event()
        self.synced = threading.Event()
        self._lock = threading.Lock()
        self.addresses: dict[str, str] = {}  # pod uid -> its address
        self.deleting: set[str] = set()
        self.pool = ThreadPoolExecutor(PATCH_WORKERS, thread_name_prefix="patch")

    @property
    def sim(self) -> SimNetwork:
        network: SimNetwork = self.network  # type: ignore[assignment]
        return network

    def mark(self) -> None:
        """Label and taint the Node: only Pods that ask for it run here."""
        self.api.request(
            "PATCH",
            f"/api/v1/nodes/{self.node}",
            body={
                "metadata": {"labels": {LABEL: "true"}},
                "spec": {"taints": [{"key": LABEL, "value": "true", "effect": "NoSchedule"}]},
            },
            content_type="application/merge-patch+json",
        )

    def handle(self, kind: str, pod: JSON) -> None:
        meta = pod["metadata"]
        uid = meta["uid"]
        if kind == "DELETED":
            with self._lock:
                address = self.addresses.pop(uid, None)
                self.deleting.discard(uid)
            if address is not None:
                self.sim.release(address)
            return
        if meta.get("deletionTimestamp"):
            with self._lock:
                if uid in self.deleting:
                    return
                self.deleting.add(uid)
            self.pool.submit(self._delete, pod)
            return
        with self._lock:
            if uid in self.addresses:
                return
            address = (pod.get("status") or {}).get("podIP") or self.sim.allocate()
            self.addresses[uid] = address
        self.pool.submit(self._run, pod, address)

    def _status(self, pod: JSON, address: str) -> JSON:
        now = rfc3339()
        container = pod["spec"]["containers"][0]
        return {
            "phase": "Running",
            "hostIP": self.host_ip,
            "hostIPs": [{"ip": self.host_ip}],
            "podIP": address,
            "podIPs": [{"ip": address}],
            "startTime": now,
            "conditions": [
                {"type": kind, "status": "True", "lastProbeTime": None, "lastTransitionTime": now}
                for kind in ("PodReadyToStartContainers", "Initialized", "ContainersReady", "Ready")
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "containerID": f"sim://{pod['metadata']['uid']}",
                    "ready": True,
                    "started": True,
                    "restartCount": 0,
                    "state": {"running": {"startedAt": now}},
                }
            ],
        }

    def _run(self, pod: JSON, address: str) -> None:
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"
        body = {"metadata": {"uid": meta["uid"]}, "status": self._status(pod, address)}
        try:
            self.api.patch_status(path, body)
        except (ApiError, httpx.HTTPError) as exc:
            log.warning("%s/%s: status patch failed: %s", meta["namespace"], meta["name"], exc)
            with self._lock:
                self.addresses.pop(meta["uid"], None)  # the next event of it retries

    def _delete(self, pod: JSON) -> None:
        meta = pod["metadata"]
        try:
            self.api.request(
                "DELETE",
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": meta["uid"]}},
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("%s/%s: delete failed: %s", meta["namespace"], meta["name"], exc)
                with self._lock:
                    self.deleting.discard(meta["uid"])
        except httpx.HTTPError as exc:
            log.warning("%s/%s: delete failed: %s", meta["namespace"], meta["name"], exc)
            with self._lock:
                self.deleting.discard(meta["uid"])

    def _resync(self, pods: list[JSON]) -> None:
        for pod in pods:
            self.handle("ADDED", pod)

    def run(self, ready_file: Path | None) -> None:
        self.sim.setup()
        self.register()
        self.mark()
        self.serve_node(ready_file)
        log.info("simulated node %s ready: pod addresses from %s", self.node, self.sim.pod_cidr)
        self.stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        log.info(
            "shutting down (%d simulated pods stay, as a stopped kubelet's)", len(self.addresses)
        )
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.sim.teardown()
        self.api.close()
        log.info("stopped at %s", datetime.now(UTC).isoformat())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.tools.simkubelet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node", default="lg-sim-1")
    parser.add_argument("--pod-cidr", default=DEFAULT_POD_CIDR)
    parser.add_argument("--ready-file", type=Path, help="written with our PID once serving")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    kubelet = SimulatedKubelet(Api(args.kubeconfig), args.node, args.pod_cidr)

    # The failure path tears down self.network: our SimNetwork (its blackhole route).
    return run_until_signalled(kubelet, args.ready_file, "simulated kubelet")


if __name__ == "__main__":
    sys.exit(main())
