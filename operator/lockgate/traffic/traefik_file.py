"""Traefik's file provider, for Docker hosts: one dynamic-config file per Application.

The file holds a router `<app>` (when a route is set) to a weighted service `<app>` over the
load balancers `<app>-stable` and `<app>-canary`, each listing the server URLs of healthy
instances with an active health check. A side with weight 0 is left out of the weighted
list (its load balancer stays defined while it has servers, so Traefik keeps checking them
and `live_servers` lists them before they get traffic).

The file is the declared state: every change reads it, changes weights or servers, and
writes it whole and atomically (a temp file in TEMP_DIR beside it, renamed over the old
one), locally or over SFTP with strict host keys. The temp file is not in the directory
itself: Traefik's file provider (v3) re-reads its directory on every event there and passes
the result through the provider's throttle (providersThrottleDuration, 2 s), so the temp
file's own creation could spend the window on the old configuration and hold the new one
back ~2 s. It watches no subdirectory, and reads only .yaml/.yml/.toml files in one. A
change counts as done only when Traefik's API serves the declared weights and servers.

A header route is a second router `<app>-header`: the Application's rule AND the route's
conditions, at a higher priority, to the canary's load balancer (whose requests analysis
counts as the canary's). Its conditions are recorded in a comment line of the file. One file
holds both routers and the load balancer, so Traefik loads them together: the route never
points at a backend it does not have.

Mirroring: a service `<app>-mirror` (`mirroring` of `<app>` with `<app>-canary` as a mirror
at the step's percent) that the router `<app>` points at while the mirror holds; recorded in a
comment line like the header route, and written only while the canary has servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import secrets
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import httpx
import yaml

from lockgate.api.application import ApplicationSpec
from lockgate.engine.model import NO_ROUTES, Routes
from lockgate.hosts.errors import DockerTargetError, translate_error
from lockgate.hosts.spec import HostSpec
from lockgate.hosts.ssh import ssh_connect
from lockgate.names import MANAGED_BY, ROLES, service_name

from .traefik_api import (
    api_list,
    live_sticky_matches,
    parse_live_weights,
    role_weights,
    service_answer,
    sticky_config,
)
from .traefik_rules import decode, encode, header_priority, header_rule

if TYPE_CHECKING:  # loaded by the first SSH connection (lockgate.hosts.ssh)
    import paramiko

HEADER_ROUTE_COMMENT = "# lockgate-header-route: "
MIRROR_COMMENT = "# lockgate-mirror-percent: "

log = logging.getLogger("lockgate.traefik_file")


def leaves(app: str) -> dict[str, str]:
    """Per role, the file provider's load balancer (Traefik's API adds `@file`)."""
    return {role: service_name(app, role) for role in ROLES}


# --- rendering -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthCheckConfig:
    path: str = "/health"
    interval_seconds: int = 5
    timeout_seconds: int = 2

    def render(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "interval": f"{self.interval_seconds}s",
            "timeout": f"{self.timeout_seconds}s",
        }


@dataclass(frozen=True)
class RouteConfig:
    rule: str
    entry_points: tuple[str, ...] = ("web",)


@dataclass(frozen=True)
class FileConfig:
    """What lockgate declares for one application."""

    app: str
    weights: tuple[int, int]  # (stable, canary), summing to 100
    servers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # role -> URLs
    route: RouteConfig | None = None
    health: HealthCheckConfig | None = HealthCheckConfig()
    routes: Routes = NO_ROUTES
    sticky: Mapping[str, Any] | None = None  # the weighted service's sticky block

    def servers_of(self, role: str) -> tuple[str, ...]:
        return tuple(self.servers.get(role, ()))


def render(config: FileConfig) -> dict[str, Any]:
    """The dynamic configuration (as a dict) for Traefik's file provider."""
    stable, canary = config.weights
    if stable < 0 or canary < 0 or stable + canary != 100:
        raise ValueError(f"weights must be non-negative and sum to 100, got {stable}/{canary}")
    app = config.app
    weighted: list[dict[str, Any]] = [
        {"name": service_name(app, role), "weight": weight}
        for role, weight in zip(ROLES, config.weights, strict=True)
        if weight > 0
    ]
    services: dict[str, Any] = {"weighted": {"services": weighted}}
    if config.health is not None:
        # Propagates the children's health: a side whose servers are all down is skipped.
        services["weighted"]["healthCheck"] = {}
    if config.sticky is not None:
        services["weighted"]["sticky"] = dict(config.sticky)
    out_services: dict[str, Any] = {app: services}
    for role, weight in zip(ROLES, config.weights, strict=True):
        servers = config.servers_of(role)
        if weight == 0 and not servers:
            continue
        lb: dict[str, Any] = {"servers": [{"url": url} for url in sorted(servers)]}
        if config.health is not None:
            lb["healthCheck"] = config.health.render()
        out_services[service_name(app, role)] = {"loadBalancer": lb}
    http: dict[str, Any] = {"services": out_services}
    mirror = config.routes.mirror if config.servers_of("canary") else 0
    if config.route is not None and mirror:
        # Only with canary servers, like the header router.
        out_services[mirror_service(app)] = {
            "mirroring": {
                "service": app,
                "mirrors": [{"name": service_name(app, "canary"), "percent": mirror}],
            }
        }
    if config.route is not None:
        # A host that dies takes its servers with it until the health check (or lockgate)
        # drops them; a request that reached no server is sent again, so no client sees it.
        # Not while mirroring: Traefik (v3.6) gives the mirrored copy the request's retry
        # state, and a copy starting as the client's answer is checked makes the retry send
        # the request again into the answer already written; Go then closes the client's
        # connection ("Server disconnected without sending a response" on its next request,
        # about 1 in 2,000 copies) and stable receives the request twice.
        main: dict[str, Any] = {
            "rule": config.route.rule,
            "entryPoints": list(config.route.entry_points),
            "service": mirror_service(app) if mirror else app,
        }
        if not mirror:
            main["middlewares"] = [retry_middleware(app)]
        http["routers"] = {app: main}
        http["middlewares"] = {retry_middleware(app): {"retry": RETRY}}
        header = config.routes.header
        if header and config.servers_of("canary"):
            # Only with canary servers: a router to an empty load balancer would answer 503.
            http["routers"][header_router(app)] = {
                "rule": header_rule(config.route.rule, header),
                "priority": header_priority(config.route.rule, header),
                "entryPoints": list(config.route.entry_points),
                "service": service_name(app, "canary"),
                "middlewares": [retry_middleware(app)],
            }
    return {"http": http}


