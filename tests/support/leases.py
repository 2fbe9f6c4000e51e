"""The leader election as the API server records it: every version of a Lease, from a watch,
so a test judges a takeover by the Lease's own timestamps (who held it, when it was last
renewed, released, acquired), never by a stopwatch of its own."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from kubernetes import client, watch

from tests.support.rollouts import Recording, wait_for


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class LeaseVersion:
    holder: str
    duration: int
    acquired: datetime | None
    renewed: datetime | None
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseVersion:
        spec = lease.get("spec") or {}
        return cls(
            spec.get("holderIdentity") or "",
            int(spec.get("leaseDurationSeconds") or 0),
            _time(spec.get("acquireTime")),
            _time(spec.get("renewTime")),
            int(spec.get("leaseTransitions") or 0),
        )


@dataclass
class LeaseRecorder(Recording):
    """Every version of the Lease `namespace/name` while in the `with` block."""

    join_timeout = 10.0  # its watch notices the stop within its 5 s timeout

    api: client.ApiClient
    namespace: str
    name: str
    versions: list[LeaseVersion] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _run(self) -> None:
        coordination = client.CoordinationV1Api(self.api)
        version: str | None = None
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                options: dict[str, Any] = {"resource_version": version} if version else {}
                for event in stream.stream(
                    coordination.list_namespaced_lease,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=5,
                    **options,
                ):
                    raw = event.get("raw_object") or {}
                    if event.get("type") not in ("ADDED", "MODIFIED"):
                        continue
                    version = raw["metadata"]["resourceVersion"]
                    seen = LeaseVersion.of(raw)
                    with self._lock:
                        if not self.versions or self.versions[-1] != seen:
                            self.versions.append(seen)
                    if self._stop.is_set():
                        break
            except Exception:  # e.g. 410 Gone: start again from the Lease as it is
                version = None
                self._stop.wait(0.2)

    def history(self) -> list[LeaseVersion]:
        with self._lock:
            return list(self.versions)

    def holder(self) -> str:
        versions = self.history()
        return versions[-1].holder if versions else ""

    def wait_holder(self, predicate: Any, what: str) -> LeaseVersion:
        """The Lease's latest version once `predicate(holder)`. Waited for as long as new
        versions keep coming (a holder renews it every retry period); a Lease left alone
        (expiring, before someone takes it) is quiet for a lease duration only, and one that
        stays so for much longer than that has nobody left to take it."""

        def held() -> LeaseVersion | None:
            versions = self.history()
            return versions[-1] if versions and predicate(versions[-1].holder) else None

        found: LeaseVersion = wait_for(what, held, lambda: len(self.history()), every=0.05)
        return found

    def handover(self, old: str, new: str) -> tuple[list[LeaseVersion], LeaseVersion]:
        """The versions written while `old` held it (or released it), and `new`'s first."""
        versions = self.history()
        first = next(i for i, v in enumerate(versions) if v.holder == new)
        before = [v for v in versions[:first] if v.holder in (old, "")]
        return before, versions[first]
