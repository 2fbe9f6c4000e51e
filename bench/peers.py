"""lockgate side by side with Argo Rollouts and Flagger: the same scenarios against each
controller in turn, one at a time, on the same control plane, process kubelet, Traefik and
demo images, with the same replica count (3) and canary steps (10 -> 50 -> 100).

Needs `hack/cluster up`, `hack/traefik up`, `hack/kubelet start` and `hack/prometheus up`,
and the peers built (`hack/build-tools peers`); this starts and stops each controller itself
(lockgate as the other benchmarks do, the peers through `hack/peers up|down` limited to this
run's namespace).

Per controller:
  abort     a canary paused at 50% under load (one thread, requests 10 ms apart), then, 3 s
            after the 50% split is live (Traefik's 2 s throttle window over), a manual abort:
            until Traefik's API shows 100% stable (polled every 5 ms), until 20 requests in a
            row are answered by v1, and the CLI's own run time
  reaction  apply -> first canary weight live in Traefik's API (includes starting the canary
            Pod, the same process kubelet for all)
  failing   a canary erring on 30% of requests: the controller's own verdict timestamp ->
            Traefik's API shows 100% stable; requests answered by the bad version, and failed
            requests, over the whole rollout
  idle      controller RSS and CPU seconds over 10 s with one paused rollout
  steps     a 5-step canary (setWeight 10, 30, 50, 70, 90, then 100 / promotion), 1 replica,
            no analysis, no pause where the controller allows none (Flagger: its least
            analysis interval, 10 s, per step): from the first weight live in Traefik's API to
            100% of the traffic on the new version there (the canary at 100%, or Flagger's
            promoted primary), divided by the 5 steps; and the same between the controller's
            own records (its first step done -> its rollout completed), divided by 5
  fifty     50 applications of 1 replica each (fewer when the process kubelet's Node has no
            room for 2 Pods each): created -> all stable; controller RSS and CPU seconds over
            30 s with all stable and nothing in flight; all 50 updated to a canary that pauses
            at 50% with no end (as `abort` does); update -> all 50 at 50% in Traefik's API;
            RSS and CPU seconds over 30 s with all 50 paused there

Usage: python -m bench.peers [--controllers lockgate,argo,flagger] [--runs 20] [--aborts 5]
       [--failing 3] [--flagger-runs 5] [--step-runs 5] [--fleet 50]
       [--only abort,failing,steps,fifty] [--no-doc]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from bench.operator import exits_cleanly, running_operator
from hack.tools.load import Load, Response, by_version, failed
from lockgate.api.deployment import TERMINAL_PHASES
from lockgate.names import ACTION_ANNOTATION
from tests.support.cluster import REPO_ROOT, Cluster, Traefik, cluster_info, hack, traefik_info
from tests.support.operator_fixtures import Operator, operator_env
from tests.support.rollouts import (
    Lockgate,
    Recording,
    application,
    deployment,
    host_of,
    wait_within,
)

REPLICAS = 3
PORT = 8080
STABLE = "v1"
DOC = REPO_ROOT / "docs" / "comparison.md"
# lockgate's analysis as bench/rollback.py judges it: a window of >= 5 requests each second,
# the canary's error rate above 5% fails it, one failure ends the rollout. The peers get the
# same threshold (5% errors), the same single failure, their shortest interval.
LOCKGATE_ANALYSIS = {"intervalSeconds": 1, "minRequests": 5, "maxConsecutiveFailures": 1}
FLAGGER_MIN_INTERVAL = "10s"  # Flagger raises any analysis interval below 10 s to 10 s
FLAGGER_MIN_INTERVAL_SECONDS = 10.0
TRAEFIK_THROTTLE_SECONDS = 2
# The steps scenario: these weights, then 100 (promotion); each a step, no pause between.
STEP_WEIGHTS = (10, 30, 50, 70, 90)
STEP_REPLICAS = 1  # one canary Pod from the first weight on: no Pod start after step 1
# The fifty scenario: this many applications of one replica, two windows of this length.
FLEET = 50
FLEET_REPLICAS = 1
FLEET_WINDOW_SECONDS = 30.0
FLEET_SETTLE_SECONDS = 5.0  # after all are stable / in flight, before a window


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# --- Traefik's API -------------------------------------------------------------------------


def services(api_url: str) -> list[dict[str, Any]]:
    try:
        data = httpx.get(f"{api_url}/api/http/services", params={"per_page": 1000}, timeout=2)
        result: list[dict[str, Any]] = data.json()
        return result
    except (httpx.HTTPError, ValueError):
        return []


def canary_share(api_url: str, service: str, http: httpx.Client | None = None) -> int | None:
    """The canary's share (percent) of Traefik's weighted `service`: children whose name has
    `-canary` (lockgate's canary slot, Argo's and Flagger's canary Services)."""
    try:
        getter = http.get if http else httpx.get
        data = getter(f"{api_url}/api/http/services/{service}", timeout=2).json()
    except (httpx.HTTPError, ValueError):
        return None
    return share_of(data)


def share_of(data: dict[str, Any]) -> int | None:
    """The canary's share (percent) of one weighted service as Traefik's API shows it."""
    children = (data.get("weighted") or {}).get("services") or []
    if not children:
        return None
    total = sum(int(c.get("weight", 1)) for c in children)
    canary = sum(
        int(c.get("weight", 1)) for c in children if "-canary" in c["name"].partition("@")[0]
    )
    return round(100 * canary / total) if total else 0


def wait_share(
    api_url: str, service: str, predicate: Callable[[int], bool], what: str, timeout: float = 180
) -> float:
    """Polls Traefik's API every 5 ms until `predicate(canary share)`; the monotonic time."""
    deadline = time.monotonic() + timeout
    last: int | None = None
    with httpx.Client() as http:
        while time.monotonic() < deadline:
            last = canary_share(api_url, service, http)
            if last is not None and predicate(last):
                return time.monotonic()
            time.sleep(0.005)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last share {last})")


def wait_shares(
    api_url: str, names: list[str], predicate: Callable[[int], bool], what: str, timeout: float
) -> float:
    """Lists Traefik's services every 0.5 s until `predicate(canary share)` holds for every
    service of `names`; the monotonic time."""
    deadline = time.monotonic() + timeout
    left: list[str] = list(names)
    while time.monotonic() < deadline:
        shown = {s.get("name"): share_of(s) for s in services(api_url)}
        left = [n for n in names if (v := shown.get(n)) is None or not predicate(v)]
        if not left:
            return time.monotonic()
        time.sleep(0.5)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what} ({len(left)} of {len(names)} "
        f"not yet, e.g. {left[:3]})"
    )


