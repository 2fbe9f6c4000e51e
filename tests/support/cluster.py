"""Start, stop and query the local control plane, Traefik and Prometheus through hack/cluster,
hack/traefik and hack/prometheus.

The shell scripts are the one implementation; this module only runs them and reads what they
print, so a developer's shell (`eval "$(hack/cluster env)"`) and the tests see the same thing.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

REPO_ROOT = Path(__file__).resolve().parents[2]
HACK = REPO_ROOT / "hack"
# A cold `up` builds Kubernetes from source first: allow for that, not for a hang.
UP_TIMEOUT_S = 3600.0


class ComponentError(RuntimeError):
    """A component could not start; the message carries the script's output and log tail."""


def _run(
    argv: list[str], *, timeout: float = 120.0, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        input=input,
        cwd=REPO_ROOT,
        check=False,
    )


def hack(script: str, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """Run hack/<script> with args; never raises on a non-zero exit."""
    return _run([str(HACK / script), *args], timeout=timeout)


def _exports(script: str) -> dict[str, str]:
    """Parse the `export NAME=value` lines that `hack/<script> env` prints."""
    proc = hack(script, "env")
    if proc.returncode != 0:
        raise ComponentError(f"hack/{script} env failed:\n{proc.stderr}")
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value
    return values


def _require_up(script: str, component: str) -> None:
    proc = hack(script, "up", timeout=UP_TIMEOUT_S)
    if proc.returncode != 0:
        raise ComponentError(
            f"{component} could not start (hack/{script} up exited {proc.returncode}):\n"
            f"{proc.stderr[-6000:]}{proc.stdout[-2000:]}"
        )


@dataclass(frozen=True)
class Cluster:
    """The local control plane as the tests see it, with an admin kubeconfig."""

    kubeconfig: Path
    server: str
    tool_dirs: tuple[Path, ...] = field(default=())

    @property
    def kubectl_path(self) -> Path:
        for directory in self.tool_dirs:
            candidate = directory / "kubectl"
            if candidate.exists():
                return candidate
        raise ComponentError("kubectl is not built: run hack/build-tools")

    def env(self) -> dict[str, str]:
        """os.environ with KUBECONFIG and the built tools first on PATH, for subprocesses."""
        path = os.pathsep.join([*map(str, self.tool_dirs), os.environ.get("PATH", "")])
        return {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PATH": path}

    def kubectl(
        self, *args: str, input: str | None = None, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl as cluster admin; never raises on a non-zero exit."""
        return subprocess.run(
            [str(self.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            check=False,
        )

    def api_client(self) -> ApiClient:
        """A new kubernetes.client.ApiClient authenticated as cluster admin."""
        from kubernetes import config

        new_client: Any = config.new_client_from_config  # untyped in some client versions
        client: ApiClient = new_client(config_file=str(self.kubeconfig))
        return client


@dataclass(frozen=True)
class Traefik:
    """The local Traefik: entry point `web`, its API and its Prometheus metrics, and the
    Gateway (Gateway API) it serves on `web`'s port."""

    web_url: str
    api_url: str
    metrics_url: str
    dynamic_dir: Path
    gateway_namespace: str = "default"
    gateway_name: str = "traefik"

    def parent_ref(self) -> dict[str, str]:
        """An HTTPRoute's parentRef to the Gateway."""
        return {"name": self.gateway_name, "namespace": self.gateway_namespace}


def cluster_running() -> bool:
    return hack("cluster", "status").returncode == 0


def start_cluster() -> None:
    """Start the control plane (building the tools if needed); raises ComponentError."""
    _require_up("cluster", "the local control plane")


def stop_cluster() -> None:
    hack("cluster", "down", timeout=120.0)


def cluster_info() -> Cluster:
    values = _exports("cluster")
    tool_dirs = tuple(
        Path(p) for p in values["PATH"].split(os.pathsep) if p and not p.startswith("$")
    )
    return Cluster(
        kubeconfig=Path(values["KUBECONFIG"]),
        server=values["LOCKGATE_APISERVER_URL"],
        tool_dirs=tool_dirs,
    )


def traefik_running() -> bool:
    return hack("traefik", "status").returncode == 0


def start_traefik() -> None:
    """Start Traefik against the running control plane; raises ComponentError."""
    _require_up("traefik", "Traefik")


def stop_traefik() -> None:
    hack("traefik", "down", timeout=60.0)


def traefik_info() -> Traefik:
    values = _exports("traefik")
    return Traefik(
        web_url=values["LOCKGATE_TRAEFIK_WEB_URL"],
        api_url=values["LOCKGATE_TRAEFIK_API_URL"],
        metrics_url=values["LOCKGATE_TRAEFIK_METRICS_URL"],
        dynamic_dir=Path(values["LOCKGATE_TRAEFIK_DYNAMIC_DIR"]),
        gateway_namespace=values["LOCKGATE_GATEWAY_NAMESPACE"],
        gateway_name=values["LOCKGATE_GATEWAY_NAME"],
    )


@dataclass(frozen=True)
class Prometheus:
    """The local Prometheus (hack/prometheus), scraping the local Traefik every second."""

    url: str


def prometheus_running() -> bool:
    return hack("prometheus", "status").returncode == 0


def start_prometheus() -> None:
    """Start Prometheus (installing Debian's package if missing); raises ComponentError."""
    _require_up("prometheus", "Prometheus")


def stop_prometheus() -> None:
    hack("prometheus", "down", timeout=60.0)


def prometheus_info() -> Prometheus:
    return Prometheus(url=_exports("prometheus")["LOCKGATE_PROMETHEUS_URL"])


def tool_version(name: str) -> str:
    """The pinned version of a tool built by hack/build-tools (e.g. 'kubectl' -> 'v1.36.4')."""
    proc = hack("build-tools", "--print-version", name)
    if proc.returncode != 0:
        raise ComponentError(proc.stderr)
    return proc.stdout.strip()


def tool_dir(name: str) -> Path:
    proc = hack("build-tools", "--print-dir", name)
    if proc.returncode != 0:
        raise ComponentError(proc.stderr)
    return Path(proc.stdout.strip())
