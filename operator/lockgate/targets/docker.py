"""Docker hosts: containers of an Application on plain Docker Engines, found again by label.

Connections: one docker-py client per host, reused, over a unix socket, tcp (mutual TLS from
PEM strings) or ssh (paramiko with a private key and a pinned known_hosts given as strings;
an unknown or changed host key is refused before authentication, never added). docker-py is
blocking, so every call runs in a worker thread (`asyncio.to_thread`), bounded by one
semaphore across hosts and by a per-host timeout; a failed host drops its client so the next
call reconnects.

Containers are named `<app>-<deployment>-r<revision>-<n>` (the deployment's leading `<app>-`
dropped, so `shop` + `shop-2-0-0/3` gives `shop-2-0-0-r3-0`) and labelled with the
application, deployment, revision, release (`<deployment>/<revision>`), role at creation,
instance index and container port. The labels are the record: a restarted operator lists
them and carries on. A revision number alone would not do as the name: two Deployments of an
application both start at revision 1, and their containers share canary hosts.

Nothing here logs environment values: they may be resolved Secret values.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from ipaddress import ip_address
from typing import Any, Literal, TypeVar
from urllib.parse import urlparse

import docker
import docker.errors
import docker.tls
import httpx
import paramiko
import requests
from docker.transport import SSHHTTPAdapter

from lockgate.api.application import DockerHost as DockerHostApi
from lockgate.api.common import SecretKeyReference, resolve_int_or_percent
from lockgate.engine import InstanceSet

log = logging.getLogger("lockgate.docker")

T = TypeVar("T")
Role = Literal["stable", "canary"]
StrategyType = Literal["Recreate", "Rolling", "BlueGreen", "Canary"]

LABEL_APP = "lockgate.dev/application"
LABEL_DEPLOYMENT = "lockgate.dev/deployment"
LABEL_REVISION = "lockgate.dev/revision"
LABEL_RELEASE = "lockgate.dev/release"
LABEL_ROLE = "lockgate.dev/role"
LABEL_INDEX = "lockgate.dev/index"
LABEL_PORT = "lockgate.dev/port"
LABEL_IMAGE = "lockgate.dev/image"  # as requested: the daemon may show an ID once a tag moves
LABEL_MANAGED = "app.kubernetes.io/managed-by"

# docker-py's newest API version; a daemon answering a lower one is spoken to in its own.
_CLIENT_API_VERSION = "1.45"
_MIN_API_VERSION = "1.24"


# --- errors ----------------------------------------------------------------------------------


class DockerTargetError(RuntimeError):
    """Something failed on a named host; the message starts with the host's name."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.reason = message
        super().__init__(f"docker host {host}: {message}")


class HostUnavailable(DockerTargetError):
    """The host's daemon (or its SSH server) refused, did not answer, or went away."""


class HostKeyError(DockerTargetError):
    """The SSH host key is not in known_hosts, or differs from it: nothing was sent."""


class ImageUnavailable(DockerTargetError):
    """The image is neither on the host nor pullable there."""


# --- host specifications and connections -----------------------------------------------------


@dataclass(frozen=True)
class HostSpec:
    """One host, with credentials resolved to strings (never shown by repr)."""

    name: str
    url: str  # unix:///path, tcp://host:port, ssh://user@host[:port]
    address: str  # where the proxy and health checks reach published ports
    ssh_key: str | None = field(default=None, repr=False)  # private key, OpenSSH or PEM
    known_hosts: str | None = field(default=None, repr=False)  # known_hosts lines
    tls_ca: str | None = field(default=None, repr=False)  # PEM
    tls_cert: str | None = field(default=None, repr=False)
    tls_key: str | None = field(default=None, repr=False)

    @property
    def transport(self) -> Literal["unix", "tcp", "ssh"]:
        scheme = self.url.split("://", 1)[0]
        if scheme not in ("unix", "tcp", "ssh"):
            raise ValueError(f"docker host {self.name}: unsupported URL scheme {scheme!r}")
        return scheme  # type: ignore[return-value]

    @property
    def tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or self.tls_key)


def host_spec_from_api(host: DockerHostApi, read_secret: Callable[[str, str], str]) -> HostSpec:
    """A HostSpec for an Application's spec.docker.hosts[] entry; `read_secret(name, key)`
    returns one resolved Secret value (the controller fetches them)."""

    def ref(r: SecretKeyReference | None) -> str | None:
        return read_secret(r.name, r.key) if r is not None else None

    tls = host.tls_secret_ref
    return HostSpec(
        name=host.name,
        url=host.url,
        address=host.address,
        ssh_key=ref(host.ssh_key_secret_ref),
        known_hosts=ref(host.known_hosts_secret_ref),
        tls_ca=read_secret(tls.name, "ca.pem") if tls else None,
        tls_cert=read_secret(tls.name, "cert.pem") if tls else None,
        tls_key=read_secret(tls.name, "key.pem") if tls else None,
    )


