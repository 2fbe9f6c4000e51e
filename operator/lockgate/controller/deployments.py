"""One reconcile of a lockgate Deployment: observe -> engine.decide -> execute -> status."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from lockgate.api import ApplicationSpec, DeploymentSpec, DeploymentStatus
from lockgate.api.application import NotificationTarget
from lockgate.api.deployment import ACTIONS
from lockgate.engine import (
    AcquireLock,
    CallWebhook,
    ClearAction,
    Decision,
    DeploymentRef,
    EnsureInstances,
    Observation,
    Promote,
    ReleaseLock,
    SetRoutes,
    SetWeights,
    Supersede,
    analysis_window_start,
    decide,
)
from lockgate.engine.analysis import wants_resources
from lockgate.engine.decide import release_of, routed_units
from lockgate.names import ACTION_ANNOTATION, LABEL_SHARD, SUPERSEDED_ANNOTATION
from lockgate.outbound.notifications import owed
from lockgate.outbound.notifications import targets as notification_targets
from lockgate.probes.metrics import MetricsProvider
from lockgate.probes.resources import ResourceSample, with_resources
from lockgate.traffic.traefik_observer import TraefikWatch

from . import metrics
from .fleets import Fleet, FleetUnusable, fleet_for
from .runtime import Runtime
from .webhooks import Calls, forget_calls

MOVING = ("Progressing", "RollingBack")
FINISHED = ("Succeeded", "RolledBack", "Aborted")  # nothing left to do (Failed can be retried)
# Phases no round changes until the spec or an action does (a Failed rollout keeps the lock).
TERMINAL = (*FINISHED, "Failed")
WAITING = (None, "Pending", "Queued")  # not started
log = logging.getLogger("lockgate.deployments")


def now() -> datetime:
    """The clock read once, to milliseconds (what the status keeps)."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class DeploymentSummary:
    """What the rollout lock needs to know of another Deployment of the same Application."""

    name: str
    phase: str | None
    created: str  # metadata.creationTimestamp (RFC 3339 in UTC: orders as a string)
    shard: str | None = None  # its copy of its Application's shard label (sharding.py)


ApplicationKey = tuple[str, str]  # (namespace, application)
# The Deployments of each Application: kopf's index in the operator, a dict in tests.
DeploymentIndex = Mapping[ApplicationKey, Collection[DeploymentSummary]]


def index_entry(body: Mapping[str, Any]) -> dict[ApplicationKey, DeploymentSummary]:
    """A Deployment's entry in the index of Deployments by Application."""
    meta = body["metadata"]
    application = (body.get("spec") or {}).get("application")
    if not application:
        return {}
    summary = DeploymentSummary(
        meta["name"],
        (body.get("status") or {}).get("phase"),
        meta.get("creationTimestamp", ""),
        (meta.get("labels") or {}).get(LABEL_SHARD),
    )
    return {(meta["namespace"], application): summary}


def settled(body: Mapping[str, Any]) -> bool:
    """A finished or failed rollout (refused before start included) with nothing new to act
    on: it is not reconciled at all, so nothing reads its hosts, Pods or route, until its
    spec changes (a new generation) or an action is annotated (a retry, an abort) and until
    that action is applied (it waits in `status.pendingAction` once its annotation is gone).
    Observing each one would crowd out the rollouts in flight, and would knock for ever on a
    host that refuses lockgate (every round an SSH login that fails). A `superseded-by`
    annotation left on one changes nothing in these phases, so it does not count. A webhook
    call still waiting for its answer (postRollout, rollback) keeps it reconciled until the
    answer is recorded."""
    status = body.get("status") or {}
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return (
        status.get("phase") in TERMINAL
        and status.get("observedGeneration") == int(meta.get("generation") or 1)
        and ACTION_ANNOTATION not in annotations
        and not status.get("pendingAction")
        and not any(call.get("pending") for call in status.get("webhooks") or [])
    )


