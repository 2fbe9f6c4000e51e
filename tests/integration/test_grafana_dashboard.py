"""The dashboard's metric names against real scrapes: Traefik routing an Application's
traffic, and the operator's own endpoint."""

from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.cluster import Traefik
from tests.support.operator_fixtures import Operator
from tests.support.rollouts import Lockgate, application, deployment, host_of, wait_for
from tests.unit.test_grafana_dashboard import TRAEFIK_METRICS, expressions

pytestmark = pytest.mark.integration


def samples(url: str) -> list[tuple[str, dict[str, str]]]:
    text = httpx.get(url, timeout=5).text
    return [
        (sample.name, dict(sample.labels))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def test_traefik_and_operator_expose_what_the_dashboard_queries(
    lockgate: Lockgate, traefik: Traefik, operator: Operator
) -> None:
    ns = lockgate.namespace
    lockgate.create(application("shop", 1, namespace=ns))
    lockgate.create(deployment("shop-v1", "shop", "demo:v1"))
    lockgate.wait_phase("shop-v1", {"Succeeded"})
    with httpx.Client(timeout=3) as http:
        for _ in range(20):
            http.get(traefik.web_url, headers={"Host": host_of("shop", ns)})

    # the dashboard's selector, with its variables set, as Prometheus matches it (anchored)
    stable = re.compile(f"{ns}-shop-(stable|canary)-.*")

    def scraped() -> list[tuple[str, dict[str, str]]]:
        return [
            (name, labels)
            for name, labels in samples(traefik.metrics_url)
            if stable.fullmatch(labels.get("service", ""))
        ]

    # What moves towards them: the services Traefik has loaded and counts.
    ours = wait_for(
        "Traefik metrics of the shop services",
        scraped,
        lambda: sorted({labels.get("service", "") for _, labels in samples(traefik.metrics_url)}),
    )
    names = {name for name, _ in ours}
    for name, labels in TRAEFIK_METRICS.items():
        assert name in names, f"{name} not scraped (have {sorted(names)})"
        found = next(sample_labels for n, sample_labels in ours if n == name)
        assert labels <= set(found), f"{name}: {set(found)} lacks {labels - set(found)}"
    assert any(labels["service"].startswith(f"{ns}-shop-stable-") for _, labels in ours)

    port = operator.env["LOCKGATE_METRICS_PORT"]
    exported = {name for name, _ in samples(f"http://127.0.0.1:{port}/metrics")}
    for expected in (
        "lockgate_rollouts",
        "lockgate_step_duration_seconds_bucket",
        "lockgate_reconcile_seconds_bucket",
    ):
        assert expected in exported
    assert any("lockgate_rollouts" in expr for _, expr in expressions())
