"""kopf handlers. Thin: each one hands the body to a reconcile function.

Each Deployment has one driver (a kopf daemon), so reconciles of one Deployment never
overlap. A driver that waits costs nothing: it sleeps until a watch event wakes it (its own
object, a sibling Deployment or its Application for the rollout lock, a Pod of its
Application) or until the rollout's next timer (a pause's end, the next analysis, a
deadline). While the world settles where no watch tells, a rollout waiting on Traefik
(loading servers, weights, routes) is woken by the shared Traefik observer when Traefik
changes there; one on Docker hosts polls, with a back-off. Each Application's status is refreshed
the same way by its own loop: on its Pods' events, with a slow timer as a safety net.

State lives where kopf keeps it: the Runtime (clients, caches, who to wake) in the operator
memo, set up at startup and closed at cleanup; each object's wake-up Event in its own memo;
the Deployments of each Application, the shard of each Application, and the Pods and apps/v1
Deployment of each slot, in indexes kept current by the watches.

Sharding (sharding.py): the handlers of Applications match only those of this operator's
shard (a label filter), those of Deployments only the Deployments whose Application is in it
(a filter reading the index of shards).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

import kopf
from pydantic import TypeAdapter, ValidationError

from lockgate import heap
from lockgate.api import ApplicationSpec
from lockgate.api.application import NotificationTarget
from lockgate.names import GROUP, LABEL_APP, LABEL_SHARD, VERSION
from lockgate.traffic.traefik_observer import TraefikWatch

from . import metrics, sharding
from .applications import reconcile_application
from .deployments import (
    ApplicationKey,
    DeploymentIndex,
    DeploymentSummary,
    Round,
    deployment_removed,
    index_entry,
    quiet,
    reconcile,
    settled,
)
from .fleets import FleetUnusable, fleet_for, removes_on_deletion
from .fleets.kubernetes import RouteSwitchPending
from .kept import is_quiet, keep_of_application, keep_of_deployment
from .redact import install_log_redaction
from .runtime import Runtime
from .wakeups import (
    WATCHED_SAFETY_NET,
    ApplicationIndex,
    PodIndex,
    SlotIndex,
    Wake,
    pod_entry,
    slot_entry,
)

IDLE_MIN, IDLE_MAX = 0.1, 2.0  # back-off while the world settles where no watch tells
ACTED_WAIT = 0.1  # after acting, give the world a moment before looking again
# A step's end and the timer waking its driver are computed apart (float seconds): the round
# the timer wakes counts as the one after the step's end if it comes this much before it.
TIMER_SLACK = 0.05
# A round that wrote the status looks again when that write's watch event wakes it (then
# the next round reads what was written). Looking at once cost a round that found nothing
# to do, and the event brought a third: three rounds per write. Only if no event comes.
WRITTEN_WAIT = 1.0
SAFETY_NET = 600.0  # a rollout waiting on events only looks again after this anyway
FINISHED_WAIT = SAFETY_NET  # a finished or failed rollout wakes on changes only
ERROR_WAIT = 2.0
RETRY_DELAY = 60.0  # kopf's own delay before it retries a handler that raised
# Traefik serves a new route within seconds: the handler waiting for it to remove the old one
# looks again after 1 s, doubling to this (each retry is a progress write and an Event).
ROUTE_SWITCH_MAX_DELAY = 30.0
APP_SAFETY_NET = 600.0  # an Application's status is recounted at least this often
APP_ERROR_WAIT = 5.0
APP_DEBOUNCE = 0.2  # a burst of Pod events (a slot scaling) makes one recount
APP_START_SPREAD = 5.0  # the first recounts after a start are spread over this
DEPLOYMENT_INDEX = "deployments_by_application"  # the handlers' kwarg holding it
SHARD_INDEX = "application_shards"  # the shard of every Application, this shard's or not
# How long a driver told to stop (its Application moved to another shard, or the operator
# exits) may take to finish the round it is in before kopf cancels it.
ROUND_GRACE = 30.0
log = logging.getLogger("lockgate.handlers")
POD_INDEX = "pods_by_slot"
APPLICATION_INDEX = "applications_by_key"
SLOT_INDEX = "slot_deployments"


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    memo.runtime = Runtime.from_env()
    shard = memo.runtime.settings.shard
    # One finalizer per shard: kopf takes its finalizer off every object its handlers do not
    # match, so a name shared by two shards would be taken off and put back for ever.
    settings.persistence.finalizer = sharding.finalizer(shard)
    settings.posting.level = logging.WARNING
    # Every Traefik/API request and every wake-up would otherwise be an INFO line; what a
    # rollout does is in its status, Events and the operator's own warnings.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    # A deleted Deployment's driver, told to stop, ends in a few loop cycles (its round is
    # cancelled); kopf's default of 10 zero-time cycles can miss it, and then it looks again
    # only after the driver's ROUND_GRACE.
    settings.background.instant_exit_timeout = 0.1
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 30
    # Every API call runs in a worker thread; asyncio's default pool (cores + 4) would make
    # in-flight rollouts queue behind background reconciles.
    threads = memo.runtime.settings.api_threads
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(max_workers=threads))
    memo.runtime.notifier.start()  # the notifications worker
    memo.heap_trim = asyncio.create_task(heap.trim_periodically(), name="heap trim")
    memo.loop_lag = asyncio.create_task(metrics.measure_loop_lag(), name="event loop lag")
    # Before anything can read a Secret: from here on every log line, and every Event kopf
    # posts from one, is masked by the Redactor that learns each Secret value lockgate reads.
    install_log_redaction(memo.runtime.redactor)
    metrics.serve(memo.runtime.settings.metrics_port)
    metrics.SHARD.labels(shard).set(1)
    if shard:
        log.info("serving shard %r: the Applications labelled %s=%s", shard, LABEL_SHARD, shard)


@kopf.on.cleanup()
async def close_clients(memo: kopf.Memo, **_: Any) -> None:
    for name in ("heap_trim", "loop_lag"):
        task: asyncio.Task[None] | None = memo.get(name)
        if task is not None:
            task.cancel()
    runtime: Runtime | None = memo.get("runtime")
    if runtime is not None:
        await runtime.aclose()


@kopf.index(GROUP, VERSION, "deployments", id=DEPLOYMENT_INDEX)
async def deployments_by_application(
    body: kopf.Body, **_: Any
) -> dict[ApplicationKey, DeploymentSummary]:
    """What the rollout lock reads of each Deployment, without listing them every round."""
    return index_entry(body)


@kopf.index(GROUP, VERSION, "applications", id=SHARD_INDEX)
async def application_shards(
    namespace: str | None, name: str, labels: kopf.Labels, **_: Any
) -> dict[ApplicationKey, str]:
    """Every Application's shard, whichever serves it: a Deployment's filter reads it."""
    return {(namespace or "", name): sharding.shard_of(labels)}


def _my_shard(memo: kopf.Memo) -> str:
    shard: str = memo.runtime.settings.shard
    return shard


def _application_in_shard(value: str | None, memo: kopf.Memo, **_: Any) -> bool:
    """Label filter of the Application handlers: its shard label names this shard."""
    return (value or sharding.DEFAULT) == _my_shard(memo)


IN_SHARD = {LABEL_SHARD: _application_in_shard}


def _deployment_in_shard(
    spec: kopf.Spec, namespace: str | None, labels: kopf.Labels, memo: kopf.Memo, **kwargs: Any
) -> bool:
    """Filter of the Deployment handlers: the Application it names is in this shard."""
    return _serves(kwargs[SHARD_INDEX], namespace or "", spec, labels, memo)


def _deployment_driven(body: kopf.Body, **kwargs: Any) -> bool:
    """Filter of the driver: this shard's, and not quiet (kept.QUIET). kopf stops the driver
    of a rollout that settled owing nothing, and starts one again on the event that changes
    that (an action annotated, a new spec): kopf's records of a running daemon are 17 KiB
    per Deployment (docs/scale.md)."""
    return not is_quiet(body) and _deployment_in_shard(body=body, **kwargs)


def _serves(
    shards: sharding.ShardIndex,
    namespace: str,
    spec: Mapping[str, Any],
    labels: Mapping[str, str],
    memo: kopf.Memo,
) -> bool:
    """The Deployment is this operator's shard's (sharding.deployment_shard)."""
    shard = sharding.deployment_shard(shards, namespace, spec.get("application"), labels)
    return shard == _my_shard(memo)


@kopf.index(GROUP, VERSION, "applications", id=APPLICATION_INDEX, labels=IN_SHARD)
async def applications_by_key(
    namespace: str | None, name: str, body: kopf.Body, **_: Any
) -> dict[ApplicationKey, kopf.Body]:
    """What a round reads of its Application, without reading it every round: the body kopf
    keeps anyway (kept.py), not a copy."""
    return {(namespace or "", name): body}


@kopf.index("", "v1", "pods", id=POD_INDEX, labels={LABEL_APP: kopf.PRESENT})
async def pods_by_slot(body: kopf.Body, **_: Any) -> dict[tuple[str, str, str], Any]:
    """What a round reads of the Pods of each slot, without listing them every round."""
    return pod_entry(body)


@kopf.index("apps", "v1", "deployments", id=SLOT_INDEX, labels={LABEL_APP: kopf.PRESENT})
async def slot_deployments(body: kopf.Body, **_: Any) -> dict[tuple[str, str, str], Any]:
    """What a round observes of each slot's Deployment, without reading it every round."""
    return slot_entry(body)


