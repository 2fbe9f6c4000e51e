"""The operator killed with SIGKILL mid-rollout, again and again, on both targets at once.

Four canaries run side by side under HTTP load through Traefik: a good image and a bad one
(5xx on 30% of requests) on Kubernetes (the process kubelet) and on the Docker hosts. Each
kill is triggered by an event: the rollout's own status, seen on a watch, reaching a step
picked from a seed (for a bad one: a step before its analysis fails, then its rollback). The
operator restarts at once, as a crash-looping Pod would. Afterwards every kill must have cut
into a rollout (not before its first step nor after its last), every rollout must have ended
as its image dictates, walked its steps once each in order, and no request may have failed
but the bad canaries' own 5xx. `LOCKGATE_SEED=<seed> hack/test <this file>` repeats a run.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from kubernetes import watch

from hack.tools.load import Load, by_version
from lockgate.api import ApplicationSpec, DeploymentSpec
from lockgate.engine.plan import compile_plan
from lockgate.names import GROUP, VERSION
from tests.support.cluster import Traefik
from tests.support.docker_apps import (
    create_secrets,
    delete_application,
    docker_application,
    remove_all,
    wait_alone_everywhere,
)
from tests.support.dockerhosts import DockerHost
from tests.support.kills import (
    KillRecord,
    Position,
    deployments_list,
    expected_phase,
    positions,
    step_problems,
    unexpected_failures,
    version_of,
)
from tests.support.operator_fixtures import Operator
from tests.support.rollouts import (
    QUIET_S,
    Lockgate,
    application,
    deployment,
    host_of,
    seeded_random,
)

pytestmark = pytest.mark.integration

CANARY = {"type": "Canary", "canary": {"steps": [25, 50, 100], "stepSeconds": 2}}
# One failed window fails a bad canary: its outcome never hangs on how the kills fell.
ANALYSIS = {"intervalSeconds": 2, "minRequests": 5, "maxConsecutiveFailures": 1}
GOOD, BAD = "demo:v2", "demo:v2-errors30"
KILLS_PER_GOOD = 2


@dataclass(frozen=True)
class Trigger:
    """Kill when `deployment`'s status, seen on the watch, is in flight at step `step` or a
    later one (or, with `rolling_back`, when it is rolling back)."""

    deployment: str
    step: int = 0
    rolling_back: bool = False

    def fires(self, status: dict[str, Any]) -> bool:
        pos = Position.of(status)
        if not pos.inside:
            return False
        if self.rolling_back:
            return pos.phase == "RollingBack"
        return pos.step is not None and pos.step >= self.step

    def __str__(self) -> str:
        what = "rolling back" if self.rolling_back else f"at step {self.step + 1}"
        return f"{self.deployment} {what}"


@dataclass(frozen=True)
class Rollout:
    app: str
    name: str
    image: str


@pytest.fixture
def apps(
    lockgate: Lockgate, docker_hosts_by_name: dict[str, DockerHost], traefik: Traefik
) -> Iterator[dict[str, DockerHost]]:
    """The Docker hosts, clean of this test's applications before and after."""
    suffix = lockgate.namespace[-8:]
    names = [f"web-{suffix}", f"bad-{suffix}"]
    for app in names:
        remove_all(docker_hosts_by_name, app)
    yield docker_hosts_by_name
    for app in names:
        delete_application(lockgate, app)
        remove_all(docker_hosts_by_name, app)
        (traefik.dynamic_dir / f"{app}.yaml").unlink(missing_ok=True)


def plan_length(app: dict[str, Any], spec: dict[str, Any]) -> int:
    """The steps the engine will walk (as `lockgate plan` prints them)."""
    plan = compile_plan(
        ApplicationSpec.model_validate(app["spec"]),
        DeploymentSpec.model_validate(spec["spec"]),
        has_stable=True,
    )
    return len(plan.steps)


def next_trigger(
    lg: Lockgate, pending: dict[str, deque[Trigger]], missed: list[Trigger]
) -> Trigger | None:
    """Watch the namespace's Deployments (a fresh watch starts with each as it is now) until
    a rollout's next trigger fires; None once none is left. A rollout that finishes with
    triggers left records them as missed. No wall-clock limit: it fails only once none of
    the Deployments has changed for `QUIET_S`."""
    versions: dict[str, str] = {}
    changed_at = time.monotonic()
    while any(pending.values()):
        stream = watch.Watch()
        try:
            for event in stream.stream(
                lg.custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                lg.namespace,
                "deployments",
                timeout_seconds=int(QUIET_S),
            ):
                obj = event["object"]
                name = obj["metadata"]["name"]
                # A restarted watch begins with every object again: not a change.
                if versions.get(name) != (version := obj["metadata"]["resourceVersion"]):
                    versions[name], changed_at = version, time.monotonic()
                queue = pending.get(name)
                if not queue:
                    continue
                status = obj.get("status") or {}
                if queue[0].fires(status):
                    return queue.popleft()
                if Position.of(status).phase in ("Succeeded", "RolledBack", "Failed", "Aborted"):
                    missed.extend(queue)
                    queue.clear()
                    if not any(pending.values()):
                        return None
        finally:
            stream.stop()
        if time.monotonic() - changed_at >= QUIET_S:
            raise AssertionError(
                f"no trigger fired, and no Deployment changed for {QUIET_S:.0f}s: {dict(pending)}"
            )
    return None


