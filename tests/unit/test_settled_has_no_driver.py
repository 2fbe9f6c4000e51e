"""A rollout settled owing nothing has no driver: the handler that trims kopf's copy of a
Deployment reads from the whole body whether it still owes a notification and marks the
copy (kept.QUIET), and the driver's filter leaves a quiet one out. kopf then stops its
driver, and starts one again on the event that changes that (an action, a new spec)."""

from __future__ import annotations

import asyncio
import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import kopf
import pytest
from kopf._core.reactor import inventory

from lockgate.api.application import NotificationTarget
from lockgate.controller import handlers
from lockgate.controller.deployments import quiet
from lockgate.controller.kept import QUIET, is_quiet
from lockgate.names import ACTION_ANNOTATION, GROUP, VERSION
from tests.unit.controller_fakes import FakeKube, runtime_over
from tests.unit.kopf_events import process_event, stop_daemons

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
HOOK = NotificationTarget(name="hook", url="http://127.0.0.1:9/hook")
PAGER = NotificationTarget(name="pager", url="http://127.0.0.1:9/pager", events=["Failed"])


def finished(
    phase: str = "Succeeded", at: datetime = NOW - timedelta(minutes=5), **status: Any
) -> dict[str, Any]:
    """A Deployment whose rollout ended at `at`, told to nobody yet."""
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Deployment",
        "metadata": {
            "namespace": "default",
            "name": "shop-v2",
            "uid": "uid-shop-v2",
            "generation": 1,
            "resourceVersion": "7",
            "annotations": {},
            "finalizers": [kopf.OperatorSettings().persistence.finalizer],
        },
        "spec": {"application": "shop", "image": "app:2"},
        "status": {
            "phase": phase,
            "observedGeneration": 1,
            "transitions": [
                {"phase": phase, "at": at.isoformat(), "seq": 3, "event": phase},
            ],
            "log": [{"at": at.isoformat(), "message": f"rollout {phase}"}],
            **status,
        },
    }


def record(target: str) -> dict[str, Any]:
    return {"target": target, "event": "Succeeded", "transition": 3, "attempts": 1}


def test_a_settled_rollout_with_nobody_to_tell_is_quiet() -> None:
    assert quiet(finished(), [], [], NOW)
    assert quiet(finished("Failed"), [], [], NOW)


@pytest.mark.parametrize(
    ("body", "own", "defaults", "is_quiet_now"),
    [
        (finished(), [HOOK], [], False),  # the Application's target is owed Succeeded
        (finished(), [], [HOOK], False),  # as is the operator's default target
        (finished(notifications=[record("hook")]), [HOOK], [], True),  # told
        (finished(), [PAGER], [], True),  # the only target wants Failed only
        (finished(at=NOW - timedelta(hours=2)), [HOOK], [], True),  # given up on: too old
        (finished(transitions="not a list"), [HOOK], [], False),  # unreadable: its driver looks
    ],
)
def test_a_settled_rollout_is_quiet_once_it_owes_no_notification(
    body: dict[str, Any],
    own: list[NotificationTarget],
    defaults: list[NotificationTarget],
    is_quiet_now: bool,
) -> None:
    assert quiet(body, own, defaults, NOW) is is_quiet_now


def test_a_rollout_in_flight_or_asked_to_act_is_never_quiet() -> None:
    assert not quiet(finished("Progressing"), [], [], NOW)
    asked = finished("Failed")
    asked["metadata"]["annotations"] = {ACTION_ANNOTATION: "retry"}
    assert not quiet(asked, [], [], NOW)
    assert not quiet(finished("Failed", pendingAction="retry"), [], [], NOW)
    respecified = finished()
    respecified["metadata"]["generation"] = 2
    assert not quiet(respecified, [], [], NOW)


