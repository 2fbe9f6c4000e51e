"""Reading Pod CPU and memory from metrics.k8s.io: Kubernetes quantities and PodMetricsList,
and the process kubelet's /metrics/resource page that metrics-server parses."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from hack.tools.kubelet import ContainerSample, process_tree_usage, render_resource_metrics
from lockgate.probes.kube_resources import (
    PodUsage,
    QuantityError,
    parse_quantity,
    pod_usage,
    usage_from_list,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("12345n", 12345e-9),
        ("250m", 0.25),
        ("1", 1.0),
        ("2.5", 2.5),
        ("100u", 100e-6),
        ("100Ki", 102400.0),
        ("100Mi", 100 * 2**20),
        ("1Gi", 2**30),
        ("1.5G", 1.5e9),
        ("3k", 3000.0),
        ("1e3", 1000.0),
        ("12E-3", 0.012),
        ("0", 0.0),
        (".5", 0.5),
    ],
)
def test_quantities_as_metrics_server_writes_them(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("text", ["", "abc", "12Q", "1.2.3", "Mi", "5 Mi", "1e", "--1"])
def test_a_non_quantity_is_refused(text: str) -> None:
    with pytest.raises(QuantityError):
        parse_quantity(text)


def pod_metrics(name: str, *containers: tuple[str, str], window: str = "10.5s") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "timestamp": "2026-12-01T00:00:00Z",
        "window": window,
        "containers": [
            {"name": f"c{i}", "usage": {"cpu": cpu, "memory": memory}}
            for i, (cpu, memory) in enumerate(containers)
        ],
    }


LISTING = {
    "kind": "PodMetricsList",
    "apiVersion": "metrics.k8s.io/v1beta1",
    "items": [
        pod_metrics("web-canary", ("500000000n", "20Mi"), ("250m", "1Mi")),
        pod_metrics("web-stable", ("1234n", "8000Ki"), window="1m0s"),
        pod_metrics("other", ("1", "1Gi")),
    ],
}


def test_a_pod_is_the_sum_of_its_containers() -> None:
    usage = usage_from_list(LISTING, ["web-canary", "web-stable"])
    at = datetime(2026, 12, 1, tzinfo=UTC)
    assert usage == {
        "web-canary": PodUsage(
            cpu_cores=0.75, memory_bytes=21 * 2**20, window_s=10.5, measured_at=at
        ),
        "web-stable": PodUsage(
            cpu_cores=pytest.approx(1.234e-6),
            memory_bytes=8000 * 1024,
            window_s=60.0,
            measured_at=at,
        ),
    }


def test_without_names_every_pod_and_a_pod_without_figures_is_absent() -> None:
    assert set(usage_from_list(LISTING)) == {"web-canary", "web-stable", "other"}
    assert usage_from_list(LISTING, ["not-scraped-yet"]) == {}
    assert usage_from_list({"items": None}) == {}


def test_a_broken_figure_is_an_error_not_a_zero() -> None:
    broken = {"items": [pod_metrics("p", ("lots", "1Mi"))]}
    with pytest.raises(QuantityError, match="lots"):
        usage_from_list(broken)


class FakeCustom:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def list_namespaced_custom_object(self, *args: Any) -> dict[str, Any]:
        self.calls.append(args)
        return LISTING


class FakeKube:
    """lockgate.kube.Kube's face that pod_usage uses: .custom and .call."""

    def __init__(self) -> None:
        self.custom = FakeCustom()

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)


def test_pod_usage_asks_the_resource_metrics_api_of_the_namespace() -> None:
    kube = FakeKube()
    usage = asyncio.run(pod_usage(kube, "shop", ["web-canary"]))  # type: ignore[arg-type]
    assert kube.custom.calls == [("metrics.k8s.io", "v1beta1", "shop", "pods")]
    assert usage["web-canary"].cpu_cores == pytest.approx(0.75)


# --- the process kubelet's side: what metrics-server parses ------------------------------------


def test_resource_metrics_page_parses_as_prometheus_text() -> None:
    now = time.time()
    samples = [
        ContainerSample("shop", 'odd"pod', "app", now - 30, 12.5, 4096),
        ContainerSample("shop", "web", "app", now - 60, 0.25, 8192),
    ]
    page = render_resource_metrics(100.0, 2**30, samples, now)
    values = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }
    labels = (("container", "app"), ("namespace", "shop"), ("pod", 'odd"pod'))
    assert values[("container_cpu_usage_seconds_total", labels)] == 12.5
    assert values[("container_memory_working_set_bytes", labels)] == 4096
    assert values[("container_start_time_seconds", labels)] == pytest.approx(now - 30)
    assert values[("pod_cpu_usage_seconds_total", labels[1:])] == 12.5
    assert values[("node_cpu_usage_seconds_total", ())] == 100.0
    assert values[("node_memory_working_set_bytes", ())] == 2**30
    assert values[("scrape_error", ())] == 0
    # Each sample carries the time it was measured (ms), as the kubelet's do.
    line = next(x for x in page.splitlines() if x.startswith("node_cpu_usage_seconds_total "))
    assert line.split()[-1] == str(int(now * 1000))


def test_process_tree_usage_counts_the_live_children() -> None:
    """A parent that only waits, with a child burning CPU: the child's time is the tree's
    while it still runs (a container's processes are a tree, not one process)."""
    parent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys\n"
            "subprocess.Popen([sys.executable, '-c', 'while True: pass']).wait()\n",
        ],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 20
        usage = process_tree_usage(parent.pid)
        while usage is not None and usage[0] < 0.3 and time.monotonic() < deadline:
            time.sleep(0.05)
            usage = process_tree_usage(parent.pid)
        assert usage is not None
        cpu, rss = usage
        assert cpu >= 0.3, f"the tree used {cpu:.2f} CPU seconds; the burning child is missed"
        assert rss > 0
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait()
    assert process_tree_usage(parent.pid) is None
