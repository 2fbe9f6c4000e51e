"""The Application: what runs, where, and how traffic reaches it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from .common import (
    ApiModel,
    Condition,
    LocalObjectReference,
    MemoModel,
    SecretKeyReference,
    SpecModel,
    check_image,
)

MSG_ONE_TARGET = "spec: exactly one of spec.kubernetes or spec.docker must be set"
MSG_FILE_PROVIDER_DOCKER = (
    "spec.traffic.traefik.fileProvider: only allowed with spec.docker "
    "(Kubernetes targets are routed through a TraefikService)"
)
MSG_FILE_PROVIDER_HOST = (
    "spec.traffic.traefik.fileProvider.host: must name one of spec.docker.hosts or be 'local'"
)
MSG_GATEWAY_KUBERNETES = (
    "spec.traffic.gatewayAPI: only allowed with spec.kubernetes (Docker hosts are routed "
    "through Traefik's file provider)"
)
MSG_GATEWAY_TRAEFIK_ROUTE = (
    "spec.traffic.gatewayAPI: not together with spec.traffic.traefik.route (one route carries "
    "the application's traffic: an HTTPRoute or an IngressRoute)"
)
MSG_GATEWAY_STICKY = (
    "spec.traffic.traefik.sticky: not supported with spec.traffic.gatewayAPI (a sticky cookie "
    "needs a TraefikService; an HTTPRoute has none)"
)
MSG_GATEWAY_ONE_ROUTE = (
    "spec.traffic.gatewayAPI: exactly one of route (an HTTPRoute lockgate owns) or routeRef "
    "(a rule of an existing HTTPRoute)"
)
MSG_HOST_NAMES_UNIQUE = "spec.docker.hosts: host names must be unique"
MSG_SSH_KEY = "spec.docker.hosts: an ssh:// host needs sshKeySecretRef and knownHostsSecretRef"
MSG_NOTIFICATION_URL = "spec.notifications: each target sets exactly one of url or urlSecretRef"
MSG_NOTIFICATION_NAMES_UNIQUE = "spec.notifications: target names must be unique"
NotificationEvent = Literal[
    "Started",
    "StepCompleted",
    "Paused",
    "Promoted",
    "Succeeded",
    "RollingBack",
    "RolledBack",
    "Failed",
    "Aborted",
]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = get_args(NotificationEvent)
NOTIFICATION_URL_PATTERN = r"^https?://[^\s]+$"
MSG_DOCKER_HEALTH_PORT = (
    "spec.healthCheck.http.port: on Docker hosts the check reaches the published "
    "spec.docker.container.port; a different port is not supported"
)


# The container lists of a PodTemplateSpec whose images the CRD schema checks (the template is
# otherwise kept as written: the apps/v1 Deployment lockgate creates validates the rest).
TEMPLATE_CONTAINER_LISTS = ("initContainers", "containers")
TEMPLATE_PATH = "spec.kubernetes.template"


def _template_error(path: str, problem: str) -> PydanticCustomError:
    return PydanticCustomError("template", "{path}: {problem}", {"path": path, "problem": problem})


def _check_template(template: dict[str, Any]) -> dict[str, Any]:
    """The parts of a PodTemplateSpec the CRD schema types: spec, its container lists and
    their images. A null is an absent field, as for the API server."""
    pod = template.get("spec")
    if pod is None:
        return template
    if not isinstance(pod, dict):
        raise _template_error(f"{TEMPLATE_PATH}.spec", "must be an object")
    for key in TEMPLATE_CONTAINER_LISTS:
        containers = pod.get(key)
        if containers is None:
            continue
        path = f"{TEMPLATE_PATH}.spec.{key}"
        if not isinstance(containers, list):
            raise _template_error(path, "must be a list")
        for i, container in enumerate(containers):
            if not isinstance(container, dict):
                raise _template_error(f"{path}[{i}]", "must be an object")
            image = container.get("image")
            if image is None:
                continue
            if not isinstance(image, str):
                raise _template_error(f"{path}[{i}].image", "must be a string")
            check_image(f"{path}[{i}].image", image)
    return template


class KubernetesTarget(SpecModel):
    """Run the application as Pods in this namespace."""

    replicas: int = Field(default=1, ge=0, le=1000)
    """Number of Pods serving the stable version."""
    template: Annotated[dict[str, Any], AfterValidator(_check_template)] = Field(
        default_factory=dict
    )
    """A PodTemplateSpec. The container image comes from the Deployment; lockgate sets it on
    the first container (or the one named `app`)."""
    drain_seconds: int = Field(default=5, ge=0, le=300)
    """Seconds a terminating Pod keeps serving while the proxy drops it, as a preStop sleep
    (added only when the container has no preStop hook of its own). The Pod's
    terminationGracePeriodSeconds becomes at least this plus 10."""


class SecretEnvSource(SpecModel):
    """Where an environment value comes from."""

    secret_key_ref: SecretKeyReference
    """A key of a Secret; the value is resolved at deploy time and never logged."""


class EnvVar(SpecModel):
    """An environment variable of the container."""

    name: str = Field(min_length=1)
    """Variable name."""
    value: str | None = None
    """Literal value."""
    value_from: SecretEnvSource | None = None
    """Take the value from a Secret instead."""


class ContainerResources(SpecModel):
    """Limits of each container; also used by the capacity check before a rollout."""

    cpus: str = Field(default="0.5", pattern=r"^[0-9]+(\.[0-9]+)?$")
    """CPU limit as a decimal number of CPUs, e.g. "1.0"."""
    memory: str = Field(default="256Mi", pattern=r"^[0-9]+(Ki|Mi|Gi|k|m|g|K|M|G)?$")
    """Memory limit, e.g. "512Mi"."""


class DockerContainer(SpecModel):
    """How each container is created."""

    port: int = Field(default=8080, ge=1, le=65535)
    """Port the application listens on inside the container."""
    env: list[EnvVar] = Field(default_factory=list)
    """Environment variables; valueFrom.secretKeyRef is resolved at deploy time."""
    resources: ContainerResources = Field(default_factory=ContainerResources)
    """CPU and memory limits."""
    restart_policy: Literal["no", "on-failure", "always", "unless-stopped"] = "unless-stopped"
    """Docker restart policy."""
    command: list[str] | None = None
    """Overrides the image's command."""


