"""Compiles a strategy into the list of steps the engine walks, one at a time.

Each step carries the whole desired state while it runs (which units run canary and stable
instances, which traffic split to hold), so the engine can re-derive what to do from the step
index alone after a restart, and a failed batch can be restored to the state before it.
`lockgate plan` prints exactly this list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

from lockgate.api.application import ApplicationSpec
from lockgate.api.common import resolve_int_or_percent
from lockgate.api.deployment import DeploymentSpec

StepKind = Literal["start", "shift", "drain", "pause", "promote"]
# The confirm webhooks asked before a step begins: confirmStep before each canary weight
# after the first and each rolling batch after the first; confirmPromotion before the final
# switch (the stage that gives the new version all traffic).
Confirm = Literal["confirmStep", "confirmPromotion"]


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    description: str
    canary_units: tuple[str, ...]  # units running the new version during this step
    stable_units: tuple[str, ...]  # units running the previous version during this step
    weight: int | None  # canary share to hold; None: proportional to `traffic_*` below
    traffic_canary: tuple[str, ...] = ()
    traffic_stable: tuple[str, ...] = ()
    gate: bool = False  # needs a Passed analysis before it completes
    seconds: int | None = None  # pause length; None on a pause waits for promote
    batch: int | None = None  # rolling batch the step belongs to
    confirm: Confirm | None = None  # confirm webhooks asked before the step begins

    @property
    def waits_for_promote(self) -> bool:
        return self.kind == "pause" and self.seconds is None


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...]
    initial: bool  # no previous version: the strategy's steps do not apply
    batches: tuple[tuple[str, ...], ...] = ()
    min_healthy: int = 0
    failure_threshold: int = 1

    def full_promotion_index(self) -> int:
        """Where promote-full jumps: the last step that starts the new version everywhere."""
        for i in range(len(self.steps) - 1, -1, -1):
            if self.steps[i].kind == "start":
                return i
        return len(self.steps) - 1

    def batch_start(self, batch: int) -> int:
        return next(i for i, s in enumerate(self.steps) if s.batch == batch)


def compile_plan(app: ApplicationSpec, spec: DeploymentSpec, *, has_stable: bool) -> Plan:
    units = app.units()
    key = ("plan", units, app.docker is not None, has_stable)
    plan: Plan = spec.memo(key, lambda: _compile(app, units, spec, has_stable))
    return plan


def _compile(
    app: ApplicationSpec, units: tuple[str, ...], spec: DeploymentSpec, has_stable: bool
) -> Plan:
    if not has_stable:
        return Plan(_initial(units), initial=True)
    strategy = spec.strategy
    if strategy.type == "Recreate":
        return Plan(_recreate(units), initial=False)
    if strategy.type == "BlueGreen":
        return Plan(_blue_green(units, spec), initial=False)
    if strategy.type == "Canary":
        return Plan(_canary(app, units, spec), initial=False)
    return _rolling(units, spec)


def _promote(units: tuple[str, ...]) -> Step:
    return Step(
        "promote", "promote: new version becomes stable, old instances removed", units, (), 100
    )


def _initial(units: tuple[str, ...]) -> tuple[Step, ...]:
    # Nothing to switch from: the new instances serve as soon as they are healthy, so the
    # promotion asked for is the one that makes them the stable version.
    return (
        Step("start", f"start {len(units)} new instance(s)", units, (), 0),
        Step("shift", "route 100% to the new version", units, (), 100),
        replace(_promote(units), confirm="confirmPromotion"),
    )


def _recreate(units: tuple[str, ...]) -> tuple[Step, ...]:
    return (
        Step(
            "drain", f"stop all {len(units)} old instance(s)", (), (), 0, confirm="confirmPromotion"
        ),
        Step("start", f"start {len(units)} new instance(s)", units, (), 0),
        Step("shift", "route 100% to the new version", units, (), 100),
        _promote(units),
    )


def _blue_green(units: tuple[str, ...], spec: DeploymentSpec) -> tuple[Step, ...]:
    bg = spec.strategy.blue_green
    auto_promote = bg.auto_promote if bg else True
    preview = bg.preview_seconds if bg else 0
    delay = bg.scale_down_delay_seconds if bg else 30
    steps = [Step("start", f"start the full new set ({len(units)})", units, units, 0)]
    if preview:
        steps.append(Step("pause", f"preview {preview}s", units, units, 0, seconds=preview))
    if not auto_promote:
        steps.append(Step("pause", "wait for promote", units, units, 0))
    steps.append(
        Step("shift", "switch 100% to the new set", units, units, 100, confirm="confirmPromotion")
    )
    if delay:
        steps.append(
            Step(
                "pause",
                f"keep the old set {delay}s before scale-down",
                units,
                units,
                100,
                seconds=delay,
            )
        )
    steps.append(_promote(units))
    return tuple(steps)


def canary_count(hosts: int, weight: int, share: int | str | None = None) -> int:
    """How many units run the canary while its weight is below 100: a fixed canaryHosts
    share when one is set (an integer or a percentage, rounded up; Docker only), otherwise
    enough to carry the weight, so that no canary instance carries more than each instance
    carried before the rollout. Never fewer than one nor more than there are."""
    if share is not None:
        count = resolve_int_or_percent(share, hosts, round_up=True)
    else:
        count = math.ceil(hosts * weight / 100)
    return max(1, min(hosts, count))


def canary_load_percent(hosts: int, weight: int, count: int) -> int:
    """What one of `count` canary units carries at `weight`, as a percentage of what each of
    the `hosts` units carried before the rollout (rounded up)."""
    return math.ceil(weight * hosts / max(count, 1))


def canary_units_for(
    app: ApplicationSpec, units: tuple[str, ...], spec: DeploymentSpec, weight: int
) -> tuple[str, ...]:
    """Units that run canary instances at a weight: every one at 100; below it as many as
    carry the weight (Kubernetes replicas, Docker hosts), or on Docker hosts the fixed
    canaryHosts share when the Deployment sets one."""
    if weight >= 100 or not units:
        return units
    canary = spec.strategy.canary
    share = canary.canary_hosts if canary is not None and app.docker is not None else None
    return units[: canary_count(len(units), weight, share)]


def first_canary_units(
    app: ApplicationSpec, units: tuple[str, ...], spec: DeploymentSpec
) -> tuple[str, ...]:
    """Where a canary first starts: the units of its first weight."""
    canary = spec.strategy.canary
    weights = canary.weights() if canary is not None else [100]
    return canary_units_for(app, units, spec, weights[0])


def _canary(app: ApplicationSpec, units: tuple[str, ...], spec: DeploymentSpec) -> tuple[Step, ...]:
    assert spec.strategy.canary is not None
    gated = spec.analysis is not None
    steps: list[Step] = []
    canary: tuple[str, ...] = ()
    weight = 0
    first = True
    for item in spec.strategy.canary.expanded_steps():
        if item.set_weight is not None:
            confirm: Confirm | None = None
            if item.set_weight >= 100:
                confirm = "confirmPromotion"
            elif not first:
                confirm = "confirmStep"
            first = False
            wanted = canary_units_for(app, units, spec, item.set_weight)
            if wanted != canary:
                canary = wanted
                steps.append(
                    Step(
                        "start",
                        f"start {len(canary)} canary instance(s)",
                        canary,
                        units,
                        weight,
                        confirm=confirm,
                    )
                )
                confirm = None  # asked once, before the stage's first step
            weight = item.set_weight
            gate = gated and 0 < weight < 100
            label = f"setWeight {weight}" + (" (analysis gate)" if gate else "")
            steps.append(Step("shift", label, canary, units, weight, gate=gate, confirm=confirm))
        else:
            seconds = item.pause.seconds if item.pause else None
            label = "pause until promote" if seconds is None else f"pause {seconds}s"
            steps.append(Step("pause", label, canary, units, weight, seconds=seconds))
    steps.append(_promote(units))
    return tuple(steps)


def _rolling(units: tuple[str, ...], spec: DeploymentSpec) -> Plan:
    rolling = spec.strategy.rolling
    n = len(units)
    size = resolve_int_or_percent(rolling.batch_size if rolling else "25%", n, round_up=True)
    size = max(1, min(n, size)) if n else 1
    wait = rolling.batch_wait_seconds if rolling else 0
    min_healthy = resolve_int_or_percent(rolling.min_healthy if rolling else 1, n, round_up=True)
    batches = tuple(units[i : i + size] for i in range(0, n, size))
    steps: list[Step] = []
    for b, batch in enumerate(batches):
        before = units[: b * size]
        after = units[: b * size + len(batch)]
        rest_before = units[b * size :]
        rest_after = units[b * size + len(batch) :]
        tag = f"batch {b + 1}/{len(batches)}"
        steps += [
            Step(
                "start",
                f"{tag}: start {', '.join(batch)}",
                after,
                rest_before,
                None,
                traffic_canary=before,
                traffic_stable=rest_before,
                batch=b,
                confirm="confirmPromotion"
                if b == len(batches) - 1
                else ("confirmStep" if b > 0 else None),
            ),
            Step(
                "shift",
                f"{tag}: shift traffic to {len(after)}/{n}",
                after,
                rest_before,
                None,
                traffic_canary=after,
                traffic_stable=rest_after,
                batch=b,
            ),
            Step(
                "drain",
                f"{tag}: drain old {', '.join(batch)}",
                after,
                rest_after,
                None,
                traffic_canary=after,
                traffic_stable=rest_after,
                batch=b,
            ),
        ]
        if wait and b < len(batches) - 1:
            steps.append(
                Step(
                    "pause",
                    f"{tag}: wait {wait}s",
                    after,
                    rest_after,
                    None,
                    traffic_canary=after,
                    traffic_stable=rest_after,
                    seconds=wait,
                    batch=b,
                )
            )
    steps.append(_promote(units))
    return Plan(
        tuple(steps),
        initial=False,
        batches=batches,
        min_healthy=min_healthy,
        failure_threshold=rolling.failure_threshold if rolling else 1,
    )
