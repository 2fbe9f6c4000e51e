"""Scale: N Applications, each with a canary in flight, on simulated Pods (figures, never
asserted). Results in docs/scale.md.

Needs hack/cluster, hack/traefik and hack/simnodes up (simulated Pods: Running and Ready
with an address, no process; Traefik loads their Services, so every weight is confirmed
through its API for real). Analysis reads a PromQL stub this benchmark serves on loopback
(deterministic: 100 requests, no errors, p95 50 ms for every version), named by each
Application's `metrics.prometheus.url`.

For each level N (cumulative: 100, 500, 1000 by default) in one namespace:
  setup      Applications up to N, each made stable with a Recreate Deployment (not measured)
  in flight  a canary Deployment for every one of the N (setWeight 10, pause, 30, pause, 60,
             pause, 100; pauses of --pause s, 20 by default; analysis every --analysis s, 30
             by default, gating each weight), created at --rate per s;
             once all are created and moving and a first pause has ended, one window of
             --window s measures:
             operator RSS, CPU seconds per minute, API requests per rollout step (lockgate's
             own client, from its metrics; and the apiserver's total, every client), and step
             latency: for each timed pause that ended in the window, how late the next step
             started after the pause's end (from the status log's timestamps)
  paused     spec.paused=true on all N (analysis keeps running): one window
  idle       the same with spec.analysis removed (a rollout paused indefinitely): one window
  reads      Traefik's CPU per request of each read a round makes of Traefik's API, and of
             the observer's look, sent one at a time while nothing else moves
  then       resumed: they finish while the next level sets up, whose canaries queue
             behind them (each Application's rollout lock).

The operator runs as `lockgate operator --namespace <ns>` (the namespace exists first), and
dies with this process however it ends (bench/operator.py).

Usage (under the suite's lock, see docs/scale.md):
    python -m bench.scale [--levels 100,500,1000] [--rate 10] [--window 60] [--pause 20]
                          [--analysis 30] [--in-flight-window S] [--out FILE]
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import re
import signal
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client

from bench.operator import exits_cleanly, running_operator
from tests.support.cluster import cluster_info, traefik_info
from tests.support.operator_fixtures import Operator, operator_env
from tests.support.rollouts import application, deployment

GROUP, VERSION = "lockgate.dev", "v1alpha1"
SIM = "lockgate.dev/simulated"
FIRST_PAUSE = 2  # the index of the canary's first pause in its status (start, setWeight 10)
# How long a wait for the fleet may take: 1,000 were stable in 568 to 665 s on most days,
# on a day the VM ran 4 times slower 78 after 15 min. A slow day's figures still say something.
WAIT_LIMIT = 2400


def canary(pause_s: int) -> dict[str, Any]:
    weights = [10, 30, 60, 100]
    steps: list[dict[str, Any]] = [{"setWeight": weights[0]}]
    for weight in weights[1:]:
        steps += [{"pause": {"seconds": pause_s}}, {"setWeight": weight}]
    return {"type": "Canary", "canary": {"steps": steps}}


# Only on the simulated Node: its taint keeps every other Pod away.
TEMPLATE = {
    "spec": {
        "nodeSelector": {SIM: "true"},
        "tolerations": [{"key": SIM, "operator": "Exists", "effect": "NoSchedule"}],
    }
}


# --- the PromQL stub ---------------------------------------------------------------------------


class PromStub:
    """Answers lockgate's two PromQL shapes with fixed figures: every version serves 100
    requests per window with no error, p95 50 ms (so every analysis passes)."""

    def __init__(self) -> None:
        class Handler(BaseHTTPRequestHandler):
            # Kept alive as a real Prometheus keeps them: with HTTP/1.0 every query was a
            # new connection, and opening and closing them was a tenth of the operator's
            # event loop's time at 1,000 in flight (py-spy, 2026-12-05).
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                query = httpx.URL(self.path).params.get("query", "")
                if "histogram_quantile" in query:
                    result = [{"metric": {}, "value": [time.time(), "0.05"]}]
                elif "requests_total" in query:
                    result = [{"metric": {"code": "200"}, "value": [time.time(), "100"]}]
                else:
                    result = []
                body = json.dumps(
                    {"status": "success", "data": {"resultType": "vector", "result": result}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> PromStub:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- measurements ------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / ticks


# The processes that share the machine with the operator (their /proc comm, 15 characters
# at most): where the cores go when the operator is not the one using them.
COMPONENTS = ("kube-apiserver", "etcd", "traefik", "kube-controller", "kube-scheduler")


def component_pids() -> dict[str, int]:
    found: dict[str, int] = {}
    for comm in glob.glob("/proc/[0-9]*/comm"):
        try:
            with open(comm) as f:
                name = f.read().strip()
        except OSError:
            continue  # gone since the listing
        if name in COMPONENTS:
            found.setdefault(name, int(comm.split("/")[2]))
    return found


def machine_ticks() -> tuple[int, int]:
    """(busy, all) CPU ticks of the whole machine since boot, over every core."""
    with open("/proc/stat") as stat:
        ticks = [int(t) for t in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return sum(ticks) - idle, sum(ticks)


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS")) / 1024


def metric_sum(text: str, name: str) -> float:
    """The sum of a counter's samples in a Prometheus text page."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


