"""The Deployment: move an Application to an image, step by step."""

from __future__ import annotations

import itertools
import re
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from .application import NotificationEvent
from .common import (
    ApiModel,
    Condition,
    IntOrPercent,
    LocalObjectReference,
    MemoModel,
    SecretKeyReference,
    SpecModel,
    check_image,
)

StrategyType = Literal["Recreate", "Rolling", "BlueGreen", "Canary"]
Phase = Literal[
    "Pending",
    "Queued",
    "Progressing",
    "Paused",
    "Succeeded",
    "RollingBack",
    "RolledBack",
    "Failed",
    "Aborted",
]
TERMINAL_PHASES: frozenset[str] = frozenset({"Succeeded", "RolledBack", "Failed", "Aborted"})
ACTIONS = ("promote", "promote-full", "abort", "retry")

MSG_WEIGHT_RANGE = "spec.strategy.canary.steps: every weight must be an integer from 0 to 100"
MSG_WEIGHT_ORDER = "spec.strategy.canary.steps: weights must be non-decreasing"
MSG_WEIGHT_END = "spec.strategy.canary.steps: the last weight must be 100"
MSG_STEP_ONE_OF = "spec.strategy.canary.steps: each step sets exactly one of setWeight or pause"
MSG_PAUSE = (
    "spec.strategy.canary.steps: a pause is {} (wait for a promote) or {seconds: N}, "
    "N an integer from 0 to 604800"
)
MSG_STRATEGY_BLOCK = (
    "spec.strategy: only the block of the chosen type may be set "
    "(type Rolling → rolling, BlueGreen → blueGreen, Canary → canary)"
)
MSG_CANARY_NEEDS_STEPS = "spec.strategy.canary: type Canary needs canary.steps"
MSG_BATCH_SIZE = (
    "spec.strategy.rolling.batchSize: must be > 0 (an integer >= 1 or a percentage 1% to 100%)"
)
MSG_QUERY_BOUND = "spec.analysis.queries: each query needs max or min"
MSG_QUERY_BOUNDS_ORDER = "spec.analysis.queries: a query's min must not exceed its max"
MSG_QUERY_NAMES_UNIQUE = "spec.analysis.queries: query names must be unique"
MSG_WEBHOOK_NAMES_UNIQUE = "spec.webhooks: webhook names must be unique"
# Admission sees one object at a time: the engine's cross-check (and `lockgate plan`) says it.
MSG_QUERIES_NEED_PROMETHEUS = (
    "spec.analysis.queries: PromQL gates need spec.metrics.prometheus on the Application "
    "(Traefik's own metrics cannot answer them)"
)


class RollingStrategy(SpecModel):
    """Replace instances batch by batch."""

    batch_size: IntOrPercent = "25%"
    """Instances (or hosts) replaced per batch: an integer >= 1 or a percentage 1% to 100%."""
    batch_wait_seconds: int = Field(default=0, ge=0, le=86400)
    """Seconds to watch a finished batch before the next one starts."""
    min_healthy: IntOrPercent = 1
    """Healthy instances that must keep serving at every moment (integer or percentage)."""
    failure_threshold: int = Field(default=1, ge=1, le=100)
    """Failed batch attempts before the whole rollout is rolled back. A failed batch is
    always rolled back itself; below the threshold it is retried."""

    @model_validator(mode="after")
    def _positive_batch(self) -> RollingStrategy:
        if self.batch_size in (0, "0%"):
            raise ValueError(MSG_BATCH_SIZE)
        return self


class BlueGreenStrategy(SpecModel):
    """Bring up a full new set, then switch all traffic at once."""

    auto_promote: bool = True
    """Switch automatically after the preview; false waits for a promote action."""
    preview_seconds: int = Field(default=0, ge=0, le=86400)
    """Seconds the new set runs beside the old before the switch (analysis runs if set)."""
    scale_down_delay_seconds: int = Field(default=30, ge=0, le=86400)
    """Seconds the old set stays up after the switch; a failure then switches back at once."""


