"""Deleting a namespace that holds a rollout in flight never hangs, in either watch mode the
chart offers (`watchNamespaces`, the demo's mode, and cluster-wide): lockgate's finalizers
in it are released, whether the operator was running when the deletion began or started
while the namespace was already terminating."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client

from tests.support.cluster import Cluster, Traefik
from tests.support.operator_fixtures import Operator, free_port, operator_env
from tests.support.rollouts import Lockgate, application, deployment, wait_for

pytestmark = pytest.mark.integration

PAUSED_CANARY = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]},
}


@pytest.fixture(params=["watchNamespaces", "cluster-wide"])
def watched(
    request: pytest.FixtureRequest,
    cluster: Cluster,
    traefik: Traefik,
    kubelet: object,
    tmp_path: Path,
) -> Iterator[tuple[Lockgate, Operator]]:
    """A fresh namespace served in each watch mode the chart offers, by an operator of the
    test's own that watches only it or the whole cluster. It serves a shard of its own, which
    the session's operator leaves alone: so the test may kill it beside the other tests."""
    name = f"t-ns-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(cluster.api_client())
    core.create_namespace({"metadata": {"name": name}})
    lg = Lockgate(cluster.api_client(), name, shard=name)
    scope = ("--namespace", name) if request.param == "watchNamespaces" else ("--all-namespaces",)
    serving = Operator(
        operator_env(cluster, traefik),
        tmp_path / "operator",
        free_port(),
        scope=scope,
        args=("--shard", name),
        die_with_parent=True,
    )
    serving.start()
    try:
        yield lg, serving
    finally:
        serving.stop()
        try:
            core.delete_namespace(name)
        except client.ApiException as err:
            if err.status != 404:
                raise


def canary_paused_mid_rollout(lg: Lockgate) -> None:
    lg.create(application("shop", 2, namespace=lg.namespace))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    lg.wait_phase("shop-v1", {"Succeeded"})
    lg.create(deployment("shop-v2", "shop", "demo:v2", PAUSED_CANARY))
    status = lg.wait_phase("shop-v2", {"Paused"})
    assert status["weights"] == {"stable": 50, "canary": 50}, status


def wait_gone(lg: Lockgate, core: client.CoreV1Api) -> None:
    """Until the namespace is gone; once it and its Pods stop changing before that, the
    failure names what still holds it. (The namespace controller waits out its Pods'
    termination grace before it looks again; lockgate gives its Pods drainSeconds + 10.)"""
    name = lg.namespace
    holding: list[str] = []

    def gone() -> bool:
        try:
            ns = core.read_namespace(name)
        except client.ApiException as err:
            if err.status == 404:
                return True
            raise
        holding[:] = [
            f"{c.type}: {c.message}" for c in ns.status.conditions or [] if c.status == "True"
        ]
        return False

    try:
        wait_for(f"namespace {name} gone", gone, lambda: (holding[:], lg.pod_versions("")))
    except AssertionError as err:
        raise AssertionError(f"{err}; still holding it: {holding}") from None


def test_deleting_a_watched_namespace_mid_canary_finishes(
    cluster: Cluster, watched: tuple[Lockgate, Operator]
) -> None:
    lg, serving = watched
    canary_paused_mid_rollout(lg)
    core = client.CoreV1Api(cluster.api_client())

    core.delete_namespace(lg.namespace)

    wait_gone(lg, core)
    assert serving.alive(), "the operator kept running"


def test_a_namespace_already_terminating_when_the_operator_starts_is_released(
    cluster: Cluster, watched: tuple[Lockgate, Operator]
) -> None:
    """The second `hack/demo` hung here: its new operator started while the previous demo's
    namespace was already terminating."""
    lg, serving = watched
    canary_paused_mid_rollout(lg)
    core = client.CoreV1Api(cluster.api_client())
    serving.kill()

    core.delete_namespace(lg.namespace)
    # The namespace controller has reported what blocks it: lockgate's finalizers.
    wait_for(
        "the namespace to report its remaining finalizers",
        lambda: any(
            c.type == "NamespaceFinalizersRemaining" and c.status == "True"
            for c in core.read_namespace(lg.namespace).status.conditions or []
        ),
        lambda: (core.read_namespace(lg.namespace).metadata.resource_version, lg.pod_versions("")),
    )
    serving.start()

    wait_gone(lg, core)
