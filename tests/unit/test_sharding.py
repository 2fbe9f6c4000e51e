"""Sharding: which Applications and Deployments an operator started with `--shard` serves,
how a Deployment follows its Application to another shard, and the operator's flag."""

from __future__ import annotations

import asyncio
import copy
import re
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._cogs.aiokits.aioenums import FlagSetter  # what kopf hands a daemon as `stopped`

from lockgate.cli.main import build_parser
from lockgate.controller import applications, deployments, handlers, metrics, sharding
from lockgate.controller.runtime import Runtime, Settings
from lockgate.names import LABEL_SHARD
from tests.support.fakeworld import FakeWorld, dep_spec
from tests.unit.controller_fakes import NS, FakeFleet, FakeKube, Operator, runtime_over

CANARY = {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 2}}


def memo_of(shard: str, kube: FakeKube | None = None) -> kopf.Memo:
    rt = runtime_over(kube or FakeKube())
    rt.settings.shard = shard
    return kopf.Memo(runtime=rt)


# ------------------------------------------------------------------ which objects are served


@pytest.mark.parametrize(
    ("label", "served_by"),
    [
        (None, ""),  # no label: the default shard
        ("", ""),  # an empty value too
        ("a", "a"),
        ("b", "b"),
    ],
)
def test_an_application_is_served_by_the_shard_its_label_names(
    label: str | None, served_by: str
) -> None:
    for shard in ("", "a", "b"):
        served = handlers._application_in_shard(label, memo=memo_of(shard))
        assert served is (shard == served_by), (label, shard)


def test_a_deployment_is_served_by_the_shard_of_its_application() -> None:
    shards = {(NS, "shop"): ["a"], (NS, "cart"): [""]}

    def served(app: str, shard: str, label: str | None = None, ns: str = NS) -> bool:
        spec = kopf.Body({"spec": {"application": app}}).spec
        labels = {LABEL_SHARD: label} if label is not None else {}
        return handlers._deployment_in_shard(
            spec, ns, labels, memo_of(shard), application_shards=shards
        )

    assert served("shop", "a")
    assert not served("shop", "")
    assert not served("shop", "b")
    assert not served("shop", "b", label="b"), "its Application decides, not its own label"
    assert served("cart", "")
    assert not served("cart", "a")
    assert not served("cart", "a", label="a")
    # Its Application does not exist: the shard of the copy of the label it last had (the
    # Application was deleted), or the default shard (it is not there yet).
    assert served("ghost", "")
    assert not served("ghost", "a")
    assert served("ghost", "a", label="a")
    assert not served("ghost", "", label="a")
    # Same name in another namespace is another Application.
    assert not served("shop", "a", ns="other")


def test_the_index_holds_every_applications_shard() -> None:
    async def entry(labels: dict[str, str]) -> dict[Any, str]:
        return await handlers.application_shards(namespace=NS, name="shop", labels=labels)

    assert asyncio.run(entry({})) == {(NS, "shop"): ""}
    assert asyncio.run(entry({LABEL_SHARD: "a", "team": "x"})) == {(NS, "shop"): "a"}


def lockgate_handlers() -> list[Any]:
    registry = kopf.get_default_registry()
    found = [
        handler
        for sub in (registry._changing, registry._spawning, registry._watching)
        for handler in sub._handlers
        if handler.fn.__module__ == handlers.__name__
    ]
    assert len(found) >= 8
    return found


def test_every_handler_of_an_application_or_deployment_is_filtered_by_shard() -> None:
    """kopf writes finalizers, progress and diff-base annotations only on objects one of the
    operator's handlers matches: with every handler filtered, another shard's objects get
    none of this operator's (the indexes alone are unfiltered: they write nothing; so are the
    event handlers that trim what kopf keeps of each object, kept.py, and those keeping
    Traefik's route objects: they write nothing)."""
    for handler in lockgate_handlers():
        plural = handler.selector.any_name
        if handler.fn in (handlers.deployment_kept, handlers.application_kept):
            assert handler in kopf.get_default_registry()._watching._handlers  # no writes
        elif plural == "applications":
            assert handler.labels == handlers.IN_SHARD, handler.fn.__name__
        elif plural == "pods":  # an event handler only wakes this shard's loops: no writes
            assert handler.fn is handlers.pod_event
        elif plural in ("traefikservices", "ingressroutes"):  # kept as seen: no writes
            assert handler in kopf.get_default_registry()._watching._handlers
        elif handler.fn is handlers.deployment_driver:  # this shard's, and not quiet
            assert handler.when is handlers._deployment_driven
        else:
            assert plural == "deployments"
            assert handler.when is handlers._deployment_in_shard, handler.fn.__name__