def quiet(
    body: Mapping[str, Any],
    own_targets: Sequence[NotificationTarget],
    defaults: Sequence[NotificationTarget],
    now: datetime,
) -> bool:
    """Settled, and owing no notification to the Application's targets (`own_targets`) or
    the operator's `defaults`: a driver would have nothing to do until an event changes
    that (an action, a new spec, a notification's record), so the Deployment has none.
    Read from the whole body (the histories say what is owed). A status that does not
    validate may owe: its driver looks, as a driver always did."""
    if not settled(body):
        return False
    to = notification_targets(own_targets, defaults)
    if not to:
        return True
    try:
        status = DeploymentStatus.model_validate(body.get("status") or {})
    except ValidationError:
        return False
    return next(owed(status.transitions, status.notifications, to, now), None) is None


class Reconciler:
    """Everything one reconcile of one Deployment needs, built per call."""

    def __init__(
        self, rt: Runtime, body: dict[str, Any], deployments: DeploymentIndex | None = None
    ) -> None:
        self.rt = rt
        self.body = body
        self.deployments: DeploymentIndex = deployments or {}
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.generation: int = int(meta.get("generation") or 1)
        # The version of the Deployment this round read: its status write is conditional on it.
        self.resource_version: str | None = meta.get("resourceVersion")
        self.annotations: dict[str, str] = dict(meta.get("annotations") or {})
        self.app_obj: dict[str, Any] | None = None
        self.app: ApplicationSpec | None = None
        self.app_problem: str | None = None
        self.fleet: Fleet | None = None
        self.fleet_problem: str | None = None  # why the fleet cannot be acted on this round

    async def load_application(self, app_name: str) -> None:
        self.app_obj = await self.rt.application(self.namespace, app_name)
        if self.app_obj is None:
            return
        try:
            self.app = ApplicationSpec.model_validate(self.app_obj.get("spec") or {})
        except ValidationError as err:
            self.app_problem = f"application {app_name!r} is invalid: {err.errors()[0]['msg']}"

    def conditional(self, patch: dict[str, Any]) -> dict[str, Any]:
        """`patch`, applied by the API only if the Deployment is still the version read."""
        if self.resource_version is None:
            return patch
        return {"metadata": {"resourceVersion": self.resource_version}, **patch}

    # ------------------------------------------------------------------ observe

    def lock_state(self, spec: DeploymentSpec) -> tuple[str | None, int]:
        """(holder of the application's rollout lock, Deployments queued ahead of this one)."""
        assert self.app_obj is not None
        holder = (self.app_obj.get("status") or {}).get("activeDeployment")
        mine = self.body["metadata"].get("creationTimestamp", "")
        ahead = 0
        alive = False
        for other in self.deployments.get((self.namespace, spec.application), ()):
            if other.name == self.name:
                continue
            if other.name == holder:
                alive = other.phase not in FINISHED
            elif other.phase in (None, "Pending", "Queued") and other.created < mine:
                ahead += 1
        if holder and holder != self.name and not alive:
            holder = None  # the holder is gone or finished without releasing: the lock is free
        return holder, ahead

    def metrics_provider(self) -> MetricsProvider:
        """Where this Application's analysis reads its figures (one provider per source)."""
        assert self.app is not None
        return self.rt.metrics_provider(self.app)

    async def resource_usage(self, fleet: Fleet, start: datetime, at: datetime) -> ResourceSample:
        """The instances' CPU and memory over [start, at], or why they are missing."""
        assert self.app is not None
        provider = self.rt.resource_provider(self.namespace, self.name_of_app(), self.app)
        if isinstance(provider, str):
            return ResourceSample(error=provider)
        return await provider.usage(await fleet.resource_instances(), start, at)

    async def keep_resource_usage(self, fleet: Fleet, at: datetime) -> None:
        assert self.app is not None
        provider = self.rt.resource_provider(self.namespace, self.name_of_app(), self.app)
        if not isinstance(provider, str):
            await provider.keep(await fleet.resource_instances(), at)

    def name_of_app(self) -> str:
        assert self.app_obj is not None
        name: str = self.app_obj["metadata"]["name"]
        return name

    async def observe(
        self, spec: DeploymentSpec, status: DeploymentStatus, at: datetime
    ) -> Observation:
        action = self.annotations.get(ACTION_ANNOTATION)
        superseded_by = self.annotations.get(SUPERSEDED_ANNOTATION)
        if self.app is None or self.app_obj is None:
            return Observation(action=action, superseded_by=superseded_by)
        holder, ahead = self.lock_state(spec)
        starting = status.phase in WAITING and (
            holder == self.name or (holder is None and ahead == 0)
        )
        if status.phase in FINISHED:
            # Nothing the engine decides in these phases reads the fleet (a Deployment is
            # reconciled here only for an action or a webhook answer to record).
            return Observation(
                lock_holder=holder, queued_ahead=ahead, superseded_by=superseded_by, action=action
            )
        if status.phase in WAITING and (spec.paused or not starting):
            # Waiting for the lock or for spec.paused: nothing of the fleet is decided on
            # (the engine looks at it when the rollout may start), so nothing reads it.
            return Observation(
                lock_holder=holder, queued_ahead=ahead, superseded_by=superseded_by, action=action
            )
        own = release_of(self.name, status.revision) if status.revision else None
        self.fleet = fleet = fleet_for(self.rt, self.app_obj, self.app, own)
        try:
            view = await fleet.observe(routed_units(self.app, spec, status))
        except FleetUnusable as err:
            self.fleet_problem = err.reason
            return Observation(
                lock_holder=holder,
                queued_ahead=ahead,
                superseded_by=superseded_by,
                action=action,
                unit_errors=dict.fromkeys(self.app.units(), err.reason),
                refusal=err.reason,
            )
        refusal = None
        if starting:
            refusal = await fleet.preflight(spec, view.stable.image is not None)
        sample = None
        start = analysis_window_start(spec, status, at)
        if start is not None:
            queries = spec.analysis.queries if spec.analysis is not None else []
            sample = await self.metrics_provider().window(
                fleet.metric_sources(), start, at, queries
            )
            if wants_resources(spec.analysis):
                sample = with_resources(sample, await self.resource_usage(fleet, start, at))
        elif status.phase in ("Progressing", "Paused") and spec.analysis is not None:
            # The next analysis window needs what the counters were when it starts.
            await self.metrics_provider().keep(at)
            if wants_resources(spec.analysis):
                await self.keep_resource_usage(fleet, at)
        return Observation(
            stable=view.stable,
            canary=view.canary,
            live_weights=view.live_weights,
            live_routes=view.live_routes,
            metrics=sample,
            lock_holder=holder,
            queued_ahead=ahead,
            superseded_by=superseded_by,
            action=action,
            unit_errors=view.unit_errors,
            refusal=refusal,
        )

    # ------------------------------------------------------------------ execute

    async def execute(self, decision: Decision, before: DeploymentStatus, obs: Observation) -> None:
        for action in decision.actions:
            if isinstance(action, ClearAction):
                # Two-phase: remove the annotation only once the status that records it is
                # persisted (the previous reconcile wrote it), or when it is not an action.
                if before.pending_action is not None or obs.action not in ACTIONS:
                    updated = await self.rt.kube.patch_deployment(
                        self.namespace,
                        self.name,
                        {"metadata": {"annotations": {ACTION_ANNOTATION: None}}},
                    )
                    # Our own write: the status write of this round follows it.
                    self.resource_version = updated["metadata"].get("resourceVersion")
                continue
            if isinstance(action, CallWebhook):
                continue  # made once the status recording it is written (see reconcile)
            if isinstance(action, Supersede):
                await self.rt.kube.patch_deployment(
                    self.namespace,
                    action.holder,
                    {"metadata": {"annotations": {SUPERSEDED_ANNOTATION: self.name}}},
                )
                continue
            if self.app is None or self.app_obj is None:
                continue  # nothing can be acted on without the application
            if isinstance(action, AcquireLock):
                await self.acquire_lock()
            elif isinstance(action, ReleaseLock):
                await self.release_lock(decision.status)
            elif self.fleet is None or self.fleet_problem is not None:
                continue  # the fleet cannot be used (the observation says why)
            elif isinstance(action, EnsureInstances):
                await self.fleet.ensure(action.role, action.image, action.units, action.release)
            elif isinstance(action, SetWeights):
                await self.fleet.set_weights(action.stable, action.canary)
            elif isinstance(action, SetRoutes):
                await self.fleet.set_routes(action.routes)
            elif isinstance(action, Promote):
                await self.fleet.promote(action.release, action.image, self.name)
        if self.fleet is not None and self.fleet_problem is None:
            await self.fleet.flush()

    async def acquire_lock(self) -> None:
        """Take the Application's rollout lock, on the version this round read of it. Another
        writer first (another Deployment taking the lock, say): the round is lost before it
        acts on anything (LockNotTaken), and the next one reads who holds it now."""
        assert self.app_obj is not None
        rv = self.app_obj["metadata"]["resourceVersion"]
        try:
            written = await self.rt.kube.patch_application_status(
                self.namespace,
                self.name_of_app(),
                {"metadata": {"resourceVersion": rv}, "status": {"activeDeployment": self.name}},
            )
        except ApiException as err:
            if err.status == 409:
                raise LockNotTaken from err
            raise
        self.rt.wrote_application(written, over=rv)

    async def release_lock(self, status: DeploymentStatus) -> None:
        """Record the outcome in the Application's history and free its lock, on a fresh
        read (the watch's copy has no history). A conflict (the Application's status timer
        wrote meanwhile) is retried: a finished rollout is not reconciled again, so a lost
        release would stay held."""
        for _ in range(5):
            self.app_obj = await self.rt.kube.get_application(self.namespace, self.name_of_app())
            if self.app_obj is None:
                return
            try:
                await self._release_lock_once(status)
                return
            except ApiException as err:
                if err.status != 409:
                    raise
        raise RuntimeError("rollout lock not released: the Application kept changing; retrying")

    async def _release_lock_once(self, status: DeploymentStatus) -> None:
        assert self.app_obj is not None and self.app is not None
        app_status = self.app_obj.get("status") or {}
        history = list(app_status.get("history") or [])
        entry = {
            "deployment": self.name,
            "image": status.image or "",
            "revision": status.revision,
            "result": status.phase,
            "startedAt": status.started_at.isoformat() if status.started_at else None,
            "finishedAt": status.finished_at.isoformat() if status.finished_at else None,
        }
        history = [
            h
            for h in history
            if not (h.get("deployment") == self.name and h.get("revision") == status.revision)
        ]
        history = [entry, *history][: self.app.history_limit]
        read = self.app_obj["metadata"]["resourceVersion"]
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": read},
            "status": {"history": history},
        }
        if app_status.get("activeDeployment") == self.name:
            body["status"]["activeDeployment"] = None
        written = await self.rt.kube.patch_application_status(
            self.namespace, self.name_of_app(), body
        )
        self.rt.wrote_application(written, over=read)


