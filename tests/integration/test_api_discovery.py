"""lockgate asks the real API server which versions of Traefik's CRDs it serves (an
Application without spec.traffic.traefik.apiGroup routes through the newest of them)."""

from __future__ import annotations

import asyncio

from lockgate.api.application import TRAEFIK_API_VERSIONS
from lockgate.kube import ApiVersions, Kube
from tests.support.cluster import Cluster


def test_the_served_traefik_versions_come_from_the_api_servers_discovery(cluster: Cluster) -> None:
    kube = Kube(cluster.api_client())
    # The environment's Traefik (v3.6) installs its CRDs as traefik.io/v1alpha1 only.
    assert asyncio.run(kube.served_versions("traefik.io")) == {"traefik.io/v1alpha1"}
    assert asyncio.run(kube.served_versions("apps")) >= {"apps/v1"}
    assert asyncio.run(kube.served_versions("no-such-group.lockgate.dev")) == frozenset()
    assert asyncio.run(ApiVersions(kube).newest(TRAEFIK_API_VERSIONS)) == "traefik.io/v1alpha1"
