"""An in-memory world for engine tests: applies the engine's actions the way a target and
a router would, and observes itself. Instances become ready `ready_after` seconds after they
start, unless their image is in `unready_images`; canary metrics come from `error_rates`.

What a real world does to a rollout is drawn in on request: `outages` make an instance that
was ready unready for a while, `weight_delay` makes the router serve a split only some seconds
after it was written (or, None, never) and `lost_weights` loses some writes. Like lockgate's
routers, the world shows a split as live only once the router serves the split last written
(`declared`); while the two differ, the live split is unknown (None).
`Driver.round` runs one reconcile the way the controller does, with the crashes a real
operator can have between its actions and its status write."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from lockgate.api import ApplicationSpec, DeploymentSpec, DeploymentStatus
from lockgate.api.deployment import ACTIONS
from lockgate.engine import (
    NO_ROUTES,
    AcquireLock,
    Action,
    CallWebhook,
    ClearAction,
    Decision,
    DeploymentRef,
    EnsureInstances,
    InstanceSet,
    MetricsSample,
    Observation,
    Promote,
    ReleaseLock,
    Routes,
    SetRoutes,
    SetWeights,
    Supersede,
    VersionMetrics,
    WebhookAnswer,
    analysis_window_start,
    decide,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


class Outage(NamedTuple):
    """The instance of `image` on `unit` fails its health check from `start` until `end`."""

    image: str
    unit: str
    start: datetime
    end: datetime


@dataclass
class FakeSet:
    release: str | None = None
    image: str | None = None
    started: dict[str, datetime] = field(default_factory=dict)  # unit -> start time
    # units whose instances exist but were never started (an operator killed in between)
    created: set[str] = field(default_factory=set)

    def observe(
        self,
        now: datetime,
        ready_after: float,
        unready: set[str],
        down: frozenset[str] = frozenset(),
    ) -> InstanceSet:
        units = tuple(sorted(self.started))
        since = now - timedelta(seconds=ready_after)  # started by then: ready now
        ready = (
            ()
            if self.image in unready
            else tuple(
                u
                for u in units
                if self.started[u] <= since and u not in self.created and u not in down
            )
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
    weights: tuple[int, int] = (100, 0)  # the split the router serves
    declared: tuple[int, int] | None = None  # the split last written to it; None: as served
    applied: list[Action] = field(default_factory=list)
    unit_errors: dict[str, str] = field(default_factory=dict)
    refusal: str | None = None
    outages: list[Outage] = field(default_factory=list)
    # Like Traefik by default (allowEmptyServices false): a weighted service naming a side
    # without a single started instance is not served at all, so no split is live.
    drops_empty_sides: bool = False
    # Seconds before the router serves a split written to it; None: it never does.
    weight_delay: float | None = 0.0
    # One per SetWeights, in order: True loses it (the engine must ask again).
    lost_weights: list[bool] = field(default_factory=list)
    in_flight: list[tuple[datetime, tuple[int, int]]] = field(default_factory=list)
    # The metrics source cannot answer (e.g. "Prometheus at ... unreachable"); None: it can.
    metrics_error: str | None = None
    # What each webhook (by name) answers: an HTTP status, None for no answer; absent: 200.
    # A call is answered at the next observation.
    hook_status: dict[str, int | None] = field(default_factory=dict)
    hook_calls: list[tuple[datetime, CallWebhook]] = field(default_factory=list)
    hook_answers: dict[str, WebhookAnswer] = field(default_factory=dict)
    # The header route and mirror the router serves; `header_share` percent of the requests
    # carry the header (they reach the canary while the route is live).
    routes: Routes = NO_ROUTES
    header_share: int = 0
    # (time, routes, canary instances ready) at every routes change the router serves.
    route_log: list[tuple[datetime, Routes, int]] = field(default_factory=list)
    # Seconds before the router serves routes written to it (the live routes are unknown
    # meanwhile), and what it has been asked for and not served yet.
    route_delay: float = 0.0
    routes_in_flight: list[tuple[datetime, Routes]] = field(default_factory=list)
    declared_routes: Routes = NO_ROUTES  # the routes last written to the router
    # Canary instances removed while a route to the canary was served or on its way.
    removed_under_route: list[datetime] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.stable_image is not None and not self.stable.started:
            self.stable = FakeSet(
                "old/1", self.stable_image, {u: T0 - timedelta(hours=1) for u in self.units}
            )

    def settle(self) -> None:
        """The router serves the splits (and routes) written whose delay has passed, in
        order."""
        while self.in_flight and self.in_flight[0][0] <= self.now:
            self.weights = self.in_flight.pop(0)[1]
        while self.routes_in_flight and self.routes_in_flight[0][0] <= self.now:
            self.serve_routes(self.routes_in_flight.pop(0)[1])

    def serve_routes(self, routes: Routes) -> None:
        self.routes = routes
        ready = self.canary.observe(self.now, self.ready_after, self.unready_images)
        down = self.down(self.canary.image)
        self.route_log.append((self.now, routes, len(set(ready.ready) - down)))

    @property
    def live_routes(self) -> Routes | None:
        return self.routes if self.declared_routes == self.routes else None

    @property
    def live_weights(self) -> tuple[int, int] | None:
        """What lockgate's routers report: the split written, once it is served."""
        if self.drops_empty_sides and any(
            weight > 0 and not side.started
            for weight, side in zip(self.weights, (self.stable, self.canary), strict=True)
        ):
            return None
        if self.declared is None or self.declared == self.weights:
            return self.weights
        return None

    def down(self, image: str | None) -> frozenset[str]:
        """Units whose instance of `image` is in an outage now."""
        if not self.outages:
            return frozenset()
        return frozenset(
            o.unit for o in self.outages if o.image == image and o.start <= self.now < o.end
        )

    def observe(self, metrics: MetricsSample | None = None) -> Observation:
        self.settle()
        stable, canary = self.stable, self.canary
        ready_after, unready = self.ready_after, self.unready_images
        return Observation(
            stable=stable.observe(self.now, ready_after, unready, self.down(stable.image)),
            canary=canary.observe(self.now, ready_after, unready, self.down(canary.image)),
            live_weights=self.live_weights,
            live_routes=self.live_routes,
            metrics=metrics,
            lock_holder=self.lock_holder,
            queued_ahead=self.queued_ahead,
            superseded_by=self.superseded_by,
            action=self.action,
            unit_errors=dict(self.unit_errors),
            refusal=self.refusal,
            webhooks=self.take_hook_answers(),
        )

    def take_hook_answers(self) -> dict[str, WebhookAnswer]:
        answers, self.hook_answers = self.hook_answers, {}
        return answers

    def metrics(self) -> MetricsSample:
        def figures(image: str | None, share: int) -> VersionMetrics:
            n = self.requests_per_window * share // 100
            return VersionMetrics(n, round(n * self.error_rates.get(image or "", 0.0)), 0.05)

        self.settle()
        if self.metrics_error is not None:
            return MetricsSample(error=self.metrics_error, source="fake")
        stable, canary = self.weights
        if not self.routes:
            return MetricsSample(
                canary=figures(self.canary.image, canary),
                stable=figures(self.stable.image, stable),
            )
        # Header requests reach the canary whatever the weights; mirrored copies of stable's
        # requests reach it beside them (stable's count is unchanged by copies).
        headers = self.header_share if self.routes.header else 0
        canary_share = canary + (100 - canary) * headers // 100
        copies = figures(self.canary.image, (100 - canary_share) * self.routes.mirror // 100)
        mine = figures(self.canary.image, canary_share)
        return MetricsSample(
            canary=VersionMetrics(
                mine.requests + copies.requests, mine.errors + copies.errors, 0.05
            ),
            stable=figures(self.stable.image, 100 - canary_share),
        )

    def apply(self, name: str, actions: list[Action]) -> None:
        self.settle()
        for action in actions:
            self.applied.append(action)
            if isinstance(action, EnsureInstances):
                target = self.stable if action.role == "stable" else self.canary
                pending = [r for _, r in self.routes_in_flight]
                if action.role == "canary" and not action.units and (self.routes or any(pending)):
                    self.removed_under_route.append(self.now)
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
                lost = self.lost_weights.pop(0) if self.lost_weights else False
                if lost:
                    continue
                self.declared = (action.stable, action.canary)
                if self.weight_delay is None:
                    continue
                if self.weight_delay <= 0 and not self.in_flight:
                    self.weights = (action.stable, action.canary)
                else:
                    at = self.now + timedelta(seconds=self.weight_delay)
                    self.in_flight.append((at, (action.stable, action.canary)))
            elif isinstance(action, SetRoutes):
                self.declared_routes = action.routes
                if self.route_delay <= 0 and not self.routes_in_flight:
                    self.serve_routes(action.routes)
                else:
                    at = self.now + timedelta(seconds=self.route_delay)
                    self.routes_in_flight.append((at, action.routes))
            elif isinstance(action, Promote):
                self.stable, self.canary = self.canary, self.stable
                self.weights = (self.weights[1], self.weights[0])
                # Traffic stays on the same instances: what the router serves or is about to
                # serve now names them by their new role.
                if self.declared is not None:
                    self.declared = (self.declared[1], self.declared[0])
                self.in_flight = [(at, (c, s)) for at, (s, c) in self.in_flight]
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
            elif isinstance(action, CallWebhook):
                self.hook_calls.append((self.now, action))
                code = self.hook_status.get(action.name, 200)
                self.hook_answers[action.call_id] = WebhookAnswer(
                    code, None if code is not None else "no answer within 10s"
                )

    def start_partially(self, action: Action) -> None:
        """An EnsureInstances cut short by a crash: the new instances exist, none started."""
        if not isinstance(action, EnsureInstances) or action.image is None:
            return
        target = self.stable if action.role == "stable" else self.canary
        if target.release != action.release or target.image != action.image:
            target.started, target.created = {}, set()
            target.release, target.image = action.release, action.image
        for unit in action.units:
            if unit not in target.started:
                target.started[unit] = self.now
                target.created.add(unit)


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
    patch: dict[str, Any] = field(default_factory=dict)
    # The status as the API server stores it (JSON), when set: each round reads it and writes
    # a merge patch of the fields that changed, computed as the controller computes it.
    stored: dict[str, Any] | None = None

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

    def round(self, *, applied: int | None = None, writes: int = 1) -> tuple[Observation, Decision]:
        """One reconcile as `controller.deployments.reconcile` runs it: observe, decide, carry
        out the decision's actions in order, then write the status fields that changed (a
        merge patch: each field it names is replaced whole). The annotation holding a manual
        action is removed only once the status recording it was written, as the controller
        does. Returns the observation the decision was made from, and the decision.

        Faults a real operator can have: `applied` actions ran (None: all), and `writes=0`:
        it crashed before the status patch landed (an action cut short by the crash is left
        half done); `writes=2`: the patch landed twice. `applied=0` with `writes=1` loses the
        actions of a round whose status was written. `self.patch` is the patch this round
        wrote (or would have)."""
        before = self.status
        ref = DeploymentRef(self.name, self.generation, self.spec)
        metrics = None
        if analysis_window_start(self.spec, before, self.world.now) is not None:
            metrics = self.world.metrics()
        obs = self.world.observe(metrics)
        decision = decide(self.app, ref, before, obs, self.world.now)
        self.decisions.append(decision)
        count = len(decision.actions) if applied is None else min(applied, len(decision.actions))
        for action in decision.actions[:count]:
            if isinstance(action, ClearAction):
                if before.pending_action is not None or obs.action not in ACTIONS:
                    self.world.action = None
            else:
                self.world.apply(self.name, [action])
        if writes == 0 and count < len(decision.actions):  # the crash cut this one short
            self.world.start_partially(decision.actions[count])
        if self.stored is None and writes == 1:
            self.patch = {}
            self.status = decision.status  # what landing the patch of changed fields gives
            return obs, decision
        if self.stored is None:
            self.patch = {
                name: value
                for name in DeploymentStatus.model_fields
                if (value := getattr(decision.status, name)) != getattr(before, name)
            }
        else:
            # The controller's own comparison (imported only here: it brings the Kubernetes
            # client with it, which the engine tests otherwise never load).
            from lockgate.controller.deployments import without_nulls

            wire = decision.status.model_dump(by_alias=True, mode="json")
            stored = self.stored
            self.patch = {
                key: value
                for key, value in wire.items()
                if stored.get(key) != value  # the same, or the same but for nulls
                and without_nulls(stored.get(key)) != without_nulls(value)
            }
        for _ in range(writes):
            self.land(self.patch)
        return obs, decision

    def land(self, patch: dict[str, Any]) -> None:
        """A status patch landing on the stored status (a JSON merge patch when stored)."""
        if not patch:
            return
        if self.stored is None:
            self.status = self.status.model_copy(update=patch)
            return
        merge_patch(self.stored, patch)
        raw = self.stored
        self.status = (
            DeploymentStatus.model_validate(raw) if raw.get("phase") else DeploymentStatus()
        )

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


def merge_patch(target: dict[str, Any], patch: dict[str, Any]) -> None:
    """RFC 7386: None deletes a key, objects merge (a new one without its nulls), anything
    else replaces. The patch is left as it was: it may land again."""
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict):
            merged = target.get(key)
            target[key] = merged = dict(merged) if isinstance(merged, dict) else {}
            merge_patch(merged, value)
        else:
            target[key] = value  # never changed in place: later patches replace it


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
