"""How long `kubectl lockgate abort NAME --no-wait` takes before its change lands, without a
cluster: a stand-in API server on loopback (tests/support/fake_apiserver.py, TLS with the
cluster CA and a client certificate, as hack/cluster's admin kubeconfig) records when the
plugin's GET and its PATCH arrive; the plugin is the installed `kubectl-lockgate` entry
point, a fresh process per run.

    python -m bench.plugin_action                       # this tree, 21 runs
    python -m bench.plugin_action --tree /work/main --tree .   # before / after, same packages
    python -m bench.plugin_action --auth token --bytecode cached
    flock -o /tmp/lockgate-suite.lock bash -c \
      'hack/cluster up && python -m bench.plugin_action --cluster; hack/cluster down'

Per run, from the spawn: the GET's arrival (the process is up, has read the kubeconfig and
connected), the PATCH's arrival (the action lands: the API server applies it there), the
process's exit; and its CPU time (user + sys, from wait4), which a busy machine inflates
less than wall time. `--bytecode none` runs with PYTHONDONTWRITEBYTECODE=1 and no cached
bytecode for the tree (every lockgate module compiled from source on each run, as in an
environment that sets it, this one's included); `cached` gives the tree a warm pycache
(PYTHONPYCACHEPREFIX in a temporary directory), as an installed wheel has. `--tree DIR` runs
that tree's `operator/` (PYTHONPATH) with this interpreter's packages. Also reported: the
bare interpreter (`python -c pass` with the same site), the floor of any Python CLI, and,
when hack/peers has built it, Argo Rollouts' `kubectl argo rollouts abort` against the same
stand-in (one PATCH of the Rollout's status), the row's peer in docs/comparison.md.
With --cluster the same commands abort objects in the local control plane (their run time
only: the API server records no arrival times).
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


class Subject:
    """One command to time: its label, argv for a name, environment, and what the stand-in
    must hold and then see for it."""

    def __init__(self, label: str, argv: list[str], env: dict[str, str], kind: str) -> None:
        self.label = label
        self.argv = argv  # "{name}" replaced by the run's object name
        self.env = env
        self.kind = kind  # "lockgate" or "argo"
        self.results: dict[str, list[float]] = {"get": [], "lands": [], "exit": [], "cpu": []}

    def prepare(self, server: FakeApiServer, name: str) -> None:
        if self.kind == "lockgate":
            path = DEPLOYMENTS.format(ns=NAMESPACE, name=name)
            server.objects[path] = lockgate_deployment(name, NAMESPACE)
        else:
            path = f"/apis/argoproj.io/v1alpha1/namespaces/{NAMESPACE}/rollouts/{name}/status"
            server.objects[path] = {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "Rollout",
                "metadata": {"name": name, "namespace": NAMESPACE, "resourceVersion": "7"},
                "spec": {},
                "status": {},
            }

    def run(self, server: FakeApiServer, name: str, record: bool) -> None:
        self.prepare(server, name)
        first = len(server.seen)
        start, end, cpu = spawn([a.replace("{name}", name) for a in self.argv], self.env)
        seen = server.seen[first:]
        if self.kind == "lockgate":
            # the Deployment as it is now (the phase check), then the annotation's patch
            if [s.method for s in seen] != ["GET", "PATCH"]:
                raise RuntimeError(f"{self.label}: the server saw {[s.method for s in seen]}")
        elif [s.method for s in seen] != ["PATCH"] or seen[0].body != {"status": {"abort": True}}:
            raise RuntimeError(f"{self.label}: the server saw {[(s.method, s.path) for s in seen]}")
        if record:
            self.results["get"].append(seen[0].at - start)
            self.results["lands"].append(seen[-1].at - start)
            self.results["exit"].append(end - start)
            self.results["cpu"].append(cpu)


def lockgate_subject(tree: Path, bytecode: str, work: Path, kubeconfig: Path) -> Subject:
    plugin = str(Path(sys.executable).with_name("kubectl-lockgate"))
    env = {**os.environ, "PYTHONPATH": str(tree / "operator"), "KUBECONFIG": str(kubeconfig)}
    env.pop("PYTHONPYCACHEPREFIX", None)
    if bytecode == "none":
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        # (the interpreter's own library keeps its bytecode, as a PYTHONPYCACHEPREFIX
        # would not: a pycache left next to the tree's sources would be read, so say so)
        if any((tree / "operator" / "lockgate").rglob("__pycache__")):
            print(f"  note: {tree} has __pycache__ directories: its bytecode is cached")
    else:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / f"pycache-{len(str(tree))}-{tree.name}")
    commit = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    label = f"{tree} ({commit or '?'}), bytecode {bytecode}"
    return Subject(label, [plugin, "abort", "{name}", "--no-wait"], env, "lockgate")


def bare_interpreter(runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start, end, _ = spawn([sys.executable, "-c", "pass"], dict(os.environ))
        times.append(end - start)
    return times


def argo_cli() -> Path | None:
    """Argo Rollouts' kubectl plugin as hack/peers builds it, if it has."""
    cache = Path(os.environ.get("LOCKGATE_CACHE") or Path.home() / ".cache" / "lockgate")
    found = sorted(cache.glob("tools/argo-rollouts-*/kubectl-argo-rollouts"))
    return found[-1] if found else None


