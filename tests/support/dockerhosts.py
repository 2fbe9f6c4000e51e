"""The local Docker hosts (hack/dockerhosts) and the demo app (hack/build-demo-app) for tests.

The shell scripts are the one implementation; this module runs them, reads the hosts.json that
`hack/dockerhosts up` writes, and makes docker-py clients for each host over the transport
lockgate uses for it: unix socket, tcp with mutual TLS, or SSH through paramiko with an
explicit key and a pinned known_hosts (never ~/.ssh, never trust on first use).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import paramiko
from docker.transport import SSHHTTPAdapter

from tests.support.local_http import http_status
from tests.support.rollouts import cpu_ticks, wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"
RUN_DIR = Path(os.environ.get("LOCKGATE_RUN", "/tmp/lockgate-run"))
HOSTS_JSON = RUN_DIR / "docker" / "hosts.json"
# A cold `up` installs docker.io and openssh-server with apt first: allow for that.
UP_TIMEOUT_S = 900.0


class ComponentError(RuntimeError):
    """A component could not start; the message carries the script's output and log tail."""


@dataclass(frozen=True)
class DockerHost:
    """One Docker host as lockgate's Application.spec.docker.hosts[] would name it."""

    name: str
    url: str  # unix:///…, tcp://addr:2376 (TLS) or ssh://root@addr:22
    address: str  # where the root namespace (Traefik, tests) reaches published ports
    transport: str  # "unix" | "tcp" | "ssh"
    socket: Path  # the daemon's unix socket: every host has one, for checks and cleanup
    netns: str
    log: Path  # dockerd's log
    ssh_user: str | None = None
    ssh_key: Path | None = None  # private key (id_ed25519)
    known_hosts: Path | None = None  # pins the host's SSH key to its address
    sshd_log: Path | None = None
    tls_ca: Path | None = None  # ca.pem / cert.pem / key.pem (the client's side)
    tls_cert: Path | None = None
    tls_key: Path | None = None


def _path(value: Any) -> Path | None:
    return Path(value) if value else None


def load_hosts(path: Path = HOSTS_JSON) -> list[DockerHost]:
    data = json.loads(path.read_text())
    return [
        DockerHost(
            name=h["name"],
            url=h["url"],
            address=h["address"],
            transport=h["transport"],
            socket=Path(h["socket"]),
            netns=h["netns"],
            log=Path(h["log"]),
            ssh_user=h.get("sshUser"),
            ssh_key=_path(h.get("sshKey")),
            known_hosts=_path(h.get("knownHosts")),
            sshd_log=_path(h.get("sshdLog")),
            tls_ca=_path(h.get("tlsCa")),
            tls_cert=_path(h.get("tlsCert")),
            tls_key=_path(h.get("tlsKey")),
        )
        for h in data["hosts"]
    ]


def demo_images(path: Path = HOSTS_JSON) -> list[str]:
    images: list[str] = json.loads(path.read_text())["images"]
    return images


def _hack(script: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HACK / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        check=False,
    )


