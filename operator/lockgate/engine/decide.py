"""The decision function: (application, deployment, status, observation, now) -> Decision.

Level-triggered and pure: every decision is derived from the spec, the persisted status and
what is observed now, so the operator can be killed at any instant and resume. A decision
completes at most one step; the controller persists the new status before acting on the
next one. Actions are idempotent desired states, re-emitted until the observation shows them.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from lockgate.api.application import ApplicationSpec, NotificationEvent
from lockgate.api.deployment import (
    ACTIONS,
    GATE_TYPES,
    MSG_QUERIES_NEED_PROMETHEUS,
    AnalysisRun,
    BatchStatus,
    DeploymentSpec,
    DeploymentStatus,
    LogEntry,
    MetricsSnapshot,
    Phase,
    RoutesStatus,
    StepStatus,
    Transition,
    Webhook,
    WebhookCall,
    Weights,
)

from .analysis import figures, judge, query_results
from .conditions import conditions_for
from .model import (
    NO_ROUTES,
    AcquireLock,
    Action,
    CallWebhook,
    ClearAction,
    EnsureInstances,
    Event,
    Observation,
    Promote,
    ReleaseLock,
    RoutedUnits,
    Routes,
    SetRoutes,
    SetWeights,
    Supersede,
)
from .plan import Plan, Step, canary_count, canary_load_percent, compile_plan

MAX_TRANSITIONS = 50
MAX_LOG = 100
MAX_ANALYSIS = 30
MAX_WEBHOOK_CALLS = 100
REASK_SECONDS = 5  # a confirm webhook that did not say yes is asked again after this


@dataclass(frozen=True, slots=True)
class DeploymentRef:
    """The Deployment being decided for."""

    name: str
    generation: int
    spec: DeploymentSpec


@dataclass(slots=True)
class Decision:
    status: DeploymentStatus
    actions: list[Action] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    requeue_after: float | None = None  # seconds until a timer of the rollout elapses
    # Seconds until the current step's timed wait (a pause) ends, when the round then moves
    # the rollout on: that round goes before rounds that only look (controller/turns.py).
    step_ends_after: float | None = None


def spec_fingerprint(spec: DeploymentSpec) -> str:
    """Fingerprint of what starts a new revision when changed: application, image, strategy."""
    fingerprint: str = spec.memo("fingerprint", lambda: _fingerprint(spec))
    return fingerprint


def _fingerprint(spec: DeploymentSpec) -> str:
    relevant = {
        "application": spec.application,
        "image": spec.image,
        "strategy": spec.strategy.wire(),
    }
    blob = json.dumps(relevant, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def release_of(name: str, revision: int) -> str:
    return f"{name}/{revision}"


def routed_units(
    app: ApplicationSpec | None, spec: DeploymentSpec, status: DeploymentStatus
) -> RoutedUnits | None:
    """Which units serve each side at the step the status is at, when that step moves
    traffic unit by unit (a Rolling batch); None: every ready instance serves. Rolling back,
    or restoring a failed batch, every ready instance serves."""
    at = status.step
    if app is None or at is None or at.restoring or status.phase not in ("Progressing", "Paused"):
        return None
    steps = compile_plan(app, spec, has_stable=status.previous_image is not None).steps
    step = steps[min(at.index, len(steps) - 1)]
    if step.weight is not None:
        return None
    return RoutedUnits(step.traffic_canary, step.traffic_stable)


def safe_weights(canary_weight: int, canary_ready: int, stable_ready: int) -> tuple[int, int]:
    """(stable, canary) summing to 100, giving traffic only to a side with healthy instances."""
    if canary_ready == 0:
        return (100, 0)
    if stable_ready == 0:
        return (0, 100)
    canary_weight = max(0, min(100, canary_weight))
    return (100 - canary_weight, canary_weight)


def analysis_window_start(
    spec: DeploymentSpec, status: DeploymentStatus, now: datetime
) -> datetime | None:
    """Start of the analysis window when a run is due now; the controller then collects
    metrics for [start, now] and passes them in the observation. None when nothing is due."""
    if spec.analysis is None or status.phase not in ("Progressing", "Paused"):
        return None
    if status.step is None or status.step.restoring or not status.weights:
        return None
    if status.weights.canary <= 0 and not routed_to_canary(status):
        return None
    base = analysis_base(status)
    if base is None:
        return None
    due = base + timedelta(seconds=spec.analysis.interval_seconds)
    return base if now >= due else None


def analysis_base(status: DeploymentStatus) -> datetime | None:
    """What the next analysis window counts its interval from: the latest of the last
    analysis, the step's start and the step's weights going live (the last analysis alone
    before a step has started)."""
    step = status.step
    if step is None or step.started_at is None:
        return status.last_analysis_at
    return max(
        t for t in (status.last_analysis_at, step.weights_live_at, step.started_at) if t is not None
    )


def routed_to_canary(status: DeploymentStatus) -> bool:
    """Requests reach the canary beside the weights: a header route or a mirror is live."""
    routes = status.routes
    return routes is not None and (bool(routes.header_route) or routes.mirror_percent > 0)


def routes_status(routes: Routes) -> RoutesStatus:
    return RoutesStatus(
        header_route=[r.describe() for r in routes.header], mirror_percent=routes.mirror
    )


def phase_event(before: Phase, after: Phase) -> NotificationEvent | None:
    """The notification event of a phase change: Progressing is Started when the rollout
    starts (resuming from Paused is no event of its own: a promote records Promoted);
    Pending and Queued are none."""
    if after == "Progressing":
        return "Started" if before in ("Pending", "Queued") else None
    return PHASE_EVENTS.get(after)


PHASE_EVENTS: dict[str, NotificationEvent] = {
    "Paused": "Paused",
    "Succeeded": "Succeeded",
    "RollingBack": "RollingBack",
    "RolledBack": "RolledBack",
    "Failed": "Failed",
    "Aborted": "Aborted",
}


def decide(
    app: ApplicationSpec | None,
    deployment: DeploymentRef,
    status: DeploymentStatus,
    obs: Observation,
    now: datetime,
) -> Decision:
    run = _Run(app, deployment, status, obs, now)
    run.decide()
    return run.result()


class _Run:
    """One decision in the making: a shallow copy of the status plus actions and events."""

    def __init__(
        self,
        app: ApplicationSpec | None,
        dep: DeploymentRef,
        status: DeploymentStatus,
        obs: Observation,
        now: datetime,
    ) -> None:
        self.app = app
        self.dep = dep
        self.spec = dep.spec
        self.obs = obs
        self.now = now
        self.s = status.model_copy()
        self.actions: list[Action] = []
        self.events: list[Event] = []
        self.wakeups: list[datetime] = []
        self.step_ends: datetime | None = None
        self._plan: Plan | None = None
        self._release = ""
        self._release_revision = -1
        # The due analysis window cannot be judged yet (its figures begin after it did): the
        # step may not complete in this decision.
        self.collecting = False

    # ----------------------------------------------------------------- bookkeeping

    @property
    def release(self) -> str:
        revision = self.s.revision
        if revision != self._release_revision:
            self._release = release_of(self.dep.name, revision)
            self._release_revision = revision
        return self._release

    def log(self, message: str, level: Literal["Info", "Warning", "Error"] = "Info") -> None:
        entry = LogEntry(at=self.now, level=level, message=message)
        self.s.log = [*self.s.log, entry][-MAX_LOG:]

    def event(self, reason: str, message: str, warning: bool = False) -> None:
        self.events.append(Event("Warning" if warning else "Normal", reason, message))

    def transition(self, phase: Phase, message: str, event: NotificationEvent | None) -> None:
        """Record a stage transition with the traffic split and the latest analysis figures
        (the history logs each one with a metrics snapshot; notifications carry it)."""
        s = self.s
        last = s.transitions[-1] if s.transitions else None
        seq = (last.seq + 1) if last is not None and last.seq is not None else len(s.transitions)
        run = s.analysis[-1] if s.analysis else None
        snapshot = (
            MetricsSnapshot(
                at=run.at, step=run.step, canary=run.canary, stable=run.stable, verdict=run.verdict
            )
            if run is not None and (run.canary is not None or run.stable is not None)
            else None
        )
        entry = Transition(
            phase=phase,
            at=self.now,
            message=message,
            seq=seq,
            event=event,
            step=s.step.index if s.step is not None else None,
            weights=s.weights,
            metrics=snapshot,
        )
        s.transitions = [*s.transitions, entry][-MAX_TRANSITIONS:]

    def enter(self, phase: Phase, message: str, *, warning: bool = False) -> None:
        if self.s.phase != phase or not self.s.transitions:
            self.transition(phase, message, phase_event(self.s.phase, phase))
            self.event(phase, message, warning)
            self.log(f"{phase}: {message}", "Warning" if warning else "Info")
            if phase == "Succeeded":
                self.tell("postRollout")
            elif phase == "RollingBack" or (phase == "Failed" and self.s.started_at is not None):
                self.tell("rollback")
        self.s.phase = phase
        self.s.message = message

    def say(self, message: str, *, warning: bool = False, reason: str = "Waiting") -> None:
        """Set the summary message; log and emit an Event only when it changes."""
        if self.s.message != message:
            self.log(message, "Warning" if warning else "Info")
            self.event(reason, message, warning)
        self.s.message = message

    def emit(self, action: Action) -> None:
        if action not in self.actions:
            self.actions.append(action)

    # ----------------------------------------------------------------- webhooks

    def webhook_call(self, name: str, kind: str, step: int | None) -> WebhookCall | None:
        for call in self.s.webhooks:
            if call.name == name and call.type == kind and call.step == step:
                return call
        return None

    def ask(self, hook: Webhook, step: int | None, before: WebhookCall | None) -> WebhookCall:
        """Record a call of `hook` in status and ask the controller to make it (after the
        status is written, so an operator restart never repeats a recorded call unasked)."""
        call = WebhookCall(
            name=hook.name,
            type=hook.type,
            step=step,
            calls=before.calls + 1 if before else 1,
            at=self.now,
            answer=before.answer if before else None,
        )
        calls = [c for c in self.s.webhooks if c is not before]
        if len(calls) >= MAX_WEBHOOK_CALLS:
            done = [c for c in calls if not c.pending]
            if done:
                calls.remove(done[0])
        self.s.webhooks = [*calls, call]
        self.emit(CallWebhook(hook.name, call.call_id))
        return call

    def tell(self, kind: str) -> None:
        """Call the informational webhooks of `kind` once in this attempt."""
        for hook in self.spec.hooks(kind):
            if self.webhook_call(hook.name, kind, None) is None:
                self.ask(hook, None, None)

    def intake_webhooks(self) -> None:
        """Record the answers that came back for the calls waiting for one."""
        answers = self.obs.webhooks
        if not answers or not self.s.webhooks:
            return
        urls = {hook.name: hook.shown_url for hook in self.spec.webhooks}
        calls = list(self.s.webhooks)
        for i, call in enumerate(calls):
            answer = answers.get(call.call_id) if call.pending else None
            if answer is None:
                continue
            text = answer.describe()
            where = f"{call.type} webhook {call.name} ({urls.get(call.name, 'removed')})"
            if call.type not in GATE_TYPES and not answer.ok:
                self.log(f"{where}: {text} (informational: the rollout goes on)", "Warning")
                self.event("WebhookFailed", f"{where}: {text}", warning=True)
            elif call.type not in GATE_TYPES:
                self.log(f"{where}: {text}")
            elif text != call.answer:
                self.log(f"{where}: {text}", "Info" if answer.ok else "Warning")
            calls[i] = call.model_copy(
                update={
                    "pending": False,
                    "answer": text,
                    "passed": answer.ok,
                    "answered_at": self.now,
                }
            )
        self.s.webhooks = calls

    def pre_rollout(self) -> bool:
        """True when every preRollout webhook said yes; a refusal fails the rollout before
        anything started."""
        waiting: Webhook | None = None
        for hook in self.spec.hooks("preRollout"):
            call = self.webhook_call(hook.name, "preRollout", None)
            if call is None:
                call = self.ask(hook, None, None)
            if call.pending:
                waiting = waiting or hook
                continue
            if not call.passed:
                self.emit(ReleaseLock())
                self.s.finished_at = self.now
                self.enter(
                    "Failed",
                    f"refused before start: preRollout webhook {hook.name} "
                    f"({hook.shown_url}): {call.answer}",
                    warning=True,
                )
                return False
        if waiting is not None:
            self.say(f"waiting for preRollout webhook {waiting.name}", reason="WebhookWaiting")
            return False
        return True

    def confirm_pending(self, step: Step) -> bool:
        """The step waits for its confirm webhooks."""
        assert self.s.step is not None
        return (
            step.confirm is not None
            and not self.s.step.confirmed
            and not self.s.skip_waits
            and bool(self.spec.hooks(step.confirm))
        )

    def confirm(self, plan: Plan, index: int, step: Step) -> bool:
        """True when the step may begin: its confirm webhooks all said yes. Until then the
        rollout holds what the step before set up, asks again every REASK_SECONDS, and fails
        at the step's progress deadline, naming the webhook."""
        s = self.s
        assert s.step is not None
        if not self.confirm_pending(step):
            return True
        assert step.confirm is not None
        kind = step.confirm
        started = s.step.started_at or self.now
        waiting: list[tuple[Webhook, WebhookCall]] = []
        for hook in self.spec.hooks(kind):
            call = self.webhook_call(hook.name, kind, index)
            fresh = call is not None and call.at >= started  # asked in this visit of the step
            if fresh and call is not None and call.passed and not call.pending:
                continue
            if call is None or not fresh:
                call = self.ask(hook, index, call)
            elif not call.pending:
                again = (call.answered_at or call.at) + timedelta(seconds=REASK_SECONDS)
                if self.now >= again:
                    call = self.ask(hook, index, call)
                else:
                    self.wakeups.append(again)
            waiting.append((hook, call))
        if not waiting:
            # The step's own waits get their whole deadline from here.
            s.step = s.step.model_copy(update={"confirmed": True, "started_at": self.now})
            self.log(f"step {index + 1}: {kind} webhooks said yes")
            return True
        if index > 0:  # hold what the step before set up
            before = plan.steps[index - 1]
            self.ensure_canary(before.canary_units)
            self.hold_traffic(before)
        hook, call = waiting[0]
        limit = self.spec.progress_deadline_seconds
        deadline = started + timedelta(seconds=limit)
        if self.now >= deadline:
            self.fail(
                f"step {index + 1} ({step.description}): {kind} webhook {hook.name} "
                f"({hook.shown_url}) did not say yes within progressDeadlineSeconds {limit} "
                f"(last answer: {call.answer or 'none'})"
            )
            return False
        self.wakeups.append(deadline)
        self.say(
            f"waiting for {kind} webhook {hook.name}: {call.answer or 'asked, no answer yet'}",
            reason="WebhookWaiting",
        )
        return False

    def plan(self) -> Plan:
        if self._plan is None:
            assert self.app is not None
            self._plan = compile_plan(
                self.app, self.spec, has_stable=self.s.previous_image is not None
            )
        return self._plan

    def take_action(self) -> str | None:
        """The pending action, applied only once its annotation is gone (two-phase, so a
        crash between status write and annotation removal never applies it twice)."""
        if self.obs.action is not None or self.s.pending_action is None:
            return None
        action = self.s.pending_action
        self.s.pending_action = None
        return action

    def ignore(self, action: str, why: str) -> None:
        self.log(f"action {action} ignored: {why}", "Warning")
        self.event("ActionIgnored", f"{action} ignored: {why}", warning=True)

    def result(self) -> Decision:
        s = self.s
        s.observed_generation = self.dep.generation
        if self.obs.live_weights is not None and s.phase not in ("Pending", "Queued"):
            stable, canary = self.obs.live_weights
            if s.weights is None or (s.weights.stable, s.weights.canary) != (stable, canary):
                s.weights = Weights(stable=stable, canary=canary)
        live_routes = self.obs.live_routes
        # Only once a rollout used them: a weights-only status stays as it was.
        if (
            live_routes is not None
            and s.phase not in ("Pending", "Queued")
            and (live_routes != NO_ROUTES or s.routes is not None)
        ):
            wanted = routes_status(live_routes)
            if s.routes != wanted:
                s.routes = wanted
        s.conditions = conditions_for(
            s.phase, s.message or "", self.dep.generation, s.conditions, self.now
        )
        requeue = None
        if self.wakeups:
            requeue = max(0.0, (min(self.wakeups) - self.now).total_seconds())
        step_ends = None
        if self.step_ends is not None:
            step_ends = max(0.0, (self.step_ends - self.now).total_seconds())
        return Decision(s, self.actions, self.events, requeue, step_ends)

    # ----------------------------------------------------------------- top level

    def decide(self) -> None:
        self.intake_webhooks()
        self.revision()
        self.intake_action()
        phase = self.s.phase
        if phase in ("Pending", "Queued"):
            self.admit()
        elif phase in ("Progressing", "Paused"):
            self.progress()
        elif phase == "RollingBack":
            self.roll_back()
        else:
            self.finished()

    def revision(self) -> None:
        s = self.s
        fingerprint = spec_fingerprint(self.spec)
        if s.spec_hash == fingerprint:
            return
        if s.phase in ("Progressing", "Paused"):
            self.fail(
                f"spec changed: revision {s.revision + 1} replaces this rollout", aborted=True
            )
            return
        if s.phase == "RollingBack":
            return  # finish putting the previous version back first
        s.revision += 1
        s.spec_hash = fingerprint
        s.image = self.spec.image
        s.attempt = 0
        self.reset()
        self.log(f"revision {s.revision}: roll out {self.spec.image}")
        self.enter("Pending", f"revision {s.revision} of {self.spec.image} waiting to start")

    def reset(self) -> None:
        s = self.s
        s.previous_image = None
        s.step = None
        s.batches = []
        s.consecutive_failures = 0
        s.last_analysis_at = None
        s.failure = None
        s.aborted = False
        s.skip_waits = False
        s.pending_action = None
        s.started_at = None
        s.finished_at = None
        s.webhooks = []

    def intake_action(self) -> None:
        action = self.obs.action
        if action is None:
            return
        if action not in ACTIONS:
            self.log(f"unknown action {action!r} (expected one of {', '.join(ACTIONS)})", "Warning")
            self.event("UnknownAction", f"unknown action {action!r}", warning=True)
        elif self.s.pending_action is None:
            self.s.pending_action = action  # type: ignore[assignment]
            self.log(f"action {action} received")
        elif action != self.s.pending_action:
            # The annotation is removed below: say so rather than lose the action unseen.
            self.ignore(action, f"{self.s.pending_action} is pending")
        self.emit(ClearAction())

    # ----------------------------------------------------------------- Pending / Queued

    def admit(self) -> None:
        s, obs = self.s, self.obs
        action = self.take_action()
        if action == "abort":
            if obs.lock_holder == self.dep.name:
                self.emit(ReleaseLock())
            s.finished_at = self.now
            self.enter("Aborted", "aborted before it started")
            return
        if action is not None:
            self.ignore(action, f"the rollout has not started ({s.phase})")
        if self.app is None:
            self.say(
                f"application {self.spec.application!r} not found",
                warning=True,
                reason="ApplicationNotFound",
            )
            return
        problem = cross_check(self.app, self.spec)
        if problem:
            s.finished_at = self.now
            self.enter("Failed", problem, warning=True)
            return
        if self.spec.paused:
            self.say("paused by spec.paused before it started", reason="Paused")
            return
        holder = obs.lock_holder
        if obs.refusal and (holder == self.dep.name or holder is None):
            if holder == self.dep.name:
                self.emit(ReleaseLock())
            s.finished_at = self.now
            self.enter("Failed", f"refused before start: {obs.refusal}", warning=True)
            return
        if holder == self.dep.name:
            if self.pre_rollout():
                self.start()
        elif holder is None and obs.queued_ahead == 0:
            self.emit(AcquireLock())
            self.say("starting", reason="Starting")
        elif holder is None:
            self.enter("Queued", f"queued behind {obs.queued_ahead} earlier Deployment(s)")
        elif self.spec.concurrency_policy == "Replace":
            self.emit(Supersede(holder))
            self.enter("Queued", f"replacing {holder}: waiting for it to roll back")
        else:
            self.enter("Queued", f"waiting for {holder} to finish")

    def start(self) -> None:
        s = self.s
        s.previous_image = self.obs.stable.image
        plan = self.plan()
        first = plan.steps[0]
        s.step = StepStatus(
            index=0, total=len(plan.steps), description=first.description, started_at=self.now
        )
        s.batches = [
            BatchStatus(index=b, targets=list(units)) for b, units in enumerate(plan.batches)
        ]
        self.begin_batch(first)
        s.started_at = self.now
        s.finished_at = None
        s.consecutive_failures = 0
        s.last_analysis_at = None
        s.failure = None
        s.aborted = False
        s.skip_waits = False
        how = "initial rollout (no previous version)" if plan.initial else self.spec.strategy.type
        self.enter(
            "Progressing",
            f"rolling out {s.image} (revision {s.revision}, {how}, {len(plan.steps)} steps)",
        )

    # ----------------------------------------------------------------- Progressing / Paused

    def progress(self) -> None:
        s = self.s
        if self.app is None:
            self.fail(f"application {self.spec.application!r} was deleted")
            return
        plan = self.plan()
        assert s.step is not None
        index = min(s.step.index, len(plan.steps) - 1)
        step = plan.steps[index]

        # Once the promote step has swapped the roles, the new version is the stable one and
        # the previous one is on its way out: a rollback would only remove it and report the
        # previous version restored. What is left is to finish the promotion.
        promoted = step.kind == "promote" and self.obs.stable.release == self.release
        action = self.take_action()
        if action == "abort" and not promoted:
            self.fail("aborted by the lockgate.dev/action annotation", aborted=True)
            return
        if s.pending_action == "abort" and not promoted and self.obs.stable.ready:
            # Taking the abort waits for its annotation's removal (two-phase: two rounds and
            # two writes later); taking traffic off the new version needs no such care.
            self.traffic_to_stable()
            return
        if self.obs.superseded_by and not promoted:
            self.fail(f"superseded by {self.obs.superseded_by}", aborted=True)
            return
        if action == "abort":
            self.ignore(action, "the new version is already stable; the promotion completes")
        elif action == "retry":
            self.ignore(action, "retry applies after a rollback or failure")
        elif action == "promote-full":
            s.skip_waits = True
            target = plan.full_promotion_index()
            self.log("promote-full: skipping remaining pauses and analysis gates")
            self.event("PromotedFull", "skipping remaining pauses and analysis gates")
            self.transition(
                s.phase, "promote-full: skipping remaining pauses and analysis gates", "Promoted"
            )
            if target > index:
                self.jump(plan, target)
                return
        elif action == "promote":
            if step.kind == "pause" or (step.gate and s.step.weights_live_at is not None):
                self.log(f"promoted past step {index + 1}: {step.description}")
                self.event("Promoted", f"promoted past step {index + 1}: {step.description}")
                self.transition(
                    s.phase, f"promoted past step {index + 1}: {step.description}", "Promoted"
                )
                self.advance(plan, index)
                return
            if self.confirm_pending(step):
                s.step = s.step.model_copy(update={"confirmed": True})
                message = f"promote passed the {step.confirm} webhooks of step {index + 1}"
                self.log(message)
                self.event("Promoted", message)
            else:
                self.ignore(
                    action,
                    f"step {index + 1} ({step.description}) waits for instances or "
                    "traffic, not for a promote",
                )

        if self.spec.paused:
            if s.phase != "Paused" or s.message != "paused by spec.paused":
                self.enter("Paused", "paused by spec.paused")
            self.hold_traffic(step)
            self.analyse(plan, step)
            return
        if s.phase == "Paused" and not step.waits_for_promote:
            s.step = s.step.model_copy(update={"started_at": self.now})  # timed waits restart
            self.enter("Progressing", f"resumed at step {index + 1}: {step.description}")
        elif s.phase == "Progressing" and step.waits_for_promote:
            self.enter("Paused", f"waiting for promote at step {index + 1}")

        if self.analyse(plan, step):
            return
        if s.step.restoring:
            self.restore_batch(plan, step)
            return
        if not self.confirm(plan, index, step):
            return
        broken = self.broken_units(step)
        if broken:
            self.step_failed(plan, step, broken)
            return
        if self.execute(plan, step):
            if not self.collecting:  # else it completes once the due window is judged
                self.advance(plan, index)
        else:
            self.check_deadline(plan, step)

    def broken_units(self, step: Step) -> str | None:
        """Why the step cannot complete: a unit it still has to change is unreachable or
        failed its last action (a host's daemon stopped, an image that cannot be pulled)."""
        errors = self.obs.unit_errors
        if not errors:
            return None
        pending = set(step.canary_units) - self.canary_ready()
        pending |= set(self.obs.stable.units) - set(step.stable_units)
        named = [f"host {u}: {errors[u]}" for u in sorted(pending) if u in errors]
        return "; ".join(named) or None

    def canary_ready(self) -> set[str]:
        obs = self.obs
        return set(obs.canary.ready) if obs.canary.release == self.release else set()

    def target_weights(self, step: Step) -> tuple[int, int]:
        canary_ready = self.canary_ready() & set(step.canary_units)
        stable_ready = set(self.obs.stable.ready)
        if step.weight is None:
            c = len(canary_ready & set(step.traffic_canary))
            t = len(stable_ready & set(step.traffic_stable))
            weight = round(100 * c / (c + t)) if c + t else 0
        else:
            weight = step.weight
        return safe_weights(weight, len(canary_ready), len(stable_ready))

    def canary_withheld(self, step: Step) -> bool:
        """The step gives the canary weight, but none of its instances is ready to take it:
        the split held meanwhile (all to stable) is not the step's, so the step is not done
        (it completed on that split once, and the next step waited on 100% forever)."""
        return step.weight is not None and step.weight > 0 and self.target_weights(step)[1] == 0

    def hold_weights(self, step: Step) -> bool:
        """Ask for the step's traffic split; True when it is live."""
        if step.kind == "promote" and not self.obs.stable.ready and not self.canary_ready():
            # As the promotion itself does: with nothing ready on either side no split
            # helps, and all to an old set with no instance left cuts off the new one's
            # recovery (paused at the promotion, it asked for exactly that).
            return self.obs.live_weights is not None
        target = self.target_weights(step)
        if self.obs.live_weights != target:
            self.emit(SetWeights(*target))
            return False
        return True

    def target_routes(self, step: Step) -> Routes:
        """The step's header route and mirror, once a canary instance of the step is ready
        to receive them (never a route to instances that have not passed their check)."""
        if not step.routes or not self.canary_ready() & set(step.canary_units):
            return NO_ROUTES
        return step.routes

    def hold_routes(self, step: Step) -> bool:
        """Ask for the step's header route and mirror; True when they are live."""
        return self.routes_to(self.target_routes(step))

    def routes_to(self, target: Routes) -> bool:
        live = self.obs.live_routes
        if live != target:
            self.emit(SetRoutes(target))
            return False
        return True

    def hold_traffic(self, step: Step) -> bool:
        """Weights and routes of the step; True when both are live."""
        weights = self.hold_weights(step)
        routes = self.hold_routes(step)
        return weights and routes

    def ensure_canary(self, units: tuple[str, ...]) -> None:
        obs = self.obs
        differs = (
            obs.canary.release != self.release
            or set(obs.canary.units) != set(units)
            or bool(set(obs.canary.incomplete) & set(units))
        )
        if differs and (obs.canary.release == self.release or obs.canary.units or units):
            self.emit(EnsureInstances("canary", self.s.image, units, self.release))

    def ensure_stable(self, units: tuple[str, ...], plan: Plan) -> bool:
        """Ask for the stable set on exactly `units`; removing instances waits while it would
        leave fewer than minHealthy healthy instances serving. True when already so."""
        obs = self.obs
        current = set(obs.stable.units)
        if current == set(units) and not set(obs.stable.incomplete) & current:
            return True
        removing = current - set(units)
        if removing:
            healthy_after = len(set(obs.stable.ready) - removing) + len(self.canary_ready())
            if healthy_after < plan.min_healthy:
                self.say(
                    f"waiting: draining {', '.join(sorted(removing))} would leave "
                    f"{healthy_after} healthy < minHealthy {plan.min_healthy}",
                    warning=True,
                    reason="MinHealthy",
                )
                return False
        self.emit(EnsureInstances("stable", self.s.previous_image, units, obs.stable.release))
        return False

    def execute(self, plan: Plan, step: Step) -> bool:
        """Emit what the step needs; True when the observation shows it complete."""
        s = self.s
        assert s.step is not None
        if step.kind == "promote":
            return self.promote(step)
        self.ensure_canary(step.canary_units)
        if step.kind == "drain":
            # Instances leave only once the split without them is live: the one the step
            # before confirmed can be out of date (a canary that was down then is up now).
            # With no instance ready on either side no split can matter, and none is ever
            # confirmed: Traefik drops a weighted service whose Services have no endpoints.
            nothing_to_serve = not self.obs.stable.ready and not self.canary_ready()
            return (self.hold_weights(step) or nothing_to_serve) and self.ensure_stable(
                step.stable_units, plan
            )
        self.ensure_stable(step.stable_units, plan)
        weights_live = self.hold_traffic(step)
        if step.kind == "start":
            return set(step.canary_units) <= self.canary_ready()
        if step.kind == "shift":
            if not weights_live or self.canary_withheld(step):
                return False
            if s.step.weights_live_at is None:
                s.step = s.step.model_copy(update={"weights_live_at": self.now})
                stable, canary = self.target_weights(step)
                extra = f", {step.routes.describe()}" if step.routes else ""
                self.log(f"traffic live: stable {stable}% / canary {canary}%{extra}")
            if step.gate and not (s.step.analysis_passed or s.skip_waits):
                # While collecting, the analysis has said why (two messages in one round
                # would each log on every round).
                if self.spec.analysis and not self.collecting:
                    self.say(
                        f"step {s.step.index + 1}: waiting for a passed analysis", reason="Analysis"
                    )
                return False
            return True
        # pause
        if s.skip_waits:
            return True
        if self.spec.analysis is not None:
            if not weights_live:
                # The proxy does not serve the split this pause holds: an operator killed
                # while traffic changed (between a failed analysis's switch back to stable
                # and the status recording it) comes back to a pause at 0% canary, where no
                # analysis runs. Its wait restarts once the split is live again, so it never
                # ends on traffic nobody judged (as a timed wait restarts after
                # spec.paused); meanwhile progressDeadlineSeconds counts from when the
                # split stopped being live.
                if s.step.weights_live_at is not None:
                    s.step = s.step.model_copy(
                        update={"started_at": self.now, "weights_live_at": None}
                    )
                return False
            if s.step.weights_live_at is None:
                s.step = s.step.model_copy(
                    update={"started_at": self.now, "weights_live_at": self.now}
                )
        if step.seconds is None:
            return False
        started = s.step.started_at or self.now
        ends = started + timedelta(seconds=step.seconds)
        if self.now >= ends:
            return True
        self.wakeups.append(ends)
        self.step_ends = ends
        return False

    def promote(self, step: Step) -> bool:
        obs = self.obs
        if not self.routes_to(NO_ROUTES):
            # The header route and the mirror go first: they point at the canary's own
            # backend, which the promotion re-purposes.
            return False
        if obs.stable.release != self.release:
            self.ensure_canary(step.canary_units)
            if not set(step.canary_units) <= self.canary_ready():
                # A canary that lost every ready instance gets no traffic while it recovers
                # (the split before the promotion gave it all).
                if not self.canary_ready() and obs.stable.ready and obs.live_weights != (100, 0):
                    self.emit(SetWeights(100, 0))
                return False
            if obs.live_weights != (0, 100):
                self.emit(SetWeights(0, 100))
                return False
            self.emit(Promote(self.release, self.s.image or self.spec.image))
            return False
        if obs.live_weights != (100, 0):
            self.emit(SetWeights(100, 0))
            return False
        if obs.canary.units:
            self.emit(EnsureInstances("canary", None, (), None))
            return False
        return True

    def begin_batch(self, step: Step) -> None:
        if step.batch is None or step.batch >= len(self.s.batches):
            return
        batches = list(self.s.batches)
        batch = batches[step.batch]
        if batch.state in ("Pending", "RolledBack"):
            batches[step.batch] = batch.model_copy(
                update={
                    "state": "Running",
                    "started_at": self.now,
                    "finished_at": None,
                    "attempts": batch.attempts + 1,
                }
            )
            self.s.batches = batches

    def end_batch(self, batch_index: int, state: str, reason: str | None = None) -> None:
        batches = list(self.s.batches)
        batch = batches[batch_index]
        update: dict[str, object] = {"state": state, "finished_at": self.now, "reason": reason}
        if state == "Failed":
            update["failures"] = batch.failures + 1
        batches[batch_index] = batch.model_copy(update=update)
        self.s.batches = batches

    def advance(self, plan: Plan, index: int) -> None:
        s = self.s
        step = plan.steps[index]
        total = len(plan.steps)
        self.log(f"step {index + 1}/{total} done: {step.description}")
        if index + 1 >= total:
            self.succeed()
            return
        self.transition(
            s.phase, f"step {index + 1}/{total} done: {step.description}", "StepCompleted"
        )
        nxt = plan.steps[index + 1]
        if step.batch is not None and nxt.batch != step.batch:
            self.end_batch(step.batch, "Succeeded")
        s.step = StepStatus(
            index=index + 1,
            total=total,
            description=nxt.description,
            started_at=self.now,
            # A pause holds the split the step before it confirmed live.
            weights_live_at=self.now if nxt.kind == "pause" else None,
        )
        self.begin_batch(nxt)
        if nxt.waits_for_promote:
            self.enter("Paused", f"waiting for promote at step {index + 2}")
        elif s.phase == "Paused" and not self.spec.paused:
            self.enter("Progressing", f"step {index + 2}/{total}: {nxt.description}")
        else:
            self.s.message = f"step {index + 2}/{total}: {nxt.description}"

    def jump(self, plan: Plan, index: int) -> None:
        s = self.s
        step = plan.steps[index]
        s.step = StepStatus(
            index=index, total=len(plan.steps), description=step.description, started_at=self.now
        )
        self.begin_batch(step)
        if s.phase == "Paused" and not self.spec.paused:
            self.enter("Progressing", f"promoted to step {index + 1}: {step.description}")

    def succeed(self) -> None:
        s = self.s
        s.finished_at = self.now
        s.step = s.step.model_copy(update={"description": "done"}) if s.step else None
        if self.obs.lock_holder == self.dep.name:
            self.emit(ReleaseLock())
        self.enter("Succeeded", f"rolled out {s.image}")

    def check_deadline(self, plan: Plan, step: Step) -> None:
        s = self.s
        assert s.step is not None
        if s.step.started_at is None:
            return
        if step.kind == "pause" and (self.spec.analysis is None or s.step.weights_live_at):
            return  # a pause waits as long as it says (its split is live, or unjudged)
        if step.kind == "promote" and self.obs.stable.release == self.release:
            return  # the new version is the stable one: there is nothing left to go back to
        deadline = s.step.started_at + timedelta(seconds=self.spec.progress_deadline_seconds)
        if self.now < deadline:
            self.wakeups.append(deadline)
            return
        limit = self.spec.progress_deadline_seconds
        if step.kind == "start":
            ready = len(self.canary_ready() & set(step.canary_units))
            reason = (
                f"{ready}/{len(step.canary_units)} new instance(s) ready after "
                f"progressDeadlineSeconds {limit}"
            )
        elif step.kind == "shift" and s.step.weights_live_at is not None:
            last = s.analysis[-1].reason if s.analysis else "no analysis ran"
            reason = f"no passed analysis within progressDeadlineSeconds {limit} ({last})"
        elif step.kind in ("shift", "pause"):
            reason = f"traffic split not confirmed live within progressDeadlineSeconds {limit}"
        elif step.kind == "promote":
            ready = len(self.canary_ready() & set(step.canary_units))
            reason = (
                f"{ready}/{len(step.canary_units)} new instance(s) ready, 100% to them "
                f"{'live' if self.obs.live_weights == (0, 100) else 'not confirmed live'} "
                f"after progressDeadlineSeconds {limit}"
            )
        else:
            reason = f"old instances not drained within progressDeadlineSeconds {limit}"
        self.step_failed(plan, step, f"step {s.step.index + 1} ({step.description}): {reason}")

    def step_failed(self, plan: Plan, step: Step, reason: str) -> None:
        s = self.s
        if step.batch is None:
            self.fail(reason)
            return
        self.end_batch(step.batch, "Failed", reason)
        failures = sum(b.failures for b in s.batches)
        if failures >= plan.failure_threshold:
            self.fail(f"batch {step.batch + 1} failed: {reason}")
            return
        start = plan.batch_start(step.batch)
        s.step = StepStatus(
            index=start,
            total=len(plan.steps),
            restoring=True,
            description=f"rolling back batch {step.batch + 1}",
            started_at=self.now,
        )
        self.say(
            f"batch {step.batch + 1} failed ({failures}/{plan.failure_threshold}), rolling it "
            f"back to retry: {reason}",
            warning=True,
            reason="BatchFailed",
        )

    def restore_batch(self, plan: Plan, step: Step) -> None:
        s = self.s
        assert s.step is not None and step.batch is not None
        index = s.step.index
        target = plan.steps[index - 1] if index > 0 else self.everything_stable()
        if self.restore(target, plan):
            self.end_batch(step.batch, "RolledBack")
            s.step = StepStatus(
                index=index,
                total=len(plan.steps),
                description=step.description,
                started_at=self.now,
            )
            self.begin_batch(step)
            self.say(f"retrying batch {step.batch + 1}", reason="BatchRetry")
            return
        deadline = (s.step.started_at or self.now) + timedelta(
            seconds=self.spec.progress_deadline_seconds
        )
        if self.now >= deadline:
            self.fail(
                f"batch {step.batch + 1} could not be rolled back within "
                f"progressDeadlineSeconds {self.spec.progress_deadline_seconds}"
            )
        else:
            self.wakeups.append(deadline)

    # ----------------------------------------------------------------- analysis

    def analyse(self, plan: Plan, step: Step) -> bool:
        """Run a due analysis; True when it failed the rollout."""
        s = self.s
        analysis = self.spec.analysis
        if analysis is None or step.kind == "promote" or s.step is None:
            return False
        start = analysis_window_start(self.spec, s, self.now)
        if start is None:
            # The window's own timer: a waiting rollout sleeps until one (or an event). From
            # the window's own base: counted from the last analysis alone, it was already
            # due once a step started after it, and the driver ran round after round with
            # nothing to do until the window came. A header route or a mirror brings the
            # canary requests at weight 0 too.
            base = analysis_base(s)
            judged = s.weights is not None and (s.weights.canary > 0 or routed_to_canary(s))
            if base is not None and judged:
                self.wakeups.append(base + timedelta(seconds=analysis.interval_seconds))
            return False
        sample = self.obs.metrics
        if sample is None:
            return False  # the controller collects it when the window is due
        if sample.since is not None:
            # The source has figures only from `since`: the operator was restarted (and
            # lost its earlier readings of the proxy's counters) after the window began.
            # Judge a whole interval from there, and let no step complete before: else a
            # pause that elapsed while the operator was down would end unjudged.
            judged_at = sample.since + timedelta(seconds=analysis.interval_seconds)
            if self.now < judged_at:
                self.collecting = True
                self.wakeups.append(judged_at)
                self.say(
                    f"step {s.step.index + 1}: analysis collecting figures since "
                    f"{sample.since:%H:%M:%S} (the operator started after the window began)",
                    reason="Analysis",
                )
                return False
        # Units still starting in this step are judged by the step's deadline, not here.
        serving = (
            step if step.kind != "start" or s.step.index == 0 else plan.steps[s.step.index - 1]
        )
        wanted = set(serving.canary_units) if serving.kind != "start" else set()
        judgement = judge(
            analysis,
            sample,
            canary_ready=len(self.canary_ready() & wanted),
            canary_wanted=len(wanted),
        )
        canary, stable = figures(sample)
        record = AnalysisRun(
            step=s.step.index,
            at=self.now,
            canary=canary,
            stable=stable,
            queries=query_results(sample),
            source=sample.source,
            verdict=judgement.verdict,
            reason=judgement.reason,
        )
        s.analysis = [*s.analysis, record][-MAX_ANALYSIS:]
        s.last_analysis_at = self.now
        self.wakeups.append(self.now + timedelta(seconds=analysis.interval_seconds))
        if judgement.verdict == "Failed":
            s.consecutive_failures += 1
            limit = analysis.max_consecutive_failures
            self.log(
                f"analysis failed ({s.consecutive_failures}/{limit}): {judgement.reason}", "Warning"
            )
            self.event(
                "AnalysisFailed",
                f"{judgement.reason} ({s.consecutive_failures}/{limit})",
                warning=True,
            )
            if s.consecutive_failures >= limit:
                self.fail(f"analysis failed at step {s.step.index + 1}: {judgement.reason}")
                return True
        elif judgement.verdict == "Passed":
            s.consecutive_failures = 0
            if step.kind == "shift" and s.step.weights_live_at is not None:
                s.step = s.step.model_copy(update={"analysis_passed": True})
            self.log(f"analysis passed: {judgement.reason}")
        else:
            self.log(f"analysis inconclusive: {judgement.reason}")
        return False

    # ----------------------------------------------------------------- rollback

    def fail(self, reason: str, *, aborted: bool = False) -> None:
        s = self.s
        s.failure = reason
        s.aborted = aborted
        s.pending_action = None
        target = s.previous_image or "no previous version"
        self.traffic_to_stable()  # in this very decision, not one round later
        if aborted or self.spec.rollback.automatic:
            self.enter("RollingBack", f"{reason}; rolling back to {target}", warning=True)
        elif self.traffic_back():
            self.keep_failed()
        else:
            # Failed says the traffic is back: it waits until the proxy routes it so.
            self.enter(
                "RollingBack",
                f"{reason}; returning traffic to {target}, new instances kept",
                warning=True,
            )

    def keeps_new_instances(self) -> bool:
        """A failure without automatic rollback: traffic goes back, new instances stay."""
        return not self.s.aborted and not self.spec.rollback.automatic

    def traffic_back(self) -> bool:
        """The proxy routes everything to stable (or no stable instance is healthy to take
        it) and no header route or mirror is live."""
        obs = self.obs
        weights_back = obs.live_weights == (100, 0) or not obs.stable.ready
        return weights_back and obs.live_routes == NO_ROUTES

    def keep_failed(self) -> None:
        s = self.s
        s.finished_at = self.now
        target = s.previous_image or "no previous version"
        where = (
            f"traffic returned to {target}"
            if self.obs.stable.ready
            else f"no healthy instance of {target} to return traffic to"
        )
        self.enter(
            "Failed",
            f"{s.failure}; {where}, new instances kept (abort removes them, retry starts over)",
            warning=True,
        )

    def traffic_to_stable(self) -> None:
        """All traffic on stable, as far as healthy stable instances allow; no routes."""
        if self.obs.stable.ready and self.obs.live_weights != (100, 0):
            self.emit(SetWeights(100, 0))
        if self.obs.live_routes != NO_ROUTES:
            self.emit(SetRoutes(NO_ROUTES))

    def everything_stable(self) -> Step:
        units = self.app.units() if self.app and self.s.previous_image is not None else ()
        return Step("start", "rollback", (), units, 0)

    def restore(self, target: Step, plan: Plan | None) -> bool:
        """Drive back to `target`: traffic off the new version as far as healthy stable
        instances allow, stable instances back, then the extra new instances removed."""
        obs = self.obs
        canary_ready = self.canary_ready() & set(target.canary_units)
        weights = (
            self.target_weights(target)
            if target.weight is None
            else safe_weights(target.weight, len(canary_ready), len(obs.stable.ready))
        )
        if target.weight == 0 and obs.stable.ready:
            weights = (100, 0)
        elif target.weight == 0 and not target.canary_units and self.canary_ready():
            weights = (0, 100)  # nothing stable is healthy yet: keep serving what answers
        if obs.live_weights != weights:
            self.emit(SetWeights(*weights))
        routes_live = self.routes_to(self.target_routes(target))
        # An unreachable unit cannot be restored now; it keeps whatever it runs and the
        # rollback completes on the others (the outcome names it).
        unreachable = set(obs.unit_errors)
        missing = set(target.stable_units) - set(obs.stable.units) - unreachable
        missing |= set(target.stable_units) & set(obs.stable.incomplete)  # created, not started
        if missing:
            self.emit(
                EnsureInstances(
                    "stable", self.s.previous_image, target.stable_units, obs.stable.release
                )
            )
        wanted = set(target.stable_units) - unreachable
        if not wanted <= set(obs.stable.ready) or obs.live_weights != weights:
            return False
        if not routes_live:
            return False  # no instance leaves while a route may still point at it
        extra = set(obs.canary.units) - set(target.canary_units) - unreachable
        if extra:
            keep = target.canary_units if obs.canary.release == self.release else ()
            self.emit(
                EnsureInstances(
                    "canary", self.s.image if keep else None, keep, self.release if keep else None
                )
            )
            return False
        return True

    def roll_back(self) -> None:
        s = self.s
        action = self.take_action()
        if action == "abort" and self.keeps_new_instances():
            s.aborted = True  # as an abort of the Failed rollout would: new instances go too
            self.log("action abort: new instances removed as well")
        elif action is not None:
            self.ignore(action, "the rollout is rolling back")
        if self.app is not None and self.keeps_new_instances():
            self.traffic_to_stable()
            if self.traffic_back():
                self.keep_failed()
            return
        if self.app is None:
            s.failure = f"{s.failure}; the application and its workloads were deleted"
        elif not self.restore(self.everything_stable(), None):
            return
        s.finished_at = self.now
        if self.obs.lock_holder == self.dep.name:
            self.emit(ReleaseLock())
        target = s.previous_image or "no previous version"
        outcome: Phase = "Aborted" if s.aborted else "RolledBack"
        unreachable = ", ".join(sorted(self.obs.unit_errors))
        left = f" (unreachable, left as found: {unreachable})" if unreachable else ""
        self.enter(outcome, f"{s.failure}; rolled back to {target}{left}", warning=not s.aborted)

    # ----------------------------------------------------------------- finished

    def finished(self) -> None:
        s, obs = self.s, self.obs
        action = self.take_action()
        if s.phase == "Failed" and obs.stable.ready and obs.live_weights not in (None, (100, 0)):
            self.emit(SetWeights(100, 0))  # a failed rollout never keeps traffic
        if s.phase == "Failed" and obs.live_routes not in (None, NO_ROUTES):
            self.emit(SetRoutes(NO_ROUTES))
        if action == "retry" and s.phase in ("RolledBack", "Aborted", "Failed"):
            s.attempt += 1
            self.reset()
            self.enter("Pending", f"retry {s.attempt} of revision {s.revision}")
            return
        if action == "abort" and s.phase == "Failed":
            self.fail(s.failure or "aborted after failure", aborted=True)
            return
        if action is not None:
            self.ignore(action, f"the rollout is {s.phase}")
        if s.phase != "Failed" and obs.lock_holder == self.dep.name:
            self.emit(ReleaseLock())


