"""Session fixtures for the local control plane (`cluster`) and Traefik (`traefik`).

A component already running (a developer's environment) is reused and left running; one that
this session started is stopped at the end. The control plane's CRDs are re-applied either
way. A component that cannot start fails the run with its reason: an integration test never
turns into a silent skip.
"""

from __future__ import annotations

from collections.abc import Iterator

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


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    reused = cluster_running()
    # `up` also on a running cluster: it is idempotent and re-applies the CRDs from crds/,
    # so a developer's long-running cluster tests the CRDs of the current work tree.
    try:
        start_cluster()
    except ComponentError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield cluster_info()
    finally:
        if not reused:
            stop_cluster()


@pytest.fixture(scope="session")
def traefik(cluster: Cluster) -> Iterator[Traefik]:
    reused = traefik_running()
    if not reused:
        try:
            start_traefik()
        except ComponentError as exc:
            pytest.fail(str(exc), pytrace=False)
    try:
        yield traefik_info()
    finally:
        if not reused:
            stop_traefik()