def traefik_names(app: str) -> tuple[str, ...]:
    """The names Traefik's API gives what the file declares (the file provider adds
    `@file`): the router, the weighted service and the load balancers, the header router and
    the mirroring service; what the Traefik observer looks for to wake a waiting rollout."""
    return tuple(
        f"{name}@file"
        for name in (app, *leaves(app).values(), header_router(app), mirror_service(app))
    )


def header_router(app: str) -> str:
    return f"{app}-header"


def mirror_service(app: str) -> str:
    return f"{app}-mirror"


RETRY = {"attempts": 10, "initialInterval": "20ms"}
"""Traefik retries only requests no server took (refused connections), and each attempt goes
through the balancer again, which may pick the same dead server: a request fails if all its
attempts do, (1/3)^9 of them with one of three hosts down (with 3 attempts, 1 in 9 did: five
failed requests in a second of a host's loss). The back-off (20 ms, then 40 ms) lets the
balancer move on; ten attempts add at most 0.4 s to a request that meets only dead servers."""


def retry_middleware(app: str) -> str:
    return f"{app}-retry"


def dump(config: FileConfig) -> str:
    header = f"# Written by {MANAGED_BY} for application {config.app}; edits are overwritten.\n"
    if config.routes.header:
        header += f"{HEADER_ROUTE_COMMENT}{encode(config.routes.header)}\n"
    if config.routes.mirror:
        header += f"{MIRROR_COMMENT}{config.routes.mirror}\n"
    return header + yaml.safe_dump(render(config), sort_keys=True)


def _seconds(value: Any, default: int) -> int:
    text = str(value or "")
    return int(text[:-1]) if text.endswith("s") and text[:-1].isdigit() else default


