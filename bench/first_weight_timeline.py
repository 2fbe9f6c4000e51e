"""Where the time goes between applying a canary and its first weight live in Traefik: one
canary into a never-used slot, then canaries each started as soon as the one before was
aborted (issue 14: 3.5 s into a fresh slot against 7.4 s after an abort, bench/peers.py).

Recorded on one clock (time.monotonic(), printed as seconds since the apply), each source
on its own thread: the namespace's Pods (created, Ready, terminating, gone) and the canary
Service's EndpointSlices (each endpoint's ready / serving / terminating) from watches; the
lockgate Deployment's status (phase, step, message) and the TraefikService lockgate writes
(the declared split) from watches; Traefik's API polled every 20 ms (the servers of
lockgate's probe services, the weighted service's canary share). A watch event's time is
its arrival here, a few milliseconds after the API server had it.

Needs hack/cluster, hack/traefik and hack/kubelet up; run it under the suite's lock:

    flock -o /tmp/lockgate-suite.lock python -m bench.first_weight_timeline --runs 3

Figures are per run: nothing here is asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
from kubernetes import client, watch

from bench.operator import exits_cleanly, running_operator
from bench.peers import LockgateTarget, wait_share
from lockgate.names import LABEL_RELEASE_HASH
from tests.support.cluster import cluster_info, traefik_info
from tests.support.operator_fixtures import operator_env

APP = "demo"


@dataclass
class Timeline:
    events: list[tuple[float, str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def add(self, source: str, text: str) -> None:
        at = time.monotonic()
        with self.lock:
            self.events.append((at, source, text))

    def between(self, start: float, end: float) -> list[tuple[float, str, str]]:
        with self.lock:
            return sorted(e for e in self.events if start <= e[0] <= end)


def watching(
    timeline: Timeline,
    source: str,
    lister: Callable[..., Any],
    describe: Callable[[str, Any], str | None],
    **kwargs: Any,
) -> None:
    """Watch events of `lister` until the timeline stops; `describe` says what changed (None:
    nothing worth a line)."""
    while not timeline.stop.is_set():
        stream = watch.Watch()
        try:
            for event in stream.stream(lister, timeout_seconds=5, **kwargs):
                text = describe(event["type"], event["object"])
                if text:
                    timeline.add(source, text)
                if timeline.stop.is_set():
                    break
        except Exception as err:  # a watch that broke starts again
            timeline.add(source, f"watch error: {err}")
            time.sleep(0.2)
        finally:
            stream.stop()


def pod_describer() -> Callable[[str, Any], str | None]:
    seen: dict[str, str] = {}

    def describe(kind: str, pod: Any) -> str | None:
        meta, status = pod.metadata, pod.status
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or [])
        state = (
            f"{kind.lower()} phase={status.phase} ready={ready} ip={status.pod_ip} "
            f"hash={(meta.labels or {}).get(LABEL_RELEASE_HASH)} "
            f"{'TERMINATING' if meta.deletion_timestamp else ''}"
        )
        if kind != "DELETED" and seen.get(meta.name) == state:
            return None
        seen[meta.name] = state
        return f"{meta.name}: {state}"

    return describe


def slice_describer(service: str) -> Callable[[str, Any], str | None]:
    seen: dict[str, str] = {}

    def describe(kind: str, eps: Any) -> str | None:
        if (eps.metadata.labels or {}).get("kubernetes.io/service-name") != service:
            return None
        parts = []
        for ep in eps.endpoints or []:
            c = ep.conditions or client.V1EndpointConditions()
            parts.append(f"{','.join(ep.addresses)}(r={c.ready},s={c.serving},t={c.terminating})")
        text = " ".join(sorted(parts)) or "(none)"
        if seen.get(eps.metadata.name) == text:
            return None
        seen[eps.metadata.name] = text
        return f"{service}: {text}"

    return describe


def status_describer(kind: str, obj: dict[str, Any]) -> str | None:
    status = obj.get("status") or {}
    step = status.get("step") or {}
    return (
        f"{obj['metadata']['name']} rv={obj['metadata'].get('resourceVersion')} "
        f"phase={status.get('phase')} step={step.get('index')} "
        f"weights={status.get('weights')} msg={status.get('message')!r}"
    )


def traefik_service_describer() -> Callable[[str, Any], str | None]:
    seen: dict[str, str] = {}

    def describe(kind: str, obj: dict[str, Any]) -> str | None:
        name = obj["metadata"]["name"]
        services = ((obj.get("spec") or {}).get("weighted") or {}).get("services") or []
        text = " ".join(f"{s['name']}={s.get('weight')}" for s in services)
        if name != APP or seen.get(name) == text:
            return None
        seen[name] = text
        return f"declared {name}: {text}"

    return describe


def poll_traefik(timeline: Timeline, api_url: str, namespace: str) -> None:
    last: dict[str, str] = {}
    with httpx.Client(timeout=2.0) as http:
        while not timeline.stop.is_set():
            try:
                answer = http.get(
                    f"{api_url}/api/http/services", params={"search": namespace, "per_page": 100}
                ).json()
            except (httpx.HTTPError, ValueError):
                answer = []
            now: dict[str, str] = {}
            for svc in answer:
                name = str(svc.get("name", ""))
                if "lockgate-probe" in name:
                    servers = (svc.get("loadBalancer") or {}).get("servers") or []
                    now[name] = (
                        " ".join(
                            sorted(
                                f"{s.get('url')}{'(fenced)' if s.get('fenced') else ''}"
                                for s in servers
                            )
                        )
                        + f" status={svc.get('status')}"
                    )
                elif name == f"{namespace}-{APP}@kubernetescrd":
                    children = (svc.get("weighted") or {}).get("services") or []
                    now[name] = " ".join(f"{c['name']}={c.get('weight', 1)}" for c in children)
            for name in sorted(set(now) | set(last)):
                if now.get(name) != last.get(name):
                    timeline.add("traefik-api", f"{name}: {now.get(name, '(gone)')}")
            last = now
            time.sleep(0.02)


@contextlib.contextmanager
def recording(api: client.ApiClient, namespace: str, api_url: str) -> Iterator[Timeline]:
    timeline = Timeline()
    core = client.CoreV1Api(api)
    discovery = client.DiscoveryV1Api(api)
    custom = client.CustomObjectsApi(api)
    threads = [
        threading.Thread(
            target=watching,
            args=(timeline, "pod", core.list_namespaced_pod, pod_describer()),
            kwargs={"namespace": namespace},
            daemon=True,
        ),
        threading.Thread(
            target=watching,
            args=(
                timeline,
                "endpointslice",
                discovery.list_namespaced_endpoint_slice,
                slice_describer(f"{APP}-canary"),
            ),
            kwargs={"namespace": namespace},
            daemon=True,
        ),
        threading.Thread(
            target=watching,
            args=(timeline, "lgd", custom.list_namespaced_custom_object, status_describer),
            kwargs={
                "group": "lockgate.dev",
                "version": "v1alpha1",
                "namespace": namespace,
                "plural": "deployments",
            },
            daemon=True,
        ),
        threading.Thread(
            target=watching,
            args=(
                timeline,
                "traefikservice",
                custom.list_namespaced_custom_object,
                traefik_service_describer(),
            ),
            kwargs={
                "group": "traefik.io",
                "version": "v1alpha1",
                "namespace": namespace,
                "plural": "traefikservices",
            },
            daemon=True,
        ),
        threading.Thread(target=poll_traefik, args=(timeline, api_url, namespace), daemon=True),
    ]
    for t in threads:
        t.start()
    try:
        yield timeline
    finally:
        timeline.stop.set()
        for t in threads:
            t.join(timeout=7)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="the first into a fresh slot")
    args = parser.parse_args()
    cluster, traefik = cluster_info(), traefik_info()
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    ns = f"timeline-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": ns}})
    firsts: list[float] = []
    try:
        with (
            exits_cleanly(),
            running_operator(operator_env(cluster, traefik), ns) as op,
            recording(api, ns, traefik.api_url) as timeline,
        ):
            target = LockgateTarget(api, ns, traefik, op, cli=False)
            wrr = target.setup(APP, failing=False)
            time.sleep(3)  # Traefik's throttle window after the set-up's last change
            since = time.monotonic()
            for run in range(1, args.runs + 1):
                canary = target.start(APP, run, f"demo:v{run + 1}")
                live = wait_share(traefik.api_url, wrr, lambda s: s > 0, "the first weight")
                firsts.append(live - canary.started)
                target.abort(APP, canary)
                wait_share(traefik.api_url, wrr, lambda s: s == 0, "100% stable after abort")
                target.settle(APP, canary)
                done = time.monotonic()
                print(
                    f"\n=== run {run} ({'fresh slot' if run == 1 else 'after an abort'}): "
                    f"apply -> first weight {live - canary.started:.2f} s"
                )
                # From the end of the run before: its abort is this run's start.
                for at, source, text in timeline.between(since, live + 0.3):
                    print(f"  {at - canary.started:7.3f}  {source:14} {text}")
                print(f"  (aborted and settled {done - live:.2f} s after the first weight)")
                since = live + 0.3
    finally:
        with contextlib.suppress(client.ApiException):
            core.delete_namespace(ns)
    print("\napply -> first weight:", ", ".join(f"{f:.2f} s" for f in firsts))


if __name__ == "__main__":
    main()
