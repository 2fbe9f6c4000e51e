"""Generates crds/*.yaml from the pydantic models: ``python -m lockgate.api.crdgen [DIR]``.

The models are the one source of truth. This module turns their JSON schema into a structural
openAPIV3Schema and adds what only a CRD can say: CEL rules (x-kubernetes-validations) mirroring
the models' validators with the same messages, printer columns, short names and the status
subresource. A unit test fails when the committed files differ from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from lockgate.names import GROUP, VERSION

from . import application as app
from . import deployment as dep
from .common import IMAGE_PATTERN, PERCENT_CEL

Schema = dict[str, Any]

# Where each rule of the models is checked at admission
# ------------------------------------------------------
# Field constraints (types, ge/le, min/max length and items, pattern, Literal) become the
# OpenAPI schema through pydantic's JSON schema. What pydantic cannot say in JSON schema is
# added here, with the models' messages:
#   - the models' validators (model_validator, AfterValidator) -> OBJECT_RULES / FIELD_RULES,
#     CEL rules on the object or field they check;
#   - image references (common.IMAGE_PATTERN) -> FIELD_SCHEMAS: the same regex as the
#     OpenAPI `pattern` of spec.image and of the template's container images;
#   - canary steps (an integer or an object: no structural schema types them, and CEL rules
#     in a CRD cannot see inside x-kubernetes-preserve-unknown-fields) -> STEP_VALIDATIONS in
#     the ValidatingAdmissionPolicy, which sees the object as sent.
# The models' wire rules (strict types, null = absent, 3.0 is an integer) are the API
# server's own (common.SpecModel). What admission cannot check, and why: docs/api.md,
# "What admission does not check".

# CEL rules attached to the object schema of a model. Each message names the field and the
# allowed values, and matches the model validator's message.
OBJECT_RULES: dict[str, list[dict[str, str]]] = {
    "ApplicationSpec": [
        {"rule": "has(self.kubernetes) != has(self.docker)", "message": app.MSG_ONE_TARGET},
        {
            "rule": "!has(self.traffic) || !has(self.traffic.traefik)"
            " || !has(self.traffic.traefik.fileProvider) || has(self.docker)",
            "message": app.MSG_FILE_PROVIDER_DOCKER,
            "fieldPath": ".traffic.traefik.fileProvider",
        },
        {
            "rule": "!has(self.docker) || !has(self.traffic) || !has(self.traffic.traefik)"
            " || !has(self.traffic.traefik.fileProvider)"
            " || self.traffic.traefik.fileProvider.host == 'local'"
            " || self.docker.hosts.exists(h, h.name == self.traffic.traefik.fileProvider.host)",
            "message": app.MSG_FILE_PROVIDER_HOST,
            "fieldPath": ".traffic.traefik.fileProvider.host",
        },
        {
            "rule": "!has(self.traffic) || !has(self.traffic.gatewayAPI) || has(self.kubernetes)",
            "message": app.MSG_GATEWAY_KUBERNETES,
            "fieldPath": ".traffic.gatewayAPI",
        },
        {
            "rule": "!has(self.traffic) || !has(self.traffic.gatewayAPI)"
            " || !has(self.traffic.traefik) || !has(self.traffic.traefik.route)",
            "message": app.MSG_GATEWAY_TRAEFIK_ROUTE,
            "fieldPath": ".traffic.gatewayAPI",
        },
        {
            "rule": "!has(self.traffic) || !has(self.traffic.gatewayAPI)"
            " || !has(self.traffic.traefik) || !has(self.traffic.traefik.sticky)",
            "message": app.MSG_GATEWAY_STICKY,
            "fieldPath": ".traffic.traefik.sticky",
        },
        {
            "rule": "!has(self.docker) || !has(self.healthCheck)"
            " || !has(self.healthCheck.http) || !has(self.healthCheck.http.port)"
            " || self.healthCheck.http.port == (has(self.docker.container)"
            " && has(self.docker.container.port) ? self.docker.container.port : 8080)",
            "message": app.MSG_DOCKER_HEALTH_PORT,
            "fieldPath": ".healthCheck.http.port",
        },
        {
            "rule": "!has(self.notifications)"
            " || self.notifications.all(n, self.notifications.exists_one(x, x.name == n.name))",
            "message": app.MSG_NOTIFICATION_NAMES_UNIQUE,
            "fieldPath": ".notifications",
        },
    ],
    "GatewayAPITraffic": [
        {"rule": "has(self.route) != has(self.routeRef)", "message": app.MSG_GATEWAY_ONE_ROUTE},
    ],
    "NotificationTarget": [
        {"rule": "has(self.url) != has(self.urlSecretRef)", "message": app.MSG_NOTIFICATION_URL},
    ],
    "DockerTarget": [
        {
            "rule": "self.hosts.all(h, self.hosts.exists_one(x, x.name == h.name))",
            "message": app.MSG_HOST_NAMES_UNIQUE,
            "fieldPath": ".hosts",
        },
        {
            "rule": "self.hosts.all(h, !h.url.startsWith('ssh://')"
            " || (has(h.sshKeySecretRef) && has(h.knownHostsSecretRef)))",
            "message": app.MSG_SSH_KEY,
            "fieldPath": ".hosts",
        },
    ],
    "Strategy": [
        {
            "rule": "(!has(self.rolling) || self.type == 'Rolling')"
            " && (!has(self.blueGreen) || self.type == 'BlueGreen')"
            " && (!has(self.canary) || self.type == 'Canary')",
            "message": dep.MSG_STRATEGY_BLOCK,
        },
        {
            "rule": "!has(self.type) || self.type != 'Canary' || has(self.canary)",
            "message": dep.MSG_CANARY_NEEDS_STEPS,
            "fieldPath": ".canary",
        },
    ],
    "AnalysisQuery": [
        {"rule": "has(self.max) || has(self.min)", "message": dep.MSG_QUERY_BOUND},
        {
            "rule": "!has(self.max) || !has(self.min) || self.min <= self.max",
            "message": dep.MSG_QUERY_BOUNDS_ORDER,
        },
    ],
    "DeploymentSpec": [
        {
            "rule": "!has(self.webhooks)"
            " || self.webhooks.all(w, self.webhooks.exists_one(x, x.name == w.name))",
            "message": dep.MSG_WEBHOOK_NAMES_UNIQUE,
            "fieldPath": ".webhooks",
        },
    ],
    "Analysis": [
        {
            "rule": "!has(self.queries)"
            " || self.queries.all(q, self.queries.exists_one(x, x.name == q.name))",
            "message": dep.MSG_QUERY_NAMES_UNIQUE,
            "fieldPath": ".queries",
        },
    ],
}

MSG_MIN_HEALTHY = "spec.strategy.rolling.minHealthy: an integer >= 0 or a percentage 0%-100%"
MSG_CANARY_HOSTS = "spec.strategy.canary.canaryHosts: an integer >= 1 or a percentage 1%-100%"
MSG_LATENCY_INCREASE = "spec.analysis.maxLatencyP95Increase: a percentage like '50%' (0% to 9999%)"
MSG_CPU_INCREASE = "spec.analysis.maxCpuIncrease: a percentage like '50%' (0% to 9999%)"
MSG_MEMORY_INCREASE = "spec.analysis.maxMemoryIncrease: a percentage like '50%' (0% to 9999%)"
INCREASE_RULE = "type(self) == int ? self >= 0 : self.matches('^[0-9]{1,4}%$')"

# Rules on single fields: (model name, field alias) -> rules.
FIELD_RULES: dict[tuple[str, str], list[dict[str, str]]] = {
    ("RollingStrategy", "batchSize"): [
        {
            "rule": f"type(self) == int ? self > 0 : self.matches('{PERCENT_CEL}') && self != '0%'",
            "message": dep.MSG_BATCH_SIZE,
        }
    ],
    ("RollingStrategy", "minHealthy"): [
        {
            "rule": f"type(self) == int ? self >= 0 : self.matches('{PERCENT_CEL}')",
            "message": MSG_MIN_HEALTHY,
        }
    ],
    ("CanaryStrategy", "canaryHosts"): [
        {
            "rule": f"type(self) == int ? self > 0 : self.matches('{PERCENT_CEL}') && self != '0%'",
            "message": MSG_CANARY_HOSTS,
        }
    ],
    ("Analysis", "maxLatencyP95Increase"): [
        {"rule": INCREASE_RULE, "message": MSG_LATENCY_INCREASE}
    ],
    ("Analysis", "maxCpuIncrease"): [{"rule": INCREASE_RULE, "message": MSG_CPU_INCREASE}],
    ("Analysis", "maxMemoryIncrease"): [{"rule": INCREASE_RULE, "message": MSG_MEMORY_INCREASE}],
}


def _image_schema() -> Schema:
    """An image field: the reference grammar as OpenAPI `pattern`, so the API server refuses
    a bad reference naming the field. (Not a CEL rule: one over every container image of a
    template exceeds the API server's cost budget for a CRD.)"""
    return {"type": "string", "pattern": IMAGE_PATTERN}


def _template_schema() -> Schema:
    """The parts of a PodTemplateSpec the model checks; the rest is kept as written."""
    lists = {
        key: {
            "type": "array",
            "items": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"image": _image_schema()},
            },
        }
        for key in app.TEMPLATE_CONTAINER_LISTS
    }
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": lists,
            }
        },
    }


