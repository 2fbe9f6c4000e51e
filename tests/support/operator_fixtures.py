"""Session fixture `operator`: lockgate's operator as it runs in production (`lockgate
operator`, i.e. kopf) in a subprocess against the local control plane and Traefik; and a
fresh namespace per test. In a run shared by several workers (tests/support/shared_run.py)
the first worker starts the operator and the others attach to it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kubernetes import client

from lockgate.controller.sharding import DEFAULT as DEFAULT_SHARD
from lockgate.controller.sharding import finalizer
from lockgate.names import GROUP, VERSION
from tests.support.cluster import REPO_ROOT, Cluster, Traefik
from tests.support.local_http import http_status
from tests.support.rollouts import Lockgate, cpu_ticks, wait_for
from tests.support.shared_run import exclusive, read_operator, shared_dir, write_operator


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Operator:
    env: dict[str, str]
    log_path: Path
    health_port: int
    scope: tuple[str, ...] = ("--all-namespaces",)  # or ("--namespace", NAME, ...)
    args: tuple[str, ...] = ()  # more `lockgate operator` flags, e.g. ("--shard", "a")
    # Killed by the kernel when the test process dies (never for the shared operator, which
    # outlives the worker that started it): a test's own operator cannot survive its run.
    die_with_parent: bool = False
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    shared_pid: int | None = None  # attached to the operator of a shared run: not ours to stop
    _logs: list[Path] = field(default_factory=list)

    def _own(self, what: str) -> None:
        if self.shared_pid is not None:
            raise RuntimeError(
                f"{what}: the operator is shared by every worker of this run; a test that "
                "kills, stops or restarts it must be marked `serial`"
            )

    def alive(self) -> bool:
        if self.shared_pid is not None:
            return Path(f"/proc/{self.shared_pid}").exists()
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self._own("start")
        self.starts += 1
        log = self.log_path.with_suffix(f".{self.starts}.log")
        self._logs.append(log)
        handle = log.open("wb")
        self.process = subprocess.Popen(
            [
                str(Path(sys.executable).with_name("lockgate")),  # the virtualenv running the tests
                "operator",
                *self.scope,
                *self.args,
                "--liveness",
                f"http://127.0.0.1:{self.health_port}/healthz",
            ],
            env=self.env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=REPO_ROOT,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        process = self.process

        def healthy() -> bool:
            if process.poll() is not None:
                pytest.fail(f"the operator exited at start:\n{self.log_text()[-4000:]}")
            return http_status(f"http://127.0.0.1:{self.health_port}/healthz") == 200

        try:
            # Starting, the operator works (its CPU time moves) until it answers.
            wait_for(
                "the operator to answer /healthz",
                healthy,
                lambda: cpu_ticks(process.pid),
                every=0.2,
            )
        except AssertionError as err:
            self.kill()  # a start that failed leaves no operator running
            pytest.fail(f"{err}:\n{self.log_text()[-4000:]}")

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        self._own("kill")
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        self._own("stop")
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self._logs if p.exists())


_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child only calls into it
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the process that started it dies (Linux)."""
    if _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")


def operator_env(cluster: Cluster, traefik: Traefik) -> dict[str, str]:
    """The environment `lockgate operator` runs with against the local cluster and Traefik."""
    return {
        **os.environ,
        **cluster.env(),
        "LOCKGATE_TRAEFIK_API_URL": traefik.api_url,
        "LOCKGATE_TRAEFIK_METRICS_URL": traefik.metrics_url,
        "LOCKGATE_METRICS_PORT": str(free_port()),
    }


