"""A round reads its Application from the watch (kopf's index of the bodies kopf keeps, without
the status's history), not from the API. The watch lags behind the API: what the operator
wrote itself is used until the watch brings it, the rollout lock is taken only on the version
read, and the history is written from a fresh read."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from lockgate.controller import metrics
from lockgate.controller.kept import keep_of_application
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import NS, Env, env_over_fakes

RECREATE = {"type": "Recreate"}
KEY = (NS, "shop")


class LaggingWatch:
    """kopf's index of Applications, as far as the watch has come: `catch_up` delivers what
    the API holds now."""

    def __init__(self, env: Env) -> None:
        self.env = env
        self.kept: dict[tuple[str, str], list[dict[str, Any]]] = {}
        self.catch_up()

    def catch_up(self) -> None:
        body = copy.deepcopy(self.env.kube.application("shop"))
        keep_of_application(body)
        self.kept[KEY] = [body]
        self.env.op.rt.application_moved(NS, "shop", body["metadata"])


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Env]:
    yield from env_over_fakes(monkeypatch, Env, replicas=2, ready_after=1)


@pytest.fixture
def watch(env: Env, monkeypatch: pytest.MonkeyPatch) -> LaggingWatch:
    watch = LaggingWatch(env)
    env.op.rt.application_index = watch.kept
    reads: list[str] = []
    get = env.kube.get_application

    async def counted(namespace: str, name: str) -> dict[str, Any] | None:
        reads.append(name)
        return await get(namespace, name)

    monkeypatch.setattr(env.kube, "get_application", counted)
    watch.reads = reads  # type: ignore[attr-defined]
    return watch


def test_the_lock_just_taken_is_seen_before_the_watch_brings_it(
    env: Env, watch: LaggingWatch
) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=RECREATE))
    env.op.round("dep")  # takes the lock
    assert env.kube.application("shop")["status"]["activeDeployment"] == "dep"
    env.op.round("dep")  # the watch still shows no holder
    assert env.op.phase("dep") == "Progressing"
    assert watch.reads == []  # type: ignore[attr-defined]


def test_a_rollout_reads_its_application_from_the_api_only_to_record_its_outcome(
    env: Env, watch: LaggingWatch
) -> None:
    history = [{"deployment": f"old-{i}", "revision": 1, "result": "Succeeded"} for i in range(3)]
    env.kube.application("shop")["status"]["history"] = history
    watch.catch_up()
    env.kube.add_deployment("dep", dep_spec(strategy=RECREATE))
    rounds = 0
    while env.op.phase("dep") != "Succeeded":
        env.op.round("dep")
        watch.catch_up()
        rounds += 1
    assert rounds > 3
    assert watch.reads == ["shop"]  # type: ignore[attr-defined]
    # The watch's copy has no history: the outcome is added to the one the API holds.
    recorded = env.kube.application("shop")["status"]["history"]
    assert [h["deployment"] for h in recorded] == ["dep", "old-0", "old-1", "old-2"]
    assert env.kube.application("shop")["status"].get("activeDeployment") is None


def test_a_lock_taken_by_another_meanwhile_loses_the_round_and_nothing_says_starting(
    env: Env, watch: LaggingWatch
) -> None:
    env.kube.add_deployment("dep", dep_spec(strategy=RECREATE))
    env.kube.add_deployment("other", dep_spec("app:3", strategy=RECREATE))
    env.kube.application("shop")["status"]["activeDeployment"] = "other"
    env.kube.application("shop")["metadata"]["resourceVersion"] = "999"  # the watch lags
    lost = metrics.ROUNDS_LOST._value.get()
    env.op.round("dep")
    assert metrics.ROUNDS_LOST._value.get() == lost + 1
    assert env.op.events == []
    assert env.kube.application("shop")["status"]["activeDeployment"] == "other"
    assert (env.kube.deployment("dep").get("status") or {}).get("phase") is None
    watch.catch_up()
    env.op.round("dep")
    assert env.op.phase("dep") == "Queued"
    assert "waiting for other" in env.kube.deployment("dep")["status"]["message"]


def test_a_write_answered_after_the_watch_brought_a_newer_version_is_not_used(
    env: Env, watch: LaggingWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer to the lock's release comes back after the watch delivered both that write
    and another writer's next one (the Application's status loop, say). Nothing changes the
    Application after that: the next rollout must still take the lock."""
    env.kube.add_deployment("first", dep_spec(strategy=RECREATE))
    patch = env.kube.patch_application_status

    async def answered_late(namespace: str, name: str, body: dict[str, Any]) -> dict[str, Any]:
        written = await patch(namespace, name, body)
        if "history" in body["status"]:  # the release
            await patch(namespace, name, {"status": {"conditions": []}})  # another writer
            watch.catch_up()
        return written

    monkeypatch.setattr(env.kube, "patch_application_status", answered_late)
    while env.op.phase("first") != "Succeeded":
        env.op.round("first")
        watch.catch_up()
    monkeypatch.setattr(env.kube, "patch_application_status", patch)
    env.kube.add_deployment("next", dep_spec("app:3", strategy=RECREATE))
    lost = metrics.ROUNDS_LOST._value.get()
    for _ in range(3):
        env.op.round("next")
    assert metrics.ROUNDS_LOST._value.get() == lost, "the lock taken on a stale copy, forever"
    assert env.kube.application("shop")["status"]["activeDeployment"] == "next"