def build_demo_app() -> Path:
    """Build (or find cached) the demo app binary; raises ComponentError."""
    proc = _hack("build-demo-app", timeout=600.0)
    if proc.returncode != 0:
        raise ComponentError(
            f"the demo app did not build (hack/build-demo-app exited {proc.returncode}):\n"
            f"{proc.stderr[-4000:]}"
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def docker_hosts_running() -> bool:
    """True when every host answers over its own transport (`hack/dockerhosts status`)."""
    return HOSTS_JSON.exists() and _hack("dockerhosts", "status", timeout=60.0).returncode == 0


def start_docker_hosts() -> list[DockerHost]:
    """`hack/dockerhosts up` (idempotent; rebuilds images if the demo app changed)."""
    proc = _hack("dockerhosts", "up", timeout=UP_TIMEOUT_S)
    if proc.returncode != 0:
        raise ComponentError(
            f"the Docker hosts could not start (hack/dockerhosts up exited {proc.returncode}):\n"
            f"{proc.stderr[-6000:]}{proc.stdout[-2000:]}"
        )
    return load_hosts()


def stop_docker_hosts() -> None:
    _hack("dockerhosts", "down", timeout=120.0)


class _PinnedKeySSHAdapter(SSHHTTPAdapter):  # type: ignore[misc]
    """docker-py's paramiko transport (`docker system dial-stdio` on the remote side), given
    an explicit private key and known_hosts instead of ~/.ssh. Unknown or changed host keys
    are refused (RejectPolicy) before authentication, so nothing runs on a host we can't
    identify. Relies on docker-py 7's `_create_paramiko_client` hook (pinned in pyproject).
    """

    def __init__(self, base_url: str, key: Path, known_hosts: Path, timeout: int) -> None:
        self._key = key
        self._known_hosts = known_hosts
        super().__init__(base_url, timeout=timeout, shell_out=False, max_pool_size=8)

    def _create_paramiko_client(self, base_url: str) -> None:
        from urllib.parse import urlparse

        url = urlparse(base_url)
        client = paramiko.SSHClient()
        client.load_host_keys(str(self._known_hosts))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        self.ssh_client = client
        self.ssh_params = {
            "hostname": url.hostname,
            "port": url.port or 22,
            "username": url.username,
            "key_filename": str(self._key),
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": 10,
        }

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        # docker-py keys its pools by the full request URL: each image's inspect URL had a
        # pool of its own, and 24 threads held 100 channels on one connection (CI on
        # 2026-12-03). One pool per host, as the operator's adapter does; and it blocks
        # when full, so this helper stays within sshd's default of 10 sessions (host3's
        # sshd keeps it) however many threads share the client.
        pool = super().get_connection("http+docker://ssh/", proxies)
        pool.block = True
        return pool


def docker_client(
    host: DockerHost, *, known_hosts: Path | None = None, timeout: int = 60
) -> docker.DockerClient:
    """A docker-py client for `host` over its own transport. `known_hosts` overrides the
    host's pinned file (to test refusal). Raises paramiko.SSHException for a bad host key."""
    if host.transport == "unix":
        return docker.DockerClient(base_url=host.url, timeout=timeout)
    if host.transport == "tcp":
        assert host.tls_ca and host.tls_cert and host.tls_key
        tls = docker.tls.TLSConfig(
            client_cert=(str(host.tls_cert), str(host.tls_key)),
            ca_cert=str(host.tls_ca),
            verify=True,
        )
        client = docker.DockerClient(base_url=host.url, tls=tls, version="1.41", timeout=timeout)
        # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE (set on these machines) replace
        # the session's CA, so the host's own CA would be ignored: don't read the environment.
        client.api.trust_env = False
        client.api._version = client.api._retrieve_server_version()
        return client
    if host.transport == "ssh":
        assert host.ssh_key and host.known_hosts
        # Connects (and checks the host key) here, before any request is sent.
        adapter = _PinnedKeySSHAdapter(
            host.url, host.ssh_key, known_hosts or host.known_hosts, timeout
        )
        # use_ssh_client=True only makes the constructor skip docker-py's own paramiko
        # client (which reads ~/.ssh); the adapter mounted next carries every request.
        client = docker.DockerClient(
            base_url=host.url, use_ssh_client=True, version="1.41", timeout=timeout
        )
        client.api.mount("http+docker://ssh", adapter)
        client.api._custom_adapter = adapter  # so client.close() closes the SSH connection
        client.api._version = client.api._retrieve_server_version()
        return client
    raise ValueError(f"unknown transport {host.transport!r} of {host.name}")


def local_client(host: DockerHost) -> docker.DockerClient:
    """A client over the host's unix socket: for checks and cleanup that must not depend on
    the transport under test."""
    return docker.DockerClient(base_url=f"unix://{host.socket}", timeout=60)


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def process_progress(proc: subprocess.Popen[Any], log: Path) -> Callable[[], int | None]:
    """A wait's progress while a local process gets ready: its CPU time. Raises at once, with
    the tail of its log, once the process has exited: it will never be ready then."""

    def ticks() -> int | None:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-4000:]
            raise AssertionError(f"{proc.args!r} exited {proc.returncode}:\n{tail}")
        return cpu_ticks(proc.pid)

    return ticks


def container_progress(attrs: dict[str, Any]) -> tuple[str, int, int | None]:
    """A wait's progress while a container gets ready, from its inspection: its state, its
    process and that process's CPU time (the daemons share this machine's pid namespace:
    hack/dockerhosts gives each a network namespace only; None where the pid is not seen)."""
    state = attrs["State"]
    pid = int(state.get("Pid") or 0)
    return state["Status"], pid, cpu_ticks(pid) if pid else None


def wait_http(url: str, progress: Callable[[], Any]) -> None:
    """Wait until something accepts connections and answers at url. No wall-clock limit: it
    fails once `progress` (what moves while the server starts: its process's CPU time) has
    stood still for the quiet time."""

    def answers() -> bool:
        return http_status(url, timeout=2) is not None

    wait_for(f"an answer at {url}", answers, progress, every=0.05)


@dataclass
class DemoProcess:
    """The demo app running as a local process, as the process kubelet runs it."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def wait_exit(self) -> int:
        """Its exit code once it has exited; it may drain requests first: waited for while it
        still uses CPU."""
        wait_for(
            "the demo app to exit",
            lambda: self.proc.poll() is not None,
            lambda: cpu_ticks(self.proc.pid),
        )
        return self.proc.returncode

    def terminate(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.wait_exit()


@contextmanager
def demo_process(binary: Path, image: str, log_dir: Path) -> Iterator[DemoProcess]:
    """Run the demo app with DEMO_IMAGE=image on a free loopback port until the block ends."""
    port = free_port()
    log = log_dir / f"demo-app-{port}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary)],
            env={"LISTEN_ADDR": f"127.0.0.1:{port}", "DEMO_IMAGE": image, "INSTANCE": "local"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    demo = DemoProcess(proc=proc, url=f"http://127.0.0.1:{port}", log=log)
    try:
        wait_http(demo.url + "/health", process_progress(proc, log))
        yield demo
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
