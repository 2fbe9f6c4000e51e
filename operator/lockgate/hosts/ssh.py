"""SSH to a host with a key and known_hosts given as strings: an unknown or changed host
key is refused before authentication, never added, and ~/.ssh is never read.

paramiko is imported on the first connection (the functions below run in worker threads),
never by importing this module: a Kubernetes-only operator does not load it.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from .errors import DockerTargetError, translate_error
from .spec import HostSpec

if TYPE_CHECKING:
    import paramiko


def load_private_key(text: str, host: str) -> paramiko.PKey:
    """A paramiko key from its text (ed25519, ECDSA or RSA; unencrypted)."""
    import paramiko

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
    import paramiko

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
