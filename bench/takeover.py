"""Leader election takeover: how long after the leader is killed (kill -9) or stopped
(SIGTERM) a standby acts (figures, never asserted).

Needs hack/cluster, hack/traefik and hack/kubelet up (run it under the suite's lock:
`flock -o /tmp/lockgate-suite.lock .venv/bin/python -m bench.takeover`). Starts
`lockgate operator --leader-elect` processes on a namespace of its own (the Lease in it,
default timings: lease 15 s, renew deadline 10 s, retry period 2 s) and a canary paused
indefinitely, so that an operator that acts shows it: each run stops the leader, then puts
the action annotation `retry` on the rollout (meaningless while Paused: the acting operator
consumes it and removes it), and measures from the signal to

- the Lease acquired by the standby (its acquireTime, written by the API server's clock: the
  same machine's), and
- the annotation removed, seen by a watch: the new leader acting.

For kill -9 the annotation is set right after the kill; for SIGTERM right after the old
leader exited (so only the new one can consume it). Each run then starts a fresh standby for
the next.

Usage: python -m bench.takeover [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import signal
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from kubernetes import client

from bench import median_range
from lockgate.names import ACTION_ANNOTATION
from tests.support.cluster import cluster_info, traefik_info
from tests.support.leases import LeaseRecorder
from tests.support.operator_fixtures import Operator, free_port, operator_env
from tests.support.rollouts import Lockgate, application, deployment, wait_within

PAUSED = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]},
}


class Fleet:
    def __init__(self, namespace: str, logs: Path) -> None:
        self.env = operator_env(cluster_info(), traefik_info())
        self.namespace, self.logs, self.count = namespace, logs, 0
        self.all: list[Operator] = []

    def start(self) -> Operator:
        self.count += 1
        name = f"op-{self.count}"
        op = Operator(
            {**self.env, "POD_NAME": name, "LOCKGATE_METRICS_PORT": str(free_port())},
            self.logs / name,
            free_port(),
            scope=("--namespace", self.namespace),
            args=("--leader-elect",),
            die_with_parent=True,
        )
        self.all.append(op)
        op.start()
        return op

    @staticmethod
    def identity(op: Operator) -> str:
        found = re.search(rf"as ({op.env['POD_NAME']}_[0-9a-f]+)", op.log_text())
        return found.group(1) if found else ""

    def kill_all(self) -> None:
        for op in self.all:
            if op.process is not None and op.process.poll() is None:
                op.process.kill()
                op.process.wait(timeout=10)


def wait_consumed(lg: Lockgate, name: str, timeout: float = 120.0) -> float:
    """time.time() when a watch sees the action annotation gone."""
    lg.watch(
        name,
        "deployments",
        lambda obj: ACTION_ANNOTATION not in (obj["metadata"].get("annotations") or {}),
        "the action annotation to be consumed",
        timeout,
        describe=lambda obj: f"annotations {obj.get('metadata', {}).get('annotations')}",
    )
    return time.time()


def run(runs: int) -> None:
    cluster = cluster_info()
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    logs = Path(f"/tmp/lockgate-bench-takeover-{uuid.uuid4().hex[:6]}")
    logs.mkdir()
    fleet = Fleet(namespace, logs)
    lg = Lockgate(api, namespace)
    results: dict[str, list[tuple[float, float]]] = {"kill -9": [], "SIGTERM": []}
    try:
        with LeaseRecorder(api, namespace, "lockgate") as lease:
            leader = fleet.start()
            lease.wait_holder(lambda h: h.startswith("op-1_"), "op-1 to lead")
            lg.create(application("shop", 1, namespace=namespace))
            lg.create(deployment("shop-v1", "shop", "demo:v1"))
            lg.wait_phase("shop-v1", {"Succeeded"})
            lg.create(deployment("shop-v2", "shop", "demo:v2", PAUSED))
            lg.wait_phase("shop-v2", {"Paused"})
            standby = fleet.start()
            for how in ["kill -9"] * runs + ["SIGTERM"] * runs:
                old, new = fleet.identity(leader), ""
                wait_within(
                    "the standby to wait",
                    lambda s=standby, o=old: f"waiting for the leader {o}" in s.log_text(),
                    30,
                )
                new_name = standby.env["POD_NAME"]
                assert leader.process is not None
                sent = time.time()
                if how == "kill -9":
                    leader.process.send_signal(signal.SIGKILL)
                    leader.process.wait(timeout=10)
                else:
                    leader.process.send_signal(signal.SIGTERM)
                    leader.process.wait(timeout=30)
                lg.annotate("shop-v2", "retry")
                acted = wait_consumed(lg, "shop-v2")
                taken = lease.wait_holder(
                    lambda h, n=new_name: h.startswith(n + "_"), "the new holder", 30
                )
                new = taken.holder
                assert taken.acquired is not None
                acquired = taken.acquired.timestamp() - sent
                results[how].append((acquired, acted - sent))
                print(
                    f"{how:8} {old} -> {new}: Lease acquired after {acquired:6.2f}s, "
                    f"acting after {acted - sent:6.2f}s",
                    flush=True,
                )
                leader, standby = standby, fleet.start()
    finally:
        fleet.kill_all()
        core.delete_namespace(namespace)
    print(f"\n{runs} runs each, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, operator logs in {logs}")
    print(
        "| stop of the leader | Lease acquired (median, min-max) | new leader acting (median, min-max) |"
    )
    print("| --- | --- | --- |")
    for how, values in results.items():
        acquired = [a for a, _ in values]
        acting = [b for _, b in values]
        print(f"| {how} | {median_range(acquired)} | {median_range(acting)} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    run(parser.parse_args().runs)


if __name__ == "__main__":
    main()