class LockNotTaken(Exception):
    """Another writer changed the Application since the round read it: the rollout lock was
    not taken, and nothing the round decided after taking it may be done."""


PostEvent = Callable[[str, str, str], None]  # (type, reason, message)


@dataclass(frozen=True)
class Round:
    """What one reconcile did: whether the rollout moved (status or world changed), and when
    a timer of the rollout elapses."""

    progressed: bool
    acted: bool
    requeue_after: float | None
    finished: bool
    # The world may still change where no watch tells (Traefik loading servers or weights,
    # Docker hosts, a fleet that could not be used): look again soon rather than wait.
    settling: bool = False
    # While settling on Traefik alone: what of its API to watch (its change wakes the
    # rollout); None: look again on the poll back-off.
    watch: TraefikWatch | None = None


async def reconcile(
    rt: Runtime,
    body: dict[str, Any],
    post_event: PostEvent,
    deployments: DeploymentIndex,
    wake: Callable[[], None] | None = None,
) -> Round:
    """One round: observe -> decide -> execute -> persist status (before the next round).
    A settled Deployment is left alone: nothing is read or written. `wake` is called when a
    webhook call this round starts has its answer."""
    if settled(body):
        return Round(False, False, None, True)
    started = time.monotonic()
    rec = Reconciler(rt, body, deployments)
    raw_status = body.get("status") or {}
    try:
        spec = DeploymentSpec.model_validate(body.get("spec") or {})
        status = (
            DeploymentStatus.model_validate(raw_status)
            if raw_status.get("phase")
            else DeploymentStatus()
        )
    except ValidationError as err:
        # Admission should have refused this; say so instead of crash-looping.
        message = rt.redactor.text(
            f"invalid Deployment: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}"
        )
        # With observedGeneration it is settled until its spec changes.
        failed = {"phase": "Failed", "message": message, "observedGeneration": rec.generation}
        if any(raw_status.get(key) != value for key, value in failed.items()):
            await rt.kube.patch_deployment_status(rec.namespace, rec.name, {"status": failed})
        return Round(False, False, None, True)
    await rec.load_application(spec.application)
    at, decided = now(), time.monotonic()
    obs = await rec.observe(spec, status, at) if rec.app_problem is None else Observation()
    calls = Calls(rt, rec.namespace, rec.name, body["metadata"].get("uid", ""), spec, wake)
    answers = calls.answers(status)
    if answers:
        obs = dataclasses.replace(obs, webhooks=answers)
    decision = decide(rec.app, DeploymentRef(rec.name, rec.generation, spec), status, obs, at)
    if rec.app_problem:
        decision.status.message = rec.app_problem
    try:
        await rec.execute(decision, status, obs)
    except LockNotTaken:
        metrics.ROUNDS_LOST.inc()
        return Round(progressed=True, acted=False, requeue_after=None, finished=False)
    wire = rt.redactor.tree(decision.status.model_dump(by_alias=True, mode="json"))
    changes = {key: value for key, value in wire.items() if changed(raw_status.get(key), value)}
    quiet = records_only(status, decision)
    rt.quiet_writes.pop((rec.namespace, rec.name), None)
    if changes:
        try:
            written = await rt.kube.patch_deployment_status(
                rec.namespace, rec.name, rec.conditional({"status": changes})
            )
            rt.deployment_writes[(rec.namespace, rec.name)] = written
            if quiet and written.resource_version is not None:
                rt.quiet_writes[(rec.namespace, rec.name)] = written.resource_version
        except ApiException as err:
            if err.status != 409:
                raise
            rt.deployment_writes.pop((rec.namespace, rec.name), None)
            # The Deployment changed since this round read it: the round is lost, as if the
            # operator had stopped before persisting (its actions are idempotent), and the
            # next one starts from what is there now. Another operator's round never
            # overwrites a newer status this way (a shard handover: sharding.py).
            metrics.ROUNDS_LOST.inc()
            return Round(
                progressed=True, acted=bool(decision.actions), requeue_after=None, finished=False
            )
    calls.run([a for a in decision.actions if isinstance(a, CallWebhook)], decision.status)
    for event in decision.events:
        post_event(event.type, event.reason, rt.redactor.text(event.message))
    # Only once the transitions are persisted; the worker sends, this round never waits.
    rt.notifier.enqueue_owed(body["metadata"], spec.application, decision.status, rec.app)
    _record(rec, status, decision)
    metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
    if decision.step_ends_after is None:
        rt.step_ends.pop((rec.namespace, rec.name), None)
    else:
        rt.step_ends[(rec.namespace, rec.name)] = decided + decision.step_ends_after
    requeue = decision.requeue_after
    if requeue is not None:
        # The engine's timers count from `at`; observing, acting and writing took their time
        # since (at 500 in flight, ~1-3 s: every pause ended that much late).
        requeue = max(0.0, requeue - (time.monotonic() - decided))
    poll = rec.fleet.poll_while_moving if rec.fleet is not None else None
    if poll is not None and decision.status.phase in MOVING:
        requeue = poll if requeue is None else min(requeue, poll)
    settling = rec.fleet is not None and (rec.fleet_problem is not None or rec.fleet.settling)
    return Round(
        progressed=bool(changes) and not quiet,
        acted=bool(decision.actions),
        requeue_after=requeue,
        finished=decision.status.phase in TERMINAL
        and not decision.actions
        and not any(call.pending for call in decision.status.webhooks),
        settling=settling,
        watch=rec.fleet.traefik_watch
        if settling and rec.fleet is not None and rec.fleet_problem is None
        else None,
    )


