"""One shared look at Traefik for everything that waits on it.

Traefik loads a Ready Pod's address, a new split, a header route or a mirror a moment after
the Kubernetes API has them, and only its own API tells when: no watch event comes. Each
rollout and each Application status loop waiting on that used to ask Traefik itself, every
0.1 to 2 s, so 500 waiting rollouts were 500 pollers (throttled to 20 polls a second in all,
each waiting ~25 s between its looks). Now one observer per Traefik API URL looks for all of
them: while at least one waiter is registered it reads `/api/rawdata` (every router and
service in one request) every `tight` seconds, backing off to at most `slowest` when nothing
has changed for `quiet_after`; with nobody waiting it sends nothing.

A waiter names what it depends on: substrings of the names of Traefik's routers and services
(or of the service a router points at) that its reads could see (`TraefikWatch.names`, from
its router). A look whose answer differs from the previous one wakes the waiters for which
some changed, added or removed entry carries one of their names; the others sleep on. Each
waiter also says which look its own reads followed (`since`, the observer's generation when
its round began): a change that came in a look during its round wakes it at once.

The observer never decides anything: a woken waiter runs its own round, which asks Traefik
what it needs (a change is still confirmed only by what Traefik's API shows).

A round's questions (`LookReads`) are answered from a look too, instead of four requests of
its own: a look begun at most MAX_AGE ago (when the latest is older, the round asks for a new
one, which every round asking meanwhile shares). What a round asks about its split and
routes is answered only from a look begun after its Application last changed its route
objects: until the observer's next look (which its wait on the observer brings), the answer
is "not confirmed", so a split written is never confirmed by a look from before it, and no
write makes anybody wait for a look of its own. At 1,000 Applications a round's own four
reads cost Traefik 4.4 ms of CPU (its list queries go through every router) and the
operator about 2 ms; one look serves every round of a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import Histogram

from .traefik_api import REQUESTS, Look, TraefikReads

log = logging.getLogger("lockgate.traefik_observer")

TIGHT = 0.15  # seconds between looks while something may change
# With no change for this long (Traefik reloads at most every 2 s by default), the looks back
# off (doubling)...
QUIET_AFTER = 3.0
SLOWEST = 1.0  # ...to at most this while anybody waits
LOOK_SHARE = 4.0  # and never closer than this many times a look's own duration
LOOK_TIMEOUT = 5.0
HISTORY = 64  # changes kept for waiters whose round spanned several looks
EVERYTHING = None  # a change of unknown extent (the first look, or one after failures)
# A round's reads are answered from a look begun at most this long ago (Traefik itself loads a
# change up to 2 s after the API has it: its providers' default throttle).
MAX_AGE = 1.0
LOOK_WAIT_SECONDS = Histogram(
    "lockgate_traefik_look_wait_seconds",
    "Time a round waited for a look at Traefik's API recent enough to answer its reads "
    "(begun at most a second before it asked)",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)


@dataclass(frozen=True)
class TraefikWatch:
    """What a waiter needs of Traefik: which API, and substrings of the names of the routers
    and services (or of the service a router points at) whose change can answer it."""

    api_url: str
    names: tuple[str, ...]
    # When (time.monotonic()) the waiter's route objects last changed, if its round's reads
    # came from a look begun before then (or from none): the first look begun after it
    # wakes the waiter even if Traefik did not change (it may serve what was written
    # already); otherwise only a change does.
    fresh_after: float | None = None


@dataclass
class _Waiter:
    names: tuple[str, ...]
    wake: Callable[[], None]
    fresh_after: float | None = None


def _haystack(key: str, entry: Any) -> str:
    """What a waiter's names are looked for in: an entry's name, and a router's service."""
    name = key.partition(":")[2]
    service = (
        entry.get("service") if key.startswith("router:") and isinstance(entry, dict) else None
    )
    return f"{name}\n{service}" if service else name


def _changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str | None:
    """What differs between two looks, as one string holding the haystack of every entry
    added, changed or removed (one a line); EVERYTHING without a previous look."""
    if old is None:
        return EVERYTHING
    lines = [_haystack(key, entry) for key, entry in new.items() if old.get(key) != entry]
    lines += [_haystack(key, entry) for key, entry in old.items() if key not in new]
    return "\n".join(lines)


def look_entries(raw: bytes) -> dict[str, Any]:
    """Every HTTP router and service of a /api/rawdata answer, keyed `router:<name>` and
    `service:<name>`."""
    body = json.loads(raw)
    return {
        f"{kind}:{name}": entry
        for kind, section in (("router", "routers"), ("service", "services"))
        for name, entry in (body.get(section) or {}).items()
    }


