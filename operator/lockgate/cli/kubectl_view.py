"""What `kubectl lockgate` prints and which actions make sense when: pure functions of the
objects as the API server returns them (plain dicts), so they are tested without a cluster."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lockgate.names import ACTION_ANNOTATION

# The action rules live in .actions (what an action loads); they are also imported from here.
from .actions import ACTION_PHASES as ACTION_PHASES
from .actions import NOT_STARTED as NOT_STARTED
from .actions import RUNNING as RUNNING
from .actions import TERMINAL as TERMINAL
from .actions import WHY_NOT as WHY_NOT
from .actions import refusal as refusal


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: Any, now: datetime) -> str:
    """'42s', '5m', '3h', '2d' (kubectl style); '-' when unknown."""
    at = parse_time(value)
    if at is None:
        return "-"
    seconds = max(0, int((now - at).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 2 * 3600:
        return f"{seconds // 60}m"
    if seconds < 2 * 86400:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def clock(value: Any) -> str:
    at = parse_time(value)
    return at.strftime("%H:%M:%S") if at else "--:--:--"


def _pct(value: Any) -> str:
    return f"{100 * value:.2f}%" if isinstance(value, int | float) else "-"


def _ms(value: Any) -> str:
    return f"{1000 * value:.0f}ms" if isinstance(value, int | float) else "-"


def _bar(canary: int, width: int = 20) -> str:
    filled = round(width * canary / 100)
    return "[" + "#" * filled + "." * (width - filled) + "]"


def held_by(obj: dict[str, Any]) -> list[str]:
    """What the user asked that has not taken effect yet: spec.paused, an action annotation."""
    flags = []
    if (obj.get("spec") or {}).get("paused"):
        flags.append("spec.paused")
    pending = ((obj.get("metadata") or {}).get("annotations") or {}).get(ACTION_ANNOTATION)
    if pending:
        flags.append(f"action {pending} pending")
    return flags


def hint(obj: dict[str, Any]) -> str | None:
    """The next thing a user may want to type, if any."""
    name = obj.get("metadata", {}).get("name", "?")
    ns = obj.get("metadata", {}).get("namespace")
    where = f" -n {ns}" if ns else ""
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = status.get("phase")
    message = status.get("message") or ""
    if spec.get("paused"):
        return f"paused by spec.paused: kubectl lockgate resume {name}{where}"
    if phase == "Paused" and "waiting for promote" in message:
        return f"waiting for you: kubectl lockgate promote {name}{where} (or abort)"
    if phase in ("RolledBack", "Aborted", "Failed"):
        return f"to try again: kubectl lockgate retry {name}{where}"
    return None


def render_status(
    obj: dict[str, Any],
    now: datetime,
    log_lines: int = 8,
    steps: list[str] | None = None,
    app_spec: dict[str, Any] | None = None,
) -> str:
    """The progress view of one Deployment (the object as returned by the API server).

    `steps` are the descriptions of every step of the rollout (the engine's plan), when the
    caller could compile it; they are listed with the current one marked. `app_spec`: the
    Application's spec, when it could be read (its sticky cookie is shown)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    strategy = (spec.get("strategy") or {}).get("type", "Rolling")
    phase = status.get("phase") or "Pending"
    lines: list[str] = []
    lines.append(
        f"Deployment {meta.get('name', '?')}  namespace {meta.get('namespace', '-')}  "
        f"application {spec.get('application', '-')}  ({strategy})"
    )
    image = status.get("image") or spec.get("image") or "-"
    previous = status.get("previousImage")
    revision = status.get("revision", 0)
    attempt = status.get("attempt", 0)
    img = f"{image}" + (f"  (previous {previous})" if previous else "")
    rev = f"revision {revision}" + (f", retry {attempt}" if attempt else "")
    lines.append(f"Image:     {img}  {rev}")
    flags = held_by(obj)
    started = status.get("startedAt")
    timing = ""
    if status.get("finishedAt"):
        timing = f"  finished {age(status['finishedAt'], now)} ago"
    elif started:
        timing = f"  running for {age(started, now)}"
    lines.append(f"Phase:     {phase}{timing}" + (f"  [{', '.join(flags)}]" if flags else ""))
    if status.get("message"):
        lines.append(f"Message:   {status['message']}")
    step = status.get("step")
    if step:
        index, total = int(step.get("index", 0)), int(step.get("total", 0))
        shown = min(index + 1, total) if total else index + 1
        progress = ""
        if total and total <= 60 and phase not in TERMINAL:
            progress = "[" + ("#" * index).ljust(total, ".") + "]"
        since = ""
        if step.get("startedAt") and phase not in TERMINAL:
            since = f"  (for {age(step['startedAt'], now)})"
        lines.append(
            f"Step:      {shown}/{total}  {step.get('description', '')}{since}  {progress}".rstrip()
        )
    if step and steps and len(steps) == int(step.get("total", 0)) and len(steps) <= 60:
        lines.extend(_step_list(steps, int(step.get("index", 0)), phase))
    weights = status.get("weights")
    if weights:
        stable, canary = int(weights.get("stable", 100)), int(weights.get("canary", 0))
        lines.append(f"Weights:   stable {stable:3d}%  canary {canary:3d}%  {_bar(canary)}")
    route = _route(spec.get("application", ""), app_spec)
    if route:
        lines.append(f"Route:     {route}")
    sticky = (((app_spec or {}).get("traffic") or {}).get("traefik") or {}).get("sticky")
    if weights and sticky:
        name = (sticky.get("cookie") or {}).get("name", "?")
        lines.append(f"Sticky:    cookie {name}: a client keeps its version while weights change")
    routes = status.get("routes") or {}
    header_route = routes.get("headerRoute") or []
    if header_route:
        lines.append(f"Header:    to canary whatever the weights: {' or '.join(header_route)}")
    if routes.get("mirrorPercent"):
        lines.append(
            f"Mirror:    {int(routes['mirrorPercent'])}% of requests copied to the canary "
            "(answers from stable only)"
        )
    batches = status.get("batches") or []
    if batches:
        lines.append("Batches:")
        for batch in batches:
            targets = ", ".join(batch.get("targets") or [])
            extra = f"  {batch['reason']}" if batch.get("reason") else ""
            tries = batch.get("attempts", 0)
            tried = f"  attempts {tries}" if tries and tries > 1 else ""
            lines.append(
                f"  {int(batch.get('index', 0)) + 1:>2}  {batch.get('state', 'Pending'):<10}"
                f"  {targets}{tried}{extra}"
            )
    runs = status.get("analysis") or []
    if runs:
        last = runs[-1]
        failures = status.get("consecutiveFailures", 0)
        limit = ((spec.get("analysis") or {}).get("maxConsecutiveFailures")) or 3
        lines.append(
            f"Analysis:  {last.get('verdict', '?')} at {clock(last.get('at'))} "
            f"({age(last.get('at'), now)} ago, step {int(last.get('step', 0)) + 1}), "
            f"failures in a row {failures}/{limit}"
        )
        source = f"  from {last['source']}" if last.get("source") else ""
        lines.append(f"           {'':<8}{'requests':>10}{'5xx':>10}{'p95':>10}{source}")
        for version in ("canary", "stable"):
            figures = last.get(version)
            if figures:
                lines.append(
                    f"           {version:<8}{figures.get('requests', 0):>10}"
                    f"{_pct(figures.get('errorRate')):>10}{_ms(figures.get('p95')):>10}"
                )
        for query, value in (last.get("queries") or {}).items():
            lines.append(f"           query {query} = {value:g}")
        if last.get("reason"):
            lines.append(f"           {last['reason']}")
    conditions = status.get("conditions") or []
    shown_conditions = [
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in conditions
        if c.get("type") in ("Ready", "Progressing", "Degraded")
    ]
    if shown_conditions:
        lines.append(f"Conditions: {'  '.join(shown_conditions)}")
    log = (status.get("log") or [])[-log_lines:] if log_lines > 0 else []
    if log:
        lines.append("Recent log:")
        for entry in log:
            level = entry.get("level", "Info")
            mark = "" if level == "Info" else f"{level}: "
            lines.append(f"  {clock(entry.get('at'))}  {mark}{entry.get('message', '')}")
    next_step = hint(obj)
    if next_step:
        lines.append(f"Next:      {next_step}")
    return "\n".join(lines)


def _step_list(steps: list[str], current: int, phase: str) -> list[str]:
    out = []
    width = max(len(d) for d in steps)
    for i, description in enumerate(steps):
        if i < current or phase == "Succeeded":
            mark = "done"
        elif i == current and phase in TERMINAL:
            mark = f"<- {phase} here"
        elif i == current:
            mark = "<- now"
        else:
            mark = ""
        out.append(f"  {i + 1:>3}  {description.ljust(width)}  {mark}".rstrip())
    return out


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    ]


