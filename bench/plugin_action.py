"""How long `kubectl lockgate abort NAME --no-wait` takes before its change lands, without a
cluster: a stand-in API server on loopback (tests/support/fake_apiserver.py, TLS with the
cluster CA and a client certificate, as hack/cluster's admin kubeconfig) records when the
plugin's GET and its PATCH arrive; the plugin is the installed `kubectl-lockgate` entry
point, a fresh process per run.

    python -m bench.plugin_action                       # this tree, 21 runs
    python -m bench.plugin_action --tree /work/main --tree .   # before / after, same packages
    python -m bench.plugin_action --auth token --bytecode cached

Per run, from the spawn: the GET's arrival (the process is up, has read the kubeconfig and
connected), the PATCH's arrival (the action lands: the API server applies it there), the
process's exit; and its CPU time (user + sys, from wait4), which a busy machine inflates
less than wall time. `--bytecode none` runs with PYTHONDONTWRITEBYTECODE=1 and no cached
bytecode for the tree (every lockgate module compiled from source on each run, as in an
environment that sets it, this one's included); `cached` gives the tree a warm pycache
(PYTHONPYCACHEPREFIX in a temporary directory), as an installed wheel has. `--tree DIR` runs
that tree's `operator/` (PYTHONPATH) with this interpreter's packages. Also reported: the
bare interpreter (`python -c pass` with the same site), the floor of any Python CLI.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.support.fake_apiserver import (
    DEPLOYMENTS,
    FakeApiServer,
    Pki,
    lockgate_deployment,
    write_kubeconfig,
)

NAMESPACE = "bench"


def spawn(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(start, exit monotonic, CPU seconds) of one process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    end = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}: {err}")
    return start, end, usage.ru_utime + usage.ru_stime


def user_for(auth: str, pki: Pki) -> dict[str, Any]:
    if auth == "certs":  # as hack/cluster writes it: files next to the kubeconfig
        return {
            "client-certificate": str(pki.path("client.crt")),
            "client-key": str(pki.path("client.key")),
        }
    if auth == "certs-data":
        import base64

        return {
            "client-certificate-data": base64.b64encode(
                pki.path("client.crt").read_bytes()
            ).decode(),
            "client-key-data": base64.b64encode(pki.path("client.key").read_bytes()).decode(),
        }
    return {"token": "bench-token"}


def measure(
    tree: Path, runs: int, auth: str, bytecode: str, work: Path, pki: Pki
) -> dict[str, list[float]]:
    server = FakeApiServer(pki=pki)
    plugin = str(Path(sys.executable).with_name("kubectl-lockgate"))
    env = {**os.environ, "PYTHONPATH": str(tree / "operator")}
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode == "none":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # (the interpreter's own library keeps its bytecode, as a PYTHONPYCACHEPREFIX
        # would not: a pycache left next to the tree's sources would be read, so say so)
        if any((tree / "operator" / "lockgate").rglob("__pycache__")):
            print(f"  note: {tree} has __pycache__ directories: its bytecode is cached")
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / f"pycache-{tree.name}")
    out: dict[str, list[float]] = {"get": [], "lands": [], "exit": [], "cpu": [], "bare": []}
    with server.running():
        env["KUBECONFIG"] = str(
            write_kubeconfig(
                work / f"kubeconfig-{auth}",
                server.url,
                user_for(auth, pki),
                namespace=NAMESPACE,
                cluster={"certificate-authority": str(pki.path("ca.crt"))},
            )
        )
        for i in range(runs + 1):  # run 0 warms the caches (and the pycache when cached)
            name = f"web-{i}"
            path = DEPLOYMENTS.format(ns=NAMESPACE, name=name)
            server.objects[path] = lockgate_deployment(name, NAMESPACE)
            first = len(server.seen)
            start, end, cpu = spawn([plugin, "abort", name, "--no-wait"], env)
            seen = server.seen[first:]
            methods = [s.method for s in seen]
            if methods != ["GET", "PATCH"]:
                raise RuntimeError(f"expected GET, PATCH; the server saw {methods}")
            if i == 0:
                continue
            out["get"].append(seen[0].at - start)
            out["lands"].append(seen[1].at - start)
            out["exit"].append(end - start)
            out["cpu"].append(cpu)
            bare_start, bare_end, _ = spawn([sys.executable, "-c", "pass"], env)
            out["bare"].append(bare_end - bare_start)
    return out


def line(label: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return (
        f"  {label:34s} median {statistics.median(ms):6.1f} ms  "
        f"(min {min(ms):6.1f}, max {max(ms):6.1f}, {len(ms)} runs)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument(
        "--tree", action="append", type=Path, help="a lockgate checkout (repeatable)"
    )
    parser.add_argument("--auth", choices=("certs", "certs-data", "token"), default="certs")
    parser.add_argument("--bytecode", choices=("none", "cached", "both"), default="both")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [Path(__file__).resolve().parents[1]]]
    modes = ("none", "cached") if args.bytecode == "both" else (args.bytecode,)
    print(f"kubectl-lockgate abort --no-wait against a stand-in API server (TLS, auth {args.auth})")
    print(f"interpreter {sys.executable}; load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="lockgate-plugin-bench-") as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        # Interleaved: each tree's runs of one mode follow each other closely, so a change
        # in the machine's load affects them alike.
        for mode in modes:
            for tree in trees:
                commit = subprocess.run(
                    ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
                    capture_output=True,
                    text=True,
                    check=False,
                ).stdout.strip()
                result = measure(tree, args.runs, args.auth, mode, work, pki)
                print(f"{tree} ({commit or '?'}), bytecode {mode}:")
                print(line("spawn -> GET arrives", result["get"]))
                print(line("spawn -> PATCH arrives (lands)", result["lands"]))
                print(line("spawn -> exit", result["exit"]))
                print(line("CPU (user + sys)", result["cpu"]))
                print(line("bare interpreter (python -c pass)", result["bare"]))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
