"""kopf handlers. Thin: each one hands the body to a reconcile function.

Each Deployment has one driver (a kopf daemon), so reconciles of one Deployment never
overlap; watch events wake it at once, and waits are timeouts on that wake-up, never a sleep
inside a handler. Applications are reconciled on change and every few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf
from kubernetes.client.exceptions import ApiException
from prometheus_client import start_http_server

from lockgate.api import ApplicationSpec
from lockgate.engine.decide import release_of
from lockgate.names import GROUP, VERSION

from . import metrics
from .applications import reconcile_application
from .deployments import reconcile
from .docker_fleet import DockerFleet, FleetConfigError
from .runtime import runtime

_wakers: dict[str, asyncio.Event] = {}
IDLE_MIN, IDLE_MAX = 0.1, 2.0  # back-off while waiting for the world
ACTED_WAIT = 0.1  # after acting, give the world a moment before looking again
FINISHED_WAIT = 30.0  # a finished rollout wakes on changes only
ERROR_WAIT = 2.0


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lockgate.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="lockgate.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "lockgate.dev/finalizer"
    settings.posting.level = logging.WARNING
    # Every Traefik/API request and every wake-up would otherwise be an INFO line; what a
    # rollout does is in its status, Events and the operator's own warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    rt = runtime()
    # Every API call runs in a worker thread; asyncio's default pool (cores + 4) would make
    # in-flight rollouts queue behind background reconciles.
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=32))
    start_http_server(rt.settings.metrics_port)


def _wake(uid: str) -> asyncio.Event:
    return _wakers.setdefault(uid, asyncio.Event())


@kopf.on.event(GROUP, VERSION, "deployments")
def deployment_event(uid: str, **_: Any) -> None:
    """Any change (spec, annotations, status) wakes the Deployment's driver at once."""
    _wake(uid).set()


@kopf.daemon(GROUP, VERSION, "deployments", cancellation_timeout=5.0)
async def deployment_driver(
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    uid: str,
    logger: Any,
    **_: Any,
) -> None:
    """Drives one Deployment: reconciles again at once while the rollout moves, so a rollout
    never waits for a timer between two steps; backs off to every 2 s while it waits for the
    world (Pods starting, Traefik reloading, a pause), and sleeps while it is finished. The
    status is persisted after every round, so one round completes at most one step."""
    assert namespace is not None  # Deployments are namespaced
    rt = runtime()
    wake = _wake(uid)
    idle = IDLE_MIN
    try:
        while not stopped:
            wake.clear()
            delay = await _drive_once(rt, namespace, name, logger)
            if delay is None:
                idle = min(idle * 2, IDLE_MAX)
                delay = idle
            else:
                idle = IDLE_MIN
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
    finally:
        _wakers.pop(uid, None)


def _settled(obj: dict[str, Any]) -> bool:
    """A finished rollout with nothing new to act on needs no observation at all (with many
    finished Deployments, observing each would crowd out the ones in flight)."""
    status = obj.get("status") or {}
    meta = obj.get("metadata") or {}
    return (
        status.get("phase") in ("Succeeded", "RolledBack", "Aborted")
        and status.get("observedGeneration") == meta.get("generation")
        and "lockgate.dev/action" not in (meta.get("annotations") or {})
        and "lockgate.dev/superseded-by" not in (meta.get("annotations") or {})
    )


async def _drive_once(rt: Any, namespace: str, name: str, logger: Any) -> float | None:
    """One round; returns how long to wait before the next (None: back off)."""
    try:
        obj = await rt.kube.get_deployment(namespace, name)
        if obj is None or _settled(obj):
            return FINISHED_WAIT
        body = kopf.Body(obj)
        result = await reconcile(
            rt,
            obj,
            lambda kind, reason, message: kopf.event(
                body, type=kind, reason=reason, message=message
            ),
        )
    except Exception:
        metrics.RECONCILE_ERRORS.labels("Deployment").inc()
        logger.exception("reconcile of %s/%s failed; retrying", namespace, name)
        return ERROR_WAIT
    if result.progressed:
        return 0.0
    if result.finished:
        return FINISHED_WAIT
    wait = ACTED_WAIT if result.acted else None
    if result.requeue_after is not None:
        wait = min(wait if wait is not None else IDLE_MAX, max(result.requeue_after, 0.0))
    return wait


@kopf.on.delete(GROUP, VERSION, "deployments")
async def deployment_deleted(body: kopf.Body, **_: Any) -> None:
    """Deleting a Deployment mid-rollout puts the previous version back before it goes."""
    from .deployments import Reconciler

    rt = runtime()
    rec = Reconciler(rt, dict(body))
    await rec.load_application((body.get("spec") or {}).get("application", ""))
    if rec.app is None or rec.app_obj is None:
        return
    if (rec.app_obj.get("status") or {}).get("activeDeployment") != rec.name:
        return
    if rec.app.docker is not None:
        revision = int((body.get("status") or {}).get("revision") or 0)
        fleet = DockerFleet(rt, rec.app_obj, rec.app, release_of(rec.name, revision))
        with contextlib.suppress(FleetConfigError):
            await fleet.prepare()
            await fleet.remove_rollout(release_of(rec.name, revision))
    else:
        stable, canary = await rec.target().observe(
            rec.namespace, rec.name_of_app(), rec.app.units()
        )
        if stable.ready:
            await rec.router().set_weights(100, 0)
        if canary.release and canary.release.startswith(f"{rec.name}/"):
            await rec.target().ensure(rec.app_obj, rec.app, "canary", None, 0, None)
    try:
        await rt.kube.patch_application_status(
            rec.namespace, rec.name_of_app(), {"status": {"activeDeployment": None}}
        )
    except ApiException as err:
        if err.status != 404:  # the Application went first (a namespace being deleted)
            raise
    metrics.record_phase(rec.namespace, rec.name, None)


def _on_docker(spec: kopf.Spec, **_: Any) -> bool:
    return spec.get("docker") is not None


# Only Docker Applications get a finalizer: deleting a Kubernetes one never waits on lockgate.
@kopf.on.delete(GROUP, VERSION, "applications", when=_on_docker)
async def application_deleted(body: kopf.Body, **_: Any) -> None:
    """Docker hosts have no owner references: their containers and route file go here."""
    try:
        app = ApplicationSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return
    if app.docker is None:
        return  # Kubernetes objects carry owner references; the garbage collector removes them
    fleet = DockerFleet(runtime(), dict(body), app, None)
    try:
        await fleet.prepare()
    except FleetConfigError:
        return  # without credentials nothing can be removed; deletion must not hang on it
    await fleet.remove_all()


@kopf.on.resume(GROUP, VERSION, "applications")
@kopf.on.create(GROUP, VERSION, "applications")
@kopf.on.update(GROUP, VERSION, "applications")
async def application_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    await reconcile_application(runtime(), dict(body), patch)


@kopf.timer(GROUP, VERSION, "applications", interval=5.0, sharp=False)
async def application_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    try:
        await reconcile_application(runtime(), dict(body), patch, ensure_owned=False)
    except Exception as err:
        metrics.RECONCILE_ERRORS.labels("Application").inc()
        raise kopf.TemporaryError(f"application reconcile failed: {err}", delay=5) from err
