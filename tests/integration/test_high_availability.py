"""A hot standby: two `lockgate operator --leader-elect` processes on one namespace, as the
chart's two replicas. Only the holder of the Lease acts; the standby waits, says for whom,
and takes over mid-canary when the leader is killed (once the lease has expired, judged by
the Lease's own timestamps) or at once when the leader is stopped with SIGTERM (it releases
the Lease), with no step repeated and no failed request."""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from hack.tools.load import Load, Response, by_version, failed
from tests.support.cluster import Cluster, Traefik
from tests.support.leases import LeaseRecorder, LeaseVersion
from tests.support.operator_fixtures import (
    Operator,
    free_port,
    operator_env,
    release,
    touched_by_the_default_shard,
)
from tests.support.rollouts import (
    Kill,
    Lockgate,
    application,
    deployment,
    host_of,
    interruption,
    wait_for,
)

pytestmark = [pytest.mark.integration]

LEASE = "lockgate"
SLACK = timedelta(seconds=2)
CANARY = {"type": "Canary", "canary": {"steps": [10, 25, 50, 75, 100], "stepSeconds": 4}}
ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}


class Pair:
    """Operators of one namespace with leader election, each named by its POD_NAME; every
    one started is SIGKILLed at the end, and dies with the test process anyway."""

    def __init__(self, cluster: Cluster, traefik: Traefik, namespace: str, logs: Path) -> None:
        self.cluster, self.traefik, self.namespace, self.logs = cluster, traefik, namespace, logs
        self.started: dict[str, Operator] = {}

    def start(self, name: str) -> Operator:
        env = {**operator_env(self.cluster, self.traefik), "POD_NAME": name}
        env.pop("POD_NAMESPACE", None)
        op = Operator(
            env,
            self.logs / name,
            free_port(),
            scope=("--namespace", self.namespace),
            # The Lease in the -n namespace; the shard is named after it, as own_operator's.
            args=("--shard", self.namespace, "--leader-elect", "--lease-name", LEASE),
            die_with_parent=True,
        )
        self.started[name] = op
        op.start()  # healthy: a standby answers the liveness probe too
        return op

    def identity(self, name: str) -> str:
        """The identity `name` elects itself as: its POD_NAME and a random suffix."""
        found = re.search(rf"as ({re.escape(name)}_[0-9a-f]+)", self.started[name].log_text())
        return found.group(1) if found else ""

    def kill_all(self) -> None:
        for op in self.started.values():
            if op.process is not None and op.process.poll() is None:
                op.process.send_signal(signal.SIGKILL)
                op.process.wait(timeout=10)


def metric(op: Operator, name: str) -> float:
    """A sample of the operator's own metrics (summed over labels)."""
    text = httpx.get(f"http://127.0.0.1:{op.env['LOCKGATE_METRICS_PORT']}/metrics").text
    values = [float(m) for m in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, flags=re.M)]
    return sum(values)


@pytest.fixture
def pair(
    cluster: Cluster, traefik: Traefik, kubelet: object, lockgate: Lockgate, tmp_path: Path
) -> Iterator[tuple[Pair, Lockgate, LeaseRecorder]]:
    """A fresh namespace whose Applications are labelled for a shard of the pair's own (the
    shared operator, of the default shard, leaves them alone), a recorder of the namespace's
    Lease, and the pair; their objects released and the pair killed afterwards."""
    lockgate.shard = lockgate.namespace
    ops = Pair(cluster, traefik, lockgate.namespace, tmp_path)
    try:
        with LeaseRecorder(lockgate.api, lockgate.namespace, LEASE) as lease:
            yield ops, lockgate, lease
        touched = touched_by_the_default_shard(lockgate)
        assert not touched, f"the shared operator acted on the pair's shard: {touched}"
    except BaseException:
        for name, op in ops.started.items():
            print(f"--- {name}'s log (tail) ---\n{op.log_text()[-3000:]}")
        raise
    finally:
        try:
            if ops.started:
                release(lockgate, ops.started.values())
        finally:
            ops.kill_all()


