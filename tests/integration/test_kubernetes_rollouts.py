"""lockgate on Kubernetes, end to end: the real control plane, the process kubelet, real
Traefik routing real HTTP, and the operator running as `lockgate operator` (kopf)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import yaml

from hack.tools.load import Load, by_version, failed
from tests.support.cluster import REPO_ROOT, Cluster, Traefik
from tests.support.operator_fixtures import Operator
from tests.support.rollouts import (
    Kill,
    Lockgate,
    WeightRecorder,
    application,
    deployment,
    host_of,
    interruption,
    seeded_random,
    wait_for,
)

pytestmark = pytest.mark.integration

ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}


MANUAL_AT_20 = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]},
}


def deploy_v1(lg: Lockgate, app: str = "shop", replicas: int = 4, **extra: Any) -> None:
    lg.create(application(app, replicas, namespace=lg.namespace, **extra))
    lg.create(deployment(f"{app}-v1", app, "demo:v1"))
    lg.wait_phase(f"{app}-v1", {"Succeeded"})


def load_for(traefik: Traefik, lg: Lockgate, app: str = "shop") -> Load:
    return Load(traefik.web_url, host_of(app, lg.namespace))


def served(responses: list[Any], version: str) -> int:
    return sum(1 for r in responses if r.version == version)


SHOP_PODS = "lockgate.dev/application=shop"


def canary_pods_left(lg: Lockgate, image: str) -> list[str]:
    return [p.metadata.name for p in lg.pods(SHOP_PODS) if p.spec.containers[0].image == image]


def test_healthy_canary_shifts_real_traffic_step_by_step_with_no_failed_request(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    deploy_v1(lockgate)
    canary = {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 12}}
    service = f"{lockgate.namespace}-shop@kubernetescrd"
    with WeightRecorder(traefik.api_url, service) as weights, load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", canary, analysis=ANALYSIS))
        status = lockgate.wait_finished("shop-v2")
        wait_for(
            "enough requests", lambda: len(load.responses) >= 5000, lambda: len(load.responses)
        )
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    assert len(responses) >= 5000
    assert failed(responses) == [], (
        f"{len(failed(responses))} failed requests: {by_version(responses)}"
    )
    checked = set()
    for start, end, weight in weights.windows():
        window = [r for r in responses if start <= r.at <= end]
        if weight not in (10, 50) or len(window) < 200:
            continue
        share = 100 * served(window, "v2") / len(window)
        assert abs(share - weight) <= 5, f"weight {weight}: canary served {share:.1f}%"
        checked.add(weight)
    assert checked == {10, 50}, f"no measurable window for { ({10, 50} - checked) }"
    assert served(responses[-200:], "v2") == 200, "after promotion everything is v2"


def test_failing_canary_is_rolled_back_automatically(lockgate: Lockgate, traefik: Traefik) -> None:
    deploy_v1(lockgate)
    canary = {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 10}}
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(
            deployment("shop-bad", "shop", "demo:v2-errors30", canary, analysis=ANALYSIS)
        )
        status = lockgate.wait_finished("shop-bad")
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert status["phase"] == "RolledBack"
    assert "canary 5xx ratio" in status["message"] and "maxErrorRate" in status["message"]
    assert "rolled back to demo:v1" in status["message"]
    bad_share = served(responses, "v2") / len(responses)
    assert bad_share < 0.10, f"the bad version served {bad_share:.1%} of all requests"
    wait_for(
        "no canary pods left",
        lambda: not canary_pods_left(lockgate, "demo:v2-errors30"),
        lambda: lockgate.pod_versions(SHOP_PODS),
    )
    assert served(responses[-100:], "v1") == 100
    lockgate.wait_events("shop-bad", {"RollingBack", "RolledBack", "AnalysisFailed"})


def test_canary_that_never_becomes_ready_times_out_without_traffic(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    deploy_v1(lockgate)
    canary = {"type": "Canary", "canary": {"steps": [20, 100], "stepSeconds": 5}}
    service = f"{lockgate.namespace}-shop@kubernetescrd"
    with WeightRecorder(traefik.api_url, service) as weights, load_for(traefik, lockgate) as load:
        lockgate.create(
            deployment(
                "shop-unready", "shop", "demo:v2-unready", canary, progressDeadlineSeconds=15
            )
        )
        status = lockgate.wait_finished("shop-unready")
    responses = load.stop()
    assert status["phase"] == "RolledBack"
    assert "new instance(s) ready after progressDeadlineSeconds 15" in status["message"]
    assert all(weight == 0 for _, weight in weights.samples), "the canary must never get weight"
    assert failed(responses) == [], by_version(responses)
    wait_for(
        "no canary pods left",
        lambda: not canary_pods_left(lockgate, "demo:v2-unready"),
        lambda: lockgate.pod_versions(SHOP_PODS),
    )


@pytest.mark.parametrize(
    "strategy",
    [
        {"type": "Rolling", "rolling": {"batchSize": 1, "minHealthy": 3}},
        {"type": "Rolling", "rolling": {"batchSize": "50%", "batchWaitSeconds": 2}},
        {"type": "BlueGreen", "blueGreen": {"previewSeconds": 2, "scaleDownDelaySeconds": 3}},
    ],
    ids=["rolling-1", "rolling-50%", "blue-green"],
)
def test_rolling_and_blue_green_complete_with_no_failed_request(
    lockgate: Lockgate, traefik: Traefik, strategy: dict[str, Any]
) -> None:
    deploy_v1(lockgate)
    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", strategy))
        status = lockgate.wait_finished("shop-v2")
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    assert failed(responses) == [], (
        f"{len(failed(responses))} of {len(responses)} failed: {by_version(responses)}"
    )
    assert served(responses[-100:], "v2") == 100


def test_recreate_replaces_every_instance(lockgate: Lockgate, traefik: Traefik) -> None:
    deploy_v1(lockgate, replicas=2)
    lockgate.create(deployment("shop-v2", "shop", "demo:v2", {"type": "Recreate"}))
    assert lockgate.wait_phase("shop-v2", {"Succeeded", "RolledBack"})["phase"] == "Succeeded"
    with load_for(traefik, lockgate) as load:
        wait_for("some answers", lambda: len(load.responses) > 50, lambda: len(load.responses))
    assert {r.version for r in load.stop()} == {"v2"}
    # lockgate writes the statuses as field manager "lockgate", not as the client library.
    for name, plural in (("shop-v2", "deployments"), ("shop", "applications")):
        fields = lockgate.get(name, plural)["metadata"]["managedFields"]
        managers = {(f["manager"], f.get("subresource")) for f in fields}
        assert ("lockgate", "status") in managers, managers
        assert ("OpenAPI-Generator", "status") not in managers, managers


def test_operator_killed_five_times_mid_rollout_resumes_without_skipping_a_step(
    lockgate: Lockgate, traefik: Traefik, own_operator: Operator
) -> None:
    """Five SIGKILLs, each in a later step than the one before, at a seeded random moment
    after that step began (a step may end first: starting an instance or confirming a
    weight can take less than the moment, so where each kill landed is read, not assumed,
    and the kills are in five different steps by construction)."""
    deploy_v1(lockgate)
    steps = [5, 10, 25, 50, 75, 100]
    canary = {"type": "Canary", "canary": {"steps": steps, "stepSeconds": 3}}
    rng, seed = seeded_random()
    kills: list[Kill] = []
    with load_for(traefik, lockgate) as load:
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", canary, analysis=ANALYSIS))
        for _ in range(5):
            lockgate.wait_step("shop-v2", kills[-1].step + 1 if kills else 0)
            time.sleep(rng.uniform(0.0, 1.5))  # the seeded moment
            own_operator.kill()
            kills.append(interruption(lockgate, "shop-v2"))
            own_operator.start()
        status = lockgate.wait_finished("shop-v2")
    responses = load.stop()
    where = f"seed {seed}, kills at {kills}"
    # The phase first: a rollout that ended early (its message says why) also leaves the kills
    # after its end outside it.
    assert status["phase"] == "Succeeded", f"{status.get('message')}; {where}"
    assert all(k.inside for k in kills), f"a kill landed outside the rollout: {where}"
    done = [e["message"] for e in status["log"] if " done: " in e["message"]]
    numbers = [int(m.split()[1].split("/")[0]) for m in done]
    total = status["step"]["total"]
    assert numbers == list(range(1, total + 1)), (
        f"steps completed: {numbers}; {where}; log ({len(status['log'])} entries): "
        + " | ".join(e["message"] for e in status["log"][:8])
    )
    assert failed(responses) == [], f"{by_version(responses)}; {where}"


def test_invalid_manifests_are_refused_naming_the_field(
    cluster: Cluster, lockgate: Lockgate
) -> None:
    corpus = sorted((REPO_ROOT / "tests/data/invalid").glob("*.yaml"))
    assert corpus
    for path in corpus:
        field = path.read_text().splitlines()[0].removeprefix("# field: ").strip()
        proc = cluster.kubectl("apply", "-n", lockgate.namespace, "-f", str(path))
        assert proc.returncode != 0, f"{path.name} was accepted"
        assert field in proc.stderr, f"{path.name}: {proc.stderr}"


def test_missing_application_is_a_condition_and_an_event_not_a_crash(
    lockgate: Lockgate, operator: Operator
) -> None:
    lockgate.create(deployment("orphan", "nope", "demo:v2"))
    status = lockgate.wait_until(
        "orphan",
        "a message about the missing application",
        lambda: (
            "not found" in (lockgate.status("orphan").get("message") or "")
            and lockgate.status("orphan")
        ),
    )
    assert status["phase"] == "Pending"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert "application 'nope' not found" in conditions["Ready"]["message"]
    lockgate.wait_events("orphan", {"ApplicationNotFound"})
    assert operator.alive()


def test_promote_abort_and_pause_by_annotation_and_spec(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    deploy_v1(lockgate)
    lockgate.create(deployment("shop-v2", "shop", "demo:v2", MANUAL_AT_20))
    lockgate.wait_phase("shop-v2", {"Paused"})
    time.sleep(3)  # an observation window: nothing may happen in it
    assert lockgate.phase("shop-v2") == "Paused", "an indefinite pause waits"
    lockgate.annotate("shop-v2", "promote")
    lockgate.wait_phase("shop-v2", {"Succeeded"})
    assert "lockgate.dev/action" not in (
        lockgate.get("shop-v2")["metadata"].get("annotations") or {}
    )

    lockgate.create(deployment("shop-v3", "shop", "demo:v3", MANUAL_AT_20))
    lockgate.wait_phase("shop-v3", {"Paused"})
    lockgate.annotate("shop-v3", "abort")
    status = lockgate.wait_phase("shop-v3", {"Aborted"})
    assert "aborted" in status["message"]
    wait_for(
        "no v3 pods",
        lambda: not canary_pods_left(lockgate, "demo:v3"),
        lambda: lockgate.pod_versions(SHOP_PODS),
    )

    timed = {"type": "Canary", "canary": {"steps": [20, 100], "stepSeconds": 4}}
    lockgate.create(deployment("shop-v4", "shop", "demo:v4", timed))
    lockgate.wait_step("shop-v4", 1)
    lockgate.patch("shop-v4", {"spec": {"paused": True}})
    lockgate.wait_phase("shop-v4", {"Paused"})
    index = lockgate.status("shop-v4")["step"]["index"]
    time.sleep(8)
    assert lockgate.status("shop-v4")["step"]["index"] == index, "spec.paused holds the step"
    lockgate.patch("shop-v4", {"spec": {"paused": False}})
    assert lockgate.wait_phase("shop-v4", {"Succeeded"})["phase"] == "Succeeded"


def test_a_canary_right_after_an_aborted_one_starts_while_that_one_drains(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    # The slot's Pods do not wait for the aborted canary's Pods to be gone (their 5 s drain
    # held every canary started after an abort, bench/peers.py: 7.4 s to the first weight
    # against 3.5 s into a fresh slot); the aborted ones get no traffic meanwhile. A 20 s
    # drain: under the whole suite's load v3's Pods once took longer than the default 5 s
    # to appear, and a canary that waited for the drain still shows none beside them.
    deploy_v1(lockgate, replicas=3, kubernetes={"replicas": 3, "template": {}, "drainSeconds": 20})

    def images(pods: list[Any], *, draining: bool) -> set[str]:
        return {
            p.spec.containers[0].image
            for p in pods
            if bool(p.metadata.deletion_timestamp) == draining
        }

    def side_by_side() -> bool:
        pods = lockgate.pods(SHOP_PODS)
        return "demo:v2" in images(pods, draining=True) and "demo:v3" in images(
            pods, draining=False
        )

    with load_for(traefik, lockgate) as load:
        load.wait_answered(20)
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", MANUAL_AT_20))
        lockgate.wait_phase("shop-v2", {"Paused"})
        lockgate.annotate("shop-v2", "abort")
        lockgate.wait_phase("shop-v2", {"Aborted"})
        lockgate.create(deployment("shop-v3", "shop", "demo:v3", MANUAL_AT_20))
        wait_for(
            "a v3 canary Pod while the aborted v2 Pods still drain",
            side_by_side,
            lambda: lockgate.pod_versions(SHOP_PODS),
            every=0.1,
        )
        lockgate.wait_phase("shop-v3", {"Paused"})
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert failed(responses) == [], (
        f"{len(failed(responses))} failed requests: {by_version(responses)}"
    )
    assert served(responses, "v3") > 0, "the new canary got its share"


def test_queue_waits_and_replace_supersedes_never_interleaved(lockgate: Lockgate) -> None:
    deploy_v1(lockgate, replicas=2)
    manual = {
        "type": "Canary",
        "canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]},
    }
    active: list[set[str]] = []

    def sample() -> None:
        items = lockgate.items("deployments")
        active.append(
            {
                i["metadata"]["name"]
                for i in items
                if (i.get("status") or {}).get("phase") in ("Progressing", "Paused", "RollingBack")
            }
        )

    lockgate.create(deployment("first", "shop", "demo:v2", manual))
    lockgate.wait_phase("first", {"Paused"})
    lockgate.create(deployment("queued", "shop", "demo:v3", {"type": "Rolling"}))
    lockgate.wait_phase("queued", {"Queued"})
    for _ in range(10):
        sample()
        time.sleep(0.3)
    assert lockgate.phase("queued") == "Queued", "Queue waits for the active rollout"
    lockgate.annotate("first", "promote")
    wait_for(
        "queued to succeed",
        lambda: sample() or lockgate.phase("queued") == "Succeeded",
        lambda: (lockgate.status("first"), lockgate.status("queued")),
        every=0.3,
    )
    assert lockgate.phase("first") == "Succeeded" and lockgate.phase("queued") == "Succeeded"

    lockgate.create(deployment("old", "shop", "demo:v4", manual))
    lockgate.wait_phase("old", {"Paused"})
    lockgate.create(
        deployment("new", "shop", "demo:v5", {"type": "Rolling"}, concurrencyPolicy="Replace")
    )
    wait_for(
        "new to succeed",
        lambda: sample() or lockgate.phase("new") == "Succeeded",
        lambda: (lockgate.status("old"), lockgate.status("new")),
        every=0.3,
    )
    old = lockgate.status("old")
    assert old["phase"] == "Aborted" and "superseded by new" in old["message"]
    assert lockgate.phase("new") == "Succeeded"
    assert all(len(names) <= 1 for names in active), (
        f"interleaved: {[a for a in active if len(a) > 1]}"
    )


def test_examples_apply_to_the_real_api_server(cluster: Cluster, lockgate: Lockgate) -> None:
    for path in sorted((REPO_ROOT / "manifests/examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            proc = cluster.kubectl(
                "apply",
                "--dry-run=server",
                "-n",
                lockgate.namespace,
                "-f",
                "-",
                input=yaml.safe_dump(doc),
            )
            assert proc.returncode == 0, f"{path}: {proc.stderr}"


def split_of(lg: Lockgate) -> tuple[dict[str, int], str]:
    """The TraefikService `shop`'s weights by Service, and its resourceVersion."""
    obj = lg.custom.get_namespaced_custom_object(
        "traefik.io", "v1alpha1", lg.namespace, "traefikservices", "shop"
    )
    services = obj["spec"]["weighted"]["services"]
    return {s["name"]: s["weight"] for s in services}, obj["metadata"]["resourceVersion"]


