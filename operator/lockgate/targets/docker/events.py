"""Waking a rollout when the containers it waits for change, from the hosts' Docker events
instead of looking at every host on a timer.

A rollout waits for new containers to pass lockgate's health check. What the daemon can
tell comes as an event on the host's event stream (`GET /events`, over the host's own
connection: unix socket, TLS or SSH): `start`, `die`, and `health_status` for a container
whose image or settings define a Docker healthcheck. A `ContainerWatch` follows those events
for the containers a rollout waits for and calls its `wake` at the first one, so the next
round (which does the real health check) comes at once rather than after a poll interval.

The stream is opened first; then every waiting container that runs is asked lockgate's own
check (`probe`) once, so a change between the round's look and the subscription is not
missed. A container without a Docker healthcheck reports no event when its application
starts to answer: those, while they run, the watch goes on asking itself (0.05 s, doubling
to 0.25 s), and wakes when one passes. A rollout is never woken twice within 0.25 s (a
check that flaps must not spin its rounds faster than the poll this replaces).

The event stream blocks in docker-py: it is read in a thread of its own, never on the event
loop, and closed when the watch ends (woken, replaced, expired or closed with its fleet). A
stream that cannot be opened or that breaks marks the watch `broken` for a while: the fleet
then falls back to polling (and the watch wakes it once, so that fallback begins at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from lockgate.hosts.connections import EventStream, HostConnections

from .containers import Instance

log = logging.getLogger("lockgate.docker")

WAKE_EVENTS = ("start", "die", "health_status")
PROBE_FIRST = 0.05  # the first own check of a container Docker cannot report on
PROBE_MAX = 0.25  # and the longest wait between two (it doubles up to this)
LIFETIME = 60.0  # a watch nobody renews ends (its rollout was deleted, the operator left)
BROKEN_FOR = 10.0  # after a broken stream, the fleet polls this long before trying again

Probe = Callable[[Instance], Awaitable[bool]]


def event_filters(ids: Sequence[str]) -> dict[str, list[str]]:
    """The Engine API's filters for the events of these containers that may wake a rollout."""
    return {"type": ["container"], "container": list(ids), "event": list(WAKE_EVENTS)}


def docker_reports_health(instance: Instance) -> bool:
    """The container has a Docker healthcheck: the daemon sends `health_status` events."""
    return instance.docker_health is not None