def apiserver_requests(api: client.ApiClient) -> float:
    method, url, headers, body, post = api.param_serialize(
        "GET", "/metrics", auth_settings=["BearerToken"]
    )
    response = api.call_api(method, url, headers, body, post)
    response.read()
    return metric_sum(response.data.decode(), "apiserver_request_total")


def operator_metrics(metrics_url: str) -> str:
    """The operator's metrics page (Prometheus text)."""
    return httpx.get(metrics_url, timeout=10).text


def operator_counters(text: str) -> tuple[float, float, float]:
    """(lockgate's own API requests, reconcile rounds, requests to Traefik's API) so far."""
    return (
        metric_sum(text, "lockgate_api_requests_total"),
        metric_sum(text, "lockgate_reconcile_seconds_count"),
        metric_sum(text, "lockgate_traefik_api_requests_total"),
    )


WAKEUP = re.compile(r'^lockgate_driver_wakeups_total\{by="([a-z_]+)"\} (\S+)$', re.M)


def driver_wakeups(text: str) -> dict[str, float]:
    """What started the Deployments' rounds so far, by reason (lockgate_driver_wakeups_total)."""
    return {by: float(value) for by, value in WAKEUP.findall(text)}


# What a round waits on, each a histogram of lockgate's: a turn, a look at Traefik, the API.
WAITS = {
    "turn": "lockgate_round_turn_seconds",
    "Traefik look": "lockgate_traefik_look_wait_seconds",
    "API request": "lockgate_api_request_seconds",
    "event loop lag": "lockgate_event_loop_lag_seconds",
}


def waits(text: str) -> dict[str, dict[float, float]]:
    """Each of WAITS' histograms so far: cumulative counts by bucket bound `le`."""
    found: dict[str, dict[float, float]] = {}
    for what, name in WAITS.items():
        bucket = re.compile(rf'^{name}_bucket\{{le="([^"]+)"\}} (\S+)$', re.M)
        found[what] = {float(le): float(n) for le, n in bucket.findall(text)}
    return found


def bucket_quantile(buckets: dict[float, float], q: float) -> float | None:
    """The upper bound of the bucket holding the q-quantile of cumulative `buckets`."""
    total = buckets.get(float("inf"), 0.0)
    if not total:
        return None
    return next(le for le, n in sorted(buckets.items()) if n >= q * total)


