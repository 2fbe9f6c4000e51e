"""Notifications end to end: the operator (`lockgate operator`) rolls out on the real control
plane and process kubelet, and tells a real HTTP receiver on 127.0.0.1 of each transition."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import itertools
import json
from collections import Counter
from datetime import datetime
from typing import Any

import pytest
from kubernetes import client

from tests.support.operator_fixtures import Operator
from tests.support.receiver import HOLD, Received, Receiver
from tests.support.rollouts import Lockgate, application, deployment

pytestmark = pytest.mark.integration

CANARY = {"type": "Canary", "canary": {"steps": [50, 100], "stepSeconds": 2}}
SIGNING_KEY = "notify-signing-key-0123"


def app_with(lg: Lockgate, name: str, targets: list[dict[str, Any]]) -> None:
    extra: dict[str, Any] = {"notifications": targets} if targets else {}
    lg.create(application(name, 1, namespace=lg.namespace, **extra))


def roll_out(
    lg: Lockgate, name: str, image: str, strategy: dict[str, Any] | None = None
) -> dict[str, Any]:
    lg.create(deployment(name, name.rsplit("-", 1)[0], image, strategy))
    status = lg.wait_finished(name)
    assert status["phase"] == "Succeeded", status.get("message")
    return status


def owed(status: dict[str, Any]) -> list[tuple[int, str]]:
    """(seq, event) of the transitions that are notified (every event subscribed)."""
    return [(t["seq"], t["event"]) for t in status.get("transitions") or [] if t.get("event")]


def delivered(lg: Lockgate, name: str, target: str = "hook") -> dict[int, dict[str, Any]] | None:
    """The records of `name` once every notified transition has a delivered one."""
    status = lg.status(name)
    records = {
        r["transition"]: r
        for r in status.get("notifications") or []
        if r["target"] == target and r.get("deliveredAt")
    }
    return records if {seq for seq, _ in owed(status)} <= set(records) else None


def signing_secret(lg: Lockgate) -> None:
    client.CoreV1Api(lg.api).create_namespaced_secret(
        lg.namespace,
        {
            "metadata": {"name": "hook"},
            "data": {"signing": base64.b64encode(SIGNING_KEY.encode()).decode()},
        },
    )


def signed(r: Received) -> bool:
    want = "sha256=" + hmac.new(SIGNING_KEY.encode(), r.payload, hashlib.sha256).hexdigest()
    return r.signature is not None and hmac.compare_digest(want, r.signature)


def test_a_receiver_failing_three_times_gets_each_notification_exactly_once(
    lockgate: Lockgate,
) -> None:
    with Receiver(lambda n, _: 500 if n < 3 else 200) as receiver:
        signing_secret(lockgate)
        target = {
            "name": "hook",
            "kind": "webhook",
            "url": receiver.url,
            "signingSecretRef": {"name": "hook", "key": "signing"},
        }
        app_with(lockgate, "shop", [target])
        roll_out(lockgate, "shop-v1", "demo:v1")
        roll_out(lockgate, "shop-v2", "demo:v2", CANARY)
        records: dict[str, dict[int, dict[str, Any]]] = {}
        for name in ("shop-v1", "shop-v2"):
            records[name] = lockgate.wait_until(
                name,
                f"{name}'s notifications recorded",
                functools.partial(delivered, lockgate, name),
            )
        got = receiver.snapshot()
    expected = {
        name: owed(lockgate.status(name)) for name in ("shop-v1", "shop-v2")
    }  # after the records: the transitions are final
    count = sum(len(v) for v in expected.values())
    events = [e for name in ("shop-v1", "shop-v2") for _, e in expected[name]]
    assert set(events) >= {"Started", "StepCompleted", "Succeeded"}, events

    accepted = receiver.accepted()
    assert len(accepted) == count, f"{len(accepted)} distinct deliveries for {count}: {events}"
    assert set(accepted.values()) == {1}, f"accepted more than once: {accepted}"
    assert len(got) == count + 3, f"{len(got)} requests: 3 refused + {count} accepted expected"
    refused = [r for r in got if r.answer == 500]
    assert len(refused) == 3 and len({r.delivery for r in refused}) == 1  # retried, same id
    assert all(signed(r) for r in got), "every request signed with the Secret's key"
    by_id = {r.delivery: r.body for r in got if r.answer == 200}
    assert sorted(b["event"] for b in by_id.values()) == sorted(events)
    v2 = sorted(
        (b["transition"], b["event"]) for b in by_id.values() if b["deployment"] == "shop-v2"
    )
    assert v2 == expected["shop-v2"]
    for b in by_id.values():
        assert b["namespace"] == lockgate.namespace and b["application"] == "shop"
    # Each record names its attempts: the first notification took four.
    attempts = sorted(r["attempts"] for recs in records.values() for r in recs.values())
    assert attempts == [1] * (count - 1) + [4], attempts


def step_seconds(status: dict[str, Any]) -> list[float]:
    """Seconds from each stage transition of the rollout to the next (Started -> ... ->
    Succeeded), from the transitions' own timestamps."""
    stamps = [
        datetime.fromisoformat(t["at"])
        for t in status["transitions"]
        if t.get("event") in ("Started", "StepCompleted", "Succeeded")
    ]
    return [round((b - a).total_seconds(), 3) for a, b in itertools.pairwise(stamps)]