def records_only(before: DeploymentStatus, decision: Decision) -> bool:
    """The decision acts on nothing, leaves the phase and the step as they were and knows
    its next timer: its status write only records (an analysis run, a message), so the
    next round could do nothing new with it until then. Reading such a write back cost a
    round per analysis, and at 500 in flight those rounds queued every other one ~20 s
    (docs/scale.md). A step's own record changing (its split live, a gate passed) is read
    back: what follows is decided from it (the analysis timer counts from the split)."""
    after = decision.status
    return (
        not decision.actions
        and after.phase == before.phase
        and after.step == before.step
        and decision.requeue_after is not None
    )


def _record(rec: Reconciler, before: DeploymentStatus, decision: Decision) -> None:
    after = decision.status
    metrics.record_phase(rec.namespace, rec.name, after.phase)
    for run in (
        after.analysis[len(before.analysis) :]
        if len(after.analysis) >= len(before.analysis)
        else after.analysis[-1:]
    ):
        metrics.VERDICTS.labels(run.verdict).inc()
    if after.phase != before.phase and after.phase in ("RolledBack", "Aborted"):
        metrics.ROLLBACKS.labels("aborted" if after.aborted else "failed").inc()
    if (
        before.step
        and after.step
        and before.step.index != after.step.index
        and before.step.started_at
    ):
        metrics.STEP_SECONDS.observe((datetime.now(UTC) - before.step.started_at).total_seconds())


