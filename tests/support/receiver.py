"""A real HTTP receiver on 127.0.0.1 for what lockgate sends out, webhook calls and
notifications (the operator runs on the host): it records every request and answers as the
test's `policy` says, by default the status `answer()` set for its path: a status code, or
HOLD (keep the request open, answering nothing, until `release()`)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lockgate.outbound.http import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER

HOLD = -1


@dataclass
class Received:
    path: str  # without the query
    headers: dict[str, str]  # names lower-cased
    payload: bytes
    answer: int | None = None  # None while held or when held until the test released it
    at: float = field(default_factory=time.time)  # when it arrived (wall clock, for benches)

    @property
    def delivery(self) -> str:
        return self.headers.get(DELIVERY_HEADER.lower(), "")

    @property
    def event(self) -> str:
        return self.headers.get(EVENT_HEADER.lower(), "")

    @property
    def signature(self) -> str | None:
        return self.headers.get(SIGNATURE_HEADER.lower())

    @property
    def body(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.payload)
        return result


class Receiver:
    def __init__(self, policy: Callable[[int, Received], int] | None = None) -> None:
        """`policy(n, request)`: the answer to the n-th request (0-based); without one, the
        status `answer()` set for the request's path, 200 if none."""
        self.answers: dict[str, int] = {}
        self.policy = policy or (lambda _, got: self.answers.get(got.path, 200))
        self.received: list[Received] = []
        self.held = 0  # requests held open now
        self.lock = threading.Lock()
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                payload = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                got = Received(
                    self.path.split("?", 1)[0],
                    {k.lower(): v for k, v in self.headers.items()},
                    payload,
                )
                with outer.lock:
                    n = len(outer.received)
                    outer.received.append(got)
                    answer = outer.policy(n, got)
                    if answer == HOLD:
                        outer.held += 1
                if answer == HOLD:
                    outer._release.wait()
                    with outer.lock:
                        outer.held -= 1
                    self.close_connection = True  # released unanswered: the client is gone
                    return
                got.answer = answer
                self.send_response(answer)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, path: str, status: int) -> None:
        with self.lock:
            self.answers[path] = status

    def requests(self, path: str) -> list[Received]:
        return [r for r in self.snapshot() if r.path == path]

    def release(self) -> None:
        """Held requests end without an answer."""
        self._release.set()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def accepted(self) -> Counter[str]:
        """Delivery id -> times answered 2xx."""
        return Counter(r.delivery for r in self.snapshot() if r.answer and r.answer < 300)