def _wake(memo: kopf.Memo) -> Wake:
    """The object's wake-up, in its own memo (shared by its handlers and its daemon)."""
    wake: Wake = memo.setdefault("wake", Wake())
    return wake


def _runtime(memo: kopf.Memo, kwargs: dict[str, Any]) -> Runtime | None:
    """The Runtime, with the Pod index kopf hands to every handler (a live view)."""
    rt: Runtime | None = memo.get("runtime")
    if rt is not None and rt.pod_index is None and POD_INDEX in kwargs:
        rt.pod_index = cast(PodIndex, kwargs[POD_INDEX])
    if rt is not None and rt.slot_index is None and SLOT_INDEX in kwargs:
        rt.slot_index = cast(SlotIndex, kwargs[SLOT_INDEX])
    if rt is not None and rt.application_index is None and APPLICATION_INDEX in kwargs:
        rt.application_index = cast(ApplicationIndex, kwargs[APPLICATION_INDEX])
    return rt


# Of every Deployment and Application, this shard's or not: kopf keeps the last body of each
# (for their daemons) as long as it exists, and no handler reads all of it (kept.py).
@kopf.on.event(GROUP, VERSION, "deployments")
async def deployment_kept(event: kopf.RawEvent, memo: kopf.Memo, **kwargs: Any) -> None:
    """kopf keeps of each Deployment only what a handler reads of it, and whether it is
    quiet (settled, owing nothing: it has no driver)."""
    raw = cast(dict[str, Any], event["object"])
    keep_of_deployment(raw, quiet=settled(raw) and _owes_nothing(raw, memo, kwargs))


