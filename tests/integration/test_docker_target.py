"""lockgate.hosts, lockgate.targets.docker and lockgate.traffic.traefik_file against the real
thing: three dockerd hosts (unix socket, tcp + mutual TLS, ssh through paramiko) and
Traefik's file provider routing real HTTP to the containers.

A daemon "stopped mid-operation" is host1's daemon behind a unix-socket relay that this test
cuts at a chosen request: the client sees exactly what a dying daemon shows it (the
connection closed without an answer, then the socket gone), while the real daemons, which
other sessions on this machine share, keep running.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockgate.hosts.connections import EventStream, HostConnections
from lockgate.hosts.errors import HostKeyError, HostUnavailable, ImageUnavailable, SessionRefused
from lockgate.hosts.spec import HostSpec
from lockgate.names import LABEL_APP, LABEL_RELEASE
from lockgate.probes.health import check_health
from lockgate.targets.docker.capacity import (
    _capacity_sync,
    check_capacity,
    extra_instances,
    host_capacity,
)
from lockgate.targets.docker.containers import (
    Instance,
    ensure_instances,
    list_instances,
    remove_instances,
)
from lockgate.targets.docker.events import ContainerWatch, event_filters
from lockgate.targets.docker.resources import Resources
from lockgate.traffic.traefik_api import service_answer
from lockgate.traffic.traefik_file import (
    LocalStore,
    RouteConfig,
    SftpStore,
    TraefikFileRouter,
    parse,
    traefik_names,
)
from tests.support.cluster import Traefik
from tests.support.docker_listing import (
    Listing,
    containers_progress,
    listing,
    until_healthy,
    wait_for_async,
)
from tests.support.dockerhosts import DockerHost, local_client, process_progress
from tests.support.rollouts import wait_for
from tests.support.socket_relay import SocketRelay

pytestmark = pytest.mark.integration

NO_LIMITS = Resources()


def host_spec(host: DockerHost, **overrides: str) -> HostSpec:
    def read(path: Path | None) -> str | None:
        return path.read_text() if path else None

    spec = HostSpec(
        name=host.name,
        url=host.url,
        address=host.address,
        ssh_key=read(host.ssh_key),
        known_hosts=read(host.known_hosts),
        tls_ca=read(host.tls_ca),
        tls_cert=read(host.tls_cert),
        tls_key=read(host.tls_key),
    )
    return replace(spec, **overrides)


@pytest.fixture
def app(docker_hosts: list[DockerHost]) -> Iterator[str]:
    """A unique application name; its containers are removed from every host afterwards."""
    name = f"lgt-{uuid.uuid4().hex[:8]}"
    yield name
    for host in docker_hosts:
        client = local_client(host)
        try:
            for c in client.containers.list(all=True, filters={"label": f"{LABEL_APP}={name}"}):
                c.remove(force=True)
        finally:
            client.close()


@pytest.fixture
def conns(docker_hosts: list[DockerHost]) -> Iterator[HostConnections]:
    connections = HostConnections([host_spec(h) for h in docker_hosts], timeout=30)
    yield connections
    connections.close()


def labelled(host: DockerHost, app: str) -> list[str]:
    """Names of the app's containers on host, read over its unix socket."""
    client = local_client(host)
    try:
        found = client.containers.list(all=True, filters={"label": f"{LABEL_APP}={app}"})
        return sorted(c.name for c in found)
    finally:
        client.close()


# --- instances on every transport ------------------------------------------------------------


