"""Admission and the models refuse the same documents, as far as Python can tell without an
API server: the generated CRD schema (types, bounds, enums, patterns), evaluated here, against
the models, over the documents the differential test sends to a real API server
(tests/integration/test_admission_differential.py); every other check of the models is listed
with the CEL or policy rule that makes it at admission; image references are checked by one
regular expression on both sides."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import AfterValidator, BaseModel

from lockgate.api import application as app
from lockgate.api import deployment as dep
from lockgate.api.common import IMAGE_PATTERN, SpecModel, image_problem
from lockgate.api.crdgen import ADMISSION_CHECKS, all_files
from lockgate.cli.main import main
from tests.support.admission import (
    BAD_IMAGES,
    IMAGES,
    Verdict,
    applications,
    deployments,
    disagreement,
    documents,
    dry_run_create,
    fields_named,
    model_errors,
    model_verdict,
    near_images,
    re2_search,
    same_field,
    schema_problems,
    server_verdict,
    spec_schema,
)

# --- image references ------------------------------------------------------------------------


def _image_patterns() -> dict[str, str]:
    """Every `pattern` of an image field in the generated CRDs, by field."""
    template = spec_schema("Application")["properties"]["kubernetes"]["properties"]["template"]
    pod = template["properties"]["spec"]["properties"]
    return {
        "spec.image": spec_schema("Deployment")["properties"]["image"].get("pattern", ""),
        **{
            f"{app.TEMPLATE_PATH}.spec.{key}[].image": pod[key]["items"]["properties"]["image"].get(
                "pattern", ""
            )
            for key in app.TEMPLATE_CONTAINER_LISTS
        },
    }


def test_every_image_field_of_the_crds_has_the_models_pattern() -> None:
    assert _image_patterns() == dict.fromkeys(_image_patterns(), IMAGE_PATTERN)


@settings(max_examples=300)
@given(image=st.one_of(IMAGES, near_images(), BAD_IMAGES))
def test_the_schema_pattern_and_the_models_agree_on_every_image(image: str) -> None:
    for field, pattern in _image_patterns().items():
        assert re2_search(pattern, image) == (image_problem(image) is None), (field, image)


VALID_IMAGES = [
    "shop:2",
    "shop",
    "library/shop:2.1-rc.1_b",
    "registry.example.com:5000/team/shop:2",
    "localhost/shop@sha256:" + "a" * 64,
    "Registry.Example.com/shop:V2",
    "[::1]:5000/shop:2",
    "shop__cart/a-b--c.d:" + "x" * 128,
    "shop:2@sha512:" + "f" * 128,
]
INVALID_IMAGES = [
    "shop 2; rm -rf /",  # the reported one
    "shop:2 && curl x | sh",
    "$(reboot)",
    "Shop:2",
    "shop:" + "x" * 129,
    "shop:",
    "shop@sha256:abc",
    "shop//x",
    "shop:2\n",
    "-shop",
]


@pytest.mark.parametrize("image", VALID_IMAGES)
def test_valid_references_are_accepted(image: str) -> None:
    assert image_problem(image) is None
    assert re2_search(IMAGE_PATTERN, image)


@pytest.mark.parametrize("image", INVALID_IMAGES)
def test_invalid_references_are_refused_naming_the_field(image: str) -> None:
    doc = {
        "apiVersion": "lockgate.dev/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"application": "shop", "image": image},
    }
    verdict = model_verdict(doc)
    assert not verdict.accepted
    assert verdict.fields == {"spec.image"}, verdict.detail
    assert not re2_search(IMAGE_PATTERN, image)
    container = {"name": "app", "image": image}
    app_doc = {
        **doc,
        "kind": "Application",
        "spec": {"kubernetes": {"template": {"spec": {"containers": [{"name": "x"}, container]}}}},
    }
    assert model_verdict(app_doc).fields == {f"{app.TEMPLATE_PATH}.spec.containers[1].image"}


def test_lockgate_plan_refuses_a_bad_image_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(
        "apiVersion: lockgate.dev/v1alpha1\nkind: Deployment\nmetadata: {name: d}\n"
        "spec: {application: shop, image: 'shop 2; rm -rf /'}\n"
    )
    assert main(["plan", "-f", str(manifest)]) == 2
    assert "spec.image: 'shop 2; rm -rf /' is not an image reference" in capsys.readouterr().err


# --- the whole document: schema against models -----------------------------------------------


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(doc=st.one_of(applications(), deployments()))
def test_generated_valid_documents_are_valid(doc: dict[str, Any]) -> None:
    """The differential test's valid half really is valid, for the models and the schema."""
    assert model_verdict(doc).accepted, model_verdict(doc).detail
    assert schema_problems(doc) == []


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(doc=documents())
def test_the_schema_and_the_models_refuse_the_same_fields(doc: dict[str, Any]) -> None:
    """What the CRD schema refuses, the models refuse, naming the same field; and what the
    models refuse for a reason the schema expresses (not a CEL or policy rule), the schema
    refuses, naming the same field."""
    schema = schema_problems(doc)
    schema_fields = fields_named(schema)
    by_schema, by_rules = model_errors(doc)
    model = model_verdict(doc)
    if schema:
        assert not model.accepted, f"only the schema refuses it: {schema}"
        assert same_field(schema_fields, model.fields), (schema, model.detail)
    if by_schema:
        assert schema, f"only the models refuse it: {model.detail}"
        assert same_field(schema_fields, by_schema), (schema, sorted(by_schema))
    assert model.accepted == (not by_schema and not by_rules)


