"""A small "process kubelet" for tests: one Node whose Pods run as local processes.

The local control plane has no kubelet, so nothing would run the Pods that ReplicaSets create.
This module registers a Node, watches the Pods the real kube-scheduler binds to it, and runs
each Pod's first container as a process:

- image whose repository's last path segment is `demo` (demo:v2, reg.example/shop/demo:v1)
  -> the demo-app binary (hack/build-demo-app) with DEMO_IMAGE=<image> and the container's env;
  any other image -> Waiting ErrImagePull / ImagePullBackOff, never Running;
- networking as a bridge CNI plugin does it: every Pod gets its own network namespace and a
  veth pair into the bridge `lg-pods` (10.244.0.1/16) in the root namespace, and an address
  from the Node's podCIDR. EndpointSlices refuse loopback addresses, so 127.x would not do.
  No default route and no NAT: a Pod reaches only the bridge's subnet, all on this machine;
- readiness and liveness probes (httpGet, tcpSocket), restart with back-off (restartPolicy),
  graceful deletion (not ready at once, preStop sleep, SIGTERM, grace period, SIGKILL, then
  delete with grace 0), and a truthful Pod status;
- a Lease in kube-node-lease and Node status heartbeats, so the node-lifecycle controller
  keeps the Node Ready;
- the kubelet's resource metrics endpoint `/metrics/resource` over HTTPS on the bridge
  address (`--metrics-port`, advertised as the Node's daemonEndpoints.kubeletEndpoint), with
  each Pod's real CPU time and resident memory read from /proc (its whole process tree), as
  metrics-server scrapes it.

    python -m hack.tools.kubelet --kubeconfig KUBECONFIG --node NAME [--demo-app PATH]
        [--metrics-port PORT --tls-cert CRT --tls-key KEY]

hack/kubelet starts and stops it in the background; tests use tests/support/kubelet_fixtures.
Needs root (network namespaces) and iproute2.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.server
import ipaddress
import json
import logging
import os
import platform
import signal
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

log = logging.getLogger("kubelet")

JSON = dict[str, Any]

BRIDGE = "lg-pods"
# The bridge's address is the gateway every Pod sees on-link; pods of every node share the /16.
BRIDGE_ADDRESS = ipaddress.IPv4Interface("10.244.0.1/16")
# Set, not inherited: a bridge without an address of its own takes the lowest of its ports',
# so a Pod's veth leaving would change the gateway's MAC under every other Pod's ARP cache,
# and their answers to the host would go to a port that is gone until the entry expires.
BRIDGE_MAC = "02:6c:67:00:00:01"
DEFAULT_POD_CIDR = "10.244.0.0/24"
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_S = 40
LEASE_RENEW_S = 10.0
NODE_STATUS_EVERY_S = 60.0
# Restart back-off of a failed container: shorter than a real kubelet's 10 s .. 300 s, because
# tests wait for it; doubled at each consecutive failure, reset after a run this long.
BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
BACKOFF_RESET_AFTER_S = 60.0
# A process needs a moment to listen: the first probe waits this long after the start at least.
FIRST_PROBE_MIN_DELAY_S = 0.2
# Kubelet shutdown: how long pod processes get between SIGTERM and SIGKILL.
SHUTDOWN_GRACE_S = 5.0


def rfc3339(ts: float | None = None) -> str:
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def micro_time(ts: float | None = None) -> str:
    """The MicroTime format Leases use."""
    moment = datetime.fromtimestamp(time.time() if ts is None else ts, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def is_demo_image(image: str) -> bool:
    """True when the repository's last path segment is `demo`: demo:v1, a.b/shop/demo@sha256:..."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "demo"


class ContainerConfigError(Exception):
    """The container's configuration can't be resolved (env from a missing ConfigMap...)."""


# --- the API server ---------------------------------------------------------------------------


class ApiError(Exception):
    def __init__(self, status: int, text: str) -> None:
        super().__init__(f"HTTP {status}: {text[:500]}")
        self.status = status


