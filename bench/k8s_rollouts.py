"""Benchmarks of the Kubernetes target on the local environment (figures, never asserted).

Needs hack/cluster, hack/traefik and hack/kubelet up. Runs the operator as a subprocess, as
the integration tests do, and measures:
  reaction  new Deployment applied -> canary slot created (the operator's reaction), and
            canary Pod Ready -> canary weight live in Traefik (readiness to traffic)
  rollback  the failing analysis verdict (its round's own timestamp) -> Traefik serving 100%
            stable (includes the decision, the weight write and Traefik's reload)
  overhead  a 5-step canary with zero pauses: time per step beyond instance start-up
  load      operator RSS and CPU with N rollouts in flight (paused, analysis running)
Usage: python -m bench.k8s_rollouts [--runs 20] [--in-flight 100]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
import uuid
from datetime import datetime
from typing import Any

from kubernetes import client

from bench.operator import exits_cleanly, running_operator
from bench.rollback import live_canary_weight, seconds_to_stable
from hack.tools.load import Load
from tests.support.cluster import cluster_info, traefik_info
from tests.support.operator_fixtures import Operator, operator_env
from tests.support.rollouts import Lockgate, application, deployment, host_of, wait_within


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def reaction(lg: Lockgate, api_url: str, runs: int) -> tuple[list[float], list[float]]:
    apps = client.AppsV1Api(lg.api)
    core = client.CoreV1Api(lg.api)
    lg.create(application("shop", 1, namespace=lg.namespace))
    lg.create(deployment("shop-r0", "shop", "demo:v1"))
    lg.wait_phase("shop-r0", {"Succeeded"})
    to_action: list[float] = []
    to_weight: list[float] = []
    service = f"{lg.namespace}-shop@kubernetescrd"
    for i in range(1, runs + 1):
        steps = {
            "type": "Canary",
            "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]},
        }
        name = f"shop-r{i}"
        before = {
            d.metadata.name: d.metadata.resource_version
            for d in apps.list_namespaced_deployment(lg.namespace).items
        }
        start = time.monotonic()
        lg.create(deployment(name, "shop", f"demo:v{2 + i % 2}", steps))

        def slot_changed(before: dict[str, str] = before) -> bool:
            items = apps.list_namespaced_deployment(lg.namespace).items
            return any(
                before.get(d.metadata.name) != d.metadata.resource_version and d.spec.replicas
                for d in items
            )

        wait_within("the canary slot", slot_changed, timeout=60, every=0.005)
        to_action.append(time.monotonic() - start)
        wait_within(
            "canary weight live",
            lambda: (live_canary_weight(api_url, service) or 0) > 0,
            timeout=60,
            every=0.01,
        )
        seen = datetime.now().astimezone()
        pods = [p for p in core.list_namespaced_pod(lg.namespace).items if p.status.conditions]
        ready_at = max(
            c.last_transition_time
            for p in pods
            for c in p.status.conditions
            if c.type == "Ready" and c.status == "True"
        )
        to_weight.append((seen - ready_at).total_seconds())
        lg.annotate(name, "promote")
        lg.wait_phase(name, {"Succeeded"})
    return to_action, to_weight


def rollback(lg: Lockgate, api_url: str, web_url: str, runs: int) -> list[float]:
    lg.create(application("bad", 1, namespace=lg.namespace))
    lg.create(deployment("bad-v1", "bad", "demo:v1"))
    lg.wait_phase("bad-v1", {"Succeeded"})
    service = f"{lg.namespace}-bad@kubernetescrd"
    out: list[float] = []
    with Load(web_url, host_of("bad", lg.namespace), threads=2):
        for i in range(runs):
            out.append(seconds_to_stable(lg, f"bad-{i}", "bad", {}, api_url, service))
    return out


def overhead(lg: Lockgate) -> float:
    lg.create(application("fast", 1, namespace=lg.namespace))
    lg.create(deployment("fast-v1", "fast", "demo:v1"))
    lg.wait_phase("fast-v1", {"Succeeded"})
    steps = {"type": "Canary", "canary": {"steps": [20, 40, 60, 80, 100], "stepSeconds": 0}}
    lg.create(deployment("fast-v2", "fast", "demo:v2", steps))
    status = lg.wait_phase("fast-v2", {"Succeeded"})
    total = (
        datetime.fromisoformat(status["finishedAt"]) - datetime.fromisoformat(status["startedAt"])
    ).total_seconds()
    starts = [e for e in status["log"] if "done: start" in e["message"]]
    # The first step waits for the canary Pod to start; every later step is pure overhead.
    first_done = (
        datetime.fromisoformat(starts[0]["at"])
        if starts
        else datetime.fromisoformat(status["startedAt"])
    )
    rest = (datetime.fromisoformat(status["finishedAt"]) - first_done).total_seconds()
    steps_after = status["step"]["total"] - 1
    print(
        f"  5-step canary: {total:.2f}s total, {rest:.2f}s after the canary Pod was ready "
        f"for {steps_after} steps"
    )
    return rest / steps_after


def in_flight(lg: Lockgate, operator: Operator, count: int) -> tuple[float, float]:
    for i in range(count):
        lg.create(application(f"app{i}", 1, namespace=lg.namespace))
        lg.create(deployment(f"app{i}-v1", f"app{i}", "demo:v1"))
    wait_within(
        "all initial rollouts",
        lambda: all(lg.phase(f"app{i}-v1") == "Succeeded" for i in range(count)),
        timeout=900,
        every=2,
    )
    steps = {
        "type": "Canary",
        "canary": {"steps": [{"setWeight": 10}, {"pause": {}}, {"setWeight": 100}]},
    }
    for i in range(count):
        lg.create(
            deployment(
                f"app{i}-v2",
                f"app{i}",
                "demo:v2",
                steps,
                analysis={"intervalSeconds": 10, "minRequests": 1},
            )
        )
    wait_within(
        "all paused",
        lambda: all(lg.phase(f"app{i}-v2") == "Paused" for i in range(count)),
        timeout=900,
        every=2,
    )
    assert operator.process is not None
    pid = operator.process.pid
    ticks = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / ticks

    before, t0 = cpu(), time.monotonic()
    time.sleep(60)
    share = (cpu() - before) / (time.monotonic() - t0)
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
    return rss, share


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--in-flight", type=int, default=100)
    parser.add_argument("--only", default="reaction,rollback,overhead,load")
    args = parser.parse_args()
    cluster, traefik = cluster_info(), traefik_info()
    env = operator_env(cluster, traefik)
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    only = set(args.only.split(","))
    # Every namespace exists before the operator starts, which acts on these alone; it dies
    # with this process however that ends (it used to start before the `try`, acting on every
    # namespace, and outlived a crashed or killed run).
    namespaces = [f"bench-{uuid.uuid4().hex[:6]}" for _ in range(4)]
    with exits_cleanly():
        try:
            for name in namespaces:
                core.create_namespace({"metadata": {"name": name}})
            with running_operator(env, *namespaces) as op:
                run(args, op, [Lockgate(api, name) for name in namespaces], traefik, only)
        finally:
            for name in namespaces:
                with contextlib.suppress(client.ApiException):
                    core.delete_namespace(name)


def run(
    args: argparse.Namespace, op: Operator, spaces: list[Lockgate], traefik: Any, only: set[str]
) -> None:
    fresh = iter(spaces).__next__
    if "reaction" in only:
        action, weight = reaction(fresh(), traefik.api_url, args.runs)
        print(
            f"reaction: apply -> canary slot: p50 {statistics.median(action) * 1000:.0f} ms, "
            f"p99 {percentile(action, 0.99) * 1000:.0f} ms ({len(action)} runs)"
        )
        print(
            f"reaction: canary Pod Ready -> weight live in Traefik: p50 {statistics.median(weight) * 1000:.0f} ms, "
            f"p99 {percentile(weight, 0.99) * 1000:.0f} ms (Pod Ready times have 1 s resolution)"
        )
    if "rollback" in only:
        rb = rollback(fresh(), traefik.api_url, traefik.web_url, max(3, args.runs // 4))
        print(
            f"rollback: Failed verdict -> 100% stable in Traefik: median {statistics.median(rb) * 1000:.0f} ms, "
            f"max {max(rb) * 1000:.0f} ms ({len(rb)} runs)"
        )
    if "overhead" in only:
        per_step = overhead(fresh())
        print(f"overhead: {per_step * 1000:.0f} ms per step with zero pauses")
    if "load" in only:
        rss, share = in_flight(fresh(), op, args.in_flight)
        print(
            f"load: {args.in_flight} rollouts in flight: operator RSS {rss:.0f} MiB, CPU {share:.1%} of a core"
        )


if __name__ == "__main__":
    main()