def test_a_split_edited_by_hand_is_put_back_as_soon_as_its_watch_event_comes(
    lockgate: Lockgate, traefik: Traefik
) -> None:
    """The TraefikService is lockgate's. Somebody sending all traffic to the canary during a
    manual pause finds the split put back: its watch event wakes the rollout, which would
    otherwise sleep until its 10-minute safety net (a manual pause has no timer)."""
    deploy_v1(lockgate)
    lockgate.create(deployment("shop-v2", "shop", "demo:v2", MANUAL_AT_20))
    lockgate.wait_phase("shop-v2", {"Paused"})
    declared, _ = split_of(lockgate)
    assert declared == {"shop-stable": 80, "shop-canary": 20}

    all_canary = [{"name": "shop-canary", "port": 8080, "weight": 100}]
    lockgate.custom.patch_namespaced_custom_object(
        "traefik.io",
        "v1alpha1",
        lockgate.namespace,
        "traefikservices",
        "shop",
        {"spec": {"weighted": {"services": all_canary}}},
    )
    # Until lockgate writes it again, the edited version stands still.
    wait_for(
        "the split put back",
        lambda: split_of(lockgate)[0] == declared,
        lambda: split_of(lockgate)[1],
    )
    status = lockgate.status("shop-v2")
    assert status["phase"] == "Paused", status.get("message")
    assert status["weights"] == {"stable": 80, "canary": 20}
