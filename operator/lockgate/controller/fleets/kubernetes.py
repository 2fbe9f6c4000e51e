"""An Application on Kubernetes: two slots of Pods (KubernetesTarget) weighted by Traefik's
CRD provider (TraefikCrdRouter) or through a Gateway API HTTPRoute (GatewayApiRouter), the
router chosen once, in `router_for`. Every record is in the cluster, so nothing outlives a
round."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol

from lockgate.api import ApplicationSpec, DeploymentSpec
from lockgate.api.application import TRAEFIK_API_VERSIONS
from lockgate.engine import NO_ROUTES, InstanceSet, RoutedUnits, Routes
from lockgate.engine.model import Role
from lockgate.kube import DiscoveryPending
from lockgate.names import LABEL_APP, service_name
from lockgate.targets.kubernetes import KubernetesTarget
from lockgate.traffic.gateway_api import GATEWAY_API_VERSIONS, GatewayApiRouter
from lockgate.traffic.traefik_crd import TraefikCrdRouter
from lockgate.traffic.traefik_observer import TraefikWatch

from ..runtime import Runtime
from .base import Census, FleetUnusable, FleetView, record_stable


class TrafficRouter(Protocol):
    """How an Application's traffic moves between its two Services on Kubernetes."""

    async def problem(self) -> str | None:
        """Why the route cannot be used as configured, naming the field; None: it can."""

    def owned(self) -> frozenset[tuple[str, str]]:
        """(plural, name) of each route object the router owns as the Application is now."""

    def owns_entry_route(self) -> bool:
        """Whether clients reach the Application through a route the router owns (else
        through one of the user's: an IngressRoute to the TraefikService, a routeRef)."""

    async def ensure_route(self) -> None:
        """(Re)create what the router owns outside rollouts."""

    async def serving(self) -> dict[str, frozenset[str]] | None:
        """Per role, the IPs the proxy has loaded; None without the proxy's API."""

    async def set_weights(self, stable: int, canary: int) -> None:
        """Declare the split."""

    async def live_weights(self) -> tuple[int, int] | None:
        """The declared split once the proxy serves it; None until then."""

    async def set_routes(self, routes: Routes) -> None:
        """Declare the header route and the mirror."""

    async def live_routes(self) -> Routes | None:
        """The declared routes once the proxy serves them; None until then."""

    def watch(self) -> TraefikWatch | None:
        """What of Traefik's API answers the reads above (None without its API)."""

    def reading_once(self) -> AbstractContextManager[None]:
        """Within it, the reads above may share what they read of the API (one
        observation)."""


async def router_for(rt: Runtime, app_obj: dict[str, Any], app: ApplicationSpec) -> TrafficRouter:
    """The Application's router: an HTTPRoute with spec.traffic.gatewayAPI, else a
    TraefikService (and IngressRoute); each of the newest version the cluster serves (for
    Traefik's CRDs, unless the Application names one). Chosen here and nowhere else. Raises
    FleetUnusable, naming the field, when the cluster serves none of the versions lockgate
    writes."""
    api_url = rt.settings.traefik_api_url
    if app.traffic.gateway_api is not None:
        version = await _newest(rt, GATEWAY_API_VERSIONS, "gatewayAPI", "the Gateway API's")
        return GatewayApiRouter(rt.kube, app_obj, app, api_url, rt.http, version)
    version = app.traffic.traefik.api_group or await _newest(
        rt, TRAEFIK_API_VERSIONS, "traefik.apiGroup", "Traefik's"
    )
    return TraefikCrdRouter(
        rt.kube, app_obj, app, api_url, rt.http, version, rt.route_objects, rt.traefik
    )


async def _newest(rt: Runtime, versions: Sequence[str], field: str, whose: str) -> str:
    version = await rt.api_versions.newest(versions)
    if version is None:
        raise FleetUnusable(
            f"spec.traffic.{field}: the cluster serves none of "
            f"{', '.join(versions)}: are {whose} CRDs installed?"
        )
    return version


# Every kind of route object a router may own, with the versions lockgate writes it in.
ROUTE_KINDS = (
    (TRAEFIK_API_VERSIONS, "traefikservices"),
    (TRAEFIK_API_VERSIONS, "ingressroutes"),
    (GATEWAY_API_VERSIONS, "httproutes"),
)


class RouteSwitchPending(Exception):
    """The Application's route changed kind or name, and Traefik does not serve the new one
    yet: the old one stays until it does (a moment of 404s otherwise)."""


def deployment_of(release: str) -> str:
    """The Deployment a release (`<deployment>/<revision>`) belongs to."""
    return release.rpartition("/")[0]


