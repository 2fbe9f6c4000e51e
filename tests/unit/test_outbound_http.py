"""The signed POST against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Event, Thread
from typing import Any

import httpx
import pytest

from lockgate.outbound.http import DELIVERY_HEADER, SIGNATURE_HEADER, post_json, verify


class Receiver:
    def __init__(self, status: int = 200, hang: bool = False) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers["Content-Length"]))
                outer.received.append((dict(self.headers), payload))
                if hang:
                    outer.release.wait()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.release = Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()


@pytest.fixture
def receiver() -> Any:
    r = Receiver()
    yield r
    r.close()


def test_a_signed_post_verifies_with_the_key_and_not_without(receiver: Receiver) -> None:
    async def send() -> Any:
        async with httpx.AsyncClient() as http:
            return await post_json(
                http,
                receiver.url,
                {"phase": "Progressing", "step": 1},
                timeout_seconds=5,
                signing_key=b"s3cret-key",
                delivery_id="d-1",
            )

    answer = asyncio.run(send())
    assert answer.ok and answer.status == 200
    headers, payload = receiver.received[0]
    assert json.loads(payload) == {"phase": "Progressing", "step": 1}
    assert headers[DELIVERY_HEADER] == "d-1"
    # computed here as a receiver would, not with lockgate's own function
    expected = hmac.new(b"s3cret-key", payload, hashlib.sha256).hexdigest()
    assert headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert verify(b"s3cret-key", payload, headers[SIGNATURE_HEADER])
    assert not verify(b"other-key", payload, headers[SIGNATURE_HEADER])
    assert not verify(b"s3cret-key", payload + b" ", headers[SIGNATURE_HEADER])


def test_an_error_status_and_a_hung_receiver_are_answers_not_exceptions() -> None:
    failing, hung = Receiver(status=500), Receiver(hang=True)

    async def send(url: str) -> Any:
        async with httpx.AsyncClient() as http:
            return await post_json(http, url, {}, timeout_seconds=0.3)

    try:
        refused = asyncio.run(send(failing.url))
        silent = asyncio.run(send(hung.url))
    finally:
        failing.close()
        hung.close()
    assert (refused.ok, refused.describe()) == (False, "HTTP 500")
    assert not silent.ok and silent.status is None and "within 0.3s" in silent.describe()
