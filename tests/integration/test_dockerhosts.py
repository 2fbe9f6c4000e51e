"""The Docker hosts and the demo app, for real: three dockerd in network namespaces reached over
unix, tcp+mutual TLS and SSH (paramiko), containers answering HTTP at their host's address, a
refused unknown host key, and the demo app's behaviours that rollouts are judged by."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import docker
import httpx
import paramiko
import pytest
import requests
import yaml
from docker.models.containers import Container

from tests.support.cluster import Traefik
from tests.support.dockerhosts import (
    REPO_ROOT,
    DockerHost,
    container_progress,
    demo_images,
    demo_process,
    docker_client,
    local_client,
    wait_http,
)
from tests.support.rollouts import cpu_ticks, wait_for

pytestmark = pytest.mark.integration

LABEL = "dev.lockgate.test"


@contextmanager
def running(client: docker.DockerClient, image: str, **kwargs: Any) -> Iterator[tuple[Any, int]]:
    """Run image with port 8080 published on a free host port; yields (container, host port)
    and removes the container at the end whatever happens."""
    container = client.containers.run(
        image, detach=True, ports={"8080/tcp": None}, labels={LABEL: "dockerhosts"}, **kwargs
    )
    try:
        container.reload()
        port = int(container.ports["8080/tcp"][0]["HostPort"])
        yield container, port
    finally:
        container.remove(force=True)


def starting(container: Container) -> Callable[[], Any]:
    """A wait's progress while the container gets ready (`container_progress`)."""
    return lambda: container_progress(container.client.api.inspect_container(container.id))


# --- the hosts and their transports ---------------------------------------------------------


def test_three_hosts_one_per_transport(docker_hosts: list[DockerHost]) -> None:
    assert [h.transport for h in docker_hosts] == ["unix", "tcp", "ssh"]
    assert len({h.address for h in docker_hosts}) == 3


def test_every_daemon_answers_over_its_own_transport(docker_hosts: list[DockerHost]) -> None:
    ids = set()
    for host in docker_hosts:
        client = docker_client(host)
        try:
            assert client.ping(), host.name
            ids.add(client.info()["ID"])
            tags = {t for image in client.images.list("demo") for t in image.tags}
            assert set(demo_images()) <= tags, f"{host.name} lacks demo images"
        finally:
            client.close()
    assert len(ids) == 3, "the three hosts must be three distinct daemons"


def test_images_carry_their_tag_as_env(docker_hosts: list[DockerHost]) -> None:
    client = local_client(docker_hosts[0])
    for image in demo_images():
        env = client.images.get(image).attrs["Config"]["Env"]
        assert f"DEMO_IMAGE={image}" in env


