"""docker-py's SSH transport on a connection lockgate opened itself (see `ssh`).

A module of its own because the class derives from docker-py's: `connections` imports it
when it first connects to an ssh:// host, so importing `connections` loads neither docker-py
nor paramiko.
"""

from __future__ import annotations

from typing import Any

from docker.transport import SSHHTTPAdapter
from docker.transport.sshconn import SSHConnectionPool

from .spec import HostSpec
from .ssh import ssh_connect


class PinnedSSHAdapter(SSHHTTPAdapter):  # type: ignore[misc]
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
        with self.pools.lock:
            transport = self.ssh_client.get_transport() if self.ssh_client else None
            if transport is None or not transport.is_active():
                # The connection ended between calls (sshd restarted, a network cut): its
                # channels ended with it, and the call would fail on one. Open a new one.
                self._connect()
                self.pools.clear()
            pool = self.pools.get(_POOL_KEY)
            if pool is None:
                pool = _ChannelPool(
                    ssh_client=self.ssh_client,
                    timeout=self.timeout,
                    maxsize=self.max_pool_size,
                    host=self.ssh_host,
                )
                self.pools[_POOL_KEY] = pool
            return pool


_POOL_KEY = "http+docker://ssh/"


class _ChannelPool(SSHConnectionPool):  # type: ignore[misc]
    """docker-py's pool of channels, which hands out a pooled channel without urllib3's
    check that its connection is still there: one whose far end ended (its `dial-stdio`
    exited on the host) or that a closed event stream left behind failed the call with
    "Socket is closed". Such a one is closed here, and the call opens a new channel."""

    def _get_conn(self, timeout: float | None = None) -> Any:
        conn = super()._get_conn(timeout)
        channel = conn.sock
        if channel is not None and (channel.closed or channel.eof_received):
            conn.close()
        return conn
