"""Table-driven engine tests: every strategy and every manual action, in the fake world."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest

from lockgate.api import DeploymentStatus
from lockgate.engine import (
    ClearAction,
    DeploymentRef,
    EnsureInstances,
    MetricsSample,
    Observation,
    SetWeights,
    Supersede,
    cross_check,
    decide,
)
from lockgate.engine.analysis import query_results
from tests.support.fakeworld import T0, Driver, FakeWorld, app_spec, dep_spec, docker_app_spec

CANARY = {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 10}}
CANARY_MANUAL = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]},
}
ROLLING_1 = {"type": "Rolling", "rolling": {"batchSize": 1}}
ROLLING_50 = {
    "type": "Rolling",
    "rolling": {"batchSize": "50%", "batchWaitSeconds": 5, "minHealthy": 2},
}
BLUE_GREEN = {"type": "BlueGreen", "blueGreen": {"previewSeconds": 10, "scaleDownDelaySeconds": 20}}
RECREATE = {"type": "Recreate"}
ANALYSIS = {"intervalSeconds": 5, "minRequests": 20}


@dataclass
class Case:
    name: str
    strategy: dict[str, Any]
    phase: str
    message: str = ""
    analysis: dict[str, Any] | None = field(default_factory=lambda: dict(ANALYSIS))
    world: dict[str, Any] = field(default_factory=dict)
    deadline: int = 60


CASES = [
    Case("canary healthy", CANARY, "Succeeded", "rolled out app:2"),
    Case(
        "canary 30% errors",
        CANARY,
        "RolledBack",
        "canary 5xx ratio 0.30 > maxErrorRate 0.05",
        world={"error_rates": {"app:2": 0.3}},
    ),
    Case(
        "canary never ready",
        CANARY,
        "RolledBack",
        "0/1 new instance(s) ready",
        world={"unready_images": {"app:2"}},
    ),
    Case(
        "canary without traffic",
        CANARY,
        "RolledBack",
        "no passed analysis within",
        world={"requests_per_window": 10},
    ),
    Case("rolling one at a time", ROLLING_1, "Succeeded", analysis=None),
    Case("rolling half at a time", ROLLING_50, "Succeeded"),
    Case(
        "rolling never ready",
        ROLLING_1,
        "RolledBack",
        "batch 1 failed",
        world={"unready_images": {"app:2"}},
    ),
    Case("blue-green healthy", BLUE_GREEN, "Succeeded"),
    Case(
        "blue-green errors after switch",
        BLUE_GREEN,
        "RolledBack",
        "canary 5xx ratio",
        world={"error_rates": {"app:2": 0.5}},
    ),
    Case(
        "blue-green never ready",
        BLUE_GREEN,
        "RolledBack",
        "new instance(s) ready",
        world={"unready_images": {"app:2"}},
    ),
    Case("recreate healthy", RECREATE, "Succeeded", analysis=None),
    Case(
        "recreate never ready",
        RECREATE,
        "RolledBack",
        "0/4 new instance(s) ready",
        analysis=None,
        world={"unready_images": {"app:2"}},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_strategy(case: Case) -> None:
    app = app_spec(4)
    extra: dict[str, Any] = {"strategy": case.strategy, "progressDeadlineSeconds": case.deadline}
    if case.analysis:
        extra["analysis"] = case.analysis
    world = FakeWorld(units=app.units(), **case.world)
    status = Driver(app, dep_spec(**extra), world).run()
    assert status.phase == case.phase, status.message
    assert case.message in (status.message or "")
    assert world.weights == (100, 0)
    assert not world.canary.started, "nothing of the other version may be left"
    expected = "app:2" if case.phase == "Succeeded" else "app:1"
    assert world.stable.image == expected
    assert sorted(world.stable.started) == sorted(app.units())
    conditions = {c.type: c.status for c in status.conditions}
    assert conditions["Ready"] == ("True" if case.phase == "Succeeded" else "False")
    assert conditions["Stalled"] == ("False" if case.phase == "Succeeded" else "True")


def test_recreate_drains_although_the_proxy_serves_no_split_once_the_old_set_is_gone() -> None:
    """Traefik drops a weighted service whose only Service has no endpoints left, so once
    Recreate has stopped the old instances no split is ever confirmed live. Nothing can be
    served then, by design: the drain is done (it waited for a split until its deadline and
    rolled a good version back)."""
    app = app_spec(3)
    world = FakeWorld(units=app.units(), drops_empty_sides=True)
    status = Driver(app, dep_spec(strategy=RECREATE, progressDeadlineSeconds=60), world).run()
    assert status.phase == "Succeeded", status.message
    assert world.stable.image == "app:2" and world.weights == (100, 0)


def test_never_ready_canary_never_receives_traffic() -> None:
    app = app_spec(4)
    world = FakeWorld(units=app.units(), unready_images={"app:2"})
    Driver(
        app, dep_spec(strategy=CANARY, analysis=ANALYSIS, progressDeadlineSeconds=30), world
    ).run()
    assert all(a.canary == 0 for a in world.applied if isinstance(a, SetWeights))


def test_failed_rolling_batch_is_retried_below_the_threshold() -> None:
    app = app_spec(4)
    world = FakeWorld(units=app.units(), unready_images={"app:2"})
    strategy = {"type": "Rolling", "rolling": {"batchSize": 2, "failureThreshold": 2}}
    status = Driver(app, dep_spec(strategy=strategy, progressDeadlineSeconds=30), world).run()
    assert status.phase == "RolledBack"
    assert status.batches[0].failures == 2
    assert status.batches[0].attempts == 2
    assert any("rolling it back to retry" in e.message for e in status.log)


def test_rolling_keeps_min_healthy_when_stable_instances_are_down() -> None:
    app = app_spec(4)
    world = FakeWorld(units=app.units())
    # Two stable instances are unhealthy: draining one more would leave too few.
    world.stable.started["replica-3"] = world.now + timedelta(hours=1)
    world.stable.started["replica-4"] = world.now + timedelta(hours=1)
    strategy = {"type": "Rolling", "rolling": {"batchSize": 1, "minHealthy": 3}}
    driver = Driver(app, dep_spec(strategy=strategy, progressDeadlineSeconds=30), world)
    status = driver.run()
    assert status.phase == "RolledBack"
    assert any("minHealthy 3" in e.message for e in status.log)


def test_initial_rollout_skips_the_strategy() -> None:
    app = app_spec(3)
    world = FakeWorld(units=app.units(), stable_image=None)
    status = Driver(app, dep_spec(strategy=CANARY, analysis=ANALYSIS), world).run()
    assert status.phase == "Succeeded"
    assert status.step is not None and status.step.total == 3
    assert world.stable.image == "app:2"


def test_canary_losing_its_ready_instances_at_promotion_gets_no_traffic() -> None:
    """The promote step holds 100% on the new set until it swaps the roles; a new set that
    goes unready meanwhile gives the traffic back to the old one until it recovers."""
    app = app_spec(2)
    world = FakeWorld(units=app.units(), ready_after=0)
    strategy = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 0}}
    driver = Driver(app, dep_spec(strategy=strategy), world)
    run_until(driver, lambda s: s.step is not None and s.step.description.startswith("promote"))
    assert world.weights == (0, 100)
    world.unready_images = {"app:2"}
    assert SetWeights(100, 0) in driver.step().actions
    assert world.weights == (100, 0) and world.stable.image == "app:1"
    world.unready_images = set()
    assert driver.run().phase == "Succeeded"
    assert world.stable.image == "app:2" and world.weights == (100, 0)


def test_a_switch_to_a_new_set_with_no_ready_instance_waits_for_it() -> None:
    """A step giving the new version traffic is not done on the split held while none of its
    instances is ready (all to the old set): the switch waits for them, and the scale-down
    delay counts from the switch (it ran on 100% to the old set, then held 100% on a router
    that never served it, forever)."""
    app = app_spec(1)
    world = FakeWorld(units=app.units(), ready_after=0)
    strategy = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 5}}
    driver = Driver(app, dep_spec(strategy=strategy), world)
    run_until(driver, lambda s: s.step is not None and s.step.description.startswith("switch"))
    world.unready_images = {"app:2"}
    for _ in range(5):
        driver.step()
        world.now += timedelta(seconds=1)
    assert driver.status.step is not None
    assert driver.status.step.description.startswith("switch"), "done with no traffic moved"
    assert world.weights == (100, 0)
    world.unready_images = set()
    run_until(driver, lambda s: s.step is not None and s.step.description.startswith("keep"))
    assert world.weights == (0, 100), "the delay starts once the switch is live"
    assert driver.run().phase == "Succeeded"
    assert world.stable.image == "app:2"


def test_paused_at_the_promotion_with_nothing_ready_asks_for_no_split() -> None:
    """Paused at the promotion of a rolling update whose old instances are all gone, while
    the new one is down too: no split is asked for (all to the old set would leave the new
    one without traffic once it recovers); once it is ready again it has it all."""
    app = app_spec(1)
    world = FakeWorld(units=app.units(), ready_after=0)
    strategy = {"type": "Rolling", "rolling": {"batchSize": 1, "minHealthy": "0%"}}
    driver = Driver(app, dep_spec(strategy=strategy), world)
    run_until(driver, lambda s: s.step is not None and s.step.description.startswith("promote"))
    assert not world.stable.started, "the old instance is gone"
    driver.with_spec(paused=True)
    world.unready_images = {"app:2"}
    asked = [a for _ in range(3) for a in driver.step().actions if isinstance(a, SetWeights)]
    assert asked == [], "nothing ready on either side: no split to ask for"
    world.unready_images = set()
    driver.step()
    assert world.weights == (0, 100)


def test_rolling_drains_old_instances_only_once_traffic_has_left_them() -> None:
    """A batch whose new instance was down while it shifted traffic confirmed a split that
    still sends everything to the old one. When the drain comes, the new one is back: the
    old instance leaves only once the split giving it nothing is live."""
    app = app_spec(1)
    world = FakeWorld(units=app.units(), ready_after=0, weight_delay=2)
    strategy = {"type": "Rolling", "rolling": {"batchSize": 1, "minHealthy": 0}}
    driver = Driver(app, dep_spec(strategy=strategy), world)
    run_until(driver, lambda s: s.step is not None and ": shift" in s.step.description)
    world.unready_images = {"app:2"}
    driver.step()
    assert driver.status.step is not None and ": drain" in driver.status.step.description
    assert world.weights == (100, 0)
    world.unready_images = set()
    world.now += timedelta(seconds=1)
    decision = driver.step()
    assert SetWeights(0, 100) in decision.actions
    assert not any(isinstance(a, EnsureInstances) and a.role == "stable" for a in decision.actions)
    while world.weights != (0, 100):
        assert world.stable.started, "the old instance still serves"
        world.now += timedelta(seconds=1)
        driver.step()
    assert driver.run().phase == "Succeeded"


def test_promote_step_waits_no_longer_than_the_progress_deadline() -> None:
    """The promote step waits for the new set and for 100% to it to be live, like any step
    that waits for instances or traffic: a router that stopped applying weights fails the
    rollout at the deadline instead of holding it Progressing for ever."""
    app = app_spec(1)
    world = FakeWorld(units=app.units(), ready_after=0)
    strategy = {"type": "Canary", "canary": {"steps": [100]}}
    driver = Driver(app, dep_spec(strategy=strategy, progressDeadlineSeconds=30), world)
    run_until(driver, lambda s: s.step is not None and s.step.description.startswith("promote"))
    world.unready_images = {"app:2"}  # down at the promotion: the traffic goes back to 100/0
    driver.step()
    assert world.weights == (100, 0)
    world.unready_images = set()
    world.weight_delay = None  # and from now on the router applies nothing
    status = driver.run()
    assert status.phase == "RolledBack", status.message
    assert "new instance(s) ready, 100% to them not confirmed live" in (status.message or "")
    assert world.stable.image == "app:1" and world.weights == (100, 0)


def test_a_pause_whose_split_stops_being_served_fails_at_the_deadline() -> None:
    """A pause judged by analysis holds its split. When the proxy stops serving it (back to
    the old split, applying nothing any more), the pause does not wait for ever: at
    progressDeadlineSeconds after the split stopped being live the rollout rolls back,
    naming the split (it stayed Progressing for ever)."""
    app = app_spec(4)
    world = FakeWorld(units=app.units())
    strategy = {"type": "Canary", "canary": {"steps": [10, {"pause": {"seconds": 600}}, 100]}}
    spec = dep_spec(strategy=strategy, analysis=ANALYSIS, progressDeadlineSeconds=30)
    driver = Driver(app, spec, world)
    run_until(driver, lambda s: s.step is not None and s.step.description == "pause 600s")
    world.weights, world.weight_delay = (100, 0), None
    lost = world.now
    status = driver.run()
    assert status.phase == "RolledBack", status.message
    assert "traffic split not confirmed live within progressDeadlineSeconds 30" in (
        status.message or ""
    )
    assert world.now - lost < timedelta(seconds=60), "ended by the deadline, not the pause"
    assert world.stable.image == "app:1" and world.weights == (100, 0)


def test_a_gate_inconclusive_until_the_deadline_fails_naming_the_last_reason() -> None:
    """A metrics source that stops answering mid-rollout (Prometheus down) never passes a
    gate: every run after is Inconclusive, and the progress deadline fails the step with the
    last run's reason, so the rollback names what was missing."""
    app = app_spec(4)
    world = FakeWorld(units=app.units())
    spec = dep_spec(strategy=CANARY, analysis=ANALYSIS, progressDeadlineSeconds=60)
    driver = Driver(app, spec, world)
    gate = "setWeight 50 (analysis gate)"
    run_until(driver, lambda s: s.step is not None and s.step.description == gate)
    before = len(driver.status.analysis)
    world.metrics_error = "Prometheus at http://prom:9090 unreachable: connection refused"
    status = driver.run()
    assert status.phase == "RolledBack", status.message
    runs = status.analysis[before:]
    assert runs and {r.verdict for r in runs} == {"Inconclusive"}
    assert runs[-1].source == "fake"
    assert status.message is not None
    assert (
        f"step 5 ({gate}): no passed analysis within "
        "progressDeadlineSeconds 60 (metrics unavailable: Prometheus at http://prom:9090 "
        "unreachable: connection refused)"
    ) in status.message
    assert world.stable.image == "app:1" and world.weights == (100, 0)