class PauseStep(SpecModel):
    """Wait before the next step."""

    # A step is not in the CRD schema (it is an integer or an object): the API server keeps
    # its nulls and its `10.0`s as they are, and the admission policy refuses them.
    wire_nulls_refused = MSG_PAUSE
    wire_integer_floats = False

    seconds: int | None = Field(default=None, ge=0, le=604800)
    """Seconds to wait; absent waits for a promote action."""


class CanaryStep(SpecModel):
    """One canary step: exactly one of setWeight or pause."""

    wire_nulls_refused = MSG_STEP_ONE_OF
    wire_integer_floats = False

    set_weight: int | None = Field(default=None, ge=0, le=100)
    """Percentage of traffic for the canary."""
    pause: PauseStep | None = None
    """Wait; {} waits for a manual promote."""

    @model_validator(mode="after")
    def _one_of(self) -> CanaryStep:
        if (self.set_weight is None) == (self.pause is None):
            raise ValueError(MSG_STEP_ONE_OF)
        return self


class CanaryStrategy(SpecModel):
    """Shift traffic to the new version in weighted steps, with analysis."""

    steps: list[CanaryStep | int] = Field(min_length=1, max_length=50)
    """Steps in order. Short form: a list of weights, e.g. [10, 25, 50, 100], each followed
    by a pause of stepSeconds."""
    step_seconds: int = Field(default=60, ge=0, le=86400)
    """Pause after each weight of the short form."""
    canary_hosts: IntOrPercent | None = None
    """Docker only: a fixed number (count or percentage) of hosts that run canary instances
    before promotion. Without it the canary hosts grow with the weight, as canary Pods do on
    Kubernetes, so that no canary instance carries more than each instance did before."""
    max_canary_load_percent: int = Field(default=200, ge=100, le=10000)
    """Docker with canaryHosts: the most one canary host may carry at a weight below 100, as
    a percentage of what each host carried before the rollout. A weight that needs more is
    refused before anything starts (`lockgate plan` shows it)."""

    @model_validator(mode="after")
    def _weights(self) -> CanaryStrategy:
        weights = self.weights()
        if any(not 0 <= w <= 100 for w in weights):
            raise ValueError(MSG_WEIGHT_RANGE)
        if any(b < a for a, b in itertools.pairwise(weights)):
            raise ValueError(MSG_WEIGHT_ORDER)
        if not weights or weights[-1] != 100:
            raise ValueError(MSG_WEIGHT_END)
        return self

    def weights(self) -> list[int]:
        out: list[int] = []
        for step in self.steps:
            if isinstance(step, int):
                out.append(step)
            elif step.set_weight is not None:
                out.append(step.set_weight)
        return out

    def expanded_steps(self) -> list[CanaryStep]:
        """The long form of steps: the short form's weights each followed by a pause."""
        out: list[CanaryStep] = []
        for step in self.steps:
            if isinstance(step, int):
                out.append(CanaryStep(set_weight=step))
                if step < 100 and self.step_seconds > 0:
                    out.append(CanaryStep(pause=PauseStep(seconds=self.step_seconds)))
            else:
                out.append(step)
        return out


class Strategy(SpecModel):
    """How the new version replaces the old one."""

    type: StrategyType = "Rolling"
    """Recreate, Rolling, BlueGreen or Canary."""
    rolling: RollingStrategy | None = None
    """Settings for type Rolling."""
    blue_green: BlueGreenStrategy | None = None
    """Settings for type BlueGreen."""
    canary: CanaryStrategy | None = None
    """Settings for type Canary."""

    @model_validator(mode="after")
    def _matching_block(self) -> Strategy:
        blocks = {"Rolling": self.rolling, "BlueGreen": self.blue_green, "Canary": self.canary}
        if any(block is not None for kind, block in blocks.items() if kind != self.type):
            raise ValueError(MSG_STRATEGY_BLOCK)
        if self.type == "Canary" and self.canary is None:
            raise ValueError(MSG_CANARY_NEEDS_STEPS)
        return self


