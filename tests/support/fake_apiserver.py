"""A stand-in kube-apiserver on 127.0.0.1 for the kubectl plugin's unit tests and its bench
(bench/plugin_action.py): it serves objects by path (GET), applies JSON merge patches
(PATCH, honouring metadata.resourceVersion as the real one does: 409 on a stale one),
answers a 404 Status otherwise, and records every request with its arrival time.

With a `Pki` it speaks TLS and, like kube-apiserver with client-certificate auth, asks for a
client certificate signed by the cluster CA and records the common name it saw. The PKI is
made with `cryptography` (already installed: paramiko depends on it), EC P-256 keys.
"""

from __future__ import annotations

import copy
import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

DEPLOYMENTS = "/apis/lockgate.dev/v1alpha1/namespaces/{ns}/deployments/{name}"

# What `kubectl lockgate abort` (promote, retry, pause, resume) has no use for on its way to
# the API server: the kubernetes client, the API models and engine, PyYAML, http.client (and
# the email package), the views and the dashboard, and standard modules that cost more than
# their use there (argparse for the common forms of an action, the json package whose work
# fastjson does, dataclasses pulls in inspect, shutil bz2 and lzma, the idna codec
# unicodedata). A module or package here, or any module under it, fails
# tests/unit/test_footprint.py; bench/import_footprint.py --plugin reports them.
NOT_FOR_AN_ACTION = (
    "kubernetes",
    "urllib3",
    "kopf",
    "pydantic",
    "yaml",
    "lockgate.api",
    "lockgate.engine",
    "lockgate.cli.kubectl_view",
    "lockgate.cli.dashboard",
    "lockgate.cli.dashboard_view",
    "lockgate.cli.plan",
    "http",
    "email",
    "urllib",
    "argparse",
    "gettext",
    "json",
    "dataclasses",
    "inspect",
    "typing",
    "tempfile",
    "shutil",
    "pathlib",
    "datetime",
    "encodings.idna",
    "unicodedata",
)


def lockgate_deployment(name: str, namespace: str, phase: str = "Paused") -> dict[str, Any]:
    return {
        "apiVersion": "lockgate.dev/v1alpha1",
        "kind": "Deployment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": "7",
            "generation": 1,
        },
        "spec": {"application": "web", "image": "demo:v2"},
        "status": {"phase": phase, "observedGeneration": 1},
    }


SERVER_NAME = "apiserver.lockgate.test"  # the server certificate's name besides 127.0.0.1