@dataclass
class ShareTimeline(Recording):
    """Every change of the canary's share of Traefik's weighted `service`, polled every 5 ms:
    (monotonic time first seen, share)."""

    api_url: str
    service: str
    changes: list[tuple[float, int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with httpx.Client() as http:
            while not self._stop.is_set():
                share = canary_share(self.api_url, self.service, http)
                if share is not None and (not self.changes or self.changes[-1][1] != share):
                    self.changes.append((time.monotonic(), share))
                self._stop.wait(0.005)


def traefik_steps(
    changes: list[tuple[float, int]], since: float
) -> tuple[float, list[int], list[float]] | None:
    """(seconds from the first canary weight live to 100% of the traffic on the new version,
    the shares Traefik's API showed in between, the seconds each of them was shown before the
    next) from a timeline, or None when Traefik's API never showed a canary weight (a
    controller that does not wait for a weight to be live set them all, and promoted, between
    two of Traefik's loads: Argo). The end is the first share
    of 100, or of 0 after the first weight (a promotion: Flagger's primary runs the new
    version; Argo and lockgate give stable the new version after 100)."""
    after = [(t, s) for t, s in changes if t >= since]
    first = next((i for i, (_, s) in enumerate(after) if s > 0), None)
    if first is None:
        return None
    t_first, shown = after[first][0], [after[first][1]]
    if shown[0] == 100:  # every weight below 100 came and went between two polls
        return 0.0, shown, []
    hops: list[float] = []
    last = t_first
    for t, s in after[first + 1 :]:
        shown.append(s)
        hops.append(t - last)
        last = t
        if s in (0, 100):
            return t - t_first, shown, hops
    raise RuntimeError(f"Traefik's API never showed 100% on the new version: {after}")


# --- the controllers' own words --------------------------------------------------------------


@dataclass
class LogTail(Recording):
    """Lines appended to a controller's log, each stamped when it arrives (the file is read
    every 2 ms): for a controller whose own log timestamps have whole seconds only."""

    path: Path
    lines: list[tuple[float, datetime, str]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        with self.path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            rest = b""
            while not self._stop.is_set():
                chunk = f.read()
                if not chunk:
                    time.sleep(0.002)
                    continue
                mono, wall = time.monotonic(), datetime.now(UTC)
                *done, rest = (rest + chunk).split(b"\n")
                self.lines.extend((mono, wall, d.decode(errors="replace")) for d in done)

    def find(self, pattern: str, after: float) -> tuple[float, datetime, str] | None:
        regex = re.compile(pattern)
        return next((x for x in self.lines if x[0] >= after and regex.search(x[2])), None)


def proc_cpu_rss(pid: int) -> tuple[float, float]:
    """(CPU seconds, RSS MiB) of a process."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024
    return cpu, rss


def idle(pid: int, seconds: float = 10.0) -> tuple[float, float]:
    """(RSS MiB, CPU seconds over `seconds`) of a controller left alone."""
    before, _ = proc_cpu_rss(pid)
    time.sleep(seconds)
    after, rss = proc_cpu_rss(pid)
    return rss, after - before


def run_cli(argv: list[str], env: dict[str, str]) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    took = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)} failed: {proc.stdout}{proc.stderr}")
    return took


# --- Kubernetes objects both peers use -------------------------------------------------------


def pod_template(app: str, image: str) -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": app}},
        "spec": {
            "containers": [
                {
                    "name": "demo",
                    "image": image,
                    "ports": [{"containerPort": PORT, "name": "http"}],
                    "readinessProbe": {
                        "httpGet": {"path": "/health", "port": PORT},
                        "periodSeconds": 1,
                    },
                }
            ]
        },
    }


def service(name: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name},
        "spec": {"selector": {"app": app}, "ports": [{"port": PORT, "targetPort": PORT}]},
    }


def apply(api: client.ApiClient, namespace: str, body: dict[str, Any]) -> None:
    """Create `body` (any kind) in `namespace`, through the dynamic-free generic call."""
    group, _, version = body["apiVersion"].rpartition("/")
    plural = {"Canary": "canaries"}.get(body["kind"], body["kind"].lower() + "s")
    if group:
        client.CustomObjectsApi(api).create_namespaced_custom_object(
            group, version, namespace, plural, body
        )
    elif body["kind"] == "Service":
        client.CoreV1Api(api).create_namespaced_service(namespace, body)
    else:
        raise ValueError(body["kind"])


# --- one controller --------------------------------------------------------------------------


@dataclass
class Canary:
    """A canary in flight, as the scenario sees it."""

    name: str
    started: float  # monotonic, just before the apply
    image: str


class Target:
    """What a scenario needs from a controller."""

    label: str = ""
    version: str = ""
    how: str = ""
    # The steps scenario: the wait each step is configured with (none where the controller
    # allows none), and how the table says so.
    step_wait: float = 0.0
    step_wait_note: str = "none (no pause step)"
    # Seconds a Pod may take to be ready before lockgate or Flagger gives up (Argo's own
    # default, 600 s, is left as it is); `fifty` raises it, as it starts many Pods at once.
    deadline = 60

    def __init__(self, api: client.ApiClient, namespace: str, traefik: Traefik) -> None:
        self.api = api
        self.ns = namespace
        self.traefik = traefik
        self.custom = client.CustomObjectsApi(api)

    def setup(
        self,
        app: str,
        failing: bool = False,
        replicas: int = REPLICAS,
        weights: tuple[int, ...] | None = None,
    ) -> str:
        """Set-up of one application, until it is stable; its weighted service's name in
        Traefik's API. Without `weights` its canaries go 10 -> 50 -> pause (-> 100); with
        them, each weight, then 100, without a pause."""
        self.create(app, failing, replicas, weights)
        return self.ready(app)

    def create(
        self, app: str, failing: bool, replicas: int, weights: tuple[int, ...] | None
    ) -> None:
        """What `setup` creates, without waiting (many applications start side by side)."""
        raise NotImplementedError

    def ready(self, app: str) -> str:
        """Until a created application is stable; its weighted service in Traefik's API."""
        raise NotImplementedError

    def completed(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, float]:
        """Until a canary with `weights` has completed: the monotonic times of its first step
        done and of the rollout completed, by the controller's own record."""
        raise NotImplementedError

    completed_source: str = ""

    def start(self, app: str, run: int, image: str) -> Canary:
        raise NotImplementedError

    def abort(self, app: str, canary: Canary) -> float | None:
        """Abort; the CLI's run time, or None when there is no CLI for it."""
        raise NotImplementedError

    def settle(self, app: str, canary: Canary) -> None:
        """Until the aborted or failed rollout has ended, ready for the next one."""
        raise NotImplementedError

    def verdict(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, str]:
        """(seconds between the verdict and `now`'s monotonic clock offset, what it is): the
        monotonic time of the failing verdict by the controller's own record."""
        raise NotImplementedError

    def pid(self) -> int:
        raise NotImplementedError

    def log(self) -> Path | None:
        return None

    def close(self) -> None:
        pass


def installed_bytecode(env: dict[str, str], namespace: str) -> dict[str, str]:
    """The CLI's environment with its bytecode compiled, as an installed package has it
    (pip compiles a wheel's modules at install): this environment sets
    PYTHONDONTWRITEBYTECODE and the editable install has no pycache, so each run would
    compile lockgate's modules from source. A private PYTHONPYCACHEPREFIX (no pycache in the
    tree), filled by one untimed run: an abort of a Deployment that does not exist, which
    loads what a real abort loads. (Until 2026-12-02 the runs took the environment as it
    was: the table's 0.19 s was measured here, where no pycache is ever written.)"""
    import tempfile

    prefix = tempfile.mkdtemp(prefix="lockgate-cli-pycache-")
    warm = {**env, "PYTHONPYCACHEPREFIX": prefix}
    warm.pop("PYTHONDONTWRITEBYTECODE", None)
    cli = str(Path(sys.executable).with_name("kubectl-lockgate"))
    argv = [cli, "abort", "lockgate-bench-warm-up", "-n", namespace, "--no-wait"]
    subprocess.run(argv, env=warm, capture_output=True, timeout=60, check=False)
    return warm


def mono_of(wall: datetime) -> float:
    """The monotonic time of a wall-clock instant (both clocks read now)."""
    return time.monotonic() - (datetime.now(UTC) - wall).total_seconds()


class LockgateTarget(Target):
    label = "lockgate"
    how = "Traefik CRD provider, lockgate's own weighted service"

    def __init__(
        self, api: client.ApiClient, namespace: str, traefik: Traefik, op: Operator, cli: bool
    ) -> None:
        super().__init__(api, namespace, traefik)
        self.lg = Lockgate(api, namespace)
        self.op = op
        self.cli = cli
        self.env = op.env
        if cli:
            self.env = installed_bytecode(op.env, namespace)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=False,
        ).stdout.strip()
        self.version = f"(this tree, {commit})"
        self.label = "lockgate (kubectl lockgate abort)" if cli else "lockgate"
        self.weights: dict[str, tuple[int, ...] | None] = {}

    completed_source = (
        "status.transitions 'step … done: setWeight 10' → status.finishedAt (Succeeded, "
        "after the promote step)"
    )

    def create(
        self, app: str, failing: bool, replicas: int, weights: tuple[int, ...] | None
    ) -> None:
        self.weights[app] = weights
        self.lg.create(application(app, replicas, namespace=self.ns))
        self.lg.create(
            deployment(f"{app}-0", app, f"demo:{STABLE}", progressDeadlineSeconds=self.deadline)
        )

    def ready(self, app: str) -> str:
        self.lg.wait_phase(f"{app}-0", {"Succeeded"})
        return f"{self.ns}-{app}@kubernetescrd"

    def start(self, app: str, run: int, image: str) -> Canary:
        steps: list[dict[str, Any]] = [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}]
        if weights := self.weights.get(app):
            steps = [{"setWeight": w} for w in weights]
        analysis: dict[str, Any] = {}
        if "errors" in image:
            steps[-1] = {"pause": {"seconds": 60}}
            analysis = {"analysis": LOCKGATE_ANALYSIS}
        strategy = {"type": "Canary", "canary": {"steps": [*steps, {"setWeight": 100}]}}
        name = f"{app}-{run}"
        started = time.monotonic()
        self.lg.create(
            deployment(
                name, app, image, strategy, progressDeadlineSeconds=self.deadline, **analysis
            )
        )
        return Canary(name, started, image)

    def abort(self, app: str, canary: Canary) -> float | None:
        if self.cli:
            cli = str(Path(sys.executable).with_name("kubectl-lockgate"))
            return run_cli([cli, "abort", canary.name, "-n", self.ns, "--no-wait"], self.env)
        self.lg.annotate(canary.name, "abort")
        return None

    def settle(self, app: str, canary: Canary) -> None:
        self.lg.wait_phase(canary.name, set(TERMINAL_PHASES))

    def verdict(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, str]:
        status = self.lg.wait_phase(canary.name, set(TERMINAL_PHASES))
        runs = [r for r in status.get("analysis") or [] if r["verdict"] == "Failed"]
        if not runs:
            raise RuntimeError(f"{canary.name}: ended without a Failed analysis run: {status}")
        return mono_of(datetime.fromisoformat(runs[0]["at"])), "status.analysis[].at (Failed)"

    def completed(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, float]:
        weights = self.weights.get(app)
        assert weights
        status = self.lg.wait_phase(canary.name, set(TERMINAL_PHASES))
        if status.get("phase") != "Succeeded":
            raise RuntimeError(
                f"{canary.name} ended {status.get('phase')}: {status.get('message')}"
            )
        done = re.compile(rf"done: setWeight {weights[0]}$")
        first = next(
            (t for t in status.get("transitions") or [] if done.search(t["message"])), None
        )
        if first is None:
            raise RuntimeError(f"{canary.name}: no transition '{done.pattern}' in its status")
        return (
            mono_of(datetime.fromisoformat(first["at"])),
            mono_of(datetime.fromisoformat(status["finishedAt"])),
        )

    def pid(self) -> int:
        assert self.op.process is not None
        return self.op.process.pid

    def close(self) -> None:
        prefix = self.env.get("PYTHONPYCACHEPREFIX")
        if self.cli and prefix:
            import shutil

            shutil.rmtree(prefix, ignore_errors=True)


class ArgoTarget(Target):
    label = "Argo Rollouts"
    how = "Traefik CRD provider, a TraefikService whose weights Argo sets"

    def __init__(self, api: client.ApiClient, namespace: str, traefik: Traefik) -> None:
        super().__init__(api, namespace, traefik)
        env = peer_env()
        self.cli = env["LOCKGATE_ARGO_CLI"]
        self.pid_file = Path(env["LOCKGATE_ARGO_PID_FILE"])
        self.log_file = Path(env["LOCKGATE_ARGO_LOG"])
        self.version = tool_version("argo-rollouts")
        self.kubeconfig = cluster_info().kubeconfig

    def _rollout(self, app: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "argoproj.io", "v1alpha1", self.ns, "rollouts", app
        )
        return result

    completed_source = (
        "arrival of its log lines 'Rollout step 1/5 completed' → 'Rollout completed update "
        "to revision' (its own timestamps have whole seconds)"
    )

    def create(
        self, app: str, failing: bool, replicas: int, weights: tuple[int, ...] | None
    ) -> None:
        apply(self.api, self.ns, service(f"{app}-stable", app))
        apply(self.api, self.ns, service(f"{app}-canary", app))
        weighted = {
            "services": [
                {"name": f"{app}-stable", "port": PORT, "weight": 100},
                {"name": f"{app}-canary", "port": PORT, "weight": 0},
            ]
        }
        apply(
            self.api,
            self.ns,
            {
                "apiVersion": "traefik.io/v1alpha1",
                "kind": "TraefikService",
                "metadata": {"name": f"{app}-wrr"},
                "spec": {"weighted": weighted},
            },
        )
        apply(
            self.api,
            self.ns,
            {
                "apiVersion": "traefik.io/v1alpha1",
                "kind": "IngressRoute",
                "metadata": {"name": app},
                "spec": {
                    "entryPoints": ["web"],
                    "routes": [
                        {
                            "match": f"Host(`{host_of(app, self.ns)}`)",
                            "kind": "Rule",
                            "services": [{"name": f"{app}-wrr", "kind": "TraefikService"}],
                        }
                    ],
                },
            },
        )
        steps: list[dict[str, Any]] = [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}]
        if weights:
            # No pause: after the last weight Argo promotes (100%, then the stable switch).
            steps = [{"setWeight": w} for w in weights]
        canary: dict[str, Any] = {
            "stableService": f"{app}-stable",
            "canaryService": f"{app}-canary",
            "trafficRouting": {"traefik": {"weightedTraefikServiceName": f"{app}-wrr"}},
            "steps": steps,
        }
        if failing:
            apply(self.api, self.ns, argo_errors_template(self.ns, app))
            canary["steps"] = [*steps[:2], {"pause": {"duration": "60s"}}]
            canary["analysis"] = {"templates": [{"templateName": f"{app}-errors"}]}
        apply(
            self.api,
            self.ns,
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": app},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": app}},
                    "template": pod_template(app, f"demo:{STABLE}"),
                    "strategy": {"canary": canary},
                },
            },
        )

    def ready(self, app: str) -> str:
        wait_within(
            f"rollout {app} Healthy",
            lambda: (self._rollout(app).get("status") or {}).get("phase") == "Healthy",
            timeout=max(180, self.deadline),
        )
        return f"{self.ns}-{app}-wrr@kubernetescrd"

    def start(self, app: str, run: int, image: str) -> Canary:
        patch = {"spec": {"template": pod_template(app, image)}}
        started = time.monotonic()
        self.custom.patch_namespaced_custom_object(
            "argoproj.io", "v1alpha1", self.ns, "rollouts", app, patch
        )
        return Canary(app, started, image)

    def abort(self, app: str, canary: Canary) -> float | None:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        return run_cli([self.cli, "abort", app, "-n", self.ns], env)

    def settle(self, app: str, canary: Canary) -> None:
        def ended() -> bool:
            status = self._rollout(app).get("status") or {}
            return bool(status.get("abort")) and status.get("phase") == "Degraded"

        wait_within(f"rollout {app} aborted", ended, timeout=120)
        # The canary ReplicaSet scaled to 0 before the next update (Argo scales it down after
        # abortScaleDownDelaySeconds, 30 s by default: not waited for).

    def verdict(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, str]:
        assert tail is not None
        found = wait_within(
            "Argo's failed measurement in its log",
            lambda: tail.find(r"Measurement Completed\. Result: Failed", canary.started),
            timeout=120,
        )
        return found[0], "its log line 'Measurement Completed. Result: Failed' (arrival)"

    def completed(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, float]:
        assert tail is not None
        mine = rf'".*\brollout={re.escape(app)}\b'
        first = wait_within(
            "Argo's first step completed in its log",
            lambda: tail.find(rf'msg="Rollout step 1/\d+ completed[^"]*{mine}', canary.started),
            timeout=300,
        )
        done = wait_within(
            "Argo's rollout completed in its log",
            lambda: tail.find(rf'msg="Rollout completed update to revision[^"]*{mine}', first[0]),
            timeout=300,
        )
        return first[0], done[0]

    def pid(self) -> int:
        return int(self.pid_file.read_text())

    def log(self) -> Path | None:
        return self.log_file


