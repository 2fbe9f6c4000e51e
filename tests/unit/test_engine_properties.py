"""Property-based tests of the invariants api.md promises users.

Each example drives a whole rollout in the fake world. What is drawn:

- the target and the strategy, evenly: every property runs once per (strategy, target) pair of
  KINDS, each run taking its share of the profile's examples (tests/unit/conftest.py: "ci",
  the default, gives each property at least 500 in all);
- the strategy's settings where the API has them: batch size, wait, minHealthy and
  failureThreshold (Rolling), autoPromote, preview and scale-down delay (BlueGreen), the short
  or long form of steps with timed and manual pauses, and canaryHosts on Docker (Canary);
  analysis on or off, automatic rollback on or off;
- a world that misbehaves: instances slow to become ready, a new version that errs or never
  becomes ready, instances that were ready going unready for a while (mid-step), a router
  that applies weights late, loses some, or never applies any;
- a user who acts: promote, promote-full, abort, retry (the lockgate.dev/action annotation)
  and pause/resume (spec.paused), at any moment.

The invariants (`Invariants`) are checked on every decision, against the observation that
decision was made from; the outcome (`check_outcome`) once the rollout has settled.

The crash properties play an `orderly_scenarios` rollout (one whose outcome does not depend
on timing) twice, once as is and once with the faults of a real operator (`Driver.round`),
and compare the ends: a crash after some or all of a round's actions and before its status
write, a status patch that lands twice, a crash that loses a round's actions.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from lockgate.api import ApplicationSpec, DeploymentSpec, DeploymentStatus
from lockgate.api.deployment import ACTIONS, TERMINAL_PHASES, Weights
from lockgate.engine import (
    NO_ROUTES,
    Decision,
    DeploymentRef,
    EnsureInstances,
    Observation,
    Promote,
    SetWeights,
    Step,
    compile_plan,
    decide,
    release_of,
)
from tests.support.fakeworld import (
    T0,
    Driver,
    FakeWorld,
    Outage,
    app_spec,
    dep_spec,
    docker_app_spec,
)

STRATEGY_TYPES = ("Recreate", "Rolling", "BlueGreen", "Canary")
TARGETS = ("kubernetes", "docker")
KINDS = [pytest.param(k, t, id=f"{k}-{t}") for k in STRATEGY_TYPES for t in TARGETS]


def share(parts: int) -> settings:
    """The profile's examples, split evenly over `parts` parametrized runs of one property."""
    return settings(max_examples=math.ceil(settings.default.max_examples / parts))


EVENLY = share(len(KINDS))
PER_TARGET = share(len(TARGETS))
DEADLINE = 20  # progressDeadlineSeconds of the drawn rollouts: long enough for every drawn delay
USER_ACTIONS = ("promote", "promote-full", "abort", "retry", "pause", "resume")
MANAGED = ("Progressing", "Paused", "RollingBack")  # phases in which the engine steers traffic
STEP_DONE = re.compile(r"^step (\d+)/(\d+) done")
TRAFFIC_LIVE = re.compile(r"^traffic live: stable (\d+)% / canary (\d+)%")


# ---------------------------------------------------------------------------- scenarios


@dataclass
class Scenario:
    """One rollout to drive: what is rolled out where, how the world behaves, what the user
    does. `world()` builds a fresh world, so a scenario can be played twice."""

    app: ApplicationSpec
    spec: DeploymentSpec
    world_args: dict[str, Any]
    outages: list[tuple[str, int, int, int]] = field(default_factory=list)
    user: dict[int, list[str]] = field(default_factory=dict)  # round -> what the user does

    def world(self) -> FakeWorld:
        units = self.app.units()
        outages = [
            Outage(
                image,
                units[i % len(units)],
                T0 + timedelta(seconds=s),
                T0 + timedelta(seconds=s + d),
            )
            for image, i, s, d in self.outages
        ]
        args = {**self.world_args, "lost_weights": list(self.world_args.get("lost_weights", []))}
        return FakeWorld(units=units, outages=outages, **args)

    @property
    def weights_never_apply(self) -> bool:
        return "weight_delay" in self.world_args and self.world_args["weight_delay"] is None

    @property
    def healthy(self) -> bool:
        """Nothing in the world, the settings or the user gives the rollout a reason to fail."""
        args = self.world_args
        rolling = self.spec.strategy.rolling
        return (
            not args.get("error_rates", {}).get("app:2")
            and not args.get("unready_images")
            and not self.outages
            and not self.weights_never_apply
            and not any("abort" in acts for acts in self.user.values())
            and not (
                rolling
                and _min_healthy(rolling.min_healthy, len(self.app.units())) > len(self.app.units())
            )
        )


