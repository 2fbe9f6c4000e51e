"""What every handler shares: API clients, HTTP client, scrape history, settings."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import httpx

from lockgate.kube import Kube, load_config
from lockgate.probes.traefik_metrics import History

from .redact import Redactor


@dataclass
class Settings:
    traefik_api_url: str | None = None
    traefik_metrics_url: str | None = None
    metrics_port: int = 9108

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            traefik_api_url=os.environ.get("LOCKGATE_TRAEFIK_API_URL") or None,
            traefik_metrics_url=os.environ.get("LOCKGATE_TRAEFIK_METRICS_URL") or None,
            metrics_port=int(os.environ.get("LOCKGATE_METRICS_PORT", "9108")),
        )


@dataclass
class Runtime:
    kube: Kube
    http: httpx.AsyncClient
    settings: Settings
    redactor: Redactor = field(default_factory=Redactor)
    scrapes: dict[str, History] = field(default_factory=dict)  # metrics URL -> history
    fleets: dict[tuple[str, str], Any] = field(default_factory=dict)  # (ns, app) -> FleetState


_runtime: Runtime | None = None


def runtime() -> Runtime:
    global _runtime
    if _runtime is None:
        _runtime = Runtime(Kube(load_config()), httpx.AsyncClient(), Settings.from_env())
    return _runtime
