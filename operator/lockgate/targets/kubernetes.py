"""Kubernetes workloads: two slots per Application, alternating between stable and canary.

Each slot is an apps/v1 Deployment `<app>-a` / `<app>-b`. Deployments rather than bare
ReplicaSets because they replace failed Pods and keep a revision history that `kubectl
rollout` users know. lockgate changes a slot's template only while the slot carries no
traffic (the spare slot, before a canary starts in it), so the slot's strategy replaces every
old Pod at once and starts every new one at once (RollingUpdate with maxSurge and
maxUnavailable 100%, see SLOT_STRATEGY): Recreate started nothing until the previous Pods had
fully terminated, drain included, which held a canary started after an aborted one for the
aborted one's whole drain. Old and new Pods may so coexist for a moment; the readiness count
is not blurred by it, because only Pods of the slot's own release (their release-hash label)
that are not terminating count (`_observe_slot`). Which slot is stable is read from the
`<app>-stable` Service's selector, so the cluster itself is the record and nothing is kept
in memory.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes.client.exceptions import ApiException

from lockgate.api.application import ApplicationSpec
from lockgate.engine import InstanceSet
from lockgate.kube import Kube, owner_reference
from lockgate.names import (
    ANNOTATION_RELEASE,
    LABEL_APP,
    LABEL_RELEASE_HASH,
    LABEL_ROLE,
    LABEL_SLOT,
    service_name,
)

SLOTS = ("a", "b")
STOP_SECONDS = 10
"""How long a container has between SIGTERM and SIGKILL once its drain is over."""
SLOT_STRATEGY: dict[str, Any] = {
    "type": "RollingUpdate",
    "rollingUpdate": {"maxSurge": "100%", "maxUnavailable": "100%"},
}
"""A slot's apps/v1 Deployment strategy: on a template change, all new Pods are created at
once while all old ones are stopped at once, without waiting for them to be gone. Safe
because the engine re-templates only a slot without traffic (the old Pods serve nothing), and
a terminating Pod's endpoint is no longer ready at once: Traefik v3.6 lists a terminating
endpoint that still serves as a "fenced" server, which its balancer never picks (only a
sticky cookie naming it does), and drops it once it stops serving."""


def of_release(pods: Iterable[PodInfo], release: str | None) -> list[PodInfo]:
    """The Pods that run `release` and are not terminating: a re-templated slot's previous
    Pods drain beside the new ones for a while, and count for nothing."""
    wanted = release_hash(release) if release else None
    return [p for p in pods if p.labels.get(LABEL_RELEASE_HASH) == wanted and not p.deleting]


def slot_name(app: str, slot: str) -> str:
    return f"{app}-{slot}"


def release_hash(release: str) -> str:
    return hashlib.sha256(release.encode()).hexdigest()[:10]


def pod_template(
    app_name: str, app: ApplicationSpec, slot: str, image: str, release: str
) -> dict[str, Any]:
    """The user's PodTemplateSpec with lockgate's image, labels and a readiness probe."""
    assert app.kubernetes is not None
    template: dict[str, Any] = copy.deepcopy(app.kubernetes.template) or {}
    meta = template.setdefault("metadata", {})
    meta.setdefault("labels", {}).update(
        {LABEL_APP: app_name, LABEL_SLOT: slot, LABEL_RELEASE_HASH: release_hash(release)}
    )
    meta.setdefault("annotations", {})[ANNOTATION_RELEASE] = release
    spec = template.setdefault("spec", {})
    containers = spec.setdefault("containers", [])
    if not containers:
        containers.append({"name": "app"})
    container = next((c for c in containers if c.get("name") == "app"), containers[0])
    container["image"] = image
    container.setdefault("name", "app")
    if not any(p.get("containerPort") == app.port for p in container.get("ports", [])):
        container.setdefault("ports", []).append({"containerPort": app.port, "name": "http"})
    drain = app.kubernetes.drain_seconds
    if drain and "preStop" not in container.get("lifecycle", {}):
        # Endpoint removal reaches the proxy a moment after the Pod starts terminating; the
        # sleep keeps it answering meanwhile, so draining loses no request.
        container.setdefault("lifecycle", {})["preStop"] = {"sleep": {"seconds": drain}}
        # The grace covers the drain plus 10 s to stop, as on Docker hosts. Not Kubernetes'
        # 30 s default: a deleted namespace waits out its Pods' grace before it is gone.
        grace = spec.get("terminationGracePeriodSeconds") or 0
        spec["terminationGracePeriodSeconds"] = max(grace, drain + STOP_SECONDS)
    if "readinessProbe" not in container:
        check = app.health_check
        container["readinessProbe"] = {
            "httpGet": {"path": check.http.path, "port": check.http.port or app.port},
            "periodSeconds": check.interval_seconds,
            "timeoutSeconds": check.timeout_seconds,
            "failureThreshold": check.unhealthy_threshold,
        }
    return template


@dataclass(frozen=True)
class PodInfo:
    """What lockgate reads of a Pod of a slot."""

    name: str
    labels: Mapping[str, str]
    deleting: bool
    ready: bool  # condition Ready is True
    ip: str
    phase: str | None

    @classmethod
    def of_body(cls, pod: Mapping[str, Any]) -> PodInfo:
        """From the Pod as the API server sends it (JSON)."""
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        return cls(
            name=meta.get("name", ""),
            labels=dict(meta.get("labels") or {}),
            deleting=bool(meta.get("deletionTimestamp")),
            ready=any(
                c.get("type") == "Ready" and c.get("status") == "True"
                for c in status.get("conditions") or []
            ),
            ip=status.get("podIP") or "",
            phase=status.get("phase"),
        )


@dataclass(frozen=True)
class SlotInfo:
    """What an observation reads of a slot's apps/v1 Deployment."""

    replicas: int
    release: str | None  # the template's release annotation
    image: str | None  # the `app` container's image (else the first container's)

    @classmethod
    def of_body(cls, body: Mapping[str, Any]) -> SlotInfo:
        """From the object as the API server sends it (JSON), read or watched."""
        spec = body.get("spec") or {}
        template = spec.get("template") or {}
        annotations = (template.get("metadata") or {}).get("annotations") or {}
        containers = (template.get("spec") or {}).get("containers") or []
        image = containers[0].get("image") if containers else None
        for c in containers:
            if c.get("name") == "app":
                image = c.get("image")
        return cls(int(spec.get("replicas") or 0), annotations.get(ANNOTATION_RELEASE), image)