def test_a_hung_receiver_never_slows_the_rollout(lockgate: Lockgate) -> None:
    # The baseline: the same rollout without notifications (a measurement, not asserted).
    app_with(lockgate, "quiet", [])
    roll_out(lockgate, "quiet-v1", "demo:v1")
    baseline = step_seconds(roll_out(lockgate, "quiet-v2", "demo:v2", CANARY))

    with Receiver(lambda n, _: HOLD) as receiver:
        app_with(lockgate, "shop", [{"name": "hook", "url": receiver.url}])
        roll_out(lockgate, "shop-v1", "demo:v1")
        status = roll_out(lockgate, "shop-v2", "demo:v2", CANARY)
        got = receiver.snapshot()
        # The rollouts ended while the receiver still holds the first request it got: no
        # notification was ever answered, none recorded, and the rollouts did not wait.
        assert got, "the receiver got no request at all"
        assert got[0].answer is None and receiver.held >= 1
        assert all(r.answer is None for r in got)
        assert not [
            r
            for name in ("shop-v1", "shop-v2")
            for r in lockgate.status(name).get("notifications") or []
        ]
    measured = {"without": baseline, "hung receiver": step_seconds(status)}
    print(f"\nstep durations (s): {json.dumps(measured)}")


def test_operator_killed_right_after_a_transition_sends_its_notification_once(
    lockgate: Lockgate, own_operator: Operator
) -> None:
    """The receiver holds the notification of shop-v2's last transition (Succeeded) open;
    the operator is killed while it waits for the answer, so it never recorded it. After the
    restart the Deployment is finished (no reconcile looks at it): the notification is sent
    again, with the same delivery id, and accepted once."""

    def policy(_: int, r: Received) -> int:
        if r.event == "Succeeded" and r.body["deployment"] == "shop-v2" and not held_once:
            held_once.append(r.delivery)
            return HOLD
        return 200

    held_once: list[str] = []
    with Receiver(policy) as receiver:
        app_with(lockgate, "shop", [{"name": "hook", "url": receiver.url}])
        roll_out(lockgate, "shop-v1", "demo:v1")
        roll_out(lockgate, "shop-v2", "demo:v2", CANARY)
        lockgate.wait_until(
            "shop-v2", "the Succeeded notification to be held", lambda: receiver.held == 1
        )
        own_operator.kill()
        receiver.release()  # the killed operator's request ends unanswered
        own_operator.start()
        records = lockgate.wait_until(
            "shop-v2", "shop-v2's notifications recorded", lambda: delivered(lockgate, "shop-v2")
        )
        lockgate.wait_until(
            "shop-v1", "shop-v1's notifications recorded", lambda: delivered(lockgate, "shop-v1")
        )
        got = receiver.snapshot()
    accepted = receiver.accepted()
    succeeded = held_once[0]
    assert accepted[succeeded] == 1, f"Succeeded accepted {accepted[succeeded]} times"
    assert Counter(r.delivery for r in got)[succeeded] == 2  # once killed in flight, once sent
    assert set(accepted.values()) == {1}, f"a notification accepted twice: {accepted}"
    expected = owed(lockgate.status("shop-v1")) + owed(lockgate.status("shop-v2"))
    assert len(accepted) == len(expected), f"{len(accepted)} accepted for {expected}"
    last = max(records)
    assert records[last]["event"] == "Succeeded" and records[last]["deliveredAt"]
