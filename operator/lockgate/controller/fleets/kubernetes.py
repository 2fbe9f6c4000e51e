"""An Application on Kubernetes: two slots of Pods (KubernetesTarget) weighted by Traefik's
CRD provider (TraefikCrdRouter) or through a Gateway API HTTPRoute (GatewayApiRouter), the
router chosen once, in `router_for`. Every record is in the cluster, so nothing outlives a
round."""

from __future__ import annotations

from typing import Any, Protocol

from lockgate.api import ApplicationSpec, DeploymentSpec
from lockgate.api.application import TRAEFIK_API_VERSIONS
from lockgate.engine import NO_ROUTES, InstanceSet, Routes
from lockgate.engine.model import Role
from lockgate.names import service_name
from lockgate.targets.kubernetes import KubernetesTarget
from lockgate.traffic.gateway_api import GatewayApiRouter
from lockgate.traffic.traefik_crd import TraefikCrdRouter

from ..runtime import Runtime
from .base import Census, FleetUnusable, FleetView, record_stable


class TrafficRouter(Protocol):
    """How an Application's traffic moves between its two Services on Kubernetes."""

    async def problem(self) -> str | None:
        """Why the route cannot be used as configured, naming the field; None: it can."""

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


async def router_for(rt: Runtime, app_obj: dict[str, Any], app: ApplicationSpec) -> TrafficRouter:
    """The Application's router: an HTTPRoute with spec.traffic.gatewayAPI, else a
    TraefikService (and IngressRoute) of the Traefik CRD version the Application names, or
    else the newest the cluster serves. Chosen here and nowhere else. Raises FleetUnusable
    when the cluster serves none of Traefik's versions lockgate writes."""
    api_url = rt.settings.traefik_api_url
    if app.traffic.gateway_api is not None:
        return GatewayApiRouter(rt.kube, app_obj, app, api_url, rt.http)
    version = app.traffic.traefik.api_group or await rt.api_versions.newest(TRAEFIK_API_VERSIONS)
    if version is None:
        raise FleetUnusable(
            "spec.traffic.traefik.apiGroup: the cluster serves none of "
            f"{', '.join(TRAEFIK_API_VERSIONS)}: are Traefik's CRDs installed?"
        )
    return TraefikCrdRouter(rt.kube, app_obj, app, api_url, rt.http, version)


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

    async def observe(self) -> FleetView:
        router = await self.router()
        problem = await router.problem()
        if problem:
            raise FleetUnusable(problem)
        stable, canary = await self._sets()
        live = await router.live_weights()
        routes = await router.live_routes()
        # Traefik loads a Ready Pod, a new split and a new route a moment later: only its
        # API tells (no watch event does), so the driver looks again until it has.
        self.settling = self.target.lagging or live is None or routes is None
        return FleetView(stable, canary, live, live_routes=routes)

    async def resource_instances(self) -> dict[Role, tuple[str, ...]]:
        """`<namespace>/<pod>` of the running Pods of each role's slot (what metrics.k8s.io
        reports per Pod)."""
        stable_slot = await self.target.stable_slot(self.namespace, self.name)
        out: dict[Role, tuple[str, ...]] = {}
        slots: tuple[tuple[Role, str], ...] = (
            ("stable", stable_slot),
            ("canary", self.target.other(stable_slot)),
        )
        for role, slot in slots:
            pods = await self.target.pods(self.namespace, self.name, slot)
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

    async def promote(self, release: str, image: str, deployment: str) -> None:
        await self.target.promote(self.app_obj, self.app)
        await record_stable(self.kube, self.app_obj, image, deployment)

    async def ensure_owned(self) -> None:
        await self.target.ensure_services(self.app_obj, self.app)
        await (await self.router()).ensure_route()

    async def census(self, rolling_out: bool) -> Census:
        stable, canary = await self._sets()
        return Census(
            stable_image=stable.image,
            desired=len(self.app.units()),
            ready=len(stable.ready) + (len(canary.ready) if rolling_out else 0),
            updated=len(canary.units) if rolling_out else len(stable.units),
            settling=self.target.lagging,
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