def argo_errors_template(namespace: str, app: str) -> dict[str, Any]:
    """The canary Service's 5xx share in Traefik's metrics, judged every second; one failure
    aborts (failureLimit 0). No request yet counts as 0."""
    selector = f'service=~"{namespace}-{app}-canary-.*"'
    query = (
        f'(sum(rate(traefik_service_requests_total{{{selector},code=~"5.."}}[3s])) '
        f"/ sum(rate(traefik_service_requests_total{{{selector}}}[3s]))) or vector(0)"
    )
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": f"{app}-errors"},
        "spec": {
            "metrics": [
                {
                    "name": "errors",
                    "interval": "1s",
                    "failureLimit": 0,
                    "consecutiveErrorLimit": 10,
                    "successCondition": "result[0] <= 0.05",
                    "provider": {"prometheus": {"address": prometheus_url(), "query": query}},
                }
            ]
        },
    }


@dataclass
class Gates:
    """Flagger's webhooks: confirm-promotion (closed: the canary waits at its last step, as a
    pause) and rollback (open: Flagger rolls back), per canary, on 127.0.0.1."""

    rollback: set[str] = field(default_factory=set)
    opened: dict[str, float] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    def start(self) -> int:
        gates = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                kind, _, name = self.path.strip("/").partition("/")
                ok = kind == "rollback" and name in gates.rollback
                self.send_response(200 if ok else 403)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return int(self.server.server_address[1])

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()


