"""What the load helper of the demo, the tests and the benchmarks calls a failed request, and
how it waits for answers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from hack.tools.load import Load, Response, by_version, failed

APP_OK = Response(0.0, 200, "v1")
APP_ERROR = Response(0.0, 500, "v2")
PROXY_404 = Response(0.0, 404, None)  # a router Traefik dropped
PROXY_200 = Response(0.0, 200, None)  # answered, but not by the application
PROXY_503 = Response(0.0, 503, None)
NO_ANSWER = Response(0.0, None, None)  # reset or timeout


def test_only_an_application_answer_without_error_counts_as_served() -> None:
    everything = [APP_OK, APP_ERROR, PROXY_404, PROXY_200, PROXY_503, NO_ANSWER]
    assert failed(everything) == [APP_ERROR, PROXY_404, PROXY_200, PROXY_503, NO_ANSWER]


def test_by_version_names_each_kind_of_failure() -> None:
    counts = by_version([APP_OK, APP_OK, APP_ERROR, PROXY_404, NO_ANSWER])
    assert counts == {"v1": 2, "v2 500": 1, "proxy 404": 1, "no answer": 1}


class SlowApp(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        time.sleep(0.2)  # a slow machine: an answer every 0.2 s
        self.send_response(200)
        self.send_header("X-Version", "v1")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def slow_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_waiting_for_answers_has_no_wall_clock_limit_while_they_come(slow_app: str) -> None:
    with Load(slow_app, "app.test", threads=1) as load:
        load.wait_answered(1)  # the clients started
        # 15 more answers take over 3 s, twice the quiet time: they keep coming.
        load.wait_answered(16, quiet=1.5)
    assert by_version(load.responses[:16]) == {"v1": 16}


def test_waiting_for_answers_of_a_stopped_load_fails_naming_the_count(slow_app: str) -> None:
    with Load(slow_app, "app.test", threads=1) as load:
        load.wait_answered(2)
    answered = len(load.responses)
    with pytest.raises(TimeoutError, match=f"^{answered} of {answered + 5} requests answered"):
        load.wait_answered(answered + 5, quiet=0.1)


class ClosingApp(BaseHTTPRequestHandler):
    """Closes every connection after its answer without saying so (no `Connection: close`),
    as a server does when its keep-alive idle timeout strikes between two requests."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("X-Version", "v1")
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = True

    def log_message(self, *_: object) -> None:
        pass


def test_a_keep_alive_connection_the_server_closed_is_not_a_failed_request() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ClosingApp)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        # A pause long enough for the server's close to arrive before the next request.
        with Load(f"http://127.0.0.1:{server.server_address[1]}/", "app.test", 1, 0.1) as load:
            load.wait_answered(10)
    finally:
        server.shutdown()
        server.server_close()
    assert by_version(load.responses) == {"v1": len(load.responses)}