NOTIFICATION_TARGETS = TypeAdapter(list[NotificationTarget])


def _owes_nothing(raw: Mapping[str, Any], memo: kopf.Memo, kwargs: dict[str, Any]) -> bool:
    """A settled Deployment owes no notification to its Application's targets (from kopf's
    index: kopf fills every index before any handler runs) or the operator's defaults."""
    rt = _runtime(memo, kwargs)
    if rt is None or APPLICATION_INDEX not in kwargs:
        return False
    meta = raw.get("metadata") or {}
    key = (meta.get("namespace") or "", (raw.get("spec") or {}).get("application") or "")
    app = next(iter(cast(ApplicationIndex, kwargs[APPLICATION_INDEX]).get(key, ())), None)
    own: list[NotificationTarget] = []
    if app is not None:
        with contextlib.suppress(ValidationError):  # as good as none: the defaults, then
            own = NOTIFICATION_TARGETS.validate_python(
                (app.get("spec") or {}).get("notifications") or []
            )
    return quiet(raw, own, rt.notifier.defaults, datetime.now(UTC))


@kopf.on.event(GROUP, VERSION, "applications")
async def application_kept(event: kopf.RawEvent, **_: Any) -> None:
    """kopf keeps of each Application only what a handler reads of it."""
    keep_of_application(cast(dict[str, Any], event["object"]))