def load_private_key(text: str, host: str) -> paramiko.PKey:
    """A paramiko key from its text (ed25519, ECDSA or RSA; unencrypted)."""
    errors = []
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            key: paramiko.PKey = cls.from_private_key(io.StringIO(text))
            return key
        except (paramiko.SSHException, ValueError) as exc:
            errors.append(f"{cls.__name__}: {exc}")
    raise DockerTargetError(host, "the SSH private key could not be read (" + "; ".join(errors))


def strict_ssh_client(host: str, known_hosts: str) -> paramiko.SSHClient:
    """An SSHClient that knows only the given host keys and refuses every other."""
    client = paramiko.SSHClient()
    keys = client.get_host_keys()
    for number, line in enumerate(known_hosts.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno=number)
        except Exception as exc:  # paramiko's InvalidHostKey, binascii errors, …
            raise DockerTargetError(host, f"known_hosts line {number} is invalid") from exc
        if entry is None or entry.key is None:
            continue
        for name in entry.hostnames:
            keys.add(name, entry.key.get_name(), entry.key)
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    return client


def ssh_connect(spec: HostSpec, timeout: float) -> paramiko.SSHClient:
    """Connect and authenticate to spec's ssh:// URL with strict host keys."""
    if not spec.ssh_key or not spec.known_hosts:
        raise DockerTargetError(spec.name, "an ssh:// host needs a private key and known_hosts")
    url = urlparse(spec.url)
    client = strict_ssh_client(spec.name, spec.known_hosts)
    try:
        client.connect(
            hostname=url.hostname or "",
            port=url.port or 22,
            username=url.username or "root",
            pkey=load_private_key(spec.ssh_key, spec.name),
            look_for_keys=False,
            allow_agent=False,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
        )
    except Exception as exc:
        client.close()
        raise translate_error(spec.name, exc) from exc
    return client


