"""The controller's rounds (reconcile -> engine -> fleet -> status) against a fake Kube and a
fake fleet: what the integration suite checks through real components, in milliseconds."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any, cast

import kopf
import pytest

from lockgate.api import DeploymentSpec
from lockgate.controller import deployments, handlers
from lockgate.controller.fleets import FleetView
from lockgate.controller.runtime import Runtime, Settings
from lockgate.controller.wakeups import Wake
from lockgate.kube import Kube
from tests.support.fakeworld import FakeWorld, dep_spec
from tests.unit.controller_fakes import NS, Env, Operator, env_over_fakes
from tests.unit.fake_prometheus import FakePrometheus, Traffic, traffic

CANARY = {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 2}}
RECREATE = {"type": "Recreate"}


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    yield from env_over_fakes(monkeypatch, Env, replicas=4, ready_after=2)


def test_a_canary_goes_from_pending_to_succeeded(env: Env) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=CANARY))
    phases = env.op.run("dep")["dep"]
    assert phases == ["Pending", "Progressing", "Succeeded"]
    assert env.world.stable.image == "app:2"
    assert env.world.weights == (100, 0)
    assert not env.world.canary.started, "the old version is gone"
    weights = [c for c in env.fleet.calls if c.startswith("weights")]
    assert weights[:3] == ["weights 90/10", "weights 50/50", "weights 0/100"]
    assert "promote app:2" in env.fleet.calls
    assert "dep/1" in env.fleet.releases  # the fleet is made for the rollout's release
    app_status = env.kube.application("shop")["status"]
    assert app_status.get("activeDeployment") is None  # the lock is released
    assert app_status["stable"]["image"] == "app:2"
    assert app_status["history"][0]["result"] == "Succeeded"
    assert ("Normal", "Succeeded") in [(kind, reason) for kind, reason, _ in env.op.events]


def test_the_second_deployment_queues_behind_the_first(env: Env) -> None:
    env.kube.add_deployment("first", dep_spec("app:2", strategy=RECREATE))
    env.kube.add_deployment("second", dep_spec("app:3", strategy=RECREATE))
    env.op.round("second")  # the younger one looks first: the older one is ahead of it
    assert env.op.phase("second") == "Queued"
    assert env.kube.application("shop")["status"].get("activeDeployment") is None
    env.op.round("first")
    env.op.round("first")
    assert env.kube.application("shop")["status"]["activeDeployment"] == "first"
    phases = env.op.run("first", "second")
    assert phases["second"][:2] == ["Queued", "Progressing"]
    assert env.op.phase("first") == env.op.phase("second") == "Succeeded"
    assert env.world.stable.image == "app:3"
    history = env.kube.application("shop")["status"]["history"]
    assert [h["deployment"] for h in history] == ["second", "first"]


def test_a_finished_holder_does_not_hold_the_lock(env: Env) -> None:
    """A holder that finished without releasing (an operator killed in between) frees it."""
    env.kube.add_deployment("old", dep_spec("app:1"))
    env.kube.deployment("old")["status"] = {"phase": "Succeeded"}
    env.kube.application("shop")["status"]["activeDeployment"] = "old"
    env.kube.add_deployment("dep", dep_spec(strategy=RECREATE))
    env.op.run("dep")
    assert env.op.phase("dep") == "Succeeded"


def test_an_invalid_spec_fails_naming_the_field(env: Env) -> None:
    env.kube.put(
        "deployments",
        NS,
        {
            "metadata": {"name": "dep"},
            "spec": {"application": "shop", "image": "app:2", "progressDeadlineSeconds": "soon"},
        },
    )
    result = env.op.round("dep")
    status = env.kube.deployment("dep")["status"]
    assert status["phase"] == "Failed"
    assert "progressDeadlineSeconds" in status["message"]
    assert result.finished
    assert env.fleet.calls == []


def test_a_spec_the_engine_refuses_fails_naming_the_field(env: Env) -> None:
    strategy = {"type": "Canary", "canary": {"steps": [100], "canaryHosts": 1}}
    env.kube.add_deployment("dep", dep_spec(strategy=strategy))
    env.op.run("dep")
    assert env.op.phase("dep") == "Failed"
    assert "spec.strategy.canary.canaryHosts" in env.kube.deployment("dep")["status"]["message"]


def test_an_unusable_fleet_refuses_the_rollout_and_is_not_acted_on(env: Env) -> None:
    env.fleet.unusable = "spec.docker.hosts[0].sshKeySecretRef: Secret 'key' not found"
    env.kube.add_deployment("dep", dep_spec(strategy=RECREATE))
    env.op.run("dep")
    status = env.kube.deployment("dep")["status"]
    assert status["phase"] == "Failed"
    assert "Secret 'key' not found" in status["message"]
    assert not [c for c in env.fleet.calls if c.startswith(("ensure", "weights", "promote"))]


def test_the_fleet_polls_while_the_rollout_moves(env: Env) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=CANARY))
    env.op.round("dep")
    moving = env.op.round("dep")
    assert env.op.phase("dep") == "Progressing"
    assert moving.requeue_after is None or moving.requeue_after > 0.25
    env.fleet.poll_while_moving = 0.25
    assert env.op.round("dep").requeue_after == 0.25


def test_a_timer_counts_from_the_decision_not_from_the_end_of_the_round(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pause's end is due 1 s after the engine decided; a round that spent 0.3 s observing
    (and writing) waits 0.3 s less, not 1 s from its end (at 500 in flight rounds took 1-3 s,
    and every pause ended that much late)."""
    env.kube.add_deployment("dep", dep_spec(strategy=CANARY))
    while (env.kube.deployment("dep").get("status") or {}).get("step", {}).get(
        "description"
    ) != "pause 2s":
        env.op.round("dep")
    observe = env.fleet.observe

    async def slow_observe(routed: Any = None) -> FleetView:
        await asyncio.sleep(0.3)
        return await observe(routed)

    monkeypatch.setattr(env.fleet, "observe", slow_observe)
    waiting = env.op.round("dep")  # 1 s into the 2 s pause
    assert waiting.requeue_after is not None
    assert 0 < waiting.requeue_after <= 0.7, waiting.requeue_after


