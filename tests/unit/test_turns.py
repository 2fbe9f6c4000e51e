"""Rounds take turns, at most `limit` at once; a round that moves a rollout on when its timed
step has ended (a pause) takes the next free turn before rounds that only look, and a round
cancelled while it waits never loses a turn for the others."""

from __future__ import annotations

import asyncio

from lockgate.controller.turns import Turns


async def _holding(turns: Turns, name: str, first: bool, order: list[str]) -> asyncio.Event:
    """Starts a round that takes a turn, notes it in `order` and holds the turn until the
    returned Event is set."""
    release = asyncio.Event()

    async def round_() -> None:
        async with turns.turn(first=first):
            order.append(name)
            await release.wait()

    asyncio.get_running_loop().create_task(round_())
    await asyncio.sleep(0)  # it asks for its turn now, in the order the test starts them
    return release


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_round_at_a_steps_end_goes_before_rounds_that_waited_longer() -> None:
    async def scenario() -> list[str]:
        turns, order = Turns(1), []
        holder = await _holding(turns, "holder", False, order)
        ends = [
            await _holding(turns, name, first, order)
            for name, first in (
                ("analysis-a", False),
                ("analysis-b", False),
                ("pause-end-a", True),
                ("pause-end-b", True),
            )
        ]
        await _settle()
        assert order == ["holder"], "one turn: the others wait"
        for release in ends:
            release.set()  # each goes through as soon as its turn comes
        holder.set()
        for _ in ends:
            await _settle()
        return order

    order = asyncio.run(scenario())
    assert order == ["holder", "pause-end-a", "pause-end-b", "analysis-a", "analysis-b"]


def test_no_more_than_the_limit_hold_a_turn() -> None:
    async def scenario() -> None:
        turns, order = Turns(2), []
        releases = [await _holding(turns, f"r{i}", i % 2 == 0, order) for i in range(5)]
        await _settle()
        assert order == ["r0", "r1"]
        releases[0].set()
        await _settle()
        assert order == ["r0", "r1", "r2"], "the freed turn went to the first round waiting"
        for release in releases:
            release.set()
            await _settle()
        assert sorted(order) == ["r0", "r1", "r2", "r3", "r4"]

    asyncio.run(scenario())


def test_a_round_cancelled_while_it_waits_loses_no_turn_for_the_others() -> None:
    async def scenario() -> None:
        turns, order = Turns(1), []
        holder = await _holding(turns, "holder", False, order)

        async def cancelled_round(first: bool) -> None:
            async with turns.turn(first=first):
                order.append("never")

        waiting = asyncio.get_running_loop().create_task(cancelled_round(True))
        later = await _holding(turns, "later", False, order)
        await _settle()
        waiting.cancel()  # cancelled in the line
        await _settle()
        holder.set()
        await _settle()
        assert order == ["holder", "later"]
        # handed the turn and cancelled before it ran: it passes the turn on
        after = await _holding(turns, "after", False, order)
        handed = asyncio.get_running_loop().create_task(cancelled_round(False))
        await asyncio.sleep(0)
        last = await _holding(turns, "last", False, order)
        later.set()  # hands the turn to `after`
        await _settle()
        after.set()
        await asyncio.sleep(0)  # `after` ends its turn and hands it to `handed`...
        handed.cancel()  # ...which is cancelled before it runs
        await _settle()
        assert order == ["holder", "later", "after", "last"]
        last.set()
        await _settle()
        probe = await _holding(turns, "probe", False, order)
        await _settle()
        assert order[-1] == "probe", "the turn came back: one is free"
        probe.set()

    asyncio.run(scenario())
