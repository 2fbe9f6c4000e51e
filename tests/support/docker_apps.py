"""Docker-host Applications for tests and benchmarks: the Secrets and manifest for the three
local hosts (hack/dockerhosts), and the containers they run, read over each host's unix socket."""

from __future__ import annotations

import base64
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from lockgate.names import GROUP, LABEL_APP, LABEL_IMAGE, VERSION
from tests.support.cluster import Traefik
from tests.support.dockerhosts import DockerHost, local_client
from tests.support.rollouts import Lockgate, host_of, wait_for


def secret(name: str, data: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def create_secrets(
    lg: Lockgate, hosts: dict[str, DockerHost], known_hosts: str | None = None
) -> None:

    core = client.CoreV1Api(lg.api)
    h2, h3 = hosts["host2"], hosts["host3"]
    assert h2.tls_ca and h2.tls_cert and h2.tls_key and h3.ssh_key and h3.known_hosts
    tls = {"ca.pem": h2.tls_ca, "cert.pem": h2.tls_cert, "key.pem": h2.tls_key}
    core.create_namespaced_secret(
        lg.namespace, secret("host2-tls", {k: p.read_text() for k, p in tls.items()})
    )
    ssh = {
        "id_ed25519": h3.ssh_key.read_text(),
        "known_hosts": known_hosts if known_hosts is not None else h3.known_hosts.read_text(),
    }
    core.create_namespaced_secret(lg.namespace, secret("host3-ssh", ssh))


def docker_application(
    lg: Lockgate,
    app: str,
    hosts: dict[str, DockerHost],
    traefik: Traefik,
    *,
    order: tuple[str, ...] = ("host1", "host2", "host3"),
    urls: dict[str, str] | None = None,
    memory: str = "32Mi",
    cpus: str = "0.1",
    drain_seconds: float = 1,
) -> dict[str, Any]:
    entries = {
        "host1": {"name": "host1", "url": hosts["host1"].url, "address": hosts["host1"].address},
        "host2": {
            "name": "host2",
            "url": hosts["host2"].url,
            "address": hosts["host2"].address,
            "tlsSecretRef": {"name": "host2-tls"},
        },
        "host3": {
            "name": "host3",
            "url": hosts["host3"].url,
            "address": hosts["host3"].address,
            "sshKeySecretRef": {"name": "host3-ssh", "key": "id_ed25519"},
            "knownHostsSecretRef": {"name": "host3-ssh", "key": "known_hosts"},
        },
    }
    for name, url in (urls or {}).items():
        entries[name]["url"] = url
    return {
        "kind": "Application",
        "metadata": {"name": app},
        "spec": {
            "docker": {
                "hosts": [entries[h] for h in order],
                "container": {"port": 8080, "resources": {"cpus": cpus, "memory": memory}},
                "drainSeconds": drain_seconds,
            },
            "port": 8080,
            "healthCheck": {"http": {"path": "/health"}, "intervalSeconds": 1},
            "traffic": {
                "traefik": {
                    "route": {"match": f"Host(`{host_of(app, lg.namespace)}`)"},
                    # Written over SFTP on host3; Traefik reads the same directory.
                    "fileProvider": {
                        "host": "host3",
                        "path": str(traefik.dynamic_dir / f"{app}.yaml"),
                    },
                }
            },
        },
    }


def containers(hosts: dict[str, DockerHost], app: str) -> dict[str, list[tuple[str, str, str]]]:
    """(name, image label, state) of the app's containers per host, read over unix sockets.
    One list call per host: docker-py's `containers.list` inspects each container it listed,
    and one the operator removes in between fails the inspection (404)."""
    out = {}
    for name, host in hosts.items():
        c = local_client(host)
        try:
            found = c.api.containers(all=True, filters={"label": f"{LABEL_APP}={app}"})
            out[name] = sorted(
                (
                    x["Names"][0].lstrip("/"),
                    (x.get("Labels") or {}).get(LABEL_IMAGE, ""),
                    x["State"],
                )
                for x in found
            )
        finally:
            c.close()
    return out


def running_images(hosts: dict[str, DockerHost], app: str) -> dict[str, list[str]]:
    return {
        h: sorted(image for _, image, state in found if state == "running")
        for h, found in containers(hosts, app).items()
    }


def remove_all(hosts: dict[str, DockerHost], app: str) -> None:
    for host in hosts.values():
        c = local_client(host)
        try:
            for x in c.containers.list(all=True, filters={"label": f"{LABEL_APP}={app}"}):
                x.remove(force=True)
        finally:
            c.close()


def delete_application(lg: Lockgate, app: str, hosts: dict[str, DockerHost] | None = None) -> bool:
    """Delete it and wait until the operator's finalizer let it go; False if it did not:
    once neither its status nor, given `hosts`, its containers there (what the finalizer
    removes) have changed for the quiet time. Not its resourceVersion: kopf's bookkeeping of a
    finalizer that fails and is retried would change it forever."""
    try:
        lg.custom.delete_namespaced_custom_object(GROUP, VERSION, lg.namespace, "applications", app)
    except ApiException as err:
        if err.status == 404:
            return True
        raise
    try:
        wait_for(
            f"Application {app} gone",
            lambda: lg.application_status(app) is None,
            lambda: (lg.application_status(app), containers(hosts, app) if hosts else None),
            every=0.5,
        )
    except AssertionError:
        return False
    return True


def alone_everywhere(hosts: dict[str, DockerHost], app: str, image: str) -> bool:
    """Every host runs exactly one container of the app, of `image`, and nothing else of it."""
    return all(
        [(found_image, state) for _, found_image, state in found] == [(image, "running")]
        for found in containers(hosts, app).values()
    )


def wait_alone_everywhere(hosts: dict[str, DockerHost], app: str, image: str) -> None:
    """Wait until `alone_everywhere`: old containers go after the phase is reached, waited for
    while the app's containers on the hosts still change."""
    wait_for(
        f"{image} alone on every host",
        lambda: alone_everywhere(hosts, app, image),
        lambda: containers(hosts, app),
    )
