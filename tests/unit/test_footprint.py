"""A Kubernetes-only operator does not carry the Docker fleet's client libraries: docker-py
and paramiko (with cryptography's SSH parts, about 18 MiB of RSS) are loaded when a Docker
fleet first connects to a host, not when the operator starts.

Each check runs in a fresh interpreter: this test process has imported both long ago.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys

import paramiko

# What `lockgate operator` imports before kopf starts (lockgate.cli.main's run_operator).
OPERATOR_MODULES = (
    "lockgate.cli.main",
    "lockgate.controller",
    "lockgate.controller.handlers",
    "lockgate.controller.process",
    "lockgate.controller.leader",
    "lockgate.election",
)
DOCKER_ONLY = ("docker", "paramiko")

_LOADED = """
import json, sys
def loaded():
    return sorted(m for m in sys.modules if m.split(".")[0] in {docker_only!r})
"""


def _fresh(code: str, stdin: str = "") -> dict[str, object]:
    """Run `code` in a new interpreter; its last stdout line, parsed as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", _LOADED.format(docker_only=DOCKER_ONLY) + code],
        input=stdin,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, object] = json.loads(proc.stdout.splitlines()[-1])
    return result


def test_starting_the_operator_loads_neither_docker_py_nor_paramiko() -> None:
    code = f"""
import importlib
for name in {OPERATOR_MODULES!r}:
    importlib.import_module(name)
print(json.dumps({{"loaded": loaded()}}))
"""
    assert _fresh(code) == {"loaded": []}


def test_a_docker_fleets_first_connection_loads_them_and_still_names_the_host() -> None:
    """The libraries come in at first use, and a host that cannot be reached is reported as
    before: unix:// and ssh:// (a closed port on loopback), through the operator's modules."""
    key, host_key = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    private = io.StringIO()
    key.write_private_key(private)
    credentials = {
        "ssh_key": private.getvalue(),
        "known_hosts": f"127.0.0.1 {host_key.get_name()} {host_key.get_base64()}",
    }
    code = """
import asyncio
import lockgate.controller
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.spec import HostSpec

before = loaded()
ssh = HostSpec("web-2", "ssh://deploy@127.0.0.1:1", "127.0.0.1", **json.load(sys.stdin))
conns = HostConnections([HostSpec("web-1", "unix:///nonexistent/docker.sock", "127.0.0.1"), ssh],
                        timeout=10, connect_timeout=5)
errors = {}
for host in conns.names:
    try:
        asyncio.run(conns.ping(host))
    except Exception as exc:
        errors[host] = [type(exc).__name__, str(exc)]
print(json.dumps({"before": before, "after": loaded(), "errors": errors}))
"""
    result = _fresh(code, stdin=json.dumps(credentials))
    assert result["before"] == []
    after = result["after"]
    assert isinstance(after, list) and "docker" in after and "paramiko" in after
    errors = result["errors"]
    assert isinstance(errors, dict)
    assert errors["web-1"][0] == "HostUnavailable"
    assert errors["web-1"][1].startswith("docker host web-1: daemon unreachable")
    assert errors["web-2"][0] == "HostUnavailable"
    assert errors["web-2"][1].startswith("docker host web-2: daemon unreachable")