class FlaggerTarget(Target):
    label = "Flagger"
    how = "Gateway API (HTTPRoute) through Traefik's Gateway provider"

    def __init__(self, api: client.ApiClient, namespace: str, traefik: Traefik) -> None:
        super().__init__(api, namespace, traefik)
        env = peer_env()
        self.pid_file = Path(env["LOCKGATE_FLAGGER_PID_FILE"])
        self.log_file = Path(env["LOCKGATE_FLAGGER_LOG"])
        self.version = tool_version("flagger")
        self.gates = Gates()
        self.gate_port = self.gates.start()

    def close(self) -> None:
        self.gates.stop()

    def _canary(self, app: str) -> dict[str, Any]:
        result: dict[str, Any] = self.custom.get_namespaced_custom_object(
            "flagger.app", "v1beta1", self.ns, "canaries", app
        )
        return result

    def _phase(self, app: str) -> str | None:
        phase: str | None = (self._canary(app).get("status") or {}).get("phase")
        return phase

    step_wait = FLAGGER_MIN_INTERVAL_SECONDS
    step_wait_note = (
        f"{FLAGGER_MIN_INTERVAL} per step: its analysis interval, the least it allows "
        "(a step per tick; no zero-length step)"
    )
    completed_source = (
        "its log lines 'Advance … canary weight 10' → 'Promotion completed!' (own ts, ms)"
    )

    def create(
        self, app: str, failing: bool, replicas: int, weights: tuple[int, ...] | None
    ) -> None:
        apps = client.AppsV1Api(self.api)
        apps.create_namespaced_deployment(
            self.ns,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": app, "labels": {"app": app}},
                "spec": {
                    "replicas": replicas,
                    "selector": {"matchLabels": {"app": app}},
                    "template": pod_template(app, f"demo:{STABLE}"),
                },
            },
        )
        hooks = [
            {
                "name": "gate",
                "type": "confirm-promotion",
                "url": f"http://127.0.0.1:{self.gate_port}/gate/{app}",
            },
            {
                "name": "rollback",
                "type": "rollback",
                "url": f"http://127.0.0.1:{self.gate_port}/rollback/{app}",
            },
        ]
        if weights:
            hooks = []  # no pause, no abort: it advances a weight per tick, then promotes
        metrics: list[dict[str, Any]] = []
        if failing:
            apply(self.api, self.ns, flagger_errors_template(self.ns, app))
            metrics = [
                {
                    "name": "errors",
                    "templateRef": {"name": f"{app}-errors"},
                    "thresholdRange": {"max": 5},
                    "interval": FLAGGER_MIN_INTERVAL,
                }
            ]
        apply(
            self.api,
            self.ns,
            {
                "apiVersion": "flagger.app/v1beta1",
                "kind": "Canary",
                "metadata": {"name": app},
                "spec": {
                    "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
                    "progressDeadlineSeconds": self.deadline,
                    "service": {
                        "port": PORT,
                        "targetPort": PORT,
                        "hosts": [host_of(app, self.ns)],
                        "gatewayRefs": [self.traefik.parent_ref()],
                    },
                    "analysis": {
                        "interval": FLAGGER_MIN_INTERVAL,
                        "threshold": 1,
                        "stepWeights": list(weights or (10, 50)),
                        "metrics": metrics,
                        "webhooks": hooks,
                    },
                },
            },
        )

    def ready(self, app: str) -> str:
        wait_within(
            f"canary {app} Initialized",
            lambda: self._phase(app) == "Initialized",
            timeout=max(180, self.deadline),
            every=0.5,
        )
        prefix = f"httproute-{self.ns}-{app}-"

        def weighted() -> str | None:
            for s in services(self.traefik.api_url):
                if s["name"].startswith(prefix) and "weighted" in s:
                    return str(s["name"])
            return None

        found: str = wait_within(f"Traefik's weighted service for {app}", weighted, timeout=60)
        return found

    def start(self, app: str, run: int, image: str) -> Canary:
        patch = {"spec": {"template": pod_template(app, image)}}
        started = time.monotonic()
        client.AppsV1Api(self.api).patch_namespaced_deployment(app, self.ns, patch)
        return Canary(app, started, image)

    def abort(self, app: str, canary: Canary) -> float | None:
        self.gates.rollback.add(app)
        return None

    def settle(self, app: str, canary: Canary) -> None:
        wait_within(f"canary {app} Failed", lambda: self._phase(app) == "Failed", timeout=180)
        self.gates.rollback.discard(app)

    def verdict(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, str]:
        assert tail is not None
        found = wait_within(
            "Flagger's failed check in its log",
            lambda: tail.find(r"Halt .*advancement", canary.started),
            timeout=120,
        )
        return flagger_ts(found[2]), "its log line 'Halt … advancement' (own ts, ms)"

    def completed(self, app: str, canary: Canary, tail: LogTail | None) -> tuple[float, float]:
        assert tail is not None
        name = re.escape(f"{app}.{self.ns}")
        first = wait_within(
            "Flagger's first weight in its log",
            lambda: tail.find(rf'"Advance {name} canary weight {STEP_WEIGHTS[0]}"', canary.started),
            timeout=300,
        )
        done = wait_within(
            "Flagger's promotion completed in its log",
            lambda: tail.find(rf'"Promotion completed! Scaling down {name}"', first[0]),
            timeout=300,
        )
        return flagger_ts(first[2]), flagger_ts(done[2])

    def pid(self) -> int:
        return int(self.pid_file.read_text())

    def log(self) -> Path | None:
        return self.log_file