def test_query_results_keep_only_numbers_json_can_hold() -> None:
    sample = MetricsSample(queries={"a": 0.5, "none": None, "nan": math.nan, "inf": math.inf})
    assert query_results(sample) == {"a": 0.5}
    assert query_results(MetricsSample(queries={"none": None})) is None


def test_docker_canary_uses_canary_hosts_until_100() -> None:
    app = docker_app_spec(3)
    world = FakeWorld(units=app.units())
    strategy = {
        "type": "Canary",
        "canary": {"steps": [20, 50, 100], "stepSeconds": 0, "canaryHosts": 1},
    }
    driver = Driver(app, dep_spec(strategy=strategy, analysis=ANALYSIS), world)
    status = driver.run()
    assert status.phase == "Succeeded"
    canary_sets = [
        a.units for a in world.applied if isinstance(a, EnsureInstances) and a.role == "canary"
    ]
    assert canary_sets[0] == ("h1",)
    assert ("h1", "h2", "h3") in canary_sets


def test_docker_canary_hosts_grow_with_the_weight_without_canary_hosts() -> None:
    app = docker_app_spec(3)
    world = FakeWorld(units=app.units())
    strategy = {"type": "Canary", "canary": {"steps": [20, 50, 100], "stepSeconds": 0}}
    status = Driver(app, dep_spec(strategy=strategy, analysis=ANALYSIS), world).run()
    assert status.phase == "Succeeded"
    canary_sets = [
        a.units for a in world.applied if isinstance(a, EnsureInstances) and a.role == "canary"
    ]
    # 20% of 3 hosts needs one, 50% two: no canary host carries more than a host did before.
    assert canary_sets[0] == ("h1",)
    assert ("h1", "h2") in canary_sets
    assert canary_sets.index(("h1", "h2")) < canary_sets.index(("h1", "h2", "h3"))