@kopf.on.event(GROUP, VERSION, "deployments", when=_deployment_in_shard)
async def deployment_event(
    memo: kopf.Memo, namespace: str | None = None, spec: Any = None, **kwargs: Any
) -> None:
    """Any change (spec, annotations, status) wakes the Deployment's driver at once, and the
    other Deployments of its Application (one waits for the rollout lock it releases); the
    echo of a status write its round said needs no round of its own wakes only those."""
    rt = _runtime(memo, kwargs)
    name = kwargs.get("name") or ""
    rv = ((kwargs.get("body") or {}).get("metadata") or {}).get("resourceVersion")
    if rt is not None and rv is not None and rt.quiet_writes.get((namespace or "", name)) == rv:
        del rt.quiet_writes[(namespace or "", name)]
    else:
        _wake(memo).set("own_object")
    application = (spec or {}).get("application")
    if rt is not None and namespace and application and DEPLOYMENT_INDEX in kwargs:
        siblings = kwargs[DEPLOYMENT_INDEX]
        rt.wakeups.wake_deployments(namespace, application, siblings, "sibling", but=name)


@kopf.on.event(GROUP, VERSION, "applications", labels=IN_SHARD)
async def application_event(
    memo: kopf.Memo,
    namespace: str | None = None,
    name: str | None = None,
    type: str | None = None,
    **kwargs: Any,
) -> None:
    """A change of an Application wakes its status loop and its Deployments (the rollout
    lock, the stable version); its deletion closes what lockgate kept for it."""
    _wake(memo).set()
    rt = _runtime(memo, kwargs)
    if rt is None or not namespace or not name:
        return
    if type == "DELETED":
        await rt.forget_application(namespace, name)
    rt.application_moved(namespace, name, (kwargs.get("body") or {}).get("metadata", {}))
    if DEPLOYMENT_INDEX in kwargs:
        rt.wakeups.wake_deployments(namespace, name, kwargs[DEPLOYMENT_INDEX], "application")


@kopf.on.event("", "v1", "pods", labels={LABEL_APP: kopf.PRESENT})
async def pod_event(
    memo: kopf.Memo, namespace: str | None = None, labels: Any = None, **kwargs: Any
) -> None:
    """A Pod of an Application changed (started, turned ready, failed, went): its status
    loop and its Deployments look again."""
    rt = _runtime(memo, kwargs)
    application = (labels or {}).get(LABEL_APP)
    if rt is not None and namespace and application:
        deployments = kwargs.get(DEPLOYMENT_INDEX) or {}
        rt.wakeups.wake_application(namespace, application, deployments, "pod")


# Traefik's route objects lockgate owns, kept as their watch delivers them: a round reads
# them from `Runtime.route_objects` instead of four API calls (`WatchedObjects`).
@kopf.on.event("traefik.io", "traefikservices", labels={LABEL_APP: kopf.PRESENT})
async def traefik_service_event(
    memo: kopf.Memo, body: kopf.Body, type: str | None = None, **kwargs: Any
) -> None:
    _route_object_seen(memo, "traefikservices", type, body, kwargs)


@kopf.on.event("traefik.io", "ingressroutes", labels={LABEL_APP: kopf.PRESENT})
async def ingress_route_event(
    memo: kopf.Memo, body: kopf.Body, type: str | None = None, **kwargs: Any
) -> None:
    _route_object_seen(memo, "ingressroutes", type, body, kwargs)


def _route_object_seen(
    memo: kopf.Memo, plural: str, type: str | None, body: kopf.Body, kwargs: dict[str, Any]
) -> None:
    """Kept for the rounds; changed by somebody else (a split edited by hand), it wakes the
    Application's rollouts, which put back what lockgate declared."""
    rt = _runtime(memo, kwargs)
    if rt is None or not rt.route_objects.seen(plural, type or "", body):
        return
    namespace = body.get("metadata", {}).get("namespace")
    application = (body.get("metadata", {}).get("labels") or {}).get(LABEL_APP)
    if namespace and application and DEPLOYMENT_INDEX in kwargs:
        rt.wakeups.wake_deployments(namespace, application, kwargs[DEPLOYMENT_INDEX], "route")