def test_the_driver_finishes_its_round_before_it_stops() -> None:
    (driver,) = [h for h in lockgate_handlers() if h.fn is handlers.deployment_driver]
    assert driver.cancellation_backoff == handlers.ROUND_GRACE  # kopf waits that long


def test_each_shard_has_its_own_finalizer() -> None:
    assert sharding.finalizer("") == "lockgate.dev/finalizer"  # as before sharding
    names = {sharding.finalizer(s) for s in ("", "a", "b", "x" * 63)}
    assert len(names) == 4
    qualified = re.compile(r"([a-z0-9.-]{1,253}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
    for name in names:
        assert qualified.fullmatch(name), name  # what the API accepts as a finalizer


# ------------------------------------------------------------------ a move between shards


def deployment_shards(kube: FakeKube) -> dict[str, str | None]:
    return {
        name: (obj["metadata"].get("labels") or {}).get(LABEL_SHARD)
        for (plural, _, name), obj in kube.store.items()
        if plural == "deployments"
    }


@pytest.fixture
def moved(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeKube]:
    """Application shop (now labelled b) with two Deployments still labelled for shard a,
    and one of another Application."""
    kube = FakeKube()
    kube.add_application("shop", {"kubernetes": {"replicas": 1}}, stable={"image": "app:1"})
    kube.application("shop")["metadata"]["labels"] = {LABEL_SHARD: "b"}
    kube.add_application("cart", {"kubernetes": {"replicas": 1}}, stable={"image": "app:1"})
    for name, app in (("shop-v1", "shop"), ("shop-v2", "shop"), ("cart-v1", "cart")):
        kube.add_deployment(name, dep_spec(application=app))
        kube.deployment(name)["metadata"]["labels"] = {LABEL_SHARD: "a"}
    fleet = FakeFleet(kube, FakeWorld(units=("replica-1",)))
    monkeypatch.setattr(applications, "fleet_for", fleet.made_for)
    yield kube


def run_application_handler(kube: FakeKube, shard: str, name: str, handler: Any) -> None:
    body = kopf.Body(copy.deepcopy(kube.application(name)))
    memo = memo_of(shard, kube)
    asyncio.run(handler(body=body, patch=kopf.Patch(), memo=memo, **kube.handler_kwargs(body)))


@pytest.mark.parametrize("handler", [handlers.application_changed, handlers.application_tick])
def test_the_serving_shard_labels_the_deployments_of_its_application(
    moved: FakeKube, handler: Any
) -> None:
    run_application_handler(moved, "b", "shop", handler)
    # The write is the Deployment event on which shard a's driver stops and shard b's starts.
    assert deployment_shards(moved) == {"shop-v1": "b", "shop-v2": "b", "cart-v1": "a"}
    version = moved.version
    run_application_handler(moved, "b", "shop", handler)
    assert moved.version == version, "a Deployment already labelled is not written again"


def test_the_default_shard_takes_the_label_off(moved: FakeKube) -> None:
    run_application_handler(moved, "", "cart", handlers.application_changed)
    assert deployment_shards(moved)["cart-v1"] is None
    version = moved.version
    run_application_handler(moved, "", "cart", handlers.application_tick)
    assert moved.version == version


def test_an_install_without_shards_never_labels_anything() -> None:
    kube = FakeKube()
    kube.add_application("shop", {"kubernetes": {"replicas": 1}})
    kube.add_deployment("shop-v1", dep_spec())
    assert sharding.label_patches("", kube.index()[(NS, "shop")]) == {}


# ------------------------------------------------------------------ the driver


def run_driver(
    monkeypatch: pytest.MonkeyPatch, kube: FakeKube, shard: str, rounds_before_stop: int
) -> list[str]:
    """The driver of shop-v1, told to stop as kopf tells it (during its last round, or when
    no round may run, once it waits); the rounds it ran."""
    ran: list[str] = []
    stopper: FlagSetter[Any] = FlagSetter()

    async def drive_once(rt: Runtime, namespace: str, name: str, *_: Any) -> float:
        ran.append(name)
        if len(ran) < rounds_before_stop:
            return 0.0  # the rollout moved: the next round at once
        stopper.set()  # kopf stops it in the middle of this round
        return 10.0  # which it finishes; then it does not wait for the next

    monkeypatch.setattr(handlers, "_drive_once", drive_once)
    monkeypatch.setattr(handlers, "FINISHED_WAIT", 10.0)

    async def main() -> None:
        body = kube.deployment("shop-v1")
        memo = memo_of(shard, kube)
        task = asyncio.create_task(
            handlers.deployment_driver(
                stopped=stopper.async_waiter,
                memo=memo,
                logger=None,
                **kube.handler_kwargs(body),
            )
        )
        if rounds_before_stop == 0:
            for _ in range(20):  # it has nothing to wait for but its wake-up
                await asyncio.sleep(0)
            assert not task.done()
            stopper.set()
        await asyncio.wait_for(task, timeout=5)  # ends at once: not after its 10 s wait

    asyncio.run(main())
    return ran


def test_a_driver_runs_rounds_while_its_application_is_in_its_shard(
    monkeypatch: pytest.MonkeyPatch, moved: FakeKube
) -> None:
    assert run_driver(monkeypatch, moved, "b", rounds_before_stop=2) == ["shop-v1", "shop-v1"]


def test_a_driver_whose_application_moved_away_runs_no_round(
    monkeypatch: pytest.MonkeyPatch, moved: FakeKube
) -> None:
    """kopf stops it on the Deployment's next event; until then the index already says the
    Application is another shard's, and the driver only waits."""
    assert run_driver(monkeypatch, moved, "a", rounds_before_stop=0) == []


# ------------------------------------------------------------------ one round's status write


def test_a_round_that_read_an_older_version_does_not_write_its_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The old shard's round in flight when the new shard labels the Deployment (or any
    round racing another write) is lost, not written over what is newer: the next round
    reads the object again and does the step."""
    kube = FakeKube()
    kube.add_application("shop", {"kubernetes": {"replicas": 4}}, stable={"image": "app:1"})
    world = FakeWorld(units=("replica-1", "replica-2", "replica-3", "replica-4"))
    fleet = FakeFleet(kube, world)
    monkeypatch.setattr(deployments, "fleet_for", fleet.made_for)
    monkeypatch.setattr(deployments, "now", lambda: world.now)
    rt = runtime_over(kube)
    op = Operator(rt, kube, world)
    kube.add_deployment("shop-v2", dep_spec(strategy=CANARY))
    read = copy.deepcopy(kube.deployment("shop-v2"))  # what the round read
    asyncio.run(kube.patch_deployment(NS, "shop-v2", {"metadata": {"labels": {LABEL_SHARD: "b"}}}))
    lost = metrics.ROUNDS_LOST._value.get()

    result = asyncio.run(deployments.reconcile(rt, read, op.post, kube.index()))

    assert kube.deployment("shop-v2").get("status") is None, "nothing written"
    assert result.progressed and not result.finished  # the driver looks again at once
    assert metrics.ROUNDS_LOST._value.get() == lost + 1
    assert op.events == []  # nothing announced that was not persisted
    assert op.run("shop-v2")["shop-v2"][-1] == "Succeeded"


# ------------------------------------------------------------------ the operator's flag


@pytest.mark.parametrize("name", ["a", "team-a", "eu-west-1", "0", "x" * 63])
def test_a_shard_name_is_accepted(name: str) -> None:
    args = build_parser().parse_args(["operator", "--shard", name])
    assert args.shard == name


@pytest.mark.parametrize("name", ["Team-A", "team_a", "-a", "a-", "a.b", "x" * 64, "a/b"])
def test_a_shard_name_that_cannot_be_a_label_value_and_a_lease_name_is_refused(
    name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(["operator", f"--shard={name}"])
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --shard: {name!r} is not a shard name" in err
    assert "lowercase letters, digits and '-'" in err


def test_without_the_flag_the_operator_serves_the_default_shard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert build_parser().parse_args(["operator"]).shard is None
    monkeypatch.delenv("LOCKGATE_SHARD", raising=False)
    assert Settings.from_env().shard == ""
    monkeypatch.setenv("LOCKGATE_SHARD", "b")
    assert Settings.from_env().shard == "b"
    monkeypatch.setenv("LOCKGATE_SHARD", "B")
    with pytest.raises(ValueError, match="LOCKGATE_SHARD: 'B' is not a shard name"):
        Settings.from_env()
