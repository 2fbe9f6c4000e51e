"""A round reads its Deployment from the answer to this operator's last status write of it
while the watch has delivered nothing newer, and from the API once it has: a user's promote
is acted on at the next round, and a change the watch has yet to deliver loses the round
(its conditional write answers 409) rather than being overwritten."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from datetime import timedelta

import kopf
import pytest

from lockgate.controller import handlers
from lockgate.names import ACTION_ANNOTATION
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import NS, Env, env_over_fakes
from tests.unit.controller_fakes import deployment_step as step

log = logging.getLogger("test")
FOREVER = {"type": "Canary", "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, 100]}}
KEY = (NS, "dep")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)  # kopf posts them when it runs
    yield from env_over_fakes(monkeypatch, Env, replicas=2, ready_after=1)


def delivered(env: Env) -> str:
    """The resourceVersion kopf's watch delivered, once it has caught up with the API."""
    version: str = env.kube.deployment("dep")["metadata"]["resourceVersion"]
    return version


def drive_round(env: Env, watched_version: str) -> None:
    """One round of the driver, the watch having delivered `watched_version`."""
    asyncio.run(
        handlers._drive_once(
            env.op.rt, NS, "dep", env.kube.index(), log, None, watched_version=watched_version
        )
    )
    env.world.now += timedelta(seconds=1)


def paused(env: Env) -> None:
    """Rounds, each after the watch delivered the last one's write, up to the endless pause."""
    env.kube.add_deployment("dep", dep_spec(strategy=FOREVER))
    for _ in range(30):
        drive_round(env, delivered(env))
        if "pause" in str(step(env).get("description")):
            return
    raise AssertionError(f"never paused: {step(env)}")


def test_rounds_after_their_own_writes_read_the_deployment_once(env: Env) -> None:
    paused(env)
    assert env.kube.status_writes >= 3, "the rounds wrote their progress"
    assert env.kube.deployment_reads == 1, "only the first round read it from the API"


def test_a_promote_the_watch_delivered_is_read_from_the_api_and_acted_on(env: Env) -> None:
    paused(env)
    before = (env.kube.deployment_reads, step(env)["index"])
    env.kube._patch(
        "deployments", NS, "dep", {"metadata": {"annotations": {ACTION_ANNOTATION: "promote"}}}
    )
    drive_round(env, delivered(env))
    assert env.kube.deployment_reads == before[0] + 1, "the annotated version was read"
    for _ in range(5):
        if step(env)["index"] > before[1]:
            return
        drive_round(env, delivered(env))
    raise AssertionError(f"the promote never took the rollout past its pause: {step(env)}")


def test_a_change_the_watch_has_yet_to_deliver_loses_the_round_and_is_read_next(
    env: Env,
) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=FOREVER))
    drive_round(env, delivered(env))  # it starts: the status is written
    written = env.op.rt.deployment_writes[KEY].resource_version
    assert written == delivered(env)
    env.kube._patch("deployments", NS, "dep", {"metadata": {"labels": {"team": "shop"}}})
    writes = env.kube.status_writes
    drive_round(env, written)  # the label's event is still on its way
    assert env.kube.status_writes == writes + 1, "the round tried to write"
    assert env.kube.deployment("dep")["metadata"]["labels"] == {"team": "shop"}
    assert KEY not in env.op.rt.deployment_writes, "its 409 dropped the stale copy"
    reads = env.kube.deployment_reads
    drive_round(env, written)
    assert env.kube.deployment_reads == reads + 1, "the next round read it from the API"
