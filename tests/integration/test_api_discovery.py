"""lockgate asks the real API server which versions of Traefik's CRDs and of the Gateway
API it serves (an Application routes through the newest of them, unless it names Traefik's
in spec.traffic.traefik.apiGroup)."""

from __future__ import annotations

import asyncio

from lockgate.api.application import TRAEFIK_API_VERSIONS
from lockgate.kube import ApiVersions, Kube
from lockgate.traffic.gateway_api import GATEWAY_API_VERSIONS
from tests.support.cluster import Cluster


def test_the_served_traefik_versions_come_from_the_api_servers_discovery(cluster: Cluster) -> None:
    kube = Kube(cluster.api_client())
    # The environment's Traefik (v3.6) installs its CRDs as traefik.io/v1alpha1 only.
    served = asyncio.run(kube.served_groups())
    assert served["traefik.io"] == {"traefik.io/v1alpha1"}
    assert served["apps"] >= {"apps/v1"}
    assert "no-such-group.lockgate.dev" not in served
    assert asyncio.run(ApiVersions(kube).newest(TRAEFIK_API_VERSIONS)) == "traefik.io/v1alpha1"


def test_the_served_gateway_api_versions_come_from_the_api_servers_discovery(
    cluster: Cluster,
) -> None:
    kube = Kube(cluster.api_client())
    # The Gateway API's standard CRDs (v1.4) serve HTTPRoute as v1 and v1beta1.
    served = asyncio.run(kube.served_groups())["gateway.networking.k8s.io"]
    assert served >= {"gateway.networking.k8s.io/v1", "gateway.networking.k8s.io/v1beta1"}
    newest = asyncio.run(ApiVersions(kube).newest(GATEWAY_API_VERSIONS))
    assert newest == "gateway.networking.k8s.io/v1"
