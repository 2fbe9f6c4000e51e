"""A small REST client for the plugin's few calls (get, list, merge-patch of lockgate objects).

An action (`kubectl lockgate abort NAME`) should land as fast as a Go plugin's: the
kubernetes client takes about half a second to import, and even the standard library's
http.client costs more than the rest of an action (it imports the email package). So this
is a socket, ssl when the server is https, and HTTP/1.1 written and read here: keep-alive,
Content-Length, chunked or close-delimited bodies; the process runs one or two calls.

It reads the kubeconfig forms that need nothing but TLS and a header: a server with its CA
(file or data, or insecure-skip-tls-verify, and tls-server-name), and a client certificate,
a bearer token (or token file), basic auth, or an exec credential plugin (client.authentication
.k8s.io v1 and v1beta1, run as kubectl runs it); several files in KUBECONFIG are merged as
kubectl merges them; with no kubeconfig, the in-cluster service account. Anything else
(auth-provider plugins, proxies, impersonation) returns None from `light_client`, and the
plugin uses the kubernetes client instead.
"""

from __future__ import annotations

import os
import socket

from lockgate import __version__

from . import fastjson as json  # json.loads and json.dumps without the json package

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl
    from typing import Any, BinaryIO

IN_CLUSTER = "/var/run/secrets/kubernetes.io/serviceaccount"
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
        "exec",
        "extensions",
    }
)
EXEC_API_VERSIONS = frozenset(
    {"client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1"}
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
USER_AGENT = f"kubectl-lockgate/{__version__}"
MAX_HEADER_LINE = 65536


class RestError(Exception):
    """An HTTP error answer, shaped like the kubernetes client's ApiException (status,
    reason, body), so one explanation serves both."""

    def __init__(self, status: int, reason: str, body: str) -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status
        self.reason = reason
        self.body = body


class CredentialError(Exception):
    """The kubeconfig's exec credential plugin failed: reported as it is (the kubernetes
    client would run the plugin again only to fail the same way)."""


class MalformedAnswer(ConnectionError):
    """What came back is not HTTP/1.x: reported like a server that cannot be reached."""


class Rest:
    """One API server: where, how to trust it, and the headers that authenticate."""

    def __init__(
        self,
        host: str,
        ssl_context: ssl.SSLContext | None,
        headers: dict[str, str] | None = None,
        namespace: str | None = None,  # the context's namespace (or the service account's)
        server_name: str | None = None,  # tls-server-name: the name the certificate must carry
    ) -> None:
        self.host = host
        self.ssl_context = ssl_context
        self.headers = headers or {}
        self.namespace = namespace
        self.server_name = server_name
        scheme, _, rest = host.partition("://")
        netloc, slash, prefix = rest.partition("/")
        self._scheme = scheme.lower()
        self._netloc = netloc
        self._prefix = (slash + prefix).rstrip("/")
        self._address = _split_netloc(netloc, 443 if self._scheme == "https" else 80)
        self._sock: socket.socket | None = None
        self._file: BinaryIO | None = None

    def __repr__(self) -> str:  # never the headers: they hold the credentials
        return f"Rest({self.host!r}, namespace={self.namespace!r})"

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
        (socket, TLS, timeout, a malformed answer) when the server cannot be reached."""
        if query:
            from urllib.parse import urlencode

            path = f"{path}?{urlencode(query)}"
        lines = [
            f"{method} {self._prefix}{path} HTTP/1.1",
            f"Host: {self._netloc}",
            f"User-Agent: {USER_AGENT}",
            "Accept: application/json",
        ]
        lines += [f"{name}: {value}" for name, value in self.headers.items()]
        data = b""
        if body is not None:
            data = json.dumps(body).encode()
            lines.append("Content-Type: application/merge-patch+json")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(data)}")
        raw_request = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
        for attempt in (1, 2):
            reused = self._sock is not None
            try:
                sock, file = self._connect(timeout)
                sock.sendall(raw_request)
                status, reason, raw, keep = _read_answer(file, method)
                break
            except (ConnectionResetError, BrokenPipeError, _Closed) as err:
                # A kept-alive connection the server had closed: once more on a new one.
                self.close()
                if not reused or attempt == 2:
                    if isinstance(err, _Closed):
                        raise ConnectionError("the server closed the connection") from None
                    raise
            except BaseException:
                self.close()
                raise
        if not keep:
            self.close()
        if status >= 400:
            raise RestError(status, reason, raw.decode(errors="replace"))
        result: dict[str, Any] = json.loads(raw or b"{}")
        return result

    def _connect(self, timeout: float) -> tuple[socket.socket, BinaryIO]:
        if self._sock is not None and self._file is not None:
            self._sock.settimeout(timeout)
            return self._sock, self._file
        host, port = self._address
        # ASCII names as bytes, here and for TLS: a str goes through the idna codec, whose
        # import (stringprep, unicodedata) an ASCII name has no use for.
        address = (host.encode() if host.isascii() else host, port)
        sock = socket.create_connection(address, timeout=timeout)  # type: ignore[arg-type]
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._scheme == "https":
                if self.ssl_context is None:
                    raise ValueError(f"{self.host}: https without a TLS context")
                name = self.server_name or host
                sock = self.ssl_context.wrap_socket(
                    sock, server_hostname=name.encode() if name.isascii() else name
                )
        except BaseException:
            sock.close()
            raise
        self._sock, self._file = sock, sock.makefile("rb")
        return sock, self._file

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class _Closed(Exception):
    """The connection ended before an answer began."""


def _split_netloc(netloc: str, default_port: int) -> tuple[str, int]:
    """(host, port) of `host`, `host:port`, `[v6]` or `[v6]:port`."""
    if netloc.startswith("["):
        host, _, after = netloc[1:].partition("]")
        port = after[1:] if after.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, _, port = netloc.partition(":")
    else:
        host, port = netloc, ""
    return host, int(port) if port else default_port


def _line(file: BinaryIO) -> bytes:
    line = file.readline(MAX_HEADER_LINE + 1)
    if len(line) > MAX_HEADER_LINE:
        raise MalformedAnswer("an answer line longer than 64 KiB")
    return line


def _read_answer(file: BinaryIO, method: str) -> tuple[int, str, bytes, bool]:
    """(status, reason, body, keep-alive) of the next answer on `file`."""
    while True:
        status_line = _line(file)
        if not status_line:
            raise _Closed()
        version, _, rest = status_line.decode("latin-1").strip().partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise MalformedAnswer(f"not an HTTP answer: {status_line[:80]!r}")
        status = int(code)
        headers: dict[str, str] = {}
        while True:
            line = _line(file)
            if line in (b"\r\n", b"\n"):
                break
            if not line:
                raise MalformedAnswer("the answer's headers were cut short")
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise MalformedAnswer(f"a malformed header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        if not 100 <= status < 200:  # informational answers (100 Continue) precede the real one
            break
    connection = headers.get("connection", "").lower()
    keep = connection != "close" and not (version == "HTTP/1.0" and connection != "keep-alive")
    if method == "HEAD" or status in (204, 304):
        return status, reason, b"", keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, reason, _read_chunked(file), keep
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise MalformedAnswer("a malformed Content-Length") from None
        body = file.read(length)
        if len(body) < length:
            raise MalformedAnswer("the answer ended before its Content-Length")
        return status, reason, body, keep
    return status, reason, file.read(), False  # delimited by the connection's end


def _read_chunked(file: BinaryIO) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = _line(file).split(b";", 1)[0].strip()
        try:
            size = int(size_line, 16)
        except ValueError:
            raise MalformedAnswer(f"a malformed chunk size: {size_line[:20]!r}") from None
        if size == 0:
            while _line(file) not in (b"\r\n", b"\n", b""):  # trailers
                pass
            return b"".join(parts)
        chunk = file.read(size)
        if len(chunk) < size:
            raise MalformedAnswer("the answer ended inside a chunk")
        parts.append(chunk)
        file.readline()  # the chunk's CRLF


def light_client(kubeconfig: str | None, context: str | None) -> Rest | None:
    """A Rest for the kubeconfig's context (or the service account in a Pod when there is no
    kubeconfig), or None when it needs what only the kubernetes client can do, or cannot be
    read: the caller then asks the kubernetes client, which reports what is wrong."""
    try:
        return _from_kubeconfig(kubeconfig, context)
    except CredentialError:
        raise
    except Exception:  # whatever it is, the kubernetes client reports it in its words
        return None


def _load(path: str) -> dict[str, Any]:
    """One kubeconfig file, parsed (YAML; JSON is YAML too): as JSON when it is, else by
    kubeyaml (the subset of YAML kubeconfig writers produce), else by PyYAML."""
    with open(path, "rb") as handle:
        text = handle.read().decode()
    if text.lstrip().startswith("{"):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, dict):
            return loaded
    from . import kubeyaml

    try:
        parsed = kubeyaml.load(text)
    except kubeyaml.Unsupported:  # beyond the subset kubeconfig writers use: PyYAML reads it
        import yaml

        parsed = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    if parsed is None:
        return {}
    if not isinstance(parsed, dict):
        raise ValueError(f"{path}: not a kubeconfig")
    return parsed


def _merged(paths: list[str]) -> tuple[dict[str, Any], dict[int, str]] | None:
    """The kubeconfig of `paths` merged as kubectl merges KUBECONFIG's files: for each
    cluster, user and context name, and for current-context, the first file that sets it
    wins; files that do not exist are skipped. Also, for each entry, the directory its
    relative paths are relative to (by id of the entry). None when no file exists."""
    merged: dict[str, Any] = {"clusters": [], "users": [], "contexts": []}
    bases: dict[int, str] = {}
    found = False
    for path in paths:
        if not path or not os.path.exists(path):
            continue
        found = True
        config = _load(path)
        base = os.path.dirname(os.path.abspath(path))
        if not merged.get("current-context") and config.get("current-context"):
            merged["current-context"] = config["current-context"]
        for section in ("clusters", "users", "contexts"):
            known = {item.get("name") for item in merged[section]}
            for item in config.get(section) or []:
                if isinstance(item, dict) and item.get("name") not in known:
                    merged[section].append(item)
                    known.add(item.get("name"))
                    bases[id(item)] = base
    return (merged, bases) if found else None


def _from_kubeconfig(kubeconfig: str | None, context: str | None) -> Rest | None:
    if kubeconfig:
        paths = [os.path.expanduser(kubeconfig)]
        if not os.path.exists(paths[0]):
            return None  # named but missing: the kubernetes client says so
    elif os.environ.get("KUBECONFIG"):
        paths = [os.path.expanduser(p) for p in os.environ["KUBECONFIG"].split(os.pathsep)]
    else:
        paths = [os.path.expanduser("~/.kube/config")]
    loaded = _merged(paths)
    if loaded is None:
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            return _in_cluster()
        return None
    config, bases = loaded
    chosen = context or config.get("current-context")
    ctx_entry = _named(config.get("contexts"), chosen)
    ctx = ctx_entry["context"]
    cluster_entry = _named(config.get("clusters"), ctx["cluster"])
    cluster = cluster_entry["cluster"]
    user: dict[str, Any] = {}
    user_base = ""
    if ctx.get("user"):
        user_entry = _named(config.get("users"), ctx.get("user"))
        user = user_entry.get("user") or {}
        user_base = bases[id(user_entry)]
    if set(cluster) - CLUSTER_KEYS or set(user) - USER_KEYS:
        return None  # auth-provider, proxy-url, impersonation...: the full client
    if user.get("exec") and user["exec"].get("apiVersion") not in EXEC_API_VERSIONS:
        return None  # an exec API this client does not speak: the kubernetes client's words
    server = str(cluster["server"])
    headers: dict[str, str] = {}
    if user.get("exec"):  # its credentials take the place of any in the kubeconfig
        user = _exec_credential(user["exec"], cluster, bases[id(cluster_entry)], user_base)
    token = user.get("token")
    if token is None and user.get("tokenFile"):
        with open(os.path.join(user_base, user["tokenFile"]), encoding="utf-8") as handle:
            token = handle.read().strip()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user.get("username") is not None:
        import base64

        pair = f"{user['username']}:{user.get('password', '')}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
    context_ssl = None
    if server.lower().startswith("https"):
        context_ssl = _ssl_context(cluster, bases[id(cluster_entry)], user, user_base)
    name = cluster.get("tls-server-name") or None
    return Rest(server, context_ssl, headers, ctx.get("namespace"), name)


def _exec_credential(
    spec: dict[str, Any], cluster: dict[str, Any], cluster_base: str, user_base: str
) -> dict[str, Any]:
    """Run the exec credential plugin as kubectl runs it (client-go's exec authenticator):
    its command and args, with the kubeconfig's env added to ours and KUBERNETES_EXEC_INFO
    (the ExecCredential request: interactive or not, the cluster when provideClusterInfo),
    its stderr to ours; a user entry with what its ExecCredential status gave (token, or a
    client certificate and key)."""
    import subprocess

    api_version = spec["apiVersion"]
    command = str(spec["command"])
    if os.sep in command and not os.path.isabs(command):  # relative to the kubeconfig's file
        command = os.path.join(user_base, command)
    mode = spec.get("interactiveMode") or "IfAvailable"
    tty = os.isatty(0)  # (False for a closed stdin too)
    if mode == "Always" and not tty:
        raise CredentialError(
            f"exec plugin {command!r} needs a terminal (interactiveMode Always), and there is none"
        )
    request: dict[str, Any] = {"interactive": tty and mode != "Never"}
    if spec.get("provideClusterInfo"):
        info: dict[str, Any] = {"server": cluster["server"]}
        if cluster.get("certificate-authority-data"):
            info["certificate-authority-data"] = cluster["certificate-authority-data"]
        elif cluster.get("certificate-authority"):
            import base64

            with open(os.path.join(cluster_base, cluster["certificate-authority"]), "rb") as ca:
                info["certificate-authority-data"] = base64.b64encode(ca.read()).decode()
        for key in ("insecure-skip-tls-verify", "tls-server-name"):
            if cluster.get(key):
                info[key] = cluster[key]
        for extension in cluster.get("extensions") or []:
            if extension.get("name") == "client.authentication.k8s.io/exec":
                info["config"] = extension.get("extension")
        request["cluster"] = info
    env = dict(os.environ)
    env.update({str(e["name"]): str(e["value"]) for e in spec.get("env") or []})
    env["KUBERNETES_EXEC_INFO"] = json.dumps(
        {"apiVersion": api_version, "kind": "ExecCredential", "spec": request}
    )
    try:
        proc = subprocess.run(
            [command, *[str(a) for a in spec.get("args") or []]],
            env=env,
            stdout=subprocess.PIPE,
            stdin=None if request["interactive"] else subprocess.DEVNULL,
            check=False,
        )
    except OSError as err:
        hint = spec.get("installHint")
        raise CredentialError(
            f"exec plugin {command!r} could not run: {err}" + (f"\n{hint}" if hint else "")
        ) from None
    if proc.returncode != 0:
        raise CredentialError(
            f"exec plugin {command!r} failed with exit code {proc.returncode} "
            "(what it said is above)"
        )
    try:
        credential = json.loads(proc.stdout)
        status = credential["status"]
    except (ValueError, KeyError, TypeError):
        raise CredentialError(
            f"exec plugin {command!r} did not print an ExecCredential (JSON with a status)"
        ) from None
    if credential.get("apiVersion") != api_version:
        raise CredentialError(
            f"exec plugin {command!r} answered {credential.get('apiVersion')!r}, "
            f"not the {api_version!r} it was asked for"
        )
    if status.get("token"):
        return {"token": status["token"]}
    if status.get("clientCertificateData") and status.get("clientKeyData"):
        return {
            "client-certificate-data-pem": str(status["clientCertificateData"]).encode(),
            "client-key-data-pem": str(status["clientKeyData"]).encode(),
        }
    raise CredentialError(
        f"exec plugin {command!r} gave neither a token nor a client certificate and key"
    )


def _in_cluster() -> Rest | None:
    host, port = (
        os.environ.get("KUBERNETES_SERVICE_HOST"),
        os.environ.get("KUBERNETES_SERVICE_PORT"),
    )
    token_file = os.path.join(IN_CLUSTER, "token")
    if not (host and port and os.path.exists(token_file)):
        return None
    import ssl

    context_ssl = ssl.create_default_context(cafile=os.path.join(IN_CLUSTER, "ca.crt"))
    namespace = None
    namespace_file = os.path.join(IN_CLUSTER, "namespace")
    if os.path.exists(namespace_file):
        with open(namespace_file, encoding="utf-8") as handle:
            namespace = handle.read().strip()
    with open(token_file, encoding="utf-8") as handle:
        headers = {"Authorization": f"Bearer {handle.read().strip()}"}
    server = f"https://{f'[{host}]' if ':' in host else host}:{port}"
    return Rest(server, context_ssl, headers, namespace)


def _named(items: list[dict[str, Any]] | None, name: str | None) -> dict[str, Any]:
    found = next((i for i in items or [] if i.get("name") == name), None)
    if found is None:
        raise KeyError(name)
    return found


def _ssl_context(
    cluster: dict[str, Any], cluster_base: str, user: dict[str, Any], user_base: str
) -> ssl.SSLContext:
    import ssl

    if cluster.get("insecure-skip-tls-verify"):
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif cluster.get("certificate-authority-data"):
        import base64

        pem = base64.b64decode(cluster["certificate-authority-data"]).decode()
        context = ssl.create_default_context(cadata=pem)
    elif cluster.get("certificate-authority"):
        ca = os.path.join(cluster_base, cluster["certificate-authority"])
        context = ssl.create_default_context(cafile=ca)
    else:
        context = ssl.create_default_context()
    cert = _pem_source(user, "client-certificate", user_base)
    key = _pem_source(user, "client-key", user_base)
    if cert is not None and key is not None:
        with _PemFile(cert) as cert_file, _PemFile(key) as key_file:
            context.load_cert_chain(cert_file, key_file)
    return context


def _pem_source(user: dict[str, Any], key: str, base: str) -> str | bytes | None:
    """The PEM of a client certificate or key: its bytes (from `<key>-data`, or from an
    exec plugin) or the path of its file."""
    if user.get(f"{key}-data-pem"):
        return bytes(user[f"{key}-data-pem"])
    if user.get(f"{key}-data"):
        import base64

        return base64.b64decode(str(user[f"{key}-data"]))
    if user.get(key):
        return os.path.join(base, str(user[key]))
    return None


class _PemFile:
    """A path ssl can load `source` from: the path itself, or for PEM bytes an anonymous
    in-memory file (memfd) that never touches a disk, else a private temporary file removed
    at once (ssl loads a certificate and key from files only)."""

    def __init__(self, source: str | bytes) -> None:
        self.source = source
        self.fd: int | None = None
        self.directory: Any = None

    def __enter__(self) -> str:
        if isinstance(self.source, str):
            return self.source
        memfd_create = getattr(os, "memfd_create", None)
        if memfd_create is not None:
            try:
                self.fd = memfd_create("lockgate-pem", os.MFD_CLOEXEC)
            except OSError:
                self.fd = None
            if self.fd is not None:
                written = 0
                while written < len(self.source):
                    written += os.write(self.fd, self.source[written:])
                path = f"/proc/self/fd/{self.fd}"
                if os.path.exists(path):
                    return path
                os.close(self.fd)
                self.fd = None
        import tempfile

        self.directory = tempfile.TemporaryDirectory(prefix="lockgate-")
        path = os.path.join(self.directory.name, "pem")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.source)
        return path

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            os.close(self.fd)
        if self.directory is not None:
            self.directory.cleanup()