def test_deleting_the_active_deployment_restores_stable_through_the_fleet(env: Env) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=CANARY))
    for _ in range(8):
        env.op.round("dep")
    assert env.world.weights != (100, 0) and env.world.canary.started
    body = env.kube.deployment("dep")
    asyncio.run(deployments.deployment_removed(env.op.rt, body))
    assert env.world.weights == (100, 0)
    assert not env.world.canary.started
    assert env.fleet.releases[-1] == "dep/1"
    assert env.kube.application("shop")["status"].get("activeDeployment") is None


def test_deleting_another_deployment_leaves_the_rollout_alone(env: Env) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=CANARY))
    for _ in range(8):
        env.op.round("dep")
    env.kube.add_deployment("other", dep_spec("app:3"))
    asyncio.run(deployments.deployment_removed(env.op.rt, env.kube.deployment("other")))
    assert env.world.weights != (100, 0)
    assert env.kube.application("shop")["status"]["activeDeployment"] == "dep"


def test_the_clock_is_read_once() -> None:
    """At a second boundary two reads would pair one second's value with the next one's
    microseconds."""
    from datetime import UTC, datetime

    reads = iter(
        [
            datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC),
            datetime(2026, 1, 1, 0, 0, 1, 1_000, tzinfo=UTC),
        ]
    )

    class Clock(datetime):
        @classmethod
        def now(cls, tz: object = None) -> Clock:  # type: ignore[override]
            return next(reads)  # type: ignore[return-value]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(deployments, "datetime", Clock)
        assert deployments.now() == datetime(2026, 1, 1, 0, 0, 0, 999_000, tzinfo=UTC)


def test_a_paused_rollout_stops_writing_its_status(env: Env) -> None:
    """A rollout that waits (here for a manual promote) rewrites nothing: each write is a
    watch event that wakes it for another round, so a needless write makes a busy loop (and
    starved kopf of the quiet it needs to process a deletion)."""
    paused = {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, 100]}}
    env.kube.add_deployment("dep", dep_spec(strategy=paused))
    for _ in range(30):
        env.op.round("dep")
        if env.op.phase("dep") == "Paused":
            break
    assert env.op.phase("dep") == "Paused"
    env.op.round("dep")  # the round that notices nothing moves
    assert [env.op.round("dep").progressed for _ in range(3)] == [False, False, False]


def test_a_failed_rollout_and_one_queued_behind_it_read_nothing_until_asked(env: Env) -> None:
    """A failed rollout without automatic rollback keeps the lock and its new instances; no
    round reads the fleet for it, nor for a Deployment queued behind it, until a retry."""
    env.world.unready_images.add("app:2")
    manual = {"automatic": False}
    env.kube.add_deployment(
        "dep", dep_spec(strategy=CANARY, rollback=manual, progressDeadlineSeconds=10)
    )
    env.op.run("dep")
    assert env.op.phase("dep") == "Failed"
    assert env.kube.application("shop")["status"]["activeDeployment"] == "dep"
    env.kube.add_deployment("next", dep_spec("app:3", strategy=RECREATE))
    reads = dict(env.fleet.reads)
    rounds = [(env.op.round("dep"), env.op.round("next")) for _ in range(50)]
    assert (env.op.phase("dep"), env.op.phase("next")) == ("Failed", "Queued")
    assert dict(env.fleet.reads) == reads
    assert all(failed.finished for failed, _ in rounds), "its driver sleeps"

    env.world.unready_images.clear()
    env.kube.deployment("dep")["metadata"]["annotations"] = {"lockgate.dev/action": "retry"}
    for _ in range(3):  # the action is recorded, its annotation removed, then it applies
        env.op.round("dep")
    assert env.op.phase("dep") != "Failed"
    env.op.run("dep")
    assert env.op.phase("dep") == "Succeeded"
    assert env.fleet.reads["observe"] > reads["observe"]
    env.op.run("next")
    assert env.op.phase("next") == "Succeeded", "the queued one starts once the lock is free"