@kopf.daemon(
    GROUP,
    VERSION,
    "deployments",
    when=_deployment_driven,
    # Told to stop, a driver finishes its round (then it is cancelled, if it has not).
    cancellation_backoff=ROUND_GRACE,
    cancellation_timeout=5.0,
)
async def deployment_driver(
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    memo: kopf.Memo,
    logger: Any,
    **kwargs: Any,
) -> None:
    """Drives one Deployment: reconciles again as soon as the status a round wrote comes back
    through the watch, so a rollout never waits for a timer between two steps; while it
    waits it sleeps until an event wakes it or its next timer is due; while Traefik has yet
    to load what it waits on, until the Traefik observer sees Traefik change there (Docker
    hosts: it polls, backing off to every 2 s). A finished or
    failed one reads nothing but its own object, and once it owes no notification either it
    has no driver (`_deployment_driven`). The status is persisted after every round, so one
    round completes at most one step.

    Stopped (its Application moved to another shard, it settled owing nothing, the
    Deployment is deleted, the operator exits), it ends after the round in progress. A
    round starts only while the index says the Application is in this shard: kopf stops
    the driver on the next event of the Deployment, and the index may know of the move
    before that event arrives."""
    assert namespace is not None  # Deployments are namespaced
    # kopf passes each index by its id (a live view, current with the watch).
    deployments: DeploymentIndex = kwargs[DEPLOYMENT_INDEX]
    shards: sharding.ShardIndex = kwargs[SHARD_INDEX]
    rt = _runtime(memo, kwargs)
    assert rt is not None
    wake = _wake(memo)
    rt.wakeups.register("deployments", namespace, name, wake)
    metrics.DRIVERS.inc()

    def serves() -> bool:
        return _serves(shards, namespace, kwargs["spec"], kwargs["labels"], memo)

    def watched_version() -> str | None:
        # kopf's live body: the version its watch last delivered, current with each event.
        return ((kwargs.get("body") or {}).get("metadata") or {}).get("resourceVersion")

    driving = asyncio.create_task(
        _drive(rt, stopped, namespace, name, deployments, logger, wake, serves, watched_version)
    )
    relay = asyncio.create_task(_wake_when_stopped(stopped, wake, driving))
    try:
        await driving
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if not driving.cancelled() or (current is not None and current.cancelling()):
            raise  # kopf cancels the driver itself
    finally:
        driving.cancel()
        relay.cancel()
        rt.wakeups.unregister("deployments", namespace, name, wake)
        metrics.DRIVERS.dec()


async def _wake_when_stopped(
    stopped: kopf.DaemonStopped, wake: asyncio.Event, driving: asyncio.Task[None] | None = None
) -> None:
    """A driver waiting for its next round ends at once when it is told to stop. A deleted
    Deployment's round in progress is cancelled: its deletion handler puts the previous
    version back, and kopf, finding the driver still busy, would look again only after
    ROUND_GRACE (a namespace being deleted stayed held that long)."""
    await stopped.wait()
    wake.set()
    reason = stopped.reason
    if driving is not None and reason and reason & kopf.DaemonStoppingReason.RESOURCE_DELETED:
        driving.cancel()