@pytest.fixture(scope="session")
def operator(
    cluster: Cluster, traefik: Traefik, kubelet: object, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    shared = shared_dir()
    if shared is None:
        # Ours alone (the first worker of a shared run starts one that must outlive it).
        op = Operator(
            operator_env(cluster, traefik),
            tmp_path_factory.mktemp("operator") / "operator",
            free_port(),
            die_with_parent=True,
        )
        op.start()
        yield op
        op.stop()
        return
    with exclusive("operator"):
        state = read_operator(shared)
        if state is None:
            first = Operator(operator_env(cluster, traefik), shared / "operator", free_port())
            first.start()
            assert first.process is not None
            state = {
                "pid": first.process.pid,
                "env": first.env,
                "health_port": first.health_port,
                "log": str(first._logs[0]),
            }
            write_operator(shared, state)
    op = Operator(state["env"], Path(state["log"]), state["health_port"], shared_pid=state["pid"])
    op._logs.append(Path(state["log"]))
    yield op  # the run's controller stops it after the last worker


def stop_shared_operator(shared: Path) -> None:
    """In the controller of a shared run, after every worker finished."""
    state = read_operator(shared)
    if state is None:
        return
    pid = state["pid"]
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def lockgate(cluster: Cluster, operator: Operator) -> Iterator[Lockgate]:
    """lockgate objects in a fresh namespace, deleted afterwards."""
    api = cluster.api_client()
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": name}})
    yield Lockgate(api, name)
    core.delete_namespace(name)


@pytest.fixture
def own_operator(
    cluster: Cluster, traefik: Traefik, kubelet: object, lockgate: Lockgate, tmp_path: Path
) -> Iterator[Operator]:
    """An operator of the test's own, to kill, stop and restart: it serves a shard named
    after the test's namespace, on that namespace only, and the Applications the test
    creates through `lockgate` are labelled for it. The shared operator (the default shard)
    leaves them alone, so such a test runs beside the others instead of alone."""
    shard = lockgate.namespace
    lockgate.shard = shard
    op = Operator(
        operator_env(cluster, traefik),
        tmp_path / "own-operator",
        free_port(),
        scope=("--namespace", lockgate.namespace),
        args=("--shard", shard),
        die_with_parent=True,
    )
    op.start()
    try:
        yield op
        # Had the shared operator acted too, it would have driven on while the test's own was
        # killed: its finalizer on any of the test's objects is the trace it leaves.
        touched = touched_by_the_default_shard(lockgate)
        assert not touched, f"the shared operator acted on the test's own shard: {touched}"
    finally:
        try:
            release(lockgate, [op])
        finally:
            op.stop()


def touched_by_the_default_shard(lg: Lockgate) -> list[str]:
    """The namespace's Applications and Deployments that carry the default shard's finalizer:
    the trace an operator of the default shard (the shared one) leaves where it acted."""
    return [
        f"{plural}/{item['metadata']['name']}"
        for plural in ("applications", "deployments")
        for item in lg.items(plural)
        if finalizer(DEFAULT_SHARD) in (item["metadata"].get("finalizers") or [])
    ]


def release(lg: Lockgate, operators: Iterable[Operator]) -> None:
    """Delete the test's lockgate objects while their operators run, so that no finalizer of
    a shard whose operator is gone keeps the namespace from being deleted afterwards."""
    for op in operators:
        if not op.alive():
            op.start()
    plurals = ("deployments", "applications")

    def names(plural: str) -> list[str]:
        return [item["metadata"]["name"] for item in lg.items(plural)]

    for plural in plurals:
        for name in names(plural):
            lg.custom.delete_namespaced_custom_object(GROUP, VERSION, lg.namespace, plural, name)

    def left() -> list[tuple[str, str, str]]:
        """(plural, name, resourceVersion) of what is left: the operators releasing an object
        change it (status, finalizers) until it is gone."""
        return [(plural, *version) for plural in plurals for version in lg.versions(plural)]

    try:
        wait_for("the test's objects deleted", lambda: not left(), left)
    finally:
        for plural in plurals:  # what an operator failed to release: let it go
            for name in names(plural):
                lg.custom.patch_namespaced_custom_object(
                    GROUP, VERSION, lg.namespace, plural, name, {"metadata": {"finalizers": None}}
                )
