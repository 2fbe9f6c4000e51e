"""What both routers read from Traefik: its API's answer for one service, and the weights
of a weighted service, from that answer or from what lockgate declared.

Both routers give each role one child service (Traefik calls them leaves): the file
provider's load balancer `<app>-<role>`, or the Kubernetes Service, which Traefik names
`<namespace>-<app>-<role>-<port>`. So a child belongs to the role whose leaf name its own
name starts with, and the caller says what those names are.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

import httpx
from prometheus_client import Counter

from lockgate.api.application import Sticky
from lockgate.names import ROLES

# Requests to Traefik's API: a round's own reads ("round"), the shared observer's looks
# ("observer").
REQUESTS = Counter(
    "lockgate_traefik_api_requests_total", "Requests to Traefik's API, by who sent them", ["by"]
)


def sticky_config(sticky: Sticky | None) -> dict[str, Any] | None:
    """A weighted service's `sticky` block, in the shape both providers take."""
    if sticky is None:
        return None
    cookie: dict[str, Any] = {
        "name": sticky.cookie.name,
        "secure": sticky.cookie.secure,
        "httpOnly": sticky.cookie.http_only,
    }
    if sticky.cookie.same_site is not None:
        cookie["sameSite"] = sticky.cookie.same_site
    return {"cookie": cookie}


def live_sticky_matches(service: Mapping[str, Any], wanted: Mapping[str, Any] | None) -> bool:
    """Whether Traefik's answer for a weighted service has the declared sticky cookie (by
    name; Traefik keeps a token name as written), or none when none is declared."""
    live = ((service.get("weighted") or {}).get("sticky") or {}).get("cookie") or {}
    if wanted is None:
        return not live
    return bool(live) and live.get("name") == wanted["cookie"]["name"]


async def service_answer(
    http: httpx.AsyncClient, api_url: str, name: str, provider: str
) -> dict[str, Any] | None:
    """Traefik's /api/http/services/<name>@<provider> answer; None when the service is not
    there or the API cannot be read (a change is then not confirmed, never assumed)."""
    url = f"{api_url.rstrip('/')}/api/http/services/{quote(name)}@{provider}"
    REQUESTS.labels("round").inc()
    try:
        answer = await http.get(url, timeout=2.0)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    body: dict[str, Any] = answer.json()
    return body


def role_weights(
    children: Iterable[Mapping[str, Any]], leaves: Mapping[str, str]
) -> dict[str, int]:
    """Summed weight per role (a child without a weight counts 1, as in Traefik); a child's
    name may carry Traefik's `@provider` suffix."""
    weights = dict.fromkeys(ROLES, 0)
    for child in children:
        name = str(child.get("name", "")).split("@")[0]
        for role in ROLES:
            if name.startswith(leaves[role]):
                weights[role] += int(child.get("weight", 1))
    return weights


def split(weights: Mapping[str, int]) -> tuple[int, int] | None:
    """(stable, canary) percent from the summed child weights of each role; None if empty."""
    total = weights.get("stable", 0) + weights.get("canary", 0)
    if total == 0:
        return None
    canary = round(100 * weights.get("canary", 0) / total)
    return (100 - canary, canary)


def parse_live_weights(
    service: Mapping[str, Any], leaves: Mapping[str, str]
) -> tuple[int, int] | None:
    """(stable, canary) from Traefik's /api/http/services/<name> answer for a weighted
    service; None while Traefik does not serve it."""
    if service.get("status") not in (None, "enabled"):
        return None
    return split(role_weights((service.get("weighted") or {}).get("services") or [], leaves))


async def api_list(
    http: httpx.AsyncClient, api_url: str, kind: str, **query: str
) -> list[dict[str, Any]] | None:
    """Traefik's /api/http/<kind> (routers, services) answer for a query; None when the API
    cannot be read."""
    url = f"{api_url.rstrip('/')}/api/http/{kind}"
    REQUESTS.labels("round").inc()
    try:
        answer = await http.get(url, params=query, timeout=2.0)
    except httpx.HTTPError:
        return None
    if answer.status_code != 200:
        return None
    items: list[dict[str, Any]] = answer.json()
    return items


class TraefikReads(Protocol):
    """What a router asks Traefik's API: one service by name, and the routers or services a
    query finds (Traefik's `search`, `status` and `serviceName` filters). None when the API
    cannot be read: a change is then not confirmed, never assumed."""

    async def service(self, name: str, provider: str) -> dict[str, Any] | None: ...

    async def listing(self, kind: str, **query: str) -> list[dict[str, Any]] | None: ...

    def fresh_after(self) -> float | None:
        """When the route objects last changed, if the reads so far may predate that
        (`TraefikWatch.fresh_after`); None if they cannot."""
        ...


@dataclass
class HttpReads:
    """Each read a request of its own."""

    http: httpx.AsyncClient
    api_url: str

    def fresh_after(self) -> float | None:
        return None  # each read asked after whatever came before it

    async def service(self, name: str, provider: str) -> dict[str, Any] | None:
        return await service_answer(self.http, self.api_url, name, provider)

    async def listing(self, kind: str, **query: str) -> list[dict[str, Any]] | None:
        return await api_list(self.http, self.api_url, kind, **query)