class DockerHost(SpecModel):
    """One Docker Engine that runs instances of the application."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    """Host name, used in status, batches and container names."""
    url: str = Field(pattern=r"^(unix|tcp|ssh)://.+$")
    """How to reach the Docker Engine: unix:///path, tcp://host:port (TLS when tlsSecretRef
    is set) or ssh://user@host[:port]."""
    address: str = Field(min_length=1)
    """Address where the proxy reaches containers published on this host."""
    ssh_key_secret_ref: SecretKeyReference | None = None
    """Private key for ssh:// hosts."""
    known_hosts_secret_ref: SecretKeyReference | None = None
    """known_hosts for ssh:// hosts; an unknown or changed host key is refused."""
    tls_secret_ref: LocalObjectReference | None = None
    """Secret with ca.pem, cert.pem and key.pem for tcp:// hosts."""


class DockerTarget(SpecModel):
    """Run the application as containers on plain Docker hosts."""

    hosts: list[DockerHost] = Field(min_length=1, max_length=200)
    """The hosts, in rollout order."""
    instances_per_host: int = Field(default=1, ge=1, le=64)
    """Containers of the application on each host."""
    container: DockerContainer = Field(default_factory=DockerContainer)
    """Container settings."""
    drain_seconds: int = Field(default=2, ge=0, le=300)
    """Seconds a container keeps running after Traefik stopped routing to it, before it is
    stopped (SIGTERM, then SIGKILL after 10 s)."""

    @model_validator(mode="after")
    def _hosts_valid(self) -> DockerTarget:
        names = [h.name for h in self.hosts]
        if len(set(names)) != len(names):
            raise ValueError(MSG_HOST_NAMES_UNIQUE)
        for host in self.hosts:
            if host.url.startswith("ssh://") and not (
                host.ssh_key_secret_ref and host.known_hosts_secret_ref
            ):
                raise ValueError(MSG_SSH_KEY)
        return self


