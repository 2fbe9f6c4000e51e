"""What `kubectl lockgate dashboard` shows: HTML rendered on the server from the objects as the
API server returns them (plain dicts), and the server-sent-event frames that carry updates.
Pure functions, tested without a cluster or a browser.

Nothing secret is rendered: the texts shown come from a Deployment's status (its messages,
log, transitions, analysis and batch reasons), which the operator has already passed through
its redactor, and from a short list of spec fields that cannot hold a secret (application,
image, strategy type, replicas, host names). Environment variables, Secret references, host
and webhook URLs are never rendered; credentials written into a URL (`scheme://user:pw@`)
are masked in every text shown, as a second line of defence.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from html import escape
from typing import Any
from urllib.parse import quote

from .kubectl_view import TERMINAL, clock, held_by

MASK = "[redacted]"  # what the operator's redactor writes in place of a secret
_URL_CREDENTIALS = re.compile(r"\b([a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@]+@")

# The actions the dashboard offers, in the order shown: (action, button, what it does).
ACTIONS: tuple[tuple[str, str, str], ...] = (
    ("promote", "Promote", "move past the current pause or analysis gate"),
    ("promote-full", "Promote fully", "skip every remaining pause and gate"),
    ("abort", "Abort", "stop the rollout and roll back to the previous version"),
    ("retry", "Retry", "start the rollout again"),
    ("pause", "Pause", "hold the rollout where it is (sets spec.paused)"),
    ("resume", "Resume", "continue the paused rollout (clears spec.paused)"),
)
ACTION_NAMES = frozenset(a for a, _, _ in ACTIONS)

# Sections of the live view, each replaced on its own when an update arrives.
DEPLOYMENT_SECTIONS = (
    ("summary", "Status"),
    ("actions", "Actions"),
    ("steps", "Steps"),
    ("weights", "Traffic"),
    ("batches", "Batches"),
    ("analysis", "Analysis: canary against stable"),
    ("transitions", "Transitions"),
    ("log", "Log"),
)
LIST_SECTIONS = (("applications", "Applications"), ("deployments", "Deployments"))


def redact(value: Any) -> str:
    """The text of `value` with credentials in URLs masked."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m.group(1)}{MASK}@", str(value))


def t(value: Any) -> str:
    """`value` as HTML text: redacted, then escaped."""
    return escape(redact(value), quote=True)


def deployment_url(namespace: str, name: str) -> str:
    return f"/ns/{quote(namespace, safe='')}/deployments/{quote(name, safe='')}"


def _phase_badge(phase: str) -> str:
    kind = {
        "Succeeded": "ok",
        "Healthy": "ok",
        "Progressing": "run",
        "Paused": "wait",
        "Queued": "wait",
        "Pending": "wait",
        "RollingBack": "bad",
        "RolledBack": "bad",
        "Failed": "bad",
        "Degraded": "bad",
        "Aborted": "bad",
    }.get(phase, "wait")
    return f'<span class="badge {kind}" data-phase="{t(phase)}">{t(phase)}</span>'


def _time(value: Any) -> str:
    if not value:
        return "-"
    return f'<time datetime="{t(value)}">{t(clock(value))}</time>'


def _table(caption: str, head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="empty">{t(empty)}</p>'
    cols = "".join(f'<th scope="col">{t(h)}</th>' for h in head)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td data-label="{t(h)}"><span class="cell">{cell}</span></td>'
            for h, cell in zip(head, row, strict=True)
        )
        + "</tr>"
        for row in rows
    )
    return (
        f'<div class="scroll"><table><caption class="sr-only">{t(caption)}</caption>'
        f"<thead><tr>{cols}</tr></thead><tbody>{body}</tbody></table></div>"
    )


# ---------------------------------------------------------------------------------------------
# the list of Applications and Deployments


def _target(app: dict[str, Any]) -> str:
    spec = app.get("spec") or {}
    if "kubernetes" in spec:
        replicas = (spec.get("kubernetes") or {}).get("replicas", 1)
        return f"Kubernetes, {t(replicas)} replica(s)"
    if "docker" in spec:
        hosts = [h.get("name", "?") for h in (spec.get("docker") or {}).get("hosts") or []]
        shown = ", ".join(hosts[:4]) + (f" +{len(hosts) - 4}" if len(hosts) > 4 else "")
        return f"Docker, {len(hosts)} host(s): {t(shown)}"
    return "-"


