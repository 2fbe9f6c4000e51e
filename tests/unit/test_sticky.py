"""Sticky canaries (`traffic.traefik.sticky`): the API, the weighted service both routers
write, its confirmation through Traefik's API, and what `lockgate plan` and `kubectl
lockgate status` show."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from lockgate.api import ApplicationSpec
from lockgate.cli.kubectl_view import render_status
from lockgate.cli.plan import plan_command
from lockgate.traffic.traefik_crd import TraefikCrdRouter
from lockgate.traffic.traefik_file import (
    FileConfig,
    LocalStore,
    RouteConfig,
    TraefikFileRouter,
    dump,
    parse,
    render,
)
from tests.unit.controller_fakes import NS, FakeKube
from tests.unit.test_kubectl_plugin import NOW, dep

ROOT = Path(__file__).resolve().parents[2]
STICKY = {"cookie": {"name": "shop_version", "secure": True, "sameSite": "lax"}}
COOKIE = {"cookie": {"name": "shop_version", "secure": True, "httpOnly": True, "sameSite": "lax"}}


def spec(sticky: dict[str, Any] | None = STICKY) -> dict[str, Any]:
    traefik: dict[str, Any] = {"route": {"match": "Host(`shop.test`)"}}
    if sticky is not None:
        traefik["sticky"] = sticky
    return {"kubernetes": {"replicas": 2}, "traffic": {"traefik": traefik}}


@pytest.mark.parametrize("name", ["", "a b", "a;b", "a`b", "x" * 101])
def test_a_cookie_name_must_be_an_http_token(name: str) -> None:
    with pytest.raises(ValidationError) as err:
        ApplicationSpec.model_validate(spec({"cookie": {"name": name}}))
    assert "traffic.traefik.sticky.cookie.name" in str(err.value).replace("\n", ".")


class WeightedTraefik:
    """Traefik's API answering for TraefikService `shop`, as loaded from the fake cluster."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube = kube
        self.loaded: dict[str, Any] | None = None

    def sync(self) -> None:
        spec = self.kube.store[("traefikservices", NS, "shop")]["spec"]["weighted"]
        children = [
            {"name": f"{NS}-{c['name']}-{c['port']}@kubernetescrd", "weight": c["weight"]}
            for c in spec["services"]
        ]
        self.loaded = {"status": "enabled", "weighted": {**spec, "services": children}}

    def answer(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/api/http/services/{NS}-shop@kubernetescrd" and self.loaded:
            return httpx.Response(200, json=self.loaded)
        if request.url.path == "/api/http/routers":
            return httpx.Response(200, json=[{"service": f"{NS}-shop@kubernetescrd"}])
        return httpx.Response(404)


def crd_router(kube: FakeKube, traefik: WeightedTraefik, raw: dict[str, Any]) -> TraefikCrdRouter:
    app_obj = kube.add_application("shop", raw)
    http = httpx.AsyncClient(transport=httpx.MockTransport(traefik.answer))
    return TraefikCrdRouter(
        kube,  # type: ignore[arg-type]
        app_obj,
        ApplicationSpec.model_validate(raw),
        "http://traefik:8081",
        http,
        "traefik.io/v1alpha1",
    )


def test_the_traefik_service_carries_the_cookie_and_counts_live_only_once_traefik_has_it() -> None:
    kube = FakeKube()
    traefik = WeightedTraefik(kube)

    async def scenario() -> None:
        plain = crd_router(kube, traefik, spec(None))
        await plain.ensure_route()
        await plain.set_weights(90, 10)
        traefik.sync()
        assert await plain.live_weights() == (90, 10)
        # The Application gains a sticky cookie: the weights stay, the cookie is added.
        sticky = crd_router(kube, traefik, spec())
        await sticky.ensure_route()
        weighted = kube.store[("traefikservices", NS, "shop")]["spec"]["weighted"]
        assert weighted["sticky"] == COOKIE
        assert [s["weight"] for s in weighted["services"]] == [90, 10]
        assert await sticky.live_weights() is None, "Traefik has not loaded the cookie yet"
        traefik.sync()
        assert await sticky.live_weights() == (90, 10)
        await sticky.set_weights(100, 0)
        weighted = kube.store[("traefikservices", NS, "shop")]["spec"]["weighted"]
        assert weighted["sticky"] == COOKIE and len(weighted["services"]) == 1

    asyncio.run(scenario())


def test_the_file_providers_weighted_service_carries_the_cookie(tmp_path: Path) -> None:
    config = FileConfig(
        app="shop",
        weights=(50, 50),
        servers={"stable": ("http://h1:1",), "canary": ("http://h2:1",)},
        route=RouteConfig("Host(`shop.test`)"),
        sticky=COOKIE,
    )
    weighted = render(config)["http"]["services"]["shop"]["weighted"]
    assert weighted["sticky"] == COOKIE
    assert parse("shop", dump(config)) == config
    app = ApplicationSpec.model_validate(
        {
            "docker": {"hosts": [{"name": "h1", "url": "unix:///h1", "address": "h1"}]},
            "traffic": {
                "traefik": {
                    "route": {"match": "Host(`shop.test`)"},
                    "fileProvider": {"host": "local", "path": str(tmp_path / "shop.yaml")},
                    "sticky": STICKY,
                }
            },
        }
    )
    store = LocalStore(str(tmp_path / "shop.yaml"))

    def traefik(request: httpx.Request) -> httpx.Response:
        name = request.url.path.rsplit("/", 1)[-1]
        if name == "shop@file":
            children = [{"name": "shop-stable@file", "weight": 50}]
            children.append({"name": "shop-canary@file", "weight": 50})
            body: dict[str, Any] = {"weighted": {"services": children}}
            if cookie_loaded:
                body["weighted"]["sticky"] = COOKIE
            return httpx.Response(200, json=body)
        role = name.removeprefix("shop-").removesuffix("@file")
        url = {"stable": "http://h1:1", "canary": "http://h2:1"}[role]
        return httpx.Response(200, json={"loadBalancer": {"servers": [{"url": url}]}})

    http = httpx.AsyncClient(transport=httpx.MockTransport(traefik))
    router = TraefikFileRouter.for_application(
        "shop", app, store, http=http, api_url="http://traefik:8081"
    )

    async def scenario() -> None:
        await router.apply((50, 50), {"stable": ["http://h1:1"], "canary": ["http://h2:1"]})
        declared = await router.declared()
        assert declared is not None and declared.sticky == COOKIE
        assert await router.live_weights() is None
        nonlocal cookie_loaded
        cookie_loaded = True
        assert await router.live_weights() == (50, 50)

    cookie_loaded = False
    asyncio.run(scenario())


def test_plan_and_status_name_the_cookie() -> None:
    text = plan_command([ROOT / "manifests/examples/kubernetes/sticky/canary.yaml"])
    assert "sticky:      cookie shop_version: a client keeps the version it got" in text
    view = render_status(
        dep("Progressing", weights={"stable": 90, "canary": 10}),
        NOW,
        app_spec=spec(),
    )
    assert "Sticky:    cookie shop_version: a client keeps its version while weights change" in (
        view
    )
    assert "Sticky:" not in render_status(dep("Progressing", weights={"stable": 90}), NOW)
