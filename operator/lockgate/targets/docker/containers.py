"""Containers of an Application on one host, named `<app>-<deployment>-r<revision>-<n>` (the
deployment's leading `<app>-` dropped, so `shop` + `shop-2-0-0/3` gives `shop-2-0-0-r3-0`)
and labelled with the application, deployment, revision, release (`<deployment>/<revision>`),
role at creation, instance index and container port. The labels are the record: a restarted
operator lists them and carries on. A revision number alone would not do as the name: two
Deployments of an application both start at revision 1, and their containers share canary
hosts.

Nothing here logs environment values: they may be resolved Secret values.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any, Literal

from lockgate.engine import InstanceSet
from lockgate.hosts.connections import HostConnections
from lockgate.hosts.errors import DockerTargetError, ImageUnavailable, explain
from lockgate.hosts.spec import HostSpec
from lockgate.names import (
    LABEL_APP,
    LABEL_DEPLOYMENT,
    LABEL_IMAGE,
    LABEL_INDEX,
    LABEL_MANAGED,
    LABEL_PORT,
    LABEL_RELEASE,
    LABEL_REVISION,
    LABEL_ROLE,
    MANAGED_BY,
)

from .resources import Resources

if TYPE_CHECKING:  # docker-py is loaded by the first connection (lockgate.hosts.connections)
    import docker

log = logging.getLogger("lockgate.docker")

Role = Literal["stable", "canary"]
STARTED_STATES = ("running", "restarting")  # what ensure_instances leaves behind


def split_release(release: str) -> tuple[str, str]:
    """`<deployment>/<revision>` -> (deployment, revision); without `/` the revision is ''."""
    deployment, sep, revision = release.rpartition("/")
    return (deployment, revision) if sep else (release, "")


def _name_part(text: str) -> str:
    return re.sub(r"[^a-zA-Z0-9_.-]+", "-", text).strip("-.") or "x"


def container_name(app: str, release: str, index: int) -> str:
    deployment, revision = split_release(release)
    if deployment == app:
        deployment = ""
    elif deployment.startswith(app + "-"):
        deployment = deployment[len(app) + 1 :]
    parts = [app, deployment, f"r{revision}" if revision else "", str(index)]
    return re.sub(r"-{2,}", "-", _name_part("-".join(p for p in parts if p)))


def container_labels(
    app: str, release: str, role: Role, index: int, port: int, image: str = ""
) -> dict[str, str]:
    deployment, revision = split_release(release)
    return {
        LABEL_IMAGE: image,
        LABEL_APP: app,
        LABEL_DEPLOYMENT: deployment,
        LABEL_REVISION: revision,
        LABEL_RELEASE: release,
        LABEL_ROLE: role,
        LABEL_INDEX: str(index),
        LABEL_PORT: str(port),
        LABEL_MANAGED: MANAGED_BY,
    }


@dataclass(frozen=True)
class Instance:
    """One container of the application on one host, as the daemon reports it now."""

    host: str
    name: str
    id: str
    release: str
    role: str  # the role it was created for; roles move on promotion, releases do not
    index: int
    image: str
    state: str  # created | running | restarting | exited | paused | dead | …
    address: str
    port: int | None  # the published host port of the container port, when running
    # Docker's own health of a container with a healthcheck: starting | healthy | unhealthy;
    # None without one (the daemon then sends no health_status events for it).
    docker_health: str | None = None

    @property
    def url(self) -> str | None:
        return f"http://{self.address}:{self.port}" if self.port else None

    @property
    def running_url(self) -> str | None:
        """The URL to check health at: none unless the container is running."""
        return self.url if self.state == "running" else None


def _docker_health(status: str) -> str | None:
    """From the list answer's Status text: "Up 3 seconds (health: starting)", "(healthy)"."""
    match = re.search(r"\((?:health: )?(starting|healthy|unhealthy)\)", status)
    return match.group(1) if match else None