def test_tcp_refuses_a_client_without_certificate(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    host = docker_hosts_by_name["host2"]
    assert host.tls_ca
    tls = docker.tls.TLSConfig(ca_cert=str(host.tls_ca), verify=True)  # no client cert
    client = docker.DockerClient(base_url=host.url, tls=tls, version="1.41", timeout=10)
    client.api.trust_env = False
    with pytest.raises(requests.exceptions.ConnectionError):  # SSLError is one
        client.ping()


def test_container_started_over_ssh_answers_at_its_host_address(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    host = docker_hosts_by_name["host3"]
    client = docker_client(host)  # ssh://, paramiko, pinned known_hosts
    try:
        with running(client, "demo:v2") as (container, port):
            url = f"http://{host.address}:{port}/"
            wait_http(url, starting(container))
            r = httpx.get(url, timeout=5)
            assert r.status_code == 200
            assert r.headers["X-Version"] == "v2"
            assert r.json()["version"] == "v2"
            assert r.json()["instance"] == container.id[:12]  # its hostname
    finally:
        client.close()


@pytest.mark.parametrize("known_hosts_case", ["changed-key", "host-missing"])
def test_unknown_host_key_is_refused_and_nothing_runs(
    docker_hosts_by_name: dict[str, DockerHost], tmp_path: Path, known_hosts_case: str
) -> None:
    host = docker_hosts_by_name["host3"]
    known_hosts = tmp_path / "known_hosts"
    if known_hosts_case == "changed-key":
        # A real ed25519 key of the same type, but not host3's: what a man in the middle shows.
        key = tmp_path / "other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = " ".join(key.with_suffix(".pub").read_text().split()[:2])
        known_hosts.write_text(f"{host.address} {public}\n")
        expected: type[Exception] = paramiko.BadHostKeyException
    else:
        known_hosts.write_text("10.66.99.2 " + host_key_line(host) + "\n")
        expected = paramiko.SSHException
    name = f"lgtest-{uuid.uuid4().hex[:8]}"
    with pytest.raises(expected) as refused:
        client = docker_client(host, known_hosts=known_hosts)
        client.containers.run("demo:v1", name=name, detach=True, labels={LABEL: "refused"})
    if known_hosts_case == "host-missing":
        assert "not found in known_hosts" in str(refused.value)
    # The refusal comes before authentication, so nothing ran on host3.
    check = local_client(host)
    assert not check.containers.list(all=True, filters={"name": name})
    assert not check.containers.list(all=True, filters={"label": f"{LABEL}=refused"})


def host_key_line(host: DockerHost) -> str:
    """`<type> <base64>` of host's real key, from its pinned known_hosts."""
    assert host.known_hosts
    return " ".join(host.known_hosts.read_text().split()[1:3])


# --- the demo app ---------------------------------------------------------------------------


def test_demo_app_go_unit_tests(demo_app_binary: Path) -> None:
    proc = subprocess.run(
        ["go", "test", "./..."],
        cwd=REPO_ROOT / "hack" / "demo-app",
        env={**os.environ, "GOTOOLCHAIN": "local"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_errors30_fails_thirty_percent_in_a_container_over_tls(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    host = docker_hosts_by_name["host2"]
    client = docker_client(host)
    try:
        with running(client, "demo:v2-errors30") as (container, port):
            base = f"http://{host.address}:{port}"
            wait_http(base + "/health", starting(container))
            with httpx.Client(base_url=base, timeout=5) as http:
                codes = Counter(http.get("/").status_code for _ in range(300))
    finally:
        client.close()
    assert set(codes) == {200, 500}
    assert abs(codes[500] / 300 - 0.30) <= 0.02, codes


def test_unready_version_never_passes_health(demo_app_binary: Path, tmp_path: Path) -> None:
    with demo_process(demo_app_binary, "demo:v2-unready", tmp_path) as demo:
        for _ in range(20):
            assert httpx.get(demo.url + "/health", timeout=5).status_code == 503
            time.sleep(0.05)
        r = httpx.get(demo.url + "/", timeout=5)  # it serves, it just never says it is ready
        assert r.status_code == 200 and r.headers["X-Version"] == "v2"


def test_ready_version_passes_health_and_reports_version(
    demo_app_binary: Path, tmp_path: Path
) -> None:
    with demo_process(demo_app_binary, "demo:v1", tmp_path) as demo:
        assert httpx.get(demo.url + "/health", timeout=5).status_code == 200
        r = httpx.get(demo.url + "/", timeout=5)
        assert r.headers["X-Version"] == "v1"
        assert r.json() == {"version": "v1", "image": "demo:v1", "instance": "local", "status": 200}


def _slow_answer(conn: http.client.HTTPConnection, started: float, result: dict[str, Any]) -> None:
    try:
        response = conn.getresponse()
        response.read()
        result["status"] = response.status
    except (OSError, http.client.HTTPException) as exc:
        result["error"] = repr(exc)
    result["seconds"] = time.monotonic() - started


def _refuses(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
    except httpx.ConnectError:
        return True
    return False


def test_sigterm_stops_accepting_finishes_in_flight_request_then_exits_0(
    demo_app_binary: Path, tmp_path: Path
) -> None:
    with demo_process(demo_app_binary, "demo:v2-slow3000", tmp_path) as demo:
        result: dict[str, Any] = {}
        # Connected and sent here, before the signal: started in the thread, the request
        # could come after the listener closed (refused under a cold run's load).
        address = urlparse(demo.url)
        conn = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
        started = time.monotonic()
        conn.request("GET", "/")
        inflight = threading.Thread(target=_slow_answer, args=(conn, started, result))
        inflight.start()
        time.sleep(0.5)  # the app has accepted it: it is inside its 3 s of latency
        demo.proc.send_signal(signal.SIGTERM)
        # Waited for while the app still works (its CPU time); the in-flight request's 3 s
        # are what must not have passed by then.
        wait_for(
            "refusing new connections",
            lambda: _refuses(demo.url + "/health"),
            lambda: cpu_ticks(demo.proc.pid),
            every=0.1,
        )
        assert "status" not in result, "the in-flight request should still be running"
        assert demo.wait_exit() == 0
        inflight.join()  # the app has exited: the answer is in or the connection is closed
        conn.close()
    assert result.get("status") == 200, result
    assert result["seconds"] >= 2.9
    assert "draining" in demo.log.read_text()


def test_docker_stop_lets_in_flight_request_finish(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    host = docker_hosts_by_name["host1"]
    client = docker_client(host)
    try:
        # The behaviour comes from DEMO_IMAGE, so the env can ask for a longer latency.
        slow = {"DEMO_IMAGE": "demo:v2-slow3000"}
        with running(client, "demo:v2-slow", environment=slow) as (container, port):
            url = f"http://{host.address}:{port}/"
            wait_http(url + "health", starting(container))
            result: dict[str, Any] = {}
            # Connected and sent here, before the stop: started in the thread, the request
            # could come after the listener closed (refused under load).
            conn = http.client.HTTPConnection(host.address, port, timeout=30)
            started = time.monotonic()
            conn.request("GET", "/")
            inflight = threading.Thread(target=_slow_answer, args=(conn, started, result))
            inflight.start()
            time.sleep(0.5)  # the app has accepted it: it is inside its 3 s of latency
            container.stop(timeout=20)  # SIGTERM, SIGKILL only after 20 s
            inflight.join()  # the container has stopped: the answer is in or the socket closed
            conn.close()
            container.reload()
            # 0, not 137: the app drained and exited on SIGTERM, nothing waited for SIGKILL.
            assert container.attrs["State"]["ExitCode"] == 0
    finally:
        client.close()
    assert result.get("status") == 200, result
    assert result["seconds"] >= 2.9


# --- Traefik's file provider in front of docker hosts ---------------------------------------


def test_file_provider_config_routes_weighted_traffic_to_containers_on_docker_hosts(
    docker_hosts_by_name: dict[str, DockerHost], traefik: Traefik
) -> None:
    """What lockgate's docker mode does: stable and canary containers on two hosts, a weighted
    service in a file-provider config that Traefik reloads when it changes."""
    stable_host, canary_host = docker_hosts_by_name["host1"], docker_hosts_by_name["host3"]
    name = f"lgdocker-{uuid.uuid4().hex[:8]}"
    path = traefik.dynamic_dir / f"{name}.yaml"
    stable_client, canary_client = docker_client(stable_host), docker_client(canary_host)

    def write(stable_weight: int, canary_weight: int) -> None:
        def lb(host: DockerHost, port: int) -> dict[str, Any]:
            return {"loadBalancer": {"servers": [{"url": f"http://{host.address}:{port}"}]}}

        config = {
            "http": {
                "routers": {
                    name: {"rule": f"Host(`{name}.test`)", "entryPoints": ["web"], "service": name}
                },
                "services": {
                    name: {
                        "weighted": {
                            "services": [
                                {"name": f"{name}-stable", "weight": stable_weight},
                                {"name": f"{name}-canary", "weight": canary_weight},
                            ]
                        }
                    },
                    f"{name}-stable": lb(stable_host, stable_port),
                    f"{name}-canary": lb(canary_host, canary_port),
                },
            }
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config))
        tmp.rename(path)  # atomic: Traefik never reads half a file

    def loaded() -> tuple[int, str]:
        """Traefik's view of the weighted service (its API): it changes only as Traefik loads
        the file, so a wait for the routing moves while Traefik still takes a change up."""
        answer = httpx.get(f"{traefik.api_url}/api/http/services/{name}@file", timeout=5)
        return answer.status_code, answer.text

    def versions(n: int) -> Counter[str]:
        with httpx.Client(timeout=5) as http:
            return Counter(
                http.get(traefik.web_url, headers={"Host": f"{name}.test"}).headers.get(
                    "X-Version", "none"
                )
                for _ in range(n)
            )

    try:
        with (
            running(stable_client, "demo:v1") as (stable, stable_port),
            running(canary_client, "demo:v2") as (canary, canary_port),
        ):
            wait_http(f"http://{stable_host.address}:{stable_port}/health", starting(stable))
            wait_http(f"http://{canary_host.address}:{canary_port}/health", starting(canary))

            write(100, 0)
            wait_for("routing to the stable container", lambda: versions(1) == {"v1": 1}, loaded)
            assert versions(20) == {"v1": 20}

            write(50, 50)  # Traefik reloads the changed file: half the traffic to the canary
            wait_for("the reload with the canary's weight", lambda: "v2" in versions(4), loaded)
            split = versions(40)
            assert set(split) == {"v1", "v2"} and abs(split["v2"] - 20) <= 4, split

            write(0, 100)
            wait_for("full promotion to the canary", lambda: versions(4) == {"v2": 4}, loaded)
    finally:
        path.unlink(missing_ok=True)
        stable_client.close()
        canary_client.close()
