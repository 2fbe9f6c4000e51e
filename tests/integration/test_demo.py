"""The README's first command, run twice in a row as a new user would: both runs end with
the rollout Succeeded and every request through Traefik answered."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import REPO_ROOT, Cluster, Traefik
from tests.support.operator_fixtures import Operator, touched_by_the_default_shard
from tests.support.rollouts import Lockgate, wait_for

pytestmark = pytest.mark.integration

DEMO_NS = "lockgate-demo"
CLOSING = re.compile(r"^(\d+) requests through Traefik, (\d+) failed\.$", re.MULTILINE)


@pytest.fixture
def demo(cluster: Cluster, traefik: Traefik, kubelet: object, operator: Operator) -> Iterator[None]:
    """The demo runs its own operator for a shard of its own, beside the session's operator
    (the default shard), as it would beside a lockgate already installed in a cluster."""
    try:
        yield
    finally:
        subprocess.run([str(REPO_ROOT / "hack/demo"), "stop"], check=False, timeout=300)


def run_demo(logs: Path, lockgate: Lockgate) -> str:
    """hack/demo's output once it has exited 0. No wall-clock limit: it is waited for while
    it brings the environment up (its log lines) and its rollouts move (their Deployments
    change); stuck for `QUIET_S`, it fails. Its live view prints every second, moving or
    not, so its output says nothing of progress."""
    env = {**os.environ, "LOCKGATE_DEMO_CANARY": "tests/data/demo/canary-short.yaml"}
    out, err = logs / "demo.out", logs / "demo.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [str(REPO_ROOT / "hack/demo")], env=env, stdout=stdout, stderr=stderr
        )

    def tail() -> str:
        return f"{out.read_text()[-3000:]}\n{err.read_text()[-3000:]}"

    try:
        wait_for(
            "hack/demo to finish",
            lambda: proc.poll() is not None,
            lambda: (err.stat().st_size, lockgate.versions("deployments")),
        )
    except AssertionError as stuck:
        proc.kill()
        proc.wait()
        raise AssertionError(f"{stuck}:\n{tail()}") from None
    assert proc.returncode == 0, f"hack/demo exited {proc.returncode}:\n{tail()}"
    return out.read_text()


@pytest.mark.usefixtures("demo")
def test_the_demo_runs_twice_in_a_row_and_loses_no_request(
    cluster: Cluster, tmp_path: Path
) -> None:
    lockgate = Lockgate(cluster.api_client(), DEMO_NS)
    for run in ("first", "second"):
        (logs := tmp_path / run).mkdir()
        out = run_demo(logs, lockgate)
        closing = CLOSING.findall(out)
        assert closing, f"the {run} run printed no closing line:\n{out[-3000:]}"
        requests, failures = map(int, closing[-1])
        assert requests > 0 and failures == 0, f"the {run} run: {closing[-1]}"
        assert "Succeeded: " in out, f"the {run} run did not succeed:\n{out[-3000:]}"
        touched = touched_by_the_default_shard(lockgate)
        assert not touched, f"the session's operator acted on the demo's shard: {touched}"
