"""Fleets: one per target kind, chosen here and nowhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lockgate.api import ApplicationSpec

from ..runtime import Runtime
from .base import Census, Fleet, FleetUnusable, FleetView
from .docker import DockerFleet
from .kubernetes import KubernetesFleet

# Keyed by the Application's spec field that selects the target.
FLEETS: dict[str, type[KubernetesFleet] | type[DockerFleet]] = {
    "kubernetes": KubernetesFleet,
    "docker": DockerFleet,
}


def fleet_for(
    rt: Runtime, app_obj: dict[str, Any], app: ApplicationSpec, release: str | None
) -> Fleet:
    """The Application's fleet as the rollout of `release` sees it (None: no rollout)."""
    return FLEETS[app.target_kind](rt, app_obj, app, release)


def removes_on_deletion(spec: Mapping[str, Any]) -> bool:
    """Whether deleting an Application with this (unvalidated) spec must wait for lockgate
    to remove what no owner reference covers."""
    return any(
        spec.get(field) is not None and fleet.removes_on_deletion for field, fleet in FLEETS.items()
    )


__all__ = ["Census", "Fleet", "FleetUnusable", "FleetView", "fleet_for", "removes_on_deletion"]
