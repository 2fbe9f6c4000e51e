"""A small REST client for the plugin's few calls (get, list, merge-patch of lockgate objects).

The kubernetes client takes about half a second to import, longer than the whole of a
`kubectl lockgate abort` should; this one is the standard library plus PyYAML. It reads the
kubeconfig forms that need nothing but TLS and a header: a server with its CA (file or
data, or insecure-skip-tls-verify), and a client certificate, a bearer token (or token
file) or basic auth, plus the in-cluster service account. Anything else (exec or
auth-provider plugins, proxies, several kubeconfig files to merge) returns None from
`light_client`, and the plugin uses the kubernetes client instead.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

IN_CLUSTER = Path("/var/run/secrets/kubernetes.io/serviceaccount")
USER_KEYS = frozenset(
    {
        "client-certificate",
        "client-certificate-data",
        "client-key",
        "client-key-data",
        "token",
        "tokenFile",
        "username",
        "password",
    }
)
CLUSTER_KEYS = frozenset(
    {
        "server",
        "certificate-authority",
        "certificate-authority-data",
        "insecure-skip-tls-verify",
        "tls-server-name",
        "extensions",
    }
)


class RestError(Exception):
    """An HTTP error answer, shaped like the kubernetes client's ApiException (status,
    reason, body), so one explanation serves both."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason
        self.body = body


@dataclass
class Rest:
    """One API server: where, how to trust it, and the headers that authenticate."""

    host: str
    ssl_context: ssl.SSLContext | None
    headers: dict[str, str] = field(default_factory=dict)
    namespace: str | None = None  # the context's namespace (or the service account's)
    _conn: http.client.HTTPConnection | None = field(default=None, repr=False)

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        *,
        query: dict[str, str] | None = None,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        """One call; the decoded JSON answer. Raises RestError on an HTTP error, OSError
        (socket, TLS, timeout) when the server cannot be reached."""
        url = urlsplit(self.host)
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json", **self.headers}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/merge-patch+json"
        for attempt in (1, 2):  # a kept-alive connection the server closed: once more
            conn = self._connection(url.scheme, url.netloc, timeout)
            try:
                conn.request(method, (url.path.rstrip("/") + path), body=data, headers=headers)
                answer = conn.getresponse()
                raw = answer.read()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        if answer.status >= 400:
            raise RestError(answer.status, answer.reason, raw.decode(errors="replace"))
        result: dict[str, Any] = json.loads(raw or b"{}")
        return result

    def _connection(self, scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if scheme == "https":
                self._conn = http.client.HTTPSConnection(
                    netloc, timeout=timeout, context=self.ssl_context
                )
            else:
                self._conn = http.client.HTTPConnection(netloc, timeout=timeout)
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def light_client(kubeconfig: str | None, context: str | None) -> Rest | None:
    """A Rest for the kubeconfig's context (or the service account in a Pod when there is no
    kubeconfig), or None when it needs what only the kubernetes client can do, or cannot be
    read: the caller then asks the kubernetes client, which reports what is wrong."""
    try:
        return _from_kubeconfig(kubeconfig, context)
    except Exception:  # whatever it is, the kubernetes client reports it in its words
        return None


def _from_kubeconfig(kubeconfig: str | None, context: str | None) -> Rest | None:
    import yaml

    path = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
    if os.pathsep in path:  # several files to merge
        return None
    file = Path(path).expanduser()
    if not file.exists():
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return _in_cluster()
        return None
    config = yaml.load(file.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    chosen = context or config.get("current-context")
    ctx = _named(config.get("contexts"), chosen)["context"]
    cluster = _named(config.get("clusters"), ctx["cluster"])["cluster"]
    user = _named(config.get("users"), ctx.get("user"))["user"] if ctx.get("user") else {}
    user = user or {}
    if set(cluster) - CLUSTER_KEYS or set(user) - USER_KEYS:
        return None  # exec, auth-provider, proxy-url, impersonation...: the full client
    base = file.parent
    server = cluster["server"]
    headers: dict[str, str] = {}
    token = user.get("token")
    if token is None and user.get("tokenFile"):
        token = (base / user["tokenFile"]).read_text().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user.get("username") is not None:
        pair = f"{user['username']}:{user.get('password', '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    context_ssl = None
    if server.startswith("https"):
        context_ssl = _ssl_context(cluster, user, base)
    return Rest(server, context_ssl, headers, ctx.get("namespace"))


def _in_cluster() -> Rest | None:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    token = IN_CLUSTER / "token"
    if not (host and port and token.exists()):
        return None
    context_ssl = ssl.create_default_context(cafile=str(IN_CLUSTER / "ca.crt"))
    namespace_file = IN_CLUSTER / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.exists() else None
    server = f"https://{f'[{host}]' if ':' in host else host}:{port}"
    headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
    return Rest(server, context_ssl, headers, namespace)


def _named(items: list[dict[str, Any]] | None, name: str | None) -> dict[str, Any]:
    found = next((i for i in items or [] if i.get("name") == name), None)
    if found is None:
        raise KeyError(name)
    return found


def _ssl_context(cluster: dict[str, Any], user: dict[str, Any], base: Path) -> ssl.SSLContext:
    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        context = ssl.create_default_context(cadata=pem)
    elif cluster.get("certificate-authority"):
        context = ssl.create_default_context(cafile=str(base / cluster["certificate-authority"]))
    else:
        context = ssl.create_default_context()
    if cluster.get("tls-server-name"):
        raise ValueError("tls-server-name: the kubernetes client handles it")
    cert = _pem(user, "client-certificate", base)
    key = _pem(user, "client-key", base)
    if cert is not None and key is not None:
        with _files(cert, key) as (cert_file, key_file):
            context.load_cert_chain(cert_file, key_file)
    return context


def _pem(user: dict[str, Any], key: str, base: Path) -> bytes | None:
    if user.get(f"{key}-data"):
        return base64.b64decode(str(user[f"{key}-data"]))
    if user.get(key):
        return bytes((base / user[key]).read_bytes())
    return None


@contextmanager
def _files(*contents: bytes) -> Iterator[list[str]]:
    """ssl loads a certificate and key from files only: private ones, removed at once."""
    with tempfile.TemporaryDirectory(prefix="lockgate-") as directory:
        paths = []
        for i, content in enumerate(contents):
            path = Path(directory) / f"{i}.pem"
            path.touch(mode=0o600)
            path.write_bytes(content)
            paths.append(str(path))
        yield paths