# (namespace, application, slot) -> its Pods, as a watch keeps them (None: list them).
PodSource = Callable[[str, str, str], Awaitable[list[PodInfo]]]
# (namespace, application, slot) -> its Deployment as a watch keeps it (None: no Deployment).
SlotSource = Callable[[str, str, str], Awaitable[SlotInfo | None]]


class KubernetesTarget:
    """Runs an Application's instances as Pods in two slots. With `pods` and `slots`, what an
    observation reads of the Pods and of the slots' Deployments comes from what a watch
    keeps instead of a call per read. (Writes still read first: a slot is scaled or
    re-templated, and the stable slot is read from its Service, always from the API.)"""

    def __init__(
        self, kube: Kube, pods: PodSource | None = None, slots: SlotSource | None = None
    ) -> None:
        self.kube = kube
        self.pod_source = pods
        self.slot_source = slots
        # After `observe`: some Pod is Ready but not yet among the proxy's servers (the
        # proxy loads it a moment later, and nothing but its API tells when).
        self.lagging = False

    async def stable_slot(self, namespace: str, app: str) -> str:
        svc = await self.kube.get_or_none(
            self.kube.core.read_namespaced_service, service_name(app, "stable"), namespace
        )
        selector = ((svc.get("spec") or {}).get("selector") or {}) if svc is not None else {}
        slot = selector.get(LABEL_SLOT, "a")
        return slot if slot in SLOTS else "a"

    @staticmethod
    def other(slot: str) -> str:
        return "b" if slot == "a" else "a"

    async def ensure_services(self, app_obj: dict[str, Any], app: ApplicationSpec) -> None:
        """Create `<app>-stable` and `<app>-canary` if missing; never touch their selectors
        (those record which slot is stable and change only on promotion)."""
        namespace, name = app_obj["metadata"]["namespace"], app_obj["metadata"]["name"]
        for role, slot in (("stable", "a"), ("canary", "b")):
            existing = await self.kube.get_or_none(
                self.kube.core.read_namespaced_service, service_name(name, role), namespace
            )
            if existing is None:
                await self.kube.apply(
                    "v1", "services", namespace, self._service(app_obj, app, role, slot)
                )

    def _service(
        self, app_obj: dict[str, Any], app: ApplicationSpec, role: str, slot: str
    ) -> dict[str, Any]:
        name = app_obj["metadata"]["name"]
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": service_name(name, role),
                "labels": {LABEL_APP: name, LABEL_ROLE: role},
                "ownerReferences": [owner_reference(app_obj)],
            },
            "spec": {
                "selector": {LABEL_APP: name, LABEL_SLOT: slot},
                "ports": [{"name": "http", "port": app.port, "targetPort": app.port}],
            },
        }

    async def observe(
        self,
        namespace: str,
        app_name: str,
        units: tuple[str, ...],
        serving: Mapping[str, frozenset[str]] | None = None,
    ) -> tuple[InstanceSet, InstanceSet]:
        """Stable and canary sets. The engine names units replica-1..N; the canary set
        grows from the front of that list and the stable set shrinks from the front, so
        counts are mapped to names that way. With `serving` (per role, the Pod IPs the
        proxy has loaded as servers), a Ready Pod counts as ready only once the proxy
        lists it: a weight given earlier would be answered 503."""
        serving = serving or {}
        self.lagging = False
        stable_slot = await self.stable_slot(namespace, app_name)
        stable = await self._observe_slot(
            namespace, app_name, stable_slot, units, serving.get("stable"), from_end=True
        )
        canary = await self._observe_slot(
            namespace,
            app_name,
            self.other(stable_slot),
            units,
            serving.get("canary"),
            from_end=False,
        )
        return stable, canary

    async def _observe_slot(
        self,
        namespace: str,
        app: str,
        slot: str,
        units: tuple[str, ...],
        serving: frozenset[str] | None,
        *,
        from_end: bool,
    ) -> InstanceSet:
        workload = await self._slot(namespace, app, slot)
        if workload is None or not workload.replicas:
            pods_left = await self._pods(namespace, app, slot)
            if not pods_left:
                return InstanceSet()
        release = workload.release if workload else None
        image = workload.image if workload else None
        existing = ready = 0
        for pod in of_release(await self._pods(namespace, app, slot), release):
            existing += 1
            if pod.ready and (serving is None or pod.ip in serving):
                ready += 1
            elif pod.ready:
                self.lagging = True
        n = len(units)
        existing, ready = min(existing, n), min(ready, n)
        if from_end:
            names, ready_names = units[n - existing :], units[n - ready :]
        else:
            names, ready_names = units[:existing], units[:ready]
        return InstanceSet(release, image, tuple(names), tuple(ready_names))

    async def _slot(self, namespace: str, app: str, slot: str) -> SlotInfo | None:
        if self.slot_source is not None:
            return await self.slot_source(namespace, app, slot)
        workload = await self.kube.get_or_none(
            self.kube.apps.read_namespaced_deployment, slot_name(app, slot), namespace
        )
        return SlotInfo.of_body(workload) if workload is not None else None

    async def current_pods(self, namespace: str, app: str, slot: str) -> list[PodInfo]:
        """The Pods of one slot that run its current release and are not terminating (a
        re-templated slot's previous Pods drain beside the new ones for a while)."""
        workload = await self._slot(namespace, app, slot)
        if workload is None or workload.release is None:
            return []
        return of_release(await self._pods(namespace, app, slot), workload.release)

    async def _pods(self, namespace: str, app: str, slot: str) -> list[PodInfo]:
        if self.pod_source is not None:
            return await self.pod_source(namespace, app, slot)
        selector = f"{LABEL_APP}={app},{LABEL_SLOT}={slot}"
        result = await self.kube.call(
            self.kube.core.list_namespaced_pod, namespace, label_selector=selector
        )
        return [PodInfo.of_body(pod) for pod in result.get("items") or []]

    async def ensure(
        self,
        app_obj: dict[str, Any],
        app: ApplicationSpec,
        role: str,
        image: str | None,
        count: int,
        release: str | None,
    ) -> None:
        namespace, name = app_obj["metadata"]["namespace"], app_obj["metadata"]["name"]
        stable_slot = await self.stable_slot(namespace, name)
        slot = stable_slot if role == "stable" else self.other(stable_slot)
        if role == "canary":
            # The engine changes canary instances only while the canary carries no traffic,
            # so this is when `<app>-canary` can follow the spare slot after a promotion.
            await self._point_canary_service(app_obj, app, slot)
        if count == 0 or image is None:
            await self._scale(namespace, slot_name(name, slot), 0)
            return
        if role == "stable" and await self._scale(namespace, slot_name(name, slot), count):
            # The stable slot is only ever scaled: re-templating it would restart Pods that
            # serve traffic (e.g. after an edit of the Application's template). A stable
            # slot scaled to zero (Recreate stops every old instance first) is observed
            # without a release; it is scaled back all the same when a rollback wants it.
            return
        if release is None:
            return  # no slot to scale, and nothing to name a new one after
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": slot_name(name, slot),
                "labels": {LABEL_APP: name, LABEL_SLOT: slot},
                "annotations": {ANNOTATION_RELEASE: release},
                "ownerReferences": [owner_reference(app_obj)],
            },
            "spec": {
                "replicas": count,
                "strategy": copy.deepcopy(SLOT_STRATEGY),
                "selector": {"matchLabels": {LABEL_APP: name, LABEL_SLOT: slot}},
                "template": pod_template(name, app, slot, image, release),
            },
        }
        await self.kube.apply("apps/v1", "deployments", namespace, body)

    async def _scale(self, namespace: str, name: str, replicas: int) -> bool:
        """Scale an existing slot; False when it does not exist."""
        existing = await self.kube.get_or_none(
            self.kube.apps.read_namespaced_deployment, name, namespace
        )
        if existing is None:
            return False
        if (existing.get("spec") or {}).get("replicas") != replicas:
            try:
                await self.kube.call(
                    self.kube.apps.patch_namespaced_deployment_scale,
                    name,
                    namespace,
                    {"spec": {"replicas": replicas}},
                )
            except ApiException as err:
                # Deleted since it was read (its namespace or Application is going): a
                # deletion handler retried for this would hold the namespace for a minute.
                if err.status == 404:
                    return False
                raise
        return True

    async def promote(self, app_obj: dict[str, Any], app: ApplicationSpec) -> None:
        """Make the canary slot stable by pointing `<app>-stable` at it. `<app>-canary` keeps
        selecting the same Pods until its weight is 0 (see `ensure`): swapping both selectors
        at once would briefly send the canary's traffic to the old, possibly empty, slot."""
        namespace, name = app_obj["metadata"]["namespace"], app_obj["metadata"]["name"]
        new_stable = self.other(await self.stable_slot(namespace, name))
        await self.kube.apply(
            "v1", "services", namespace, self._service(app_obj, app, "stable", new_stable)
        )

    async def _point_canary_service(
        self, app_obj: dict[str, Any], app: ApplicationSpec, slot: str
    ) -> None:
        namespace, name = app_obj["metadata"]["namespace"], app_obj["metadata"]["name"]
        svc = await self.kube.get_or_none(
            self.kube.core.read_namespaced_service, service_name(name, "canary"), namespace
        )
        selector = ((svc.get("spec") or {}).get("selector") or {}) if svc is not None else {}
        if svc is None or selector.get(LABEL_SLOT) != slot:
            await self.kube.apply(
                "v1", "services", namespace, self._service(app_obj, app, "canary", slot)
            )