@pytest.mark.parametrize(
    ("canary", "refused"),
    [
        ({"canaryHosts": 1, "steps": [20, 50, 100]}, False),  # 150% at 50: within 200%
        ({"canaryHosts": 1, "steps": [20, 90, 100]}, True),  # 270% at 90
        ({"canaryHosts": 1, "steps": [50, 100], "maxCanaryLoadPercent": 100}, True),
        ({"canaryHosts": 2, "steps": [20, 90, 100]}, False),  # 135%
        ({"steps": [20, 90, 100]}, False),  # grows with the weight
    ],
)
def test_a_weight_that_overloads_fixed_canary_hosts_is_refused_naming_the_field(
    canary: dict[str, object], refused: bool
) -> None:
    app = docker_app_spec(3)
    strategy = {"type": "Canary", "canary": {"stepSeconds": 0, **canary}}
    status = Driver(app, dep_spec(strategy=strategy), FakeWorld(units=app.units())).run()
    if refused:
        assert status.phase == "Failed"
        assert "spec.strategy.canary.canaryHosts" in (status.message or "")
        assert "maxCanaryLoadPercent" in (status.message or "")
    else:
        assert status.phase == "Succeeded"


def test_canary_hosts_with_kubernetes_fails_naming_the_field() -> None:
    app = app_spec(3)
    strategy = {"type": "Canary", "canary": {"steps": [100], "canaryHosts": 1}}
    status = Driver(app, dep_spec(strategy=strategy), FakeWorld(units=app.units())).run()
    assert status.phase == "Failed"
    assert "spec.strategy.canary.canaryHosts" in (status.message or "")


