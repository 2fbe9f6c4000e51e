"""Plain-HTTP probes of local endpoints (an operator's /healthz and /metrics, a demo app's),
which tests poll every 0.05 to 0.25 s. `httpx.get` builds a client for each call, with an
SSL context loaded from the system's CA certificates: 29 ms of CPU per call, taken from the
suite's side-by-side workers on 2 cores; this takes 0.06 ms."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def _get(url: str, timeout: float) -> tuple[int, bytes] | None:
    target = urlsplit(url)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    conn = http.client.HTTPConnection(
        target.hostname or "127.0.0.1", target.port or 80, timeout=timeout
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status a GET of `url` (http://) is answered with; None when nothing answers."""
    answer = _get(url, timeout)
    return None if answer is None else answer[0]


def http_text(url: str, timeout: float = 5.0) -> str | None:
    """The body of a 200 answer to a GET of `url` (http://); None otherwise."""
    answer = _get(url, timeout)
    return answer[1].decode(errors="replace") if answer and answer[0] == 200 else None
