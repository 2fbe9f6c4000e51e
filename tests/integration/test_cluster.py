"""The local test environment itself: control plane, RBAC, CRDs, Traefik, bad-input refusal."""

from __future__ import annotations

import json
import os
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client as k8s

from tests.support.cluster import REPO_ROOT, Cluster, Traefik, tool_dir, tool_version
from tests.support.rollouts import wait_for

pytestmark = pytest.mark.integration

INVALID_DIR = REPO_ROOT / "tests" / "data" / "invalid"


# --- helpers ---------------------------------------------------------------------------------


def _ok(proc: Any) -> str:
    assert proc.returncode == 0, (
        f"exit {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    )
    return str(proc.stdout)


def _crd_names(path: Path) -> list[str]:
    return [
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(path.read_text())
        if doc and doc.get("kind") == "CustomResourceDefinition"
    ]


def _established(cluster: Cluster, name: str) -> bool:
    crd = json.loads(_ok(cluster.kubectl("get", "crd", name, "-o", "json")))
    conditions = crd.get("status", {}).get("conditions", [])
    return any(c["type"] == "Established" and c["status"] == "True" for c in conditions)


def _controller_work(cluster: Cluster, namespace: str) -> str:
    """What kube-controller-manager has put in the namespace so far (its ServiceAccounts and
    the root CA ConfigMap), with resource versions: a wait on one of them goes on while the
    controllers are still at work there."""
    listed = cluster.kubectl(
        "-n",
        namespace,
        "get",
        "serviceaccounts,configmaps",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion} {end}",
    )
    return listed.stdout or listed.stderr


def _admin_ca_file(cluster: Cluster) -> str:
    """The CA file named in the admin kubeconfig."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    return str(config["clusters"][0]["cluster"]["certificate-authority"])


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"lgtest-{uuid.uuid4().hex[:8]}"
    _ok(cluster.kubectl("create", "namespace", name))
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture
def backend() -> Iterator[tuple[str, int, str]]:
    """An HTTP server on 127.0.0.2 answering every GET with a unique body; yields
    (host, port, body)."""
    body = f"backend-{uuid.uuid4().hex[:8]}"

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = body.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.2", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.2", server.server_address[1], body
    server.shutdown()
    server.server_close()


def _answer(traefik: Traefik, host: str) -> str:
    """Traefik's answer for the host on its web entry point: status and body, or the error."""
    try:
        r = httpx.get(traefik.web_url, headers={"Host": host}, timeout=2)
    except httpx.HTTPError as exc:
        return repr(exc)
    return f"{r.status_code} {r.text}"


def _loaded(traefik: Traefik, marker: str) -> dict[str, Any]:
    """What Traefik has loaded (its API's raw data) of the routers and services whose names
    hold `marker`, with their status."""
    raw = httpx.get(f"{traefik.api_url}/api/rawdata", timeout=5).json()
    return {
        name: entry
        for kind in ("routers", "services")
        for name, entry in (raw.get(kind) or {}).items()
        if marker in name
    }


def _wait_routed(traefik: Traefik, host: str, body: str, marker: str, what: str) -> None:
    """Until Traefik answers `host` with the backend's `body`. No wall-clock limit: the wait
    goes on while what Traefik has loaded under `marker` or its answers change."""
    last = [""]  # the latest answer, for the progress

    def routed() -> bool:
        last[0] = _answer(traefik, host)
        return last[0] == f"200 {body}"

    wait_for(what, routed, lambda: (_loaded(traefik, marker), last[0]))


# --- control plane ---------------------------------------------------------------------------


def test_kubectl_lists_namespaces_with_written_kubeconfig(cluster: Cluster) -> None:
    names = _ok(cluster.kubectl("get", "namespaces", "-o", "name")).split()
    assert "namespace/default" in names
    assert "namespace/kube-system" in names


def test_kubectl_and_server_report_the_built_version(cluster: Cluster) -> None:
    versions = json.loads(_ok(cluster.kubectl("version", "-o", "json")))
    want = tool_version("kubectl")
    assert versions["clientVersion"]["gitVersion"] == want
    assert versions["serverVersion"]["gitVersion"] == want


def test_python_api_client_talks_to_the_server(cluster: Cluster) -> None:
    with cluster.api_client() as api:
        namespaces = k8s.CoreV1Api(api).list_namespace()
        assert api.configuration.host == cluster.server
    assert "kube-system" in {ns.metadata.name for ns in namespaces.items if ns.metadata}