def test_queries_without_prometheus_on_the_application_fail_before_start() -> None:
    """Only Prometheus answers PromQL: the pair is refused before anything starts, instead
    of a gate waiting Inconclusive until the deadline."""
    query = {"name": "up", "promql": "up", "min": 1}
    spec = dep_spec(strategy=CANARY, analysis={**ANALYSIS, "queries": [query]})
    world = FakeWorld(units=app_spec(3).units())
    status = Driver(app_spec(3), spec, world).run()
    assert status.phase == "Failed"
    assert (status.message or "").startswith(
        "spec.analysis.queries: PromQL gates need spec.metrics.prometheus on the Application"
    )
    assert not world.canary.started
    with_prometheus = app_spec(3, metrics={"prometheus": {"url": "http://prom:9090"}})
    assert cross_check(with_prometheus, spec) is None


def test_min_healthy_above_the_instances_fails_before_start_naming_the_field() -> None:
    """minHealthy 4 of 3 instances could never let one drain: refused at once, not after
    a wait until the progress deadline."""
    strategy = {"type": "Rolling", "rolling": {"batchSize": 1, "minHealthy": 4}}
    world = FakeWorld(units=app_spec(3).units())
    status = Driver(app_spec(3), dep_spec(strategy=strategy), world).run()
    assert status.phase == "Failed"
    assert status.message == (
        "spec.strategy.rolling.minHealthy: 4 is more than the Application's 3 instance(s)"
    )
    assert not world.canary.started
    equal = {"type": "Rolling", "rolling": {"batchSize": 1, "minHealthy": 3}}
    assert cross_check(app_spec(3), dep_spec(strategy=equal)) is None


