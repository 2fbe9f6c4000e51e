"""A rollout or an Application that waits costs nothing: its driver schedules no round until
its timer is due or an event wakes it (its own object, a sibling, its Application, one of
its Pods). Polling is kept for what no watch reports (Traefik loading servers or weights).
Against the fake Kube and fake fleet, through the handlers as kopf calls them."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import kopf
import pytest
from prometheus_client import REGISTRY

from lockgate.cli.main import build_parser
from lockgate.controller import applications, deployments, handlers, runtime
from lockgate.controller.wakeups import PollPace, Wake
from lockgate.names import LABEL_APP
from lockgate.traffic.traefik_observer import TraefikWatch
from tests.support.fakeworld import Driver, FakeWorld, app_spec, dep_spec
from tests.unit.controller_fakes import NS, FakeFleet, FakeKube, env_over_fakes, runtime_over
from tests.unit.controller_fakes import Env as FakesEnv

log = logging.getLogger("test")
FOREVER = {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, 100]}}
TIMED = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"seconds": 30}}, 100]},
}
MINUTE = 60.0


class Stopped:
    """kopf's DaemonStopped as a daemon uses it."""

    def __init__(self) -> None:
        self.flag = asyncio.Event()
        self.reason: kopf.DaemonStoppingReason | None = None

    def set(self, reason: kopf.DaemonStoppingReason | None = None) -> None:
        self.reason = reason
        self.flag.set()

    def __bool__(self) -> bool:
        return self.flag.is_set()

    async def wait(self) -> None:
        await self.flag.wait()


class Env(FakesEnv):
    """The fakes, and the rounds of one Deployment `dep` that pauses."""

    def pause(self, strategy: dict[str, Any]) -> None:
        """A Deployment driven until it waits in its pause step."""
        self.kube.add_deployment("dep", dep_spec(strategy=strategy))
        for _ in range(30):
            self.op.round("dep")
            step = (self.kube.deployment("dep").get("status") or {}).get("step") or {}
            if "pause" in str(step.get("description")):
                break
        self.op.round("dep")  # the round that notices nothing moves
        assert "pause" in self.kube.deployment("dep")["status"]["step"]["description"]

    def next_round_in(self) -> float | handlers.Poll:
        """What the driver waits after one more round unless woken (a Poll: it polls)."""
        return asyncio.run(handlers._drive_once(self.op.rt, NS, "dep", self.kube.index(), log))


async def drive(env: Env, stop: Stopped, memo: kopf.Memo) -> None:
    """Deployment "dep"'s driver as kopf runs it (its Application in the default shard)."""
    await handlers.deployment_driver(
        stopped=stop,
        name="dep",
        namespace=NS,
        memo=memo,
        logger=log,
        deployments_by_application=env.kube.index(),
        application_shards={},
        spec={"application": "shop"},
        labels={},
    )


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    yield from env_over_fakes(monkeypatch, Env, replicas=2, ready_after=1)


def test_a_rollout_paused_until_promoted_schedules_no_round(env: Env) -> None:
    """It used to look again every 2 s for ever (~3% of a core per paused rollout)."""
    env.pause(FOREVER)
    assert env.op.phase("dep") == "Paused"
    for _ in range(3):
        wait = env.next_round_in()
        assert isinstance(wait, float) and wait >= 10 * MINUTE, "only the safety net, no poll"
    assert env.op.phase("dep") == "Paused"


def test_a_timed_pause_sleeps_until_it_ends(env: Env) -> None:
    env.pause(TIMED)
    started = env.kube.deployment("dep")["status"]["step"]["startedAt"]
    wait = env.next_round_in()
    elapsed = (
        env.world.now
        - deployments.DeploymentStatus.model_validate(
            env.kube.deployment("dep")["status"]
        ).step.started_at
    ).total_seconds()  # type: ignore[union-attr]
    assert started
    # Less the round's own time since the engine decided (a fraction of a millisecond here).
    assert wait <= 30 - elapsed
    assert wait == pytest.approx(30 - elapsed, abs=1), "it sleeps until the pause ends"


