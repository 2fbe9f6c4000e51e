"""`kubectl lockgate` against the real control plane and operator: kubectl finds the plugin
on PATH (`kubectl-lockgate`) and runs it as a user would."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from hack.tools.load import Load
from tests.support.cluster import Cluster, Traefik
from tests.support.rollouts import Lockgate, application, deployment, host_of, wait_for

pytestmark = pytest.mark.integration

ANALYSIS = {"intervalSeconds": 2, "minRequests": 10, "maxConsecutiveFailures": 2}
MANUAL = {
    "type": "Canary",
    "canary": {"steps": [{"setWeight": 20}, {"pause": {}}, {"setWeight": 100}]},
}


def plugin_command(
    cluster: Cluster, *args: str, kubeconfig: Path | None = None
) -> tuple[list[str], dict[str, str]]:
    """`kubectl lockgate ARGS` as a user runs it: the command line and its environment."""
    env = cluster.env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return [str(cluster.kubectl_path), "lockgate", *args], env


def plugin(
    cluster: Cluster, *args: str, kubeconfig: Path | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    argv, env = plugin_command(cluster, *args, kubeconfig=kubeconfig)
    return subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def deploy_v1(lg: Lockgate) -> None:
    lg.create(application("shop", 2, namespace=lg.namespace))
    lg.create(deployment("shop-v1", "shop", "demo:v1"))
    lg.wait_phase("shop-v1", {"Succeeded"})


def test_status_shows_a_running_canary_and_promote_advances_an_indefinite_pause(
    cluster: Cluster, traefik: Traefik, lockgate: Lockgate
) -> None:
    ns = lockgate.namespace
    deploy_v1(lockgate)
    with Load(traefik.web_url, host_of("shop", ns)):
        lockgate.create(deployment("shop-v2", "shop", "demo:v2", MANUAL, analysis=ANALYSIS))
        lockgate.wait_phase("shop-v2", {"Paused"})
        # the view once an analysis has run at this pause
        lockgate.wait_status(
            "shop-v2",
            lambda s: any(r["step"] == 2 for r in s.get("analysis", [])),
            "an analysis run at the pause",
        )
        shown = plugin(cluster, "status", "shop-v2", "-n", ns)
        assert shown.returncode == 0, shown.stderr
        out = shown.stdout
        assert f"Deployment shop-v2  namespace {ns}  application shop  (Canary)" in out
        assert "Phase:     Paused" in out
        assert "Image:     demo:v2  (previous demo:v1)" in out
        assert "Step:      3/6  pause until promote" in out  # start, setWeight 20, pause, ...
        assert re.search(r"\n +2  setWeight 20 \(analysis gate\) +done\n", out), out
        assert re.search(r"\n +3  pause until promote +<- now\n", out), out
        assert "Weights:   stable  80%  canary  20%" in out
        assert "Analysis:  Passed" in out
        canary_row = next(line.split() for line in out.splitlines() if "canary  " in line[:20])
        assert canary_row[0] == "canary" and int(canary_row[1]) >= 10, out
        assert "Recent log:" in out
        assert f"kubectl lockgate promote shop-v2 -n {ns}" in out

        # wrong phase: refused before anything is written
        refused = plugin(cluster, "retry", "shop-v2", "-n", ns)
        assert refused.returncode == 1
        assert "error: cannot retry shop-v2: it is Paused" in refused.stderr
        assert "lockgate.dev/action" not in (
            lockgate.get("shop-v2")["metadata"].get("annotations") or {}
        )

        promoted = plugin(cluster, "promote", "shop-v2", "-n", ns)
        assert promoted.returncode == 0, promoted.stderr
        assert "promote requested for shop-v2 (it was Paused)" in promoted.stdout
        assert "promoted past step 3: pause until promote" in promoted.stdout
        status = lockgate.wait_phase("shop-v2", {"Succeeded", "RolledBack", "Failed"})
    assert status["phase"] == "Succeeded", status.get("message")

    for action in (["promote"], ["promote", "--full"], ["abort"], ["retry"]):
        again = plugin(cluster, *action, "shop-v2", "-n", ns)
        assert again.returncode == 1, (action, again.stdout)
        if action != ["retry"]:
            assert "it is Succeeded" in again.stderr, again.stderr


def test_abort_rolls_back_to_the_previous_version(cluster: Cluster, lockgate: Lockgate) -> None:
    ns = lockgate.namespace
    deploy_v1(lockgate)
    lockgate.create(deployment("shop-v2", "shop", "demo:v2", MANUAL))
    lockgate.wait_phase("shop-v2", {"Paused"})
    aborted = plugin(cluster, "abort", "shop-v2", "-n", ns)
    assert aborted.returncode == 0, aborted.stderr
    status = lockgate.wait_phase("shop-v2", {"Aborted", "RolledBack", "Succeeded"})
    assert status["phase"] == "Aborted"
    shown = plugin(cluster, "status", "shop-v2", "-n", ns)
    assert "Phase:     Aborted" in shown.stdout
    assert "rolled back to demo:v1" in shown.stdout
    assert "Weights:   stable 100%  canary   0%" in shown.stdout
    assert f"kubectl lockgate retry shop-v2 -n {ns}" in shown.stdout
    app = lockgate.get("shop", "applications")
    assert app["status"]["stable"]["image"] == "demo:v1"


def test_pause_resume_watch_and_history(
    cluster: Cluster, lockgate: Lockgate, tmp_path: Path
) -> None:
    ns = lockgate.namespace
    deploy_v1(lockgate)
    canary = {"type": "Canary", "canary": {"steps": [30, 100], "stepSeconds": 4}}
    lockgate.create(deployment("shop-v2", "shop", "demo:v2", canary))
    lockgate.wait_status(
        "shop-v2", lambda s: (s.get("weights") or {}).get("canary") == 30, "canary weight 30"
    )
    paused = plugin(cluster, "pause", "shop-v2", "-n", ns)
    assert paused.returncode == 0, paused.stderr
    assert "shop-v2: spec.paused set to true" in paused.stdout
    status = lockgate.wait_phase("shop-v2", {"Paused"})
    assert status["message"] == "paused by spec.paused"
    time.sleep(6)  # longer than stepSeconds: a paused rollout holds
    status = lockgate.status("shop-v2")
    assert status["phase"] == "Paused" and status["weights"]["canary"] == 30
    twice = plugin(cluster, "pause", "shop-v2", "-n", ns)
    assert twice.returncode == 1 and "already paused" in twice.stderr
    shown = plugin(cluster, "status", "shop-v2", "-n", ns)
    assert "[spec.paused]" in shown.stdout and "kubectl lockgate resume" in shown.stdout

    resumed = plugin(cluster, "resume", "shop-v2", "-n", ns)
    assert resumed.returncode == 0, resumed.stderr
    # No --timeout of the watch's own (0: never): it ends with the rollout, waited for as long
    # as the rollout moves. Its output goes to files, which never fill up as a pipe would.
    argv, env = plugin_command(cluster, "status", "shop-v2", "-n", ns, "-w", "--timeout", "0")
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        watching = subprocess.Popen(argv, env=env, stdout=stdout, stderr=stderr, text=True)
    try:
        lockgate.wait_until(
            "shop-v2", "the watch to end with the rollout", lambda: watching.poll() is not None
        )
    finally:
        if watching.poll() is None:
            watching.kill()
            watching.wait(timeout=10)
    assert watching.returncode == 0, err.read_text()
    frames = out.read_text().split("-" * 60)
    assert len(frames) >= 2, out.read_text()
    assert "Phase:     Succeeded" in frames[-1]
    assert "Phase:     Succeeded" not in frames[0]

    history = plugin(cluster, "history", "shop", "-n", ns)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert lines[0].startswith(f"Application shop  namespace {ns}  phase ")
    assert "Stable:    demo:v2 from shop-v2" in history.stdout
    recorded = lines[lines.index("History (newest first):") + 2 :]
    assert [line.split()[:4] for line in recorded[:2]] == [
        ["shop-v2", "1", "demo:v2", "Succeeded"],
        ["shop-v1", "1", "demo:v1", "Succeeded"],
    ]
    listed = lines[lines.index("Deployments:") + 2 :]
    assert {tuple(line.split()[:3]) for line in listed} == {
        ("shop-v2", "Succeeded", "demo:v2"),
        ("shop-v1", "Succeeded", "demo:v1"),
    }
    late = plugin(cluster, "resume", "shop-v2", "-n", ns)
    assert late.returncode == 1 and "is not paused" in late.stderr


def test_not_found_and_usage_errors(cluster: Cluster, lockgate: Lockgate) -> None:
    ns = lockgate.namespace
    missing = plugin(cluster, "status", "nope", "-n", ns)
    assert missing.returncode == 1
    assert missing.stderr.strip() == (
        f'error: deployments.lockgate.dev "nope" not found in namespace "{ns}"'
    )
    for args in (["promote", "nope"], ["pause", "nope"]):
        result = plugin(cluster, *args, "-n", ns)
        assert result.returncode == 1 and '"nope" not found' in result.stderr
    app = plugin(cluster, "history", "nope", "-n", ns)
    assert app.returncode == 1
    assert f'applications.lockgate.dev "nope" not found in namespace "{ns}"' in app.stderr
    usage = plugin(cluster, "promote")
    assert usage.returncode == 2 and "usage: kubectl lockgate promote" in usage.stderr


def _token_kubeconfig(cluster: Cluster, namespace: str, sa: str, path: Path) -> Path:
    token = cluster.kubectl("create", "token", sa, "-n", namespace, "--duration", "10m")
    assert token.returncode == 0, token.stderr
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": sa, "user": {"token": token.stdout.strip()}}],
                "contexts": [
                    {
                        "name": "limited",
                        "context": {
                            "cluster": admin["clusters"][0]["name"],
                            "user": sa,
                            "namespace": namespace,
                        },
                    }
                ],
                "current-context": "limited",
            }
        )
    )
    return path


def test_a_service_account_without_permission_gets_a_clear_forbidden_message(
    cluster: Cluster, lockgate: Lockgate, tmp_path: Path
) -> None:
    ns = lockgate.namespace
    # no Application: the Deployment stays Pending, where abort is a meaningful request
    lockgate.create(deployment("shop-v1", "shop", "demo:v1"))
    core, rbac = client.CoreV1Api(lockgate.api), client.RbacAuthorizationV1Api(lockgate.api)
    core.create_namespaced_service_account(ns, {"metadata": {"name": "viewer"}})
    role: dict[str, Any] = {
        "metadata": {"name": "lgd-get"},
        "rules": [{"apiGroups": ["lockgate.dev"], "resources": ["deployments"], "verbs": ["get"]}],
    }
    rbac.create_namespaced_role(ns, role)
    rbac.create_namespaced_role_binding(
        ns,
        {
            "metadata": {"name": "viewer-lgd-get"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "lgd-get"},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns}],
        },
    )
    kubeconfig = _token_kubeconfig(cluster, ns, "viewer", tmp_path / "viewer.kubeconfig")

    # the namespace comes from the context; get is allowed
    answers: list[tuple[int, str]] = []

    def allowed() -> bool:
        tried = plugin(cluster, "status", "shop-v1", kubeconfig=kubeconfig)
        answers.append((tried.returncode, tried.stderr))
        return tried.returncode == 0

    # The API server's authorization cache takes up the new binding on its own schedule,
    # with nothing to watch on the way: the progress is its answer (the refusal until then).
    # Not the API server's CPU time: these tries, and every other test of the run, keep that
    # moving.
    wait_for("the role binding to take effect", allowed, lambda: answers[-1])
    shown = plugin(cluster, "status", "shop-v1", kubeconfig=kubeconfig)
    assert "Deployment shop-v1" in shown.stdout

    promote = plugin(cluster, "abort", "shop-v1", kubeconfig=kubeconfig)
    assert promote.returncode == 1
    assert promote.stderr.startswith(
        f'error: forbidden: no permission to patch deployments.lockgate.dev in namespace "{ns}".'
    ), promote.stderr
    assert f"system:serviceaccount:{ns}:viewer" in promote.stderr

    history = plugin(cluster, "history", "shop", kubeconfig=kubeconfig)
    assert history.returncode == 1
    assert "no permission to get applications.lockgate.dev" in history.stderr

    elsewhere = plugin(cluster, "status", "shop-v1", "-n", "default", kubeconfig=kubeconfig)
    assert elsewhere.returncode == 1
    assert 'no permission to get deployments.lockgate.dev in namespace "default"' in (
        elsewhere.stderr
    )
