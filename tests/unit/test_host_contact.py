"""Who touches the Docker hosts, and when: a finished or failed rollout never (a refused one
included) until its spec changes or an action asks; the Application's status refresh backs
off a host whose reads fail. The real Docker fleet and the real handlers run over
`FakeDockerHosts`, which counts every login and every call per host.
"""

from __future__ import annotations

import asyncio
import copy
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
from lockgate.hosts.backoff import HostBackoff
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
    now: float = 0.0  # the back-off's clock
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

    def drive(self, name: str = "dep") -> float | handlers.Poll:
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

    def tick(self, at: float) -> dict[str, Any]:
        """The Application's 5 s timer at `at` seconds; the status it wrote (none: {})."""
        self.now = at
        patch = kopf.Patch()
        body = copy.deepcopy(self.kube.application(APP))
        memo = kopf.Memo(runtime=self.rt)
        asyncio.run(
            handlers.application_tick(
                body=kopf.Body(body), patch=patch, memo=memo, **self.kube.handler_kwargs(body)
            )
        )
        written = dict(patch.status)
        if written:
            asyncio.run(self.kube.patch_application_status(NS, APP, {"status": written}))
        return written

    def message(self) -> str:
        message: str = self.kube.application(APP)["status"]["message"]
        return message


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Env]:
    kube = FakeKube()
    http = httpx.AsyncClient(transport=httpx.MockTransport(lambda _: httpx.Response(200)))
    rt = Runtime(cast(Kube, kube), http, Settings())
    hosts = FakeDockerHosts()
    e = Env(kube, rt, hosts, tmp_path)
    state = rt.fleets[(NS, APP)] = FleetState(hosts)
    state.backoff = HostBackoff(clock=lambda: e.now)

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


# --- the Application's status refresh ----------------------------------------------------------


def test_the_status_refresh_backs_off_a_host_that_refuses_and_says_when_it_tries_again(
    env: Env,
) -> None:
    env.application()
    env.hosts.refuse("h3", REFUSED)
    tried, written = [], []
    for at in range(0, 80, 5):
        logins = env.hosts.logins["h3"]
        if env.tick(at):
            written.append(at)
        if env.hosts.logins["h3"] > logins:
            tried.append(at)
        if at == 35:
            assert env.message() == (
                f"2/3 instances ready (host h3: {REFUSED}; next attempt in 40 s)"
            )
    assert tried == [0, 5, 15, 35, 75]  # 5 s, then doubling
    assert env.hosts.calls["h1"] == env.hosts.calls["h2"] == 16  # the others every tick
    assert written == tried, "the status is written only when a new attempt says more"
    conditions = env.kube.application(APP)["status"]["conditions"]
    assert {c["type"]: c["status"] for c in conditions}["Degraded"] == "True"
    assert all(REFUSED in c["message"] for c in conditions)


def test_the_back_off_is_capped_and_then_rewrites_nothing(env: Env) -> None:
    env.application()
    env.hosts.refuse("h3", REFUSED)
    tried, written = [], []
    for at in range(0, 1000, 5):
        logins = env.hosts.logins["h3"]
        if env.tick(at):
            written.append(at)
        if env.hosts.logins["h3"] > logins:
            tried.append(at)
    assert tried == [0, 5, 15, 35, 75, 155, 315, 615, 915]  # 300 s apart at the cap
    assert env.message().endswith("next attempt in 300 s)")
    assert written == tried[:-2], "at the cap each attempt says the same"


def test_a_success_resets_the_back_off(env: Env) -> None:
    env.application()
    env.hosts.refuse("h3", REFUSED)
    for at in (0, 5):
        env.tick(at)  # failed twice: next attempt at 15
    env.hosts.refusing.clear()  # the host takes the key again
    logins = env.hosts.logins["h3"]
    assert env.tick(10) == {}
    assert env.hosts.logins["h3"] == logins, "still backing off"
    env.tick(15)
    assert env.message() == "3/3 instances of app:1 ready"
    assert env.kube.application(APP)["status"]["phase"] == "Healthy"
    calls = env.hosts.calls["h3"]
    env.tick(20)
    env.tick(25)
    assert env.hosts.calls["h3"] == calls + 2, "read every tick again"
    env.hosts.refuse("h3", REFUSED)
    env.tick(30)
    assert env.message().endswith("next attempt in 5 s)"), "the back-off starts over"


def test_new_credentials_are_tried_at_once(env: Env) -> None:
    env.application()
    env.hosts.refuse("h3", REFUSED)
    for at in (0, 5):
        env.tick(at)  # next attempt at 15
    env.kube.secrets["ssh"] = {"id": "NEW KEY", "known_hosts": "KNOWN"}
    logins = env.hosts.logins["h3"]
    env.tick(10)
    assert env.hosts.logins["h3"] == logins + 1
    assert env.message().endswith("next attempt in 5 s)"), "a new key starts a new count"


def test_the_back_off_doubles_to_its_cap_and_forgets_hosts_no_longer_configured() -> None:
    clock = [0.0]
    backoff = HostBackoff(clock=lambda: clock[0])
    spec = HostSpec("h3", "ssh://deploy@10.0.0.3", "10.0.0.3")
    said = [backoff.failed("h3", spec, "refused") for _ in range(2000)]  # never overflows
    assert said[:3] == [f"refused; next attempt in {n} s" for n in (5, 10, 20)]
    assert said[-1] == "refused; next attempt in 300 s"
    assert backoff.waiting("h3", spec) == said[-1]
    assert backoff.waiting("h3", HostSpec("h3", "ssh://deploy@10.0.0.4", "10.0.0.4")) is None
    clock[0] = 300.0
    assert backoff.waiting("h3", spec) is None, "due"
    backoff.keep_only(["h1", "h2"])
    assert backoff.failures("h3") == 0
