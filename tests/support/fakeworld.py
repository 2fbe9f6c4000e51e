"""An in-memory world for engine tests: applies the engine's actions the way a target and
a router would, and observes itself. Instances become ready `ready_after` seconds after they
start, unless their image is in `unready_images`; canary metrics come from `error_rates`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from lockgate.api import ApplicationSpec, DeploymentSpec, DeploymentStatus
from lockgate.engine import (
    AcquireLock,
    Action,
    ClearAction,
    Decision,
    DeploymentRef,
    EnsureInstances,
    InstanceSet,
    MetricsSample,
    Observation,
    Promote,
    ReleaseLock,
    SetWeights,
    Supersede,
    VersionMetrics,
    analysis_window_start,
    decide,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeSet:
    release: str | None = None
    image: str | None = None
    started: dict[str, datetime] = field(default_factory=dict)  # unit -> start time
    # units whose instances exist but were never started (an operator killed in between)
    created: set[str] = field(default_factory=set)

    def observe(self, now: datetime, ready_after: float, unready: set[str]) -> InstanceSet:
        units = tuple(sorted(self.started))
        ready = tuple(
            u
            for u in units
            if self.image not in unready
            and u not in self.created
            and now - self.started[u] >= timedelta(seconds=ready_after)
        )
        return InstanceSet(self.release, self.image, units, ready, tuple(sorted(self.created)))


@dataclass
class FakeWorld:
    units: tuple[str, ...]
    stable_image: str | None = "app:1"
    ready_after: float = 5.0
    unready_images: set[str] = field(default_factory=set)
    error_rates: dict[str, float] = field(default_factory=dict)
    requests_per_window: int = 1000
    lock_holder: str | None = None
    action: str | None = None
    superseded_by: str | None = None
    queued_ahead: int = 0
    now: datetime = T0
    stable: FakeSet = field(default_factory=FakeSet)
    canary: FakeSet = field(default_factory=FakeSet)
    weights: tuple[int, int] = (100, 0)
    applied: list[Action] = field(default_factory=list)
    unit_errors: dict[str, str] = field(default_factory=dict)
    refusal: str | None = None

    def __post_init__(self) -> None:
        if self.stable_image is not None and not self.stable.started:
            self.stable = FakeSet(
                "old/1", self.stable_image, {u: T0 - timedelta(hours=1) for u in self.units}
            )

    def observe(self, metrics: MetricsSample | None = None) -> Observation:
        return Observation(
            stable=self.stable.observe(self.now, self.ready_after, self.unready_images),
            canary=self.canary.observe(self.now, self.ready_after, self.unready_images),
            live_weights=self.weights,
            metrics=metrics,
            lock_holder=self.lock_holder,
            queued_ahead=self.queued_ahead,
            superseded_by=self.superseded_by,
            action=self.action,
            unit_errors=dict(self.unit_errors),
            refusal=self.refusal,
        )

    def metrics(self) -> MetricsSample:
        def figures(image: str | None, share: int) -> VersionMetrics:
            n = self.requests_per_window * share // 100
            return VersionMetrics(n, round(n * self.error_rates.get(image or "", 0.0)), 0.05)

        stable, canary = self.weights
        return MetricsSample(
            canary=figures(self.canary.image, canary), stable=figures(self.stable.image, stable)
        )

    def apply(self, name: str, actions: list[Action]) -> None:
        for action in actions:
            self.applied.append(action)
            if isinstance(action, EnsureInstances):
                target = self.stable if action.role == "stable" else self.canary
                if target.release != action.release or target.image != action.image:
                    target.started = {}
                    target.release, target.image = action.release, action.image
                target.started = {
                    u: self.now if u in target.created else target.started.get(u, self.now)
                    for u in action.units
                }
                target.created = set()
                if not action.units:
                    target.release = target.image = None
            elif isinstance(action, SetWeights):
                assert action.stable + action.canary == 100
                self.weights = (action.stable, action.canary)
            elif isinstance(action, Promote):
                self.stable, self.canary = self.canary, self.stable
                self.weights = (self.weights[1], self.weights[0])
            elif isinstance(action, AcquireLock):
                if self.lock_holder is None:
                    self.lock_holder = name
            elif isinstance(action, ReleaseLock):
                if self.lock_holder == name:
                    self.lock_holder = None
            elif isinstance(action, ClearAction):
                self.action = None
            elif isinstance(action, Supersede):
                pass


@dataclass
class Driver:
    """Runs the reconcile loop: observe -> decide -> apply, advancing the clock."""

    app: ApplicationSpec
    spec: DeploymentSpec
    world: FakeWorld
    name: str = "dep"
    generation: int = 1
    status: DeploymentStatus = field(default_factory=DeploymentStatus)
    decisions: list[Decision] = field(default_factory=list)

    def step(self, *, drop_actions: bool = False) -> Decision:
        ref = DeploymentRef(self.name, self.generation, self.spec)
        metrics = None
        if analysis_window_start(self.spec, self.status, self.world.now) is not None:
            metrics = self.world.metrics()
        decision = decide(self.app, ref, self.status, self.world.observe(metrics), self.world.now)
        self.decisions.append(decision)
        self.status = decision.status
        if not drop_actions:
            self.world.apply(self.name, decision.actions)
        return decision

    def run(
        self, *, tick: float = 1.0, limit: int = 5000, until: set[str] | None = None
    ) -> DeploymentStatus:
        until = until or {"Succeeded", "RolledBack", "Failed", "Aborted"}
        for _ in range(limit):
            self.step()
            if self.status.phase in until:
                return self.status
            self.world.now += timedelta(seconds=tick)
        raise AssertionError(f"did not finish: {self.status.phase} {self.status.message}")

    def with_spec(self, **changes: object) -> None:
        """A spec edit as a user makes it: camelCase fields, validated again."""
        self.spec = DeploymentSpec.model_validate({**self.spec.wire(), **changes})
        self.generation += 1


def app_spec(replicas: int = 4, **extra: object) -> ApplicationSpec:
    return ApplicationSpec.model_validate({"kubernetes": {"replicas": replicas}, **extra})


def docker_app_spec(hosts: int = 3) -> ApplicationSpec:
    return ApplicationSpec.model_validate(
        {
            "docker": {
                "hosts": [
                    {"name": f"h{i}", "url": f"unix:///h{i}", "address": f"h{i}"}
                    for i in range(1, hosts + 1)
                ]
            }
        }
    )


def dep_spec(image: str = "app:2", **extra: object) -> DeploymentSpec:
    return DeploymentSpec.model_validate({"application": "shop", "image": image, **extra})


_ = replace  # re-exported convenience for tests
