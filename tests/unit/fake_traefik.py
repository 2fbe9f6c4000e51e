"""A stand-in for Traefik's API (v3.6) over httpx's MockTransport: `/api/rawdata`, one
service or router by name, and the router and service lists with Traefik's filters
(`search`, `serviceName`, `status`), from one table of routers and services that a test
changes as Traefik would on a reload. It counts the requests by path."""

from __future__ import annotations

import copy
import hashlib
import json
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import unquote

import httpx

API_URL = "http://traefik:8080"


class FakeTraefikApi:
    # Looks at /api/rawdata answered by every fake: what a test waiting on an observer
    # counts its progress in (`test_traefik_observer.until`).
    looks_made = 0

    def __init__(self) -> None:
        self.routers: dict[str, dict[str, Any]] = {}
        self.services: dict[str, dict[str, Any]] = {}
        self.requests: Counter[str] = Counter()
        self.down = False  # every request fails (connection refused)
        # Called before the answer to the n-th request to /api/rawdata (n counted from 1).
        self.before_look: dict[int, Callable[[], None]] = {}
        # Every router and service an answer other than /api/rawdata held: (name, service).
        self.answered: list[tuple[str, str]] = []

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.answer))

    @property
    def looks(self) -> int:
        return self.requests["/api/rawdata"]

    def app(self, namespace: str, name: str, stable: int = 100, canary: int = 0) -> None:
        """What Traefik serves for an Application on the CRD provider: its weighted
        TraefikService, the two Services' leaves, a probe router."""
        children = [
            {"name": f"{namespace}-{name}-{role}-80", "weight": weight}
            for role, weight in (("stable", stable), ("canary", canary))
            if weight
        ]
        self.services[f"{namespace}-{name}@kubernetescrd"] = {
            "weighted": {"services": children},
            "status": "enabled",
            "usedBy": [f"{namespace}-{name}-0123456789abcdef@kubernetescrd"],
        }
        for role in ("stable", "canary"):
            self.services[f"{namespace}-{name}-{role}-80@kubernetescrd"] = {
                "loadBalancer": {"servers": [{"url": f"http://10.246.0.1:80/{role}"}]},
                "status": "enabled",
            }
        self.routers[f"{namespace}-{name}-0123456789abcdef@kubernetescrd"] = {
            "entryPoints": ["web"],
            "service": f"{namespace}-{name}",
            "rule": f"Host(`{name}.example`)",
            "status": "enabled",
        }

    def load_crd_objects(self, store: Mapping[tuple[str, str, str], dict[str, Any]]) -> None:
        """Traefik's KubernetesCRD provider's reading of the TraefikServices and
        IngressRoutes in a fake Kube's store, named as Traefik names them: a TraefikService
        `<ns>-<name>`, a Service's leaf `<ns>-<service>-<port>`, a router
        `<ns>-<ingressroute>-<hash of its rule>` (a route to a Service gets a service of the
        router's name)."""
        for (plural, ns, name), obj in store.items():
            if plural == "traefikservices":
                spec = copy.deepcopy(obj["spec"])
                for child in (spec.get("weighted") or {}).get("services") or []:
                    if child.get("kind") != "TraefikService":
                        child["name"] = f"{ns}-{child['name']}-{child.get('port', 80)}"
                    else:
                        child["name"] = f"{ns}-{child['name']}"
                self.services[f"{ns}-{name}@kubernetescrd"] = {**spec, "status": "enabled"}
            if plural == "ingressroutes":
                for route in obj["spec"]["routes"]:
                    digest = hashlib.sha256(route["match"].encode()).hexdigest()[:20]
                    router = f"{ns}-{name}-{digest}"
                    target = route["services"][0]
                    if target.get("kind") == "TraefikService":
                        service = f"{ns}-{target['name']}"
                    else:
                        service = router
                        leaf = {"url": f"http://10.246.0.1:{target.get('port', 80)}"}
                        self.services[f"{router}@kubernetescrd"] = {
                            "loadBalancer": {"servers": [leaf]},
                            "status": "enabled",
                        }
                    self.routers[f"{router}@kubernetescrd"] = {
                        "rule": route["match"],
                        "service": service,
                        "status": "enabled",
                    }

    def answer(self, request: httpx.Request) -> httpx.Response:
        path = unquote(request.url.path)
        self.requests[path if not path.startswith("/api/http/services/") else "service"] += 1
        if path == "/api/rawdata":
            FakeTraefikApi.looks_made += 1
            hook = self.before_look.pop(self.looks, None)
            if hook is not None:
                hook()
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if path == "/api/rawdata":
            body = {"routers": self.routers, "services": self.services}
            return httpx.Response(200, content=json.dumps(body).encode())
        query = request.url.params
        if path.startswith("/api/http/services/"):
            name = path.removeprefix("/api/http/services/")
            service = self.services.get(name)
            if service is None:
                return httpx.Response(404)
            self.answered.append((name, str(service.get("service", ""))))
            return httpx.Response(200, json={**copy.deepcopy(service), "name": name})
        if path in ("/api/http/routers", "/api/http/services"):
            table = self.routers if path.endswith("routers") else self.services
            out = []
            for name, entry in sorted(table.items()):
                search = query.get("search", "").lower()
                searched = (name, entry.get("rule", "")) if table is self.routers else (name,)
                if search and not any(search in str(v).lower() for v in searched):
                    continue
                if query.get("status") and entry.get("status") != query["status"]:
                    continue
                wanted = query.get("serviceName")
                if wanted and not _same_service(wanted, str(entry.get("service", ""))):
                    continue
                out.append({**copy.deepcopy(entry), "name": name})
            self.answered += [(e["name"], str(e.get("service", ""))) for e in out[:100]]
            return httpx.Response(200, json=out[:100])
        return httpx.Response(404)


def _same_service(wanted: str, service: str) -> bool:
    """Traefik's filterService."""
    if "@" in service:
        return wanted == service
    return wanted.partition("@")[0] == service


def unwatched(read: list[tuple[str, str]], names: tuple[str, ...]) -> list[tuple[str, str]]:
    """The (router, service) pairs a router read from Traefik that none of its watch's names
    covers: a change there would never wake a waiter."""
    return [
        (name, service)
        for name, service in read
        if not any(n in name or n in service for n in names)
    ]