def kept_after(event_object: dict[str, Any], application: dict[str, Any] | None) -> dict[str, Any]:
    """kopf's copy of the Deployment after lockgate's trimming handler saw the event, with the
    Application (or none) in the index."""
    raw = copy.deepcopy(event_object)
    index = {("default", "shop"): [application]} if application is not None else {}
    memo = kopf.Memo(runtime=runtime_over(FakeKube()))
    event = {"type": "MODIFIED", "object": raw}
    asyncio.run(
        handlers.deployment_kept(event=event, memo=memo, **{handlers.APPLICATION_INDEX: index})
    )
    return raw


def test_the_mark_is_read_from_the_whole_body_with_the_applications_targets() -> None:
    app = {"metadata": {"name": "shop"}, "spec": {"notifications": [HOOK.model_dump()]}}
    owing = kept_after(finished(), app)
    assert "transitions" not in owing["status"] and not is_quiet(owing)
    told = kept_after(finished(notifications=[record("hook")]), app)
    assert "notifications" not in told["status"] and told["status"][QUIET] is True
    assert is_quiet(kept_after(finished(), None))  # no Application: the defaults (none)


def driven(body: dict[str, Any], shard: str = "") -> bool:
    """The driver's filter, its Application in `shard` (this operator's: the default)."""
    memo = kopf.Memo(runtime=runtime_over(FakeKube()))
    return handlers._deployment_driven(
        body=kopf.Body(body),
        spec=body["spec"],
        namespace="default",
        labels={},
        memo=memo,
        **{handlers.SHARD_INDEX: {("default", "shop"): [shard]}},
    )


def test_kopf_stops_the_driver_of_a_quiet_rollout_and_starts_it_again_when_asked_to_act() -> None:
    """Through kopf's own processing of watch events, with lockgate's trimming handler and
    the driver's filter: a driver runs while the rollout moves, ends once an event says it
    settled owing nothing, and runs again on the retry annotated on it."""
    runs: list[str] = []

    async def scenario() -> None:
        registry = kopf.OperatorRegistry()
        memo = kopf.Memo(runtime=runtime_over(FakeKube()))
        extra = {handlers.APPLICATION_INDEX: {}, handlers.SHARD_INDEX: {}}

        @kopf.on.event(GROUP, VERSION, "deployments", registry=registry)
        async def kept(**kwargs: Any) -> None:
            await handlers.deployment_kept(**kwargs, **extra)

        def filtered(**kwargs: Any) -> bool:
            return handlers._deployment_driven(**kwargs, **extra)

        @kopf.daemon(GROUP, VERSION, "deployments", registry=registry, when=filtered)
        async def driver(stopped: kopf.DaemonStopped, **_: Any) -> None:
            runs.append("started")
            await stopped.wait()
            runs.append(f"stopped: {stopped.reason and stopped.reason.name}")

        @kopf.on.delete(GROUP, VERSION, "deployments", registry=registry)
        async def deleted(**_: Any) -> None:  # keeps the finalizer, as lockgate's does
            pass

        memories = inventory.ResourceMemories()

        async def event(obj: dict[str, Any]) -> None:
            await process_event(registry, memories, memo, "deployments", copy.deepcopy(obj))

        moving = finished("Progressing")
        await event(moving)
        assert runs == ["started"]
        await event(finished("Failed"))
        assert runs == ["started", "stopped: FILTERS_MISMATCH"]
        retried = finished("Failed")
        retried["metadata"]["annotations"] = {ACTION_ANNOTATION: "retry"}
        await event(retried)
        assert runs == ["started", "stopped: FILTERS_MISMATCH", "started"]
        stop_daemons(memories)
        await asyncio.sleep(0)

    asyncio.run(scenario())


def test_the_driver_filter_leaves_out_only_what_is_quiet() -> None:
    moving = kept_after(finished("Progressing"), None)
    settled = kept_after(finished(), None)
    assert driven(moving) and not driven(settled)
    assert not driven(moving, shard="b")  # another shard's
