"""CPU and memory of the canary against stable: the engine's judgement (maxCpuIncrease,
maxMemoryIncrease), the Docker stats arithmetic behind probes.resources.DockerStats (from
stats answers recorded from a dockerd of the test hosts), the metrics.k8s.io windows behind
probes.resources.PodMetrics, and the runtime's choice of provider."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kubernetes.client.exceptions import ApiException
from pydantic import ValidationError

from lockgate.api import ApplicationSpec
from lockgate.api.deployment import Analysis, MetricsFigures
from lockgate.controller.runtime import Runtime, Settings
from lockgate.engine import MetricsSample, VersionMetrics
from lockgate.engine.analysis import CPU_FLOOR, MEMORY_FLOOR, figures, judge
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import HostUnavailable
from lockgate.kube import Kube
from lockgate.probes.resources import (
    DockerStats,
    PodMetrics,
    PodMetricsHistory,
    ResourceSample,
    StatsHistory,
    StatsPoint,
    Usage,
    cpu_cores,
    parse_stats,
    with_resources,
)

MiB = 2**20
DATA = Path(__file__).parent / "data"
T0 = datetime(2026, 1, 1, 12, 0, 0)


def analysis(**thresholds: Any) -> Analysis:
    return Analysis.model_validate({"minRequests": 10, "maxErrorRate": 0.5, **thresholds})


def sample(
    canary: tuple[float | None, float | None],
    stable: tuple[float | None, float | None],
    error: str | None = None,
) -> MetricsSample:
    return MetricsSample(
        canary=VersionMetrics(100, cpu=canary[0], memory=canary[1]),
        stable=VersionMetrics(100, cpu=stable[0], memory=stable[1]),
        resource_error=error,
    )


def verdict(a: Analysis, s: MetricsSample) -> tuple[str, str]:
    j = judge(a, s, canary_ready=1, canary_wanted=1)
    return j.verdict, j.reason


# ---------------------------------------------------------------------- the API


def test_the_thresholds_are_percentages_like_maxLatencyP95Increase() -> None:
    a = analysis(maxCpuIncrease="50%", maxMemoryIncrease=25)
    assert (a.max_cpu_increase, a.max_memory_increase) == ("50%", 25)
    for bad in ("50", "-5%", "10000%", "half"):
        with pytest.raises(ValidationError, match="percentage like '50%'"):
            analysis(maxMemoryIncrease=bad)
        with pytest.raises(ValidationError, match="percentage like '50%'"):
            analysis(maxCpuIncrease=bad)


# ---------------------------------------------------------------------- the engine


def test_a_canary_using_twice_the_memory_fails_naming_memory_and_both_figures() -> None:
    result = verdict(
        analysis(maxMemoryIncrease="50%"), sample((None, 210 * MiB), (None, 102 * MiB))
    )
    assert result == (
        "Failed",
        "canary memory 210MiB is 106% over stable's 102MiB > maxMemoryIncrease 50%",
    )


def test_a_canary_burning_cpu_fails_naming_cpu_and_both_figures() -> None:
    result = verdict(analysis(maxCpuIncrease="50%"), sample((0.6, None), (0.2, None)))
    assert result == (
        "Failed",
        "canary CPU 0.600 cores is 200% over stable's 0.200 cores > maxCpuIncrease 50%",
    )


def test_over_an_idle_stable_is_over_whatever_the_ratio() -> None:
    v, reason = verdict(analysis(maxCpuIncrease="50%"), sample((0.6, None), (0.0, None)))
    assert v == "Failed"
    assert reason.startswith("canary CPU 0.600 cores is over stable's 0.000 cores")


def test_a_canary_within_the_thresholds_passes_and_says_its_figures() -> None:
    v, reason = verdict(
        analysis(maxCpuIncrease="50%", maxMemoryIncrease="50%"),
        sample((0.29, 140 * MiB), (0.2, 100 * MiB)),
    )
    assert v == "Passed"
    assert "CPU 0.290 cores against stable's 0.200 cores" in reason
    assert "memory 140MiB against stable's 100MiB" in reason


def test_differences_within_the_noise_floor_pass_whatever_the_ratio() -> None:
    # An idle process: 3 millicores against 1 is +200%, but nothing to roll back for.
    a = analysis(maxCpuIncrease="10%", maxMemoryIncrease="10%")
    assert verdict(a, sample((0.003, 6 * MiB), (0.001, 3 * MiB)))[0] == "Passed"


@pytest.mark.parametrize(
    ("canary", "stable"),
    [((None, 5 * MiB), (0.1, 5 * MiB)), ((0.1, 5 * MiB), (None, None)), ((None, None), (0.1, 1))],
)
def test_missing_figures_are_inconclusive_never_passed(
    canary: tuple[float | None, float | None], stable: tuple[float | None, float | None]
) -> None:
    v, reason = verdict(analysis(maxCpuIncrease="50%"), sample(canary, stable))
    assert v == "Inconclusive"
    assert reason.startswith("CPU use not measured")


def test_an_unreadable_source_is_inconclusive_saying_why() -> None:
    v, reason = verdict(
        analysis(maxMemoryIncrease="50%"),
        sample((0.1, 5 * MiB), (0.1, 5 * MiB), error="metrics.k8s.io is unavailable"),
    )
    assert v == "Inconclusive"
    assert reason == "memory use not measured: metrics.k8s.io is unavailable"


def test_without_thresholds_resource_figures_change_nothing() -> None:
    assert verdict(analysis(), sample((None, None), (None, None)))[0] == "Passed"
    assert verdict(analysis(), sample((9.0, 900 * MiB), (0.1, MiB)))[0] == "Passed"


def test_a_failure_elsewhere_is_still_a_failure_when_resources_are_missing() -> None:
    s = MetricsSample(canary=VersionMetrics(100, errors=90), stable=VersionMetrics(100))
    assert verdict(analysis(maxMemoryIncrease="50%"), s)[0] == "Failed"


def test_the_run_records_the_figures() -> None:
    canary, stable = figures(sample((0.123456, 210.4 * MiB), (0.01, 100 * MiB)))
    assert canary == MetricsFigures(requests=100, error_rate=0.0, cpu=0.1235, memory=220620390)
    assert stable is not None and (stable.cpu, stable.memory) == (0.01, 100 * MiB)


FIGURE = st.one_of(st.none(), st.floats(0, 64, allow_nan=False))
PERCENT = st.integers(0, 9999)


@given(FIGURE, FIGURE, PERCENT, st.sampled_from(["cpu", "memory"]))
def test_the_verdict_follows_the_threshold(
    canary: float | None, stable: float | None, percent: int, kind: str
) -> None:
    """Failed exactly when both figures are known and the canary is over stable by more than
    the threshold and the noise floor; Inconclusive when one is missing; else Passed."""
    floor, scale = (CPU_FLOOR, 1.0) if kind == "cpu" else (MEMORY_FLOOR, float(MiB))
    c = None if canary is None else canary * scale
    s_ = None if stable is None else stable * scale
    field = "maxCpuIncrease" if kind == "cpu" else "maxMemoryIncrease"
    pair = ((c, None), (s_, None)) if kind == "cpu" else ((None, c), (None, s_))
    v, reason = verdict(analysis(**{field: f"{percent}%"}), sample(*pair))
    if c is None or s_ is None:
        assert v == "Inconclusive"
        return
    over = c - s_ > floor and (s_ == 0 or c / s_ - 1 > percent / 100)
    assert v == ("Failed" if over else "Passed"), reason
    if over:
        assert field in reason and ("CPU" if kind == "cpu" else "memory") in reason


# ---------------------------------------------------------------------- Docker stats


def recorded() -> dict[str, Any]:
    """Two one-shot stats answers of a running demo container a second apart, and one of the
    same container stopped (dockerd 1.41 API, cgroup v1: the test hosts)."""
    data: dict[str, Any] = json.loads((DATA / "docker_stats_cgroup_v1.json").read_text())
    return data


# cgroup v2 answers name the cache inactive_file and have no total_* keys (the shape dockerd
# documents; the test hosts run cgroup v1).
CGROUP_V2 = {
    "cpu_stats": {
        "cpu_usage": {"total_usage": 5_000_000_000},
        "system_cpu_usage": 100_000_000_000,
        "online_cpus": 4,
    },
    "memory_stats": {"usage": 300 * MiB, "stats": {"inactive_file": 100 * MiB, "anon": 190 * MiB}},
}


def test_memory_is_usage_without_the_inactive_file_cache() -> None:
    data = recorded()
    point = parse_stats(data["second"])
    assert point is not None
    mem = data["second"]["memory_stats"]
    assert point.memory == mem["usage"] - mem["stats"]["total_inactive_file"]
    assert point.online_cpus == 2
    v2 = parse_stats(CGROUP_V2)
    assert v2 is not None and v2.memory == 200 * MiB and v2.online_cpus == 4


def test_a_stopped_container_has_no_reading() -> None:
    assert parse_stats(recorded()["stopped"]) is None


def test_cpu_is_the_share_of_host_cpu_time_times_the_cpus() -> None:
    data = recorded()
    first, second = parse_stats(data["first"]), parse_stats(data["second"])
    assert first is not None and second is not None
    cores = cpu_cores(first, second, T0, T0 + timedelta(seconds=1))
    used = second.cpu_total - first.cpu_total
    system = cast(int, second.system) - cast(int, first.system)
    assert cores == pytest.approx(used / system * 2)
    assert 0 <= cast(float, cores) < 0.05  # an idle demo app


def test_cpu_arithmetic() -> None:
    before = StatsPoint(1_000_000_000, 10_000_000_000, 2, None)
    after = StatsPoint(1_600_000_000, 12_000_000_000, 2, None)
    # 0.6 s of CPU while the host's two CPUs counted 2 s: 0.3 of the host, 0.6 cores.
    assert cpu_cores(before, after, T0, T0) == pytest.approx(0.6)
    # Without the system figure: CPU seconds per second of the readings' times.
    plain_before = StatsPoint(1_000_000_000, None, 2, None)
    plain_after = StatsPoint(1_600_000_000, None, 2, None)
    assert cpu_cores(plain_before, plain_after, T0, T0 + timedelta(seconds=2)) == pytest.approx(0.3)
    # A restarted container's counter starts again: no figure rather than a negative one.
    assert cpu_cores(after, before, T0, T0 + timedelta(seconds=1)) is None


class FakeConns:
    """HostConnections.run over recorded answers: per container, one per reading."""

    def __init__(self, answers: dict[str, list[dict[str, Any]]]) -> None:
        self.answers = answers
        self.down: set[str] = set()

    async def run(self, host: str, fn: Callable[[Any], Any], **_: Any) -> Any:
        if host in self.down:
            raise HostUnavailable(host, "connection refused")
        conns = self

        class Api:
            @staticmethod
            def stats(container: str, stream: bool, one_shot: bool) -> dict[str, Any]:
                assert (stream, one_shot) == (False, True)
                return conns.answers[container].pop(0)

        class Client:
            api = Api()

        return fn(Client())


def reading(cpu_seconds: float, system_seconds: float, memory_mib: float) -> dict[str, Any]:
    return {
        "cpu_stats": {
            "cpu_usage": {"total_usage": int(cpu_seconds * 1e9)},
            "system_cpu_usage": int(system_seconds * 1e9),
            "online_cpus": 2,
        },
        "memory_stats": {
            "usage": int((memory_mib + 10) * MiB),
            "stats": {"total_inactive_file": 10 * MiB},
        },
    }


def test_docker_stats_averages_per_instance_over_the_window() -> None:
    # Two canary containers on two hosts, one stable; the host counts 2 CPU-seconds a second.
    conns = FakeConns(
        {
            "c1": [reading(10, 100, 200), reading(11.2, 102, 220)],  # 0.6 s/s -> 1.2 cores
            "c2": [reading(5, 100, 180), reading(5.4, 102, 180)],  # 0.4 cores
            "s1": [reading(1, 100, 100), reading(1.1, 102, 100)],  # 0.1 cores
        }
    )
    provider = DockerStats(cast(HostConnections, conns), StatsHistory())
    instances = {"canary": ["host1/c1", "host2/c2"], "stable": ["host1/s1"]}

    async def scenario() -> ResourceSample:
        await provider.keep(instances, T0)
        return await provider.usage(instances, T0, T0 + timedelta(seconds=2))

    got = asyncio.run(scenario())
    assert got.error is None
    canary, stable = got.usage["canary"], got.usage["stable"]
    assert canary.cpu == pytest.approx((1.2 + 0.4) / 2)
    assert canary.memory == pytest.approx((210 + 180) / 2 * MiB)
    assert stable.cpu == pytest.approx(0.1)
    assert stable.memory == pytest.approx(100 * MiB)


def test_docker_stats_reads_only_what_is_due_between_windows() -> None:
    conns = FakeConns({"c1": [reading(1, 100, 50)]})
    history = StatsHistory(every_seconds=1.0)
    provider = DockerStats(cast(HostConnections, conns), history)

    async def scenario() -> None:
        await provider.keep({"canary": ["host1/c1"]}, T0)
        await provider.keep({"canary": ["host1/c1"]}, T0 + timedelta(seconds=0.25))

    asyncio.run(scenario())  # a second read would find no answer left
    assert len(history.readings["host1/c1"]) == 1


def test_docker_stats_says_which_host_it_could_not_read() -> None:
    conns = FakeConns({"s1": [reading(1, 100, 100)]})
    conns.down.add("host3")
    provider = DockerStats(cast(HostConnections, conns), StatsHistory())
    got = asyncio.run(provider.usage({"canary": ["host3/c1"], "stable": ["host1/s1"]}, T0, T0))
    assert got.error == "host host3: connection refused"


def test_docker_stats_without_a_baseline_has_memory_but_no_cpu_yet() -> None:
    conns = FakeConns({"c1": [reading(1, 100, 50)], "s1": [reading(1, 100, 40)]})
    provider = DockerStats(cast(HostConnections, conns), StatsHistory())
    got = asyncio.run(provider.usage({"canary": ["host1/c1"], "stable": ["host1/s1"]}, T0, T0))
    assert got.usage["canary"] == Usage(None, 50 * MiB)
    merged = with_resources(
        MetricsSample(canary=VersionMetrics(100), stable=VersionMetrics(100)), got
    )
    v, reason = verdict(analysis(maxCpuIncrease="50%"), merged)
    assert v == "Inconclusive" and "CPU use not measured" in reason
    assert verdict(analysis(maxMemoryIncrease="50%"), merged)[0] == "Passed"


def test_a_role_without_running_instances_is_no_figure() -> None:
    provider = DockerStats(cast(HostConnections, FakeConns({})), StatsHistory())
    got = asyncio.run(provider.usage({"canary": [], "stable": []}, T0, T0))
    assert got.error == "no running canary or stable instances"


# ---------------------------------------------------------------------- the runtime


def test_kubernetes_applications_read_the_resource_metrics_api() -> None:
    rt = Runtime(cast(Kube, None), cast(Any, None), Settings())
    app = ApplicationSpec.model_validate({"kubernetes": {"template": {"spec": {"containers": []}}}})
    provider = rt.resource_provider("prod", "shop", app)
    assert isinstance(provider, PodMetrics)
    # One history per Application, kept across reconciles.
    assert cast(PodMetrics, rt.resource_provider("prod", "shop", app)).history is provider.history


# ------------------------------------------------------- Kubernetes: metrics.k8s.io windows


def pod_item(name: str, cpu: str, memory: str, at: datetime) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "timestamp": at.isoformat(),
        "window": "10s",
        "containers": [{"name": "app", "usage": {"cpu": cpu, "memory": memory}}],
    }


class FakeMetricsApi:
    """Kube's face that PodMetrics uses: list_namespaced_custom_object answers the listings
    queued (or raises the ApiException queued), and each call is counted."""

    def __init__(self, *answers: list[dict[str, Any]] | ApiException) -> None:
        self.answers = list(answers)
        self.custom = self
        self.calls = 0

    def list_namespaced_custom_object(self, *_: Any) -> dict[str, Any]:
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, ApiException):
            raise answer
        return {"items": answer}

    async def call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


PODS = {"canary": ["prod/c1"], "stable": ["prod/s1", "prod/s2"]}


def test_pod_metrics_average_the_measurements_that_ended_in_the_window() -> None:
    t = [T0 + timedelta(seconds=10 * i) for i in range(4)]
    figures_of = {"c1": ("100m", "200Mi"), "s1": ("10m", "100Mi"), "s2": ("30m", "100Mi")}
    listings = [[pod_item(n, *f, at) for n, f in figures_of.items()] for at in t]
    listings[2][0] = pod_item("c1", "300m", "400Mi", t[2])
    api = FakeMetricsApi(*listings)
    provider = PodMetrics(cast(Kube, api), PodMetricsHistory())
    for i in range(3):
        asyncio.run(provider.keep(PODS, t[i] + timedelta(seconds=1)))
    got = asyncio.run(provider.usage(PODS, t[1], t[3] + timedelta(seconds=1)))
    assert got.error is None
    # Canary: measurements at t1, t2, t3 (100m, 300m, 100m); stable: the mean of two Pods.
    assert got.usage["canary"].cpu == pytest.approx(0.5 / 3)
    assert got.usage["canary"].memory == pytest.approx((200 + 400 + 200) / 3 * MiB)
    assert got.usage["stable"] == Usage(pytest.approx(0.02), pytest.approx(100 * MiB))


def test_pod_metrics_list_once_per_namespace_and_not_more_often_than_due() -> None:
    api = FakeMetricsApi([pod_item("c1", "1m", "1Mi", T0)])
    provider = PodMetrics(cast(Kube, api), PodMetricsHistory(every_seconds=5))
    asyncio.run(provider.keep(PODS, T0))
    asyncio.run(provider.keep(PODS, T0 + timedelta(seconds=2)))
    assert api.calls == 1
    asyncio.run(provider.usage(PODS, T0, T0 + timedelta(seconds=3)))  # a window's end: always
    assert api.calls == 2


def test_a_window_shorter_than_the_resolution_takes_the_newest_measurement() -> None:
    api = FakeMetricsApi(
        [pod_item(n, "50m", "64Mi", T0) for n in ("c1", "s1", "s2")],
    )
    provider = PodMetrics(cast(Kube, api), PodMetricsHistory())
    start = T0 + timedelta(seconds=4)
    got = asyncio.run(provider.usage(PODS, start, start + timedelta(seconds=2)))
    assert got.error is None and got.usage["canary"] == Usage(0.05, 64 * MiB)


def test_a_pod_not_measured_yet_is_inconclusive_naming_it() -> None:
    api = FakeMetricsApi([pod_item(n, "50m", "64Mi", T0) for n in ("s1", "s2")])
    provider = PodMetrics(cast(Kube, api), PodMetricsHistory())
    got = asyncio.run(provider.usage(PODS, T0, T0 + timedelta(seconds=2)))
    assert got.error is not None and "no figures yet for Pod c1" in got.error
    merged = with_resources(
        MetricsSample(canary=VersionMetrics(100), stable=VersionMetrics(100)), got
    )
    assert verdict(analysis(maxMemoryIncrease="50%"), merged)[0] == "Inconclusive"


@pytest.mark.parametrize(
    ("status", "says"),
    [
        (404, "not served by this cluster"),
        (503, "unavailable (503"),
        (403, "may not list pods.metrics.k8s.io in namespace prod"),
    ],
)
def test_an_unanswering_metrics_api_is_an_error_naming_it(status: int, says: str) -> None:
    api = FakeMetricsApi(ApiException(status=status, reason="x"))
    provider = PodMetrics(cast(Kube, api), PodMetricsHistory())
    got = asyncio.run(provider.usage(PODS, T0, T0 + timedelta(seconds=2)))
    assert got.error is not None and says in got.error
