"""What one round of a Deployment's driver costs in CPU, without a cluster (figures, never
asserted).

Runs the driver's real round, `handlers._drive_once` (read the Deployment and its
Application, observe the slots and Pods from the indexes, read Traefik's API, query
Prometheus when an analysis is due, `decide`, act, write the status), over and over in
this process, against a world answered on loopback by a child process: the API server
(lockgate's own resources, a Service, Traefik's CRDs), Traefik's API and a PromQL stub. The
bodies are real ones from a scale run (`bench/data/kopf-bodies.json`: the in-flight canary
`app0-g2`, its predecessor, their Application), with the timestamps of the canary's status
shifted so that a scenario's timer is due now. The world keeps what a round writes (status,
TraefikService), and is put back before the next round, so every round is the same one.

CPU per round is `time.process_time()` of this process (every thread: the API client's
worker threads too; not the child answering) around each round only, median of the runs.
Not included: TLS (the API server and Traefik are plain HTTP here), kopf's watch streams and
its posting of the Events a round queues, the concurrency of 32 rounds at once.

Scenarios (`--scenario`, default all):
  quiet          in a timed pause, nothing due (a wake-up by an event, a safety net):
                 observes, decides, writes nothing
  paused-analysis  spec.paused, an analysis due: 4 PromQL queries, an analysis run and a
                 log entry appended, status written
  pause-end      the timed pause is over: it is recorded done and the next step (setWeight
                 30) begins, status written (its weight is applied by the next round: the
                 weight-shift scenario)

`--history full` fills the status's histories to their bounds (100 log entries, 30
analysis runs) as after ~50 minutes of a rollout paused under analysis; `sampled` keeps the
sampled body's (12 log entries, 3 runs).

    python -m bench.round_cost [--scenario S] [--rounds 200] [--runs 5] [--history H]
        [--inline] [--profile FILE.prof] [--breakdown] [--read-route-objects]

`--inline`: the API calls run on the event loop instead of the worker threads (what
cProfile can see: it profiles one thread); `--profile`: cProfile of one run (CPU time);
`--breakdown`: CPU per round in each part (API calls by kind, Traefik and PromQL requests,
`decide`, the status diff, redaction, ...; inline), the rest of the round beside.
`--read-route-objects`: Traefik's route objects read from the API in every round, as before
the operator kept them from their watch (here the watch's events are the world's reset
objects, handed over before each round).
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import cProfile
import hashlib
import itertools
import json
import logging
import multiprocessing
import statistics
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import httpx
import kopf
from kopf._core.engines import posting
from kubernetes import client

from lockgate.controller import handlers
from lockgate.controller.deployments import DeploymentSummary
from lockgate.controller.kept import keep_of_application
from lockgate.controller.runtime import Runtime, Settings
from lockgate.engine.decide import release_of
from lockgate.kube import API_THREADS, WATCHED_TRUST_S, Kube, WatchedObjects
from lockgate.names import LABEL_APP, LABEL_RELEASE_HASH, LABEL_SLOT
from lockgate.outbound.http import BoundedClient
from lockgate.targets.kubernetes import PodInfo, SlotInfo, release_hash
from lockgate.traffic.traefik_api import HttpReads, TraefikReads
from lockgate.traffic.traefik_observer import LookReads

BODIES = Path(__file__).parent / "data" / "kopf-bodies.json"
ANALYSIS = {"intervalSeconds": 30, "minRequests": 1, "maxErrorRate": 0.05}  # bench.scale's
GROUP_PATH = "/apis/lockgate.dev/v1alpha1/namespaces"
TRAEFIK_PATH = "/apis/traefik.io/v1alpha1/namespaces"
SCENARIOS = ("quiet", "paused-analysis", "pause-end", "weight-shift")
LOG_LIMIT, ANALYSIS_LIMIT = 100, 30


# ---------------------------------------------------------------------------- the world


def managed_fields(manager: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    entry = {
        "apiVersion": "v1",
        "fieldsType": "FieldsV1",
        "fieldsV1": fields,
        "manager": manager,
        "operation": "Apply" if manager == "lockgate" else "Update",
        "time": "2026-12-02T00:30:07Z",
    }
    if subresource:
        entry["subresource"] = subresource
    return entry


def owner(app: dict[str, Any]) -> list[dict[str, Any]]:
    meta = app["metadata"]
    return [
        {
            "apiVersion": "lockgate.dev/v1alpha1",
            "kind": "Application",
            "name": meta["name"],
            "uid": meta["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]


def meta_of(name: str, ns: str, app: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    return {
        "creationTimestamp": "2026-12-02T00:30:07Z",
        "generation": 3,
        "labels": {LABEL_APP: app["metadata"]["name"]},
        "managedFields": [managed_fields("lockgate", fields)],
        "name": name,
        "namespace": ns,
        "ownerReferences": owner(app),
        "resourceVersion": "628001",
        "uid": hashlib.sha256(name.encode()).hexdigest()[:32],
    }


class World:
    """One scenario's objects and answers; `answer` is the child's whole HTTP server."""

    def __init__(
        self, objects: dict[str, Any], traefik: dict[str, Any], moving: str | None = None
    ) -> None:
        self.initial = json.dumps(objects)
        self.objects: dict[str, Any] = json.loads(self.initial)  # API path -> object
        self.traefik = traefik  # Traefik API path (with query) -> answer
        self.moving = moving  # the object whose status times move with the clock
        self.anchor = time.time()
        self.requests: Counter[str] = Counter()
        self.looks = 0

    def reset(self) -> None:
        """Back to the initial objects, the moving status's times moved on by the time
        since the world was made: each round finds the same timers due."""
        self.objects = json.loads(self.initial)
        if self.moving is not None:
            obj = self.objects[self.moving]
            obj["status"] = shifted(obj["status"], timedelta(seconds=time.time() - self.anchor))

    def answer(self, method: str, target: str, body: bytes) -> tuple[int, bytes]:
        split = urlsplit(target)
        path = unquote(split.path)
        self.requests[f"{method} {kind_of(path)}"] += 1
        if path == "/api/rawdata":  # Traefik reloads between two looks at scale
            self.looks += 1
            body = self.traefik[path]
            return 200, json.dumps({**body, "looks": self.looks}).encode()
        if path.startswith("/api/http/"):  # Traefik
            query = parse_qs(split.query)
            key = path + "?" + "&".join(f"{k}={v[0]}" for k, v in sorted(query.items()))
            found = self.traefik.get(key, self.traefik.get(path))
            if found is None:
                return 404, b'{"message":"not found"}'
            return 200, json.dumps(found).encode()
        if path == "/api/v1/query":  # Prometheus
            promql = parse_qs(split.query)["query"][0]
            if promql.startswith("histogram_quantile"):
                result = [{"metric": {}, "value": [1764635400.0, "0.05"]}]
            else:
                result = [{"metric": {"code": "200"}, "value": [1764635400.0, "100"]}]
            answer = {"status": "success", "data": {"resultType": "vector", "result": result}}
            return 200, json.dumps(answer).encode()
        obj_path = path.removesuffix("/status")
        obj = self.objects.get(obj_path)
        if obj is None:
            name = obj_path.rsplit("/", 1)[-1]
            status = {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f'"{name}" not found',
                "reason": "NotFound",
                "details": {"name": name},
                "code": 404,
            }
            return 404, json.dumps(status).encode()
        if method == "PATCH":
            patch = json.loads(body) if body.strip()[:1] == b"{" else None
            if patch is not None:
                if path.endswith("/status"):
                    patch.pop("metadata", None)  # the resourceVersion precondition
                merge(obj, patch)
                version = int(obj["metadata"]["resourceVersion"]) + 1
                obj["metadata"]["resourceVersion"] = str(version)
        return 200, json.dumps(obj).encode()


def kind_of(path: str) -> str:
    """A request's path without names: what the request counts are kept by."""
    if path.startswith("/api/http/services/"):
        return "traefik service"
    if path.startswith("/api/http/"):
        return "traefik " + path.removeprefix("/api/http/")
    if path == "/api/rawdata":
        return "traefik rawdata"
    if path == "/api/v1/query":
        return "promql"
    parts = path.split("/")
    if path.startswith("/api/v1/"):
        return f"core {parts[5]}"
    sub = "/status" if path.endswith("/status") else ""
    return f"{parts[2]} {parts[6]}{sub}"


