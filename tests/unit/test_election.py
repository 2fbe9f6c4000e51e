"""The leader election's decisions (lockgate.election): tables of cases, and properties that
hold for any timing and any moment: a candidate never takes a lease another holds before it
has seen it unrenewed for a whole lease duration, and a leader has stopped acting before
any candidate may take over."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from lockgate.election import (
    Record,
    Seen,
    Timing,
    Verdict,
    claim,
    decide,
    observe,
    released,
)

T = Timing()  # 15 / 10 / 2
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=UTC)


def held(by: str, duration: int = 15, renewed: datetime = T0) -> Record:
    return Record(by, duration, T0, renewed, 3)


def test_timing_defaults_and_validation_are_client_gos() -> None:
    assert (T.lease_duration, T.renew_deadline, T.retry_period) == (15.0, 10.0, 2.0)
    assert T.lease_seconds == 15
    with pytest.raises(ValueError, match="longer than the renew deadline"):
        Timing(10, 10, 2)
    with pytest.raises(ValueError, match=r"1\.2 x the retry period"):
        Timing(15, 2.4, 2)
    with pytest.raises(ValueError, match="positive"):
        Timing(15, 10, 0)
    assert Timing(0.6, 0.4, 0.1).lease_seconds == 1
    assert Timing(10.2, 10.1, 2).lease_seconds == 11  # rounded up: never below the deadline


def test_observe_moves_the_clock_only_when_the_record_changes() -> None:
    first = observe(None, held("a"), 100.0)
    assert first == Seen(held("a"), 100.0)
    assert observe(first, held("a"), 107.0) is first  # the same record read again
    renewed = held("a", renewed=T0 + timedelta(seconds=2))
    assert observe(first, renewed, 108.0) == Seen(renewed, 108.0)
    assert observe(first, None, 109.0) == Seen(None, 109.0)


@pytest.mark.parametrize(
    ("record", "now", "verdict", "look_again"),
    [
        (None, 100.0, Verdict.CREATE, 102.0),
        (Record(), 100.0, Verdict.TAKE, 102.0),  # released: free at once
        (released(held("a"), T0), 100.0, Verdict.TAKE, 102.0),
        (held("me"), 100.0, Verdict.TAKE, 102.0),  # ours from an earlier life
        (held("other"), 100.0, Verdict.WAIT, 115.0),  # seen at 100: wait the whole lease
        (held("other"), 114.9, Verdict.WAIT, 115.0),
        (held("other"), 115.0, Verdict.TAKE, 117.0),  # expired: at that very moment
        (held("other", duration=1), 101.0, Verdict.TAKE, 103.0),  # its own duration counts
    ],
)
def test_a_candidate(
    record: Record | None, now: float, verdict: Verdict, look_again: float
) -> None:
    decision = decide(Seen(record, 100.0), "me", now, T, renewed=None)
    assert (decision.verdict, decision.look_again) == (verdict, look_again)


def test_a_candidate_ignores_the_holders_timestamps() -> None:
    """A renewTime an hour old (another clock, or a record read late) does not make the lease
    expired: only what this candidate saw, on its own clock, counts."""
    stale = held("other", renewed=T0 - timedelta(hours=1))
    decision = decide(Seen(stale, 100.0), "me", 101.0, T, renewed=None)
    assert decision.verdict is Verdict.WAIT and decision.holder == "other"


@pytest.mark.parametrize(
    ("now", "verdict", "look_again"),
    [
        (100.5, Verdict.WAIT, 102.0),  # renewed at 100: next at 102
        (102.0, Verdict.RENEW, 104.0),
        (109.0, Verdict.RENEW, 110.0),  # the last attempt is due at the deadline
        (110.0, Verdict.LOST, 110.0),
    ],
)
def test_the_leader(now: float, verdict: Verdict, look_again: float) -> None:
    decision = decide(Seen(held("me"), 100.0), "me", now, T, renewed=100.0)
    assert (decision.verdict, decision.look_again) == (verdict, look_again)


def test_the_leader_whose_lease_another_took_or_deleted_has_lost_it() -> None:
    decision = decide(Seen(held("other"), 100.0), "me", 100.5, T, renewed=100.0)
    assert decision.verdict is Verdict.LOST and "held by other" in decision.reason
    decision = decide(Seen(None, 100.0), "me", 100.5, T, renewed=100.0)
    assert decision.verdict is Verdict.LOST and "deleted" in decision.reason


def test_claim_renew_and_release_write_what_client_go_writes() -> None:
    later = T0 + timedelta(seconds=5)
    created = claim(None, "me", T0, T)
    assert created == Record("me", 15, T0, T0, 0)
    renewed = claim(created, "me", later, T)
    assert renewed == Record("me", 15, T0, later, 0)  # acquire time and transitions kept
    taken = claim(held("other"), "me", later, T)
    assert taken == Record("me", 15, later, later, 4)  # a new holder: one more transition
    gone = released(renewed, later)
    assert gone == Record("", 1, later, later, 0)
    assert gone.free
    assert claim(gone, "next", later, T).transitions == 1


timings = st.builds(
    lambda retry, deadline_factor, extra: Timing(
        retry + deadline_factor * retry + extra + 0.01, retry + deadline_factor * retry, retry
    ),
    st.floats(0.05, 5),
    st.floats(0.21, 10),
    st.floats(0.0, 20),
)
moments = st.floats(0, 1e5, allow_nan=False)
delays = st.floats(0, 60, allow_nan=False)


@given(timings, moments, delays, st.text(min_size=1, max_size=5))
def test_a_candidate_never_takes_an_unexpired_lease(
    timing: Timing, since: float, after: float, holder: str
) -> None:
    assume(holder != "me")
    record = held(holder, duration=timing.lease_seconds)
    decision = decide(Seen(record, since), "me", since + after, timing, renewed=None)
    if after < record.duration:
        assert decision.verdict is Verdict.WAIT
        assert decision.look_again == since + record.duration  # exactly when it expires
    else:
        assert decision.verdict is Verdict.TAKE
    assert decision.look_again > since + after or decision.verdict is not Verdict.WAIT


@given(timings, moments, delays, delays, delays)
def test_never_two_acting(
    timing: Timing, renewed: float, written: float, seen_after: float, at: float
) -> None:
    """The leader sends a renewal at `renewed`; the server writes it `written` later; a
    candidate sees it `seen_after` after that. At any moment `at` after the send, the leader
    still acting and the candidate taking over never happen together."""
    record = held("leader", duration=timing.lease_seconds)
    now = renewed + at
    leader = decide(Seen(record, renewed), "leader", now, timing, renewed=renewed)
    candidate_saw = renewed + written + seen_after
    assume(now >= candidate_saw)
    candidate = decide(Seen(record, candidate_saw), "candidate", now, timing, renewed=None)
    assert not (leader.verdict is not Verdict.LOST and candidate.verdict is Verdict.TAKE)


@given(timings, moments, delays)
def test_the_leader_renews_every_retry_period_until_its_deadline(
    timing: Timing, renewed: float, after: float
) -> None:
    decision = decide(Seen(held("me"), renewed), "me", renewed + after, timing, renewed=renewed)
    deadline = renewed + timing.renew_deadline
    if renewed + after >= deadline:
        assert decision.verdict is Verdict.LOST
    else:
        assert decision.look_again <= deadline
        assert decision.look_again > renewed + after or decision.verdict is Verdict.RENEW
        expected = Verdict.RENEW if after >= timing.retry_period else Verdict.WAIT
        assert decision.verdict is expected
