"""Benchmarks of the Docker-hosts target driven by the operator (figures, never asserted).

Needs hack/cluster, hack/traefik and hack/dockerhosts up. Runs the operator as a subprocess,
as the integration tests do, against the three local hosts (unix, tcp+TLS, ssh), and
measures:
  rollback  the failing analysis verdict (its round's own timestamp) -> Traefik serving 100%
            stable, read from
            Traefik's API (bounded below by the file provider noticing the rewrite and by
            Traefik's default 2 s providersThrottleDuration, which the local Traefik keeps)
  rolling   a Rolling update one host at a time over the three hosts, applied -> Succeeded,
            under load (failed requests counted), to set beside Docker Swarm's start-first
            update (python -m bench.docker_swarm); also the engine's own startedAt ->
            finishedAt, and where that time went: each step's seconds from the status log
            ("step i/n done" entries), summed per kind over the three batches (start: the
            new container up and passing its check, still out of Traefik; shift: one write
            of the route, the new container in, the old one out, the new split, live in
            Traefik; drain: what is left of drainSeconds since Traefik dropped the old
            container, SIGTERM; promote)
Usage: python -m bench.docker_rollouts [--runs 5]
"""

from __future__ import annotations

import argparse
import re
import time
import uuid
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from bench import median_range
from bench.rollback import seconds_to_stable
from hack.tools.load import Load, failed
from tests.support.cluster import cluster_info, traefik_info
from tests.support.docker_apps import create_secrets, delete_application, docker_application
from tests.support.dockerhosts import load_hosts
from tests.support.operator_fixtures import Operator, free_port, operator_env
from tests.support.rollouts import Lockgate, deployment, host_of


def spread(values: list[float]) -> str:
    return f"median {median_range(values)}, {len(values)} runs"


STEP_DONE = re.compile(r"^step \d+/\d+ done: (?:batch \d+/\d+: )?(\w+)")


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def step_seconds(status: dict[str, Any]) -> dict[str, float]:
    """Seconds per step kind (start, shift, drain, promote), summed over the batches, from
    the status log: each "step i/n done" entry ends the step that began at the one before
    (the first at startedAt)."""
    out: dict[str, float] = defaultdict(float)
    began = _at(status["startedAt"])
    for entry in status.get("log") or []:
        match = STEP_DONE.match(str(entry.get("message", "")))
        if not match:
            continue
        at = _at(entry["at"])
        out[match.group(1)] += (at - began).total_seconds()
        began = at
    return dict(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cluster, traefik = cluster_info(), traefik_info()
    hosts = {h.name: h for h in load_hosts()}
    env = operator_env(cluster, traefik)
    # Killed by the kernel if this process dies: a bench never leaves an operator behind.
    op = Operator(
        env, Path(f"/tmp/lockgate-bench-{uuid.uuid4().hex[:6]}"), free_port(), die_with_parent=True
    )
    op.start()
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    lg = Lockgate(api, namespace)
    app = f"bench-{namespace[-6:]}"
    try:
        create_secrets(lg, hosts)
        lg.create(docker_application(lg, app, hosts, traefik))
        lg.create(deployment(f"{app}-v1", app, "demo:v1"))
        lg.wait_phase(f"{app}-v1", {"Succeeded"})
        rollbacks: list[float] = []
        rolling: list[float] = []
        engine: list[float] = []
        steps: dict[str, list[float]] = defaultdict(list)
        failures: list[str] = []
        with Load(traefik.web_url, host_of(app, namespace), threads=2) as load:
            for i in range(args.runs):
                rollbacks.append(
                    seconds_to_stable(
                        lg, f"{app}-bad{i}", app, {"canaryHosts": 1}, traefik.api_url, f"{app}@file"
                    )
                )
            for i in range(args.runs):
                name = f"{app}-r{i}"
                image = "demo:v2" if i % 2 == 0 else "demo:v1"
                before = len(load.responses)
                start = time.monotonic()
                lg.create(
                    deployment(name, app, image, {"type": "Rolling", "rolling": {"batchSize": 1}})
                )
                status = lg.wait_finished(name)
                rolling.append(time.monotonic() - start)
                if status["phase"] != "Succeeded":
                    failures.append(f"{name}: {status.get('message')}")
                else:
                    engine.append(
                        (_at(status["finishedAt"]) - _at(status["startedAt"])).total_seconds()
                    )
                    for kind, seconds in step_seconds(status).items():
                        steps[kind].append(seconds)
                bad = failed(load.responses[before:])
                failures += [f"{name}: request failed ({r.status})" for r in bad]
        print(f"rollback: Failed verdict -> 100% stable in Traefik: {spread(rollbacks)}")
        print(f"rolling: 3 hosts one at a time, drainSeconds 1: {spread(rolling)}")
        if engine:
            print(f"  startedAt -> finishedAt (the engine's clock): {spread(engine)}")
            for kind, values in steps.items():
                print(f"  {kind:<8} steps, summed over the batches: {spread(values)}")
        print(f"requests under load: {len(load.responses)}, problems: {len(failures)}")
        for problem in failures[:10]:
            print("  ", problem)
    finally:
        delete_application(lg, app)
        op.stop()
        core.delete_namespace(namespace)


if __name__ == "__main__":
    main()