# Schema added to (and replacing parts of) single fields: (model name, field alias) -> schema.
FIELD_SCHEMAS: dict[tuple[str, str], Schema] = {
    ("DeploymentSpec", "image"): _image_schema(),
    ("KubernetesTarget", "template"): _template_schema(),
}

# Canary steps mix integers (the short form) and objects, so the CRD schema cannot type
# them and CRD-embedded CEL cannot see them at all. A ValidatingAdmissionPolicy evaluates
# CEL against the object as sent, so it checks them at admission with the same messages.
_STEPS = (
    "has(object.spec.strategy) && has(object.spec.strategy.canary)"
    " && has(object.spec.strategy.canary.steps) ? object.spec.strategy.canary.steps : []"
)
_WEIGHTS = (
    "variables.steps.filter(s, type(s) == int || (type(s) == map && has(s.setWeight)))"
    ".map(s, type(s) == int ? s : s.setWeight)"
)
_PAUSES = "variables.steps.filter(s, type(s) == map && has(s.pause)).map(s, s.pause)"
_HEADER_ROUTES = (
    "variables.steps.filter(s, type(s) == map && has(s.setHeaderRoute)).map(s, s.setHeaderRoute)"
)
_MIRRORS = "variables.steps.filter(s, type(s) == map && has(s.setMirror)).map(s, s.setMirror)"
_STEP_KEYS = ("setWeight", "pause", "setHeaderRoute", "setMirror")
_NAME = f'"{dep.HEADER_NAME_PATTERN}"'
_VALUE = f'"{dep.HEADER_VALUE_PATTERN}"'
_HEADER_MATCH = (
    "type(m) == map && m.all(k, k == 'header' || k == 'cookie' || k == 'exact' || k == 'regex')"
    " && has(m.header) != has(m.cookie) && has(m.exact) != has(m.regex)"
    f" && (has(m.header) ? type(m.header) == string && m.header.matches({_NAME})"
    f" : type(m.cookie) == string && m.cookie.matches({_NAME}))"
    f" && (has(m.exact) ? type(m.exact) == string && m.exact.matches({_VALUE})"
    f" : type(m.regex) == string && m.regex.matches({_VALUE}))"
)
STEP_VALIDATIONS: list[dict[str, str]] = [
    {
        "expression": "variables.steps.all(s, type(s) == int || (type(s) == map"
        " && s.all(k, " + " || ".join(f"k == '{k}'" for k in _STEP_KEYS) + ") && size(s) == 1))",
        "message": dep.MSG_STEP_ONE_OF,
    },
    {
        # HeaderRouteStep and HeaderMatch (their nulls are refused, as by the models).
        "expression": "variables.headerRoutes.all(r, type(r) == map && r.all(k, k == 'match')"
        " && (!has(r.match) || (type(r.match) == list"
        f" && size(r.match) <= {dep.MAX_HEADER_MATCHES} && r.match.all(m, {_HEADER_MATCH}))))",
        "message": dep.MSG_HEADER_ROUTE,
    },
    {
        "expression": "variables.mirrors.all(p, type(p) == map && p.all(k, k == 'percent')"
        " && has(p.percent) && type(p.percent) == int && p.percent >= 0 && p.percent <= 100)",
        "message": dep.MSG_MIRROR,
    },
    {
        "expression": "variables.weights.all(w, type(w) == int && w >= 0 && w <= 100)",
        "message": dep.MSG_WEIGHT_RANGE,
    },
    {"expression": "variables.weights.isSorted()", "message": dep.MSG_WEIGHT_ORDER},
    {
        # With the two rules above, "some weight is 100" means "the last weight is 100".
        "expression": "size(variables.steps) == 0 || variables.weights.exists(w, w == 100)",
        "message": dep.MSG_WEIGHT_END,
    },
    {
        # PauseStep: only `seconds`, absent or an integer in range (a null is refused, as by
        # the model: the API server keeps nulls inside steps).
        "expression": "variables.pauses.all(p, type(p) == map && p.all(k, k == 'seconds')"
        " && (!has(p.seconds) || (type(p.seconds) == int"
        " && p.seconds >= 0 && p.seconds <= 604800)))",
        "message": dep.MSG_PAUSE,
    },
]


