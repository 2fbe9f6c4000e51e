"""The Gateway API router: an HTTPRoute (gateway.networking.k8s.io/v1, or v1beta1 where the
cluster serves no v1) whose backendRefs
carry the weights over the Services `<app>-stable` and `<app>-canary`, as Traefik's
KubernetesGateway provider serves it.

Two ways to own the route (spec.traffic.gatewayAPI):
- `route`: lockgate owns HTTPRoute `<app>` (or `route.name`) and writes it whole, by
  server-side apply: rule `weighted` (the path match, the weighted backendRefs) and, during a
  header route, rule `header-route` before it (the same path match with the route's header
  conditions, to the canary alone);
- `routeRef`: a named rule of an HTTPRoute someone else owns (a GitOps repository, a platform
  team): lockgate sets only that rule's backendRefs, and during a header route inserts a copy
  of the rule right before it (its matches with the header conditions added, its filters, the
  canary alone), named `<rule>-header-route`. Written by a merge patch that carries the
  resourceVersion read, so a concurrent edit makes the write fail and the next round redo it
  on the new version instead of overwriting it.

The header conditions in force are recorded in the route's annotation
`lockgate.dev/header-route` (as for the IngressRoute), so they are read back exactly.

A backendRef with weight 0 is left out, as in the TraefikService: a Service without ready
endpoints among the backends would have Traefik answer 500/503 for its share.

What Traefik builds from an HTTPRoute (its API): per rule `i`, per match and per listener, a
router `httproute-<ns>-<route>-gw-<gw ns>-<gw>-ep-<entry point>-<i>-<hash of the rule: 20 hex>` with
service `<router>-wrr`, weighted over one service per backendRef named
`<ns>-<service>-http-<port>` (all with Traefik's name normalisation: every run of characters
other than letters and digits becomes one `-`), all `@kubernetesgateway`. A change counts as
live when every router of the weighted rule serves the declared split, and a header route
when Traefik's routers of the route are exactly those of its rules and the header rule's
carry every condition.

Traefik loads a Service's endpoints only while a route points at it, so lockgate also owns
HTTPRoute `<app>-lockgate-probe` on the same Gateways: one rule per Service, matching only a
header carrying the Application's UID. Traefik then always has both Services' servers, under
the same leaf names, and lockgate counts a Pod as ready for traffic only once Traefik lists it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import httpx

from lockgate.api.application import ApplicationSpec, GatewayAPITraffic
from lockgate.engine.model import NO_ROUTES, HeaderRule, Routes
from lockgate.kube import Kube, owner_reference
from lockgate.names import GROUP, LABEL_APP, ROLES, service_name

from .traefik_api import api_list, parse_live_weights, role_weights, service_answer, split
from .traefik_observer import TraefikWatch
from .traefik_rules import cookie_regex, decode, encode

GATEWAY_GROUP = "gateway.networking.k8s.io"
# The HTTPRoute versions lockgate writes, newest first (the fields it uses are the same in
# both); the router uses the newest the cluster serves.
GATEWAY_API_VERSIONS = (f"{GATEWAY_GROUP}/v1", f"{GATEWAY_GROUP}/v1beta1")
PROVIDER = "kubernetesgateway"
HEADER_ROUTE_ANNOTATION = f"{GROUP}/header-route"
WEIGHTED_RULE = "weighted"  # the owned route's rule names
HEADER_RULE = "header-route"
PROBE_HEADER = "X-Lockgate-Probe"


def normalize(name: str) -> str:
    """Traefik's provider.Normalize: runs of characters other than letters and digits become
    one `-`, and none at either end."""
    return "-".join(part for part in re.split(r"[^0-9A-Za-z]+", name) if part)


def header_rule_name(rule: str) -> str:
    """The rule a header route inserts before `rule` of a route lockgate does not own."""
    return f"{rule}-header-route"


def header_match(rule: HeaderRule) -> dict[str, str]:
    """One condition as an HTTPRoute header match. A cookie is matched inside the Cookie
    header with a regular expression (Traefik evaluates it as RE2, as in its own rules)."""
    if rule.header is not None:
        if rule.exact is not None:
            return {"type": "Exact", "name": rule.header, "value": rule.exact}
        return {"type": "RegularExpression", "name": rule.header, "value": rule.regex or ""}
    return {"type": "RegularExpression", "name": "Cookie", "value": cookie_regex(rule)}


def header_matches(
    matches: Sequence[dict[str, Any]], rules: Sequence[HeaderRule]
) -> list[dict[str, Any]]:
    """Each of the weighted rule's matches AND one of the conditions (matches of a rule are
    ORed, the headers of one match ANDed)."""
    out = []
    for match in matches or [{"path": {"type": "PathPrefix", "value": "/"}}]:
        for rule in rules:
            headers = [*(match.get("headers") or []), header_match(rule)]
            out.append({**match, "headers": headers})
    return out


def traefik_match_fragment(rule: HeaderRule) -> str:
    """How Traefik writes a header match into a router's rule (Go's %q of name and value)."""
    m = header_match(rule)
    op = "Header" if m["type"] == "Exact" else "HeaderRegexp"
    return f"{op}({_go_quote(m['name'])},{_go_quote(m['value'])})"


def _go_quote(text: str) -> str:
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def backend_refs(app_name: str, port: int, stable: int, canary: int) -> list[dict[str, Any]]:
    """The weighted backendRefs; a role at weight 0 is left out."""
    return [
        {"name": service_name(app_name, role), "port": port, "weight": weight}
        for role, weight in (("stable", stable), ("canary", canary))
        if weight > 0
    ]


def canary_ref(app_name: str, port: int) -> list[dict[str, Any]]:
    return [{"name": service_name(app_name, "canary"), "port": port, "weight": 1}]


def rules_split(refs: Sequence[dict[str, Any]], app_name: str) -> tuple[int, int] | None:
    """(stable, canary) from a rule's backendRefs; None when neither Service is among them."""
    leaves = {r: service_name(app_name, r) for r in ROLES}
    named = [ref for ref in refs if str(ref.get("name", "")) in leaves.values()]
    return split(role_weights(named, leaves))