def _min_healthy(value: int | str, units: int) -> int:
    return value if isinstance(value, int) else math.ceil(units * int(value.rstrip("%")) / 100)


# Strategies are built once: Hypothesis validates each new strategy object on first use,
# which costs more than drawing from it.
PERCENT = st.sampled_from(["1%", "25%", "34%", "50%", "100%"])
SECONDS = [st.integers(0, n) for n in range(7)]
BOOLEANS = st.booleans()
AUTOMATIC = st.sampled_from([True, True, False])  # rollback.automatic
WEIGHTS = st.lists(st.integers(0, 99), max_size=3)  # canary weights below 100
PAUSES = st.lists(
    st.one_of(
        st.builds(lambda s: {"pause": {"seconds": s}}, st.integers(0, 3)),
        st.just({"pause": {}}),  # waits for a promote
    ),
    max_size=1,
)
ANALYSIS = st.one_of(
    st.none(),
    st.builds(
        lambda interval, failures: {
            "intervalSeconds": interval,
            "minRequests": 10,
            "maxConsecutiveFailures": failures,
        },
        st.integers(2, 4),
        st.integers(1, 3),
    ),
)
# How late the router serves a split written to it: at once, seconds later, or (None) never.
WEIGHT_DELAYS = st.sampled_from([0.0, 0.0, 1.0, 2.0, 5.0, None])
LATE_WEIGHTS = st.sampled_from([0.0, 0.0, 1.0, 2.0, 5.0])
LOST_WEIGHTS = st.lists(BOOLEANS, max_size=4)
READY_AFTER = st.floats(0, 6)
ERROR_RATES = st.sampled_from([0.0, 0.0, 0.5])
UNREADY = st.sampled_from([set(), set(), set(), {"app:2"}])
USER = st.lists(st.tuples(st.integers(0, 30), st.sampled_from(USER_ACTIONS)), max_size=3)
TARGET_SIZES = {"kubernetes": st.integers(1, 5), "docker": st.integers(1, 4)}
MAYBE_STEP = st.one_of(st.none(), st.integers(0, 8))  # where a StepUser acts
FAULT_ROUNDS = st.sets(st.integers(0, 60), min_size=1, max_size=15)  # rounds with a fault
# Round -> how many of its actions ran before the operator crashed (4: all of them), before
# its status patch landed.
CRASHES = st.dictionaries(st.integers(0, 60), st.integers(0, 4), min_size=1, max_size=15)


@functools.cache
def sized(units: int) -> dict[str, st.SearchStrategy[Any]]:
    """Strategies that depend on how many units (replicas or hosts) there are."""
    return {
        "batch": st.one_of(st.integers(1, units + 1), PERCENT),
        "min_healthy": st.one_of(st.integers(0, units + 1), st.just("0%"), PERCENT),
        "canary_hosts": st.one_of(st.none(), st.integers(1, units + 1), PERCENT),
        "outages": st.lists(
            st.tuples(
                st.sampled_from(["app:1", "app:2"]),
                st.integers(0, units - 1),
                st.integers(0, 30),
                st.integers(1, 10),
            ),
            max_size=2,
        ),
    }


def strategy_of(draw: st.DrawFn, kind: str, units: int, docker: bool) -> dict[str, Any]:
    """A strategy of `kind` with every setting the API has for it drawn."""
    if kind == "Rolling":
        return {
            "type": kind,
            "rolling": {
                "batchSize": draw(sized(units)["batch"]),
                "batchWaitSeconds": draw(SECONDS[3]),
                "minHealthy": draw(sized(units)["min_healthy"]),
                "failureThreshold": draw(st.integers(1, 3)),
            },
        }
    if kind == "BlueGreen":
        return {
            "type": kind,
            "blueGreen": {
                "autoPromote": draw(BOOLEANS),
                "previewSeconds": draw(SECONDS[4]),
                "scaleDownDelaySeconds": draw(SECONDS[6]),
            },
        }
    if kind == "Canary":
        weights = sorted(draw(WEIGHTS))
        canary: dict[str, Any]
        if draw(BOOLEANS):  # the short form
            canary = {"steps": [*weights, 100], "stepSeconds": draw(SECONDS[3])}
        else:  # the long form, with timed pauses and pauses that wait for a promote
            steps: list[Any] = []
            for w in weights:
                steps += [{"setWeight": w}, *draw(PAUSES)]
            canary = {"steps": [*steps, {"setWeight": 100}]}
        if docker:
            hosts = draw(sized(units)["canary_hosts"])
            if hosts is not None:
                canary["canaryHosts"] = hosts
                # Fixed canary hosts at any weight, never refused for their load (the limit
                # has its own tests in test_engine_strategies.py).
                canary["maxCanaryLoadPercent"] = 10000
        return {"type": kind, "canary": canary}
    return {"type": kind}


