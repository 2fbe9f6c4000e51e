"""What an idle `lockgate operator` holds and spends: RSS and CPU seconds over 10 s windows,
on the local cluster (hack/cluster, hack/traefik, hack/kubelet up).

Per run, in a namespace of its own, with an operator of its own limited to it:
  empty     the operator healthy, nothing to do (its namespace is empty)
  paused    one canary (3 replicas, steps 10 -> 50 -> pause) just reached 50% in Traefik's
            API, as bench.peers measures it ("controller RSS, one rollout paused at 50%")
  settled   the same rollout 20 s later, nothing moving
and, for `settled`, the CPU of each of the operator's threads (from /proc/PID/task). With
`--profile DIR` a py-spy record of the settled window is written there (py-spy must be on
PATH or beside the interpreter; it is not a dependency of lockgate).

    python -m bench.operator_idle [--runs 3] [--profile /tmp/idle-prof]

The operator is the one beside this interpreter (`.venv/bin/lockgate`): run it with
PYTHONPATH=<other tree>/operator to measure another tree's code with the same packages.

Measured 2026-12-02 04:08-04:18 UTC (2 runs per tree, taken alternately; CPU in 10 ms ticks):
main 4b20d4c: RSS empty 119.5, paused 123.5, settled 123.5 MiB; CPU paused 0.04/0.05 s,
settled 0.01/0.00 s. This branch (docker-py and paramiko loaded lazily): 101.7, 106.6, 106.6
MiB; CPU paused 0.06/0.07 s, settled 0.01/0.01 s. Branch footprint-json (core/apps calls as
JSON, no typed models): 77.4, 81.2, 81.2 MiB; CPU paused 0.06/0.05 s, settled 0.01/0.01 s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

from kubernetes import client

from bench.operator import exits_cleanly, running_operator
from bench.peers import REPLICAS, STABLE, idle, proc_cpu_rss, wait_share
from tests.support.cluster import cluster_info, traefik_info
from tests.support.operator_fixtures import operator_env
from tests.support.rollouts import Lockgate, application, deployment, wait_within

WINDOW = 10.0
SETTLE = 20.0


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of pid, by thread name (threads of one name summed)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: Counter[str] = Counter()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[name] += (int(fields[11]) + int(fields[12])) / tick
    return dict(out)


def one_run(
    api: client.ApiClient, env: dict[str, str], api_url: str, profile: Path | None
) -> dict[str, float]:
    core = client.CoreV1Api(api)
    ns = f"idle-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": ns}})
    figures: dict[str, float] = {}
    with running_operator(env, ns) as op:
        try:
            assert op.process is not None
            pid = op.process.pid
            figures["empty_rss"], figures["empty_cpu"] = idle(pid, WINDOW)
            lg = Lockgate(api, ns)
            lg.create(application("demo", REPLICAS, namespace=ns))
            lg.create(deployment("demo-0", "demo", f"demo:{STABLE}"))
            lg.wait_phase("demo-0", {"Succeeded"})
            steps = [{"setWeight": 10}, {"setWeight": 50}, {"pause": {}}, {"setWeight": 100}]
            lg.create(
                deployment(
                    "demo-1", "demo", "demo:v2", {"type": "Canary", "canary": {"steps": steps}}
                )
            )
            wait_share(api_url, f"{ns}-demo@kubernetescrd", lambda s: s >= 50, "the canary at 50%")
            figures["paused_rss"], figures["paused_cpu"] = idle(pid, WINDOW)
            time.sleep(SETTLE)
            threads = thread_cpu(pid)
            cpu0, _ = proc_cpu_rss(pid)
            if profile is not None:
                profile.mkdir(parents=True, exist_ok=True)
                spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
                out = profile / f"{ns}.txt"
                subprocess.run(
                    [
                        spy,
                        "record",
                        "--pid",
                        str(pid),
                        "--duration",
                        str(int(WINDOW)),
                        "--rate",
                        "200",
                        "--format",
                        "raw",
                        "--output",
                        str(out),
                    ],
                    check=False,
                    capture_output=True,
                )
            else:
                time.sleep(WINDOW)
            cpu1, figures["settled_rss"] = proc_cpu_rss(pid)
            figures["settled_cpu"] = cpu1 - cpu0
            after = thread_cpu(pid)
            for name, seconds in after.items():
                spent = seconds - threads.get(name, 0.0)
                if spent > 0:
                    figures[f"thread {name}"] = spent
        finally:
            # Deleted while the operator runs, so kopf's finalizers come off.
            with contextlib.suppress(client.ApiException):
                core.delete_namespace(ns)
            wait_within(f"namespace {ns} deleted", lambda: not _exists(core, ns), 120)
    return figures


def _exists(core: client.CoreV1Api, ns: str) -> bool:
    try:
        core.read_namespace(ns)
    except client.ApiException as err:
        if err.status == 404:
            return False
        raise
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", type=Path, default=None)
    args = parser.parse_args()
    cluster, traefik = cluster_info(), traefik_info()
    api = cluster.api_client()
    env = operator_env(cluster, traefik)
    runs: list[dict[str, float]] = []
    with exits_cleanly():
        for i in range(args.runs):
            figures = one_run(api, env, traefik.api_url, args.profile)
            runs.append(figures)
            print(f"run {i + 1}: {json.dumps(figures)}", flush=True)
    tree = os.environ.get("PYTHONPATH") or "this tree"
    print(
        f"\n{args.runs} runs, operator {Path(sys.executable).with_name('lockgate')} ({tree}); medians:"
    )
    for key in ("empty", "paused", "settled"):
        rss = statistics.median(r[f"{key}_rss"] for r in runs)
        cpu = statistics.median(r[f"{key}_cpu"] for r in runs)
        print(f"  {key:8} RSS {rss:6.1f} MiB   CPU over {WINDOW:.0f} s {cpu:.2f} s")
    names = sorted({k for r in runs for k in r if k.startswith("thread ")})
    for name in names:
        print(f"  settled, {name}: {statistics.median(r.get(name, 0.0) for r in runs):.2f} s")


if __name__ == "__main__":
    main()