@dataclass
class Window:
    level: int
    state: str  # in-flight | paused | idle
    seconds: float
    rss_mib: float
    cpu_s_per_min: float
    cpu_share: float  # of one core
    rounds: float
    lockgate_requests: float
    apiserver_requests: float
    steps: int  # rollout steps completed in the window
    pause_latency_p50_ms: float | None
    pause_latency_p99_ms: float | None
    pause_latency_n: int
    pause_s: int = 20  # the length of each of the canary's pauses
    analysis_s: int = 30  # seconds between a rollout's analyses
    traefik_requests: float = 0.0  # lockgate's requests to Traefik's API
    wakeups: dict[str, float] = field(default_factory=dict)  # what started rounds, by reason
    components: dict[str, float] = field(default_factory=dict)  # CPU share of a core each
    machine_busy: float | None = None  # share of all the machine's cores in use
    # Per WAITS entry: the upper bounds of the buckets holding its p50 and p99 in the window
    waits: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)

    def line(self) -> str:
        per_step = (
            f"{self.lockgate_requests / self.steps:.1f} lockgate / "
            f"{self.apiserver_requests / self.steps:.1f} apiserver requests per step"
            if self.steps
            else f"{self.lockgate_requests / self.seconds * 60 / self.level:.2f} lockgate / "
            f"{self.apiserver_requests / self.seconds * 60 / self.level:.2f} apiserver "
            "requests per rollout per minute"
        )
        latency = (
            f", pause->next step p50 {self.pause_latency_p50_ms:.0f} ms "
            f"p99 {self.pause_latency_p99_ms:.0f} ms (n={self.pause_latency_n})"
            if self.pause_latency_n
            else ""
        )
        return (
            f"N={self.level:5d} {self.state:9s} RSS {self.rss_mib:4.0f} MiB, "
            f"CPU {self.cpu_s_per_min:5.1f} s/min ({self.cpu_share:.1%} of a core), "
            f"{self.rounds / self.seconds:.1f} rounds/s, {self.steps} steps, {per_step}, "
            f"{self.traefik_requests / self.seconds:.1f} Traefik API requests/s{latency}"
            + self.started_by()
            + self.waited()
            + self.machine()
        )

    def waited(self) -> str:
        def bound(p: float) -> str:
            return f"<= {p:g} s" if p != float("inf") else "above the last bucket"

        shown = [
            f"{what} p50 {bound(p50)}, p99 {bound(p99)}"
            for what, (p50, p99) in self.waits.items()
            if p50 is not None and p99 is not None
        ]
        return "; waits: " + "; ".join(shown) if shown else ""

    def machine(self) -> str:
        if self.machine_busy is None:
            return ""
        ranked = sorted(self.components.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{name} {share:.0%}" for name, share in ranked)
        return f"; machine {self.machine_busy:.0%} busy ({shown} of a core)"

    def started_by(self) -> str:
        ranked = sorted(self.wakeups.items(), key=lambda kv: -kv[1])
        shown = ", ".join(f"{by} {n / self.seconds:.1f}/s" for by, n in ranked if n)
        return f"; rounds started by: {shown}" if shown else ""


def through_overload(call: Callable[[], Any]) -> Any:
    """call(), again after a 5xx: at 1,000 in flight the API server answers the bench's own
    requests (a list of every Deployment above all) with 504 now and then, and a run of an
    hour should not end on one of them."""
    for delay in (1, 2, 4, 8, 16, 32):
        try:
            return call()
        except client.ApiException as err:
            if (err.status or 0) < 500:
                raise
            print(f"  the API server answered {err.status}; again in {delay} s")
            time.sleep(delay)
    return call()


class Bench:
    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        op: Operator,
        prom: str,
        traefik_api: str,
        pause_s: int,
        analysis_s: int,
    ) -> None:
        self.api = api
        self.traefik_api = traefik_api
        self.custom = client.CustomObjectsApi(api)
        self.namespace = namespace
        self.op = op
        self.prom = prom
        self.metrics_url = f"http://127.0.0.1:{op.env['LOCKGATE_METRICS_PORT']}/metrics"
        self.apps = 0
        self.generation = 1
        self.pool = ThreadPoolExecutor(8)
        self.latest_logs: Path | None = None  # where the in-flight windows' latest pauses go
        self.pause_s = pause_s
        self.analysis = {"intervalSeconds": analysis_s, "minRequests": 1, "maxErrorRate": 0.05}

    # -- objects --
    def create(self, plural: str, body: dict[str, Any]) -> None:
        body = {"apiVersion": f"{GROUP}/{VERSION}", **body}
        try:
            through_overload(
                lambda: self.custom.create_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, plural, body
                )
            )
        except client.ApiException as err:
            if err.status != 409:  # made by an earlier attempt whose answer was lost
                raise

    def patch(self, name: str, body: dict[str, Any]) -> None:
        through_overload(
            lambda: self.custom.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "deployments", name, body
            )
        )

    def paced(self, items: list[Any], rate: float, fn: Callable[[Any], None]) -> None:
        """fn(item) for each item, at most `rate` per second, a few at a time."""
        start = time.monotonic()
        futures = []
        for i, item in enumerate(items):
            due = start + i / rate
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            futures.append(self.pool.submit(fn, item))
        for future in futures:
            future.result()

    def application_uids(self, count: int) -> list[str]:
        return [
            through_overload(
                lambda i=i: self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, "applications", f"app{i}"
                )
            )["metadata"]["uid"]
            for i in range(count)
        ]

    def wait_quiet(self, what: str, quiet: float = 5.0) -> None:
        """Until the operator has run no round for `quiet` seconds: the rounds that follow a
        patch of all N are over (at 100, five seconds were not enough, and the idle window
        counted them)."""
        started = last_change = time.monotonic()
        rounds = operator_counters(operator_metrics(self.metrics_url))[1]
        while time.monotonic() - last_change < quiet:
            time.sleep(0.5)
            now = operator_counters(operator_metrics(self.metrics_url))[1]
            if now != rounds:
                rounds, last_change = now, time.monotonic()
            if time.monotonic() - started > 300:
                print(f"  {what}: rounds still running after 5 min (measured anyway)")
                return
        print(f"  {what}: no round for {quiet:.0f}s after {time.monotonic() - started:.0f}s")

    def keep_latest_logs(
        self,
        items: list[dict[str, Any]],
        names: set[str],
        start: datetime,
        end: datetime,
        level: int,
    ) -> None:
        """The status logs of the Deployments whose pauses ended latest in the window: what
        the p99 of `pause->next step` is made of, readable after the namespace is gone."""
        latest = sorted(
            ((max(late), d) for d in items if (late := steps_in([d], names, start, end)[1])),
            key=lambda pair: pair[0],
            reverse=True,
        )[:10]
        assert self.latest_logs is not None
        path = self.latest_logs.with_name(f"{self.latest_logs.name}.{level}.json")
        path.write_text(
            json.dumps(
                [
                    {"late_s": late, "name": d["metadata"]["name"], "log": d["status"]["log"]}
                    for late, d in latest
                ],
                indent=1,
            )
        )
        print(f"  logs of the {len(latest)} latest pauses: {path}")

    def deployments(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = through_overload(
            lambda: self.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.namespace, "deployments"
            )
        )["items"]
        return items

    def wait_any(self, names: set[str], done: Callable[[dict[str, Any]], bool], what: str) -> None:
        started = time.monotonic()
        while not any(d["metadata"]["name"] in names and done(d) for d in self.deployments()):
            if time.monotonic() - started > WAIT_LIMIT:
                raise TimeoutError(f"{what}: none after {WAIT_LIMIT // 60} min")
            time.sleep(5)
        print(f"  {what} after {time.monotonic() - started:.0f}s")

    def wait_all(self, names: set[str], done: Callable[[dict[str, Any]], bool], what: str) -> None:
        started = time.monotonic()
        last = -1
        while True:
            current = {d["metadata"]["name"]: d for d in self.deployments()}
            ok = sum(1 for n in names if n in current and done(current[n]))
            if ok == len(names):
                failed = sum(1 for n in names if phase(current[n]) in FINAL[1:])
                print(
                    f"  {what}: {ok}/{len(names)} after {time.monotonic() - started:.0f}s"
                    + (f" ({failed} failed or rolled back)" if failed else "")
                )
                return
            if ok != last and time.monotonic() - started > 30:
                print(f"  {what}: {ok}/{len(names)} after {time.monotonic() - started:.0f}s")
                last = ok
            if time.monotonic() - started > WAIT_LIMIT:
                raise TimeoutError(f"{what}: only {ok}/{len(names)} after {WAIT_LIMIT // 60} min")
            time.sleep(5)

    # -- the phases --
    def grow(self, level: int, rate: float) -> None:
        new = list(range(self.apps, level))
        if not new:
            return

        def make(i: int) -> None:
            self.create(
                "applications",
                application(
                    f"app{i}",
                    1,
                    namespace=self.namespace,
                    template=TEMPLATE,
                    metrics={"prometheus": {"url": self.prom}},
                ),
            )
            self.create(
                "deployments",
                deployment(f"app{i}-g1", f"app{i}", "demo:v1", progressDeadlineSeconds=900),
            )

        t0 = time.monotonic()
        self.paced(new, rate, make)
        print(f"  created {len(new)} Applications in {time.monotonic() - t0:.0f}s")
        self.wait_all({f"app{i}-g1" for i in new}, lambda d: phase(d) in FINAL, "stable versions")
        self.apps = level

    def roll(self, rate: float) -> list[str]:
        self.generation += 1
        g = self.generation
        names = [f"app{i}-g{g}" for i in range(self.apps)]

        def make(i: int) -> None:
            self.create(
                "deployments",
                deployment(
                    f"app{i}-g{g}",
                    f"app{i}",
                    f"demo:v{g}",
                    canary(self.pause_s),
                    analysis=self.analysis,
                    progressDeadlineSeconds=900,
                ),
            )

        t0 = time.monotonic()
        self.paced(list(range(self.apps)), rate, make)
        print(f"  created {len(names)} canary Deployments in {time.monotonic() - t0:.0f}s")
        return names

    def window(self, level: int, state: str, seconds: float, names: list[str]) -> Window:
        pid = self.op.process.pid if self.op.process else 0
        cpu0, page0 = cpu_seconds(pid), operator_metrics(self.metrics_url)
        req0, wake0, waits0 = operator_counters(page0), driver_wakeups(page0), waits(page0)
        api0 = apiserver_requests(self.api)
        pids = component_pids()
        others0 = {name: cpu_seconds(p) for name, p in pids.items()}
        busy0, all0 = machine_ticks()
        t0, wall0 = time.monotonic(), datetime.now(UTC)
        time.sleep(seconds)
        busy1, all1 = machine_ticks()
        others1 = {name: cpu_seconds(p) for name, p in pids.items()}
        cpu1, page1 = cpu_seconds(pid), operator_metrics(self.metrics_url)
        req1, wake1 = operator_counters(page1), driver_wakeups(page1)
        waited = {
            what: {le: n - waits0[what].get(le, 0.0) for le, n in buckets.items()}
            for what, buckets in waits(page1).items()
        }
        api1 = apiserver_requests(self.api)
        elapsed, wall1 = time.monotonic() - t0, datetime.now(UTC)
        rss = rss_mib(pid)
        items = self.deployments()
        steps, late = steps_in(items, set(names), wall0, wall1)
        if self.latest_logs is not None and state == "in-flight":
            self.keep_latest_logs(items, set(names), wall0, wall1, level)
        cpu = cpu1 - cpu0
        return Window(
            level=level,
            state=state,
            seconds=elapsed,
            rss_mib=rss,
            cpu_s_per_min=cpu / elapsed * 60,
            cpu_share=cpu / elapsed,
            rounds=req1[1] - req0[1],
            lockgate_requests=req1[0] - req0[0],
            apiserver_requests=api1 - api0,
            traefik_requests=req1[2] - req0[2],
            wakeups={by: n - wake0.get(by, 0.0) for by, n in wake1.items()},
            components={name: (others1[name] - others0[name]) / elapsed for name in pids},
            machine_busy=(busy1 - busy0) / (all1 - all0) if all1 > all0 else None,
            waits={
                what: (bucket_quantile(b, 0.5), bucket_quantile(b, 0.99))
                for what, b in waited.items()
            },
            steps=steps,
            pause_latency_p50_ms=statistics.median(late) * 1000 if late else None,
            pause_latency_p99_ms=percentile(late, 0.99) * 1000 if late else None,
            pause_latency_n=len(late),
            pause_s=self.pause_s,
            analysis_s=self.analysis["intervalSeconds"],
        )


