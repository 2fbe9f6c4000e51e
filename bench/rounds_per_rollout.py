"""How many rounds one rollout of bench.scale's canary takes, its driver waiting as the
operator's does (the engine alone, over the engine tests' fake world; figures, never
asserted). A round that changed nothing sleeps until its timer (`requeue_after`), or the
safety net; one due again at once runs again as soon as the previous round is over, which
takes ROUND seconds (bench.round_cost: ~15 ms of CPU for a round that changes nothing).

    python -m bench.rounds_per_rollout
"""

from __future__ import annotations

from datetime import timedelta

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
EVENT = 0.1  # after a write or an action, the watch event's delay


def main() -> None:
    world = FakeWorld(units=("replica-1",), ready_after=1, requests_per_window=100)
    driver = Driver(app_spec(replicas=1), dep_spec(strategy=STRATEGY, analysis=ANALYSIS), world)
    start = world.now
    rounds = idle = at_once = 0
    while driver.status.phase != "Succeeded" and rounds < 100_000:
        before = driver.status
        decision = driver.step()
        rounds += 1
        if decision.actions or decision.status != before:
            world.now += timedelta(seconds=EVENT + ROUND)
            continue
        idle += 1
        wait = decision.requeue_after
        at_once += wait == 0
        world.now += timedelta(seconds=max(ROUND, wait if wait is not None else 1.0))
    took = (world.now - start).total_seconds()
    print(
        f"{rounds} rounds in {took:.0f} s of rollout ({driver.status.phase}): {idle} changed "
        f"nothing, {at_once} of them due again at once; ~{rounds * ROUND:.1f} s of CPU"
    )


if __name__ == "__main__":
    main()
