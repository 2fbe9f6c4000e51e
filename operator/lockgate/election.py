"""Leader election on a Lease, the decisions only: no I/O, no clock reads, no Kubernetes
imports. The controller (lockgate.controller.leader) reads and writes the Lease, reads the
clocks and asks here what to do.

The rules are client-go's (k8s.io/client-go/tools/leaderelection), which controller-runtime
and every Kubernetes controller use, so a lockgate Lease reads like any other:

- A candidate never compares the holder's timestamps with its own clock. It notes, on its
  own monotonic clock, when it first saw the record as it is (`observe`); the lease has
  expired once `leaseDurationSeconds` have passed on that clock without the record changing.
- A released lease (empty holderIdentity) is free at once.
- The leader renews every retry period. It counts itself leader only until the renew
  deadline has passed since it *sent* its last successful renewal; since the renew deadline
  is shorter than the lease duration and others start counting only once they have seen
  that renewal (which the server wrote after it was sent), the leader has stopped before
  anyone else may take over: never two acting.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, replace
from datetime import datetime

JITTER_FACTOR = 1.2  # client-go's: the renew deadline must leave room for a jittered retry


@dataclass(frozen=True)
class Timing:
    """controller-runtime's defaults: lease 15 s, renew deadline 10 s, retry period 2 s."""

    lease_duration: float = 15.0
    """How long a candidate waits, after it last saw the record change, before taking over."""
    renew_deadline: float = 10.0
    """How long the leader keeps trying to renew before it gives up leading."""
    retry_period: float = 2.0
    """How often the leader renews (and a failed attempt is retried)."""

    def __post_init__(self) -> None:
        if min(self.lease_duration, self.renew_deadline, self.retry_period) <= 0:
            raise ValueError("lease duration, renew deadline and retry period must be positive")
        if self.lease_duration <= self.renew_deadline:
            raise ValueError(
                f"the lease duration ({self.lease_duration:g}s) must be longer than the renew "
                f"deadline ({self.renew_deadline:g}s)"
            )
        if self.renew_deadline <= JITTER_FACTOR * self.retry_period:
            raise ValueError(
                f"the renew deadline ({self.renew_deadline:g}s) must be longer than "
                f"{JITTER_FACTOR:g} x the retry period ({self.retry_period:g}s)"
            )

    @property
    def lease_seconds(self) -> int:
        """leaseDurationSeconds as written into the Lease: whole seconds, rounded up (others
        must never wait less than the renew deadline)."""
        return max(1, math.ceil(self.lease_duration))


@dataclass(frozen=True)
class Record:
    """The spec of a coordination.k8s.io/v1 Lease, as lockgate reads and writes it."""

    holder: str = ""
    """holderIdentity; empty when nobody holds it (released)."""
    duration: int = 15
    """leaseDurationSeconds: how long others wait after the record last changed."""
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    transitions: int = 0
    """leaseTransitions: how many times the holder changed."""

    @property
    def free(self) -> bool:
        return not self.holder


@dataclass(frozen=True)
class Seen:
    """The record as last observed, and when (local monotonic clock) it was first seen so."""

    record: Record | None
    """None: there is no Lease yet."""
    since: float


def observe(seen: Seen | None, record: Record | None, now: float) -> Seen:
    """What a candidate knows after reading the Lease at `now`: the time only moves when the
    record changed (a renewal changes renewTime), as client-go's observedTime."""
    if seen is not None and seen.record == record:
        return seen
    return Seen(record, now)


class Verdict(enum.Enum):
    CREATE = "create"
    """No Lease exists: create it, holding it."""
    TAKE = "take"
    """The lease is free, expired or already ours: write ourselves in as holder."""
    RENEW = "renew"
    """We lead and it is time to renew."""
    WAIT = "wait"
    """Nothing to do until `look_again` (or until the record changes)."""
    LOST = "lost"
    """We led, and can no longer be sure we do: stop acting at once."""


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    look_again: float
    """When to decide again (local monotonic clock) if nothing is seen to change before."""
    holder: str = ""
    """Who holds the lease as last seen (for the standby's log)."""
    reason: str = ""


def decide(seen: Seen, me: str, now: float, timing: Timing, renewed: float | None) -> Decision:
    """What to do at `now`. `renewed`: when the leader sent its last successful acquire or
    renew request (None while not leading)."""
    record = seen.record
    holder = record.holder if record is not None else ""
    if renewed is not None:
        deadline = renewed + timing.renew_deadline
        if record is None:
            return Decision(Verdict.LOST, now, "", "the Lease was deleted")
        if record.holder != me:
            return Decision(Verdict.LOST, now, holder, f"the lease is held by {holder or 'nobody'}")
        if now >= deadline:
            return Decision(
                Verdict.LOST,
                now,
                holder,
                f"not renewed within the renew deadline ({timing.renew_deadline:g}s)",
            )
        due = renewed + timing.retry_period
        if now >= due:
            # A failed attempt is retried a retry period later, the last one at the deadline.
            return Decision(Verdict.RENEW, min(now + timing.retry_period, deadline), holder)
        return Decision(Verdict.WAIT, due, holder)
    if record is None:
        return Decision(Verdict.CREATE, now + timing.retry_period)
    if record.free or record.holder == me:
        return Decision(Verdict.TAKE, now + timing.retry_period, holder)
    expires = seen.since + record.duration
    if now >= expires:
        return Decision(
            Verdict.TAKE,
            now + timing.retry_period,
            holder,
            f"{holder} did not renew for {record.duration}s",
        )
    return Decision(Verdict.WAIT, expires, holder)


def claim(previous: Record | None, me: str, now: datetime, timing: Timing) -> Record:
    """The record to write to acquire or renew: a renewal keeps the acquire time and the
    count of transitions; a new holder starts both anew."""
    if previous is not None and previous.holder == me:
        return replace(previous, duration=timing.lease_seconds, renew_time=now)
    return Record(
        holder=me,
        duration=timing.lease_seconds,
        acquire_time=now,
        renew_time=now,
        transitions=previous.transitions + 1 if previous is not None else 0,
    )


def released(previous: Record, now: datetime) -> Record:
    """The record the leader writes when it steps down (client-go's ReleaseOnCancel): no
    holder, a lease of 1 s, both times now, so anyone may take it at once."""
    return Record(
        holder="", duration=1, acquire_time=now, renew_time=now, transitions=previous.transitions
    )
