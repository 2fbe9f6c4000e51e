"""Leader election on a coordination.k8s.io/v1 Lease: the I/O around lockgate.election.

Every API call runs in a worker thread of the elector's own small pool (never on the event
loop, never queued behind kopf's handlers in the default executor). A standby watches the
Lease in a thread of its own, so a released lease is taken as soon as the release is seen
and an expired one at the moment it expires; the leader renews every retry period, and a
watchdog thread ends the process when the renew deadline passes without a renewal, even if
the event loop is stuck.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from lockgate.election import (
    Decision,
    Record,
    Seen,
    Timing,
    Verdict,
    claim,
    decide,
    observe,
    released,
)

log = logging.getLogger("lockgate.leader")
T = TypeVar("T")

WAITING_LOG_EVERY = 30.0  # the standby says whom it waits for on every change and this often
WATCH_SECONDS = 60  # a watch is restarted this often (it begins with the Lease as it is)
DEFAULT_LEASE_NAME = "lockgate"


@dataclass(frozen=True)
class ElectionConfig:
    name: str
    namespace: str
    identity: str
    timing: Timing

    @property
    def lease(self) -> str:
        return f"{self.namespace}/{self.name}"


def lease_namespace(explicit: str | None, namespaces: list[str]) -> str:
    """--lease-namespace, else the Pod's namespace (POD_NAMESPACE, from the downward API),
    else the first namespace the operator watches, else `default`."""
    return (
        explicit or os.environ.get("POD_NAMESPACE") or (namespaces[0] if namespaces else "default")
    )


def default_identity() -> str:
    """The Pod's name (POD_NAME) or the host name, plus a random suffix (as client-go's), so a
    restarted process never mistakes its predecessor's lease for its own."""
    base = os.environ.get("POD_NAME") or socket.gethostname()
    return f"{base}_{secrets.token_hex(4)}"


class Conflict(Exception):
    """The Lease changed since it was read (409): read it again and decide again."""


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def _micro(value: datetime | None) -> str | None:
    """A MicroTime as the API server parses it (always six fractional digits)."""
    if value is None:
        return None
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_of(lease: dict[str, Any]) -> Record:
    spec = lease.get("spec") or {}
    return Record(
        holder=spec.get("holderIdentity") or "",
        duration=int(spec.get("leaseDurationSeconds") or 0),
        acquire_time=_time(spec.get("acquireTime")),
        renew_time=_time(spec.get("renewTime")),
        transitions=int(spec.get("leaseTransitions") or 0),
    )


def spec_of(record: Record) -> dict[str, Any]:
    return {
        "holderIdentity": record.holder or None,
        "leaseDurationSeconds": record.duration,
        "acquireTime": _micro(record.acquire_time),
        "renewTime": _micro(record.renew_time),
        "leaseTransitions": record.transitions,
    }


class LeaseApi:
    """The Lease's reads and writes (blocking: call them from a worker thread). Verbs used:
    get, create, update (replace) and watch, on the one Lease."""

    def __init__(self, api: client.ApiClient, namespace: str, name: str) -> None:
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.name = name

    @staticmethod
    def _parsed(response: Any) -> tuple[Record, str]:
        lease = json.loads(response.data)
        return record_of(lease), str(lease["metadata"]["resourceVersion"])

    def read(self, timeout: float) -> tuple[Record | None, str | None]:
        try:
            response = self.coordination.read_namespaced_lease(
                self.name, self.namespace, _preload_content=False, _request_timeout=timeout
            )
        except ApiException as err:
            if err.status == 404:
                return None, None
            raise
        return self._parsed(response)

    def _body(self, record: Record, resource_version: str | None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if resource_version is not None:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": spec_of(record),
        }

    def create(self, record: Record, timeout: float) -> tuple[Record, str]:
        try:
            response = self.coordination.create_namespaced_lease(
                self.namespace,
                self._body(record, None),
                _preload_content=False,
                _request_timeout=timeout,
            )
        except ApiException as err:
            if err.status == 409:
                raise Conflict("the Lease was created by another candidate") from err
            raise
        return self._parsed(response)

    def replace(self, record: Record, resource_version: str, timeout: float) -> tuple[Record, str]:
        try:
            response = self.coordination.replace_namespaced_lease(
                self.name,
                self.namespace,
                self._body(record, resource_version),
                _preload_content=False,
                _request_timeout=timeout,
            )
        except ApiException as err:
            if err.status == 409:
                raise Conflict("the Lease changed since it was read") from err
            if err.status == 404:
                raise Conflict("the Lease was deleted") from err
            raise
        return self._parsed(response)

    def watch(
        self,
        push: Callable[[Record | None, str | None], None],
        stopped: threading.Event,
        pause: float,
    ) -> None:
        """Until `stopped`: every version of the Lease (None when it is deleted), starting
        with the Lease as it is each time the watch (re)starts."""
        failing = ""  # the last failure, said once (a 403 is a missing RBAC verb)
        while not stopped.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.coordination.list_namespaced_lease,
                    self.namespace,
                    field_selector=f"metadata.name={self.name}",
                    timeout_seconds=WATCH_SECONDS,
                    _request_timeout=WATCH_SECONDS + 10,
                ):
                    if stopped.is_set():
                        stream.stop()
                        break
                    if failing:
                        log.info("watching the Lease %s/%s again", self.namespace, self.name)
                        failing = ""
                    kind, raw = event.get("type"), event.get("raw_object") or {}
                    if kind == "DELETED":
                        push(None, None)
                    elif kind in ("ADDED", "MODIFIED"):
                        push(record_of(raw), str(raw["metadata"]["resourceVersion"]))
                    else:  # ERROR (e.g. 410 Gone): start again from the Lease as it is
                        break
            except Exception as err:  # the API server is away: try again a little later
                said = _said(err)
                if said != failing:
                    log.warning(
                        "cannot watch the Lease %s/%s (retrying every %gs; until then a "
                        "release is noticed only when the lease expires): %s",
                        self.namespace,
                        self.name,
                        pause,
                        said,
                    )
                failing = said
                stopped.wait(pause)


