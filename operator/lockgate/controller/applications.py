"""Application reconcile: the Services and routes it owns exist, and its status is current."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from lockgate.api import ApplicationSpec
from lockgate.api.common import Condition
from lockgate.engine.conditions import conditions_for

from .fleets import Census, FleetUnusable, fleet_for
from .runtime import Runtime
from .wakeups import WATCHED_SAFETY_NET

SETTLE_POLL = 1.0  # a Ready instance the proxy has yet to load is looked at again after this


async def reconcile_application(
    rt: Runtime, body: dict[str, Any], patch: Any, *, ensure_owned: bool = True
) -> float | None:
    """`ensure_owned`: (re)create the Services and routes lockgate owns; the periodic status
    refresh skips it, changes to the Application and operator restarts do it. Returns when
    the status should be counted again although no event comes (None: on events only)."""
    meta = body["metadata"]
    marks = rt.traefik.marks()  # before the census reads Traefik
    try:
        app = ApplicationSpec.model_validate(body.get("spec") or {})
    except ValidationError as err:
        patch.status["phase"] = "Unknown"
        patch.status["message"] = rt.redactor.text(f"invalid Application: {err.errors()[0]['msg']}")
        return None
    status = dict(body.get("status") or {})
    active = status.get("activeDeployment")
    fleet = fleet_for(rt, body, app, None)
    unusable: str | None = None
    try:
        if ensure_owned:
            await fleet.ensure_owned()
        census = await fleet.census(rolling_out=bool(active))
    except FleetUnusable as err:
        # Nothing can be counted or routed as configured: said in the status (and by the
        # Deployments it refuses), looked at again on the next change or safety-net tick.
        census, unusable = Census(None, len(app.units()), 0, 0), err.reason
    stable_image, desired, ready = census.stable_image, census.desired, census.ready
    if unusable is not None:
        phase, message = "Degraded", unusable
    elif active:
        phase, message = "Progressing", f"rolling out with {active}"
    elif stable_image is None:
        phase, message = "Unknown", "no version deployed yet: create a Deployment"
    elif ready < desired:
        phase, message = "Degraded", f"{ready}/{desired} instances ready"
        if census.problem:
            message += f" ({census.problem})"
    else:
        phase, message = "Healthy", f"{ready}/{desired} instances of {stable_image} ready"
    # A host's error (an SSH or TLS library's words) can quote what it was given.
    message = rt.redactor.text(message)
    new: dict[str, Any] = {
        "phase": phase,
        "message": message,
        "instances": {"desired": desired, "ready": ready, "updated": census.updated},
        "observedGeneration": meta.get("generation"),
    }
    # Conditions share the Deployment's vocabulary: Ready when Healthy, Progressing while a
    # rollout runs, Degraded when instances are missing.
    kstatus_phase = {
        "Healthy": "Succeeded",
        "Progressing": "Progressing",
        "Degraded": "Failed",
        "Unknown": "Pending",
    }[phase]
    previous = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    conditions = conditions_for(
        kstatus_phase,
        message,
        int(meta.get("generation") or 1),
        [Condition.model_validate(c) for c in previous],
        datetime.now(UTC),
    )
    new["conditions"] = [
        c.model_dump(by_alias=True, mode="json", exclude_none=True) for c in conditions
    ]
    if stable_image and not (status.get("stable") or {}).get("image"):
        new["stable"] = {"image": stable_image}
    for key, value in new.items():
        if status.get(key) != value:
            patch.status[key] = value
    poller = ("applications", str(meta.get("namespace", "")), str(meta.get("name", "")))
    if census.settling and census.watch is not None:
        # Traefik has yet to load a Ready instance: its observer wakes the status loop
        # (through its wake-up, whichever handler counted) once Traefik changes there.
        rt.polls.done(poller)
        rt.traefik.watch(poller, census.watch, marks, lambda: rt.wakeups.wake(*poller))
        return rt.watched.delay(poller, WATCHED_SAFETY_NET)
    rt.traefik.forget(poller)
    rt.watched.done(poller)
    if census.settling:
        return rt.polls.delay(poller, SETTLE_POLL)
    rt.polls.done(poller)
    poll: float | None = fleet.status_poll
    return poll
