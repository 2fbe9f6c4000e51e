"""A control-plane restart (etcd, kube-apiserver, controller-manager, scheduler stopped and
started with their data kept, as an upgrade does) under load, in the middle of a canary.
Traefik and the operator keep running and must catch up: a step counts as done only once
Traefik serves it, so no request fails because of the restart, and an Application created
after it is served as soon as its rollout says Succeeded. (One restart for both: the suite
runs it alone, with nothing beside it, and a restart takes ~20 s.)"""

from __future__ import annotations

from typing import Any

import pytest

from hack.tools.load import Load, by_version, failed
from tests.support.cluster import Cluster, Traefik, start_cluster, stop_cluster
from tests.support.rollouts import Lockgate, application, deployment, host_of

pytestmark = [
    pytest.mark.integration,
    pytest.mark.serial,
]  # restarts the control plane every test shares

ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}


def restart_control_plane() -> None:
    stop_cluster()
    start_cluster()


def deploy_v1(lg: Lockgate, app: str) -> None:
    lg.create(application(app, 2, namespace=lg.namespace))
    lg.create(deployment(f"{app}-v1", app, "demo:v1"))
    status = lg.wait_finished(f"{app}-v1")
    assert status["phase"] == "Succeeded", status.get("message")


def load_on(traefik: Traefik, lg: Lockgate, app: str) -> Load:
    return Load(traefik.web_url, host_of(app, lg.namespace))


def no_failures(responses: list[Any]) -> str:
    return f"{len(failed(responses))} of {len(responses)} failed: {by_version(responses)}"


def test_a_canary_survives_a_control_plane_restart_and_what_follows_is_served_at_once(
    cluster: Cluster, traefik: Traefik, lockgate: Lockgate
) -> None:
    deploy_v1(lockgate, "shop")
    canary = {"type": "Canary", "canary": {"steps": [20, 50, 100], "stepSeconds": 3}}
    with load_on(traefik, lockgate, "shop") as load:
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", canary, analysis=ANALYSIS))
        lockgate.wait_step("shop-v2", 1)
        restart_control_plane()
        status = lockgate.wait_finished("shop-v2")
        load.wait_answered(len(load.responses) + 200)
    responses = load.stop()
    assert status["phase"] == "Succeeded", status.get("message")
    done = [e["message"] for e in status["log"] if " done: " in e["message"]]
    numbers = [int(m.split()[1].split("/")[0]) for m in done]
    assert numbers == list(range(1, status["step"]["total"] + 1)), f"steps completed: {numbers}"
    assert failed(responses) == [], f"while the control plane restarted: {no_failures(responses)}"
    assert {r.version for r in responses[-100:]} == {"v2"}

    # After the restart, the operator's and Traefik's watches have caught up: a new
    # Application is served from the moment its first rollout says Succeeded.
    deploy_v1(lockgate, "fresh")
    with load_on(traefik, lockgate, "fresh") as load:
        load.wait_answered(2000)
    responses = load.stop()
    assert failed(responses) == [], f"right after Succeeded: {no_failures(responses)}"