# ---------------------------------------------------------------- manual actions


def run_until(driver: Driver, predicate: Any, limit: int = 2000) -> None:
    for _ in range(limit):
        driver.step()
        if predicate(driver.status):
            return
        driver.world.now += timedelta(seconds=1)
    raise AssertionError(f"never reached: {driver.status.phase} {driver.status.message}")


def manual_driver(strategy: dict[str, Any] = CANARY_MANUAL, **extra: Any) -> Driver:
    app = app_spec(4)
    return Driver(
        app, dep_spec(strategy=strategy, analysis=ANALYSIS, **extra), FakeWorld(units=app.units())
    )


def test_indefinite_pause_waits_for_promote() -> None:
    driver = manual_driver()
    run_until(driver, lambda s: s.phase == "Paused")
    driver.world.now += timedelta(hours=5)
    driver.step()
    assert driver.status.phase == "Paused", "an indefinite pause never times out"
    driver.world.action = "promote"
    assert driver.step().status.pending_action == "promote"
    status = driver.run()
    assert status.phase == "Succeeded"


def test_action_is_recorded_first_and_applied_after_the_annotation_is_gone() -> None:
    driver = manual_driver()
    run_until(driver, lambda s: s.phase == "Paused")
    driver.world.action = "promote"
    index = driver.status.step.index if driver.status.step else -1
    decision = driver.step(drop_actions=True)  # crash: the annotation stays
    assert ClearAction() in decision.actions
    assert decision.status.step is not None and decision.status.step.index == index
    decision = driver.step()  # annotation still there: only cleared, not applied twice
    assert decision.status.step is not None and decision.status.step.index == index
    decision = driver.step()
    assert decision.status.step is not None and decision.status.step.index == index + 1


def test_an_action_given_while_another_is_pending_is_ignored_with_a_reason() -> None:
    """Actions are taken one at a time; one that arrives while another is recorded but not
    yet applied is removed with the annotation, and says so instead of vanishing."""
    driver = manual_driver()
    run_until(driver, lambda s: s.phase == "Paused")
    driver.world.action = "promote"
    driver.step()
    assert driver.status.pending_action == "promote"
    driver.world.action = "abort"  # overwrites the annotation before it was removed
    decision = driver.step()
    assert any("action abort ignored: promote is pending" in e.message for e in decision.status.log)
    assert any(e.reason == "ActionIgnored" for e in decision.events)
    assert driver.run().phase == "Succeeded"