def target_app(draw: st.DrawFn, target: str) -> ApplicationSpec:
    size = draw(TARGET_SIZES[target])
    return docker_app_spec(size) if target == "docker" else app_spec(size)


@st.composite
def scenarios(draw: st.DrawFn, kind: str, target: str) -> Scenario:
    """Anything: a misbehaving world and a user acting at random moments."""
    app = target_app(draw, target)
    units = len(app.units())
    spec = dep_spec(
        strategy=strategy_of(draw, kind, units, target == "docker"),
        analysis=draw(ANALYSIS),
        rollback={"automatic": draw(AUTOMATIC)},
        progressDeadlineSeconds=DEADLINE,
    )
    world_args = {
        "ready_after": draw(READY_AFTER),
        "error_rates": {"app:2": draw(ERROR_RATES)},
        "unready_images": draw(UNREADY),
        "weight_delay": draw(WEIGHT_DELAYS),
        "lost_weights": draw(LOST_WEIGHTS),
    }
    outages = draw(sized(units)["outages"])
    user: dict[int, list[str]] = {}
    for at, act in draw(USER):
        user.setdefault(at, []).append(act)
    return Scenario(app, spec, world_args, outages, user)


@st.composite
def orderly_scenarios(draw: st.DrawFn, kind: str, target: str) -> Scenario:
    """A rollout whose outcome does not depend on timing, so a run with crashes must end
    exactly as the same run without: no outages, a new version that is healthy, or one whose
    analysis gates can never pass (Canary with analysis), a router that is late but applies
    every weight in the end, and no user actions at random moments (see `StepUser`)."""
    app = target_app(draw, target)
    units = len(app.units())
    strategy = strategy_of(draw, kind, units, target == "docker")
    if kind == "Rolling":  # minHealthy above the instances is refused: these runs need steps
        rolling = strategy["rolling"]
        rolling["minHealthy"] = min(_min_healthy(rolling["minHealthy"], units), units)
    gated = draw(ANALYSIS) if kind == "Canary" else None
    spec = dep_spec(
        strategy=strategy,
        analysis=gated,
        rollback={"automatic": draw(AUTOMATIC)},
        progressDeadlineSeconds=600,  # outlasts every run of crashes drawn
    )
    world_args = {
        "ready_after": draw(READY_AFTER),
        "error_rates": {"app:2": draw(st.sampled_from([0.0, 0.5])) if gated else 0.0},
        "weight_delay": draw(LATE_WEIGHTS),
        "lost_weights": draw(LOST_WEIGHTS),
    }
    return Scenario(app, spec, world_args)


# ---------------------------------------------------------------------------- users


class User:
    """Does what the scenario says at each round; once it has nothing left to do, it behaves:
    resumes a paused rollout and promotes one that waits for a promote."""

    def __init__(self, scenario: Scenario) -> None:
        self.script = scenario.user
        self.last = max(self.script, default=-1)

    def act(self, driver: Driver, round_no: int) -> None:
        for what in self.script.get(round_no, ()):
            do(driver, what)
        if round_no > self.last:
            self.behave(driver)

    def behave(self, driver: Driver) -> None:
        if driver.spec.paused:
            do(driver, "resume")
        elif (
            driver.status.phase == "Paused"
            and driver.world.action is None
            and driver.status.pending_action is None
        ):
            do(driver, "promote")

    def done(self, driver: Driver, round_no: int) -> bool:
        return round_no > self.last