def test_a_round_that_wrote_the_status_waits_for_its_watch_event(env: Env) -> None:
    """The write's own event wakes the driver for the next round (the event handler test
    above): a round at once found nothing to do, so each write cost three rounds."""
    env.kube.add_deployment("dep", dep_spec(strategy=TIMED))
    result = env.op.round("dep")
    assert result.progressed and env.kube.deployment("dep").get("status")
    wait = handlers.round_delay(result)
    assert isinstance(wait, float) and wait > 0, "no round before the write's event"


def test_a_rollout_polls_while_traefik_has_not_confirmed(env: Env) -> None:
    """Traefik loads a Ready Pod and a new split a moment later and no watch tells: only
    then does a waiting rollout keep looking (backing off)."""
    env.pause(FOREVER)
    env.fleet.settling = True
    assert env.next_round_in() == handlers.Poll(), "it polls, with no timer of its own"


def test_a_pod_event_wakes_the_rollouts_of_its_application(env: Env) -> None:
    """The driver's loop as kopf runs it: one round, asleep until a Pod of its Application
    changes, then exactly one more round."""
    env.pause(FOREVER)
    rt = env.op.rt
    memo = kopf.Memo(runtime=rt)
    rounds: list[float | handlers.Poll] = []
    idle = asyncio.Event
    original = handlers._drive_once

    def woken(by: str) -> float:
        return REGISTRY.get_sample_value("lockgate_driver_wakeups_total", {"by": by}) or 0.0

    pod_events_before = woken("pod")

    async def scenario() -> None:
        slept = idle()

        async def counted(*args: Any, **kwargs: Any) -> float | handlers.Poll:
            delay = await original(*args, **kwargs)
            rounds.append(delay)
            slept.set()
            return delay

        stop = Stopped()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(handlers, "_drive_once", counted)
            driver = asyncio.create_task(drive(env, stop, memo))
            await slept.wait()
            slept.clear()
            for _ in range(100):  # the loop gets every chance to run again: it does not
                await asyncio.sleep(0)
            assert len(rounds) == 1
            other = kopf.Memo(runtime=rt)  # the Pod's own memo
            await handlers.pod_event(
                memo=other,
                namespace=NS,
                labels={LABEL_APP: "shop"},
                deployments_by_application=env.kube.index(),
            )
            await slept.wait()
            assert len(rounds) == 2
            assert woken("pod") == pod_events_before + 1, "the metric names what woke it"
            stop.set()
            handlers._wake(memo).set()
            await driver
        assert len(rt.wakeups) == 0, "the driver unregisters when it stops"

    asyncio.run(scenario())
    assert all(r is not None and r >= 10 * MINUTE for r in rounds)


def test_a_released_lock_wakes_the_deployment_queued_behind_it(env: Env) -> None:
    rt = env.op.rt
    queued = Wake()
    rt.wakeups.register("deployments", NS, "next", queued)
    env.kube.add_deployment("first", dep_spec(strategy=FOREVER))
    env.kube.add_deployment("next", dep_spec("app:3", strategy=FOREVER))
    asyncio.run(
        handlers.deployment_event(
            memo=kopf.Memo(runtime=rt),
            namespace=NS,
            spec={"application": "shop"},
            deployments_by_application=env.kube.index(),
        )
    )
    assert queued.is_set()