def cross_check(app: ApplicationSpec, spec: DeploymentSpec) -> str | None:
    """What only the pair of objects can tell (admission sees one object at a time)."""
    canary = spec.strategy.canary
    if canary is not None and canary.canary_hosts is not None and app.docker is None:
        return (
            "spec.strategy.canary.canaryHosts: only allowed when the Application runs on "
            "Docker hosts (spec.docker)"
        )
    if spec.analysis is not None and spec.analysis.queries and app.metrics.prometheus is None:
        return MSG_QUERIES_NEED_PROMETHEUS
    problem = _routes_problem(app, spec)
    if problem:
        return problem
    units = len(app.units())
    if not units:
        return "the Application has no instances to roll out (replicas 0 or no hosts)"
    if canary is not None and canary.canary_hosts is not None:
        count = canary_count(units, 0, canary.canary_hosts)
        limit = canary.max_canary_load_percent
        for weight in canary.weights():
            load = canary_load_percent(units, weight, count)
            if 0 < weight < 100 and load > limit:
                return (
                    f"spec.strategy.canary.canaryHosts: at setWeight {weight} each of the "
                    f"{count} canary host(s) would carry {load}% of what a host carried before "
                    f"the rollout, more than spec.strategy.canary.maxCanaryLoadPercent "
                    f"({limit}%): raise canaryHosts, lower the weight, or leave canaryHosts out "
                    "so that canary hosts grow with the weight"
                )
    rolling = spec.strategy.rolling
    if rolling is not None and isinstance(rolling.min_healthy, int) and rolling.min_healthy > units:
        # Never drainable: the rollout would wait on it until its deadline.
        return (
            f"spec.strategy.rolling.minHealthy: {rolling.min_healthy} is more than the "
            f"Application's {units} instance(s)"
        )
    return None


