"""Pod CPU and memory from the Kubernetes resource metrics API (`metrics.k8s.io/v1beta1`,
served by metrics-server behind the aggregation layer), for comparing canary and stable Pods.

metrics-server turns the kubelets' cumulative CPU counters into a rate over its resolution
window and reports the memory working set; a Pod's figure is the sum of its containers'. A Pod
it has no figure for yet (scraped fewer than twice since it started) is absent from the answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from lockgate.kube import Kube

GROUP = "metrics.k8s.io"
VERSION = "v1beta1"

# Kubernetes' quantity suffixes (k8s.io/apimachinery/pkg/api/resource): binary, decimal, and
# the decimal exponent form ("1e3", "12E-3").
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(
    r"^(?P<number>[+-]?(?:\d+\.?\d*|\.\d+))"
    r"(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$"
)


class QuantityError(ValueError):
    """A string that is not a Kubernetes quantity."""


def parse_quantity(text: str) -> float:
    """A Kubernetes quantity as a number: "250m" -> 0.25, "12345n" -> 1.2345e-05,
    "100Mi" -> 104857600, "1.5G" -> 1.5e9, "1e3" -> 1000."""
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise QuantityError(f"not a Kubernetes quantity: {text!r}")
    try:
        number = Decimal(match["number"])
    except InvalidOperation as exc:  # the pattern should not let this happen
        raise QuantityError(f"not a Kubernetes quantity: {text!r}") from exc
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return float(number * _BINARY[suffix])
    if suffix in _DECIMAL:
        return float(number * _DECIMAL[suffix])
    return float(number * Decimal(10) ** int(suffix[1:]))


@dataclass(frozen=True)
class PodUsage:
    """A Pod's CPU in cores (0.25 = a quarter of one core) and memory working set in bytes,
    summed over its containers, as metrics-server measured them over the `window_s` seconds
    ending at `measured_at`."""

    cpu_cores: float
    memory_bytes: float
    window_s: float = 0.0
    measured_at: datetime | None = None


def _window_seconds(text: str | None) -> float:
    """metrics.k8s.io's window is a Go duration such as "10.123s" or "1m0s"."""
    if not text:
        return 0.0
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)", text):
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6}
        total += float(number) * scale.get(unit, 1e-9)
    return total


def _timestamp(text: str | None) -> datetime | None:
    """An RFC 3339 time as metrics-server writes it ("2026-12-01T00:00:00Z"); None if absent."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def usage_from_list(
    listing: Mapping[str, Any], pod_names: Iterable[str] | None = None
) -> dict[str, PodUsage]:
    """PodMetricsList (a dict) -> usage per Pod name; only the Pods named, when names are given.
    Raises QuantityError on a figure that is not a quantity."""
    wanted = None if pod_names is None else set(pod_names)
    result: dict[str, PodUsage] = {}
    for item in listing.get("items") or []:
        name = item.get("metadata", {}).get("name")
        if not name or (wanted is not None and name not in wanted):
            continue
        cpu = memory = 0.0
        for container in item.get("containers") or []:
            usage = container.get("usage") or {}
            cpu += parse_quantity(str(usage.get("cpu", "0")))
            memory += parse_quantity(str(usage.get("memory", "0")))
        result[name] = PodUsage(
            cpu_cores=cpu,
            memory_bytes=memory,
            window_s=_window_seconds(item.get("window")),
            measured_at=_timestamp(item.get("timestamp")),
        )
    return result


async def pod_usage(
    kube: Kube, namespace: str, pod_names: Iterable[str] | None = None
) -> dict[str, PodUsage]:
    """CPU and memory of the Pods of `namespace` (only `pod_names`, when given) from
    GET /apis/metrics.k8s.io/v1beta1/namespaces/{namespace}/pods, off the event loop.

    A Pod without figures yet is absent. Errors of the API (503 when metrics-server is away,
    404 when no metrics API is registered) are raised as the kubernetes client's ApiException.
    """
    listing: Mapping[str, Any] = await kube.call(
        kube.custom.list_namespaced_custom_object, GROUP, VERSION, namespace, "pods"
    )
    return usage_from_list(listing, pod_names)
