"""kopf handlers. Thin: each one hands the body to a reconcile function.

Event handlers react at once to spec and annotation changes; a timer per in-flight
Deployment drives waits and analysis intervals (never a sleep inside a handler). kopf runs
event handlers and timers of one object concurrently, so a per-object lock keeps reconciles
of the same Deployment one at a time.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from prometheus_client import start_http_server

from . import metrics
from .applications import reconcile_application
from .deployments import reconcile
from .runtime import runtime

GROUP, VERSION = "lockgate.dev", "v1alpha1"
FINISHED = ("Succeeded", "RolledBack", "Aborted")
_locks: dict[str, asyncio.Lock] = {}


def _lock(body: kopf.Body) -> asyncio.Lock:
    return _locks.setdefault(str(body.metadata.uid), asyncio.Lock())


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="lockgate.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="lockgate.dev", key="last-handled-configuration"
    )
    settings.persistence.finalizer = "lockgate.dev/finalizer"
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    rt = runtime()
    start_http_server(rt.settings.metrics_port)


async def _reconcile_deployment(body: kopf.Body, patch: kopf.Patch, logger: Any) -> None:
    async with _lock(body):
        try:
            await reconcile(
                runtime(),
                dict(body),
                patch,
                lambda kind, reason, message: kopf.event(
                    body, type=kind, reason=reason, message=message
                ),
            )
        except Exception as err:
            metrics.RECONCILE_ERRORS.labels("Deployment").inc()
            logger.exception("reconcile failed")
            raise kopf.TemporaryError(f"reconcile failed: {err}", delay=2) from err


@kopf.on.resume(GROUP, VERSION, "deployments")
@kopf.on.create(GROUP, VERSION, "deployments")
@kopf.on.update(GROUP, VERSION, "deployments")
async def deployment_changed(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
    await _reconcile_deployment(body, patch, logger)


@kopf.timer(
    GROUP,
    VERSION,
    "deployments",
    interval=1.0,
    sharp=False,
    when=lambda status, **_: status.get("phase") not in FINISHED,
)
async def deployment_tick(body: kopf.Body, patch: kopf.Patch, logger: Any, **_: Any) -> None:
    await _reconcile_deployment(body, patch, logger)


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
    stable, canary = await rec.target().observe(rec.namespace, rec.name_of_app(), rec.app.units())
    if stable.ready:
        await rec.router().set_weights(100, 0)
    if canary.release and canary.release.startswith(f"{rec.name}/"):
        await rec.target().ensure(rec.app_obj, rec.app, "canary", None, 0, None)
    await rt.kube.patch_application_status(
        rec.namespace, rec.name_of_app(), {"status": {"activeDeployment": None}}
    )
    metrics.record_phase(rec.namespace, rec.name, None)


@kopf.on.resume(GROUP, VERSION, "applications")
@kopf.on.create(GROUP, VERSION, "applications")
@kopf.on.update(GROUP, VERSION, "applications")
async def application_changed(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    await reconcile_application(runtime(), dict(body), patch)


@kopf.timer(GROUP, VERSION, "applications", interval=5.0, sharp=False)
async def application_tick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    try:
        await reconcile_application(runtime(), dict(body), patch)
    except Exception as err:
        metrics.RECONCILE_ERRORS.labels("Application").inc()
        raise kopf.TemporaryError(f"application reconcile failed: {err}", delay=5) from err
