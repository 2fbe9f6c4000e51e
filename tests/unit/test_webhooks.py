"""Webhook gates and informational webhooks: the engine's decisions on the answers it is
fed, the body a receiver gets, the calls the controller makes (or does not make again)."""

from __future__ import annotations

import asyncio
import itertools
from datetime import timedelta
from typing import Any, cast

import pytest

from lockgate.api import DeploymentStatus
from lockgate.api.deployment import StepStatus, WebhookCall, Weights
from lockgate.controller.deployments import settled
from lockgate.controller.runtime import Runtime, Settings
from lockgate.controller.webhooks import LOST, Calls, body, forget_calls
from lockgate.engine import (
    CallWebhook,
    EnsureInstances,
    Promote,
    ReleaseLock,
    WebhookAnswer,
    compile_plan,
)
from lockgate.kube import Kube
from tests.support.fakeworld import T0, Driver, FakeWorld, app_spec, dep_spec

CANARY = {"type": "Canary", "canary": {"steps": [50, 100], "stepSeconds": 5}}


def hook(name: str, kind: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "url": f"http://receiver:8080/{name}?token=t0k3n", **extra}


def driver(*hooks: dict[str, Any], strategy: dict[str, Any] | None = None, **world: Any) -> Driver:
    app = app_spec(4)
    spec = dep_spec(strategy=strategy or CANARY, progressDeadlineSeconds=60, webhooks=list(hooks))
    return Driver(app, spec, FakeWorld(units=app.units(), **world))


def run_for(d: Driver, seconds: int) -> None:
    for _ in range(seconds):
        d.step()
        d.world.now += timedelta(seconds=1)


def calls_of(d: Driver, name: str) -> list[CallWebhook]:
    return [c for _, c in d.world.hook_calls if c.name == name]


# --- preRollout ------------------------------------------------------------------------------


def test_a_pre_rollout_refusal_fails_before_anything_starts() -> None:
    d = driver(hook("smoke", "preRollout"), hook_status={"smoke": 503})
    status = d.run()
    assert status.phase == "Failed"
    assert status.message == (
        "refused before start: preRollout webhook smoke (http://receiver:8080/smoke): HTTP 503"
    )
    assert "t0k3n" not in str(status.model_dump())  # the query is never shown
    assert not [a for a in d.world.applied if isinstance(a, EnsureInstances)]
    assert ReleaseLock() in d.world.applied and d.world.lock_holder is None
    assert status.started_at is None and status.step is None


def test_no_answer_from_a_pre_rollout_webhook_is_a_refusal() -> None:
    d = driver(hook("smoke", "preRollout"), hook_status={"smoke": None})
    status = d.run()
    assert status.phase == "Failed"
    assert "preRollout webhook smoke" in (status.message or "")
    assert "no answer within 10s" in (status.message or "")


def test_pre_rollout_is_asked_once_before_the_first_instance_starts() -> None:
    d = driver(hook("smoke", "preRollout"))
    status = d.run()
    assert status.phase == "Succeeded", status.message
    first_start = next(i for i, a in enumerate(d.world.applied) if isinstance(a, EnsureInstances))
    asked = d.world.applied.index(CallWebhook("smoke", "smoke/-/1"))
    assert asked < first_start
    assert len(calls_of(d, "smoke")) == 1
    (call,) = status.webhooks
    assert (call.name, call.type, call.passed, call.answer) == (
        "smoke",
        "preRollout",
        True,
        "HTTP 200",
    )


# --- confirm gates ---------------------------------------------------------------------------


def test_a_confirm_promotion_that_says_no_keeps_the_rollout_waiting_and_asks_again() -> None:
    d = driver(hook("approve", "confirmPromotion"), hook_status={"approve": 403})
    run_for(d, 40)
    status = d.status
    assert status.phase == "Progressing"
    assert status.message == "waiting for confirmPromotion webhook approve: HTTP 403"
    assert [c.message for c in status.conditions if c.type == "Progressing"] == [status.message]
    assert not [a for a in d.world.applied if isinstance(a, Promote)]
    assert d.world.weights == (50, 50), "the split of the step before is held"
    asked = [at for at, c in d.world.hook_calls if c.name == "approve"]
    assert len(asked) >= 4, "asked again every few seconds"
    assert all(b - a >= timedelta(seconds=5) for a, b in itertools.pairwise(asked))
    d.world.hook_status["approve"] = 200
    assert d.run().phase == "Succeeded"
    assert d.world.weights == (100, 0) and d.world.stable.image == "app:2"


