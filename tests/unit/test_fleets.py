"""Both fleets at their seams: the Kubernetes fleet against a fake Kube (its Services, slots,
Pods and TraefikService in memory), the Docker fleet's refusals, the factory, and the metric
source names each fleet gives the analysis."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from lockgate.api import ApplicationSpec
from lockgate.controller.deployments import Reconciler
from lockgate.controller.fleets import Fleet, FleetUnusable, fleet_for, removes_on_deletion
from lockgate.controller.fleets.docker import DockerFleet
from lockgate.controller.fleets.kubernetes import KubernetesFleet
from lockgate.controller.runtime import Runtime, Settings
from lockgate.engine import InstanceSet
from lockgate.kube import DISCOVERY_GRACE_S, DISCOVERY_TTL_S, ApiVersions, DiscoveryPending, Kube
from lockgate.probes.prometheus import PrometheusMetrics
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import NS, FakeKube, runtime_over
from tests.unit.fake_prometheus import FakePrometheus, traffic

KUBERNETES = {"kubernetes": {"replicas": 3}}
DOCKER = {
    "docker": {
        "hosts": [
            {
                "name": "h1",
                "url": "ssh://deploy@h1",
                "address": "h1",
                "sshKeySecretRef": {"name": "ssh", "key": "id"},
                "knownHostsSecretRef": {"name": "ssh", "key": "known_hosts"},
            }
        ]
    },
    "traffic": {"traefik": {"fileProvider": {"host": "local", "path": "/tmp/unused.yml"}}},
}
UNITS = ("replica-1", "replica-2", "replica-3")


def kubelet(kube: FakeKube, ready: dict[str, int]) -> None:
    """Pods for every slot as its ReplicaSet and kubelet would make them (Recreate: Pods of
    another template go first); `ready[slot]` of them pass their readiness probe."""
    for (plural, ns, name), workload in list(kube.store.items()):
        if plural != "deployments.apps":
            continue
        labels = workload["spec"]["template"]["metadata"]["labels"]
        for key in [k for k in kube.store if k[0] == "pods" and k[2].startswith(f"{name}-")]:
            del kube.store[key]
        for i in range(workload["spec"]["replicas"]):
            condition = {"type": "Ready", "status": "True" if i < ready.get(name, 0) else "False"}
            kube.put(
                "pods",
                ns,
                {
                    "metadata": {"name": f"{name}-{i}", "labels": labels},
                    "status": {"conditions": [condition]},
                },
            )


def kubernetes_app(kube: FakeKube) -> tuple[Runtime, dict[str, Any], ApplicationSpec]:
    app_obj = kube.add_application("shop", KUBERNETES)
    return runtime_over(kube), app_obj, ApplicationSpec.model_validate(KUBERNETES)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_the_kubernetes_fleet_observes_its_slots_and_weights() -> None:
    kube = FakeKube()
    rt, app_obj, app = kubernetes_app(kube)
    between_rollouts = fleet_for(rt, app_obj, app, None)
    run(between_rollouts.ensure_owned())
    run(between_rollouts.ensure("stable", "app:1", UNITS, "old/1"))
    kubelet(kube, {"shop-a": 3})

    fleet = fleet_for(rt, app_obj, app, "dep/1")
    view = run(fleet.observe())
    assert view.stable == InstanceSet("old/1", "app:1", UNITS, UNITS)
    assert view.canary == InstanceSet()
    assert view.live_weights == (100, 0)  # without Traefik's API: the declared split

    run(fleet.ensure("canary", "app:2", UNITS[:1], "dep/1"))
    kubelet(kube, {"shop-a": 3, "shop-b": 0})
    assert run(fleet.observe()).canary == InstanceSet("dep/1", "app:2", ("replica-1",), ())
    kubelet(kube, {"shop-a": 3, "shop-b": 1})
    run(fleet.set_weights(80, 20))
    view = run(fleet.observe())
    assert view.canary.ready == ("replica-1",)
    assert view.live_weights == (80, 20)
    census = run(fleet.census(rolling_out=True))
    assert (census.stable_image, census.desired, census.ready, census.updated) == (
        "app:1",
        3,
        4,
        1,
    )

    run(fleet.promote("dep/1", "app:2", "dep"))
    view = run(fleet.observe())
    assert (view.stable.release, view.stable.image) == ("dep/1", "app:2")
    assert (view.canary.release, view.canary.image) == ("old/1", "app:1")
    stable = kube.application("shop")["status"]["stable"]
    assert (stable["image"], stable["deployment"]) == ("app:2", "dep")


def traefik_service_version(kube: FakeKube) -> str:
    return str(kube.store[("traefikservices", NS, "shop")]["apiVersion"])


@pytest.mark.parametrize(
    ("served", "written"),
    [
        ({"traefik.io/v1alpha1"}, "traefik.io/v1alpha1"),
        ({"traefik.io/v1alpha1", "traefik.io/v1"}, "traefik.io/v1"),
        ({"traefik.io/v1", "traefik.io/v2"}, "traefik.io/v1"),  # v2: not one lockgate writes
    ],
)
def test_without_an_api_group_the_routes_use_the_newest_traefik_version_served(
    served: set[str], written: str
) -> None:
    kube = FakeKube()
    kube.served["traefik.io"] = frozenset(served)
    rt, app_obj, app = kubernetes_app(kube)
    run(fleet_for(rt, app_obj, app, None).ensure_owned())
    assert traefik_service_version(kube) == written


def test_an_api_group_the_application_names_is_used_without_asking_the_cluster() -> None:
    kube = FakeKube()
    kube.served["traefik.io"] = frozenset({"traefik.io/v1", "traefik.io/v1alpha1"})
    spec = {**KUBERNETES, "traffic": {"traefik": {"apiGroup": "traefik.io/v1alpha1"}}}
    app_obj = kube.add_application("shop", spec)
    rt = runtime_over(kube)
    run(fleet_for(rt, app_obj, ApplicationSpec.model_validate(spec), None).ensure_owned())
    assert traefik_service_version(kube) == "traefik.io/v1alpha1"
    assert kube.discoveries == 0


def test_a_cluster_without_traefiks_crds_makes_the_fleet_unusable_naming_the_field() -> None:
    kube = FakeKube()
    kube.served.clear()
    rt, app_obj, app = kubernetes_app(kube)
    now = [0.0]
    rt.api_versions = ApiVersions(cast(Kube, kube), clock=lambda: now[0])
    with pytest.raises(DiscoveryPending):
        run(fleet_for(rt, app_obj, app, "dep/1").observe())
    now[0] = DISCOVERY_GRACE_S
    with pytest.raises(
        FleetUnusable, match=re.escape("spec.traffic.traefik.apiGroup: the cluster")
    ):
        run(fleet_for(rt, app_obj, app, "dep/1").observe())
    assert ("traefikservices", NS, "shop") not in kube.store


def test_an_operator_starting_with_its_api_server_waits_for_traefiks_group() -> None:
    """An operator and its API server starting together (a node's reboot): the server lists
    Traefik's group a moment later, and the rollout goes on with it, unharmed."""
    kube = FakeKube()
    served = kube.served.pop("traefik.io")
    rt, app_obj, app = kubernetes_app(kube)
    now = [0.0]
    rt.api_versions = ApiVersions(cast(Kube, kube), clock=lambda: now[0])
    for now[0] in (0.0, DISCOVERY_GRACE_S / 2):
        with pytest.raises(DiscoveryPending, match=re.escape("lists no traefik.io API group yet")):
            run(fleet_for(rt, app_obj, app, "dep/1").ensure_owned())
    kube.served["traefik.io"] = served
    run(fleet_for(rt, app_obj, app, "dep/1").ensure_owned())
    assert traefik_service_version(kube) == "traefik.io/v1alpha1"


def test_the_served_versions_are_asked_once_a_minute_for_all_applications() -> None:
    kube = FakeKube()
    rt = runtime_over(kube)
    now = [0.0]
    rt.api_versions = ApiVersions(cast(Kube, kube), clock=lambda: now[0])
    for name in ("a", "b", "c"):
        app_obj = kube.add_application(name, KUBERNETES)
        run(fleet_for(rt, app_obj, ApplicationSpec.model_validate(KUBERNETES), None).ensure_owned())
    assert kube.discoveries == 1
    # Traefik's CRDs upgraded under the running operator: followed once the minute is over.
    kube.served["traefik.io"] = frozenset({"traefik.io/v1", "traefik.io/v1alpha1"})
    now[0] = DISCOVERY_TTL_S
    app_obj = kube.add_application("d", KUBERNETES)
    run(fleet_for(rt, app_obj, ApplicationSpec.model_validate(KUBERNETES), None).ensure_owned())
    assert kube.discoveries == 2
    assert kube.store[("traefikservices", NS, "d")]["apiVersion"] == "traefik.io/v1"


def test_an_api_server_that_lists_no_traefik_group_for_a_moment_changes_nothing() -> None:
    """While the API server restarts, its discovery lists a CRD's group only once it has
    loaded the CRD: that moment must not make a rollout's fleet unusable."""
    kube = FakeKube()
    rt, app_obj, app = kubernetes_app(kube)
    now = [0.0]
    rt.api_versions = ApiVersions(cast(Kube, kube), clock=lambda: now[0])
    run(fleet_for(rt, app_obj, app, None).ensure_owned())
    kube.served.clear()
    now[0] = DISCOVERY_TTL_S
    run(fleet_for(rt, app_obj, app, "dep/1").observe())  # no FleetUnusable
    assert traefik_service_version(kube) == "traefik.io/v1alpha1"
    assert kube.discoveries == 2
    run(fleet_for(rt, app_obj, app, "dep/1").observe())
    assert kube.discoveries == 3, "an empty answer is asked again, not kept"


def canary_of_dep_1(kube: FakeKube, deleted: str) -> Fleet:
    """A canary of Deployment `dep` (revision 1) at 20%; the fleet of the `deleted` release."""
    rt, app_obj, app = kubernetes_app(kube)
    fleet = fleet_for(rt, app_obj, app, deleted)
    run(fleet.ensure_owned())
    run(fleet.ensure("stable", "app:1", UNITS, "old/1"))
    run(fleet.ensure("canary", "app:2", UNITS[:1], "dep/1"))
    kubelet(kube, {"shop-a": 3, "shop-b": 1})
    run(fleet.set_weights(80, 20))
    return fleet


def test_the_kubernetes_fleet_removes_a_deleted_rollout() -> None:
    kube = FakeKube()
    fleet = canary_of_dep_1(kube, deleted="dep/2")  # any revision of the Deployment
    run(fleet.remove_rollout())
    assert run(fleet.observe()).live_weights == (100, 0)
    assert kube.store[("deployments.apps", NS, "shop-b")]["spec"]["replicas"] == 0


def test_the_kubernetes_fleet_leaves_another_rollouts_canary() -> None:
    kube = FakeKube()
    fleet = canary_of_dep_1(kube, deleted="gone/1")
    run(fleet.remove_rollout())
    assert kube.store[("deployments.apps", NS, "shop-b")]["spec"]["replicas"] == 1


def test_each_target_gets_its_own_fleet_and_finalizer_rule() -> None:
    kube = FakeKube()
    rt = runtime_over(kube)
    app_obj = kube.add_application("shop", DOCKER)
    assert isinstance(
        fleet_for(rt, app_obj, ApplicationSpec.model_validate(DOCKER), None), DockerFleet
    )
    app = ApplicationSpec.model_validate(KUBERNETES)
    assert isinstance(fleet_for(rt, app_obj, app, None), KubernetesFleet)
    assert removes_on_deletion(DOCKER)
    assert not removes_on_deletion(KUBERNETES)


def test_metric_source_names_are_the_proxys_leaf_services() -> None:
    kube = FakeKube()
    rt = runtime_over(kube)
    app_obj = kube.add_application("shop", KUBERNETES)
    kubernetes = fleet_for(rt, app_obj, ApplicationSpec.model_validate(KUBERNETES), None)
    docker = fleet_for(rt, app_obj, ApplicationSpec.model_validate(DOCKER), None)
    # Traefik's Kubernetes provider names a leaf `<namespace>-<service>-<port>`; its file
    # provider `<service>` (the parser drops `@file`).
    assert kubernetes.metric_sources() == {
        "stable": "default-shop-stable-",
        "canary": "default-shop-canary-",
    }
    assert docker.metric_sources() == {"stable": "shop-stable", "canary": "shop-canary"}


SCRAPE = """\
# TYPE traefik_service_requests_total counter
traefik_service_requests_total{{code="200",service="{stable}@{provider}"}} {ok}
traefik_service_requests_total{{code="200",service="{canary}@{provider}"}} {ok}
traefik_service_requests_total{{code="500",service="{canary}@{provider}"}} {errors}
"""


@pytest.mark.parametrize(
    ("spec", "stable", "canary", "provider"),
    [
        (KUBERNETES, "default-shop-stable-8080", "default-shop-canary-8080", "kubernetescrd"),
        (DOCKER, "shop-stable", "shop-canary", "file"),
    ],
    ids=["kubernetes", "docker"],
)
def test_the_analysis_counts_the_fleets_leaf_services(
    spec: dict[str, Any], stable: str, canary: str, provider: str
) -> None:
    scrapes = iter([(100, 0), (200, 10)])

    def metrics() -> str:
        ok, errors = next(scrapes)
        return SCRAPE.format(stable=stable, canary=canary, provider=provider, ok=ok, errors=errors)

    kube = FakeKube()
    rt = runtime_over(kube, metrics)
    app_obj = kube.add_application("shop", spec)
    rec = Reconciler(rt, kube.add_deployment("dep", dep_spec()))
    rec.app_obj, rec.app = app_obj, ApplicationSpec.model_validate(spec)
    sources = fleet_for(rt, app_obj, rec.app, "dep/1").metric_sources()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    first = run(rec.metrics_provider().window(sources, start, start))
    assert first.error == "first scrape: collecting a baseline"
    sample = run(rec.metrics_provider().window(sources, start, start + timedelta(seconds=10)))
    assert sample.error is None
    assert sample.stable is not None and sample.canary is not None
    assert (sample.stable.requests, sample.stable.errors) == (100, 0)
    assert (sample.canary.requests, sample.canary.errors) == (110, 10)


@pytest.mark.parametrize(
    ("spec", "stable", "canary", "provider"),
    [
        (KUBERNETES, "default-shop-stable-8080", "default-shop-canary-8080", "kubernetescrd"),
        (DOCKER, "shop-stable", "shop-canary", "file"),
    ],
    ids=["kubernetes", "docker"],
)
def test_with_prometheus_the_analysis_asks_it_for_the_fleets_leaf_services(
    spec: dict[str, Any], stable: str, canary: str, provider: str
) -> None:
    prom = FakePrometheus(
        {
            f"{stable}@{provider}": traffic(100),
            f"{canary}@{provider}": traffic(100, 10),
            f"other-{canary}@{provider}": traffic(999, 999),
        }
    )
    kube = FakeKube()
    rt = Runtime(cast(Kube, kube), prom.client(), Settings(traefik_metrics_url="http://t/metrics"))
    spec = {**spec, "metrics": {"prometheus": {"url": "http://prom:9090"}}}
    app_obj = kube.add_application("shop", spec)
    rec = Reconciler(rt, kube.add_deployment("dep", dep_spec()))
    rec.app_obj, rec.app = app_obj, ApplicationSpec.model_validate(spec)
    source = rec.metrics_provider()
    assert isinstance(source, PrometheusMetrics), "metrics.prometheus chooses Prometheus"
    sources = fleet_for(rt, app_obj, rec.app, "dep/1").metric_sources()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    sample = run(source.window(sources, start, start + timedelta(seconds=10)))
    assert sample.error is None, sample.error
    assert sample.source == "prometheus http://prom:9090"
    assert sample.stable is not None and sample.canary is not None
    assert (sample.stable.requests, sample.stable.errors) == (100, 0)
    assert (sample.canary.requests, sample.canary.errors) == (110, 10)
    run(rt.aclose())


def test_a_docker_fleet_without_its_secret_names_the_field() -> None:
    kube = FakeKube()
    rt = runtime_over(kube)
    app_obj = kube.add_application("shop", DOCKER, stable={"image": "app:1"})
    app = ApplicationSpec.model_validate(DOCKER)
    why = "spec.docker.hosts[0].sshKeySecretRef: Secret 'ssh' not found"
    with pytest.raises(FleetUnusable, match=re.escape(why)):
        run(fleet_for(rt, app_obj, app, "dep/1").observe())
    census = run(fleet_for(rt, app_obj, app, None).census(rolling_out=False))
    assert (census.stable_image, census.desired, census.ready, census.problem) == (
        "app:1",
        1,
        0,
        why,
    )
    kube.secrets["ssh"] = {"id": "KEY"}
    with pytest.raises(
        FleetUnusable, match=re.escape("knownHostsSecretRef: Secret 'ssh' has no key")
    ):
        run(fleet_for(rt, app_obj, app, None).remove_all())