def test_a_finished_rollout_with_a_leftover_superseded_annotation_reads_nothing(env: Env) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=CANARY))
    for _ in range(8):
        env.op.round("dep")
    env.kube.deployment("dep")["metadata"]["annotations"] = {"lockgate.dev/superseded-by": "b"}
    env.op.run("dep")
    assert env.op.phase("dep") == "Aborted"
    reads = dict(env.fleet.reads)
    for _ in range(20):
        env.op.round("dep")
    assert dict(env.fleet.reads) == reads


def test_a_rollout_paused_before_it_starts_reads_nothing(env: Env) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=RECREATE, paused=True))
    for _ in range(10):
        env.op.round("dep")
    assert env.kube.deployment("dep")["status"]["message"] == (
        "paused by spec.paused before it started"
    )
    assert env.fleet.reads["observe"] == 0
    assert "preflight" not in env.fleet.calls


# --- analysis through Prometheus ------------------------------------------------------------

PROM = "http://prom:9090"
ERRORS = 'sum(rate(traefik_service_requests_total{service=~"$canary",code=~"5.."}[$window]))'
ERRORS_ASKED = 'sum(rate(traefik_service_requests_total{service=~"fake-canary.*",code=~"5.."}[2s]))'


def traefik_as_scraped(world: FakeWorld) -> Callable[[], dict[str, Traffic]]:
    """What Prometheus holds of Traefik's counters over the window: the world's traffic."""

    def now() -> dict[str, Traffic]:
        sample = world.metrics()
        out: dict[str, Traffic] = {}
        for role, figures in (("stable", sample.stable), ("canary", sample.canary)):
            if figures is not None and figures.requests:
                out[f"fake-{role}@file"] = traffic(
                    figures.requests - figures.errors, figures.errors, figures.p95
                )
        return out

    return now


@pytest.fixture
def prom_env(env: Env) -> Iterator[tuple[Env, FakePrometheus]]:
    """The same world, with an Application whose analysis reads Prometheus."""
    prom = FakePrometheus(traefik_as_scraped(env.world))
    spec = {"kubernetes": {"replicas": 4}, "metrics": {"prometheus": {"url": PROM}}}
    env.kube.add_application("shop", spec, stable={"image": "app:1"})
    rt = Runtime(cast(Kube, env.kube), prom.client(), Settings())
    yield Env(env.kube, env.world, env.fleet, Operator(rt, env.kube, env.world)), prom
    asyncio.run(rt.aclose())


def prom_deployment(maximum: float) -> DeploymentSpec:
    query = {"name": "canary-5xx", "promql": ERRORS, "max": maximum}
    analysis = {"intervalSeconds": 2, "minRequests": 20, "queries": [query]}
    return dep_spec(strategy=CANARY, analysis=analysis, progressDeadlineSeconds=30)


def test_analysis_reads_prometheus_with_the_deployments_queries(
    prom_env: tuple[Env, FakePrometheus],
) -> None:
    env, prom = prom_env
    prom.answers[ERRORS_ASKED] = 0.0
    env.kube.add_deployment("dep", prom_deployment(0.5))
    assert env.op.run("dep")["dep"][-1] == "Succeeded"
    runs = env.kube.deployment("dep")["status"]["analysis"]
    assert runs and all(r["source"] == f"prometheus {PROM}" for r in runs)
    assert {r["verdict"] for r in runs} == {"Passed"}
    assert runs[-1]["queries"] == {"canary-5xx": 0.0}
    assert ERRORS_ASKED in prom.asked


def test_a_query_over_its_bound_rolls_back_naming_it(prom_env: tuple[Env, FakePrometheus]) -> None:
    env, prom = prom_env
    prom.answers[ERRORS_ASKED] = 0.9
    env.kube.add_deployment("dep", prom_deployment(0.5))
    assert env.op.run("dep")["dep"][-1] == "RolledBack"
    message = env.kube.deployment("dep")["status"]["message"]
    assert f"query canary-5xx = 0.9 > max 0.5 (from prometheus {PROM})" in message
    assert env.world.stable.image == "app:1"