def _step_text(status: dict[str, Any]) -> str:
    step = status.get("step") or {}
    if not step:
        return "-"
    index, total = int(step.get("index", 0)), int(step.get("total", 0))
    shown = min(index + 1, total) if total else index + 1
    return f"{shown}/{total} {step.get('description', '')}".strip()


def render_list(
    apps: Iterable[dict[str, Any]], deployments: Iterable[dict[str, Any]], all_namespaces: bool
) -> dict[str, str]:
    """The list page's live sections: Applications, then every lockgate Deployment."""
    deps = sorted(
        deployments,
        key=lambda d: (d.get("metadata") or {}).get("creationTimestamp") or "",
        reverse=True,
    )
    by_key = {
        ((d.get("metadata") or {}).get("namespace", ""), (d.get("metadata") or {}).get("name")): d
        for d in deps
    }
    rows = []
    for app in sorted(
        apps,
        key=lambda a: ((a.get("metadata") or {}).get("namespace", ""), a["metadata"]["name"]),
    ):
        meta = app.get("metadata") or {}
        ns = meta.get("namespace", "")
        status = app.get("status") or {}
        stable = status.get("stable") or {}
        stable_text = t(stable.get("image", "-"))
        if stable.get("deployment"):
            stable_text += f' <span class="muted">from {t(stable["deployment"])}</span>'
        instances = status.get("instances") or {}
        ready = (
            f"{t(instances.get('ready', 0))}/{t(instances.get('desired', 0))}" if instances else "-"
        )
        active = status.get("activeDeployment")
        active_cell = '<span class="muted">none</span>'
        if active:
            dep = by_key.get((ns, active)) or {}
            dstatus = dep.get("status") or {}
            weights = dstatus.get("weights") or {}
            canary = f", canary {t(weights.get('canary', 0))}%" if weights else ""
            active_cell = (
                f'<a href="{t(deployment_url(ns, active))}">{t(active)}</a> '
                f"{_phase_badge(dstatus.get('phase') or 'Pending')} "
                f'<span class="muted">step {t(_step_text(dstatus))}{canary}</span>'
            )
        row = [
            f'<span id="app-{t(ns)}-{t(meta.get("name"))}">{t(meta.get("name"))}</span>',
            _target(app),
            stable_text,
            _phase_badge(status.get("phase") or "Unknown"),
            ready,
            active_cell,
        ]
        rows.append(([t(ns)] if all_namespaces else []) + row)
    head = ["Application", "Target", "Stable version", "Phase", "Ready", "Active rollout"]
    ns_head = ["Namespace"] if all_namespaces else []
    applications = _table(
        "Applications", ns_head + head, rows, "No Applications here (or none you may list)."
    )
    drows = []
    for dep in deps:
        meta = dep.get("metadata") or {}
        spec = dep.get("spec") or {}
        status = dep.get("status") or {}
        ns = meta.get("namespace", "")
        weights = status.get("weights") or {}
        row = [
            f'<a href="{t(deployment_url(ns, meta.get("name", "")))}">{t(meta.get("name"))}</a>',
            t(spec.get("application", "-")),
            t(spec.get("image", "-")),
            t((spec.get("strategy") or {}).get("type", "Rolling")),
            _phase_badge(status.get("phase") or "Pending"),
            t(_step_text(status)),
            f"{t(weights.get('canary', 0))}%" if weights else "-",
            _time(status.get("startedAt")),
        ]
        drows.append(([t(ns)] if all_namespaces else []) + row)
    dhead = ["Deployment", "Application", "Image", "Strategy", "Phase", "Step", "Canary", "Started"]
    deployments_html = _table(
        "Deployments", ns_head + dhead, drows, "No Deployments here (or none you may list)."
    )
    return {"applications": applications, "deployments": deployments_html}


# ---------------------------------------------------------------------------------------------
# one Deployment's live view


