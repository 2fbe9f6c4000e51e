"""Notifications: which transitions are owed to whom, what each kind of target receives, the
worker's retries and records (over lockgate's fake Kube and an in-memory HTTP transport)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from lockgate.api import ApplicationSpec, DeploymentStatus
from lockgate.api.application import NOTIFICATION_EVENTS, NotificationTarget
from lockgate.api.deployment import (
    MetricsFigures,
    MetricsSnapshot,
    NotificationRecord,
    Transition,
    Weights,
)
from lockgate.engine.decide import phase_event
from lockgate.outbound.http import DELIVERY_HEADER, EVENT_HEADER, SIGNATURE_HEADER, verify
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
from tests.unit.controller_fakes import NS, FakeKube, runtime_over

# Notifications older than MAX_AGE are given up: the transitions are as recent as the clock.
NOW = datetime.now(UTC).replace(microsecond=0)
INFO = DeploymentInfo("uid-1", NS, "shop-v2", "shop", "shop:2", step_total=4)
SNAPSHOT = MetricsSnapshot(
    at=NOW,
    step=1,
    canary=MetricsFigures(requests=120, error_rate=0.25, p95=0.042),
    stable=MetricsFigures(requests=900, error_rate=0.0, p95=0.030),
    verdict="Failed",
)


def target(name: str = "hook", **extra: Any) -> NotificationTarget:
    return NotificationTarget.model_validate({"name": name, "url": "http://127.0.0.1/x", **extra})


def transition(seq: int, event: str | None, phase: str = "Progressing", **extra: Any) -> Transition:
    return Transition.model_validate(
        {"phase": phase, "at": NOW, "message": f"m{seq}", "seq": seq, "event": event, **extra}
    )


# ------------------------------------------------------------------ event mapping


@pytest.mark.parametrize(
    ("before", "after", "event"),
    [
        ("Pending", "Progressing", "Started"),
        ("Queued", "Progressing", "Started"),
        ("Paused", "Progressing", None),  # a promote records Promoted itself
        ("Progressing", "Paused", "Paused"),
        ("Progressing", "Succeeded", "Succeeded"),
        ("Progressing", "RollingBack", "RollingBack"),
        ("RollingBack", "RolledBack", "RolledBack"),
        ("Progressing", "Failed", "Failed"),
        ("RollingBack", "Aborted", "Aborted"),
        ("Succeeded", "Pending", None),
        ("Pending", "Queued", None),
    ],
)
def test_phase_changes_map_to_notification_events(before: str, after: str, event: str) -> None:
    assert phase_event(before, after) == event  # type: ignore[arg-type]


def test_every_event_a_target_can_subscribe_to_is_produced() -> None:
    produced = {
        phase_event(b, a)  # type: ignore[arg-type]
        for b in ("Pending", "Progressing", "Paused", "RollingBack")
        for a in ("Progressing", "Paused", "Succeeded", "RollingBack", "RolledBack", "Failed")
    } | {phase_event("RollingBack", "Aborted"), "StepCompleted", "Promoted"}
    assert set(NOTIFICATION_EVENTS) <= produced


# ------------------------------------------------------------------ payloads


def test_webhook_body_carries_the_transition_and_its_metrics_snapshot() -> None:
    t = transition(3, "RollingBack", "RollingBack", step=1, metrics=SNAPSHOT)
    t = t.model_copy(update={"weights": Weights(stable=75, canary=25)})
    body = body_for("webhook", INFO, t)
    assert body["event"] == "RollingBack"
    assert (body["namespace"], body["application"], body["deployment"], body["image"]) == (
        NS,
        "shop",
        "shop-v2",
        "shop:2",
    )
    assert body["phase"] == "RollingBack" and body["message"] == "m3"
    assert body["step"] == {"index": 1, "number": 2, "total": 4}
    assert body["weights"] == {"stable": 75, "canary": 25}
    assert body["metrics"]["canary"] == {"requests": 120, "errorRate": 0.25, "p95": 0.042}
    assert body["metrics"]["stable"]["requests"] == 900
    assert body["time"] == NOW.isoformat() and body["transition"] == 3
    json.dumps(body)  # serialisable as is


def test_slack_body_is_an_incoming_webhook_message() -> None:
    body = body_for("slack", INFO, transition(2, "Failed", "Failed", step=1, metrics=SNAPSHOT))
    assert set(body) == {"text", "blocks"}
    assert "default/shop-v2" in body["text"] and "failed" in body["text"]
    assert "canary: 120 requests, errors 25.00%, p95 42 ms" in body["text"]
    assert body["blocks"][0]["text"]["text"] == body["text"]


def test_teams_body_is_a_message_card() -> None:
    body = body_for("teams", INFO, transition(1, "Succeeded", "Succeeded"))
    assert body["@type"] == "MessageCard"
    assert "succeeded" in body["summary"] and body["text"]
    assert body["themeColor"] == "2EB886"


# ------------------------------------------------------------------ what is owed


def test_owed_are_the_subscribed_transitions_without_a_record() -> None:
    ts = [transition(0, None, "Pending"), transition(1, "Started"), transition(2, "Failed")]
    only_failed = target("chat", events=["Failed"])
    every = target("hook")
    records = [NotificationRecord(target="hook", event="Started", transition=1, delivered_at=NOW)]
    found = [(t.seq, to.name) for t, to in owed(ts, records, [only_failed, every], NOW)]
    assert found == [(2, "chat"), (2, "hook")]


def test_old_transitions_and_those_recorded_before_the_feature_are_not_owed() -> None:
    old = transition(1, "Started").model_copy(update={"at": NOW - MAX_AGE - timedelta(1)})
    legacy = transition(2, "Failed").model_copy(update={"seq": None})
    assert list(owed([old, legacy], [], [target()], NOW)) == []


def test_an_application_target_overrides_a_default_of_the_same_name() -> None:
    own = [target("team", kind="slack")]
    defaults = [target("team"), target("audit")]
    assert [(t.name, t.kind) for t in targets(own, defaults)] == [
        ("team", "slack"),
        ("audit", "webhook"),
    ]


def test_delivery_id_is_stable_and_distinct_per_transition_and_target() -> None:
    assert delivery_id("u", 1, "a") == delivery_id("u", 1, "a")
    ids = {delivery_id(u, s, t) for u in ("u", "v") for s in (1, 2) for t in ("a", "b")}
    assert len(ids) == 8


def test_records_replace_their_own_drop_pruned_transitions_and_stay_bounded() -> None:
    old = [
        NotificationRecord(target="a", event="Started", transition=1, attempts=1),
        NotificationRecord(target="a", event="Failed", transition=2, attempts=1),
    ]
    new = NotificationRecord(target="a", event="Failed", transition=2, attempts=2)
    assert with_record(old, new, live=[2]) == [new]
    many = [NotificationRecord(target="a", event="x", transition=i) for i in range(10)]
    kept = with_record(many, new, live=range(10), limit=4)
    assert len(kept) == 4 and kept[-1] == new


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff(n, 1.0, 10.0) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_a_target_sets_exactly_one_of_url_and_url_secret_ref() -> None:
    with pytest.raises(ValueError, match="exactly one of url or urlSecretRef"):
        NotificationTarget.model_validate({"name": "x"})
    with pytest.raises(ValueError, match="exactly one of url or urlSecretRef"):
        NotificationTarget.model_validate(
            {"name": "x", "url": "http://a/", "urlSecretRef": {"name": "s", "key": "k"}}
        )


def test_target_names_are_unique() -> None:
    spec = {"kubernetes": {"replicas": 1, "template": {}}}
    twice = [{"name": "a", "url": "http://a/"}, {"name": "a", "url": "http://b/"}]
    with pytest.raises(ValueError, match="target names must be unique"):
        ApplicationSpec.model_validate({**spec, "notifications": twice})


# ------------------------------------------------------------------ the worker


class Endpoint:
    """An in-memory receiver: answers `statuses` in turn (then 200), or raises (no answer)."""

    def __init__(self, *statuses: int, fail_with: Exception | None = None) -> None:
        self.statuses = list(statuses)
        self.fail_with = fail_with
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.fail_with is not None:
            raise self.fail_with
        return httpx.Response(self.statuses.pop(0) if self.statuses else 200)


def world(
    endpoint: Endpoint, app_notifications: list[dict[str, Any]], ts: list[Transition]
) -> tuple[FakeKube, Any, dict[str, Any]]:
    kube = FakeKube()
    rt = runtime_over(kube)
    rt.http = httpx.AsyncClient(transport=httpx.MockTransport(endpoint))
    rt.notifier.backoff_base = rt.notifier.backoff_cap = 0.001
    spec = {"kubernetes": {"replicas": 1, "template": {}}, "notifications": app_notifications}
    kube.add_application("shop", spec)
    status = DeploymentStatus(phase=ts[-1].phase, image="shop:2", transitions=ts)
    body = kube.put(
        "deployments",
        NS,
        {
            "metadata": {"name": "shop-v2"},
            "spec": {"application": "shop", "image": "shop:2"},
            "status": status.model_dump(by_alias=True, mode="json"),
        },
    )
    return kube, rt, body


async def until(condition: Any) -> None:
    deadline = asyncio.get_running_loop().time() + 5.0
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.001)


def records_of(kube: FakeKube) -> list[dict[str, Any]]:
    return list(kube.deployment("shop-v2")["status"].get("notifications") or [])


def test_a_failing_receiver_gets_each_notification_once_recorded_and_never_again() -> None:
    endpoint = Endpoint(500, 500, 500)
    ts = [transition(0, None, "Pending"), transition(1, "Started"), transition(2, "Succeeded")]
    kube, rt, body = world(endpoint, [{"name": "hook", "url": "http://receiver/x"}], ts)

    stale = copy.deepcopy(body)  # as a reconcile read it before any record was written
    stale_status = DeploymentStatus.model_validate(stale["status"])
    app = ApplicationSpec.model_validate(kube.application("shop")["spec"])

    async def run() -> None:
        rt.notifier.start()
        assert await rt.notifier.catch_up(stale) == 2
        # While they are queued or in flight, a reconcile queues them no second time...
        assert rt.notifier.enqueue_owed(stale["metadata"], "shop", stale_status, app) == 0
        await until(lambda: len(records_of(kube)) == 2)
        # ... nor once they are recorded, from what it read before the records were written.
        assert rt.notifier.enqueue_owed(stale["metadata"], "shop", stale_status, app) == 0
        await rt.aclose()

    asyncio.run(run())
    records = records_of(kube)
    assert [(r["target"], r["transition"], r["event"]) for r in records] == [
        ("hook", 1, "Started"),
        ("hook", 2, "Succeeded"),
    ]
    assert records[0]["attempts"] == 4 and records[0]["deliveredAt"]
    assert records[1]["attempts"] == 1
    ids = Counter(r.headers[DELIVERY_HEADER] for r in endpoint.requests)
    assert ids == {
        delivery_id("uid-shop-v2", 1, "hook"): 4,
        delivery_id("uid-shop-v2", 2, "hook"): 1,
    }
    # Started went first: one lane per target, in order.
    assert [r.headers[EVENT_HEADER] for r in endpoint.requests] == ["Started"] * 4 + ["Succeeded"]

    # A restarted operator reads the records and owes nothing.
    rt2 = runtime_over(kube)

    async def restart() -> int:
        rt2.notifier.start()
        found = await rt2.notifier.catch_up(kube.deployment("shop-v2"))
        await rt2.aclose()
        return found

    assert asyncio.run(restart()) == 0


def test_a_restarted_operator_sends_what_was_not_recorded_with_the_same_delivery_id() -> None:
    ts = [transition(0, None, "Pending"), transition(1, "Started"), transition(2, "Failed")]
    endpoint = Endpoint()
    kube, rt, _ = world(endpoint, [{"name": "hook", "url": "http://receiver/x"}], ts)
    recorded = NotificationRecord(target="hook", event="Started", transition=1, delivered_at=NOW)
    kube._patch(
        "deployments",
        NS,
        "shop-v2",
        {"status": {"notifications": [recorded.model_dump(by_alias=True, mode="json")]}},
    )

    async def run() -> None:
        rt.notifier.start()
        assert await rt.notifier.catch_up(kube.deployment("shop-v2")) == 1
        await until(lambda: len(records_of(kube)) == 2)
        await rt.aclose()

    asyncio.run(run())
    assert [r.headers[DELIVERY_HEADER] for r in endpoint.requests] == [
        delivery_id("uid-shop-v2", 2, "hook")
    ]


def test_secrets_never_reach_the_body_nor_the_recorded_error() -> None:
    url = "http://receiver/services/T000/B000/XXXXSECRETXXXX"
    signing = "s1gning-key-value"
    ts = [
        transition(0, None, "Pending"),
        transition(1, "Failed", "Failed").model_copy(
            update={"message": f"could not pull with token {signing}"}
        ),
    ]
    endpoint = Endpoint(fail_with=httpx.ConnectError(f"cannot connect to {url}"))
    target_spec = {
        "name": "hook",
        "urlSecretRef": {"name": "hook", "key": "url"},
        "signingSecretRef": {"name": "hook", "key": "signing"},
    }
    kube, rt, body = world(endpoint, [target_spec], ts)
    kube.secrets["hook"] = {"url": url, "signing": signing}

    async def run() -> None:
        rt.notifier.start()
        assert await rt.notifier.catch_up(body) == 1
        await until(lambda: len(endpoint.requests) >= 3)
        await rt.aclose()

    asyncio.run(run())
    sent = endpoint.requests[-1]
    assert str(sent.url) == url
    assert verify(signing.encode(), sent.content, sent.headers[SIGNATURE_HEADER])
    text = sent.content.decode()
    assert signing not in text and "[redacted]" in text

    # Given up on (a transition older than MAX_AGE): the error recorded is masked too.
    old = ts[-1].model_copy(update={"at": datetime.now(UTC) - MAX_AGE - timedelta(seconds=1)})
    kube2, rt2, body2 = world(endpoint, [target_spec], [ts[0], old])
    kube2.secrets["hook"] = {"url": url, "signing": signing}

    async def give_up() -> None:
        rt2.notifier.start()
        rt2.notifier.enqueue_owed(
            body2["metadata"],
            "shop",
            DeploymentStatus.model_validate(body2["status"]),
            ApplicationSpec.model_validate(kube2.application("shop")["spec"]),
            now=old.at,
        )
        await until(lambda: len(records_of(kube2)) == 1)
        await rt2.aclose()

    asyncio.run(give_up())
    record = records_of(kube2)[0]
    assert record.get("deliveredAt") is None and record["attempts"] == 1
    assert url not in record["lastError"] and "[redacted]" in record["lastError"]


def test_default_targets_from_the_operators_file_apply_and_their_urls_are_secret(
    tmp_path: Any,
) -> None:
    path = tmp_path / "notifications.yaml"
    path.write_text(
        "- name: audit\n  url: http://audit.example/hook-SECRETPATH\n  events: [Failed]\n"
    )
    kube = FakeKube()
    rt = runtime_over(kube)
    rt.settings.notifications_file = str(path)
    defaults = rt.default_notifications()
    assert [(t.name, t.events) for t in defaults] == [("audit", ["Failed"])]
    assert "hook-SECRETPATH" not in rt.redactor.text("http://audit.example/hook-SECRETPATH")
    path.write_text("- name: audit\n  kind: pager\n")
    assert rt.default_notifications() == []  # refused whole, logged, never a crash
    asyncio.run(rt.aclose())