FINAL = ("Succeeded", "RolledBack", "Failed", "Aborted")
STEP_DONE = re.compile(r"^step (\d+)/(\d+) done: (.*)$")


def steps_in(
    items: list[dict[str, Any]], names: set[str], start: datetime, end: datetime
) -> tuple[int, list[float]]:
    """Steps completed in [start, end] by the named Deployments, and for each timed pause
    completed then: seconds between the pause's end and the step's completion."""
    count = 0
    late: list[float] = []
    for d in items:
        if d["metadata"]["name"] not in names:
            continue
        done: dict[int, tuple[datetime, str]] = {}
        for entry in (d.get("status") or {}).get("log") or []:
            m = STEP_DONE.match(entry.get("message", ""))
            if m:
                done[int(m[1])] = (datetime.fromisoformat(entry["at"]), m[3])
        for index, (at, description) in done.items():
            if not start <= at <= end:
                continue
            count += 1
            pause = re.match(r"pause (\d+)s", description)
            if pause and index - 1 in done:
                began = done[index - 1][0]
                late.append((at - began).total_seconds() - int(pause[1]))
    return count, late


def phase(d: dict[str, Any]) -> str | None:
    value: str | None = (d.get("status") or {}).get("phase")
    return value


def step_index(d: dict[str, Any]) -> int:
    return int(((d.get("status") or {}).get("step") or {}).get("index") or 0)