def flagger_ts(line: str) -> float:
    """The monotonic time of a Flagger log line's own timestamp (ms)."""
    return mono_of(datetime.fromisoformat(json.loads(line)["ts"].replace("Z", "+00:00")))


def flagger_errors_template(namespace: str, app: str) -> dict[str, Any]:
    selector = f'service=~".*{namespace}-{app}-canary-.*"'
    query = (
        f'(100 * sum(rate(traefik_service_requests_total{{{selector},code=~"5.."}}[{{{{ interval }}}}])) '
        f"/ sum(rate(traefik_service_requests_total{{{selector}}}[{{{{ interval }}}}]))) or vector(0)"
    )
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": f"{app}-errors"},
        "spec": {"provider": {"type": "prometheus", "address": prometheus_url()}, "query": query},
    }


def peer_env() -> dict[str, str]:
    proc = hack("peers", "env")
    return {
        name: value
        for line in proc.stdout.splitlines()
        if line.startswith("export ")
        for name, _, value in [line.removeprefix("export ").partition("=")]
    }


def prometheus_url() -> str:
    return f"http://127.0.0.1:{os.environ.get('LOCKGATE_PROMETHEUS_PORT', '19090')}"


def tool_version(tool: str) -> str:
    return hack("build-tools", "--print-version", tool).stdout.strip()


# --- the scenarios ---------------------------------------------------------------------------


@dataclass
class Figures:
    to_stable: list[float] = field(default_factory=list)
    to_v1: list[float] = field(default_factory=list)
    cli: list[float] = field(default_factory=list)
    first_weight: list[float] = field(default_factory=list)
    verdict_to_stable: list[float] = field(default_factory=list)
    verdict_source: str = ""
    # the canary's weight first live in Traefik -> the verdict, -> 100% stable in Traefik
    live_to_verdict: list[float] = field(default_factory=list)
    live_to_stable: list[float] = field(default_factory=list)
    bad_requests: list[int] = field(default_factory=list)
    failed_requests: list[int] = field(default_factory=list)
    rss: float | None = None
    idle_cpu: float | None = None
    # steps: per step, seconds, one figure per run
    step_traefik: list[float] = field(default_factory=list)
    step_own: list[float] = field(default_factory=list)
    step_shown: list[list[int]] = field(default_factory=list)
    step_wait: float = 0.0
    step_wait_note: str = ""
    # fifty
    fleet: int | None = None
    fleet_ready: float | None = None  # created -> all stable (and 0% canary in Traefik)
    fleet_to_flight: float | None = None  # updated -> all at 50% in Traefik
    fleet_idle: tuple[float, float] | None = None  # (RSS MiB, CPU s over the window)
    fleet_busy: tuple[float, float] | None = None
    notes: list[str] = field(default_factory=list)


def twenty_v1_from(responses: list[Response], since: float) -> float | None:
    """Seconds from `since` to the answer that begins the first run of 20 in a row by v1."""
    after = [r for r in responses if r.at >= since]
    for i in range(len(after) - 19):
        if all(r.version == STABLE and r.status == 200 for r in after[i : i + 20]):
            return after[i].at - since
    return None


def abort_and_reaction(
    target: Target, web_url: str, runs: int, aborts: int, figures: Figures
) -> None:
    """`runs` canaries: each gives apply -> first weight live; the first `aborts` are paused
    at 50% under load and aborted by hand (timed), the others are aborted untimed."""
    app = "demo"
    wrr = target.setup(app, failing=False)
    api_url = target.traefik.api_url
    for run in range(1, runs + 1):
        # A new version each run: Argo keeps an aborted canary's ReplicaSet up for 30 s
        # (abortScaleDownDelaySeconds) and reuses it for the same template, which would time
        # no Pod start at all.
        canary = target.start(app, run, f"demo:v{run + 1}")
        live = wait_share(api_url, wrr, lambda s: s > 0, "the first canary weight")
        figures.first_weight.append(live - canary.started)
        if run <= aborts:
            wait_share(api_url, wrr, lambda s: s >= 50, "the canary at 50%", timeout=180)
            if run == 1:
                # Paused at 50%: the controller's footprint with one rollout in flight.
                figures.rss, figures.idle_cpu = idle(target.pid())
            else:
                # Traefik loads a provider's changes at most every 2 s (its default
                # providersThrottleDuration): an abort right after the 50% split was loaded
                # would time Traefik's window, not the controller (2026-12-02: 1.2-1.4 s for
                # lockgate and Argo alike, against 0.3-0.4 s after a quiet spell).
                time.sleep(TRAEFIK_THROTTLE_SECONDS + 1)
            load = Load(web_url, host_of(app, target.ns), threads=1).start()
            try:
                load.wait_answered(50)
                since = time.monotonic()
                took = target.abort(app, canary)
                stable = wait_share(api_url, wrr, lambda s: s == 0, "100% stable")
                v1: float | None = None
                deadline = time.monotonic() + 60
                while v1 is None and time.monotonic() < deadline:
                    time.sleep(0.05)
                    with load._lock:
                        v1 = twenty_v1_from(list(load.responses), since)
            finally:
                load.stop()
            figures.to_stable.append(stable - since)
            if v1 is not None:
                figures.to_v1.append(v1)
            if took is not None:
                figures.cli.append(took)
            print(
                f"  {target.label} run {run}: first weight {live - canary.started:.2f}s, "
                f"abort -> stable {stable - since:.2f}s, 20 by v1 {v1}"
            )
        else:
            target.abort(app, canary)
            # Until the split is back in Traefik's API: a rollout is marked aborted before
            # Traefik has loaded the weights (its 2 s provider throttle), and the next run
            # must not take this run's 10% for its own (Argo's runs did: 0.07 s).
            wait_share(api_url, wrr, lambda s: s == 0, "100% stable after the abort")
            print(f"  {target.label} run {run}: first weight {live - canary.started:.2f}s")
        target.settle(app, canary)


def quiet_canary(app: str, namespace: str, window: str = "10s") -> None:
    """Until Prometheus has seen no request to the canary for `window` (the longest rate
    window of the analyses): the next run's analysis must not judge this run's errors (Argo's
    first measurement of a new canary did, and aborted it before any weight was set)."""
    query = f'sum(rate(traefik_service_requests_total{{service=~".*{namespace}-{app}-canary.*"}}[{window}]))'

    def quiet() -> bool:
        try:
            data = httpx.get(f"{prometheus_url()}/api/v1/query", params={"query": query}, timeout=2)
            result = data.json()["data"]["result"]
        except (httpx.HTTPError, ValueError, KeyError):
            return False
        return not result or float(result[0]["value"][1]) == 0

    wait_within("no canary requests in Prometheus's window", quiet, timeout=120, every=0.5)


