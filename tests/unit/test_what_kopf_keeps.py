"""kopf keeps the last body of every Deployment and Application (they have daemons) for as
long as it exists: of each, lockgate has it keep only what a handler reads (kept.py), so a
thousand Applications and their finished Deployments do not hold their rollout logs,
analysis runs and managedFields in the operator's memory. Through kopf's own processing of a
watch event, and through the handlers that read what kopf keeps."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Iterator
from typing import Any

import kopf
import pytest
from kopf._core.reactor import inventory

from lockgate.controller import deployments, handlers
from lockgate.controller.applications import reconcile_application
from lockgate.controller.kept import keep_of_application, keep_of_deployment
from lockgate.names import GROUP, VERSION
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import Env, FakeFleet, FakeKube, env_over_fakes, runtime_over
from tests.unit.kopf_events import process_event, stop_daemons

CANARY = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"pause": {"seconds": 30}}, {"setWeight": 100}]},
}
ANALYSIS = {"intervalSeconds": 2, "minRequests": 1, "maxErrorRate": 0.5}
# What the API adds to every object a watch delivers: who wrote which field.
MANAGED = [
    {
        "manager": "lockgate",
        "operation": "Update",
        "apiVersion": f"{GROUP}/{VERSION}",
        "time": "2026-01-01T00:00:00Z",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:status": {f"f:{key}": {} for key in ("log", "phase", "step")}},
        "subresource": "status",
    }
]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    yield from env_over_fakes(monkeypatch, Env, replicas=2, ready_after=0)


def as_watched(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as a watch event brings it: JSON, with managedFields."""
    raw: dict[str, Any] = json.loads(json.dumps(obj))
    raw["metadata"]["managedFields"] = copy.deepcopy(MANAGED)
    raw["metadata"]["finalizers"] = [kopf.OperatorSettings().persistence.finalizer]
    return raw


def in_flight(env: Env) -> dict[str, Any]:
    """A canary with analysis, some way into its rollout: a status with a log, analysis runs
    and transitions."""
    env.kube.add_deployment("dep", dep_spec(strategy=CANARY, analysis=ANALYSIS))
    for _ in range(12):
        env.op.round("dep")
    body = env.kube.deployment("dep")
    status = body["status"]
    assert status["phase"] == "Progressing" and status["log"] and status["transitions"]
    return body


async def kept_by_kopf(plural: str, raw: dict[str, Any]) -> dict[str, Any]:
    """What kopf hands a daemon of the object (the body it keeps) after one watch event,
    processed by kopf with lockgate's event handlers of that kind."""
    registry = kopf.OperatorRegistry()
    kept_handler = {
        "deployments": handlers.deployment_kept,
        "applications": handlers.application_kept,
    }
    kopf.on.event(GROUP, VERSION, plural, registry=registry)(kept_handler[plural])
    seen: list[kopf.Body] = []

    @kopf.daemon(GROUP, VERSION, plural, registry=registry)
    async def daemon(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
        seen.append(body)
        await stopped.wait()

    memories = inventory.ResourceMemories()
    await process_event(registry, memories, kopf.Memo(), plural, raw)
    stop_daemons(memories)
    kept = json.loads(json.dumps(dict(seen[0])))
    assert isinstance(kept, dict)
    return kept


def test_kopf_keeps_of_a_deployment_its_metadata_spec_and_status_without_histories(
    env: Env,
) -> None:
    watched = as_watched(in_flight(env))
    kept = asyncio.run(kept_by_kopf("deployments", copy.deepcopy(watched)))
    assert "managedFields" not in kept["metadata"]
    for history in ("log", "transitions", "analysis", "conditions"):
        assert history in watched["status"]
        assert history not in kept["status"]
    # Everything else is as the watch brought it.
    assert kept["spec"] == watched["spec"]
    meta = {k: v for k, v in watched["metadata"].items() if k != "managedFields"}
    assert kept["metadata"] == meta
    assert kept["status"]["phase"] == "Progressing" and kept["status"]["revision"] == 1
    assert len(json.dumps(kept)) < len(json.dumps(watched)) / 2


def test_kopf_keeps_of_an_application_all_but_managed_fields_and_history(env: Env) -> None:
    env.kube.application("shop")["status"]["history"] = [
        {"deployment": f"v{i}", "image": f"app:{i}", "revision": 1, "result": "Succeeded"}
        for i in range(10)
    ]
    watched = as_watched(env.kube.application("shop"))
    kept = asyncio.run(kept_by_kopf("applications", copy.deepcopy(watched)))
    assert "managedFields" not in kept["metadata"] and "history" not in kept["status"]
    watched["metadata"].pop("managedFields")
    watched["status"].pop("history")
    assert kept == watched


def test_deleting_a_deployment_mid_rollout_from_what_kopf_keeps_restores_stable(
    env: Env,
) -> None:
    """The deletion handler reads kopf's body: what kopf keeps is enough to put the previous
    version back."""
    kept = as_watched(in_flight(env))
    keep_of_deployment(kept)
    assert env.world.weights != (100, 0) and env.world.canary.started
    asyncio.run(deployments.deployment_removed(env.op.rt, kept))
    assert env.world.weights == (100, 0)
    assert not env.world.canary.started
    assert env.fleet.releases[-1] == "dep/1"
    assert env.kube.application("shop")["status"].get("activeDeployment") is None


def test_an_applications_status_counted_from_what_kopf_keeps_is_the_same(
    monkeypatch: pytest.MonkeyPatch, env: Env
) -> None:
    """The status loop counts from kopf's body of the Application: what kopf keeps gives the
    same status as the whole object."""
    monkeypatch.setattr(
        "lockgate.controller.applications.fleet_for", FakeFleet(env.kube, env.world).made_for
    )
    in_flight(env)
    app = env.kube.application("shop")
    app["status"]["history"] = [{"deployment": "v0", "image": "app:0", "result": "Succeeded"}]
    app["status"]["conditions"] = [
        {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    ]
    whole = as_watched(app)
    kept = copy.deepcopy(whole)
    keep_of_application(kept)
    patches = []
    for body in (whole, kept):
        patch = kopf.Patch()
        rt = runtime_over(FakeKube())
        asyncio.run(reconcile_application(rt, body, patch, ensure_owned=False))
        patches.append(dict(patch.status))
    assert patches[0] and patches[0]["phase"] == "Progressing"
    for patch in patches:  # each recount reads the clock
        for condition in patch.get("conditions", ()):
            condition.pop("lastTransitionTime", None)
    assert patches[1] == patches[0]


def test_every_event_of_every_deployment_and_application_is_trimmed() -> None:
    """kopf keeps the bodies of another shard's objects too: the trimming handlers are not
    filtered."""
    registry = kopf.get_default_registry()
    trimming = {
        handler.fn: handler
        for handler in registry._watching._handlers
        if handler.fn in (handlers.deployment_kept, handlers.application_kept)
    }
    assert {fn: h.selector.any_name for fn, h in trimming.items()} == {
        handlers.deployment_kept: "deployments",
        handlers.application_kept: "applications",
    }
    for handler in trimming.values():
        assert (handler.labels, handler.annotations, handler.when) == (None, None, None)