def parse(app: str, text: str) -> FileConfig | None:
    """The FileConfig a file written by `dump` declares; None if it is not one."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    http = (data or {}).get("http") if isinstance(data, dict) else None
    if not isinstance(http, dict):
        return None
    services = http.get("services") or {}
    weighted_block = (services.get(app) or {}).get("weighted") or {}
    weighted = weighted_block.get("services")
    if weighted is None:
        return None
    weights = role_weights(weighted, leaves(app))
    if sum(weights.values()) != 100:
        return None
    servers: dict[str, tuple[str, ...]] = {}
    health: HealthCheckConfig | None = None
    for role in ROLES:
        lb = (services.get(service_name(app, role)) or {}).get("loadBalancer") or {}
        servers[role] = tuple(sorted(s["url"] for s in lb.get("servers") or [] if "url" in s))
        hc = lb.get("healthCheck")
        if hc and health is None:
            health = HealthCheckConfig(
                path=str(hc.get("path", "/health")),
                interval_seconds=_seconds(hc.get("interval"), 5),
                timeout_seconds=_seconds(hc.get("timeout"), 2),
            )
    router = (http.get("routers") or {}).get(app)
    route = (
        RouteConfig(router["rule"], tuple(router.get("entryPoints") or ()))
        if isinstance(router, dict) and "rule" in router
        else None
    )
    comments = [line for line in text.splitlines() if line.startswith("# lockgate-")]
    recorded = next(
        (c[len(HEADER_ROUTE_COMMENT) :] for c in comments if c.startswith(HEADER_ROUTE_COMMENT)),
        None,
    )
    mirror_text = next(
        (c[len(MIRROR_COMMENT) :] for c in comments if c.startswith(MIRROR_COMMENT)), "0"
    )
    mirror = int(mirror_text) if mirror_text.strip().isdigit() else 0
    return FileConfig(
        app=app,
        weights=(weights["stable"], weights["canary"]),
        servers=servers,
        route=route,
        health=health,
        routes=Routes(header=decode(recorded), mirror=mirror) if route is not None else NO_ROUTES,
        sticky=weighted_block.get("sticky"),
    )


# --- where the file lives --------------------------------------------------------------------


class ConfigStore(Protocol):
    """Reads and atomically replaces one file."""

    path: str

    async def read(self) -> str | None: ...

    async def write(self, text: str) -> None: ...

    async def remove(self) -> None: ...


TEMP_DIR = ".lockgate-tmp"  # beside the route file (the same filesystem, for the rename)


def _temp_name(path: str) -> str:
    directory, base = posixpath.split(path)
    return posixpath.join(directory, TEMP_DIR, f"{base}.{secrets.token_hex(4)}.tmp")


class LocalStore:
    """The file on the operator's own filesystem."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _write_sync(self, text: str) -> None:
        directory = os.path.dirname(self.path) or "."
        temp_dir = os.path.join(directory, TEMP_DIR)
        with contextlib.suppress(FileExistsError):
            os.mkdir(temp_dir)  # not the route's own directory: missing, it is an error
        fd, tmp = tempfile.mkstemp(
            dir=temp_dir, prefix=f"{os.path.basename(self.path)}.", suffix=".tmp"
        )
        try:
            with os.fdopen(fd, "w") as out:
                out.write(text)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(tmp, 0o644)  # the proxy may run as another user; no secrets in here
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _read_sync(self) -> str | None:
        try:
            with open(self.path) as f:
                return f.read()
        except FileNotFoundError:
            return None

    async def read(self) -> str | None:
        return await asyncio.to_thread(self._read_sync)

    async def write(self, text: str) -> None:
        await asyncio.to_thread(self._write_sync, text)

    async def remove(self) -> None:
        def unlink() -> None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

        await asyncio.to_thread(unlink)