def failing(target: Target, web_url: str, runs: int, figures: Figures) -> None:
    app = "bad"
    wrr = target.setup(app, failing=True)
    api_url = target.traefik.api_url
    log = target.log()
    with contextlib.ExitStack() as stack:
        tail = stack.enter_context(LogTail(log)) if log else None
        for run in range(1, runs + 1):
            load = Load(web_url, host_of(app, target.ns), threads=2).start()
            try:
                canary = target.start(app, run, f"demo:v{run + 1}-errors30")
                live = wait_share(api_url, wrr, lambda s: s > 0, "the canary live", timeout=180)
                stable = wait_share(api_url, wrr, lambda s: s == 0, "100% stable again")
                verdict, source = target.verdict(app, canary, tail)
                # The load runs on until the rollout has ended, so stragglers count too.
                target.settle(app, canary)
            finally:
                responses = load.stop()
            mine = [r for r in responses if r.at >= canary.started]
            bad = [r for r in mine if r.version and r.version != STABLE]
            quiet_canary(app, target.ns)
            figures.verdict_to_stable.append(stable - verdict)
            figures.verdict_source = source
            figures.live_to_verdict.append(verdict - live)
            figures.live_to_stable.append(stable - live)
            figures.bad_requests.append(len(bad))
            figures.failed_requests.append(len(failed(mine)))
            print(
                f"  {target.label} failing run {run}: verdict -> stable {stable - verdict:.3f}s, "
                f"{len(bad)} of {len(mine)} requests reached the bad version, "
                f"{len(failed(mine))} failed: {dict(by_version(mine))}"
            )


def steps(target: Target, runs: int, figures: Figures) -> None:
    """`runs` 5-step canaries of one replica, one after another, each until completed."""
    app = "steps"
    wrr = target.setup(app, replicas=STEP_REPLICAS, weights=STEP_WEIGHTS)
    api_url = target.traefik.api_url
    figures.step_wait, figures.step_wait_note = target.step_wait, target.step_wait_note
    log = target.log()
    with contextlib.ExitStack() as stack:
        tail = stack.enter_context(LogTail(log)) if log else None
        for run in range(1, runs + 1):
            with ShareTimeline(api_url, wrr) as timeline:
                canary = target.start(app, run, f"demo:v{run + 1}")
                first, done = target.completed(app, canary, tail)
                # Until the promotion is in Traefik's API: the next run starts from 0%.
                wait_share(api_url, wrr, lambda s: s == 0, "0% canary after the promotion")
            own = (done - first) / len(STEP_WEIGHTS)
            figures.step_own.append(own)
            seen = traefik_steps(timeline.changes, canary.started)
            if seen is None:
                figures.step_shown.append([])
                print(
                    f"  {target.label} steps run {run}: Traefik's API never showed a canary "
                    f"weight; {own:.2f} s per step by its own record"
                )
                continue
            took, shown, hops = seen
            figures.step_shown.append(shown)
            if shown[0] != STEP_WEIGHTS[0]:
                # Traefik served none of the first weights: its time covers fewer than the 5
                # steps (Argo: 50 for one 2 s window, then the promotion), not a step's cost.
                print(
                    f"  {target.label} steps run {run}: Traefik's API showed only {shown}; "
                    f"{own:.2f} s per step by its own record"
                )
                continue
            per_step = took / len(STEP_WEIGHTS)
            figures.step_traefik.append(per_step)
            print(
                f"  {target.label} steps run {run}: {per_step:.2f} s per step in Traefik's API "
                f"(shares {shown}, each shown for {', '.join(f'{h:.2f}' for h in hops)} s), "
                f"{own:.2f} s per step by its own record"
            )


def node_room(core: client.CoreV1Api) -> tuple[str, int]:
    """(the process kubelet's Node, how many more Pods it takes): its allocatable Pods less
    the Pods on it that have not ended."""
    nodes = [n for n in core.list_node().items if not n.metadata.name.startswith("lg-sim")]
    node = nodes[0]
    allowed = int(node.status.allocatable.get("pods", "110"))
    pods = core.list_pod_for_all_namespaces(field_selector=f"spec.nodeName={node.metadata.name}")
    running = [p for p in pods.items if p.status.phase not in {"Succeeded", "Failed"}]
    return node.metadata.name, allowed - len(running)


def mem_available_gib() -> float:
    with open("/proc/meminfo") as meminfo:
        kib = next(int(line.split()[1]) for line in meminfo if line.startswith("MemAvailable"))
    return kib / 1024 / 1024


def fifty(target: Target, count: int, figures: Figures) -> None:
    """`count` applications of one replica: the controller's footprint with all stable, then
    with all of them paused at 50% (two Pods each, a stable and a canary)."""
    core = client.CoreV1Api(target.api)
    node, room = node_room(core)
    # Two Pods each while in flight (Flagger: the target and its primary at initialisation).
    if 2 * count > room:
        figures.notes.append(
            f"{room // 2} applications, not {count}: the process kubelet's Node {node} had "
            f"room for {room} more Pods"
        )
        count = room // 2
    figures.fleet = count
    target.deadline = 600
    apps = [f"fleet-{i:02d}" for i in range(count)]
    api_url = target.traefik.api_url
    since = time.monotonic()
    for app in apps:
        target.create(app, False, FLEET_REPLICAS, None)
    wrrs = [target.ready(app) for app in apps]
    wait_shares(api_url, wrrs, lambda s: s == 0, f"all {count} stable in Traefik", timeout=300)
    figures.fleet_ready = time.monotonic() - since
    time.sleep(FLEET_SETTLE_SECONDS)
    figures.fleet_idle = idle(target.pid(), FLEET_WINDOW_SECONDS)
    print(
        f"  {target.label} {count} stable after {figures.fleet_ready:.1f} s: RSS "
        f"{figures.fleet_idle[0]:.0f} MiB, CPU {figures.fleet_idle[1]:.2f} s over "
        f"{FLEET_WINDOW_SECONDS:.0f} s"
    )
    since = time.monotonic()
    for app in apps:
        target.start(app, 1, "demo:v2")
    wait_shares(api_url, wrrs, lambda s: s == 50, f"all {count} at 50%", timeout=600)
    figures.fleet_to_flight = time.monotonic() - since
    time.sleep(FLEET_SETTLE_SECONDS)
    figures.fleet_busy = idle(target.pid(), FLEET_WINDOW_SECONDS)
    # Still all paused at 50% at the end of the window?
    wait_shares(api_url, wrrs, lambda s: s == 50, f"all {count} still at 50%", timeout=5)
    memory = mem_available_gib()
    print(
        f"  {target.label} {count} at 50% after {figures.fleet_to_flight:.1f} s: RSS "
        f"{figures.fleet_busy[0]:.0f} MiB, CPU {figures.fleet_busy[1]:.2f} s over "
        f"{FLEET_WINDOW_SECONDS:.0f} s; the machine's MemAvailable {memory:.1f} GiB"
    )


def wait_pods_gone(core: client.CoreV1Api, namespace: str, timeout: float = 300) -> None:
    """Until the deleted namespace's Pods are gone (the next controller's runs must not share
    the Node and the CPU with a hundred Pods shutting down); a warning when they are not."""
    deadline = time.monotonic() + timeout
    left = -1
    while time.monotonic() < deadline:
        try:
            left = len(core.list_namespaced_pod(namespace).items)
        except client.ApiException:
            return
        if not left:
            return
        time.sleep(1)
    print(f"warning: {left} Pods of {namespace} still there after {timeout:.0f} s")


# --- the table -------------------------------------------------------------------------------


