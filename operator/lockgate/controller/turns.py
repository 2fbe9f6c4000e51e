"""Turns for the drivers' rounds: at most `limit` run at once (each holds API threads while it
runs), and a round that moves a rollout on when a timed step ends (a pause) takes the next
free turn before rounds that only look (an analysis run, a safety net, a status echo).

At 1,000 in flight every round waited in one line: a pause that ended behind a few dozen
analysis rounds started its next step up to 5 s late (docs/scale.md). A step's end comes once
per step, so those rounds are few and never keep the others waiting for long."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator


class Turns:
    def __init__(self, limit: int) -> None:
        self._free = limit
        # Waiting rounds: those that move a rollout on, then the others; first come, first
        # served within each.
        self._first: deque[asyncio.Future[None]] = deque()
        self._then: deque[asyncio.Future[None]] = deque()

    @contextlib.asynccontextmanager
    async def turn(self, *, first: bool = False) -> AsyncIterator[None]:
        await self._take(first)
        try:
            yield
        finally:
            self._hand_on()

    async def _take(self, first: bool) -> None:
        if self._free > 0:  # then nobody waits: a freed turn goes to a waiting round first
            self._free -= 1
            return
        line = self._first if first else self._then
        handed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        line.append(handed)
        try:
            await handed
        except asyncio.CancelledError:
            # Cancelled in the line, it is skipped when its turn comes; cancelled as its turn
            # came, it hands the turn on.
            if handed.done() and not handed.cancelled():
                self._hand_on()
            raise

    def _hand_on(self) -> None:
        for line in (self._first, self._then):
            while line:
                handed = line.popleft()
                if not handed.done():
                    handed.set_result(None)
                    return
        self._free += 1