def _summary(obj: dict[str, Any]) -> str:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    phase = status.get("phase") or "Pending"
    flags = held_by(obj)
    if status.get("pendingAction"):
        flags.append(f"action {status['pendingAction']} being applied")
    revision = f"{t(status.get('revision', 0))}"
    if status.get("attempt"):
        revision += f", retry {t(status['attempt'])}"
    rows = [
        (
            "Phase",
            _phase_badge(phase) + "".join(f' <span class="flag">{t(f)}</span>' for f in flags),
        ),
        ("Step", f'<span data-field="step">{t(_step_text(status))}</span>'),
        ("Application", t(spec.get("application", "-"))),
        ("Strategy", t((spec.get("strategy") or {}).get("type", "Rolling"))),
        ("Image", t(status.get("image") or spec.get("image") or "-")),
        ("Previous image", t(status.get("previousImage") or "-")),
        ("Revision", revision),
        ("Started", _time(status.get("startedAt"))),
        ("Finished", _time(status.get("finishedAt"))),
    ]
    conditions = [
        f"{c.get('type')}={c.get('status')}" + (f" ({c['reason']})" if c.get("reason") else "")
        for c in status.get("conditions") or []
        if c.get("type") in ("Ready", "Progressing", "Degraded")
    ]
    if conditions:
        rows.append(("Conditions", t("  ".join(conditions))))
    items = "".join(f"<div><dt>{t(k)}</dt><dd>{v}</dd></div>" for k, v in rows)
    message = status.get("message")
    shown = f'<p class="message" data-field="message">{t(message)}</p>' if message else ""
    return f'<dl class="facts">{items}</dl>{shown}'


def _actions(obj: dict[str, Any], csrf: str, refusals: dict[str, str | None]) -> str:
    meta = obj.get("metadata") or {}
    name = meta.get("name", "")
    url = deployment_url(meta.get("namespace", ""), name) + "/actions"
    forms = []
    for action, label, what in ACTIONS:
        why = refusals.get(action)
        described = f' aria-describedby="why-{action}" disabled' if why else ""
        note = f'<span class="why" id="why-{action}">{t(why)}</span>' if why else ""
        confirm = f"{label} {name}: {what}?"
        forms.append(
            f'<form method="post" action="{t(url)}" class="action" data-confirm="{t(confirm)}">'
            f'<input type="hidden" name="csrf" value="{t(csrf)}">'
            f'<input type="hidden" name="action" value="{action}">'
            f'<button type="submit" data-action="{action}"{described}>{t(label)}</button>'
            f"{note}</form>"
        )
    return '<div class="actions">' + "".join(forms) + "</div>"


def _steps(obj: dict[str, Any], steps: list[str] | None) -> str:
    status = obj.get("status") or {}
    step = status.get("step") or {}
    phase = status.get("phase") or "Pending"
    if not step:
        return '<p class="empty">Not started yet.</p>'
    current, total = int(step.get("index", 0)), int(step.get("total", 0))
    if not steps or len(steps) != total:
        return f"<p>Step {t(_step_text(status))}</p>"
    items = []
    for i, description in enumerate(steps):
        if i < current or phase == "Succeeded":
            state, label, extra = "done", "done", ""
        elif i == current:
            state = "now" if phase not in TERMINAL else "stopped"
            label = "now" if phase not in TERMINAL else f"{phase} here"
            extra = ' aria-current="step"'
        else:
            state, label, extra = "todo", "to do", ""
        items.append(
            f'<li class="{state}"{extra}><span class="num">{i + 1}</span> '
            f'<span class="desc">{t(description)}</span> '
            f'<span class="state">{t(label)}</span></li>'
        )
    return '<ol class="timeline">' + "".join(items) + "</ol>"


def weight_bar(stable: int, canary: int) -> str:
    """An SVG bar of the traffic split (no inline style: the page's CSP forbids it)."""
    stable = max(0, min(100, stable))
    canary = max(0, min(100, canary))
    label = f"stable {stable}%, canary {canary}%"
    return (
        f'<svg class="bar" viewBox="0 0 100 8" preserveAspectRatio="none" role="img" '
        f'aria-label="{label}"><rect class="stable" x="0" y="0" width="{stable}" height="8"/>'
        f'<rect class="canary" x="{stable}" y="0" width="{canary}" height="8"/></svg>'
    )


