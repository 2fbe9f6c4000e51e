"""What starting the operator costs before it does anything: the RSS of a fresh interpreter
that imports the operator's command and handler modules, and which heavy packages that pulls
in.

    python -m bench.import_footprint            # median of 5 fresh interpreters
    python -m bench.import_footprint --runs 9 --modules lockgate.cli.main

Each run is a new `python -c` (nothing cached in the process), measured from its own
/proc/self/status after the imports: VmRSS (what `bench.peers` reports for a controller) and
VmHWM (the peak). Run it with the operator's interpreter (`$(hack/python-env)/python`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

DEFAULT_MODULES = ("lockgate.cli.main", "lockgate.controller.handlers")
# Packages a Kubernetes-only operator should not need (reported when loaded).
WATCHED = ("docker", "paramiko", "cryptography", "requests", "nacl", "bcrypt", "websocket")

_PROBE = """
import json, sys
def status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out
base = status()
for name in sys.argv[1].split(","):
    __import__(name)
after = status()
watched = [m for m in sys.argv[2].split(",") if m in sys.modules]
print(json.dumps({"base": base, "after": after, "modules": len(sys.modules), "watched": watched}))
"""


def measure(modules: tuple[str, ...]) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE, ",".join(modules), ",".join(WATCHED)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, object] = json.loads(out)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modules", default=",".join(DEFAULT_MODULES))
    args = parser.parse_args()
    modules = tuple(args.modules.split(","))
    runs = [measure(modules) for _ in range(args.runs)]
    rss = [r["after"]["VmRSS"] for r in runs]  # type: ignore[index]
    hwm = [r["after"]["VmHWM"] for r in runs]  # type: ignore[index]
    base = [r["base"]["VmRSS"] for r in runs]  # type: ignore[index]
    print(f"import {', '.join(modules)}  ({args.runs} fresh interpreters, {sys.executable})")
    print(
        f"  VmRSS after imports: median {statistics.median(rss):.1f} MiB "
        f"(min {min(rss):.1f}, max {max(rss):.1f}); bare interpreter {statistics.median(base):.1f} MiB"
    )
    print(f"  VmHWM: median {statistics.median(hwm):.1f} MiB")
    print(
        f"  modules loaded: {runs[0]['modules']}; of {', '.join(WATCHED)}: "
        f"{', '.join(runs[0]['watched']) or 'none'}"
    )  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
