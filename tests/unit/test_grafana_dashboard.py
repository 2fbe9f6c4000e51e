"""deploy/grafana/lockgate.json: valid JSON, and every PromQL expression names metrics (and
grouping labels) that exist: the operator's from lockgate.controller.metrics, Traefik's from
the list below (checked against a real Traefik scrape in
tests/integration/test_grafana_dashboard.py)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prometheus_client.metrics import MetricWrapperBase

from lockgate.controller import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy/grafana/lockgate.json"

# Traefik v3 service metrics the dashboard uses, with their labels.
TRAEFIK_METRICS: dict[str, set[str]] = {
    "traefik_service_requests_total": {"service", "code", "method", "protocol"},
    "traefik_service_request_duration_seconds_bucket": {
        "service",
        "code",
        "method",
        "protocol",
        "le",
    },
    "traefik_service_request_duration_seconds_count": {"service", "code", "method", "protocol"},
    "traefik_service_request_duration_seconds_sum": {"service", "code", "method", "protocol"},
}
# Labels a query may make itself (label_replace) and group by.
DERIVED_LABELS = {"version"}
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "increase",
    "histogram_quantile",
    "label_replace",
    "without",
}


def operator_metrics() -> dict[str, set[str]]:
    """Sample names lockgate exports, with their labels (counters get _total, histograms
    _bucket/_sum/_count, as the Prometheus exposition format names them)."""
    out: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        if not isinstance(value, MetricWrapperBase):
            continue
        name, kind = value._name, value._type
        labels = set(value._labelnames)
        if kind == "counter":
            out[f"{name}_total"] = labels
        elif kind == "histogram":
            out[f"{name}_bucket"] = labels | {"le"}
            out[f"{name}_sum"] = labels
            out[f"{name}_count"] = labels
        else:
            out[name] = labels
    return out


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for item in items:
        yield item
        yield from panels(item.get("panels") or [])


def expressions() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard["panels"])
        for target in panel.get("targets") or []
    ]


def metric_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {
        token
        for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", without_strings)
        if token.startswith(("lockgate_", "traefik_"))
    }


def test_the_dashboard_is_importable_json_with_unique_ids() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "lockgate" and dashboard["title"]
    ids = [p["id"] for p in panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "application"} <= variables
    for panel in panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel.get("targets"), panel["title"]


def test_every_expression_uses_only_metrics_and_labels_that_exist() -> None:
    known = {**operator_metrics(), **TRAEFIK_METRICS}
    exprs = expressions()
    assert len(exprs) >= 15
    for title, expr in exprs:
        names = metric_names(expr)
        assert names, f"{title}: no lockgate_ or traefik_ metric in {expr!r}"
        unknown = names - set(known)
        assert not unknown, f"{title}: unknown metric(s) {sorted(unknown)} in {expr!r}"
        labels = set().union(*(known[n] for n in names)) | DERIVED_LABELS
        for group in re.findall(r"\bby \(([^)]*)\)", expr):
            used = {label.strip() for label in group.split(",")}
            assert used <= labels, f"{title}: grouping by unknown label(s) {used - labels}"
        for label in re.findall(r"([a-z_]+)=~?\"", expr):
            assert label in labels, f"{title}: matcher on unknown label {label!r} in {expr!r}"


def test_every_operator_metric_is_on_the_dashboard() -> None:
    used = set().union(*(metric_names(expr) for _, expr in expressions()))
    for name in operator_metrics():
        if (
            name.endswith(("_sum", "_count"))
            and name.replace("_sum", "_bucket").replace("_count", "_bucket") in used
        ):
            continue
        assert name in used, f"{name} is exported but not on the dashboard"


def test_traffic_panels_select_both_versions_of_the_chosen_application() -> None:
    traffic = [expr for _, expr in expressions() if "traefik_" in expr]
    assert traffic
    for expr in traffic:
        assert "$namespace-$application-" in expr, expr
    joined = " ".join(traffic)
    assert "-canary-" in joined and "-stable-" in joined and 'code=~"5.."' in joined
    assert "histogram_quantile(0.95" in joined
