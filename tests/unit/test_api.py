"""The models refuse bad input with the field named, and accept every shipped example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from lockgate.api import Application, Deployment, DeploymentSpec, InvalidManifest, parse_resource
from lockgate.engine import compile_plan

ROOT = Path(__file__).resolve().parents[2]
INVALID = sorted((ROOT / "tests/data/invalid").glob("*.yaml"))
EXAMPLES = sorted((ROOT / "manifests/examples").rglob("*.yaml"))


def expected_field(path: Path) -> str:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith("# field: "), f"{path} must start with '# field: <path>'"
    return first.removeprefix("# field: ").strip()


def test_corpus_is_not_empty() -> None:
    assert len(INVALID) >= 20


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_manifest_is_refused_naming_the_field(path: Path) -> None:
    with pytest.raises(InvalidManifest) as err:
        parse_resource(yaml.safe_load(path.read_text(encoding="utf-8")), path.name)
    assert expected_field(path) in str(err.value)


# An example's file name starts with its strategy (canary-short.yaml: a Canary).
STRATEGY_OF_FILE = {
    "canary": "Canary",
    "bluegreen": "BlueGreen",
    "rolling": "Rolling",
    "recreate": "Recreate",
}


def example(path: Path) -> list[Application | Deployment]:
    return [parse_resource(doc, path.name) for doc in yaml.safe_load_all(path.read_text("utf-8"))]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_examples_are_valid(path: Path) -> None:
    """What a user copying the file gets: the Application of its target directory, or one
    Deployment of the strategy its name says, for that Application, whose plan has steps."""
    resources = example(path)
    (app,) = example(path.parent / "application.yaml")
    assert isinstance(app, Application)
    assert app.spec.docker is not None if path.parent.name == "docker" else app.spec.docker is None
    if path.stem == "application":
        assert resources == [app]
        return
    (dep,) = resources
    assert isinstance(dep, Deployment), f"{path.name} holds a {dep.kind}"
    assert dep.spec.application == app.metadata.name, "names the example Application"
    assert dep.spec.strategy.type == STRATEGY_OF_FILE[path.stem.split("-")[0]]
    for has_stable in (False, True):
        assert compile_plan(app.spec, dep.spec, has_stable=has_stable).steps


def test_every_example_is_in_the_docs_and_every_strategy_has_one_per_target() -> None:
    """docs/api.md lists the examples and says each strategy runs on both targets."""
    listed = re.findall(r"\(\.\./manifests/examples/([\w/-]+\.yaml)\)", read_doc("docs/api.md"))
    on_disk = [str(p.relative_to(ROOT / "manifests/examples")) for p in EXAMPLES]
    assert sorted(set(listed)) == on_disk
    for target in ("kubernetes", "docker"):
        strategies = {
            STRATEGY_OF_FILE[p.stem.split("-")[0]]
            for p in EXAMPLES
            if p.parent.name == target and p.stem != "application"
        }
        assert strategies == set(STRATEGY_OF_FILE.values()), target


def read_doc(name: str) -> str:
    return (ROOT / name).read_text(encoding="utf-8")


def test_defaults_are_what_a_user_expects() -> None:
    spec = DeploymentSpec.model_validate({"application": "shop", "image": "shop:2"})
    assert spec.strategy.type == "Rolling"
    assert spec.concurrency_policy == "Queue"
    assert spec.rollback.automatic is True
    assert spec.paused is False
    assert spec.analysis is None


def test_canary_short_form_expands_to_weights_with_pauses() -> None:
    spec = DeploymentSpec.model_validate(
        {
            "application": "shop",
            "image": "shop:2",
            "strategy": {"type": "Canary", "canary": {"steps": [10, 50, 100], "stepSeconds": 30}},
        }
    )
    assert spec.strategy.canary is not None
    steps = [s.wire() for s in spec.strategy.canary.expanded_steps()]
    assert steps == [
        {"setWeight": 10},
        {"pause": {"seconds": 30}},
        {"setWeight": 50},
        {"pause": {"seconds": 30}},
        {"setWeight": 100},
    ]


def test_wire_form_round_trips() -> None:
    doc = yaml.safe_load((ROOT / "manifests/examples/kubernetes/canary.yaml").read_text())
    resource = parse_resource(doc)
    assert isinstance(resource, Deployment)
    again = parse_resource({**doc, "spec": resource.spec.wire()})
    assert again == resource


def test_wrong_kind_is_named() -> None:
    with pytest.raises(InvalidManifest, match="kind"):
        parse_resource({"apiVersion": "lockgate.dev/v1alpha1", "kind": "Rollout"})


def test_prometheus_sources_and_queries_are_accepted_in_shape() -> None:
    from pydantic import ValidationError

    from lockgate.api import ApplicationSpec

    ratio = {"name": "error-ratio", "promql": 'sum(rate(x{service=~"$canary"}[$window]))'}
    spec = DeploymentSpec.model_validate(
        {
            "application": "shop",
            "image": "shop:2",
            "analysis": {
                "queries": [{**ratio, "max": 0.1}, {"name": "up", "promql": "up", "min": 1}]
            },
        }
    )
    assert spec.analysis is not None and [q.name for q in spec.analysis.queries] == [
        "error-ratio",
        "up",
    ]
    for url in (
        "http://prometheus:9090",
        "https://prom.example.com/prometheus/",
        "http://[::1]:9090",
    ):
        app = ApplicationSpec.model_validate(
            {"kubernetes": {"replicas": 1}, "metrics": {"prometheus": {"url": url}}}
        )
        assert app.metrics.prometheus is not None and app.metrics.prometheus.url == url
    for url in ("prometheus:9090", "http://u:p@prom:9090", "http://prom:9090/?x=1", "http://p q"):
        with pytest.raises(ValidationError, match=r"url"):
            ApplicationSpec.model_validate(
                {"kubernetes": {"replicas": 1}, "metrics": {"prometheus": {"url": url}}}
            )
    bad_queries = [
        ([{"name": "x", "promql": "up"}], "each query needs max or min"),
        ([{"name": "x", "promql": "up", "min": 2, "max": 1}], "min must not exceed its max"),
        ([{"name": "x", "promql": "up", "max": 1}] * 2, "query names must be unique"),
        ([{"name": "x y", "promql": "up", "max": 1}], "name"),
        ([{"name": "x", "promql": "", "max": 1}], "promql"),
    ]
    for queries, message in bad_queries:
        with pytest.raises(ValidationError, match=message):
            DeploymentSpec.model_validate(
                {"application": "shop", "image": "shop:2", "analysis": {"queries": queries}}
            )