def test_instances_on_unix_tls_and_ssh_hosts_answer(
    docker_hosts: list[DockerHost],
    conns: HostConnections,
    app: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = f"s3cret-{uuid.uuid4().hex}"

    async def scenario() -> None:
        caplog.set_level(logging.DEBUG)
        started = await conns.each(
            conns.names,
            lambda h: ensure_instances(
                conns,
                h,
                app,
                f"{app}-1/1",
                "demo:v1",
                2,
                {"DB_PASSWORD": secret},
                Resources.parse("0.25", "64Mi"),
                8080,
                role="stable",
            ),
        )
        instances = [i for result in started.values() if isinstance(result, list) for i in result]
        assert len(instances) == 6, started
        async with httpx.AsyncClient() as http:
            await until_healthy(conns, http, instances, "/health")
            for instance in instances:
                answer = await http.get(f"{instance.url}/")
                assert answer.headers["X-Version"] == "v1", instance
                assert instance.url and instance.url.startswith(f"http://{instance.address}:")

    asyncio.run(scenario())
    for host in docker_hosts:
        assert labelled(host, app) == [f"{app}-1-r1-0", f"{app}-1-r1-1"], host.name
        client = local_client(host)
        try:
            c = client.containers.get(f"{app}-1-r1-0")
            hc = c.attrs["HostConfig"]
            assert hc["NanoCpus"] == 250_000_000 and hc["Memory"] == 64 * 2**20
            assert hc["RestartPolicy"]["Name"] == "unless-stopped"
            binding = hc["PortBindings"]["8080/tcp"][0]
            assert binding["HostIp"] == host.address  # published on the host's address only
            assert f"DB_PASSWORD={secret}" in c.attrs["Config"]["Env"]
            assert c.labels[LABEL_RELEASE] == f"{app}-1/1"
        finally:
            client.close()
    assert secret not in caplog.text
    assert f"creating {app}-1-r1-0" in caplog.text


def test_tls_material_is_in_memory_reread_on_reconnect_and_closed_with_the_pool(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    conns = HostConnections([host_spec(docker_hosts_by_name["host2"])])
    asyncio.run(conns.ping("host2"))
    files = {fd: os.fstat(fd).st_ino for fd in conns._tls_files.values()}
    assert len(files) == 3
    for fd in files:
        assert os.readlink(f"/proc/self/fd/{fd}").startswith("/memfd:")  # never on disk
    conns._drop("host2")  # what a failed call does: the next one connects again
    asyncio.run(conns.ping("host2"))  # mutual TLS again, from the same in-memory files
    conns.close()
    for fd, inode in files.items():
        with contextlib.suppress(OSError):  # closed; or its number reused by another file
            assert os.fstat(fd).st_ino != inode


def test_an_applications_ssh_connection_fits_a_stock_sshd(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    """host3's sshd keeps the default MaxSessions: 10 channels on one SSH connection, the
    11th refused ("open failed"). An Application's connection at its fullest, as many calls
    as it runs at once each holding a channel while a container watch holds another, fits."""
    conns = HostConnections([host_spec(docker_hosts_by_name["host3"])])
    all_open = threading.Barrier(conns.max_parallel)
    filters = event_filters(["none"])

    def hold_a_channel(_client: Any) -> None:
        try:
            stream = conns.open_events("host3", filters)  # a channel until it is closed
        except BaseException:
            all_open.abort()
            raise
        try:
            all_open.wait()
        finally:
            stream.close()

    async def scenario() -> list[BaseException | None]:
        # Threads for all of them at once, as the operator's pool has (asyncio's default
        # of cores + 4 is 6 here).
        pool = ThreadPoolExecutor(max_workers=conns.max_parallel + 1)
        asyncio.get_running_loop().set_default_executor(pool)
        watch = await asyncio.to_thread(conns.open_events, "host3", filters)
        try:
            # One round of calls only: a session's slot outlives its closed channel for a
            # moment (until the remote `docker system dial-stdio` exits).
            calls = [conns.run("host3", hold_a_channel) for _ in range(conns.max_parallel)]
            return await asyncio.gather(*calls, return_exceptions=True)
        finally:
            watch.close()

    try:
        results = asyncio.run(scenario())
    finally:
        conns.close()
    assert [r for r in results if r is not None] == []


def _ssh_ports_to(host: DockerHost) -> set[int]:
    """Local ports of this process's established SSH connections to host."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( dst {host.address}:22 )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    mine = f"pid={os.getpid()},"
    return {int(line.split()[2].rsplit(":", 1)[1]) for line in out.splitlines() if mine in line}


def _sshd_session(host: DockerHost, port: int) -> list[int]:
    """The host's sshd processes serving the SSH connection from local `port`."""
    in_host = ["nsenter", f"--net=/run/netns/{host.netns}"]
    out = subprocess.run(
        [*in_host, "ss", "-tnpH", "state", "established", f"( sport = :22 and dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted({int(p) for p in re.findall(r"pid=(\d+)", out)})


def _descendants(pids: list[int]) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                stat_line = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat_line.rsplit(")", 1)[1].split()[1])
    found, todo = [], list(pids)
    while todo:
        parent = todo.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        found += children
        todo += children
    return found


def _an_ssh_connection_in_use(host: DockerHost) -> tuple[HostConnections, int]:
    """HostConnections with a call done on host (a channel back in its pool), and the local
    port of its SSH connection."""
    before = _ssh_ports_to(host)
    conns = HostConnections([host_spec(host)])
    asyncio.run(conns.ping(host.name))
    (port,) = _ssh_ports_to(host) - before
    return conns, port


def test_a_call_after_the_hosts_sshd_ended_the_connection_opens_a_new_one(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    """An SSH connection that ended between calls (its sshd session killed on the host, as
    a restart or a network cut ends it) does not fail the next call: it connects again."""
    host = docker_hosts_by_name["host3"]
    conns, port = _an_ssh_connection_in_use(host)
    try:
        for pid in _sshd_session(host, port):
            os.kill(pid, signal.SIGKILL)
        wait_for(
            "the client to see its SSH connection end",
            lambda: port not in _ssh_ports_to(host),
            lambda: _sshd_session(host, port),
        )
        asyncio.run(conns.ping("host3"))
    finally:
        conns.close()


@pytest.fixture
def host3_allowing_two_sessions(
    docker_hosts_by_name: dict[str, DockerHost], tmp_path: Path
) -> Iterator[HostSpec]:
    """host3 through a second sshd of its own, whose MaxSessions is 2 (a hardened sshd)."""
    host = docker_hosts_by_name["host3"]
    assert host.ssh_key is not None and host.known_hosts is not None
    port = 2222
    config = (host.ssh_key.parent / "sshd_config").read_text()
    config = re.sub(r"(?m)^ListenAddress .*$", f"ListenAddress {host.address}:{port}", config)
    config = re.sub(r"(?m)^PidFile .*$", "PidFile none", config) + "MaxSessions 2\n"
    (tmp_path / "sshd_config").write_text(config)
    in_host = ["nsenter", f"--net=/run/netns/{host.netns}"]
    log = tmp_path / "sshd.log"
    sshd = subprocess.Popen(
        [*in_host, "/usr/sbin/sshd", "-D", "-e", "-f", str(tmp_path / "sshd_config")],
        stderr=log.open("w"),
    )
    try:
        wait_for(
            "the second sshd to listen",
            lambda: sshd.poll() is not None or "listening" in log.read_text(),
            log.read_text,
        )
        assert sshd.poll() is None, log.read_text()
        known = host.known_hosts.read_text().replace(host.address, f"[{host.address}]:{port}", 1)
        yield host_spec(host, url=host.url.replace(":22", f":{port}"), known_hosts=known)
    finally:
        sshd.kill()
        sshd.wait()


def test_a_session_the_sshd_refuses_fails_that_call_alone_naming_max_sessions(
    docker_hosts_by_name: dict[str, DockerHost], host3_allowing_two_sessions: HostSpec
) -> None:
    """An sshd that allows fewer sessions than lockgate uses: the call it refuses a session
    fails with an error that says so, and what runs on the connection's other sessions (two
    event streams, as container watches hold them) goes on: the connection is kept."""
    conns = HostConnections([host3_allowing_two_sessions])
    name = f"lgt-{uuid.uuid4().hex[:8]}"
    filters = {"type": ["network"], "network": [name]}
    streams = [conns.open_events("host3", filters) for _ in range(2)]  # both sessions
    seen: list[list[dict[str, Any]]] = [[], []]
    readers = [
        threading.Thread(target=_read, args=(stream, events), daemon=True)
        for stream, events in zip(streams, seen, strict=True)
    ]
    for reader in readers:
        reader.start()
    local = local_client(docker_hosts_by_name["host3"])
    network = None
    try:
        with pytest.raises(SessionRefused) as refused:
            asyncio.run(conns.ping("host3"))
        network = local.networks.create(name)

        def both_brought_it() -> bool:
            alive = [r.is_alive() for r in readers]  # before what they read: no race
            got = [any(e.get("Action") == "create" for e in list(s)) for s in seen]
            cut = [i for i in range(2) if not alive[i] and not got[i]]
            assert not cut, f"event streams {cut} ended without the event: the connection went"
            return all(got)

        wait_for("both streams to bring the new network's event", both_brought_it, seen.copy)
    finally:
        for stream in streams:
            stream.close()
        conns.close()
        if network is not None:
            network.remove()
        local.close()
    message = str(refused.value)
    assert message.startswith("docker host host3: the SSH server refused another session")
    assert "MaxSessions must be at least 9" in message


def test_a_call_after_the_hosts_dial_stdio_ended_opens_a_new_channel(
    docker_hosts_by_name: dict[str, DockerHost],
) -> None:
    """A pooled channel whose `docker system dial-stdio` on the host ended (killed here) is
    not used for the next call, which opens a new channel on the same connection."""
    host = docker_hosts_by_name["host3"]
    conns, port = _an_ssh_connection_in_use(host)
    try:
        dial_stdio = [
            pid
            for pid in _descendants(_sshd_session(host, port))
            if b"dial-stdio" in Path(f"/proc/{pid}/cmdline").read_bytes()
        ]
        assert dial_stdio, "a pooled channel runs dial-stdio on the host"
        for pid in dial_stdio:
            os.kill(pid, signal.SIGKILL)
        # Read only to know when: the client has seen the channel's close.
        pool = conns._client_sync("host3").api._custom_adapter.get_connection("")
        wait_for(
            "the client to see the channel's close",
            lambda: all(c.sock is None or c.sock.closed for c in list(pool.pool.queue) if c),
            lambda: [Path(f"/proc/{pid}").exists() for pid in dial_stdio],
        )
        asyncio.run(conns.ping("host3"))
        assert _ssh_ports_to(host) >= {port}, "the same SSH connection"
    finally:
        conns.close()


def test_remove_stops_with_sigterm_and_removes(
    docker_hosts_by_name: dict[str, DockerHost], conns: HostConnections, app: str
) -> None:
    host = docker_hosts_by_name["host3"]
    asyncio.run(
        ensure_instances(conns, "host3", app, f"{app}/1", "demo:v1", 2, {}, NO_LIMITS, 8080)
    )
    since = int(time.time())  # the daemon shares this kernel's clock
    removed = asyncio.run(remove_instances(conns, "host3", app, f"{app}/1", grace=20))
    assert removed == [f"{app}-r1-0", f"{app}-r1-1"]
    assert labelled(host, app) == []
    # How each container ended, from the daemon's own events: exit code 0, not 137, so the
    # demo app exited on SIGTERM and nothing waited for SIGKILL.
    client = local_client(host)
    try:
        deaths = client.events(
            since=since,
            until=int(time.time()) + 1,
            filters={"type": "container", "event": "die", "label": f"{LABEL_APP}={app}"},
            decode=True,
        )
        exit_codes = {
            e["Actor"]["Attributes"]["name"]: e["Actor"]["Attributes"]["exitCode"] for e in deaths
        }
    finally:
        client.close()
    assert exit_codes == {name: "0" for name in removed}, exit_codes


def test_missing_image_is_an_error_naming_the_host(conns: HostConnections, app: str) -> None:
    with pytest.raises(ImageUnavailable, match=r"^docker host host1: image lgt-absent:v0"):
        asyncio.run(
            ensure_instances(
                conns, "host1", app, f"{app}/1", "lgt-absent:v0", 1, {}, NO_LIMITS, 8080
            )
        )


# --- Docker events on every transport -------------------------------------------------------


def _read(stream: EventStream, seen: list[dict[str, Any]]) -> None:
    # A read that close() cuts may end in any error (http.client's own, mid-chunk), and the
    # operator's watch takes any as the stream's end: so does this reader.
    with contextlib.suppress(Exception):
        for event in stream:
            seen.append(event)


@pytest.mark.parametrize("host", ["host1", "host2", "host3"], ids=["unix", "tls", "ssh"])
def test_an_event_stream_brings_the_containers_events_and_closes_on_every_transport(
    conns: HostConnections, app: str, host: str
) -> None:
    """A stream filtered on one container brings its `die` and `start` (none of another
    container's), and `close()` from another thread ends the read blocked on it, leaving
    the host's connection usable (over SSH: the channel goes, not the connection)."""
    mine, other = asyncio.run(
        ensure_instances(conns, host, app, f"{app}/1", "demo:v1", 2, {}, NO_LIMITS, 8080)
    )
    stream = conns.open_events(host, event_filters([mine.id]))
    seen: list[dict[str, Any]] = []
    reader = threading.Thread(target=_read, args=(stream, seen), daemon=True)
    reader.start()
    try:

        def restart(container_id: str) -> None:
            asyncio.run(conns.run(host, lambda c: c.api.restart(container_id, timeout=5)))

        restart(other.id)  # not followed: nothing arrives from it
        restart(mine.id)
        # The restart has returned: the daemon has sent both events; what moves towards the
        # answer is their arrival, so the wait goes on while events still come.
        wait_for(
            "the restarted container's die and start",
            lambda: {e.get("Action") for e in list(seen)} >= {"die", "start"},
            lambda: len(seen),
        )
        assert {(e.get("Actor") or {}).get("ID") for e in seen} == {mine.id}
    finally:
        stream.close()
    reader.join(30)
    assert not reader.is_alive(), "close() ended the blocked read"
    asyncio.run(conns.ping(host))


@pytest.mark.parametrize("host", ["host1", "host3"], ids=["unix", "ssh"])
def test_a_container_watch_wakes_once_the_new_container_answers_and_closes_its_stream(
    conns: HostConnections, app: str, host: str
) -> None:
    async def scenario() -> None:
        (instance,) = await ensure_instances(
            conns, host, app, f"{app}/1", "demo:v1", 1, {}, NO_LIMITS, 8080
        )
        woken = asyncio.Event()
        watch = ContainerWatch(conns)
        async with httpx.AsyncClient() as http:

            async def probe(i: Instance) -> bool:
                return await check_health(http, i.running_url, "/health")

            assert watch.follow([instance], woken.set, probe)

            async def is_woken() -> bool:
                return woken.is_set()

            # Waited for while the container still starts (its state and CPU time).
            await wait_for_async(
                "the watch to wake",
                is_woken,
                lambda: containers_progress(conns, [instance]),
                every=0.1,
            )
            assert await probe(instance)
        await watch.aclose()
        assert watch.opened == 1 and watch.woken == 1 and not watch.broken
        assert watch.watching == frozenset()

    asyncio.run(scenario())


# --- SSH host keys ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["changed-key", "host-missing"])
def test_unknown_or_changed_ssh_host_key_is_refused_and_nothing_starts(
    docker_hosts_by_name: dict[str, DockerHost], tmp_path: Path, app: str, case: str
) -> None:
    host = docker_hosts_by_name["host3"]
    assert host.known_hosts
    real = host.known_hosts.read_text().split()
    if case == "changed-key":
        key = tmp_path / "other"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        public = key.with_suffix(".pub").read_text().split()[:2]
        known = f"{host.address} {' '.join(public)}\n"
        expected = r"^docker host host3: SSH host key of .* changed"
    else:
        known = f"10.66.99.2 {real[1]} {real[2]}\n"
        expected = r"^docker host host3: SSH host key unknown, refusing"
    conns = HostConnections([host_spec(host, known_hosts=known)])
    try:
        with pytest.raises(HostKeyError, match=expected):
            asyncio.run(
                ensure_instances(conns, "host3", app, f"{app}/1", "demo:v1", 1, {}, NO_LIMITS, 8080)
            )
        # and again: a refused host never ends up with a cached client
        with pytest.raises(HostKeyError):
            asyncio.run(list_instances(conns, "host3", app))
        store = SftpStore(host_spec(host, known_hosts=known), str(tmp_path / "x.yaml"))
        with pytest.raises(HostKeyError):
            asyncio.run(store.write("http: {}\n"))
    finally:
        conns.close()
    assert labelled(host, app) == []
    assert not (tmp_path / "x.yaml").exists()


# --- a daemon that goes away -----------------------------------------------------------------


def test_daemon_stopping_mid_operation_fails_that_host_by_name_and_others_carry_on(
    docker_hosts_by_name: dict[str, DockerHost], tmp_path: Path, app: str
) -> None:
    host1 = docker_hosts_by_name["host1"]
    relay = SocketRelay(tmp_path / "docker.sock", host1.socket)
    relay.start()
    specs = [
        host_spec(host1, url=f"unix://{relay.path}"),
        host_spec(docker_hosts_by_name["host2"]),
        host_spec(docker_hosts_by_name["host3"]),
    ]
    conns = HostConnections(specs, timeout=20)
    release = f"{app}/1"

    async def ensure(h: str) -> list[Instance]:
        return await ensure_instances(conns, h, app, release, "demo:v1", 1, {}, NO_LIMITS, 8080)

    try:
        asyncio.run(conns.ping("host1"))  # a connected, cached client
        relay.trip = b"/containers/create"  # the daemon dies as the create arrives
        results = asyncio.run(conns.each(conns.names, ensure))
        assert relay.tripped.is_set()
        failure = results["host1"]
        assert isinstance(failure, HostUnavailable), failure
        assert str(failure).startswith("docker host host1: daemon unreachable"), str(failure)
        assert not isinstance(results["host2"], Exception)
        assert not isinstance(results["host3"], Exception)
        assert labelled(host1, app) == []

        # While it is down: refused, by name.
        with pytest.raises(HostUnavailable, match=r"^docker host host1: daemon unreachable"):
            asyncio.run(ensure("host1"))

        # Back up: the same HostConnections reconnects and the batch completes.
        relay.restore()
        again = asyncio.run(conns.each(conns.names, ensure))
        assert all(not isinstance(r, Exception) for r in again.values()), again
        assert labelled(host1, app) == [f"{app}-r1-0"]
    finally:
        relay.stop()
        conns.close()


def test_unreachable_hosts_fail_fast_with_their_name(tmp_path: Path) -> None:
    conns = HostConnections(
        [
            HostSpec("gone", f"unix://{tmp_path}/nothing.sock", "127.0.0.1"),
            HostSpec("closed", "tcp://10.66.2.2:1", "10.66.2.2"),
        ],
        timeout=5,
    )
    try:
        for name in ("gone", "closed"):
            with pytest.raises(HostUnavailable, match=rf"^docker host {name}: daemon unreachable"):
                asyncio.run(conns.ping(name))
    finally:
        conns.close()


# --- idempotency and restart -----------------------------------------------------------------


def test_ensure_is_idempotent_and_a_restarted_operator_finds_containers_by_label(
    docker_hosts_by_name: dict[str, DockerHost], docker_hosts: list[DockerHost], app: str
) -> None:
    release = f"{app}/2"
    hosts = ("host2", "host3")  # tcp+TLS and ssh: the transports with most to go wrong

    async def ensure_all(conns: HostConnections, count: int) -> dict[str, list[str]]:
        out = await conns.each(
            hosts,
            lambda h: ensure_instances(
                conns, h, app, release, "demo:v2", count, {}, NO_LIMITS, 8080
            ),
        )
        return {h: sorted(i.id for i in r) for h, r in out.items() if isinstance(r, list)}

    first = HostConnections([host_spec(h) for h in docker_hosts])
    try:
        ids = asyncio.run(ensure_all(first, 2))
        assert asyncio.run(ensure_all(first, 2)) == ids
    finally:
        first.close()

    # The operator restarts: nothing in memory, everything from labels.
    second = HostConnections([host_spec(h) for h in docker_hosts])
    try:
        listed = asyncio.run(list_instances(second, "host3", app))
        assert sorted(i.id for i in listed) == ids["host3"]
        assert {i.release for i in listed} == {release}
        assert asyncio.run(ensure_all(second, 2)) == ids

        # A container stopped behind our back is started again, not duplicated.
        client = local_client(docker_hosts_by_name["host2"])
        try:
            client.containers.get(f"{app}-r2-1").stop(timeout=5)
        finally:
            client.close()
        assert asyncio.run(ensure_all(second, 2)) == ids

        async def observed() -> Listing:
            async with httpx.AsyncClient() as http:
                listed_now = await list_instances(second, "host2", app)
                await until_healthy(second, http, listed_now, "/health")
                return await listing(second, ("host1", "host2", "host3"), app, http)

        seen = asyncio.run(observed())
        canary, stable = seen.instance_set(release, 2), seen.instance_set("none/1", 2)
        assert canary.units == hosts and canary.ready == hosts, canary
        assert canary.image == "demo:v2"
        assert len(seen.servers(release)) == 4
        assert stable.units == () and seen.servers("none/1") == ()

        # Scaling down removes the highest index only.
        smaller = asyncio.run(ensure_all(second, 1))
        assert all(len(v) == 1 for v in smaller.values())
    finally:
        second.close()
    for name in hosts:
        assert labelled(docker_hosts_by_name[name], app) == [f"{app}-r2-0"]
    assert labelled(docker_hosts_by_name["host1"], app) == []


# --- capacity --------------------------------------------------------------------------------


def test_capacity_shortfall_names_host_and_resource(
    conns: HostConnections, app: str, docker_hosts_by_name: dict[str, DockerHost]
) -> None:
    docker = local_client(docker_hosts_by_name["host1"])

    def others() -> set[str]:
        return {c.id for c in docker.containers.list() if not c.name.startswith(app)}

    async def scenario() -> None:
        # Other tests start and remove containers on host1 meanwhile: the two counts are
        # compared only when the same other containers ran at both.
        for _ in range(10):
            around = others()
            before = await host_capacity(conns, "host1")
            await ensure_instances(
                conns, "host1", app, f"{app}/1", "demo:v1", 1, {}, Resources.parse("1", "1Gi"), 8080
            )
            after = await host_capacity(conns, "host1")
            if others() == around:
                break
            await remove_instances(conns, "host1", app, f"{app}/1")
        else:
            pytest.fail("host1's other containers changed during each of 10 measurements")
        docker.close()
        assert before.total.nano_cpus >= 1_000_000_000 and before.total.memory > 2**28
        assert after.reserved.nano_cpus - before.reserved.nano_cpus >= 1_000_000_000
        assert after.reserved.memory - before.reserved.memory >= 2**30

        ncpu = before.total.nano_cpus // 1_000_000_000
        per = Resources.parse(str(ncpu), "1Gi")  # one instance fits a host, two never do
        extra = extra_instances("BlueGreen", conns.names, 2)
        found = await check_capacity(conns, extra, per)
        assert {(s.host, s.resource) for s in found} >= {
            ("host1", "cpu"),
            ("host2", "cpu"),
            ("host3", "cpu"),
        }
        messages = [str(s) for s in found]
        assert any(m.startswith("host host2: not enough CPU") for m in messages), messages

        huge = Resources.parse("0.1", f"{after.total.memory // 2**30 + 1}Gi")
        canary = extra_instances("Canary", conns.names, 1, canary_units=conns.names[:1])
        found = await check_capacity(conns, canary, huge)
        # Only host1 gets a canary. Its CPU may be short too: this test's own instance holds
        # a core of host1, and other tests' instances may hold the rest at that moment.
        assert {s.host for s in found} == {"host1"}, found
        memory = [s for s in found if s.resource == "memory"]
        assert len(memory) == 1 and "not enough memory" in str(memory[0]), found

        assert await check_capacity(conns, extra, Resources.parse("0.01", "8Mi")) == []

    asyncio.run(scenario())


def test_a_container_removed_between_listing_and_inspection_does_not_fail_the_check(
    conns: HostConnections, app: str, docker_hosts_by_name: dict[str, DockerHost]
) -> None:
    """Other applications' containers come and go on a shared host. One removed between the
    capacity check's listing and its inspection reserves nothing and fails nothing (the
    check raised "No such container", and a good rollout was refused and rolled back while
    a neighbour removed its own containers)."""
    asyncio.run(
        ensure_instances(
            conns, "host1", app, f"{app}/1", "demo:v1", 1, {}, Resources.parse("1", "1Gi"), 8080
        )
    )
    client = local_client(docker_hosts_by_name["host1"])
    listed = client.api.containers

    def listed_then_removed(**query: Any) -> Any:
        found = listed(**query)
        assert any(c["Labels"].get(LABEL_APP) == app for c in found), "ours was listed"
        for container in listed(filters={"label": f"{LABEL_APP}={app}"}):
            client.api.remove_container(container["Id"], force=True)  # its owner, meanwhile
        return found

    try:
        client.api.containers = listed_then_removed
        capacity = _capacity_sync(client, "host1")
    finally:
        client.close()
    assert capacity.total.nano_cpus >= 1_000_000_000
    assert labelled(docker_hosts_by_name["host1"], app) == []


# --- the file router with Traefik ------------------------------------------------------------


async def until_live(router: TraefikFileRouter, weights: tuple[int, int]) -> None:
    """Until Traefik's API serves the declared weights and servers, waited for while what it
    serves of the route still changes (Traefik takes the file up)."""
    api_url = router.api_url
    assert api_url

    async def live() -> bool:
        return await router.live_weights() == weights

    async def serving() -> tuple[Any, Any]:
        split = await service_answer(router.http, api_url, router.app, "file")
        return split, await router.live_servers()

    await wait_for_async(f"{weights} live in Traefik", live, serving, every=0.02)


def _versions(traefik: Traefik, app: str, n: int) -> Counter[str]:
    with httpx.Client(timeout=5) as http:
        answers = [http.get(traefik.web_url, headers={"Host": f"{app}.test"}) for _ in range(n)]
    return Counter(a.headers.get("X-Version", f"status-{a.status_code}") for a in answers)


def test_file_router_splits_real_traffic_and_confirms_through_traefiks_api(
    conns: HostConnections, app: str, traefik: Traefik
) -> None:
    path = traefik.dynamic_dir / f"{app}.yaml"

    async def scenario() -> None:
        made = await ensure_instances(
            conns, "host1", app, f"{app}-a/1", "demo:v1", 2, {}, NO_LIMITS, 8080, role="stable"
        )
        made += await ensure_instances(
            conns, "host3", app, f"{app}-b/1", "demo:v2", 2, {}, NO_LIMITS, 8080
        )
        async with httpx.AsyncClient() as http:
            stable_release, canary_release = f"{app}-a/1", f"{app}-b/1"

            async def ready() -> Listing | None:
                seen = await listing(conns, conns.names, app, http)
                stable = seen.instance_set(stable_release, 2)
                canary = seen.instance_set(canary_release, 2)
                return seen if stable.ready == ("host1",) and canary.ready == ("host3",) else None

            # Waited for while the containers still start (their states and CPU time).
            seen = await wait_for_async(
                "stable ready on host1 and the canary on host3",
                ready,
                lambda: containers_progress(conns, made),
                every=0.2,
            )
            router = TraefikFileRouter(
                app,
                LocalStore(str(path)),
                api_url=traefik.api_url,
                http=http,
                route=RouteConfig(f"Host(`{app}.test`)", ("web",)),
            )
            assert await router.live_weights() is None  # nothing declared yet
            servers = {
                "stable": seen.servers(stable_release),
                "canary": seen.servers(canary_release),
            }
            await router.apply((100, 0), servers)
            for weights in ((100, 0), (50, 50), (0, 100)):
                await router.apply(weights, servers)
                await until_live(router, weights)  # how fast: bench/, not a test's business
                live = await http.get(f"{traefik.api_url}/api/http/services/{app}@file")
                names = [s["name"] for s in live.json()["weighted"]["services"]]
                assert names == [
                    f"{app}-{role}"
                    for role, w in zip(("stable", "canary"), weights, strict=True)
                    if w
                ], names
                counts = await asyncio.to_thread(_versions, traefik, app, 40)
                if weights == (100, 0):
                    assert counts == {"v1": 40}
                elif weights == (0, 100):
                    assert counts == {"v2": 40}
                else:
                    assert set(counts) == {"v1", "v2"} and abs(counts["v2"] - 20) <= 4, counts
                live_servers = await router.live_servers()
                assert live_servers is not None
                assert {r: len(s) for r, s in live_servers.items()} == {"stable": 2, "canary": 2}
            declared = parse(app, path.read_text())
            assert declared is not None and declared.weights == (0, 100)
            # The Traefik observer finds the file's router and services under these names
            # (a waiting Docker rollout names them, and is woken when one changes).
            raw = (await http.get(f"{traefik.api_url}/api/rawdata")).json()
            entries = set(raw["routers"]) | set(raw["services"])
            named = set(traefik_names(app))
            assert {f"{app}@file", f"{app}-stable@file", f"{app}-canary@file"} <= entries & named
            await router.remove_route()

    try:
        asyncio.run(scenario())
    finally:
        path.unlink(missing_ok=True)


def watched_strays(traefik: Traefik, app: str) -> set[str]:
    """Files of `app` other than its route file in the directory Traefik watches."""
    with os.scandir(traefik.dynamic_dir) as entries:
        return {
            e.name for e in entries if app in e.name and e.name != f"{app}.yaml" and e.is_file()
        }


def test_rewrites_are_atomic_while_traefik_and_a_reader_read(
    conns: HostConnections, app: str, traefik: Traefik
) -> None:
    """Many rewrites of the file while a reader parses it in a loop and requests flow through
    Traefik: every read is a whole config, every request is answered, no temp file stays,
    and none ever appears in the directory Traefik watches (each of its events there has
    Traefik read the directory and spend its 2 s throttle, maybe on the old file)."""
    path = traefik.dynamic_dir / f"{app}.yaml"
    stop = threading.Event()
    reads: list[bool] = []
    strays: set[str] = set()
    failures: list[str] = []
    answered = Counter[int]()

    def reader() -> None:
        while not stop.is_set():
            strays.update(watched_strays(traefik, app))
            try:
                text = path.read_text()
            except FileNotFoundError:
                continue
            reads.append(parse(app, text) is not None)

    def load() -> None:
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                try:
                    status = http.get(traefik.web_url, headers={"Host": f"{app}.test"}).status_code
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                answered[status] += 1

    async def scenario() -> None:
        made = await ensure_instances(
            conns, "host2", app, f"{app}/1", "demo:v1", 2, {}, NO_LIMITS, 8080
        )
        async with httpx.AsyncClient() as http:
            await until_healthy(conns, http, made, "/health")
            router = TraefikFileRouter(
                app,
                LocalStore(str(path)),
                api_url=traefik.api_url,
                http=http,
                route=RouteConfig(f"Host(`{app}.test`)", ("web",)),
            )
            urls = [i.url for i in made if i.url]
            await router.apply((100, 0), {"stable": urls, "canary": urls})
            await until_live(router, (100, 0))
            threads = [threading.Thread(target=reader), threading.Thread(target=load)]
            for t in threads:
                t.start()
            try:
                for n in range(150):
                    weights = (100 - n % 100, n % 100)
                    # Both sides hold the same healthy servers: every split answers 200.
                    await router.apply(weights, {"stable": urls, "canary": urls})
                    await asyncio.sleep(0.005)
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            await until_live(router, (51, 49))

    try:
        asyncio.run(scenario())
    finally:
        path.unlink(missing_ok=True)
    assert reads and all(reads), f"{reads.count(False)} partial reads of {len(reads)}"
    assert not failures, failures[:3]
    assert set(answered) == {200}, answered
    assert sum(answered.values()) > 50
    assert strays == set(), "temp files in the directory Traefik watches"
    leftovers = [p.name for p in traefik.dynamic_dir.iterdir() if app in p.name]
    assert leftovers == [], leftovers


def test_sftp_store_writes_config_traefik_serves(
    docker_hosts_by_name: dict[str, DockerHost], conns: HostConnections, app: str, traefik: Traefik
) -> None:
    """host3's sshd shares this machine's filesystem (only its network is its own), so a file
    written over SFTP to Traefik's directory is one Traefik loads."""
    path = traefik.dynamic_dir / f"{app}.yaml"
    store = SftpStore(host_spec(docker_hosts_by_name["host3"]), str(path))

    async def scenario() -> None:
        made = await ensure_instances(
            conns, "host3", app, f"{app}/1", "demo:v3", 1, {}, NO_LIMITS, 8080
        )
        async with httpx.AsyncClient() as http:
            await until_healthy(conns, http, made, "/health")
            router = TraefikFileRouter(
                app,
                store,
                api_url=traefik.api_url,
                http=http,
                route=RouteConfig(f"Host(`{app}.test`)", ("web",)),
            )
            await router.apply((100, 0), {"stable": [u for i in made if (u := i.url)]})
            await until_live(router, (100, 0))
            # host3's sshd has no sftp subsystem (hack/dockerhosts): the exec fallback writes.
            assert store.mode in ("exec", "sftp")
            assert os.stat(path).st_mode & 0o777 == 0o644
            counts = await asyncio.to_thread(_versions, traefik, app, 10)
            assert counts == {"v3": 10}
            await router.remove_route()
            assert not path.exists()

    try:
        asyncio.run(scenario())
    finally:
        store.close()
        path.unlink(missing_ok=True)


# --- SFTP proper, on an sshd of this test's own ----------------------------------------------


@pytest.fixture
def sftp_sshd(tmp_path: Path) -> Iterator[HostSpec]:
    """An sshd on a free loopback port with the sftp subsystem (host3's has none), its own
    host and client keys, and known_hosts pinning `[127.0.0.1]:<port>`."""
    d = tmp_path / "sshd"
    d.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True
        )
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (d / "sshd_config").write_text(
        f"ListenAddress 127.0.0.1:{port}\n"
        f"HostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\n"
        "PermitRootLogin prohibit-password\nAllowUsers root\nPubkeyAuthentication yes\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
        "StrictModes no\nSubsystem sftp internal-sftp\n"
    )
    log = (d / "sshd.log").open("wb")
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")], stdout=log, stderr=log
    )
    try:

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        # Waited for while sshd still works towards it; its log at once if it exited.
        wait_for("sshd to listen", listening, process_progress(proc, d / "sshd.log"), every=0.05)
        host_key = (d / "host_key.pub").read_text().split()[:2]
        yield HostSpec(
            "edge",
            f"ssh://root@127.0.0.1:{port}",
            "127.0.0.1",
            ssh_key=(d / "client_key").read_text(),
            known_hosts=f"[127.0.0.1]:{port} {' '.join(host_key)}\n",
        )
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_sftp_writes_atomically_to_a_file_traefik_serves(
    sftp_sshd: HostSpec, conns: HostConnections, app: str, traefik: Traefik
) -> None:
    path = traefik.dynamic_dir / f"{app}.yaml"
    store = SftpStore(sftp_sshd, str(path))
    reads: list[bool] = []
    stop = threading.Event()

    strays: set[str] = set()

    def reader() -> None:
        while not stop.is_set():
            strays.update(watched_strays(traefik, app))
            with contextlib.suppress(FileNotFoundError):
                reads.append(parse(app, path.read_text()) is not None)

    async def scenario() -> None:
        made = await ensure_instances(
            conns, "host1", app, f"{app}/1", "demo:v3", 1, {}, NO_LIMITS, 8080
        )
        async with httpx.AsyncClient() as http:
            await until_healthy(conns, http, made, "/health")
            urls = [u for i in made if (u := i.url)]
            router = TraefikFileRouter(
                app,
                store,
                api_url=traefik.api_url,
                http=http,
                route=RouteConfig(f"Host(`{app}.test`)", ("web",)),
            )
            await router.apply((100, 0), {"stable": urls})
            await until_live(router, (100, 0))
            assert store.mode == "sftp"
            assert await asyncio.to_thread(_versions, traefik, app, 10) == {"v3": 10}
            thread = threading.Thread(target=reader)
            thread.start()
            try:
                for n in range(60):
                    await router.apply((100 - n, n), {"stable": urls, "canary": urls})
            finally:
                stop.set()
                thread.join()
            await until_live(router, (41, 59))
            assert stat.S_IMODE(path.stat().st_mode) == 0o644

    try:
        asyncio.run(scenario())
    finally:
        store.close()
        path.unlink(missing_ok=True)
    assert reads and all(reads), f"{reads.count(False)} partial reads of {len(reads)}"
    assert strays == set(), "temp files in the directory Traefik watches"
    assert [p.name for p in traefik.dynamic_dir.iterdir() if app in p.name] == []


def test_host_swap_under_load_loses_no_request(
    conns: HostConnections, app: str, traefik: Traefik
) -> None:
    """start new -> healthy -> in traffic (confirmed live) -> old removed, on every host at
    once, while requests flow through Traefik: every request answers 200."""
    path = traefik.dynamic_dir / f"{app}.yaml"
    counts: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=5) as http:
            while not stop.is_set():
                try:
                    answer = http.get(traefik.web_url, headers={"Host": f"{app}.test"})
                    counts[answer.headers.get("X-Version", str(answer.status_code))] += 1
                except httpx.HTTPError as exc:
                    counts[type(exc).__name__] += 1

    async def start(release: str, image: str) -> list[str]:
        made = await conns.each(
            conns.names,
            lambda h: ensure_instances(conns, h, app, release, image, 1, {}, NO_LIMITS, 8080),
        )
        instances = [i for r in made.values() if isinstance(r, list) for i in r]
        assert len(instances) == 3, made
        async with httpx.AsyncClient() as http:
            await until_healthy(conns, http, instances, "/health")
        return [u for i in instances if (u := i.url)]

    async def scenario() -> None:
        old = await start(f"{app}-a/1", "demo:v1")
        async with httpx.AsyncClient() as http:
            router = TraefikFileRouter(
                app,
                LocalStore(str(path)),
                api_url=traefik.api_url,
                http=http,
                route=RouteConfig(f"Host(`{app}.test`)", ("web",)),
            )
            await router.apply((100, 0), {"stable": old})
            await until_live(router, (100, 0))
            thread = threading.Thread(target=load)
            thread.start()
            try:
                await asyncio.sleep(0.3)
                new = await start(f"{app}-b/1", "demo:v2")
                await router.apply((100, 0), {"stable": new})
                await until_live(router, (100, 0))
                await conns.each(
                    conns.names, lambda h: remove_instances(conns, h, app, f"{app}-a/1")
                )
                await asyncio.sleep(0.5)
            finally:
                stop.set()
                thread.join()

    try:
        asyncio.run(scenario())
    finally:
        path.unlink(missing_ok=True)
    assert set(counts) == {"v1", "v2"}, counts
    assert counts["v2"] > 10, counts
