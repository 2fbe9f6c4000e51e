"""The live part of `hack/demo`: deploy v1, start load, roll out the canary, and print one
line per second with phase, step, weights and the versions that answered."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client, config

from hack.tools.load import Load, by_version, failed
from lockgate.names import GROUP, LABEL_SHARD, VERSION

TERMINAL = {"Succeeded", "RolledBack", "Failed", "Aborted"}
PLURALS = {"Application": "applications", "Deployment": "deployments"}


class Lockgate:
    """lockgate objects in the demo's namespace, with the kubeconfig `hack/cluster env` set."""

    def __init__(self, namespace: str) -> None:
        config.load_kube_config()
        self.custom = client.CustomObjectsApi()
        self.namespace = namespace

    def create(self, body: dict[str, Any]) -> None:
        self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURALS[body["kind"]], body
        )

    def status(self, name: str) -> dict[str, Any]:
        obj = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "deployments", name
        )
        status: dict[str, Any] = obj.get("status") or {}
        return status


def watch(lg: Lockgate, name: str, load: Load | None, limit: float = 900.0) -> dict[str, Any]:
    seen = 0
    deadline = time.monotonic() + limit
    status: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = lg.status(name)
        weights = status.get("weights") or {}
        step = status.get("step") or {}
        versions = ""
        if load is not None:
            recent = load.responses[seen:]
            seen += len(recent)
            counts = by_version(recent)
            versions = "  ".join(f"{v}: {n:4d}" for v, n in sorted(counts.items()))
        position = f"{step.get('index', 0) + 1}/{step.get('total', '?')}"
        print(
            f"{status.get('phase', '-'):12} step {position:<5}"
            f" {step.get('description', '')[:34]:34} stable {weights.get('stable', '-'):>3}%"
            f" canary {weights.get('canary', '-'):>3}%   answered/s: {versions}",
            flush=True,
        )
        if status.get("phase") in TERMINAL:
            return status
        time.sleep(1)
    return status


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--web", required=True)
    parser.add_argument("--application", type=Path, required=True)
    parser.add_argument("--canary", type=Path, required=True)
    parser.add_argument("--shard", required=True, help="the demo operator's shard")
    args = parser.parse_args()
    lg = Lockgate(args.namespace)
    app = yaml.safe_load(args.application.read_text())
    app["metadata"].setdefault("labels", {})[LABEL_SHARD] = args.shard
    canary = yaml.safe_load(args.canary.read_text())
    host = app["spec"]["traffic"]["traefik"]["route"]["match"].split("`")[1]
    lg.create(app)
    first = {
        **canary,
        "metadata": {"name": "shop-v1"},
        "spec": {"application": app["metadata"]["name"], "image": "demo:v1"},
    }
    lg.create(first)
    print(
        f"$ kubectl apply -f {args.application} (labelled {LABEL_SHARD}={args.shard}, the demo"
        " operator's shard; and an initial Deployment of demo:v1)"
    )
    watch(lg, "shop-v1", None)
    print(f"\n$ kubectl apply -f {args.canary}   # demo:v2, under load through Traefik ({host})")
    with Load(args.web, host, threads=2) as load:
        load.wait_answered(20)
        lg.create(canary)
        status = watch(lg, canary["metadata"]["name"], load)
    responses = load.stop()
    print(f"\n{status.get('phase')}: {status.get('message')}")
    print(f"{len(responses)} requests through Traefik, {len(failed(responses))} failed.")
    print(f"See it yourself: kubectl -n {args.namespace} get lgd,lga   |   hack/demo down to stop.")
    if status.get("phase") != "Succeeded" or failed(responses):
        sys.exit(1)  # the demo shows what lockgate promises: anything else is a failure


if __name__ == "__main__":
    main()
