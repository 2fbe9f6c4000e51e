"""Webhook gates end to end on Kubernetes: the real control plane, the process kubelet, the
operator as `lockgate operator`, and a real HTTP receiver on 127.0.0.1 started by the test
(the operator runs on the host, so it reaches it)."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kubernetes import client, watch

from tests.support.receiver import Receiver
from tests.support.rollouts import Lockgate, application, deployment

pytestmark = pytest.mark.integration

CANARY = {"type": "Canary", "canary": {"steps": [50, 100], "stepSeconds": 1}}


def deploy_v1(lg: Lockgate, replicas: int = 2) -> None:
    lg.create(application("shop", replicas, namespace=lg.namespace))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    lg.wait_phase("shop-v1", {"Succeeded"})


def hook(name: str, kind: str, url: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "type": kind, "url": url, **extra}


@contextmanager
def images_seen(lg: Lockgate) -> Iterator[set[str]]:
    """Every image of every Pod and apps/v1 Deployment that exists in the namespace while
    the block runs, including ones that come and go between two looks (a watch each)."""
    seen: set[str] = set()
    stop = threading.Event()
    ready = threading.Barrier(3)
    core, apps = client.CoreV1Api(lg.api), client.AppsV1Api(lg.api)

    def record(list_fn: Any, pod_spec: Any) -> None:
        listed = list_fn(lg.namespace)
        for obj in listed.items:
            seen.update(c.image for c in pod_spec(obj).containers)
        version = listed.metadata.resource_version
        ready.wait(timeout=30)
        stream = watch.Watch()
        while not stop.is_set():  # from the version last seen: nothing falls between
            for event in stream.stream(
                list_fn, lg.namespace, resource_version=version, timeout_seconds=1
            ):
                obj = event["object"]
                seen.update(c.image for c in pod_spec(obj).containers)
                version = obj.metadata.resource_version

    threads = [
        threading.Thread(
            target=record, args=(core.list_namespaced_pod, lambda p: p.spec), daemon=True
        ),
        threading.Thread(
            target=record,
            args=(apps.list_namespaced_deployment, lambda d: d.spec.template.spec),
            daemon=True,
        ),
    ]
    for thread in threads:
        thread.start()
    ready.wait(timeout=30)
    try:
        yield seen
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)


def test_a_pre_rollout_refusal_stops_the_rollout_before_any_instance_starts(
    lockgate: Lockgate,
) -> None:
    deploy_v1(lockgate)
    with Receiver() as rx, images_seen(lockgate) as seen:
        rx.answer("/smoke", 503)
        lockgate.create(
            deployment(
                "shop-v2",
                "shop",
                "demo:v2",
                {"type": "Recreate"},
                webhooks=[hook("smoke", "preRollout", f"{rx.url}/smoke?token=t0k3n")],
            )
        )
        status = lockgate.wait_finished("shop-v2")
        app_status = lockgate.get("shop", "applications")["status"]
    assert status["phase"] == "Failed"
    assert status["message"] == (
        f"refused before start: preRollout webhook smoke ({rx.url}/smoke): HTTP 503"
    )
    assert "t0k3n" not in json.dumps(status)
    assert len(rx.requests("/smoke")) == 1
    assert "demo:v1" in seen, f"the watches saw the stable Pods: {seen}"
    assert "demo:v2" not in seen, "a new-version Pod or Deployment existed"
    assert not status.get("startedAt")
    assert not app_status.get("activeDeployment"), "the rollout lock was released"
    assert app_status["stable"]["image"] == "demo:v1"


def test_confirm_promotion_holds_until_the_receiver_says_yes(lockgate: Lockgate) -> None:
    deploy_v1(lockgate)
    waiting = "waiting for confirmPromotion webhook approve: HTTP 403"
    with Receiver() as rx:
        rx.answer("/approve", 403)
        lockgate.create(
            deployment(
                "shop-v2",
                "shop",
                "demo:v2",
                CANARY,
                webhooks=[hook("approve", "confirmPromotion", f"{rx.url}/approve")],
            )
        )
        _, status = lockgate.watch_status(
            "shop-v2",
            "deployments",
            lambda st: st if st.get("message") == waiting else None,
            "the rollout waiting for the confirmPromotion webhook",
        )
        assert status["phase"] == "Progressing"
        progressing = [c for c in status["conditions"] if c["type"] == "Progressing"]
        assert progressing[0]["message"] == waiting
        asked = len(rx.requests("/approve"))
        lockgate.wait_until(
            "shop-v2", "the webhook asked again", lambda: len(rx.requests("/approve")) > asked
        )
        # Nothing was promoted meanwhile: v1 is stable and keeps half of the traffic.
        status = lockgate.status("shop-v2")
        assert status["phase"] == "Progressing" and status["message"] == waiting
        assert status["weights"] == {"stable": 50, "canary": 50}
        app_status = lockgate.get("shop", "applications")["status"]
        assert app_status["stable"]["image"] == "demo:v1"
        rx.answer("/approve", 200)
        status = lockgate.wait_finished("shop-v2")
    assert status["phase"] == "Succeeded", status.get("message")
    assert lockgate.get("shop", "applications")["status"]["stable"]["image"] == "demo:v2"
    last = rx.requests("/approve")[-1]
    assert last.answer == 200
    sent = last.body
    assert (sent["type"], sent["name"], sent["deployment"], sent["image"]) == (
        "confirmPromotion",
        "approve",
        "shop-v2",
        "demo:v2",
    )
    assert sent["namespace"] == lockgate.namespace and sent["application"] == "shop"
    assert sent["step"]["index"] == status["step"]["total"] - 3  # before the 100% stage
    assert sent["weights"] == {"stable": 50, "canary": 50}


def test_webhook_calls_are_signed_and_carry_the_headers_of_their_secret(
    lockgate: Lockgate,
) -> None:
    key = "hmac-key-only-the-receiver-knows"
    token = "api-token-from-the-headers-secret"
    core = client.CoreV1Api(lockgate.api)
    for name, data in (("hook-signing", {"key": key}), ("hook-headers", {"X-Api-Token": token})):
        core.create_namespaced_secret(
            lockgate.namespace, {"metadata": {"name": name}, "stringData": data}
        )
    secrets = {
        "headersSecretRef": {"name": "hook-headers"},
        "signingSecretRef": {"name": "hook-signing", "key": "key"},
    }
    with Receiver() as rx:
        lockgate.create(application("shop", 1, namespace=lockgate.namespace))
        lockgate.create(
            deployment(
                "shop-v1",
                "shop",
                "demo:v1",
                webhooks=[
                    hook("smoke", "preRollout", f"{rx.url}/pre", **secrets),
                    hook("done", "postRollout", f"{rx.url}/post", **secrets),
                ],
            )
        )
        status = lockgate.wait_finished("shop-v1")
        assert status["phase"] == "Succeeded", status.get("message")
        lockgate.wait_until("shop-v1", "the postRollout call", lambda: rx.requests("/post"))
        recorded = lockgate.wait_until(
            "shop-v1",
            "the postRollout answer recorded",
            lambda: [
                c
                for c in lockgate.status("shop-v1").get("webhooks") or []
                if c["name"] == "done" and not c.get("pending")
            ],
        )
    assert recorded[0]["answer"] == "HTTP 200" and recorded[0]["passed"]
    for path, event in (("/pre", "preRollout"), ("/post", "postRollout")):
        (request,) = rx.requests(path)
        expected = "sha256=" + hmac.new(key.encode(), request.payload, hashlib.sha256).hexdigest()
        assert request.headers["x-lockgate-signature"] == expected, path
        assert request.headers["x-api-token"] == token, path
        assert request.headers["x-lockgate-event"] == event
        assert request.headers["x-lockgate-delivery"]
        assert request.body["type"] == event
    everything = json.dumps(lockgate.get("shop-v1")) + " ".join(
        str(e.message) for e in lockgate.events("shop-v1")
    )
    assert key not in everything and token not in everything
