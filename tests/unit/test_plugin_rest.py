"""The plugin's light REST client (lockgate/cli/rest.py): which kubeconfigs it serves, what it
sends, how answers and errors come back, and that an action does not import the kubernetes
client (its import alone took longer than the whole action should)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.cli.rest import RestError, light_client

DEPLOYMENT = {
    "apiVersion": "lockgate.dev/v1alpha1",
    "kind": "Deployment",
    "metadata": {"name": "web-v2", "namespace": "ns1", "resourceVersion": "7", "generation": 1},
    "spec": {"application": "web", "image": "demo:v2"},
    "status": {"phase": "Paused", "observedGeneration": 1},
}


class FakeApiServer(BaseHTTPRequestHandler):
    """Serves one Deployment; records every request (method, path, headers, body)."""

    seen: list[dict[str, Any]]

    def _answer(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length)) if length else None
        self.seen.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "body": body}
        )

    def do_GET(self) -> None:
        self._record()
        if self.path.endswith("/deployments/web-v2"):
            self._answer(200, DEPLOYMENT)
        else:
            name = self.path.rsplit("/", 1)[-1]
            message = f'deployments.lockgate.dev "{name}" not found'
            self._answer(404, {"kind": "Status", "message": message, "reason": "NotFound"})

    def do_PATCH(self) -> None:
        self._record()
        self._answer(200, DEPLOYMENT)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def apiserver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []
    handler = type("Handler", (FakeApiServer,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def kubeconfig(path: Path, server: str, user: dict[str, Any], **cluster: Any) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
                "users": [{"name": "u", "user": user}],
                "contexts": [
                    {"name": "ctx", "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}
                ],
                "current-context": "ctx",
            }
        )
    )
    return path


def test_token_and_token_file_kubeconfigs_are_served_with_a_bearer_header(tmp_path: Path) -> None:
    rest = light_client(str(kubeconfig(tmp_path / "a", "http://x:1", {"token": "abc"})), None)
    assert rest is not None and rest.headers["Authorization"] == "Bearer abc"
    assert rest.namespace == "ns1"
    (tmp_path / "token").write_text("from-file\n")
    config = kubeconfig(tmp_path / "b", "http://x:1", {"tokenFile": "token"})  # relative
    rest = light_client(str(config), None)
    assert rest is not None and rest.headers["Authorization"] == "Bearer from-file"


@pytest.mark.parametrize(
    ("user", "cluster"),
    [
        ({"exec": {"command": "get-token", "apiVersion": "client.authentication.k8s.io/v1"}}, {}),
        ({"auth-provider": {"name": "oidc"}}, {}),
        ({"token": "t"}, {"proxy-url": "http://proxy:3128"}),
    ],
)
def test_what_only_the_kubernetes_client_does_is_left_to_it(
    tmp_path: Path, user: dict[str, Any], cluster: dict[str, Any]
) -> None:
    assert (
        light_client(str(kubeconfig(tmp_path / "c", "https://x:1", user, **cluster)), None) is None
    )


def test_an_unreadable_kubeconfig_is_left_to_the_kubernetes_client(tmp_path: Path) -> None:
    (tmp_path / "broken").write_text("clusters: [")
    assert light_client(str(tmp_path / "broken"), None) is None
    assert light_client(str(tmp_path / "missing"), None) is None
    config = kubeconfig(tmp_path / "d", "http://x:1", {"token": "t"})
    assert light_client(str(config), "no-such-context") is None


def test_get_and_merge_patch_reach_the_server_as_sent(
    tmp_path: Path, apiserver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = apiserver
    rest = light_client(str(kubeconfig(tmp_path / "k", url, {"token": "abc"})), None)
    assert rest is not None
    path = "/apis/lockgate.dev/v1alpha1/namespaces/ns1/deployments/web-v2"
    assert rest.request("GET", path)["metadata"]["name"] == "web-v2"
    patch = {"metadata": {"annotations": {"lockgate.dev/action": "abort"}}}
    rest.request("PATCH", path, patch)
    assert [s["method"] for s in seen] == ["GET", "PATCH"]
    assert seen[1]["body"] == patch
    assert seen[1]["headers"]["Content-Type"] == "application/merge-patch+json"
    assert all(s["headers"]["Authorization"] == "Bearer abc" for s in seen)
    with pytest.raises(RestError) as err:
        rest.request("GET", path.replace("web-v2", "gone"))
    assert err.value.status == 404
    assert json.loads(err.value.body)["message"] == 'deployments.lockgate.dev "gone" not found'


def test_an_abort_lands_without_importing_the_kubernetes_client(
    tmp_path: Path, apiserver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, seen = apiserver
    config = kubeconfig(tmp_path / "k", url, {"token": "abc"})
    script = (
        "import sys\n"
        "from lockgate.cli.main import main\n"
        f"code = main(['--kubeconfig', {str(config)!r}, 'abort', 'web-v2', '--no-wait'])\n"
        "print(code, 'kubernetes' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    assert out.splitlines()[-1] == "0 False", out
    patches = [s for s in seen if s["method"] == "PATCH"]
    assert patches[0]["body"]["metadata"]["annotations"] == {"lockgate.dev/action": "abort"}
    assert patches[0]["body"]["metadata"]["resourceVersion"] == "7"
    assert patches[0]["path"] == "/apis/lockgate.dev/v1alpha1/namespaces/ns1/deployments/web-v2"


def test_a_missing_deployment_is_named_by_the_light_client_too(
    tmp_path: Path, apiserver: tuple[str, list[dict[str, Any]]], capsys: pytest.CaptureFixture[str]
) -> None:
    from lockgate.cli.main import main

    url, _ = apiserver
    config = kubeconfig(tmp_path / "k", url, {"token": "abc"})
    assert main(["--kubeconfig", str(config), "abort", "gone", "--no-wait"]) == 1
    err = capsys.readouterr().err
    assert err.strip() == 'error: deployments.lockgate.dev "gone" not found in namespace "ns1"'