def _instance(host: HostSpec, attrs: Mapping[str, Any]) -> Instance:
    """From a /containers/json entry (the list answer; no per-container inspect)."""
    labels: Mapping[str, str] = attrs.get("Labels") or {}
    container_port = int(labels.get(LABEL_PORT, "0") or 0)
    port = None
    for p in attrs.get("Ports") or []:
        if p.get("PrivatePort") == container_port and p.get("PublicPort"):
            port = int(p["PublicPort"])
            break
    names = attrs.get("Names") or [""]
    return Instance(
        host=host.name,
        name=str(names[0]).lstrip("/"),
        id=str(attrs.get("Id", "")),
        release=labels.get(LABEL_RELEASE, ""),
        role=labels.get(LABEL_ROLE, ""),
        index=int(labels.get(LABEL_INDEX, "0") or 0),
        image=labels.get(LABEL_IMAGE) or str(attrs.get("Image", "")),
        state=str(attrs.get("State", "")),
        address=host.address,
        port=port,
        docker_health=_docker_health(str(attrs.get("Status", ""))),
    )


def _list_sync(
    client: docker.DockerClient, spec: HostSpec, app: str, release: str | None = None
) -> list[Instance]:
    labels = [f"{LABEL_APP}={app}"]
    if release is not None:
        labels.append(f"{LABEL_RELEASE}={release}")
    raw = client.api.containers(all=True, filters={"label": labels})
    return sorted((_instance(spec, c) for c in raw), key=lambda i: (i.release, i.index, i.name))


async def list_instances(
    conns: HostConnections, host: str, app: str, release: str | None = None
) -> list[Instance]:
    """The application's containers on host (of one release, when given), any state."""
    spec = conns.spec(host)
    return await conns.run(host, lambda c: _list_sync(c, spec, app, release))


def _bind_address(address: str) -> str:
    """Publish on the host's address when it is an IP (the proxy reaches nothing else); a
    DNS name may not be a local address of the daemon's machine, so all addresses then."""
    try:
        ip_address(address)
    except ValueError:
        return "0.0.0.0"
    return address


def _ensure_image(client: docker.DockerClient, host: str, image: str) -> None:
    import docker.errors

    try:
        client.images.get(image)
        return
    except docker.errors.ImageNotFound:
        pass
    log.info("docker host %s: pulling %s", host, image)
    try:
        client.images.pull(image)  # docker-py splits repository, tag or digest itself
    except docker.errors.APIError as exc:
        raise ImageUnavailable(
            host, f"image {image} is not on the host and could not be pulled: {explain(exc)}"
        ) from exc


@dataclass(frozen=True)
class ContainerSettings:
    """How each container of a release is created."""

    image: str
    port: int  # container port, published on a free host port
    env: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    resources: Resources = field(default_factory=Resources)
    restart_policy: str = "unless-stopped"
    command: Sequence[str] | None = None


def _ensure_sync(
    client: docker.DockerClient,
    spec: HostSpec,
    app: str,
    release: str,
    role: Role,
    count: int,
    settings: ContainerSettings,
) -> list[Instance]:
    import docker.errors

    existing = {i.index: i for i in _list_sync(client, spec, app, release)}
    for index, instance in list(existing.items()):
        if index >= count or instance.state in ("dead", "removing"):
            log.info("docker host %s: removing %s (%s)", spec.name, instance.name, instance.state)
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(instance.id, force=True)
            del existing[index]
    missing = [i for i in range(count) if i not in existing]
    if missing:
        _ensure_image(client, spec.name, settings.image)
    for index in missing:
        name = container_name(app, release, index)
        labels = container_labels(app, release, role, index, settings.port, settings.image)
        log.info("docker host %s: creating %s from %s", spec.name, name, settings.image)
        host_config = client.api.create_host_config(
            port_bindings={settings.port: (_bind_address(spec.address), None)},
            restart_policy={"Name": settings.restart_policy},
            nano_cpus=settings.resources.nano_cpus or None,
            mem_limit=settings.resources.memory or None,
        )
        try:
            client.api.create_container(
                settings.image,
                command=list(settings.command) if settings.command else None,
                name=name,
                labels=labels,
                environment=dict(settings.env),
                ports=[settings.port],
                host_config=host_config,
            )
        except docker.errors.APIError as exc:
            if exc.status_code != 409:
                raise
            # The name is taken: ours from an interrupted run, or someone else's.
            other = client.api.inspect_container(name)
            theirs = (other.get("Config") or {}).get("Labels") or {}
            if theirs.get(LABEL_APP) != app or theirs.get(LABEL_RELEASE) != release:
                raise DockerTargetError(
                    spec.name,
                    f"container name {name} is taken by a container lockgate does not own",
                ) from exc
    for instance in _list_sync(client, spec, app, release):
        if instance.index < count and instance.state in ("created", "exited"):
            log.info("docker host %s: starting %s", spec.name, instance.name)
            client.api.start(instance.id)
        elif instance.state == "paused":
            client.api.unpause(instance.id)
    return [i for i in _list_sync(client, spec, app, release) if i.index < count]


