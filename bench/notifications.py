"""Notification latency: a stage transition -> its notification at a receiver (figures, never
asserted).

Needs hack/cluster, hack/traefik and hack/kubelet up. Runs the operator as a subprocess, as
the integration tests do, and a loopback HTTP receiver (tests/support/receiver.py) as the
Applications' `webhook` notification target. Each round rolls out `--parallel` Applications
at once (a canary of three steps, 1 s apart), so transitions of several rollouts are due
together. A notification's latency is from its transition's own timestamp (the `time` of the
body: when the operator decided it) to the receiver's arrival time; the first arrival of each
delivery id counts. Both clocks are this machine's.

Usage: python -m bench.notifications [--rounds 5] [--parallel 4]
"""

from __future__ import annotations

import argparse
import functools
import statistics
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from bench.k8s_rollouts import percentile
from tests.support.cluster import cluster_info, traefik_info
from tests.support.operator_fixtures import Operator, free_port, operator_env
from tests.support.receiver import Receiver
from tests.support.rollouts import Lockgate, application, deployment, wait_within

CANARY = {"type": "Canary", "canary": {"steps": [25, 50, 100], "stepSeconds": 1}}


def notified(lg: Lockgate, name: str) -> int | None:
    """How many notifications the Deployment owed, once it finished and each is delivered."""
    status = lg.status(name)
    if status.get("phase") not in ("Succeeded", "RolledBack", "Failed"):
        return None
    owed = {t["seq"] for t in status.get("transitions") or [] if t.get("event")}
    done = {r["transition"] for r in status.get("notifications") or [] if r.get("deliveredAt")}
    return len(owed) if owed <= done else None


def run(lg: Lockgate, receiver: Receiver, rounds: int, parallel: int) -> list[float]:
    apps = [f"app{i}" for i in range(parallel)]
    target = [{"name": "bench", "kind": "webhook", "url": f"{receiver.url}/notify"}]
    for app in apps:
        lg.create(application(app, 1, namespace=lg.namespace, notifications=target))
    owed = 0
    for r in range(rounds + 1):  # round 0 is the first version, no canary
        names = [f"{app}-r{r}" for app in apps]
        for app, name in zip(apps, names, strict=True):
            strategy = CANARY if r else None
            lg.create(deployment(name, app, f"demo:v{r + 1}", strategy))
        for name in names:
            owed += wait_within(
                f"{name} finished and notified", functools.partial(notified, lg, name)
            )
    first: dict[str, Any] = {}
    for got in receiver.snapshot():
        if got.answer == 200 and got.delivery not in first:
            first[got.delivery] = got
    assert len(first) == owed, f"{len(first)} notifications received for {owed} owed"
    return [got.at - datetime.fromisoformat(got.body["time"]).timestamp() for got in first.values()]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    cluster, traefik = cluster_info(), traefik_info()
    op = Operator(
        operator_env(cluster, traefik),
        Path(f"/tmp/lockgate-bench-{uuid.uuid4().hex[:6]}"),
        free_port(),
    )
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    op.start()
    try:
        with Receiver() as receiver:
            latency = run(Lockgate(api, namespace), receiver, args.rounds, args.parallel)
        print(
            f"notifications: transition -> receiver: p50 {statistics.median(latency) * 1000:.0f} ms,"
            f" p99 {percentile(latency, 0.99) * 1000:.0f} ms, max {max(latency) * 1000:.0f} ms"
            f" ({len(latency)} notifications, {args.parallel} rollouts at once)"
        )
    finally:
        op.stop()
        core.delete_namespace(namespace)


if __name__ == "__main__":
    main()
