"""docs/ stays true to the repository: links resolve, every example file is explained, every
operator metric and Event reason is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from lockgate.controller import metrics

ROOT = Path(__file__).resolve().parents[2]
DOCS = sorted((ROOT / "docs").glob("*.md"))


@pytest.mark.parametrize("doc", DOCS, ids=[d.name for d in DOCS])
def test_relative_links_resolve(doc: Path) -> None:
    text = doc.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    assert links or doc.name not in ("api.md", "strategies.md")
    for link in links:
        if "://" in link:
            continue
        assert (doc.parent / link).resolve().exists(), f"{doc.name}: broken link {link}"


def test_every_example_is_linked_from_the_api_page() -> None:
    api = (ROOT / "docs/api.md").read_text()
    for path in sorted((ROOT / "manifests/examples").rglob("*.yaml")):
        relative = path.relative_to(ROOT / "manifests/examples")
        assert str(relative) in api or f"]({path.name})" in api.replace(
            f"../manifests/examples/{relative.parent}/", ""
        ), f"docs/api.md does not mention {relative}"


def test_every_operator_metric_is_documented() -> None:
    operations = (ROOT / "docs/operations.md").read_text()
    names = [
        f"{value._name}_total" if value._type == "counter" else value._name
        for value in vars(metrics).values()
        if hasattr(value, "_name") and hasattr(value, "_type")
    ]
    assert len(names) >= 6
    for shown in names:
        assert f"`{shown}`" in operations, f"{shown} missing from docs/operations.md"


def test_every_event_reason_is_documented() -> None:
    source = "".join(p.read_text() for p in (ROOT / "operator/lockgate").rglob("*.py"))
    reasons = set(re.findall(r'reason="([A-Z][A-Za-z]+)"', source))
    reasons |= set(re.findall(r'self\.event\(\s*"([A-Z][A-Za-z]+)"', source))
    assert {"ActionIgnored", "AnalysisFailed", "ApplicationNotFound"} <= reasons
    operations = (ROOT / "docs/operations.md").read_text()
    for reason in sorted(reasons):
        assert f"`{reason}`" in operations, f"Event reason {reason} missing from operations.md"
