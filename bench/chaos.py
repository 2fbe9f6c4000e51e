"""Chaos soak: the operator killed with SIGKILL again and again while rollouts of every
strategy run on both targets under HTTP load (figures and a verdict; never part of CI).

One Application per strategy (Recreate, Rolling, BlueGreen, Canary) per target (Kubernetes
through the process kubelet, and the three Docker hosts of hack/dockerhosts), each with a
steady trickle of requests through Traefik. Each Application rolls out one Deployment after
another, good images (demo:v1 and demo:v3 in turn) and bad ones (demo:v2-errors30, 5xx on 30%
of requests, for the strategies analysis judges; demo:v2-unready, never ready, for all),
picked from the seed. Meanwhile the operator (`lockgate operator`, scoped to the bench's
namespace) is killed `--kills` times at seeded random moments and restarted at once, as a
crash-looping Pod would be. Every kill records where each rollout in flight stood, read from
the API just before the SIGKILL (and again just after it).

Afterwards every rollout must have ended as its image dictates (good -> Succeeded, bad ->
RolledBack) and walked its steps once each, in order (its status transitions), no Docker
host or Pod left with an extra instance, and no request failed but those a bad image answers
with 5xx by design and those in the downtime Recreate has by design (old instances stop
before the new ones start). It prints a summary: kills by phase and step, outcomes, failed
requests, the seed; it exits 1 when something was wrong.

It brings up what it needs (control plane, Traefik, process kubelet, Docker hosts) and
stops what it started. It holds the suite lock (/tmp/lockgate-suite.lock) itself, or runs
under `flock -o /tmp/lockgate-suite.lock ...`. The operator it starts dies with it
(parent-death signal), however the bench ends.

Usage: python -m bench.chaos [--seed N] [--kills 50] [--targets kubernetes,docker]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import random
import re
import signal
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes import client

from hack.tools.load import Load, Response, by_version
from lockgate.names import LABEL_APP
from tests.support.cluster import (
    Traefik,
    cluster_info,
    cluster_running,
    hack,
    start_cluster,
    start_traefik,
    stop_cluster,
    stop_traefik,
    traefik_info,
    traefik_running,
)
from tests.support.docker_apps import (
    alone_everywhere,
    create_secrets,
    delete_application,
    docker_application,
    remove_all,
)
from tests.support.dockerhosts import (
    DockerHost,
    docker_hosts_running,
    start_docker_hosts,
    stop_docker_hosts,
)
from tests.support.kills import (
    KillRecord,
    deployments_list,
    is_bad,
    positions,
    step_problems,
    unexpected_failures,
    version_of,
)
from tests.support.operator_fixtures import Operator, free_port, operator_env
from tests.support.rollouts import Lockgate, application, deployment, host_of, wait_within

SUITE_LOCK = Path("/tmp/lockgate-suite.lock")
TARGETS = ("kubernetes", "docker")
STRATEGIES: dict[str, dict[str, Any]] = {
    "Recreate": {"type": "Recreate"},
    "Rolling": {"type": "Rolling", "rolling": {"batchSize": 1, "batchWaitSeconds": 2}},
    "BlueGreen": {
        "type": "BlueGreen",
        "blueGreen": {"previewSeconds": 2, "scaleDownDelaySeconds": 8},
    },
    "Canary": {"type": "Canary", "canary": {"steps": [25, 50, 100], "stepSeconds": 3}},
}
# Analysis where the strategy has something to judge on the new version's traffic; one failed
# window fails a bad image, so its outcome does not hang on how the kills fell.
ANALYSIS = {"intervalSeconds": 2, "minRequests": 5, "maxConsecutiveFailures": 1}
ANALYSED = ("BlueGreen", "Canary")
GOOD = ("demo:v1", "demo:v3")
BAD = {
    "Recreate": ("demo:v2-unready",),
    "Rolling": ("demo:v2-unready",),
    "BlueGreen": ("demo:v2-errors30", "demo:v2-unready"),
    "Canary": ("demo:v2-errors30", "demo:v2-unready"),
}
BAD_VERSIONS = {version_of(image) for images in BAD.values() for image in images}
GOOD_DEADLINE, UNREADY_DEADLINE = 180, 20  # progressDeadlineSeconds
TERMINAL = ("Succeeded", "RolledBack", "Failed", "Aborted")
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) (WRN|ERR) (.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ------------------------------------------------------------------ environment


def lock_holders(path: Path) -> set[int]:
    """PIDs holding an flock on `path` (from /proc/locks)."""
    inode = path.stat().st_ino
    holders = set()
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[1] == "FLOCK" and fields[5].endswith(f":{inode}"):
            holders.add(int(fields[4]))
    return holders


def ancestors() -> set[int]:
    out, pid = set(), os.getppid()
    while pid > 1:
        out.add(pid)
        stat = Path(f"/proc/{pid}/stat").read_text()
        pid = int(stat.rsplit(")", 1)[1].split()[1])
    return out


@contextlib.contextmanager
def suite_lock() -> Iterator[None]:
    """The machine-wide lock of the local environment: taken here, unless a process this one
    runs under (`flock -o /tmp/lockgate-suite.lock python -m bench.chaos`) holds it."""
    SUITE_LOCK.touch(exist_ok=True)
    with SUITE_LOCK.open("r") as handle:  # not inherited by the processes started below
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if lock_holders(SUITE_LOCK) & ancestors():
                yield
                return
            print(f"waiting for {SUITE_LOCK} (another suite or bench runs)", flush=True)
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def environment(targets: tuple[str, ...]) -> Iterator[None]:
    """What the soak needs, up; what this started, stopped at the end (in reverse)."""
    started: list[tuple[str, Callable[[], object]]] = []

    def kubelet_running() -> bool:
        return hack("kubelet", "status").returncode in (0, 2)

    def start_kubelet() -> None:
        proc = hack("kubelet", "start", timeout=600.0)
        if proc.returncode != 0:
            raise RuntimeError(f"hack/kubelet start failed:\n{proc.stderr[-4000:]}")

    components: list[tuple[str, Callable[[], bool], Callable[[], object], Callable[[], object]]]
    components = [
        ("cluster", cluster_running, start_cluster, stop_cluster),
        ("traefik", traefik_running, start_traefik, stop_traefik),
        ("kubelet", kubelet_running, start_kubelet, lambda: hack("kubelet", "stop", timeout=60)),
    ]
    if "docker" in targets:
        components.append(
            ("dockerhosts", docker_hosts_running, start_docker_hosts, stop_docker_hosts)
        )
    try:
        for name, running, start, stop in components:
            was_running = running()
            if not was_running:
                started.append((name, stop))
            if name == "cluster" or not was_running:  # `up` re-applies the CRDs
                print(f"starting {name}" if not was_running else "cluster up", flush=True)
                start()
        if "kubernetes" in targets:
            wait_within(
                "the process kubelet's Node Ready",
                lambda: hack("kubelet", "status").returncode == 0,
                60,
            )
        yield
    finally:
        for name, stop in reversed(started):
            print(f"stopping {name}", flush=True)
            stop()


# ------------------------------------------------------------------ the soak


@dataclass
class App:
    name: str
    strategy: str
    target: str
    stable: str = "demo:v1"
    count: int = 0
    current: tuple[str, str] | None = None  # (deployment, image) in flight
    finished: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    load: Load | None = None

    @property
    def short(self) -> str:
        return f"{self.strategy}/{self.target}"


def next_image(app: App, rng: random.Random) -> str:
    if rng.random() < 0.5:
        return rng.choice(BAD[app.strategy])
    return GOOD[1] if app.stable == GOOD[0] else GOOD[0]


def deployment_body(app: App, name: str, image: str) -> dict[str, Any]:
    unready = image.endswith("-unready")
    extra: dict[str, Any] = {
        "progressDeadlineSeconds": UNREADY_DEADLINE if unready else GOOD_DEADLINE
    }
    if app.strategy in ANALYSED:
        extra["analysis"] = ANALYSIS
    return deployment(name, app.name, image, STRATEGIES[app.strategy], **extra)


def recreate_downtime(
    status: dict[str, Any], to_monotonic: Callable[[datetime], float]
) -> tuple[float, float] | None:
    """When a Recreate rollout had no instance serving, by design: from its start until the
    new version took traffic (or, rolled back, the old one again), with 2 s either side for
    requests in flight and Traefik's reload."""
    moments = {t.get("event") or t["phase"]: t for t in status.get("transitions") or []}
    start = moments.get("Started")
    if start is None:
        return None
    done = [
        t
        for t in status.get("transitions") or []
        if (t.get("event") == "StepCompleted" and "route 100%" in t.get("message", ""))
        or t["phase"] in TERMINAL
    ]
    if not done:
        return None
    begin = to_monotonic(datetime.fromisoformat(start["at"])) - 2.0
    end = to_monotonic(datetime.fromisoformat(done[0]["at"])) + 2.0
    return begin, end