def _said(err: BaseException) -> str:
    """An error in one line (an ApiException's text holds every response header)."""
    if isinstance(err, ApiException):
        return f"{err.status} {err.reason}"
    return f"{type(err).__name__}: {err}"


class Watchdog:
    """Ends the process once the renew deadline passes without a renewal. A thread, so that
    a busy or stuck event loop cannot keep a leader acting past its deadline."""

    def __init__(self, on_expiry: Callable[[], None], clock: Callable[[], float]) -> None:
        self._on_expiry = on_expiry
        self._clock = clock
        self._deadline: float | None = None
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="lease watchdog", daemon=True)
        self._thread.start()

    def arm(self, deadline: float) -> None:
        with self._changed:
            self._deadline = deadline
            self._changed.notify()

    def disarm(self) -> None:
        with self._changed:
            self._deadline = None
            self._changed.notify()

    def _run(self) -> None:
        with self._changed:
            while True:
                if self._deadline is None:
                    self._changed.wait()
                    continue
                remaining = self._deadline - self._clock()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
        self._on_expiry()


def exit_now(message: str) -> None:
    """Log and end the process at once with status 1 (no cleanup: the process must stop
    acting before its lease can expire for the others)."""
    log.error(message)
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
        sys.stdout.flush()
    os._exit(1)


def _newer(candidate: str | None, current: str | None) -> bool:
    """Whether a watched version is not older than the one in hand (resourceVersions are
    opaque; when both read as integers, an older one from the watch's backlog is dropped)."""
    if candidate is None or current is None:
        return True
    try:
        return int(candidate) >= int(current)
    except ValueError:
        return True


