"""The README's first command, run twice in a row as a new user would: both runs end with
the rollout Succeeded and every request through Traefik answered."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator

import pytest

from tests.support.cluster import REPO_ROOT, Cluster, Traefik
from tests.support.operator_fixtures import Operator, touched_by_the_default_shard
from tests.support.rollouts import Lockgate

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


def run_demo() -> str:
    env = {**os.environ, "LOCKGATE_DEMO_CANARY": "tests/data/demo/canary-short.yaml"}
    proc = subprocess.run(
        [str(REPO_ROOT / "hack/demo")], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, (
        f"hack/demo exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc.stdout


@pytest.mark.usefixtures("demo")
def test_the_demo_runs_twice_in_a_row_and_loses_no_request(cluster: Cluster) -> None:
    for run in ("first", "second"):
        out = run_demo()
        closing = CLOSING.findall(out)
        assert closing, f"the {run} run printed no closing line:\n{out[-3000:]}"
        requests, failures = map(int, closing[-1])
        assert requests > 0 and failures == 0, f"the {run} run: {closing[-1]}"
        assert "Succeeded: " in out, f"the {run} run did not succeed:\n{out[-3000:]}"
        touched = touched_by_the_default_shard(Lockgate(cluster.api_client(), DEMO_NS))
        assert not touched, f"the session's operator acted on the demo's shard: {touched}"
