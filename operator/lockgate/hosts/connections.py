"""One docker-py client per host, reused, over a unix socket, tcp (mutual TLS from PEM
strings) or ssh (our own paramiko connection, see `ssh`). docker-py is blocking, so every
call runs in a worker thread (`asyncio.to_thread`), bounded by one semaphore across hosts
and by a per-host timeout; a failed host drops its client so the next call reconnects.

docker-py (and, through it and `ssh`, paramiko) is imported by the first connection, in its
worker thread, never by importing this module: a Kubernetes-only operator does not load it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from .errors import (
    MAX_SESSIONS,
    DockerTargetError,
    HostUnavailable,
    ends_connection,
    translate_error,
)
from .spec import HostSpec

if TYPE_CHECKING:
    import docker

T = TypeVar("T")

# docker-py's newest API version; a daemon answering a lower one is spoken to in its own.
_CLIENT_API_VERSION = "1.45"
_MIN_API_VERSION = "1.24"


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


class EventStream(Protocol):
    """A host's Docker event stream: iterating blocks until the next event (a dict as the
    daemon sends it) and ends when the stream ends or breaks; `close()`, from any thread,
    ends it and frees its connection."""

    def __iter__(self) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


class _DockerEvents:
    """docker-py's event stream, closable on every transport: docker-py's own `close()`
    refuses an SSH channel ("Cancellable streams not supported"), so that one is closed
    as a channel, which ends a read blocked on it as the socket's shutdown does."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for event in self._stream:
            if isinstance(event, dict):
                yield event

    def close(self) -> None:
        response = self._stream._response
        try:
            fp = response.raw._fp.fp if response.raw._fp is not None else None
            channel = getattr(fp, "channel", None)
            if channel is not None and hasattr(channel, "get_transport"):
                channel.close()  # a paramiko channel (ssh://)
            elif fp is not None:
                self._stream.close()  # shutdown() of the socket (unix://, tcp://, TLS)
        except Exception:  # already closed, or the connection is gone: nothing left to end
            pass
        with contextlib.suppress(Exception):
            response.close()


class HostConnections:
    """One docker-py client per host, created on first use and reused.

    `run(host, fn)` calls the blocking `fn(client)` in a worker thread with the host's
    timeout, at most `max_parallel` at once across all hosts, and turns transport failures
    into HostUnavailable / HostKeyError naming the host (SessionRefused when an SSH server
    refuses another session).
    """

    def __init__(
        self,
        hosts: Iterable[HostSpec],
        *,
        timeout: float = 30.0,
        connect_timeout: float = 10.0,
        max_parallel: int = MAX_SESSIONS - 1,
    ) -> None:
        self._specs: dict[str, HostSpec] = {h.name: h for h in hosts}
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_parallel = max_parallel
        self._semaphores: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}
        self._clients: dict[str, docker.DockerClient] = {}
        # (host, PEM name, content) -> memfd: a rotated certificate gets a file of its own
        self._tls_files: dict[tuple[str, str, str], int] = {}
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
        import docker
        import docker.tls

        timeout = int(max(1, self.timeout))
        client: docker.DockerClient | None = None
        try:
            if spec.transport == "ssh":
                from .ssh_transport import PinnedSSHAdapter

                # Channel reads wait as long as a stop with its grace period may take; the
                # caller's own deadline (run) comes first.
                adapter = PinnedSSHAdapter(
                    spec, self.connect_timeout, self.timeout * 4, max_pool_size=self.max_parallel
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
            raise translate_error(spec.name, exc) from exc

    def _tls_file(self, spec: HostSpec, name: str) -> str:
        """A path to one PEM that only this process can open and that ends with it.

        docker-py takes the client certificate and key as paths and reads them at every new
        connection, so they must outlive the client's construction. An in-memory file
        (memfd) is never on disk: the key is not written out, and an operator killed with
        SIGKILL leaves nothing behind (a temporary directory was left in /tmp each time)."""
        content = {"ca.pem": spec.tls_ca, "cert.pem": spec.tls_cert, "key.pem": spec.tls_key}[name]
        if not content:
            raise DockerTargetError(spec.name, f"TLS needs ca.pem, cert.pem and key.pem ({name})")
        with self._lock:
            fd = self._tls_files.get((spec.name, name, content))
            if fd is None:
                fd = os.memfd_create(f"lockgate-tls-{spec.name}-{name}")
                os.write(fd, content.encode())
                self._tls_files[(spec.name, name, content)] = fd
        return f"/proc/self/fd/{fd}"

    def _drop(self, host: str) -> None:
        with self._lock:
            client = self._clients.pop(host, None)
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()

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
                if ends_connection(exc):
                    self._drop(host)
                raise
            except TimeoutError as exc:
                self._drop(host)
                raise HostUnavailable(host, f"no answer within {limit:g} s") from exc
            except Exception as exc:
                error = translate_error(host, exc)
                if ends_connection(error):
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

    def open_events(self, host: str, filters: Mapping[str, Sequence[str]]) -> EventStream:
        """The host's Docker events matching `filters` (the Engine API's: type, container,
        event, …) from now on. Blocking: call it in a worker thread, and read the stream in
        a thread of its own (it holds one connection of the host until closed). Transport
        failures raise the DockerTargetError naming the host, as `run` does."""
        spec = self.spec(host)
        try:
            client = self._client_sync(host)
            stream = client.api.events(
                filters={key: list(values) for key, values in filters.items()}, decode=True
            )
        except Exception as exc:
            error = translate_error(spec.name, exc)
            if ends_connection(error):
                self._drop(host)
            raise error from exc
        return _DockerEvents(stream)

    async def ping(self, host: str) -> None:
        await self.run(host, lambda c: c.ping())

    def close(self) -> None:
        for host in list(self._clients):
            self._drop(host)
        # The in-memory PEMs live as long as the pool: a client dropped by one thread may
        # still be connecting in another, and a closed descriptor's number is soon reused.
        with self._lock:
            files, self._tls_files = self._tls_files, {}
        for fd in files.values():
            os.close(fd)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.close)
