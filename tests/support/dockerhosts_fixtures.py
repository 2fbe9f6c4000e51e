"""Session fixtures for the demo app (`demo_app_binary`) and the Docker hosts (`docker_hosts`).

As with the control plane: hosts already running (a developer's environment) are reused and
left running; hosts this session started are stopped at the end. `up` runs either way (it is
idempotent and rebuilds the demo images when the demo app changed). A component that cannot
start fails the run with its reason, never a silent skip.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.dockerhosts import (
    ComponentError,
    DockerHost,
    build_demo_app,
    docker_hosts_running,
    start_docker_hosts,
    stop_docker_hosts,
)
from tests.support.shared_run import exclusive, stops_at_session_end


@pytest.fixture(scope="session")
def demo_app_binary() -> Path:
    """Path of the static demo-app binary (hack/build-demo-app)."""
    failure = ""
    try:
        with exclusive():
            return build_demo_app()
    except ComponentError as exc:
        failure = str(exc)
    pytest.fail(failure, pytrace=False)  # outside `except`: one message, no chained traceback


@pytest.fixture(scope="session")
def docker_hosts(demo_app_binary: Path) -> Iterator[list[DockerHost]]:
    """host1 (unix), host2 (tcp + mutual TLS), host3 (ssh), each with the demo images."""
    with exclusive():
        reused = docker_hosts_running()
        failure = ""
        try:
            hosts = start_docker_hosts()
        except ComponentError as exc:
            failure = str(exc)
            if not reused:
                stop_docker_hosts()  # what `up` left half-started
        if failure:
            pytest.fail(failure, pytrace=False)
        stop = stops_at_session_end("dockerhosts", reused)
    try:
        yield hosts
    finally:
        if stop:
            stop_docker_hosts()


@pytest.fixture(scope="session")
def docker_hosts_by_name(docker_hosts: list[DockerHost]) -> dict[str, DockerHost]:
    """The hosts by name: docker_hosts_by_name["host3"]."""
    return {h.name: h for h in docker_hosts}