@pytest.mark.parametrize("settling", [False, True])
def test_an_applications_status_is_recounted_on_events_not_every_few_seconds(
    monkeypatch: pytest.MonkeyPatch, settling: bool
) -> None:
    """It used to be recounted every 5 s for each Application (1,000: 200 recounts/s). Now
    its Pods' events wake it, a slow timer is the safety net, and it looks again within a
    second or two only while Traefik has yet to load a Ready Pod (no watch tells)."""
    kube = FakeKube()
    body = kube.add_application("shop", {"kubernetes": {"replicas": 2}})
    world = FakeWorld(units=("replica-1", "replica-2"))
    fleet = FakeFleet(kube, world)
    census = fleet.census

    async def lagging(rolling_out: bool) -> Any:
        """Some Pod is Ready, but Traefik has not loaded it yet."""
        return dataclasses.replace(await census(rolling_out), settling=True)

    if settling:
        monkeypatch.setattr(fleet, "census", lagging)
    monkeypatch.setattr(applications, "fleet_for", fleet.made_for)
    memo = kopf.Memo(runtime=runtime_over(kube))
    patch = kopf.Patch()
    delay = asyncio.run(handlers.application_tick(body=kopf.Body(body), patch=patch, memo=memo))
    assert patch.status["phase"] == "Healthy"
    if settling:
        assert delay is not None and delay <= 2
    else:
        assert delay is not None and delay >= 5 * MINUTE