def against_cluster(
    trees: list[Path], modes: tuple[str, ...], runs: int, argo: Path | None
) -> None:
    """The same commands against the local control plane (hack/cluster up, under the suite's
    lock): the process's run time, as bench/peers reports it, each action checked to have
    landed. Objects in a namespace of their own, removed afterwards with Argo's CRD when
    this run installed it. Interleaved run by run like the stand-in's."""
    from kubernetes import client

    from tests.support.cluster import cluster_info

    cluster = cluster_info()
    custom = client.CustomObjectsApi(cluster.api_client())
    namespace = "lockgate-plugin-bench"
    cluster.kubectl("create", "namespace", namespace)
    installed_crd = False
    if argo is not None:
        crd = argo.parent / "crds" / "rollout-crd.yaml"
        if cluster.kubectl("get", "crd", "rollouts.argoproj.io").returncode != 0:
            applied = cluster.kubectl("apply", "--server-side", "-f", str(crd))
            if applied.returncode != 0:
                raise RuntimeError(applied.stderr)
            cluster.kubectl("wait", "--for=condition=Established", "-f", str(crd))
            installed_crd = True
    kubeconfig = str(cluster.kubeconfig)
    subjects: list[tuple[str, list[str], dict[str, str], str]] = []
    with tempfile.TemporaryDirectory(prefix="lockgate-plugin-bench-") as tmp:
        for mode in modes:
            for tree in trees:
                subject = lockgate_subject(tree, mode, Path(tmp), Path(kubeconfig))
                argv = [*subject.argv, "-n", namespace]
                subjects.append((subject.label, argv, subject.env, "lockgate"))
        if argo is not None:
            env = {**os.environ, "KUBECONFIG": kubeconfig}
            subjects.append(
                (str(argo), [str(argo), "abort", "{name}", "-n", namespace], env, "argo")
            )
        times: dict[str, tuple[list[float], list[float]]] = {s[0]: ([], []) for s in subjects}
        try:
            for i in range(runs + 1):
                for n, (label, argv, env, kind) in enumerate(subjects):
                    name = f"web-{i}-{n}"
                    if kind == "lockgate":
                        body = {
                            "apiVersion": "lockgate.dev/v1alpha1",
                            "kind": "Deployment",
                            "metadata": {"name": name},
                            "spec": {"application": "web", "image": "demo:v2"},
                        }
                        custom.create_namespaced_custom_object(
                            "lockgate.dev", "v1alpha1", namespace, "deployments", body
                        )
                    else:
                        labels = {"app": name}
                        body = {
                            "apiVersion": "argoproj.io/v1alpha1",
                            "kind": "Rollout",
                            "metadata": {"name": name},
                            "spec": {
                                "selector": {"matchLabels": labels},
                                "template": {
                                    "metadata": {"labels": labels},
                                    "spec": {"containers": [{"name": "app", "image": "demo:v2"}]},
                                },
                                "strategy": {"canary": {"steps": [{"pause": {}}]}},
                            },
                        }
                        custom.create_namespaced_custom_object(
                            "argoproj.io", "v1alpha1", namespace, "rollouts", body
                        )
                    start, end, cpu = spawn([a.replace("{name}", name) for a in argv], env)
                    if kind == "lockgate":
                        got = custom.get_namespaced_custom_object(
                            "lockgate.dev", "v1alpha1", namespace, "deployments", name
                        )
                        landed = (got["metadata"].get("annotations") or {}).get(
                            "lockgate.dev/action"
                        ) == "abort"
                    else:
                        got = custom.get_namespaced_custom_object(
                            "argoproj.io", "v1alpha1", namespace, "rollouts", name
                        )
                        landed = (got.get("status") or {}).get("abort") is True
                    if not landed:
                        raise RuntimeError(f"{label}: the abort of {name} did not land: {got}")
                    if i > 0:
                        times[label][0].append(end - start)
                        times[label][1].append(cpu)
        finally:
            cluster.kubectl("delete", "namespace", namespace, "--wait=false")
            if installed_crd:
                cluster.kubectl("delete", "crd", "rollouts.argoproj.io", "--wait=false")
    print(f"against the local control plane ({cluster.server}), {runs} runs each, interleaved")
    for label, (walls, cpus) in times.items():
        print(f"{label}:")
        print(line("run time (spawn -> exit)", walls))
        print(line("CPU (user + sys)", cpus))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


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
    parser.add_argument(
        "--argo",
        type=Path,
        default=argo_cli(),
        help="Argo Rollouts' kubectl plugin, timed the same way (default: hack/peers' build)",
    )
    parser.add_argument("--no-argo", action="store_true")
    parser.add_argument(
        "--cluster",
        action="store_true",
        help="against the running local control plane instead (run under the suite's lock)",
    )
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [Path(__file__).resolve().parents[1]]]
    modes = ("none", "cached") if args.bytecode == "both" else (args.bytecode,)
    if args.cluster:
        against_cluster(trees, modes, args.runs, None if args.no_argo else args.argo)
        return
    print(f"abort against a stand-in API server (TLS, auth {args.auth}), {args.runs} runs each,")
    print(f"the commands interleaved run by run; interpreter {sys.executable}")
    print(f"load average {os.getloadavg()[0]:.2f} at start")
    with tempfile.TemporaryDirectory(prefix="lockgate-plugin-bench-") as tmp:
        work = Path(tmp)
        pki = Pki(work / "pki")
        with FakeApiServer(pki=pki).running() as server:
            kubeconfig = write_kubeconfig(
                work / "kubeconfig",
                server.url,
                user_for(args.auth, pki),
                namespace=NAMESPACE,
                cluster={"certificate-authority": str(pki.path("ca.crt"))},
            )
            subjects = [
                lockgate_subject(tree, mode, work, kubeconfig) for mode in modes for tree in trees
            ]
            if args.argo and not args.no_argo:
                argo = [str(args.argo), "abort", "{name}", "-n", NAMESPACE]
                env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
                subjects.append(Subject(f"{args.argo}", argo, env, "argo"))
            for i in range(args.runs + 1):  # run 0 warms caches (and a cached pycache)
                for n, subject in enumerate(subjects):
                    subject.run(server, f"web-{i}-{n}", record=i > 0)
        bare = bare_interpreter(args.runs)
    for subject in subjects:
        print(f"{subject.label}:")
        if subject.kind == "lockgate":
            print(line("spawn -> GET arrives", subject.results["get"]))
        print(line("spawn -> PATCH arrives (lands)", subject.results["lands"]))
        print(line("spawn -> exit", subject.results["exit"]))
        print(line("CPU (user + sys)", subject.results["cpu"]))
    print("the interpreter alone:")
    print(line("python -c pass", bare))
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