def test_promote_while_instances_start_is_ignored_with_a_reason() -> None:
    driver = manual_driver()
    driver.step()
    driver.step()
    driver.world.action = "promote"
    driver.step()
    status = driver.step().status
    assert any("promote ignored" in e.message for e in status.log)


def test_promote_full_skips_pauses_and_gates() -> None:
    strategy = {"type": "Canary", "canary": {"steps": [10, 20, 30, 100], "stepSeconds": 3600}}
    driver = manual_driver(strategy)
    run_until(driver, lambda s: s.step is not None and s.step.index >= 2)
    driver.world.action = "promote-full"
    status = driver.run()
    assert status.phase == "Succeeded"
    assert driver.world.now - T0 < timedelta(hours=1)


def test_abort_rolls_back_and_ends_aborted() -> None:
    driver = manual_driver()
    run_until(driver, lambda s: s.phase == "Paused")
    driver.world.action = "abort"
    status = driver.run()
    assert status.phase == "Aborted"
    assert driver.world.stable.image == "app:1" and not driver.world.canary.started
    assert driver.world.weights == (100, 0)


def test_abort_takes_traffic_off_the_new_version_in_the_decision_that_sees_it() -> None:
    """The abort itself waits for its annotation's removal (two-phase); the traffic does not:
    the first decision that sees the annotation asks for all of it on stable."""
    driver = manual_driver()
    run_until(driver, lambda s: s.phase == "Paused")
    assert driver.world.weights != (100, 0)
    driver.world.action = "abort"
    decision = driver.step()
    assert decision.status.phase == "Paused" and decision.status.pending_action == "abort"
    assert SetWeights(100, 0) in decision.actions
    assert driver.world.weights == (100, 0)
    assert driver.step().status.phase == "RollingBack"


def test_abort_once_the_new_version_is_stable_lets_the_promotion_complete() -> None:
    """After the promote step swapped the roles, rolling back would remove the previous
    version and call it restored: the abort is ignored, saying why, and the rollout ends."""
    app = app_spec(2)
    world = FakeWorld(units=app.units(), ready_after=0)
    strategy = {"type": "BlueGreen", "blueGreen": {"scaleDownDelaySeconds": 0}}
    driver = Driver(app, dep_spec(strategy=strategy), world)
    run_until(driver, lambda s: s.step is not None and s.step.description.startswith("promote"))
    while world.stable.image != "app:2":
        driver.step()
    world.action = "abort"
    status = driver.run()
    assert status.phase == "Succeeded", status.message
    assert world.stable.image == "app:2" and not world.canary.started
    assert any("abort ignored: the new version is already stable" in e.message for e in status.log)


def test_retry_after_rollback_starts_over() -> None:
    app = app_spec(2)
    world = FakeWorld(units=app.units(), error_rates={"app:2": 0.3})
    driver = Driver(app, dep_spec(strategy=CANARY, analysis=ANALYSIS), world)
    assert driver.run().phase == "RolledBack"
    world.error_rates = {}
    world.action = "retry"
    status = driver.run(until={"Succeeded"})
    assert status.attempt == 1
    assert world.stable.image == "app:2"


def test_spec_paused_holds_the_rollout_and_resumes() -> None:
    driver = manual_driver(CANARY)
    run_until(driver, lambda s: s.step is not None and s.step.index == 2)
    driver.with_spec(paused=True)
    driver.step()
    assert driver.status.phase == "Paused"
    for _ in range(100):
        driver.world.now += timedelta(seconds=1)
        driver.step()
    assert driver.status.step is not None and driver.status.step.index == 2
    driver.with_spec(paused=False)
    assert driver.run().phase == "Succeeded"


def test_unknown_action_is_reported_and_cleared() -> None:
    driver = manual_driver()
    driver.world.action = "promot"
    decision = driver.step()
    assert ClearAction() in decision.actions
    assert any(e.reason == "UnknownAction" for e in decision.events)


def test_failed_without_automatic_rollback_keeps_instances_until_abort() -> None:
    app = app_spec(2)
    world = FakeWorld(units=app.units(), error_rates={"app:2": 0.3})
    driver = Driver(
        app, dep_spec(strategy=CANARY, analysis=ANALYSIS, rollback={"automatic": False}), world
    )
    status = driver.run()
    assert status.phase == "Failed"
    driver.step()
    assert world.weights == (100, 0)
    assert world.canary.started, "kept for inspection"
    world.action = "abort"
    assert driver.run(until={"Aborted"}).phase == "Aborted"
    assert not world.canary.started