def _weights(obj: dict[str, Any]) -> str:
    weights = (obj.get("status") or {}).get("weights")
    if not weights:
        return '<p class="empty">No traffic split yet.</p>'
    stable, canary = int(weights.get("stable", 100)), int(weights.get("canary", 0))
    routes = (obj.get("status") or {}).get("routes") or {}
    extra = ""
    if routes.get("headerRoute"):
        extra += (
            '<p class="routes">header route to the canary: '
            f"{t(' or '.join(routes['headerRoute']))}</p>"
        )
    if routes.get("mirrorPercent"):
        extra += (
            f'<p class="routes">{t(routes["mirrorPercent"])}% of requests mirrored to the '
            "canary (answers from stable only)</p>"
        )
    return (
        f'<p class="split"><span class="key stable"></span>stable '
        f'<strong data-field="stable">{stable}%</strong> '
        f'<span class="key canary"></span>canary <strong data-field="canary">{canary}%</strong></p>'
        + weight_bar(stable, canary)
        + extra
    )


def _batches(obj: dict[str, Any]) -> str:
    batches = (obj.get("status") or {}).get("batches") or []
    rows = [
        [
            t(int(b.get("index", 0)) + 1),
            _phase_badge_batch(b.get("state", "Pending")),
            t(", ".join(b.get("targets") or [])),
            t(b.get("attempts", 0)),
            t(b.get("reason") or ""),
        ]
        for b in batches
    ]
    return _table(
        "Batches",
        ["Batch", "State", "Hosts or slots", "Attempts", "Reason"],
        rows,
        "No batches (this strategy moves all instances together).",
    )


def _phase_badge_batch(state: str) -> str:
    kind = {"Succeeded": "ok", "Running": "run", "Failed": "bad", "RolledBack": "bad"}.get(
        state, "wait"
    )
    return f'<span class="badge {kind}">{t(state)}</span>'


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def _ms(value: float) -> str:
    return f"{1000 * value:.0f} ms"


def _cores(value: float) -> str:
    return f"{value:.3f} cores"


def _mib(value: float) -> str:
    return f"{value / 2**20:.1f} MiB"


METRICS: tuple[tuple[str, str, Callable[[float], str]], ...] = (
    ("errorRate", "Error rate (5xx)", _pct),
    ("p95", "Latency p95", _ms),
    ("cpu", "CPU per instance", _cores),
    ("memory", "Memory per instance", _mib),
)