class Api:
    """A thin JSON client of the API server; the kubeconfig is read by the kubernetes package
    (files or inline data alike), the requests are made with httpx."""

    def __init__(self, kubeconfig: Path) -> None:
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=cfg)
        self.base_url: str = cfg.host
        self._ssl = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            self._ssl.load_cert_chain(cfg.cert_file, cfg.key_file)
        self._headers: dict[str, str] = {}
        token = (cfg.api_key or {}).get("authorization")
        if token:
            self._headers["Authorization"] = str(token)
        self._http = self._client(timeout=httpx.Timeout(15.0))

    def _client(self, timeout: httpx.Timeout) -> httpx.Client:
        return httpx.Client(
            base_url=self.base_url,
            verify=self._ssl,
            headers=self._headers,
            timeout=timeout,
            limits=httpx.Limits(max_connections=50, max_keepalive_connections=10),
            trust_env=False,  # the API server is local: never through a proxy from the env
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body: JSON | None = None,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> JSON:
        content = None if body is None else json.dumps(body).encode()
        response = self._http.request(
            method, path, params=params, content=content, headers={"Content-Type": content_type}
        )
        if response.status_code >= 400:
            raise ApiError(response.status_code, response.text)
        result: JSON = response.json()
        return result

    def get(self, path: str, params: dict[str, str] | None = None) -> JSON:
        return self.request("GET", path, params=params)

    def patch_status(self, path: str, body: JSON) -> JSON:
        return self.request(
            "PATCH", path, body=body, content_type="application/strategic-merge-patch+json"
        )

    def watch(self, path: str, params: dict[str, str]) -> Iterator[JSON]:
        """Watch events; a connection of its own, as a watch holds it for minutes."""
        timeout = httpx.Timeout(10.0, read=float(params.get("timeoutSeconds", "300")) + 30.0)
        with (
            self._client(timeout) as http,
            http.stream("GET", path, params={**params, "watch": "1"}) as response,
        ):
            if response.status_code >= 400:
                raise ApiError(response.status_code, response.read().decode(errors="replace"))
            for line in response.iter_lines():
                if line.strip():
                    event: JSON = json.loads(line)
                    yield event

    def close(self) -> None:
        self._http.close()


# --- networking -------------------------------------------------------------------------------


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {proc.stderr.strip()}")
    return proc


def pod_netns(node: str, uid: str) -> str:
    """The network namespace of the Pod `uid`'s sandbox on `node`."""
    return f"lgpod-{node}-{uid}"


@dataclass(frozen=True)
class Sandbox:
    netns: str
    veth: str
    ip: str


class Network:
    """The bridge in the root namespace and one network namespace + veth pair per Pod."""

    def __init__(self, node: str, pod_cidr: ipaddress.IPv4Network) -> None:
        if not pod_cidr.subnet_of(BRIDGE_ADDRESS.network):
            raise ValueError(f"podCIDR {pod_cidr} is outside the bridge's {BRIDGE_ADDRESS.network}")
        self.prefix = pod_netns(node, "")
        self.pod_cidr = pod_cidr
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self._next = 0  # round robin, so a freed address is not reused at once

    def setup(self) -> None:
        """Idempotent: the bridge exists, has its address and is up; leftovers of a crashed run
        of this node (namespaces and the processes in them) are removed."""
        if ip("link", "show", BRIDGE, check=False).returncode != 0:
            ip("link", "add", BRIDGE, "type", "bridge")
        ip("link", "set", BRIDGE, "address", BRIDGE_MAC)
        ip("addr", "replace", str(BRIDGE_ADDRESS), "dev", BRIDGE)
        ip("link", "set", BRIDGE, "up")
        # A fence behind the bridge's own route: should the bridge ever be gone, traffic to a
        # stale pod IP is refused here instead of leaving the machine by the default route.
        ip("route", "replace", "unreachable", str(BRIDGE_ADDRESS.network), "metric", "4000")
        for name in self._namespaces():
            log.info("removing leftover network namespace %s", name)
            self._delete_netns(name)

    def _namespaces(self) -> list[str]:
        listing = ip("netns", "list", check=False).stdout
        names = [line.split()[0] for line in listing.splitlines() if line.strip()]
        return [n for n in names if n.startswith(self.prefix)]

    def _delete_netns(self, name: str) -> None:
        # A process left inside would keep the namespace (and its veth) alive after `del`.
        for pid in ip("netns", "pids", name, check=False).stdout.split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        ip("netns", "del", name, check=False)  # removes eth0 inside, and with it the veth pair

    def _allocate(self, preferred: str | None) -> str:
        gateway = str(BRIDGE_ADDRESS.ip)
        hosts = [str(h) for h in self.pod_cidr.hosts() if str(h) != gateway]
        with self._lock:
            if preferred in hosts and preferred not in self._used:
                address = preferred
            else:
                for i in range(len(hosts)):
                    candidate = hosts[(self._next + i) % len(hosts)]
                    if candidate not in self._used:
                        self._next = (self._next + i + 1) % len(hosts)
                        address = candidate
                        break
                else:
                    raise RuntimeError(f"no free address in podCIDR {self.pod_cidr}")
            self._used.add(address)
            return address

    def create(self, uid: str, preferred_ip: str | None = None) -> Sandbox:
        address = self._allocate(preferred_ip)
        sandbox = Sandbox(
            netns=f"{self.prefix}{uid}",
            veth="lgp" + hashlib.sha1(uid.encode()).hexdigest()[:10],  # IFNAMSIZ: 15 chars
            ip=address,
        )
        try:
            self._delete_netns(sandbox.netns)  # a leftover of the same Pod, if any
            ip("link", "del", sandbox.veth, check=False)
            ip("netns", "add", sandbox.netns)
            ip(
                "link",
                "add",
                sandbox.veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                sandbox.netns,
            )
            ip("link", "set", sandbox.veth, "master", BRIDGE)
            ip("link", "set", sandbox.veth, "up")
            ns = ["-n", sandbox.netns]
            ip(*ns, "link", "set", "lo", "up")
            # The bridge's prefix, so every Pod on the bridge is on-link. No default route:
            # nothing in the Pod can send beyond this machine.
            ip(*ns, "addr", "add", f"{address}/{BRIDGE_ADDRESS.network.prefixlen}", "dev", "eth0")
            ip(*ns, "link", "set", "eth0", "up")
            # The root namespace may still cache an old MAC for a reused address.
            ip("neigh", "flush", "to", address, "dev", BRIDGE, check=False)
        except Exception:
            self.remove(sandbox)
            raise
        return sandbox

    def remove(self, sandbox: Sandbox) -> None:
        self._delete_netns(sandbox.netns)
        ip("link", "del", sandbox.veth, check=False)
        ip("neigh", "flush", "to", sandbox.ip, "dev", BRIDGE, check=False)
        with self._lock:
            self._used.discard(sandbox.ip)

    def teardown(self) -> None:
        for name in self._namespaces():
            self._delete_netns(name)


# --- probes -----------------------------------------------------------------------------------


@dataclass
class Probe:
    """A readiness probe's spec with Kubernetes' defaults."""

    spec: JSON
    initial_delay: float
    period: float
    timeout: float
    success_threshold: int
    failure_threshold: int

    @classmethod
    def from_spec(cls, spec: JSON) -> Probe:
        return cls(
            spec=spec,
            initial_delay=float(spec.get("initialDelaySeconds", 0)),
            period=float(spec.get("periodSeconds", 10)),
            timeout=float(spec.get("timeoutSeconds", 1)),
            success_threshold=int(spec.get("successThreshold", 1)),
            failure_threshold=int(spec.get("failureThreshold", 3)),
        )


def resolve_port(port: int | str, container: JSON) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports", []):
        if p.get("name") == port:
            return int(p["containerPort"])
    raise ValueError(f"no container port named {port!r}")


def run_probe(probe: Probe, pod_ip: str, container: JSON, http: httpx.Client) -> tuple[bool, str]:
    """One probe from the root namespace, as the kubelet probes from the host: (success, why)."""
    spec = probe.spec
    try:
        if "httpGet" in spec:
            get = spec["httpGet"]
            port = resolve_port(get.get("port", 80), container)
            scheme = str(get.get("scheme", "HTTP")).lower()
            host = get.get("host") or pod_ip
            headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
            url = f"{scheme}://{host}:{port}{get.get('path', '/')}"
            response = http.get(url, headers=headers, timeout=probe.timeout)
            ok = 200 <= response.status_code < 400
            return ok, f"HTTP probe failed with statuscode: {response.status_code}"
        if "tcpSocket" in spec:
            import socket

            port = resolve_port(spec["tcpSocket"]["port"], container)
            with socket.create_connection((pod_ip, port), timeout=probe.timeout):
                return True, ""
        return False, "probe type not supported by the process kubelet (httpGet, tcpSocket)"
    except (httpx.HTTPError, OSError, ValueError) as exc:
        return False, f"probe failed: {exc}"


# --- one Pod ----------------------------------------------------------------------------------


class PodWorker(threading.Thread):
    """Runs one Pod from start to deletion; the watch hands it each new version of the Pod."""

    def __init__(self, kubelet: Kubelet, pod: JSON) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.kubelet = kubelet
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.pod_name: str = meta["name"]
        self._pod = pod
        self._lock = threading.Lock()
        self.wake = threading.Event()
        self.gone = False  # the Pod object was removed (a forced delete): kill at once
        self.stopping = False  # the kubelet shuts down

        spec = pod["spec"]
        self.containers: list[JSON] = spec["containers"]
        self.container: JSON = self.containers[0]
        self.image: str = self.container["image"]
        self.restart_policy: str = spec.get("restartPolicy", "Always")
        readiness = self.container.get("readinessProbe")
        self.probe = Probe.from_spec(readiness) if readiness else None
        liveness = self.container.get("livenessProbe")
        self.liveness = Probe.from_spec(liveness) if liveness else None
        # The demo app serves one port: the one named http (lockgate adds that name), else the
        # first one declared, else the app's default.
        ports = self.container.get("ports") or [{"containerPort": 8080}]
        named = [p for p in ports if p.get("name") == "http"]
        self.port = int((named or ports)[0]["containerPort"])

        # What the status says; kept across kubelet restarts where the old status tells it.
        status = pod.get("status", {})
        old: JSON = next(iter(status.get("containerStatuses", [])), {})
        self.start_time: str = status.get("startTime") or rfc3339()
        self.restart_count: int = int(old.get("restartCount", 0))
        old_state: JSON = old.get("state", {})
        if "running" in old_state or "terminated" in old_state:
            # The process of an earlier kubelet run is gone: this start is a restart.
            self.restart_count += 1
        self.old_ip: str | None = status.get("podIP")
        self.sandbox: Sandbox | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.started_wall = 0.0  # time.time() of the start: container_start_time_seconds
        self.state: JSON = {"waiting": {"reason": "ContainerCreating"}}
        self.last_state: JSON = (
            {"terminated": old_state["terminated"]} if "terminated" in old_state else {}
        )
        self.ever_started = False
        phase = status.get("phase")
        self.terminal_phase: str | None = phase if phase in ("Succeeded", "Failed") else None
        self.next_start = 0.0
        self.failures_in_row = 0
        self.pull_attempts = 0
        self.pull_backoff_from = 0.0
        # Readiness probe bookkeeping.
        self.ready = False
        self.next_probe = 0.0
        self.successes = 0
        self.failures = 0
        self.next_liveness = 0.0
        self.liveness_failures = 0
        self.terminating = False
        self.transitions: dict[str, tuple[str, str]] = {}  # condition type -> (status, time)
        self.published: JSON | None = None

    # -- the watch's side --
    def update(self, pod: JSON) -> None:
        with self._lock:
            self._pod = pod
        self.wake.set()

    @property
    def pod(self) -> JSON:
        with self._lock:
            return self._pod

    # -- the worker's side --
    def run(self) -> None:
        try:
            self._run()
        except Exception:
            log.exception("%s: worker failed", self.name)
            self._kill_now()
            self._release_sandbox()
        finally:
            self.kubelet.worker_done(self)

    def _run(self) -> None:
        log.info("%s: admitted (image %s)", self.name, self.image)
        while True:
            pod = self.pod
            if self.gone or self.stopping or pod["metadata"].get("deletionTimestamp"):
                self._terminate(pod)
                return
            if self.terminal_phase is None:
                try:
                    self._step()
                except ContainerConfigError as exc:  # e.g. a missing ConfigMap: retried
                    log.warning("%s: %s", self.name, exc)
                    reason = "CreateContainerConfigError"
                    self.state = {"waiting": {"reason": reason, "message": str(exc)}}
                    self.next_start = time.monotonic() + 5.0
                except Exception as exc:  # a bug or an odd spec: this Pod only, and retried
                    log.exception("%s: could not run the container", self.name)
                    self._kill_now()
                    self.proc = None
                    self.ready = False
                    self.state = {"waiting": {"reason": "RunContainerError", "message": str(exc)}}
                    self.next_start = time.monotonic() + BACKOFF_MAX_S / 4
            if not self._publish():
                self._kill_now()
                self._release_sandbox()
                return
            self.wake.wait(self._sleep_time())
            self.wake.clear()

    def _sleep_time(self) -> float:
        now = time.monotonic()
        deadlines = [now + 1.0]  # the process's exit is noticed within a second
        if self.proc is None and self.next_start:
            deadlines.append(self.next_start)
        if self.proc is not None and self.probe is not None:
            deadlines.append(self.next_probe)
        if self.proc is not None and self.liveness is not None:
            deadlines.append(self.next_liveness)
        return max(0.01, min(deadlines) - now)

    def _step(self) -> None:
        now = time.monotonic()
        if self.sandbox is None:
            try:
                self.sandbox = self.kubelet.network.create(self.uid, self.old_ip)
                log.info(
                    "%s: sandbox %s with IP %s", self.name, self.sandbox.netns, self.sandbox.ip
                )
            except Exception as exc:
                log.exception("%s: sandbox failed", self.name)
                self.state = {"waiting": {"reason": "CreatePodSandboxError", "message": str(exc)}}
                self.next_start = now + BACKOFF_INITIAL_S * 5
                return
        if not is_demo_image(self.image):
            self._pull_failed(now)
            return
        if self.proc is not None and self.proc.poll() is not None:
            self._exited(now)
        if self.proc is None and now >= self.next_start and self.terminal_phase is None:
            self._start()
        if self.proc is not None and self.probe is not None and now >= self.next_probe:
            self._probe()
        if self.proc is not None and self.liveness is not None and now >= self.next_liveness:
            self._probe_liveness()

    def _pull_failed(self, now: float) -> None:
        """Images are not pulled here: only demo images exist. Alternate the two reasons as a
        kubelet does while it retries a pull, with a growing back-off."""
        message = (
            f'Failed to pull image "{self.image}": the process kubelet runs only images whose '
            "repository is named demo"
        )
        if now >= self.next_start:
            self.pull_attempts += 1
            self.state = {"waiting": {"reason": "ErrImagePull", "message": message}}
            delay = min(BACKOFF_MAX_S, 5.0 * 2 ** (self.pull_attempts - 1))
            self.next_start = now + delay
            self.pull_backoff_from = now + 2.0
        elif now >= self.pull_backoff_from:
            self.state = {
                "waiting": {
                    "reason": "ImagePullBackOff",
                    "message": f'Back-off pulling image "{self.image}"',
                }
            }

    def _env(self, sandbox: Sandbox) -> dict[str, str]:
        pod = self.pod
        fields = {
            "metadata.name": self.pod_name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.kubelet.node,
            "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
            "status.podIP": sandbox.ip,
            "status.hostIP": self.kubelet.host_ip,
        }
        env = {
            "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "HOSTNAME": self.pod_name,
            "INSTANCE": self.pod_name,  # the demo app's X-Instance header
            "PORT": str(self.port),
        }
        for item in self.container.get("env", []):
            source = item.get("valueFrom", {})
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                if path not in fields:
                    raise ContainerConfigError(f"env {item['name']}: fieldPath {path} unsupported")
                env[item["name"]] = fields[path]
            elif "configMapKeyRef" in source or "secretKeyRef" in source:
                value = self._key_ref(source)
                if value is not None:
                    env[item["name"]] = value
            elif source:
                raise ContainerConfigError(f"env {item['name']}: valueFrom {source} unsupported")
            else:
                env[item["name"]] = str(item.get("value", ""))
        env["DEMO_IMAGE"] = self.image  # the image decides the behaviour, as its ENV would
        return env

    def _key_ref(self, source: JSON) -> str | None:
        """An env value from a ConfigMap or Secret key, read when the container starts."""
        kind, ref = (
            ("configmaps", source["configMapKeyRef"])
            if "configMapKeyRef" in source
            else ("secrets", source["secretKeyRef"])
        )
        try:
            obj = self.kubelet.api.get(f"/api/v1/namespaces/{self.namespace}/{kind}/{ref['name']}")
        except ApiError as exc:
            if exc.status == 404 and ref.get("optional"):
                return None
            raise ContainerConfigError(f"{kind} {ref['name']!r}: {exc}") from exc
        if kind == "secrets":
            raw = obj.get("data", {}).get(ref["key"])
            value = None if raw is None else base64.b64decode(raw).decode(errors="replace")
        else:
            value = obj.get("data", {}).get(ref["key"])
        if value is None and not ref.get("optional"):
            raise ContainerConfigError(f"couldn't find key {ref['key']} in {kind} {ref['name']}")
        return value

    def _start(self) -> None:
        assert self.sandbox is not None
        log_dir = self.kubelet.run_dir / "pods" / f"{self.namespace}_{self.pod_name}_{self.uid}"
        log_dir.mkdir(parents=True, exist_ok=True)
        out = (log_dir / f"{self.container['name']}.log").open("ab")
        try:
            out.write(f"=== {rfc3339()} start {self.image} in {self.sandbox.netns}\n".encode())
            out.flush()
            # `ip netns exec` enters the namespace and execs, so the PID is the app's own;
            # a session of its own keeps the kubelet's signals (Ctrl-C) away from it.
            env = self._env(self.sandbox)
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.sandbox.netns, str(self.kubelet.demo_app)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        finally:
            out.close()
        now = time.monotonic()
        self.started_at = now
        self.started_wall = time.time()
        self.ever_started = True
        self.state = {"running": {"startedAt": rfc3339()}}
        self.ready = False
        self.successes = self.failures = 0
        if self.probe is not None:
            self.next_probe = now + max(self.probe.initial_delay, FIRST_PROBE_MIN_DELAY_S)
        if self.liveness is not None:
            self.next_liveness = now + max(self.liveness.initial_delay, FIRST_PROBE_MIN_DELAY_S)
            self.liveness_failures = 0
        log.info("%s: started pid %d", self.name, self.proc.pid)

    def _exited(self, now: float) -> None:
        assert self.proc is not None
        code = self.proc.returncode
        ran = now - self.started_at
        self.last_state = {"terminated": self._terminated(code)}
        self.proc = None
        self.ready = False
        log.warning("%s: process exited with %s after %.1fs", self.name, code, ran)
        restart = self.restart_policy == "Always" or (
            self.restart_policy == "OnFailure" and code != 0
        )
        if not restart:
            self.state = self.last_state
            self.last_state = {}
            self.terminal_phase = "Succeeded" if code == 0 else "Failed"
            self._release_sandbox()
            return
        self.failures_in_row = 1 if ran >= BACKOFF_RESET_AFTER_S else self.failures_in_row + 1
        delay = min(BACKOFF_MAX_S, BACKOFF_INITIAL_S * 2 ** (self.failures_in_row - 1))
        self.next_start = now + delay
        self.restart_count += 1
        self.state = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {delay:.0f}s restarting failed container="
                f"{self.container['name']} pod={self.pod_name}_{self.namespace}({self.uid})",
            }
        }

    def _terminated(self, code: int | None) -> JSON:
        if code is None:
            code = 137
        elif code < 0:  # killed by a signal: reported as 128 + signal, like a shell
            code = 128 - code
        return {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.state.get("running", {}).get("startedAt", rfc3339()),
            "finishedAt": rfc3339(),
            "containerID": self._container_id(),
        }

    def _image_id(self) -> str:
        """repository@sha256:<digest of the demo-app binary>: the "image" that really runs."""
        if not is_demo_image(self.image):
            return ""
        repository = self.image.split("@", 1)[0]
        if ":" in repository.rsplit("/", 1)[-1]:
            repository = repository.rsplit(":", 1)[0]
        return f"{repository}@sha256:{self.kubelet.demo_digest}"

    def _container_id(self) -> str:
        return f"process://{self.uid}-{self.proc.pid}" if self.proc is not None else ""

    def _probe(self) -> None:
        assert self.probe is not None and self.sandbox is not None
        ok, why = run_probe(self.probe, self.sandbox.ip, self.container, self.kubelet.probe_http)
        self.next_probe = time.monotonic() + self.probe.period
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if not self.ready and self.successes >= self.probe.success_threshold:
                self.ready = True
                log.info("%s: ready", self.name)
        else:
            self.failures, self.successes = self.failures + 1, 0
            if self.ready and self.failures >= self.probe.failure_threshold:
                self.ready = False
                log.info("%s: not ready: %s", self.name, why)

    def _probe_liveness(self) -> None:
        """failureThreshold failures in a row: the container is killed and restarted (with
        back-off), as a kubelet does; SIGTERM first, SIGKILL after the grace period."""
        assert self.liveness is not None and self.sandbox is not None and self.proc is not None
        ok, why = run_probe(self.liveness, self.sandbox.ip, self.container, self.kubelet.probe_http)
        self.next_liveness = time.monotonic() + self.liveness.period
        self.liveness_failures = 0 if ok else self.liveness_failures + 1
        if self.liveness_failures < self.liveness.failure_threshold:
            return
        log.warning("%s: liveness probe failed (%s): restarting the container", self.name, why)
        self._signal(signal.SIGTERM)
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self._kill_now()
        self._exited(time.monotonic())

    # -- status --
    def _container_ready(self) -> bool:
        if self.proc is None or self.terminating:
            return False
        return self.ready if self.probe is not None else True

    def _condition(self, kind: str, ok: bool, reason: str = "", message: str = "") -> JSON:
        status = "True" if ok else "False"
        previous = self.transitions.get(kind)
        if previous is None or previous[0] != status:
            self.transitions[kind] = (status, rfc3339())
        condition: JSON = {
            "type": kind,
            "status": status,
            "lastProbeTime": None,
            "lastTransitionTime": self.transitions[kind][1],
        }
        if not ok and reason:
            condition["reason"] = reason
            condition["message"] = message
        return condition

    def _status(self) -> JSON:
        ready = self._container_ready()
        name = self.container["name"]
        unready = [] if ready else [name]
        unready += [c["name"] for c in self.containers[1:]]
        all_ready = not unready
        phase = self.terminal_phase or ("Running" if self.ever_started else "Pending")
        first: JSON = {
            "name": name,
            "image": self.image,
            "imageID": self._image_id(),
            "ready": ready,
            "started": self.proc is not None,
            "restartCount": self.restart_count,
            "state": self.state,
        }
        if self.proc is not None:
            first["containerID"] = self._container_id()
        if self.last_state:
            first["lastState"] = self.last_state
        others = [
            {
                "name": c["name"],
                "image": c["image"],
                "imageID": "",
                "ready": False,
                "started": False,
                "restartCount": 0,
                "state": {
                    "waiting": {
                        "reason": "NotSupported",
                        "message": "the process kubelet runs only a Pod's first container",
                    }
                },
            }
            for c in self.containers[1:]
        ]
        message = f"containers with unready status: [{' '.join(unready)}]"
        status: JSON = {
            "phase": phase,
            "hostIP": self.kubelet.host_ip,
            "hostIPs": [{"ip": self.kubelet.host_ip}],
            "startTime": self.start_time,
            "conditions": [
                self._condition("PodReadyToStartContainers", self.sandbox is not None),
                self._condition("Initialized", True),
                self._condition("ContainersReady", all_ready, "ContainersNotReady", message),
                self._condition("Ready", all_ready, "ContainersNotReady", message),
            ],
            "containerStatuses": [first, *others],
            "qosClass": self.pod.get("status", {}).get("qosClass", "BestEffort"),
        }
        if self.sandbox is not None:
            status["podIP"] = self.sandbox.ip
            status["podIPs"] = [{"ip": self.sandbox.ip}]
        generation = self.pod["metadata"].get("generation")
        if generation is not None:
            status["observedGeneration"] = generation
        return status

    def _publish(self) -> bool:
        """Patch the status when it changed; False when the Pod is gone (or replaced)."""
        status = self._status()
        if status == self.published:
            return True
        body = {"metadata": {"uid": self.uid}, "status": status}  # uid: a precondition
        try:
            self.kubelet.api.patch_status(
                f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}/status", body
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                log.info("%s: gone while patching status (%s)", self.name, exc.status)
                return False
            log.warning("%s: status patch failed: %s", self.name, exc)
            return True  # the next pass retries: published is not updated
        except httpx.HTTPError as exc:
            log.warning("%s: status patch failed: %s", self.name, exc)
            return True
        self.published = status
        return True

    # -- termination --
    def _grace_period(self, pod: JSON) -> float:
        meta, spec = pod["metadata"], pod["spec"]
        if self.stopping and not meta.get("deletionTimestamp"):
            return SHUTDOWN_GRACE_S
        grace = meta.get("deletionGracePeriodSeconds")
        if grace is None:
            grace = spec.get("terminationGracePeriodSeconds", 30)
        if self.stopping:
            return min(float(grace), SHUTDOWN_GRACE_S)
        return float(grace)

    def _terminate(self, pod: JSON) -> None:
        """Graceful stop of a deleted Pod (or of every Pod at kubelet shutdown)."""
        grace = 0.0 if self.gone else self._grace_period(pod)
        begun = time.monotonic()
        deadline = begun + grace
        log.info("%s: terminating (grace %.0fs)", self.name, grace)
        # Not ready first, so EndpointSlices stop sending new traffic while it drains.
        self.terminating = True
        self.ready = False
        if not self.gone:
            self._publish()
        if self.proc is not None:
            self._pre_stop(deadline)
            self._signal(signal.SIGTERM)
            while self.proc.poll() is None and time.monotonic() < deadline and not self.gone:
                if self.stopping:  # the kubelet shuts down: no Pod gets more than its grace
                    deadline = min(deadline, self.kubelet.stop_deadline)
                shorter = self.pod["metadata"].get("deletionGracePeriodSeconds")
                if shorter is not None:  # a second delete may shorten the grace period
                    deadline = min(deadline, begun + float(shorter))
                self.wake.wait(0.05)
                self.wake.clear()
            if self.proc.poll() is None:
                log.warning("%s: still running after the grace period: SIGKILL", self.name)
                self._kill_now()
            self.state = {"terminated": self._terminated(self.proc.returncode)}
            self.proc = None
        self._release_sandbox()
        if self.gone:
            return
        if self.stopping and not pod["metadata"].get("deletionTimestamp"):
            # Kubelet shutdown: the Pod stays, not ready, its container terminated; the next
            # kubelet run restarts it (restartCount + 1).
            self._publish()
            return
        if self.terminal_phase is None:
            exit_code = self.state.get("terminated", {}).get("exitCode", 0)
            self.terminal_phase = "Succeeded" if exit_code == 0 else "Failed"
        self._publish()
        # As the kubelet does: the object goes once everything ran down. Retried while the
        # API server is away; at kubelet shutdown the next run finishes it.
        while not self.gone:
            try:
                self.kubelet.api.request(
                    "DELETE",
                    f"/api/v1/namespaces/{self.namespace}/pods/{self.pod_name}",
                    body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
                )
                log.info("%s: deleted", self.name)
                return
            except ApiError as exc:
                if exc.status in (404, 409):  # gone already, or replaced by a namesake
                    return
                log.warning("%s: delete failed: %s", self.name, exc)
            except httpx.HTTPError as exc:
                log.warning("%s: delete failed: %s", self.name, exc)
            if self.stopping:
                return
            self.wake.wait(2.0)
            self.wake.clear()

    def _pre_stop(self, deadline: float) -> None:
        """The preStop hook's `sleep` action, within the grace period."""
        hook = self.container.get("lifecycle", {}).get("preStop", {})
        seconds = hook.get("sleep", {}).get("seconds")
        if hook and seconds is None:
            log.warning("%s: preStop other than sleep is not supported: skipped", self.name)
        if seconds:
            end = min(deadline, time.monotonic() + float(seconds))
            while time.monotonic() < end and not self.gone and self.proc is not None:
                self.wake.wait(min(0.1, max(0.0, end - time.monotonic())))
                self.wake.clear()

    def _signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, sig)

    def _kill_now(self) -> None:
        if self.proc is not None:
            self._signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def _release_sandbox(self) -> None:
        if self.sandbox is not None:
            try:
                self.kubelet.network.remove(self.sandbox)
            except Exception:
                log.exception("%s: removing the sandbox failed", self.name)
            # podIP stays in the status (omitted from later patches, which merge), as a
            # kubelet leaves it; only the namespace goes.
            self.sandbox = None


