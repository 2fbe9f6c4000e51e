"""Docker Swarm's rolling update on one host, beside lockgate's host swap (figures, never asserted).

bench.docker_swap times lockgate replacing the containers of one Docker host: start the new
release, wait until it answers /health, put it in Traefik, drain and remove the old one. This
benchmark times what Docker Swarm does for the same job on its own, on host1 of
`hack/dockerhosts` (its unix socket only): `docker service update --image ...
--update-order start-first --update-parallelism 1`, and the same update through docker-py
(`Service.update(image=..., update_config=UpdateConfig(parallelism=1, order="start-first"))`).
host1 is made a one-node swarm (`swarm init --advertise-addr <host1>`) for the run and leaves
it in a `finally`; every update flips a service between demo:v1 and demo:v2.

Columns, in seconds since the update command began (median [min-max] over --runs):

  returned     the CLI process exited (with --detach) / docker-py's update() returned
  new running  every replica is a task of the new spec in state "running". With health gating
               (the default) swarm reports a task running only once its container is healthy,
               so this is lockgate's "healthy"
  old stopped  every task that ran before the update has stopped (swarm keeps the stopped
               container as task history; lockgate removes it): compare with docker_swap's
               "removed" column
  completed    the service's UpdateStatus is "completed": swarm declares success only after
               watching the new tasks for the update monitor period (5 s unless --update-monitor)

Reading them: "old stopped" minus "new running" is swarm's own hand-over. On the development
machine it was ~1.3 s with the old container's SIGTERM arriving ~1.2 s after the new task ran
(the demo app exits within milliseconds), and 2 s more through the routing mesh, where the agent
takes the task out of the load balancer and waits a fixed gossip delay before stopping it. With
--update-parallelism 1 the 3 replicas go one after another; docker_swap's "batch of 3" swaps
three hosts in parallel, so set it beside three one-host swaps, not beside that batch.

Health gating on a FROM scratch image: the demo image has no shell and no curl, so a
`--health-cmd "curl ..."` (CMD-SHELL) cannot run in it. An exec-form healthcheck can: a static
probe (a few lines of Go, built once into $LOCKGATE_CACHE/tools) is bind-mounted read-only at
/probe and run as ["CMD", "/probe", "http://127.0.0.1:8080/health"] every --health-interval
(0.2 s, the interval the tests' wait_healthy polls at). Without Go, or with --no-health, the
services have no healthcheck and swarm counts a task running as soon as its process started.

Ports, and why the table has two kinds of service: start-first on one node needs the old and
the new task to serve at once. Through the ingress routing mesh they could share the published
port, but the mesh is IPVS, and where the kernel has no IPVS (as in hack/dockerhosts' network
namespaces on a kernel without ip_vs) the published port refuses connections. So:
  - start-first services publish 8080 in host mode on a port dockerd picks per task: timings
    only, there is no fixed address to send load to;
  - one service publishes a fixed host port (host mode) and is updated stop-first, the only
    order that can work with a fixed host port on one node; a load loop (--rate req/s) counts
    the requests that fail meanwhile ("outage": first to last failure);
  - at the end the fixed-port service is updated start-first once, to show what swarm does:
    the new task stays Pending ("host-mode port already in use") and the update never ends;
  - with IPVS available (or --ingress), one more start-first service publishes a fixed port
    through the routing mesh, with the load loop on it.

Every task start also tries to pull its image first (dockerd does so for a tag, whatever
--no-resolve-image says); with no route out here that attempt fails at once and the local
image is used. The window in swarm mode is printed; other users of host1 keep running meanwhile.

Usage: python -m bench.docker_swarm [--runs 5] [--rate 80] [--update-monitor SECONDS]
           [--health-interval 0.2] [--no-health] [--ingress] [--stall-wait 10]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from docker.errors import APIError, NotFound
from docker.types import EndpointSpec, Healthcheck, Mount, ServiceMode, UpdateConfig

from tests.support.dockerhosts import DockerHost, load_hosts, local_client

HOST = "host1"
CACHE = Path(os.environ.get("LOCKGATE_CACHE", Path.home() / ".cache" / "lockgate"))
SERVICE_LABEL = "dev.lockgate.bench"
PHASES = ("returned", "new running", "old stopped", "completed")
TERMINAL = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})
POLL_S = 0.025
NS = 1_000_000_000

PROBE_GO = """\
// A health probe for FROM scratch images: exit 0 when the URL answers 2xx within 2 s.
package main