# Every check of the spec models that pydantic's JSON schema does not carry, and what
# admission checks it with: a CEL message or the image pattern, each of which must appear in
# the generated files. tests/unit/test_admission.py finds the checks by introspection (model
# validators, AfterValidators, and the field constraints of the canary step models, which
# are not in the CRD schema) and fails on one that is not listed here.
ADMISSION_CHECKS: dict[str, list[str]] = {
    "ApplicationSpec._one_target": [
        app.MSG_ONE_TARGET,
        app.MSG_FILE_PROVIDER_DOCKER,
        app.MSG_FILE_PROVIDER_HOST,
        app.MSG_GATEWAY_KUBERNETES,
        app.MSG_GATEWAY_TRAEFIK_ROUTE,
        app.MSG_GATEWAY_STICKY,
        app.MSG_DOCKER_HEALTH_PORT,
    ],
    "GatewayAPITraffic._one_route": [app.MSG_GATEWAY_ONE_ROUTE],
    "ApplicationSpec._unique_notification_names": [app.MSG_NOTIFICATION_NAMES_UNIQUE],
    "NotificationTarget._one_url": [app.MSG_NOTIFICATION_URL],
    "DockerTarget._hosts_valid": [app.MSG_HOST_NAMES_UNIQUE, app.MSG_SSH_KEY],
    "KubernetesTarget.template": [IMAGE_PATTERN],
    "DeploymentSpec.image": [IMAGE_PATTERN],
    "RollingStrategy._positive_batch": [dep.MSG_BATCH_SIZE],
    "RollingStrategy.batch_size": [dep.MSG_BATCH_SIZE],
    "RollingStrategy.min_healthy": [MSG_MIN_HEALTHY],
    "CanaryStrategy.canary_hosts": [MSG_CANARY_HOSTS],
    "CanaryStrategy._weights": [dep.MSG_WEIGHT_RANGE, dep.MSG_WEIGHT_ORDER, dep.MSG_WEIGHT_END],
    "CanaryStep._one_of": [dep.MSG_STEP_ONE_OF],
    "CanaryStep.set_weight": [dep.MSG_WEIGHT_RANGE],
    "PauseStep.seconds": [dep.MSG_PAUSE],
    "HeaderMatch._valid": [dep.MSG_HEADER_ROUTE],
    "HeaderRouteStep._bounded": [dep.MSG_HEADER_ROUTE],
    "MirrorStep._in_range": [dep.MSG_MIRROR],
    "Strategy._matching_block": [dep.MSG_STRATEGY_BLOCK, dep.MSG_CANARY_NEEDS_STEPS],
    "AnalysisQuery._bounded": [dep.MSG_QUERY_BOUND, dep.MSG_QUERY_BOUNDS_ORDER],
    "Analysis._unique_query_names": [dep.MSG_QUERY_NAMES_UNIQUE],
    "DeploymentSpec._unique_webhook_names": [dep.MSG_WEBHOOK_NAMES_UNIQUE],
    "Analysis.max_latency_p95_increase": [MSG_LATENCY_INCREASE],
    "Analysis.max_cpu_increase": [MSG_CPU_INCREASE],
    "Analysis.max_memory_increase": [MSG_MEMORY_INCREASE],
}


