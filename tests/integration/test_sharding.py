"""Sharding on the real control plane: two operators, `--shard a` and `--shard b`, on one
namespace (and the session's operator, the default shard, on every namespace) each act only
on the Applications labelled for their shard, and an Application moved between shards in the
middle of a rollout finishes it under the new one."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from lockgate.names import GROUP, LABEL_SHARD, VERSION
from tests.support.cluster import Cluster, Traefik
from tests.support.operator_fixtures import Operator, free_port, operator_env, release
from tests.support.rollouts import Lockgate, application, deployment, wait_for

pytestmark = pytest.mark.integration

FINALIZER = {"": "lockgate.dev/finalizer", "a": "finalizer.lockgate.dev/a"}
FINALIZER["b"] = "finalizer.lockgate.dev/b"
# Paused (indefinitely) at 20%, then a timed pause at 50%.
PAUSED_CANARY = {
    "type": "Canary",
    "canary": {
        "steps": [
            {"setWeight": 20},
            {"pause": {}},
            {"setWeight": 50},
            {"pause": {"seconds": 15}},
            {"setWeight": 100},
        ]
    },
}
TIMED_CANARY = {"type": "Canary", "canary": {"steps": [20, 60, 100], "stepSeconds": 3}}


@pytest.fixture
def shards(
    cluster: Cluster, traefik: Traefik, operator: Operator, lockgate: Lockgate
) -> Iterator[dict[str, Operator]]:
    """Operators of shards a and b on the test's namespace, stopped whatever happens (and
    killed with the test process if it dies first)."""
    started: dict[str, Operator] = {}
    try:
        for shard in ("a", "b"):
            op = Operator(
                operator_env(cluster, traefik),
                operator.log_path.with_name(f"shard-{shard}-{lockgate.namespace}"),
                free_port(),
                scope=("--namespace", lockgate.namespace),
                args=("--shard", shard),
                die_with_parent=True,
            )
            started[shard] = op
            op.start()
        yield started
    finally:
        try:
            release(lockgate, started.values())
        finally:
            for op in started.values():
                op.stop()


def labelled(app: dict[str, Any], shard: str) -> dict[str, Any]:
    app["metadata"]["labels"] = {LABEL_SHARD: shard}
    return app


def relabel(lg: Lockgate, app: str, shard: str) -> None:
    lg.custom.patch_namespaced_custom_object(
        GROUP,
        VERSION,
        lg.namespace,
        "applications",
        app,
        {"metadata": {"labels": {LABEL_SHARD: shard or None}}},
    )


def watch_object(
    lg: Lockgate,
    plural: str,
    name: str,
    predicate: Callable[[dict[str, Any]], bool],
    what: str,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Wait on the object's watch events (no polling) until `predicate(object)`."""

    def describe(last: dict[str, Any]) -> str:
        meta = last.get("metadata") or {}
        return (
            f"finalizers {meta.get('finalizers')}, labels {meta.get('labels')}, "
            f"status {last.get('status')}"
        )

    obj, _ = lg.watch(name, plural, predicate, what, timeout, describe=describe)
    return obj


def finalizers(obj: dict[str, Any]) -> list[str]:
    return list(obj["metadata"].get("finalizers") or [])


def served_by(shard: str) -> Callable[[dict[str, Any]], bool]:
    """The object carries exactly that shard's finalizer (the other shards took theirs off),
    and a Deployment the copy of its Application's shard label."""

    def check(obj: dict[str, Any]) -> bool:
        if finalizers(obj) != [FINALIZER[shard]]:
            return False
        if obj["kind"] == "Deployment":
            return (obj["metadata"].get("labels") or {}).get(LABEL_SHARD) == (shard or None)
        return True

    return check


def rollouts(op: Operator) -> dict[str, float]:
    """The operator's `lockgate_rollouts` by phase: the Deployments its own rounds saw."""
    text = httpx.get(f"http://127.0.0.1:{op.env['LOCKGATE_METRICS_PORT']}/metrics").text
    return {
        sample.labels["phase"]: sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "lockgate_rollouts"
        for sample in family.samples
    }


def succeeded(op: Operator, count: int) -> None:
    """The operator's rounds ended `count` Deployments Succeeded (its metric is set just
    after the status write another client saw: wait for it)."""
    wait_for(
        f"lockgate_rollouts{{phase='Succeeded'}} == {count}",
        lambda: rollouts(op).get("Succeeded") == count,
        lambda: rollouts(op),
    )
    assert rollouts(op).get("Succeeded") == count


def untouched(obj: dict[str, Any]) -> bool:
    """No operator acted on it: no status, no finalizer, none of kopf's annotations."""
    annotations = obj["metadata"].get("annotations") or {}
    return (
        not obj.get("status")
        and not finalizers(obj)
        and not any(key.startswith(f"{GROUP}/") for key in annotations)
    )