@dataclass
class StepUser(User):
    """Acts when the rollout reaches a step, not at a moment, so that a run with crashes and
    one without see the same actions at the same points: pause (spec.paused) at a step, then
    abort while paused, or resume; promote-full at a step (healthy rollouts only: with a bad
    canary it would race the analysis); retry once after a failed or aborted end."""

    pause_at: int | None = None
    abort_when_paused: bool = False
    promote_full_at: int | None = None
    retry: bool = False
    paused_rounds: int = 0
    done_acts: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.script, self.last = {}, -1

    def act(self, driver: Driver, round_no: int) -> None:
        status = driver.status
        index = status.step.index if status.step else -1
        moving = status.phase in ("Progressing", "Paused")
        # Like the plugin, it gives an action once the last one was answered.
        idle = driver.world.action is None and status.pending_action is None
        if moving and self.pause_at is not None and index >= self.pause_at and self.once("pause"):
            do(driver, "pause")
        if driver.spec.paused:
            self.paused_rounds += 1
            aborted = "abort" in self.done_acts
            if self.abort_when_paused and not aborted and idle and self.once("abort"):
                do(driver, "abort")
            elif status.phase in TERMINAL_PHASES or (
                self.paused_rounds > 3
                and (not self.abort_when_paused or (aborted and idle and moving))
            ):
                do(driver, "resume")  # after a while, or at the end, or the abort was ignored
            return
        due = self.promote_full_at is not None and index >= self.promote_full_at
        if moving and due and idle and self.once("promote-full"):
            do(driver, "promote-full")
        failed = status.phase in ("RolledBack", "Aborted", "Failed")
        if failed and self.retry and idle and self.once("retry"):
            do(driver, "retry")
        self.behave(driver)

    def once(self, what: str) -> bool:
        if what in self.done_acts:
            return False
        self.done_acts.add(what)
        return True

    def done(self, driver: Driver, round_no: int) -> bool:
        failed = driver.status.phase in ("RolledBack", "Aborted", "Failed")
        return not (failed and self.retry and "retry" not in self.done_acts)

    @property
    def abort_sent(self) -> bool:
        return "abort" in self.done_acts


@st.composite
def step_users(draw: st.DrawFn, scenario: Scenario) -> StepUser:
    healthy = not scenario.world_args["error_rates"]["app:2"]
    return StepUser(
        pause_at=draw(MAYBE_STEP),
        abort_when_paused=draw(BOOLEANS),
        promote_full_at=draw(MAYBE_STEP) if healthy else None,
        retry=draw(BOOLEANS),
    )


def do(driver: Driver, what: str) -> None:
    if what == "pause":
        if not driver.spec.paused:
            driver.with_spec(paused=True)
    elif what == "resume":
        if driver.spec.paused:
            driver.with_spec(paused=False)
    else:
        driver.world.action = what  # kubectl annotate --overwrite


# ---------------------------------------------------------------------------- invariants


def ready_of(obs: Observation, release: str) -> tuple[set[str], set[str]]:
    """(stable, canary) units with a ready instance, the canary only if this rollout's."""
    canary = set(obs.canary.ready) if obs.canary.release == release else set()
    return set(obs.stable.ready), canary


def expected_split(step: Step, obs: Observation, release: str) -> tuple[int, int]:
    """The split a step holds, stated as api.md does: the step's weight, or in a rolling
    batch an equal share for every ready instance that serves; never a share for a side with
    no ready instance (all of it to the other side then); the promote step moves everything
    to the new version, which becomes the stable one."""
    stable, canary = ready_of(obs, release)
    if step.kind == "promote":
        if obs.stable.release == release:
            return (100, 0)
        return (100, 0) if stable and not canary else (0, 100)
    canary &= set(step.canary_units)
    if not canary:
        return (100, 0)
    if not stable:
        return (0, 100)
    if step.weight is not None:
        return (100 - step.weight, step.weight)
    c = len(canary & set(step.traffic_canary))
    t = len(stable & set(step.traffic_stable))
    weight = round(100 * c / (c + t)) if c + t else 0
    return (100 - weight, weight)


def failing_side(
    split: tuple[int, int], stable: set[str], canary: set[str], strict: bool = False
) -> str | None:
    """Which side of `split` gets traffic without a ready instance while the other side has
    one; `strict`: the canary never gets any without a ready instance (what the engine asks
    for), even when nothing else is ready either."""
    if split[1] > 0 and not canary and (stable or strict):
        return f"canary {split[1]}% with no ready canary instance"
    if split[0] > 0 and not stable and canary:
        return f"stable {split[0]}% with no ready stable instance while the canary is ready"
    return None


