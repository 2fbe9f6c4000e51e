"""Session fixture `metrics_server`: metrics-server (hack/metrics-server) serving the resource
metrics API (metrics.k8s.io) from the process kubelet's /metrics/resource.

Started as the other components are: one already running is reused and left running, one
this session started is stopped at its end (in a shared run, by the run's controller). One
that cannot start fails the run with its log tail, never a skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.cluster import UP_TIMEOUT_S, hack
from tests.support.kubelet_fixtures import ProcessKubelet
from tests.support.shared_run import exclusive, stops_at_session_end


@dataclass(frozen=True)
class MetricsServer:
    url: str
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no metrics-server log: {exc})"


def metrics_server_info() -> MetricsServer:
    values: dict[str, str] = {}
    for line in hack("metrics-server", "env").stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value
    return MetricsServer(
        url=values["LOCKGATE_METRICS_SERVER_URL"],
        log_path=Path(values["LOCKGATE_METRICS_SERVER_LOG"]),
    )


@pytest.fixture(scope="session")
def metrics_server(kubelet: ProcessKubelet) -> Iterator[MetricsServer]:
    with exclusive():
        status = hack("metrics-server", "status").returncode
        reused = status != 1  # 1: stopped; 2: runs, its APIService not (yet) Available
        if status != 0:
            # Idempotent: registers the APIService again (a fresh etcd lost it) and waits.
            proc = hack("metrics-server", "up", timeout=UP_TIMEOUT_S)
            if proc.returncode != 0:
                if not reused:
                    hack("metrics-server", "down", timeout=60.0)
                pytest.fail(
                    f"metrics-server could not start (hack/metrics-server up exited "
                    f"{proc.returncode}):\n{proc.stderr[-6000:]}{proc.stdout[-2000:]}",
                    pytrace=False,
                )
        stop = stops_at_session_end("metrics-server", reused)
    try:
        yield metrics_server_info()
    finally:
        if stop:
            hack("metrics-server", "down", timeout=60.0)