class KubernetesFleet:
    poll_while_moving: float | None = None  # Pods are watched: their changes wake the driver
    status_poll: float | None = None  # likewise the Application's status loop
    removes_on_deletion = False  # owner references: the garbage collector removes everything

    def __init__(
        self, rt: Runtime, app_obj: dict[str, Any], app: ApplicationSpec, release: str | None
    ) -> None:
        self.kube = rt.kube
        self.app_obj = app_obj
        self.app = app
        self.namespace: str = app_obj["metadata"]["namespace"]
        self.name: str = app_obj["metadata"]["name"]
        self.release = release
        self.target = KubernetesTarget(rt.kube, rt.pod_source(), rt.slot_source())
        self.rt = rt
        self._router: TrafficRouter | None = None
        self.settling = False

    async def router(self) -> TrafficRouter:
        if self._router is None:
            self._router = await router_for(self.rt, self.app_obj, self.app)
        return self._router

    def metric_sources(self) -> dict[Role, str]:
        # Traefik names a Kubernetes Service's leaf `<namespace>-<service>-<port>`.
        return {
            role: f"{self.namespace}-{service_name(self.name, role)}-"
            for role in ("stable", "canary")
        }

    async def _sets(self, *, in_proxy: bool = True) -> tuple[InstanceSet, InstanceSet]:
        serving = await (await self.router()).serving() if in_proxy else None
        return await self.target.observe(self.namespace, self.name, self.app.units(), serving)

    async def observe(self, routed: RoutedUnits | None = None) -> FleetView:
        # `routed` does not apply: a rollout's Pods are routed by their slot's Service.
        router = await self.router()
        problem = await router.problem()
        if problem:
            raise FleetUnusable(problem)
        with router.reading_once():
            stable, canary = await self._sets()
            live = await router.live_weights()
            routes = await router.live_routes()
        # Traefik loads a Ready Pod, a new split and a new route a moment later: only its
        # API tells (no watch event does), so the driver looks again once it has changed
        # (without its API: until the objects Traefik reads are there).
        self.settling = self.target.lagging or live is None or routes is None
        return FleetView(stable, canary, live, live_routes=routes)

    @property
    def traefik_watch(self) -> TraefikWatch | None:
        # Asked after the round acted: what it wrote to the route objects is in the watch.
        if not self.settling or self._router is None:
            return None
        return self._router.watch()

    async def resource_instances(self) -> dict[Role, tuple[str, ...]]:
        """`<namespace>/<pod>` of the running Pods of each role's slot (what metrics.k8s.io
        reports per Pod): those of the slot's release, not those of a previous one still
        draining beside them."""
        stable_slot = await self.target.stable_slot(self.namespace, self.name)
        out: dict[Role, tuple[str, ...]] = {}
        slots: tuple[tuple[Role, str], ...] = (
            ("stable", stable_slot),
            ("canary", self.target.other(stable_slot)),
        )
        for role, slot in slots:
            pods = await self.target.current_pods(self.namespace, self.name, slot)
            out[role] = tuple(f"{self.namespace}/{p.name}" for p in pods if p.phase == "Running")
        return out

    async def preflight(self, spec: DeploymentSpec, has_stable: bool) -> str | None:
        return None  # the scheduler places Pods; a Pod that cannot start shows as not ready

    async def ensure(
        self, role: Role, image: str | None, units: tuple[str, ...], release: str | None
    ) -> None:
        await self.target.ensure(self.app_obj, self.app, role, image, len(units), release)

    async def set_weights(self, stable: int, canary: int) -> None:
        await (await self.router()).set_weights(stable, canary)

    async def set_routes(self, routes: Routes) -> None:
        await (await self.router()).set_routes(routes)

    async def flush(self) -> None:
        return None  # each route write above is already one object's update

    async def promote(self, release: str, image: str, deployment: str) -> None:
        await self.target.promote(self.app_obj, self.app)
        await record_stable(self.kube, self.app_obj, image, deployment)

    async def ensure_owned(self) -> None:
        await self.target.ensure_services(self.app_obj, self.app)
        router = await self.router()
        await router.ensure_route()
        await self._remove_stale_routes(router)

    async def _remove_stale_routes(self, router: TrafficRouter) -> None:
        """Delete the route objects of this Application that its router no longer owns (the
        Application moved between a TraefikService and an HTTPRoute, or renamed its route),
        once Traefik serves the new route. Raises RouteSwitchPending until it does."""
        uid = self.app_obj["metadata"]["uid"]
        owned = router.owned()
        stale = []
        for versions, plural in ROUTE_KINDS:
            try:
                version = await self.rt.api_versions.newest(versions)
            except DiscoveryPending:
                version = None  # nothing of a group not listed can be looked at now
            if version is None:
                continue
            for obj in await self.rt.kube.list_labelled(
                version, plural, self.namespace, f"{LABEL_APP}={self.name}"
            ):
                meta = obj.get("metadata") or {}
                mine = any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or [])
                if mine and (plural, meta.get("name")) not in owned:
                    stale.append((version, plural, str(meta.get("name")), str(meta.get("uid"))))
        if not stale:
            return
        if router.owns_entry_route() and await router.live_weights() is None:
            raise RouteSwitchPending(
                "waiting for Traefik to serve the Application's new route before removing "
                f"the old one ({', '.join(f'{p}/{n}' for _, p, n, _ in stale)})"
            )
        for version, plural, name, obj_uid in stale:
            await self.rt.kube.delete(version, plural, self.namespace, name, obj_uid)
            # Gone for the next round too, before the watch says so (a move back recreates it).
            self.rt.route_objects.put(plural, self.namespace, name, None)

    async def census(self, rolling_out: bool) -> Census:
        stable, canary = await self._sets()
        lagging = self.target.lagging
        return Census(
            stable_image=stable.image,
            desired=len(self.app.units()),
            ready=len(stable.ready) + (len(canary.ready) if rolling_out else 0),
            updated=len(canary.units) if rolling_out else len(stable.units),
            settling=lagging,
            watch=(await self.router()).watch() if lagging else None,
        )

    async def remove_rollout(self) -> None:
        # The canary goes: back to stable even before Traefik has loaded all its servers.
        stable, canary = await self._sets(in_proxy=False)
        router = await self.router()
        await router.set_routes(NO_ROUTES)
        if stable.ready:
            await router.set_weights(100, 0)
        if (
            self.release is not None
            and canary.release
            and deployment_of(canary.release) == deployment_of(self.release)
        ):
            await self.target.ensure(self.app_obj, self.app, "canary", None, 0, None)

    async def remove_all(self) -> None:
        return None  # everything carries an owner reference to the Application