def memory_report(bench: Bench, prefix: str, seconds: float = 300) -> None:
    """Ask the operator (started with bench/memtrace on its PYTHONPATH) what it retains: its
    report names the live Kubernetes bodies by kind and by what refers to them."""
    pid = bench.op.process.pid if bench.op.process else 0
    before = set(Path(prefix).parent.glob(f"{Path(prefix).name}.{pid}.*"))
    os.kill(pid, signal.SIGUSR2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = {
            p
            for p in Path(prefix).parent.glob(f"{Path(prefix).name}.{pid}.*")
            if p.suffix not in (".tmp", ".json")
        } - before
        if new:
            print(f"  memory report: {', '.join(str(p) for p in new)}", flush=True)
            return
        time.sleep(1)
    print("  memory report: none written", flush=True)


def traefik_read_costs(api_url: str, namespace: str, level: int, uids: list[str]) -> str:
    """Traefik's CPU per request, and the median wall time, of each read a round makes of its
    API and of the observer's look, sent one at a time while nothing else moves (after the
    idle window): which of them grow with the Applications Traefik holds. Traefik's own
    background (its watches) is measured over 2 s just before and taken off."""
    pid = component_pids().get("traefik")
    if pid is None:
        return "Traefik's process not found"
    base = api_url.rstrip("/")
    apps = [f"app{i}" for i in range(min(level, len(uids), 40))]
    kinds: dict[str, list[tuple[str, dict[str, str]]]] = {
        "weighted service (by name)": [
            (f"/api/http/services/{namespace}-{a}@kubernetescrd", {}) for a in apps
        ],
        "probe routers (search=uid)": [("/api/http/routers", {"search": u}) for u in uids],
        "probe services (search=name)": [
            ("/api/http/services", {"search": f"{namespace}-{a}-lockgate-probe"}) for a in apps
        ],
        "routers to a service (serviceName=)": [
            (
                "/api/http/routers",
                {"serviceName": f"{namespace}-{a}@kubernetescrd", "status": "enabled"},
            )
            for a in apps
        ],
    }
    # Traefik's CPU counts in ticks of 10 ms: enough requests of each kind to span many.
    kinds = {kind: requests * 5 for kind, requests in kinds.items()}
    kinds["observer's look (/api/rawdata)"] = [("/api/rawdata", {})] * 20
    out = []
    with httpx.Client(timeout=30) as http:
        for kind, requests in kinds.items():
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            time.sleep(2.0)
            background = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
            walls = []
            t0, c0 = time.monotonic(), cpu_seconds(pid)
            for path, params in requests:
                started = time.monotonic()
                http.get(base + path, params=params).raise_for_status()
                walls.append(time.monotonic() - started)
            cpu = cpu_seconds(pid) - c0 - background * (time.monotonic() - t0)
            out.append(
                f"{kind}: {max(cpu, 0.0) / len(requests) * 1000:.1f} ms CPU, "
                f"{statistics.median(walls) * 1000:.1f} ms"
            )
    return f"Traefik per request at N={level}: " + "; ".join(out)


def run(
    bench: Bench,
    levels: list[int],
    rate: float,
    seconds: float,
    out: Path,
    report: str | None = None,
    in_flight_seconds: float | None = None,
) -> None:
    bench.latest_logs = out
    for level in levels:
        print(f"level {level}: {datetime.now(UTC):%H:%M:%S}")
        bench.grow(level, rate)
        names = bench.roll(rate)
        # Moving: every one has started its canary (past step 1) and none has finished.
        bench.wait_all(
            set(names),
            lambda d: step_index(d) >= 1 or phase(d) in FINAL,
            "canaries past their first step",
        )
        # With long pauses nothing ends in a window right after that: it starts once the
        # first pause has ended, with the others ending at the pace they were created.
        bench.wait_any(
            set(names),
            lambda d: step_index(d) > FIRST_PAUSE or phase(d) in FINAL,
            "a first pause ended",
        )
        results = [bench.window(level, "in-flight", in_flight_seconds or seconds, names)]
        print("  " + results[-1].line(), flush=True)
        if report:  # what rounds in progress hold (the later windows' RSS includes the probe's)
            memory_report(bench, report)
        bench.paced(names, rate * 5, lambda n: bench.patch(n, {"spec": {"paused": True}}))
        bench.wait_all(set(names), lambda d: phase(d) in ("Paused", *FINAL), "paused")
        # The rounds that follow the patch are over by the next analysis.
        time.sleep(bench.analysis["intervalSeconds"])
        results.append(bench.window(level, "paused", seconds, names))
        print("  " + results[-1].line(), flush=True)
        bench.paced(names, rate * 5, lambda n: bench.patch(n, {"spec": {"analysis": None}}))
        bench.wait_quiet("idle")
        results.append(bench.window(level, "idle", seconds, names))
        print("  " + results[-1].line(), flush=True)
        with out.open("a") as f:
            for r in results:
                f.write(json.dumps({"at": datetime.now(UTC).isoformat(), **asdict(r)}) + "\n")
        uids = bench.application_uids(min(level, 40))
        try:
            print("  " + traefik_read_costs(bench.traefik_api, bench.namespace, level, uids))
        except httpx.HTTPError as err:
            print(f"  Traefik per request: not measured ({err})")
        if report:
            memory_report(bench, report)
        # Resumed: they finish while the next level sets up (its canaries queue behind them).
        bench.paced(names, rate * 5, lambda n: bench.patch(n, {"spec": {"paused": False}}))


@contextlib.contextmanager
def namespace(api: client.ApiClient, bench_ns: str) -> Iterator[None]:
    core = client.CoreV1Api(api)
    core.create_namespace({"metadata": {"name": bench_ns}})
    try:
        yield
    finally:
        print(f"deleting namespace {bench_ns}")
        custom = client.CustomObjectsApi(api)
        # The operator is stopped: its finalizers go by hand, or the namespace never would.
        with ThreadPoolExecutor(8) as pool:
            for plural in ("deployments", "applications"):
                items = through_overload(
                    lambda p=plural: custom.list_namespaced_custom_object(
                        GROUP, VERSION, bench_ns, p
                    )
                )
                names = [i["metadata"]["name"] for i in items["items"]]
                list(
                    pool.map(
                        lambda n, p=plural: through_overload(
                            lambda: custom.patch_namespaced_custom_object(
                                GROUP, VERSION, bench_ns, p, n, {"metadata": {"finalizers": None}}
                            )
                        ),
                        names,
                    )
                )
        core.delete_namespace(bench_ns)
        print(f"namespace {bench_ns} " + ("gone" if gone(core, bench_ns) else "still terminating"))


def gone(core: client.CoreV1Api, name: str, seconds: int = 180) -> bool:
    """Whether the namespace is gone within `seconds` (else the namespace controller finishes
    it: hack/simnodes down deletes the Node, and the Pods bound to it go with it)."""
    for _ in range(seconds):
        try:
            core.read_namespace(name)
        except client.ApiException as err:
            if err.status == 404:
                return True
        time.sleep(1)
    return False


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--levels", default="100,500,1000")
    parser.add_argument("--rate", type=float, default=10.0, help="objects created per second")
    parser.add_argument("--window", type=float, default=60.0, help="seconds per measurement")
    parser.add_argument(
        "--in-flight-window",
        type=float,
        help="seconds of the in-flight window (default: --window): with pauses of minutes, "
        "long enough for most rollouts' first pause to end in it",
    )
    parser.add_argument(
        "--pause",
        type=int,
        default=20,
        help="seconds of each of the canary's three pauses: with the rollouts' analyses, "
        "what sets how many steps a second N rollouts in flight ask for",
    )
    parser.add_argument(
        "--analysis",
        type=int,
        default=30,
        help="seconds between a rollout's analyses (30: the API's default)",
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/lockgate-scale.jsonl"))
    parser.add_argument(
        "--memory-report",
        metavar="PREFIX",
        help="after each level's in-flight and idle windows, the operator writes what it "
        "retains to PREFIX.<pid>.<time> (bench/memtrace; the RSS of the paused and idle "
        "windows then includes what the probe allocated)",
    )
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    cluster, traefik = cluster_info(), traefik_info()
    api = cluster.api_client()
    bench_ns = f"scale-{uuid.uuid4().hex[:6]}"
    print(f"bench/scale: namespace {bench_ns}, levels {levels}, results in {args.out}")
    with exits_cleanly(), PromStub() as prom, namespace(api, bench_ns):
        env = operator_env(cluster, traefik)
        if args.memory_report:
            env |= {
                "PYTHONPATH": str(Path(__file__).with_name("memtrace")),
                "MEMTRACE": "0",
                "MEMTRACE_OUT": args.memory_report,
            }
        with running_operator(env, bench_ns) as op:
            bench = Bench(api, bench_ns, op, prom.url, traefik.api_url, args.pause, args.analysis)
            run(
                bench,
                levels,
                args.rate,
                args.window,
                args.out,
                args.memory_report,
                args.in_flight_window,
            )


if __name__ == "__main__":
    main()
