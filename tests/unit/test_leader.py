"""The elector (lockgate.controller.leader) against an in-memory Lease with the API server's
rules (resourceVersion checks, 409 on a stale write, a watch of every version), and the
operator's leader-election options."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest

from lockgate.cli.main import build_parser, lease_name
from lockgate.controller import metrics
from lockgate.controller.leader import (
    Conflict,
    ElectionConfig,
    Elector,
    Watchdog,
    default_identity,
    lease_namespace,
    record_of,
    spec_of,
)
from lockgate.controller.process import serve_standby_liveness
from lockgate.election import Record, Timing
from tests.support.operator_fixtures import free_port

SLOW = Timing(15, 10, 2)  # nothing expires within a test: only the watch can wake a standby
FAST = Timing(1.0, 0.5, 0.1)


class FakeLease:
    """One Lease as the API server keeps it. Writes are refused (409) unless they carry the
    current resourceVersion; `fail_writes` makes every write fail as an unreachable server."""

    def __init__(self) -> None:
        self.record: Record | None = None
        self.version = 0
        self.changed = threading.Condition()
        self.fail_writes = False
        self.writes: list[Record] = []

    # the LeaseApi surface
    def read(self, timeout: float) -> tuple[Record | None, str | None]:
        with self.changed:
            return self.record, str(self.version) if self.record else None

    def _write(self, record: Record) -> tuple[Record, str]:
        if self.fail_writes:
            raise ConnectionError("the API server does not answer")
        self.record = record
        self.version += 1
        self.writes.append(record)
        self.changed.notify_all()
        return record, str(self.version)

    def create(self, record: Record, timeout: float) -> tuple[Record, str]:
        with self.changed:
            if self.record is not None:
                raise Conflict("exists")
            return self._write(record)

    def replace(self, record: Record, version: str, timeout: float) -> tuple[Record, str]:
        with self.changed:
            if self.record is None or version != str(self.version):
                raise Conflict("stale")
            return self._write(record)

    def watch(self, push: Any, stopped: threading.Event, pause: float) -> None:
        seen = -1
        while not stopped.is_set():
            with self.changed:
                if self.version == seen:
                    self.changed.wait(0.05)
                    continue
                seen = self.version
                record, version = self.record, str(self.version)
            push(record, version if record else None)

    def force(self, record: Record) -> None:
        """Another client writes the Lease."""
        with self.changed:
            self._write(record)


def elector(lease: FakeLease, who: str, timing: Timing = SLOW) -> Elector:
    return Elector(lease, ElectionConfig("lockgate", "ns", who, timing))  # type: ignore[arg-type]


async def acquired(candidate: Elector, within: float = 5.0) -> bool:
    return await asyncio.wait_for(candidate.acquire(asyncio.Event()), within)


def test_one_leads_the_other_waits_naming_it_and_takes_a_release_at_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, "lockgate.leader")

    async def scenario() -> None:
        lease = FakeLease()
        a, b = elector(lease, "a"), elector(lease, "b")
        assert await acquired(a)
        standby = asyncio.create_task(b.acquire(asyncio.Event()))
        for _ in range(500):  # its first look at the Lease, at most 5 s
            if "standby: waiting for the leader a" in caplog.text:
                break
            await asyncio.sleep(0.01)
        assert not standby.done()
        assert await a.release()
        # Lease 15 s, retry 2 s: only the watch can make this quick (the bound is a hang guard).
        assert await asyncio.wait_for(standby, 5.0)
        assert lease.record is not None and lease.record.holder == "b"
        assert [w.holder for w in lease.writes] == ["a", "", "b"]
        assert lease.writes[1].duration == 1  # released: free at once for anyone
        assert lease.record.transitions == 1  # one change of holder

    asyncio.run(scenario())


def test_an_unrenewed_lease_is_taken_once_it_has_expired_never_before() -> None:
    async def scenario() -> None:
        lease = FakeLease()
        a, b = elector(lease, "a", FAST), elector(lease, "b", FAST)
        assert await acquired(a)  # and never renews: a was killed
        started = time.monotonic()
        assert await acquired(b)
        assert b.leading_since is not None
        assert b.leading_since - started >= FAST.lease_seconds
        assert lease.record is not None and lease.record.holder == "b"

    asyncio.run(scenario())


def test_a_renewing_leader_keeps_it_and_the_standby_keeps_waiting() -> None:
    async def scenario() -> None:
        lease = FakeLease()
        a, b = elector(lease, "a", FAST), elector(lease, "b", FAST)
        assert await acquired(a)
        keeper = asyncio.create_task(a.keep())
        with pytest.raises(TimeoutError):
            await acquired(b, within=3 * FAST.lease_duration)
        assert not keeper.done()
        renewals = [w for w in lease.writes if w.holder == "a"]
        assert len(renewals) >= 10  # every retry period (0.1 s) over 3 s
        assert {w.acquire_time for w in renewals} == {renewals[0].acquire_time}
        keeper.cancel()

    asyncio.run(scenario())


def test_a_leader_that_cannot_renew_gives_up_before_the_lease_could_expire() -> None:
    async def scenario() -> None:
        lease = FakeLease()
        a = elector(lease, "a", FAST)
        assert await acquired(a)
        assert a.renewed is not None
        lease.fail_writes = True
        reason = await asyncio.wait_for(a.keep(), 5.0)
        lost_at = time.monotonic()
        assert "renew deadline" in reason
        # Others wait a whole lease from when they saw the last renewal, written after it
        # was sent: the leader stopped first.
        assert lost_at < a.renewed + FAST.lease_duration

    asyncio.run(scenario())


def test_a_leader_whose_lease_was_taken_knows_it_at_its_next_renewal() -> None:
    async def scenario() -> None:
        lease = FakeLease()
        a = elector(lease, "a", FAST)
        assert await acquired(a)
        assert lease.record is not None
        lease.force(replace(lease.record, holder="intruder"))
        reason = await asyncio.wait_for(a.keep(), 5.0)
        assert "held by intruder" in reason
        assert not await a.release()  # not ours: left alone
        assert lease.record.holder == "intruder"

    asyncio.run(scenario())


def test_two_candidates_creating_the_lease_at_once_elect_one() -> None:
    async def scenario() -> None:
        lease = FakeLease()
        a, b = elector(lease, "a"), elector(lease, "b")
        both = [asyncio.create_task(c.acquire(asyncio.Event())) for c in (a, b)]
        done, pending = await asyncio.wait(both, timeout=2.0)
        assert len(done) == 1 and len(pending) == 1
        assert lease.record is not None
        assert lease.record.holder in ("a", "b")
        for task in pending:
            task.cancel()

    asyncio.run(scenario())


def test_a_standby_stops_waiting_when_asked() -> None:
    async def scenario() -> None:
        lease = FakeLease()
        a, b = elector(lease, "a"), elector(lease, "b")
        assert await acquired(a)
        stopping = asyncio.Event()
        waiting = asyncio.create_task(b.acquire(stopping))
        await asyncio.sleep(0.1)
        stopping.set()
        assert await asyncio.wait_for(waiting, 2.0) is False
        assert lease.record is not None and lease.record.holder == "a"

    asyncio.run(scenario())


def test_the_watchdog_fires_at_the_deadline_unless_renewed_or_disarmed() -> None:
    fired = threading.Event()
    dog = Watchdog(fired.set, time.monotonic)
    dog.arm(time.monotonic() + 0.2)
    dog.arm(time.monotonic() + 0.4)  # a renewal moves the deadline
    assert not fired.wait(0.3)
    assert fired.wait(2.0)
    quiet = threading.Event()
    other = Watchdog(quiet.set, time.monotonic)
    other.arm(time.monotonic() + 0.1)
    other.disarm()
    assert not quiet.wait(0.3)


def test_lease_records_round_trip_in_the_api_servers_format() -> None:
    lease = {
        "metadata": {"name": "lockgate", "resourceVersion": "7"},
        "spec": {
            "holderIdentity": "pod-1_ab12",
            "leaseDurationSeconds": 15,
            "acquireTime": "2026-12-01T10:00:00.000000Z",
            "renewTime": "2026-12-01T10:00:04.250000Z",
            "leaseTransitions": 2,
        },
    }
    record = record_of(lease)
    assert record.holder == "pod-1_ab12" and record.duration == 15
    assert spec_of(record) == lease["spec"]
    assert record_of({"metadata": {}, "spec": {}}) == Record(duration=0)
    assert spec_of(Record())["holderIdentity"] is None  # released: no holder field


def test_operator_flags_default_to_controller_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    args = build_parser().parse_args(["operator", "-n", "shop"])
    assert args.leader_elect is False  # off unless asked (hack/demo, the test fixtures)
    assert (lease_name(args), args.lease_duration, args.renew_deadline, args.retry_period) == (
        "lockgate",
        15.0,
        10.0,
        2.0,
    )
    # One Lease per shard unless one is named.
    assert lease_name(build_parser().parse_args(["operator", "--shard", "a"])) == "lockgate-a"
    named = build_parser().parse_args(["operator", "--shard", "a", "--lease-name", "x"])
    assert lease_name(named) == "x"
    monkeypatch.delenv("POD_NAMESPACE", raising=False)
    assert lease_namespace(None, ["shop", "blog"]) == "shop"
    assert lease_namespace(None, []) == "default"
    monkeypatch.setenv("POD_NAMESPACE", "lockgate-system")
    assert lease_namespace(None, ["shop"]) == "lockgate-system"
    assert lease_namespace("elsewhere", ["shop"]) == "elsewhere"
    monkeypatch.setenv("POD_NAME", "lockgate-7d9f-abcde")
    first, second = default_identity(), default_identity()
    assert first.startswith("lockgate-7d9f-abcde_") and first != second
    with pytest.raises(SystemExit):
        build_parser().parse_args(["operator", "--lease-duration", "0"])


def test_inconsistent_durations_are_refused_before_anything_starts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from lockgate.cli.main import main

    code = main(["operator", "--leader-elect", "--lease-duration", "5", "--renew-deadline", "10"])
    assert code == 2
    assert "must be longer than the renew deadline" in capsys.readouterr().err


def test_a_standby_answers_the_liveness_probe() -> None:
    async def scenario() -> None:
        port = free_port()
        runner = await serve_standby_liveness(
            f"http://127.0.0.1:{port}/healthz", lambda: {"leader": False}
        )
        try:
            async with httpx.AsyncClient() as http:
                reply = await http.get(f"http://127.0.0.1:{port}/healthz")
            assert reply.status_code == 200 and reply.json() == {"leader": False}
        finally:
            await runner.cleanup()

    asyncio.run(scenario())


def test_the_process_stands_by_then_runs_kopf_and_releases_only_after_kopf_stopped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The operator process with leader election, kopf faked: while another holds the Lease
    it answers the liveness probe and reports `lockgate_leader 0` without starting kopf; once
    the Lease is released it starts kopf; on stop it releases the Lease only after kopf has
    finished."""
    import kopf

    from lockgate.controller import process

    lease = FakeLease()
    order: list[str] = []
    monkeypatch.setattr(process, "LeaseApi", lambda *_: lease)
    monkeypatch.setattr(process, "load_config", lambda: None)
    monkeypatch.setattr(process.metrics, "serve", lambda port: None)

    async def spawn_tasks(**options: Any) -> list[asyncio.Task[None]]:
        order.append("kopf started")
        assert options["standalone"] is True and options["identity"] == "me"
        flag: asyncio.Event = options["stop_flag"]
        return [asyncio.create_task(flag.wait())]  # type: ignore[arg-type]

    async def run_tasks(tasks: list[asyncio.Task[None]], ignored: object) -> None:
        await asyncio.gather(*tasks)
        await asyncio.sleep(0.2)  # kopf's handlers finishing
        order.append("kopf stopped")

    monkeypatch.setattr(kopf, "spawn_tasks", spawn_tasks)
    monkeypatch.setattr(kopf, "run_tasks", run_tasks)
    real_replace = lease.replace

    def replace_noting_release(record: Record, version: str, timeout: float) -> Any:
        if not record.holder and lease.record is not None and lease.record.holder == "me":
            order.append("released")
        return real_replace(record, version, timeout)

    monkeypatch.setattr(lease, "replace", replace_noting_release)
    port = free_port()
    options = process.OperatorOptions(
        clusterwide=False,
        namespaces=["ns"],
        liveness=f"http://127.0.0.1:{port}/healthz",
        settings=kopf.OperatorSettings(),
    )
    config = ElectionConfig("lockgate", "ns", "me", SLOW)

    async def scenario() -> None:
        other = elector(lease, "other")
        assert await acquired(other)
        stopping = asyncio.Event()
        running = asyncio.create_task(process._elected(options, config, stopping))
        async with httpx.AsyncClient() as http:
            for _ in range(500):
                try:
                    reply = await http.get(f"http://127.0.0.1:{port}/healthz")
                    break
                except httpx.HTTPError:
                    await asyncio.sleep(0.01)
        assert reply.status_code == 200 and reply.json()["leader"] is False
        assert metrics.LEADER._value.get() == 0 and order == []
        assert await other.release()
        for _ in range(500):
            if order:
                break
            await asyncio.sleep(0.01)
        assert order == ["kopf started"] and metrics.LEADER._value.get() == 1
        assert lease.record is not None and lease.record.holder == "me"
        stopping.set()
        assert await asyncio.wait_for(running, 10) == 0
        assert order == ["kopf started", "kopf stopped", "released"]
        assert lease.record.holder == "" and metrics.LEADER._value.get() == 0

    asyncio.run(scenario())