def moved(before: DeploymentStatus, after: DeploymentStatus) -> bool:
    """The decision took the rollout to another phase or step."""
    if before.phase != after.phase or (before.step is None) != (after.step is None):
        return True
    if before.step is None or after.step is None:
        return False
    return (before.step.index, before.step.restoring) != (after.step.index, after.step.restoring)


@dataclass
class Invariants:
    """What must hold after each decision, judged against the observation it was made from.
    `decisions` counts the decisions checked (a run that checks nothing proves nothing)."""

    app: ApplicationSpec
    decisions: int = 0

    def check(
        self, driver: Driver, before: DeploymentStatus, obs: Observation, d: Decision
    ) -> None:
        after = d.status
        release = release_of(driver.name, after.revision)
        stable_ready, canary_ready = ready_of(obs, release)
        where = f"{after.phase} step {after.step.index if after.step else None}: {after.message}"
        asked = [(a.stable, a.canary) for a in d.actions if isinstance(a, SetWeights)]

        # Weights sum to 100 and go only to a side with ready instances.
        for split in asked:
            assert split[0] + split[1] == 100 and min(split) >= 0, (split, where)
            bad = failing_side(split, stable_ready, canary_ready, strict=True)
            assert bad is None, f"asked for {split}: {bad} ({where})"

        # While the engine steers traffic, the split it holds (what it asks for, or what is
        # live when it asks nothing) never leaves traffic on a side with no ready instance.
        # A decision that moves the rollout to another step or phase steers in the next one,
        # which the controller runs at once (a round whose status changed is not waited on).
        if (
            after.phase in MANAGED
            and not moved(before, after)
            and not any(isinstance(a, Promote) for a in d.actions)
        ):
            held = asked[-1] if asked else obs.live_weights
            if held is not None:
                bad = failing_side(held, stable_ready, canary_ready)
                assert bad is None, f"holds {held}: {bad} ({where})"

        # The status says only what is live: its weights, and every "traffic live" line.
        live = obs.live_weights
        if after.phase not in ("Pending", "Queued") and live is not None:
            assert after.weights == Weights(stable=live[0], canary=live[1]), (
                f"status.weights says {after.weights}, the split live is {live} ({where})"
            )
        said = [
            m
            for e in after.log
            if e.at == driver.world.now and (m := TRAFFIC_LIVE.match(e.message))
        ]
        for m in said:
            assert (int(m.group(1)), int(m.group(2))) == live, (m.group(0), live, where)

        # Failed after a start says the traffic went back: the proxy routes it so already.
        entered_failed = after.phase == "Failed" and before.phase != "Failed"
        if entered_failed and after.started_at and obs.stable.ready:
            routed = (obs.live_weights, obs.live_routes)
            assert routed == ((100, 0), NO_ROUTES), f"{where}, while the proxy routes {routed}"

        # In proportion: each weight change is the split of the step the rollout is at, or,
        # while an abort waits for its annotation's removal, all on a ready stable at once.
        step = self.step_of(driver, before, after)
        aborting = after.pending_action == "abort" and after.phase in ("Progressing", "Paused")
        promoted = step is not None and step.kind == "promote" and obs.stable.release == release
        if aborting and obs.stable.ready and not promoted:
            assert all(split == (100, 0) for split in asked), f"asked for {asked}, abort pending"
        elif step is not None:
            want = expected_split(step, obs, release)
            for split in asked:
                assert split == want, f"asked for {split}, step {step.description!r} holds {want}"
            for m in said:
                assert (int(m.group(1)), int(m.group(2))) == want, (m.group(0), want)

        for action in d.actions:
            if isinstance(action, EnsureInstances):
                self.check_removal(driver, action, obs, after, asked, release)

        # An action the user gives is recorded, or answered in the log: never removed unseen
        # (the annotation goes this round when another action was already recorded).
        given = obs.action
        if given in ACTIONS and before.pending_action not in (None, given):
            words = [e.message for e in after.log if e.at == driver.world.now]
            assert any(f"action {given} ignored" in w for w in words), (
                f"action {given} removed unseen while {before.pending_action} was pending: {words}"
            )

    def step_of(
        self, driver: Driver, before: DeploymentStatus, after: DeploymentStatus
    ) -> Step | None:
        """The plan step a decision executed, when it executed one (not a failure, a
        rollback of a batch, or the start of a new rollout)."""
        moving = ("Progressing", "Paused")
        if before.phase not in moving or after.phase not in moving or before.step is None:
            return None
        if before.step.restoring or before.spec_hash != after.spec_hash:
            return None
        plan = compile_plan(self.app, driver.spec, has_stable=before.previous_image is not None)
        return plan.steps[min(before.step.index, len(plan.steps) - 1)]

    def check_removal(
        self,
        driver: Driver,
        action: EnsureInstances,
        obs: Observation,
        after: DeploymentStatus,
        asked: list[tuple[int, int]],
        release: str,
    ) -> None:
        """No traffic to an instance being drained: instances leave only once no traffic can
        reach them, unless there is nowhere else for it to go; and never below minHealthy."""
        role = obs.stable if action.role == "stable" else obs.canary
        if action.image is None or not action.units or action.release != role.release:
            removed = set(role.units)
        else:
            removed = set(role.units) - set(action.units)
        serving = removed & set(role.ready)
        if not serving:
            return
        stable_ready, canary_ready = ready_of(obs, release)
        side = 0 if action.role == "stable" else 1
        others = canary_ready if side == 0 else stable_ready
        if not set(role.ready) - removed and others:
            live = obs.live_weights  # None: not known to be served, so it may be anything
            carried = "an unknown share" if live is None else f"{live[side]}%"
            assert live is not None and live[side] == 0, (
                f"drains {action.role} {sorted(serving)} while they carry {carried} live "
                f"and the other side has ready instances ({after.phase}: {after.message})"
            )
            for split in asked:
                assert split[side] == 0, f"drains {action.role} but asks {split} for it"
        if action.role == "stable" and after.phase in ("Progressing", "Paused"):
            plan = compile_plan(self.app, driver.spec, has_stable=after.previous_image is not None)
            healthy_after = len(set(obs.stable.ready) - removed) + len(canary_ready)
            assert healthy_after >= plan.min_healthy, (
                f"drains {sorted(removed)} leaving {healthy_after} < minHealthy {plan.min_healthy}"
            )