async def _drive(
    rt: Runtime,
    stopped: kopf.DaemonStopped,
    namespace: str,
    name: str,
    deployments: DeploymentIndex,
    logger: Any,
    wake: Wake,
    serves: Callable[[], bool] = lambda: True,
    watched_version: Callable[[], str | None] = lambda: None,
) -> None:
    """The driver's loop: a round (while the Deployment is this shard's), then a wait for
    `wake` or the round's delay. A round waiting on Traefik alone is woken by the Traefik
    observer when what it waits on changes there; others waiting where no watch tells (Docker
    hosts) poll on a back-off. `watched_version`: the resourceVersion the watch last
    delivered of the Deployment."""
    idle = IDLE_MIN
    key = ("deployments", namespace, name)

    def traefik_changed() -> None:
        wake.set("traefik_change")

    def webhook_answered() -> None:
        wake.set("webhook")

    try:
        while not stopped:
            wake.clear()
            marks = rt.traefik.marks()  # before the round reads Traefik
            if not serves():
                delay: float | Poll = FINISHED_WAIT  # not ours (any more): nothing to do
            else:
                asked = time.monotonic()
                ends = rt.step_ends.get((namespace, name))
                moves_on = ends is not None and asked >= ends - TIMER_SLACK
                async with rt.rounds.turn(first=moves_on):  # a waiting round holds nothing
                    metrics.ROUND_TURN_SECONDS.observe(time.monotonic() - asked)
                    if stopped or not serves():  # told to stop, or moved, while it waited
                        delay = FINISHED_WAIT
                    else:
                        delay = await _drive_once(
                            rt,
                            namespace,
                            name,
                            deployments,
                            logger,
                            webhook_answered,
                            watched_version(),
                        )
            if isinstance(delay, Poll) and delay.watch is not None:
                idle = IDLE_MIN
                rt.polls.done(key)
                rt.traefik.watch(key, delay.watch, marks, traefik_changed)
                timer, delay = delay.timer, watched_wait(rt, key, delay)
                timed_out = (
                    "timer" if timer is not None and delay >= timer else "traefik_safety_net"
                )
            elif isinstance(delay, Poll):
                idle = min(idle * 2, IDLE_MAX)
                rt.watched.done(key)
                timer, delay = delay.timer, paced_poll(rt, key, idle, delay)
                timed_out = "timer" if timer is not None and delay >= timer else "poll"
            else:
                idle = IDLE_MIN
                rt.polls.done(key)
                rt.watched.done(key)
                timed_out = "timer"
            if delay <= 0:
                woken_by = "at_once"
            elif not stopped:
                try:
                    await asyncio.wait_for(wake.wait(), timeout=delay)
                    woken_by = wake.by or "event"
                except TimeoutError:
                    woken_by = timed_out
            if not stopped:
                metrics.DRIVER_WAKEUPS.labels(woken_by).inc()
            # Woken (by Traefik's change, an event or a timer): the next round says again
            # what it waits on, if anything.
            rt.traefik.forget(key)
    finally:
        rt.polls.done(key)
        rt.watched.done(key)
        rt.traefik.forget(key)
        rt.deployment_writes.pop((namespace, name), None)
        rt.step_ends.pop((namespace, name), None)


async def _drive_once(
    rt: Runtime,
    namespace: str,
    name: str,
    deployments: DeploymentIndex,
    logger: Any,
    wake: Callable[[], None] | None = None,
    watched_version: str | None = None,
) -> float | Poll:
    """One round; returns how long to wait before the next unless woken (a Poll: the world
    settles where no watch tells).

    The Deployment is read from the API, or, when the version the watch last delivered
    (`watched_version`) is the one this operator's last status write made, from that
    write's answer: nobody changed it since, as far as the watch tells, and a change the
    watch has yet to deliver makes the round's conditional write fail (409, the round is
    lost) and wakes the driver for another round when it arrives. That GET was one of a
    round's ~4 API requests, and at 1,000 in flight each took 0.3 s of the API server's
    time (docs/scale.md)."""
    try:
        written = rt.deployment_writes.get((namespace, name))
        if (
            written is not None
            and watched_version is not None
            and written.resource_version == watched_version
        ):
            obj: dict[str, Any] | None = written.object()
        else:
            obj = await rt.kube.get_deployment(namespace, name)
        if obj is None or settled(obj):
            # Finished or failed with nothing to act on: no round, so nothing touches its
            # hosts until its spec or an action changes (a watch event wakes it then).
            rt.deployment_writes.pop((namespace, name), None)
            if obj is not None:
                # No reconcile looks at it: notifications it still owes are queued from here.
                await rt.notifier.catch_up(obj)
            return FINISHED_WAIT
        body = kopf.Body(cast(kopf.RawBody, obj))
        result = await reconcile(
            rt,
            obj,
            lambda kind, reason, message: kopf.event(
                body, type=kind, reason=reason, message=message
            ),
            deployments,
            wake,
        )
    except Exception:
        metrics.RECONCILE_ERRORS.labels("Deployment").inc()
        logger.exception("reconcile of %s/%s failed; retrying", namespace, name)
        return ERROR_WAIT
    return round_delay(result)


class Poll(NamedTuple):
    """A round's answer when the world settles where no watch tells: look again once Traefik
    changes where `watch` says (or, without one, on the poll back-off, stretched when many
    poll at once), but no later than `timer`."""

    timer: float | None = None
    watch: TraefikWatch | None = None