def admission_policy() -> list[dict[str, Any]]:
    name = f"deployments-steps.{GROUP}"
    return [
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "lockgate"}},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [GROUP],
                            "apiVersions": [VERSION],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["deployments"],
                        }
                    ]
                },
                "variables": [
                    {"name": "steps", "expression": _STEPS},
                    {"name": "weights", "expression": _WEIGHTS},
                    {"name": "pauses", "expression": _PAUSES},
                    {"name": "headerRoutes", "expression": _HEADER_ROUTES},
                    {"name": "mirrors", "expression": _MIRRORS},
                ],
                "validations": STEP_VALIDATIONS,
            },
        },
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/part-of": "lockgate"}},
            "spec": {"policyName": name, "validationActions": ["Deny"]},
        },
    ]


_KEEP = {
    "type",
    "description",
    "default",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "pattern",
    "format",
    "items",
    "properties",
    "required",
    "additionalProperties",
}


class _Converter:
    def __init__(self, defs: dict[str, Schema], with_defaults: bool) -> None:
        self.defs = defs
        self.with_defaults = with_defaults

    def convert(self, node: Schema, model_name: str | None = None) -> Schema:
        if "$ref" in node:
            name = node["$ref"].split("/")[-1]
            resolved = self.convert(self.defs[name], name)
            if "description" in node:
                resolved["description"] = " ".join(str(node["description"]).split())
            return resolved
        if "anyOf" in node:
            return self._union(node)
        if "const" in node:
            node = {**{k: v for k, v in node.items() if k != "const"}, "enum": [node["const"]]}
        out: Schema = {}
        for key, value in node.items():
            if key not in _KEEP:
                continue
            if key == "properties":
                out[key] = {
                    prop: self._property(model_name, prop, sub) for prop, sub in value.items()
                }
            elif key == "items":
                out[key] = self.convert(value)
            elif key == "additionalProperties":
                if isinstance(value, dict):
                    out[key] = self.convert(value) if value else {}
                # `false` (extra="forbid"): pruning and kubectl's strict field validation
                # refuse unknown fields already.
            elif key == "description":
                out[key] = " ".join(str(value).split())
            elif key == "default":
                if value is not None and self.with_defaults and not isinstance(value, dict):
                    out[key] = value
            else:
                out[key] = value
        if (
            out.get("type") == "object"
            and "properties" not in out
            and out.get("additionalProperties", {}) == {}
        ):
            out.pop("additionalProperties", None)
            out["x-kubernetes-preserve-unknown-fields"] = True
        if model_name in OBJECT_RULES:
            out["x-kubernetes-validations"] = OBJECT_RULES[model_name]
        return out

    def _property(self, model_name: str | None, prop: str, sub: Schema) -> Schema:
        out = self.convert(sub)
        extra = FIELD_SCHEMAS.get((model_name or "", prop))
        if extra:
            if "properties" in extra:  # a typed part of a free-form object
                out.pop("x-kubernetes-preserve-unknown-fields", None)
            out.update(extra)
        rules = FIELD_RULES.get((model_name or "", prop))
        if rules:
            out["x-kubernetes-validations"] = rules
        return out

    def _union(self, node: Schema) -> Schema:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        extra = {k: v for k, v in node.items() if k in ("description", "default")}
        if "description" in extra:
            extra["description"] = " ".join(str(extra["description"]).split())
        if not self.with_defaults or extra.get("default") is None:
            extra.pop("default", None)
        if len(branches) == 1:
            out = self.convert(branches[0])
            out.update({k: v for k, v in extra.items() if k not in out or k == "description"})
            return out
        types = sorted(str(b.get("type", "object" if "$ref" in b else "")) for b in branches)
        if types == ["integer", "string"]:
            return {**extra, "x-kubernetes-int-or-string": True}
        # int | object (canary steps' short form): no structural type can say it, so the
        # items are kept as they are and CEL rules on the list check them.
        return {**extra, "x-kubernetes-preserve-unknown-fields": True}