# ---------------------------------------------------------------------------- playing


Fault = Callable[[Driver, int], tuple[Observation, Decision]]


def no_fault(driver: Driver, round_no: int) -> tuple[Observation, Decision]:
    return driver.round()


def settled(driver: Driver, before: DeploymentStatus, decision: Decision) -> bool:
    """The rollout is over and nothing is left to do: a decision that changed nothing (and
    whose status is the stored one), no action asked, none waiting in the annotation or the
    status, no weight in flight, not paused."""
    world = driver.world
    return (
        before.phase in TERMINAL_PHASES
        and decision.status == before == driver.status
        and not decision.actions
        and before.pending_action is None
        and world.action is None
        and not world.in_flight
        and not driver.spec.paused
    )


def play(
    scenario: Scenario,
    user: User | None = None,
    fault: Fault = no_fault,
    limit: int = 1500,
    stored: bool = False,
    checked: bool = True,
    again: bool = False,
) -> tuple[Driver, Invariants]:
    """Drive the scenario until the rollout has settled, checking every decision (unless
    not `checked`); `again`: decide a second time from the same inputs, which must give the
    same decision."""
    driver = Driver(scenario.app, scenario.spec, scenario.world(), stored={} if stored else None)
    user = user or User(scenario)
    invariants = Invariants(scenario.app)
    for round_no in range(limit):
        user.act(driver, round_no)
        before = driver.status
        kept = before.model_copy(deep=True) if again else before
        obs, decision = fault(driver, round_no)
        invariants.decisions += 1
        if checked:
            invariants.check(driver, before, obs, decision)
        if again:
            assert before == kept, "deciding changed the status it decided from"
            ref = DeploymentRef(driver.name, driver.generation, driver.spec)
            assert decide(scenario.app, ref, before, obs, driver.world.now) == decision
        if user.done(driver, round_no) and settled(driver, before, decision):
            return driver, invariants
        driver.world.now += timedelta(seconds=1)
    raise AssertionError(f"did not settle: {driver.status.phase} {driver.status.message}")


def outcome(driver: Driver) -> tuple[object, ...]:
    world = driver.world
    world.settle()
    return (
        driver.status.phase,
        driver.status.attempt,
        world.stable.image,
        tuple(sorted(world.stable.started)),
        tuple(sorted(world.canary.started)),
        world.weights,
        world.lock_holder,
    )