def paced_poll(rt: Runtime, key: tuple[str, str, str], backoff: float, poll: Poll) -> float:
    """The wait before a poll: the back-off, stretched when many poll at once, but never
    past the round's own timer (a pause's end, the next analysis): stretched past it, 500
    rollouts waiting on Traefik ended their 20 s pauses 13 s late (median)."""
    paced = rt.polls.delay(key, backoff)
    return paced if poll.timer is None else min(paced, poll.timer)


def watched_wait(rt: Runtime, key: tuple[str, str, str], poll: Poll) -> float:
    """The wait of a round the Traefik observer wakes: only the safety net (stretched when
    many wait), and never past the round's own timer."""
    safety = rt.watched.delay(key, WATCHED_SAFETY_NET)
    return safety if poll.timer is None else min(safety, poll.timer)


def round_delay(result: Round) -> float | Poll:
    """How long a driver waits after a round unless an event wakes it."""
    if result.progressed:
        return WRITTEN_WAIT
    if result.finished:
        return FINISHED_WAIT
    if result.acted and result.watch is not None:
        # What only Traefik confirms (a split, a route: it loads them ~2 s later) is waited
        # for on the Traefik observer: looking every 0.1 s, each round asked for it again
        # (~20 rounds per weight). An apply of what Traefik already serves changes nothing
        # there: the watch's `fresh_after` has the first look after the apply wake the
        # rollout. Looking every 2 s instead, a rollout ran 10 to 55 rounds per weight while
        # Traefik took 20 to 110 s to load 1,000 Applications' splits (docs/scale.md).
        timer = None if result.requeue_after is None else max(result.requeue_after, 0.0)
        return Poll(timer, result.watch)
    wait = ACTED_WAIT if result.acted else None  # give the world a moment before looking
    if result.requeue_after is not None:
        timer = max(result.requeue_after, 0.0)
        wait = timer if wait is None else min(wait, timer)
    if result.settling and (wait is None or wait > IDLE_MAX):
        return Poll(wait, result.watch)  # until the world has settled, or the timer is due
    return SAFETY_NET if wait is None else wait


@contextlib.contextmanager
def _failures_redacted(rt: Runtime, delay: float = RETRY_DELAY) -> Iterator[None]:
    """A failed handler's message goes into kopf's log (so an Event on the object) and into
    the object's progress annotation: it says what failed, minus any secret value."""
    try:
        yield
    except kopf.PermanentError as err:
        raise kopf.PermanentError(rt.redactor.text(str(err))) from err
    except Exception as err:
        if isinstance(err, kopf.TemporaryError) and err.delay is not None:
            delay = err.delay
        raise kopf.TemporaryError(rt.redactor.text(str(err)), delay=delay) from err


@kopf.on.delete(GROUP, VERSION, "deployments", when=_deployment_in_shard)
async def deployment_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Deleting a Deployment mid-rollout puts the previous version back before it goes."""
    with _failures_redacted(memo.runtime):
        await deployment_removed(memo.runtime, dict(body))


def _removes_on_deletion(spec: kopf.Spec, **_: Any) -> bool:
    return removes_on_deletion(spec)


# Only Applications whose fleet is not garbage-collected get a finalizer: deleting a
# Kubernetes one never waits on lockgate.
@kopf.on.delete(GROUP, VERSION, "applications", labels=IN_SHARD, when=_removes_on_deletion)
async def application_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """What no owner reference covers (containers on Docker hosts, their route file) goes."""
    try:
        app = ApplicationSpec.model_validate(body.get("spec") or {})
    except ValueError:
        return
    with (
        _failures_redacted(memo.runtime),
        contextlib.suppress(FleetUnusable),  # deletion must not hang on missing credentials
    ):
        await fleet_for(memo.runtime, dict(body), app, None).remove_all()


async def _claim_deployments(
    rt: Runtime, namespace: str, name: str, deployments: DeploymentIndex
) -> None:
    """The Application's Deployments carry this shard's label (sharding.py: that write is what
    hands a Deployment over when its Application moves to this shard)."""
    await sharding.copy_shard_label(
        rt, rt.settings.shard, namespace, deployments.get((namespace, name), ())
    )


def route_switch_delay(retry: int) -> float:
    """When the handler waiting for Traefik to serve an Application's new route retries."""
    return min(2.0**retry, ROUTE_SWITCH_MAX_DELAY)


