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
            update (python -m bench.docker_swarm)
Usage: python -m bench.docker_rollouts [--runs 5]
"""

from __future__ import annotations

import argparse
import time
import uuid
from pathlib import Path

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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    cluster, traefik = cluster_info(), traefik_info()
    hosts = {h.name: h for h in load_hosts()}
    env = operator_env(cluster, traefik)
    op = Operator(env, Path(f"/tmp/lockgate-bench-{uuid.uuid4().hex[:6]}"), free_port())
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
                status = lg.wait_finished(name, timeout=300)
                rolling.append(time.monotonic() - start)
                if status["phase"] != "Succeeded":
                    failures.append(f"{name}: {status.get('message')}")
                bad = failed(load.responses[before:])
                failures += [f"{name}: request failed ({r.status})" for r in bad]
        print(f"rollback: Failed verdict -> 100% stable in Traefik: {spread(rollbacks)}")
        print(f"rolling: 3 hosts one at a time, drainSeconds 1: {spread(rolling)}")
        print(f"requests under load: {len(load.responses)}, problems: {len(failures)}")
        for problem in failures[:10]:
            print("  ", problem)
    finally:
        delete_application(lg, app)
        op.stop()
        core.delete_namespace(namespace)


if __name__ == "__main__":
    main()