def pod(name: str, slot: str, release_hash: str, *, ready: bool, ip: str) -> dict[str, Any]:
    """A Pod of Application `shop` as the API (and so the watch) has it."""
    return {
        "metadata": {
            "name": name,
            "namespace": NS,
            "labels": {
                LABEL_APP: "shop",
                "lockgate.dev/slot": slot,
                "lockgate.dev/release-hash": release_hash,
            },
        },
        "status": {
            "phase": "Running",
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_a_round_reads_pods_and_slots_from_the_watches_not_the_api() -> None:
    """The indexes the watches keep answer what a round used to ask the API for (a list of
    each slot's Pods, a read of each slot's Deployment): the same instances, ready or not,
    and whether Traefik has yet to load a Ready one."""
    from lockgate.controller.wakeups import pod_entry, slot_entry
    from lockgate.targets.kubernetes import KubernetesTarget, release_hash

    kube = FakeKube()
    release = "dep/1"
    slot = {
        "metadata": {
            "name": "shop-a",
            "labels": {LABEL_APP: "shop", "lockgate.dev/slot": "a"},
        },
        "spec": {
            "replicas": 2,
            "template": {
                "metadata": {"annotations": {"lockgate.dev/release": release}},
                "spec": {"containers": [{"name": "app", "image": "app:1"}]},
            },
        },
    }
    kube.put("deployments.apps", NS, slot)
    pods = [
        pod("shop-a-1", "a", release_hash(release), ready=True, ip="10.246.0.1"),
        pod("shop-a-2", "a", release_hash(release), ready=True, ip="10.246.0.2"),
    ]
    for p in pods:
        kube.put("pods", NS, p)
    pod_index: dict[Any, list[Any]] = {}
    for p in pods:
        for key, info in pod_entry(p).items():
            pod_index.setdefault(key, []).append(info)
    slot_index = {
        key: [info]
        for key, info in slot_entry(kube.store[("deployments.apps", NS, "shop-a")]).items()
    }
    asked: list[str] = []

    def refused(what: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            asked.append(what)
            raise AssertionError(f"{what} asked of the API")

        return call

    async def pods_of(namespace: str, app: str, name: str) -> list[Any]:
        return list(pod_index.get((namespace, app, name), ()))

    async def slot_of(namespace: str, app: str, name: str) -> Any:
        return next(iter(slot_index.get((namespace, app, name), ())), None)

    served = {"stable": frozenset({"10.246.0.1"}), "canary": frozenset()}
    units = ("replica-1", "replica-2")
    by_api = KubernetesTarget(kube)  # type: ignore[arg-type]
    expected = asyncio.run(by_api.observe(NS, "shop", units, served))
    kube.core.list_namespaced_pod = refused("a Pod list")  # type: ignore[method-assign]
    kube.core.read_namespaced_deployment = refused("a slot")  # type: ignore[method-assign]
    by_watch = KubernetesTarget(kube, pods_of, slot_of)  # type: ignore[arg-type]
    seen = asyncio.run(by_watch.observe(NS, "shop", units, served))
    assert seen == expected
    assert seen[0].release == release and seen[0].image == "app:1"
    assert seen[0].units == units and seen[0].ready == ("replica-2",)
    assert by_watch.lagging and by_api.lagging, "a Ready Pod Traefik has not loaded yet"
    assert asked == []


def test_a_deleted_application_closes_its_host_connections() -> None:
    closed: list[str] = []

    class HostConnections:
        async def aclose(self) -> None:
            closed.append("hosts")

    rt = runtime_over(FakeKube())
    rt.fleets[(NS, "shop")] = HostConnections()  # type: ignore[assignment]
    rt.fleets[(NS, "other")] = HostConnections()  # type: ignore[assignment]
    asyncio.run(
        handlers.application_event(
            memo=kopf.Memo(runtime=rt), namespace=NS, name="shop", type="DELETED"
        )
    )
    assert closed == ["hosts"]
    assert list(rt.fleets) == [(NS, "other")]


def test_a_finished_deployment_is_not_woken_by_its_applications_changes(env: Env) -> None:
    """A Pod or a sibling changing wakes the rollouts that may act, not the finished ones
    (each would read itself again for nothing)."""
    rt = env.op.rt
    woken = {name: Wake() for name in ("old", "dep")}
    for name, event in woken.items():
        rt.wakeups.register("deployments", NS, name, event)
    env.kube.add_deployment("old", dep_spec("app:1", strategy=FOREVER))
    env.kube.deployment("old")["status"] = {"phase": "Succeeded"}
    env.kube.add_deployment("dep", dep_spec(strategy=FOREVER))
    asyncio.run(
        handlers.pod_event(
            memo=kopf.Memo(runtime=rt),
            namespace=NS,
            labels={LABEL_APP: "shop"},
            deployments_by_application=env.kube.index(),
        )
    )
    assert woken["dep"].is_set()
    assert not woken["old"].is_set()


def test_an_applications_status_daemon_ends_as_soon_as_it_is_stopped(env: Env) -> None:
    """Stopped (its Application moved to another shard, or is deleted), it ended only when
    its timer was due, so kopf cancelled it after its cancellation timeout ("Daemon
    'application_status' is cancelled. Will escalate." in the sharding test's log)."""

    async def scenario() -> bool:
        stop = Stopped()
        daemon = asyncio.create_task(
            handlers.application_status(
                stopped=stop,
                name="shop",
                namespace=NS,
                body=kopf.Body(env.kube.application("shop")),
                memo=kopf.Memo(runtime=env.op.rt),
                logger=log,
            )
        )
        for _ in range(10):
            await asyncio.sleep(0)
        stop.set()
        for _ in range(100):  # every chance to end, and no time passes
            await asyncio.sleep(0)
        done = daemon.done()
        daemon.cancel()
        return done

    assert asyncio.run(scenario())


@pytest.mark.parametrize(
    ("reason", "cancelled"),
    [
        (kopf.DaemonStoppingReason.RESOURCE_DELETED, True),
        (kopf.DaemonStoppingReason.FILTERS_MISMATCH, False),
        (kopf.DaemonStoppingReason.OPERATOR_EXITING, False),
    ],
)
def test_a_deleted_deployments_driver_ends_mid_round(
    env: Env, reason: kopf.DaemonStoppingReason, cancelled: bool
) -> None:
    """Deleted mid-round, the driver ends at once: kopf, finding it busy, looked again only
    after its grace for finishing a round (30 s), and a namespace being deleted stayed held
    by the Deployment's finalizer. Told to stop for any other reason (another shard serves
    it now, the operator exits), it finishes the round it is in."""
    env.kube.add_deployment("dep", dep_spec(strategy=FOREVER))

    async def scenario() -> tuple[bool, bool]:
        in_round, release = asyncio.Event(), asyncio.Event()

        async def slow_round(*args: Any, **kwargs: Any) -> handlers.Poll:
            in_round.set()
            await release.wait()
            return handlers.Poll()

        stop = Stopped()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(handlers, "_drive_once", slow_round)
            driver = asyncio.create_task(drive(env, stop, kopf.Memo(runtime=env.op.rt)))
            await in_round.wait()
            stop.set(reason)
            for _ in range(10):  # kopf's "instant exit": a few zero-time cycles
                await asyncio.sleep(0)
            ended_mid_round = driver.done()
            release.set()
            await driver
            return ended_mid_round, driver.cancelled()

    ended_mid_round, driver_cancelled = asyncio.run(scenario())
    assert ended_mid_round == cancelled
    assert not driver_cancelled, "it returns: kopf sees a daemon that ended, not a failure"


def test_polls_of_many_waiters_share_one_budget() -> None:
    """Alone, a waiter polls on its own back-off; with hundreds waiting on Traefik at once,
    each polls less often, so that all of them together stay within the budget (they took
    the whole core and starved the handlers creating what they waited for)."""
    pace = PollPace(per_second=20)
    alone = pace.delay(("deployments", NS, "dep"), 0.1)
    for i in range(99):
        pace.delay(("applications", NS, f"app{i}"), 1.0)
    crowded = pace.delay(("deployments", NS, "dep"), 0.1)
    for i in range(99):
        pace.done(("applications", NS, f"app{i}"))
    assert (alone, crowded) == (0.1, pytest.approx(100 / 20))
    assert pace.delay(("deployments", NS, "dep"), 0.1) == 0.1


async def until(predicate: Callable[[], bool]) -> None:
    """Lets the driver run until `predicate` holds, for more loop cycles than its back-off
    (at most 2 s) needs."""
    for _ in range(1000):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the driver never got there")


def test_a_crowd_of_pollers_never_delays_a_rollouts_own_timer(env: Env) -> None:
    """A timed pause that also waits on Traefik polls, but ends on time however many poll."""
    env.pause(TIMED)
    env.fleet.settling = True
    poll = env.next_round_in()
    assert isinstance(poll, handlers.Poll) and poll.timer is not None
    assert 0 < poll.timer <= 30, "the pause's end"
    rt = env.op.rt
    for i in range(1000):
        rt.polls.delay(("applications", NS, f"app{i}"), 1.0)
    key = ("deployments", NS, "dep")
    assert handlers.paced_poll(rt, key, 0.1, poll) == poll.timer
    assert handlers.paced_poll(rt, key, 0.1, handlers.Poll()) == pytest.approx(1001 / 20)


def test_a_driver_counts_among_the_pollers_only_while_it_polls(env: Env) -> None:
    env.pause(FOREVER)
    rt = env.op.rt

    async def polling_driver() -> tuple[asyncio.Task[None], Stopped]:
        stop = Stopped()
        env.fleet.settling = True
        driver = asyncio.create_task(drive(env, stop, kopf.Memo(runtime=rt)))
        await until(lambda: len(rt.polls) > 0)
        return driver, stop

    async def scenario() -> tuple[int, int]:
        driver, stop = await polling_driver()
        env.fleet.settling = False  # its next poll finds the world settled
        await until(lambda: len(rt.polls) == 0)
        stop.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)
        await driver
        driver, stop = await polling_driver()
        stop.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)  # stopped while it polls
        await driver
        return len(rt.polls), driver.done()

    assert asyncio.run(scenario()) == (0, True)


@pytest.mark.parametrize("api_threads", [None, 5])
def test_rounds_beyond_what_the_api_threads_serve_wait_their_turn_holding_nothing(
    env: Env, api_threads: int | None
) -> None:
    """Hundreds of rollouts woken at once: at most as many rounds as API threads (64, or
    `--api-threads`) are in progress, the others wait before reading their Deployment (each
    round in progress holds it and its Application, decoded, and their models; with the
    operator saturated, rounds can queue for an API thread, each holding all of that). Every
    driver still gets its round."""
    rt = env.op.rt
    if api_threads is not None:
        rt = runtime.Runtime(rt.kube, rt.http, runtime.Settings(api_threads=api_threads))
    turns = api_threads or runtime.ROUNDS_AT_ONCE
    drivers = 3 * turns

    async def scenario() -> tuple[int, int]:
        in_progress: set[str] = set()
        most = 0
        done: list[str] = []
        release = asyncio.Event()

        async def round_(rt: Any, namespace: str, name: str, *args: Any) -> float:
            nonlocal most
            in_progress.add(name)
            most = max(most, len(in_progress))
            await release.wait()
            in_progress.discard(name)
            done.append(name)
            return handlers.SAFETY_NET

        stops = [Stopped() for _ in range(drivers)]
        wakes = [Wake() for _ in range(drivers)]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(handlers, "_drive_once", round_)
            tasks = [
                asyncio.create_task(handlers._drive(rt, stop, NS, f"dep{i}", {}, log, wake))
                for i, (stop, wake) in enumerate(zip(stops, wakes, strict=True))
            ]
            await until(lambda: len(in_progress) >= turns)
            for _ in range(100):
                await asyncio.sleep(0)  # the others had every chance to start theirs
            release.set()
            await until(lambda: len(done) == drivers)
            for stop, wake in zip(stops, wakes, strict=True):
                stop.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)
                wake.set()  # as the driver's relay does
            await asyncio.gather(*tasks)
        return most, len(set(done))

    assert asyncio.run(scenario()) == (turns, drivers)


