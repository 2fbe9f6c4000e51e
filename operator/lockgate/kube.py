"""A small async face on the kubernetes client: every call runs in a worker thread, so the
controller's event loop never blocks on the network."""

from __future__ import annotations

import asyncio
import base64
import copy
import functools
import json
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter, Histogram

from lockgate.names import API_VERSION, GROUP, LABEL_APP, VERSION

T = TypeVar("T")
REQUESTS = Counter(
    "lockgate_api_requests_total",
    "Kubernetes API requests lockgate's own client made (kopf's watches and patches aside)",
    ["call"],
)
REQUEST_SECONDS = Histogram(
    "lockgate_api_request_seconds",
    "Time a Kubernetes API request of lockgate's own client took, from the ask to the answer "
    "(the wait for a free API thread included)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
API_THREADS = 64
"""The default of `--api-threads`: worker threads for API calls (the controller's bounded
default executor), and as many pooled connections: a smaller pool drops and re-opens a TLS
connection for each call beyond it. Also the rounds in progress at once
(`runtime.ROUNDS_AT_ONCE`): with 32, 300 canaries in flight on the 2-core VM queued for a
turn (pauses ended 7 to 8 s late, the machine 82% busy); with 64, p50 0.7 s, the machine 95%
busy. At 1,000 the machine was full either way, and pauses ended later with 64 (p50 16 to
29 s against 11 to 18 s in five runs: docs/scale.md)."""


def load_config(pooled: int = API_THREADS) -> client.ApiClient:
    """In-cluster configuration when running in a Pod, else the kubeconfig (KUBECONFIG);
    `pooled` connections kept open (one per API thread)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = pooled
    return client.ApiClient(configuration)


def owner_reference(app_obj: dict[str, Any]) -> dict[str, Any]:
    """What makes an object lockgate creates go when its Application goes."""
    meta = app_obj["metadata"]
    return {
        "apiVersion": API_VERSION,
        "kind": "Application",
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


class JsonApi:
    """The few core/v1 and apps/v1 calls lockgate makes, each answering the server's JSON.

    The client's typed CoreV1Api and AppsV1Api import every model of their groups, pydantic
    classes: about 280 modules and 24 MiB the operator would hold from its start (measured:
    98.5 MiB after Runtime.from_env with them, 74.5 without), and they validate each answer
    into a tree of models of which lockgate reads a few fields. These calls take the typed
    ones' names and arguments, and go through the same ApiClient the same way (its request
    building, authentication, connection pool and retries; ApiException on a non-2xx answer)
    but deserialize to `object`, as CustomObjectsApi does. Needs the client's generator of
    kubernetes 37 (param_serialize, call_api, response_deserialize)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _request(
        self,
        method: str,
        path: str,
        path_params: dict[str, str],
        query: Sequence[tuple[str, Any]] = (),
        body: Any = None,
        content_type: str | None = None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if content_type is not None:
            headers["Content-Type"] = content_type
        request = self.api.param_serialize(
            method=method,
            resource_path=path,
            path_params=path_params,
            query_params=[(k, v) for k, v in query if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(*request)
        response.read()
        return self.api.response_deserialize(response, {"2XX": "object"}).data

    def read_namespaced_service(self, name: str, namespace: str) -> dict[str, Any]:
        path = "/api/v1/namespaces/{namespace}/services/{name}"
        result: dict[str, Any] = self._request("GET", path, {"namespace": namespace, "name": name})
        return result

    def patch_namespaced_service(
        self,
        name: str,
        namespace: str,
        body: dict[str, Any],
        field_manager: str | None = None,
        force: bool | None = None,
        _content_type: str = "application/strategic-merge-patch+json",
    ) -> dict[str, Any]:
        path = "/api/v1/namespaces/{namespace}/services/{name}"
        query = (("fieldManager", field_manager), ("force", force))
        result: dict[str, Any] = self._request(
            "PATCH", path, {"namespace": namespace, "name": name}, query, body, _content_type
        )
        return result

    def read_namespaced_secret(self, name: str, namespace: str) -> dict[str, Any]:
        path = "/api/v1/namespaces/{namespace}/secrets/{name}"
        result: dict[str, Any] = self._request("GET", path, {"namespace": namespace, "name": name})
        return result

    def list_namespaced_pod(
        self, namespace: str, label_selector: str | None = None
    ) -> dict[str, Any]:
        path = "/api/v1/namespaces/{namespace}/pods"
        query = (("labelSelector", label_selector),)
        result: dict[str, Any] = self._request("GET", path, {"namespace": namespace}, query)
        return result

    def read_namespaced_deployment(self, name: str, namespace: str) -> dict[str, Any]:
        path = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}"
        result: dict[str, Any] = self._request("GET", path, {"namespace": namespace, "name": name})
        return result

    def patch_namespaced_deployment_scale(
        self, name: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        # What the typed call sends for an object body (the client turns its default, JSON
        # Patch, into a strategic merge patch for anything but a list).
        path = "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"
        result: dict[str, Any] = self._request(
            "PATCH",
            path,
            {"namespace": namespace, "name": name},
            body=body,
            content_type="application/strategic-merge-patch+json",
        )
        return result


class Kube:
    """The API groups lockgate uses, each call off the event loop."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = self.apps = JsonApi(api)  # core/v1 and apps/v1, as JSON
        self.custom = client.CustomObjectsApi(api)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        REQUESTS.labels(getattr(fn, "__name__", "other")).inc()
        asked = time.monotonic()
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        finally:
            REQUEST_SECONDS.observe(time.monotonic() - asked)

    async def get_or_none(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T | None:
        try:
            return await self.call(fn, *args, **kwargs)
        except ApiException as err:
            if err.status == 404:
                return None
            raise

    # lockgate's own resources, as plain dicts
    async def _get_own(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        return await self.get_or_none(
            self.custom.get_namespaced_custom_object, GROUP, VERSION, namespace, plural, name
        )

    async def _patch_own(
        self, plural: str, namespace: str, name: str, body: dict[str, Any], *, status: bool
    ) -> dict[str, Any]:
        return await self._patched(plural, namespace, name, body, status, lambda answer: answer)

    async def _patched(
        self,
        plural: str,
        namespace: str,
        name: str,
        body: dict[str, Any],
        status: bool,
        then: Callable[[dict[str, Any]], T],
    ) -> T:
        """A patch of one of lockgate's own objects; `then` takes the answer in the API
        thread, off the event loop."""
        patch = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )

        @functools.wraps(patch)  # counted under the client call's name
        def patched(*args: Any, **kwargs: Any) -> T:
            return then(patch(*args, **kwargs))

        # As field manager `lockgate`: managedFields tell its writes from a user's (and from
        # any script's with this client's default manager, "OpenAPI-Generator").
        return await self.call(
            patched, GROUP, VERSION, namespace, plural, name, body, field_manager="lockgate"
        )

    async def get_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_own("applications", namespace, name)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded; None when it does not exist."""
        secret = await self.get_or_none(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        return {
            key: base64.b64decode(value).decode("utf-8", "replace")
            for key, value in (secret.get("data") or {}).items()
        }

    async def patch_application_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._patch_own("applications", namespace, name, body, status=True)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_own("deployments", namespace, name)

    async def patch_deployment_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> Written:
        """The Deployment as the write left it, packed."""
        return await self._patched("deployments", namespace, name, body, True, Written.of)

    async def patch_deployment(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._patch_own("deployments", namespace, name, body, status=False)

    async def apply(
        self, group_version: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> dict[str, Any] | None:
        """Create or update an object lockgate owns, by server-side apply as field manager
        `lockgate` (forced: these objects are lockgate's, a GitOps sync must not hold them).
        A custom object's answer is the object as written."""
        name = body["metadata"]["name"]
        options: dict[str, Any] = {
            "field_manager": "lockgate",
            "force": True,
            "_content_type": "application/apply-patch+yaml",
        }
        group, _, version = group_version.rpartition("/")
        if not group:
            if plural != "services":
                raise ValueError(f"apply of core/{plural} is not supported")
            await self.call(self.core.patch_namespaced_service, name, namespace, body, **options)
            return None
        answer: dict[str, Any] = await self.call(
            self.custom.patch_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            body,
            **options,
        )
        return answer

    async def list_labelled(
        self, group_version: str, plural: str, namespace: str, selector: str
    ) -> list[dict[str, Any]]:
        """The objects of a custom resource in `namespace` matching a label selector."""
        group, _, version = group_version.rpartition("/")
        answer: dict[str, Any] = await self.call(
            self.custom.list_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            label_selector=selector,
        )
        items: list[dict[str, Any]] = answer.get("items") or []
        return items

    async def delete(
        self, group_version: str, plural: str, namespace: str, name: str, uid: str
    ) -> None:
        """Delete an object of a custom resource if it is still the one with `uid` (one
        created again since is left alone); gone already is done."""
        group, _, version = group_version.rpartition("/")
        try:
            await self.get_or_none(
                self.custom.delete_namespaced_custom_object,
                group,
                version,
                namespace,
                plural,
                name,
                body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)),
            )
        except ApiException as err:
            if err.status != 409:  # 409: not the one listed any more
                raise

    async def served_groups(self) -> dict[str, frozenset[str]]:
        """Per API group, `group/version` of each version the API server serves, from its
        discovery document of all groups (/apis)."""
        groups = await self.call(client.ApisApi(self.api).get_api_versions)
        return {
            g.name: frozenset(v.group_version for v in g.versions or [])
            for g in groups.groups or []
        }


DISCOVERY_TTL_S = 60.0
"""How long an API group's served versions are taken as known: a CRD upgraded under a running
operator is followed within this time, at one discovery request for all groups."""
DISCOVERY_RETRY_S = 1.0
"""How soon a group missing from the last answer is asked for again."""
DISCOVERY_GRACE_S = 30.0
"""How long an API group never listed may stay unlisted before lockgate says it is not served:
an API server that has just started lists a CRD's group only once it has loaded the CRD."""


class DiscoveryPending(Exception):
    """The API server does not list a group yet: a moment's answer, not a verdict."""


class ApiVersions:
    """Which of the versions lockgate can write an API group's server serves: the API
    server's discovery, asked at most once per DISCOVERY_TTL_S for all Applications and
    groups (and again when a group is asked for that it did not list)."""

    def __init__(self, kube: Kube, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.clock = clock
        self._asked_at: float | None = None
        self._known: dict[str, frozenset[str]] = {}  # the last versions listed, per group
        self._missing_since: dict[str, float] = {}  # groups never listed, since when
        self._lock = asyncio.Lock()

    async def newest(self, known: Sequence[str]) -> str | None:
        """The first of `known` (`group/version`, newest first, all of one group) that the
        server serves; None when it serves none of them. Raises DiscoveryPending while a
        group never listed has been missing for less than DISCOVERY_GRACE_S."""
        group = known[0].rpartition("/")[0]
        served = await self._served_of(group)
        return next((v for v in known if v in served), None)

    async def _served_of(self, group: str) -> frozenset[str]:
        async with self._lock:
            now = self.clock()
            since = self._missing_since.get(group)
            age = now - self._asked_at if self._asked_at is not None else None
            confirmed_missing = since is not None and now - since >= DISCOVERY_GRACE_S
            if (
                age is None
                or age >= DISCOVERY_TTL_S
                or (group not in self._known and not confirmed_missing and age >= DISCOVERY_RETRY_S)
            ):
                self._asked_at = now
                for name, versions in (await self.kube.served_groups()).items():
                    # An API server that is starting lists a CRD's group only once it has
                    # loaded the CRD: a group missing from one answer keeps the versions
                    # listed before (a control plane restart rolled a good canary back).
                    if versions:
                        self._known[name] = versions
                        self._missing_since.pop(name, None)
            served = self._known.get(group)
            if served is not None:
                return served
            # An operator starting with its API server knows nothing yet: only a group
            # that stays missing is not served.
            since = self._missing_since.setdefault(group, now)
            if now - since < DISCOVERY_GRACE_S:
                raise DiscoveryPending(
                    f"the API server lists no {group} API group yet: asking again"
                )
            return frozenset()


@dataclass(frozen=True)
class Written:
    """An object as the API server answered a write of it, its JSON compressed: a
    Deployment with full status histories is up to ~35 KB of JSON and 150 KB decoded, a few
    KB packed, so one per Deployment in flight stays small."""

    resource_version: str | None
    packed: bytes

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> Written:
        return cls(
            (obj.get("metadata") or {}).get("resourceVersion"),
            zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1),
        )

    def object(self) -> dict[str, Any]:
        """A fresh copy: the caller may change it."""
        obj: dict[str, Any] = json.loads(zlib.decompress(self.packed))
        return obj


# How long a kept object is trusted without a watch event, a write or a read confirming it:
# a watch that stopped (RBAC without `watch`, a CRD installed after the start) costs a read
# per object every few minutes, not a stale view for ever.
WATCHED_TRUST_S = 300.0
SWEEP_EVERY = 1024


@dataclass
class WatchedObjects:
    """Objects lockgate owns (Traefik's route objects), as their watch last delivered them,
    lockgate last wrote them or a read found them: a round reads them here instead of an API
    call each. A miss is read from the API (and kept, absent ones too); a watch event or a
    write's answer replaces an entry, a deletion keeps it as absent. What is kept of each
    object is what a router compares: its spec and annotations."""

    clock: Callable[[], float] = time.monotonic
    # (plural, namespace, name) -> (when confirmed, the object or None: absent)
    _kept: dict[tuple[str, str, str], tuple[float, dict[str, Any] | None]] = field(
        default_factory=dict
    )
    # (namespace, application) -> when one of its objects last changed (`put`)
    _changed: dict[tuple[str, str], float] = field(default_factory=dict)
    _puts: int = 0

    def get(self, plural: str, namespace: str, name: str) -> tuple[bool, dict[str, Any] | None]:
        """(known, the object): known False when it must be read from the API."""
        kept = self._kept.get((plural, namespace, name))
        if kept is None or self.clock() - kept[0] >= WATCHED_TRUST_S:
            return False, None
        return True, kept[1]

    def put(
        self,
        plural: str,
        namespace: str,
        name: str,
        obj: Mapping[str, Any] | None,
        app: str | None = None,
        read: bool = False,
    ) -> bool:
        """Keeps what was `read`, written or delivered; True when it differs from what was
        kept (or nothing was, unless it was read: a read tells what is, not that it just
        changed). A change of one of Application `app`'s objects is when Traefik's looks
        must have begun after to show it (`changed_at`)."""
        now = self.clock()
        key = (plural, namespace, name)
        before = self._kept.get(key)
        kept = _kept_of(obj)
        self._kept[key] = (now, kept)
        changed = before[1] != kept if before is not None else not read
        if changed and app:
            self._changed[(namespace, app)] = now
        self._puts += 1
        if self._puts % SWEEP_EVERY == 0:  # what nobody confirmed for long: a deleted app's
            for old in [k for k, (at, _) in self._kept.items() if now - at >= WATCHED_TRUST_S]:
                del self._kept[old]
            for owner in [k for k, at in self._changed.items() if now - at >= WATCHED_TRUST_S]:
                del self._changed[owner]
        return changed

    def seen(self, plural: str, event: str, obj: Mapping[str, Any]) -> bool:
        """A watch event of the object. True when it differs from what was kept: somebody
        else changed it (lockgate's own writes are kept as their answer came)."""
        meta = obj.get("metadata") or {}
        key = (plural, meta.get("namespace", ""), meta.get("name", ""))
        known = key in self._kept
        app = (meta.get("labels") or {}).get(LABEL_APP)
        changed = self.put(*key, None if event == "DELETED" else obj, app=app)
        return known and changed

    def changed_at(self, namespace: str, app: str) -> float:
        """When (`clock`) one of the Application's objects last changed here: a look at
        Traefik from before then may not show it. 0 when none has for long."""
        return self._changed.get((namespace, app), 0.0)

    def __len__(self) -> int:
        return len(self._kept)


def _kept_of(obj: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """A copy of what a router reads (the watch's bodies are kopf's; the rest is dropped)."""
    if obj is None:
        return None
    meta = obj.get("metadata") or {}
    return copy.deepcopy(
        {
            "metadata": {"name": meta.get("name"), "annotations": meta.get("annotations") or {}},
            "spec": obj.get("spec") or {},
        }
    )
