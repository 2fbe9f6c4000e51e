"""Errors that name the host they happened on, and the translation of docker-py, requests
and paramiko exceptions into them.

docker-py and paramiko are imported when a Docker fleet first connects, never by importing
this module (a Kubernetes-only operator never loads them): an exception can only be one of
theirs once its module is loaded, so `translate_error` looks only at loaded modules.
"""

from __future__ import annotations

import re
import socket
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import docker.errors


# SSH sessions one Application's connection to a host holds at most: a call each of
# `HostConnections`' parallel calls, and one event stream.
MAX_SESSIONS = 9


class DockerTargetError(RuntimeError):
    """Something failed on a named host; the message starts with the host's name."""

    def __init__(self, host: str, message: str) -> None:
        self.host = host
        self.reason = message
        super().__init__(f"docker host {host}: {message}")


class HostUnavailable(DockerTargetError):
    """The host's daemon (or its SSH server) refused, did not answer, or went away."""


class SessionRefused(HostUnavailable):
    """The SSH server refused another session on a connection that is still up (sshd's
    MaxSessions): the calls on the connection's other sessions go on, so it is kept."""


class HostKeyError(DockerTargetError):
    """The SSH host key is not in known_hosts, or differs from it: nothing was sent."""


class ImageUnavailable(DockerTargetError):
    """The image is neither on the host nor pullable there."""


def ends_connection(error: DockerTargetError) -> bool:
    """Whether the host's client must be dropped (and a new connection opened by the next
    call) after this error."""
    return isinstance(error, HostUnavailable | HostKeyError) and not isinstance(
        error, SessionRefused
    )


def translate_error(host: str, exc: BaseException) -> DockerTargetError:
    """A DockerTargetError naming host for an exception from docker-py, requests or paramiko."""
    if isinstance(exc, DockerTargetError):
        return exc
    if "paramiko" in sys.modules:
        translated = _translate_paramiko(host, exc)
        if translated is not None:
            return translated
    if "docker.errors" in sys.modules:
        translated = _translate_docker(host, exc)
        if translated is not None:
            return translated
    if "requests" in sys.modules:
        import requests

        if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return HostUnavailable(host, f"daemon unreachable: {_short(exc)}")
    if isinstance(exc, OSError | socket.timeout | EOFError):
        return HostUnavailable(host, f"daemon unreachable: {_short(exc)}")
    return DockerTargetError(host, f"{type(exc).__name__}: {exc}")


def _translate_paramiko(host: str, exc: BaseException) -> DockerTargetError | None:
    import paramiko

    if isinstance(exc, paramiko.BadHostKeyException):
        return HostKeyError(
            host,
            f"SSH host key of {exc.hostname} changed: got {exc.key.get_name()} "
            f"{exc.key.get_base64()[:16]}…, known_hosts has a different key; refusing",
        )
    if isinstance(exc, paramiko.ChannelException):
        return SessionRefused(
            host,
            f"the SSH server refused another session ({exc.text}): lockgate holds up to "
            f"{MAX_SESSIONS} at once on its connection ({MAX_SESSIONS - 1} calls and an event "
            f"stream), so sshd's MaxSessions must be at least {MAX_SESSIONS} (its default is 10)",
        )
    if isinstance(exc, paramiko.AuthenticationException):
        return HostUnavailable(host, f"SSH authentication failed: {exc}")
    if isinstance(exc, paramiko.SSHException):
        text = str(exc)
        if "known_hosts" in text:
            return HostKeyError(host, f"SSH host key unknown, refusing ({text})")
        return HostUnavailable(host, f"SSH failed: {text}")
    return None


def _translate_docker(host: str, exc: BaseException) -> DockerTargetError | None:
    import docker.errors

    if isinstance(exc, docker.errors.ImageNotFound):
        return ImageUnavailable(host, explain(exc))
    if isinstance(exc, docker.errors.APIError):
        return DockerTargetError(host, f"the daemon refused: {explain(exc)}")
    if isinstance(exc, docker.errors.DockerException):
        return HostUnavailable(host, f"daemon unreachable: {_short(exc)}")
    return None


def explain(exc: docker.errors.APIError) -> str:
    return str(exc.explanation or exc)


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    # requests nests the cause in long reprs; the innermost reason is what a human needs.
    match = re.search(r"(\[Errno [^\]]+\][^'\")]*|Connection refused|timed out)", text)
    return match.group(0) if match else text[:300]