class HttpCheck(SpecModel):
    """An HTTP GET that must answer 2xx or 3xx."""

    path: str = Field(default="/health", pattern=r"^/")
    """Request path."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """Port; defaults to spec.port."""


class HealthCheck(SpecModel):
    """How an instance is judged healthy before it receives traffic."""

    http: HttpCheck = Field(default_factory=HttpCheck)
    """The HTTP check."""
    interval_seconds: int = Field(default=5, ge=1, le=3600)
    """Seconds between checks."""
    timeout_seconds: int = Field(default=2, ge=1, le=600)
    """Seconds before one check counts as failed."""
    unhealthy_threshold: int = Field(default=3, ge=1, le=100)
    """Consecutive failed checks before an instance counts as unhealthy."""
    startup_grace_seconds: int = Field(default=10, ge=0, le=3600)
    """Failures during this time after start do not count."""


class TraefikRoute(SpecModel):
    """The router in front of the application."""

    entry_points: list[str] = Field(default_factory=lambda: ["web"], min_length=1)
    """Traefik entry points."""
    match: str = Field(min_length=1)
    """Traefik rule, e.g. Host(`shop.example.com`)."""


class FileProvider(SpecModel):
    """Where lockgate writes Traefik's file-provider dynamic configuration (docker only)."""

    host: str = Field(min_length=1)
    """Name of a host in spec.docker.hosts, or "local" for the operator's filesystem."""
    path: str = Field(pattern=r"^/.+\.(ya?ml|toml)$")
    """Absolute path of the file (YAML); written atomically."""


# A cookie name: an HTTP token (RFC 9110), as Traefik keeps it.
COOKIE_NAME_PATTERN = "^[A-Za-z0-9!#$%&'*+.^_|~-]{1,100}$"


class StickyCookie(SpecModel):
    """The cookie that keeps a client on the version it got first."""

    name: str = Field(pattern=COOKIE_NAME_PATTERN)
    """Cookie name, e.g. shop_version (letters, digits and !#$%&'*+.^_|~-)."""
    secure: bool = False
    """Sent over HTTPS only."""
    http_only: bool = True
    """Not readable by the page's scripts."""
    same_site: Literal["none", "lax", "strict"] | None = None
    """The SameSite attribute; absent: not set."""


class Sticky(SpecModel):
    """Sticky canaries: a client keeps the version it was first given while the weights
    change; a rollback moves every client back to stable."""

    cookie: StickyCookie
    """The cookie Traefik sets on the first answer and routes by afterwards."""


TRAEFIK_API_VERSIONS = ("traefik.io/v1", "traefik.io/v1alpha1")
"""The versions of Traefik's CRDs lockgate writes, newest first (the same objects in each)."""


class TraefikTraffic(SpecModel):
    """Traffic through Traefik."""

    route: TraefikRoute | None = None
    """When set, lockgate owns a router (IngressRoute or file router) for the application."""
    file_provider: FileProvider | None = None
    """Docker only: the file-provider configuration to write."""
    metrics_url: str | None = Field(default=None, alias="metricsURL")
    """Traefik's Prometheus endpoint; the default source for analysis."""
    api_url: str | None = Field(default=None, alias="apiURL")
    """Traefik's API, used to confirm that a weight change is live."""
    api_group: Literal["traefik.io/v1", "traefik.io/v1alpha1"] | None = None
    """API group/version of Traefik's CRDs (Kubernetes only); absent: the newest of these two
    that the cluster serves (recent Traefik v3 releases deprecate traefik.io/v1alpha1 in
    favour of traefik.io/v1)."""
    sticky: Sticky | None = None
    """Sticky canaries: a cookie on the weighted service (TraefikService `<app>` or the file
    provider's weighted service) so that a client stays on the version it got while the
    canary's weight grows; clients of a version that leaves (rollback, promotion) are moved
    to the one that stays."""