def elect_a_with_b_waiting(ops: Pair, lease: LeaseRecorder) -> tuple[Operator, Operator]:
    a = ops.start("op-a")
    lease.wait_holder(lambda h: h.startswith("op-a_"), "op-a to hold the Lease")
    b = ops.start("op-b")
    leader = ops.identity("op-a")

    def says_it_waits() -> bool:
        if not b.alive():
            raise AssertionError(f"op-b exited:\n{b.log_text()[-3000:]}")
        return f"standby: waiting for the leader {leader}" in b.log_text()

    # op-b getting to its place as a standby: it logs as it starts, until it says so (its
    # CPU time would move for ever, as it looks at the Lease every retry period).
    wait_for("op-b's log to say it waits for op-a", says_it_waits, lambda: len(b.log_text()))
    return a, b


def deploy_v1_and_start_canary(lg: Lockgate, load: Load) -> None:
    lg.create(application("shop", 4, namespace=lg.namespace))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    lg.wait_phase("shop-v1", {"Succeeded"})
    load.start()
    load.wait_answered(20)
    lg.create(deployment("shop-v2", "shop", "demo:v2", CANARY, analysis=ANALYSIS))


def assert_every_step_once(status: dict[str, Any]) -> None:
    """The status's log and its transitions: each step completed exactly once, in order."""
    assert status["phase"] == "Succeeded", status.get("message")
    total = status["step"]["total"]
    done = [e["message"] for e in status["log"] if " done: " in e["message"]]
    numbers = [int(m.split()[1].split("/")[0]) for m in done]
    assert numbers == list(range(1, total + 1)), f"steps completed: {numbers}"
    # Each step but the last is a StepCompleted transition; the last one is the success.
    completed = [t["step"] for t in status["transitions"] if t.get("event") == "StepCompleted"]
    assert completed == list(range(total - 1)), f"StepCompleted transitions: {completed}"
    assert [t.get("event") for t in status["transitions"]].count("Succeeded") == 1


@dataclass
class Handover:
    """A canary that op-a led until interrupted at step 2 and op-b finished under load."""

    a: Operator
    b: Operator
    interrupted: Kill  # the Deployment as the interruption left it
    old: str  # op-a's identity
    new: str  # op-b's identity
    status: dict[str, Any]  # the finished Deployment's
    responses: list[Response]  # the load's, through the whole canary


def canary_handed_over(
    pair: tuple[Pair, Lockgate, LeaseRecorder],
    traefik: Traefik,
    interrupt: Callable[[Operator, Operator], None],
) -> Handover:
    """op-a elected with op-b waiting; a canary under load; at its step 2, interrupt(a, b);
    then op-b takes the Lease and the canary finishes."""
    ops, lg, lease = pair
    a, b = elect_a_with_b_waiting(ops, lease)
    load = Load(traefik.web_url, host_of("shop", lg.namespace))
    try:
        deploy_v1_and_start_canary(lg, load)
        lg.wait_step("shop-v2", 2)
        interrupt(a, b)
        interrupted = interruption(lg, "shop-v2")
        old, new = ops.identity("op-a"), ops.identity("op-b")
        lease.wait_holder(lambda h: h == new, "op-b to take the Lease")
        status = lg.wait_finished("shop-v2")
        load.wait_answered(len(load.responses) + 200)
    finally:
        responses = load.stop()
    return Handover(a, b, interrupted, old, new, status, responses)


