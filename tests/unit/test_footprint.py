"""A Kubernetes-only operator does not carry the Docker fleet's client libraries: docker-py
and paramiko (with cryptography's SSH parts, about 18 MiB of RSS) are loaded when a Docker
fleet first connects to a host, not when the operator starts. A kubectl plugin action loads
only what it uses on its way to the API server.

Each check runs in a fresh interpreter: this test process has imported both long ago.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import paramiko

from tests.support.fake_apiserver import (
    DEPLOYMENTS,
    NOT_FOR_AN_ACTION,
    FakeApiServer,
    Pki,
    lockgate_deployment,
    write_kubeconfig,
)

# What `lockgate operator` imports before kopf starts (lockgate.cli.main's run_operator).
OPERATOR_MODULES = (
    "lockgate.cli.main",
    "lockgate.controller",
    "lockgate.controller.handlers",
    "lockgate.controller.process",
    "lockgate.controller.leader",
    "lockgate.election",
)
DOCKER_ONLY = ("docker", "paramiko")

_LOADED = """
import json, sys
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in {docker_only!r})
"""


def _fresh(code: str, stdin: str = "") -> dict[str, object]:
    """Run `code` in a new interpreter; its last stdout line, parsed as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOADED.format(docker_only=DOCKER_ONLY) + code],
        input=stdin,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_starting_the_operator_loads_neither_docker_py_nor_paramiko() -> None:
    code = f"""
import importlib
for name in {OPERATOR_MODULES!r}:
    importlib.import_module(name)
print(json.dumps({{"loaded": loaded()}}))
"""
    assert _fresh(code) == {"loaded": []}


def test_a_docker_fleets_first_connection_loads_them_and_still_names_the_host() -> None:
    """The libraries come in at first use, and a host that cannot be reached is reported as
    before: unix:// and ssh:// (a closed port on loopback), through the operator's modules."""
    key, host_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    private = io.StringIO()
    key.write_private_key(private)
    credentials = {
        "ssh_key": private.getvalue(),
        "known_hosts": f"127.0.0.1 {host_key.get_name()} {host_key.get_base64()}",
    }
    code = """
import asyncio
import lockgate.controller
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.spec import HostSpec

before = loaded()
ssh = HostSpec("web-2", "ssh://deploy@127.0.0.1:1", "127.0.0.1", **json.load(sys.stdin))
conns = HostConnections([HostSpec("web-1", "unix:///nonexistent/docker.sock", "127.0.0.1"), ssh],
                        timeout=10, connect_timeout=5)
errors = {}
for host in conns.names:
    try:
        asyncio.run(conns.ping(host))
    except Exception as exc:
        errors[host] = [type(exc).__name__, str(exc)]
print(json.dumps({"before": before, "after": loaded(), "errors": errors}))
"""
    result = _fresh(code, stdin=json.dumps(credentials))
    assert result["before"] == []
    after = result["after"]
    assert isinstance(after, list) and "docker" in after and "paramiko" in after
    errors = result["errors"]
    assert isinstance(errors, dict)
    assert errors["web-1"][0] == "HostUnavailable"
    assert errors["web-1"][1].startswith("docker host web-1: daemon unreachable")
    assert errors["web-2"][0] == "HostUnavailable"
    assert errors["web-2"][1].startswith("docker host web-2: daemon unreachable")