# Gateway API names, as its CRDs check them.
GATEWAY_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
GATEWAY_SECTION_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
GATEWAY_HOSTNAME_PATTERN = (
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
GatewayHostname = Annotated[
    str, Field(min_length=1, max_length=253, pattern=GATEWAY_HOSTNAME_PATTERN)
]


class GatewayParentRef(SpecModel):
    """A Gateway the HTTPRoute attaches to (an HTTPRoute's parentRef of kind Gateway)."""

    name: str = Field(min_length=1, max_length=253, pattern=GATEWAY_NAME_PATTERN)
    """The Gateway's name."""
    namespace: str | None = Field(
        default=None, min_length=1, max_length=63, pattern=GATEWAY_SECTION_PATTERN
    )
    """The Gateway's namespace; absent: the Application's."""
    section_name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=GATEWAY_NAME_PATTERN
    )
    """One listener of the Gateway, by name; absent: all that allow the route."""
    port: int | None = Field(default=None, ge=1, le=65535)
    """The listeners on this port only."""


class HTTPPathMatch(SpecModel):
    """Which request paths the route matches."""

    type: Literal["PathPrefix", "Exact"] = "PathPrefix"
    """PathPrefix or Exact."""
    value: str = Field(default="/", min_length=1, max_length=1024, pattern=r"^/")
    """The path, e.g. /shop."""


class GatewayRoute(SpecModel):
    """An HTTPRoute lockgate owns: one rule weighted over `<app>-stable` and `<app>-canary`
    (and, during a header route, a rule before it to the canary)."""

    name: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=GATEWAY_NAME_PATTERN
    )
    """The HTTPRoute's name; absent: the Application's."""
    parent_refs: list[GatewayParentRef] = Field(min_length=1, max_length=32)
    """The Gateways it attaches to."""
    hostnames: list[GatewayHostname] = Field(default_factory=list, max_length=16)
    """Host names it matches; empty: those of the Gateway's listeners."""
    path: HTTPPathMatch = Field(default_factory=HTTPPathMatch)
    """The path match of its rules."""


class HTTPRouteRuleRef(SpecModel):
    """One named rule of an HTTPRoute that lockgate does not own."""

    name: str = Field(min_length=1, max_length=253, pattern=GATEWAY_NAME_PATTERN)
    """The HTTPRoute's name (in the Application's namespace)."""
    rule: str = Field(min_length=1, max_length=253, pattern=GATEWAY_NAME_PATTERN)
    """The name of the rule (spec.rules[].name) whose backendRefs lockgate sets."""


class GatewayAPITraffic(SpecModel):
    """Traffic through a Gateway API HTTPRoute (gateway.networking.k8s.io/v1), Kubernetes
    only: the weights are the backendRefs' weights, a header route is a rule with header
    matches before the weighted one."""

    route: GatewayRoute | None = None
    """An HTTPRoute lockgate owns (created, and reset, by lockgate)."""
    route_ref: HTTPRouteRuleRef | None = None
    """A rule of an existing HTTPRoute: lockgate sets only that rule's backendRefs, and adds
    (and removes) a rule with header matches right before it during a header route."""

    @model_validator(mode="after")
    def _one_route(self) -> GatewayAPITraffic:
        if (self.route is None) == (self.route_ref is None):
            raise ValueError(MSG_GATEWAY_ONE_ROUTE)
        return self

    def route_name(self, app_name: str) -> str:
        """The HTTPRoute's name."""
        if self.route_ref is not None:
            return self.route_ref.name
        assert self.route is not None
        return self.route.name or app_name


