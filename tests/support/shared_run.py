"""A test run spread over pytest-xdist workers (`pytest -n N`) shares one local environment
and one operator, as a cluster shares one lockgate.

Each worker runs the session fixtures itself, so they must not race or stop what another
worker still uses. In a shared run:
- the run's controller (the process that spawns the workers) makes a directory for the run
  and names it in LOCKGATE_TEST_SHARED, which the workers inherit;
- a fixture starts a component while holding the run's lock, so the first worker starts it
  and the others find it running;
- no worker stops anything: a component a worker started is recorded, and the controller
  stops it (and the shared operator) once every worker has finished;
- a test that kills or restarts an operator uses one of its own (`own_operator`: a shard of
  its own, which the shared operator leaves alone) and runs beside the others;
- tests that disrupt what the others share (stop the shared operator, restart the control
  plane, kill a Docker daemon) are marked `serial` and run in a run of their own (`hack/test`
  runs them after the parallel phase); one that tries it anyway in a shared run fails.

Outside a shared run (plain `pytest`) every fixture behaves as before: it reuses what runs
and stops what it started.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

SHARED_ENV = "LOCKGATE_TEST_SHARED"
STARTED = "started"  # the components workers started, one name a line, in start order
OPERATOR = "operator.json"  # the shared operator: pid, ports, log
_RUN_DIR = pytest.StashKey[Path]()


def shared_dir() -> Path | None:
    """The run's directory when this process is one of several workers, else None."""
    value = os.environ.get(SHARED_ENV)
    return Path(value) if value else None


def begin_shared_run() -> Path:
    """In the controller, before the workers start: the run's directory, named in the
    environment the workers inherit."""
    path = Path(tempfile.mkdtemp(prefix="lockgate-shared-run."))
    os.environ[SHARED_ENV] = str(path)
    return path


@contextmanager
def exclusive(name: str = "environment") -> Iterator[None]:
    """Held by one worker of a shared run at a time; a no-op in a single process."""
    shared = shared_dir()
    if shared is None:
        yield
        return
    with (shared / f"{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def stops_at_session_end(component: str, reused: bool) -> bool:
    """Whether this session stops `component` at its end: the one that started it, unless
    the run is shared; then the controller stops it after the last worker."""
    shared = shared_dir()
    if shared is None:
        return not reused
    if not reused:
        with (shared / STARTED).open("a") as started:
            started.write(component + "\n")
    return False


def started_components(shared: Path) -> list[str]:
    path = shared / STARTED
    return path.read_text().split() if path.exists() else []


def read_operator(shared: Path) -> dict[str, Any] | None:
    path = shared / OPERATOR
    return json.loads(path.read_text()) if path.exists() else None


def write_operator(shared: Path, state: dict[str, Any]) -> None:
    (shared / OPERATOR).write_text(json.dumps(state))


# --- the run's controller (pytest hooks; no-ops in a worker or a single process) ----------


def _is_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"


def pytest_configure(config: pytest.Config) -> None:
    if _is_controller(config):
        config.stash[_RUN_DIR] = begin_shared_run()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A worker of a shared run leaves out the `serial` tests (hack/test runs them after);
    every worker leaves out the same ones, as xdist requires."""
    if shared_dir() is None:
        return
    serial = [item for item in items if item.get_closest_marker("serial")]
    if serial:
        config.hook.pytest_deselected(items=serial)
        items[:] = [item for item in items if not item.get_closest_marker("serial")]


def pytest_sessionfinish(session: pytest.Session) -> None:
    shared = session.config.stash.get(_RUN_DIR, None)
    if shared is None:
        return
    # Imported here: the fixture modules import this one.
    from tests.support.cluster import hack, stop_cluster, stop_prometheus, stop_traefik
    from tests.support.dockerhosts import stop_docker_hosts
    from tests.support.operator_fixtures import stop_shared_operator

    stops: dict[str, Callable[[], object]] = {
        "cluster": stop_cluster,
        "traefik": stop_traefik,
        "prometheus": stop_prometheus,
        "kubelet": lambda: hack("kubelet", "stop", timeout=60.0),
        "metrics-server": lambda: hack("metrics-server", "down", timeout=60.0),
        "dockerhosts": stop_docker_hosts,
    }
    stop_shared_operator(shared)
    for component in reversed(started_components(shared)):
        stops[component]()
    if session.exitstatus == pytest.ExitCode.OK:
        shutil.rmtree(shared, ignore_errors=True)
    else:
        print(f"\nthe shared operator's log is kept in {shared}", file=sys.stderr)
