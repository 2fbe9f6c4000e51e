"""Plain-HTTP probes of local endpoints (an operator's /healthz, a demo app's), which tests
poll every 0.05 to 0.2 s while a process starts. `httpx.get` builds a client for each call,
with an SSL context loaded from the system's CA certificates: 29 ms of CPU per call, taken
from the suite's side-by-side workers on 2 cores; this takes 0.06 ms."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def http_status(url: str, timeout: float = 1.0) -> int | None:
    """The status a GET of `url` (http://) is answered with; None when nothing answers."""
    target = urlsplit(url)
    path = (target.path or "/") + (f"?{target.query}" if target.query else "")
    conn = http.client.HTTPConnection(
        target.hostname or "127.0.0.1", target.port or 80, timeout=timeout
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()
