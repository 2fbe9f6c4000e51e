"""Killing the operator mid-rollout and judging what it did afterwards, for the kill test
(tests/integration/test_operator_kills.py) and the chaos soak (bench/chaos.py).

A kill is recorded as where every rollout in flight stood: read from the API just before the
SIGKILL (what the brief of a chaos run asks for) and again just after it (exact: a dead
operator writes nothing more). A finished rollout is judged from its own status: the phase
its image dictates, and its stage transitions (`status.transitions`, which record every
completed step with its index) walking the plan once, in order, none repeated or skipped.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hack.tools.load import Response, failed
from lockgate.api.deployment import TERMINAL_PHASES
from lockgate.names import GROUP, VERSION

IN_FLIGHT = frozenset({"Progressing", "Paused", "RollingBack"})
# The demo app's tags (hack/demo-app): a bad image answers 5xx or never becomes ready.
BAD_MARKS = ("-errors", "-unready")


def is_bad(image: str) -> bool:
    tag = image.rpartition(":")[2]
    return any(mark in tag for mark in BAD_MARKS)


def expected_phase(image: str) -> str:
    """What a rollout of `image` must end as: a good one Succeeded, a bad one RolledBack."""
    return "RolledBack" if is_bad(image) else "Succeeded"


def version_of(image: str) -> str:
    """The X-Version the demo app answers with: the tag without its behaviour modifiers."""
    tag = image.rpartition(":")[2]
    return tag.split("-", 1)[0]


@dataclass(frozen=True)
class Position:
    """Where one rollout stood."""

    phase: str | None
    step: int | None  # 0-based; None before it started
    total: int | None
    description: str

    @classmethod
    def of(cls, status: Mapping[str, Any]) -> Position:
        step = status.get("step") or {}
        return cls(
            status.get("phase"),
            step.get("index") if step else None,
            step.get("total") if step else None,
            step.get("description", ""),
        )

    @property
    def inside(self) -> bool:
        """Started and not finished: not before its first step nor after its last."""
        return (
            self.phase in IN_FLIGHT
            and self.step is not None
            and self.total is not None
            and 0 <= self.step < self.total
        )

    def __str__(self) -> str:
        if self.step is None or self.total is None:
            return f"{self.phase}"
        return f"{self.phase} step {self.step + 1}/{self.total} ({self.description})"


@dataclass(frozen=True)
class KillRecord:
    """One SIGKILL of the operator: the rollouts in flight just before it, and where they
    stood just after it."""

    number: int
    at: datetime
    before: Mapping[str, Position]  # deployment name -> position, rollouts in flight only
    after: Mapping[str, Position]
    trigger: str = ""  # what fired it (the kill test's event), or "" for a timed kill

    @property
    def interrupted(self) -> dict[str, Position]:
        """The rollouts the kill cut into, where they were (exact: read after the kill)."""
        return {name: pos for name, pos in self.after.items() if pos.inside}

    def describe(self) -> str:
        parts = []
        for name, pos in sorted(self.after.items()):
            was = self.before.get(name)
            moved = f" (read before: {was})" if was is not None and was != pos else ""
            parts.append(f"{name}: {pos}{moved}")
        return "; ".join(parts) or "nothing in flight"


def deployments_list(custom: Any, namespace: str) -> dict[str, dict[str, Any]]:
    """Every lockgate Deployment of the namespace, by name, in one LIST."""
    found = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, "deployments")
    return {item["metadata"]["name"]: item for item in found.get("items") or []}


def positions(objects: Mapping[str, Mapping[str, Any]]) -> dict[str, Position]:
    """Where every rollout that is in flight stands."""
    out = {}
    for name, obj in objects.items():
        pos = Position.of(obj.get("status") or {})
        if pos.phase in IN_FLIGHT:
            out[name] = pos
    return out


def step_problems(status: Mapping[str, Any], image: str) -> list[str]:
    """What is wrong with how a finished rollout walked its steps, from its transitions:
    each completed step recorded once, in order from the first, none skipped; the end where
    its image dictates; one start and one end. Empty when all is well."""
    problems: list[str] = []
    phase = status.get("phase")
    want = expected_phase(image)
    if phase != want:
        problems.append(f"ended {phase}, expected {want}: {status.get('message')}")
    transitions = list(status.get("transitions") or [])
    seqs = [t.get("seq") for t in transitions]
    first = seqs[0] if seqs and isinstance(seqs[0], int) else 0
    if seqs != list(range(first, first + len(seqs))):
        problems.append(f"transition sequence numbers not consecutive: {seqs}")
    started = [t for t in transitions if t.get("event") == "Started"]
    if len(started) != 1:
        problems.append(f"{len(started)} Started transitions")
    done = [t.get("step") for t in transitions if t.get("event") == "StepCompleted"]
    total = (status.get("step") or {}).get("total")
    if phase == "Succeeded":
        ends = [t for t in transitions if t.get("phase") == "Succeeded"]
        # The last step completes with Succeeded itself (its transition names that step).
        last = [t.get("step") for t in ends]
        walked = done + last
        if total is None or walked != list(range(total)):
            problems.append(
                f"steps completed {[s + 1 for s in walked if s is not None]} of {total}"
            )
    elif phase in ("RolledBack", "Aborted"):
        backs = [t for t in transitions if t.get("phase") == "RollingBack"]
        if len(backs) != 1:
            problems.append(f"{len(backs)} RollingBack transitions")
        failed_at = backs[0].get("step") if backs else None
        if failed_at is None or done != list(range(failed_at)):
            problems.append(
                f"steps completed {[s + 1 for s in done if s is not None]} before the rollback "
                f"at step {None if failed_at is None else failed_at + 1}"
            )
    ends = [t for t in transitions if t.get("phase") in TERMINAL_PHASES]
    if len(ends) != 1:
        problems.append(f"{len(ends)} terminal transitions: {[t.get('phase') for t in ends]}")
    repeated = [b["index"] + 1 for b in status.get("batches") or [] if b.get("attempts", 0) > 1]
    if repeated:
        problems.append(f"batches started more than once: {repeated}")
    return problems


def unexpected_failures(
    responses: Iterable[Response],
    bad_versions: Iterable[str] = (),
    downtime: Iterable[tuple[float, float]] = (),
) -> list[Response]:
    """Failed requests (hack/tools/load.failed) that neither a bad image answered with an
    error by design (its 5xx, X-Version one of `bad_versions`) nor fell in a window of
    intended downtime (a Recreate rollout: its old instances stop before the new start)."""
    bad = set(bad_versions)
    windows = list(downtime)
    return [
        r
        for r in failed(list(responses))
        if not (r.version in bad and r.status is not None and r.status >= 500)
        and not any(start <= r.at <= end for start, end in windows)
    ]