def test_the_wait_of_a_round_for_its_turn_is_measured(env: Env) -> None:
    """`lockgate_round_turn_seconds`: the rounds that got a turn at once count as no wait, the
    ones queued behind them as the time until a turn came free (late steps at 1,000 in
    flight were rounds queued there)."""
    rt = runtime.Runtime(env.op.rt.kube, env.op.rt.http, runtime.Settings(api_threads=2))
    clock = [100.0]

    def turn_waits() -> tuple[float, float]:
        bucket = "lockgate_round_turn_seconds_bucket"
        at_once = REGISTRY.get_sample_value(bucket, {"le": "0.01"}) or 0.0
        ten = REGISTRY.get_sample_value(bucket, {"le": "10.0"}) or 0.0
        five = REGISTRY.get_sample_value(bucket, {"le": "5.0"}) or 0.0
        return at_once, ten - five

    async def scenario() -> None:
        in_progress: set[str] = set()
        release = asyncio.Event()

        async def round_(rt: Any, namespace: str, name: str, *args: Any) -> float:
            in_progress.add(name)
            await release.wait()
            return handlers.SAFETY_NET

        stops, wakes = [Stopped() for _ in range(5)], [Wake() for _ in range(5)]
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(handlers, "_drive_once", round_)
            patch.setattr(handlers, "time", SimpleNamespace(monotonic=lambda: clock[0]))
            tasks = [
                asyncio.create_task(handlers._drive(rt, stop, NS, f"dep{i}", {}, log, wake))
                for i, (stop, wake) in enumerate(zip(stops, wakes, strict=True))
            ]
            await until(lambda: len(in_progress) == 2)
            clock[0] += 7.0  # the other three wait this long for a turn
            release.set()
            await until(lambda: len(in_progress) == 5)
            for stop, wake in zip(stops, wakes, strict=True):
                stop.set(kopf.DaemonStoppingReason.OPERATOR_EXITING)
                wake.set()
            await asyncio.gather(*tasks)

    before = turn_waits()
    asyncio.run(scenario())
    after = turn_waits()
    assert (after[0] - before[0], after[1] - before[1]) == (2, 3)