class TraefikObserver:
    """Looks at one Traefik API for all its waiters (see the module's docstring)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        api_url: str,
        *,
        tight: float = TIGHT,
        quiet_after: float = QUIET_AFTER,
        slowest: float = SLOWEST,
        history: int = HISTORY,
    ) -> None:
        self.http = http
        self.api_url = api_url.rstrip("/")
        self.tight = tight
        self.quiet_after = quiet_after
        self.slowest = slowest
        self.generation = 0  # how many looks found Traefik changed (0: none yet)
        self.looks = 0  # requests sent
        self._waiters: dict[Hashable, _Waiter] = {}
        self._history: deque[tuple[int, str | None]] = deque(maxlen=history)
        self._digest: bytes | None = None
        self._latest: Look | None = None  # the last answer's entries, parsed
        self._lost = False  # the last look failed: the next answer may hide anything
        self._task: asyncio.Task[None] | None = None
        self._hurry = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        # The look in flight (one at a time, shared by the loop and the rounds asking), when
        # it began, and when the look `_latest` holds began (None: that look failed).
        self._look_task: asyncio.Task[bool] | None = None
        self._look_began = 0.0
        self._answered: float | None = None

    def __len__(self) -> int:
        return len(self._waiters)

    @property
    def answered_at(self) -> float | None:
        """When (time.monotonic()) the look `look_since` answers from began; None when the
        last look failed."""
        return self._answered

    @property
    def looking(self) -> bool:
        return self._task is not None and not self._task.done()

    def watch(
        self,
        key: Hashable,
        names: tuple[str, ...],
        since: int,
        wake: Callable[[], None],
        fresh_after: float | None = None,
    ) -> None:
        """Call `wake` once, after the first look that finds one of `names` changed since
        generation `since` (taken before the waiter's own reads), or with `fresh_after`,
        after the first look begun at or after it; at once if one already did. Replaces
        the waiter's previous registration under `key`."""
        self._waiters.pop(key, None)
        if fresh_after is not None and self._answered is not None and self._answered >= fresh_after:
            wake()  # a look begun after the change has answered since the round read
            return
        if since < self.generation:
            known = [changes for generation, changes in self._history if generation > since]
            if len(known) < self.generation - since or any(
                _concerns(changes, names) for changes in known
            ):
                wake()  # a look during its round saw a change it may not have
                return
        self._waiters[key] = _Waiter(names, wake, fresh_after)
        self._on_this_loop()
        self._hurry.set()
        if not self.looking:
            self._task = asyncio.create_task(self._run(), name=f"traefik observer {self.api_url}")

    def forget(self, key: Hashable) -> None:
        self._waiters.pop(key, None)

    def _on_this_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new event loop (tests run several): start afresh
            self._loop, self._task, self._hurry = loop, None, asyncio.Event()
            self._look_task, self._answered = None, None

    async def look_since(self, since: float) -> Look | None:
        """Traefik's routers and services (`look_entries`) from a look begun at or after
        `since` (time.monotonic()): the latest one if it did, else a new one, shared with
        everybody asking meanwhile. None when that look failed."""
        self._on_this_loop()
        while True:
            if self._answered is not None and self._answered >= since:
                return self._latest
            task = self._look_task
            if task is not None and task.done() and self._look_began >= since:
                return None  # the look asked for failed
            await asyncio.shield(self._shared_look())

    def _shared_look(self) -> asyncio.Task[bool]:
        """The look in flight, or a new one."""
        if self._look_task is None or self._look_task.done():
            self._look_began = time.monotonic()
            self._look_task = asyncio.create_task(self._guarded_look(self._look_began))
        return self._look_task

    async def _guarded_look(self, began: float) -> bool:
        try:
            return await self._look(began)
        except Exception:  # never leave the waiters without a look; they have a safety net
            log.exception("look at Traefik's API at %s failed", self.api_url)
            return self._failed("see above")

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        interval, quiet = self.tight, 0.0
        while self._waiters:
            self._hurry.clear()
            started = loop.time()
            changed = await asyncio.shield(self._shared_look())
            took = loop.time() - started
            if changed:
                interval, quiet = self.tight, 0.0
            else:
                quiet += interval + took
                if quiet >= self.quiet_after:
                    interval = min(interval * 2, self.slowest)
            if not self._waiters:
                break
            floor = LOOK_SHARE * took  # a slow answer (a loaded Traefik): look less often
            try:
                await asyncio.wait_for(self._hurry.wait(), timeout=max(interval, floor))
            except TimeoutError:
                continue
            # A new waiter has most likely just changed something: a backed-off pause ends
            # `tight` after the last look.
            interval, quiet = self.tight, 0.0
            rest = started + took + max(self.tight, floor) - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)

    async def _look(self, began: float) -> bool:
        """One request; wakes the waiters a change concerns. Whether Traefik changed."""
        self.looks += 1
        REQUESTS.labels("observer").inc()
        try:
            answer = await self.http.get(f"{self.api_url}/api/rawdata", timeout=LOOK_TIMEOUT)
        except httpx.HTTPError as err:
            return self._failed(f"{type(err).__name__}: {err}")
        if answer.status_code != 200:
            return self._failed(f"HTTP {answer.status_code}")
        raw = answer.content
        digest = hashlib.sha256(raw).digest()
        if digest == self._digest and not self._lost:
            self._answered = began
            self._wake_fresh(began)
            return False
        try:
            look = await _parsed(raw)
        except (ValueError, AttributeError) as err:
            return self._failed(f"unreadable answer: {err}")
        before = None if self._latest is None else self._latest.entries
        changes = EVERYTHING if self._lost else _changes(before, look.entries)
        self._digest, self._latest, self._lost = digest, look, False
        self._answered = began
        self._wake_fresh(began)
        if changes == "":
            return False  # the same entries (only their order in the answer moved)
        self.generation += 1
        self._history.append((self.generation, changes))
        for key, waiter in list(self._waiters.items()):
            if _concerns(changes, waiter.names):
                del self._waiters[key]
                waiter.wake()
        return True

    def _wake_fresh(self, began: float) -> None:
        for key, waiter in list(self._waiters.items()):
            if waiter.fresh_after is not None and began >= waiter.fresh_after:
                del self._waiters[key]
                waiter.wake()

    def _failed(self, why: str) -> bool:
        self._answered = None
        if not self._lost:
            log.warning("Traefik's API at %s cannot be read: %s", self.api_url, why)
        self._lost = True
        return False

    async def aclose(self) -> None:
        self._waiters.clear()
        for task in (self._task, self._look_task):
            if task is not None and not task.done():
                task.cancel()
                if self._loop is asyncio.get_running_loop():
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
        self._task = self._look_task = None


