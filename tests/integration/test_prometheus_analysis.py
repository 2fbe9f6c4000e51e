"""Analysis through Prometheus, end to end: the real control plane and Traefik, a real
Prometheus (hack/prometheus) scraping Traefik every second, and the operator reading it with
PromQL because the Application sets `metrics.prometheus`."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from hack.tools.load import Load, by_version, failed
from tests.support.cluster import HACK, Prometheus, Traefik
from tests.support.operator_fixtures import free_port
from tests.support.rollouts import Lockgate, application, deployment, host_of

pytestmark = pytest.mark.integration

# Windows of 3 s: three scrapes of Traefik each, so every rate() has samples to work with.
ANALYSIS = {"intervalSeconds": 3, "minRequests": 10, "maxConsecutiveFailures": 2}
CANARY = {"type": "Canary", "canary": {"steps": [20, 50, 100], "stepSeconds": 6}}
CANARY_P95 = (
    "histogram_quantile(0.95, sum by (le) ("
    'rate(traefik_service_request_duration_seconds_bucket{service=~"$canary"}[$window])))'
)


def deploy_v1(lg: Lockgate, prometheus: Prometheus, app: str = "shop") -> None:
    metrics = {"prometheus": {"url": prometheus.url}}
    lg.create(application(app, 4, namespace=lg.namespace, metrics=metrics))
    lg.create(deployment(f"{app}-v1", app, "demo:v1"))
    lg.wait_phase(f"{app}-v1", {"Succeeded"})


def load_for(traefik: Traefik, lg: Lockgate, app: str = "shop") -> Load:
    return Load(traefik.web_url, host_of(app, lg.namespace))


def source(prometheus: Prometheus) -> str:
    return f"prometheus {prometheus.url}"


def test_a_good_canary_judged_through_prometheus_succeeds(
    lockgate: Lockgate, traefik: Traefik, prometheus: Prometheus
) -> None:
    deploy_v1(lockgate, prometheus)
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", CANARY, analysis=ANALYSIS))
        status = lockgate.wait_finished("shop-v2")
        load.wait_answered(len(load.responses) + 100)
    responses = load.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    runs = status["analysis"]
    assert runs and {run["source"] for run in runs} == {source(prometheus)}
    passed = [run for run in runs if run["verdict"] == "Passed"]
    assert len(passed) >= 2, runs  # one per gate: setWeight 20 and 50
    assert all(run["canary"]["requests"] >= 10 for run in passed)
    assert all(run["stable"]["requests"] > 0 for run in passed)
    assert failed(responses) == [], by_version(responses)


def test_a_canary_with_30_percent_errors_is_rolled_back_on_the_promql_figure(
    lockgate: Lockgate, traefik: Traefik, prometheus: Prometheus
) -> None:
    deploy_v1(lockgate, prometheus)
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(
            deployment("shop-bad", "shop", "demo:v2-errors30", CANARY, analysis=ANALYSIS)
        )
        status = lockgate.wait_finished("shop-bad")
    load.stop()
    assert status["phase"] == "RolledBack", status.get("message")
    message = status["message"]
    assert "canary 5xx ratio" in message and "> maxErrorRate 0.05" in message, message
    assert f"(from {source(prometheus)})" in message, message
    assert "rolled back to demo:v1" in message
    failures = [run for run in status["analysis"] if run["verdict"] == "Failed"]
    assert failures and all(run["source"] == source(prometheus) for run in failures)
    assert all(run["canary"]["errorRate"] > 0.05 for run in failures)
    lockgate.wait_events("shop-bad", {"AnalysisFailed", "RollingBack", "RolledBack"})


def test_a_custom_query_out_of_its_bound_rolls_back_naming_the_query(
    lockgate: Lockgate, traefik: Traefik, prometheus: Prometheus
) -> None:
    """A healthy canary against a latency gate no real request meets: the built-in
    thresholds pass, the query fails the rollout."""
    deploy_v1(lockgate, prometheus)
    gate = {"name": "canary-p95", "promql": CANARY_P95, "max": 0.000001}
    analysis = {**ANALYSIS, "queries": [gate]}
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-slow", "shop", "demo:v2", CANARY, analysis=analysis))
        status = lockgate.wait_finished("shop-slow")
    load.stop()
    assert status["phase"] == "RolledBack", status.get("message")
    message = status["message"]
    assert "query canary-p95 = " in message and "> max 1e-06" in message, message
    assert f"(from {source(prometheus)})" in message
    failures = [run for run in status["analysis"] if run["verdict"] == "Failed"]
    assert failures and all(run["queries"]["canary-p95"] > 0.000001 for run in failures)


def _at(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["at"].replace("Z", "+00:00"))


@dataclass(frozen=True)
class OwnPrometheus(Prometheus):
    """A second Prometheus, the test's own: `hack/prometheus` with a run directory and port
    of its own, scraping the same Traefik. Stopping it leaves the one the other tests read
    (which has no `stop()`)."""

    env: dict[str, str] = field(default_factory=dict)

    def _hack(self, command: str) -> None:
        proc = subprocess.run(
            [str(HACK / "prometheus"), command], env=self.env, capture_output=True, text=True
        )
        assert proc.returncode == 0, f"hack/prometheus {command}:\n{proc.stderr[-3000:]}"

    def start(self) -> None:
        self._hack("up")

    def stop(self) -> None:
        self._hack("down")


@pytest.fixture
def own_prometheus(traefik: Traefik, tmp_path: Path) -> Iterator[Prometheus]:
    port = free_port()
    env = {
        **os.environ,
        "LOCKGATE_RUN": str(tmp_path / "run"),
        "LOCKGATE_PROMETHEUS_PORT": str(port),
    }
    own = OwnPrometheus(url=f"http://127.0.0.1:{port}", env=env)
    own.start()
    try:
        yield own
    finally:
        own.stop()


def test_prometheus_stopped_mid_analysis_is_inconclusive_then_fails_at_the_deadline(
    lockgate: Lockgate, traefik: Traefik, own_prometheus: Prometheus
) -> None:
    prometheus = own_prometheus
    deploy_v1(lockgate, prometheus)
    steps = {"type": "Canary", "canary": {"steps": [20, 40, 100], "stepSeconds": 5}}
    spec = deployment(
        "shop-v2",
        "shop",
        "demo:v2",
        steps,
        analysis=ANALYSIS,
        rollback={"automatic": False},  # ends Failed, the new instances kept
        progressDeadlineSeconds=30,
    )
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(spec)
        try:
            lockgate.watch_status(
                "shop-v2",
                "deployments",
                lambda s: any(r["verdict"] == "Passed" for r in s.get("analysis") or []),
                "a first analysis passed through Prometheus",
            )
            prometheus.stop()
            stopped = datetime.now(UTC)
            status = lockgate.wait_phase("shop-v2", {"Failed", "RolledBack", "Succeeded"})
        finally:
            prometheus.start()
        load.wait_answered(len(load.responses) + 100)
    responses = load.stop()
    assert status["phase"] == "Failed", status.get("message")
    after = [run for run in status["analysis"] if _at(run) >= stopped]
    assert after, status["analysis"]
    assert {run["verdict"] for run in after} == {"Inconclusive"}, after
    assert all(f"Prometheus at {prometheus.url} unreachable" in run["reason"] for run in after)
    failure = status["failure"]
    assert "no passed analysis within progressDeadlineSeconds 30" in failure, failure
    assert f"Prometheus at {prometheus.url} unreachable" in failure, failure
    # Failed without automatic rollback: the traffic is back on the previous version.
    assert [r.version for r in responses[-100:]] == ["v1"] * 100, by_version(responses[-100:])