def test_controller_manager_creates_service_accounts_with_working_tokens(
    cluster: Cluster, namespace: str
) -> None:
    # The `default` ServiceAccount appears only if kube-controller-manager runs.
    wait_for(
        "the default ServiceAccount",
        lambda: (
            cluster.kubectl("-n", namespace, "get", "serviceaccount", "default").returncode == 0
        ),
        lambda: _controller_work(cluster, namespace),
    )
    token = _ok(cluster.kubectl("-n", namespace, "create", "token", "default")).strip()
    ca = _admin_ca_file(cluster)
    whoami = _ok(
        cluster.kubectl(
            "--kubeconfig=/dev/null",
            f"--server={cluster.server}",
            f"--certificate-authority={ca}",
            f"--token={token}",
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        )
    )
    assert whoami == f"system:serviceaccount:{namespace}:default"


def test_rbac_denies_a_service_account_without_bindings(cluster: Cluster, namespace: str) -> None:
    _ok(cluster.kubectl("-n", namespace, "create", "serviceaccount", "nobody"))
    user = f"system:serviceaccount:{namespace}:nobody"
    denied = cluster.kubectl("-n", namespace, "auth", "can-i", "list", "secrets", f"--as={user}")
    assert denied.stdout.strip() == "no", denied.stderr
    assert denied.returncode != 0

    # The same question after a binding: the answer comes from RBAC, not from a blanket "no".
    _ok(
        cluster.kubectl(
            "-n", namespace, "create", "role", "read-secrets", "--verb=list", "--resource=secrets"
        )
    )
    _ok(
        cluster.kubectl(
            "-n",
            namespace,
            "create",
            "rolebinding",
            "nobody-reads",
            "--role=read-secrets",
            f"--serviceaccount={namespace}:nobody",
        )
    )
    allowed = cluster.kubectl("-n", namespace, "auth", "can-i", "list", "secrets", f"--as={user}")
    assert allowed.stdout.strip() == "yes", allowed.stderr
    # and only in that namespace
    elsewhere = cluster.kubectl("-n", "default", "auth", "can-i", "list", "secrets", f"--as={user}")
    assert elsewhere.stdout.strip() == "no"


# --- CRDs ------------------------------------------------------------------------------------


def test_traefik_crds_are_established(cluster: Cluster) -> None:
    names = _crd_names(tool_dir("traefik") / "crds" / "kubernetes-crd-definition-v1.yml")
    assert "ingressroutes.traefik.io" in names
    assert "traefikservices.traefik.io" in names
    not_established = [n for n in names if not _established(cluster, n)]
    assert not not_established, f"not Established: {not_established}"


def test_lockgate_crds_are_established(cluster: Cluster) -> None:
    crds_dir = Path(os.environ.get("LOCKGATE_CRDS_DIR", REPO_ROOT / "crds"))  # as hack/cluster
    files = sorted(crds_dir.glob("*.yaml"))
    names = [n for f in files for n in _crd_names(f)]
    assert {"applications.lockgate.dev", "deployments.lockgate.dev"} <= set(names), (
        f"{crds_dir} lacks lockgate's CustomResourceDefinitions: {names}"
    )
    not_established = [n for n in names if not _established(cluster, n)]
    assert not not_established, f"not Established: {not_established}"


def _invalid_files() -> list[Path | None]:
    files = sorted(INVALID_DIR.glob("*.yaml"))
    return list(files) if files else [None]  # None: a test that fails, not a silent skip


def _field_of(path: Path) -> str:
    first = path.read_text().splitlines()[0] if path.read_text() else ""
    prefix = "# field:"
    assert first.startswith(prefix), f"{path.name}: first line must be '# field: <path>'"
    field = first.removeprefix(prefix).strip()
    assert field, f"{path.name}: empty '# field:' line"
    return field


@pytest.mark.parametrize(
    "path", _invalid_files(), ids=lambda p: p.name if isinstance(p, Path) else "no-files"
)
def test_invalid_input_is_refused_naming_the_field(cluster: Cluster, path: Path | None) -> None:
    if path is None:
        pytest.fail(f"no bad-input corpus: {INVALID_DIR.relative_to(REPO_ROOT)}/*.yaml is empty")
    field = _field_of(path)
    proc = cluster.kubectl("apply", "-f", str(path))
    if proc.returncode == 0:
        cluster.kubectl("delete", "-f", str(path), "--ignore-not-found", "--wait=false")
        pytest.fail(f"{path.name} was accepted:\n{proc.stdout}")
    assert field in proc.stderr, f"{path.name}: error does not name {field!r}:\n{proc.stderr}"