class SftpStore:
    """The file on an ssh:// host over one reused SSH connection (strict host keys, as for
    the Docker connection to that host): SFTP (write a temp file, posix-rename it over the
    old one). A server without the sftp subsystem gets the same through an exec channel:
    `cat > temp && mv -f temp path` (mv within a directory is a rename)."""

    def __init__(self, host: HostSpec, path: str, *, connect_timeout: float = 10.0) -> None:
        self.host = host
        self.path = path
        self.connect_timeout = connect_timeout
        self.mode: str | None = None  # "sftp" or "exec", found on first use
        self._ssh: paramiko.SSHClient | None = None
        self._sftp_session: paramiko.SFTPClient | None = None
        self._lock = asyncio.Lock()
        self._temp_dir_made = False  # one SFTP round trip for it per store, not per write

    def _connected(self) -> paramiko.SSHClient:
        transport = self._ssh.get_transport() if self._ssh else None
        if self._ssh is None or transport is None or not transport.is_active():
            self.close()
            self._ssh = ssh_connect(self.host, self.connect_timeout)
        return self._ssh

    def _sftp(self) -> paramiko.SFTPClient | None:
        """The SFTP session (opened once, reused), or None without an sftp subsystem."""
        import paramiko

        ssh = self._connected()
        if self.mode == "exec":
            return None
        if self._sftp_session is not None:
            return self._sftp_session
        try:
            sftp = self._sftp_session = ssh.open_sftp()
        except paramiko.SSHException:
            if self.mode == "sftp":
                raise
            log.info("host %s has no sftp subsystem; writing through exec", self.host.name)
            self.mode = "exec"
            return None
        self.mode = "sftp"
        return sftp

    def _exec(self, command: str, stdin: bytes = b"") -> tuple[int, bytes]:
        ssh = self._connected()
        chan_in, chan_out, chan_err = ssh.exec_command(command, timeout=self.connect_timeout * 3)
        if stdin:
            chan_in.write(stdin)
        chan_in.channel.shutdown_write()
        out: bytes = chan_out.read()
        err: bytes = chan_err.read()
        status: int = chan_out.channel.recv_exit_status()
        if status not in (0, 3):
            raise OSError(f"{command.split()[0]} exited {status}: {err.decode()[-300:]}")
        return status, out

    def _write_sync(self, text: str) -> None:
        tmp = _temp_name(self.path)
        sftp = self._sftp()
        if sftp is None:
            t, p = shlex.quote(tmp), shlex.quote(self.path)
            d = shlex.quote(posixpath.dirname(tmp))
            self._exec(
                f"umask 022 && mkdir -p {d} && {{ cat > {t} && mv -f {t} {p}; }} "
                f"|| {{ rm -f {t}; exit 1; }}",
                text.encode(),
            )
            return
        if not self._temp_dir_made:
            with contextlib.suppress(OSError):  # there already (or the open below says why)
                sftp.mkdir(posixpath.dirname(tmp))
            self._temp_dir_made = True
        try:
            with sftp.open(tmp, "w") as out:
                out.write(text.encode())
                out.flush()
            sftp.chmod(tmp, 0o644)
            sftp.posix_rename(tmp, self.path)  # replaces atomically (plain rename refuses)
        except BaseException:
            self._temp_dir_made = False  # gone since, maybe: the next write makes it again
            with contextlib.suppress(OSError):
                sftp.remove(tmp)
            raise

    def _read_sync(self) -> str | None:
        sftp = self._sftp()
        if sftp is None:
            p = shlex.quote(self.path)
            status, out = self._exec(f"if [ -e {p} ]; then cat {p}; else exit 3; fi")
            return out.decode() if status == 0 else None
        try:
            with sftp.open(self.path, "r") as f:
                data: bytes = f.read()
                return data.decode()
        except FileNotFoundError:
            return None

    def _remove_sync(self) -> None:
        sftp = self._sftp()
        if sftp is None:
            self._exec(f"rm -f {shlex.quote(self.path)}")
            return
        with contextlib.suppress(FileNotFoundError):
            sftp.remove(self.path)

    async def _call(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args)
            except DockerTargetError:
                raise
            except Exception as exc:
                self.close()  # the next call reconnects
                raise translate_error(self.host.name, exc) from exc

    async def read(self) -> str | None:
        text: str | None = await self._call(self._read_sync)
        return text

    async def write(self, text: str) -> None:
        await self._call(self._write_sync, text)

    async def remove(self) -> None:
        await self._call(self._remove_sync)

    def close(self) -> None:
        if self._sftp_session is not None:
            with contextlib.suppress(Exception):
                self._sftp_session.close()
            self._sftp_session = None
        if self._ssh is not None:
            self._ssh.close()
            self._ssh = None