def med_max(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"{statistics.median(values):.2f} / {max(values):.2f} s ({len(values)} runs)"


def p50_p99(values: list[float]) -> str:
    if not values:
        return "n/a"
    return (
        f"{statistics.median(values):.2f} / {percentile(values, 0.99):.2f} s ({len(values)} runs)"
    )


def table(targets: list[Target], figures: list[Figures]) -> str:
    def row(name: str, cell: Callable[[Target, Figures], str]) -> str:
        return (
            f"| {name} | "
            + " | ".join(cell(t, f) for t, f in zip(targets, figures, strict=False))
            + " |"
        )

    def median_int(values: list[int]) -> str:
        return f"{statistics.median(values):.0f} ({len(values)} runs)" if values else "n/a"

    def cli(t: Target, f: Figures) -> str:
        if f.cli:
            return med_max(f.cli)
        if isinstance(t, FlaggerTarget):
            return "no abort command: a rollback webhook answers 200"
        return "no CLI (annotation through the API)"

    lines = [
        "| | " + " | ".join(f"{t.label} {t.version}" for t in targets) + " |",
        "|---" * (len(targets) + 1) + "|",
        row("traffic through", lambda t, f: t.how),
        row(
            "manual abort → Traefik API shows 100% stable (median / max)",
            lambda t, f: med_max(f.to_stable),
        ),
        row(
            "manual abort → 20 requests in a row answered by v1 (median / max)",
            lambda t, f: med_max(f.to_v1),
        ),
        row("the abort CLI's own run time (median / max)", cli),
        row(
            "apply → first canary weight live in Traefik (p50 / p99; includes Pod start)",
            lambda t, f: p50_p99(f.first_weight),
        ),
        row(
            "failing canary (30% errors): verdict → 100% stable in Traefik (median / max)",
            lambda t, f: med_max(f.verdict_to_stable),
        ),
        row("… the verdict's timestamp", lambda t, f: f.verdict_source or "n/a"),
        row(
            "… canary weight first live in Traefik → verdict; → 100% stable (medians)",
            lambda t, f: (
                f"{statistics.median(f.live_to_verdict):.2f} s; "
                f"{statistics.median(f.live_to_stable):.2f} s ({len(f.live_to_stable)} runs)"
                if f.live_to_stable
                else "n/a"
            ),
        ),
        row(
            "… requests answered by the bad version, whole rollout (median)",
            lambda t, f: median_int(f.bad_requests),
        ),
        row(
            "… failed requests, whole rollout (median; the bad version's 500s count)",
            lambda t, f: median_int(f.failed_requests),
        ),
        row(
            "controller RSS, one rollout paused at 50%",
            lambda t, f: f"{f.rss:.0f} MiB" if f.rss is not None else "n/a",
        ),
        row(
            "controller CPU over 10 s, one rollout paused",
            lambda t, f: f"{f.idle_cpu:.2f} s" if f.idle_cpu is not None else "n/a",
        ),
    ]
    if any(f.step_own for f in figures):
        lines += steps_rows(row)
    if any(f.fleet for f in figures):
        lines += fleet_rows(row)
    notes = [f"- {t.label}: {n}" for t, f in zip(targets, figures, strict=False) for n in f.notes]
    return "\n".join(lines + (["", *notes] if notes else []))


def steps_rows(row: Callable[[str, Callable[[Target, Figures], str]], str]) -> list[str]:
    def beyond(t: Target, f: Figures) -> str:
        if not f.step_traefik:
            return "n/a"
        extra = statistics.median(f.step_traefik) - f.step_wait
        return f"{extra:.2f} s" + (f" (less {f.step_wait:.0f} s configured)" if f.step_wait else "")

    def shown(t: Target, f: Figures) -> str:
        if not f.step_shown:
            return "n/a"
        counts: dict[str, int] = {}
        for seq in f.step_shown:
            text = " → ".join(str(s) for s in seq) + (" (promoted)" if seq[-1:] == [0] else "")
            if not seq:
                text = "none: every weight and the promotion between two of Traefik's loads"
            counts[text] = counts.get(text, 0) + 1
        return "; ".join(f"{k} ({n} of {len(f.step_shown)})" for k, n in counts.items())

    weights = " → ".join(str(w) for w in (*STEP_WEIGHTS, 100))
    return [
        row(
            f"5-step canary ({weights}, 1 replica, no analysis): configured wait per step",
            lambda t, f: f.step_wait_note or "n/a",
        ),
        row(
            "… per step: first weight live → 100% on the new version in Traefik's API, ÷ 5 "
            "(median / max)",
            lambda t, f: med_max(f.step_traefik),
        ),
        row("… of which beyond the configured wait (median)", beyond),
        row(
            "… per step by the controller's own record: first step done → rollout completed, "
            "÷ 5 (median / max)",
            lambda t, f: med_max(f.step_own),
        ),
        row("… its own record", lambda t, f: t.completed_source if f.step_own else "n/a"),
        row("… the canary shares Traefik's API showed (runs)", shown),
    ]


def fleet_rows(row: Callable[[str, Callable[[Target, Figures], str]], str]) -> list[str]:
    def footprint(which: str) -> Callable[[Target, Figures], str]:
        def cell(t: Target, f: Figures) -> str:
            value = f.fleet_idle if which == "idle" else f.fleet_busy
            return f"{value[0]:.0f} MiB / {value[1]:.2f} s" if value else "n/a"

        return cell

    def seconds(value: float | None) -> str:
        return f"{value:.1f} s" if value is not None else "n/a"

    window = f"{FLEET_WINDOW_SECONDS:.0f} s"
    return [
        row(
            "applications in the footprint rows below (1 replica each)",
            lambda t, f: str(f.fleet) if f.fleet else "n/a",
        ),
        row(
            "… created → all stable (and 0% canary in Traefik's API)",
            lambda t, f: seconds(f.fleet_ready),
        ),
        row(
            f"controller RSS / CPU seconds over {window}, all stable, nothing in flight",
            footprint("idle"),
        ),
        row("… all updated → all at 50% in Traefik's API", lambda t, f: seconds(f.fleet_to_flight)),
        row(
            f"controller RSS / CPU seconds over {window}, all paused at 50% (in flight)",
            footprint("busy"),
        ),
    ]


def write_doc(text: str, argv: list[str]) -> None:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    head = f"""# lockgate, Argo Rollouts and Flagger side by side

Measured by `bench/peers.py` on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, on one machine
({os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}), the local
environment of hack/ (control plane Kubernetes {tool_version("kubernetes")}, the process
kubelet, Traefik {tool_version("traefik")}, Prometheus scraping Traefik every second), one
controller at a time, 3 replicas, canary steps 10 → 50 → 100 (but see `steps` and `fifty`
below), demo images (hack/demo-app).

Command (after `hack/build-tools peers`, `hack/cluster up`, `hack/traefik up`,
`hack/kubelet start` and `hack/prometheus up`):

```
{shlex.join(["python", "-m", "bench.peers", *argv])}
```

How each is driven:
- lockgate: Application + Deployment (steps setWeight 10, setWeight 50, pause, setWeight
  100); abort by the action annotation (`{ACTION_ANNOTATION}=abort`) or `kubectl lockgate
  abort --no-wait` (which returns once the annotation is set, as Argo's CLI does); analysis from Traefik's metrics every 1 s, min 5 requests, 5% errors fails, one
  failure ends it.
- Argo Rollouts: `--traefik-api-group=traefik.io --traefik-api-version=traefik.io/v1alpha1`;
  a Rollout with stable/canary Services and a TraefikService it sets the weights of; abort by
  `kubectl argo rollouts abort`; a background AnalysisTemplate querying Prometheus every 1 s
  (5% errors, failureLimit 0). Its log timestamps have whole seconds, so its verdict is the
  arrival of its log line (the log file read every 2 ms).
- Flagger: `-mesh-provider=gatewayapi:v1` (its Traefik provider writes traefik.containo.us,
  which Traefik v3 no longer reads), an HTTPRoute on the Gateway Traefik serves; stepWeights
  [10, 50], a closed confirm-promotion webhook as the pause, abort = a rollback webhook
  answering 200 (Flagger has no abort command), analysis interval 10 s (the least it allows:
  shorter intervals are raised to 10 s), a MetricTemplate on Traefik's metrics (5% errors,
  threshold 1). Its verdict is its log line "Halt … advancement" (own ts, milliseconds).

The 5-step canary (`steps`): one application of 1 replica (so the canary Pod starts once,
before the first weight; no step after it starts a Pod), canary weights 10, 30, 50, 70, 90,
then 100 / promotion, no analysis, no load, each run until the controller reports the rollout
completed. lockgate and Argo Rollouts take setWeight steps with no pause between (lockgate:
setWeight 10, 30, 50, 70, 90, 100; Argo: setWeight 10 … 90, then its promotion); Flagger
advances one step weight per analysis interval, at least 10 s, so its "beyond the configured
wait" subtracts 10 s per step. Per step in Traefik's API: from the first canary weight Traefik
serves to 100% of the traffic on the new version there (the canary at 100% for lockgate and
Argo; for Flagger the canary back at 0% once its primary runs the new version, which takes its
promotion's two ticks and the primary's Pod start), polled every 5 ms, divided by 5. Traefik
loads a provider's changes at most every {TRAEFIK_THROTTLE_SECONDS} s, so a controller that waits until a
weight is live before the next step cannot go below that here; one that does not wait may
have weights Traefik never served (the row of shares shows what it served). By the
controller's own record: its first step done → its rollout completed (lockgate: the
transition's `at` and `finishedAt`; Argo: its log lines' arrival, read every 2 ms, as its own
timestamps have whole seconds; Flagger: its log lines' own `ts`), divided by 5.

The footprint with many rollouts (`fifty`): {FLEET} applications of 1 replica each (fewer
only if the process kubelet's Node, 110 Pods, has no room; the table says how many), created
side by side; once all are stable (and 0% canary in Traefik's API), {FLEET_SETTLE_SECONDS:.0f} s
of quiet, then the controller's RSS and CPU seconds over {FLEET_WINDOW_SECONDS:.0f} s. Then all
updated to a canary 10 → 50 → pause with no end (Flagger: its closed confirm-promotion gate,
called every 10 s per canary with its rollback webhook); once all are at 50% in Traefik's
API, {FLEET_SETTLE_SECONDS:.0f} s, and the same {FLEET_WINDOW_SECONDS:.0f} s window. RSS at the
window's end; CPU = utime + stime of the controller's process (all its threads). 100
demo-app processes in all.

Every figure is a median over the runs named in its cell.

"""
    DOC.write_text(head + text + "\n")
    print(f"wrote {DOC}")


def run_scenarios(
    name: str,
    target: Target,
    web_url: str,
    args: argparse.Namespace,
    only: set[str],
    f: Figures,
) -> None:
    """The scenarios of `only` against one controller; one that stops early is noted and
    the next one runs."""

    def attempt(scenario: str, run_it: Callable[[], None]) -> None:
        try:
            run_it()
        except (AssertionError, RuntimeError) as err:
            f.notes.append(f"{scenario} stopped early: {err}")
            print(f"{target.label}: {scenario} stopped early: {err}")

    runs = {"flagger": args.flagger_runs, "lockgate-cli": args.aborts}.get(name, args.runs)
    aborts = min(args.aborts, runs)
    if "abort" in only:
        if name == "flagger":
            f.notes.append(f"{runs} runs, not {args.runs}: each waits for Flagger's 10 s ticks")
        attempt("abort", lambda: abort_and_reaction(target, web_url, runs, aborts, f))
    if name == "lockgate-cli":
        return  # the same operator as lockgate's: only the abort's CLI differs
    if "failing" in only:
        attempt("failing", lambda: failing(target, web_url, args.failing, f))
    if "steps" in only:
        step_runs = args.step_runs
        if name == "flagger":
            step_runs = min(step_runs, args.flagger_runs)
        attempt("steps", lambda: steps(target, step_runs, f))
    if "fifty" in only:
        attempt("fifty", lambda: fifty(target, args.fleet, f))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--controllers", default="lockgate,lockgate-cli,argo,flagger")
    parser.add_argument("--only", default="abort,failing,steps,fifty")
    parser.add_argument("--runs", type=int, default=20, help="apply -> first weight runs")
    parser.add_argument("--aborts", type=int, default=5, help="of which timed aborts")
    parser.add_argument("--failing", type=int, default=3, help="failing-canary runs")
    parser.add_argument("--flagger-runs", type=int, default=5, help="Flagger's (10 s ticks)")
    parser.add_argument("--step-runs", type=int, default=5, help="5-step canary runs")
    parser.add_argument("--fleet", type=int, default=FLEET, help="applications in `fifty`")
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    # "reaction" (apply -> first weight) is timed by the abort scenario's runs.
    only = {"abort" if o == "reaction" else o for o in args.only.split(",")}
    unknown = only - {"abort", "failing", "steps", "fifty"}
    if unknown:
        parser.error(f"--only: unknown scenario(s) {sorted(unknown)}")
    cluster, traefik = cluster_info(), traefik_info()
    api = cluster.api_client()
    core = client.CoreV1Api(api)
    targets: list[Target] = []
    figures: list[Figures] = []
    with exits_cleanly():
        for name in args.controllers.split(","):
            ns = f"peers-{name.split('-')[0]}-{uuid.uuid4().hex[:5]}"
            core.create_namespace({"metadata": {"name": ns}})
            try:
                with controller(name, api, ns, cluster, traefik) as target:
                    f = Figures()
                    run_scenarios(name, target, traefik.web_url, args, only, f)
                    targets.append(target)
                    figures.append(f)
            finally:
                with contextlib.suppress(client.ApiException):
                    core.delete_namespace(ns)
            if "fifty" in only:  # not when stopped by a signal: that ends the run at once
                wait_pods_gone(core, ns)
    text = table(targets, figures)
    print(text)
    if not args.no_doc:
        write_doc(text, sys.argv[1:])


@contextlib.contextmanager
def controller(
    name: str, api: client.ApiClient, ns: str, cluster: Cluster, traefik: Traefik
) -> Iterator[Target]:
    """The controller `name` limited to namespace `ns`, stopped when the block ends."""
    if name in {"lockgate", "lockgate-cli"}:
        with running_operator(operator_env(cluster, traefik), ns) as op:
            ours = LockgateTarget(api, ns, traefik, op, cli=name == "lockgate-cli")
            try:
                yield ours
            finally:
                ours.close()
        return
    peer = {"argo": "argo", "flagger": "flagger"}[name]
    env = {**os.environ, "LOCKGATE_PEERS_NAMESPACE": ns}
    target: Target | None = None
    try:
        up = subprocess.run(
            [str(REPO_ROOT / "hack" / "peers"), "up", peer], env=env, text=True, check=False
        )
        if up.returncode != 0:
            raise RuntimeError(f"hack/peers up {peer} failed")
        target = ArgoTarget(api, ns, traefik) if peer == "argo" else FlaggerTarget(api, ns, traefik)
        yield target
    finally:
        if target:
            target.close()
        subprocess.run([str(REPO_ROOT / "hack" / "peers"), "down", peer], check=False)


if __name__ == "__main__":
    main()