def test_operator_killed_at_seeded_steps_of_canaries_on_both_targets(
    lockgate: Lockgate,
    traefik: Traefik,
    own_operator: Operator,
    apps: dict[str, DockerHost],
) -> None:
    rng, seed = seeded_random()
    ns = lockgate.namespace
    suffix = ns[-8:]
    create_secrets(lockgate, apps)
    objects = {
        "shop": application("shop", 2, namespace=ns),
        "shopbad": application("shopbad", 2, namespace=ns),
        f"web-{suffix}": docker_application(lockgate, f"web-{suffix}", apps, traefik),
        f"bad-{suffix}": docker_application(lockgate, f"bad-{suffix}", apps, traefik),
    }
    for app, body in objects.items():
        lockgate.create(body)
        lockgate.create(deployment(f"{app}-v1", app, "demo:v1"))
    for app in objects:
        status = lockgate.wait_finished(f"{app}-v1")
        assert status["phase"] == "Succeeded", f"{app}: {status.get('message')}"

    rollouts = [
        Rollout("shop", "shop-v2", GOOD),
        Rollout("shopbad", "shopbad-v2", BAD),
        Rollout(f"web-{suffix}", f"web-{suffix}-v2", GOOD),
        Rollout(f"bad-{suffix}", f"bad-{suffix}-v2", BAD),
    ]
    specs = {
        r.name: deployment(r.name, r.app, r.image, CANARY, analysis=ANALYSIS) for r in rollouts
    }
    # The seeded plan of kills: a good canary at two steps of its plan; a bad one at one of
    # its steps before the analysis that fails it (start, first weight), then in its rollback.
    pending: dict[str, deque[Trigger]] = {}
    for r in rollouts:
        if r.image == GOOD:
            total = plan_length(objects[r.app], specs[r.name])
            steps = sorted(rng.sample(range(total), KILLS_PER_GOOD))
            pending[r.name] = deque(Trigger(r.name, k) for k in steps)
        else:
            pending[r.name] = deque(
                [Trigger(r.name, rng.choice([0, 1])), Trigger(r.name, rolling_back=True)]
            )
    planned = sum(len(q) for q in pending.values())

    loads = {r.app: Load(traefik.web_url, host_of(r.app, ns), threads=1) for r in rollouts}
    kills: list[KillRecord] = []
    fired: list[Trigger] = []
    missed: list[Trigger] = []
    try:
        for load in loads.values():
            load.start()
        for load in loads.values():
            load.wait_answered(20)
        for r in rollouts:
            lockgate.create(specs[r.name])
        while (trigger := next_trigger(lockgate, pending, missed)) is not None:
            before = positions(deployments_list(lockgate.custom, ns))
            own_operator.kill()
            at = datetime.now(UTC)
            after = positions(deployments_list(lockgate.custom, ns))
            kills.append(KillRecord(len(kills) + 1, at, before, after, str(trigger)))
            fired.append(trigger)
            own_operator.start()  # at once, as a crash-looping Pod would be
        finals = {r.name: lockgate.wait_finished(r.name) for r in rollouts}
        for load in loads.values():
            load.wait_answered(len(load.responses) + 50)
    finally:
        responses = {app: load.stop() for app, load in loads.items()}

    where = f"seed {seed}; kills: " + " | ".join(
        f"#{k.number} on {k.trigger}: {k.describe()}" for k in kills
    )
    print(where.replace(" | ", "\n"))  # shown with -rP: where each kill landed
    # A rollout ending the wrong way also misses its kills: its message says why.
    for r in rollouts:
        status = finals[r.name]
        assert status["phase"] == expected_phase(r.image), (
            f"{r.name} ({r.image}): {status.get('message')}; {where}"
        )
    assert not missed, f"rollouts finished before these kills: {missed}; {where}"
    assert len(kills) == planned, where
    for kill, trigger in zip(kills, fired, strict=True):
        assert trigger.deployment in kill.interrupted, (
            f"kill #{kill.number} ({kill.trigger}) landed outside the rollout: {where}"
        )
    for r in rollouts:
        problems = step_problems(finals[r.name], r.image)
        assert problems == [], f"{r.name}: {problems}; {where}"
    for r in rollouts:
        bad = [version_of(r.image)] if r.image == BAD else []
        unexpected = unexpected_failures(responses[r.app], bad)
        assert unexpected == [], (
            f"{r.app}: {len(unexpected)} of {len(responses[r.app])} requests failed: "
            f"{by_version(responses[r.app])}; {where}"
        )
    wait_alone_everywhere(apps, f"web-{suffix}", GOOD)
    wait_alone_everywhere(apps, f"bad-{suffix}", "demo:v1")
