"""The operator's own Prometheus metrics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import get_args

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from lockgate.api.deployment import Phase

ROLLOUTS = Gauge("lockgate_rollouts", "Deployments by phase", ["phase"])
STEP_SECONDS = Histogram(
    "lockgate_step_duration_seconds",
    "Time a rollout step took",
    buckets=(0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800),
)
VERDICTS = Counter("lockgate_analysis_verdicts_total", "Analysis verdicts", ["verdict"])
ROLLBACKS = Counter("lockgate_rollbacks_total", "Rollouts rolled back or aborted", ["reason"])
RECONCILE_ERRORS = Counter("lockgate_reconcile_errors_total", "Reconciles that raised", ["kind"])
RECONCILE_SECONDS = Histogram(
    "lockgate_reconcile_seconds",
    "Time from the start of a reconcile to its actions executed (reaction latency)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ROUND_TURN_SECONDS = Histogram(
    "lockgate_round_turn_seconds",
    "Time a woken Deployment's round waited for its turn (rounds in progress at once are "
    "bounded by the API threads) before it read anything",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)

EVENT_LOOP_LAG_SECONDS = Histogram(
    "lockgate_event_loop_lag_seconds",
    "How late a timer of the operator's event loop fired (sampled every half second): "
    "what every await in the operator waits on top of its own cause while the loop is busy",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
LAG_SAMPLE_EVERY = 0.5


async def measure_loop_lag(
    every: float = LAG_SAMPLE_EVERY,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> None:
    """Until cancelled: how late each wake-up of a sleep of `every` seconds comes. An API
    request or a look at Traefik that takes long while the API server and Traefik answer
    fast is a busy loop's doing, and this tells the two apart."""
    while True:
        due = clock() + every
        await sleep(every)
        EVENT_LOOP_LAG_SECONDS.observe(max(0.0, clock() - due))


DRIVER_WAKEUPS = Counter(
    "lockgate_driver_wakeups_total",
    "What started a Deployment's next round: its own timer, a poll while the world settles "
    "where no watch tells, the safety net of a wait on Traefik, Traefik's change, a watch "
    "event (its object, a sibling, its Application, a Pod, a route object somebody else "
    "changed), or nothing (due again at once)",
    ["by"],
)
DRIVERS = Gauge(
    "lockgate_deployment_drivers",
    "Deployments with a driver: in flight, waiting, or owing a notification (a rollout "
    "settled owing nothing has none until an action or a new spec)",
)
ROUNDS_LOST = Counter(
    "lockgate_rounds_lost_total",
    "Rounds whose status write found the Deployment changed since the round read it "
    "(the next round starts again from what is there)",
)
SHARD = Gauge(
    "lockgate_shard_info",
    'The shard this operator serves (1 for it; shard="" is the default shard)',
    ["shard"],
)

LEADER = Gauge(
    "lockgate_leader",
    "1 while this operator acts (it holds the leader Lease, or runs without --leader-elect); "
    "0 on a standby waiting for the Lease",
)

_served: list[int] = []


def serve(port: int) -> None:
    """Serve the metrics on `port` (once per process: a standby starts it before kopf's
    startup handler asks again)."""
    if not _served:
        start_http_server(port)
        _served.append(port)


_phases: dict[tuple[str, str], str] = {}


def record_phase(namespace: str, name: str, phase: str | None) -> None:
    key = (namespace, name)
    if phase is None:
        _phases.pop(key, None)
    else:
        _phases[key] = phase
    counts: dict[str, int] = {}
    for value in _phases.values():
        counts[value] = counts.get(value, 0) + 1
    for value in get_args(Phase):
        ROLLOUTS.labels(value).set(counts.get(value, 0))
