"""One reconcile of a lockgate Deployment: observe -> engine.decide -> execute -> status."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from lockgate.api import ApplicationSpec, DeploymentSpec, DeploymentStatus
from lockgate.api.deployment import ACTION_ANNOTATION, ACTIONS
from lockgate.engine import (
    AcquireLock,
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
    analysis_window_start,
    decide,
)
from lockgate.engine.decide import release_of
from lockgate.probes import traefik_metrics
from lockgate.targets.docker import DockerTargetError
from lockgate.targets.kubernetes import KubernetesTarget, service_name
from lockgate.traffic.traefik_crd import TraefikCrdRouter

from . import metrics
from .docker_fleet import DockerFleet, FleetConfigError
from .runtime import Runtime

SUPERSEDED_ANNOTATION = "lockgate.dev/superseded-by"
DOCKER_POLL = 0.25  # seconds between observations of a moving rollout on Docker hosts
MOVING = ("Progressing", "RollingBack")
log = logging.getLogger("lockgate.deployments")


def now() -> datetime:
    """The clock read once, to milliseconds (what the status keeps)."""
    at = datetime.now(UTC)
    return at.replace(microsecond=at.microsecond // 1000 * 1000)


class Reconciler:
    """Everything one reconcile of one Deployment needs, built per call."""

    def __init__(self, rt: Runtime, body: dict[str, Any]) -> None:
        self.rt = rt
        self.body = body
        meta = body["metadata"]
        self.name: str = meta["name"]
        self.namespace: str = meta["namespace"]
        self.generation: int = int(meta.get("generation") or 1)
        self.annotations: dict[str, str] = dict(meta.get("annotations") or {})
        self.app_obj: dict[str, Any] | None = None
        self.app: ApplicationSpec | None = None
        self.app_problem: str | None = None
        self.fleet: DockerFleet | None = None

    async def load_application(self, app_name: str) -> None:
        self.app_obj = await self.rt.kube.get_application(self.namespace, app_name)
        if self.app_obj is None:
            return
        try:
            self.app = ApplicationSpec.model_validate(self.app_obj.get("spec") or {})
        except ValidationError as err:
            self.app_problem = f"application {app_name!r} is invalid: {err.errors()[0]['msg']}"

    def target(self) -> KubernetesTarget:
        return KubernetesTarget(self.rt.kube)

    def router(self) -> TraefikCrdRouter:
        assert self.app_obj is not None and self.app is not None
        return TraefikCrdRouter(
            self.rt.kube, self.app_obj, self.app, self.rt.settings.traefik_api_url, self.rt.http
        )

    # ------------------------------------------------------------------ observe

    async def lock_state(self, spec: DeploymentSpec) -> tuple[str | None, int]:
        """(holder of the application's rollout lock, Deployments queued ahead of this one)."""
        assert self.app_obj is not None
        holder = (self.app_obj.get("status") or {}).get("activeDeployment")
        mine = self.body["metadata"].get("creationTimestamp", "")
        ahead = 0
        others = await self.rt.kube.list_deployments(self.namespace)
        alive = False
        for other in others:
            other_name = other["metadata"]["name"]
            if (
                other_name == self.name
                or (other.get("spec") or {}).get("application") != spec.application
            ):
                continue
            phase = (other.get("status") or {}).get("phase")
            if other_name == holder:
                alive = phase not in ("Succeeded", "RolledBack", "Aborted")
            elif (
                phase in (None, "Pending", "Queued")
                and other["metadata"].get("creationTimestamp", "") < mine
            ):
                ahead += 1
        if holder and holder != self.name and not alive:
            holder = None  # the holder is gone or finished without releasing: the lock is free
        return holder, ahead

    async def collect_metrics(self, start: datetime, at: datetime) -> MetricsSample:
        assert self.app is not None
        url = self.app.traffic.traefik.metrics_url or self.rt.settings.traefik_metrics_url
        if not url:
            return MetricsSample(error="no Traefik metricsURL configured")
        history = self.rt.scrapes.setdefault(url, traefik_metrics.History())
        try:
            answer = await self.rt.http.get(url, timeout=3.0)
            answer.raise_for_status()
        except Exception as err:
            return MetricsSample(error=f"Traefik metrics at {url}: {err}")
        snapshot = traefik_metrics.parse(answer.text)
        baseline = history.baseline(start)
        history.add(at, snapshot)
        if baseline is None:
            return MetricsSample(error="first scrape: collecting a baseline")
        # Traefik names the leaf services (the weighted parent has no counts):
        # `<ns>-<service>-<port>` from Kubernetes, `<app>-<role>` from the file provider
        # (the parser drops `@file`).
        prefix = {
            role: service_name(self.name_of_app(), role)
            if self.app.docker is not None
            else f"{self.namespace}-{service_name(self.name_of_app(), role)}-"
            for role in ("stable", "canary")
        }
        return MetricsSample(
            canary=traefik_metrics.delta(
                traefik_metrics.matching(snapshot, prefix["canary"]),
                traefik_metrics.matching(baseline, prefix["canary"]),
            ),
            stable=traefik_metrics.delta(
                traefik_metrics.matching(snapshot, prefix["stable"]),
                traefik_metrics.matching(baseline, prefix["stable"]),
            ),
        )

    def name_of_app(self) -> str:
        assert self.app_obj is not None
        name: str = self.app_obj["metadata"]["name"]
        return name

    async def scrape_for_history(self, at: datetime) -> None:
        """Keep recent scrapes so the next analysis window has a baseline at its start."""
        assert self.app is not None
        url = self.app.traffic.traefik.metrics_url or self.rt.settings.traefik_metrics_url
        if not url:
            return
        try:
            answer = await self.rt.http.get(url, timeout=3.0)
            answer.raise_for_status()
        except Exception:
            return
        self.rt.scrapes.setdefault(url, traefik_metrics.History()).add(
            at, traefik_metrics.parse(answer.text)
        )

    async def observe(
        self, spec: DeploymentSpec, status: DeploymentStatus, at: datetime
    ) -> Observation:
        action = self.annotations.get(ACTION_ANNOTATION)
        superseded_by = self.annotations.get(SUPERSEDED_ANNOTATION)
        if self.app is None or self.app_obj is None:
            return Observation(action=action, superseded_by=superseded_by)
        holder, ahead = await self.lock_state(spec)
        unit_errors: dict[str, str] = {}
        refusal = None
        if self.app.docker is not None:
            own = release_of(self.name, status.revision) if status.revision else None
            self.fleet = DockerFleet(self.rt, self.app_obj, self.app, own)
            try:
                await self.fleet.prepare()
                stable, canary, live, unit_errors = await self.fleet.observe()
            except (FleetConfigError, DockerTargetError) as err:
                # Without its credentials or its route file no host can be used.
                self.fleet = None
                why = (
                    f"host {err.host}: {err.reason}"
                    if isinstance(err, DockerTargetError)
                    else str(err)
                )
                return Observation(
                    lock_holder=holder,
                    queued_ahead=ahead,
                    superseded_by=superseded_by,
                    action=action,
                    unit_errors=dict.fromkeys(self.app.units(), why),
                    refusal=why,
                )
            starting = status.phase in (None, "Pending", "Queued") and (
                holder == self.name or (holder is None and ahead == 0)
            )
            if starting:
                refusal = await self.fleet.preflight(spec, stable.image is not None)
        else:
            stable, canary = await self.target().observe(
                self.namespace, self.name_of_app(), self.app.units()
            )
            live = await self.router().live_weights()
        sample = None
        start = analysis_window_start(spec, status, at)
        if start is not None:
            sample = await self.collect_metrics(start, at)
        elif status.phase in ("Progressing", "Paused") and spec.analysis is not None:
            await self.scrape_for_history(at)
        return Observation(
            stable=stable,
            canary=canary,
            live_weights=live,
            metrics=sample,
            lock_holder=holder,
            queued_ahead=ahead,
            superseded_by=superseded_by,
            action=action,
            unit_errors=unit_errors,
            refusal=refusal,
        )

    # ------------------------------------------------------------------ execute

    async def execute(self, decision: Decision, before: DeploymentStatus, obs: Observation) -> None:
        for action in decision.actions:
            if isinstance(action, ClearAction):
                # Two-phase: remove the annotation only once the status that records it is
                # persisted (the previous reconcile wrote it), or when it is not an action.
                if before.pending_action is not None or obs.action not in ACTIONS:
                    await self.rt.kube.patch_deployment(
                        self.namespace,
                        self.name,
                        {"metadata": {"annotations": {ACTION_ANNOTATION: None}}},
                    )
                continue
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
            elif self.app.docker is not None:
                await self.execute_docker(action)
            elif isinstance(action, EnsureInstances):
                await self.target().ensure(
                    self.app_obj,
                    self.app,
                    action.role,
                    action.image,
                    len(action.units),
                    action.release,
                )
            elif isinstance(action, SetWeights):
                await self.router().set_weights(action.stable, action.canary)
            elif isinstance(action, Promote):
                await self.target().promote(self.app_obj, self.app)
                await self.rt.kube.patch_application_status(
                    self.namespace,
                    self.name_of_app(),
                    {
                        "status": {
                            "stable": {
                                "image": action.image,
                                "deployment": self.name,
                                "since": datetime.now(UTC).isoformat(),
                            }
                        }
                    },
                )

    async def execute_docker(self, action: Any) -> None:
        if self.fleet is None:
            return  # the hosts cannot be used (the observation says why)
        elif isinstance(action, EnsureInstances):
            await self.fleet.ensure(action.role, action.image, action.units, action.release)
        elif isinstance(action, SetWeights):
            await self.fleet.set_weights(action.stable, action.canary)
        elif isinstance(action, Promote):
            await self.fleet.promote(action.release, action.image, self.name)

    async def acquire_lock(self) -> None:
        assert self.app_obj is not None
        rv = self.app_obj["metadata"]["resourceVersion"]
        try:
            await self.rt.kube.patch_application_status(
                self.namespace,
                self.name_of_app(),
                {"metadata": {"resourceVersion": rv}, "status": {"activeDeployment": self.name}},
            )
        except ApiException as err:
            if err.status != 409:  # 409: someone else moved first; the next reconcile sees it
                raise

    async def release_lock(self, status: DeploymentStatus) -> None:
        """Record the outcome in the Application's history and free its lock. A conflict
        (the Application's status timer wrote meanwhile) is retried on a fresh read: a
        finished rollout is not reconciled again, so a lost release would stay held."""
        for _ in range(5):
            try:
                await self._release_lock_once(status)
                return
            except ApiException as err:
                if err.status != 409:
                    raise
            self.app_obj = await self.rt.kube.get_application(self.namespace, self.name_of_app())
            if self.app_obj is None:
                return
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
        body: dict[str, Any] = {
            "metadata": {"resourceVersion": self.app_obj["metadata"]["resourceVersion"]},
            "status": {"history": history},
        }
        if app_status.get("activeDeployment") == self.name:
            body["status"]["activeDeployment"] = None
        await self.rt.kube.patch_application_status(self.namespace, self.name_of_app(), body)


def cap_ready(instances: InstanceSet, in_proxy: int, *, from_end: bool) -> InstanceSet:
    """Count only as many instances ready as the proxy has servers for: a Pod that is Ready
    but not yet loaded by Traefik must not receive a weight."""
    if len(instances.ready) <= in_proxy:
        return instances
    ready = (
        instances.ready[len(instances.ready) - in_proxy :]
        if from_end
        else instances.ready[:in_proxy]
    )
    return InstanceSet(instances.release, instances.image, instances.units, ready)


PostEvent = Callable[[str, str, str], None]  # (type, reason, message)


@dataclass(frozen=True)
class Round:
    """What one reconcile did: whether the rollout moved (status or world changed), and when
    a timer of the rollout elapses."""

    progressed: bool
    acted: bool
    requeue_after: float | None
    finished: bool


async def reconcile(rt: Runtime, body: dict[str, Any], post_event: PostEvent) -> Round:
    """One round: observe -> decide -> execute -> persist status (before the next round)."""
    started = time.monotonic()
    rec = Reconciler(rt, body)
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
        message = f"invalid Deployment: {err.errors()[0]['loc']}: {err.errors()[0]['msg']}"
        if raw_status.get("message") != message:
            await rt.kube.patch_deployment_status(
                rec.namespace, rec.name, {"status": {"phase": "Failed", "message": message}}
            )
        return Round(False, False, None, True)
    await rec.load_application(spec.application)
    at = now()
    obs = await rec.observe(spec, status, at) if rec.app_problem is None else Observation()
    decision = decide(rec.app, DeploymentRef(rec.name, rec.generation, spec), status, obs, at)
    if rec.app_problem:
        decision.status.message = rec.app_problem
    await rec.execute(decision, status, obs)
    wire = rt.redactor.tree(decision.status.model_dump(by_alias=True, mode="json"))
    changes = {key: value for key, value in wire.items() if raw_status.get(key) != value}
    if changes:
        await rt.kube.patch_deployment_status(rec.namespace, rec.name, {"status": changes})
    for event in decision.events:
        post_event(event.type, event.reason, rt.redactor.text(event.message))
    _record(rec, status, decision)
    metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
    requeue = decision.requeue_after
    if rec.app is not None and rec.app.docker is not None and decision.status.phase in MOVING:
        # Nothing wakes the driver when a container turns healthy (no watch, unlike Pods):
        # poll while the rollout moves instead of backing off to seconds.
        requeue = DOCKER_POLL if requeue is None else min(requeue, DOCKER_POLL)
    return Round(
        progressed=bool(changes),
        acted=bool(decision.actions),
        requeue_after=requeue,
        finished=decision.status.phase in ("Succeeded", "RolledBack", "Aborted")
        and not decision.actions,
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