class Traffic(SpecModel):
    """How traffic reaches the application."""

    traefik: TraefikTraffic = Field(default_factory=TraefikTraffic)
    """Traefik settings."""
    gateway_api: GatewayAPITraffic | None = Field(default=None, alias="gatewayAPI")
    """Kubernetes only: route through a Gateway API HTTPRoute instead of a TraefikService
    and an IngressRoute (Traefik's API and metrics settings above still apply)."""


# An http(s) base URL: a host (and port), an optional path; no query or fragment (lockgate
# appends /api/v1/query), no credentials (the URL is shown in status, Events and logs) and no
# whitespace.
PROMETHEUS_URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#@]*)?$"


class PrometheusSource(SpecModel):
    """A Prometheus server answering PromQL over HTTP, which scrapes the Traefik that routes
    the application."""

    url: str = Field(pattern=PROMETHEUS_URL_PATTERN, max_length=2048)
    """Base URL of its HTTP API, e.g. http://prometheus:9090 (no query, fragment or
    credentials)."""


class MetricsSource(SpecModel):
    """Where analysis reads metrics from."""

    prometheus: PrometheusSource | None = None
    """Analysis reads Traefik's figures, and the Deployment's analysis.queries, through this
    Prometheus; without it, from Traefik's own metrics endpoint."""


