"""Engine decisions per second for 10,000 in-flight Deployments on one core.

Builds 10,000 realistic (status, observation) pairs by driving fake rollouts of every
strategy to a random point, then times `decide` over all of them, several rounds, and
reports the median. Usage: python -m bench.engine_decisions [--deployments N] [--rounds R]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from datetime import timedelta

from lockgate.engine import DeploymentRef, analysis_window_start, decide
from tests.support.fakeworld import Driver, FakeWorld, app_spec, dep_spec

STRATEGIES = [
    {"type": "Canary", "canary": {"steps": [10, 25, 50, 75, 100], "stepSeconds": 30}},
    {"type": "Rolling", "rolling": {"batchSize": "25%", "batchWaitSeconds": 10}},
    {"type": "BlueGreen", "blueGreen": {"previewSeconds": 20, "scaleDownDelaySeconds": 30}},
    {"type": "Recreate"},
]


def in_flight(count: int, seed: int = 7) -> list[tuple[object, ...]]:
    rng = random.Random(seed)
    out: list[tuple[object, ...]] = []
    templates = []
    for strategy in STRATEGIES:
        app = app_spec(8)
        spec = dep_spec(strategy=strategy, analysis={"intervalSeconds": 10, "minRequests": 20})
        world = FakeWorld(units=app.units(), ready_after=3)
        driver = Driver(app, spec, world)
        snapshots = []
        for _ in range(400):
            metrics = (
                world.metrics() if analysis_window_start(spec, driver.status, world.now) else None
            )
            snapshots.append((driver.status, world.observe(metrics), world.now))
            driver.step()
            if driver.status.phase == "Succeeded":
                break
            world.now += timedelta(seconds=1)
        templates.append((app, spec, snapshots))
    for i in range(count):
        app, spec, snapshots = templates[i % len(templates)]
        status, obs, now = rng.choice(snapshots)
        out.append((app, DeploymentRef(f"dep-{i}", 1, spec), status, obs, now))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--deployments", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    cases = in_flight(args.deployments)
    rates = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for app, ref, status, obs, now in cases:
            decide(app, ref, status, obs, now)  # type: ignore[arg-type]
        elapsed = time.perf_counter() - start
        rates.append(len(cases) / elapsed)
    print(f"deployments in flight: {len(cases)}")
    print(f"decisions/s, median of {args.rounds} rounds: {statistics.median(rates):,.0f}")
    print(f"  min {min(rates):,.0f}  max {max(rates):,.0f}")
    print(f"per decision: {1e6 / statistics.median(rates):.1f} µs")


if __name__ == "__main__":
    main()