def failing_without_automatic_rollback(weight_delay: float) -> Driver:
    app = app_spec(2)
    world = FakeWorld(units=app.units(), error_rates={"app:2": 0.3}, weight_delay=weight_delay)
    spec = dep_spec(strategy=CANARY, analysis=ANALYSIS, rollback={"automatic": False})
    return Driver(app, spec, world)


def test_failed_says_traffic_returned_only_once_the_proxy_routes_it_back() -> None:
    driver = failing_without_automatic_rollback(weight_delay=5)
    status = driver.run(until={"RollingBack", "Failed"})
    assert status.phase == "RollingBack"
    assert (status.message or "").endswith("returning traffic to app:1, new instances kept")
    assert driver.world.weights != (100, 0), "the proxy still sends some to the canary"
    status = driver.run()
    assert status.phase == "Failed"
    assert "traffic returned to app:1" in (status.message or "")
    assert driver.world.weights == (100, 0), "the split the proxy served when Failed was said"
    assert driver.world.canary.started, "kept for inspection"


def test_an_abort_while_traffic_returns_removes_the_new_instances_too() -> None:
    driver = failing_without_automatic_rollback(weight_delay=5)
    driver.run(until={"RollingBack"})
    driver.world.action = "abort"
    status = driver.run()
    assert status.phase == "Aborted"
    assert not driver.world.canary.started
    assert driver.world.weights == (100, 0)


# ---------------------------------------------------------------- concurrency, revisions, lookup


def decide_once(obs: Observation, **extra: Any) -> Any:
    return decide(
        app_spec(2), DeploymentRef("b", 1, dep_spec(**extra)), DeploymentStatus(), obs, T0
    )


def test_queue_waits_for_the_holder() -> None:
    decision = decide_once(Observation(lock_holder="a"))
    assert decision.status.phase == "Queued"
    assert "waiting for a" in (decision.status.message or "")
    assert decision.actions == []


def test_replace_asks_the_holder_to_step_aside() -> None:
    decision = decide_once(Observation(lock_holder="a"), concurrencyPolicy="Replace")
    assert decision.status.phase == "Queued"
    assert Supersede("a") in decision.actions


def test_superseded_rollout_rolls_back_then_ends_aborted() -> None:
    driver = manual_driver()
    run_until(driver, lambda s: s.phase == "Paused")
    driver.world.superseded_by = "newer"
    status = driver.run()
    assert status.phase == "Aborted"
    assert "superseded by newer" in (status.message or "")
    assert driver.world.lock_holder is None


def test_queue_respects_earlier_deployments() -> None:
    decision = decide_once(Observation(queued_ahead=2))
    assert decision.status.phase == "Queued"


def test_new_image_after_success_starts_revision_2() -> None:
    driver = manual_driver(CANARY)
    assert driver.run().phase == "Succeeded"
    driver.with_spec(image="app:3")
    driver.step()
    assert driver.status.revision == 2 and driver.status.phase in ("Pending", "Progressing")
    assert driver.run().phase == "Succeeded"
    assert driver.world.stable.image == "app:3"


def test_new_image_mid_rollout_rolls_back_then_starts_the_new_revision() -> None:
    driver = manual_driver()
    run_until(driver, lambda s: s.phase == "Paused")
    driver.with_spec(image="app:3", strategy=CANARY)
    run_until(driver, lambda s: s.phase == "Aborted")
    assert driver.world.stable.image == "app:1"
    status = driver.run(until={"Succeeded"})
    assert status.revision == 2
    assert driver.world.stable.image == "app:3"


def test_missing_application_is_a_message_not_a_crash() -> None:
    decision = decide(
        None, DeploymentRef("b", 1, dep_spec()), DeploymentStatus(), Observation(), T0
    )
    assert decision.status.phase == "Pending"
    assert "application 'shop' not found" in (decision.status.message or "")
    assert any(e.reason == "ApplicationNotFound" for e in decision.events)


def test_status_records_history_for_users() -> None:
    driver = manual_driver(CANARY)
    status = driver.run()
    changes = [t.phase for t in status.transitions if t.event not in ("StepCompleted", "Promoted")]
    assert changes == ["Pending", "Progressing", "Succeeded"]
    events = [t.event for t in status.transitions]
    assert events[:2] == [None, "Started"] and events[-1] == "Succeeded"
    assert set(events[2:-1]) == {"StepCompleted"}, events
    assert [t.seq for t in status.transitions] == list(range(len(status.transitions)))
    # Each stage transition after an analysis run carries its figures.
    assert status.transitions[-1].metrics is not None
    assert status.transitions[-1].metrics.canary is not None
    assert status.analysis and all(run.verdict == "Passed" for run in status.analysis)
    assert status.observed_generation == driver.generation


