"""Property-based tests of the invariants api.md promises users."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lockgate.api import DeploymentSpec
from lockgate.engine import DeploymentRef, SetWeights, decide
from tests.support.fakeworld import Driver, FakeWorld, app_spec, dep_spec

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def strategies(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["Recreate", "Rolling", "BlueGreen", "Canary"]))
    if kind == "Rolling":
        size = draw(st.one_of(st.integers(1, 4), st.sampled_from(["25%", "50%", "100%"])))
        return {
            "type": kind,
            "rolling": {"batchSize": size, "batchWaitSeconds": draw(st.integers(0, 5))},
        }
    if kind == "BlueGreen":
        return {
            "type": kind,
            "blueGreen": {
                "previewSeconds": draw(st.integers(0, 5)),
                "scaleDownDelaySeconds": draw(st.integers(0, 10)),
            },
        }
    if kind == "Canary":
        weights = [*sorted(draw(st.lists(st.integers(0, 99), min_size=0, max_size=4))), 100]
        return {"type": kind, "canary": {"steps": weights, "stepSeconds": draw(st.integers(0, 5))}}
    return {"type": kind}


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[Any, DeploymentSpec, FakeWorld]:
    replicas = draw(st.integers(1, 6))
    app = app_spec(replicas)
    spec = dep_spec(
        strategy=draw(strategies()),
        analysis={"intervalSeconds": 3, "minRequests": 10},
        progressDeadlineSeconds=30,
    )
    world = FakeWorld(
        units=app.units(),
        ready_after=draw(st.floats(0, 8)),
        error_rates={"app:2": draw(st.sampled_from([0.0, 0.0, 0.5]))},
        unready_images=draw(st.sampled_from([set(), set(), {"app:2"}])),
    )
    return app, spec, world


def check_weights_only_to_healthy(driver: Driver) -> None:
    """Run to the end, checking every weight change against what was observed healthy."""
    for _ in range(3000):
        obs = driver.world.observe()
        decision = driver.step()
        canary_ready = bool(obs.canary.ready)
        stable_ready = bool(obs.stable.ready)
        for action in decision.actions:
            if isinstance(action, SetWeights):
                assert action.stable + action.canary == 100
                if action.canary > 0 and not canary_ready:
                    raise AssertionError(f"canary weight {action.canary} without a healthy canary")
                if action.stable > 0 and not stable_ready and canary_ready:
                    raise AssertionError(f"stable weight {action.stable} without a healthy stable")
        if driver.status.phase in ("Succeeded", "RolledBack", "Failed", "Aborted"):
            return
        driver.world.now += timedelta(seconds=1)
    raise AssertionError("did not finish")


@SETTINGS
@given(scenarios())
def test_weights_sum_to_100_and_go_only_to_healthy_instances(scenario: Any) -> None:
    app, spec, world = scenario
    check_weights_only_to_healthy(Driver(app, spec, world))


@SETTINGS
@given(scenarios())
def test_failed_verdict_restores_everything(scenario: Any) -> None:
    app, spec, world = scenario
    status = Driver(app, spec, world).run()
    if status.phase == "RolledBack":
        assert world.weights == (100, 0)
        assert world.stable.image == "app:1"
        assert sorted(world.stable.started) == sorted(app.units())
        assert not world.canary.started
    else:
        assert status.phase == "Succeeded", status.message
        assert world.stable.image == "app:2" and not world.canary.started


@SETTINGS
@given(scenarios(), st.integers(0, 200))
def test_same_inputs_same_decision(scenario: Any, steps: int) -> None:
    app, spec, world = scenario
    driver = Driver(app, spec, world)
    for _ in range(steps):
        driver.step()
        world.now += timedelta(seconds=1)
    obs = world.observe(world.metrics())
    ref = DeploymentRef("dep", 1, spec)
    first = decide(app, ref, driver.status, obs, world.now)
    second = decide(app, ref, driver.status, obs, world.now)
    assert first == second


STEP_DONE = re.compile(r"^step (\d+)/(\d+) done")


@SETTINGS
@given(scenarios(), st.lists(st.booleans(), min_size=50, max_size=400))
def test_crash_between_steps_neither_skips_nor_repeats(scenario: Any, crashes: list[bool]) -> None:
    app, spec, world = scenario
    world.error_rates = {}
    world.unready_images = set()
    # Outages longer than the progress deadline rightly fail a rollout; this property is
    # about resuming, so the deadline outlasts every simulated outage.
    spec = DeploymentSpec.model_validate({**spec.wire(), "progressDeadlineSeconds": 3600})
    driver = Driver(app, spec, world)
    for crash in crashes:
        driver.step(drop_actions=crash)  # a crash loses the actions; status was persisted
        world.now += timedelta(seconds=1)
    status = driver.run()
    assert status.phase == "Succeeded", status.message
    done = [int(m.group(1)) for e in status.log if (m := STEP_DONE.match(e.message))]
    total = status.step.total if status.step else 0
    assert done == list(range(1, total + 1))[-len(done) :], done
    assert done[-1] == total


@SETTINGS
@given(st.integers(2, 6), st.data())
def test_rolling_never_drops_below_min_healthy(replicas: int, data: st.DataObject) -> None:
    app = app_spec(replicas)
    batch = data.draw(st.integers(1, replicas))
    min_healthy = data.draw(st.integers(0, replicas))
    strategy = {"type": "Rolling", "rolling": {"batchSize": batch, "minHealthy": min_healthy}}
    world = FakeWorld(units=app.units(), ready_after=data.draw(st.floats(0, 5)))
    driver = Driver(app, dep_spec(strategy=strategy, progressDeadlineSeconds=60), world)
    for _ in range(2000):
        driver.step()
        obs = world.observe()
        stable_w, canary_w = world.weights
        serving = (len(obs.stable.ready) if stable_w else 0) + (
            len(obs.canary.ready) if canary_w else 0
        )
        assert serving >= min(min_healthy, replicas), (serving, driver.status.step)
        if driver.status.phase in ("Succeeded", "RolledBack"):
            break
        world.now += timedelta(seconds=1)
    assert driver.status.phase == "Succeeded", driver.status.message