# --- resource metrics -------------------------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class ProcStat:
    ppid: int
    cpu_s: float  # utime + stime, plus cutime + cstime: its reaped children count too
    rss_bytes: int


def read_proc_stat(pid: int) -> ProcStat | None:
    """One process's CPU time and resident memory from /proc; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its last ')'.
    fields = raw[raw.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state): ppid is field 4, utime..cstime are fields 14..17.
    ticks = sum(int(v) for v in fields[11:15])
    return ProcStat(
        ppid=int(fields[1]), cpu_s=ticks / CLOCK_TICKS, rss_bytes=int(statm[1]) * PAGE_SIZE
    )


def process_tree_usage(root: int) -> tuple[float, int] | None:
    """(CPU seconds, resident bytes) of a process and all its descendants; None if it is gone."""
    stats: dict[int, ProcStat] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = read_proc_stat(int(entry.name))
            if stat is not None:
                stats[int(entry.name)] = stat
    if root not in stats:
        return None
    children: dict[int, list[int]] = {}
    for pid, stat in stats.items():
        children.setdefault(stat.ppid, []).append(pid)
    cpu, rss, todo = 0.0, 0, [root]
    while todo:
        pid = todo.pop()
        cpu += stats[pid].cpu_s
        rss += stats[pid].rss_bytes
        todo.extend(children.get(pid, []))
    return cpu, rss


def node_usage() -> tuple[float, int]:
    """(CPU seconds busy since boot, working set bytes = MemTotal - MemAvailable)."""
    cpu_line = Path("/proc/stat").read_text().splitlines()[0].split()
    # user nice system idle iowait irq softirq steal: busy is all but idle and iowait.
    values = [int(v) for v in cpu_line[1:9]]
    busy = sum(values) - values[3] - values[4]
    mem: dict[str, int] = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        mem[name] = int(rest.split()[0]) * 1024
    return busy / CLOCK_TICKS, mem["MemTotal"] - mem.get("MemAvailable", mem.get("MemFree", 0))


@dataclass(frozen=True)
class ContainerSample:
    namespace: str
    pod: str
    container: str
    start_time: float
    cpu_s: float
    memory_bytes: int


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render_resource_metrics(
    node_cpu_s: float, node_memory: int, samples: list[ContainerSample], now: float
) -> str:
    """The kubelet's /metrics/resource in the Prometheus text format, timestamps in ms."""
    ts = int(now * 1000)
    out: list[str] = []

    def family(name: str, kind: str, help_text: str, lines: list[str]) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        out.extend(lines)

    def pod_labels(s: ContainerSample) -> str:
        return f'namespace="{_label(s.namespace)}",pod="{_label(s.pod)}"'

    def container_labels(s: ContainerSample) -> str:
        return f'container="{_label(s.container)}",{pod_labels(s)}'

    family(
        "container_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
        [
            f"container_cpu_usage_seconds_total{{{container_labels(s)}}} {s.cpu_s} {ts}"
            for s in samples
        ],
    )
    family(
        "container_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the container in bytes",
        [
            f"container_memory_working_set_bytes{{{container_labels(s)}}} {s.memory_bytes} {ts}"
            for s in samples
        ],
    )
    family(
        "container_start_time_seconds",
        "gauge",
        "[STABLE] Start time of the container since unix epoch in seconds",
        [
            f"container_start_time_seconds{{{container_labels(s)}}} {s.start_time} {ts}"
            for s in samples
        ],
    )
    family(
        "node_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
        [f"node_cpu_usage_seconds_total {node_cpu_s} {ts}"],
    )
    family(
        "node_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the node in bytes",
        [f"node_memory_working_set_bytes {node_memory} {ts}"],
    )
    family(
        "pod_cpu_usage_seconds_total",
        "counter",
        "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
        [f"pod_cpu_usage_seconds_total{{{pod_labels(s)}}} {s.cpu_s} {ts}" for s in samples],
    )
    family(
        "pod_memory_working_set_bytes",
        "gauge",
        "[STABLE] Current working set of the pod in bytes",
        [f"pod_memory_working_set_bytes{{{pod_labels(s)}}} {s.memory_bytes} {ts}" for s in samples],
    )
    family(
        "scrape_error",
        "gauge",
        "[ALPHA] 1 if there was an error while getting container metrics, 0 otherwise",
        ["scrape_error 0"],
    )
    return "\n".join(out) + "\n"