def store_for(
    app: ApplicationSpec, hosts: Mapping[str, HostSpec], *, default_path: str | None = None
) -> ConfigStore:
    """Where spec.traffic.traefik.fileProvider says the file lives: "local", or a host
    reached over ssh:// (a unix:// host is on the operator's machine, so local too)."""
    fp = app.traffic.traefik.file_provider
    if fp is None:
        if default_path is None:
            raise ValueError("spec.traffic.traefik.fileProvider is not set")
        return LocalStore(default_path)
    if fp.host == "local":
        return LocalStore(fp.path)
    host = hosts.get(fp.host)
    if host is None:
        raise ValueError(f"spec.traffic.traefik.fileProvider.host: no host {fp.host!r}")
    if host.transport == "unix":
        return LocalStore(fp.path)
    if host.transport == "ssh":
        return SftpStore(host, fp.path)
    raise ValueError(
        f"spec.traffic.traefik.fileProvider.host: {fp.host} is reached over tcp://, "
        "which cannot write files; use an ssh:// host or 'local'"
    )


# --- the router ------------------------------------------------------------------------------


class TraefikFileRouter:
    """Traffic of Docker targets: weights and servers in a file-provider config."""

    def __init__(
        self,
        app_name: str,
        store: ConfigStore,
        *,
        api_url: str | None,
        http: httpx.AsyncClient,
        route: RouteConfig | None = None,
        health: HealthCheckConfig | None = HealthCheckConfig(),
        sticky: Mapping[str, Any] | None = None,
    ) -> None:
        self.app = app_name
        self.store = store
        self.api_url = api_url.rstrip("/") if api_url else None
        self.http = http
        self.route = route
        self.health = health
        self.sticky = sticky
        # The route file as this router last read or wrote it. A router lives one round of
        # the file's one writer (the rollout holding the Application's lock), so it reads
        # the file at most once.
        self._declared: FileConfig | None = None
        self._read = False
        # What this round declares but has not written yet (see `stage`).
        self._staged: FileConfig | None = None

    @classmethod
    def for_application(
        cls,
        app_name: str,
        app: ApplicationSpec,
        store: ConfigStore,
        *,
        http: httpx.AsyncClient,
        api_url: str | None = None,
    ) -> TraefikFileRouter:
        traefik = app.traffic.traefik
        route = (
            RouteConfig(traefik.route.match, tuple(traefik.route.entry_points))
            if traefik.route
            else None
        )
        hc = app.health_check
        return cls(
            app_name,
            store,
            api_url=traefik.api_url or api_url,
            http=http,
            route=route,
            health=HealthCheckConfig(hc.http.path, hc.interval_seconds, hc.timeout_seconds),
            sticky=sticky_config(traefik.sticky),
        )

    async def declared(self) -> FileConfig | None:
        if not self._read:
            text = await self.store.read()
            self._declared = parse(self.app, text) if text is not None else None
            self._read = True
        return self._declared

    def desired(
        self,
        weights: tuple[int, int],
        servers: Mapping[str, Sequence[str]],
        routes: Routes = NO_ROUTES,
    ) -> FileConfig:
        """The whole configuration for these weights, servers and routes, with this route."""
        return FileConfig(
            app=self.app,
            weights=weights,
            servers={role: tuple(sorted(servers.get(role, ()))) for role in ROLES},
            route=self.route,
            health=self.health,
            routes=routes if self.route is not None else NO_ROUTES,
            sticky=self.sticky,
        )

    async def current(self) -> FileConfig | None:
        """What this round declares: the staged configuration, else the file's."""
        return self._staged if self._staged is not None else await self.declared()

    async def stage(
        self,
        weights: tuple[int, int],
        servers: Mapping[str, Sequence[str]],
        *,
        routes: Routes | None = None,
    ) -> FileConfig:
        """Declare the whole state, written by the next `flush`: what a round stages is one
        write, so one reload of Traefik (its file provider sends each change it reads and
        then takes no other for 2 s). `routes`: the header route and mirror to declare;
        None keeps the ones declared."""
        current = await self.current()
        if routes is None:
            routes = current.routes if current is not None else NO_ROUTES
        self._staged = self.desired(weights, servers, routes)
        return self._staged

    async def flush(self) -> None:
        """Write what is staged (nothing when the file already says it)."""
        staged, self._staged = self._staged, None
        if staged is not None and staged != await self.declared():
            await self.store.write(dump(staged))
            self._declared = staged

    async def apply(
        self,
        weights: tuple[int, int],
        servers: Mapping[str, Sequence[str]],
        *,
        routes: Routes | None = None,
    ) -> FileConfig:
        """Stage and write at once."""
        config = await self.stage(weights, servers, routes=routes)
        await self.flush()
        return config

    async def remove_route(self) -> None:
        await self.store.remove()
        self._declared, self._read, self._staged = None, True, None

    async def _api(self, name: str) -> dict[str, Any] | None:
        """Traefik's answer for one service of the file provider; None if absent or the API
        cannot be read."""
        if not self.api_url:
            return None
        return await service_answer(self.http, self.api_url, name, "file")

    async def live_servers(self) -> dict[str, tuple[str, ...]] | None:
        """Server URLs Traefik has loaded per role (a role Traefik does not know: none);
        None without Traefik's API."""
        if not self.api_url:
            return None
        out: dict[str, tuple[str, ...]] = {}
        for role in ROLES:
            body = await self._api(service_name(self.app, role))
            servers = ((body or {}).get("loadBalancer") or {}).get("servers") or []
            out[role] = tuple(sorted(str(s.get("url")) for s in servers))
        return out

    async def live_routes_of(
        self, declared: FileConfig, live: Mapping[str, tuple[str, ...]] | None = None
    ) -> Routes | None:
        """The declared header route once Traefik serves its router (and the canary's
        servers it sends to), or its absence once Traefik no longer has that router; None
        until then."""
        if self.route is None:
            return NO_ROUTES
        if not self.api_url:
            return declared.routes
        name = header_router(self.app)
        routers = await api_list(self.http, self.api_url, "routers", search=self.app)
        if routers is None:
            return None
        mine = [r for r in routers if str(r.get("name", "")).split("@")[0] == name]
        main = [r for r in routers if str(r.get("name", "")).split("@")[0] == self.app]
        to_mirror = any(
            str(r.get("service", "")).split("@")[0] == mirror_service(self.app) for r in main
        )
        mirror = declared.routes.mirror
        if not mirror and to_mirror:
            return None  # Traefik still mirrors
        if mirror:
            body = await self._api(mirror_service(self.app))
            mirrors = ((body or {}).get("mirroring") or {}).get("mirrors") or []
            if not to_mirror or [m.get("percent") for m in mirrors] != [mirror]:
                return None
        if not declared.routes.header:
            if mine:
                return None
            return declared.routes
        assert declared.route is not None
        want = header_rule(declared.route.rule, declared.routes.header)
        if not any(r.get("rule") == want and r.get("status") == "enabled" for r in mine):
            return None
        live = live if live is not None else await self.live_servers()
        canary = declared.servers_of("canary")
        if live is None or not canary or live["canary"] != canary:
            return None
        return declared.routes

    async def live_weights(self) -> tuple[int, int] | None:
        """The declared split, once Traefik serves it and the declared servers of every
        side with weight; None until then (or without a declared file)."""
        declared = await self.declared()
        if declared is None:
            return None
        return await self.live_weights_of(declared)

    async def live_weights_of(
        self, declared: FileConfig, live: Mapping[str, tuple[str, ...]] | None = None
    ) -> tuple[int, int] | None:
        """`live_weights` for a config already read (and live servers already asked for)."""
        if not self.api_url:
            return declared.weights  # without Traefik's API the declared split is all we know
        body = await self._api(self.app)
        if body is None or parse_live_weights(body, leaves(self.app)) != declared.weights:
            return None
        if not live_sticky_matches(body, declared.sticky):
            return None
        live = live if live is not None else await self.live_servers()
        if live is None:
            return None
        for role, weight in zip(ROLES, declared.weights, strict=True):
            if weight > 0 and live[role] != declared.servers_of(role):
                return None
        return declared.weights
