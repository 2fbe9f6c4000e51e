"""Prometheus as lockgate queries it, in process (an httpx.MockTransport handler: no port).

It answers the two PromQL shapes the provider builds for each role from Traefik's series,
selecting the services by the query's own `service=~"..."` regular expression (decoded from
the PromQL string and anchored, as Prometheus does), so a wrong selector selects the wrong
traffic; any other query is answered from `answers` by its exact text (after lockgate's
substitutions), or refused as Prometheus refuses a query it cannot parse.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

REQUESTS = re.compile(
    r'^sum by \(code\) \(increase\(traefik_service_requests_total\{service=~"([^"]*)"\}'
    r"\[(\d+)s\]\)\)$"
)
P95 = re.compile(
    r"^histogram_quantile\(0\.95, sum by \(le\) \(rate\("
    r'traefik_service_request_duration_seconds_bucket\{service=~"([^"]*)"\}\[(\d+)s\]\)\)\)$'
)


@dataclass(frozen=True)
class Traffic:
    """One Traefik service's traffic over the window: requests per status code, and p95."""

    codes: Mapping[str, float]
    p95: float | None = None


def traffic(ok: float, errors: float = 0, p95: float | None = 0.05) -> Traffic:
    return Traffic({"200": ok, "500": errors} if errors else {"200": ok}, p95)


def _promql_string(text: str) -> str:
    """The value of a PromQL double-quoted string's contents (only `\\\\` and `\\"` occur)."""
    return re.sub(r"\\(.)", r"\1", text)


Answer = float | str | list[float] | None  # a number, "NaN"/"+Inf", several series, none


@dataclass
class FakePrometheus:
    services: Mapping[str, Traffic] | Callable[[], Mapping[str, Traffic]] = field(
        default_factory=dict
    )
    answers: dict[str, Answer] = field(default_factory=dict)
    down: bool = False  # connection refused
    status: int = 200  # anything else: answered as an overloaded server would
    garbage: str | None = None  # answers this text with 200 (a proxy's page, not Prometheus)
    asked: list[str] = field(default_factory=list)
    times: list[str] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)

    def traffic(self) -> Mapping[str, Traffic]:
        return self.services() if callable(self.services) else self.services

    def selected(self, encoded: str) -> dict[str, Traffic]:
        regex = re.compile(_promql_string(encoded))
        return {name: t for name, t in self.traffic().items() if regex.fullmatch(name)}

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        if request.url.path != "/api/v1/query":
            return httpx.Response(404, text="404 page not found")
        promql = request.url.params["query"]
        self.asked.append(promql)
        self.times.append(request.url.params.get("time", ""))
        if self.status != 200:
            return httpx.Response(self.status, text="overloaded")
        if self.garbage is not None:
            return httpx.Response(200, text=self.garbage)
        if m := REQUESTS.match(promql):
            self.windows.append(int(m[2]))
            codes: dict[str, float] = {}
            for t in self.selected(m[1]).values():
                for code, n in t.codes.items():
                    codes[code] = codes.get(code, 0.0) + n
            return self.vector([({"code": c}, n) for c, n in sorted(codes.items())])
        if m := P95.match(promql):
            self.windows.append(int(m[2]))
            chosen = self.selected(m[1]).values()
            if not chosen:
                return self.vector([])
            known = [t.p95 for t in chosen if t.p95 is not None]
            return self.vector([({}, max(known) if known else "NaN")])
        if promql not in self.answers:
            return httpx.Response(
                400,
                json={
                    "status": "error",
                    "errorType": "bad_data",
                    "error": f'1:1: parse error: unexpected query "{promql}"',
                },
            )
        answer = self.answers[promql]
        if answer is None:
            return self.vector([])
        if isinstance(answer, list):
            return self.vector([({"instance": str(i)}, v) for i, v in enumerate(answer)])
        return self.vector([({}, answer)])

    @staticmethod
    def vector(series: list[tuple[dict[str, str], Any]]) -> httpx.Response:
        result = [{"metric": labels, "value": [1767268800.0, str(v)]} for labels, v in series]
        return httpx.Response(
            200, json={"status": "success", "data": {"resultType": "vector", "result": result}}
        )

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handler))