import (
	"net/http"
	"os"
	"time"
)

func main() {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(os.Args[1])
	if err != nil || resp.StatusCode/100 != 2 {
		os.Exit(1)
	}
}
"""


def probe_binary() -> Path | None:
    """The static probe, built once per source and Go version; None without Go."""
    go = shutil.which("go")
    if go is None:
        return None
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True).stdout
    digest = hashlib.sha256((PROBE_GO + version).encode()).hexdigest()[:16]
    out = CACHE / "tools" / f"swarm-probe-{digest}" / "probe"
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as src:
        Path(src, "main.go").write_text(PROBE_GO)
        Path(src, "go.mod").write_text("module probe\n\ngo 1.21\n")
        tmp = out.with_suffix(".tmp")
        # CGO off: a static binary that runs in a FROM scratch container; never download a Go.
        env = {**os.environ, "CGO_ENABLED": "0", "GOTOOLCHAIN": "local"}
        subprocess.run(
            [go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), "."],
            cwd=src,
            env=env,
            check=True,
            capture_output=True,
        )
    tmp.replace(out)  # atomic: a concurrent run never mounts half a binary
    return out


def ipvs_available() -> bool:
    return Path("/proc/sys/net/ipv4/vs").exists()


class Load:
    """Paced GETs against one URL in a thread; answers by status, errors by exception name."""

    def __init__(self, url: str, rate: float) -> None:
        self.url = url
        self.period = 1 / rate
        self.counts: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.failed_at: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        with httpx.Client(timeout=2) as http:
            next_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    resp = http.get(self.url)
                    key, ok = str(resp.status_code), resp.is_success
                    if ok:
                        self.versions[resp.headers.get("X-Version", "?")] += 1
                except httpx.HTTPError as exc:
                    key, ok = type(exc).__name__, False
                self.counts[key] += 1
                if not ok:
                    self.failed_at.append(time.monotonic())
                next_at += self.period
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)
                else:  # behind (a slow answer): carry on at the rate, no burst to catch up
                    next_at = time.monotonic()

    @property
    def failed(self) -> Counter[str]:
        return Counter({k: v for k, v in self.counts.items() if not k.startswith("2")})

    @property
    def outage(self) -> float:
        if not self.failed_at:
            return 0.0
        return self.failed_at[-1] - self.failed_at[0] + self.period

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Service:
    key: str  # short label in the table
    name: str
    replicas: int
    order: str  # the update order measured: start-first | stop-first
    fixed_port: bool = False  # one published port for the load loop, else one per task
    ingress: bool = False
    port: int | None = None  # the fixed port, once chosen
    image: str = "demo:v1"  # what it runs now

    def flip(self) -> str:
        """The image of the next update: v1 <-> v2, so every update changes the spec."""
        self.image = "demo:v2" if self.image == "demo:v1" else "demo:v1"
        return self.image

    @property
    def methods(self) -> tuple[str, ...]:
        # docker-py is timed for start-first, the order compared with lockgate's swap.
        return ("CLI", "docker-py") if self.order == "start-first" else ("CLI",)


@dataclass
class Result:
    phases: dict[str, float]
    requests: int | None = None
    failed: Counter[str] = field(default_factory=Counter)
    outage: float | None = None


class Swarm:
    def __init__(self, host: DockerHost, args: argparse.Namespace) -> None:
        self.host = host
        self.args = args
        self.client = local_client(host)
        self.api: Any = self.client.api
        self.run_id = uuid.uuid4().hex[:6]
        self.services: list[Service] = []
        self.docker_cli = shutil.which("docker")
        self.probe = None if args.no_health else probe_binary()

    # --- setup ---------------------------------------------------------------------------------

    def free_port(self) -> int:
        """A port nothing on host1 answers on, below the range dockerd hands out itself."""
        taken = {
            p["PublicPort"]
            for c in self.api.containers()
            for p in c.get("Ports") or []
            if p.get("PublicPort")
        }
        for _ in range(100):
            port = random.randint(20000, 29999)
            if port in taken:
                continue
            with socket.socket() as s:
                s.settimeout(1)
                if s.connect_ex((self.host.address, port)) != 0:
                    return port
        raise RuntimeError("no free port on host1 in 20000-29999")

    def update_config(self, order: str) -> UpdateConfig:
        # docker-py's own default failure_action is "continue"; swarm's (and the CLI's) is
        # "pause": spelled out so both methods update with the same config.
        monitor = self.args.update_monitor
        return UpdateConfig(
            parallelism=1,
            order=order,
            failure_action="pause",
            monitor=None if monitor is None else int(monitor * NS),
        )

    def create(self, service: Service) -> None:
        port: dict[str, Any] = {
            "Protocol": "tcp",
            "TargetPort": 8080,
            "PublishMode": "ingress" if service.ingress else "host",
        }
        if service.port is not None:
            port["PublishedPort"] = service.port
        extra: dict[str, Any] = {}
        if self.probe is not None:
            interval = int(self.args.health_interval * NS)
            extra["healthcheck"] = Healthcheck(
                test=["CMD", "/probe", "http://127.0.0.1:8080/health"],
                interval=interval,
                timeout=2 * NS,
                retries=3,
                start_period=0,
            )
            extra["mounts"] = [
                Mount(target="/probe", source=str(self.probe), type="bind", read_only=True)
            ]
        self.client.services.create(
            "demo:v1",
            name=service.name,
            mode=ServiceMode("replicated", replicas=service.replicas),
            endpoint_spec=EndpointSpec(ports=[port]),
            update_config=self.update_config(service.order),
            labels={SERVICE_LABEL: self.run_id},
            **extra,
        )
        self.services.append(service)

    def wait_ready(self, service: Service, within: float = 60) -> None:
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            running = [
                t
                for t in self.api.tasks(filters={"service": service.name})
                if t["DesiredState"] == "running" and t["Status"]["State"] == "running"
            ]
            # Without IPVS a mesh port never answers: --ingress then measures timings only.
            answers = (
                service.port is None
                or (service.ingress and not ipvs_available())
                or self.answers(service.port)
            )
            if len(running) >= service.replicas and answers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"{service.name}: not running within {within:.0f} s")

    def answers(self, port: int) -> bool:
        try:
            return httpx.get(f"http://{self.host.address}:{port}/", timeout=1).is_success
        except httpx.HTTPError:
            return False

    # --- one update ----------------------------------------------------------------------------

    def command(self, service: Service, method: str, image: str, order: str) -> Callable[[], None]:
        if method == "CLI":
            assert self.docker_cli is not None
            argv = [
                self.docker_cli,
                "-H",
                f"unix://{self.host.socket}",
                "service",
                "update",
                "--detach",
                "--no-resolve-image",
                "--image",
                image,
                "--update-order",
                order,
                "--update-parallelism",
                "1",
                service.name,
            ]

            def cli() -> None:
                done = subprocess.run(argv, capture_output=True, text=True)
                if done.returncode != 0:
                    raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")

            return cli

        def docker_py() -> None:
            # The service object carries the spec version the update must name.
            svc = self.client.services.get(service.name)
            svc.update(image=image, update_config=self.update_config(order))

        return docker_py

    def update(self, service: Service, method: str) -> Result:
        order = service.order
        before = self.api.tasks(filters={"service": service.name})
        old = {t["ID"] for t in before if t["Status"]["State"] not in TERMINAL}
        known = {t["ID"] for t in before}
        started_at = (self.api.inspect_service(service.name).get("UpdateStatus") or {}).get(
            "StartedAt"
        )
        image = service.flip()
        run = self.command(service, method, image, order)
        errors: list[BaseException] = []
        returned: list[float] = []

        def issue() -> None:
            try:
                run()
            except BaseException as exc:  # re-raised in the measuring thread
                errors.append(exc)
            returned.append(time.monotonic())

        load = (
            Load(f"http://{self.host.address}:{service.port}/", self.args.rate)
            if service.port is not None
            else None
        )
        phases: dict[str, float] = {}
        with load or nullcontext():
            began = time.monotonic()
            thread = threading.Thread(target=issue, daemon=True)
            thread.start()
            deadline = began + self.args.timeout
            while len(phases) < len(PHASES):
                if errors:
                    raise errors[0]
                if returned and "returned" not in phases:
                    phases["returned"] = returned[0] - began
                tasks = self.api.tasks(filters={"service": service.name})
                now = time.monotonic()
                states = {t["ID"]: t["Status"]["State"] for t in tasks}
                new_running = sum(
                    1
                    for t in tasks
                    if t["ID"] not in known
                    and t["DesiredState"] == "running"
                    and t["Status"]["State"] == "running"
                )
                if "new running" not in phases and new_running >= service.replicas:
                    phases["new running"] = now - began
                if "old stopped" not in phases and all(
                    states.get(i, "remove") in TERMINAL for i in old
                ):
                    phases["old stopped"] = now - began
                status = self.api.inspect_service(service.name).get("UpdateStatus") or {}
                now = time.monotonic()
                # Until StartedAt changes, the status is the previous update's.
                if status.get("StartedAt") != started_at:
                    if status.get("State") == "completed":
                        phases.setdefault("completed", now - began)
                    elif status.get("State") in ("paused", "rollback_started", "rollback_paused"):
                        raise RuntimeError(f"{service.name}: update {status}")
                if now > deadline:
                    raise RuntimeError(
                        f"{service.name}: {method} update to {image} not done within "
                        f"{self.args.timeout:.0f} s; seen {phases}, update {status}"
                    )
                time.sleep(POLL_S)
            thread.join()
        if load is None:
            return Result(phases)
        return Result(phases, sum(load.counts.values()), load.failed, load.outage)

    def stall(self, service: Service) -> str:
        """Updates a fixed-host-port service start-first and reports what swarm does."""
        before = {t["ID"] for t in self.api.tasks(filters={"service": service.name})}
        assert service.port is not None
        with Load(f"http://{self.host.address}:{service.port}/", self.args.rate) as load:
            self.command(service, "CLI", service.flip(), "start-first")()
            time.sleep(self.args.stall_wait)
        tasks = self.api.tasks(filters={"service": service.name})
        new = [t for t in tasks if t["ID"] not in before]
        old = [t for t in tasks if t["ID"] in before and t["DesiredState"] == "running"]
        status = self.api.inspect_service(service.name).get("UpdateStatus") or {}
        new_desc = ", ".join(
            f"{t['Status']['State']} ({t['Status'].get('Err') or t['Status'].get('Message')})"
            for t in new
        )
        old_desc = ", ".join(t["Status"]["State"] for t in old) or "none"
        return (
            f"after {self.args.stall_wait:g} s the update is {status.get('State')!r}; "
            f"new task: {new_desc or 'none'}; old task: {old_desc}; "
            f"{sum(load.counts.values())} requests, failed: {dict(load.failed) or 0}, "
            f"answered by {dict(load.versions)}"
        )

    # --- cleanup -------------------------------------------------------------------------------

    def cleanup(self, gwbridge_was_there: bool) -> list[str]:
        """Back to a plain daemon, touching only what this run made; returns what was left."""
        left: list[str] = []
        names = {s.name for s in self.services}
        try:
            for svc in self.client.services.list(
                filters={"label": f"{SERVICE_LABEL}={self.run_id}"}
            ):
                names.add(svc.name)
                svc.remove()
            # The agent stops the tasks' containers after the service is gone: let it, so the
            # swarm is left with nothing of ours in flight.
            deadline = time.monotonic() + 20
            while names and time.monotonic() < deadline and self._our_containers(names):
                time.sleep(0.2)
        finally:
            try:
                # Only a swarm this run made: init may have failed before it existed.
                if self.client.info()["Swarm"]["LocalNodeState"] != "inactive":
                    self.client.swarm.leave(force=True)
            finally:
                for c in self._our_containers(names):
                    try:
                        self.api.remove_container(c["Id"], force=True)
                        left.append(f"container {c['Names'][0]} removed by force")
                    except NotFound:
                        pass
                if not gwbridge_was_there:
                    for net in self.client.networks.list(names=["docker_gwbridge"]):
                        try:
                            net.remove()
                        except APIError as exc:
                            left.append(f"docker_gwbridge kept: {exc.explanation}")
                self.client.close()
        return left

    def _our_containers(self, names: set[str]) -> list[dict[str, Any]]:
        # The summary list, not containers.list(): that inspects each container and fails on
        # one the agent removes meanwhile.
        return [
            c
            for c in self.api.containers(
                all=True, filters={"label": "com.docker.swarm.service.name"}
            )
            if (c.get("Labels") or {}).get("com.docker.swarm.service.name") in names
        ]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"


def run(args: argparse.Namespace) -> None:
    host = next(h for h in load_hosts() if h.name == HOST)
    swarm = Swarm(host, args)
    info = swarm.client.info()
    if info["Swarm"]["LocalNodeState"] != "inactive":
        raise SystemExit(
            f"{HOST} is already in a swarm ({info['Swarm']['LocalNodeState']}): "
            "not ours, left alone"
        )
    gwbridge_was_there = bool(swarm.client.networks.list(names=["docker_gwbridge"]))
    ingress = args.ingress or ipvs_available()
    prefix = f"lgswarm-{swarm.run_id}"
    wanted = [
        Service("start-first 1 replica", f"{prefix}-s1", 1, "start-first"),
        Service("start-first 3 replicas", f"{prefix}-s3", 3, "start-first"),
        Service("stop-first 1 replica, fixed port", f"{prefix}-f1", 1, "stop-first", True),
    ]
    if ingress:
        wanted.append(
            Service("start-first 1 replica, ingress", f"{prefix}-i1", 1, "start-first", True, True)
        )
    no_cli = swarm.docker_cli is None
    results: dict[str, list[Result]] = {}
    stall_note = ""
    began = time.monotonic()
    left: list[str] = []
    try:
        swarm.client.swarm.init(advertise_addr=host.address)
        for service in wanted:
            if service.fixed_port:
                service.port = swarm.free_port()
            swarm.create(service)
        for service in wanted:
            swarm.wait_ready(service)
        for _ in range(args.runs):
            for service in wanted:
                for method in service.methods:
                    if method == "CLI" and no_cli:
                        continue
                    result = swarm.update(service, method)
                    results.setdefault(f"{service.key}, {method}", []).append(result)
        if args.stall_wait > 0 and not no_cli:
            stall_note = swarm.stall(next(s for s in wanted if s.fixed_port and not s.ingress))
    finally:
        left = swarm.cleanup(gwbridge_was_there)
        in_swarm = time.monotonic() - began

    gating = (
        f"health-gated (exec probe every {args.health_interval:g} s)"
        if swarm.probe is not None
        else "NOT health-gated (no healthcheck: running = process started)"
    )
    monitor = "swarm's default 5 s" if args.update_monitor is None else f"{args.update_monitor:g} s"
    print(
        f"Docker Swarm rolling updates on {HOST} (dockerd {info['ServerVersion']}), {args.runs} "
        f"runs (v1 <-> v2 alternately), parallelism 1, {gating}, update monitor {monitor}; "
        f"seconds since the update command, median [min-max], polled every {POLL_S * 1000:.0f} ms"
    )
    width = max((len(k) for k in results), default=10) + 2
    print(f"{'update':<{width}}" + "".join(f"{p:>22}" for p in PHASES) + "  requests  failed")
    for key, rs in results.items():
        cells = "".join(f"{spread([r.phases[p] for r in rs]):>22}" for p in PHASES)
        if rs[0].requests is None:
            load = "         -  - (no fixed address)"
        else:
            requests = sum(r.requests or 0 for r in rs)
            failed = sum((r.failed for r in rs), Counter[str]())
            outages = [r.outage or 0.0 for r in rs]
            load = (
                f"{requests:>10}  {sum(failed.values())} {dict(failed) or ''}"
                f" outage {spread(outages)}"
            )
        print(f"{key:<{width}}{cells}{load}")
    if no_cli:
        print("docker CLI not found: CLI updates skipped")
    if not ingress:
        print(
            "ingress routing mesh: not measured (no IPVS in this kernel: a port published "
            "through the mesh refuses connections); start-first with a fixed port needs it"
        )
    if stall_note:
        print(f"start-first on the fixed host port: {stall_note}")
    print(f"{HOST} was in swarm mode for {in_swarm:.1f} s; left the swarm, back to a plain daemon")
    for item in left:
        print(f"cleanup: {item}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--rate", type=float, default=80, help="load, requests per second")
    parser.add_argument(
        "--update-monitor",
        type=float,
        default=None,
        help="seconds swarm watches new tasks before 'completed' (default: swarm's 5 s)",
    )
    parser.add_argument("--health-interval", type=float, default=0.2)
    parser.add_argument("--no-health", action="store_true", help="no healthcheck at all")
    parser.add_argument(
        "--ingress", action="store_true", help="measure the routing mesh even without IPVS"
    )
    parser.add_argument(
        "--stall-wait",
        type=float,
        default=10,
        help="seconds to watch start-first on a fixed host port (0: skip)",
    )
    parser.add_argument("--timeout", type=float, default=60, help="per update")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
