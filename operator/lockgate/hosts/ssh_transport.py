"""docker-py's SSH transport on a connection lockgate opened itself (see `ssh`).

A module of its own because the class derives from docker-py's: `connections` imports it
when it first connects to an ssh:// host, so importing `connections` loads neither docker-py
nor paramiko.
"""

from __future__ import annotations

from typing import Any

from docker.transport import SSHHTTPAdapter

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
        return super().get_connection("http+docker://ssh/", proxies)
