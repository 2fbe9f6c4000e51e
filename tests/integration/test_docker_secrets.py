"""Secrets lockgate itself reads on Docker hosts — a container's env from a Secret, an SSH
private key, a TLS key — planted with recognisable values and sought, on success and on
every error path (an image no host has, a container that exits as it starts, a host that
refuses the key), in the status and Events of both kinds and in the operator's whole log."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from lockgate.names import LABEL_APP
from tests.support.cluster import Traefik
from tests.support.docker_apps import (
    create_secrets,
    delete_application,
    docker_application,
    remove_all,
    secret,
)
from tests.support.dockerhosts import DockerHost, local_client
from tests.support.operator_fixtures import Operator
from tests.support.rollouts import Lockgate, deployment

pytestmark = pytest.mark.integration


def pem_lines(pem: str) -> list[str]:
    """The body lines of a PEM or OpenSSH key: any one of them in a text is a leak."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


@pytest.fixture
def apps(
    lockgate: Lockgate, docker_hosts_by_name: dict[str, DockerHost], traefik: Traefik
) -> Iterator[dict[str, str]]:
    """The Applications of this test, removed from the hosts and Traefik afterwards."""
    base = f"sec-{lockgate.namespace[-8:]}"
    names = {"env": base, "key": f"{base}-key", "crash": f"{base}-crash"}
    yield names
    for name in names.values():
        delete_application(lockgate, name)
        remove_all(docker_hosts_by_name, name)
        (traefik.dynamic_dir / f"{name}.yaml").unlink(missing_ok=True)


def with_env(body: dict[str, Any], name: str = "DB_PASSWORD") -> dict[str, Any]:
    """The container's env `name` from the planted value of the Secret app-env."""
    body["spec"]["docker"]["container"]["env"] = [
        {"name": name, "valueFrom": {"secretKeyRef": {"name": "app-env", "key": "pw"}}}
    ]
    return body


def test_planted_secrets_never_appear_in_status_events_or_the_operator_log(
    lockgate: Lockgate,
    apps: dict[str, str],
    docker_hosts_by_name: dict[str, DockerHost],
    traefik: Traefik,
    operator: Operator,
    tmp_path: Path,
) -> None:
    hosts = docker_hosts_by_name
    planted = f"pl4nted-{uuid.uuid4().hex}"
    wrong = tmp_path / "wrong"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(wrong)], check=True)
    assert hosts["host3"].known_hosts and hosts["host3"].ssh_key and hosts["host2"].tls_key
    core = client.CoreV1Api(lockgate.api)
    core.create_namespaced_secret(lockgate.namespace, secret("app-env", {"pw": planted}))
    core.create_namespaced_secret(
        lockgate.namespace,
        secret(
            "wrong-ssh",
            {
                "id_ed25519": wrong.read_text(),
                "known_hosts": hosts["host3"].known_hosts.read_text(),
            },
        ),
    )
    create_secrets(lockgate, hosts)

    # Success: the env value reaches the containers on all three transports.
    env_app = apps["env"]
    lockgate.create(with_env(docker_application(lockgate, env_app, hosts, traefik)))
    lockgate.create(deployment(f"{env_app}-v1", env_app, "demo:v1"))
    finished = lockgate.wait_finished(f"{env_app}-v1")
    assert finished["phase"] == "Succeeded", finished
    docker = local_client(hosts["host1"])
    try:
        (container,) = docker.containers.list(filters={"label": f"{LABEL_APP}={env_app}"})
        assert f"DB_PASSWORD={planted}" in container.attrs["Config"]["Env"]
    finally:
        docker.close()
    # Error: an image no host has.
    lockgate.create(deployment(f"{env_app}-v2", env_app, "demo:absent"))
    assert lockgate.wait_finished(f"{env_app}-v2")["phase"] in {"RolledBack", "Failed"}

    # Error: a container that exits as it starts (the demo app cannot listen on the port
    # the planted value names), so the rollout runs into its deadline.
    crash = apps["crash"]
    lockgate.create(with_env(docker_application(lockgate, crash, hosts, traefik), "PORT"))
    lockgate.create(deployment(f"{crash}-v1", crash, "demo:v1", progressDeadlineSeconds=15))
    assert lockgate.wait_finished(f"{crash}-v1")["phase"] in {"RolledBack", "Failed"}

    # Error: host3 refuses the key lockgate was given.
    key_app = docker_application(lockgate, apps["key"], hosts, traefik, order=("host3",))
    key_app["spec"]["docker"]["hosts"][0]["sshKeySecretRef"]["name"] = "wrong-ssh"
    key_app["spec"]["docker"]["hosts"][0]["knownHostsSecretRef"]["name"] = "wrong-ssh"
    lockgate.create(with_env(key_app))
    lockgate.create(deployment(f"{apps['key']}-v1", apps["key"], "demo:v1"))
    finished = lockgate.wait_finished(f"{apps['key']}-v1")
    assert finished["phase"] == "Failed", finished

    texts: dict[str, str] = {"operator log": operator.log_text()}
    for name in apps.values():
        texts[f"Application {name}"] = json.dumps(lockgate.get(name, "applications"))
        texts[f"Events of Application {name}"] = events_text(lockgate, name)
    for dep in (f"{env_app}-v1", f"{env_app}-v2", f"{crash}-v1", f"{apps['key']}-v1"):
        texts[f"Deployment {dep}"] = json.dumps(lockgate.get(dep))
        texts[f"Events of Deployment {dep}"] = events_text(lockgate, dep)
    secrets = {
        "the env Secret's value": [planted],
        "host3's SSH key": pem_lines(hosts["host3"].ssh_key.read_text()),
        "the refused SSH key": pem_lines(wrong.read_text()),
        "host2's TLS key": pem_lines(hosts["host2"].tls_key.read_text()),
    }
    leaks = [
        f"{what} in {where}"
        for what, pieces in secrets.items()
        for where, text in texts.items()
        if any(piece in text for piece in pieces)
    ]
    assert leaks == []


def events_text(lg: Lockgate, name: str) -> str:
    return "\n".join(f"{e.reason}: {e.message}" for e in lg.events(name))