def _routes_problem(app: ApplicationSpec, spec: DeploymentSpec) -> str | None:
    canary = spec.strategy.canary
    if canary is None:
        return None
    for i, step in enumerate(canary.steps):
        if isinstance(step, int):
            continue
        kind = (
            "setHeaderRoute"
            if step.set_header_route is not None
            else "setMirror"
            if step.set_mirror is not None
            else None
        )
        if kind is None:
            continue
        if app.traffic.gateway_api is not None:
            if kind == "setMirror":
                return (
                    f"spec.strategy.canary.steps[{i}].setMirror: not supported with "
                    "spec.traffic.gatewayAPI on the Application (mirroring needs a "
                    "TraefikService; use spec.traffic.traefik.route)"
                )
        elif app.traffic.traefik.route is None:
            return (
                f"spec.strategy.canary.steps[{i}].{kind}: needs spec.traffic.traefik.route "
                + ("or spec.traffic.gatewayAPI " if kind == "setHeaderRoute" else "")
                + "on the Application (the route it adds to or mirrors)"
            )
        for j, match in enumerate(step.set_header_route.match if step.set_header_route else []):
            if match.regex is not None:
                try:
                    re.compile(match.regex)
                except re.error as err:
                    return (
                        f"spec.strategy.canary.steps[{i}].setHeaderRoute.match[{j}].regex: "
                        f"not a regular expression: {err}"
                    )
    return None
