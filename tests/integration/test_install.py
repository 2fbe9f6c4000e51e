"""Installing lockgate: the Helm chart (lint, template, a real `helm install`), the plain
manifests and examples against the real API server, and the proof that the chart's RBAC is
enough for a canary end to end and no wider than needed: the operator runs as the chart's
ServiceAccount, with a kubeconfig holding only that ServiceAccount's token."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from hack.tools.load import Load
from lockgate.outbound.notifications import load_defaults
from tests.support.cluster import HACK, REPO_ROOT, Cluster, Traefik
from tests.support.local_http import http_status
from tests.support.operator_fixtures import Operator, free_port
from tests.support.operator_fixtures import release as release_objects
from tests.support.rollouts import (
    Lockgate,
    application,
    cpu_ticks,
    deployment,
    host_of,
    wait_for,
)

pytestmark = pytest.mark.integration

CHART = REPO_ROOT / "charts" / "lockgate"
MANIFESTS = REPO_ROOT / "manifests"
HELM_ONLY_LABELS = ("helm.sh/chart", "app.kubernetes.io/managed-by")


@pytest.fixture(scope="module")
def helm() -> Path:
    proc = subprocess.run(
        [str(HACK / "build-tools"), "--print-path", "helm"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    assert proc.returncode == 0, f"building helm failed:\n{proc.stderr[-3000:]}"
    return Path(proc.stdout.strip())


def run(
    argv: list[str | Path], env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=REPO_ROOT,
        check=False,
    )


def template(helm: Path, *args: str, release: str = "lockgate") -> list[dict[str, Any]]:
    proc = run([helm, "template", release, CHART, "--namespace", "lockgate-system", *args])
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def container_args(docs: list[dict[str, Any]]) -> list[str]:
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    args: list[str] = dep["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


# ---------------------------------------------------------------------------- chart, offline


def test_helm_lint_is_clean_and_template_renders_every_mode(helm: Path) -> None:
    lint = run([helm, "lint", "--strict", CHART])
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert "[WARNING]" not in lint.stdout and "[ERROR]" not in lint.stdout, lint.stdout

    default = template(helm)
    assert kinds(default) == [
        "ClusterRole",
        "ClusterRole",
        "ClusterRoleBinding",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    (dep,) = [d for d in default if d["kind"] == "Deployment"]
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["args"][:2] == ["operator", "--all-namespaces"]
    assert {
        "--leader-elect",
        "--lease-name=lockgate",
        "--lease-namespace=lockgate-system",
        "--lease-duration=15",
        "--renew-deadline=10",
        "--retry-period=2",
    } <= set(container["args"])
    assert not [a for a in container["args"] if "peering" in a]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {p["name"] for p in container["ports"]} == {"health", "metrics"}
    env = {e["name"]: e for e in container["env"]}
    assert env.keys() >= {
        "LOCKGATE_TRAEFIK_API_URL",
        "LOCKGATE_TRAEFIK_METRICS_URL",
        "LOCKGATE_METRICS_PORT",
    }
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert container["resources"]["requests"]
    (anti,) = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert anti["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == dep["spec"]["selector"]["matchLabels"]
    )
    (pdb,) = [d for d in default if d["kind"] == "PodDisruptionBudget"]
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == dep["spec"]["selector"]
    (lease_role,) = [d for d in default if d["kind"] == "Role"]
    assert lease_role["metadata"]["namespace"] == "lockgate-system"
    assert lease_role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["lockgate"],
            "verbs": ["get", "watch", "update"],
        },
    ]

    namespaced = template(helm, "--set", "watchNamespaces={shop,blog}")
    roles = [d for d in namespaced if d["kind"] == "Role"]
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["blog", "lockgate-system", "shop"]
    cluster_roles = [d for d in namespaced if d["kind"] == "ClusterRole"]
    assert [r["metadata"]["name"] for r in cluster_roles] == ["lockgate-discovery"]
    args = container_args(namespaced)
    assert "--namespace=shop" in args and "--namespace=blog" in args
    assert "--all-namespaces" not in args

    with_crds = template(helm, "--include-crds")
    crd_names = {
        d["metadata"]["name"] for d in with_crds if d["kind"] == "CustomResourceDefinition"
    }
    assert crd_names == {"applications.lockgate.dev", "deployments.lockgate.dev"}
    assert "ValidatingAdmissionPolicy" in kinds(with_crds)

    # One replica: no PodDisruptionBudget (it would block every drain).
    single = template(helm, "--set", "replicaCount=1")
    assert "PodDisruptionBudget" not in kinds(single)

    # Without leader election: one replica only, replaced by Recreate, no Lease RBAC.
    alone = template(helm, "--set", "leaderElection.enabled=false", "--set", "replicaCount=1")
    (dep,) = [d for d in alone if d["kind"] == "Deployment"]
    assert dep["spec"]["strategy"] == {"type": "Recreate"}
    assert "--leader-elect" not in container_args(alone)
    assert "Role" not in kinds(alone)
    refused = run(
        [helm, "template", "x", CHART, "--set", "leaderElection.enabled=false"]
    )  # replicaCount 2 by default
    assert refused.returncode != 0 and "needs leaderElection.enabled=true" in refused.stderr

    assert not [a for a in container_args(default) if a.startswith("--api-threads")]
    assert "--api-threads=16" in container_args(template(helm, "--set", "apiThreads=16"))
    for bad in ("0", "1.5", "many"):
        refused = run([helm, "template", "x", CHART, "--set", f"apiThreads={bad}"])
        assert refused.returncode != 0
        assert f'apiThreads "{bad}" is not a positive whole number' in refused.stderr

    monitor = template(helm, "--set", "metrics.serviceMonitor.enabled=true")
    assert "ServiceMonitor" in kinds(monitor)

    secrets = template(helm, "--set", "rbac.readSecrets=true")
    assert any(
        "secrets" in rule["resources"]
        for d in secrets
        if d["kind"] == "ClusterRole"
        for rule in d["rules"]
    )


def test_chart_notification_defaults_reach_the_operator_as_its_file(
    helm: Path, tmp_path: Path
) -> None:
    """values.notifications -> a Secret mounted where LOCKGATE_NOTIFICATIONS_FILE points, in
    a form the operator's loader reads back as the same targets."""
    targets = [
        {"name": "chat", "kind": "slack", "url": "https://hooks.example.invalid/T1/B2/x"},
        {
            "name": "audit",
            "kind": "webhook",
            "url": "https://audit.invalid/in",
            "events": ["Failed"],
        },
    ]
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump({"notifications": targets}), encoding="utf-8")
    docs = template(helm, "-f", str(values))
    (secret,) = [d for d in docs if d["kind"] == "Secret"]
    (dep,) = [d for d in docs if d["kind"] == "Deployment"]
    pod = dep["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    path = Path(env["LOCKGATE_NOTIFICATIONS_FILE"])
    (mount,) = [
        m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == str(path.parent)
    ]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    mounted = tmp_path / path.name
    mounted.write_text(secret["stringData"][path.name], encoding="utf-8")
    loaded = load_defaults(mounted)
    assert [(t.name, t.kind, t.url) for t in loaded] == [
        ("chat", "slack", targets[0]["url"]),
        ("audit", "webhook", targets[1]["url"]),
    ]
    assert loaded[1].events == ["Failed"]
    assert not [d for d in template(helm) if d["kind"] == "Secret"]  # none by default


def test_packaged_chart_carries_the_crds_content_not_links(helm: Path, tmp_path: Path) -> None:
    """`helm package` resolves the crds/ symlinks: a chart from a repository is complete."""
    proc = run([helm, "package", CHART, "--destination", tmp_path])
    assert proc.returncode == 0, proc.stderr
    (package,) = tmp_path.glob("lockgate-*.tgz")
    with tarfile.open(package) as tar:
        for link in sorted((CHART / "crds").iterdir()):
            member = tar.getmember(f"lockgate/crds/{link.name}")
            assert member.isfile(), f"{link.name} is packaged as a link"
            extracted = tar.extractfile(member)
            assert extracted is not None
            assert extracted.read() == link.resolve().read_bytes()


def strip_helm(doc: dict[str, Any]) -> dict[str, Any]:
    metas = [doc["metadata"]]
    if doc["kind"] == "Deployment":
        metas.append(doc["spec"]["template"]["metadata"])
    for meta in metas:
        for label in HELM_ONLY_LABELS:
            (meta.get("labels") or {}).pop(label, None)
    return doc


def test_plain_manifests_are_the_chart_rendered_with_defaults(helm: Path) -> None:
    """manifests/ is written by hand for reading; this keeps it equal to the chart."""
    rendered = {(d["kind"], d["metadata"]["name"]): strip_helm(d) for d in template(helm)}
    plain = {}
    for name in ("rbac.yaml", "operator.yaml"):
        for doc in yaml.safe_load_all((MANIFESTS / name).read_text(encoding="utf-8")):
            plain[(doc["kind"], doc["metadata"]["name"])] = doc
    assert plain == rendered


# ---------------------------------------------------------------------------- API server


def kubectl_ok(cluster: Cluster, *args: str, input: str | None = None) -> str:
    proc = cluster.kubectl(*args, input=input, timeout=120)
    assert proc.returncode == 0, f"kubectl {' '.join(args)}:\n{proc.stderr}"
    return proc.stdout


def test_every_plain_manifest_applies_to_the_api_server(cluster: Cluster) -> None:
    """`kubectl apply -k manifests/`, for real except the Deployment (server dry run: its
    image is not something the local kubelet runs)."""
    built = kubectl_ok(cluster, "kustomize", str(MANIFESTS))
    docs = [d for d in yaml.safe_load_all(built) if d]
    assert {"CustomResourceDefinition", "ValidatingAdmissionPolicy", "Deployment"} <= {
        d["kind"] for d in docs
    }
    first = [d for d in docs if d["kind"] not in ("Deployment", "Service")]
    then = [d for d in docs if d["kind"] == "Service"]
    dry = [d for d in docs if d["kind"] == "Deployment"]
    apply = [
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=lockgate-test",
        "-f",
        "-",
    ]
    try:
        kubectl_ok(cluster, *apply, input=yaml.safe_dump_all(first))
        kubectl_ok(cluster, *apply, input=yaml.safe_dump_all(then))
        out = kubectl_ok(cluster, *apply, "--dry-run=server", input=yaml.safe_dump_all(dry))
        assert "serverside-applied (server dry run)" in out
    finally:
        for kind, name in (
            ("clusterrolebinding", "lockgate"),
            ("clusterrolebinding", "lockgate-discovery"),
            ("clusterrole", "lockgate"),
            ("clusterrole", "lockgate-discovery"),
        ):
            cluster.kubectl("delete", kind, name, "--ignore-not-found")
        cluster.kubectl(
            "delete", "namespace", "lockgate-system", "--ignore-not-found", "--wait=false"
        )


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    kubectl_ok(cluster, "create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


def test_every_example_is_accepted_by_the_api_server(cluster: Cluster, namespace: str) -> None:
    """Each example goes through the real admission chain (schema, CEL rules, the admission
    policy) by server dry run: created for real, an operator in this cluster would start
    rolling them out."""
    examples = sorted((MANIFESTS / "examples").rglob("*.yaml"))
    assert len(examples) >= 10
    for path in examples:
        out = kubectl_ok(cluster, "-n", namespace, "apply", "--dry-run=server", "-f", str(path))
        assert "(server dry run)" in out, path
    # The same path refuses what admission must refuse, so a pass above means something.
    refused = cluster.kubectl(
        "-n",
        namespace,
        "apply",
        "--dry-run=server",
        "-f",
        str(REPO_ROOT / "tests/data/invalid/dep-weights-decreasing.yaml"),
    )
    assert refused.returncode != 0 and "non-decreasing" in refused.stderr


# ---------------------------------------------------------------------------- RBAC proof


def sa_kubeconfig(cluster: Cluster, namespace: str, account: str, path: Path) -> Path:
    """A kubeconfig holding nothing but a TokenRequest token of the ServiceAccount."""
    token = kubectl_ok(cluster, "-n", namespace, "create", "token", account, "--duration=2h")
    admin = yaml.safe_load(cluster.kubeconfig.read_text(encoding="utf-8"))
    ca = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "local", "cluster": ca}],
        "users": [{"name": account, "user": {"token": token.strip()}}],
        "contexts": [{"name": "sa", "context": {"cluster": "local", "user": account}}],
        "current-context": "sa",
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    path.chmod(0o600)
    return path