class AnalysisQuery(SpecModel):
    """An extra PromQL gate (needs spec.metrics.prometheus on the Application)."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-_.A-Za-z0-9]*)?$")
    """Name shown in analysis results and messages."""
    promql: str = Field(min_length=1, max_length=4096)
    """Query returning one number (a scalar or a single series), evaluated at the end of each
    window. $canary and $stable are replaced by regular expressions matching each version's
    Traefik services (use them as service=~"$canary"), $window by the window (e.g. 30s).
    No series or NaN gives no verdict (Inconclusive)."""
    max: float | None = None
    """Fail when the result is above."""
    min: float | None = None
    """Fail when the result is below."""

    @model_validator(mode="after")
    def _bounded(self) -> AnalysisQuery:
        if self.max is None and self.min is None:
            raise ValueError(MSG_QUERY_BOUND)
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(MSG_QUERY_BOUNDS_ORDER)
        return self


def _check_increase(value: int | str) -> int | str:
    if isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str) and re.fullmatch(r"[0-9]{1,4}%", value):
        return value
    raise ValueError(f"{value!r} is not a percentage like '50%' (0% to 9999%)")


# An increase over stable's figure: a percentage like "50%" (or the integer 50).
Increase = Annotated[int | str, AfterValidator(_check_increase)]
LatencyIncrease = Increase  # the name it was introduced under


def increase_ratio(value: int | str) -> float:
    """'50%' (or 50) -> 0.5."""
    return (value if isinstance(value, int) else int(value.rstrip("%"))) / 100


latency_increase_ratio = increase_ratio  # the name it was introduced under


class Analysis(SpecModel):
    """Thresholds that decide whether the new version is healthy under real traffic."""

    interval_seconds: int = Field(default=30, ge=1, le=3600)
    """Seconds between analysis runs."""
    min_requests: int = Field(default=50, ge=0)
    """Fewer canary requests in a window make the run Inconclusive (keep waiting)."""
    max_error_rate: float | None = Field(default=0.05, ge=0, le=1)
    """Highest canary 5xx ratio, absolute (0 to 1)."""
    max_error_rate_increase: float | None = Field(default=None, ge=0, le=1)
    """Highest canary 5xx ratio minus stable's (0 to 1)."""
    max_latency_p95_increase: LatencyIncrease | None = None
    """Highest increase of canary p95 latency over stable's, as a percentage like "50%"."""
    max_cpu_increase: Increase | None = None
    """Highest increase of the canary's CPU use over stable's, as a percentage like "50%":
    per instance, averaged over the analysis window (Docker stats API on Docker hosts,
    metrics.k8s.io on Kubernetes)."""
    max_memory_increase: Increase | None = None
    """Highest increase of the canary's memory use (without the reclaimable file cache) over
    stable's, as a percentage like "50%": per instance, averaged over the analysis window
    (Docker stats API on Docker hosts, metrics.k8s.io on Kubernetes)."""
    max_consecutive_failures: int = Field(default=3, ge=1, le=100)
    """Failed health or analysis runs in a row before the verdict is Failed."""
    queries: list[AnalysisQuery] = Field(default_factory=list, max_length=20)
    """Extra PromQL gates, evaluated by the Application's spec.metrics.prometheus."""

    @model_validator(mode="after")
    def _unique_query_names(self) -> Analysis:
        names = [q.name for q in self.queries]
        if len(set(names)) != len(names):
            raise ValueError(MSG_QUERY_NAMES_UNIQUE)
        return self


class Rollback(SpecModel):
    """What happens when the verdict is Failed."""

    automatic: bool = True
    """Return all traffic to the previous version and remove the new instances."""


