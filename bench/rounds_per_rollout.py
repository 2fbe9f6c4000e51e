"""How many rounds one rollout of bench.scale's canary takes, its driver waiting as the
operator's does (the engine alone, over the engine tests' fake world; figures, never
asserted). After each round the driver waits what `handlers.round_delay` says: a round
that wrote the status runs again on that write's watch event (EVENT later); one that
changed nothing sleeps until its timer (`requeue_after`) or the safety net; one due again
at once runs as soon as the previous round is over, which takes ROUND seconds
(bench.round_cost: ~15 ms of CPU for a round that changes nothing); one waiting on the
Traefik observer runs again once Traefik serves the split (`--traefik-delay` after it was
declared) or at its timer.

    python -m bench.rounds_per_rollout [--traefik-delay 2.0]
"""

from __future__ import annotations

import argparse
from datetime import timedelta

from lockgate.controller.deployments import Round, records_only
from lockgate.controller.handlers import Poll, round_delay
from lockgate.traffic.traefik_observer import TraefikWatch
from tests.support.fakeworld import Driver, FakeWorld, app_spec, dep_spec

STRATEGY = {  # bench.scale's canary
    "type": "Canary",
    "canary": {
        "steps": [
            {"setWeight": 10},
            {"pause": {"seconds": 20}},
            {"setWeight": 30},
            {"pause": {"seconds": 20}},
            {"setWeight": 60},
            {"pause": {"seconds": 20}},
            100,
        ]
    },
}
ANALYSIS = {"intervalSeconds": 30, "minRequests": 1, "maxErrorRate": 0.05}
ROUND = 0.015  # seconds a round takes (its CPU, one rollout alone)
EVENT = 0.1  # after a write, its watch event's delay
LOOK = 0.15  # the Traefik observer's pause between looks while somebody waits
WATCH = TraefikWatch("http://traefik", ("bench",))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traefik-delay", type=float, default=0.0)
    args = parser.parse_args()
    world = FakeWorld(
        units=("replica-1",),
        ready_after=1,
        requests_per_window=100,
        weight_delay=args.traefik_delay,
    )
    driver = Driver(app_spec(replicas=1), dep_spec(strategy=STRATEGY, analysis=ANALYSIS), world)
    start = world.now
    rounds = at_once = 0
    while driver.status.phase != "Succeeded" and rounds < 100_000:
        before = driver.status
        world.settle()
        settling = world.live_weights is None  # as observed: Traefik has yet to serve a split
        decision = driver.step()
        rounds += 1
        result = Round(
            progressed=decision.status != before and not records_only(before, decision),
            acted=bool(decision.actions),
            requeue_after=decision.requeue_after,
            finished=False,
            settling=settling,
            watch=WATCH if settling else None,
        )
        delay = round_delay(result)
        if result.progressed:
            wait = EVENT
        elif isinstance(delay, Poll):
            served = world.in_flight[0][0] if world.in_flight else None
            seen = (served - world.now).total_seconds() + LOOK if served else 10.0
            wait = seen if delay.timer is None else min(seen, delay.timer)
        else:
            wait = delay
        at_once += wait == 0
        world.now += timedelta(seconds=max(ROUND, wait))
    took = (world.now - start).total_seconds()
    print(
        f"{rounds} rounds in {took:.0f} s of rollout ({driver.status.phase}), Traefik loading "
        f"a split {args.traefik_delay:g} s after it is declared: {at_once} rounds due again "
        f"at once; ~{rounds * ROUND:.1f} s of CPU"
    )


if __name__ == "__main__":
    main()
