"""The Docker target's pure parts: file-provider config rendering and parsing, names and
labels, quantities, capacity arithmetic, error translation, atomic local writes."""

from __future__ import annotations

import asyncio
import stat
import threading
import time
from pathlib import Path
from typing import Any

import paramiko
import pytest
import requests
import yaml

from lockgate.engine import compile_plan
from lockgate.engine.plan import first_canary_units
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import (
    HostKeyError,
    HostUnavailable,
    ImageUnavailable,
    SessionRefused,
    ends_connection,
    translate_error,
)
from lockgate.hosts.spec import HostSpec, host_spec_from_api
from lockgate.hosts.ssh import strict_ssh_client
from lockgate.names import (
    LABEL_APP,
    LABEL_DEPLOYMENT,
    LABEL_IMAGE,
    LABEL_INDEX,
    LABEL_RELEASE,
    LABEL_REVISION,
    LABEL_ROLE,
)
from lockgate.targets.docker.capacity import HostCapacity, Shortfall, extra_instances, shortfalls
from lockgate.targets.docker.containers import (
    ContainerSettings,
    container_labels,
    container_name,
    split_release,
)
from lockgate.targets.docker.resources import Resources, parse_cpus, parse_memory
from lockgate.traffic.traefik_api import parse_live_weights
from lockgate.traffic.traefik_crd import live_leaves
from lockgate.traffic.traefik_file import (
    TEMP_DIR,
    FileConfig,
    HealthCheckConfig,
    LocalStore,
    RouteConfig,
    dump,
    leaves,
    parse,
    render,
)
from tests.support.fakeworld import dep_spec, docker_app_spec

GiB = 2**30
MiB = 2**20
CPU = 1_000_000_000

# --- rendering -------------------------------------------------------------------------------


def _config(weights: tuple[int, int], **kwargs: Any) -> FileConfig:
    servers = kwargs.pop(
        "servers",
        {"stable": ("http://10.0.0.2:32768", "http://10.0.0.1:32768"), "canary": ("http://c:1",)},
    )
    return FileConfig(app="shop", weights=weights, servers=servers, **kwargs)


def test_render_weighted_service_over_two_load_balancers_with_router() -> None:
    config = render(_config((90, 10), route=RouteConfig("Host(`shop.test`)", ("web", "websecure"))))
    http = config["http"]
    assert http["routers"] == {
        "shop": {
            "rule": "Host(`shop.test`)",
            "entryPoints": ["web", "websecure"],
            "service": "shop",
            "middlewares": ["shop-retry"],
        }
    }
    # Requests to a host that just died are sent again instead of failing.
    assert http["middlewares"] == {
        "shop-retry": {"retry": {"attempts": 10, "initialInterval": "20ms"}}
    }
    assert http["services"]["shop"]["weighted"]["services"] == [
        {"name": "shop-stable", "weight": 90},
        {"name": "shop-canary", "weight": 10},
    ]
    stable = http["services"]["shop-stable"]["loadBalancer"]
    assert stable["servers"] == [{"url": "http://10.0.0.1:32768"}, {"url": "http://10.0.0.2:32768"}]
    assert stable["healthCheck"] == {"path": "/health", "interval": "5s", "timeout": "2s"}
    assert http["services"]["shop-canary"]["loadBalancer"]["servers"] == [{"url": "http://c:1"}]


@pytest.mark.parametrize(("weights", "present"), [((100, 0), "stable"), ((0, 100), "canary")])
def test_zero_weight_side_is_left_out_of_the_weighted_list(
    weights: tuple[int, int], present: str
) -> None:
    services = render(_config(weights))["http"]["services"]
    assert services["shop"]["weighted"]["services"] == [{"name": f"shop-{present}", "weight": 100}]


def test_zero_weight_side_without_servers_is_not_defined_at_all() -> None:
    services = render(_config((100, 0), servers={"stable": ("http://a:1",)}))["http"]["services"]
    assert set(services) == {"shop", "shop-stable"}


def test_zero_weight_side_with_servers_stays_defined_so_traefik_loads_them_early() -> None:
    services = render(_config((100, 0)))["http"]["services"]
    assert "shop-canary" in services


def test_no_route_means_no_router_and_no_health_check_when_disabled() -> None:
    http = render(_config((50, 50), health=None))["http"]
    assert "routers" not in http
    assert "healthCheck" not in http["services"]["shop"]["weighted"]
    assert "healthCheck" not in http["services"]["shop-stable"]["loadBalancer"]