def chart(
    key: str, title: str, canary: list[float | None], stable: list[float | None], fmt: Any
) -> str:
    """A small line chart of one metric over the analysis runs, canary against stable."""
    width, height, pad = 240.0, 64.0, 4.0
    values = [v for v in canary + stable if v is not None]
    highest = max(values) if values else 0.0
    top = highest if highest > 0 else 1.0
    n = max(len(canary), len(stable))

    def x(i: int) -> float:
        return pad + (width - 2 * pad) * (i / (n - 1) if n > 1 else 0.5)

    def y(v: float) -> float:
        return height - pad - (height - 2 * pad) * (v / top)

    def series(name: str, points: list[float | None]) -> str:
        coords = [(x(i), y(v)) for i, v in enumerate(points) if v is not None]
        if not coords:
            return ""
        line = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords)
        dots = "".join(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2"/>' for a, b in coords)
        return f'<g class="{name}"><polyline points="{line}"/>{dots}</g>'

    def last(points: list[float | None]) -> str:
        shown = [v for v in points if v is not None]
        return fmt(shown[-1]) if shown else "-"

    summary = f"{title}, latest run: canary {last(canary)}, stable {last(stable)}"
    scale = f"scale 0 to {t(fmt(top))}" if highest > 0 else "all zero"
    return (
        f'<figure class="chart" data-metric="{key}"><figcaption>{t(title)}: '
        f'<span class="canary-text">canary {t(last(canary))}</span>, '
        f'<span class="stable-text">stable {t(last(stable))}</span> '
        f'<span class="muted">({scale})</span></figcaption>'
        f'<svg viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{t(summary)}">'
        f'<line class="axis" x1="{pad}" y1="{height - pad}" x2="{width - pad}" '
        f'y2="{height - pad}"/>'
        f"{series('stable', stable)}{series('canary', canary)}</svg></figure>"
    )


def _analysis(obj: dict[str, Any]) -> str:
    runs = (obj.get("status") or {}).get("analysis") or []
    if not runs:
        return '<p class="empty">No analysis run yet.</p>'
    charts = []
    for key, title, fmt in METRICS:
        canary = [((r.get("canary") or {}).get(key)) for r in runs]
        stable = [((r.get("stable") or {}).get(key)) for r in runs]
        if any(v is not None for v in canary + stable):
            charts.append(chart(key, title, canary, stable, fmt))
    legend = (
        '<p class="legend"><span class="key canary"></span>canary (dashed) '
        '<span class="key stable"></span>stable (solid), one point per analysis run</p>'
    )
    last = runs[-1]
    verdict = (
        f"<p>Latest verdict: {_verdict(last.get('verdict', '?'))} at {_time(last.get('at'))}, "
        f"step {t(int(last.get('step', 0)) + 1)}"
        + (f": {t(last['reason'])}" if last.get("reason") else "")
        + "</p>"
    )
    rows = []
    for r in reversed(runs):
        cells = [_time(r.get("at")), t(int(r.get("step", 0)) + 1), _verdict(r.get("verdict", "?"))]
        for version in ("canary", "stable"):
            figures = r.get(version) or {}
            shown = [f"{figures.get('requests', 0)} req"]
            for key, _, fmt in METRICS:
                if figures.get(key) is not None:
                    shown.append(fmt(figures[key]))
            cells.append(t(", ".join(shown)) if figures else "-")
        cells.append(t(r.get("reason") or ""))
        rows.append(cells)
    table = _table(
        "Analysis runs, newest first",
        ["At", "Step", "Verdict", "Canary", "Stable", "Reason"],
        rows,
        "",
    )
    return (
        verdict
        + legend
        + '<div class="charts">'
        + "".join(charts)
        + "</div><details><summary>Every run as a table</summary>"
        + table
        + "</details>"
    )


def _verdict(verdict: str) -> str:
    kind = {"Passed": "ok", "Failed": "bad"}.get(verdict, "wait")
    return f'<span class="badge {kind}">{t(verdict)}</span>'


def _transitions(obj: dict[str, Any]) -> str:
    transitions = (obj.get("status") or {}).get("transitions") or []
    rows = []
    for tr in reversed(transitions):
        weights = tr.get("weights") or {}
        step = tr.get("step")
        rows.append(
            [
                _time(tr.get("at")),
                _phase_badge(tr.get("phase", "?")),
                t(int(step) + 1) if isinstance(step, int) else "-",
                f"{t(weights.get('stable', 100))}/{t(weights.get('canary', 0))}"
                if weights
                else "-",
                t(tr.get("message", "")),
            ]
        )
    return _table(
        "Transitions, newest first",
        ["At", "Phase", "Step", "Stable/canary %", "Message"],
        rows,
        "No transitions recorded yet.",
    )


def _log(obj: dict[str, Any]) -> str:
    log = (obj.get("status") or {}).get("log") or []
    if not log:
        return '<p class="empty">The log is empty.</p>'
    items = "".join(
        f'<li class="{t(str(e.get("level", "Info")).lower())}">{_time(e.get("at"))} '
        + (
            f'<span class="level">{t(e.get("level"))}:</span> '
            if e.get("level", "Info") != "Info"
            else ""
        )
        + f"{t(e.get('message', ''))}</li>"
        for e in log
    )
    return f'<ol class="log">{items}</ol>'


def render_deployment(
    obj: dict[str, Any], steps: list[str] | None, csrf: str, refusals: dict[str, str | None]
) -> dict[str, str]:
    """The live view's sections of one Deployment (the object as the API server returns it).

    `steps` are the descriptions of every step (the engine's plan) when known; `refusals`
    say, per action, why it would be refused now (kubectl_view.refusal), None when it applies.
    """
    return {
        "summary": _summary(obj),
        "actions": _actions(obj, csrf, refusals),
        "steps": _steps(obj, steps),
        "weights": _weights(obj),
        "batches": _batches(obj),
        "analysis": _analysis(obj),
        "transitions": _transitions(obj),
        "log": _log(obj),
    }


# ---------------------------------------------------------------------------------------------
# pages and frames


def page(
    title: str,
    sections: dict[str, str],
    headings: tuple[tuple[str, str], ...],
    *,
    csrf: str,
    events: str | None,
    crumbs: str = "",
    scope: str = "",
) -> str:
    """A whole page: the sections (each under its heading, replaced live by key), the
    confirmation dialog and the live-state line."""
    body = "".join(
        f'<section aria-labelledby="h-{key}" id="s-{key}"><h2 id="h-{key}">{t(heading)}</h2>'
        f'<div data-live="{key}">{sections.get(key, "")}</div></section>'
        for key, heading in headings
    )
    events_attr = f' data-events="{t(events)}"' if events else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="csrf-token" content="{t(csrf)}">'
        f"<title>{t(title)} · lockgate</title>"
        '<link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script></head><body>'
        '<a class="skip" href="#main">Skip to content</a>'
        f'<header><p class="brand"><a href="/">lockgate</a> {crumbs}</p>'
        f'<p class="scope">{t(scope)} · times in UTC · <span id="live-state" role="status">'
        f"{'connecting' if events else 'static'}</span></p></header>"
        f'<main id="main"{events_attr}><h1>{t(title)}</h1>'
        '<div id="result" role="status" aria-live="polite"></div>'
        f"{body}</main>"
        '<dialog id="confirm" aria-labelledby="confirm-title" aria-describedby="confirm-text">'
        '<form method="dialog"><h2 id="confirm-title">Please confirm</h2>'
        '<p id="confirm-text"></p><div class="buttons">'
        '<button value="no" id="confirm-no">Cancel</button>'
        '<button value="yes" id="confirm-yes" class="primary">Confirm</button>'
        "</div></form></dialog></body></html>\n"
    )