async def routes_to(reads: TraefikReads, service: str, provider: str) -> bool | None:
    """Whether Traefik serves an enabled router to `service` (a weighted service it has
    loaded is no use to clients until the route to it is loaded too); None when that is not
    known (its API unread, or a look from before a change), which is neither."""
    routers = await reads.listing("routers", serviceName=f"{service}@{provider}", status="enabled")
    return None if routers is None else bool(routers)


# --- the same answers from one /api/rawdata look ---------------------------------------------
# Keys as the Traefik observer keeps a look: `router:<name>@<provider>`, `service:<...>`.
PREFIXES = {"routers": "router:", "services": "service:"}


def service_in(entries: Mapping[str, Any], name: str, provider: str) -> dict[str, Any] | None:
    """What /api/http/services/<name>@<provider> answers, from a look."""
    qualified = f"{name}@{provider}"
    entry = entries.get(f"service:{qualified}")
    return None if entry is None else {**entry, "name": qualified}


def listing_in(
    entries: Mapping[str, Any],
    kind: str,
    search: str = "",
    status: str = "",
    serviceName: str = "",  # Traefik's query parameter
) -> list[dict[str, Any]]:
    """What /api/http/<kind> answers for a query, from a look: Traefik's filters
    (pkg/api/criterion.go: `status` equal ignoring case, `search` within a router's rule or
    name or a service's name ignoring case, `serviceName` for routers only), sorted by
    name, unpaged. Goes through every entry: `Look.listing` gives the same from indexes."""
    prefix = PREFIXES[kind]
    found = [
        {**entry, "name": key[len(prefix) :]}
        for key, entry in entries.items()
        if key.startswith(prefix)
        and _kept(kind, key[len(prefix) :], entry, search, status, serviceName)
    ]
    return sorted(found, key=lambda item: item["name"])


def _kept(
    kind: str, name: str, entry: Mapping[str, Any], search: str, status: str, service_name: str
) -> bool:
    """Whether Traefik's list of `kind` keeps the entry for the query."""
    if status and str(entry.get("status", "")).lower() != status.lower():
        return False
    searched = [name, str(entry.get("rule", ""))] if kind == "routers" else [name]
    if search and not any(search.lower() in value.lower() for value in searched):
        return False
    service = str(entry.get("service", ""))
    return not (service_name and kind == "routers" and not _same_service(service_name, service))


SEPARATOR = "\x00"  # between a router's name and rule in `Look`'s text; never in a search


class Look:
    """One look's entries with what answers a round's questions without going through all
    of them (at 1,000 Applications a look holds ~7,000 entries, and a round asks 3 or 4
    questions): per kind, the lower-cased names and rules in one text that `search` finds
    its matches in, and the routers by the service they point at."""

    def __init__(self, entries: Mapping[str, Any]) -> None:
        """Builds the indexes (7 ms at 1,000 Applications: the observer does it off the event
        loop, beside the parse)."""
        self.entries = entries
        self._text = {kind: self._text_of(prefix) for kind, prefix in PREFIXES.items()}
        self._by_service: dict[str, list[str]] = {}
        for key, entry in entries.items():
            if key.startswith("router:"):
                self._by_service.setdefault(str(entry.get("service", "")), []).append(key)

    def _text_of(self, prefix: str) -> tuple[str, list[int], list[str]]:
        """The lower-cased `name<SEPARATOR>rule` of each entry of a kind, one a line; where
        each line starts; the entries' keys in the same order."""
        keys = [key for key in self.entries if key.startswith(prefix)]
        lines = [
            f"{key[len(prefix) :]}{SEPARATOR}{self.entries[key].get('rule', '')}".lower()
            for key in keys
        ]
        starts, at = [], 0
        for line in lines:
            starts.append(at)
            at += len(line) + 1
        return "\n".join(lines), starts, keys

    def service(self, name: str, provider: str) -> dict[str, Any] | None:
        return service_in(self.entries, name, provider)

    def listing(
        self, kind: str, search: str = "", status: str = "", serviceName: str = ""
    ) -> list[dict[str, Any]]:
        """`listing_in`'s answer."""
        prefix = PREFIXES[kind]
        if search and SEPARATOR not in search and "\n" not in search:
            keys = self._searched(kind, search.lower())
        elif serviceName and kind == "routers":
            keys = self._by_service.get(serviceName, []) + self._by_service.get(
                serviceName.partition("@")[0], []
            )
        else:
            return listing_in(self.entries, kind, search, status, serviceName)
        found = [
            {**self.entries[key], "name": key[len(prefix) :]}
            for key in dict.fromkeys(keys)
            if _kept(kind, key[len(prefix) :], self.entries[key], search, status, serviceName)
        ]
        return sorted(found, key=lambda item: item["name"])

    def _searched(self, kind: str, needle: str) -> list[str]:
        """The keys of the entries whose text holds `needle` (the filters still check)."""
        text, starts, keys = self._text[kind]
        found, at = [], text.find(needle)
        while at >= 0:
            found.append(keys[bisect.bisect_right(starts, at) - 1])
            at = text.find(needle, at + 1)
        return found


def _same_service(wanted: str, service: str) -> bool:
    """Traefik's `serviceName` filter: a router's service named without a provider matches
    the wanted name without its own."""
    if "@" in service:
        return wanted == service
    return wanted.partition("@")[0] == service