class Elector:
    """One candidate for the Lease: `acquire` waits until it holds it, `keep` renews it until
    it is lost, `release` hands it over."""

    def __init__(
        self,
        api: LeaseApi,
        config: ElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.api = api
        self.config = config
        self.clock = clock
        self.wall = wall
        self.seen: Seen | None = None
        self.version: str | None = None
        self.renewed: float | None = None
        """When the last successful acquire or renew request was sent (None: not leading)."""
        self.leading_since: float | None = None
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lease")
        self._logged: tuple[str, float] | None = None  # (holder, when) of the last wait line

    @property
    def me(self) -> str:
        return self.config.identity

    @property
    def timing(self) -> Timing:
        return self.config.timing

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _see(self, record: Record | None, version: str | None) -> None:
        self.seen = observe(self.seen, record, self.clock())
        self.version = version

    async def _refresh(self) -> None:
        record, version = await self._call(self.api.read, self.timing.retry_period * 2)
        self._see(record, version)

    def decide(self) -> Decision:
        assert self.seen is not None
        return decide(self.seen, self.me, self.clock(), self.timing, self.renewed)

    # -- the standby ------------------------------------------------------------------------

    async def acquire(self, stopping: asyncio.Event) -> bool:
        """Wait until this candidate holds the lease (True), or until `stopping` (False)."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[Record | None, str | None]] = asyncio.Queue()
        watch_stopped = threading.Event()

        def push(record: Record | None, version: str | None) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (record, version))
            except RuntimeError:  # the loop is closed: nobody listens any more
                watch_stopped.set()

        watcher = threading.Thread(
            target=self.api.watch,
            args=(push, watch_stopped, self.timing.retry_period),
            name="lease watch",
            daemon=True,
        )
        watcher.start()
        started = self.clock()
        try:
            while not stopping.is_set():
                try:
                    await self._refresh()
                    break
                except Exception as err:
                    log.warning("cannot read the Lease %s: %s", self.config.lease, _said(err))
                    await _wait(stopping, self.timing.retry_period)
            while not stopping.is_set():
                decision = self.decide()
                if decision.verdict in (Verdict.CREATE, Verdict.TAKE):
                    if await self._claim(decision, stopping):
                        waited = self.clock() - started
                        log.info(
                            "leading: acquired the Lease %s as %s after %.1fs as a standby%s",
                            self.config.lease,
                            self.me,
                            waited,
                            f" ({decision.reason})" if decision.reason else "",
                        )
                        return True
                    continue
                self._log_waiting(decision)
                timeout = max(0.0, decision.look_again - self.clock())
                if self._logged is not None:  # wake to say again whom it waits for
                    timeout = min(timeout, self._logged[1] + WAITING_LOG_EVERY - self.clock())
                item = await _next_or_stop(events, stopping, max(0.0, timeout))
                while item is not None:
                    record, version = item
                    if _newer(version, self.version):
                        self._see(record, version)
                    item = events.get_nowait() if not events.empty() else None
            return False
        finally:
            watch_stopped.set()

    async def _claim(self, decision: Decision, stopping: asyncio.Event) -> bool:
        assert self.seen is not None
        previous = self.seen.record
        sent = self.clock()
        record = claim(previous, self.me, self.wall(), self.timing)
        timeout = self.timing.retry_period * 2
        try:
            if decision.verdict is Verdict.CREATE:
                written = await self._call(self.api.create, record, timeout)
            else:
                assert self.version is not None
                written = await self._call(self.api.replace, record, self.version, timeout)
        except Conflict:
            with contextlib.suppress(Exception):
                await self._refresh()
            return False
        except Exception as err:
            log.warning("cannot write the Lease %s: %s", self.config.lease, _said(err))
            await _wait(stopping, self.timing.retry_period)
            with contextlib.suppress(Exception):
                await self._refresh()
            return False
        self._see(*written)
        self.renewed = sent
        self.leading_since = sent
        return True

    def _log_waiting(self, decision: Decision) -> None:
        now = self.clock()
        holder = decision.holder
        if self._logged is not None:
            last_holder, at = self._logged
            if holder == last_holder and now - at < WAITING_LOG_EVERY:
                return
        self._logged = (holder, now)
        left = decision.look_again - now
        log.info(
            "standby: waiting for the leader %s (Lease %s; taken over in %.1fs unless renewed)",
            holder,
            self.config.lease,
            left,
        )

    # -- the leader -------------------------------------------------------------------------

    async def keep(self, watchdog: Watchdog | None = None) -> str:
        """Renew every retry period until the lease is lost; returns why it was lost."""
        if watchdog is not None and self.renewed is not None:
            watchdog.arm(self.renewed + self.timing.renew_deadline)
        while True:
            decision = self.decide()
            if decision.verdict is Verdict.LOST:
                return decision.reason
            continue_at = decision.look_again  # after a failed renewal: a retry period later
            if decision.verdict is Verdict.RENEW and await self._renew(watchdog):
                assert self.renewed is not None
                continue_at = self.renewed + self.timing.retry_period
            await asyncio.sleep(max(0.0, continue_at - self.clock()))

    async def _renew(self, watchdog: Watchdog | None) -> bool:
        assert self.seen is not None and self.renewed is not None
        sent = self.clock()
        remaining = self.renewed + self.timing.renew_deadline - sent
        if remaining <= 0 or self.version is None:
            return False
        record = claim(self.seen.record, self.me, self.wall(), self.timing)
        try:
            written = await asyncio.wait_for(
                self._call(self.api.replace, record, self.version, remaining), remaining
            )
        except Conflict:
            # Changed behind our back: read it; decide() says LOST unless it is still ours.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._refresh(), remaining)
            return False
        except Exception as err:
            log.warning(
                "renewing the Lease %s failed (%.1fs left before the renew deadline): %s",
                self.config.lease,
                self.renewed + self.timing.renew_deadline - self.clock(),
                _said(err),
            )
            return False
        self._see(*written)
        self.renewed = sent
        if watchdog is not None:
            watchdog.arm(sent + self.timing.renew_deadline)
        return True

    async def release(self) -> bool:
        """Hand the lease over at once: no holder, a lease of 1 s (client-go's
        ReleaseOnCancel). Only while it is still ours; True when released."""
        if self.renewed is None or self.seen is None or self.seen.record is None:
            return False
        for _ in range(2):
            record = self.seen.record
            if record is None or record.holder != self.me or self.version is None:
                return False
            try:
                written = await self._call(
                    self.api.replace,
                    released(record, self.wall()),
                    self.version,
                    self.timing.retry_period,
                )
            except Conflict:
                await self._refresh()
                continue
            except Exception as err:
                log.warning("cannot release the Lease %s: %s", self.config.lease, _said(err))
                return False
            self._see(*written)
            self.renewed = None
            log.info("released the Lease %s", self.config.lease)
            return True
        return False

    def close(self) -> None:
        self._pool.shutdown(wait=False)


async def _wait(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


async def _next_or_stop(
    events: asyncio.Queue[tuple[Record | None, str | None]],
    stopping: asyncio.Event,
    seconds: float,
) -> tuple[Record | None, str | None] | None:
    """The next watched version of the Lease; None when `seconds` passed or `stopping`."""
    if stopping.is_set():
        return None
    getter = asyncio.ensure_future(events.get())
    stopper = asyncio.ensure_future(stopping.wait())
    try:
        done, _ = await asyncio.wait(
            {getter, stopper}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        stopper.cancel()
        if not getter.done():
            getter.cancel()
    if getter in done and not getter.cancelled():
        return getter.result()
    return None
