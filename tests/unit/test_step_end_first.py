"""A round that moves a rollout on when its pause ends takes its turn before rounds that only
look (turns.py): a round during the pause notes when the pause ends, and the driver's next
round from then on asks for a turn first, and moves the rollout past the pause."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import Any, cast

import kopf
import pytest

from lockgate.controller import handlers
from lockgate.controller.turns import Turns
from lockgate.controller.wakeups import Wake
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import NS, Env, env_over_fakes
from tests.unit.controller_fakes import deployment_step as step

log = logging.getLogger("test")
PAUSE_S = 30
TIMED = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 50}, {"pause": {"seconds": PAUSE_S}}, 100]},
}
KEY = (NS, "dep")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    monkeypatch.setattr(kopf, "event", lambda *_, **__: None)  # kopf posts them when it runs
    yield from env_over_fakes(monkeypatch, Env, replicas=2, ready_after=1)


def in_the_pause(env: Env) -> int:
    """Rounds up to the timed pause, until a round has counted its time; its step's index."""
    env.kube.add_deployment("dep", dep_spec(strategy=TIMED))
    for _ in range(30):
        asyncio.run(handlers._drive_once(env.op.rt, NS, "dep", env.kube.index(), log))
        env.world.now += timedelta(seconds=1)
        if "pause" in str(step(env).get("description")) and KEY in env.op.rt.step_ends:
            index: int = step(env)["index"]
            return index
    raise AssertionError(f"never paused: {step(env)}")


class Stopped:
    """The driver's `stopped` flag, set by the test."""

    def __init__(self) -> None:
        self.set = False

    def __bool__(self) -> bool:
        return self.set


class NotedTurns(Turns):
    """Turns that note whether each round asked first, and run `after` once it ends."""

    def __init__(self, after: Any) -> None:
        super().__init__(1)
        self.asked: list[bool] = []
        self.after = after

    @contextlib.asynccontextmanager
    async def turn(self, *, first: bool = False) -> AsyncIterator[None]:
        self.asked.append(first)
        async with super().turn(first=first):
            yield
        self.after(len(self.asked))


def test_the_round_after_a_pause_ends_asks_first_and_moves_the_rollout_on(env: Env) -> None:
    rt = env.op.rt
    paused_at = in_the_pause(env)
    ends = rt.step_ends[KEY] - time.monotonic()
    assert PAUSE_S - 5 < ends <= PAUSE_S, "the pause's round noted when it ends"
    stopped, wake = Stopped(), Wake()

    def after(rounds: int) -> None:
        if rounds == 1:
            # the pause runs out: the rollout's clock, and when the pause ends, both move on
            env.world.now += timedelta(seconds=PAUSE_S)
            rt.step_ends[KEY] -= PAUSE_S
            wake.set("timer")
        else:
            stopped.set = True

    rt.rounds = NotedTurns(after)
    asyncio.run(
        handlers._drive(
            rt, cast(kopf.DaemonStopped, stopped), NS, "dep", env.kube.index(), log, wake
        )
    )
    assert rt.rounds.asked == [False, True], "during the pause it waited in line; after, first"
    assert step(env)["index"] > paused_at, f"the round moved past the pause: {step(env)}"
    assert KEY not in rt.step_ends, "nothing left to end (a step without a timed wait)"


def test_a_driver_stopped_in_the_pause_forgets_when_it_ends(env: Env) -> None:
    rt = env.op.rt
    in_the_pause(env)
    stopped = Stopped()

    def after(rounds: int) -> None:
        assert KEY in rt.step_ends, "the round in the pause noted its end"
        stopped.set = True  # its Deployment deleted, or moved to another shard

    rt.rounds = NotedTurns(after)
    asyncio.run(
        handlers._drive(
            rt, cast(kopf.DaemonStopped, stopped), NS, "dep", env.kube.index(), log, Wake()
        )
    )
    assert rt.rounds.asked == [False]
    assert KEY not in rt.step_ends, "the driver's end forgot it"