@dataclass
class Pki:
    """A cluster CA, a server certificate for 127.0.0.1 and SERVER_NAME and a client
    certificate, as PEM files in `directory` (ca.crt, server.crt/.key, client.crt/.key)."""

    directory: Path
    client_cn: str = "admin"

    def __post_init__(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
            (self.directory / f"{stem}.crt").write_bytes(
                cert.public_bytes(serialization.Encoding.PEM)
            )
            (self.directory / f"{stem}.key").write_bytes(
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
            )

        now = datetime.datetime.now(datetime.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())

        def issue(
            subject: str, key: ec.EllipticCurvePrivateKey, *, ca: bool = False, server: bool = False
        ) -> x509.Certificate:
            builder = (
                x509.CertificateBuilder()
                .subject_name(name(subject))
                .issuer_name(name("fake-cluster-ca"))
                .public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            )
            if server:
                builder = builder.add_extension(
                    x509.SubjectAlternativeName(
                        [
                            x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                            x509.DNSName(SERVER_NAME),
                        ]
                    ),
                    critical=False,
                )
            return builder.sign(ca_key, hashes.SHA256())

        self.directory.mkdir(parents=True, exist_ok=True)
        write("ca", issue("fake-cluster-ca", ca_key, ca=True), ca_key)
        server_key = ec.generate_private_key(ec.SECP256R1())
        write("server", issue("127.0.0.1", server_key, server=True), server_key)
        client_key = ec.generate_private_key(ec.SECP256R1())
        write("client", issue(self.client_cn, client_key), client_key)

    def path(self, stem: str) -> Path:
        return self.directory / stem


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any
    at: float  # time.monotonic() when the request (line and headers) had arrived
    client_cn: str | None  # the client certificate's common name, over TLS
    peer: tuple[str, int]  # the client's address and port: one per connection


@dataclass
class FakeApiServer:
    """Serves `objects` (path -> object) until `stop()`; `seen` lists what arrived."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    pki: Pki | None = None
    chunked: bool = False  # answer with Transfer-Encoding: chunked (as for big lists)
    seen: list[Seen] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        assert self._server is not None
        scheme = "https" if self.pki else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeApiServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as kube-apiserver
            # TCP_NODELAY, as Go sets it: otherwise a body written after its headers waits
            # for the client's delayed ACK (40 ms a call).
            disable_nagle_algorithm = True

            def _record(self) -> Any:
                at = time.monotonic()
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                cn = None
                if isinstance(self.connection, ssl.SSLSocket):
                    peer = self.connection.getpeercert() or {}
                    for rdn in peer.get("subject", ()):
                        for key, value in rdn:
                            cn = value if key == "commonName" else cn
                seen = Seen(
                    self.command, self.path, dict(self.headers), body, at, cn, self.client_address
                )
                outer.seen.append(seen)
                return body

            def _answer(self, code: int, obj: dict[str, Any]) -> None:
                raw = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                if outer.chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for i in range(0, len(raw), 100):
                        piece = raw[i : i + 100]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.write(b"0\r\n\r\n")
                else:
                    self.send_header("Content-Length", str(len(raw)))
                    self.end_headers()
                    self.wfile.write(raw)

            def _missing(self, path: str) -> None:
                parts = path.rstrip("/").split("/")
                message = (
                    f'{parts[-2]}.{parts[2]} "{parts[-1]}" not found' if len(parts) > 3 else ""
                )
                self._answer(
                    404,
                    {"kind": "Status", "status": "Failure", "message": message, "code": 404},
                )

            def do_GET(self) -> None:
                self._record()
                path = self.path.split("?")[0]
                if path in outer.objects:
                    self._answer(200, outer.objects[path])
                else:
                    self._missing(path)

            def do_PATCH(self) -> None:
                patch = self._record()
                path = self.path.split("?")[0]
                if path not in outer.objects:
                    return self._missing(path)
                obj = outer.objects[path]
                wanted = ((patch or {}).get("metadata") or {}).get("resourceVersion")
                if wanted is not None and wanted != obj["metadata"]["resourceVersion"]:
                    return self._answer(409, {"kind": "Status", "code": 409, "reason": "Conflict"})
                merged = merge_patch(obj, patch)
                merged["metadata"]["resourceVersion"] = str(
                    int(obj["metadata"]["resourceVersion"]) + 1
                )
                outer.objects[path] = merged
                self._answer(200, merged)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        if self.pki is not None:
            context = ssl.create_default_context(
                ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki.path("ca.crt"))
            )
            context.load_cert_chain(self.pki.path("server.crt"), self.pki.path("server.key"))
            context.verify_mode = ssl.CERT_OPTIONAL  # token users bring no certificate
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @contextmanager
    def running(self) -> Iterator[FakeApiServer]:
        self.start()
        try:
            yield self
        finally:
            self.stop()


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def write_kubeconfig(
    path: Path,
    server: str,
    user: dict[str, Any],
    *,
    namespace: str | None = "ns1",
    cluster: dict[str, Any] | None = None,
) -> Path:
    """A kubeconfig of one context `ctx` (cluster `c`, user `u`), as YAML."""
    import yaml

    context: dict[str, Any] = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server, **(cluster or {})}}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "ctx", "context": context}],
        "current-context": "ctx",
    }
    path.write_text(yaml.safe_dump(config))
    return path
