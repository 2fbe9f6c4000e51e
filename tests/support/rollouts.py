"""Helpers for rollout tests on the real control plane: objects, waits, load, weights."""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import httpx
from kubernetes import client, watch

from lockgate.api.deployment import TERMINAL_PHASES
from lockgate.names import ACTION_ANNOTATION, GROUP, LABEL_SHARD, VERSION

# How long a Deployment's status may stay unchanged before a wait gives up on it: in flight
# (longer than any progress deadline the tests set, so lockgate ends a stuck rollout first),
# and ended in another phase than the one waited for.
STALLED_QUIET_S = 600.0
ENDED_QUIET_S = 60.0
# How long a wait lets what it watches stay unchanged before it gives up.
QUIET_S = 300.0


def wait_for(
    what: str,
    predicate: Callable[[], Any],
    progress: Callable[[], Any],
    *,
    every: float = 0.25,
    quiet: float = QUIET_S,
) -> Any:
    """Poll until `predicate()` is truthy and return that. No wall-clock limit: however slow
    the machine, the wait goes on while `progress()` (a snapshot of what moves towards the
    answer: a Deployment's status, a process's CPU time, a count of answers) or the
    predicate's own answer keeps changing, and fails naming `what` only once both have stood
    still for `quiet` seconds, so a test never hangs on something that stopped."""
    still = StandingStill(what, quiet)
    while not (last := predicate()):
        still.check(last, progress())
        time.sleep(every)
    return last


@dataclass
class StandingStill:
    """The rule of a wait without a wall-clock limit: what it watches (the answer so far and
    a progress) must change at least every `quiet` seconds."""

    what: str
    quiet: float
    seen: Any = None
    since: float = field(default_factory=time.monotonic)

    def check(self, last: Any, progress: Any) -> None:
        """Fails naming what was waited for once (last, progress) stood still too long."""
        if (now := (last, progress)) != self.seen:
            self.seen, self.since = now, time.monotonic()
        elif time.monotonic() - self.since >= self.quiet:
            raise AssertionError(
                f"never saw {self.what}: nothing it waits on changed for {self.quiet:.0f}s "
                f"(last answer {last!r}, progress {progress!r})"
            )


def wait_within(
    what: str, predicate: Callable[[], Any], timeout: float = 120.0, every: float = 0.25
) -> Any:
    """Poll until `predicate()` is truthy and return that; fail naming `what` after `timeout`
    seconds. For the benchmarks, whose runs are bounded by design; tests use `wait_for`."""
    deadline = time.monotonic() + timeout
    while not (last := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)
    return last


def pod_versions(
    core: client.CoreV1Api, namespace: str, selector: str = ""
) -> list[tuple[str, str]]:
    """Each Pod's name and resource version: a wait's progress while Pods start, change and
    go (the kubelet's status updates, the API server's deletions)."""
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [(p.metadata.name, p.metadata.resource_version) for p in pods]


