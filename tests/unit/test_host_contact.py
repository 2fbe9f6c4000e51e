"""Who touches the Docker hosts, and when: a finished or failed rollout never (a refused one
included) until its spec changes or an action asks. The real Docker fleet and the real
handlers run over `FakeDockerHosts`, which counts every login and every call per host.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import kopf
import pytest

from lockgate.controller import handlers
from lockgate.controller.fleets.docker import FleetState
from lockgate.controller.runtime import Runtime, Settings
from lockgate.hosts.errors import HostUnavailable
from lockgate.hosts.spec import HostSpec
from lockgate.kube import Kube
from lockgate.names import ACTION_ANNOTATION
from lockgate.traffic import traefik_file
from tests.support.fakeworld import dep_spec
from tests.unit.controller_fakes import NS, FakeDockerHosts, FakeKube, stable_container

APP = "shop"
HOSTS = ("h1", "h2", "h3")
REFUSED = "SSH authentication failed: Authentication failed."
RECREATE = {"type": "Recreate"}
log = logging.getLogger("tests.host_contact")


@dataclass
class Env:
    kube: FakeKube
    rt: Runtime
    hosts: FakeDockerHosts
    tmp: Path
    events: list[tuple[str, str, str]] = field(default_factory=list)

    def application(self, route: str = "local") -> None:
        """Application `shop` on h1..h3 over ssh://, app:1 stable and healthy on each; its
        route file is local or on a host (over SFTP)."""
        hosts = [
            {
                "name": h,
                "url": f"ssh://deploy@10.0.0.{i}",
                "address": f"10.0.0.{i}",
                "sshKeySecretRef": {"name": "ssh", "key": "id"},
                "knownHostsSecretRef": {"name": "ssh", "key": "known_hosts"},
            }
            for i, h in enumerate(HOSTS, 1)
        ]
        spec = {
            "docker": {"hosts": hosts},
            "traffic": {
                "traefik": {"fileProvider": {"host": route, "path": str(self.tmp / "shop.yml")}}
            },
        }
        self.kube.secrets["ssh"] = {"id": "KEY", "known_hosts": "KNOWN"}
        self.kube.add_application(APP, spec, stable={"image": "app:1", "release": "old/1"})
        for i, h in enumerate(HOSTS, 1):
            self.hosts.containers[h] = [stable_container(APP, h, "old/1", "app:1", 32000 + i)]

    def drive(self, name: str = "dep") -> float | None:
        """One wake-up of the Deployment's driver (its daemon's loop body)."""
        return asyncio.run(handlers._drive_once(self.rt, NS, name, self.kube.index(), log))

    def status(self, name: str = "dep") -> dict[str, Any]:
        return dict(self.kube.deployment(name).get("status") or {})

    def drive_until(self, done: Callable[[dict[str, Any]], bool], limit: int = 20) -> None:
        for _ in range(limit):
            self.drive()
            if done(self.status()):
                return
        raise AssertionError(f"not reached: {self.status().get('message')}")


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Env]:
    kube = FakeKube()
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    rt = Runtime(cast(Kube, kube), http, Settings())
    hosts = FakeDockerHosts()
    e = Env(kube, rt, hosts, tmp_path)
    rt.fleets[(NS, APP)] = FleetState(hosts)

    def event(_: Any, *, type: str, reason: str, message: str) -> None:
        e.events.append((type, reason, message))

    def sftp_login(spec: HostSpec, timeout: float) -> Any:
        """The route file's SSH connection: a login like the Docker one."""
        hosts.logins[spec.name] += 1
        raise HostUnavailable(spec.name, hosts.refusing.get(spec.name, "no SFTP in this fake"))

    monkeypatch.setattr(kopf, "event", event)
    monkeypatch.setattr(traefik_file, "ssh_connect", sftp_login)
    yield e
    asyncio.run(rt.aclose())


def refused(env: Env, route: str) -> None:
    """A Recreate of app:2 refused before start: h3 refuses lockgate's SSH key."""
    env.application(route)
    env.hosts.refuse("h3", REFUSED)
    env.kube.add_deployment("dep", dep_spec(strategy=RECREATE))
    env.drive_until(lambda s: s.get("phase") == "Failed")
    assert env.status()["message"] == f"refused before start: host h3: {REFUSED}"
    assert env.hosts.logins["h3"] >= 1
    assert not env.kube.application(APP)["status"].get("activeDeployment")


def quiet(env: Env, rounds: int = 50) -> None:
    """Many wake-ups of the driver (a watch event or its 30 s timeout each) touch no host."""
    before = (dict(env.hosts.logins), dict(env.hosts.calls))
    waits = {env.drive() for _ in range(rounds)}
    assert (dict(env.hosts.logins), dict(env.hosts.calls)) == before
    assert waits == {handlers.FINISHED_WAIT}, "it sleeps until something changes"


# --- a finished or failed rollout --------------------------------------------------------------


@pytest.mark.parametrize("route", ["local", "h3"], ids=["route-local", "route-on-h3-over-sftp"])
def test_a_refused_docker_rollout_touches_no_host_while_it_is_failed(env: Env, route: str) -> None:
    refused(env, route)
    status = env.status()
    quiet(env)
    assert env.status() == status, "nor is its status rewritten"


def test_a_retry_drives_a_refused_rollout_again_then_it_is_quiet_again(env: Env) -> None:
    refused(env, "local")
    logins = env.hosts.logins["h3"]
    env.kube.deployment("dep")["metadata"]["annotations"] = {ACTION_ANNOTATION: "retry"}
    env.drive_until(lambda s: s.get("attempt") == 1 and s.get("phase") == "Failed")
    assert env.status()["message"] == f"refused before start: host h3: {REFUSED}"
    assert env.hosts.logins["h3"] > logins, "the retry tried the host again"
    assert ACTION_ANNOTATION not in env.kube.deployment("dep")["metadata"]["annotations"]
    quiet(env)


def test_a_spec_change_drives_a_refused_rollout_again_then_it_is_quiet_again(env: Env) -> None:
    refused(env, "local")
    logins = env.hosts.logins["h3"]
    dep = env.kube.deployment("dep")
    dep["spec"]["image"] = "app:3"
    dep["metadata"]["generation"] = 2
    env.drive_until(lambda s: s.get("revision") == 2 and s.get("phase") == "Failed")
    assert env.status()["message"] == f"refused before start: host h3: {REFUSED}"
    assert env.hosts.logins["h3"] > logins
    quiet(env)