def openapi_schema(model: type[BaseModel], *, with_defaults: bool) -> Schema:
    raw = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    defs = raw.pop("$defs", {})
    return _Converter(defs, with_defaults).convert(raw, model.__name__)


def crd(
    *,
    kind: str,
    plural: str,
    short_names: list[str],
    spec_model: type[BaseModel],
    status_model: type[BaseModel],
    columns: list[dict[str, Any]],
    description: str,
) -> dict[str, Any]:
    spec = openapi_schema(spec_model, with_defaults=True)
    status = openapi_schema(status_model, with_defaults=False)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "lockgate"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
                "categories": ["lockgate"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                        }
                    },
                }
            ],
        },
    }


def _col(name: str, path: str, kind: str = "string", priority: int = 0) -> dict[str, Any]:
    col: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority:
        col["priority"] = priority
    return col


AGE = _col("Age", ".metadata.creationTimestamp", "date")


def all_crds() -> dict[str, dict[str, Any]]:
    return {
        f"applications.{GROUP}.yaml": crd(
            kind="Application",
            plural="applications",
            short_names=["lga"],
            spec_model=app.ApplicationSpec,
            status_model=app.ApplicationStatus,
            description="What runs, where, and how Traefik routes to it.",
            columns=[
                _col("Phase", ".status.phase"),
                _col("Stable", ".status.stable.image"),
                _col("Active", ".status.activeDeployment"),
                _col("Ready", ".status.instances.ready", "integer"),
                AGE,
            ],
        ),
        f"deployments.{GROUP}.yaml": crd(
            kind="Deployment",
            plural="deployments",
            short_names=["lgd"],
            spec_model=dep.DeploymentSpec,
            status_model=dep.DeploymentStatus,
            description="Moves an Application to a new image, step by step.",
            columns=[
                _col("App", ".spec.application"),
                _col("Phase", ".status.phase"),
                _col("Image", ".spec.image"),
                _col("Step", ".status.step.description"),
                _col("Stable%", ".status.weights.stable", "integer"),
                _col("Canary%", ".status.weights.canary", "integer"),
                _col("Revision", ".status.revision", "integer", priority=1),
                _col("Message", ".status.message", priority=1),
                AGE,
            ],
        ),
    }


HEADER = "# Generated by `python -m lockgate.api.crdgen` from operator/lockgate/api. Do not edit.\n"


POLICY_FILE = f"validation-policy.{GROUP}.yaml"


def render(doc: dict[str, Any] | list[dict[str, Any]]) -> str:
    docs = doc if isinstance(doc, list) else [doc]
    return HEADER + yaml.safe_dump_all(docs, sort_keys=False, allow_unicode=True, width=100)


def all_files() -> dict[str, str]:
    """Every generated file in crds/ and its content."""
    files = {filename: render(doc) for filename, doc in all_crds().items()}
    files[POLICY_FILE] = render(admission_policy())
    return files


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in all_files().items():
        path = directory / filename
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else Path(__file__).resolve().parents[3] / "crds"
    for path in write(target):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