WebhookType = Literal["preRollout", "confirmStep", "confirmPromotion", "postRollout", "rollback"]
GATE_TYPES: frozenset[str] = frozenset({"preRollout", "confirmStep", "confirmPromotion"})
# http(s), no credentials in the URL (headersSecretRef carries them); a query is allowed and
# never shown in status or Events (it may hold a token).
WEBHOOK_URL_PATTERN = r"^https?://[^\s/?#@]+(/[^\s?#]*)?(\?[^\s#]*)?$"


class Webhook(SpecModel):
    """An HTTP endpoint lockgate asks (gates) or tells (informational) during the rollout."""

    name: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9]([-_.A-Za-z0-9]*)?$")
    """Unique within spec.webhooks; named in status, Events and the request body."""
    type: WebhookType
    """preRollout (before anything starts; a refusal fails the rollout), confirmStep (before
    each canary weight after the first and each rolling batch after the first), confirmPromotion
    (before the final switch), both waiting until a 2xx answer, re-asked every few seconds,
    within progressDeadlineSeconds; postRollout (after Succeeded) and rollback (when a started
    rollout fails), called once, informational."""
    url: str = Field(pattern=WEBHOOK_URL_PATTERN, max_length=2048)
    """http:// or https:// URL the JSON body is POSTed to (no user:password@; status and Events
    show it without its query)."""
    timeout_seconds: int = Field(default=10, ge=1, le=300)
    """Longest wait for one answer; no answer in time counts as a refusal."""
    headers_secret_ref: LocalObjectReference | None = None
    """A Secret in this namespace whose every key is sent as a header (e.g. Authorization)."""
    signing_secret_ref: SecretKeyReference | None = None
    """A Secret key holding the HMAC-SHA256 key that signs the body (X-Lockgate-Signature)."""

    @property
    def shown_url(self) -> str:
        """The URL as status and Events show it: without its query (it may hold a token)."""
        return self.url.split("?", 1)[0]


class DeploymentSpec(MemoModel):
    """Move an Application to an image, step by step."""

    application: str = Field(min_length=1, max_length=253)
    """Name of the Application in this namespace."""
    image: Annotated[str, AfterValidator(lambda v: check_image("spec.image", v))] = Field(
        min_length=1
    )
    """Image to roll out: [registry[:port]/]name[:tag][@digest], e.g. shop:2 or
    registry.example.com:5000/team/shop@sha256:<64 hex digits>."""
    strategy: Strategy = Field(default_factory=Strategy)
    """How to roll out."""
    analysis: Analysis | None = None
    """Metric thresholds; without it, steps wait only for health and timers."""
    rollback: Rollback = Field(default_factory=Rollback)
    """Rollback behaviour."""
    concurrency_policy: Literal["Queue", "Replace"] = "Queue"
    """When another Deployment of the application is active: Queue waits for it, Replace
    aborts it (it rolls back) and then starts."""
    paused: bool = False
    """Hold the rollout where it is (GitOps-friendly pause)."""
    progress_deadline_seconds: int = Field(default=600, ge=10, le=86400)
    """Longest a step may wait for health, traffic or a conclusive analysis before the
    rollout fails."""
    webhooks: list[Webhook] = Field(default_factory=list, max_length=20)
    """HTTP endpoints called at points of the rollout: gates that decide whether it goes on,
    and informational calls after it (see docs/webhooks.md)."""

    @model_validator(mode="after")
    def _unique_webhook_names(self) -> DeploymentSpec:
        names = [w.name for w in self.webhooks]
        if len(set(names)) != len(names):
            raise ValueError(MSG_WEBHOOK_NAMES_UNIQUE)
        return self

    def hooks(self, kind: str) -> list[Webhook]:
        """The webhooks of one type, in spec order."""
        return [w for w in self.webhooks if w.type == kind]


