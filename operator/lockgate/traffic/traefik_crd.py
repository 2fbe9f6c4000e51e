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

Header routes: the IngressRoute `<app>` gets a second route, the Application's rule AND the
route's header conditions at a higher priority, to TraefikService `<app>-headers` (weighted
over `<app>-canary` alone, so Traefik counts its requests under the canary Service's leaf,
where analysis reads them). The conditions are recorded in the IngressRoute's annotation
`lockgate.dev/header-route`. Written in an order that never leaves a route pointing at
nothing: `<app>-headers` exists (and Traefik has loaded it) before the route to it; once the
route is gone it is parked (weighted over `<app>` instead of the canary), never deleted.

Mirroring: TraefikService `<app>-mirror` (`mirroring` of `<app>` with `<app>-canary` as a
mirror at the step's percent); the Application's route points at it instead of `<app>` while
the mirror holds. Same order: the mirror service first, loaded, then the route to it; the
route back to `<app>`, then the mirror service parked (no mirrors). Traefik's service
metrics count the mirrored requests under the canary Service's leaf with their status codes
(the answers are discarded), so analysis judges the canary on them.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from lockgate.api.application import ApplicationSpec
from lockgate.engine.model import NO_ROUTES, Routes
from lockgate.kube import Kube, WatchedObjects, owner_reference
from lockgate.names import GROUP, LABEL_APP, ROLES, service_name

from .traefik_api import (
    HttpReads,
    TraefikReads,
    live_sticky_matches,
    parse_live_weights,
    role_weights,
    routes_to,
    split,
    sticky_config,
)
from .traefik_observer import TraefikObservers, TraefikWatch
from .traefik_rules import decode, encode, header_priority, header_rule

HEADER_ROUTE_ANNOTATION = f"{GROUP}/header-route"


def headers_service_name(app_name: str) -> str:
    """The TraefikService a header route sends its requests to."""
    return f"{app_name}-headers"


def mirror_service_name(app_name: str) -> str:
    """The TraefikService mirroring `<app>` to the canary while a mirror step holds."""
    return f"{app_name}-mirror"


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
        api_version: str,
        watched: WatchedObjects | None = None,
        observers: TraefikObservers | None = None,
    ) -> None:
        """`api_version`: of Traefik's CRDs, e.g. traefik.io/v1alpha1. `watched`: the route
        objects as their watch keeps them (None: each read is an API call). `observers`
        with `watched`: Traefik's API is read from the observer's looks (none begun before
        the Application's route objects last changed), else with requests of its own."""
        self.kube = kube
        self.app_obj = app_obj
        self.app = app
        self.namespace: str = app_obj["metadata"]["namespace"]
        self.name: str = app_obj["metadata"]["name"]
        self.api_version = api_version
        self.api_url = app.traffic.traefik.api_url or api_url
        self.watched = watched
        # Without Traefik's API: None. What Traefik serves of the split and the routes, and
        # which Pod addresses it has loaded (the latter not tied to the route objects).
        self.reads: TraefikReads | None = None
        self.server_reads: TraefikReads | None = None
        if self.api_url and observers is not None and watched is not None:
            self.reads = observers.reads(
                self.api_url, lambda: watched.changed_at(self.namespace, self.name)
            )
            self.server_reads = observers.reads(self.api_url)
        elif self.api_url:
            self.reads = self.server_reads = HttpReads(http, self.api_url)
        # While an observation reads (`reading_once`): each object read once, by (plural, name).
        self._read: dict[tuple[str, str], dict[str, Any] | None] | None = None

    @contextlib.contextmanager
    def reading_once(self) -> Iterator[None]:
        """Within it, each object is read from the API once: an observation reads the
        IngressRoute for the weights' route and again for the header route (one API call
        costs about a millisecond of the operator's CPU, most of a round's)."""
        self._read = {}
        try:
            yield
        finally:
            self._read = None

    def _metadata(self, name: str) -> dict[str, Any]:
        """Every object lockgate owns here goes with the Application and says whose it is."""
        return {
            "name": name,
            "labels": {LABEL_APP: self.name},
            "ownerReferences": [owner_reference(self.app_obj)],
        }

    def owned(self) -> frozenset[tuple[str, str]]:
        """(plural, name) of each object this router owns as the Application is now."""
        names = [
            ("traefikservices", self.name),
            ("traefikservices", headers_service_name(self.name)),
            ("traefikservices", mirror_service_name(self.name)),
            ("ingressroutes", f"{self.name}-lockgate-probe"),
        ]
        if self.app.traffic.traefik.route is not None:
            names.append(("ingressroutes", self.name))
        return frozenset(names)

    def owns_entry_route(self) -> bool:
        return self.app.traffic.traefik.route is not None

    def watch(self) -> TraefikWatch | None:
        """What of Traefik answers this router's reads: every router and service Traefik
        names after the Application's objects, `<namespace>-<app>...` (the TraefikServices,
        the Services' leaves, the probe and entry routes), and every router pointing at one
        of them (a user's IngressRoute to the TraefikService). None without Traefik's API."""
        if not self.api_url:
            return None
        prefix = f"{self.namespace}-{self.name}"
        # Traefik normalises the names it makes (a dot, or a run of dashes, becomes one dash)
        normalized = "-".join(part for part in re.split(r"[^0-9A-Za-z]+", prefix) if part)
        fresh_after = self.reads.fresh_after() if self.reads is not None else None
        return TraefikWatch(self.api_url, tuple(dict.fromkeys((prefix, normalized))), fresh_after)

    def _traefik_service(self, stable: int, canary: int) -> dict[str, Any]:
        weighted: dict[str, Any] = {
            "services": weighted_services(self.name, self.app.port, stable, canary)
        }
        sticky = sticky_config(self.app.traffic.traefik.sticky)
        if sticky is not None:
            weighted["sticky"] = sticky
        return {
            "apiVersion": self.api_version,
            "kind": "TraefikService",
            "metadata": self._metadata(self.name),
            "spec": {"weighted": weighted},
        }

    async def _declared(self) -> dict[str, Any] | None:
        return await self._get("traefikservices", self.name)

    async def problem(self) -> str | None:
        return None  # lockgate owns every object it uses here

    async def ensure_route(self) -> None:
        declared = await self._declared()
        if declared is None:
            await self._apply("traefikservices", self._traefik_service(100, 0))
        else:
            weighted = (declared.get("spec") or {}).get("weighted") or {}
            if weighted.get("sticky") != sticky_config(self.app.traffic.traefik.sticky):
                # A changed sticky setting, with the weights as they are.
                split_now = split(
                    role_weights(
                        weighted.get("services") or [],
                        {r: service_name(self.name, r) for r in ROLES},
                    )
                ) or (100, 0)
                await self.set_weights(*split_now)
        await self._apply("ingressroutes", self._probe_route())
        if self.app.traffic.traefik.route is not None:
            # A rollout's header route stays as it is (only the rollout changes it).
            routes = await self.declared_routes()
            await self._apply("ingressroutes", self._ingress_route(routes))

    def _ingress_route(self, routes: Routes) -> dict[str, Any]:
        route = self.app.traffic.traefik.route
        assert route is not None
        main = mirror_service_name(self.name) if routes.mirror else self.name
        rules: list[dict[str, Any]] = [
            {
                "kind": "Rule",
                "match": route.match,
                "services": [{"name": main, "kind": "TraefikService"}],
            }
        ]
        metadata = self._metadata(self.name)
        if routes.header:
            rules.append(
                {
                    "kind": "Rule",
                    "match": header_rule(route.match, routes.header),
                    "priority": header_priority(route.match, routes.header),
                    "services": [
                        {"name": headers_service_name(self.name), "kind": "TraefikService"}
                    ],
                }
            )
            metadata["annotations"] = {HEADER_ROUTE_ANNOTATION: encode(routes.header)}
        return {
            "apiVersion": self.api_version,
            "kind": "IngressRoute",
            "metadata": metadata,
            "spec": {"entryPoints": route.entry_points, "routes": rules},
        }

    def _mirror_service(self, percent: int) -> dict[str, Any]:
        """Mirroring of `<app>` to the canary at `percent`; 0 parks it (no mirror: a plain
        pass-through to `<app>`, valid whatever the canary has)."""
        mirrors = [
            {"name": service_name(self.name, "canary"), "port": self.app.port, "percent": percent}
        ]
        return {
            "apiVersion": self.api_version,
            "kind": "TraefikService",
            "metadata": self._metadata(mirror_service_name(self.name)),
            "spec": {
                "mirroring": {
                    "name": self.name,
                    "kind": "TraefikService",
                    "mirrors": mirrors if percent else [],
                }
            },
        }

    def _headers_service(self, parked: bool = False) -> dict[str, Any]:
        """Weighted over the canary Service alone; parked: over TraefikService `<app>` (the
        weights), valid whatever the canary has, once no header route needs it."""
        child: dict[str, Any] = (
            {"name": self.name, "kind": "TraefikService", "weight": 1}
            if parked
            else {"name": service_name(self.name, "canary"), "port": self.app.port, "weight": 1}
        )
        return {
            "apiVersion": self.api_version,
            "kind": "TraefikService",
            "metadata": self._metadata(headers_service_name(self.name)),
            "spec": {"weighted": {"services": [child]}},
        }

    def _parked(self, name: str) -> dict[str, Any]:
        if name == headers_service_name(self.name):
            return self._headers_service(parked=True)
        return self._mirror_service(0)

    async def _get(self, plural: str, name: str) -> dict[str, Any] | None:
        if self._read is not None and (plural, name) in self._read:
            return self._read[(plural, name)]
        if self.watched is not None:
            known, kept = self.watched.get(plural, self.namespace, name)
            if known:
                return kept
        group, _, version = self.api_version.partition("/")
        obj: dict[str, Any] | None = await self.kube.get_or_none(
            self.kube.custom.get_namespaced_custom_object,
            group,
            version,
            self.namespace,
            plural,
            name,
        )
        if self._read is not None:
            self._read[(plural, name)] = obj
        if self.watched is not None:
            self.watched.put(plural, self.namespace, name, obj, app=self.name, read=True)
        return obj

    async def _apply(self, plural: str, body: dict[str, Any]) -> None:
        written = await self.kube.apply(self.api_version, plural, self.namespace, body)
        if self.watched is not None:  # the next round reads what was written, not the past
            self.watched.put(
                plural, self.namespace, body["metadata"]["name"], written, app=self.name
            )

    async def declared_routes(self) -> Routes:
        """The header route and the mirror the IngressRoute `<app>` declares."""
        obj = await self._get("ingressroutes", self.name)
        annotations = ((obj or {}).get("metadata") or {}).get("annotations") or {}
        header = decode(annotations.get(HEADER_ROUTE_ANNOTATION))
        mirror = 0
        if _main_target(obj) == mirror_service_name(self.name):
            service = await self._get("traefikservices", mirror_service_name(self.name))
            mirrors = (((service or {}).get("spec") or {}).get("mirroring") or {}).get("mirrors")
            mirror = int(mirrors[0].get("percent", 0)) if mirrors else 0
        return Routes(header=header, mirror=mirror)

    async def set_routes(self, routes: Routes) -> None:
        """Declare a header route and a mirror (or neither). Several rounds may be needed:
        a backend is written and seen loaded by Traefik before the route to it. A backend no
        longer used is parked, never deleted (a route Traefik has not reloaded yet may still
        point at it): the
        header route's over the weights, the mirror without mirrors, both valid traffic
        whatever the canary has, so Traefik may see them in either order with the route."""
        if self.app.traffic.traefik.route is None:
            return  # refused before the rollout starts (cross_check); nothing to route
        backends = (
            (headers_service_name(self.name), self._headers_service() if routes.header else None),
            (
                mirror_service_name(self.name),
                self._mirror_service(routes.mirror) if routes.mirror else None,
            ),
        )
        waiting = False
        for name, body in backends:
            if body is None:
                continue
            await self._apply("traefikservices", body)
            if self.reads and not await self._loaded(name, body["spec"]):
                waiting = True  # the route follows once Traefik has its backend
        if waiting:
            return
        await self._apply("ingressroutes", self._ingress_route(routes))
        for name, body in backends:
            if body is not None:
                continue
            current = await self._get("traefikservices", name)
            parked = self._parked(name)
            if current is not None and current.get("spec") != parked["spec"]:
                await self._apply("traefikservices", parked)

    async def _loaded(self, name: str, spec: dict[str, Any] | None = None) -> bool:
        """Traefik serves TraefikService `name` (with a mirror's percent as declared)."""
        assert self.reads is not None
        body = await self.reads.service(f"{self.namespace}-{name}", "kubernetescrd")
        if body is None or body.get("status") not in (None, "enabled"):
            return False
        wanted = ((spec or {}).get("mirroring") or {}).get("mirrors")
        if wanted:
            live = (body.get("mirroring") or {}).get("mirrors") or []
            return [m.get("percent") for m in live] == [m["percent"] for m in wanted]
        return True

    async def live_routes(self) -> Routes | None:
        """The declared header route once Traefik serves it (or its absence once Traefik
        no longer routes to `<app>-headers`); None until then."""
        if self.app.traffic.traefik.route is None:
            return NO_ROUTES
        declared = await self.declared_routes()
        # A backend no longer used is gone from Traefik's routers and parked.
        for name, used in (
            (headers_service_name(self.name), bool(declared.header)),
            (mirror_service_name(self.name), declared.mirror > 0),
        ):
            if used:
                continue
            current = await self._get("traefikservices", name)
            if current is None:
                continue
            if current.get("spec") != self._parked(name)["spec"]:
                return None
            if self.reads and await routes_to(
                self.reads, f"{self.namespace}-{name}", "kubernetescrd"
            ) in (True, None):
                return None  # still routed to, or not known to be no longer
        if not declared or not self.reads:
            return declared
        if declared.mirror:
            mirror = mirror_service_name(self.name)
            spec = self._mirror_service(declared.mirror)["spec"]
            if not await self._loaded(mirror, spec) or not await routes_to(
                self.reads, f"{self.namespace}-{mirror}", "kubernetescrd"
            ):
                return None
        if not declared.header:
            return declared
        headers = headers_service_name(self.name)
        if not await self._loaded(headers):
            return None
        route = self.app.traffic.traefik.route
        assert route is not None
        want = header_rule(route.match, declared.header)
        routers = await self.reads.listing(
            "routers",
            serviceName=f"{self.namespace}-{headers}@kubernetescrd",
            status="enabled",
        )
        if not routers or not any(r.get("rule") == want for r in routers):
            return None
        return declared

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
        if not self.server_reads:
            return None
        out: dict[str, frozenset[str]] = dict.fromkeys(ROLES, frozenset())
        uid = self.app_obj["metadata"]["uid"]
        routers = await self.server_reads.listing("routers", search=uid)
        probe = f"{self.namespace}-{self.name}-lockgate-probe"
        services = await self.server_reads.listing("services", search=probe)
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
        await self._apply("traefikservices", self._traefik_service(stable, canary))

    async def declared_weights(self) -> tuple[int, int] | None:
        obj = await self._declared()
        if obj is None:
            return None
        services = ((obj.get("spec") or {}).get("weighted") or {}).get("services") or []
        return split(role_weights(services, {r: service_name(self.name, r) for r in ROLES}))

    async def live_weights(self) -> tuple[int, int] | None:
        declared = await self.declared_weights()
        if declared is None or not self.reads:
            return declared  # without Traefik's API the declared split is all we can know
        service = f"{self.namespace}-{self.name}"
        body = await self.reads.service(service, "kubernetescrd")
        if body is None:
            return None
        live = parse_live_weights(body, live_leaves(self.namespace, self.name))
        if live != declared:
            return None
        if not live_sticky_matches(body, sticky_config(self.app.traffic.traefik.sticky)):
            return None
        if self.app.traffic.traefik.route is not None:
            # The route reaches the weights directly, or through the mirror service.
            target = _main_target(await self._get("ingressroutes", self.name)) or self.name
            if not await routes_to(self.reads, f"{self.namespace}-{target}", "kubernetescrd"):
                return None
        return live


def _main_target(ingress: dict[str, Any] | None) -> str | None:
    """The TraefikService the IngressRoute's first route (the Application's) points at."""
    routes = ((ingress or {}).get("spec") or {}).get("routes") or []
    services = (routes[0].get("services") or []) if routes else []
    return str(services[0].get("name")) if services else None