@kopf.on.resume(GROUP, VERSION, "applications", labels=IN_SHARD)
@kopf.on.create(GROUP, VERSION, "applications", labels=IN_SHARD)
@kopf.on.update(GROUP, VERSION, "applications", labels=IN_SHARD)
async def application_changed(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    namespace: str | None,
    name: str,
    **kwargs: Any,
) -> None:
    with _failures_redacted(memo.runtime):
        await _claim_deployments(memo.runtime, namespace or "", name, kwargs[DEPLOYMENT_INDEX])
        try:
            await reconcile_application(memo.runtime, dict(body), patch)
        except RouteSwitchPending as err:
            raise kopf.TemporaryError(
                str(err), delay=route_switch_delay(kwargs.get("retry", 0))
            ) from err


async def application_tick(
    body: kopf.Body,
    patch: kopf.Patch,
    memo: kopf.Memo,
    deployments: DeploymentIndex | None = None,
    **kwargs: Any,
) -> float:
    """One refresh of the Application's status (into `patch`), its Deployments claimed for
    this shard first; returns when to look again unless an event wakes its loop earlier."""
    meta = body.get("metadata") or {}
    with _failures_redacted(memo.runtime):
        try:
            deployments = deployments or kwargs.get(DEPLOYMENT_INDEX)
            if deployments is not None:
                namespace, name = meta.get("namespace") or "", meta.get("name") or ""
                await _claim_deployments(memo.runtime, namespace, name, deployments)
            again = await reconcile_application(memo.runtime, dict(body), patch, ensure_owned=False)
        except Exception as err:
            metrics.RECONCILE_ERRORS.labels("Application").inc()
            raise kopf.TemporaryError(f"application reconcile failed: {err}", delay=5) from err
    return APP_SAFETY_NET if again is None else again


@kopf.daemon(GROUP, VERSION, "applications", labels=IN_SHARD, cancellation_timeout=5.0)
async def application_status(
    stopped: kopf.DaemonStopped,
    name: str,
    namespace: str | None,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: Any,
    **kwargs: Any,
) -> None:
    """Keeps the Application's status current: recounts when its Pods or the Application
    change (events), while Traefik has yet to load a Ready Pod (woken by the Traefik
    observer: no watch tells),
    on its fleet's own period (Docker hosts have no watch), and on a slow safety-net
    timer. The create/update/resume handlers also write it, with what the Application owns."""
    assert namespace is not None
    rt = _runtime(memo, kwargs)
    assert rt is not None
    wake = _wake(memo)
    rt.wakeups.register("applications", namespace, name, wake)
    relay = asyncio.create_task(_wake_when_stopped(stopped, wake))
    try:
        # The create/resume handler has just counted: the first recount comes within a few
        # seconds (a Docker fleet's period), spread so that many Applications started at once
        # do not all recount together.
        delay = random.uniform(0.5, APP_START_SPREAD)
        while not stopped:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout=delay)
            if stopped:
                return
            await asyncio.sleep(APP_DEBOUNCE)
            wake.clear()
            deployments = kwargs.get(DEPLOYMENT_INDEX)
            delay = await _refresh_application(rt, namespace, name, body, memo, logger, deployments)
    finally:
        relay.cancel()
        rt.wakeups.unregister("applications", namespace, name, wake)
        rt.polls.done(("applications", namespace, name))
        rt.watched.done(("applications", namespace, name))
        rt.traefik.forget(("applications", namespace, name))


async def _refresh_application(
    rt: Runtime,
    namespace: str,
    name: str,
    body: kopf.Body,
    memo: kopf.Memo,
    logger: Any,
    deployments: DeploymentIndex | None = None,
) -> float:
    patch = kopf.Patch()
    try:
        delay = await application_tick(body=body, patch=patch, memo=memo, deployments=deployments)
        if patch.status:
            await rt.kube.patch_application_status(namespace, name, {"status": dict(patch.status)})
    except kopf.TemporaryError as err:
        logger.warning("status refresh failed: %s", err)
        return APP_ERROR_WAIT
    except Exception as err:  # the API refused the write (the Application is going)
        metrics.RECONCILE_ERRORS.labels("Application").inc()
        logger.warning("status refresh failed: %s", rt.redactor.text(str(err)))
        return APP_ERROR_WAIT
    return delay