class WebhookCall(ApiModel):
    """One webhook asked at one point of the rollout: the last ask and its answer."""

    name: str
    """The webhook's name."""
    type: WebhookType
    """Its type."""
    step: int | None = None
    """The step a confirm gate is asked before (0-based); absent for the other types."""
    calls: int = 1
    """How often it was asked (a confirm gate is asked again until it says yes)."""
    at: datetime
    """When it was last asked."""
    pending: bool = True
    """The last ask has no answer yet."""
    answer: str | None = None
    """The last answer: `HTTP <code>` or `no answer: <why>`."""
    passed: bool = False
    """The last answer was a 2xx."""
    answered_at: datetime | None = None
    """When the last answer came."""

    @property
    def call_id(self) -> str:
        """Identifies the ask within the rollout attempt (the controller's delivery id)."""
        return f"{self.name}/{'-' if self.step is None else self.step}/{self.calls}"


class StepStatus(ApiModel):
    """Where the rollout is."""

    index: int = 0
    """Index of the current step (0-based)."""
    total: int = 0
    """Number of steps."""
    description: str = ""
    """What the current step does."""
    started_at: datetime | None = None
    """When the current step started."""
    weights_live_at: datetime | None = None
    """When the step's weights were confirmed live."""
    analysis_passed: bool = False
    """A Passed analysis was recorded at this step."""
    restoring: bool = False
    """A failed batch is being rolled back before it is retried."""
    confirmed: bool = False
    """The step's confirm webhooks said yes (or a promote action passed them)."""


class Weights(ApiModel):
    """Traffic split in percent; always sums to 100."""

    stable: int = Field(default=100, ge=0, le=100)
    """Share of the stable version."""
    canary: int = Field(default=0, ge=0, le=100)
    """Share of the new version."""


class BatchStatus(ApiModel):
    """One batch of a rolling rollout."""

    index: int
    """Batch number (0-based)."""
    targets: list[str]
    """Replicas or hosts in the batch."""
    state: Literal["Pending", "Running", "Succeeded", "Failed", "RolledBack"] = "Pending"
    """State of the batch."""
    started_at: datetime | None = None
    """When it started."""
    finished_at: datetime | None = None
    """When it finished."""
    reason: str | None = None
    """Why it failed."""
    attempts: int = 0
    """How often it was started."""
    failures: int = 0
    """How often it failed."""


class MetricsFigures(ApiModel):
    """Figures of one version over an analysis window."""

    requests: int = 0
    """Requests served."""
    error_rate: float | None = None
    """Share of 5xx answers (0 to 1)."""
    p95: float | None = None
    """95th percentile latency in seconds."""
    cpu: float | None = None
    """CPU in use, in cores, per instance, averaged over the window (set when
    maxCpuIncrease is)."""
    memory: int | None = None
    """Memory in use without the reclaimable file cache, in bytes, per instance, averaged
    over the window (set when maxMemoryIncrease is)."""


Verdict = Literal["Passed", "Failed", "Inconclusive"]


class AnalysisRun(ApiModel):
    """One analysis run."""

    step: int
    """Step index it ran at."""
    at: datetime
    """When it ran."""
    canary: MetricsFigures | None = None
    """Canary figures."""
    stable: MetricsFigures | None = None
    """Stable figures."""
    queries: dict[str, float] | None = None
    """Results of custom queries."""
    source: str | None = None
    """Where the figures came from: `prometheus <url>` or `traefik <metrics URL>`."""
    verdict: Verdict
    """Passed, Failed or Inconclusive."""
    reason: str = ""
    """Why."""


class MetricsSnapshot(ApiModel):
    """The latest analysis figures when a transition happened."""

    at: datetime
    """When the analysis run they come from ended."""
    step: int
    """Step index (0-based) of that run."""
    canary: MetricsFigures | None = None
    """Canary figures: requests, errorRate, p95."""
    stable: MetricsFigures | None = None
    """Stable figures: requests, errorRate, p95."""
    verdict: Verdict
    """That run's verdict."""


