"""Per-host back-off of the periodic reads of a host (an Application's status refresh).

A host that failed is read again after 5 s, then 10, 20, 40 … up to 5 min between attempts,
and at once after a success or when its credentials or URL change (a fixed Secret is tried on
the next refresh). A host that refuses lockgate's key is so not asked every 5 s for ever: on
a real host each attempt is a failed login in its auth log, and fail2ban bans after a few.

What a host in back-off says — its last error and the delay chosen when it failed — stays
the same until the next attempt, so a status that quotes it is not rewritten in between.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .spec import HostSpec

BASE_SECONDS = 5.0
CAP_SECONDS = 300.0


@dataclass(frozen=True)
class Failing:
    """A host's consecutive failures with one spec (URL and credentials)."""

    spec: HostSpec
    failures: int
    delay: float  # seconds from the last failure to the next attempt
    next_at: float  # on the back-off's clock
    reason: str

    @property
    def text(self) -> str:
        return f"{self.reason}; next attempt in {self.delay:g} s"


class HostBackoff:
    """Which hosts to leave alone now, and why. `clock` is monotonic seconds."""

    def __init__(
        self,
        *,
        base: float = BASE_SECONDS,
        cap: float = CAP_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = base
        self.cap = cap
        self.clock = clock
        self._failing: dict[str, Failing] = {}

    def waiting(self, host: str, spec: HostSpec) -> str | None:
        """Why `host` is not to be read now (its last error and the delay), or None: read it."""
        entry = self._failing.get(host)
        if entry is None or entry.spec != spec or self.clock() >= entry.next_at:
            return None
        return entry.text

    def failed(self, host: str, spec: HostSpec, reason: str) -> str:
        """Record a failed read of `host`; what to say of it until the next attempt."""
        before = self._failing.get(host)
        failures = before.failures + 1 if before is not None and before.spec == spec else 1
        delay = min(self.base * 2 ** min(failures - 1, 30), self.cap)
        entry = Failing(spec, failures, delay, self.clock() + delay, reason)
        self._failing[host] = entry
        return entry.text

    def succeeded(self, host: str) -> None:
        self._failing.pop(host, None)

    def keep_only(self, hosts: Iterable[str]) -> None:
        """Forget hosts no longer configured."""
        wanted = set(hosts)
        for host in [h for h in self._failing if h not in wanted]:
            del self._failing[host]

    def failures(self, host: str) -> int:
        entry = self._failing.get(host)
        return entry.failures if entry is not None else 0
