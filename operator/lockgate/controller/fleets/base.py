"""The one interface through which the controller runs an Application's instances and routes
its traffic, whatever the target: Kubernetes slots behind Traefik's CRD provider, or
containers on Docker hosts behind its file provider."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from lockgate.api import DeploymentSpec
from lockgate.engine import NO_ROUTES, InstanceSet, RoutedUnits, Routes
from lockgate.engine.model import Role
from lockgate.kube import Kube
from lockgate.traffic.traefik_observer import TraefikWatch


class FleetUnusable(Exception):
    """Nothing of the fleet can be used as configured (a Secret is missing, the route file
    cannot be read); `reason` says why, naming the field or the host."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class FleetView:
    """One observation of the fleet, as the engine needs it."""

    stable: InstanceSet
    canary: InstanceSet
    live_weights: tuple[int, int] | None  # (stable, canary) confirmed in the proxy
    unit_errors: Mapping[str, str] = field(default_factory=dict)  # unit -> why it fails
    live_routes: Routes | None = NO_ROUTES  # header route and mirror confirmed in the proxy


@dataclass(frozen=True)
class Census:
    """The Application's instances, for its status."""

    stable_image: str | None
    desired: int
    ready: int
    updated: int  # of the version being rolled out, or of stable outside a rollout
    problem: str | None = None  # why some instances could not be counted
    # Some instance is ready but not yet among the proxy's servers (no watch tells when).
    settling: bool = False
    # While settling: what of Traefik's API to watch for it (None: look again on a timer).
    watch: TraefikWatch | None = None


class Fleet(Protocol):
    """One Application's instances and route, as seen by one rollout (the release the fleet
    was made for; None outside a rollout)."""

    @property
    def poll_while_moving(self) -> float | None:
        """Seconds between observations while a rollout moves, when nothing else (a watch)
        wakes the controller as instances turn ready; None: watch events suffice."""

    @property
    def settling(self) -> bool:
        """After `observe`: the world may still change where no watch event tells (the
        proxy loading servers or weights, hosts without a watch): the controller looks
        again soon instead of waiting for an event or a timer."""

    @property
    def traefik_watch(self) -> TraefikWatch | None:
        """After `observe`, while `settling`: when only Traefik's API can tell that the
        world has settled, what of it to watch (a change there wakes the rollout, looked at
        by one shared observer); None: the controller polls."""

    @property
    def status_poll(self) -> float | None:
        """Seconds between recounts of the Application's status with nothing pending; None:
        the events of its instances suffice (a slow safety-net timer only)."""

    def metric_sources(self) -> dict[Role, str]:
        """Per role, the prefix of the proxy's leaf-service names its traffic metrics carry."""

    async def observe(self, routed: RoutedUnits | None = None) -> FleetView:
        """Stable and canary instances, live weights, per-unit errors. `routed`: the units
        whose instances may serve each side (None: every ready one), where the target routes
        by unit. Raises FleetUnusable."""

    async def resource_instances(self) -> dict[Role, tuple[str, ...]]:
        """Per role, the ids of its running instances as the target's resource-usage provider
        (`probes.resources`) names them; after `observe`."""

    async def preflight(self, spec: DeploymentSpec, has_stable: bool) -> str | None:
        """Why a rollout with `spec` must not start (checked before anything starts), from
        this round's observation; None: it may."""

    async def ensure(
        self, role: Role, image: str | None, units: tuple[str, ...], release: str | None
    ) -> None:
        """The role's instances run `release` on exactly `units`."""

    async def set_weights(self, stable: int, canary: int) -> None:
        """Declare the split of traffic."""

    async def set_routes(self, routes: Routes) -> None:
        """Declare the header route and the mirror (NO_ROUTES: neither). May take several
        calls: each write waits for the proxy to confirm the one it depends on."""

    async def flush(self) -> None:
        """Write the route changes the round declared (observing and acting), as one."""

    async def promote(self, release: str, image: str, deployment: str) -> None:
        """The canary instances become stable, and the Application's status records it."""

    async def ensure_owned(self) -> None:
        """(Re)create what the Application owns outside rollouts (Services, routes)."""

    async def census(self, rolling_out: bool) -> Census:
        """Count the instances for the Application's status; never raises FleetUnusable."""

    async def remove_rollout(self) -> None:
        """The rollout's Deployment is deleted: traffic back on stable, its instances gone.
        Raises FleetUnusable."""

    async def remove_all(self) -> None:
        """The Application is deleted: everything the garbage collector cannot see goes.
        Raises FleetUnusable."""


async def record_stable(
    kube: Kube, app_obj: dict[str, Any], image: str, deployment: str, release: str | None = None
) -> None:
    """The Application's status names the version now stable (with its release where that
    is the fleet's record of which instances are stable)."""
    meta = app_obj["metadata"]
    stable = {"image": image, "deployment": deployment}
    if release is not None:
        stable["release"] = release
    stable["since"] = datetime.now(UTC).isoformat()
    await kube.patch_application_status(
        meta["namespace"], meta["name"], {"status": {"stable": stable}}
    )
