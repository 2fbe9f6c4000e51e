"""One signed JSON POST, answered or not: the only way lockgate calls a user's endpoint.

The receiver checks `X-Lockgate-Signature: sha256=<hex>`, the HMAC-SHA256 of the exact body
bytes under the shared signing secret, and may drop a repeated `X-Lockgate-Delivery` id (a
delivery lockgate could not record as done is sent again after an operator restart)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import Any

import httpx

# the engine judges gates on these answers, so it owns their type
from lockgate.engine.model import WebhookAnswer as Answer

PER_ORIGIN = 16


class BoundedClient(httpx.AsyncClient):
    """The operator's one HTTP client (Traefik's API, Prometheus, health checks, webhooks),
    with at most `per_origin` requests to any one origin at a time; the others wait their
    turn here. Each time a request ends, httpcore's pool compares every request queued in it
    with every connection: with hundreds queued for Traefik at once (500 rollouts and
    status loops), that comparison took 88% of the operator's CPU and nothing moved."""

    def __init__(self, *, per_origin: int = PER_ORIGIN, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.per_origin = per_origin
        self._turns: dict[tuple[bytes, bytes, int | None], asyncio.Semaphore] = {}

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        url = request.url
        origin = (url.raw_scheme, url.raw_host, url.port)
        turn = self._turns.get(origin)
        if turn is None:
            turn = self._turns[origin] = asyncio.Semaphore(self.per_origin)
        async with turn:
            return await super().send(request, **kwargs)


SIGNATURE_HEADER = "X-Lockgate-Signature"
DELIVERY_HEADER = "X-Lockgate-Delivery"
EVENT_HEADER = "X-Lockgate-Event"


def body_bytes(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature(key: bytes, payload: bytes) -> str:
    return "sha256=" + hmac.new(key, payload, hashlib.sha256).hexdigest()


def verify(key: bytes, payload: bytes, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(signature(key, payload), header)


async def post_json(
    http: httpx.AsyncClient,
    url: str,
    body: Mapping[str, Any],
    *,
    timeout_seconds: float,
    headers: Mapping[str, str] | None = None,
    signing_key: bytes | None = None,
    delivery_id: str | None = None,
    event: str | None = None,
) -> Answer:
    """POST `body` as JSON; never raises for what the network or receiver does."""
    payload = body_bytes(body)
    sent = {"Content-Type": "application/json", **(headers or {})}
    if signing_key:
        sent[SIGNATURE_HEADER] = signature(signing_key, payload)
    if delivery_id:
        sent[DELIVERY_HEADER] = delivery_id
    if event:
        sent[EVENT_HEADER] = event
    try:
        response = await http.post(url, content=payload, headers=sent, timeout=timeout_seconds)
    except httpx.TimeoutException:
        return Answer(None, f"no answer within {timeout_seconds:g}s")
    except httpx.HTTPError as err:
        return Answer(None, f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
    return Answer(response.status_code)