def check_outcome(scenario: Scenario, driver: Driver, abort_sent: bool) -> None:
    """The world as the final phase says it is."""
    status, world = driver.status, driver.world
    units = sorted(scenario.app.units())
    world.settle()
    phase = status.phase
    assert phase in TERMINAL_PHASES, phase
    if phase == "Succeeded":
        assert not scenario.weights_never_apply, "succeeded though no weight was ever applied"
        assert world.stable.image == "app:2" and sorted(world.stable.started) == units
    elif phase in ("RolledBack", "Aborted"):
        assert world.stable.image == "app:1", status.message
        assert sorted(world.stable.started) == units, status.message
    if phase != "Failed":
        assert not world.canary.started, (phase, world.canary)
        assert world.weights == world.live_weights == (100, 0), (phase, world.weights)
        assert world.lock_holder is None, "the rollout lock is released when it ends"
    else:
        # Refused before start (a pair of settings that can never work) is Failed either way.
        refused = (status.message or "").startswith("spec.") and not status.batches
        assert refused or not scenario.spec.rollback.automatic, (
            f"Failed with automatic rollback: {status.message}"
        )
        if world.stable.started and world.observe().stable.ready:
            assert world.weights == (100, 0), "a failed rollout returns traffic to the old version"
    if phase == "Aborted":
        assert abort_sent, f"Aborted with no abort sent: {status.message}"
    if scenario.healthy and not abort_sent:
        assert phase == "Succeeded", f"a healthy rollout ended {phase}: {status.message}"


def check_steps_in_order(status: DeploymentStatus) -> None:
    """The last attempt's log: each step done once, in order; only promote-full (a jump) and
    a batch rolled back to be retried start the count again."""
    log = [e.message for e in status.log]
    starts = [i for i, m in enumerate(log) if m.startswith("Progressing: rolling out")]
    previous = None
    for message in log[starts[-1] if starts else 0 :]:
        if message.startswith(("promote-full", "retrying batch")):
            previous = None
        elif m := STEP_DONE.match(message):
            done = int(m.group(1))
            assert previous is None or done == previous + 1, (previous, done, log)
            previous = done
    if status.phase == "Succeeded" and status.step is not None:
        assert previous == status.step.total, (previous, status.step.total, log)


# ---------------------------------------------------------------------------- properties


@pytest.mark.parametrize(("kind", "target"), KINDS)
@EVENLY
@given(data=st.data())
def test_weights_sum_to_100_and_go_only_to_healthy_instances(
    kind: str, target: str, data: st.DataObject
) -> None:
    """Every decision: weights sum to 100, go only to a side with ready instances and are the
    split of the step (in proportion to ready instances in a rolling batch); the split the
    engine holds never stays on a side that lost its ready instances; the status and its log
    state only weights that are live; instances are drained only once no traffic reaches them
    and never below minHealthy."""
    scenario = data.draw(scenarios(kind, target))
    for act in sorted({act for acts in scenario.user.values() for act in acts}):
        event(f"user: {act}")
    event(f"weights: {'never' if scenario.weights_never_apply else 'applied'}")
    event(f"outages: {len(scenario.outages)}")
    _, invariants = play(scenario)
    assert invariants.decisions > 0


@pytest.mark.parametrize(("kind", "target"), KINDS)
@EVENLY
@given(data=st.data())
def test_failed_verdict_restores_everything(kind: str, target: str, data: st.DataObject) -> None:
    """The end: Succeeded has the new version everywhere; RolledBack and Aborted the old one
    everywhere; both with no canary, all traffic to stable, the lock free; Failed only without
    automatic rollback; a healthy rollout succeeds; a router that never applies a weight never
    lets a rollout succeed."""
    scenario = data.draw(scenarios(kind, target))
    driver, _ = play(scenario, checked=False)  # the property above checks every decision
    event(f"ended {driver.status.phase}")  # --hypothesis-show-statistics shows how often
    check_outcome(scenario, driver, any("abort" in acts for acts in scenario.user.values()))


@pytest.mark.parametrize(("kind", "target"), KINDS)
@EVENLY
@given(data=st.data())
def test_same_inputs_same_decision(kind: str, target: str, data: st.DataObject) -> None:
    """decide() is a function: at every round of any rollout, deciding again from the same
    inputs gives the same decision (status, actions, events, requeue), and deciding leaves
    its inputs as they were."""
    scenario = data.draw(scenarios(kind, target))
    _, invariants = play(scenario, checked=False, again=True)
    assert invariants.decisions > 0


