"""Failed verdict -> 100% stable in Traefik, measured the same way for both targets: from the
timestamp of the round that reached the verdict, not from when a poller first saw it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from tests.support.rollouts import Lockgate, deployment, wait_within

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
    """Roll out a canary that fails its analysis; the time from the failing verdict (the
    timestamp of the round that reached it, from the Deployment's own analysis record) until
    Traefik's API first shows no canary weight (polled every 5 ms). It includes lockgate's
    whole reaction: the decision, the weight write, Traefik's reload."""
    strategy = {"type": "Canary", "canary": {"steps": [50, 100], "stepSeconds": 60, **canary}}
    lg.create(deployment(name, app, "demo:v2-errors30", strategy, analysis=ANALYSIS))
    canary_seen = False

    def canary_gone() -> bool:
        nonlocal canary_seen
        weight = live_canary_weight(api_url, service)
        canary_seen = canary_seen or bool(weight)
        return canary_seen and weight == 0

    wait_within(
        "canary weight live, then 0% again in Traefik", canary_gone, timeout=180, every=0.005
    )
    seen = datetime.now(UTC)
    status = lg.wait_phase(name, {"RolledBack"})
    failed = [run for run in status.get("analysis") or [] if run["verdict"] == "Failed"]
    if not failed:
        raise RuntimeError(f"{name}: rolled back without a Failed analysis run: {status}")
    return (seen - datetime.fromisoformat(failed[-1]["at"])).total_seconds()
