"""What the engine sees (observations) and what it asks for (actions). Plain frozen values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

Role = Literal["stable", "canary"]


@dataclass(frozen=True, slots=True)
class InstanceSet:
    """Instances in one traffic role, as observed now.

    ``release`` names the rollout that created them (``<deployment>/<revision>``); ``units``
    are the replicas or hosts that have instances of the set, ``ready`` those whose instances
    all pass their health check. ``incomplete`` are units whose instances exist but are not
    all started (e.g. created by an operator killed before it started them): nothing else
    will start them, so the engine asks for them again.
    """

    release: str | None = None
    image: str | None = None
    units: tuple[str, ...] = ()
    ready: tuple[str, ...] = ()
    incomplete: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class VersionMetrics:
    """Traffic of one version over an analysis window."""

    requests: int
    errors: int = 0
    p95: float | None = None  # seconds
    # Resource use per instance, averaged over the window (None: not measured).
    cpu: float | None = None  # cores
    memory: float | None = None  # bytes, without the reclaimable file cache

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass(frozen=True, slots=True)
class MetricsSample:
    """One analysis window, collected by the controller when the engine says it is due."""

    canary: VersionMetrics | None = None
    stable: VersionMetrics | None = None
    queries: Mapping[str, float | None] = field(default_factory=dict)
    error: str | None = None  # the metrics source could not be read
    source: str | None = None  # where the figures come from, e.g. "prometheus http://..."
    # Why the instances' CPU and memory figures could not be read (they are None then).
    resource_error: str | None = None
    # Set when the figures begin later than the window asked for: the source remembers
    # nothing before `since` (Traefik's counters are cumulative, and the operator that kept
    # the earlier readings was restarted). The engine judges such a window only once it
    # spans a whole interval, and holds the step until then.
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class HeaderRule:
    """One condition of a header route: a header (or a cookie) with an exact value or a
    regular expression (RE2)."""

    header: str | None = None
    cookie: str | None = None
    exact: str | None = None
    regex: str | None = None

    def describe(self) -> str:
        kind, name = ("header", self.header) if self.header is not None else ("cookie", self.cookie)
        op, value = ("=", self.exact) if self.exact is not None else ("~", self.regex)
        return f"{kind} {name} {op} {value}"


@dataclass(frozen=True, slots=True)
class Routes:
    """Traffic beyond the weights: requests matching `header` (any of its rules) go to the
    canary whatever the weights; `mirror` percent of the requests are copied to it."""

    header: tuple[HeaderRule, ...] = ()
    mirror: int = 0

    def __bool__(self) -> bool:
        return bool(self.header) or self.mirror > 0

    def describe(self) -> str:
        parts = []
        if self.header:
            parts.append("header route " + " or ".join(r.describe() for r in self.header))
        if self.mirror:
            parts.append(f"mirror {self.mirror}%")
        return ", ".join(parts) or "no header route, no mirror"


NO_ROUTES = Routes()


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the engine knows about the world for one decision."""

    stable: InstanceSet = InstanceSet()
    canary: InstanceSet = InstanceSet()
    live_weights: tuple[int, int] | None = None  # (stable, canary) confirmed in the proxy
    # Header route and mirror confirmed in the proxy; None: not confirmed either way.
    live_routes: Routes | None = NO_ROUTES
    metrics: MetricsSample | None = None
    lock_holder: str | None = None  # the Deployment holding the application's rollout lock
    queued_ahead: int = 0  # Deployments of the application queued before this one
    superseded_by: str | None = None  # a Deployment with concurrencyPolicy Replace
    action: str | None = None  # the lockgate.dev/action annotation, verbatim
    # Units (Docker hosts) that cannot be reached or failed their last action, with why.
    unit_errors: Mapping[str, str] = field(default_factory=dict)
    # Why the rollout cannot start at all (e.g. a host lacks capacity); checked before start.
    refusal: str | None = None
    # Answers of webhook calls asked for by CallWebhook, by call id (WebhookCall.call_id).
    webhooks: Mapping[str, WebhookAnswer] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WebhookAnswer:
    """What a webhook call came back with: an HTTP status, or None and why no answer came."""

    status: int | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def describe(self) -> str:
        return f"HTTP {self.status}" if self.status is not None else f"no answer: {self.error}"


@dataclass(frozen=True, slots=True)
class EnsureInstances:
    """Make the role's instances run ``image`` on exactly ``units`` (idempotent)."""

    role: Role
    image: str | None
    units: tuple[str, ...]
    release: str | None


@dataclass(frozen=True, slots=True)
class RoutedUnits:
    """The units whose instances serve each side while a step moves traffic unit by unit
    (Rolling): an instance anywhere else stays out of the proxy, so a unit changes over in
    the one proxy change that moves its traffic, not in one change per instance."""

    canary: tuple[str, ...]
    stable: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SetWeights:
    """Route ``stable``/``canary`` percent of traffic; the pair always sums to 100."""

    stable: int
    canary: int


@dataclass(frozen=True, slots=True)
class SetRoutes:
    """Route matching requests to the canary and mirror a share of requests to it (or
    neither, with NO_ROUTES)."""

    routes: Routes


@dataclass(frozen=True, slots=True)
class Promote:
    """Make the canary instances the stable ones (the old stable set becomes the canary
    role, to be removed)."""

    release: str
    image: str


@dataclass(frozen=True, slots=True)
class AcquireLock:
    """Take the application's rollout lock (fails harmlessly if another holds it)."""


@dataclass(frozen=True, slots=True)
class ReleaseLock:
    """Give the application's rollout lock back."""


@dataclass(frozen=True, slots=True)
class Supersede:
    """Ask the active Deployment to abort because this one replaces it."""

    holder: str


@dataclass(frozen=True, slots=True)
class ClearAction:
    """Remove the lockgate.dev/action annotation: its action is recorded in status."""


@dataclass(frozen=True, slots=True)
class CallWebhook:
    """Call the webhook `name` once, after the status recording the call (`call_id`, in
    status.webhooks) is written; its answer comes back in Observation.webhooks[call_id]."""

    name: str
    call_id: str


Action = (
    EnsureInstances
    | SetWeights
    | SetRoutes
    | Promote
    | AcquireLock
    | ReleaseLock
    | Supersede
    | ClearAction
    | CallWebhook
)


@dataclass(frozen=True, slots=True)
class Event:
    """A Kubernetes Event to emit."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str
