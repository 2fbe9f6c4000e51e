"""What kopf keeps of each Deployment and Application: only what a handler reads of it.

kopf keeps the last body of every object of a kind that has a daemon (each Deployment has
its driver, each Application its status loop) for as long as the object exists, whichever
shard serves it and whether its rollout is in flight or long finished. The watch delivers
the whole object: its `managedFields`, and for a Deployment the histories of its status (the
rollout log, transitions, analysis runs, notifications, webhook calls, conditions: up to
~35 KB of JSON, 150 KB once decoded). No handler reads those from kopf's copy: a round
reads the Deployment afresh from the API, and its Application from kopf's copy (the
rollout's outcome goes into the Application's history from a fresh read); what a handler
takes from kopf's body is its metadata, spec, the Deployment's phase and revision, and the
Application's status without its history.

So the first handler of each event drops them from the body kopf keeps (the raw event's
object, which becomes kopf's live body), before any daemon or change handler sees it. kopf
reads the object's essence for its change detection before any handler runs, and status
and managedFields are not part of it.

What the histories say that a handler's filter needs is read before they go: whether a
settled Deployment still owes a notification (`deployments.quiet`). It stays in kopf's copy
as `status[QUIET]`, a key the API never serves: the driver's filter reads it.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

MANAGED_FIELDS = "managedFields"
DEPLOYMENT_HISTORIES = (
    "log",
    "transitions",
    "analysis",
    "notifications",
    "webhooks",
    "conditions",
    "batches",
)
APPLICATION_HISTORIES = ("history",)
# In kopf's copy of a Deployment only: settled, owing nothing (the driver's filter).
QUIET = "lockgate.dev/quiet"


def _drop(raw: MutableMapping[str, Any], histories: tuple[str, ...]) -> None:
    meta = raw.get("metadata")
    if isinstance(meta, MutableMapping):
        meta.pop(MANAGED_FIELDS, None)
    status = raw.get("status")
    if isinstance(status, MutableMapping):
        for key in histories:
            status.pop(key, None)


def keep_of_deployment(raw: MutableMapping[str, Any], quiet: bool = False) -> None:
    """What kopf keeps of a Deployment: its metadata without managedFields, its spec, and
    its status without the histories, marked `QUIET` if `quiet`."""
    _drop(raw, DEPLOYMENT_HISTORIES)
    status = raw.get("status")
    if quiet and isinstance(status, MutableMapping):
        status[QUIET] = True


def is_quiet(body: Mapping[str, Any]) -> bool:
    """kopf's copy of a Deployment says it is settled and owes nothing."""
    status = body.get("status")
    return isinstance(status, Mapping) and status.get(QUIET) is True


def keep_of_application(raw: MutableMapping[str, Any]) -> None:
    """What kopf keeps of an Application: all but managedFields and its status's history."""
    _drop(raw, APPLICATION_HISTORIES)