# ---------------------------------------------------------------- Docker hosts that fail


def test_host_failing_mid_batch_fails_it_by_name_and_restores_the_others() -> None:
    app = docker_app_spec(3)
    world = FakeWorld(units=app.units())
    driver = Driver(app, dep_spec(strategy=ROLLING_1), world)
    for _ in range(200):
        driver.step()
        if driver.status.step and driver.status.step.index >= 3:  # batch 2 starts
            break
        world.now += timedelta(seconds=1)
    world.unit_errors = {"h2": "daemon unreachable: connection refused"}
    status = driver.run()
    assert status.phase == "RolledBack"
    assert "batch 2 failed" in (status.message or "")
    assert "host h2: daemon unreachable: connection refused" in (status.message or "")
    assert "unreachable, left as found: h2" in (status.message or "")
    assert [b.state for b in status.batches] == ["Succeeded", "Failed", "Pending"]
    assert world.stable.image == "app:1" and "h1" in world.stable.started
    assert world.canary.release is None, "the new instances on reachable hosts are removed"
    assert world.weights == (100, 0)


def test_unit_errors_outside_the_current_step_do_not_fail_it() -> None:
    app = docker_app_spec(3)
    world = FakeWorld(units=app.units(), unit_errors={"h3": "no answer within 30 s"})
    driver = Driver(app, dep_spec(strategy=ROLLING_1), world)
    for _ in range(200):
        driver.step()
        if driver.status.step and driver.status.step.index >= 3:
            break
        world.now += timedelta(seconds=1)
    assert driver.status.phase == "Progressing"
    assert driver.status.batches[0].state == "Succeeded"


def test_refusal_before_start_fails_without_acting_and_frees_the_lock() -> None:
    app = docker_app_spec(3)
    world = FakeWorld(units=app.units(), refusal="insufficient capacity: host h1: not enough")
    status = Driver(app, dep_spec(strategy=ROLLING_1), world).run()
    assert status.phase == "Failed"
    assert status.message == "refused before start: insufficient capacity: host h1: not enough"
    assert not [a for a in world.applied if isinstance(a, EnsureInstances | SetWeights)]
    assert world.lock_holder is None


def test_instances_left_created_by_a_killed_operator_are_asked_for_again() -> None:
    """The canary container on h1 exists but was never started: only the engine asking
    again gets it started; waiting for it would run into the progress deadline."""
    app = docker_app_spec(3)
    world = FakeWorld(units=app.units())
    driver = Driver(app, dep_spec(strategy=ROLLING_1), world)
    while "h1" not in world.canary.started:
        driver.step()
        world.now += timedelta(seconds=1)
    world.canary.created = {"h1"}
    status = driver.run()
    assert status.phase == "Succeeded", status.message
    assert [b.attempts for b in status.batches] == [1, 1, 1]


def test_a_rollback_starts_again_old_instances_left_created() -> None:
    """An operator killed while it put the previous version back (instances created, not
    started): the rollback asks for them again rather than wait for them for ever."""
    app = app_spec(2)
    world = FakeWorld(units=app.units(), ready_after=0)
    driver = Driver(app, dep_spec(strategy=RECREATE), world)
    run_until(driver, lambda s: s.step is not None and s.step.index == 1)  # old ones stopped
    world.action = "abort"
    run_until(driver, lambda s: s.phase == "RollingBack")
    decision = driver.step(drop_actions=True)
    stable = [a for a in decision.actions if isinstance(a, EnsureInstances) and a.role == "stable"]
    assert stable, decision.actions
    world.start_partially(stable[0])  # killed between creating and starting them
    assert world.stable.created == {"replica-1", "replica-2"}
    assert driver.run().phase == "Aborted"
    assert world.stable.image == "app:1" and not world.stable.created


def test_stable_instances_left_created_are_started_again() -> None:
    app = docker_app_spec(3)
    world = FakeWorld(units=app.units())
    world.stable.created = {"h2"}
    driver = Driver(app, dep_spec(strategy=ROLLING_1), world)
    for _ in range(5):
        driver.step()
    asked = [a for a in world.applied if isinstance(a, EnsureInstances) and a.role == "stable"]
    assert asked and "h2" in asked[0].units
    assert not world.stable.created