def downtime_story(soak: Soak, status: dict[str, Any]) -> list[str]:
    """A Recreate rollout's transitions and the kills among them, seconds from its start:
    which step a long downtime was spent in, and how many kills cut into it."""
    transitions = status.get("transitions") or []
    if not transitions:
        return []
    at = [datetime.fromisoformat(t["at"]) for t in transitions]
    events = [
        (when, f"{t.get('event') or t['phase']} {t.get('message', '')}".rstrip())
        for when, t in zip(at, transitions, strict=True)
    ]
    events += [(k.at, f"kill {k.number}") for k in soak.kills if at[0] <= k.at <= at[-1]]
    return [f"+{(when - at[0]).total_seconds():6.1f} s {what}" for when, what in sorted(events)]


def failure_context(soak: Soak, app: App, unexpected: list[Response]) -> list[str]:
    """Each burst of unexpected failures (no gap over 1 s), on the clock of the load, with
    the app's rollout transitions and the kills within 5 s of it: what a diagnosis needs
    first, as a seed repeats the kill moments only roughly."""
    events: list[tuple[float, str]] = []
    for name, image, status in app.finished:
        for t in status.get("transitions") or []:
            what = t.get("event") or t["phase"]
            message = t.get("message", "")
            events.append(
                (
                    soak.to_monotonic(datetime.fromisoformat(t["at"])),
                    f"{name} ({image}): {what} {message}",
                )
            )
    events += [(soak.to_monotonic(k.at), f"kill {k.number}") for k in soak.kills]
    bursts: list[list[Response]] = []
    for r in sorted(unexpected, key=lambda r: r.at):
        if bursts and r.at - bursts[-1][-1].at <= 1.0:
            bursts[-1].append(r)
        else:
            bursts.append([r])
    lines = []
    to_wall = time.time() - time.monotonic()
    for burst in bursts:
        first, last = burst[0].at, burst[-1].at
        begins = datetime.fromtimestamp(first + to_wall, UTC)
        lines.append(
            f"{len(burst)} in {last - first:.2f} s from {begins:%H:%M:%S.%f} UTC: "
            f"{by_version(burst)}"
        )
        lines += [
            f"  {at - first:+7.2f} s  {what}"
            for at, what in sorted(events)
            if first - 5.0 <= at <= last + 5.0
        ]
        lines += [
            f"  traefik {line}"
            for line in traefik_says(
                traefik_log(soak.traefik),
                first + to_wall - 3.0,
                last + to_wall + 3.0,
                about=(app.name, "providerName=file"),
            )[:MAX_LOG_LINES]
        ]
    return lines