class _PinnedSSHAdapter(SSHHTTPAdapter):  # type: ignore[misc]
    """docker-py's paramiko transport (`docker system dial-stdio` on the host) on an SSH
    connection we opened ourselves, with our key and host keys, never ~/.ssh."""

    def __init__(
        self, spec: HostSpec, connect_timeout: float, read_timeout: float, max_pool_size: int
    ) -> None:
        self._spec = spec
        self._connect_timeout = connect_timeout
        super().__init__(spec.url, timeout=read_timeout, max_pool_size=max_pool_size)

    def _create_paramiko_client(self, base_url: str) -> None:
        self.ssh_client = None
        self.ssh_params: dict[str, Any] = {}

    def _connect(self) -> None:
        if self.ssh_client is not None:
            self.ssh_client.close()
        self.ssh_client = ssh_connect(self._spec, self._connect_timeout)

    def get_connection(self, url: str, proxies: Any = None) -> Any:
        # docker-py keys its pools by the full request URL, so every container-specific
        # path opened a new SSH channel and a new `docker system dial-stdio` on the host
        # (~0.1 s each here). One pool per host reuses the channels.
        return super().get_connection("http+docker://ssh/", proxies)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class HostConnections:
    """One docker-py client per host, created on first use and reused.

    `run(host, fn)` calls the blocking `fn(client)` in a worker thread with the host's
    timeout, at most `max_parallel` at once across all hosts, and turns transport failures
    into HostUnavailable / HostKeyError naming the host.
    """

    def __init__(
        self,
        hosts: Iterable[HostSpec],
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_parallel: int = 8,
    ) -> None:
        self._specs: dict[str, HostSpec] = {h.name: h for h in hosts}
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_parallel = max_parallel
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._clients: dict[str, docker.DockerClient] = {}
        self._tls_dirs: dict[str, str] = {}
        self._lock = threading.Lock()  # guards the dicts between worker threads
        self._connecting: dict[str, threading.Lock] = {}  # one connect at a time per host

    # hosts

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def spec(self, host: str) -> HostSpec:
        try:
            return self._specs[host]
        except KeyError:
            raise DockerTargetError(host, "not a configured host") from None

    def update(self, hosts: Iterable[HostSpec]) -> None:
        """Replace the host list; a host whose URL or credentials changed reconnects."""
        new = {h.name: h for h in hosts}
        for name, old in list(self._specs.items()):
            if new.get(name) != old:
                self._drop(name)
        self._specs = new

    # clients

    def _client_sync(self, host: str) -> docker.DockerClient:
        with self._lock:
            client = self._clients.get(host)
            connecting = self._connecting.setdefault(host, threading.Lock())
        if client is not None:
            return client
        with connecting:  # a second thread waits for the first one's client
            with self._lock:
                client = self._clients.get(host)
            if client is None:
                client = self._connect(self.spec(host))
                with self._lock:
                    self._clients[host] = client
            return client

    def _connect(self, spec: HostSpec) -> docker.DockerClient:
        timeout = int(max(1, self.timeout))
        client: docker.DockerClient | None = None
        try:
            if spec.transport == "ssh":
                # Channel reads wait as long as a stop with its grace period may take; the
                # caller's own deadline (run) comes first.
                adapter = _PinnedSSHAdapter(
                    spec, self.connect_timeout, self.timeout * 4, max_pool_size=8
                )
                client = docker.DockerClient(
                    base_url=spec.url,
                    use_ssh_client=True,  # skips docker-py's own paramiko client (~/.ssh)
                    version=_MIN_API_VERSION,
                    timeout=timeout,
                )
                client.api.mount("http+docker://ssh", adapter)
                client.api._custom_adapter = adapter  # close() closes the SSH connection
            elif spec.transport == "tcp" and spec.tls:
                tls = docker.tls.TLSConfig(
                    client_cert=(self._tls_file(spec, "cert.pem"), self._tls_file(spec, "key.pem")),
                    ca_cert=self._tls_file(spec, "ca.pem"),
                    verify=True,
                )
                client = docker.DockerClient(
                    base_url=spec.url, tls=tls, version=_MIN_API_VERSION, timeout=timeout
                )
            else:
                client = docker.DockerClient(
                    base_url=spec.url, version=_MIN_API_VERSION, timeout=timeout
                )
            # REQUESTS_CA_BUNDLE / proxies from the environment would replace the host's CA
            # (TLS fails) or send the daemon's traffic elsewhere: never read them.
            client.api.trust_env = False
            server = client.api.version(api_version=False)["ApiVersion"]
            negotiated = min(server, _CLIENT_API_VERSION, key=_version_tuple)
            client.api._version = negotiated  # docker-py 7: the version used in every URL
            return client
        except Exception as exc:
            if client is not None:
                with contextlib.suppress(Exception):
                    client.close()  # an SSH connection may be open already
            self._remove_tls(spec.name)
            raise translate_error(spec.name, exc) from exc

    def _tls_file(self, spec: HostSpec, name: str) -> str:
        """Write one PEM to the host's private directory (0700, files 0600)."""
        content = {"ca.pem": spec.tls_ca, "cert.pem": spec.tls_cert, "key.pem": spec.tls_key}[name]
        if not content:
            raise DockerTargetError(spec.name, f"TLS needs ca.pem, cert.pem and key.pem ({name})")
        directory = self._tls_dirs.get(spec.name)
        if directory is None:
            directory = tempfile.mkdtemp(prefix=f"lockgate-tls-{spec.name}-")
            self._tls_dirs[spec.name] = directory
        path = os.path.join(directory, name)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(content)
        return path

    def _remove_tls(self, host: str) -> None:
        directory = self._tls_dirs.pop(host, None)
        if directory:
            shutil.rmtree(directory, ignore_errors=True)

    def _drop(self, host: str) -> None:
        with self._lock:
            client = self._clients.pop(host, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        self._remove_tls(host)

    def _semaphore(self) -> asyncio.Semaphore:
        """The bound on worker threads, one per event loop (tests run several loops)."""
        loop = asyncio.get_running_loop()
        semaphore = self._semaphores.get(loop)
        if semaphore is None:
            for old in [k for k in self._semaphores if k.is_closed()]:
                del self._semaphores[old]
            semaphore = self._semaphores[loop] = asyncio.Semaphore(self.max_parallel)
        return semaphore

    async def run(
        self, host: str, fn: Callable[[docker.DockerClient], T], *, seconds: float | None = None
    ) -> T:
        """`fn(client)` for host in a worker thread; errors name the host."""
        limit = self.timeout if seconds is None else seconds
        self.spec(host)

        def call() -> T:
            return fn(self._client_sync(host))

        async with self._semaphore():
            try:
                return await asyncio.wait_for(asyncio.to_thread(call), limit)
            except DockerTargetError as exc:
                if isinstance(exc, HostUnavailable | HostKeyError):
                    self._drop(host)
                raise
            except TimeoutError as exc:
                self._drop(host)
                raise HostUnavailable(host, f"no answer within {limit:g} s") from exc
            except Exception as exc:
                error = translate_error(host, exc)
                if isinstance(error, HostUnavailable | HostKeyError):
                    self._drop(host)
                raise error from exc

    async def each(
        self,
        hosts: Iterable[str],
        action: Callable[[str], Awaitable[T]],
    ) -> dict[str, T | DockerTargetError]:
        """`action(host)` for every host at once (bounded by `run`'s semaphore); the result
        or the DockerTargetError of each host. Other exceptions propagate."""
        names = list(hosts)
        results = await asyncio.gather(*(action(h) for h in names), return_exceptions=True)
        out: dict[str, T | DockerTargetError] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, DockerTargetError):
                out[name] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                out[name] = result
        return out

    async def ping(self, host: str) -> None:
        await self.run(host, lambda c: c.ping())

    def close(self) -> None:
        for host in list(self._clients):
            self._drop(host)
        for host in list(self._tls_dirs):
            self._remove_tls(host)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)


