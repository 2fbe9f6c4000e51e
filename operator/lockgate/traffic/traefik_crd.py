"""Traefik's Kubernetes CRD provider: TraefikService `<app>` weighted over the Services
`<app>-stable` and `<app>-canary`, and IngressRoute `<app>` when a route is set.

lockgate owns both objects (a GitOps sync of the user's manifests never resets weights).
A child Service with weight 0 is removed from the weighted list: a Service without ready
endpoints in the list makes Traefik stop serving the whole TraefikService.
A change counts as live only when Traefik's API shows it.

Traefik loads a Service's endpoints only while something routes to it, and it loads them a
moment after the Pods turn Ready. So lockgate also owns IngressRoute `<app>-lockgate-probe`,
matching only a header carrying the Application's UID, over both Services: Traefik then
always knows their servers, and lockgate counts an instance as ready for traffic only once
Traefik lists it (no 503 from a weight that moved too early).
"""

from __future__ import annotations

from typing import Any

import httpx

from lockgate.api.application import ApplicationSpec
from lockgate.targets.kubernetes import owner_reference, service_name

from ..kube import Kube
from .base import split


def weighted_services(app_name: str, port: int, stable: int, canary: int) -> list[dict[str, Any]]:
    out = []
    for role, weight in (("stable", stable), ("canary", canary)):
        if weight > 0:
            out.append({"name": service_name(app_name, role), "port": port, "weight": weight})
    return out


def parse_live_weights(
    service: dict[str, Any], namespace: str, app_name: str
) -> tuple[int, int] | None:
    """Weights from Traefik's /api/http/services/<name> answer for the TraefikService."""
    if service.get("status") not in (None, "enabled"):
        return None
    children = (service.get("weighted") or {}).get("services") or []
    weights = {"stable": 0, "canary": 0}
    for child in children:
        name = str(child.get("name", "")).split("@")[0]
        for role in weights:
            if name.startswith(f"{namespace}-{service_name(app_name, role)}-"):
                weights[role] += int(child.get("weight", 1))
    return split(weights)


class TraefikCrdRouter:
    def __init__(
        self,
        kube: Kube,
        app_obj: dict[str, Any],
        app: ApplicationSpec,
        api_url: str | None,
        http: httpx.AsyncClient,
    ) -> None:
        self.kube = kube
        self.app_obj = app_obj
        self.app = app
        self.namespace: str = app_obj["metadata"]["namespace"]
        self.name: str = app_obj["metadata"]["name"]
        self.api_version = app.traffic.traefik.api_group
        self.api_url = app.traffic.traefik.api_url or api_url
        self.http = http

    def _traefik_service(self, stable: int, canary: int) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": "TraefikService",
            "metadata": {
                "name": self.name,
                "labels": {"lockgate.dev/application": self.name},
                "ownerReferences": [owner_reference(self.app_obj)],
            },
            "spec": {
                "weighted": {
                    "services": weighted_services(self.name, self.app.port, stable, canary)
                }
            },
        }

    async def _declared(self) -> dict[str, Any] | None:
        group, _, version = self.api_version.partition("/")
        obj: dict[str, Any] | None = await self.kube.get_or_none(
            self.kube.custom.get_namespaced_custom_object,
            group,
            version,
            self.namespace,
            "traefikservices",
            self.name,
        )
        return obj

    async def ensure_route(self) -> None:
        if await self._declared() is None:
            await self.kube.apply(
                self.api_version, "traefikservices", self.namespace, self._traefik_service(100, 0)
            )
        await self.kube.apply(
            self.api_version, "ingressroutes", self.namespace, self._probe_route()
        )
        route = self.app.traffic.traefik.route
        if route is not None:
            body = {
                "apiVersion": self.api_version,
                "kind": "IngressRoute",
                "metadata": {
                    "name": self.name,
                    "labels": {"lockgate.dev/application": self.name},
                    "ownerReferences": [owner_reference(self.app_obj)],
                },
                "spec": {
                    "entryPoints": route.entry_points,
                    "routes": [
                        {
                            "kind": "Rule",
                            "match": route.match,
                            "services": [{"name": self.name, "kind": "TraefikService"}],
                        }
                    ],
                },
            }
            await self.kube.apply(self.api_version, "ingressroutes", self.namespace, body)

    def _probe_route(self) -> dict[str, Any]:
        uid = self.app_obj["metadata"]["uid"]
        return {
            "apiVersion": self.api_version,
            "kind": "IngressRoute",
            "metadata": {
                "name": f"{self.name}-lockgate-probe",
                "labels": {"lockgate.dev/application": self.name},
                "ownerReferences": [owner_reference(self.app_obj)],
            },
            "spec": {
                "routes": [
                    {
                        "kind": "Rule",
                        "match": f"Header(`X-Lockgate-Probe`, `{uid}`)",
                        "services": [
                            {"name": service_name(self.name, role), "port": self.app.port}
                            for role in ("stable", "canary")
                        ],
                    }
                ],
            },
        }

    async def servers_in_proxy(self) -> dict[str, int] | None:
        """Servers Traefik has loaded for each role's Service; None without Traefik's API."""
        if not self.api_url:
            return None
        out: dict[str, int] = {}
        for role in ("stable", "canary"):
            child = (
                f"{self.namespace}-{service_name(self.name, role)}-{self.app.port}@kubernetescrd"
            )
            try:
                answer = await self.http.get(
                    f"{self.api_url.rstrip('/')}/api/http/services/{child}", timeout=2.0
                )
            except httpx.HTTPError:
                return None
            servers = (
                (answer.json().get("loadBalancer") or {}).get("servers") or []
                if (answer.status_code == 200)
                else []
            )
            out[role] = len(servers)
        return out

    async def set_weights(self, stable: int, canary: int) -> None:
        await self.kube.apply(
            self.api_version,
            "traefikservices",
            self.namespace,
            self._traefik_service(stable, canary),
        )

    async def declared_weights(self) -> tuple[int, int] | None:
        obj = await self._declared()
        if obj is None:
            return None
        services = ((obj.get("spec") or {}).get("weighted") or {}).get("services") or []
        weights = {"stable": 0, "canary": 0}
        for child in services:
            for role in weights:
                if child.get("name") == service_name(self.name, role):
                    weights[role] += int(child.get("weight", 1))
        return split(weights)

    async def live_weights(self) -> tuple[int, int] | None:
        declared = await self.declared_weights()
        if declared is None or not self.api_url:
            return declared  # without Traefik's API the declared split is all we can know
        service = f"{self.namespace}-{self.name}@kubernetescrd"
        url = f"{self.api_url.rstrip('/')}/api/http/services/{service}"
        try:
            answer = await self.http.get(url, timeout=2.0)
        except httpx.HTTPError:
            return None
        if answer.status_code != 200:
            return None
        live = parse_live_weights(answer.json(), self.namespace, self.name)
        return live if live == declared else None