MAX_LOG_LINES = 20


def traefik_log(traefik: Traefik) -> Path:
    """hack/traefik's log, beside the dynamic configuration it serves."""
    return traefik.dynamic_dir.parent / "traefik.log"


def traefik_says(path: Path, since: float, until: float, about: tuple[str, ...]) -> list[str]:
    """Traefik's warnings and errors logged between two wall-clock times (its log has whole
    seconds, so the window is widened to them) that mention one of `about`: a router or
    service it could not build answers 404 for as long as it stays out."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    out = []
    for raw in text.splitlines():
        match = LOG_LINE.match(ANSI.sub("", raw))
        if match is None:
            continue
        at = datetime.strptime(match[1], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
        if int(since) <= at <= until and any(word in match[3] for word in about):
            out.append(f"{match[1]} {match[2]} {match[3]}")
    return out


class Soak:
    def __init__(self, args: argparse.Namespace, rng: random.Random) -> None:
        self.args = args
        self.rng = rng
        self.cluster = cluster_info()
        self.traefik: Traefik = traefik_info()
        self.api = self.cluster.api_client()
        self.core = client.CoreV1Api(self.api)
        self.namespace = f"chaos-{args.seed % 100000:05d}-{uuid.uuid4().hex[:4]}"
        self.lg = Lockgate(self.api, self.namespace)
        self.hosts: dict[str, DockerHost] = {}
        self.apps: list[App] = []
        self.kills: list[KillRecord] = []
        self.restarts: list[float] = []
        self.operator: Operator | None = None
        # Wall clock (status timestamps) -> monotonic clock (the load's timestamps).
        self.offset = time.time() - time.monotonic()

    def to_monotonic(self, at: datetime) -> float:
        return at.timestamp() - self.offset

    def setup(self) -> None:
        from tests.support.dockerhosts import load_hosts

        self.core.create_namespace({"metadata": {"name": self.namespace}})
        print(f"namespace {self.namespace}", flush=True)
        targets = self.args.targets
        if "docker" in targets:
            self.hosts = {h.name: h for h in load_hosts()}
            create_secrets(self.lg, self.hosts)
        suffix = self.namespace[-4:]
        for target in targets:
            for strategy in self.args.strategies:
                short = "k" if target == "kubernetes" else "d"
                app = App(f"{strategy.lower()}-{short}-{suffix}", strategy, target)
                self.apps.append(app)
                if target == "kubernetes":
                    body = application(app.name, self.args.replicas, namespace=self.namespace)
                else:
                    remove_all(self.hosts, app.name)
                    body = docker_application(self.lg, app.name, self.hosts, self.traefik)
                body["spec"]["historyLimit"] = 100
                self.lg.create(body)
        # The operator starts once the namespace exists (it serves exactly that one).
        op = Operator(
            operator_env(self.cluster, self.traefik),
            Path(f"/tmp/lockgate-chaos-{self.namespace}/operator"),
            free_port(),
            scope=("--namespace", self.namespace),
            die_with_parent=True,
        )
        op.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.operator = op
        op.start()
        for app in self.apps:
            self.lg.create(deployment(f"{app.name}-000", app.name, app.stable))
        for app in self.apps:
            status = self.lg.wait_finished(f"{app.name}-000")
            if status["phase"] != "Succeeded":
                raise RuntimeError(f"{app.name}: first rollout {status['phase']}: {status}")
        for app in self.apps:
            app.load = Load(
                self.traefik.web_url,
                host_of(app.name, self.namespace),
                threads=1,
                pause=self.args.request_pause,
                max_requests=1_000_000,
            ).start(max_seconds=4 * 3600)
        for app in self.apps:
            assert app.load is not None
            app.load.wait_answered(20)
        print(f"{len(self.apps)} applications at demo:v1, under load", flush=True)

    def start_next(self, app: App) -> None:
        app.count += 1
        image = next_image(app, self.rng)
        name = f"{app.name}-{app.count:03d}"
        self.lg.create(deployment_body(app, name, image))
        app.current = (name, image)

    def collect(self, objects: dict[str, dict[str, Any]]) -> None:
        """Record each rollout that finished; start the next while kills remain."""
        for app in self.apps:
            if app.current is not None:
                name, image = app.current
                status = (objects.get(name) or {}).get("status") or {}
                if status.get("phase") not in TERMINAL:
                    continue
                app.finished.append((name, image, status))
                if status.get("phase") == "Succeeded":
                    app.stable = image
                app.current = None
                print(f"  {name} {image}: {status.get('phase')}", flush=True)
            if len(self.kills) < self.args.kills:
                self.start_next(app)

    def kill(self, started: float) -> None:
        """SIGKILL the operator while something is in flight; restart it at once."""
        assert self.operator is not None
        before = positions(deployments_list(self.lg.custom, self.namespace))
        if not any(pos.inside for pos in before.values()):
            return  # nothing to cut into this moment: the next look decides again
        self.operator.kill()
        at = datetime.now(UTC)
        after = positions(deployments_list(self.lg.custom, self.namespace))
        record = KillRecord(len(self.kills) + 1, at, before, after)
        self.kills.append(record)
        t0 = time.monotonic()
        self.operator.start()
        self.restarts.append(time.monotonic() - t0)
        print(
            f"kill {record.number}/{self.args.kills} at +{t0 - started:.0f}s: {record.describe()}",
            flush=True,
        )

    def run(self) -> None:
        started = time.monotonic()
        gap = self.args.gap
        next_kill = started + self.rng.uniform(*gap)
        deadline: float | None = None
        while True:
            objects = deployments_list(self.lg.custom, self.namespace)
            self.collect(objects)
            if len(self.kills) >= self.args.kills:
                if all(app.current is None for app in self.apps):
                    break
                deadline = deadline or time.monotonic() + 600
                if time.monotonic() > deadline:
                    stuck = [app.current for app in self.apps if app.current]
                    raise RuntimeError(
                        f"rollouts still in flight 600 s after the last kill: {stuck}"
                    )
            elif time.monotonic() >= next_kill:
                before = len(self.kills)
                self.kill(started)
                if len(self.kills) > before:
                    next_kill = time.monotonic() + self.rng.uniform(*gap)
            time.sleep(0.2)

    def final_state(self) -> list[str]:
        """Each application ends with exactly its stable version everywhere."""
        problems = []
        for app in self.apps:
            ok = False
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not ok:
                if app.target == "docker":
                    ok = alone_everywhere(self.hosts, app.name, app.stable)
                else:
                    pods = self.lg.pods(f"{LABEL_APP}={app.name}")
                    live = [p for p in pods if p.metadata.deletion_timestamp is None]
                    ok = len(live) == self.args.replicas and all(
                        p.spec.containers[0].image == app.stable for p in live
                    )
                if not ok:
                    time.sleep(1)
            if not ok:
                problems.append(f"{app.short}: not {app.stable} alone on every instance after 60 s")
            # The 20 answers after that: the last ones before it may be the end of a Recreate
            # downtime that ended a moment ago (the run stops as the last rollout ends).
            assert app.load is not None
            after = len(app.load.responses)
            app.load.wait_answered(after + 20)
            last = app.load.responses[after : after + 20]
            if {r.version for r in last} != {version_of(app.stable)}:
                problems.append(f"{app.short}: last answers {by_version(last)}, not {app.stable}")
        return problems

    def teardown(self) -> None:
        """Everything the soak made goes, while the operator still runs: it holds finalizers
        on the Deployments and the Docker Applications (their containers and route files)."""
        for app in self.apps:
            if app.load is not None:
                app.load.stop()
        alive = self.operator is not None and self.operator.alive()
        with contextlib.suppress(Exception):
            if alive:
                for app in self.apps:
                    if app.target == "docker":
                        delete_application(self.lg, app.name)
        with contextlib.suppress(Exception):
            self.core.delete_namespace(self.namespace)
            if alive:
                wait_within(
                    f"namespace {self.namespace} to go",
                    lambda: (
                        self.namespace
                        not in {n.metadata.name for n in self.core.list_namespace().items}
                    ),
                    timeout=180,
                    every=1,
                )
        if self.operator is not None:
            self.operator.stop()
        for app in self.apps:
            if app.target == "docker":
                with contextlib.suppress(Exception):
                    remove_all(self.hosts, app.name)
                (self.traefik.dynamic_dir / f"{app.name}.yaml").unlink(missing_ok=True)


# ------------------------------------------------------------------ the summary


def summary(soak: Soak, args: argparse.Namespace, final: list[str], wall: float) -> bool:
    apps = {app.name: app for app in soak.apps}

    def app_of(deployment_name: str) -> App:
        return apps[deployment_name.rsplit("-", 1)[0]]

    ok = True
    print()
    print(
        f"chaos soak: seed {args.seed}, {len(soak.kills)} kills (SIGKILL), "
        f"{len(soak.apps)} Applications ({', '.join(args.strategies)} on "
        f"{', '.join(args.targets)}; {args.replicas} replicas / 3 Docker hosts each), "
        f"{wall / 60:.1f} min"
    )
    # Kills by phase and step: each kill cut into every rollout in flight.
    by_step: Counter[tuple[str, str, str, str]] = Counter()
    by_phase: Counter[str] = Counter()
    outside = []
    moved = 0
    for kill in soak.kills:
        if not any(pos.inside for pos in kill.after.values()):
            outside.append(kill.number)
        for name, pos in kill.before.items():
            app = app_of(name)
            step = "-" if pos.step is None else f"{pos.step + 1}/{pos.total} {pos.description}"
            by_step[(app.strategy, pos.phase or "-", step, app.target)] += 1
            by_phase[pos.phase or "-"] += 1
            if kill.after.get(name) != pos:
                moved += 1
    print(
        "\nrollouts interrupted by phase (status read just before each kill): "
        + ", ".join(f"{phase} {n}" for phase, n in by_phase.most_common())
    )
    print("by strategy, phase and step (kubernetes / docker):")
    rows: dict[tuple[str, str, str], dict[str, int]] = {}
    for (strategy, phase, step, target), n in by_step.items():
        rows.setdefault((strategy, phase, step), {})[target] = n
    order = {s: i for i, s in enumerate(STRATEGIES)}

    def step_number(step: str) -> int:
        head = step.split("/", 1)[0]
        return int(head) if head.isdigit() else 0

    for (strategy, phase, step), counts in sorted(
        rows.items(), key=lambda kv: (order[kv[0][0]], kv[0][1], step_number(kv[0][2]), kv[0][2])
    ):
        print(
            f"  {strategy:<10} {phase:<12} {step:<48} "
            f"{counts.get('kubernetes', 0):>3} / {counts.get('docker', 0):>3}"
        )
    if moved:
        print(f"  ({moved} of them moved on between that read and the kill)")
    if outside:
        ok = False
        print(f"KILLS WITH NOTHING IN FLIGHT: {outside}")
    # Outcomes and steps.
    outcomes: Counter[tuple[str, str]] = Counter()
    problems = []
    for app in soak.apps:
        for name, image, status in app.finished:
            kind = "bad" if is_bad(image) else "good"
            outcomes[(kind, status.get("phase") or "-")] += 1
            found = step_problems(status, image)
            for problem in found:
                problems.append(f"{name} ({app.short}, {image}): {problem}")
            if found:  # the whole status, to see what happened (the namespace is gone)
                dump = Path(f"/tmp/lockgate-chaos-{soak.namespace}/{name}.json")
                dump.write_text(json.dumps(status, indent=1))
                problems.append(f"  (its status: {dump})")
    total = sum(outcomes.values())
    print(
        f"\noutcomes: {total} rollouts: "
        + ", ".join(f"{kind} -> {phase} {n}" for (kind, phase), n in sorted(outcomes.items()))
    )
    print(f"steps: {len(problems)} problems (a step repeated or skipped, an unexpected end)")
    for problem in problems:
        print(f"  {problem}")
    ok = ok and not problems and not final
    for problem in final:
        print(f"  final state: {problem}")
    # Requests.
    count = failed_total = by_design = downtime_total = 0
    details = []
    longest: tuple[float, str, dict[str, Any]] = (0.0, "", {})
    for app in soak.apps:
        assert app.load is not None
        responses: list[Response] = app.load.responses
        count += len(responses)
        windows = []
        if app.strategy == "Recreate":
            for name, image, status in app.finished:
                window = recreate_downtime(status, soak.to_monotonic)
                if window is not None:
                    windows.append(window)
                    seconds = window[1] - window[0] - 4.0
                    if seconds > longest[0]:
                        longest = (seconds, f"{name}, {image}", status)
        unexpected = unexpected_failures(responses, BAD_VERSIONS, windows)
        designed = unexpected_failures(responses, (), windows)
        everything = unexpected_failures(responses)
        failed_total += len(unexpected)
        by_design += len(designed) - len(unexpected)
        downtime_total += len(everything) - len(designed)
        if unexpected:
            details.append(f"  {app.short}: {by_version(unexpected)}")
            details += [f"    {line}" for line in failure_context(soak, app, unexpected)]
    print(
        f"\nrequests: {count} through Traefik, {failed_total} failed "
        f"(besides: {by_design} 5xx answered by bad images by design, "
        f"{downtime_total} in Recreate's downtime by design)"
    )
    for line in details:
        print(line)
    if longest[0]:
        print(
            "longest Recreate downtime (start -> new or old version serving): "
            f"{longest[0]:.0f} s ({longest[1]})"
        )
        for line in downtime_story(soak, longest[2]):
            print(f"  {line}")
    ok = ok and failed_total == 0
    if soak.restarts:
        print(
            f"operator restart (kill -> healthy again): median {statistics.median(soak.restarts):.1f} s, "
            f"max {max(soak.restarts):.1f} s"
        )
    print(
        f"\nseed: {args.seed}  (repeat: python -m bench.chaos --seed {args.seed} --kills {args.kills})"
    )
    print(f"machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}")
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; verdict: {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=None, help="default: a random one (printed)")
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--replicas", type=int, default=3, help="per Kubernetes Application")
    parser.add_argument(
        "--gap",
        type=float,
        nargs=2,
        default=(3.0, 12.0),
        metavar=("MIN", "MAX"),
        help="seconds from a restart to the next kill, drawn from the seed",
    )
    parser.add_argument(
        "--request-pause", type=float, default=0.05, help="between one load thread's requests"
    )
    args = parser.parse_args()
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(2**32)
    args.targets = tuple(t for t in args.targets.split(",") if t)
    args.strategies = tuple(s for s in args.strategies.split(",") if s)
    assert set(args.targets) <= set(TARGETS) and set(args.strategies) <= set(STRATEGIES)
    print(f"seed {args.seed}", flush=True)
    rng = random.Random(args.seed)
    # SIGTERM ends the bench through its finally blocks, like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with suite_lock(), environment(args.targets):
        soak = Soak(args, rng)
        start = time.monotonic()
        final: list[str] = []
        try:
            soak.setup()
            try:
                soak.run()
                final = soak.final_state()
            except Exception as err:  # the summary of what happened so far still matters
                final = [f"the soak stopped: {type(err).__name__}: {err}"]
        finally:
            soak.teardown()
        ok = summary(soak, args, final, time.monotonic() - start)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
