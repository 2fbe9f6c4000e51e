"""Traefik's Kubernetes CRD provider: TraefikService `<app>` weighted over the Services
`<app>-stable` and `<app>-canary`, and IngressRoute `<app>` when a route is set.

lockgate owns both objects (a GitOps sync of the user's manifests never resets weights).
A child Service with weight 0 is removed from the weighted list: a Service without ready
endpoints in the list makes Traefik stop serving the whole TraefikService.
A change counts as live only when Traefik's API shows it, and the route to it.

Traefik loads a Service's endpoints only while something routes to it, and it loads them a
moment after the Pods turn Ready (seconds later after a control-plane restart). So lockgate
also owns IngressRoute `<app>-lockgate-probe`, one rule per Service matching only a header
carrying the Application's UID: Traefik then always knows their servers, and lockgate
counts a Pod as ready for traffic only once Traefik lists its IP (no 503 from a weight that
moved too early).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import httpx

from lockgate.api.application import ApplicationSpec
from lockgate.kube import Kube, owner_reference
from lockgate.names import LABEL_APP, ROLES, service_name

from .traefik_api import (
    api_list,
    parse_live_weights,
    role_weights,
    routes_to,
    service_answer,
    split,
)


def weighted_services(app_name: str, port: int, stable: int, canary: int) -> list[dict[str, Any]]:
    out = []
    for role, weight in (("stable", stable), ("canary", canary)):
        if weight > 0:
            out.append({"name": service_name(app_name, role), "port": port, "weight": weight})
    return out


def live_leaves(namespace: str, app_name: str) -> dict[str, str]:
    """Per role, how Traefik names the Service's leaf (`<namespace>-<service>-<port>`)."""
    return {role: f"{namespace}-{service_name(app_name, role)}-" for role in ROLES}


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

    def _metadata(self, name: str) -> dict[str, Any]:
        """Every object lockgate owns here goes with the Application and says whose it is."""
        return {
            "name": name,
            "labels": {LABEL_APP: self.name},
            "ownerReferences": [owner_reference(self.app_obj)],
        }

    def _traefik_service(self, stable: int, canary: int) -> dict[str, Any]:
        return {
            "apiVersion": self.api_version,
            "kind": "TraefikService",
            "metadata": self._metadata(self.name),
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
                "metadata": self._metadata(self.name),
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
        """One rule per Service: Traefik drops a rule whose Service has no endpoints (unless
        its allowEmptyServices is set), and an empty canary must not hide the stable one."""
        uid = self.app_obj["metadata"]["uid"]
        return {
            "apiVersion": self.api_version,
            "kind": "IngressRoute",
            "metadata": self._metadata(f"{self.name}-lockgate-probe"),
            "spec": {
                "routes": [
                    {
                        "kind": "Rule",
                        "match": f"Header(`X-Lockgate-Probe`, `{uid}-{role}`)",
                        "services": [
                            {"name": service_name(self.name, role), "port": self.app.port}
                        ],
                    }
                    for role in ROLES
                ],
            },
        }

    async def serving(self) -> dict[str, frozenset[str]] | None:
        """Per role, the IPs Traefik has loaded as servers of the role's Service; None
        without Traefik's API (readiness then rests on the Pods alone). Traefik names a
        one-Service rule's service after the rule, so the probe routers say whose it is."""
        if not self.api_url:
            return None
        out: dict[str, frozenset[str]] = dict.fromkeys(ROLES, frozenset())
        uid = self.app_obj["metadata"]["uid"]
        routers = await api_list(self.http, self.api_url, "routers", search=uid)
        probe = f"{self.namespace}-{self.name}-lockgate-probe"
        services = await api_list(self.http, self.api_url, "services", search=probe)
        if routers is None or services is None:
            return out  # not confirmed, so not ready: never assumed
        role_of = {
            str(r.get("service", "")).split("@")[0]: role
            for r in routers
            for role in ROLES
            if f"`{uid}-{role}`" in str(r.get("rule", ""))
        }
        for service in services:
            role = role_of.get(str(service.get("name", "")).split("@")[0])
            if role is not None and service.get("status") == "enabled":
                servers = (service.get("loadBalancer") or {}).get("servers") or []
                out[role] = frozenset(
                    urlsplit(str(s.get("url", ""))).hostname or "" for s in servers
                )
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
        return split(role_weights(services, {r: service_name(self.name, r) for r in ROLES}))

    async def live_weights(self) -> tuple[int, int] | None:
        declared = await self.declared_weights()
        if declared is None or not self.api_url:
            return declared  # without Traefik's API the declared split is all we can know
        service = f"{self.namespace}-{self.name}"
        body = await service_answer(self.http, self.api_url, service, "kubernetescrd")
        if body is None:
            return None
        live = parse_live_weights(body, live_leaves(self.namespace, self.name))
        if live != declared:
            return None
        if self.app.traffic.traefik.route is not None and not await routes_to(
            self.http, self.api_url, service, "kubernetescrd"
        ):
            return None
        return live