@pytest.mark.parametrize("weights", [(60, 30), (-10, 110), (101, -1)])
def test_weights_must_be_a_split_of_100(weights: tuple[int, int]) -> None:
    with pytest.raises(ValueError, match="sum to 100"):
        render(_config(weights))


def test_dump_is_yaml_that_parses_back_to_the_same_declaration() -> None:
    original = _config(
        (75, 25),
        route=RouteConfig("Host(`a`)", ("web",)),
        health=HealthCheckConfig("/healthz", 3, 1),
    )
    text = dump(original)
    assert text.startswith("# Written by lockgate")
    assert yaml.safe_load(text) == render(original)
    back = parse("shop", text)
    assert back is not None
    assert back.weights == (75, 25)
    assert back.servers_of("stable") == ("http://10.0.0.1:32768", "http://10.0.0.2:32768")
    assert back.servers_of("canary") == ("http://c:1",)
    assert back.route == RouteConfig("Host(`a`)", ("web",))
    assert back.health == HealthCheckConfig("/healthz", 3, 1)


def test_dump_is_deterministic_so_an_unchanged_declaration_is_not_rewritten() -> None:
    a = _config((50, 50))
    b = _config(
        (50, 50),
        servers={"canary": ("http://c:1",), "stable": tuple(reversed(a.servers_of("stable")))},
    )
    assert dump(a) == dump(b)


@pytest.mark.parametrize("text", ["", "http: [", "http: {services: {}}", "just text", "[1, 2]"])
def test_parse_refuses_what_lockgate_did_not_write(text: str) -> None:
    assert parse("shop", text) is None


def test_parse_live_weights_from_traefiks_api_answer() -> None:
    body = {
        "status": "enabled",
        "weighted": {
            "services": [
                {"name": "shop-stable", "weight": 3},
                {"name": "shop-canary@file", "weight": 1},
            ]
        },
    }
    assert parse_live_weights(body, leaves("shop")) == (75, 25)
    assert parse_live_weights(
        {"weighted": {"services": [{"name": "shop-canary"}]}}, leaves("shop")
    ) == (
        0,
        100,
    )
    assert parse_live_weights({**body, "status": "disabled"}, leaves("shop")) is None
    assert parse_live_weights({"weighted": {"services": []}}, leaves("shop")) is None
    assert (
        parse_live_weights({"weighted": {"services": [{"name": "other"}]}}, leaves("shop")) is None
    )


def test_parse_live_weights_of_a_traefik_service_over_kubernetes_services() -> None:
    body = {
        "status": "enabled",
        "weighted": {
            "services": [
                {"name": "prod-shop-stable-8080@kubernetescrd", "weight": 90},
                {"name": "prod-shop-canary-8080@kubernetescrd", "weight": 10},
            ]
        },
    }
    assert parse_live_weights(body, live_leaves("prod", "shop")) == (90, 10)
    assert parse_live_weights(body, live_leaves("other", "shop")) is None


# --- atomic local writes ---------------------------------------------------------------------


def test_local_store_replaces_the_file_whole_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    store = LocalStore(str(path))

    async def scenario() -> None:
        assert await store.read() is None
        await store.write("a: 1\n")
        inode = path.stat().st_ino
        await store.write("a: 2\n")
        assert await store.read() == "a: 2\n"
        assert path.stat().st_ino != inode  # a new file renamed over the old one
        await store.remove()
        await store.remove()  # idempotent
        assert await store.read() is None

    asyncio.run(scenario())
    # The temp files went to a subdirectory Traefik does not watch, and none stayed there.
    assert [p.name for p in tmp_path.iterdir()] == [TEMP_DIR]
    assert list((tmp_path / TEMP_DIR).iterdir()) == []


def test_local_store_file_is_readable_by_the_proxy(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    asyncio.run(LocalStore(str(path)).write("x: 1\n"))
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_local_store_failure_removes_its_temp_file(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "missing-dir" / "shop.yaml"))
    with pytest.raises(FileNotFoundError):
        asyncio.run(store.write("x: 1\n"))
    assert list(tmp_path.iterdir()) == []


# --- names, labels, quantities ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "release", "index", "name"),
    [
        ("shop", "shop-2-0-0/3", 0, "shop-2-0-0-r3-0"),
        ("shop", "canary-x/1", 2, "shop-canary-x-r1-2"),
        ("shop", "shop/1", 0, "shop-r1-0"),
        ("shop", "legacy", 1, "shop-legacy-1"),
        ("shop", "weird name:/7", 0, "shop-weird-name-r7-0"),
    ],
)
def test_container_names(app: str, release: str, index: int, name: str) -> None:
    assert container_name(app, release, index) == name