def test_a_confirm_gate_that_never_says_yes_fails_at_the_progress_deadline_naming_it() -> None:
    d = driver(hook("approve", "confirmPromotion"), hook_status={"approve": 403})
    status = d.run()
    assert status.phase == "RolledBack"
    assert "confirmPromotion webhook approve (http://receiver:8080/approve) did not say yes " in (
        status.message or ""
    )
    assert "progressDeadlineSeconds 60 (last answer: HTTP 403)" in (status.message or "")
    assert d.world.stable.image == "app:1" and d.world.weights == (100, 0)


def test_confirm_step_is_asked_before_each_canary_weight_after_the_first() -> None:
    strategy = {"type": "Canary", "canary": {"steps": [10, 30, 60, 100], "stepSeconds": 2}}
    d = driver(hook("step", "confirmStep"), hook("promo", "confirmPromotion"), strategy=strategy)
    assert d.run().phase == "Succeeded"
    plan = compile_plan(d.app, d.spec, has_stable=True)
    gated = {i: s.confirm for i, s in enumerate(plan.steps) if s.confirm}
    assert sorted(gated.values()) == ["confirmPromotion", "confirmStep", "confirmStep"]
    assert [c.call_id.split("/")[1] for c in calls_of(d, "step")] == [
        str(i) for i, kind in sorted(gated.items()) if kind == "confirmStep"
    ]
    assert len(calls_of(d, "promo")) == 1


def test_a_promote_action_passes_a_waiting_confirm_gate() -> None:
    d = driver(hook("approve", "confirmPromotion"), hook_status={"approve": 403})
    run_for(d, 20)
    assert d.status.message == "waiting for confirmPromotion webhook approve: HTTP 403"
    d.world.action = "promote"
    assert d.run().phase == "Succeeded"


def test_promote_full_skips_the_confirm_gates() -> None:
    strategy = {"type": "Canary", "canary": {"steps": [10, 30, 100], "stepSeconds": 2}}
    d = driver(
        hook("step", "confirmStep"),
        hook("approve", "confirmPromotion"),
        strategy=strategy,
        hook_status={"step": 403, "approve": 403},
    )
    d.run(until={"Progressing"})
    d.world.action = "promote-full"
    assert d.run().phase == "Succeeded"
    assert not d.world.hook_calls


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ({"type": "Recreate"}, {0: "confirmPromotion"}),
        ({"type": "BlueGreen", "blueGreen": {"previewSeconds": 9}}, {2: "confirmPromotion"}),
        (
            {"type": "Rolling", "rolling": {"batchSize": 1}},
            {3: "confirmStep", 6: "confirmStep", 9: "confirmPromotion"},
        ),
        (
            {"type": "Canary", "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, 100]}},
            {3: "confirmPromotion"},
        ),
    ],
)
def test_where_each_strategy_asks_its_confirm_webhooks(
    strategy: dict[str, Any], expected: dict[int, str]
) -> None:
    plan = compile_plan(app_spec(4), dep_spec(strategy=strategy), has_stable=True)
    assert {i: s.confirm for i, s in enumerate(plan.steps) if s.confirm} == expected


# --- informational ---------------------------------------------------------------------------


def test_post_rollout_is_called_once_after_succeeded() -> None:
    d = driver(hook("done", "postRollout"))
    status = d.run()
    assert status.phase == "Succeeded"
    run_for(d, 5)  # more rounds of the finished rollout call nothing again
    (call,) = calls_of(d, "done")
    assert [c.name for c in d.status.webhooks] == ["done"]
    assert d.status.webhooks[0].passed and not d.status.webhooks[0].pending
    assert call == CallWebhook("done", "done/-/1")


def test_a_failing_rollback_webhook_is_recorded_and_changes_nothing() -> None:
    d = driver(
        hook("told", "rollback"),
        hook("done", "postRollout"),
        hook_status={"told": 500},
        unready_images={"app:2"},
    )
    status = d.run()
    run_for(d, 3)
    assert status.phase == "RolledBack"
    assert len(calls_of(d, "told")) == 1 and not calls_of(d, "done")
    (call,) = d.status.webhooks
    assert (call.answer, call.passed, call.pending) == ("HTTP 500", False, False)
    failed = [e for dec in d.decisions for e in dec.events if e.reason == "WebhookFailed"]
    assert [e.message for e in failed] == [
        "rollback webhook told (http://receiver:8080/told): HTTP 500"
    ]


def test_a_recorded_informational_call_is_not_made_again_after_a_restart() -> None:
    """An operator that restarted has no task for the call status records as made: it
    records the answer as lost instead of calling again."""
    status = DeploymentStatus(
        phase="Succeeded",
        revision=1,
        webhooks=[WebhookCall(name="done", type="postRollout", at=T0)],
    )
    rt: Any = type("Rt", (), {"webhook_calls": {}})()
    spec = dep_spec(webhooks=[hook("done", "postRollout")])
    answers = Calls(rt, "ns", "dep", "uid-1", spec, None).answers(status)
    assert answers["done/-/1"].error == LOST
    assert rt.webhook_calls == {}, "nothing called"