def patched_rules(
    rules: Sequence[dict[str, Any]],
    rule: str,
    app_name: str,
    port: int,
    weights: tuple[int, int] | None,
    header: Sequence[HeaderRule],
) -> list[dict[str, Any]]:
    """A route's rules with rule `rule`'s backendRefs set to `weights` (None: as they are)
    and the header rule before it as `header` says (none: removed). Other rules untouched.
    Raises KeyError when there is no rule `rule`."""
    extra = header_rule_name(rule)
    kept = [dict(r) for r in rules if r.get("name") != extra]
    index = next((i for i, r in enumerate(kept) if r.get("name") == rule), None)
    if index is None:
        raise KeyError(rule)
    target = kept[index]
    if weights is not None:
        target["backendRefs"] = backend_refs(app_name, port, *weights)
    if header:
        copy = {k: v for k, v in target.items() if k not in ("name", "matches", "backendRefs")}
        copy["name"] = extra
        copy["matches"] = header_matches(target.get("matches") or [], header)
        copy["backendRefs"] = canary_ref(app_name, port)
        kept.insert(index, copy)
    return kept


def not_accepted(route: dict[str, Any] | None) -> str | None:
    """Why no Gateway accepts the route, when its status says so for its current generation
    (each parent's Accepted condition False); None when one accepts it or none has said."""
    if route is None:
        return None
    generation = (route.get("metadata") or {}).get("generation")
    parents = (route.get("status") or {}).get("parents") or []
    reasons = []
    for parent in parents:
        accepted = next(
            (c for c in parent.get("conditions") or [] if c.get("type") == "Accepted"), None
        )
        if accepted is None or accepted.get("status") != "False":
            return None
        if generation is not None and accepted.get("observedGeneration") not in (
            None,
            generation,
        ):
            return None  # said of an earlier version of the route
        ref = parent.get("parentRef") or {}
        where = "/".join(x for x in (ref.get("namespace"), ref.get("name")) if x)
        reasons.append(f"{where}: {accepted.get('reason')}")
    return "; ".join(reasons) or None


# The rule's hash: the first 10 bytes of its SHA-256, in hex (Go's `%.10x` of the sum).
_ROUTER = re.compile(r"-ep-.+-(\d+)-[0-9a-f]{20}$")