def render_history(app: dict[str, Any], deployments: list[dict[str, Any]], now: datetime) -> str:
    """An Application's stable version, its recorded history and its Deployment objects."""
    meta = app.get("metadata") or {}
    name = meta.get("name", "?")
    status = app.get("status") or {}
    lines = [
        f"Application {name}  namespace {meta.get('namespace', '-')}  "
        f"phase {status.get('phase') or 'Unknown'}"
    ]
    stable = status.get("stable") or {}
    if stable:
        lines.append(
            f"Stable:    {stable.get('image', '-')}"
            + (f" from {stable['deployment']}" if stable.get("deployment") else "")
            + (f", since {age(stable.get('since'), now)} ago" if stable.get("since") else "")
        )
    if status.get("activeDeployment"):
        lines.append(f"Active:    {status['activeDeployment']}")
    instances = status.get("instances")
    if instances:
        lines.append(
            f"Instances: {instances.get('ready', 0)}/{instances.get('desired', 0)} ready, "
            f"{instances.get('updated', 0)} updated"
        )
    history = status.get("history") or []
    lines.append("")
    lines.append("History (newest first):")
    if history:
        rows = [["DEPLOYMENT", "REVISION", "IMAGE", "RESULT", "STARTED", "TOOK", "FINISHED"]]
        for entry in history:
            started, finished = (
                parse_time(entry.get("startedAt")),
                parse_time(entry.get("finishedAt")),
            )
            took = "-"
            if started and finished:
                took = _span(int((finished - started).total_seconds()))
            rows.append(
                [
                    str(entry.get("deployment", "-")),
                    str(entry.get("revision", "-")),
                    str(entry.get("image", "-")),
                    str(entry.get("result", "-")),
                    f"{age(entry.get('startedAt'), now)} ago" if started else "-",
                    took,
                    f"{age(entry.get('finishedAt'), now)} ago" if finished else "-",
                ]
            )
        lines.extend("  " + line for line in _table(rows))
    else:
        lines.append("  (none recorded yet)")
    own = [d for d in deployments if (d.get("spec") or {}).get("application") == name]
    own.sort(key=lambda d: (d.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
    lines.append("")
    lines.append("Deployments:")
    if own:
        rows = [["NAME", "PHASE", "IMAGE", "REVISION", "STEP", "AGE"]]
        for dep in own:
            dstatus = dep.get("status") or {}
            step = dstatus.get("step") or {}
            rows.append(
                [
                    str((dep.get("metadata") or {}).get("name", "-")),
                    str(dstatus.get("phase") or "Pending"),
                    str((dep.get("spec") or {}).get("image", "-")),
                    str(dstatus.get("revision", "-")),
                    str(step.get("description") or "-"),
                    age((dep.get("metadata") or {}).get("creationTimestamp"), now),
                ]
            )
        lines.extend("  " + line for line in _table(rows))
    else:
        lines.append("  (none)")
    return "\n".join(lines)


def _span(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def _route(app_name: str, app_spec: dict[str, Any] | None) -> str | None:
    """Which objects carry the split, when the Application's spec could be read."""
    if app_spec is None:
        return None
    # Imported here: the plugin's other commands stay light (no pydantic models to load).
    from lockgate.api import ApplicationSpec

    from .plan import route_summary

    try:
        return route_summary(app_name, ApplicationSpec.model_validate(app_spec))
    except ValueError:  # an invalid spec: its Application's status says why
        return None