def test_two_shards_in_one_namespace_never_touch_each_others_applications(
    lockgate: Lockgate, shards: dict[str, Operator]
) -> None:
    lg = lockgate
    for shard in ("a", "b"):
        lg.create(labelled(application(f"shop-{shard}", 1, namespace=lg.namespace), shard))
        lg.create(deployment(f"shop-{shard}-v1", f"shop-{shard}", "demo:v1"))
    for shard in ("a", "b"):
        assert lg.wait_phase(f"shop-{shard}-v1", {"Succeeded"})
        watch_object(lg, "applications", f"shop-{shard}", served_by(shard), f"{shard}'s finalizer")
        watch_object(lg, "deployments", f"shop-{shard}-v1", served_by(shard), f"{shard}'s label")
    succeeded(shards["a"], 1)  # shop-a-v1, and only it
    succeeded(shards["b"], 1)  # shop-b-v1

    # With b's operator stopped, b's new rollout is nobody's: a (and the default shard's
    # operator, watching every namespace) leave it alone while a's finishes.
    shards["b"].stop()
    lg.create(deployment("shop-b-v2", "shop-b", "demo:v2", TIMED_CANARY))
    lg.create(deployment("shop-a-v2", "shop-a", "demo:v2", TIMED_CANARY))
    assert lg.wait_phase("shop-a-v2", {"Succeeded"})["phase"] == "Succeeded"
    assert untouched(lg.get("shop-b-v2")), lg.get("shop-b-v2")
    app_b = lg.get("shop-b", "applications")
    assert app_b["status"].get("activeDeployment") is None, app_b["status"]
    assert app_b["status"]["stable"]["image"] == "demo:v1"
    pods = lg.pods("lockgate.dev/application=shop-b")
    assert {p.spec.containers[0].image for p in pods} == {"demo:v1"}
    succeeded(shards["a"], 2)  # shop-a-v1 and shop-a-v2

    shards["b"].start()
    assert lg.wait_phase("shop-b-v2", {"Succeeded"})["phase"] == "Succeeded"
    watch_object(lg, "deployments", "shop-b-v2", served_by("b"), "b's finalizer and label")
    assert lg.get("shop-b", "applications")["status"]["stable"]["image"] == "demo:v2"
    assert finalizers(lg.get("shop-a-v2")) == [FINALIZER["a"]]


def test_an_application_moved_mid_rollout_finishes_under_the_new_shard(
    lockgate: Lockgate, shards: dict[str, Operator]
) -> None:
    lg = lockgate
    lg.create(labelled(application("shop", 1, namespace=lg.namespace), "a"))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    lg.wait_phase("shop-v1", {"Succeeded"})
    lg.create(deployment("shop-v2", "shop", "demo:v2", PAUSED_CANARY))
    status = lg.wait_phase("shop-v2", {"Paused"})
    assert status["weights"] == {"stable": 80, "canary": 20}, status
    watch_object(lg, "deployments", "shop-v2", served_by("a"), "a's finalizer and label")

    # a -> b, paused: with no event of the Deployment but b's copy of the label, b's
    # operator takes the Deployment over (its finalizer on, a's off) and a's lets go.
    relabel(lg, "shop", "b")
    watch_object(lg, "applications", "shop", served_by("b"), "the Application handed to b")
    watch_object(lg, "deployments", "shop-v2", served_by("b"), "the Deployment handed to b")
    assert lg.status("shop-v2")["weights"] == {"stable": 80, "canary": 20}  # nothing moved
    lg.annotate("shop-v2", "promote")

    # b -> a in the middle of the 15 s pause at 50%: a finishes it.
    lg.watch_status(
        "shop-v2",
        "deployments",
        lambda s: (s.get("step") or {}).get("description") == "pause 15s",
        "the 15 s pause",
    )
    status = lg.status("shop-v2")
    assert status["phase"] == "Progressing", status
    assert status["weights"] == {"stable": 50, "canary": 50}, status
    relabel(lg, "shop", "a")
    watch_object(lg, "deployments", "shop-v2", served_by("a"), "the Deployment handed back to a")
    finished = lg.wait_finished("shop-v2")
    assert finished["phase"] == "Succeeded", finished
    assert lg.get("shop", "applications")["status"]["stable"]["image"] == "demo:v2"
    # Who finished what: a the first rollout and the second (once it was back), b neither.
    succeeded(shards["a"], 2)
    assert rollouts(shards["b"]).get("Succeeded") == 0
    history = lg.get("shop", "applications")["status"]["history"]
    assert [(h["deployment"], h["result"]) for h in history] == [
        ("shop-v2", "Succeeded"),
        ("shop-v1", "Succeeded"),
    ]