def test_a_deployment_with_a_call_waiting_for_its_answer_is_not_settled() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "dep", "generation": 1},
        "status": {
            "phase": "Succeeded",
            "observedGeneration": 1,
            "webhooks": [{"name": "done", "type": "postRollout", "at": "x", "pending": True}],
        },
    }
    assert not settled(obj)
    obj["status"]["webhooks"][0]["pending"] = False
    assert settled(obj)


# --- the body --------------------------------------------------------------------------------


def test_the_body_says_where_the_rollout_is_and_what_it_last_measured() -> None:
    spec = dep_spec(webhooks=[hook("approve", "confirmPromotion")])
    app = app_spec(4)
    measured = dep_spec(strategy=CANARY, analysis={"intervalSeconds": 5, "minRequests": 20})
    d = Driver(app, measured, FakeWorld(units=app.units()))
    d.run()
    status = d.status.model_copy(
        update={
            "phase": "Progressing",
            "step": StepStatus(index=3, total=4, description="setWeight 100"),
            "weights": Weights(stable=50, canary=50),
        }
    )
    sent = body(spec.webhooks[0], namespace="prod", deployment="dep", spec=spec, status=status)
    assert sent["type"] == "confirmPromotion" and sent["name"] == "approve"
    assert (sent["namespace"], sent["application"], sent["deployment"]) == ("prod", "shop", "dep")
    assert (sent["image"], sent["previousImage"], sent["phase"]) == (
        "app:2",
        "app:1",
        "Progressing",
    )
    assert sent["step"] == {"index": 3, "total": 4, "description": "setWeight 100"}
    assert sent["weights"] == {"stable": 50, "canary": 50}
    last = d.status.analysis[-1]
    assert sent["analysis"]["verdict"] == last.verdict
    assert last.canary is not None
    assert sent["analysis"]["canary"]["requests"] == last.canary.requests


def test_lockgate_plan_shows_the_webhooks_and_the_steps_they_gate(tmp_path: Any) -> None:
    from lockgate.cli.plan import plan_command

    manifest = tmp_path / "dep.yaml"
    manifest.write_text(
        "apiVersion: lockgate.dev/v1alpha1\nkind: Deployment\nmetadata: {name: shop-v2}\n"
        "spec:\n  application: shop\n  image: shop:2\n"
        "  strategy: {type: Canary, canary: {steps: [10, 50, 100], stepSeconds: 30}}\n"
        "  webhooks:\n"
        "    - {name: smoke, type: preRollout, url: 'http://r:8080/smoke'}\n"
        "    - {name: approve, type: confirmPromotion, url: 'http://r:8080/ok?token=t0k3n'}\n"
    )
    out = plan_command([manifest])
    assert "webhook:     preRollout smoke -> http://r:8080/smoke (timeout 10s; " in out
    assert "webhook:     confirmPromotion approve -> http://r:8080/ok (timeout 10s; " in out
    assert "t0k3n" not in out
    (row,) = [line for line in out.splitlines() if "confirmPromotion webhook approve says" in line]
    assert row.startswith("7  start 4 canary instance(s)")


def test_calls_of_a_deleted_deployment_or_an_earlier_attempt_are_dropped() -> None:
    async def scenario() -> dict[str, bool]:
        rt = Runtime(cast(Kube, None), cast(Any, None), Settings())
        hung = asyncio.create_task(asyncio.sleep(3600, WebhookAnswer(None)))
        done = asyncio.create_task(asyncio.sleep(0, WebhookAnswer(200)))
        current = asyncio.create_task(asyncio.sleep(0, WebhookAnswer(200)))
        other = asyncio.create_task(asyncio.sleep(3600, WebhookAnswer(None)))
        rt.webhook_calls.update(
            {"u1/1.0/a": hung, "u1/1.0/b": done, "u1/2.0/c": current, "u2/1.0/a": other}
        )
        await asyncio.sleep(0.01)
        forget_calls(rt, "u1", before=(2, 0))  # a retry: done calls of 1.0 go, not hung ones
        assert set(rt.webhook_calls) == {"u1/1.0/a", "u1/2.0/c", "u2/1.0/a"}
        forget_calls(rt, "u1")  # deleted: every call of u1 goes, cancelled
        assert set(rt.webhook_calls) == {"u2/1.0/a"}
        await asyncio.sleep(0)
        other.cancel()
        return {"hung cancelled": hung.cancelled()}

    assert asyncio.run(scenario()) == {"hung cancelled": True}
