"""A settled rollout holds no driver in the operator, on the real control plane: the
operator's `lockgate_deployment_drivers` falls as rollouts settle owing nothing, and an
action on a settled one (a retry) starts its driver again, which drives it."""

from __future__ import annotations

import re

import pytest

from tests.support.local_http import http_text
from tests.support.operator_fixtures import Operator
from tests.support.rollouts import ENDED_QUIET_S, Lockgate, application, deployment, wait_for

pytestmark = pytest.mark.integration

MANUAL_AT_20 = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]},
}
DRIVERS = re.compile(r"^lockgate_deployment_drivers (\S+)$", re.MULTILINE)


def drivers(op: Operator) -> float | None:
    """The operator's gauge of Deployments with a driver (None: no answer)."""
    page = http_text(f"http://127.0.0.1:{op.env['LOCKGATE_METRICS_PORT']}/metrics")
    found = DRIVERS.search(page or "")
    return float(found.group(1)) if found else None


def wait_drivers(op: Operator, lg: Lockgate, count: int, what: str) -> None:
    """Until the gauge says `count`. A driver ends on the watch event that settles its
    rollout: given a minute without any change, the wait fails."""
    wait_for(
        what,
        lambda: drivers(op) == count,
        lambda: (drivers(op), lg.versions("deployments")),
        quiet=ENDED_QUIET_S,
    )


def test_a_settled_rollout_has_no_driver_until_it_is_retried(
    own_operator: Operator, lockgate: Lockgate
) -> None:
    lockgate.create(application("shop", 2, namespace=lockgate.namespace))
    lockgate.create(deployment("shop-v1", "shop", "demo:v1"))
    assert lockgate.wait_finished("shop-v1")["phase"] == "Succeeded"
    wait_drivers(own_operator, lockgate, 0, "shop-v1's driver to end once it Succeeded")

    lockgate.create(deployment("shop-v2", "shop", "demo:v2", MANUAL_AT_20))
    lockgate.wait_status(
        "shop-v2", lambda s: (s.get("step") or {}).get("index") == 1, "the pause at 20%"
    )
    wait_drivers(own_operator, lockgate, 1, "a driver for shop-v2 alone")

    lockgate.annotate("shop-v2", "abort")
    assert lockgate.wait_phase("shop-v2", {"Aborted"})["phase"] == "Aborted"
    wait_drivers(own_operator, lockgate, 0, "shop-v2's driver to end once it was Aborted")

    # Its driver starts again, and drives it: the retry's attempt starts the canary again.
    lockgate.annotate("shop-v2", "retry")
    lockgate.wait_status(
        "shop-v2",
        lambda s: s.get("attempt") == 1 and (s.get("step") or {}).get("index") == 1,
        "the retry's pause at 20%",
    )
    wait_drivers(own_operator, lockgate, 1, "shop-v2 driven again")
