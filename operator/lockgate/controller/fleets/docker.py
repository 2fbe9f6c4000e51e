"""An Application on Docker hosts, as one reconcile of a Deployment drives it.

The record of what runs is the hosts themselves (containers labelled with their release) plus
one field of the Application's status, `stable.release`, moved by promotion. The traffic
record is the file-provider configuration. Each observation brings the configuration's server
lists in line with the healthy containers of the stable release and of the rolling-out release
(the part Kubernetes' EndpointSlices play for the Kubernetes target), and never gives weight
to a side without servers; actions change containers and, before a container leaves, take it
out of Traefik and wait for Traefik to confirm.

Host failures never raise out of a round: a host that cannot be listed, or whose last action
failed, is reported to the engine in `Observation.unit_errors`, which fails the step naming
the host and leaves the other hosts serving.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from kubernetes.client.exceptions import ApiException

from lockgate.api import ApplicationSpec, DeploymentSpec
from lockgate.engine import NO_ROUTES, InstanceSet, RoutedUnits, Routes
from lockgate.engine.model import Role
from lockgate.engine.plan import first_canary_units
from lockgate.hosts.backoff import HostBackoff
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import DockerTargetError
from lockgate.hosts.spec import host_spec_from_api
from lockgate.names import service_name
from lockgate.probes.health import check_health
from lockgate.targets.docker.capacity import check_capacity, extra_instances
from lockgate.targets.docker.containers import (
    STARTED_STATES,
    Instance,
    ensure_instances,
    instance_set,
    list_instances,
    remove_instances,
    split_release,
    stop_instances,
)
from lockgate.targets.docker.events import ContainerWatch
from lockgate.targets.docker.resources import Resources
from lockgate.traffic.traefik_file import (
    ConfigStore,
    TraefikFileRouter,
    store_for,
    traefik_names,
)
from lockgate.traffic.traefik_observer import TraefikWatch

from ..runtime import Runtime
from .base import Census, FleetUnusable, FleetView, record_stable

log = logging.getLogger("lockgate.docker")

LIVE_STATES = ("running", "restarting", "created", "paused")
CONFIRM_SECONDS = 5.0  # how long to wait for Traefik to drop a server before stopping it
STOP_GRACE = 10
# While a rollout moves, how soon a round looks again when nothing wakes it:
POLL = 0.25  # a host fails, or its event stream is broken: nothing else tells
EVENTS_FALLBACK = 2.0  # the hosts' events wake the round; this only catches a missed one
# Traefik has yet to load the route file: its shared observer wakes the round, or this
# (an unchanged file changes nothing there: no look would). Above the drivers' longest poll
# back-off (2 s, handlers.IDLE_MAX), so the round is handed to the observer.
TRAEFIK_FALLBACK = 2.5


@dataclass
class FleetState:
    """What outlives one reconcile: connections, the config store, per-release action errors
    (a failed pull is not visible in a listing, so it is remembered here), and the back-off
    of the status refresh's reads of each host."""

    conns: HostConnections
    store_key: Any = None
    store: ConfigStore | None = None
    errors: dict[str, dict[str, str]] = field(default_factory=dict)  # release -> host -> why
    backoff: HostBackoff = field(default_factory=HostBackoff)
    # release -> the watch of the containers its rollout waits for (one per rollout: a
    # queued Deployment's rounds never end the active one's watch)
    watches: dict[str, ContainerWatch] = field(default_factory=dict)
    # Servers a write took out of the route -> when Traefik was first seen without them
    # (None: not yet). Their containers stop a drain period after that, not after a second
    # write of the route.
    left_route: dict[str, float | None] = field(default_factory=dict)
    # Old containers of a Rolling batch out of the route, waiting out their drain period
    # before they stop while the rollout goes on: container id -> (host, its stop).
    draining: dict[str, tuple[str, asyncio.Task[None]]] = field(default_factory=dict)

    def watch(self, release: str) -> ContainerWatch:
        watch = self.watches.get(release)
        if watch is None:
            # Those of rollouts gone meanwhile (deleted, superseded) go: idle, not broken.
            for other in [r for r, w in self.watches.items() if w.idle]:
                del self.watches[other]
            watch = self.watches[release] = ContainerWatch(self.conns)
        return watch

    async def aclose(self) -> None:
        for _, task in self.draining.values():
            task.cancel()  # left running: the next operator's rollout stops it
        self.draining.clear()
        for watch in self.watches.values():
            await watch.aclose()
        self.watches.clear()
        await self.conns.aclose()
        await self.close_store()

    async def close_store(self) -> None:
        close = getattr(self.store, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


def guard_weights(weights: tuple[int, int], servers: dict[str, tuple[str, ...]]) -> tuple[int, int]:
    """No weight to a side without servers (it would answer 503), if the other has some."""
    stable, canary = weights
    if canary and not servers["canary"] and servers["stable"]:
        return (100, 0)
    if stable and not servers["stable"] and servers["canary"]:
        return (0, 100)
    return weights


class DockerFleet:
    """One Application's containers on its Docker hosts, and its file-provider route."""

    # The hosts' Docker events wake the driver when a container it waits for changes (see
    # `_follow`); only Traefik loading the route is polled. Set by each observation.
    poll_while_moving: float | None = POLL
    # No watch of Traefik: a waiting rollout keeps looking (backing off), and the Application's
    # status is recounted every few seconds (which also keeps its route on healthy hosts).
    settling = True
    # While Traefik has yet to load the route file: what of its API to watch (set by each
    # observation; the observer's change wakes the round).
    traefik_watch: TraefikWatch | None = None
    status_poll: float | None = 5.0
    # Docker hosts have no owner references: deleting the Application must wait for lockgate.
    removes_on_deletion = True

    def __init__(
        self, rt: Runtime, app_obj: dict[str, Any], app: ApplicationSpec, own_release: str | None
    ) -> None:
        docker = app.docker
        assert docker, "the factory makes a DockerFleet only for Applications on Docker hosts"
        self.rt = rt
        self.app_obj = app_obj
        self.app = app
        self.docker = docker
        meta = app_obj["metadata"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        stable = (app_obj.get("status") or {}).get("stable") or {}
        self.stable_release: str | None = stable.get("release")
        self.stable_image: str | None = stable.get("image")
        self.own_release = own_release if own_release != self.stable_release else None
        self.release = own_release  # the rollout's, also once promoted (own_release is None)
        self.hosts = app.units()
        self.env: dict[str, str] = {}
        self.state: FleetState | None = None
        self._prepared = False
        self._listed: tuple[list[Instance], dict[str, str]] | None = None
        self.router: TraefikFileRouter | None = None
        self.routed: RoutedUnits | None = None  # this round's, from `observe`

    # ------------------------------------------------------------------ set-up

    async def _prepare(self) -> None:
        """Resolve Secrets, update the host connections and the config store, once per
        fleet. Raises FleetUnusable naming the field when a Secret or key is missing."""
        if self._prepared:
            return
        secrets: dict[str, dict[str, str]] = {}

        async def read(name: str, key: str, where: str) -> str:
            if name not in secrets:
                try:
                    data = await self.rt.kube.read_secret(self.namespace, name)
                except ApiException as err:
                    if err.status != 403:
                        raise
                    raise FleetUnusable(
                        f"{where}: the operator may not read Secret {name!r} (the Helm chart "
                        "grants it with rbac.readSecrets=true)"
                    ) from err
                if data is None:
                    raise FleetUnusable(f"{where}: Secret {name!r} not found")
                secrets[name] = data
            if key not in secrets[name]:
                raise FleetUnusable(f"{where}: Secret {name!r} has no key {key!r}")
            value = secrets[name][key]
            self.rt.redactor.add(value)
            return value

        values: dict[tuple[str, str], str] = {}
        for i, host in enumerate(self.docker.hosts):
            refs = [
                (host.ssh_key_secret_ref, "sshKeySecretRef"),
                (host.known_hosts_secret_ref, "knownHostsSecretRef"),
            ]
            for ref, field_name in refs:
                if ref is not None:
                    where = f"spec.docker.hosts[{i}].{field_name}"
                    values[(ref.name, ref.key)] = await read(ref.name, ref.key, where)
            if host.tls_secret_ref is not None:
                for key in ("ca.pem", "cert.pem", "key.pem"):
                    where = f"spec.docker.hosts[{i}].tlsSecretRef"
                    values[(host.tls_secret_ref.name, key)] = await read(
                        host.tls_secret_ref.name, key, where
                    )
        for i, var in enumerate(self.docker.container.env):
            if var.value_from is not None:
                ref = var.value_from.secret_key_ref
                where = f"spec.docker.container.env[{i}].valueFrom.secretKeyRef"
                self.env[var.name] = await read(ref.name, ref.key, where)
            else:
                self.env[var.name] = var.value or ""
        specs = [
            host_spec_from_api(h, lambda name, key: values[(name, key)]) for h in self.docker.hosts
        ]
        fleet_key = (self.namespace, self.name)
        state = self.rt.fleets.get(fleet_key)
        if state is None:
            state = self.rt.fleets[fleet_key] = FleetState(HostConnections(specs))
        else:
            state.conns.update(specs)
        self.state = state
        fp = self.app.traffic.traefik.file_provider
        if fp is None:
            raise FleetUnusable(
                "spec.traffic.traefik.fileProvider: required for Docker hosts (lockgate writes "
                "the application's routing there)"
            )
        store_key = (fp.host, fp.path, next((s for s in specs if s.name == fp.host), None))
        if state.store is None or state.store_key != store_key:
            await state.close_store()
            try:
                state.store = store_for(self.app, {s.name: s for s in specs})
            except ValueError as err:
                raise FleetUnusable(str(err)) from err
            state.store_key = store_key
        self.router = TraefikFileRouter.for_application(
            self.name,
            self.app,
            state.store,
            http=self.rt.http,
            api_url=self.rt.settings.traefik_api_url,
        )
        self._prepared = True

    @property
    def conns(self) -> HostConnections:
        assert self.state is not None
        return self.state.conns

    def _router(self) -> TraefikFileRouter:
        assert self.router is not None
        return self.router

    def metric_sources(self) -> dict[Role, str]:
        # The file provider's leaf services are `<app>-<role>` (the parser drops `@file`).
        return {role: service_name(self.name, role) for role in ("stable", "canary")}

    # ------------------------------------------------------------------ observe

    async def _listing(
        self, hosts: tuple[str, ...] | None = None
    ) -> tuple[list[Instance], dict[str, str]]:
        """The application's containers on `hosts` (all by default), and per host why it
        could not be listed."""
        listed = await self.conns.each(
            self.hosts if hosts is None else hosts,
            lambda h: list_instances(self.conns, h, self.name),
        )
        instances: list[Instance] = []
        errors: dict[str, str] = {}
        assert self.state is not None
        for host, result in listed.items():
            if isinstance(result, DockerTargetError):
                errors[host] = result.reason
            else:
                # Draining ones have left: no step waits for them, none may act on them.
                instances += [i for i in result if i.id not in self.state.draining]
        return instances, errors

    def _declared_as_instances(
        self, host: str, servers: dict[str, tuple[str, ...]]
    ) -> list[Instance]:
        """For a host that cannot be listed: the servers the configuration gives it, as
        instances of their role's release (a direct health check still judges them)."""
        address = next(h.address for h in self.docker.hosts if h.name == host)
        out = []
        for role, release, image in (
            ("stable", self.stable_release, self.stable_image),
            ("canary", self.own_release, None),
        ):
            for index, url in enumerate(servers.get(role, ())):
                parsed = urlparse(url)
                if release and parsed.hostname == address and parsed.port:
                    out.append(
                        Instance(
                            host=host,
                            name=url,
                            id=url,
                            release=release,
                            role=role,
                            index=index,
                            image=image or "",
                            state="running",
                            address=address,
                            port=parsed.port,
                        )
                    )
        return out

    async def observe(self, routed: RoutedUnits | None = None) -> FleetView:
        """After staging the configuration's server lists in line with the healthy
        containers (on the `routed` hosts of each side only, when given; written by
        `flush`). Without its credentials or its route file no host can be used."""
        self.routed = routed
        try:
            await self._prepare()
            return await self._observe(routed)
        except DockerTargetError as err:
            raise FleetUnusable(f"host {err.host}: {err.reason}") from err

    async def _observe(self, routed: RoutedUnits | None) -> FleetView:
        router = self._router()
        instances, errors = self._listed = await self._listing()
        declared = await router.declared()
        declared_servers = dict(declared.servers) if declared else {}
        for host in errors:
            instances += self._declared_as_instances(host, declared_servers)
        serving = [
            i
            for i in instances
            if i.state in LIVE_STATES
            and i.release
            and i.release in (self.stable_release, self.own_release)
        ]
        healthy = await self._healthy(serving)
        hosts = {"stable": routed.stable, "canary": routed.canary} if routed else None
        servers = {
            role: tuple(
                sorted(
                    i.url
                    for i in serving
                    if i.release == release
                    and i.id in healthy
                    and i.url
                    and (hosts is None or i.host in hosts[role])
                )
            )
            for role, release in (("stable", self.stable_release), ("canary", self.own_release))
        }
        weights = guard_weights(declared.weights if declared else (100, 0), servers)
        config = await router.stage(weights, servers)
        live = await router.live_servers()
        self._note_out_of_route(live)
        # A step that routes by unit puts a unit's instances in the proxy together with its
        # split, and the split counts as live only once the proxy has them: passing their
        # check makes them ready for it (waiting for the proxy first took two reloads).
        in_proxy = live if routed is None else None
        stable = self._set(serving, healthy, in_proxy, self.stable_release, "stable")
        if stable.release and stable.image is None:
            stable = InstanceSet(stable.release, self.stable_image, stable.units, stable.ready)
        # A stopped container of this rollout counts as its unit, not started: a resumed
        # step starts it again, and a rollback removes it. An operator killed between stopping
        # a canary and removing it left one, which the finished rollback never saw.
        stopped = [
            i
            for i in instances
            if i.state not in LIVE_STATES
            and i.release == self.own_release
            and i.release != self.stable_release
        ]
        canary = self._set(serving + stopped, healthy, in_proxy, self.own_release, "canary")
        if not canary.units:
            leftovers = [
                i
                for i in instances
                if i.release and i.release not in (self.stable_release, self.own_release)
            ]
            if leftovers:
                canary = InstanceSet(
                    release=leftovers[0].release,
                    image=leftovers[0].image,
                    units=tuple(h for h in self.hosts if any(i.host == h for i in leftovers)),
                )
        errors.update(self._action_errors())
        live_weights = await router.live_weights_of(config, live)
        live_routes = await router.live_routes_of(config, live)
        traefik_pending = (
            live_weights is None
            or live_routes is None
            or (live is not None and any(live[r] != config.servers_of(r) for r in live))
        )
        waiting = [
            i
            for i in serving
            if i.id not in healthy and i.state in LIVE_STATES and i.host not in errors
        ]
        watched = self._follow(waiting)
        api_url = router.api_url
        self.traefik_watch = (
            TraefikWatch(api_url, traefik_names(self.name)) if traefik_pending and api_url else None
        )
        if errors or (waiting and not watched):
            self.poll_while_moving = POLL
        elif self.traefik_watch is not None:
            self.poll_while_moving = TRAEFIK_FALLBACK
        elif traefik_pending:
            self.poll_while_moving = POLL  # no Traefik API to watch
        else:
            self.poll_while_moving = EVENTS_FALLBACK
        return FleetView(stable, canary, live_weights, errors, live_routes=live_routes)

    def _follow(self, waiting: list[Instance]) -> bool:
        """Have the hosts' Docker events wake this rollout when a container it waits for
        (started, not yet passing its check) starts, dies or turns healthy. False when no
        watch runs for them (events broken, or not a rollout's round): the round polls."""
        assert self.state is not None
        if self.release is None:
            return False
        deployment, _ = split_release(self.release)
        watch = self.state.watch(self.release)
        check = self.app.health_check

        def wake() -> None:
            self.rt.wakeups.wake("deployments", self.namespace, deployment, "docker")

        async def probe(instance: Instance) -> bool:
            url = instance.running_url
            return await check_health(self.rt.http, url, check.http.path, check.timeout_seconds)

        following = watch.follow(waiting, wake, probe)
        if watch.idle:  # nothing to wait for (a broken stream is remembered for a while)
            del self.state.watches[self.release]
        return following

    async def resource_instances(self) -> dict[Role, tuple[str, ...]]:
        """`<host>/<container id>` of the running containers of each role's release, from
        this round's listing (hosts that could not be listed have none)."""
        assert self._listed is not None, "observe first"
        instances, errors = self._listed
        roles: tuple[tuple[Role, str | None], ...] = (
            ("stable", self.stable_release),
            ("canary", self.own_release),
        )
        return {
            role: tuple(
                f"{i.host}/{i.id}"
                for i in instances
                if release
                and i.release == release
                and i.state == "running"
                and i.host not in errors
            )
            for role, release in roles
        }

    async def _healthy(self, instances: list[Instance]) -> set[str]:
        """Ids of the instances that pass their health check now (checked in parallel)."""
        check = self.app.health_check
        results = await asyncio.gather(
            *(
                check_health(self.rt.http, i.running_url, check.http.path, check.timeout_seconds)
                for i in instances
            )
        )
        return {i.id for i, ok in zip(instances, results, strict=True) if ok}

    def _set(
        self,
        serving: list[Instance],
        healthy: set[str],
        live: dict[str, tuple[str, ...]] | None,
        release: str | None,
        role: str,
    ) -> InstanceSet:
        in_proxy = live[role] if live is not None else None
        per_host = self.docker.instances_per_host
        return instance_set(release, self.hosts, serving, healthy, per_host, in_proxy)

    def _action_errors(self) -> dict[str, str]:
        assert self.state is not None
        return dict(self.state.errors.get(self.own_release or "", {}))

    async def preflight(self, spec: DeploymentSpec, has_stable: bool) -> str | None:
        """Why the rollout must not start: a host that cannot be reached, or one without room
        for the instances the strategy adds (before anything is started). Uses the listing
        of this round's observation."""
        assert self._listed is not None, "observe first"
        instances, errors = self._listed
        if errors:
            host = sorted(errors)[0]
            return f"host {host}: {errors[host]}"
        existing = {
            h: sum(
                1
                for i in instances
                if i.host == h and i.state in LIVE_STATES and i.release == self.stable_release
            )
            for h in self.hosts
        }
        extra = extra_instances(
            spec.strategy.type if has_stable else "Recreate",
            self.hosts,
            self.docker.instances_per_host,
            canary_units=first_canary_units(self.app, self.hosts, spec),
            existing=existing,
        )
        try:
            short = await check_capacity(self.conns, extra, self._per_instance())
        except DockerTargetError as err:
            return f"host {err.host}: {err.reason}"
        if short:
            return "insufficient capacity: " + "; ".join(str(s) for s in short)
        return None

    # ------------------------------------------------------------------ act

    def _note_out_of_route(self, live: dict[str, tuple[str, ...]] | None) -> None:
        """When Traefik is first seen without the servers written out of the route."""
        assert self.state is not None
        if live is None:
            return
        now = asyncio.get_running_loop().time()
        serving = {url for urls in live.values() for url in urls}
        left = self.state.left_route
        for url, gone in list(left.items()):
            if gone is None and url not in serving:
                left[url] = now
            elif gone is not None and now - gone > self.docker.drain_seconds + CONFIRM_SECONDS:
                del left[url]  # drained long ago (or never stopped by lockgate)

    async def _take_out(self, role: str, urls: set[str]) -> float:
        """Remove servers from a role and wait until Traefik no longer routes to them; the
        seconds of their drain period left (requests already on their way finish). Servers
        an earlier write took out (a Rolling step's) have part of it behind them."""
        assert self.state is not None
        router = self._router()
        current = await router.current()
        left = self.state.left_route
        if current is not None and urls & set(current.servers_of(role)):
            servers = {r: tuple(current.servers_of(r)) for r in ("stable", "canary")}
            servers[role] = tuple(u for u in servers[role] if u not in urls)
            await router.apply(guard_weights(current.weights, servers), servers)
            for url in urls:
                left[url] = None
        elif not urls & left.keys():
            return 0.0  # never served, or drained long ago
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_SECONDS
        while loop.time() < deadline:
            live = await router.live_servers()
            self._note_out_of_route(live)
            if live is None or not urls & set(live.get(role, ())):
                break
            await asyncio.sleep(0.1)
        seen = [left.pop(url) for url in urls if url in left]
        gone = [at for at in seen if at is not None]
        since = max(gone) if gone and len(gone) == len(seen) else loop.time()
        return max(0.0, self.docker.drain_seconds - (loop.time() - since))

    def _stop_after(self, seconds: float, leaving: list[Instance], release: str) -> None:
        """Stop the containers once their drain period is over, without holding the round:
        a Rolling batch's next host starts meanwhile (as Swarm's start-first update goes on
        while the old task stops). Only a Rolling step's: Recreate must stop before it
        starts. A stop that fails is recorded as the host's error, and the container, seen
        again, is stopped by the next step."""
        state = self.state
        assert state is not None

        async def stop() -> None:
            try:
                await asyncio.sleep(seconds)
                await self._stop(leaving, release)
            except Exception:  # nobody awaits this task: say it, the next step retries
                log.exception("application %s: stopping drained %s failed", self.name, release)
            finally:
                for i in leaving:
                    state.draining.pop(i.id, None)

        task = asyncio.create_task(stop(), name=f"drain {self.name} {release}")
        for i in leaving:
            state.draining[i.id] = (i.host, task)

    async def _stop(self, leaving: list[Instance], release: str) -> None:
        hosts = sorted({i.host for i in leaving})
        self._record(
            self.own_release,
            await self.conns.each(
                hosts,
                lambda h: stop_instances(self.conns, h, self.name, release, grace=STOP_GRACE),
            ),
        )

    async def _drained(self, hosts: Iterable[str] | None = None) -> None:
        """Once the draining containers (on `hosts`) have stopped."""
        assert self.state is not None
        wanted = None if hosts is None else set(hosts)
        tasks = {t for h, t in self.state.draining.values() if wanted is None or h in wanted}
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _record(self, release: str | None, results: dict[str, Any]) -> None:
        assert self.state is not None
        errors = self.state.errors.setdefault(release or "", {})
        for host, result in results.items():
            if isinstance(result, DockerTargetError):
                errors[host] = result.reason
                log.warning("%s", result)
            else:
                errors.pop(host, None)

    async def ensure(
        self, role: Role, image: str | None, units: tuple[str, ...], release: str | None
    ) -> None:
        """The role's containers run `release` on exactly `units` (stable: the others are
        stopped and kept for a rollback; canary: the others, and every release that is
        neither stable nor this one, are removed)."""
        if role == "stable":
            await self._drained(units)  # a rollback wants a draining host back: once stopped
        instances, _ = await self._listing()
        live = [i for i in instances if i.state in LIVE_STATES]
        if role == "stable":
            rel = release or self.stable_release
            leaving = [i for i in live if rel and i.release == rel and i.host not in units]
            drain = await self._take_out("stable", {i.url for i in leaving if i.url})
            if leaving and rel and self.routed is not None:
                self._stop_after(drain, leaving, rel)
            elif leaving and rel:
                await asyncio.sleep(drain)
                await self._stop(leaving, rel)
            have = instance_set(rel, self.hosts, live, (), self.docker.instances_per_host)
            start = [h for h in units if h not in have.units or h in have.incomplete]
            if start and rel and image:
                self._record(self.own_release, await self._start(start, rel, image, "stable"))
            return
        keep = release if units else None
        leaving = [
            i
            for i in instances
            if i.release
            and i.release != self.stable_release
            and (i.release != keep or i.host not in units)
        ]
        await asyncio.sleep(
            await self._take_out(
                "canary", {i.url for i in leaving if i.url and i.state in LIVE_STATES}
            )
        )
        by_host: dict[str, set[str]] = {}
        for i in leaving:
            by_host.setdefault(i.host, set()).add(i.release)

        async def remove(host: str) -> None:
            for rel in sorted(by_host[host]):
                await remove_instances(self.conns, host, self.name, rel, grace=STOP_GRACE)

        removed = await self.conns.each(sorted(by_host), remove)
        for rel in {r for rels in by_host.values() for r in rels}:
            self._record(rel, removed)
        self._record(self.own_release, removed)
        if keep and image:
            present = {i.host for i in instances if i.release == keep}
            full = await self._without_room([h for h in units if h not in present])
            started = await self._start([h for h in units if h not in full], keep, image, "canary")
            self._record(keep, {**started, **full})

    def _per_instance(self) -> Resources:
        resources = self.docker.container.resources
        return Resources.parse(resources.cpus, resources.memory)

    async def _without_room(self, hosts: list[str]) -> dict[str, DockerTargetError]:
        """Hosts that cannot hold a new set beside what runs there now. The preflight checks
        the hosts a rollout begins on; this checks every host when its new set is first
        started (a canary's remaining hosts, later batches), as capacity may have changed."""
        per_instance = self._per_instance()
        if not hosts or not (per_instance.nano_cpus or per_instance.memory):
            return {}
        try:
            short = await check_capacity(
                self.conns, dict.fromkeys(hosts, self.docker.instances_per_host), per_instance
            )
        except DockerTargetError as err:
            return {err.host: err}
        out: dict[str, DockerTargetError] = {}
        for shortfall in short:
            reason = str(shortfall).removeprefix(f"host {shortfall.host}: ")
            if shortfall.host in out:
                reason = f"{out[shortfall.host].reason}; {reason}"
            out[shortfall.host] = DockerTargetError(shortfall.host, reason)
        return out

    async def _start(self, hosts: list[str], release: str, image: str, role: str) -> dict[str, Any]:
        container = self.docker.container
        resources = self._per_instance()
        return await self.conns.each(
            hosts,
            lambda h: ensure_instances(
                self.conns,
                h,
                self.name,
                release,
                image,
                self.docker.instances_per_host,
                self.env,
                resources,
                container.port,
                role="stable" if role == "stable" else "canary",
                restart_policy=container.restart_policy,
                command=container.command,
            ),
        )

    async def set_weights(self, stable: int, canary: int) -> None:
        current = await self._router().current()
        servers = {r: tuple(current.servers_of(r)) if current else () for r in ("stable", "canary")}
        await self._router().stage(guard_weights((stable, canary), servers), servers)

    async def set_routes(self, routes: Routes) -> None:
        current = await self._router().current()
        servers = {r: tuple(current.servers_of(r)) if current else () for r in ("stable", "canary")}
        weights = current.weights if current else (100, 0)
        await self._router().stage(weights, servers, routes=routes)

    async def flush(self) -> None:
        """Write what the round staged (the observation's server lists, the actions'
        weights and routes): one change of the route, one reload of Traefik."""
        assert self.state is not None
        router = self._router()
        declared, staged = await router.declared(), await router.current()
        if declared is not None and staged is not None:
            for role in ("stable", "canary"):
                for url in set(declared.servers_of(role)) - set(staged.servers_of(role)):
                    self.state.left_route[url] = None
        await router.flush()

    async def promote(self, release: str, image: str, deployment: str) -> None:
        """The status record moves first: whatever happens next, the next observation
        declares the new release's servers as stable and nothing as canary."""
        await self._drained()  # the old release's last containers, before it is the canary's
        await record_stable(self.rt.kube, self.app_obj, image, deployment, release)
        current = await self._router().current()
        if current is not None:
            servers = {"stable": current.servers_of("canary"), "canary": ()}
            await self._router().apply((100, 0), servers)

    async def ensure_owned(self) -> None:
        return None  # the route file is written by rollouts (one writer per file)

    async def census(self, rolling_out: bool) -> Census:
        """Instances are counted per host: a host is ready when all its stable containers
        pass their check. Outside a rollout this also keeps the route's stable servers on
        the healthy stable containers. A host whose last read failed is left alone for a
        while (`HostBackoff`), and counted as not ready meanwhile."""
        per_host = self.docker.instances_per_host
        try:
            await self._prepare()
            ready_hosts, updated, problem = await self._census(rolling_out)
        except FleetUnusable as err:
            ready_hosts, updated, problem = 0, 0, err.reason
        return Census(
            stable_image=self.stable_image,
            desired=len(self.hosts) * per_host,
            ready=ready_hosts * per_host,
            updated=updated,
            problem=problem,
        )

    async def _census(self, rolling_out: bool) -> tuple[int, int, str | None]:
        """(hosts whose stable containers all pass their check, started containers of the
        version being rolled out — of stable when none is —, why some host could not be
        read: its error and when it is read next)."""
        assert self.state is not None
        backoff = self.state.backoff
        backoff.keep_only(self.hosts)
        specs = {h: self.conns.spec(h) for h in self.hosts}
        waiting = {h: why for h in self.hosts if (why := backoff.waiting(h, specs[h])) is not None}
        tried = tuple(h for h in self.hosts if h not in waiting)
        instances, errors = await self._listing(tried)
        stable = [
            i for i in instances if i.state in LIVE_STATES and i.release == self.stable_release
        ]
        healthy = await self._healthy(stable)
        found = self._set(stable, healthy, None, self.stable_release, "stable")
        if not rolling_out and not errors and not waiting:
            await self._serve_healthy_stable(
                tuple(i.url for i in stable if i.id in healthy and i.url)
            )
        for host in tried:
            if host in errors:
                errors[host] = backoff.failed(host, specs[host], errors[host])
            else:
                backoff.succeeded(host)
        errors.update(waiting)
        updated = sum(
            1
            for i in instances
            if i.state in STARTED_STATES
            and i.release
            and (i.release != self.stable_release) == rolling_out
        )
        problem = next((f"host {h}: {errors[h]}" for h in sorted(errors)), None)
        return len(found.ready), updated, problem

    async def _serve_healthy_stable(self, servers: tuple[str, ...]) -> None:
        """Between rollouts nothing else writes the route: a container restarted by its
        daemon (a host reboot, `docker restart`) comes back on a new published port, and the
        route must follow it, or that host never serves again until the next rollout. Only
        an idle route (all traffic on stable, no canary servers) is rewritten, and only
        while no rollout holds the Application's lock; a changed `traffic.traefik.route`
        reaches the file the same way."""
        if not servers or not self.stable_release:
            return  # nothing healthy to route to: leave the route to Traefik's own checks
        router = self._router()
        declared = await router.declared()
        if declared is not None and (declared.weights != (100, 0) or declared.servers_of("canary")):
            return  # a rollout's route, left for it to finish or roll back
        want = router.desired((100, 0), {"stable": servers})
        if declared == want:
            return
        fresh = await self.rt.kube.get_application(self.namespace, self.name)
        if fresh is None or (fresh.get("status") or {}).get("activeDeployment"):
            return
        log.info("application %s: stable servers now %s", self.name, ", ".join(sorted(servers)))
        await router.apply(want.weights, dict(want.servers))

    async def remove_all(self) -> None:
        """Every container of the application on every host, and its route file."""
        await self._prepare()
        await self._drained()

        async def remove(host: str) -> None:
            for rel in sorted(
                {i.release for i in await list_instances(self.conns, host, self.name)}
            ):
                await remove_instances(self.conns, host, self.name, rel, grace=STOP_GRACE)

        left = await self.conns.each(self.hosts, remove)
        try:
            await self._router().remove_route()
        except DockerTargetError as err:
            left["route"] = err
        for problem in left.values():
            if isinstance(problem, DockerTargetError):
                # Deletion must not hang on a host that is gone; what is left is logged.
                log.warning("application %s deleted, left behind: %s", self.name, problem)
        state = self.rt.fleets.pop((self.namespace, self.name), None)
        if state is not None:
            await state.aclose()

    async def remove_rollout(self) -> None:
        """A deleted Deployment's containers go, after traffic is back on stable."""
        await self._prepare()
        await self._drained()
        await self.set_routes(NO_ROUTES)
        await self.set_weights(100, 0)
        await self.flush()
        if self.own_release:
            await self.ensure("canary", None, (), None)