def message_page(title: str, text: str, back: str, *, ok: bool, form: str = "") -> str:
    """A page answering a form sent without JavaScript: a result, or a confirmation form."""
    kind = "ok" if ok else "error"
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{t(title)} · lockgate</title>"
        '<link rel="stylesheet" href="/static/dashboard.css"></head><body>'
        f'<main id="main"><h1>{t(title)}</h1><p class="{kind}" role="status">{t(text)}</p>'
        f'{form}<p><a href="{t(back)}">Back</a></p></main></body></html>\n'
    )


def confirm_form(url: str, action: str, csrf: str) -> str:
    return (
        f'<form method="post" action="{t(url)}">'
        f'<input type="hidden" name="csrf" value="{t(csrf)}">'
        f'<input type="hidden" name="action" value="{t(action)}">'
        '<input type="hidden" name="confirmed" value="1">'
        f'<button type="submit" class="primary">Confirm {t(action)}</button></form>'
    )


def sse_frame(event: str, data: Any, event_id: str | None = None) -> bytes:
    """One server-sent event: `event:`, optional `id:`, the data as JSON (one line, so no
    line of it can end the frame early or start a field) and the blank line that ends it."""
    if "\n" in event or "\r" in event:
        raise ValueError("an event name is one line")
    payload = json.dumps(data, separators=(",", ":"))
    lines = [f"event: {event}"]
    if event_id is not None:
        if "\n" in event_id or "\r" in event_id:
            raise ValueError("an event id is one line")
        lines.append(f"id: {event_id}")
    lines.extend(f"data: {line}" for line in payload.splitlines() or [""])
    return ("\n".join(lines) + "\n\n").encode("utf-8")


SSE_KEEPALIVE = b": keep-alive\n\n"


def changed(previous: dict[str, str], now: dict[str, str]) -> dict[str, str]:
    """The sections whose HTML differs from what was last sent."""
    return {key: html for key, html in now.items() if previous.get(key) != html}