def can_i(cluster: Cluster, kubeconfig: Path, *args: str) -> bool:
    proc = subprocess.run(
        [str(cluster.kubectl_path), "--kubeconfig", str(kubeconfig), "auth", "can-i", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.stdout.strip() in ("yes", "no"), proc.stdout + proc.stderr
    return proc.stdout.strip() == "yes"


def assert_not_wider_than_needed(cluster: Cluster, kubeconfig: Path, namespace: str) -> None:
    assert not can_i(cluster, kubeconfig, "get", "secrets", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "list", "secrets", "--all-namespaces")
    assert not can_i(cluster, kubeconfig, "get", "configmaps", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "delete", "namespaces")
    assert not can_i(cluster, kubeconfig, "delete", "deployments.apps", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "delete", "services", "-n", namespace)
    assert not can_i(
        cluster, kubeconfig, "deletecollection", "ingressroutes.traefik.io", "-n", namespace
    )
    assert not can_i(cluster, kubeconfig, "create", "pods", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "create", "pods/exec", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "delete", "deployments.lockgate.dev", "-n", namespace)
    assert not can_i(cluster, kubeconfig, "create", "clusterrolebindings")
    assert not can_i(cluster, kubeconfig, "patch", "customresourcedefinitions")
    assert not can_i(cluster, kubeconfig, "create", "serviceaccounts/token", "-n", namespace)
    # ... and what it does need.
    assert can_i(cluster, kubeconfig, "patch", "deployments.lockgate.dev", "-n", namespace)
    assert can_i(cluster, kubeconfig, "patch", "applications.lockgate.dev/status", "-n", namespace)
    assert can_i(cluster, kubeconfig, "create", "traefikservices.traefik.io", "-n", namespace)
    assert can_i(cluster, kubeconfig, "patch", "deployments.apps/scale", "-n", namespace)
    assert can_i(cluster, kubeconfig, "list", "pods", "-n", namespace)
    assert can_i(cluster, kubeconfig, "list", "pods.metrics.k8s.io", "-n", namespace)
    assert can_i(cluster, kubeconfig, "list", "customresourcedefinitions")


@pytest.fixture
def helm_release(helm: Path, cluster: Cluster) -> Iterator[Any]:
    """helm install of the chart (each call a new release), uninstalled afterwards."""
    installed: list[tuple[str, str]] = []

    def install(*values: str, wait: bool = True) -> tuple[str, str, str]:
        """Without Pods by default (replicaCount=0): the process kubelet runs demo images
        only, so the operator's image never starts here; tests run the operator as a process
        with the release's ServiceAccount instead."""
        suffix = uuid.uuid4().hex[:6]
        release, namespace = f"lg{suffix}", f"lgsys-{suffix}"
        sets = [arg for value in values for arg in ("--set", value)]
        proc = run(
            [
                *(helm, "install", release, CHART, "--namespace", namespace),
                *("--create-namespace", "--set", "replicaCount=0", *sets),
                *(("--wait", "--timeout=60s") if wait else ()),
            ],
            env=cluster.env(),
        )
        installed.append((release, namespace))
        assert proc.returncode == 0, proc.stderr
        return release, namespace, f"{release}-lockgate"

    yield install
    for release, namespace in installed:
        run([helm, "uninstall", release, "--namespace", namespace, "--wait"], env=cluster.env())
        cluster.kubectl("delete", "namespace", namespace, "--ignore-not-found", "--wait=false")


# kubectl auth can-i on pods.metrics.k8s.io needs the metrics API served (discovery).
@pytest.mark.usefixtures("metrics_server")
def test_helm_install_cluster_wide_grants_what_the_operator_uses_and_no_more(
    cluster: Cluster, helm_release: Any, namespace: str, tmp_path: Path
) -> None:
    lease = f"lockgate-{uuid.uuid4().hex[:6]}"
    _, install_ns, account = helm_release(f"leaderElection.leaseName={lease}")
    # Everything in the chart's crds/ is in the cluster: Helm installs those first (and skips
    # the ones present, e.g. the CRDs hack/cluster installed).
    for crd_file in sorted((CHART / "crds").glob("*.yaml")):
        kubectl_ok(cluster, "get", "-f", str(crd_file))
    kubeconfig = sa_kubeconfig(cluster, install_ns, account, tmp_path / "sa.kubeconfig")
    assert_not_wider_than_needed(cluster, kubeconfig, namespace)
    assert can_i(cluster, kubeconfig, "watch", "deployments.lockgate.dev", "--all-namespaces")
    assert_lease_rights_exactly(cluster, kubeconfig, install_ns, lease)


def assert_lease_rights_exactly(cluster: Cluster, kubeconfig: Path, ns: str, lease: str) -> None:
    """What the elector calls (create the Lease; get, watch and update it) on that one Lease in
    the release namespace, and nothing else on Leases."""
    leases = "leases.coordination.k8s.io"
    assert can_i(cluster, kubeconfig, "create", leases, "-n", ns)
    for verb in ("get", "watch", "update"):
        assert can_i(cluster, kubeconfig, verb, f"{leases}/{lease}", "-n", ns), verb
        assert not can_i(cluster, kubeconfig, verb, f"{leases}/another", "-n", ns), verb
    for verb in ("list", "delete", "patch", "deletecollection"):
        assert not can_i(cluster, kubeconfig, verb, f"{leases}/{lease}", "-n", ns), verb
    assert not can_i(cluster, kubeconfig, "get", f"{leases}/{lease}", "-n", "kube-system")
    assert not can_i(cluster, kubeconfig, "create", leases, "-n", "default")


@pytest.mark.usefixtures("metrics_server")
def test_operator_as_the_charts_service_account_runs_a_canary_end_to_end(
    cluster: Cluster,
    traefik: Traefik,
    kubelet: object,
    operator: Operator,
    helm_release: Any,
    namespace: str,
    tmp_path: Path,
) -> None:
    """The operator runs here as a process, but with nothing but the ServiceAccount's token.
    The chart is installed with watchNamespaces=[the test namespace]: the same rules as a
    Role, and an operator scoped to that namespace (`-n`), so it never acts on objects of
    other tests or sessions sharing this control plane, as an `-A` one would. It serves a
    shard named after that namespace (the chart's `shard`), so the suite's operator, which
    serves the default shard, leaves the test's Application alone and keeps running."""
    _, install_ns, account = helm_release(f"watchNamespaces={{{namespace}}}", f"shard={namespace}")
    kubeconfig = sa_kubeconfig(cluster, install_ns, account, tmp_path / "sa.kubeconfig")
    assert_not_wider_than_needed(cluster, kubeconfig, namespace)
    assert not can_i(cluster, kubeconfig, "list", "deployments.lockgate.dev", "-n", "default")

    proc: subprocess.Popen[bytes] | None = None
    log_path = tmp_path / "operator.log"
    lg = Lockgate(cluster.api_client(), namespace, shard=namespace)
    try:
        health = free_port()
        env = {
            **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
            "KUBECONFIG": str(kubeconfig),
            "LOCKGATE_TRAEFIK_API_URL": traefik.api_url,
            "LOCKGATE_TRAEFIK_METRICS_URL": traefik.metrics_url,
            "LOCKGATE_METRICS_PORT": str(free_port()),
        }
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("lockgate")),
                    "operator",
                    f"--namespace={namespace}",
                    f"--liveness=http://127.0.0.1:{health}/healthz",
                    "--leader-elect",
                    f"--lease-namespace={install_ns}",
                    f"--shard={namespace}",  # the Deployment's args, as the chart sets them
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        wait_healthy(proc, health, log_path)

        lg.create(application("shop", 3, namespace=namespace))
        lg.create(deployment("shop-v1", "shop", "demo:v1"))
        lg.wait_phase("shop-v1", {"Succeeded"})
        canary = {"type": "Canary", "canary": {"steps": [20, 50, 100], "stepSeconds": 4}}
        with Load(traefik.web_url, host_of("shop", namespace)) as load:
            load.wait_answered(20)
            lg.create(deployment("shop-v2", "shop", "demo:v2", canary))
            status = lg.wait_phase("shop-v2", {"Succeeded", "RolledBack", "Failed"})
            load.wait_answered(len(load.responses) + 200)
        responses = load.stop()
        assert status["phase"] == "Succeeded", status.get("message")
        # Zero failed requests during a canary is the rollout tests' claim (and the operator's
        # code, not its permissions); here: traffic reached the canary, and ends on it.
        assert any(r.version == "v2" for r in responses), "the canary never got traffic"

        def answers_v2(http: httpx.Client) -> bool:
            reply = http.get(traefik.web_url, headers={"Host": host_of("shop", namespace)})
            return reply.headers.get("x-version") == "v2"

        # Traefik follows the rollout's last routing (from the Kubernetes objects) on its own
        # schedule: what it has taken up so far is its view of the namespace's services.
        with httpx.Client(timeout=3) as http:
            wait_for(
                "Traefik to serve only v2",
                lambda: all(answers_v2(http) for _ in range(20)),
                lambda: traefik_services(traefik, namespace),
            )
        assert lg.events("shop-v2"), "no Events posted"

        # It acted as the holder of its shard's Lease in the release's namespace, renewed
        # with the account's rights.
        lease = client.CoordinationV1Api(cluster.api_client()).read_namespaced_lease(
            f"lockgate-{namespace}", install_ns
        )
        assert lease.spec.holder_identity, "the operator never held the Lease"

    except AssertionError as err:
        tail = log_path.read_text(errors="replace")[-3000:] if log_path.exists() else ""
        raise AssertionError(f"{err}\n--- operator log (tail) ---\n{tail}") from None
    else:
        text = log_path.read_text(errors="replace")
        for sign in ("Forbidden", " 403 ", "Not enough permissions", "Traceback"):
            assert sign not in text, f"operator log shows {sign!r}:\n{text[-4000:]}"
    finally:
        if proc is not None and proc.poll() is None:
            release_objects(lg, [])  # while the shard's operator runs: its finalizers go with it
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()


def traefik_services(traefik: Traefik, namespace: str) -> Any:
    """Traefik's view of the namespace's HTTP services (its API), or why there is none."""
    try:
        reply = httpx.get(
            f"{traefik.api_url}/api/http/services", params={"search": namespace}, timeout=5
        )
        return reply.json()
    except (httpx.HTTPError, ValueError) as err:
        return repr(err)


def wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
    def healthy() -> bool:
        if proc.poll() is not None:
            pytest.fail(f"the operator exited:\n{log_path.read_text(errors='replace')[-4000:]}")
        return http_status(f"http://127.0.0.1:{port}/healthz") == 200

    # Starting, the operator works (its CPU time moves) until it answers. (The caller adds the
    # operator's log to a failure.)
    wait_for("the operator to answer /healthz", healthy, lambda: cpu_ticks(proc.pid), every=0.2)


def test_chart_with_two_replicas_elects_one_leader_as_its_service_account(
    cluster: Cluster, helm_release: Any, namespace: str, tmp_path: Path
) -> None:
    """`replicaCount=2` installs (the Deployment, its PodDisruptionBudget, the Lease's Role);
    its two replicas, run here as processes (the process kubelet runs demo images only) with
    the container's own arguments and environment and nothing but the ServiceAccount's
    token, elect one leader; the other waits, and takes over when the leader stops."""
    _, install_ns, account = helm_release(
        "replicaCount=2", f"watchNamespaces={{{namespace}}}", wait=False
    )
    apps = client.AppsV1Api(cluster.api_client())
    dep = apps.read_namespaced_deployment(account, install_ns)
    assert dep.spec.replicas == 2
    pdb = client.PolicyV1Api(cluster.api_client()).read_namespaced_pod_disruption_budget(
        account, install_ns
    )
    assert pdb.spec.min_available == 1
    (container,) = dep.spec.template.spec.containers
    assert container.args[0] == "operator" and "--leader-elect" in container.args
    args = [a for a in container.args[1:] if not a.startswith("--liveness=")]
    kubeconfig = sa_kubeconfig(cluster, install_ns, account, tmp_path / "sa.kubeconfig")
    chart_env = {e.name: e.value or "" for e in container.env if e.value_from is None}
    replicas: list[Operator] = []
    try:
        for index in range(2):
            env = {
                **{k: v for k, v in os.environ.items() if k != "KUBECONFIG"},
                **chart_env,
                "KUBECONFIG": str(kubeconfig),
                # What the downward API gives the container:
                "POD_NAME": f"{account}-replica-{index}",
                "POD_NAMESPACE": install_ns,
                "LOCKGATE_METRICS_PORT": str(free_port()),  # two on one host
            }
            replica = Operator(
                env,
                tmp_path / f"replica-{index}",
                free_port(),
                scope=(),
                args=tuple(args),
                die_with_parent=True,
            )
            replicas.append(replica)
            replica.start()  # healthy: the standby answers the liveness probe too
        coordination = client.CoordinationV1Api(cluster.api_client())

        def read_lease() -> client.V1Lease | None:
            try:
                lease: client.V1Lease = coordination.read_namespaced_lease("lockgate", install_ns)
            except client.ApiException:
                return None
            return lease

        def holder() -> str:
            lease = read_lease()
            return str(lease.spec.holder_identity or "") if lease else ""

        def lease_version() -> str | None:
            """The Lease's resourceVersion: every write to it (created, taken, released,
            renewed) moves it; nothing else does."""
            lease = read_lease()
            return str(lease.metadata.resource_version) if lease else None

        def running() -> bool:
            """True, or fails at once if a replica has exited (its log is added below)."""
            for replica in replicas:
                if not replica.alive():
                    raise AssertionError(f"{replica.log_path.name} exited")
            return True

        # What moves towards a holder is the Lease: the replicas race to create it, and the
        # winner renews it.
        leader = wait_for(
            "one replica to hold the Lease",
            lambda: running() and holder(),
            lease_version,
        )
        (leading,) = [r for r in replicas if leader.startswith(r.env["POD_NAME"] + "_")]
        (standby,) = [r for r in replicas if r is not leading]
        assert standby.process is not None
        # The standby getting to its place: it logs as it starts, until it says so (its CPU
        # time would move for ever, as it looks at the Lease every retry period).
        wait_for(
            "the standby to say it waits for the leader",
            lambda: running() and f"standby: waiting for the leader {leader}" in standby.log_text(),
            lambda: len(standby.log_text()),
        )
        leader_metric = re.compile(r"^lockgate_leader (\S+)$", re.M)

        def is_leader(replica: Operator) -> float:
            page = httpx.get(f"http://127.0.0.1:{replica.env['LOCKGATE_METRICS_PORT']}/metrics")
            found = leader_metric.search(page.text)
            return float(found.group(1)) if found else -1.0

        assert (is_leader(leading), is_leader(standby)) == (1.0, 0.0)

        leading.stop()  # SIGTERM: it releases the Lease, and the standby takes it
        assert leading.process is not None and leading.process.returncode == 0
        # The leader released the Lease: nothing moves it again but the standby taking it.
        wait_for(
            "the standby to take the Lease",
            lambda: holder().startswith(standby.env["POD_NAME"] + "_"),
            lease_version,
        )
        # The gauge is set as the standby takes up leading, which it logs as it goes. (Not its
        # CPU time: a leader renews the Lease every retry period, so that never stands still.)
        wait_for(
            "the new leader's gauge",
            lambda: is_leader(standby) == 1.0,
            lambda: (is_leader(standby), len(standby.log_text())),
        )
    except AssertionError as err:
        tails = "".join(
            f"\n--- {r.log_path.name} (tail) ---\n{r.log_text()[-2000:]}" for r in replicas
        )
        raise AssertionError(f"{err}{tails}") from None
    finally:
        for replica in replicas:
            replica.kill()
    for replica in replicas:
        text = replica.log_text()
        for sign in ("Forbidden", " 403 ", "Not enough permissions", "Traceback"):
            assert sign not in text, f"{replica.log_path.name} shows {sign!r}:\n{text[-3000:]}"
