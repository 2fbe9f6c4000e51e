"""The plugin's light REST client (lockgate/cli/rest.py): which kubeconfigs it serves, what it
sends, how answers and errors come back, and that an action does not import the kubernetes
client (its import alone took longer than the whole action should)."""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.cli.rest import Rest, RestError, light_client
from tests.support.fake_apiserver import (
    DEPLOYMENTS,
    SERVER_NAME,
    Pki,
    lockgate_deployment,
    write_kubeconfig,
)
from tests.support.fake_apiserver import FakeApiServer as StandIn

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
        # an exec API version the light client does not speak (removed from client-go)
        ({"exec": {"command": "t", "apiVersion": "client.authentication.k8s.io/v1alpha1"}}, {}),
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


# ------------------------------------------ over TLS, as kube-apiserver (tests/support)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[StandIn]:
    pki = Pki(tmp_path / "pki")
    with StandIn(pki=pki).running() as server:
        server.objects[WEB_V2] = lockgate_deployment("web-v2", "ns1")
        yield server


WEB_V2 = DEPLOYMENTS.format(ns="ns1", name="web-v2")


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def abort(config: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    from lockgate.cli.main import main

    code = main(["--kubeconfig", str(config), "abort", "web-v2", "--no-wait"])
    return code, capsys.readouterr().err


@pytest.mark.parametrize("form", ["files", "data"])
def test_client_certificates_and_the_ca_in_files_or_inline_authenticate_over_tls(
    tmp_path: Path, tls_server: StandIn, form: str, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tls_server.pki
    assert pki is not None
    if form == "files":  # relative to the kubeconfig's directory, as kubectl reads them
        user = {"client-certificate": "pki/client.crt", "client-key": "pki/client.key"}
        cluster = {"certificate-authority": "pki/ca.crt"}
    else:
        user = {
            "client-certificate-data": b64(pki.path("client.crt")),
            "client-key-data": b64(pki.path("client.key")),
        }
        cluster = {"certificate-authority-data": b64(pki.path("ca.crt"))}
    config = write_kubeconfig(tmp_path / "kubeconfig", tls_server.url, user, cluster=cluster)
    assert light_client(str(config), None) is not None  # not left to the kubernetes client
    assert abort(config, capsys) == (0, "")
    assert [(s.method, s.client_cn) for s in tls_server.seen] == [
        ("GET", "admin"),
        ("PATCH", "admin"),
    ]
    assert {s.headers["User-Agent"] for s in tls_server.seen} == {"kubectl-lockgate/0.1.0"}
    assert len({s.peer for s in tls_server.seen}) == 1  # one kept-alive connection


def test_an_unknown_ca_is_refused_naming_the_server(
    tmp_path: Path, tls_server: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    other = Pki(tmp_path / "other")
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        tls_server.url,
        {"token": "t"},
        cluster={"certificate-authority": str(other.path("ca.crt"))},
    )
    code, err = abort(config, capsys)
    assert code == 1
    assert err.startswith(f"error: cannot reach the cluster at {tls_server.url}: ")
    assert "CERTIFICATE_VERIFY_FAILED" in err
    assert tls_server.seen == []


@pytest.mark.parametrize(("name", "lands"), [(SERVER_NAME, True), ("elsewhere.test", False)])
def test_tls_server_name_is_the_name_the_certificate_is_checked_against(
    tmp_path: Path,
    tls_server: StandIn,
    name: str,
    lands: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The server's certificate names 127.0.0.1 and SERVER_NAME: reached at 127.0.0.1 with
    another tls-server-name, it must be refused."""
    pki = tls_server.pki
    assert pki is not None
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        tls_server.url,
        {"token": "t"},
        cluster={"certificate-authority": str(pki.path("ca.crt")), "tls-server-name": name},
    )
    rest = light_client(str(config), None)
    assert rest is not None  # served by the light client, not handed to the kubernetes one
    code, err = abort(config, capsys)
    if lands:
        assert (code, err) == (0, "")
        assert [s.method for s in tls_server.seen] == ["GET", "PATCH"]
    else:
        assert code == 1 and "elsewhere.test" in err and "CERTIFICATE_VERIFY_FAILED" in err


def test_several_kubeconfig_files_merge_as_kubectl_merges_them(
    tmp_path: Path,
    tls_server: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """KUBECONFIG=a:missing:b: the first file to name a context, cluster or user (or a
    current-context) wins, a missing file is skipped, and relative paths are relative to
    the file that holds them."""
    pki = tls_server.pki
    assert pki is not None
    first = tmp_path / "first"
    first.write_text(
        yaml.safe_dump(
            {
                "current-context": "ctx",
                "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
                "users": [{"name": "u", "user": {"client-certificate": "nowhere.crt"}}],
            }
        )
    )
    (tmp_path / "second").mkdir()
    second = tmp_path / "second" / "config"
    second.write_text(
        yaml.safe_dump(
            {
                "current-context": "other",
                "contexts": [
                    {"name": "ctx", "context": {"cluster": "x", "user": "x"}},
                    {"name": "other", "context": {"cluster": "x", "user": "x"}},
                ],
                "clusters": [
                    {
                        "name": "c",
                        "cluster": {
                            "server": tls_server.url,
                            "certificate-authority-data": b64(pki.path("ca.crt")),
                        },
                    }
                ],
                "users": [{"name": "u", "user": {"token": "shadowed"}}],
            }
        )
    )
    # the user `u` of the first file wins: give it what it needs, relative to that file
    first.write_text(
        first.read_text().replace(
            "client-certificate: nowhere.crt",
            "client-certificate: pki/client.crt\n    client-key: pki/client.key",
        )
    )
    monkeypatch.setenv(
        "KUBECONFIG", os.pathsep.join([str(first), str(tmp_path / "gone"), str(second)])
    )
    rest = light_client(None, None)
    assert rest is not None and rest.host == tls_server.url
    assert "Authorization" not in rest.headers  # not the second file's `u`
    from lockgate.cli.main import main

    assert main(["abort", "web-v2", "-n", "ns1", "--no-wait"]) == 0
    assert [s.client_cn for s in tls_server.seen] == ["admin", "admin"]


@pytest.mark.parametrize(
    "text",
    [
        # JSON (also YAML)
        '{"apiVersion": "v1", "clusters": [{"name": "c", "cluster": {"server": "URL"}}],'
        ' "users": [{"name": "u", "user": {"token": "abc"}}], "contexts": [{"name": "ctx",'
        ' "context": {"cluster": "c", "user": "u", "namespace": "ns1"}}],'
        ' "current-context": "ctx"}',
        # YAML beyond kubeyaml's subset (an anchor, a block scalar): PyYAML reads it
        "clusters: [{name: c, cluster: {server: URL}}]\n"
        "users: [{name: u, user: &u {token: abc}}]\n"
        "contexts: [{name: ctx, context: {cluster: c, user: u, namespace: ns1}}]\n"
        "current-context: ctx\n"
        "preferences:\n  colors: |\n    none\n",
    ],
)
def test_json_and_yaml_beyond_the_subset_are_read_too(
    tmp_path: Path, apiserver: tuple[str, list[dict[str, Any]]], text: str
) -> None:
    url, _ = apiserver
    config = tmp_path / "config"
    config.write_text(text.replace("URL", url))
    rest = light_client(str(config), None)
    assert rest is not None and rest.headers["Authorization"] == "Bearer abc"
    assert rest.namespace == "ns1"
    assert rest.request("GET", WEB_V2)["metadata"]["name"] == "web-v2"


# ---------------------------------------------------- the HTTP/1.1 the client speaks itself


def test_a_chunked_answer_is_read_whole(tmp_path: Path) -> None:
    with StandIn(chunked=True).running() as server:
        big = lockgate_deployment("web-v2", "ns1")
        big["status"]["log"] = [{"message": f"line {i}" * 20} for i in range(200)]
        server.objects[WEB_V2] = big
        config = write_kubeconfig(tmp_path / "k", server.url, {"token": "t"})
        rest = light_client(str(config), None)
        assert rest is not None
        assert rest.request("GET", WEB_V2) == big
        assert rest.request("GET", WEB_V2) == big  # and the connection is still usable
        assert len({s.peer for s in server.seen}) == 1


class CannedServer:
    """A raw TCP server on loopback that answers the n-th request of each connection with
    `answers[connection][n]` (bytes), then closes the connection; records the requests."""

    def __init__(self, answers: list[list[bytes]]) -> None:
        self.answers = answers
        self.requests: list[tuple[int, bytes]] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        for number, answers in enumerate(self.answers):
            conn, _ = self.listener.accept()
            with conn, conn.makefile("rb") as stream:
                for answer in answers:
                    head = b""
                    while not head.endswith(b"\r\n\r\n"):
                        line = stream.readline()
                        if not line:
                            return
                        head += line
                    length = (
                        int(re.search(rb"Content-Length: (\d+)", head).group(1))
                        if b"Content-Length" in head
                        else 0
                    )  # type: ignore[union-attr]
                    self.requests.append((number, head + stream.read(length)))
                    conn.sendall(answer)

    def close(self) -> None:
        self.listener.close()


def ok(body: bytes, *headers: bytes) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n" + b"".join(
        h + b"\r\n" for h in headers
    )
    return head + b"Content-Length: %d\r\n\r\n" % len(body) + body


def test_a_kept_alive_connection_the_server_closed_is_opened_again() -> None:
    """The API server may close an idle kept-alive connection: the next call goes out on a
    new one, once (kube-apiserver closes them after its idle timeout)."""
    server = CannedServer([[ok(b'{"n": 1}')], [ok(b'{"n": 2}')]])
    try:
        rest = Rest(server.url, None, {"Authorization": "Bearer t"})
        assert rest.request("GET", "/a") == {"n": 1}
        assert rest.request("PATCH", "/b", {"x": 1}) == {"n": 2}
    finally:
        server.close()
    first, second = server.requests
    assert first[0] == 0 and first[1].startswith(b"GET /a HTTP/1.1\r\n")
    assert second[0] == 1 and second[1].startswith(b"PATCH /b HTTP/1.1\r\n")
    assert second[1].endswith(b'\r\n\r\n{"x": 1}')
    assert b"Content-Type: application/merge-patch+json" in second[1]
    assert b"Authorization: Bearer t" in second[1]


@pytest.mark.parametrize(
    "answer",
    [
        b"",  # the connection closed without an answer
        b"SSH-2.0-OpenSSH_9.2\r\n",  # not HTTP at all
        b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{}",  # cut short
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk
    ],
)
def test_what_is_not_an_http_answer_is_reported_as_an_unreachable_cluster(
    tmp_path: Path, answer: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    server = CannedServer([[answer]])
    try:
        config = kubeconfig(tmp_path / "k", server.url, {"token": "abc"})
        from lockgate.cli.main import main

        assert main(["--kubeconfig", str(config), "abort", "web-v2", "--no-wait"]) == 1
    finally:
        server.close()
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot reach the cluster at {server.url}: "), err


def test_an_informational_answer_before_the_answer_is_skipped() -> None:
    server = CannedServer(
        [[b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"n": 1}', b"Connection: close")]]
    )
    try:
        rest = Rest(server.url, None)
        assert rest.request("GET", "/a") == {"n": 1}
    finally:
        server.close()


# --------------------------------------------------------------- exec credential plugins

PLUGIN = """#!{python}
import json, os, sys
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open(os.environ["RECORD"], "a") as record:
    record.write(json.dumps({{"args": sys.argv[1:], "info": info,
                              "region": os.environ.get("REGION")}}) + "\\n")
mode = sys.argv[1]
if mode == "fail":
    print("token expired: log in again", file=sys.stderr)
    sys.exit(3)
status = {{"token": "from-plugin"}} if mode == "token" else {{
    "clientCertificateData": open(sys.argv[2]).read(),
    "clientKeyData": open(sys.argv[3]).read()}}
print(json.dumps({{"apiVersion": info["apiVersion"], "kind": "ExecCredential", "status": status}}))
"""


def exec_user(tmp_path: Path, *args: str, **extra: Any) -> dict[str, Any]:
    plugin = tmp_path / "bin" / "get-credential"
    plugin.parent.mkdir(exist_ok=True)
    plugin.write_text(PLUGIN.format(python=sys.executable))
    plugin.chmod(0o755)
    spec = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "bin/get-credential",  # relative to the kubeconfig, as kubectl resolves it
        "args": list(args),
        "env": [
            {"name": "RECORD", "value": str(tmp_path / "record")},
            {"name": "REGION", "value": "eu-1"},
        ],
        "interactiveMode": "Never",
        **extra,
    }
    return {"exec": spec}


def runs(tmp_path: Path) -> list[dict[str, Any]]:
    record = tmp_path / "record"
    return [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []


def test_an_exec_plugins_token_is_sent_and_it_runs_once(
    tmp_path: Path, tls_server: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tls_server.pki
    assert pki is not None
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        tls_server.url,
        exec_user(tmp_path, "token", "--cluster-name", "shop", provideClusterInfo=True),
        cluster={"certificate-authority": "pki/ca.crt"},
    )
    assert abort(config, capsys) == (0, "")
    assert [s.headers["Authorization"] for s in tls_server.seen] == ["Bearer from-plugin"] * 2
    assert {s.headers["User-Agent"] for s in tls_server.seen} == {"kubectl-lockgate/0.1.0"}
    (run,) = runs(tmp_path)
    assert run["args"] == ["token", "--cluster-name", "shop"]
    assert run["region"] == "eu-1"
    info = run["info"]
    assert info["apiVersion"] == "client.authentication.k8s.io/v1"
    assert info["kind"] == "ExecCredential"
    assert info["spec"]["interactive"] is False
    cluster = info["spec"]["cluster"]
    assert cluster["server"] == tls_server.url
    assert (
        base64.b64decode(cluster["certificate-authority-data"]) == pki.path("ca.crt").read_bytes()
    )


def test_an_exec_plugins_client_certificate_authenticates(
    tmp_path: Path, tls_server: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    pki = tls_server.pki
    assert pki is not None
    user = exec_user(tmp_path, "certs", str(pki.path("client.crt")), str(pki.path("client.key")))
    user["exec"]["apiVersion"] = "client.authentication.k8s.io/v1beta1"
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        tls_server.url,
        user,
        cluster={"certificate-authority": "pki/ca.crt"},
    )
    assert abort(config, capsys) == (0, "")
    assert [s.client_cn for s in tls_server.seen] == ["admin", "admin"]
    assert "Authorization" not in tls_server.seen[0].headers
    assert "cluster" not in runs(tmp_path)[0]["info"]["spec"]  # not asked for


def test_a_failing_exec_plugin_is_named_and_runs_once(
    tmp_path: Path, tls_server: StandIn, capfd: pytest.CaptureFixture[str]
) -> None:
    from lockgate.cli.main import main

    config = write_kubeconfig(tmp_path / "kubeconfig", tls_server.url, exec_user(tmp_path, "fail"))
    assert main(["--kubeconfig", str(config), "abort", "web-v2", "--no-wait"]) == 1
    err = capfd.readouterr().err
    plugin = tmp_path / "bin" / "get-credential"
    assert "token expired: log in again" in err  # the plugin's own words, passed through
    assert f"error: exec plugin '{plugin}' failed with exit code 3" in err
    assert len(runs(tmp_path)) == 1  # not run again by the kubernetes client
    assert tls_server.seen == []


def test_a_missing_exec_plugin_shows_its_install_hint(
    tmp_path: Path, tls_server: StandIn, capsys: pytest.CaptureFixture[str]
) -> None:
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": "lockgate-no-such-credential-plugin",
            "installHint": "install it with: apt install no-such-plugin",
            "interactiveMode": "Never",
        }
    }
    config = write_kubeconfig(tmp_path / "kubeconfig", tls_server.url, user)
    code, err = abort(config, capsys)
    assert code == 1
    assert err.startswith("error: exec plugin 'lockgate-no-such-credential-plugin' could not run")
    assert "install it with: apt install no-such-plugin" in err


def test_the_program_prints_and_exits_as_its_action_says(
    tmp_path: Path, tls_server: StandIn
) -> None:
    """Run as the program kubectl runs (which ends without the interpreter's finalization):
    what it printed arrives whole through pipes, and the exit code is the action's."""
    pki = tls_server.pki
    assert pki is not None
    config = write_kubeconfig(
        tmp_path / "kubeconfig",
        tls_server.url,
        {"client-certificate": "pki/client.crt", "client-key": "pki/client.key"},
        cluster={"certificate-authority": "pki/ca.crt"},
    )
    program = str(Path(sys.executable).with_name("kubectl-lockgate"))
    # (buffered output, as a user's shell gives it: this environment sets PYTHONUNBUFFERED)
    env = {**os.environ, "KUBECONFIG": str(config)}
    env.pop("PYTHONUNBUFFERED", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([program, *args], env=env, capture_output=True, text=True)

    landed = run("abort", "web-v2", "--no-wait")
    assert (landed.returncode, landed.stdout, landed.stderr) == (
        0,
        "abort requested for web-v2 (it was Paused)\n",
        "",
    )
    again = run("abort", "web-v2", "--no-wait")  # the annotation is still on it
    assert again.returncode == 1
    assert again.stdout == ""
    assert again.stderr == (
        "error: web-v2 already has action 'abort' waiting for the operator "
        "(is the operator running?)\n"
    )


def test_in_a_pod_without_a_kubeconfig_the_service_account_is_used(
    tmp_path: Path, tls_server: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lockgate.cli import rest

    pki = tls_server.pki
    assert pki is not None
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("pod-token\n")
    (account / "namespace").write_text("shop\n")
    (account / "ca.crt").write_bytes(pki.path("ca.crt").read_bytes())
    monkeypatch.setattr(rest, "IN_CLUSTER", str(account))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "none"))
    host, port = tls_server.url.removeprefix("https://").split(":")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    client = light_client(None, None)
    assert client is not None
    assert (client.host, client.namespace) == (tls_server.url, "shop")
    path = DEPLOYMENTS.format(ns="shop", name="web-v2")
    tls_server.objects[path] = lockgate_deployment("web-v2", "shop")
    assert client.request("GET", path)["metadata"]["namespace"] == "shop"
    assert tls_server.seen[0].headers["Authorization"] == "Bearer pod-token"
    assert light_client(None, "some-context") is None  # a named context needs a kubeconfig


def test_without_memfd_inline_client_keys_go_through_a_private_file_removed_at_once(
    tmp_path: Path,
    tls_server: StandIn,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Where there is no memfd (macOS), an inline certificate and key are written to a
    private temporary file for ssl to load, and removed before the action goes on."""
    import tempfile

    pki = tls_server.pki
    assert pki is not None
    monkeypatch.delattr(os, "memfd_create")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    user = {
        "client-certificate-data": b64(pki.path("client.crt")),
        "client-key-data": b64(pki.path("client.key")),
    }
    cluster = {"certificate-authority-data": b64(pki.path("ca.crt"))}
    config = write_kubeconfig(tmp_path / "kubeconfig", tls_server.url, user, cluster=cluster)
    assert abort(config, capsys) == (0, "")
    assert [s.client_cn for s in tls_server.seen] == ["admin", "admin"]
    assert list(scratch.iterdir()) == []
