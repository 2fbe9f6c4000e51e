"""`lockgate_api_request_seconds`: how long lockgate's own Kubernetes API requests take, the
wait for a free API thread included (with the wait for a turn and for a look at Traefik:
what a slow round waits on)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes import client
from prometheus_client import REGISTRY

from lockgate import kube


def between_2_5_and_5_s() -> float:
    bucket = "lockgate_api_request_seconds_bucket"
    five = REGISTRY.get_sample_value(bucket, {"le": "5.0"}) or 0.0
    return five - (REGISTRY.get_sample_value(bucket, {"le": "2.5"}) or 0.0)


def test_an_api_request_is_timed_from_the_ask_to_the_answer_failed_or_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = [10.0]
    monkeypatch.setattr(kube, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    api = kube.Kube(client.ApiClient())

    def slow(*_: Any) -> str:
        clock[0] += 3.0
        return "answer"

    def slow_and_refused(*_: Any) -> str:
        clock[0] += 3.0
        raise client.ApiException(status=504)

    before = between_2_5_and_5_s()
    assert asyncio.run(api.call(slow)) == "answer"
    with pytest.raises(client.ApiException):
        asyncio.run(api.call(slow_and_refused))
    assert between_2_5_and_5_s() - before == 2
