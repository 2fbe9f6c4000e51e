"""A small async face on the kubernetes client: every call runs in a worker thread, so the
controller's event loop never blocks on the network."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from prometheus_client import Counter

from lockgate.names import API_VERSION, GROUP, VERSION

T = TypeVar("T")
REQUESTS = Counter(
    "lockgate_api_requests_total",
    "Kubernetes API requests lockgate's own client made (kopf's watches and patches aside)",
    ["call"],
)
API_THREADS = 32
"""Worker threads for API calls (the controller's bounded default executor), and as many
pooled connections: a smaller pool drops and re-opens a TLS connection for each call beyond
it."""


def load_config() -> client.ApiClient:
    """In-cluster configuration when running in a Pod, else the kubeconfig (KUBECONFIG)."""
    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = API_THREADS
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


class Kube:
    """The API groups lockgate uses, each call off the event loop."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.custom = client.CustomObjectsApi(api)

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        REQUESTS.labels(getattr(fn, "__name__", "other")).inc()
        return await asyncio.to_thread(fn, *args, **kwargs)

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
        patch = (
            self.custom.patch_namespaced_custom_object_status
            if status
            else self.custom.patch_namespaced_custom_object
        )
        result: dict[str, Any] = await self.call(
            patch, GROUP, VERSION, namespace, plural, name, body
        )
        return result

    async def get_application(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_own("applications", namespace, name)

    async def read_secret(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data, decoded; None when it does not exist."""
        secret = await self.get_or_none(self.core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        return {
            key: base64.b64decode(value).decode("utf-8", "replace")
            for key, value in (secret.data or {}).items()
        }

    async def patch_application_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._patch_own("applications", namespace, name, body, status=True)

    async def get_deployment(self, namespace: str, name: str) -> dict[str, Any] | None:
        return await self._get_own("deployments", namespace, name)

    async def patch_deployment_status(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> None:
        await self._patch_own("deployments", namespace, name, body, status=True)

    async def patch_deployment(
        self, namespace: str, name: str, body: dict[str, Any]
    ) -> dict[str, Any]:
        return await self._patch_own("deployments", namespace, name, body, status=False)

    async def apply(
        self, group_version: str, plural: str, namespace: str, body: dict[str, Any]
    ) -> None:
        """Create or update an object lockgate owns, by server-side apply as field manager
        `lockgate` (forced: these objects are lockgate's, a GitOps sync must not hold them)."""
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
            return
        await self.call(
            self.custom.patch_namespaced_custom_object,
            group,
            version,
            namespace,
            plural,
            name,
            body,
            **options,
        )

    async def served_versions(self, group: str) -> frozenset[str]:
        """`group/version` of each version the API server serves of an API group (none when
        it serves no such group), from its discovery document of all groups (/apis)."""
        groups = await self.call(client.ApisApi(self.api).get_api_versions)
        return frozenset(
            v.group_version
            for g in groups.groups or []
            if g.name == group
            for v in g.versions or []
        )


DISCOVERY_TTL_S = 60.0
"""How long an API group's served versions are taken as known: a CRD upgraded under a running
operator is followed within this time, at one discovery request per group."""
DISCOVERY_GRACE_S = 30.0
"""How long an API group never listed may stay unlisted before lockgate says it is not served:
an API server that has just started lists a CRD's group only once it has loaded the CRD."""


class DiscoveryPending(Exception):
    """The API server does not list a group yet: a moment's answer, not a verdict."""


class ApiVersions:
    """Which of the versions lockgate can write an API group's server serves, asked once per
    DISCOVERY_TTL_S for all the Applications that use the group."""

    def __init__(self, kube: Kube, clock: Callable[[], float] = time.monotonic) -> None:
        self.kube = kube
        self.clock = clock
        self._served: dict[str, tuple[float, frozenset[str]]] = {}
        self._empty_since: dict[str, float] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    async def newest(self, known: Sequence[str]) -> str | None:
        """The first of `known` (`group/version`, newest first, all of one group) that the
        server serves; None when it serves none of them. Raises DiscoveryPending while a
        group never listed has been missing for less than DISCOVERY_GRACE_S."""
        group = known[0].rpartition("/")[0]
        served = await self._served_of(group)
        return next((v for v in known if v in served), None)

    async def _served_of(self, group: str) -> frozenset[str]:
        async with self._locks.setdefault(group, asyncio.Lock()):
            now = self.clock()
            cached = self._served.get(group)
            if cached is not None and now - cached[0] < DISCOVERY_TTL_S:
                return cached[1]
            served = await self.kube.served_versions(group)
            if not served:
                # An API server that is starting lists a CRD's group only once it has loaded
                # the CRD: an empty answer is asked again next time, and never replaces a
                # version served before (a control plane restart rolled a good canary back).
                if cached is not None:
                    return cached[1]
                # An operator starting with its API server knows nothing yet: only an
                # answer that stays empty means the CRDs are not installed.
                since = self._empty_since.setdefault(group, now)
                if now - since < DISCOVERY_GRACE_S:
                    raise DiscoveryPending(
                        f"the API server lists no {group} API group yet: asking again"
                    )
                return served
            self._empty_since.pop(group, None)
            self._served[group] = (self.clock(), served)
            return served
