"""The container image hack/build-image builds (Dockerfile, FROM a base image made locally
from Debian's packages) runs lockgate: --help, plan on an example, and the operator far
enough to answer its health endpoint against the local control plane."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.support.cluster import HACK, REPO_ROOT, Cluster
from tests.support.local_http import http_status
from tests.support.operator_fixtures import free_port
from tests.support.rollouts import cpu_ticks, wait_for
from tests.support.shared_run import exclusive

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Image:
    ref: str
    env: dict[str, str]

    def docker(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            check=False,
        )

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """docker run as the image's own user, with a read-only root filesystem."""
        return self.docker("run", "--rm", "--read-only", "--network=none", *args)


@pytest.fixture(scope="module")
def image() -> Image:
    started = time.monotonic()
    with exclusive("image"):  # one build at a time in a run shared by several workers
        built = subprocess.run(
            [str(HACK / "build-image")], capture_output=True, text=True, timeout=1800, check=False
        )
    assert built.returncode == 0, f"hack/build-image failed:\n{built.stderr[-4000:]}"
    print(f"hack/build-image: {time.monotonic() - started:.1f}s")
    engine = subprocess.run(
        [str(HACK / "build-image"), "env"], capture_output=True, text=True, timeout=120, check=True
    )
    env = dict(os.environ)
    for line in engine.stdout.splitlines():
        name, _, value = line.removeprefix("export ").partition("=")
        env[name] = value
    return Image(built.stdout.strip().splitlines()[-1], env)


def test_image_is_slim_non_root_and_from_the_local_base(image: Image) -> None:
    inspect = image.docker("image", "inspect", image.ref)
    assert inspect.returncode == 0, inspect.stderr
    (info,) = json.loads(inspect.stdout)
    assert info["Config"]["User"] == "65532:65532"
    assert info["Config"]["Entrypoint"] == ["lockgate"]
    assert info["Config"]["Labels"]["dev.lockgate.base"].startswith("lockgate-base:")
    size_mb = info["Size"] / 1e6
    print(f"{image.ref}: {size_mb:.0f} MB")
    assert size_mb < 300, f"the image grew to {size_mb:.0f} MB"
    whoami = image.run("--entrypoint", "id", image.ref, "-u")
    assert whoami.stdout.strip() == "65532"


def test_image_answers_help_and_plans_an_example(image: Image) -> None:
    helped = image.run(image.ref, "--help")
    assert helped.returncode == 0 and "usage: lockgate" in helped.stdout, helped.stderr
    operator_help = image.run(image.ref, "operator", "--help")
    assert operator_help.returncode == 0 and "--leader-elect" in operator_help.stdout
    examples = REPO_ROOT / "manifests" / "examples" / "kubernetes"
    planned = image.run(
        f"--volume={examples}:/examples:ro",
        image.ref,
        "plan",
        "-f",
        "/examples/canary.yaml",
        "-f",
        "/examples/application.yaml",
    )
    assert planned.returncode == 0, planned.stderr
    assert "Deployment shop-v2-canary: shop -> demo:v2" in planned.stdout
    assert "Worst-case duration" in planned.stdout


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    proc = cluster.kubectl("create", "namespace", name)
    assert proc.returncode == 0, proc.stderr
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_operator_in_the_image_answers_its_health_endpoint(
    image: Image, cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The operator in the container, scoped to an empty namespace (so it acts on nothing
    of other tests), with a self-contained kubeconfig mounted read-only."""
    flat = cluster.kubectl("config", "view", "--flatten", "--minify")
    assert flat.returncode == 0, flat.stderr
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(flat.stdout, encoding="utf-8")
    os.chown(kubeconfig, 65532, 65532)
    kubeconfig.chmod(0o600)
    health, metrics = free_port(), free_port()
    name = f"lockgate-health-{uuid.uuid4().hex[:6]}"
    started = image.docker(
        "run",
        "--detach",
        f"--name={name}",
        "--read-only",
        "--tmpfs=/tmp",
        "--network=host",  # the build engine's host network is this machine's: the API server
        f"--volume={kubeconfig}:/var/run/lockgate/kubeconfig:ro",
        "--env=KUBECONFIG=/var/run/lockgate/kubeconfig",
        f"--env=LOCKGATE_METRICS_PORT={metrics}",
        image.ref,
        "operator",
        f"--namespace={namespace}",
        f"--liveness=http://127.0.0.1:{health}/healthz",
    )
    assert started.returncode == 0, started.stderr

    def logs() -> str:
        shown = image.docker("logs", name)
        return shown.stdout + shown.stderr

    def healthy() -> bool:
        if http_status(f"http://127.0.0.1:{health}/healthz") == 200:
            return True
        running = image.docker("inspect", "--format={{.State.Running}}", name)
        if running.stdout.strip() != "true":
            raise AssertionError("the operator's container stopped")
        return False

    try:
        # The container's process as this machine sees it (the engine is local: --network=host
        # reaches the API server): starting, the operator works until it answers.
        found = image.docker("inspect", "--format={{.State.Pid}}", name).stdout.strip()
        pid = int(found) if found.isdigit() else 0
        try:
            wait_for(
                "the operator in the container to answer /healthz",
                healthy,
                lambda: cpu_ticks(pid) if pid else None,
                every=0.3,
            )
        except AssertionError as err:
            raise AssertionError(f"{err}\n{logs()[-4000:]}") from None
        assert httpx.get(f"http://127.0.0.1:{metrics}/metrics", timeout=2).status_code == 200
        state = image.docker("inspect", "--format={{.State.Running}}", name)
        assert state.stdout.strip() == "true", logs()[-4000:]
    finally:
        image.docker("rm", "--force", name)
