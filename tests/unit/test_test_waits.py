"""The tests' own wait (`tests/support/rollouts.wait_for`): it has no wall-clock limit, and
gives up only on a world that stands still."""

from __future__ import annotations

import itertools

import pytest

from tests.support.rollouts import cpu_ticks, wait_for


def test_a_slow_world_that_keeps_moving_is_waited_for_past_the_quiet_time() -> None:
    polls = itertools.count()
    seen: list[int] = []

    def done() -> bool:
        seen.append(next(polls))
        return len(seen) > 40

    # 40 polls 0.01 s apart, four times the quiet time; what it waits on moves every 4th.
    assert wait_for("the 41st poll", done, lambda: len(seen) // 4, every=0.01, quiet=0.1)


def test_a_world_that_stands_still_fails_naming_what_and_the_last_progress() -> None:
    with pytest.raises(AssertionError) as failed:
        wait_for("the thing", lambda: False, lambda: "phase Paused", every=0.01, quiet=0.05)
    message = str(failed.value)
    assert "never saw the thing" in message
    assert "'phase Paused'" in message


def test_cpu_ticks_of_this_process_and_of_none() -> None:
    import os

    assert isinstance(cpu_ticks(os.getpid()), int)
    assert cpu_ticks(2**22 + 1) is None
