"""Fakes of lockgate's own interfaces, so the controller is tested in milliseconds:

- `FakeKube`: lockgate's `Kube` over an in-memory API server. lockgate's own resources
  (Applications, Deployments) go through Kube's named methods; the Kubernetes target and the
  Traefik CRD router call the client's API groups (`core`, `apps`, `custom`) through
  `Kube.call`, so those are faked too, answering objects with the client's attribute names.
- `FakeFleet`: a `Fleet` over the engine tests' `FakeWorld`, which applies the engine's
  actions the way a target and a router would.
- `FakeDockerHosts`: lockgate's own `HostConnections` whose daemons are in memory, for the
  real Docker fleet: every connection is a login, counted per host, and a host can refuse it
  (a wrong SSH key); every call to a host is counted too. Its `open_events` answers a
  `FakeEventStream` (lockgate's `EventStream`) that the test feeds, breaks, and sees closed.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar, cast

import httpx
import pytest
from kubernetes.client.exceptions import ApiException

from lockgate.api import DeploymentSpec
from lockgate.controller import applications, deployments
from lockgate.controller.deployments import (
    ApplicationKey,
    DeploymentSummary,
    Round,
    index_entry,
    reconcile,
)
from lockgate.controller.fleets import Census, FleetUnusable, FleetView
from lockgate.controller.runtime import Runtime, Settings
from lockgate.controller.sharding import shard_of
from lockgate.engine import EnsureInstances, Promote, SetRoutes, SetWeights
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import HostUnavailable
from lockgate.hosts.spec import HostSpec
from lockgate.kube import Kube, Written
from lockgate.names import (
    LABEL_APP,
    LABEL_IMAGE,
    LABEL_INDEX,
    LABEL_PORT,
    LABEL_RELEASE,
    LABEL_ROLE,
)
from lockgate.traffic.traefik_observer import TraefikWatch
from tests.support.fakeworld import FakeWorld

T = TypeVar("T")
E = TypeVar("E", bound="Env")
NS = "default"


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386: None deletes a key, dicts merge, anything else replaces."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            merge_patch(target[key], value)
        else:
            target[key] = copy.deepcopy(value)


def not_found() -> ApiException:
    return ApiException(status=404, reason="Not Found")


class FakeApiGroups:
    """The few client calls of CoreV1Api, AppsV1Api and CustomObjectsApi lockgate makes."""

    def __init__(self, store: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        self.store = store  # (plural, namespace, name) -> object

    def _get(self, plural: str, name: str, namespace: str) -> dict[str, Any]:
        try:
            return self.store[(plural, namespace, name)]
        except KeyError:
            raise not_found() from None

    def read_namespaced_service(self, name: str, namespace: str) -> dict[str, Any]:
        return copy.deepcopy(self._get("services", name, namespace))

    def read_namespaced_deployment(self, name: str, namespace: str) -> dict[str, Any]:
        return copy.deepcopy(self._get("deployments.apps", name, namespace))

    def patch_namespaced_deployment_scale(
        self, name: str, namespace: str, body: dict[str, Any]
    ) -> None:
        self._get("deployments.apps", name, namespace)["spec"]["replicas"] = body["spec"][
            "replicas"
        ]

    def list_namespaced_pod(self, namespace: str, label_selector: str) -> dict[str, Any]:
        wanted = dict(term.split("=", 1) for term in label_selector.split(","))
        pods = [
            copy.deepcopy(obj)
            for (plural, ns, _), obj in sorted(self.store.items())
            if plural == "pods"
            and ns == namespace
            and wanted.items() <= obj["metadata"].get("labels", {}).items()
        ]
        return {"items": pods}

    def get_namespaced_custom_object(
        self, group: str, version: str, namespace: str, plural: str, name: str
    ) -> dict[str, Any]:
        return copy.deepcopy(self._get(plural, name, namespace))


class FakeKube:
    """lockgate's `Kube` over an in-memory store. A status patch carrying a resourceVersion
    that is not the current one answers 409, as the API server does."""

    def __init__(self) -> None:
        self.store: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.core = self.apps = self.custom = FakeApiGroups(self.store)
        self.secrets: dict[str, dict[str, str]] = {}
        self.version = 0
        self.clock = 0  # seconds, for creationTimestamps
        # group/version the API server serves, by group (Traefik's CRDs as the test env's)
        self.served: dict[str, frozenset[str]] = {
            "traefik.io": frozenset({"traefik.io/v1alpha1"}),
            "gateway.networking.k8s.io": frozenset(
                {"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"}
            ),
        }
        self.discoveries = 0
        self.deleted: list[str] = []
        self.deployment_reads = 0
        self.status_writes = 0

    # ---------------------------------------------------------------- Kube's interface

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return fn(*args, **kwargs)

    async def get_or_none(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return fn(*args, **kwargs)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    async def get_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        return copy.deepcopy(self.store.get(("applications", namespace, name)))

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        self.deployment_reads += 1
        return copy.deepcopy(self.store.get(("deployments", namespace, name)))

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        return self.secrets.get(name)

    async def served_groups(self) -> dict[str, frozenset[str]]:
        self.discoveries += 1
        return dict(self.served)

    async def patch_application_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._patch("applications", namespace, name, body)

    async def patch_deployment_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> Written:
        self.status_writes += 1
        return Written.of(self._patch("deployments", namespace, name, body))

    async def patch_deployment(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return self._patch("deployments", namespace, name, body)

    async def apply(
        self, group_version: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        key = "deployments.apps" if group_version == "apps/v1" else plural
        written = self.put(key, namespace, body)
        # As the API server's answer: a custom object as written, nothing for core/apps.
        return copy.deepcopy(written) if "." in group_version.partition("/")[0] else None

    async def list_labelled(
        self, group_version: str, plural: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        key, _, value = selector.partition("=")
        return [
            copy.deepcopy(obj)
            for (p, ns, _), obj in self.store.items()
            if p == plural
            and ns == namespace
            and ((obj.get("metadata") or {}).get("labels") or {}).get(key) == value
        ]

    async def delete(
        self, group_version: str, plural: str, namespace: str, name: str, uid: str
    ) -> None:
        obj = self.store.get((plural, namespace, name))
        if obj is not None and obj["metadata"]["uid"] == uid:
            del self.store[(plural, namespace, name)]
            self.deleted.append(f"{plural}/{name}")

    # ---------------------------------------------------------------- the test's hands

    def put(self, plural: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", namespace)
        meta.setdefault("uid", f"uid-{meta['name']}")
        meta.setdefault("generation", 1)
        meta.setdefault("creationTimestamp", f"2026-01-01T00:00:{self.clock:02d}Z")
        self.clock += 1
        self.version += 1
        meta["resourceVersion"] = str(self.version)
        self.store[(plural, namespace, meta["name"])] = obj
        return obj

    def _patch(self, plural: str, namespace: str, name: str, body: dict[str, Any]) -> Any:
        obj = self.store.get((plural, namespace, name))
        if obj is None:
            raise not_found()
        body = copy.deepcopy(body)
        wanted = (body.get("metadata") or {}).pop("resourceVersion", None)
        if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
            raise ApiException(status=409, reason="Conflict")
        merge_patch(obj, body)
        self.version += 1
        obj["metadata"]["resourceVersion"] = str(self.version)
        return copy.deepcopy(obj)

    def add_application(self, name: str, spec: dict[str, Any], **status: Any) -> dict[str, Any]:
        return self.put(
            "applications", NS, {"metadata": {"name": name}, "spec": spec, "status": status}
        )

    def add_deployment(self, name: str, spec: DeploymentSpec) -> dict[str, Any]:
        return self.put("deployments", NS, {"metadata": {"name": name}, "spec": spec.wire()})

    def application(self, name: str) -> dict[str, Any]:
        return self.store[("applications", NS, name)]

    def deployment(self, name: str) -> dict[str, Any]:
        return self.store[("deployments", NS, name)]

    def index(self) -> dict[ApplicationKey, list[DeploymentSummary]]:
        """What kopf's index of Deployments by Application holds now."""
        out: dict[ApplicationKey, list[DeploymentSummary]] = {}
        for (plural, _, _), obj in self.store.items():
            if plural == "deployments":
                for key, summary in index_entry(obj).items():
                    out.setdefault(key, []).append(summary)
        return out

    def shards(self) -> dict[ApplicationKey, list[str]]:
        """What kopf's index of every Application's shard holds now."""
        return {
            (ns, name): [shard_of(obj["metadata"].get("labels"))]
            for (plural, ns, name), obj in self.store.items()
            if plural == "applications"
        }

    def handler_kwargs(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """What kopf passes a handler of `body` besides body, patch and memo: its name and
        namespace, and the operator's indexes (by their ids)."""
        meta = body["metadata"]
        return {
            "namespace": meta["namespace"],
            "name": meta["name"],
            "spec": body.get("spec") or {},
            "labels": meta.get("labels") or {},
            "deployments_by_application": self.index(),
            "application_shards": self.shards(),
        }


def runtime_over(kube: FakeKube, metrics: Callable[[], str] | None = None) -> Runtime:
    """A Runtime on the fake Kube; Traefik's metrics endpoint answers `metrics()`."""

    def answer(request: httpx.Request) -> httpx.Response:
        if metrics is None:
            return httpx.Response(404)
        return httpx.Response(200, text=metrics())

    http = httpx.AsyncClient(transport=httpx.MockTransport(answer))
    settings = Settings(traefik_metrics_url="http://traefik:8082/metrics" if metrics else None)
    return Runtime(cast(Kube, kube), http, settings)


@dataclass
class FakeFleet:
    """A Fleet over a FakeWorld; it records what it was asked to do."""

    kube: FakeKube
    world: FakeWorld
    poll_while_moving: float | None = None
    status_poll: float | None = None
    settling: bool = False  # what `observe` reports: the world settles where no watch tells
    traefik_watch: TraefikWatch | None = None  # while settling: what of Traefik to watch
    unusable: str | None = None
    calls: list[str] = field(default_factory=list)
    releases: list[str | None] = field(default_factory=list)  # as made by fleet_for
    reads: Counter[str] = field(default_factory=Counter)  # observe, census: the fleet's reads

    def made_for(self, rt: Any, app_obj: Any, app: Any, release: str | None) -> FakeFleet:
        """Stands in for `fleet_for`."""
        self.releases.append(release)
        return self

    def metric_sources(self) -> dict[str, str]:
        return {"stable": "fake-stable", "canary": "fake-canary"}

    async def observe(self, routed: Any = None) -> FleetView:
        self.reads["observe"] += 1
        if self.unusable:
            raise FleetUnusable(self.unusable)
        seen = self.world.observe()
        return FleetView(
            seen.stable,
            seen.canary,
            seen.live_weights,
            dict(seen.unit_errors),
            live_routes=seen.live_routes,
        )

    async def resource_instances(self) -> dict[str, tuple[str, ...]]:
        return {"stable": ("fake/stable-0",), "canary": ("fake/canary-0",)}

    async def preflight(self, spec: DeploymentSpec, has_stable: bool) -> str | None:
        self.calls.append("preflight")
        return self.world.refusal

    async def ensure(
        self, role: Any, image: str | None, units: tuple[str, ...], release: str | None
    ) -> None:
        self.calls.append(f"ensure {role} {image} {len(units)}")
        self.world.apply("fleet", [EnsureInstances(role, image, units, release)])

    async def set_weights(self, stable: int, canary: int) -> None:
        self.calls.append(f"weights {stable}/{canary}")
        self.world.apply("fleet", [SetWeights(stable, canary)])

    async def set_routes(self, routes: Any) -> None:
        self.calls.append(f"routes {routes.describe()}")
        self.world.apply("fleet", [SetRoutes(routes)])

    async def flush(self) -> None:
        return None

    async def promote(self, release: str, image: str, deployment: str) -> None:
        self.calls.append(f"promote {image}")
        self.world.apply("fleet", [Promote(release, image)])
        await self.kube.patch_application_status(
            NS, "shop", {"status": {"stable": {"image": image, "deployment": deployment}}}
        )

    async def ensure_owned(self) -> None:
        self.calls.append("ensure_owned")

    async def census(self, rolling_out: bool) -> Census:
        self.reads["census"] += 1
        seen = self.world.observe()
        return Census(
            seen.stable.image, len(self.world.units), len(seen.stable.ready), len(seen.stable.units)
        )

    async def remove_rollout(self) -> None:
        if self.unusable:
            raise FleetUnusable(self.unusable)
        await self.set_weights(100, 0)
        await self.ensure("canary", None, (), None)

    async def remove_all(self) -> None:
        self.calls.append("remove_all")


class FakeImages:
    def get(self, image: str) -> dict[str, str]:
        return {"Id": image}  # every image is on every fake host


class FakeDockerClient:
    """What lockgate asks of a docker-py client to list and size a host, and to create,
    start, stop and remove containers (each created one publishes a new port)."""

    def __init__(self, hosts: FakeDockerHosts, host: str) -> None:
        self.hosts = hosts
        self.host = host
        self.api = self
        self.images = FakeImages()

    def create_host_config(self, **config: Any) -> dict[str, Any]:
        return dict(config)

    def create_container(
        self, image: str, *, name: str, labels: dict[str, str], **_: Any
    ) -> dict[str, str]:
        port = next(self.hosts.ports)
        container = {
            "Id": f"{self.host}-{name}",
            "Names": [f"/{name}"],
            "Labels": dict(labels),
            "Image": image,
            "State": "created",
            "Status": "Created",
            "Ports": [{"PrivatePort": 8080, "PublicPort": port}],
        }
        self.hosts.containers.setdefault(self.host, []).append(container)
        return {"Id": container["Id"]}

    def _container(self, container_id: str) -> dict[str, Any]:
        return next(c for c in self.hosts.containers[self.host] if c["Id"] == container_id)

    def start(self, container_id: str) -> None:
        container = self._container(container_id)
        container["State"] = "running"
        container["Status"] = "Up 1 second" + self.hosts.health_suffix

    def stop(self, container_id: str, timeout: int = 10) -> None:
        container = self._container(container_id)
        container["State"], container["Status"] = "exited", "Exited (0) 1 second ago"

    def remove_container(self, container_id: str, force: bool = False) -> None:
        self.hosts.containers[self.host].remove(self._container(container_id))

    def unpause(self, container_id: str) -> None:
        self._container(container_id)["State"] = "running"

    def containers(self, **query: Any) -> list[dict[str, Any]]:
        """`containers(all=…, filters={"label": [...]} or {"status": "running"})`."""
        filters = query.get("filters") or {}
        wanted = set(filters.get("label") or [])
        only_running = filters.get("status") == "running" or not query.get("all")
        return [
            copy.deepcopy(c)
            for c in self.hosts.containers.get(self.host, [])
            if wanted <= {f"{k}={v}" for k, v in c["Labels"].items()}
            and (c["State"] == "running" or not only_running)
        ]

    def inspect_container(self, container_id: str) -> dict[str, Any]:
        return {"HostConfig": {}}

    def info(self) -> dict[str, Any]:
        return {"NCPU": 64, "MemTotal": 2**40}

    def ping(self) -> bool:
        return True

    def close(self) -> None:
        pass


def stable_container(app: str, host: str, release: str, image: str, port: int) -> dict[str, Any]:
    """A running container of `release` as the Docker API lists it."""
    labels = {
        LABEL_APP: app,
        LABEL_RELEASE: release,
        LABEL_ROLE: "stable",
        LABEL_INDEX: "0",
        LABEL_PORT: "8080",
        LABEL_IMAGE: image,
    }
    return {
        "Id": f"{host}-{app}-{release}",
        "Names": [f"/{app}-{host}"],
        "Labels": labels,
        "Image": image,
        "State": "running",
        "Ports": [{"PrivatePort": 8080, "PublicPort": port}],
    }


class FakeEventStream:
    """lockgate's `EventStream` over a queue the test feeds: it delivers the events its
    filters select (container ids, event names), as the daemon does, blocks in between,
    raises what `fail` puts in, and ends when closed."""

    def __init__(self, host: str, filters: Mapping[str, Sequence[str]]) -> None:
        self.host = host
        self.filters = {k: list(v) for k, v in filters.items()}
        self._queue: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()
        self.closed = threading.Event()
        self.finished = threading.Event()  # no reader is (or will be) in it any more
        self._lock = threading.Lock()
        self._read = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._lock:
            self._read = True
        try:
            while not self.closed.is_set():
                item = self._queue.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                name = str(item["status"]).split(":")[0]
                if item["id"] in self.filters.get("container", [item["id"]]) and name in (
                    self.filters.get("event") or [name]
                ):
                    yield item
        finally:
            self.finished.set()

    def send(self, container_id: str, status: str) -> None:
        """An event of the container: `start`, `die`, `health_status: healthy`, …"""
        self._queue.put(
            {
                "Type": "container",
                "Action": status,
                "Actor": {"ID": container_id, "Attributes": {}},
                "status": status,  # the legacy fields, as daemons before API 1.45 add them
                "id": container_id,
            }
        )

    def fail(self, exc: BaseException) -> None:
        """The connection breaks: the reader's next read raises `exc`."""
        self._queue.put(exc)

    def close(self) -> None:
        with self._lock:
            self.closed.set()
            if not self._read:  # closed before anyone read it
                self.finished.set()
        self._queue.put(None)


class FakeDockerHosts(HostConnections):
    """HostConnections over in-memory daemons. `logins[host]` counts the connections opened
    (over SSH, each a login in the host's auth log); `calls[host]` every call to the host.
    A host in `refusing` refuses every login with its message, as sshd does a wrong key; the
    connection is then dropped, so the next call logs in again (as the real one does).
    `streams` are the event streams opened, in order (a host in `no_events` refuses them)."""

    def __init__(self) -> None:
        super().__init__([])
        self.logins: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        self.refusing: dict[str, str] = {}
        self.containers: dict[str, list[dict[str, Any]]] = {}
        self.ports = itertools.count(33001)  # the published port of each new container
        self.health_suffix = ""  # " (health: starting)": new containers have a healthcheck
        self.streams: list[FakeEventStream] = []
        self.no_events: dict[str, str] = {}
        self.stream_opened = threading.Event()

    def open_events(self, host: str, filters: Mapping[str, Sequence[str]]) -> FakeEventStream:
        if host in self.no_events:
            raise HostUnavailable(host, self.no_events[host])
        stream = FakeEventStream(host, filters)
        self.streams.append(stream)
        self.stream_opened.set()
        return stream

    def _connect(self, spec: HostSpec) -> Any:
        self.logins[spec.name] += 1
        if spec.name in self.refusing:
            raise HostUnavailable(spec.name, self.refusing[spec.name])
        return FakeDockerClient(self, spec.name)

    async def run(self, host: str, fn: Callable[[Any], T], *, seconds: float | None = None) -> T:
        self.calls[host] += 1
        return await super().run(host, fn, seconds=seconds)

    def refuse(self, host: str, message: str) -> None:
        """From now on `host` refuses logins, and closes the connection it had (as a
        restarted sshd does): the next call logs in again."""
        self.refusing[host] = message
        self._drop(host)


@dataclass
class Operator:
    """Runs `reconcile` rounds as the Deployment drivers do, on a fake clock that moves one
    second per round; the Events posted are kept."""

    rt: Runtime
    kube: FakeKube
    world: FakeWorld
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def round(self, name: str) -> Round:
        body = copy.deepcopy(self.kube.deployment(name))
        result = asyncio.run(reconcile(self.rt, body, self.post, self.kube.index()))
        self.world.now += timedelta(seconds=1)
        return result

    def post(self, kind: str, reason: str, message: str) -> None:
        self.events.append((kind, reason, message))

    def phase(self, name: str) -> str | None:
        phase: str | None = (self.kube.deployment(name).get("status") or {}).get("phase")
        return phase

    def run(self, *names: str, limit: int = 300) -> dict[str, list[str | None]]:
        """Rounds of each Deployment in turn until all are finished; the phases each went
        through."""
        seen: dict[str, list[str | None]] = {name: [] for name in names}
        for _ in range(limit):
            for name in names:
                self.round(name)
                if not seen[name] or seen[name][-1] != self.phase(name):
                    seen[name].append(self.phase(name))
            if all(self.phase(n) in FINAL for n in names):
                return seen
        raise AssertionError(f"not finished: {[(n, self.phase(n)) for n in names]}")


FINAL = ("Succeeded", "RolledBack", "Failed", "Aborted")


@dataclass
class Env:
    """The Application `shop` (Kubernetes, stable app:1) in a fake Kube, the fake world and
    fleet behind it, and an Operator running rounds over them."""

    kube: FakeKube
    world: FakeWorld
    fleet: FakeFleet
    op: Operator


def deployment_step(env: Env) -> dict[str, Any]:
    """The status's current step of Deployment `dep`, as the fake API holds it."""
    found: dict[str, Any] = (env.kube.deployment("dep").get("status") or {}).get("step") or {}
    return found


def env_over_fakes(
    monkeypatch: pytest.MonkeyPatch, cls: type[E], replicas: int, ready_after: int
) -> Iterator[E]:
    """A fixture's body: the controller's fleets and clock replaced by the fakes' while the
    test runs, the runtime closed after it."""
    kube = FakeKube()
    kube.add_application("shop", {"kubernetes": {"replicas": replicas}}, stable={"image": "app:1"})
    units = tuple(f"replica-{i}" for i in range(1, replicas + 1))
    world = FakeWorld(units=units, ready_after=ready_after)
    fleet = FakeFleet(kube, world)
    monkeypatch.setattr(deployments, "fleet_for", fleet.made_for)
    monkeypatch.setattr(applications, "fleet_for", fleet.made_for)
    monkeypatch.setattr(deployments, "now", lambda: world.now)
    rt = runtime_over(kube)
    yield cls(kube, world, fleet, Operator(rt, kube, world))
    asyncio.run(rt.aclose())
