"""HTTP health checks of single instances, as lockgate's own view beside the proxy's."""

from __future__ import annotations

import httpx


async def check_health(
    http: httpx.AsyncClient, url: str | None, path: str, check_seconds: float = 2.0
) -> bool:
    """GET `<url><path>` answers 2xx or 3xx; an instance without a URL (not running, no
    published port) fails."""
    if url is None:
        return False
    try:
        answer = await http.get(url + path, timeout=check_seconds, follow_redirects=False)
    except httpx.HTTPError:
        return False
    return 200 <= answer.status_code < 400