def translate_error(host: str, exc: BaseException) -> DockerTargetError:
    """A DockerTargetError naming host for an exception from docker-py, requests or paramiko."""
    if isinstance(exc, DockerTargetError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            host,
            f"SSH host key of {exc.hostname} changed: got {exc.key.get_name()} "
            f"{exc.key.get_base64()[:16]}…, known_hosts has a different key; refusing",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return HostUnavailable(host, f"SSH authentication failed: {exc}")
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "known_hosts" in text:
            return HostKeyError(host, f"SSH host key unknown, refusing ({text})")
        return HostUnavailable(host, f"SSH failed: {text}")
    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageUnavailable(host, _explain(exc))
    if isinstance(exc, docker.errors.APIError):
        return DockerTargetError(host, f"the daemon refused: {_explain(exc)}")
    if isinstance(
        exc,
        requests.exceptions.ConnectionError
        | requests.exceptions.Timeout
        | docker.errors.DockerException
        | OSError
        | socket.timeout
        | EOFError,
    ):
        return HostUnavailable(host, f"daemon unreachable: {_short(exc)}")
    return DockerTargetError(host, f"{type(exc).__name__}: {exc}")


def _explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # requests nests the cause in long reprs; the innermost reason is what a human needs.
    match = re.search(r"(\[Errno [^\]]+\][^'\")]*|Connection refused|timed out)", text)
    return match.group(0) if match else text[:300]


# --- names, labels, resources ----------------------------------------------------------------


def split_release(release: str) -> tuple[str, str]:
    """`<deployment>/<revision>` -> (deployment, revision); without `/` the revision is ''."""
    deployment, sep, revision = release.rpartition("/")
    return (deployment, revision) if sep else (release, "")


def _name_part(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-.") or "x"


def container_name(app: str, release: str, index: int) -> str:
    deployment, revision = split_release(release)
    if deployment == app:
        deployment = ""
    elif deployment.startswith(app + "-"):
        deployment = deployment[len(app) + 1 :]
    parts = [app, deployment, f"r{revision}" if revision else "", str(index)]
    return re.sub(r"-{2,}", "-", _name_part("-".join(p for p in parts if p)))


def container_labels(
    app: str, release: str, role: Role, index: int, port: int, image: str = ""
) -> dict[str, str]:
    deployment, revision = split_release(release)
    return {
        LABEL_IMAGE: image,
        LABEL_APP: app,
        LABEL_DEPLOYMENT: deployment,
        LABEL_REVISION: revision,
        LABEL_RELEASE: release,
        LABEL_ROLE: role,
        LABEL_INDEX: str(index),
        LABEL_PORT: str(port),
        LABEL_MANAGED: "lockgate",
    }


_MEMORY_UNITS = {
    "": 1,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "K": 10**3,
    "M": 10**6,
    "G": 10**9,
    # docker's own suffixes (`--memory 512m`) are binary
    "k": 2**10,
    "m": 2**20,
    "g": 2**30,
}


def parse_memory(text: str) -> int:
    """Bytes of "512Mi", "1Gi", "1G" (decimal) or docker's "512m" (binary)."""
    match = re.fullmatch(r"([0-9]+)(Ki|Mi|Gi|k|m|g|K|M|G)?", text.strip())
    if not match:
        raise ValueError(f"invalid memory quantity {text!r}")
    return int(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""]


def parse_cpus(text: str) -> int:
    """NanoCPUs of a decimal CPU count ("0.5" -> 500_000_000)."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        raise ValueError(f"invalid CPU quantity {text!r}") from None
    if value < 0:
        raise ValueError(f"invalid CPU quantity {text!r}")
    return int(value * 1_000_000_000)


@dataclass(frozen=True)
class Resources:
    """Limits of one container: nano-CPUs and bytes (0 = unlimited)."""

    nano_cpus: int = 0
    memory: int = 0

    @classmethod
    def parse(cls, cpus: str | None, memory: str | None) -> Resources:
        return cls(parse_cpus(cpus) if cpus else 0, parse_memory(memory) if memory else 0)

    def __add__(self, other: Resources) -> Resources:
        return Resources(self.nano_cpus + other.nano_cpus, self.memory + other.memory)

    def times(self, n: int) -> Resources:
        return Resources(self.nano_cpus * n, self.memory * n)


# --- containers ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instance:
    """One container of the application on one host, as the daemon reports it now."""

    host: str
    name: str
    id: str
    release: str
    role: str  # the role it was created for; roles move on promotion, releases do not
    index: int
    image: str
    state: str  # created | running | restarting | exited | paused | dead | …
    address: str
    port: int | None  # the published host port of the container port, when running

    @property
    def url(self) -> str | None:
        return f"http://{self.address}:{self.port}" if self.port else None


def _instance(host: HostSpec, attrs: Mapping[str, Any]) -> Instance:
    """From a /containers/json entry (the list answer; no per-container inspect)."""
    labels: Mapping[str, str] = attrs.get("Labels") or {}
    container_port = int(labels.get(LABEL_PORT, "0") or 0)
    port = None
    for p in attrs.get("Ports") or []:
        if p.get("PrivatePort") == container_port and p.get("PublicPort"):
            port = int(p["PublicPort"])
            break
    names = attrs.get("Names") or [""]
    return Instance(
        host=host.name,
        name=str(names[0]).lstrip("/"),
        id=str(attrs.get("Id", "")),
        release=labels.get(LABEL_RELEASE, ""),
        role=labels.get(LABEL_ROLE, ""),
        index=int(labels.get(LABEL_INDEX, "0") or 0),
        image=labels.get(LABEL_IMAGE) or str(attrs.get("Image", "")),
        state=str(attrs.get("State", "")),
        address=host.address,
        port=port,
    )


def _list_sync(
    client: docker.DockerClient, spec: HostSpec, app: str, release: str | None = None
) -> list[Instance]:
    labels = [f"{LABEL_APP}={app}"]
    if release is not None:
        labels.append(f"{LABEL_RELEASE}={release}")
    raw = client.api.containers(all=True, filters={"label": labels})
    return sorted((_instance(spec, c) for c in raw), key=lambda i: (i.release, i.index, i.name))


async def list_instances(
    conns: HostConnections, host: str, app: str, release: str | None = None
) -> list[Instance]:
    """The application's containers on host (of one release, when given), any state."""
    spec = conns.spec(host)
    return await conns.run(host, lambda c: _list_sync(c, spec, app, release))


def _bind_address(address: str) -> str:
    """Publish on the host's address when it is an IP (the proxy reaches nothing else); a
    DNS name may not be a local address of the daemon's machine, so all addresses then."""
    try:
        ip_address(address)
    except ValueError:
        return "0.0.0.0"
    return address


def _ensure_image(client: docker.DockerClient, host: str, image: str) -> None:
    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    log.info("docker host %s: pulling %s", host, image)
    try:
        client.images.pull(image)  # docker-py splits repository, tag or digest itself
    except docker.errors.APIError as exc:
        raise ImageUnavailable(
            host, f"image {image} is not on the host and could not be pulled: {_explain(exc)}"
        ) from exc


@dataclass(frozen=True)
class ContainerSettings:
    """How each container of a release is created."""

    image: str
    port: int  # container port, published on a free host port
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    resources: Resources = Resources()
    restart_policy: str = "unless-stopped"
    command: Sequence[str] | None = None


def _ensure_sync(
    client: docker.DockerClient,
    spec: HostSpec,
    app: str,
    release: str,
    role: Role,
    count: int,
    settings: ContainerSettings,
) -> list[Instance]:
    existing = {i.index: i for i in _list_sync(client, spec, app, release)}
    for index, instance in list(existing.items()):
        if index >= count or instance.state in ("dead", "removing"):
            log.info("docker host %s: removing %s (%s)", spec.name, instance.name, instance.state)
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(instance.id, force=True)
            del existing[index]
    missing = [i for i in range(count) if i not in existing]
    if missing:
        _ensure_image(client, spec.name, settings.image)
    for index in missing:
        name = container_name(app, release, index)
        labels = container_labels(app, release, role, index, settings.port, settings.image)
        log.info("docker host %s: creating %s from %s", spec.name, name, settings.image)
        host_config = client.api.create_host_config(
            port_bindings={settings.port: (_bind_address(spec.address), None)},
            restart_policy={"Name": settings.restart_policy},
            nano_cpus=settings.resources.nano_cpus or None,
            mem_limit=settings.resources.memory or None,
        )
        try:
            client.api.create_container(
                settings.image,
                command=list(settings.command) if settings.command else None,
                name=name,
                labels=labels,
                environment=dict(settings.env),
                ports=[settings.port],
                host_config=host_config,
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            # The name is taken: ours from an interrupted run, or someone else's.
            other = client.api.inspect_container(name)
            theirs = (other.get("Config") or {}).get("Labels") or {}
            if theirs.get(LABEL_APP) != app or theirs.get(LABEL_RELEASE) != release:
                raise DockerTargetError(
                    spec.name,
                    f"container name {name} is taken by a container lockgate does not own",
                ) from exc
    for instance in _list_sync(client, spec, app, release):
        if instance.index < count and instance.state in ("created", "exited"):
            log.info("docker host %s: starting %s", spec.name, instance.name)
            client.api.start(instance.id)
        elif instance.state == "paused":
            client.api.unpause(instance.id)
    return [i for i in _list_sync(client, spec, app, release) if i.index < count]


async def ensure_instances(
    conns: HostConnections,
    host: str,
    app: str,
    release: str,
    image: str,
    count: int,
    env: Mapping[str, str],
    resources: Resources,
    port: int,
    *,
    role: Role = "canary",
    restart_policy: str = "unless-stopped",
    command: Sequence[str] | None = None,
    seconds: float | None = None,
) -> list[Instance]:
    """Exactly `count` running containers of `release` on host (idempotent: running ones
    are kept, stopped ones started, missing ones created from the local or pulled image)."""
    spec = conns.spec(host)
    settings = ContainerSettings(image, port, env, resources, restart_policy, command)
    return await conns.run(
        host,
        lambda c: _ensure_sync(c, spec, app, release, role, count, settings),
        seconds=seconds,
    )


def _remove_sync(
    client: docker.DockerClient, spec: HostSpec, app: str, release: str, grace: int
) -> list[str]:
    removed = []
    for instance in _list_sync(client, spec, app, release):
        log.info("docker host %s: stopping %s (grace %d s)", spec.name, instance.name, grace)
        with contextlib.suppress(docker.errors.NotFound):
            if instance.state in ("running", "restarting", "paused"):
                client.api.stop(instance.id, timeout=grace)  # SIGTERM, SIGKILL after grace
            client.api.remove_container(instance.id, force=True)
        removed.append(instance.name)
    return removed


async def remove_instances(
    conns: HostConnections,
    host: str,
    app: str,
    release: str,
    *,
    drain_seconds: float = 0.0,
    grace: int = 10,
) -> list[str]:
    """Stop (SIGTERM, SIGKILL after `grace` s) and remove the release's containers on host,
    after `drain_seconds` (call it once they are out of traffic). Returns removed names."""
    if drain_seconds > 0:
        await asyncio.sleep(drain_seconds)
    spec = conns.spec(host)
    return await conns.run(
        host,
        lambda c: _remove_sync(c, spec, app, release, grace),
        seconds=conns.timeout + grace,
    )


def _stop_sync(
    client: docker.DockerClient, spec: HostSpec, app: str, release: str, grace: int
) -> list[str]:
    stopped = []
    for instance in _list_sync(client, spec, app, release):
        if instance.state in ("running", "restarting", "paused"):
            log.info("docker host %s: stopping %s (grace %d s)", spec.name, instance.name, grace)
            with contextlib.suppress(docker.errors.NotFound):
                client.api.stop(instance.id, timeout=grace)
            stopped.append(instance.name)
    return stopped


async def stop_instances(
    conns: HostConnections, host: str, app: str, release: str, *, grace: int = 10
) -> list[str]:
    """Stop the release's containers on host but keep them: a rollback starts them again
    without a pull or a create. Returns stopped names."""
    spec = conns.spec(host)
    return await conns.run(
        host,
        lambda c: _stop_sync(c, spec, app, release, grace),
        seconds=conns.timeout + grace,
    )


async def remove_other_releases(
    conns: HostConnections, host: str, app: str, keep: Iterable[str | None], *, grace: int = 10
) -> list[str]:
    """Remove the application's containers on host whose release is not in `keep`."""
    kept = {k for k in keep if k}
    removed: list[str] = []
    releases = {i.release for i in await list_instances(conns, host, app)} - kept
    for release in sorted(releases):
        removed += await remove_instances(conns, host, app, release, grace=grace)
    return removed


# --- health ----------------------------------------------------------------------------------


async def check_health(
    http: httpx.AsyncClient, instance: Instance, path: str, check_seconds: float = 2.0
) -> bool:
    """GET http://<host address>:<published port><path> answers 2xx or 3xx."""
    if instance.state != "running" or instance.url is None:
        return False
    try:
        answer = await http.get(instance.url + path, timeout=check_seconds, follow_redirects=False)
    except httpx.HTTPError:
        return False
    return 200 <= answer.status_code < 400


async def wait_healthy(
    http: httpx.AsyncClient,
    instances: Sequence[Instance],
    path: str,
    *,
    within: float = 60.0,
    interval: float = 0.2,
    check_seconds: float = 2.0,
) -> bool:
    """Until every instance passes its check (True) or `within` seconds pass (False)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    pending = list(instances)
    while pending:
        results = await asyncio.gather(
            *(check_health(http, i, path, check_seconds) for i in pending)
        )
        pending = [i for i, ok in zip(pending, results, strict=True) if not ok]
        if not pending:
            return True
        if loop.time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True


# --- observation -----------------------------------------------------------------------------


@dataclass(frozen=True)
class DockerObservation:
    stable: InstanceSet
    canary: InstanceSet
    servers: Mapping[Role, tuple[str, ...]]  # URLs of healthy instances per role
    instances: tuple[Instance, ...]  # every container of the application, any release
    healthy: frozenset[str]  # container ids that passed their check
    errors: Mapping[str, DockerTargetError]  # hosts that could not be listed


STARTED_STATES = ("running", "restarting")  # what ensure_instances leaves behind


def instance_set(
    release: str | None,
    hosts: Sequence[str],
    instances: Sequence[Instance],
    healthy: Collection[str],
    per_host: int,
    in_proxy: Collection[str] | None = None,
) -> InstanceSet:
    """The release's instances as the engine sees them: `units` the hosts that have any,
    `ready` those whose `per_host` instances all pass their check (and are in the proxy's
    servers, when known), `incomplete` those where fewer than `per_host` are started."""
    if not release:
        return InstanceSet()
    mine = [i for i in instances if i.release == release]
    if not mine:
        return InstanceSet(release=release)
    units = tuple(h for h in hosts if any(i.host == h for i in mine))
    on = {h: [i for i in mine if i.host == h] for h in units}
    ready = tuple(
        h
        for h in units
        if len(on[h]) >= per_host
        and all(i.id in healthy and (in_proxy is None or i.url in in_proxy) for i in on[h])
    )
    incomplete = tuple(h for h in units if sum(i.state in STARTED_STATES for i in on[h]) < per_host)
    return InstanceSet(release, mine[0].image, units, ready, incomplete)


async def observe(
    conns: HostConnections,
    hosts: Sequence[str],
    app: str,
    *,
    stable_release: str | None,
    canary_release: str | None,
    instances_per_host: int,
    health_path: str,
    http: httpx.AsyncClient,
    health_timeout: float = 2.0,
) -> DockerObservation:
    """List the application's containers on every host in parallel and check the health of
    those of the stable and canary releases. A host that cannot be listed is in `errors`
    and counts as having no instances."""
    listed = await conns.each(hosts, lambda h: list_instances(conns, h, app))
    errors = {h: r for h, r in listed.items() if isinstance(r, DockerTargetError)}
    instances = tuple(i for r in listed.values() if not isinstance(r, DockerTargetError) for i in r)
    wanted = [i for i in instances if i.release and i.release in (stable_release, canary_release)]
    results = await asyncio.gather(
        *(check_health(http, i, health_path, health_timeout) for i in wanted)
    )
    healthy = frozenset(i.id for i, ok in zip(wanted, results, strict=True) if ok)
    servers: dict[Role, tuple[str, ...]] = {}
    sets: dict[Role, InstanceSet] = {}
    for role, release in (("stable", stable_release), ("canary", canary_release)):
        r: Role = role  # type: ignore[assignment]
        sets[r] = instance_set(release, hosts, instances, healthy, instances_per_host)
        servers[r] = tuple(
            i.url
            for i in instances
            if release and i.release == release and i.id in healthy and i.url
        )
    if stable_release and stable_release == canary_release:
        servers["canary"] = ()
    return DockerObservation(
        stable=sets["stable"],
        canary=sets["canary"],
        servers=servers,
        instances=instances,
        healthy=healthy,
        errors=errors,
    )


# --- capacity --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HostCapacity:
    """What a host has and what running containers reserve by their limits."""

    host: str
    total: Resources
    reserved: Resources

    @property
    def free(self) -> Resources:
        return Resources(
            self.total.nano_cpus - self.reserved.nano_cpus, self.total.memory - self.reserved.memory
        )


@dataclass(frozen=True)
class Shortfall:
    host: str
    resource: Literal["cpu", "memory"]
    needed: int  # nano-CPUs or bytes
    available: int

    def __str__(self) -> str:
        if self.resource == "cpu":
            return (
                f"host {self.host}: not enough CPU: needs {self.needed / 1e9:g} more, "
                f"{max(self.available, 0) / 1e9:g} free"
            )
        return (
            f"host {self.host}: not enough memory: needs {_mib(self.needed)} more, "
            f"{_mib(max(self.available, 0))} free"
        )


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f}Mi"


def extra_instances(
    strategy: StrategyType,
    hosts: Sequence[str],
    instances_per_host: int,
    *,
    canary_hosts: int | str | None = None,
    existing: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Instances each host must hold beyond what runs there now, at the rollout's peak.

    Every host gets a new set beside the old one at some point (blue-green all at once,
    rolling one batch at a time, start-first), so each needs room for `instances_per_host`
    more; a canary needs that only on its canary hosts before promotion (the operator checks
    each host again when it first starts the new set there). Recreate stops the old set
    first: a host needs room only for what it does not already run (`existing`, the
    application's instances there).
    """
    if strategy == "Recreate":
        have = existing or {}
        return {h: max(0, instances_per_host - have.get(h, 0)) for h in hosts}
    if strategy == "Canary":
        share = "20%" if canary_hosts is None else canary_hosts
        n = min(len(hosts), max(1, resolve_int_or_percent(share, len(hosts), round_up=True)))
        return {h: (instances_per_host if k < n else 0) for k, h in enumerate(hosts)}
    return dict.fromkeys(hosts, instances_per_host)


def shortfalls(
    capacity: Mapping[str, HostCapacity],
    extra: Mapping[str, int],
    per_instance: Resources,
) -> list[Shortfall]:
    """Hosts that cannot hold their extra instances, per resource. A resource without a
    limit (0) is not checked: docker cannot reserve what is not limited."""
    out: list[Shortfall] = []
    for host, n in extra.items():
        if n <= 0 or host not in capacity:
            continue
        need = per_instance.times(n)
        free = capacity[host].free
        if need.nano_cpus and need.nano_cpus > free.nano_cpus:
            out.append(Shortfall(host, "cpu", need.nano_cpus, free.nano_cpus))
        if need.memory and need.memory > free.memory:
            out.append(Shortfall(host, "memory", need.memory, free.memory))
    return out


def _capacity_sync(client: docker.DockerClient, host: str) -> HostCapacity:
    info = client.info()
    total = Resources(int(info.get("NCPU", 0)) * 1_000_000_000, int(info.get("MemTotal", 0)))
    reserved = Resources()
    for c in client.api.containers(filters={"status": "running"}):
        hc = client.api.inspect_container(c["Id"]).get("HostConfig") or {}
        nano = int(hc.get("NanoCpus") or 0)
        if not nano and hc.get("CpuQuota") and hc.get("CpuPeriod"):
            nano = int(hc["CpuQuota"] * 1_000_000_000 / hc["CpuPeriod"])
        reserved = reserved + Resources(nano, int(hc.get("Memory") or 0))
    return HostCapacity(host, total, reserved)


async def host_capacity(conns: HostConnections, host: str) -> HostCapacity:
    """`docker info` totals and the limits of the host's running containers."""
    return await conns.run(host, lambda c: _capacity_sync(c, host))


async def check_capacity(
    conns: HostConnections, extra: Mapping[str, int], per_instance: Resources
) -> list[Shortfall]:
    """Shortfalls of the hosts given the extra instances each needs; a host that cannot be
    asked raises its DockerTargetError (the first, by host order)."""
    hosts = [h for h, n in extra.items() if n > 0]
    found = await conns.each(hosts, lambda h: host_capacity(conns, h))
    capacity: dict[str, HostCapacity] = {}
    for host in hosts:
        result = found[host]
        if isinstance(result, DockerTargetError):
            raise result
        capacity[host] = result
    return shortfalls(capacity, extra, per_instance)