@pytest.mark.parametrize(("kind", "target"), KINDS)
@EVENLY
@given(data=st.data())
def test_crash_between_steps_neither_skips_nor_repeats(
    kind: str, target: str, data: st.DataObject
) -> None:
    """A crash that loses a decision's actions after its status was written: the next round
    asks for them again; the rollout still succeeds, every step done once, in order."""
    scenario = data.draw(orderly_scenarios(kind, target))
    scenario.world_args["error_rates"] = {}
    crashes = data.draw(FAULT_ROUNDS)

    def lose_actions(driver: Driver, round_no: int) -> tuple[Observation, Decision]:
        return driver.round(applied=0 if round_no in crashes else None)

    driver, _ = play(scenario, fault=lose_actions)
    assert driver.status.phase == "Succeeded", driver.status.message
    check_steps_in_order(driver.status)


@pytest.mark.parametrize(("kind", "target"), KINDS)
@EVENLY
@given(data=st.data())
def test_crash_after_actions_before_status_write_converges(
    kind: str, target: str, data: st.DataObject
) -> None:
    """The real crash window: a round applied all its actions (or the first few, the next
    one half done: instances created, not started) and died before its status patch landed.
    The restarted operator decides again from the old status and the new world: the same
    outcome as without crashes, every invariant kept on every decision, steps in order."""
    scenario = data.draw(orderly_scenarios(kind, target))
    user = data.draw(step_users(scenario))
    crashes = data.draw(CRASHES)

    def crash_before_write(driver: Driver, round_no: int) -> tuple[Observation, Decision]:
        applied = crashes.get(round_no)
        if applied is None:
            return driver.round()
        return driver.round(applied=applied if applied < 4 else None, writes=0)

    clean, _ = play(scenario, _copy(user), checked=False)  # the reference: checked elsewhere
    crashed, _ = play(scenario, user, fault=crash_before_write)
    assert outcome(crashed) == outcome(clean), crashed.status.message
    check_outcome(scenario, crashed, user.abort_sent)
    check_steps_in_order(crashed.status)


@pytest.mark.parametrize(("kind", "target"), KINDS)
@EVENLY
@given(data=st.data())
def test_status_write_landing_twice_converges(kind: str, target: str, data: st.DataObject) -> None:
    """A status patch that lands twice (a request sent again after its answer was lost).
    The status lives as the API server stores it, JSON read back every round, and the patch
    is the controller's (the fields that changed, merged): the same outcome as with single
    writes, every invariant kept, steps in order."""
    scenario = data.draw(orderly_scenarios(kind, target))
    user = data.draw(step_users(scenario))
    twice = data.draw(FAULT_ROUNDS)

    def write_twice(driver: Driver, round_no: int) -> tuple[Observation, Decision]:
        return driver.round(writes=2 if round_no in twice else 1)

    clean, _ = play(scenario, _copy(user), checked=False)  # the reference: checked elsewhere
    doubled, _ = play(scenario, user, fault=write_twice, stored=True)
    assert outcome(doubled) == outcome(clean), doubled.status.message
    check_outcome(scenario, doubled, user.abort_sent)
    check_steps_in_order(doubled.status)


def _copy(user: StepUser) -> StepUser:
    return StepUser(user.pause_at, user.abort_when_paused, user.promote_full_at, user.retry)


@pytest.mark.parametrize("target", TARGETS)
@PER_TARGET
@given(data=st.data())
def test_rolling_never_drops_below_min_healthy(target: str, data: st.DataObject) -> None:
    """What is served (ready instances of a side with live weight) never drops below
    minHealthy while instances are replaced, however late the router applies weights."""
    app = target_app(data.draw, target)
    replicas = len(app.units())
    batch = data.draw(st.integers(1, replicas))
    min_healthy = data.draw(st.integers(0, replicas))
    strategy = {"type": "Rolling", "rolling": {"batchSize": batch, "minHealthy": min_healthy}}
    world = FakeWorld(
        units=app.units(),
        ready_after=data.draw(st.floats(0, 5)),
        weight_delay=data.draw(LATE_WEIGHTS),
    )
    driver = Driver(app, dep_spec(strategy=strategy, progressDeadlineSeconds=60), world)
    for _ in range(2000):
        driver.round()
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