async def ensure_instances(
    conns: HostConnections,
    host: str,
    app: str,
    release: str,
    image: str,
    count: int,
    env: Mapping[str, str],
    resources: Resources,
    port: int,
    *,
    role: Role = "canary",
    restart_policy: str = "unless-stopped",
    command: Sequence[str] | None = None,
    seconds: float | None = None,
) -> list[Instance]:
    """Exactly `count` running containers of `release` on host (idempotent: running ones
    are kept, stopped ones started, missing ones created from the local or pulled image)."""
    spec = conns.spec(host)
    settings = ContainerSettings(image, port, env, resources, restart_policy, command)
    return await conns.run(
        host,
        lambda c: _ensure_sync(c, spec, app, release, role, count, settings),
        seconds=seconds,
    )


def _stop_sync(
    client: docker.DockerClient, spec: HostSpec, app: str, release: str, grace: int, remove: bool
) -> list[str]:
    """Stop the release's containers (SIGTERM, SIGKILL after `grace` s) and, with `remove`,
    remove them; the names acted on."""
    import docker.errors

    done = []
    for instance in _list_sync(client, spec, app, release):
        running = instance.state in ("running", "restarting", "paused")
        if not (running or remove):
            continue
        with contextlib.suppress(docker.errors.NotFound):
            if running:
                log.info(
                    "docker host %s: stopping %s (grace %d s)", spec.name, instance.name, grace
                )
                client.api.stop(instance.id, timeout=grace)
            if remove:
                client.api.remove_container(instance.id, force=True)
        done.append(instance.name)
    return done


async def remove_instances(
    conns: HostConnections,
    host: str,
    app: str,
    release: str,
    *,
    drain_seconds: float = 0.0,
    grace: int = 10,
) -> list[str]:
    """Stop (SIGTERM, SIGKILL after `grace` s) and remove the release's containers on host,
    after `drain_seconds` (call it once they are out of traffic). Returns removed names."""
    if drain_seconds > 0:
        await asyncio.sleep(drain_seconds)
    spec = conns.spec(host)
    return await conns.run(
        host,
        lambda c: _stop_sync(c, spec, app, release, grace, remove=True),
        seconds=conns.timeout + grace,
    )


async def stop_instances(
    conns: HostConnections, host: str, app: str, release: str, *, grace: int = 10
) -> list[str]:
    """Stop the release's containers on host but keep them: a rollback starts them again
    without a pull or a create. Returns stopped names."""
    spec = conns.spec(host)
    return await conns.run(
        host,
        lambda c: _stop_sync(c, spec, app, release, grace, remove=False),
        seconds=conns.timeout + grace,
    )


def instance_set(
    release: str | None,
    hosts: Sequence[str],
    instances: Sequence[Instance],
    healthy: Collection[str],
    per_host: int,
    in_proxy: Collection[str] | None = None,
) -> InstanceSet:
    """The release's instances as the engine sees them: `units` the hosts that have any,
    `ready` those whose `per_host` instances all pass their check (and are in the proxy's
    servers, when known), `incomplete` those where fewer than `per_host` are started."""
    if not release:
        return InstanceSet()
    mine = [i for i in instances if i.release == release]
    if not mine:
        return InstanceSet(release=release)
    units = tuple(h for h in hosts if any(i.host == h for i in mine))
    on = {h: [i for i in mine if i.host == h] for h in units}
    ready = tuple(
        h
        for h in units
        if len(on[h]) >= per_host
        and all(i.id in healthy and (in_proxy is None or i.url in in_proxy) for i in on[h])
    )
    incomplete = tuple(h for h in units if sum(i.state in STARTED_STATES for i in on[h]) < per_host)
    return InstanceSet(release, mine[0].image, units, ready, incomplete)