class ContainerWatch:
    """At most one watch at a time (a fleet's, across its rounds): `follow` the containers a
    rollout waits for; `wake` is called once, at the first change, and the watch ends."""

    def __init__(
        self,
        conns: HostConnections,
        *,
        probe_first: float = PROBE_FIRST,
        probe_max: float = PROBE_MAX,
        lifetime: float = LIFETIME,
        broken_for: float = BROKEN_FOR,
    ) -> None:
        self.conns = conns
        self.probe_first = probe_first
        self.probe_max = probe_max
        self.lifetime = lifetime
        self.broken_for = broken_for
        self._task: asyncio.Task[None] | None = None
        self._ids: frozenset[str] = frozenset()
        self._broken_until: float | None = None
        self.broken_reason: str | None = None
        self._last_wake: float | None = None
        self.opened = 0  # streams opened, for tests and logs
        self.asked = asyncio.Event()  # set each time it has asked lockgate's check (tests)
        self.woken = 0

    @property
    def watching(self) -> frozenset[str]:
        """Ids of the containers a running watch follows (empty when none runs)."""
        if self._task is None or self._task.done():
            return frozenset()
        return self._ids

    @property
    def idle(self) -> bool:
        """No watch runs and no broken stream is remembered: nothing is lost by dropping it."""
        return not self.watching and not self.broken

    @property
    def broken(self) -> bool:
        """A stream could not be opened or broke recently: the fleet polls meanwhile."""
        if self._broken_until is None:
            return False
        if asyncio.get_running_loop().time() >= self._broken_until:
            self._broken_until = None
            self.broken_reason = None
            return False
        return True

    def follow(self, waiting: Sequence[Instance], wake: Callable[[], None], probe: Probe) -> bool:
        """Watch `waiting` (replacing a watch of other containers; a watch of the same ones
        keeps running). False when no watch runs: nothing to wait for, or streams are
        broken and the fleet must poll."""
        ids = frozenset(i.id for i in waiting)
        if not ids:
            self.stop()
            return False
        if self.broken:
            self.stop()
            return False
        if ids == self.watching:
            return True
        self.stop()
        self._ids = ids
        self._task = asyncio.create_task(self._watch(tuple(waiting), wake, probe))
        return True

    def stop(self) -> None:
        """End the running watch (its streams are closed by the task as it ends)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._task = None
        self._ids = frozenset()

    async def aclose(self) -> None:
        task = self._task
        self.stop()
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ------------------------------------------------------------------ the watch

    async def _watch(
        self, waiting: tuple[Instance, ...], wake: Callable[[], None], probe: Probe
    ) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        streams: list[EventStream] = []
        pumps: list[threading.Thread] = []

        def put(item: tuple[str, Any]) -> None:  # from a pump thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                loop.call_soon_threadsafe(queue.put_nowait, item)

        by_host: dict[str, list[str]] = {}
        for i in waiting:
            by_host.setdefault(i.host, []).append(i.id)
        try:
            for host, ids in by_host.items():
                try:
                    stream = await self._open(host, ids)
                except Exception as exc:  # a DockerTargetError, a timeout: poll instead
                    self._break(f"host {host}: events not available ({exc})", wake)
                    return
                streams.append(stream)
                self.opened += 1
                pump = threading.Thread(
                    target=_pump,
                    args=(host, stream, put),
                    name=f"docker-events-{host}",
                    daemon=True,
                )
                pump.start()
                pumps.append(pump)
            await self._until_change(waiting, queue, wake, probe, loop.time() + self.lifetime)
        finally:
            for stream in streams:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(stream.close)
            for pump in pumps:
                await asyncio.to_thread(pump.join, 5.0)

    async def _open(self, host: str, ids: list[str]) -> EventStream:
        """The host's stream, opened in a worker thread; one that opens after the watch
        was cancelled or timed out is closed at once, never left holding a connection."""
        loop = asyncio.get_running_loop()
        opening = loop.run_in_executor(None, self.conns.open_events, host, event_filters(ids))
        try:
            async with asyncio.timeout(self.conns.timeout):
                return await asyncio.shield(opening)
        except BaseException:
            if opening.done() and not opening.cancelled() and opening.exception() is None:
                await asyncio.to_thread(opening.result().close)  # opened as it was cancelled
            else:
                opening.add_done_callback(_close_late)
            raise

    async def _until_change(
        self,
        waiting: tuple[Instance, ...],
        queue: asyncio.Queue[tuple[str, Any]],
        wake: Callable[[], None],
        probe: Probe,
        deadline: float,
    ) -> None:
        loop = asyncio.get_running_loop()
        # Subscribed: every running one is asked once (a change just before the stream
        # opened is not missed), then only those Docker cannot report on, backing off.
        running = [i for i in waiting if i.state == "running"]
        own = [i for i in running if not docker_reports_health(i)]
        asking = running
        delay = self.probe_first
        while True:
            if asking:
                results = await asyncio.gather(*(probe(i) for i in asking))
                self.asked.set()
                if any(results):
                    await self._wake(wake, "passed its check")
                    return
            asking = own
            now = loop.time()
            if now >= deadline:
                return
            timeout = min(delay, deadline - now) if own else deadline - now
            try:
                # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a
                # cancellation that meets the inner wait's end, and the watch never ends.
                async with asyncio.timeout(timeout):
                    kind, item = await queue.get()
            except TimeoutError:
                delay = min(delay * 2, self.probe_max)
                continue
            if kind == "end":
                host, why = item
                self._break(f"host {host}: event stream ended ({why})", wake)
                return
            status = str(item.get("status") or item.get("Action") or "")
            await self._wake(wake, status)
            return

    async def _wake(self, wake: Callable[[], None], why: str) -> None:
        """Wake the rollout, but never twice within `probe_max`: a container whose check
        flaps (passes here, fails in the round) must not spin rounds faster than the poll
        this replaces."""
        loop = asyncio.get_running_loop()
        if self._last_wake is not None:
            await asyncio.sleep(max(0.0, self._last_wake + self.probe_max - loop.time()))
        self._last_wake = loop.time()
        self.woken += 1
        log.debug("container watch of %d container(s): %s", len(self._ids), why)
        wake()

    def _break(self, reason: str, wake: Callable[[], None]) -> None:
        log.info("%s; polling instead for %g s", reason, self.broken_for)
        self.broken_reason = reason
        self._broken_until = asyncio.get_running_loop().time() + self.broken_for
        wake()  # the round that counted on events was told to wait longer: poll from now


def _close_late(opening: asyncio.Future[EventStream]) -> None:
    if opening.cancelled() or opening.exception() is not None:
        return
    stream = opening.result()
    threading.Thread(target=stream.close, name="docker-events-close", daemon=True).start()


def _pump(host: str, stream: EventStream, put: Callable[[tuple[str, Any]], None]) -> None:
    """Read one host's stream until it ends (closed by the watch, or broken)."""
    why = "closed"
    try:
        for event in stream:
            put(("event", event))
    except Exception as exc:
        why = f"{type(exc).__name__}: {exc}"
    put(("end", (host, why)))
