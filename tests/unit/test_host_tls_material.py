"""A Docker host's TLS client key is never written to disk, so an operator killed with SIGKILL
leaves no key behind (it used to leave a directory with the key in /tmp on every kill)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from lockgate.hosts.connections import HostConnections
from lockgate.hosts.spec import HostSpec

CHILD = textwrap.dedent(
    """
    import json, os, signal
    from lockgate.hosts.connections import HostConnections
    from lockgate.hosts.spec import HostSpec

    pem = {n: f"-----BEGIN {n}-----\\n{n}-body\\n" for n in ("ca.pem", "cert.pem", "key.pem")}
    spec = HostSpec(name="host2", url="tcp://127.0.0.1:2376", address="127.0.0.1",
                    tls_ca=pem["ca.pem"], tls_cert=pem["cert.pem"], tls_key=pem["key.pem"])
    conns = HostConnections([spec])
    paths = {n: conns._tls_file(spec, n) for n in pem}
    # What docker-py does at each new connection: open the path and read it.
    read = {n: open(p).read() for n, p in paths.items()}
    again = conns._tls_file(spec, "key.pem") == paths["key.pem"]
    print(json.dumps({"read_back": read == pem, "again": again}), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_a_killed_operator_leaves_no_tls_key_behind(tmp_path: Path) -> None:
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp)}
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=False
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert json.loads(child.stdout) == {"read_back": True, "again": True}
    assert list(tmp.iterdir()) == []


def test_a_rotated_client_key_is_the_one_the_next_connection_reads() -> None:
    def spec(key: str) -> HostSpec:
        return HostSpec(
            name="host2",
            url="tcp://127.0.0.1:2376",
            address="127.0.0.1",
            tls_ca="ca",
            tls_cert="cert",
            tls_key=key,
        )

    conns = HostConnections([spec("old key")])
    try:
        before = conns._tls_file(spec("old key"), "key.pem")
        conns.update([spec("new key")])  # the Secret was rotated: the host reconnects
        after = conns._tls_file(spec("new key"), "key.pem")
        assert Path(after).read_text() == "new key"
        # A client made before the rotation may still be connecting with the old file.
        assert Path(before).read_text() == "old key"
    finally:
        conns.close()