class NotificationTarget(SpecModel):
    """Where lockgate tells of a rollout's transitions (started, step completed, failed...)."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-_.A-Za-z0-9]*)?$")
    """Unique in the list; deliveries are recorded per target name."""
    kind: Literal["webhook", "slack", "teams"] = "webhook"
    """webhook: generic JSON (signed when signingSecretRef is set); slack: a Slack
    incoming-webhook message; teams: a Microsoft Teams MessageCard."""
    url: str | None = Field(default=None, pattern=NOTIFICATION_URL_PATTERN, max_length=2048)
    """Where to POST (http:// or https://). Slack and Teams URLs are secrets: prefer
    urlSecretRef."""
    url_secret_ref: SecretKeyReference | None = None
    """A key of a Secret holding the URL (never shown in status, Events or logs)."""
    events: list[NotificationEvent] = Field(
        default_factory=lambda: list(NOTIFICATION_EVENTS), min_length=1, max_length=9
    )
    """Events sent: Started, StepCompleted, Paused, Promoted, Succeeded, RollingBack,
    RolledBack, Failed, Aborted (default: all)."""
    signing_secret_ref: SecretKeyReference | None = None
    """A key of a Secret whose value signs each body: header X-Lockgate-Signature:
    sha256=<HMAC-SHA256 of the body, hex>."""

    @model_validator(mode="after")
    def _one_url(self) -> NotificationTarget:
        if (self.url is None) == (self.url_secret_ref is None):
            raise ValueError(MSG_NOTIFICATION_URL)
        return self


class ApplicationSpec(MemoModel):
    """What runs, where, and how traffic reaches it."""

    kubernetes: KubernetesTarget | None = None
    """Run on Kubernetes. Exactly one of kubernetes or docker."""
    docker: DockerTarget | None = None
    """Run on Docker hosts. Exactly one of kubernetes or docker."""
    port: int = Field(default=8080, ge=1, le=65535)
    """The port the application serves on."""
    health_check: HealthCheck = Field(default_factory=HealthCheck)
    """Health check that gates traffic."""
    traffic: Traffic = Field(default_factory=Traffic)
    """Routing through Traefik."""
    metrics: MetricsSource = Field(default_factory=MetricsSource)
    """Metrics source for analysis."""
    history_limit: int = Field(default=10, ge=1, le=100)
    """Finished Deployments kept per Application; older ones are pruned."""
    notifications: list[NotificationTarget] = Field(default_factory=list, max_length=10)
    """Targets told of every rollout's transitions, in addition to the operator's default
    targets (see docs/notifications.md)."""

    @model_validator(mode="after")
    def _unique_notification_names(self) -> ApplicationSpec:
        names = [n.name for n in self.notifications]
        if len(set(names)) != len(names):
            raise ValueError(MSG_NOTIFICATION_NAMES_UNIQUE)
        return self

    @model_validator(mode="after")
    def _one_target(self) -> ApplicationSpec:
        if (self.kubernetes is None) == (self.docker is None):
            raise ValueError(MSG_ONE_TARGET)
        fp = self.traffic.traefik.file_provider
        if fp is not None:
            if self.docker is None:
                raise ValueError(MSG_FILE_PROVIDER_DOCKER)
            if fp.host != "local" and fp.host not in {h.name for h in self.docker.hosts}:
                raise ValueError(MSG_FILE_PROVIDER_HOST)
        # Only the container port is published, and Traefik's check of a load balancer
        # uses one port for all its servers: a separate health port cannot be reached.
        gateway = self.traffic.gateway_api
        if gateway is not None:
            if self.kubernetes is None:
                raise ValueError(MSG_GATEWAY_KUBERNETES)
            if self.traffic.traefik.route is not None:
                raise ValueError(MSG_GATEWAY_TRAEFIK_ROUTE)
            if self.traffic.traefik.sticky is not None:
                raise ValueError(MSG_GATEWAY_STICKY)
        health_port = self.health_check.http.port
        if self.docker is not None and health_port not in (None, self.docker.container.port):
            raise ValueError(MSG_DOCKER_HEALTH_PORT)
        return self

    @property
    def target_kind(self) -> Literal["kubernetes", "docker"]:
        return "kubernetes" if self.kubernetes is not None else "docker"

    def units(self) -> tuple[str, ...]:
        """The units a rollout moves one batch at a time: replicas, or Docker hosts."""
        units: tuple[str, ...] = self.memo("units", self._units)
        return units

    def _units(self) -> tuple[str, ...]:
        if self.docker is not None:
            return tuple(h.name for h in self.docker.hosts)
        assert self.kubernetes is not None
        return tuple(f"replica-{i + 1}" for i in range(self.kubernetes.replicas))


class StableVersion(ApiModel):
    """The version serving all traffic outside a rollout."""

    image: str
    """Its image."""
    deployment: str | None = None
    """The Deployment that made it stable."""
    release: str | None = None
    """Its release (`<deployment>/<revision>`): Docker hosts find its containers by this label."""
    since: datetime | None = None
    """When it became stable."""


class InstanceCounts(ApiModel):
    """Instances of the application."""

    desired: int = 0
    """Instances wanted."""
    ready: int = 0
    """Instances passing their health check."""
    updated: int = 0
    """Instances running the image of the active Deployment."""


class HistoryEntry(ApiModel):
    """One finished Deployment."""

    deployment: str
    """Deployment name."""
    image: str
    """Image it rolled out."""
    revision: int = 1
    """Revision of that Deployment."""
    result: str
    """Final phase: Succeeded, RolledBack, Aborted or Failed."""
    started_at: datetime | None = None
    """When it started."""
    finished_at: datetime | None = None
    """When it finished."""


class ApplicationStatus(ApiModel):
    """Observed state of the Application."""

    phase: Literal["Healthy", "Progressing", "Degraded", "Unknown"] | None = None
    """Healthy, Progressing, Degraded or Unknown."""
    stable: StableVersion | None = None
    """The stable version."""
    active_deployment: str | None = None
    """The Deployment currently rolling out (holds the application's rollout lock)."""
    instances: InstanceCounts | None = None
    """Instance counts."""
    history: list[HistoryEntry] = Field(default_factory=list, max_length=100)
    """Finished Deployments, newest first, bounded by spec.historyLimit."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded (kstatus-compatible)."""
    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    message: str | None = None
    """Human-readable summary."""
