"""`lockgate_event_loop_lag_seconds`: how late the operator's event loop runs a timer. Slow
API requests and Traefik looks while both answer fast are a busy loop's doing; this is the
figure that tells (docs/scale.md). A fake clock and sleep stand in for a loop that wakes
late."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from lockgate.controller import metrics

NAME = "lockgate_event_loop_lag_seconds"


class Stop(Exception):
    pass


def counts() -> list[float]:
    buckets = [
        REGISTRY.get_sample_value(f"{NAME}_bucket", {"le": le}) or 0.0
        for le in ("0.001", "0.5", "2.5", "+Inf")
    ]
    return [*buckets, REGISTRY.get_sample_value(f"{NAME}_sum") or 0.0]


def test_how_late_each_timer_fires_is_measured() -> None:
    now = 100.0
    late_by = [0.0, 0.3, 2.0]  # each sleep's wake-up comes this much after it was due

    def clock() -> float:
        return now

    async def sleep(seconds: float) -> None:
        nonlocal now
        if not late_by:
            raise Stop
        now += seconds + late_by.pop(0)

    before = counts()
    with pytest.raises(Stop):
        asyncio.run(metrics.measure_loop_lag(0.5, clock, sleep))
    after = counts()
    grew = [round(b - a, 6) for a, b in zip(before, after, strict=True)]
    # buckets ≤ 1 ms, ≤ 0.5 s, ≤ 2.5 s, all; then the sum of the lags
    assert grew == [1, 2, 3, 3, 2.3]
