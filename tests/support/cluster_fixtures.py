"""Session fixtures for the local control plane (`cluster`) and Traefik (`traefik`).

A component already running (a developer's environment) is reused and left running; one that
this session started is stopped at the end. The control plane's CRDs are re-applied either
way. A component that cannot start fails the run with its reason: an integration test never
turns into a silent skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.support.cluster import (
    Cluster,
    ComponentError,
    Traefik,
    cluster_info,
    cluster_running,
    start_cluster,
    start_traefik,
    stop_cluster,
    stop_traefik,
    traefik_info,
    traefik_running,
)
from tests.support.shared_run import exclusive, stops_at_session_end


def _start(start: Callable[[], None], cleanup: Callable[[], None] | None) -> str | None:
    """Run start(); on failure stop what it left half-started and return the reason."""
    try:
        start()
    except ComponentError as exc:
        if cleanup is not None:
            cleanup()
        return str(exc)
    return None


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    with exclusive():
        reused = cluster_running()
        # `up` also on a running cluster: it is idempotent and re-applies the CRDs from
        # crds/, so a developer's long-running cluster tests the CRDs of the current work tree.
        failure = _start(start_cluster, None if reused else stop_cluster)
        if failure:
            pytest.fail(failure, pytrace=False)
        stop = stops_at_session_end("cluster", reused)
    try:
        yield cluster_info()
    finally:
        if stop:
            stop_cluster()


@pytest.fixture(scope="session")
def traefik(cluster: Cluster) -> Iterator[Traefik]:
    with exclusive():
        reused = traefik_running()
        if not reused:
            failure = _start(start_traefik, stop_traefik)
            if failure:
                pytest.fail(failure, pytrace=False)
        stop = stops_at_session_end("traefik", reused)
    try:
        yield traefik_info()
    finally:
        if stop:
            stop_traefik()
