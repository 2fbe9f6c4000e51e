"""One Docker host as lockgate reaches it, with its credentials resolved."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from lockgate.api.application import DockerHost as DockerHostApi
from lockgate.api.common import SecretKeyReference


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