def test_standby_takes_over_mid_canary_when_the_leader_is_killed(
    pair: tuple[Pair, Lockgate, LeaseRecorder], traefik: Traefik
) -> None:
    def kill(a: Operator, b: Operator) -> None:
        # Only the leader acts: the standby has not reconciled anything, and says so.
        assert metric(a, "lockgate_leader") == 1 and metric(b, "lockgate_leader") == 0
        assert metric(a, "lockgate_reconcile_seconds_count") > 0
        assert metric(b, "lockgate_reconcile_seconds_count") == 0
        assert metric(b, "lockgate_reconcile_errors_total") == 0
        a.kill()  # SIGKILL: no release, as when its node dies

    run = canary_handed_over(pair, traefik, kill)
    lease = pair[2]
    killed = run.interrupted
    assert killed.inside and killed.step >= 2, f"the kill landed outside the canary: {killed}"
    assert_every_step_once(run.status)
    assert failed(run.responses) == [], by_version(run.responses)
    assert metric(run.b, "lockgate_leader") == 1

    # The takeover, by the Lease's own timestamps: op-b acquired it once op-a's last renewal
    # had gone unrenewed for a lease duration (never before), and promptly after that.
    before, taken = ops_lease_handover(lease, run.old, run.new)
    last_renewal = before[-1].renewed
    assert before[-1].holder == run.old and last_renewal is not None and taken.acquired is not None
    expiry = last_renewal + timedelta(seconds=before[-1].duration)
    print(f"op-b acquired the Lease {taken.acquired - expiry} after op-a's expired")
    assert expiry <= taken.acquired <= expiry + SLACK, (
        f"op-a last renewed at {last_renewal}, op-b acquired at {taken.acquired}"
    )
    assert taken.transitions == before[-1].transitions + 1


def test_sigterm_hands_the_lease_over_at_once_mid_canary(
    pair: tuple[Pair, Lockgate, LeaseRecorder], traefik: Traefik
) -> None:
    def stop(a: Operator, _b: Operator) -> None:
        a.stop()  # SIGTERM, as Kubernetes stops a Pod
        assert a.process is not None and a.process.returncode == 0, a.log_text()[-3000:]

    run = canary_handed_over(pair, traefik, stop)
    lease = pair[2]
    stopped = run.interrupted
    assert stopped.inside, f"the SIGTERM landed outside the canary: {stopped}"
    assert_every_step_once(run.status)
    assert failed(run.responses) == [], by_version(run.responses)
    assert "released the Lease" in run.a.log_text()
    assert metric(run.b, "lockgate_leader") == 1

    # By the Lease's timestamps: op-a released it (no holder, a lease of 1 s), and op-b
    # acquired it within SLACK of the release, not a lease duration later.
    before, taken = ops_lease_handover(lease, run.old, run.new)
    release = before[-1]
    assert release.holder == "" and release.duration == 1, before[-3:]
    assert release.renewed is not None and taken.acquired is not None
    print(f"op-b acquired the Lease {taken.acquired - release.renewed} after op-a released it")
    assert release.renewed <= taken.acquired <= release.renewed + SLACK, (
        f"released at {release.renewed}, acquired at {taken.acquired}"
    )


def ops_lease_handover(
    lease: LeaseRecorder, old: str, new: str
) -> tuple[list[LeaseVersion], LeaseVersion]:
    """The Lease's versions while `old` held or released it, and `new`'s first: waited for,
    since the recorder's watch may be a moment behind the test."""
    wait_for(
        f"{new} in the recorded Lease",
        lambda: any(v.holder == new for v in lease.history()),
        lambda: len(lease.history()),
    )
    before, taken = lease.handover(old, new)
    assert before, f"no version of the Lease held by {old}: {lease.history()}"
    return before, taken


def test_a_standby_stopped_while_waiting_exits_cleanly_and_leaves_the_lease_alone(
    pair: tuple[Pair, Lockgate, LeaseRecorder],
) -> None:
    ops, _, lease = pair
    a, b = elect_a_with_b_waiting(ops, lease)
    held = lease.history()[-1]
    b.stop()
    assert b.process is not None and b.process.returncode == 0, b.log_text()[-3000:]
    assert "stopped while a standby" in b.log_text()
    # op-a keeps renewing: the Lease is op-a's, renewed after op-b left.
    renewed = lease.wait_holder(
        lambda h: h == held.holder and lease.history()[-1].renewed != held.renewed,
        "op-a to renew again",
    )
    assert renewed.acquired == held.acquired and a.alive()