def cpu_ticks(pid: int) -> int | None:
    """The process's CPU time so far (clock ticks; None once it has exited): a process that
    still works on something is still getting there."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


@dataclass
class Lockgate:
    """lockgate objects in one namespace, through the real API server."""

    api: client.ApiClient
    namespace: str
    # Set by the `own_operator` fixture: the Applications created here are its shard's.
    shard: str | None = None

    @property
    def custom(self) -> client.CustomObjectsApi:
        return client.CustomObjectsApi(self.api)

    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        plural = {"Application": "applications", "Deployment": "deployments"}[body["kind"]]
        body = {"apiVersion": f"{GROUP}/{VERSION}", **body}
        if self.shard and body["kind"] == "Application":
            metadata = body["metadata"] = {**body.get("metadata", {})}
            metadata["labels"] = {**metadata.get("labels", {}), LABEL_SHARD: self.shard}
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, body
        )
        return result

    def get(self, name: str, plural: str = "deployments") -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural, name
        )
        return result

    def items(self, plural: str) -> list[dict[str, Any]]:
        """The namespace's lockgate objects of `plural`."""
        found: list[dict[str, Any]] = self.custom.list_namespaced_custom_object(
            GROUP, VERSION, self.namespace, plural
        )["items"]
        return found

    def versions(self, plural: str) -> list[tuple[str, str]]:
        """Each object's name and resourceVersion: a wait's progress while they change."""
        return [
            (o["metadata"]["name"], o["metadata"]["resourceVersion"]) for o in self.items(plural)
        ]

    def status(self, name: str) -> dict[str, Any]:
        status: dict[str, Any] = self.get(name).get("status") or {}
        return status

    def phase(self, name: str) -> str | None:
        phase: str | None = self.status(name).get("phase")
        return phase

    def patch(self, name: str, body: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, "deployments", name, body
        )

    def annotate(self, name: str, action: str) -> None:
        self.patch(name, {"metadata": {"annotations": {ACTION_ANNOTATION: action}}})

    def wait_finished(self, name: str) -> dict[str, Any]:
        """The status once the Deployment has ended, whichever way."""
        return self.wait_phase(name, {"Succeeded", "RolledBack", "Failed"})

    def wait_phase(self, name: str, phases: set[str]) -> dict[str, Any]:
        return self.wait_status(
            name, lambda status: status.get("phase") in phases, f"one of {sorted(phases)}"
        )

    def wait_step(self, name: str, index: int) -> dict[str, Any]:
        """The status once the rollout has reached step `index` (0-based) or ended."""

        def reached(status: dict[str, Any]) -> bool:
            at = (status.get("step") or {}).get("index", -1)
            return at >= index or status.get("phase") in TERMINAL_PHASES

        return self.wait_status(name, reached, f"step {index + 1}")

    def wait_status(
        self, name: str, done: Callable[[dict[str, Any]], bool], what: str
    ) -> dict[str, Any]:
        """The Deployment's status once `done(status)`. No wall-clock limit: a rollout that
        moves is waited for however slow the machine is (lockgate's own progress deadline ends
        one that does not); only a status that has stopped changing fails the wait, so a test
        never hangs on a dead operator."""
        seen: dict[str, Any] | None = None
        since = time.monotonic()
        while not done(status := self.status(name)):
            if status != seen:
                seen, since = status, time.monotonic()
            # An ended rollout changes again only when told to (a retry, a new spec): a short
            # allowance for the operator to take that up.
            ended = status.get("phase") in TERMINAL_PHASES
            allowance = ENDED_QUIET_S if ended else STALLED_QUIET_S
            if time.monotonic() - since >= allowance:
                raise AssertionError(
                    f"{name} never reached {what}: its status has not changed for "
                    f"{allowance:.0f}s; it is {status.get('phase')}: {status.get('message')}"
                )
            time.sleep(0.25)
        return status

    def watch_status(
        self,
        name: str,
        plural: str,
        predicate: Callable[[dict[str, Any]], Any],
        what: str,
        timeout: float = 120.0,
    ) -> tuple[dict[str, Any], Any]:
        """Wait on the object's watch events (no polling) until `predicate(status)` is truthy;
        (the object, what the predicate returned). Fails naming `what` and the last status."""
        return self.watch(
            name,
            plural,
            lambda obj: predicate(obj.get("status") or {}),
            what,
            timeout,
            describe=lambda obj: f"last: {(obj.get('status') or {}).get('message')!r}",
        )

    def watch(
        self,
        name: str,
        plural: str,
        predicate: Callable[[dict[str, Any]], Any],
        what: str,
        timeout: float = 120.0,
        *,
        describe: Callable[[dict[str, Any]], str],
    ) -> tuple[dict[str, Any], Any]:
        """Wait on the object's watch events (no polling) until `predicate(object)` is truthy;
        (the object, what the predicate returned). Fails naming `what` and `describe(object)`
        of the last one seen once the object has not changed for `timeout` seconds: a slow
        machine that still moves it is waited for."""
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = {}
        version = None
        stream = watch.Watch()
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                # Without a resourceVersion the watch begins with the object as it is now.
                for event in stream.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    self.namespace,
                    plural,
                    field_selector=f"metadata.name={name}",
                    timeout_seconds=max(1, int(remaining)),
                ):
                    last = event["object"]
                    found = predicate(last)
                    if found:
                        return last, found
                    # A restarted watch begins with the object again: not a change.
                    if (changed := (last.get("metadata") or {}).get("resourceVersion")) != version:
                        version, deadline = changed, time.monotonic() + timeout
                    elif time.monotonic() >= deadline:
                        break
        finally:
            stream.stop()
        raise AssertionError(
            f"{what}: not seen, and the object has not changed for {timeout:.0f}s "
            f"({describe(last)})"
        )

    def events(self, name: str) -> list[client.CoreV1Event]:
        core = client.CoreV1Api(self.api)
        items = core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}"
        ).items
        return list(items)

    def wait_events(self, name: str, reasons: set[str]) -> None:
        """Wait until `name`'s Events include every one of `reasons`: kopf posts Events on its
        own schedule, so the last may come after the status that a test waited on."""
        wait_for(
            f"Events {sorted(reasons)} of {name}",
            lambda: reasons <= {e.reason for e in self.events(name)},
            lambda: (len(self.events(name)), self.status(name)),
        )

    def wait_until(self, name: str, what: str, predicate: Callable[[], Any]) -> Any:
        """`wait_for` something that Deployment `name`'s rollout brings about: it fails once
        neither the answer nor that Deployment's status has changed for a while."""
        return wait_for(what, predicate, lambda: self.status(name))

    def pods(self, selector: str) -> list[client.V1Pod]:
        return list(
            client.CoreV1Api(self.api)
            .list_namespaced_pod(self.namespace, label_selector=selector)
            .items
        )

    def pod_versions(self, selector: str) -> list[tuple[str, str]]:
        return pod_versions(client.CoreV1Api(self.api), self.namespace, selector)

    def application_status(self, name: str) -> dict[str, Any] | None:
        """The Application's status; None once it is gone."""
        try:
            status: dict[str, Any] = self.get(name, "applications").get("status") or {}
        except client.ApiException as err:
            if err.status == 404:
                return None
            raise
        return status


