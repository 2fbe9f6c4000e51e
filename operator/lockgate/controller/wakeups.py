"""Who is woken when something changes, so that nothing waiting polls.

A rollout or an Application's status waits on a few kinds of change: its own object (a kopf
watch event wakes the handler of that object), a sibling Deployment or its Application (the
rollout lock), and the Pods of its Application (instances turning ready or failing). The
drivers register the Wake (an asyncio.Event) they wait on here; the event handlers of those
other objects wake them by name. Timers (a pause that ends, the next analysis) are timeouts
on the same wait. What no watch reports (Traefik loading servers or weights) is looked at by one
shared observer of Traefik's API while anybody waits on it, which wakes the waiters its
changes concern; Docker hosts (no watch at all) are polled.

The Pods and the apps/v1 Deployment of each Application slot are kept in kopf indexes
(`pod_entry`, `slot_entry`), so no round lists the Pods or reads the slots to observe them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from lockgate.names import LABEL_APP, LABEL_SLOT
from lockgate.targets.kubernetes import PodInfo, SlotInfo

if TYPE_CHECKING:  # deployments imports the Runtime, which holds the Wakeups
    from .deployments import DeploymentIndex

Key = tuple[str, str, str]  # (kind, namespace, name)
SlotKey = tuple[str, str, str]  # (namespace, application, slot)
# The Pods of each slot of each Application: kopf's index in the operator.
PodIndex = Mapping[SlotKey, Collection[PodInfo]]
# The apps/v1 Deployment of each slot: kopf's index in the operator.
SlotIndex = Mapping[SlotKey, Collection[SlotInfo]]
# Each Application as kopf keeps it, by (namespace, name): kopf's index in the operator.
ApplicationIndex = Mapping[tuple[str, str], Collection[Mapping[str, Any]]]


class Wake(asyncio.Event):
    """A driver's or status loop's wake-up, remembering what set it first since it was last
    cleared (for lockgate_driver_wakeups_total); a plain `set()` counts as an event."""

    def __init__(self) -> None:
        super().__init__()
        self.by: str | None = None

    def set(self, by: str = "event") -> None:
        if not self.is_set():
            self.by = by
        super().set()

    def clear(self) -> None:
        super().clear()
        self.by = None


class Wakeups:
    """The wake-up Events of the running drivers (Deployments) and status loops
    (Applications), by object."""

    def __init__(self) -> None:
        self._events: dict[Key, set[Wake]] = {}

    def register(self, kind: str, namespace: str, name: str, event: Wake) -> None:
        self._events.setdefault((kind, namespace, name), set()).add(event)

    def unregister(self, kind: str, namespace: str, name: str, event: Wake) -> None:
        events = self._events.get((kind, namespace, name))
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[(kind, namespace, name)]

    def wake(self, kind: str, namespace: str, name: str, by: str = "event") -> None:
        for event in self._events.get((kind, namespace, name), ()):
            event.set(by)

    def wake_deployments(
        self,
        namespace: str,
        application: str,
        deployments: DeploymentIndex,
        by: str,
        but: str | None = None,
    ) -> None:
        """Every Deployment of the Application that may act on it (the rollout lock, its
        instances), but `but`: a finished or failed one only wakes for a change of its own
        (a retry)."""
        from .deployments import TERMINAL  # deployments imports the Runtime, which holds us

        for summary in deployments.get((namespace, application), ()):
            if summary.phase not in TERMINAL and summary.name != but:
                self.wake("deployments", namespace, summary.name, by)

    def wake_application(
        self, namespace: str, application: str, deployments: DeploymentIndex, by: str
    ) -> None:
        """The Application's status loop and its Deployments."""
        self.wake("applications", namespace, application, by)
        self.wake_deployments(namespace, application, deployments, by)

    def __len__(self) -> int:
        return sum(len(events) for events in self._events.values())


POLLS_PER_SECOND = 20.0
# A waiter woken by the Traefik observer (traffic/traefik_observer.py) still looks again after
# this, in case its own reads of Traefik failed where the observer's look did not (nothing
# would change then to wake it); stretched so that all of them together look at most
# WATCHED_PER_SECOND times a second.
WATCHED_SAFETY_NET = 10.0
WATCHED_PER_SECOND = 5.0


class PollPace:
    """How soon each waiter that must poll (for what no watch reports: Traefik loading a Pod
    or a split) looks again: its own back-off, stretched so that all of them together poll
    at most `per_second` times a second. Hundreds of rollouts and Applications waiting on
    Traefik at once, each every 1 to 2 s, took the whole core and starved the handlers
    creating the very routes they waited for (500 Applications: none stable after 10 min)."""

    def __init__(self, per_second: float = POLLS_PER_SECOND) -> None:
        self.per_second = per_second
        self._polling: set[Key] = set()

    def delay(self, key: Key, backoff: float) -> float:
        self._polling.add(key)
        return max(backoff, len(self._polling) / self.per_second)

    def done(self, key: Key) -> None:
        self._polling.discard(key)

    def __len__(self) -> int:
        return len(self._polling)


def pod_entry(body: Mapping[str, Any]) -> dict[SlotKey, PodInfo]:
    """A Pod's entry in the index of Pods by Application slot (only lockgate's Pods)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    app, slot = labels.get(LABEL_APP), labels.get(LABEL_SLOT)
    if not app or not slot:
        return {}
    info = PodInfo.of_body(body)
    return {(meta.get("namespace", ""), app, slot): info}


def slot_entry(body: Mapping[str, Any]) -> dict[SlotKey, SlotInfo]:
    """A slot's apps/v1 Deployment in the index of slots (only lockgate's, by their labels)."""
    meta = body.get("metadata") or {}
    labels = meta.get("labels") or {}
    app, slot = labels.get(LABEL_APP), labels.get(LABEL_SLOT)
    if not app or not slot or meta.get("name") != f"{app}-{slot}":
        return {}
    return {(meta.get("namespace", ""), app, slot): SlotInfo.of_body(body)}