def test_core_and_apps_calls_send_what_the_typed_client_sends_without_its_models() -> None:
    """Kube's core/v1 and apps/v1 calls answer JSON instead of the client's typed models
    (CoreV1Api and AppsV1Api import about 280 model modules, 24 MiB held from the operator's
    start). Against a stand-in API server on loopback, with the real client: each call puts
    the same request on the wire as the typed call of the same name, the typed API modules
    are never imported, and a 404 is still an ApiException."""
    code = """
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from lockgate.kube import Kube

OBJECTS = {
    "/api/v1/namespaces/ns/services/shop-stable": {"spec": {"selector": {"s": "a"}}},
    "/api/v1/namespaces/ns/secrets/key": {"kind": "Secret", "data": {"k": "dg=="}},
    "/api/v1/namespaces/ns/pods": {"kind": "PodList", "items": [{"metadata": {"name": "p"}}]},
    "/apis/apps/v1/namespaces/ns/deployments/shop-a": {"spec": {
        "replicas": 1, "selector": {"matchLabels": {"s": "a"}},
        "template": {"spec": {"containers": [{"name": "app", "image": "shop:1"}]}}}},
    "/apis/apps/v1/namespaces/ns/deployments/shop-a/scale": {"spec": {"replicas": 3}},
}
requests = []

class Api(BaseHTTPRequestHandler):
    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        requests.append([self.command, self.path, self.headers.get("Content-Type"),
                         self.headers.get("Accept"), self.headers.get("Authorization"),
                         json.loads(body) if body else None])
        path = self.path.split("?")[0]
        found = OBJECTS.get(path)
        code, obj = (200, found) if found else (404, {"kind": "Status", "code": 404})
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = handle_one

    def log_message(self, *args):
        pass

server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
threading.Thread(target=server.serve_forever, daemon=True).start()
conf = client.Configuration(host=f"http://127.0.0.1:{server.server_port}")
conf.api_key = {"BearerToken": "t0ken"}
conf.api_key_prefix = {"BearerToken": "Bearer"}
api = client.ApiClient(conf)
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop-stable"}}
APPLY = {"field_manager": "lockgate", "force": True,
         "_content_type": "application/apply-patch+yaml"}

def calls(core, apps):
    out = [core.read_namespaced_service("shop-stable", "ns"),
           core.patch_namespaced_service("shop-stable", "ns", SERVICE, **APPLY),
           core.read_namespaced_secret("key", "ns"),
           core.list_namespaced_pod("ns", label_selector="app=shop,slot=a"),
           apps.read_namespaced_deployment("shop-a", "ns"),
           apps.patch_namespaced_deployment_scale("shop-a", "ns", {"spec": {"replicas": 3}})]
    try:
        core.read_namespaced_service("gone", "ns")
    except ApiException as err:
        out.append(err.status)
    return out

kube = Kube(api)
answers = calls(kube.core, kube.apps)
typed_modules = sorted(m for m in sys.modules if m.startswith(("kubernetes.client.api.core_v1",
    "kubernetes.client.api.apps_v1", "kubernetes.client.models.v1_pod",
    "kubernetes.client.models.v1_deployment")))
ours, requests[:] = list(requests), []
calls(client.CoreV1Api(api), client.AppsV1Api(api))
print(json.dumps({"answers": answers, "typed_modules": typed_modules,
                  "ours": ours, "typed": requests}))
"""
    result = _fresh(code)
    assert result["typed_modules"] == []
    assert result["ours"] == result["typed"]
    answers = result["answers"]
    assert isinstance(answers, list)
    assert answers[0]["spec"]["selector"] == {"s": "a"}
    assert answers[2]["data"] == {"k": "dg=="}
    assert answers[3]["items"] == [{"metadata": {"name": "p"}}]
    assert answers[4]["spec"]["replicas"] == 1
    assert answers[-1] == 404


def test_a_plugin_action_lands_loading_only_what_it_uses(tmp_path: Path) -> None:
    """`kubectl lockgate abort` should land about as fast as a Go plugin's: a fresh
    interpreter running it, with a kubeconfig as hack/cluster writes it (YAML, the CA and a
    client certificate in files) against a stand-in API server over TLS, sends the GET and
    the PATCH as the client certificate's user and loads none of NOT_FOR_AN_ACTION (the
    kubernetes client, PyYAML, http.client, the views, the dashboard, ...)."""
    pki = Pki(tmp_path / "pki")
    with FakeApiServer(pki=pki).running() as server:
        path = DEPLOYMENTS.format(ns="ns1", name="web-v2")
        server.objects[path] = lockgate_deployment("web-v2", "ns1")
        config = write_kubeconfig(
            tmp_path / "kubeconfig",
            server.url,
            {
                "client-certificate": str(pki.path("client.crt")),
                "client-key": str(pki.path("client.key")),
            },
            cluster={"certificate-authority": str(pki.path("ca.crt"))},
        )
        code = """
import sys
from lockgate.cli.main import main
code = main(["abort", "web-v2", "--no-wait"])
loaded = sorted(sys.modules)
import json
print(json.dumps({"code": code, "loaded": loaded}))
"""
        env = {**os.environ, "KUBECONFIG": str(config)}
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0
    assert [(s.method, s.path, s.client_cn) for s in server.seen] == [
        ("GET", path, "admin"),
        ("PATCH", path, "admin"),
    ]
    annotations = server.seen[1].body["metadata"]["annotations"]
    assert annotations == {"lockgate.dev/action": "abort"}
    unneeded = [
        m
        for m in result["loaded"]
        if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_AN_ACTION)
    ]
    assert unneeded == []