def test_two_deployments_at_the_same_revision_get_different_names() -> None:
    assert container_name("shop", "shop-a/1", 0) != container_name("shop", "shop-b/1", 0)


def test_labels_carry_everything_needed_after_a_restart() -> None:
    labels = container_labels("shop", "shop-2/4", "canary", 1, 8080, "shop:2.0")
    assert labels[LABEL_IMAGE] == "shop:2.0"
    assert labels[LABEL_APP] == "shop"
    assert labels[LABEL_DEPLOYMENT] == "shop-2"
    assert labels[LABEL_REVISION] == "4"
    assert labels[LABEL_RELEASE] == "shop-2/4"
    assert labels[LABEL_ROLE] == "canary"
    assert labels[LABEL_INDEX] == "1"
    assert split_release("a/b/3") == ("a/b", "3")
    assert split_release("plain") == ("plain", "")


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("512Mi", 512 * MiB),
        ("1Gi", GiB),
        ("64Ki", 64 * 1024),
        ("1G", 10**9),
        ("500M", 500 * 10**6),
        ("512m", 512 * MiB),
        ("2g", 2 * GiB),
        ("1024", 1024),
    ],
)
def test_parse_memory(text: str, value: int) -> None:
    assert parse_memory(text) == value


@pytest.mark.parametrize(("text", "value"), [("1", CPU), ("0.5", CPU // 2), ("1.25", 5 * CPU // 4)])
def test_parse_cpus(text: str, value: int) -> None:
    assert parse_cpus(text) == value


@pytest.mark.parametrize("bad", ["1.5Gi", "1Ti", "-1", ""])
def test_bad_memory_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid memory"):
        parse_memory(bad)


@pytest.mark.parametrize("bad", ["-1", "lots", ""])
def test_bad_cpus_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid CPU"):
        parse_cpus(bad)


def test_secrets_never_appear_in_reprs() -> None:
    spec = HostSpec("web-1", "ssh://root@10.0.0.1", "10.0.0.1", ssh_key="PRIVATE", tls_key="TLSKEY")
    settings = ContainerSettings("shop:1", 8080, env={"DB_PASSWORD": "hunter2"})
    assert "PRIVATE" not in repr(spec) and "TLSKEY" not in repr(spec)
    assert "hunter2" not in repr(settings)


# --- capacity --------------------------------------------------------------------------------


HOSTS = ("h1", "h2", "h3", "h4", "h5")


def test_blue_green_and_rolling_need_a_second_set_on_every_host() -> None:
    assert extra_instances("BlueGreen", HOSTS, 2) == dict.fromkeys(HOSTS, 2)
    assert extra_instances("Rolling", HOSTS, 1) == dict.fromkeys(HOSTS, 1)


def test_canary_needs_room_on_its_first_canary_hosts_only() -> None:
    assert extra_instances("Canary", HOSTS, 2, canary_units=("h1", "h2")) == {
        "h1": 2,
        "h2": 2,
        "h3": 0,
        "h4": 0,
        "h5": 0,
    }


@pytest.mark.parametrize(
    ("hosts", "share", "first_weight", "expected"),
    [
        (10, None, 10, 1),  # grows with the weight: 10% of 10 hosts
        (5, None, 50, 3),  # 50% of 5 hosts, rounded up
        (10, 2, 10, 2),
        (10, "30%", 50, 3),  # a fixed share, whatever the weight
        (10, "100%", 10, 10),
        (10, 0, 10, 1),  # never fewer than one
    ],
)
def test_the_preflight_checks_the_hosts_the_plan_starts_the_canary_on(
    hosts: int, share: int | str | None, first_weight: int, expected: int
) -> None:
    app = docker_app_spec(hosts=hosts)
    canary: dict[str, object] = {"steps": [{"setWeight": first_weight}, {"setWeight": 100}]}
    if share is not None:
        canary["canaryHosts"] = share
    spec = dep_spec(strategy={"type": "Canary", "canary": canary})
    plan = compile_plan(app, spec, has_stable=True)
    first_canary = next(s for s in plan.steps if s.kind == "start").canary_units
    units = app.units()
    extra = extra_instances("Canary", units, 2, canary_units=first_canary_units(app, units, spec))
    assert tuple(h for h, n in extra.items() if n) == first_canary
    assert len(first_canary) == expected


def test_recreate_needs_only_what_is_not_running_already() -> None:
    assert extra_instances("Recreate", ("a", "b"), 2, existing={"a": 2, "b": 1}) == {"a": 0, "b": 1}


def _capacity(
    host: str, cpus: float, mem_gib: float, used_cpus: float, used_gib: float
) -> HostCapacity:
    return HostCapacity(
        host,
        Resources(int(cpus * CPU), int(mem_gib * GiB)),
        Resources(int(used_cpus * CPU), int(used_gib * GiB)),
    )


def test_shortfalls_name_host_and_resource() -> None:
    capacity = {
        "h1": _capacity("h1", 4, 8, 3.5, 2),  # 0.5 CPU, 6 GiB free
        "h2": _capacity("h2", 4, 8, 1, 7.5),  # 3 CPU, 0.5 GiB free
        "h3": _capacity("h3", 4, 8, 0, 0),
    }
    per = Resources(CPU, GiB)
    found = shortfalls(capacity, {"h1": 1, "h2": 1, "h3": 2}, per)
    assert found == [
        Shortfall("h1", "cpu", CPU, CPU // 2),
        Shortfall("h2", "memory", GiB, GiB // 2),
    ]
    assert str(found[0]) == "host h1: not enough CPU: needs 1 more, 0.5 free"
    assert str(found[1]) == "host h2: not enough memory: needs 1024Mi more, 512Mi free"


def test_overlap_multiplies_the_need() -> None:
    capacity = {"h1": _capacity("h1", 2, 4, 0, 0)}
    per = Resources(CPU, GiB)
    assert shortfalls(capacity, {"h1": 2}, per) == []
    assert [s.resource for s in shortfalls(capacity, {"h1": 3}, per)] == ["cpu"]
    assert shortfalls(capacity, {"h1": 0}, Resources(100 * CPU, 100 * GiB)) == []


def test_unlimited_resources_are_not_checked_and_overcommit_shows_as_zero_free() -> None:
    capacity = {"h1": _capacity("h1", 1, 1, 2, 2)}  # overcommitted already
    assert shortfalls(capacity, {"h1": 1}, Resources()) == []
    found = shortfalls(capacity, {"h1": 1}, Resources(CPU, 0))
    assert [s.resource for s in found] == ["cpu"]
    assert "0 free" in str(found[0])


# --- errors ----------------------------------------------------------------------------------


def test_transport_errors_become_errors_naming_the_host() -> None:
    key = paramiko.ECDSAKey.generate()
    other = paramiko.ECDSAKey.generate()
    changed = translate_error("host3", paramiko.BadHostKeyException("10.0.0.3", key, other))
    assert isinstance(changed, HostKeyError)
    assert str(changed).startswith("docker host host3: SSH host key of 10.0.0.3 changed")
    unknown = translate_error(
        "host3", paramiko.SSHException("Server '10.0.0.3' not found in known_hosts")
    )
    assert isinstance(unknown, HostKeyError) and "unknown" in str(unknown)
    refused = translate_error(
        "host2", requests.exceptions.ConnectionError("[Errno 111] Connection refused")
    )
    assert isinstance(refused, HostUnavailable)
    assert str(refused) == "docker host host2: daemon unreachable: [Errno 111] Connection refused"
    assert isinstance(translate_error("h", FileNotFoundError(2, "gone")), HostUnavailable)


def test_a_refused_ssh_session_names_max_sessions_and_keeps_the_connection() -> None:
    refused = translate_error("host3", paramiko.ChannelException(2, "Connect failed"))
    assert isinstance(refused, SessionRefused)
    assert str(refused) == (
        "docker host host3: the SSH server refused another session (Connect failed): lockgate "
        "holds up to 9 at once on its connection (8 calls and an event stream), so sshd's "
        "MaxSessions must be at least 9 (its default is 10)"
    )
    assert not ends_connection(refused)
    assert ends_connection(translate_error("host3", paramiko.SSHException("session not active")))


def test_image_not_found_is_its_own_error() -> None:
    import docker.errors

    error = translate_error("h1", docker.errors.ImageNotFound("no such image: x:1"))
    assert isinstance(error, ImageUnavailable)


def test_known_hosts_from_a_string_pins_only_its_keys() -> None:
    key = paramiko.ECDSAKey.generate()
    line = f"10.0.0.3 {key.get_name()} {key.get_base64()}"
    client = strict_ssh_client("h", f"# comment\n\n{line}\n")
    assert client.get_host_keys().lookup("10.0.0.3") is not None
    assert client.get_host_keys().lookup("10.0.0.4") is None
    assert isinstance(client._policy, paramiko.RejectPolicy)
    with pytest.raises(Exception, match="known_hosts line 1"):
        strict_ssh_client("h", "10.0.0.3 ssh-ed25519 !!!notbase64")


# --- HostConnections.run without a daemon ----------------------------------------------------


def _offline(max_parallel: int) -> HostConnections:
    """HostConnections whose clients are a placeholder object: `run` without any daemon."""
    conns = HostConnections(
        [HostSpec(f"h{i}", f"unix:///nonexistent/{i}.sock", "127.0.0.1") for i in range(6)],
        max_parallel=max_parallel,
    )
    conns._client_sync = lambda host: object()  # type: ignore[method-assign]
    return conns


def test_run_bounds_worker_threads_across_hosts() -> None:
    conns = _offline(max_parallel=2)
    lock = threading.Lock()
    active = peak = 0

    def work(_: Any) -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        time.sleep(0.05)
        with lock:
            active -= 1

    async def scenario() -> dict[str, Any]:
        return await conns.each(conns.names, lambda h: conns.run(h, work))

    results = asyncio.run(scenario())
    assert set(results) == set(conns.names) and all(r is None for r in results.values())
    assert peak == 2
    asyncio.run(scenario())  # a second event loop: the bound still works


def test_run_timeout_and_failures_name_the_host() -> None:
    conns = _offline(max_parallel=4)

    def slow(_: Any) -> None:
        time.sleep(0.5)

    def broken(_: Any) -> None:
        raise requests.exceptions.ConnectionError("[Errno 111] Connection refused")

    with pytest.raises(HostUnavailable, match=r"^docker host h1: no answer within 0.1 s$"):
        asyncio.run(conns.run("h1", slow, seconds=0.1))
    with pytest.raises(
        HostUnavailable, match=r"^docker host h2: daemon unreachable: \[Errno 111\]"
    ):
        asyncio.run(conns.run("h2", broken))

    async def batch() -> dict[str, Any]:
        return await conns.each(["h3", "h4"], lambda h: conns.run(h, broken if h == "h4" else repr))

    results = asyncio.run(batch())
    assert isinstance(results["h4"], HostUnavailable) and isinstance(results["h3"], str)
    with pytest.raises(Exception, match="docker host nope: not a configured host"):
        asyncio.run(conns.run("nope", repr))


def test_host_spec_from_the_application_api() -> None:
    from lockgate.api.application import DockerHost as ApiHost

    secrets = {
        ("deploy-key", "id_ed25519"): "KEY",
        ("deploy-key", "known_hosts"): "KNOWN",
        ("docker-tls", "ca.pem"): "CA",
        ("docker-tls", "cert.pem"): "CERT",
        ("docker-tls", "key.pem"): "TLSKEY",
    }

    def read(name: str, key: str) -> str:
        return secrets[(name, key)]

    ssh = ApiHost.model_validate(
        {
            "name": "web-1",
            "url": "ssh://deploy@10.0.0.11",
            "address": "10.0.0.11",
            "sshKeySecretRef": {"name": "deploy-key", "key": "id_ed25519"},
            "knownHostsSecretRef": {"name": "deploy-key", "key": "known_hosts"},
        }
    )
    spec = host_spec_from_api(ssh, read)
    assert (spec.transport, spec.ssh_key, spec.known_hosts, spec.tls) == (
        "ssh",
        "KEY",
        "KNOWN",
        False,
    )
    tcp = ApiHost.model_validate(
        {
            "name": "web-2",
            "url": "tcp://10.0.0.12:2376",
            "address": "10.0.0.12",
            "tlsSecretRef": {"name": "docker-tls"},
        }
    )
    spec = host_spec_from_api(tcp, read)
    assert (spec.tls_ca, spec.tls_cert, spec.tls_key, spec.tls) == ("CA", "CERT", "TLSKEY", True)
    assert "TLSKEY" not in repr(spec)


def test_the_route_never_weights_a_side_without_servers() -> None:
    from lockgate.controller.fleets.docker import guard_weights

    both = {"stable": ("http://a:1",), "canary": ("http://b:1",)}
    assert guard_weights((80, 20), both) == (80, 20)
    assert guard_weights((80, 20), {**both, "canary": ()}) == (100, 0)
    assert guard_weights((0, 100), {**both, "stable": ()}) == (0, 100)
    assert guard_weights((50, 50), {**both, "stable": ()}) == (0, 100)
    # nothing healthy anywhere: keep what is declared rather than invent a split
    assert guard_weights((80, 20), {"stable": (), "canary": ()}) == (80, 20)