# --- every other check of the models has its rule at admission -------------------------------

STEP_MODELS: tuple[type[BaseModel], ...] = (
    dep.CanaryStep,
    dep.PauseStep,
    dep.HeaderRouteStep,
    dep.HeaderMatch,
    dep.MirrorStep,
)
"""Models inside canary steps, which the CRD schema does not type: their field constraints
are the admission policy's too."""


def _model_checks() -> set[str]:
    """Checks of the spec models that pydantic's JSON schema does not carry."""
    models: set[type[BaseModel]] = set()
    todo: list[type[BaseModel]] = [app.ApplicationSpec, dep.DeploymentSpec]
    while todo:
        model = todo.pop()
        if model in models:
            continue
        models.add(model)
        for info in model.model_fields.values():
            for arg in _types_in(info.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    todo.append(arg)
    checks: set[str] = set()
    for model in models:
        assert issubclass(model, SpecModel), f"{model.__name__} is not a SpecModel"
        for name in model.__pydantic_decorators__.model_validators:
            if name != "_as_the_api_server_reads_it":  # the wire rules, shared by all
                checks.add(f"{model.__name__}.{name}")
        for name in model.__pydantic_decorators__.field_validators:
            checks.add(f"{model.__name__}.{name}")
        for name, info in model.model_fields.items():
            if any(isinstance(m, AfterValidator) for m in info.metadata) or (
                model in STEP_MODELS and info.metadata
            ):
                checks.add(f"{model.__name__}.{name}")
            for arg in _types_in(info.annotation):
                if any(isinstance(m, AfterValidator) for m in getattr(arg, "__metadata__", ())):
                    checks.add(f"{model.__name__}.{name}")
    return checks


def _types_in(annotation: Any) -> list[Any]:
    out = [annotation]
    for arg in getattr(annotation, "__args__", ()) or ():
        out += _types_in(arg)
    if hasattr(annotation, "__origin__") and hasattr(annotation, "__metadata__"):
        out += _types_in(annotation.__origin__)
    return out


def test_every_check_of_the_models_is_listed_with_its_admission_rule() -> None:
    assert _model_checks() == set(ADMISSION_CHECKS)


@functools.cache
def _generated_strings() -> frozenset[str]:
    """Every string (message, rule, pattern) in the generated files."""

    def strings(node: Any) -> list[str]:
        if isinstance(node, dict):
            return [s for value in node.values() for s in strings(value)]
        if isinstance(node, list):
            return [s for value in node for s in strings(value)]
        return [node] if isinstance(node, str) else []

    return frozenset(
        s for text in all_files().values() for doc in yaml.safe_load_all(text) for s in strings(doc)
    )


@pytest.mark.parametrize("check", sorted(ADMISSION_CHECKS))
def test_every_listed_rule_is_in_the_generated_files(check: str) -> None:
    for needle in ADMISSION_CHECKS[check]:
        assert needle in _generated_strings(), (check, needle)


def test_the_pause_rule_is_in_the_policy_with_the_models_bounds() -> None:
    policy = next(yaml.safe_load_all(all_files()["validation-policy.lockgate.dev.yaml"]))
    (rule,) = [v for v in policy["spec"]["validations"] if v["message"] == dep.MSG_PAUSE]
    seconds = dep.PauseStep.model_fields["seconds"].metadata
    assert f"p.seconds >= {seconds[0].ge}" in rule["expression"]
    assert f"p.seconds <= {seconds[1].le}" in rule["expression"]


# --- the comparison itself -------------------------------------------------------------------


def _status(message: str, causes: list[dict[str, str]] | None = None, code: int = 422) -> str:
    body: dict[str, Any] = {"kind": "Status", "status": "Failure", "message": message}
    body["code"] = code
    if causes is not None:
        body["details"] = {"causes": causes}
    return json.dumps(body)


PATTERN_REFUSAL = _status(
    'Deployment.lockgate.dev "d" is invalid: spec.image: Invalid value: "shop 2": spec.image '
    "in body should match '^...$'",
    [{"reason": "FieldValueInvalid", "message": "Invalid value: ...", "field": "spec.image"}],
)
POLICY_REFUSAL = _status(
    'deployments.lockgate.dev "d" is forbidden: ValidatingAdmissionPolicy \'deployments-steps.'
    "lockgate.dev' with binding 'deployments-steps.lockgate.dev' denied request: " + dep.MSG_PAUSE
)
UNKNOWN_FIELD = _status('strict decoding error: unknown field "spec.strategy.foo"', code=400)


def test_server_verdicts_name_the_fields_of_the_status() -> None:
    assert server_verdict(None) == Verdict(True)
    assert server_verdict(PATTERN_REFUSAL).fields == {"spec.image"}
    assert server_verdict(POLICY_REFUSAL).fields == {"spec.strategy.canary.steps"}
    assert server_verdict(UNKNOWN_FIELD).fields == {"spec.strategy.foo"}
    assert not server_verdict("not json at all").accepted
    # A field that only a cause names (the message says "is invalid" and no more).
    causes = [{"reason": "FieldValueRequired", "message": "Required value", "field": "spec.image"}]
    only_cause = _status('Deployment.lockgate.dev "d" is invalid', causes)
    assert server_verdict(only_cause).fields == {"spec.image"}


class FakeObjects:
    """CustomObjectsApi's create: creates, or refuses with this status and body."""

    def __init__(self, status: int | None = None, body: str = "") -> None:
        self.status, self.body = status, body
        self.calls: list[tuple[Any, ...]] = []

    def create_namespaced_custom_object(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        from kubernetes.client.rest import ApiException

        self.calls.append((*args, kwargs))
        if self.status is not None:
            err = ApiException(status=self.status, reason="refused")
            err.body = self.body
            raise err
        return {}


def _refused_by(status: int, body: str) -> str | None:
    return dry_run_create(FakeObjects(status, body), "ns", {"kind": "Application", "spec": {}})


def test_the_dry_run_is_strict_and_stores_nothing() -> None:
    objects = FakeObjects()
    assert dry_run_create(objects, "ns", {"kind": "Application", "spec": {}}) is None
    (call,) = objects.calls
    assert call[:4] == ("lockgate.dev", "v1alpha1", "ns", "applications")
    assert call[-1] == {"dry_run": "All", "field_validation": "Strict"}
    assert _refused_by(422, PATTERN_REFUSAL) == PATTERN_REFUSAL
    assert _refused_by(400, UNKNOWN_FIELD) == UNKNOWN_FIELD
    with pytest.raises(Exception, match="500"):
        _refused_by(500, "internal error")


def test_same_field_compares_fields_not_items() -> None:
    assert same_field(
        {"spec.strategy.canary.steps[2].pause.seconds"}, {"spec.strategy.canary.steps"}
    )
    assert same_field({"spec.image"}, {"spec.image"})
    assert not same_field({"spec.image"}, {"spec.application"})
    assert not same_field({"spec", "spec.image"}, {"spec", "spec.application"})
    assert same_field({"spec"}, {"spec"})
    assert not same_field(set(), {"spec.image"})


def test_disagreement_says_who_accepts_and_who_refuses() -> None:
    refused = Verdict(False, frozenset({"spec.image"}), "spec.image: bad")
    assert disagreement(Verdict(True), Verdict(True)) is None
    assert disagreement(refused, server_verdict(PATTERN_REFUSAL)) is None
    assert "the models refuse it, the API server accepts it" in str(
        disagreement(refused, Verdict(True))
    )
    assert "the models accept it, the API server refuses it" in str(
        disagreement(Verdict(True), refused)
    )
    other = Verdict(False, frozenset({"spec.paused"}), "spec.paused: bad")
    assert "naming different fields" in str(disagreement(refused, other))


def test_the_model_verdict_of_a_mutation_names_its_field() -> None:
    doc = {
        "apiVersion": "lockgate.dev/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"application": "shop", "image": "shop:2", "progressDeadlineSeconds": "30"},
    }
    verdict = model_verdict(doc)
    assert verdict.fields == {"spec.progressDeadlineSeconds"}
    assert schema_problems(doc) == ["spec.progressDeadlineSeconds: must be of type integer"]
    doc["spec"]["progressDeadlineSeconds"] = 30.0  # a whole number: the API server takes it
    assert model_verdict(doc).accepted
    assert schema_problems(doc) == []


def test_python_field_names_are_unknown_fields_as_for_the_api_server() -> None:
    doc = {
        "apiVersion": "lockgate.dev/v1alpha1",
        "kind": "Deployment",
        "metadata": {"name": "d"},
        "spec": {"application": "shop", "image": "shop:2", "progress_deadline_seconds": 30},
    }
    assert model_verdict(doc).fields == {"spec.progress_deadline_seconds"}
    assert schema_problems(doc) == ["spec.progress_deadline_seconds: unknown field"]
