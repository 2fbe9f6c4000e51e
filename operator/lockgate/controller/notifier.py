"""Notifications, the I/O part: a background worker that tells targets of each transition.

A reconcile only enqueues (`Notifier.enqueue_owed`, no I/O, never waits); the worker sends
each notification with `outbound.http.post_json`, retrying with capped exponential back-off,
and records it in the Deployment's `status.notifications` once the receiver answered 2xx
(or once it gives up, MAX_AGE after the transition). What is owed is derived from the
status alone (the transitions minus the records), so a restarted operator sends what it had
not recorded: at most once per transition and target, except for one window, a notification
sent but not yet recorded when the operator dies, which is sent again with the same
`X-Lockgate-Delivery` id for the receiver to drop.

Notifications of one Deployment to one target go out in order, one at a time (a lane): a
target that hangs delays only its own later notifications, never a rollout or another
target."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from lockgate.api import ApplicationSpec, DeploymentStatus
from lockgate.api.application import NotificationTarget
from lockgate.api.common import SecretKeyReference
from lockgate.api.deployment import NotificationRecord, Transition
from lockgate.outbound.http import post_json
from lockgate.outbound.notifications import (
    MAX_AGE,
    DeploymentInfo,
    backoff,
    body_for,
    delivery_id,
    owed,
    targets,
    with_record,
)

if TYPE_CHECKING:
    from .runtime import Runtime

log = logging.getLogger("lockgate.notifications")

DONE_REMEMBERED = 20000  # keys recorded by this process: a stale body must not re-enqueue them
RECORD_TRIES = 10


class MissingSecret(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Job:
    key: tuple[str, int, str]  # (deployment uid, transition seq, target name)
    info: DeploymentInfo
    transition: Transition
    target: NotificationTarget
    body: dict[str, Any]

    @property
    def delivery(self) -> str:
        return delivery_id(*self.key)


@dataclass
class Notifier:
    rt: Runtime
    defaults: Sequence[NotificationTarget] = ()
    timeout_seconds: float = 10.0
    backoff_base: float = 1.0
    backoff_cap: float = 60.0
    queued: set[tuple[str, int, str]] = field(default_factory=set)
    done: OrderedDict[tuple[str, int, str], None] = field(default_factory=OrderedDict)
    checked: OrderedDict[tuple[Any, Any], None] = field(default_factory=OrderedDict)
    lanes: dict[tuple[str, str], asyncio.Queue[Job]] = field(default_factory=dict)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    record_locks: dict[str, asyncio.Lock] = field(default_factory=dict)
    inbox: asyncio.Queue[Job] | None = None
    dispatcher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Starts the worker (in the operator's startup handler)."""
        if self.dispatcher is None:
            self.inbox = asyncio.Queue()
            self.dispatcher = asyncio.create_task(self._dispatch(), name="notifications")

    async def aclose(self) -> None:
        for task in [*self.tasks, *([self.dispatcher] if self.dispatcher else [])]:
            task.cancel()
        for task in [*self.tasks, *([self.dispatcher] if self.dispatcher else [])]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.dispatcher = None

    # ------------------------------------------------------------------ enqueue (no I/O)

    def enqueue_owed(
        self,
        meta: Mapping[str, Any],
        application: str,
        status: DeploymentStatus,
        app: ApplicationSpec | None,
        now: datetime | None = None,
    ) -> int:
        """Queue every notification the Deployment owes (by its persisted `status`) that is
        neither queued nor recorded; returns how many. Never waits, never does I/O."""
        uid = meta.get("uid")
        if self.inbox is None or not uid or not status.transitions:
            return 0
        to = targets(app.notifications if app is not None else [], self.defaults)
        if not to:
            return 0
        info = DeploymentInfo(
            uid=uid,
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            application=application,
            image=status.image or "",
            step_total=status.step.total if status.step is not None else None,
        )
        count = 0
        for t, target in owed(
            status.transitions, status.notifications, to, now or datetime.now(UTC)
        ):
            assert t.seq is not None
            key = (uid, t.seq, target.name)
            if key in self.queued or key in self.done:
                continue
            body = self.rt.redactor.tree(body_for(target.kind, info, t))
            self.queued.add(key)
            self.inbox.put_nowait(Job(key, info, t, target, body))
            count += 1
        return count

    async def catch_up(self, body: Mapping[str, Any]) -> int:
        """For a Deployment no reconcile looks at (finished): queue what it still owes, e.g.
        its last transition when the operator died before telling of it. Reads its
        Application once per change of the Deployment (nothing while it stays the same)."""
        meta = body.get("metadata") or {}
        raw = body.get("status") or {}
        version = (meta.get("uid"), meta.get("resourceVersion"))
        if self.inbox is None or version in self.checked or not raw.get("transitions"):
            return 0
        self.checked[version] = None
        while len(self.checked) > DONE_REMEMBERED:
            self.checked.popitem(last=False)
        try:
            status = DeploymentStatus.model_validate(raw)
        except ValidationError:
            return 0
        now = datetime.now(UTC)
        if not any(
            t.event and t.seq is not None and now - t.at <= MAX_AGE for t in status.transitions
        ):
            return 0
        application = (body.get("spec") or {}).get("application", "")
        app = None
        obj = await self.rt.kube.get_application(meta.get("namespace", ""), application)
        if obj is not None:
            with contextlib.suppress(ValidationError):
                app = ApplicationSpec.model_validate(obj.get("spec") or {})
        return self.enqueue_owed(meta, application, status, app, now)

    # ------------------------------------------------------------------ worker

    async def _dispatch(self) -> None:
        assert self.inbox is not None
        while True:
            job = await self.inbox.get()
            lane_key = (job.key[0], job.target.name)
            lane = self.lanes.get(lane_key)
            if lane is None:
                lane = self.lanes[lane_key] = asyncio.Queue()
                task = asyncio.create_task(self._lane(lane_key, lane))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            lane.put_nowait(job)

    async def _lane(self, lane_key: tuple[str, str], lane: asyncio.Queue[Job]) -> None:
        try:
            while not lane.empty():
                job = lane.get_nowait()
                try:
                    await self._deliver(job)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("notification %s failed", job.delivery)
                finally:
                    self.queued.discard(job.key)
        finally:
            if self.lanes.get(lane_key) is lane:
                del self.lanes[lane_key]

    async def _secret(self, namespace: str, ref: SecretKeyReference, where: str) -> str:
        try:
            data = await self.rt.kube.read_secret(namespace, ref.name)
        except ApiException as err:
            raise MissingSecret(
                f"{where}: Secret {ref.name!r} unreadable: HTTP {err.status}"
            ) from err
        if data is None:
            raise MissingSecret(f"{where}: Secret {ref.name!r} not found")
        if ref.key not in data:
            raise MissingSecret(f"{where}: Secret {ref.name!r} has no key {ref.key!r}")
        value = data[ref.key].strip()
        self.rt.redactor.add(value)
        return value

    async def _deliver(self, job: Job) -> None:
        target, info = job.target, job.info
        where = f"notifications {target.name!r}"
        attempts = 0
        error: str | None = None
        while True:
            try:
                url = target.url
                if target.url_secret_ref is not None:
                    url = await self._secret(info.namespace, target.url_secret_ref, where)
                key = None
                if target.signing_secret_ref is not None:
                    key = (
                        await self._secret(info.namespace, target.signing_secret_ref, where)
                    ).encode()
                assert url is not None
                attempts += 1
                answer = await post_json(
                    self.rt.http,
                    url,
                    # Again at each send: a Secret read since (this target's own) is masked.
                    self.rt.redactor.tree(job.body),
                    timeout_seconds=self.timeout_seconds,
                    signing_key=key,
                    delivery_id=job.delivery,
                    event=job.transition.event,
                )
                if answer.ok:
                    await self._record(job, attempts, None, delivered=True)
                    return
                error = answer.describe()
            except MissingSecret as err:
                error = str(err)
            error = self.rt.redactor.text(error)
            if datetime.now(UTC) - job.transition.at > MAX_AGE:
                log.warning("%s: giving up on %s after %d attempts", where, job.delivery, attempts)
                await self._record(job, attempts, error, delivered=False)
                return
            delay = backoff(max(attempts, 1), self.backoff_base, self.backoff_cap)
            log.info("%s: %s; retrying in %gs", where, error, delay)
            await asyncio.sleep(delay)

    async def _record(self, job: Job, attempts: int, error: str | None, *, delivered: bool) -> None:
        """Add the record to the Deployment's status, on the resourceVersion it was read at
        (a concurrent status write makes it read and merge again)."""
        info = job.info
        record = NotificationRecord(
            target=job.target.name,
            event=job.transition.event or "",
            transition=job.key[1],
            delivered_at=datetime.now(UTC) if delivered else None,
            attempts=attempts,
            last_error=error,
        )
        lock = self.record_locks.setdefault(f"{info.namespace}/{info.name}", asyncio.Lock())
        async with lock:
            for _ in range(RECORD_TRIES):
                obj = await self.rt.kube.get_deployment(info.namespace, info.name)
                if obj is None or obj["metadata"].get("uid") != info.uid:
                    break  # deleted (or replaced by another of the same name)
                raw = obj.get("status") or {}
                records = [
                    NotificationRecord.model_validate(r) for r in raw.get("notifications") or []
                ]
                live = [t["seq"] for t in raw.get("transitions") or [] if t.get("seq") is not None]
                merged = with_record(records, record, live)
                patch = {
                    "metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]},
                    "status": {
                        "notifications": self.rt.redactor.tree(
                            [r.model_dump(by_alias=True, mode="json") for r in merged]
                        )
                    },
                }
                try:
                    await self.rt.kube.patch_deployment_status(info.namespace, info.name, patch)
                    break
                except ApiException as err:
                    if err.status == 404:
                        break
                    if err.status != 409:
                        raise
            else:
                log.warning("%s: not recorded (the status kept changing)", job.delivery)
            self.done[job.key] = None
            while len(self.done) > DONE_REMEMBERED:
                self.done.popitem(last=False)