def test_prometheus_stopped_mid_analysis_is_inconclusive_then_fails_at_the_deadline(
    prom_env: tuple[Env, FakePrometheus],
) -> None:
    env, prom = prom_env
    prom.answers[ERRORS_ASKED] = 0.0
    env.kube.add_deployment("dep", prom_deployment(0.5))
    for _ in range(300):
        env.op.round("dep")
        if any(r["verdict"] == "Passed" for r in env.kube.deployment("dep")["status"]["analysis"]):
            break
    seen = len(env.kube.deployment("dep")["status"]["analysis"])
    prom.down = True
    assert env.op.run("dep")["dep"][-1] == "RolledBack"
    status = env.kube.deployment("dep")["status"]
    after = status["analysis"][seen:]
    assert after and {r["verdict"] for r in after} == {"Inconclusive"}
    assert "no passed analysis within progressDeadlineSeconds 30" in status["message"]
    assert f"Prometheus at {PROM} unreachable" in status["message"]


def test_a_write_that_only_records_an_analysis_needs_no_round_of_its_own(
    prom_env: tuple[Env, FakePrometheus],
) -> None:
    """Paused with analysis running, each run is written, and that write's watch event used
    to start a round that found nothing to do: two rounds per analysis, and at 500 in flight
    those rounds queued every other one ~20 s. The echo of such a write wakes nobody; any
    other change of the Deployment still does."""
    env, prom = prom_env
    prom.answers[ERRORS_ASKED] = 0.0
    query = {"name": "canary-5xx", "promql": ERRORS, "max": 0.5}
    forever = {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, 100]}}
    analysis = {"intervalSeconds": 2, "minRequests": 20, "queries": [query]}
    env.kube.add_deployment("dep", dep_spec(strategy=forever, analysis=analysis))

    def runs() -> int:
        return len(env.kube.deployment("dep").get("status", {}).get("analysis") or [])

    for _ in range(40):
        before = runs()
        result = env.op.round("dep")
        if env.op.phase("dep") == "Paused" and runs() > before and not result.progressed:
            break
    else:
        raise AssertionError(f"no quiet analysis round: {env.kube.deployment('dep')['status']}")
    body = env.kube.deployment("dep")
    written = body["metadata"]["resourceVersion"]
    assert env.op.rt.quiet_writes == {(NS, "dep"): written}
    wait = handlers.round_delay(result)
    assert isinstance(wait, float) and 0 < wait <= 2, "it sleeps until the next analysis"

    # A Deployment queued behind it on the same Application still hears of every write.
    queued, own = Wake(), Wake()
    env.op.rt.wakeups.register("deployments", NS, "next", queued)
    siblings = {
        (NS, "shop"): [
            deployments.DeploymentSummary("dep", "Paused", ""),
            deployments.DeploymentSummary("next", "Queued", ""),
        ]
    }

    def event(obj: dict[str, Any]) -> bool:
        memo = kopf.Memo(runtime=env.op.rt, wake=own)  # the driver's, registered as it does
        env.op.rt.wakeups.register("deployments", NS, "dep", own)
        queued.clear()
        own.clear()
        asyncio.run(
            handlers.deployment_event(
                memo=memo,
                namespace=NS,
                name="dep",
                body=obj,
                spec=obj["spec"],
                **{handlers.DEPLOYMENT_INDEX: siblings},
            )
        )
        assert queued.is_set(), "the Deployment queued behind it is woken"
        return handlers._wake(memo).is_set()

    assert not event(body), "the echo of its own quiet write"
    other = {**body, "metadata": {**body["metadata"], "resourceVersion": written + "1"}}
    assert event(other), "any other change"
    assert event(body), "an echo is ignored once"


def test_a_write_that_changes_the_steps_record_is_read_back(
    prom_env: tuple[Env, FakePrometheus],
) -> None:
    """The round that sees a gate's split live records when (`weightsLiveAt`); the first
    analysis is timed from that record, so only the round reading it back knows when: a
    rollout whose echo of that write woke nobody slept its 10 min safety net at every
    analysis gate (seen at 20 in flight: 1 step in 30 s)."""
    env, prom = prom_env
    prom.answers[ERRORS_ASKED] = 0.0
    env.kube.add_deployment("dep", prom_deployment(0.5))

    def live_at() -> str | None:
        step = env.kube.deployment("dep").get("status", {}).get("step") or {}
        return step.get("weightsLiveAt")

    for _ in range(40):
        before = live_at()
        result = env.op.round("dep")
        if before is None and live_at() is not None:
            break
    else:
        raise AssertionError("no split went live")
    assert result.progressed, "read back by the round its event starts"
    assert env.op.rt.quiet_writes == {}