def changed(stored: Any, value: Any) -> bool:
    """Whether writing `value` would change what the API stores (`stored`). The stored
    status seldom holds a null (a merge patch deletes the fields it sets to null), so it is
    compared as it is first (half the walking: 0.12 ms a round with full histories)."""
    written = without_nulls(value)
    return bool(stored != written and without_nulls(stored) != written)


def without_nulls(value: Any) -> Any:
    """A status as the API stores it: a merge patch deletes the fields it sets to null, so a
    null is the same as an absent field (comparing them as different wrote the same status
    again every round, and every write woke the rollout for another round)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def namespace_terminating(err: ApiException) -> bool:
    """The API refused to create an object because its namespace is being deleted."""
    return err.status == 403 and "NamespaceTerminating" in str(err.body or "")


async def deployment_removed(rt: Runtime, body: dict[str, Any]) -> None:
    """A Deployment deleted mid-rollout puts the previous version back before it goes."""
    forget_calls(rt, body["metadata"].get("uid", ""))
    rec = Reconciler(rt, body)
    await rec.load_application((body.get("spec") or {}).get("application", ""))
    if rec.app is None or rec.app_obj is None:
        return
    if (rec.app_obj.get("status") or {}).get("activeDeployment") != rec.name:
        return
    revision = int((body.get("status") or {}).get("revision") or 0)
    fleet = fleet_for(rt, rec.app_obj, rec.app, release_of(rec.name, revision))
    try:
        await fleet.remove_rollout()
    except FleetUnusable:
        pass  # without credentials nothing can be restored; deletion must not hang on it
    except ApiException as err:
        # In a namespace being deleted, what remove_rollout would restore (a route, a
        # Service) may be gone already and can no longer be created: everything goes.
        if not namespace_terminating(err):
            raise
        return
    try:
        await rt.kube.patch_application_status(
            rec.namespace, rec.name_of_app(), {"status": {"activeDeployment": None}}
        )
    except ApiException as err:
        if err.status != 404:  # the Application went first (a namespace being deleted)
            raise
    metrics.record_phase(rec.namespace, rec.name, None)