def test_api_threads_come_from_the_flag_and_a_bad_number_is_refused_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert build_parser().parse_args(["operator", "--api-threads", "16"]).api_threads == 16
    for bad in ("0", "-1", "1.5", "many"):
        with pytest.raises(SystemExit) as exit:
            build_parser().parse_args(["operator", f"--api-threads={bad}"])
        assert exit.value.code == 2
        assert f"argument --api-threads: {bad!r} is not a positive whole number" in (
            capsys.readouterr().err
        )
    monkeypatch.delenv("LOCKGATE_API_THREADS", raising=False)
    assert runtime.Settings.from_env().api_threads == 64
    monkeypatch.setenv("LOCKGATE_API_THREADS", "16")
    assert runtime.Settings.from_env().api_threads == 16
    monkeypatch.setenv("LOCKGATE_API_THREADS", "0")
    with pytest.raises(ValueError, match="LOCKGATE_API_THREADS: '0' is not a positive whole"):
        runtime.Settings.from_env()


def test_a_rollout_between_analyses_sleeps_until_its_next_timer() -> None:
    """A round that changes nothing names a timer in the future: the next analysis counts
    from the latest of the last analysis, the step's start and its weights going live, and
    its timer did too. It counted from the last analysis alone, so once a step started after
    it (every step after a timed pause, a rollout resumed after spec.paused), the timer was
    already due: the driver ran round after round with nothing to do until the window came
    (scale: 500 rollouts in flight saturated the operator)."""
    strategy = {
        "type": "Canary",
        "canary": {
            "steps": [{"setWeight": 10}, {"pause": {"seconds": 20}}, {"setWeight": 30}, 100]
        },
    }
    analysis = {"intervalSeconds": 30, "minRequests": 1, "maxErrorRate": 0.05}
    world = FakeWorld(units=("replica-1", "replica-2"), ready_after=1, requests_per_window=100)
    driver = Driver(app_spec(replicas=2), dep_spec(strategy=strategy, analysis=analysis), world)
    idle_rounds = 0
    for _ in range(200):
        before = driver.status
        decision = driver.step()
        if decision.status.phase == "Succeeded":
            break
        if decision.actions or decision.status != before:
            world.now += timedelta(seconds=0.1)  # the write's watch event, or acting
            continue
        idle_rounds += 1
        wait = decision.requeue_after
        assert wait is None or wait > 0, (
            f"nothing changed, yet the next round is due at once: {decision.status.message}"
        )
        world.now += timedelta(seconds=wait if wait is not None else 1.0)
    assert driver.status.phase == "Succeeded"
    assert idle_rounds < 20, "a waiting rollout sleeps until a timer is due"


