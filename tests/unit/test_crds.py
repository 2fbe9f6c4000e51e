"""The committed CRDs are exactly what the models generate, and they are structural."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lockgate.api.crdgen import all_crds, all_files

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("filename", sorted(all_files()))
def test_committed_file_matches_generator(filename: str) -> None:
    committed = (ROOT / "crds" / filename).read_text(encoding="utf-8")
    assert committed == all_files()[filename], (
        f"crds/{filename} is stale: run `python -m lockgate.api.crdgen`"
    )


def test_no_stray_files_in_crds() -> None:
    assert sorted(p.name for p in (ROOT / "crds").glob("*.yaml")) == sorted(all_files())


def _walk(node: dict[str, Any], path: str) -> list[str]:
    problems = []
    has_type = (
        "type" in node
        or node.get("x-kubernetes-int-or-string")
        or node.get("x-kubernetes-preserve-unknown-fields")
    )
    if not has_type:
        problems.append(f"{path}: no type")
    for banned in ("anyOf", "oneOf", "$ref", "allOf", "additionalProperties"):
        if banned in node and not (
            banned == "additionalProperties" and isinstance(node[banned], dict)
        ):
            problems.append(f"{path}: {banned}")
    for name, sub in node.get("properties", {}).items():
        problems += _walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _walk(node["items"], f"{path}[]")
    return problems


@pytest.mark.parametrize("filename", sorted(all_crds()))
def test_schema_is_structural(filename: str) -> None:
    version = all_crds()[filename]["spec"]["versions"][0]
    assert _walk(version["schema"]["openAPIV3Schema"], "") == []
    assert version["subresources"] == {"status": {}}


def test_names_columns_and_rules() -> None:
    crds = {doc["spec"]["names"]["kind"]: doc for doc in all_crds().values()}
    assert crds["Application"]["spec"]["names"]["shortNames"] == ["lga"]
    assert crds["Deployment"]["spec"]["names"]["shortNames"] == ["lgd"]
    columns = {
        c["name"] for c in crds["Deployment"]["spec"]["versions"][0]["additionalPrinterColumns"]
    }
    assert {"Phase", "Image", "Step", "Stable%", "Canary%", "Age"} <= columns
    text = yaml.safe_dump(all_crds())
    for needle in ("has(self.kubernetes) != has(self.docker)", "fileProvider"):
        assert needle in text


def test_every_rule_message_names_a_field() -> None:
    def rules(node: Any) -> list[dict[str, str]]:
        found: list[dict[str, str]] = []
        if isinstance(node, dict):
            found += node.get("x-kubernetes-validations", [])
            for value in node.values():
                found += rules(value)
        elif isinstance(node, list):
            for value in node:
                found += rules(value)
        return found

    all_rules = rules(all_crds()) + [{"message": v["message"]} for v in all_files_policy()]
    assert len(all_rules) >= 12
    for rule in all_rules:
        assert rule["message"].startswith("spec"), rule


def all_files_policy() -> list[dict[str, str]]:
    policy = yaml.safe_load_all(all_files()["validation-policy.lockgate.dev.yaml"])
    validations: list[dict[str, str]] = next(policy)["spec"]["validations"]
    return validations


def test_field_descriptions_come_from_docstrings() -> None:
    doc = all_crds()["deployments.lockgate.dev.yaml"]
    spec = doc["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    canary = spec["properties"]["strategy"]["properties"]["canary"]
    assert canary["description"] == "Settings for type Canary."
    assert "Short form" in canary["properties"]["steps"]["description"]
