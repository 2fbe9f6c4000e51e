"""The kopf handlers as kopf calls them (memo, index, patch), and the Application's status,
against the fake Kube and fake fleet."""

from __future__ import annotations

import asyncio
import inspect
from typing import Any, cast

import kopf
import pytest

from lockgate.controller import applications, deployments, handlers
from lockgate.controller.applications import reconcile_application
from lockgate.controller.deployments import DeploymentSummary
from lockgate.kube import DISCOVERY_GRACE_S, ApiVersions, DiscoveryPending, Kube
from tests.support.fakeworld import FakeWorld, dep_spec
from tests.unit.controller_fakes import FakeFleet, FakeKube, runtime_over
from tests.unit.test_fleets import DOCKER


def test_a_watch_event_wakes_the_deployments_driver() -> None:
    assert inspect.iscoroutinefunction(handlers.deployment_event)  # set on the event loop
    memo = kopf.Memo()
    wake = handlers._wake(memo)  # what the driver waits on
    asyncio.run(handlers.deployment_event(memo=memo))
    assert wake.is_set()
    assert wake.by == "own_object", "what woke it, for the metric"
    assert handlers._wake(kopf.Memo()) is not wake  # each Deployment has its own


def test_the_index_holds_what_the_lock_needs() -> None:
    kube = FakeKube()
    body = kube.add_deployment("dep", dep_spec())
    body["status"] = {"phase": "Queued"}
    entry = asyncio.run(handlers.deployments_by_application(body=kopf.Body(body)))
    assert entry == {
        ("default", "shop"): DeploymentSummary("dep", "Queued", "2026-01-01T00:00:00Z")
    }


def test_cleanup_closes_the_clients() -> None:
    closed: list[str] = []

    class HostConnections:
        async def aclose(self) -> None:
            closed.append("hosts")

    rt = runtime_over(FakeKube())
    rt.fleets[("default", "shop")] = HostConnections()  # type: ignore[assignment]
    memo = kopf.Memo(runtime=rt)
    asyncio.run(handlers.close_clients(memo=memo))
    assert closed == ["hosts"]
    assert rt.http.is_closed
    asyncio.run(handlers.close_clients(memo=kopf.Memo()))  # startup never ran: nothing to close


@pytest.mark.parametrize(
    ("phase", "annotations", "status", "settled"),
    [
        ("Succeeded", {}, {}, True),
        ("Failed", {}, {}, True),  # refused before start included: retried only when asked
        ("RolledBack", {}, {}, True),
        ("Aborted", {"lockgate.dev/superseded-by": "b"}, {}, True),  # changes nothing now
        ("Failed", {"lockgate.dev/action": "retry"}, {}, False),
        ("Failed", {}, {"pendingAction": "retry"}, False),  # annotation gone, not yet applied
        ("Failed", {}, {"observedGeneration": 1}, False),  # the spec changed
        ("Progressing", {}, {}, False),
        ("Queued", {}, {}, False),
    ],
)
def test_a_finished_or_failed_deployment_is_settled_unless_asked_to_act(
    phase: str, annotations: dict[str, str], status: dict[str, Any], settled: bool
) -> None:
    obj = {
        "metadata": {"generation": 2, "annotations": annotations},
        "status": {"phase": phase, "observedGeneration": 2, **status},
    }
    assert deployments.settled(obj) is settled


def test_deleting_an_application_does_not_hang_on_missing_credentials() -> None:
    kube = FakeKube()
    body = kube.add_application("shop", DOCKER)
    memo = kopf.Memo(runtime=runtime_over(kube))
    asyncio.run(handlers.application_deleted(body=kopf.Body(body), memo=memo))


def application_status(
    monkeypatch: pytest.MonkeyPatch, world: FakeWorld, ensure_owned: bool, **status: Any
) -> tuple[dict[str, Any], FakeFleet]:
    kube = FakeKube()
    body = kube.add_application("shop", {"kubernetes": {"replicas": 4}}, **status)
    fleet = FakeFleet(kube, world)
    monkeypatch.setattr(applications, "fleet_for", fleet.made_for)
    patch = kopf.Patch()
    asyncio.run(reconcile_application(runtime_over(kube), body, patch, ensure_owned=ensure_owned))
    return dict(patch.status), fleet


def test_the_application_status_counts_the_fleet(monkeypatch: pytest.MonkeyPatch) -> None:
    world = FakeWorld(units=("replica-1", "replica-2", "replica-3", "replica-4"))
    status, fleet = application_status(monkeypatch, world, ensure_owned=True)
    assert status["phase"] == "Healthy"
    assert status["instances"] == {"desired": 4, "ready": 4, "updated": 4}
    assert status["stable"] == {"image": "app:1"}
    assert fleet.calls == ["ensure_owned"]

    world.unready_images.add("app:1")
    status, fleet = application_status(monkeypatch, world, ensure_owned=False)
    assert (status["phase"], status["message"]) == ("Degraded", "0/4 instances ready")
    assert fleet.calls == []  # the periodic refresh only counts

    status, _ = application_status(monkeypatch, world, ensure_owned=False, activeDeployment="dep")
    assert (status["phase"], status["message"]) == ("Progressing", "rolling out with dep")


def test_the_application_status_says_when_the_cluster_serves_no_traefik_crds() -> None:
    kube = FakeKube()
    kube.served.clear()
    body = kube.add_application("shop", {"kubernetes": {"replicas": 2}})
    rt = runtime_over(kube)
    now = [0.0]
    rt.api_versions = ApiVersions(cast(Kube, kube), clock=lambda: now[0])
    with pytest.raises(DiscoveryPending):  # an API server still starting: asked again
        asyncio.run(reconcile_application(rt, body, kopf.Patch()))
    now[0] = DISCOVERY_GRACE_S
    patch = kopf.Patch()
    asyncio.run(reconcile_application(rt, body, patch))
    assert patch.status["phase"] == "Degraded"
    assert patch.status["message"] == (
        "spec.traffic.traefik.apiGroup: the cluster serves none of traefik.io/v1, "
        "traefik.io/v1alpha1: are Traefik's CRDs installed?"
    )
    ready = next(c for c in patch.status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"


def test_the_application_status_says_why_hosts_cannot_be_counted() -> None:
    kube = FakeKube()
    body = kube.add_application("shop", DOCKER, stable={"image": "app:1"})
    patch = kopf.Patch()
    asyncio.run(reconcile_application(runtime_over(kube), body, patch))
    assert patch.status["phase"] == "Degraded"
    assert patch.status["message"] == (
        "0/1 instances ready (spec.docker.hosts[0].sshKeySecretRef: Secret 'ssh' not found)"
    )