def test_a_round_that_asked_traefik_for_a_split_sleeps_until_the_observer_sees_it() -> None:
    """A round that declared a split (or a route) Traefik has yet to serve: the engine asks
    again each round until Traefik serves it, and the driver looked again every 0.1 s, each
    round re-applying the TraefikService (Traefik takes ~2 s to load a change: ~20 rounds
    per weight; bench.rounds_per_rollout with a 2 s delay: 96 rounds a rollout instead of
    28). Now it sleeps until the Traefik observer sees a change where it waits, or its own
    timer (an apply of what Traefik serves already changes nothing there: the watch's
    `fresh_after` has the first look after it wake the rollout; test_look_reads).
    It used to look again every 2 s as well: with Traefik taking 20 to 110 s to load a
    split of 1,000 Applications, 10 to 55 rounds per weight. Docker hosts without an
    observer still look again soon."""
    watch = TraefikWatch("http://traefik:8080", (f"{NS}-shop",))
    waiting_on_traefik = deployments.Round(
        progressed=False, acted=True, requeue_after=None, finished=False, settling=True, watch=watch
    )
    assert handlers.round_delay(waiting_on_traefik) == handlers.Poll(None, watch)
    timed = dataclasses.replace(waiting_on_traefik, requeue_after=0.5)
    assert handlers.round_delay(timed) == handlers.Poll(0.5, watch), "its own timer still holds"
    on_docker = dataclasses.replace(waiting_on_traefik, watch=None)
    assert handlers.round_delay(on_docker) == handlers.ACTED_WAIT
    not_settling = dataclasses.replace(waiting_on_traefik, settling=False, watch=None)
    assert handlers.round_delay(not_settling) == handlers.ACTED_WAIT
