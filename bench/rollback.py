"""Failed verdict -> 100% stable in Traefik, measured the same way for both targets."""

from __future__ import annotations

import time
from typing import Any

import httpx

from tests.support.rollouts import Lockgate, deployment, wait_for

# Fails after one window of 5 requests: the bad image errs on 30% of them.
ANALYSIS = {"intervalSeconds": 1, "minRequests": 5, "maxConsecutiveFailures": 1}


def live_canary_weight(api_url: str, service: str) -> int | None:
    """The canary's weight in Traefik's weighted `service` (children named `…-canary…`)."""
    try:
        data = httpx.get(f"{api_url}/api/http/services/{service}", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    children = (data.get("weighted") or {}).get("services") or []
    return sum(
        int(c.get("weight", 1)) for c in children if "-canary" in c["name"].partition("@")[0]
    )


def seconds_to_stable(
    lg: Lockgate, name: str, app: str, canary: dict[str, Any], api_url: str, service: str
) -> float:
    """Roll out a canary that fails its analysis; the time from the rollback's start
    (phase RollingBack) until Traefik serves no canary weight."""
    strategy = {"type": "Canary", "canary": {"steps": [50, 100], "stepSeconds": 60, **canary}}
    lg.create(deployment(name, app, "demo:v2-errors30", strategy, analysis=ANALYSIS))
    wait_for(
        "RollingBack",
        lambda: lg.phase(name) in ("RollingBack", "RolledBack"),
        timeout=120,
        every=0.01,
    )
    start = time.monotonic()
    wait_for(
        "stable 100% in Traefik",
        lambda: live_canary_weight(api_url, service) == 0,
        timeout=30,
        every=0.005,
    )
    elapsed = time.monotonic() - start
    lg.wait_phase(name, {"RolledBack"})
    return elapsed
