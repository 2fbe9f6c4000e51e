"""Session fixture `prometheus`: the local Prometheus (hack/prometheus) scraping the local
Traefik, started as cluster_fixtures starts Traefik: one already running is reused and left
running, one this session started is stopped at its end (in a run shared by several workers,
by the run's controller: tests/support/shared_run.py). One that cannot start fails the run
with its reason, never a skip."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.cluster import (
    ComponentError,
    Prometheus,
    Traefik,
    prometheus_info,
    prometheus_running,
    start_prometheus,
    stop_prometheus,
)
from tests.support.shared_run import exclusive, stops_at_session_end


@pytest.fixture(scope="session")
def prometheus(traefik: Traefik) -> Iterator[Prometheus]:
    with exclusive():
        reused = prometheus_running()
        if not reused:
            try:
                start_prometheus()
            except ComponentError as exc:
                stop_prometheus()  # what it left half-started
                pytest.fail(str(exc), pytrace=False)
        stop = stops_at_session_end("prometheus", reused)
    try:
        yield prometheus_info()
    finally:
        if stop:
            stop_prometheus()