def merge(target: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def shifted(value: Any, delta: timedelta) -> Any:
    """Every timestamp in a status moved by `delta` (the order of events kept)."""
    if isinstance(value, dict):
        return {k: shifted(v, delta) for k, v in value.items()}
    if isinstance(value, list):
        return [shifted(v, delta) for v in value]
    if isinstance(value, str) and len(value) >= 20 and value[4:5] == "-" and value[10:11] == "T":
        try:
            at = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
        return (at + delta).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "000Z"
    return value


def full_histories(status: dict[str, Any]) -> dict[str, Any]:
    """The histories at their bounds, older entries before the sampled ones."""
    status = copy.deepcopy(status)
    runs, log = status.get("analysis") or [], status.get("log") or []
    if runs:
        status["analysis"] = ([runs[0]] * ANALYSIS_LIMIT + runs)[-ANALYSIS_LIMIT:]
    older = {"at": log[0]["at"], "level": "Info", "message": "analysis passed: earlier"}
    status["log"] = ([older] * LOG_LIMIT + log)[-LOG_LIMIT:]
    return status


def world_objects(
    bodies: dict[str, Any], scenario: str, history: str, url: str, now: datetime, apps: int = 1
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(API objects by path, Traefik answers by path, the canary Deployment) of a scenario."""
    dep = copy.deepcopy(bodies["in-flight"])
    app = copy.deepcopy(bodies["application"])
    ns, name, app_name = dep["metadata"]["namespace"], dep["metadata"]["name"], "app0"
    app["spec"]["metrics"]["prometheus"]["url"] = url
    dep["spec"]["analysis"] = dict(ANALYSIS)
    status = dep["status"]
    started = datetime.fromisoformat(status["step"]["startedAt"].replace("Z", "+00:00"))
    if scenario == "paused-analysis":
        # As a round finds it once spec.paused is written (a round wrote the Paused status
        # since): the base of the next analysis 31 s ago, so one is due.
        dep["spec"]["paused"] = True
        dep["metadata"]["generation"] += 1
        status |= {"phase": "Paused", "message": "paused by spec.paused"}
        status["observedGeneration"] = dep["metadata"]["generation"]
        status["log"].append(
            {
                "at": status["step"]["startedAt"],
                "level": "Info",
                "message": "Paused: paused by spec.paused",
            }
        )
        dep["status"] = shifted(status, now - timedelta(seconds=31) - started)
    elif scenario in ("pause-end", "weight-shift"):
        dep["status"] = shifted(status, now - timedelta(seconds=21) - started)  # pause: 20 s
        # Under analysis a pause counts from when its split was confirmed live; the sampled
        # body has none (it was resumed from spec.paused), so the round would start it again.
        step = dep["status"]["step"]
        step["weightsLiveAt"] = step["startedAt"]
    else:
        dep["status"] = shifted(status, now - timedelta(seconds=5) - started)
    if history == "full":
        dep["status"] = full_histories(dep["status"])
    weights = dep["status"]["weights"]
    svc_fields = {"f:spec": {"f:ports": {}, "f:selector": {}}}
    stable_svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta_of(f"{app_name}-stable", ns, app, svc_fields),
        "spec": {
            "clusterIP": "10.1.4.17",
            "clusterIPs": ["10.1.4.17"],
            "internalTrafficPolicy": "Cluster",
            "ipFamilies": ["IPv4"],
            "ipFamilyPolicy": "SingleStack",
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP", "targetPort": 8080}],
            "selector": {LABEL_APP: app_name, LABEL_SLOT: "a"},
            "sessionAffinity": "None",
            "type": "ClusterIP",
        },
        "status": {"loadBalancer": {}},
    }
    children = [
        {"name": f"{app_name}-{role}", "port": 8080, "weight": weights[role]}
        for role in ("stable", "canary")
        if weights[role]
    ]
    traefik_service = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "TraefikService",
        "metadata": meta_of(app_name, ns, app, {"f:spec": {"f:weighted": {"f:services": {}}}}),
        "spec": {"weighted": {"services": children}},
    }
    rule = f"Host(`{app_name}.{ns}.test`)"
    ingress = {
        "apiVersion": "traefik.io/v1alpha1",
        "kind": "IngressRoute",
        "metadata": meta_of(app_name, ns, app, {"f:spec": {"f:entryPoints": {}, "f:routes": {}}}),
        "spec": {
            "entryPoints": ["web"],
            "routes": [
                {
                    "kind": "Rule",
                    "match": rule,
                    "services": [{"kind": "TraefikService", "name": app_name}],
                }
            ],
        },
    }
    objects = {
        f"{GROUP_PATH}/{ns}/deployments/{name}": dep,
        f"{GROUP_PATH}/{ns}/applications/{app_name}": app,
        f"/api/v1/namespaces/{ns}/services/{app_name}-stable": stable_svc,
        f"{TRAEFIK_PATH}/{ns}/traefikservices/{app_name}": traefik_service,
        f"{TRAEFIK_PATH}/{ns}/ingressroutes/{app_name}": ingress,
    }
    uid = app["metadata"]["uid"]
    probe = f"{ns}-{app_name}-lockgate-probe"
    routers, services = [], []
    for role, ip in (("stable", "10.244.0.11"), ("canary", "10.244.0.12")):
        router = f"{probe}-{hashlib.sha256(role.encode()).hexdigest()[:20]}"
        routers.append(
            {
                "service": router,
                "rule": f"Header(`X-Lockgate-Probe`, `{uid}-{role}`)",
                "ruleSyntax": "default",
                "priority": 57,
                "status": "enabled",
                "using": ["web", "websecure"],
                "name": f"{router}@kubernetescrd",
                "provider": "kubernetescrd",
            }
        )
        server = f"http://{ip}:8080"
        services.append(
            {
                "loadBalancer": {
                    "servers": [{"url": server}],
                    "strategy": "wrr",
                    "passHostHeader": True,
                    "responseForwarding": {"flushInterval": "100ms"},
                },
                "status": "enabled",
                "usedBy": [f"{router}@kubernetescrd"],
                "serverStatus": {server: "UP"},
                "name": f"{router}@kubernetescrd",
                "provider": "kubernetescrd",
                "type": "loadbalancer",
            }
        )
    main_router = {
        "entryPoints": ["web"],
        "service": f"{ns}-{app_name}",
        "rule": rule,
        "ruleSyntax": "default",
        "priority": len(rule),
        "status": "enabled",
        "using": ["web"],
        "name": f"{ns}-{app_name}-{hashlib.sha256(rule.encode()).hexdigest()[:20]}@kubernetescrd",
        "provider": "kubernetescrd",
    }
    weighted = {
        "weighted": {
            "services": [
                {"name": f"{ns}-{app_name}-{role}-8080", "weight": weights[role]}
                for role in ("stable", "canary")
                if weights[role]
            ]
        },
        "status": "enabled",
        "usedBy": [main_router["name"]],
        "name": f"{ns}-{app_name}@kubernetescrd",
        "provider": "kubernetescrd",
        "type": "weighted",
    }
    traefik = {
        f"/api/http/routers?search={uid}": routers,
        f"/api/http/services?search={probe}": services,
        f"/api/http/services/{ns}-{app_name}@kubernetescrd": weighted,
        f"/api/http/routers?serviceName={ns}-{app_name}@kubernetescrd&status=enabled": [
            main_router
        ],
        "/api/rawdata": rawdata(
            [*routers, main_router], [*services, weighted], apps, app_name, uid
        ),
    }
    return objects, traefik, dep


def rawdata(
    routers: list[dict[str, Any]],
    services: list[dict[str, Any]],
    apps: int,
    app_name: str,
    uid: str,
) -> dict[str, Any]:
    """Traefik's /api/rawdata holding these routers and services, and as many again for each
    of `apps` - 1 other Applications (their names and UIDs made from these): the size of the
    look at that scale, each Application's search finding its own."""
    body: dict[str, dict[str, Any]] = {"routers": {}, "services": {}}
    for section, items in (("routers", routers), ("services", services)):
        own = json.dumps(
            {
                item["name"]: {
                    k: v for k, v in item.items() if k not in ("name", "provider", "type")
                }
                for item in items
            }
        )
        body[section].update(json.loads(own))
        for i in range(1, apps):
            other = own.replace(app_name, f"{app_name}x{i}").replace(uid, f"{uid[:-6]}{i:06d}")
            body[section].update(json.loads(other))
    return body


# ------------------------------------------------------------------ the child: the server


def serve(conn: Any) -> None:
    """The child process: answers the world it is sent (`PUT /_world`) until told to stop."""
    world = World({}, {})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        wbufsize = 1 << 16  # one write per answer, as a real server sends it

        def log_message(self, *_: Any) -> None:
            return None

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _send(self, code: int, payload: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _handle(self, method: str) -> None:
            nonlocal world
            body = self._body()
            if self.path == "/_world":
                spec = json.loads(body)
                world = World(spec["objects"], spec["traefik"], spec["moving"])
                self._send(200, b"{}")
            elif self.path == "/_reset":
                world.reset()
                self._send(200, b"{}")
            elif self.path == "/_requests":
                self._send(200, json.dumps(world.requests).encode())
                world.requests.clear()
            else:
                self._send(*world.answer(method, self.path, body))

        def do_GET(self) -> None:
            self._handle("GET")

        def do_PATCH(self) -> None:
            self._handle("PATCH")

        def do_PUT(self) -> None:
            self._handle("PUT")

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    conn.send(server.server_address[1])
    server.serve_forever()


# ------------------------------------------------------------------ the operator's side


def runtime(url: str, inline: bool) -> Runtime:
    configuration = client.Configuration()
    configuration.host = url
    configuration.connection_pool_maxsize = API_THREADS
    kube = Kube(client.ApiClient(configuration))
    if inline:

        async def call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        kube.call = call  # type: ignore[method-assign]
    return Runtime(kube, BoundedClient(), Settings(traefik_api_url=url))


class Parts:
    """CPU seconds spent in parts of the rounds (`--breakdown`): each part's functions
    wrapped, the outermost call of a part timed (a recursive one once). Only with the API
    calls inline: with nothing else running, the CPU spent while a part's coroutine is
    awaited is the part's."""

    def __init__(self) -> None:
        self.spent: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.active: set[str] = set()
        self.on = False
        self.undo: list[Callable[[], None]] = []

    def _timed(self, label: str) -> Callable[[], Any]:
        if not self.on or label in self.active:
            return lambda: None  # an inner (recursive) call: no clock read
        self.active.add(label)
        self.calls[label] += 1
        started = time.process_time()

        def done() -> None:
            self.spent[label] += time.process_time() - started
            self.active.discard(label)

        return done

    def wrap(self, owner: Any, attr: str, label: str | Callable[..., str]) -> None:
        original = getattr(owner, attr)
        name = (lambda *_a, **_k: label) if isinstance(label, str) else label
        if asyncio.iscoroutinefunction(original):

            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                done = self._timed(name(*args, **kwargs))
                try:
                    return await original(*args, **kwargs)
                finally:
                    done()

            setattr(owner, attr, timed_async)
        else:

            def timed(*args: Any, **kwargs: Any) -> Any:
                done = self._timed(name(*args, **kwargs))
                try:
                    return original(*args, **kwargs)
                finally:
                    done()

            setattr(owner, attr, timed)
        self.undo.append(lambda: setattr(owner, attr, original))

    def install(self, rt: Runtime) -> None:
        from lockgate.controller import deployments

        def api(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> str:
            what = getattr(fn, "__name__", "")
            verb = "PATCH" if what.startswith("patch") else "GET"
            if "custom_object" in what:  # (group, version, namespace, plural, name, ...)
                status = "/status" if what.endswith("_status") else ""
                return f"API {verb} {args[3]}{status}"
            return f"API {verb} {what.split('_namespaced_')[-1]}"

        def http(request: httpx.Request, **_: Any) -> str:
            return "PromQL query" if request.url.path == "/api/v1/query" else "Traefik API GET"

        self.wrap(rt.kube, "call", api)
        self.wrap(rt.http, "send", http)
        self.wrap(deployments, "decide", "engine decide")
        self.wrap(deployments, "without_nulls", "status diff (without_nulls)")
        self.wrap(rt.redactor, "tree", "redaction of the status")
        self.wrap(rt.notifier, "enqueue_owed", "notifications owed")
        self.wrap(deployments, "_record", "metrics of the round")
        self.wrap(kopf, "event", "kopf.event")

    def uninstall(self) -> None:
        for undo in reversed(self.undo):
            undo()


def indexes(rt: Runtime, bodies: dict[str, Any]) -> dict[Any, Any]:
    """The kopf indexes a round reads (slots, Pods, the Application's Deployments)."""
    ns = bodies["in-flight"]["metadata"]["namespace"]
    stable_release, canary_release = release_of("app0-g1", 1), release_of("app0-g2", 1)
    pods, slots = {}, {}
    for slot, release, image, ip in (
        ("a", stable_release, "demo:v1", "10.244.0.11"),
        ("b", canary_release, "demo:v2", "10.244.0.12"),
    ):
        labels = {LABEL_APP: "app0", LABEL_SLOT: slot, LABEL_RELEASE_HASH: release_hash(release)}
        pods[(ns, "app0", slot)] = [
            PodInfo(f"app0-{slot}-5d9c7-x{slot}", labels, False, True, ip, "Running")
        ]
        slots[(ns, "app0", slot)] = [SlotInfo(1, release, image)]
    rt.pod_index, rt.slot_index = pods, slots
    return {
        (ns, "app0"): [
            DeploymentSummary("app0-g1", "Succeeded", "2026-12-02T00:30:06Z"),
            DeploymentSummary("app0-g2", "Progressing", "2026-12-02T00:31:20Z"),
        ]
    }


FOREVER = 1e9  # a look's age alone never asks for a new one here (`Looks.per_look` does)


@dataclass
class FreshLook:
    """Reads that pay for a new look: the first asks for one begun after `began`."""

    shared: LookReads
    began: float

    async def service(self, name: str, provider: str) -> dict[str, Any] | None:
        await self.shared.observer.look_since(self.began)
        return await self.shared.service(name, provider)

    async def listing(self, kind: str, **query: str) -> list[dict[str, Any]] | None:
        await self.shared.observer.look_since(self.began)
        return await self.shared.listing(kind, **query)

    def fresh_after(self) -> float | None:
        return self.shared.fresh_after()


@dataclass
class Looks:
    """How a round reads Traefik's API: from a look at `apps` Applications' routers and
    services, a new one every `per_look` rounds (what the operator does: at 1,000 in flight
    about 40 rounds a second share each look); or, with `per_look` 0, four requests."""

    apps: int = 1000
    per_look: int = 40
    rounds: int = 0  # the round under way (run's count)


async def run(
    url: str,
    scenario: str,
    history: str,
    rounds: int,
    inline: bool,
    profile: cProfile.Profile | None,
    describe: bool,
    parts: Parts | None = None,
    read_route_objects: bool = False,
    looks: Looks | None = None,
    read_application: bool = False,
) -> float:
    """CPU seconds per round over `rounds` rounds (after a few not counted)."""
    looks = looks or Looks()
    bodies = json.loads(BODIES.read_text())
    objects, traefik, dep = world_objects(
        bodies, scenario, history, url, datetime.now(UTC), looks.apps
    )
    rt = runtime(url, inline)
    round_began = 0.0

    def reads(api_url: str, changed: Callable[[], float] | None = None) -> TraefikReads:
        """The operator's reads from looks, with a new look every `per_look` rounds (begun
        after that round's start); or requests."""
        if not looks.per_look:
            return HttpReads(rt.http, api_url)
        shared = LookReads(rt.traefik.get(api_url), changed, FOREVER)
        if looks.rounds % looks.per_look:
            return shared
        return FreshLook(shared, round_began)

    rt.traefik.reads = reads  # type: ignore[method-assign]
    if read_route_objects:  # as before their watch: each read an API call (trust expired)
        rt.route_objects = WatchedObjects(clock=itertools.count(step=WATCHED_TRUST_S).__next__)
    control = httpx.AsyncClient(base_url=url)
    ns, name = dep["metadata"]["namespace"], dep["metadata"]["name"]
    path = f"{GROUP_PATH}/{ns}/deployments/{name}"
    world = {"objects": objects, "traefik": traefik, "moving": path}
    await control.put("/_world", content=json.dumps(world))
    deployments = indexes(rt, bodies)
    if not read_application:  # from kopf's index, as the watch keeps it
        kept = copy.deepcopy(objects[f"{GROUP_PATH}/{ns}/applications/app0"])
        keep_of_application(kept)
        rt.application_index = {(ns, "app0"): [kept]}
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(API_THREADS))
    queue: asyncio.Queue[Any] = asyncio.Queue()
    posting.settings_var.set(kopf.OperatorSettings())
    posting.event_queue_var.set(queue)
    posting.event_queue_loop_var.set(asyncio.get_running_loop())
    logger = logging.getLogger("bench.round_cost")
    if scenario == "weight-shift":
        # The round after the pause's end: the one that sets the next weight.
        await handlers._drive_once(rt, ns, name, deployments, logger)
        objects[path] = (await control.get(path)).json()
        await control.put("/_world", content=json.dumps(world))
    if parts is not None:
        parts.install(rt)
    cpu = 0.0
    events = 0
    delays = set()
    warmup = 5
    for i in range(warmup + rounds):
        await control.put("/_reset")
        for at, obj in objects.items():  # what the route objects' watch delivers of the reset
            if at.startswith(TRAEFIK_PATH):
                rt.route_objects.seen(at.split("/")[-2], "MODIFIED", obj)
        if i == warmup:
            await control.get("/_requests")  # counts from here
            if profile is not None:
                profile.enable()
            if parts is not None:
                parts.on = True
        looks.rounds, round_began = i, time.monotonic()
        started = time.process_time()
        delay = await handlers._drive_once(rt, ns, name, deployments, logger)
        spent = time.process_time() - started
        if i >= warmup:
            cpu += spent
            delays.add(repr(delay))
        while not queue.empty():
            queue.get_nowait()
            events += i >= warmup
    if profile is not None:
        profile.disable()
    if parts is not None:
        parts.on = False
        parts.uninstall()
    if describe:
        requests = (await control.get("/_requests")).json()
        print(
            f"  {scenario}: each round returns {', '.join(sorted(delays))}; "
            f"{events / rounds:g} Events queued"
        )
        for what, n in sorted(requests.items()):
            print(f"    {n / rounds:g} x {what}")
        status = (await control.get(f"{GROUP_PATH}/{ns}/deployments/{name}")).json()["status"]
        print(
            f"    status as read: {len(json.dumps(dep['status']))} bytes, "
            f"{len(status.get('log', []))} log entries after the last round; "
            f"its message: {status.get('message')!r}"
        )
    await control.aclose()
    await rt.aclose()
    return cpu / rounds


def print_breakdown(by_run: list[Parts], per_run: list[float], rounds: int) -> None:
    """Per part: calls and CPU per round (medians over the runs); the rest of the round."""
    labels = sorted({label for parts in by_run for label in parts.spent})
    median = {
        label: statistics.median(parts.spent[label] / rounds for parts in by_run)
        for label in labels
    }
    total = statistics.median(per_run)
    print(f"  {'part':42s} {'calls':>6s} {'ms/round':>9s} {'share':>6s}")
    for label in sorted(labels, key=lambda k: -median[k]):
        calls = by_run[0].calls[label] / rounds
        ms = 1000 * median[label]
        print(f"  {label:42s} {calls:6.2g} {ms:9.2f} {100 * median[label] / total:5.0f}%")
    rest = total - sum(median.values())
    print(
        f"  {'rest: models, JSON of answers, glue, loop':42s} {'':6s} {1000 * rest:9.2f} "
        f"{100 * rest / total:5.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenario", choices=(*SCENARIOS, "all"), default="all")
    parser.add_argument("--history", choices=("sampled", "full"), default="sampled")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--inline", action="store_true")
    parser.add_argument("--profile", metavar="FILE")
    parser.add_argument("--breakdown", action="store_true", help="CPU per part (inline)")
    parser.add_argument(
        "--traefik-requests",
        action="store_true",
        help="read Traefik's API with four requests a round, as before the shared look",
    )
    parser.add_argument("--apps", type=int, default=1000, help="Applications in each look")
    parser.add_argument("--rounds-per-look", type=int, default=40)
    parser.add_argument(
        "--read-route-objects",
        action="store_true",
        help="read Traefik's route objects from the API each round, as before their watch",
    )
    parser.add_argument(
        "--read-application",
        action="store_true",
        help="read the Application from the API each round, as before its index",
    )
    args = parser.parse_args()
    if args.breakdown:
        args.inline = True
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    parent, child = multiprocessing.Pipe()
    server = multiprocessing.get_context("fork").Process(target=serve, args=(child,), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{parent.recv()}"
        scenarios = SCENARIOS if args.scenario == "all" else (args.scenario,)
        for scenario in scenarios:
            profile = cProfile.Profile(time.process_time) if args.profile else None
            per_run = []
            by_run = []
            for n in range(args.runs):
                parts = Parts() if args.breakdown else None
                per_run.append(
                    asyncio.run(
                        run(
                            url,
                            scenario,
                            args.history,
                            args.rounds,
                            args.inline,
                            profile if n == 0 else None,
                            n == 0,
                            parts,
                            args.read_route_objects,
                            Looks(args.apps, 0 if args.traefik_requests else args.rounds_per_look),
                            args.read_application,
                        )
                    )
                )
                if parts is not None:
                    by_run.append(parts)
            ms = sorted(1000 * s for s in per_run)
            print(
                f"{scenario} ({args.history} histories{', inline' if args.inline else ''}): "
                f"median {statistics.median(ms):.2f} ms CPU per round "
                f"(runs: {', '.join(f'{m:.2f}' for m in ms)}; {args.rounds} rounds each)"
            )
            if by_run:
                print_breakdown(by_run, per_run, args.rounds)
            if profile is not None:
                out = args.profile if len(scenarios) == 1 else f"{args.profile}.{scenario}"
                profile.dump_stats(out)
                print(f"  profile of the first run: {out}")
    finally:
        server.kill()
        server.join()


if __name__ == "__main__":
    main()