def rule_index(router_name: str) -> int | None:
    """The rule index in the name Traefik gives a router built from an HTTPRoute rule."""
    m = _ROUTER.search(router_name.split("@")[0])
    return int(m.group(1)) if m else None


class GatewayApiRouter:
    """TrafficRouter over an HTTPRoute (see the module's docstring)."""

    def __init__(
        self,
        kube: Kube,
        app_obj: dict[str, Any],
        app: ApplicationSpec,
        api_url: str | None,
        http: httpx.AsyncClient,
        api_version: str = GATEWAY_API_VERSIONS[0],
    ) -> None:
        assert app.traffic.gateway_api is not None
        self.api_version = api_version
        self.version = api_version.rpartition("/")[2]
        self.kube = kube
        self.app_obj = app_obj
        self.app = app
        self.gateway: GatewayAPITraffic = app.traffic.gateway_api
        self.namespace: str = app_obj["metadata"]["namespace"]
        self.name: str = app_obj["metadata"]["name"]
        self.route_name = self.gateway.route_name(self.name)
        self.api_url = app.traffic.traefik.api_url or api_url
        self.http = http

    # --- the objects -------------------------------------------------------------------

    def _metadata(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "labels": {LABEL_APP: self.name},
            "ownerReferences": [owner_reference(self.app_obj)],
        }

    def owned(self) -> frozenset[tuple[str, str]]:
        """(plural, name) of each object this router owns as the Application is now."""
        names = {("httproutes", f"{self.name}-lockgate-probe")}
        if self.gateway.route is not None:
            names.add(("httproutes", self.route_name))
        return frozenset(names)

    def owns_entry_route(self) -> bool:
        return self.gateway.route is not None

    def watch(self) -> TraefikWatch | None:
        """What of Traefik answers this router's reads: the routers it builds from the route
        (and their `-wrr` services), and the Services' leaves. None without Traefik's API."""
        if not self.api_url:
            return None
        return TraefikWatch(
            self.api_url,
            (self._router_prefix(), normalize(f"{self.namespace}-{self.name}")),
        )

    def _router_prefix(self) -> str:
        """How the names of Traefik's routers of the route begin."""
        return f"httproute-{normalize(self.namespace)}-{normalize(self.route_name)}-gw-"

    async def _get(self, name: str) -> dict[str, Any] | None:
        obj: dict[str, Any] | None = await self.kube.get_or_none(
            self.kube.custom.get_namespaced_custom_object,
            GATEWAY_GROUP,
            self.version,
            self.namespace,
            "httproutes",
            name,
        )
        return obj

    def _weighted_rule(self) -> str:
        ref = self.gateway.route_ref
        return ref.rule if ref is not None else WEIGHTED_RULE

    def _header_rule(self) -> str:
        ref = self.gateway.route_ref
        return header_rule_name(ref.rule) if ref is not None else HEADER_RULE

    def _parent_refs(self) -> list[dict[str, Any]]:
        route = self.gateway.route
        assert route is not None
        return [{"group": GATEWAY_GROUP, "kind": "Gateway", **p.wire()} for p in route.parent_refs]

    def owned_route(self, weights: tuple[int, int], header: Sequence[HeaderRule]) -> dict[str, Any]:
        """The whole HTTPRoute lockgate owns."""
        route = self.gateway.route
        assert route is not None
        matches = [{"path": {"type": route.path.type, "value": route.path.value}}]
        rules: list[dict[str, Any]] = []
        metadata = self._metadata(self.route_name)
        if header:
            rules.append(
                {
                    "name": HEADER_RULE,
                    "matches": header_matches(matches, header),
                    "backendRefs": canary_ref(self.name, self.app.port),
                }
            )
            metadata["annotations"] = {HEADER_ROUTE_ANNOTATION: encode(header)}
        rules.append(
            {
                "name": WEIGHTED_RULE,
                "matches": matches,
                "backendRefs": backend_refs(self.name, self.app.port, *weights),
            }
        )
        spec: dict[str, Any] = {"parentRefs": self._parent_refs(), "rules": rules}
        if route.hostnames:
            spec["hostnames"] = list(route.hostnames)
        return {
            "apiVersion": self.api_version,
            "kind": "HTTPRoute",
            "metadata": metadata,
            "spec": spec,
        }

    def probe_route(self, parent_refs: list[dict[str, Any]]) -> dict[str, Any]:
        uid = self.app_obj["metadata"]["uid"]
        return {
            "apiVersion": self.api_version,
            "kind": "HTTPRoute",
            "metadata": self._metadata(f"{self.name}-lockgate-probe"),
            "spec": {
                "parentRefs": parent_refs,
                "rules": [
                    {
                        "name": role,
                        "matches": [
                            {
                                "path": {"type": "PathPrefix", "value": "/"},
                                "headers": [
                                    {
                                        "type": "Exact",
                                        "name": PROBE_HEADER,
                                        "value": f"{uid}-{role}",
                                    }
                                ],
                            }
                        ],
                        "backendRefs": [
                            {"name": service_name(self.name, role), "port": self.app.port}
                        ],
                    }
                    for role in ROLES
                ],
            },
        }

    async def _write(
        self,
        current: dict[str, Any] | None,
        weights: tuple[int, int] | None,
        header: Sequence[HeaderRule],
    ) -> None:
        """Declare weights (None: as they are) and the header route on the route."""
        if self.gateway.route is not None:
            if weights is None:
                weights = self._declared_split(current) or (100, 0)
            await self.kube.apply(
                self.api_version, "httproutes", self.namespace, self.owned_route(weights, header)
            )
            return
        if current is None:
            return  # observe() reports the missing route (problem())
        try:
            rules = patched_rules(
                (current.get("spec") or {}).get("rules") or [],
                self._weighted_rule(),
                self.name,
                self.app.port,
                weights,
                header,
            )
        except KeyError:
            return  # likewise
        meta = current.get("metadata") or {}
        patch = {
            "metadata": {
                "resourceVersion": meta.get("resourceVersion"),
                "annotations": {HEADER_ROUTE_ANNOTATION: encode(header) if header else None},
            },
            "spec": {"rules": rules},
        }
        await self.kube.call(
            self.kube.custom.patch_namespaced_custom_object,
            GATEWAY_GROUP,
            self.version,
            self.namespace,
            "httproutes",
            self.route_name,
            patch,
            _content_type="application/merge-patch+json",
        )

    # --- what is declared ----------------------------------------------------------------

    def _rules(self, route: dict[str, Any] | None) -> list[dict[str, Any]]:
        rules: list[dict[str, Any]] = ((route or {}).get("spec") or {}).get("rules") or []
        return rules

    def _index(self, route: dict[str, Any] | None, rule: str) -> int | None:
        return next((i for i, r in enumerate(self._rules(route)) if r.get("name") == rule), None)

    def _declared_split(self, route: dict[str, Any] | None) -> tuple[int, int] | None:
        index = self._index(route, self._weighted_rule())
        if index is None:
            return None
        return rules_split(self._rules(route)[index].get("backendRefs") or [], self.name)

    def _declared_header(self, route: dict[str, Any] | None) -> tuple[HeaderRule, ...]:
        annotations = ((route or {}).get("metadata") or {}).get("annotations") or {}
        if self._index(route, self._header_rule()) is None:
            return ()
        return decode(annotations.get(HEADER_ROUTE_ANNOTATION))

    async def problem(self) -> str | None:
        """Why the route cannot be used as configured, naming the field; None: it can."""
        ref = self.gateway.route_ref
        route = await self._get(self.route_name)
        if ref is not None:
            if route is None:
                return (
                    f"spec.traffic.gatewayAPI.routeRef.name: HTTPRoute "
                    f"{self.namespace}/{ref.name} not found"
                )
            if self._index(route, ref.rule) is None:
                return (
                    f"spec.traffic.gatewayAPI.routeRef.rule: HTTPRoute "
                    f"{self.namespace}/{ref.name} has no rule named {ref.rule!r}"
                )
        refused = not_accepted(route)
        if refused is None:
            return None
        field = "routeRef.name" if ref is not None else "route.parentRefs"
        return (
            f"spec.traffic.gatewayAPI.{field}: HTTPRoute {self.namespace}/{self.route_name} "
            f"is accepted by none of its Gateways ({refused})"
        )

    # --- the router interface -------------------------------------------------------------

    async def ensure_route(self) -> None:
        current = await self._get(self.route_name)
        if self.gateway.route is not None:
            # Weights and a rollout's header route stay as they are (only a rollout changes them).
            await self._write(current, None, self._declared_header(current))
            parents = self._parent_refs()
        else:
            # Someone else's route: its backends stay until a rollout sets the weights.
            parents = list(((current or {}).get("spec") or {}).get("parentRefs") or [])
        if parents:
            await self.kube.apply(
                self.api_version, "httproutes", self.namespace, self.probe_route(parents)
            )

    async def set_weights(self, stable: int, canary: int) -> None:
        current = await self._get(self.route_name)
        await self._write(current, (stable, canary), self._declared_header(current))

    async def declared_weights(self) -> tuple[int, int] | None:
        return self._declared_split(await self._get(self.route_name))

    async def set_routes(self, routes: Routes) -> None:
        """Only the header route: mirrors are refused before a rollout starts (cross_check)."""
        current = await self._get(self.route_name)
        if tuple(routes.header) != self._declared_header(current):
            await self._write(current, None, routes.header)

    async def declared_routes(self) -> Routes:
        return Routes(header=self._declared_header(await self._get(self.route_name)))

    async def _routers(self) -> list[dict[str, Any]] | None:
        """Traefik's routers built from the route (None: its API cannot be read)."""
        assert self.api_url is not None
        prefix = self._router_prefix()
        routers = await api_list(self.http, self.api_url, "routers", search=prefix)
        if routers is None:
            return None
        return [
            r
            for r in routers
            if str(r.get("name", "")).startswith(prefix)
            and str(r.get("name", "")).endswith(f"@{PROVIDER}")
            and rule_index(str(r.get("name", ""))) is not None
        ]

    async def live_weights(self) -> tuple[int, int] | None:
        current = await self._get(self.route_name)
        declared = self._declared_split(current)
        if declared is None or not self.api_url:
            return declared
        index = self._index(current, self._weighted_rule())
        routers = await self._routers()
        if not routers or not self._all_rules_loaded(current, routers):
            return None
        mine = [r for r in routers if rule_index(str(r["name"])) == index]
        leaves = {
            role: f"{normalize(self.namespace)}-{normalize(service_name(self.name, role))}-http-"
            for role in ROLES
        }
        for router in mine:
            if router.get("status") not in (None, "enabled"):
                return None
            service = str(router.get("service", "")).split("@")[0]
            body = await service_answer(self.http, self.api_url, service, PROVIDER)
            if body is None or parse_live_weights(body, leaves) != declared:
                return None
        return declared

    def _all_rules_loaded(
        self, route: dict[str, Any] | None, routers: Sequence[dict[str, Any]]
    ) -> bool:
        """Traefik's routers of the route are those of its current rules: one rule more or
        less (a header rule added or removed) shifts the indexes."""
        indexes = {rule_index(str(r.get("name", ""))) for r in routers}
        return indexes == set(range(len(self._rules(route))))

    async def live_routes(self) -> Routes | None:
        current = await self._get(self.route_name)
        header = self._declared_header(current)
        declared = Routes(header=header)
        if not self.api_url:
            return declared
        routers = await self._routers()
        if routers is None or not self._all_rules_loaded(current, routers):
            return None
        if not header:
            return NO_ROUTES
        index = self._index(current, self._header_rule())
        mine = [r for r in routers if rule_index(str(r["name"])) == index]
        for rule in header:
            fragment = traefik_match_fragment(rule)
            if not any(
                fragment in str(r.get("rule", "")) and r.get("status") in (None, "enabled")
                for r in mine
            ):
                return None
        return declared

    async def serving(self) -> dict[str, frozenset[str]] | None:
        """Per role, the IPs Traefik has loaded as servers of the role's Service (its leaf,
        which the probe route keeps loaded); None without Traefik's API."""
        if not self.api_url:
            return None
        out: dict[str, frozenset[str]] = dict.fromkeys(ROLES, frozenset())
        for role in ROLES:
            leaf = normalize(
                f"{self.namespace}-{service_name(self.name, role)}-http-{self.app.port}"
            )
            body = await service_answer(self.http, self.api_url, leaf, PROVIDER)
            if body is None or body.get("status") not in (None, "enabled"):
                continue
            servers = (body.get("loadBalancer") or {}).get("servers") or []
            out[role] = frozenset(urlsplit(str(s.get("url", ""))).hostname or "" for s in servers)
        return out
