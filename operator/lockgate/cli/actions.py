"""Which of the plugin's actions make sense when: a pure function of the Deployment as the
API server returns it (a plain dict). Its own module, apart from the views in kubectl_view,
so that `kubectl lockgate abort` (promote, retry, pause, resume) loads only what it needs."""

from __future__ import annotations

from lockgate.names import ACTION_ANNOTATION

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TERMINAL = frozenset({"Succeeded", "RolledBack", "Failed", "Aborted"})
NOT_STARTED = frozenset({"Pending", "Queued"})
RUNNING = frozenset({"Progressing", "Paused"})

# Which phase each action acts in, as the engine (lockgate.engine.decide) handles them: an
# action outside these phases is logged as ignored by the operator, so the plugin refuses it
# up front with the reason.
ACTION_PHASES: dict[str, frozenset[str]] = {
    "promote": RUNNING,
    "promote-full": RUNNING,
    "abort": NOT_STARTED | RUNNING | {"Failed"},
    "retry": frozenset({"RolledBack", "Aborted", "Failed"}),
}

WHY_NOT: dict[str, str] = {
    "promote": "promote moves a running rollout past a pause or analysis gate",
    "promote-full": "promote --full skips the remaining steps of a running rollout",
    "abort": "abort stops a rollout that has not finished (or a Failed one)",
    "retry": "retry starts a rollout again after RolledBack, Aborted or Failed",
}


def keeps_new_instances(spec: dict[str, Any], status: dict[str, Any]) -> bool:
    """A failure without automatic rollback (and not an abort): traffic goes back while the
    new instances stay, as the engine's `keeps_new_instances` decides."""
    automatic = (spec.get("rollback") or {}).get("automatic", True)
    return automatic is False and not status.get("aborted")


def refusal(
    action: str, obj: dict[str, Any], steps: list[tuple[str, bool]] | None = None
) -> str | None:
    """Why `action` would be meaningless for this Deployment now, or None when it applies.

    `action` is one of promote, promote-full, abort, retry, pause, resume. `steps` are the
    (kind, analysis gate) of every step of the rollout when known: then a promote is also
    checked against the current step, as the engine does (a pause, or a gate whose weight is
    live, can be promoted; a step waiting for instances or traffic cannot).
    """
    name = obj.get("metadata", {}).get("name", "?")
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    paused = bool(spec.get("paused"))
    if action == "pause":
        if paused:
            return f"{name} is already paused (spec.paused is true)"
        if phase in TERMINAL or phase == "RollingBack":
            return f"{name} is {phase}: there is no rollout to pause"
        return None
    if action == "resume":
        if not paused:
            return f"{name} is not paused (spec.paused is false)"
        return None
    pending = (obj.get("metadata", {}).get("annotations") or {}).get(ACTION_ANNOTATION)
    if pending:
        return (
            f"{name} already has action {pending!r} waiting for the operator "
            "(is the operator running?)"
        )
    allowed = ACTION_PHASES[action]
    if action == "abort" and phase == "RollingBack" and keeps_new_instances(spec, status):
        return None  # the engine removes the new instances too, as from the Failed to come
    if phase in allowed:
        step = status.get("step") or {}
        if action == "promote" and steps and len(steps) == int(step.get("total", 0)):
            index = min(int(step.get("index", 0)), len(steps) - 1)
            kind, gate = steps[index]
            if not (kind == "pause" or (gate and step.get("weightsLiveAt"))):
                return (
                    f"cannot promote {name} now: step {index + 1} "
                    f"({step.get('description', kind)}) waits for instances or traffic, "
                    "not for a promote (promote --full skips every remaining pause and gate)"
                )
        return None
    shown = "promote --full" if action == "promote-full" else action
    return f"cannot {shown} {name}: it is {phase}; {WHY_NOT[action]}"