class Transition(ApiModel):
    """A stage transition: a phase change, a completed step or a promote action."""

    phase: Phase
    """The phase after the transition."""
    at: datetime
    """When."""
    message: str = ""
    """Why."""
    seq: int | None = None
    """Sequence number among the Deployment's transitions (never reused, even once older
    transitions are pruned); notifications are recorded per seq and target."""
    event: NotificationEvent | None = None
    """The notification event it is: Started, StepCompleted, Paused, Promoted, Succeeded,
    RollingBack, RolledBack, Failed or Aborted (none for Pending, Queued and resuming)."""
    step: int | None = None
    """Step index (0-based): the completed step for StepCompleted, else the current one."""
    weights: Weights | None = None
    """Traffic split last confirmed live."""
    metrics: MetricsSnapshot | None = None
    """The latest analysis figures, when there are any."""


class NotificationRecord(ApiModel):
    """One notification of one transition to one target: delivered, or given up on."""

    target: str
    """Target name."""
    event: str
    """The event sent."""
    transition: int
    """The transition's seq."""
    delivered_at: datetime | None = None
    """When the receiver answered 2xx; absent when lockgate gave up."""
    attempts: int = 0
    """POSTs made."""
    last_error: str | None = None
    """The last failed attempt's answer (secrets redacted)."""


class LogEntry(ApiModel):
    """One line of the rollout's log (bounded, secrets redacted)."""

    at: datetime
    """When."""
    level: Literal["Info", "Warning", "Error"] = "Info"
    """Severity."""
    message: str
    """What happened."""


class DeploymentStatus(ApiModel):
    """Observed state of the rollout. The operator resumes from it after a restart."""

    phase: Phase = "Pending"
    """Pending, Queued, Progressing, Paused, Succeeded, RollingBack, RolledBack, Failed or
    Aborted."""
    revision: int = 0
    """Bumps on every spec change that starts a new rollout."""
    attempt: int = 0
    """Bumps on every retry of the same revision."""
    image: str | None = None
    """The image this revision rolls out."""
    spec_hash: str | None = None
    """Fingerprint of the spec fields that start a new revision when changed."""
    previous_image: str | None = None
    """The stable image before this rollout; the rollback target."""
    step: StepStatus | None = None
    """The current step."""
    weights: Weights | None = None
    """Traffic split last confirmed live."""
    batches: list[BatchStatus] = Field(default_factory=list)
    """Batches (Rolling strategy)."""
    analysis: list[AnalysisRun] = Field(default_factory=list)
    """Recent analysis runs, newest last (bounded)."""
    consecutive_failures: int = 0
    """Failed runs in a row."""
    last_analysis_at: datetime | None = None
    """When analysis last ran."""
    pending_action: Literal["promote", "promote-full", "abort", "retry"] | None = None
    """An action taken from the annotation, applied at the next reconcile."""
    failure: str | None = None
    """Why the rollout is rolling back or failed."""
    aborted: bool = False
    """The rollback was asked for (abort, superseded, spec change) rather than caused by a
    failure; it ends Aborted instead of RolledBack."""
    skip_waits: bool = False
    """promote-full was given: remaining pauses and analysis gates are skipped."""
    webhooks: list[WebhookCall] = Field(default_factory=list)
    """Webhooks asked in this attempt, with their last answers (bounded)."""
    transitions: list[Transition] = Field(default_factory=list)
    """Stage transitions (phase changes, completed steps, promote actions), each with the
    traffic split and the latest analysis figures, newest last (bounded)."""
    notifications: list[NotificationRecord] = Field(default_factory=list)
    """Notifications delivered or given up on, per transition and target (bounded)."""
    log: list[LogEntry] = Field(default_factory=list)
    """Rollout log, newest last (bounded, secrets redacted)."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing, Degraded, Reconciling, Stalled (kstatus-compatible)."""
    observed_generation: int | None = None
    """The metadata.generation last acted on."""
    message: str | None = None
    """Human-readable summary."""
    started_at: datetime | None = None
    """When this revision started progressing."""
    finished_at: datetime | None = None
    """When this revision finished."""
