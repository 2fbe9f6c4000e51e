"""The Pod template lockgate derives from an Application: drain and grace as documented."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from lockgate.api.application import ApplicationSpec
from lockgate.targets.kubernetes import KubernetesTarget, pod_template


def spec(drain: int | None = None, template: dict[str, Any] | None = None) -> ApplicationSpec:
    kubernetes: dict[str, Any] = {"replicas": 1, "template": template or {}}
    if drain is not None:
        kubernetes["drainSeconds"] = drain
    return ApplicationSpec.model_validate(
        {
            "kubernetes": kubernetes,
            "port": 8080,
            "healthCheck": {"http": {"path": "/health"}},
            "traffic": {"traefik": {"route": {"match": "Host(`shop.example`)"}}},
        }
    )


def grace_and_pre_stop(app: ApplicationSpec) -> tuple[int | None, Any]:
    template = pod_template("shop", app, "a", "shop:v2", "v2")
    container = template["spec"]["containers"][0]
    return (
        template["spec"].get("terminationGracePeriodSeconds"),
        container.get("lifecycle", {}).get("preStop"),
    )


def test_the_default_drain_gets_a_grace_of_drain_plus_ten_not_thirty() -> None:
    # Kubernetes' 30 s default would keep a deleted namespace waiting for 30 s.
    assert grace_and_pre_stop(spec()) == (15, {"sleep": {"seconds": 5}})


@pytest.mark.parametrize(("drain", "grace"), [(1, 11), (40, 50), (300, 310)])
def test_the_grace_always_covers_the_drain(drain: int, grace: int) -> None:
    assert grace_and_pre_stop(spec(drain)) == (grace, {"sleep": {"seconds": drain}})


def test_a_longer_grace_of_the_users_template_is_kept() -> None:
    template = {"spec": {"terminationGracePeriodSeconds": 120}}
    assert grace_and_pre_stop(spec(5, template))[0] == 120


def test_a_grace_too_short_for_the_drain_is_raised() -> None:
    template = {"spec": {"terminationGracePeriodSeconds": 3}}
    assert grace_and_pre_stop(spec(5, template))[0] == 15


def test_without_a_drain_the_template_is_left_to_kubernetes() -> None:
    assert grace_and_pre_stop(spec(0)) == (None, None)


def test_the_users_own_pre_stop_hook_is_kept_with_its_grace() -> None:
    hook = {"exec": {"command": ["/bin/drain"]}}
    template = {"spec": {"containers": [{"name": "app", "lifecycle": {"preStop": hook}}]}}
    assert grace_and_pre_stop(spec(5, template)) == (None, hook)


class SlotDeletedMeanwhile:
    """A Kube whose slot Deployment is read, then gone when it is scaled: the namespace or
    the Application is being deleted."""

    def __init__(self) -> None:
        self.apps = SimpleNamespace(
            read_namespaced_deployment=object(), patch_namespaced_deployment_scale=object()
        )

    async def get_or_none(self, fn: object, *args: object) -> Any:
        return {"spec": {"replicas": 2}}

    async def call(self, fn: object, *args: object, **kwargs: object) -> Any:
        raise ApiException(status=404, reason="Not Found")


def test_scaling_a_slot_deleted_meanwhile_is_nothing_to_do() -> None:
    # Raised, it failed the Deployment's deletion handler, which kopf retried a minute
    # later: the namespace being deleted waited for it.
    target = KubernetesTarget(SlotDeletedMeanwhile())  # type: ignore[arg-type]
    assert asyncio.run(target._scale("ns", "shop-a", 0)) is False


def test_a_stable_slot_scaled_to_zero_is_scaled_back_for_a_rollback() -> None:
    # Found by bench/chaos.py: a Recreate rollout stops every old instance first (the stable
    # slot scaled to 0, observed as an empty set without a release); when the new image
    # never became ready, the rollback asked for the stable set back with that release,
    # None, and ensure scaled the slot to 0 again: stuck in RollingBack with nothing serving.
    from lockgate.names import ANNOTATION_RELEASE, LABEL_SLOT
    from tests.unit.controller_fakes import FakeKube

    kube = FakeKube()
    kube.store[("services", "ns", "shop-stable")] = {
        "metadata": {"name": "shop-stable"},
        "spec": {"selector": {LABEL_SLOT: "a"}},
    }
    kube.store[("deployments.apps", "ns", "shop-a")] = {
        "metadata": {"name": "shop-a"},
        "spec": {
            "replicas": 0,
            "template": {
                "metadata": {"annotations": {ANNOTATION_RELEASE: "shop-v1/1"}},
                "spec": {"containers": [{"name": "app", "image": "demo:v1"}]},
            },
        },
    }
    target = KubernetesTarget(kube)  # type: ignore[arg-type]
    app_obj = {"metadata": {"name": "shop", "namespace": "ns", "uid": "u"}}
    units = ("replica-1", "replica-2", "replica-3")
    stable, _ = asyncio.run(target.observe("ns", "shop", units))
    assert stable.units == ()
    # What the engine's rollback emits: the previous image on every unit, the observed release.
    asyncio.run(target.ensure(app_obj, spec(), "stable", "demo:v1", len(units), stable.release))
    assert kube.store[("deployments.apps", "ns", "shop-a")]["spec"]["replicas"] == 3


def test_a_retemplated_slot_counts_only_its_new_releases_pods_and_those_traefik_lists() -> None:
    # The slot's strategy starts the new Pods while the previous release's are still there
    # (not yet stopped by the Deployment controller, or draining), Ready and even listed by
    # Traefik: none of them is the new release, so none makes it look ready for traffic.
    from lockgate.names import ANNOTATION_RELEASE, LABEL_APP, LABEL_RELEASE_HASH, LABEL_SLOT
    from lockgate.targets.kubernetes import release_hash
    from tests.unit.controller_fakes import FakeKube

    kube = FakeKube()
    kube.store[("services", "ns", "shop-stable")] = {
        "metadata": {"name": "shop-stable"},
        "spec": {"selector": {LABEL_SLOT: "a"}},
    }
    kube.store[("deployments.apps", "ns", "shop-b")] = {
        "metadata": {"name": "shop-b"},
        "spec": {
            "replicas": 3,
            "template": {
                "metadata": {"annotations": {ANNOTATION_RELEASE: "next/1"}},
                "spec": {"containers": [{"name": "app", "image": "demo:v3"}]},
            },
        },
    }

    def pod(name: str, release: str, ip: str, *, ready: bool, draining: bool = False) -> None:
        meta: dict[str, Any] = {
            "name": name,
            "labels": {
                LABEL_APP: "shop",
                LABEL_SLOT: "b",
                LABEL_RELEASE_HASH: release_hash(release),
            },
        }
        if draining:
            meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
        kube.put(
            "pods",
            "ns",
            {
                "metadata": meta,
                "status": {
                    "phase": "Running",
                    "podIP": ip,
                    "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                },
            },
        )

    pod("shop-b-old-0", "dep/1", "10.246.0.1", ready=True)  # its ReplicaSet not scaled down yet
    pod("shop-b-old-1", "dep/1", "10.246.0.2", ready=True, draining=True)
    pod("shop-b-new-0", "next/1", "10.246.0.3", ready=True)
    pod("shop-b-new-1", "next/1", "10.246.0.4", ready=True)  # Traefik has yet to list it
    pod("shop-b-new-2", "next/1", "10.246.0.5", ready=False)
    served = {
        "stable": frozenset(),
        "canary": frozenset({"10.246.0.1", "10.246.0.2", "10.246.0.3"}),
    }
    target = KubernetesTarget(kube)  # type: ignore[arg-type]
    units = ("replica-1", "replica-2", "replica-3")
    _, canary = asyncio.run(target.observe("ns", "shop", units, served))
    assert (canary.release, canary.image) == ("next/1", "demo:v3")
    assert canary.units == units
    assert canary.ready == ("replica-1",)
    assert target.lagging  # shop-b-new-1: Ready, not yet among Traefik's servers
