"""Notifications, the pure part: which transitions are owed to which target, the body each
kind of target gets, the stable delivery id, the retry back-off and the bounded record.

The controller (controller/notifier.py) does the I/O: it enqueues what `owed` returns and
sends it with outbound.http.post_json."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydantic import TypeAdapter

from lockgate.api.application import NotificationTarget
from lockgate.api.deployment import MetricsFigures, NotificationRecord, Transition

MAX_RECORDS = 500  # per Deployment: transitions (50) x targets, with room to spare
# A transition older than this is no longer owed: a target added to an Application does not
# get the history of the Deployments that finished before, and a receiver that answered
# nothing but errors for this long is given up on (the record says so).
MAX_AGE = timedelta(hours=1)
TITLES = {
    "Started": "started",
    "StepCompleted": "completed a step",
    "Paused": "paused",
    "Promoted": "was promoted",
    "Succeeded": "succeeded",
    "RollingBack": "is rolling back",
    "RolledBack": "rolled back",
    "Failed": "failed",
    "Aborted": "was aborted",
}
BAD = ("RollingBack", "RolledBack", "Failed", "Aborted")


@dataclass(frozen=True, slots=True)
class DeploymentInfo:
    """What a notification says of the Deployment, besides the transition."""

    uid: str
    namespace: str
    name: str
    application: str
    image: str
    step_total: int | None = None


def targets(
    own: Sequence[NotificationTarget], defaults: Sequence[NotificationTarget]
) -> list[NotificationTarget]:
    """The Application's targets, then the operator's defaults it does not override by name."""
    names = {t.name for t in own}
    return [*own, *(t for t in defaults if t.name not in names)]


def load_defaults(path: str | Path) -> list[NotificationTarget]:
    """The operator's default targets: a YAML or JSON list of targets (camelCase)."""
    data = yaml.safe_load(Path(path).read_text()) or []
    adapter = TypeAdapter(list[NotificationTarget])
    return adapter.validate_python(data)


def delivery_id(uid: str, seq: int, target: str) -> str:
    """Stable across restarts: the same transition to the same target has the same id."""
    return hashlib.sha256(f"{uid}/{seq}/{target}".encode()).hexdigest()[:32]


def owed(
    transitions: Iterable[Transition],
    records: Iterable[NotificationRecord],
    to: Sequence[NotificationTarget],
    now: datetime,
) -> Iterator[tuple[Transition, NotificationTarget]]:
    """(transition, target) pairs with no record yet, oldest first."""
    done = {(r.target, r.transition) for r in records}
    for t in transitions:
        if t.seq is None or t.event is None or now - t.at > MAX_AGE:
            continue
        for target in to:
            if t.event in target.events and (target.name, t.seq) not in done:
                yield t, target


def backoff(attempt: int, base: float = 1.0, cap: float = 60.0) -> float:
    """Seconds before retry `attempt` (1 after the first failure): doubling, capped."""
    return float(min(cap, base * 2 ** max(0, attempt - 1)))


def with_record(
    records: Sequence[NotificationRecord],
    record: NotificationRecord,
    live: Iterable[int],
    limit: int = MAX_RECORDS,
) -> list[NotificationRecord]:
    """The records plus `record` (replacing one for the same target and transition), without
    those of transitions pruned from the status (`live` seqs), newest `limit` kept."""
    keep = set(live)
    out = [
        r
        for r in records
        if r.transition in keep and (r.target, r.transition) != (record.target, record.transition)
    ]
    return [*out, record][-limit:]


def _figures(f: MetricsFigures | None) -> dict[str, Any] | None:
    return f.model_dump(by_alias=True, mode="json", exclude_none=True) if f is not None else None


def webhook_body(info: DeploymentInfo, t: Transition) -> dict[str, Any]:
    """The generic JSON body."""
    assert t.event is not None
    return {
        "event": t.event,
        "namespace": info.namespace,
        "application": info.application,
        "deployment": info.name,
        "image": info.image,
        "phase": t.phase,
        "message": t.message,
        "step": (
            {"index": t.step, "number": t.step + 1, "total": info.step_total}
            if t.step is not None
            else None
        ),
        "weights": t.weights.model_dump(by_alias=True) if t.weights is not None else None,
        "metrics": (
            {
                "at": t.metrics.at.isoformat(),
                "step": t.metrics.step,
                "verdict": t.metrics.verdict,
                "canary": _figures(t.metrics.canary),
                "stable": _figures(t.metrics.stable),
            }
            if t.metrics is not None
            else None
        ),
        "transition": t.seq,
        "time": t.at.isoformat(),
    }


def _percent(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{1000 * value:.0f} ms"


def summary(info: DeploymentInfo, t: Transition) -> tuple[str, list[str]]:
    """(title, detail lines) for the chat kinds."""
    assert t.event is not None
    title = (
        f"lockgate: {info.namespace}/{info.name} ({info.application} -> {info.image}) "
        f"{TITLES.get(t.event, t.event)}"
    )
    lines = [t.message] if t.message else []
    if t.step is not None:
        total = f"/{info.step_total}" if info.step_total else ""
        lines.append(f"step {t.step + 1}{total}")
    if t.weights is not None:
        lines.append(f"traffic: canary {t.weights.canary}%, stable {t.weights.stable}%")
    if t.metrics is not None:
        for side, f in (("canary", t.metrics.canary), ("stable", t.metrics.stable)):
            if f is not None:
                lines.append(
                    f"{side}: {f.requests} requests, errors {_percent(f.error_rate)}, "
                    f"p95 {_ms(f.p95)}"
                )
    return title, lines


def slack_body(info: DeploymentInfo, t: Transition) -> dict[str, Any]:
    """A Slack incoming-webhook message: `text` (the fallback) plus one section block."""
    title, lines = summary(info, t)
    text = "\n".join([f"*{title}*", *lines])
    return {
        "text": text,
        "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
    }


def teams_body(info: DeploymentInfo, t: Transition) -> dict[str, Any]:
    """A Microsoft Teams MessageCard."""
    title, lines = summary(info, t)
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": title,
        "title": title,
        "themeColor": "D13438" if t.event in BAD else "2EB886",
        "text": "\n\n".join(lines) or title,
    }


def body_for(kind: str, info: DeploymentInfo, t: Transition) -> dict[str, Any]:
    if kind == "slack":
        return slack_body(info, t)
    if kind == "teams":
        return teams_body(info, t)
    return webhook_body(info, t)


def dumps(body: dict[str, Any]) -> str:
    return json.dumps(body, sort_keys=True)
