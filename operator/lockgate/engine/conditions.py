"""kstatus-compatible conditions derived from the phase."""

from __future__ import annotations

from datetime import datetime

from lockgate.api.common import Condition

_IN_PROGRESS = {"Pending", "Queued", "Progressing", "RollingBack"}
_TRUE_WHEN: dict[str, set[str]] = {
    "Ready": {"Succeeded"},
    "Progressing": _IN_PROGRESS | {"Paused"},
    "Degraded": {"RolledBack", "Failed"},
    # kstatus reads these two: in progress while Reconciling, failed while Stalled.
    "Reconciling": _IN_PROGRESS,
    "Stalled": {"RolledBack", "Failed", "Aborted"},
}


def conditions_for(
    phase: str, message: str, generation: int, previous: list[Condition], now: datetime
) -> list[Condition]:
    if (
        len(previous) == len(_TRUE_WHEN)
        and previous[0].reason == phase
        and previous[0].message == message
        and previous[0].observed_generation == generation
    ):
        return previous
    old = {c.type: c for c in previous}
    out = []
    for kind, phases in _TRUE_WHEN.items():
        status = "True" if phase in phases else "False"
        before = old.get(kind)
        changed = before is None or before.status != status
        out.append(
            Condition(
                type=kind,
                status=status,
                reason=phase,
                message=message,
                last_transition_time=now
                if changed or before is None
                else before.last_transition_time,
                observed_generation=generation,
            )
        )
    return out