def _look_of(raw: bytes) -> Look:
    return Look(look_entries(raw))


async def _parsed(raw: bytes) -> Look:
    """The answer's entries and their indexes, off the event loop when the answer is large
    (hundreds of Applications: megabytes)."""
    if len(raw) < 256 * 1024:
        return _look_of(raw)
    return await asyncio.to_thread(_look_of, raw)


def _concerns(changes: str | None, names: tuple[str, ...]) -> bool:
    return changes is EVERYTHING or any(name in changes for name in names)


@dataclass
class LookReads:
    """A router's reads of Traefik (`TraefikReads`) answered from the observer's looks: one
    begun at most `max_age` ago, and, with `changed` (time.monotonic() of the last change of
    what the router declares to Traefik), none begun before it: until a later look, the
    answer is None (not confirmed)."""

    observer: TraefikObserver
    changed: Callable[[], float] | None = None
    max_age: float = MAX_AGE
    began: float | None = None  # when the look of the latest answer began (None: none)

    def fresh_after(self) -> float | None:
        """When the route objects last changed, if no answer so far came from a look begun
        after that (`TraefikWatch.fresh_after`)."""
        if self.changed is None:
            return None
        changed = self.changed()
        return changed if self.began is None or self.began < changed else None

    async def _look(self) -> Look | None:
        asked = time.monotonic()
        look = await self.observer.look_since(asked - self.max_age)
        LOOK_WAIT_SECONDS.observe(time.monotonic() - asked)
        began = self.observer.answered_at
        self.began = None if look is None else began
        if look is None or began is None:
            return None
        if self.changed is not None and began < self.changed():
            return None  # from before the change: the observer's next look will tell
        return look

    async def service(self, name: str, provider: str) -> dict[str, Any] | None:
        look = await self._look()
        return None if look is None else look.service(name, provider)

    async def listing(self, kind: str, **query: str) -> list[dict[str, Any]] | None:
        look = await self._look()
        return None if look is None else look.listing(kind, **query)


Marks = dict[str, int]  # API URL -> the observer's generation when a round began


class TraefikObservers:
    """The observers of every Traefik API URL in use (the operator's default, and any an
    Application names), made on first use."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        make: Callable[[httpx.AsyncClient, str], TraefikObserver] = TraefikObserver,
    ) -> None:
        self.http = http
        self._make = make
        self._observers: dict[str, TraefikObserver] = {}

    def get(self, api_url: str) -> TraefikObserver:
        url = api_url.rstrip("/")
        observer = self._observers.get(url)
        if observer is None:
            observer = self._observers[url] = self._make(self.http, url)
        return observer

    def marks(self) -> Marks:
        """Taken before a round reads Traefik: what `watch` compares later looks with."""
        return {url: observer.generation for url, observer in self._observers.items()}

    def watch(
        self, key: Hashable, watch: TraefikWatch, marks: Marks, wake: Callable[[], None]
    ) -> None:
        """`wake` once Traefik changes where `watch` names, after the round marked `marks`."""
        self.forget(key)
        url = watch.api_url.rstrip("/")
        self.get(url).watch(key, watch.names, marks.get(url, 0), wake, watch.fresh_after)

    def reads(self, api_url: str, changed: Callable[[], float] | None = None) -> TraefikReads:
        """A router's reads of Traefik at `api_url`, answered from looks (`LookReads`)."""
        return LookReads(self.get(api_url), changed)

    def forget(self, key: Hashable) -> None:
        for observer in self._observers.values():
            observer.forget(key)

    def __len__(self) -> int:
        return sum(len(observer) for observer in self._observers.values())

    def __iter__(self) -> Any:
        return iter(self._observers.values())

    async def aclose(self) -> None:
        for observer in self._observers.values():
            await observer.aclose()
