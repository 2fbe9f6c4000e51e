"""`lockgate plan`: the timeline the engine will follow, printed without touching a cluster."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from lockgate.api import Application, Deployment, InvalidManifest, parse_resource
from lockgate.api.application import ApplicationSpec
from lockgate.engine import Plan, Step, compile_plan, cross_check
from lockgate.engine.plan import canary_load_percent

ASSUMED_APP = {"kubernetes": {"replicas": 4}}


def load_resources(paths: list[Path]) -> list[Application | Deployment]:
    out: list[Application | Deployment] = []
    for path in paths:
        try:
            docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except yaml.YAMLError as err:
            raise InvalidManifest(str(path), [f"not valid YAML: {err}"]) from None
        for doc in docs:
            if doc:
                out.append(parse_resource(doc, str(path)))
    return out


def find_application(
    name: str, given: list[Application], near: list[Path]
) -> tuple[ApplicationSpec, str]:
    """The Application named by the Deployment: from -f, else a file beside the Deployment."""
    for app in given:
        if app.metadata.name == name:
            return app.spec, f"from {app.metadata.name}"
    for directory in {p.parent for p in near}:
        for candidate in sorted(directory.glob("*.y*ml")):
            try:
                docs = list(yaml.safe_load_all(candidate.read_text(encoding="utf-8")))
            except (OSError, yaml.YAMLError):
                continue
            for doc in docs:
                if (
                    isinstance(doc, dict)
                    and doc.get("kind") == "Application"
                    and (doc.get("metadata") or {}).get("name") == name
                ):
                    resource = parse_resource(doc, str(candidate))
                    assert isinstance(resource, Application)
                    return resource.spec, f"from {candidate}"
    spec = ApplicationSpec.model_validate(ASSUMED_APP)
    return spec, "not found: assuming Kubernetes with 4 replicas (pass -f application.yaml)"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "until promote"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s" if sec else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


@dataclass(frozen=True)
class Row:
    number: int
    step: Step
    waits: str
    worst: float | None  # seconds; None: unbounded (needs a promote)


def _weights(step: Step, previous: str) -> str:
    if step.kind == "promote":
        return "100/0 (new)"
    if step.weight is None:
        c, s = len(step.traffic_canary), len(step.traffic_stable)
        weight = round(100 * c / (c + s)) if c + s else 0
        return f"{100 - weight}/{weight}" if step.kind != "start" else previous
    extra = ""
    if step.routes.header:
        extra += " +header"
    if step.routes.mirror:
        extra += f" +mirror {step.routes.mirror}%"
    return f"{100 - step.weight}/{step.weight}{extra}"


def rows(plan: Plan, deployment: Deployment) -> list[Row]:
    spec = deployment.spec
    deadline = spec.progress_deadline_seconds
    interval = spec.analysis.interval_seconds if spec.analysis else None
    out: list[Row] = []
    for i, step in enumerate(plan.steps):
        if step.kind == "start":
            waits, worst = f"new instances healthy (deadline {deadline}s)", float(deadline)
        elif step.kind == "shift" and step.gate and step.routes.mirror and not step.weight:
            waits = (
                f"mirror live, then a passed analysis of the copies alone (every {interval}s, "
                f"deadline {deadline}s)"
            )
            worst = float(deadline)
        elif step.kind == "shift" and step.gate:
            waits = (
                f"weights live, then a passed analysis (every {interval}s, deadline {deadline}s)"
            )
            worst = float(deadline)
        elif step.kind == "shift" and step.routes and not step.gate:
            waits = f"weights and routes confirmed live (deadline {deadline}s)"
            worst = float(deadline)
        elif step.kind == "shift":
            waits, worst = f"weights confirmed live (deadline {deadline}s)", float(deadline)
        elif step.kind == "drain":
            waits = f"old instances gone, minHealthy {plan.min_healthy} kept (deadline {deadline}s)"
            worst = float(deadline)
        elif step.kind == "pause" and step.seconds is None:
            waits, worst = "a promote action (kubectl-lockgate promote)", None
        elif step.kind == "pause":
            waits, worst = (
                f"{step.seconds}s" + (", analysis keeps running" if interval else ""),
                float(step.seconds or 0),
            )
        else:
            waits, worst = "stable switched, old instances removed", 0.0
        hooks = spec.hooks(step.confirm) if step.confirm else []
        if hooks:
            names = ", ".join(h.name for h in hooks)
            waits = f"{step.confirm} webhook {names} says yes, then {waits}"
            worst = None if worst is None else worst + float(deadline)  # each its own deadline
        out.append(Row(i + 1, step, waits, worst))
    return out


def _canary_load(step: Step, units: int) -> str:
    """What each canary instance carries while the step holds a weight below 100, against
    what each instance carried before the rollout."""
    weight = step.weight
    if weight is None or not 0 < weight < 100 or not step.canary_units:
        return ""
    return f"{canary_load_percent(units, weight, len(step.canary_units))}%"


def render(deployment: Deployment, app: ApplicationSpec, app_source: str) -> str:
    spec = deployment.spec
    problem = cross_check(app, spec)
    plan = compile_plan(app, spec, has_stable=True)
    target = (
        f"Kubernetes, {len(app.units())} replicas"
        if app.kubernetes is not None
        else f"Docker, {len(app.units())} hosts: {', '.join(app.units())}"
    )
    lines = [
        f"Deployment {deployment.metadata.name}: {spec.application} -> {spec.image}",
        f"  application: {target} ({app_source})",
        f"  strategy:    {spec.strategy.type}; "
        f"rollback {'automatic' if spec.rollback.automatic else 'manual'}; "
        f"concurrency {spec.concurrency_policy}",
    ]
    gateway = app.traffic.gateway_api
    if gateway is not None:
        if gateway.route_ref is not None:
            where = (
                f"rule {gateway.route_ref.rule} of HTTPRoute {gateway.route_ref.name} "
                "(its backendRefs only)"
            )
        else:
            where = f"HTTPRoute {gateway.route_name(deployment.spec.application)} (owned)"
        lines.append(f"  traffic:     Gateway API, {where}")
    sticky = app.traffic.traefik.sticky
    if sticky is not None:
        lines.append(
            f"  sticky:      cookie {sticky.cookie.name}: a client keeps the version it got "
            "while weights change; a rollback moves everyone to stable"
        )
    if spec.analysis:
        a = spec.analysis
        gates = [f"every {a.interval_seconds}s", f"minRequests {a.min_requests}"]
        if a.max_error_rate is not None:
            gates.append(f"maxErrorRate {a.max_error_rate}")
        if a.max_error_rate_increase is not None:
            gates.append(f"maxErrorRateIncrease {a.max_error_rate_increase}")
        if a.max_latency_p95_increase is not None:
            gates.append(f"maxLatencyP95Increase {a.max_latency_p95_increase}")
        if a.max_cpu_increase is not None:
            gates.append(f"maxCpuIncrease {a.max_cpu_increase}")
        if a.max_memory_increase is not None:
            gates.append(f"maxMemoryIncrease {a.max_memory_increase}")
        for q in a.queries:
            bounds = [f"min {q.min:g}"] if q.min is not None else []
            bounds += [f"max {q.max:g}"] if q.max is not None else []
            gates.append(f"query {q.name} ({', '.join(bounds)})")
        gates.append(f"Failed after {a.max_consecutive_failures} failed runs in a row")
        lines.append(f"  analysis:    {', '.join(gates)}")
        prometheus = app.metrics.prometheus
        source = f"Prometheus at {prometheus.url}" if prometheus else "Traefik's metrics"
        lines.append(f"  figures:     from {source}")
    else:
        lines.append("  analysis:    none (steps wait for health and timers only)")
    for hook in spec.webhooks:
        effect = {
            "preRollout": "before anything starts; a refusal or no answer fails the rollout",
            "confirmStep": "before each canary weight after the first and each rolling batch "
            "after the first; waits until 2xx",
            "confirmPromotion": "before the final switch; waits until 2xx",
            "postRollout": "once after Succeeded; informational",
            "rollback": "once when a started rollout fails; informational",
        }[hook.type]
        lines.append(
            f"  webhook:     {hook.type} {hook.name} -> {hook.shown_url} "
            f"(timeout {hook.timeout_seconds}s; {effect})"
        )
    if problem:
        lines.append(f"  INVALID:     {problem}")
    lines.append("")
    table = rows(plan, deployment)
    canary = spec.strategy.type == "Canary"
    headers = ("#", "step", "canary", "stable", "stable/canary %", "load/canary")
    headers = (*(headers if canary else headers[:-1]), "waits for", "at most")
    body: list[tuple[str, ...]] = []
    previous = "100/0"
    for row in table:
        weights = _weights(row.step, previous)
        previous = weights
        cells = [
            str(row.number),
            row.step.description,
            str(len(row.step.canary_units)),
            str(len(row.step.stable_units)),
            weights,
        ]
        if canary:
            cells.append(_canary_load(row.step, len(app.units())))
        body.append((*cells, row.waits, _duration(row.worst)))
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(headers)]
    lines.append("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for r in body:
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    lines.append("")
    bounded = [r.worst for r in table if r.worst is not None]
    worst = sum(bounded)
    if plan.failure_threshold > 1 and plan.batches:
        retries = plan.failure_threshold - 1
        worst += retries * 3 * spec.progress_deadline_seconds
    manual = sum(1 for r in table if r.worst is None)
    tail = f" plus {manual} manual promote(s)" if manual else ""
    lines.append(f"Worst-case duration: {_duration(worst)}{tail}.")
    timed = sum(r.step.seconds or 0 for r in table if r.step.kind == "pause")
    gated = sum(1 for r in table if r.step.gate)
    least = timed + gated * (spec.analysis.interval_seconds if spec.analysis else 0)
    lines.append(
        f"Shortest healthy run: about {_duration(least)} of configured waits and analysis, "
        "plus instance start-up."
    )
    rollback = (
        "returns 100% of traffic to the previous version and removes the new instances"
        if spec.rollback.automatic
        else "returns traffic to the previous version and keeps the new instances for inspection"
    )
    lines.append(f"On a Failed verdict or a missed deadline lockgate {rollback}.")
    if any(step.routes for step in plan.steps):
        lines.append(
            "Header route and mirror (+header, +mirror N%) point at the canary until the "
            "promotion or a rollback removes them, before anything else changes."
        )
    lines.append(
        "A first rollout (no previous version) skips the strategy: start, switch, promote."
    )
    return "\n".join(lines)


def plan_command(files: list[Path]) -> str:
    resources = load_resources(files)
    deployments = [r for r in resources if isinstance(r, Deployment)]
    apps = [r for r in resources if isinstance(r, Application)]
    if not deployments:
        raise InvalidManifest(
            ", ".join(map(str, files)), ["no Deployment (lockgate.dev/v1alpha1) found"]
        )
    out = []
    for deployment in deployments:
        app, source = find_application(deployment.spec.application, apps, files)
        out.append(render(deployment, app, source))
    return "\n\n".join(out)