# --- Traefik ---------------------------------------------------------------------------------


def test_traefik_answers_its_api_with_both_providers(traefik: Traefik) -> None:
    version = httpx.get(f"{traefik.api_url}/api/version", timeout=5)
    assert version.status_code == 200
    assert version.json()["Version"].startswith("v3.")
    overview = httpx.get(f"{traefik.api_url}/api/overview", timeout=5).json()
    assert {"KubernetesCRD", "File"} <= set(overview["providers"])


def test_traefik_serves_the_local_gateway_on_its_web_port(
    cluster: Cluster, traefik: Traefik
) -> None:
    """The Gateway API v1.4.1 CRDs are installed, Traefik's KubernetesGateway provider runs,
    and it has programmed Gateway default/traefik on the `web` entry point's port."""
    overview = httpx.get(f"{traefik.api_url}/api/overview", timeout=5).json()
    assert "KubernetesGateway" in overview["providers"]
    api = cluster.api_client()
    crd = k8s.ApiextensionsV1Api(api).read_custom_resource_definition(
        "httproutes.gateway.networking.k8s.io"
    )
    assert crd.metadata.annotations["gateway.networking.k8s.io/bundle-version"] == "v1.4.1"
    assert crd.metadata.annotations["gateway.networking.k8s.io/channel"] == "standard"
    gateway = k8s.CustomObjectsApi(api).get_namespaced_custom_object(
        "gateway.networking.k8s.io",
        "v1",
        traefik.gateway_namespace,
        "gateways",
        traefik.gateway_name,
    )
    (listener,) = gateway["spec"]["listeners"]
    assert f":{listener['port']}" in traefik.web_url
    conditions = {c["type"]: c["status"] for c in gateway["status"]["conditions"]}
    assert conditions.get("Programmed") == "True", gateway["status"]


def test_traefik_serves_prometheus_metrics(traefik: Traefik) -> None:
    r = httpx.get(traefik.metrics_url, timeout=5)
    assert r.status_code == 200
    assert "traefik_config_reloads_total" in r.text


def test_traefik_file_provider_routes_and_labels_metrics_per_service(
    traefik: Traefik, backend: tuple[str, int, str]
) -> None:
    host, port, body = backend
    name = f"lgtest-{uuid.uuid4().hex[:8]}"
    config = {
        "http": {
            "routers": {
                name: {"rule": f"Host(`{name}.test`)", "entryPoints": ["web"], "service": name}
            },
            "services": {name: {"loadBalancer": {"servers": [{"url": f"http://{host}:{port}"}]}}},
        }
    }
    path = traefik.dynamic_dir / f"{name}.yaml"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config))
    tmp.rename(path)  # atomic, so Traefik never reads half a file
    try:
        _wait_routed(traefik, f"{name}.test", body, name, "the file-provider route")
        metrics = httpx.get(traefik.metrics_url, timeout=5).text
        assert f'service="{name}@file"' in metrics
        assert 'entrypoint="web"' in metrics
    finally:
        path.unlink()


def test_traefik_crd_provider_routes_an_ingress_route(
    cluster: Cluster, traefik: Traefik, namespace: str, backend: tuple[str, int, str]
) -> None:
    # An ExternalName Service, because EndpointSlices refuse loopback addresses
    # ("may not be in the loopback range"): a 127.x backend can't be an endpoint.
    host, port, body = backend
    manifest = f"""
apiVersion: v1
kind: Service
metadata: {{name: app, namespace: {namespace}}}
spec:
  type: ExternalName
  externalName: "{host}"
  ports: [{{name: http, port: {port}}}]
---
apiVersion: traefik.io/v1alpha1
kind: IngressRoute
metadata: {{name: app, namespace: {namespace}}}
spec:
  entryPoints: [web]
  routes:
  - match: Host(`{namespace}.crd.test`)
    kind: Rule
    services: [{{name: app, port: {port}}}]
"""
    _ok(cluster.kubectl("apply", "-f", "-", input=manifest))
    _wait_routed(traefik, f"{namespace}.crd.test", body, namespace, "the IngressRoute")
