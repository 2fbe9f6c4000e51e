"""What starting the operator costs before it does anything: the RSS of a fresh interpreter
that imports what `lockgate operator` imports, then makes the Runtime kopf's startup handler
makes (`Runtime.from_env()`: the Kubernetes and HTTP clients), and which heavy packages that
pulls in. No cluster is needed: the kubeconfig written for the run names a loopback port
nothing listens on, and nothing is asked of it.

    python -m bench.import_footprint            # median of 5 fresh interpreters
    python -m bench.import_footprint --runs 9 --modules lockgate.cli.main --no-runtime
    python -m bench.import_footprint --plugin   # a `kubectl lockgate abort` instead

With --plugin each interpreter runs the plugin's abort against a stand-in API server over TLS
(tests/support/fake_apiserver.py) and reports its VmRSS once the action has landed, how many
modules it loaded, and which of NOT_FOR_AN_ACTION (what tests/unit/test_footprint.py
forbids on that path) it loaded. Its time: bench/plugin_action.py.

Each run is a new `python -c` (nothing cached in the process), measured from its own
/proc/self/status: VmRSS (what `bench.peers` reports for a controller) after the imports
and after the Runtime. Run it with the operator's interpreter (`$(hack/python-env)/python`);
with PYTHONPATH=<other tree>/operator it measures another tree's code with the same packages.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

DEFAULT_MODULES = (
    "lockgate.cli.main",
    "lockgate.controller",
    "lockgate.controller.process",
    "lockgate.controller.leader",
)
# Packages a Kubernetes-only operator should not need (reported when loaded).
WATCHED = (
    "docker",
    "paramiko",
    "cryptography",
    "kubernetes.client.api.core_v1_api",
    "kubernetes.client.api.apps_v1_api",
    "rich",
)
KUBECONFIG = """apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1", insecure-skip-tls-verify: true}}]
users: [{name: u, user: {token: unused}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"""

_PROBE = """
import json, sys
def rss():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS"))
out = {"base": rss()}
for name in sys.argv[1].split(","):
    __import__(name)
out["imports"] = rss()
if sys.argv[3] == "runtime":
    from lockgate.controller.runtime import Runtime
    runtime = Runtime.from_env()
    out["runtime"] = rss()
out["modules"] = len(sys.modules)
out["watched"] = [m for m in sys.argv[2].split(",") if m in sys.modules]
print(json.dumps(out))
"""


def measure(modules: tuple[str, ...], runtime: bool, kubeconfig: Path) -> dict[str, object]:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _PROBE,
            ",".join(modules),
            ",".join(WATCHED),
            "runtime" if runtime else "",
        ],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "KUBECONFIG": str(kubeconfig)},
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def _median(runs: list[dict[str, Any]], key: str) -> str:
    values = [float(r[key]) for r in runs]  # type: ignore[arg-type]
    return f"{statistics.median(values):.1f} MiB (min {min(values):.1f}, max {max(values):.1f})"


_PLUGIN_PROBE = """
import sys
from lockgate.cli.main import main
code = main(["abort", sys.argv[1], "--no-wait"])
modules = sorted(sys.modules)
import json
with open("/proc/self/status") as f:
    rss = next(int(l.split()[1]) / 1024 for l in f if l.startswith("VmRSS"))
print(json.dumps({"code": code, "rss": rss, "modules": modules}))
"""


def plugin_action(runs: int) -> None:
    from tests.support.fake_apiserver import (
        DEPLOYMENTS,
        NOT_FOR_AN_ACTION,
        FakeApiServer,
        Pki,
        lockgate_deployment,
        write_kubeconfig,
    )

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        pki = Pki(Path(tmp) / "pki")
        with FakeApiServer(pki=pki).running() as server:
            config = write_kubeconfig(
                Path(tmp) / "kubeconfig",
                server.url,
                {
                    "client-certificate": str(pki.path("client.crt")),
                    "client-key": str(pki.path("client.key")),
                },
                cluster={"certificate-authority": str(pki.path("ca.crt"))},
            )
            for run in range(runs):
                name = f"web-{run}"
                server.objects[DEPLOYMENTS.format(ns="ns1", name=name)] = lockgate_deployment(
                    name, "ns1"
                )
                out = subprocess.run(
                    [sys.executable, "-c", _PLUGIN_PROBE, name],
                    check=True,
                    capture_output=True,
                    text=True,
                    env={**os.environ, "KUBECONFIG": str(config)},
                ).stdout
                results.append(json.loads(out.splitlines()[-1]))
    modules = results[0]["modules"]
    unneeded = [
        m for m in modules if any(m == n or m.startswith(f"{n}.") for n in NOT_FOR_AN_ACTION)
    ]
    tree = os.environ.get("PYTHONPATH") or "the installed lockgate"
    print(f"{runs} fresh interpreters running `kubectl lockgate abort`, {sys.executable} ({tree}):")
    print(f"  VmRSS once it landed      {_median(results, 'rss')}")
    print(f"  modules loaded: {len(modules)}; of NOT_FOR_AN_ACTION: {unneeded or 'none'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modules", default=",".join(DEFAULT_MODULES))
    parser.add_argument("--no-runtime", action="store_true", help="imports only")
    parser.add_argument("--plugin", action="store_true", help="a plugin abort, see above")
    args = parser.parse_args()
    if args.plugin:
        plugin_action(args.runs)
        return
    modules = tuple(args.modules.split(","))
    with tempfile.TemporaryDirectory() as tmp:
        kubeconfig = Path(tmp) / "kubeconfig"
        kubeconfig.write_text(KUBECONFIG)
        runs = [measure(modules, not args.no_runtime, kubeconfig) for _ in range(args.runs)]
    tree = os.environ.get("PYTHONPATH") or "the installed lockgate"
    print(f"{args.runs} fresh interpreters, {sys.executable} ({tree}); VmRSS medians:")
    print(f"  bare interpreter          {_median(runs, 'base')}")
    print(f"  import {', '.join(modules)}")
    print(f"                            {_median(runs, 'imports')}")
    if not args.no_runtime:
        print(f"  + Runtime.from_env()      {_median(runs, 'runtime')}")
    watched = runs[0]["watched"]
    print(f"  modules loaded: {runs[0]['modules']}; of the watched ones: {watched or 'none'}")


if __name__ == "__main__":
    main()