def host_of(app: str, namespace: str) -> str:
    """Each test namespace routes its own host name: Traefik serves one router per rule."""
    return f"{app}.{namespace}.test"


def application(name: str, replicas: int = 4, *, namespace: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "Application",
        "metadata": {"name": name},
        "spec": {
            "kubernetes": {"replicas": replicas, "template": extra.pop("template", {})},
            "port": 8080,
            "healthCheck": {"http": {"path": "/health"}, "intervalSeconds": 1},
            "traffic": {
                "traefik": {
                    "route": {
                        "entryPoints": ["web"],
                        "match": f"Host(`{host_of(name, namespace)}`)",
                    }
                }
            },
            **extra,
        },
    }


def deployment(
    name: str, app: str, image: str, strategy: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    return {
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "application": app,
            "image": image,
            "strategy": strategy or {"type": "Recreate"},
            # Long: a loaded machine may take a minute to start an instance. Tests that mean a
            # deadline set their own.
            "progressDeadlineSeconds": extra.pop("progressDeadlineSeconds", 300),
            **extra,
        },
    }


class Recording:
    """`_run` in a daemon thread while in the `with` block; it returns once `_stop` is set."""

    _stop: threading.Event
    _thread: threading.Thread | None
    join_timeout = 5.0

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.join_timeout)


@dataclass
class WeightRecorder(Recording):
    """Records the split Traefik actually serves (its API), with timestamps."""

    api_url: str
    service: str  # e.g. "<namespace>-<app>@kubernetescrd"
    samples: list[tuple[float, int]] = field(default_factory=list)  # (time, canary weight)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client(timeout=2.0) as http:
            while not self._stop.is_set():
                try:
                    data = http.get(f"{self.api_url}/api/http/services/{self.service}").json()
                    children = (data.get("weighted") or {}).get("services") or []
                    total = sum(int(c.get("weight", 1)) for c in children) or 1
                    canary = sum(
                        int(c.get("weight", 1)) for c in children if "-canary-" in c["name"]
                    )
                    self.samples.append((time.monotonic(), round(100 * canary / total)))
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
                self._stop.wait(0.1)

    def windows(self, margin: float = 1.0) -> list[tuple[float, float, int]]:
        """(start, end, canary weight) for each stretch of constant weight, shrunk by `margin`
        at both ends so requests in flight across a change are not counted."""
        out: list[tuple[float, float, int]] = []
        if not self.samples:
            return out
        start, weight = self.samples[0]
        for at, value in self.samples[1:]:
            if value != weight:
                out.append((start + margin, at - margin, weight))
                start, weight = at, value
        out.append((start + margin, self.samples[-1][0] - margin, weight))
        return [w for w in out if w[1] > w[0]]


def seeded_random() -> tuple[random.Random, int]:
    """A random source whose seed is printed in every failure, so a run can be repeated:
    `LOCKGATE_SEED=<seed> hack/test <test>`."""
    seed = int(os.environ.get("LOCKGATE_SEED") or random.SystemRandom().randrange(2**32))
    return random.Random(seed), seed


@dataclass(frozen=True)
class Kill:
    """Where a rollout stood when the operator was killed (read after the kill, so exact:
    a dead operator writes nothing)."""

    phase: str | None
    step: int
    batches: tuple[str, ...]

    @property
    def inside(self) -> bool:
        return self.phase not in {None, "Pending", *TERMINAL_PHASES}


def interruption(lg: Lockgate, name: str) -> Kill:
    status = lg.status(name)
    return Kill(
        status.get("phase"),
        (status.get("step") or {}).get("index", 0),
        tuple(b["state"] for b in status.get("batches") or []),
    )