class MetricsServer:
    """HTTPS on the bridge address: GET /metrics/resource (and /healthz), as a kubelet serves
    them on its port 10250. No authentication: the address is reachable only on this machine."""

    def __init__(self, kubelet: Kubelet, port: int, cert: Path, key: Path) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics/resource":
                    body, ctype = (
                        outer.kubelet.resource_metrics().encode(),
                        "text/plain; version=0.0.4",
                    )
                elif path == "/healthz":
                    body, ctype = b"ok", "text/plain"
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # a scrape every few seconds would drown the kubelet's log

        self.kubelet = kubelet
        self.server = http.server.ThreadingHTTPServer((kubelet.host_ip, port), Handler)
        self.server.daemon_threads = True
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(cert), str(key))
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(
            target=self.server.serve_forever, name="metrics", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- the node ---------------------------------------------------------------------------------


def meminfo_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    return 0


class Kubelet:
    def __init__(
        self,
        api: Api,
        node: str,
        pod_cidr: str,
        demo_app: Path,
        run_dir: Path,
        max_pods: int = 110,
        metrics_port: int = 0,
        metrics_tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.api = api
        self.node = node
        self.demo_app = demo_app
        self.demo_digest = hashlib.sha256(demo_app.read_bytes()).hexdigest()
        self.run_dir = run_dir
        self.max_pods = max_pods
        self.metrics_port = metrics_port  # 0: no resource metrics endpoint
        self.metrics_tls = metrics_tls  # (certificate, key) of the endpoint
        self.metrics: MetricsServer | None = None
        self.network = Network(node, ipaddress.IPv4Network(pod_cidr))
        # The Node's address: the bridge, which every Pod and the root namespace reach.
        self.host_ip = str(BRIDGE_ADDRESS.ip)
        self.node_uid = ""
        self._node_since = rfc3339()  # the Node's conditions hold since our start
        self.stop = threading.Event()
        self.stop_deadline = float("inf")
        self.synced = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.finished: set[str] = set()  # uids whose worker ended: no second life
        self._lock = threading.Lock()
        # Probes open a fresh connection each time, as a kubelet's do.
        self.probe_http = httpx.Client(
            verify=False, limits=httpx.Limits(max_keepalive_connections=0), trust_env=False
        )

    # -- node --
    def _node_status(self) -> JSON:
        now = rfc3339()

        def cond(kind: str, status: str, reason: str, message: str) -> JSON:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": now,
                "lastTransitionTime": self._node_since,
            }

        capacity = {
            "cpu": str(os.cpu_count() or 1),
            "memory": f"{meminfo_kib()}Ki",
            "pods": str(self.max_pods),
            "ephemeral-storage": "100Gi",
        }
        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
                cond("Ready", "True", "KubeletReady", "process kubelet is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.host_ip},
                {"type": "Hostname", "address": self.node},
            ],
            # Where metrics-server scrapes /metrics/resource (--kubelet-use-node-status-port).
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.metrics_port}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": platform.release(),
                "osImage": "lockgate process kubelet",
                "containerRuntimeVersion": "process://0.1",
                "kubeletVersion": "v1.36.0-lockgate",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64" if platform.machine() == "x86_64" else platform.machine(),
            },
        }

    def register(self) -> None:
        """Create the Node (or adopt the existing one: its podCIDR can't change) and mark it
        Ready at once, so the scheduler and the node-lifecycle controller accept it."""
        path = f"/api/v1/nodes/{self.node}"
        try:
            node = self.api.get(path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            cidr = str(self.network.pod_cidr)
            node = self.api.request(
                "POST",
                "/api/v1/nodes",
                body={
                    "apiVersion": "v1",
                    "kind": "Node",
                    "metadata": {
                        "name": self.node,
                        "labels": {
                            "kubernetes.io/hostname": self.node,
                            "kubernetes.io/os": "linux",
                            "kubernetes.io/arch": "amd64",
                            "lockgate.dev/process-kubelet": "true",
                        },
                    },
                    "spec": {"podCIDR": cidr, "podCIDRs": [cidr]},
                    "status": self._node_status(),
                },
            )
            log.info("registered node %s", self.node)
        existing = node.get("spec", {}).get("podCIDR")
        if existing and existing != str(self.network.pod_cidr):
            if self.synced.is_set():  # pods run on the old network: too late to move
                log.warning(
                    "node %s has podCIDR %s; we keep %s", self.node, existing, self.network.pod_cidr
                )
            else:
                log.info("node %s keeps its podCIDR %s", self.node, existing)
                self.network = Network(self.node, ipaddress.IPv4Network(existing))
        self.node_uid = node["metadata"]["uid"]
        self.api.patch_status(f"{path}/status", {"status": self._node_status()})

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases/{self.node}"
        spec = {
            "holderIdentity": self.node,
            "leaseDurationSeconds": LEASE_DURATION_S,
            "renewTime": micro_time(),
        }
        try:
            lease = self.api.get(path)
        except ApiError as exc:
            if exc.status != 404:
                raise
            # No Lease: a first start, or a fresh cluster (new etcd) where our Node is gone too.
            # The Lease names its Node as owner, so the Node must exist with its current uid.
            self.register()
            owner = {"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid}
            self.api.request(
                "POST",
                f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NAMESPACE}/leases",
                body={
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.node, "ownerReferences": [owner]},
                    "spec": spec,
                },
            )
            return
        lease["spec"].update(spec)
        self.api.request("PUT", path, body=lease)  # resourceVersion in it: optimistic locking

    def heartbeat(self) -> None:
        last_status = time.monotonic()
        while not self.stop.is_set():
            try:
                self._renew_lease()
                if time.monotonic() - last_status >= NODE_STATUS_EVERY_S:
                    self.api.patch_status(
                        f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()}
                    )
                    last_status = time.monotonic()
            except ApiError as exc:
                if exc.status == 404:
                    log.warning("node %s was deleted: registering again", self.node)
                    with contextlib.suppress(Exception):
                        self.register()
                else:
                    log.warning("heartbeat failed: %s", exc)
            except Exception as exc:
                log.warning("heartbeat failed: %s", exc)
            self.stop.wait(LEASE_RENEW_S)

    # -- resource metrics --
    def resource_metrics(self) -> str:
        """The /metrics/resource page: each running Pod's first container (the one process
        tree it runs) and the node, measured now."""
        with self._lock:
            workers = list(self.workers.values())
        samples = []
        for worker in workers:
            proc, started = worker.proc, worker.started_wall
            if proc is None or proc.poll() is not None:
                continue
            usage = process_tree_usage(proc.pid)
            if usage is None:
                continue
            samples.append(
                ContainerSample(
                    namespace=worker.namespace,
                    pod=worker.pod_name,
                    container=worker.container["name"],
                    start_time=started,
                    cpu_s=usage[0],
                    memory_bytes=usage[1],
                )
            )
        node_cpu, node_memory = node_usage()
        return render_resource_metrics(node_cpu, node_memory, samples, time.time())

    # -- pods --
    def handle(self, kind: str, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.gone = True
                    worker.update(pod)
                self.finished.discard(uid)
                return
            if worker is not None:
                worker.update(pod)
                return
            if uid in self.finished or self.stop.is_set():
                return
            try:
                worker = PodWorker(self, pod)
            except Exception:  # never let one odd Pod stop the watch
                log.exception("cannot admit pod %s", pod["metadata"].get("name"))
                self.finished.add(uid)
                return
            self.workers[uid] = worker
        worker.start()

    def worker_done(self, worker: PodWorker) -> None:
        with self._lock:
            self.workers.pop(worker.uid, None)
            self.finished.add(worker.uid)

    def _resync(self, pods: list[JSON]) -> None:
        """After a (re)list: Pods no longer listed were deleted while we were not watching."""
        listed = {p["metadata"]["uid"] for p in pods}
        with self._lock:
            missing = [w for uid, w in self.workers.items() if uid not in listed]
        for worker in missing:
            self.handle("DELETED", worker.pod)
        for pod in pods:
            self.handle("ADDED", pod)

    def watch_pods(self) -> None:
        params = {"fieldSelector": f"spec.nodeName={self.node}"}
        retry = 1.0  # doubled while the API server stays away (a restart), up to 10 s
        while not self.stop.is_set():
            try:
                listing = self.api.get("/api/v1/pods", params)
                self._resync(listing["items"])
                self.synced.set()
                retry = 1.0
                version = listing["metadata"]["resourceVersion"]
                while not self.stop.is_set():
                    watch_params = {
                        **params,
                        "resourceVersion": version,
                        "allowWatchBookmarks": "true",
                        "timeoutSeconds": "300",
                    }
                    expired = False
                    for event in self.api.watch("/api/v1/pods", watch_params):
                        obj = event["object"]
                        if event["type"] == "ERROR":  # 410 Gone: our version is too old
                            log.info("watch error: %s", obj.get("message"))
                            expired = True
                            break
                        version = obj["metadata"]["resourceVersion"]
                        if event["type"] != "BOOKMARK":
                            self.handle(event["type"], obj)
                    if expired:
                        break
            except Exception as exc:
                if self.stop.is_set():
                    return
                log.warning("pod watch failed, listing again in %.0fs: %s", retry, exc)
                self.stop.wait(retry)
                retry = min(10.0, retry * 2)

    # -- lifecycle --
    def serve_node(self, ready_file: Path | None) -> None:
        """Lease, heartbeats and the Pod watch (the registered Node's part of run); returns
        once the Pods bound to the Node are listed, after writing our PID to ready_file."""
        self._renew_lease()
        threading.Thread(target=self.heartbeat, name="heartbeat", daemon=True).start()
        threading.Thread(target=self.watch_pods, name="pods", daemon=True).start()
        if not self.synced.wait(60):
            raise RuntimeError("could not list pods within 60s")
        if ready_file is not None:
            ready_file.write_text(f"{os.getpid()}\n")

    def run(self, ready_file: Path | None) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.network.setup()
        self.register()
        self.network.setup()  # again, in case the Node's existing podCIDR replaced the network
        if self.metrics_port and self.metrics_tls:  # on the bridge address, which exists now
            self.metrics = MetricsServer(self, self.metrics_port, *self.metrics_tls)
            self.metrics.start()
            log.info(
                "resource metrics on https://%s:%d/metrics/resource",
                self.host_ip,
                self.metrics_port,
            )
        self.serve_node(ready_file)
        log.info("node %s ready: podCIDR %s, bridge %s", self.node, self.network.pod_cidr, BRIDGE)
        self.stop.wait()
        self.shutdown()

    def shutdown(self) -> None:
        log.info("shutting down: stopping %d pod(s)", len(self.workers))
        with self._lock:
            workers = list(self.workers.values())
        self.stop_deadline = time.monotonic() + SHUTDOWN_GRACE_S
        for worker in workers:
            worker.stopping = True
            worker.wake.set()
        for worker in workers:
            worker.join(SHUTDOWN_GRACE_S + 10)
        if self.metrics is not None:
            self.metrics.stop()
        self.network.teardown()
        self.probe_http.close()
        self.api.close()
        log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hack.tools.kubelet",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--node", required=True, help="the Node's name")
    parser.add_argument("--pod-cidr", default=DEFAULT_POD_CIDR)
    parser.add_argument("--demo-app", type=Path, help="demo-app binary (default: build it)")
    parser.add_argument("--run-dir", type=Path, help="pod logs (default $LOCKGATE_RUN/kubelet)")
    parser.add_argument("--ready-file", type=Path, help="written with our PID once serving")
    parser.add_argument("--log-file", type=Path, help="log here instead of stderr")
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve /metrics/resource over HTTPS on the bridge address at this port (0: not)",
    )
    parser.add_argument("--tls-cert", type=Path, help="serving certificate of --metrics-port")
    parser.add_argument("--tls-key", type=Path, help="its private key")
    args = parser.parse_args(argv)

    handler: logging.Handler = (
        logging.FileHandler(args.log_file) if args.log_file else logging.StreamHandler(sys.stderr)
    )
    logging.basicConfig(
        level=logging.INFO,
        handlers=[handler],
        format="%(asctime)s %(levelname)s %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    root = Path(__file__).resolve().parents[2]
    demo_app = args.demo_app
    if demo_app is None:
        built = subprocess.run(
            [str(root / "hack" / "build-demo-app")], capture_output=True, text=True, check=True
        )
        demo_app = Path(built.stdout.strip())
    run_dir = args.run_dir or Path(os.environ.get("LOCKGATE_RUN", "/tmp/lockgate-run")) / "kubelet"

    if args.metrics_port and not (args.tls_cert and args.tls_key):
        parser.error("--metrics-port needs --tls-cert and --tls-key")
    kubelet = Kubelet(
        Api(args.kubeconfig),
        args.node,
        args.pod_cidr,
        demo_app,
        run_dir,
        metrics_port=args.metrics_port,
        metrics_tls=(args.tls_cert, args.tls_key) if args.metrics_port else None,
    )
    return run_until_signalled(kubelet, args.ready_file)


def run_until_signalled(kubelet: Kubelet, ready_file: Path | None, name: str = "kubelet") -> int:
    """Run the kubelet until SIGTERM or SIGINT; 1 if it fails (logged, its network undone)."""

    def on_signal(signum: int, _frame: object) -> None:
        log.info("signal %d: stopping", signum)
        kubelet.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        kubelet.run(ready_file)
    except Exception:
        log.exception("%s failed", name)
        kubelet.stop.set()
        kubelet.network.teardown()
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
