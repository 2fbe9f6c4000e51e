"""Steady HTTP load through Traefik, as the demo, the tests and the benchmarks send it, and
what counts as a failed request."""

from __future__ import annotations

import http.client
import select
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Response:
    at: float
    status: int | None  # None: no HTTP answer at all
    version: str | None


@dataclass
class Load:
    """Steady HTTP load through Traefik from a few threads until stopped, bounded in count
    (and in time if asked)."""

    url: str
    host: str
    threads: int = 4
    # Between one thread's requests: about 100 a second per thread, a request every 2.5 ms
    # from 4 threads, dense enough to hit any window of a traffic change, and light enough on
    # 2 cores that several rollouts under load run side by side (the test suite's workers).
    pause: float = 0.01
    max_requests: int = 200_000
    # Sent with every request beside Host (e.g. a header route's header, a Cookie).
    headers: dict[str, str] = field(default_factory=dict)
    responses: list[Response] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Condition = field(default_factory=threading.Condition)

    def _run(self, deadline: float | None) -> None:
        # http.client rather than httpx: a quarter of the CPU per request (measured 110 to
        # 130 µs against 435 to 475 µs), which the suite's workers, sending this load side by
        # side on 2 cores, need more than anything httpx adds.
        target = urlsplit(self.url)
        path = (target.path or "/") + (f"?{target.query}" if target.query else "")
        headers = {**self.headers, "Host": self.host}
        conn: http.client.HTTPConnection | None = None
        try:
            while not self._stop.is_set() and (deadline is None or time.monotonic() < deadline):
                with self._lock:
                    if len(self.responses) >= self.max_requests:
                        return
                try:
                    if conn is not None and _closed_by_server(conn):
                        conn.close()
                        conn = None
                    if conn is None:
                        conn = http.client.HTTPConnection(
                            target.hostname or "127.0.0.1", target.port or 80, timeout=3.0
                        )
                    conn.request("GET", path, headers=headers)
                    answer = conn.getresponse()
                    answer.read()
                    item = Response(time.monotonic(), answer.status, answer.getheader("x-version"))
                    if answer.will_close:
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException):
                    item = Response(time.monotonic(), None, None)
                    if conn is not None:
                        conn.close()
                        conn = None
                with self._lock:
                    self.responses.append(item)
                    self._lock.notify_all()
                time.sleep(self.pause)
        finally:
            if conn is not None:
                conn.close()

    def start(self, max_seconds: float | None = None) -> Load:
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        self._workers = [
            threading.Thread(target=self._run, args=(deadline,), daemon=True)
            for _ in range(self.threads)
        ]
        for worker in self._workers:
            worker.start()
        return self

    def wait_answered(self, count: int, quiet: float = 120.0) -> None:
        """Until `count` requests have been answered or failed: load observed, not slept on.
        No wall-clock limit: it gives up only once no answer came for `quiet` seconds (every
        request has its own timeout, so the load itself has stopped)."""
        with self._lock:
            while (answered := len(self.responses)) < count:
                if not self._lock.wait_for(lambda: len(self.responses) > answered, quiet):
                    raise TimeoutError(
                        f"{answered} of {count} requests answered, none for {quiet:.0f}s"
                    )

    def stop(self) -> list[Response]:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=10)
        with self._lock:
            return list(self.responses)

    def __enter__(self) -> Load:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


def _closed_by_server(conn: http.client.HTTPConnection) -> bool:
    """An idle keep-alive connection the server has closed (or sent something unasked on)
    reads as ready: a new one is opened instead, as a pooling client does, rather than
    counting the server's idle timeout as a failed request."""
    return conn.sock is not None and bool(select.select([conn.sock], [], [], 0)[0])


def failed(responses: list[Response]) -> list[Response]:
    """Requests a user would call failed: every one not answered by the application itself
    (its X-Version header missing: a proxy's 404 from a dropped router, its 502/503, a
    reset, a timeout) or answered with an error status (4xx, 5xx)."""
    return [r for r in responses if r.status is None or r.version is None or r.status >= 400]


def by_version(responses: list[Response]) -> Counter[str]:
    """How many requests each version answered, and how many each kind of failure took
    (`no answer`, `proxy 404`, `v2 500`, ...): what a failed assertion should show."""

    def kind(r: Response) -> str:
        if r.status is None:
            return "no answer"
        if r.version is None:
            return f"proxy {r.status}"
        return r.version if r.status < 400 else f"{r.version} {r.status}"

    return Counter(kind(r) for r in responses)
