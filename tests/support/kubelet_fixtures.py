"""Session fixture `kubelet`: the process kubelet (hack/tools/kubelet.py) via hack/kubelet.

A kubelet already running (a developer's environment) is reused and left running; one that
this session started is stopped at the end. One that cannot start fails the run with its log
tail: an integration test never turns into a silent skip.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s

from tests.support.cluster import Cluster, hack
from tests.support.rollouts import pod_versions, wait_for
from tests.support.shared_run import exclusive, stops_at_session_end


@dataclass(frozen=True)
class ProcessKubelet:
    """The running process kubelet: its Node and where it writes."""

    node_name: str
    pod_cidr: str
    run_dir: Path
    log_path: Path

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as exc:
            return f"(no kubelet log: {exc})"

    def container_log(self, namespace: str, pod: str, container: str) -> str:
        """A container's output (all runs of it); empty if it never ran."""
        text = []
        for directory in sorted(self.run_dir.glob(f"pods/{namespace}_{pod}_*")):
            path = directory / f"{container}.log"
            if path.exists():
                text.append(path.read_text(errors="replace"))
        return "".join(text)


def kubelet_status() -> int:
    """hack/kubelet status: 0 running with its Node Ready, 1 stopped, 2 running, not Ready."""
    return hack("kubelet", "status").returncode


def node_version(cluster: Cluster, node: str) -> str:
    """The Node's resource version (or kubectl's error): the kubelet registering it again and
    posting its status change it on the way to Ready."""
    got = cluster.kubectl("get", "node", node, "-o", "jsonpath={.metadata.resourceVersion}")
    return got.stdout or got.stderr


def kubelet_info() -> ProcessKubelet:
    proc = hack("kubelet", "env")
    values: dict[str, str] = {}
    for line in proc.stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            name, _, value = line.removeprefix("export ").partition("=")
            values[name] = value
    return ProcessKubelet(
        node_name=values["LOCKGATE_NODE_NAME"],
        pod_cidr=values["LOCKGATE_POD_CIDR"],
        run_dir=Path(values["LOCKGATE_KUBELET_DIR"]),
        log_path=Path(values["LOCKGATE_KUBELET_LOG"]),
    )


@pytest.fixture(scope="session")
def kubelet(cluster: Cluster) -> Iterator[ProcessKubelet]:
    with exclusive():
        status = kubelet_status()
        reused = status != 1  # a kubelet runs already: a developer's, left running at the end
        if not reused:
            proc = hack("kubelet", "start", timeout=600.0)
            if proc.returncode != 0:
                hack("kubelet", "stop", timeout=60.0)  # nothing half-started stays behind
                pytest.fail(
                    f"the process kubelet could not start (hack/kubelet start exited "
                    f"{proc.returncode}):\n{proc.stderr[-6000:]}{proc.stdout[-2000:]}",
                    pytrace=False,
                )
        elif status != 0:
            # Running, Node not Ready: e.g. the control plane was just restarted; the kubelet
            # re-registers within a heartbeat (10 s). No wall-clock limit: the wait goes on
            # while the Node changes (the kubelet writes it; its status at least every 60 s).
            info = kubelet_info()
            try:
                wait_for(
                    f"node {info.node_name} Ready",
                    lambda: kubelet_status() == 0,
                    lambda: node_version(cluster, info.node_name),
                    every=0.5,
                )
            except AssertionError as exc:
                pytest.fail(
                    f"the running process kubelet's node {info.node_name} is not Ready ({exc}); "
                    f"its log ({info.log_path}) ends:\n{info.log_tail()}",
                    pytrace=False,
                )
        stop = stops_at_session_end("kubelet", reused)
    try:
        yield kubelet_info()
    finally:
        if stop:
            hack("kubelet", "stop", timeout=60.0)


@pytest.fixture
def pod_namespace(cluster: Cluster, kubelet: ProcessKubelet) -> Iterator[str]:
    """A fresh namespace for Pods on the process kubelet; at the end it is deleted and its
    Pods are waited for, so no test leaves processes behind for the next one."""
    with cluster.api_client() as api:
        core, apps = k8s.CoreV1Api(api), k8s.AppsV1Api(api)
        name = f"lgkt-{uuid.uuid4().hex[:8]}"
        core.create_namespace(k8s.V1Namespace(metadata=k8s.V1ObjectMeta(name=name)))

        # Pods are refused until the namespace's default ServiceAccount exists.
        def has_default_account() -> bool:
            accounts = core.list_namespaced_service_account(name).items
            return any(sa.metadata.name == "default" for sa in accounts)

        # What moves towards it: kube-controller-manager filling the new namespace (its
        # ServiceAccounts and the root CA ConfigMap come from its controllers).
        def controller_work() -> list[tuple[str, str, str]]:
            found = [
                *(("ServiceAccount", o) for o in core.list_namespaced_service_account(name).items),
                *(("ConfigMap", o) for o in core.list_namespaced_config_map(name).items),
            ]
            return [(kind, o.metadata.name, o.metadata.resource_version) for kind, o in found]

        wait_for("the default ServiceAccount", has_default_account, controller_work, every=0.1)
        yield name
        # The namespace controller takes seconds to get to the Pods: remove them first.
        apps.delete_collection_namespaced_deployment(name)
        apps.delete_collection_namespaced_replica_set(name)
        core.delete_collection_namespaced_pod(name)
        core.delete_namespace(name)
        # No wall-clock limit: the wait goes on while the Pods change (a graceful stop takes
        # their grace period), and fails with the kubelet's log once they stand still.
        try:
            wait_for(
                f"the Pods of {name} gone",
                lambda: not core.list_namespaced_pod(name).items,
                lambda: pod_versions(core, name),
                every=0.2,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the kubelet's log ends:\n{kubelet.log_tail()}") from None
