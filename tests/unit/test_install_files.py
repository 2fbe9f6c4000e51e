"""The install files share one source: the generated crds/ reach the Helm chart through
symlinks and the plain manifests through crds/Kustomization, never through copies."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "lockgate"
GENERATED = sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))


def docs(path: Path) -> list[dict[str, object]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def test_chart_crds_are_links_to_the_generated_files_and_the_kopf_peering_crds() -> None:
    entries = sorted((CHART / "crds").iterdir())
    assert entries, "the chart has no crds/"
    targets = {}
    for entry in entries:
        assert entry.is_symlink(), f"{entry} is a copy: link it to crds/ instead"
        targets[entry.name] = entry.resolve()
        assert entry.resolve().is_file(), f"{entry} is a dangling link"
    generated = {t.name for t in targets.values() if t.parent == ROOT / "crds"}
    assert sorted(generated) == GENERATED, "every generated file in crds/ is in the chart"
    assert targets["kopf.dev.yaml"] == ROOT / "manifests" / "kopf-peering-crds.yaml"


def test_crds_kustomization_lists_every_generated_file() -> None:
    kustomization = yaml.safe_load((ROOT / "crds" / "Kustomization").read_text("utf-8"))
    assert sorted(kustomization["resources"]) == GENERATED


def test_manifests_kustomization_references_crds_and_existing_files_only() -> None:
    kustomization = yaml.safe_load((ROOT / "manifests" / "kustomization.yaml").read_text("utf-8"))
    resources = kustomization["resources"]
    assert "../crds" in resources
    for resource in resources:
        assert (ROOT / "manifests" / resource).exists(), resource
    listed = {r for r in resources if not r.startswith("../")}
    on_disk = {p.name for p in (ROOT / "manifests").glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk, "every manifest is in the kustomization, and only those"


def test_no_lockgate_crd_content_is_duplicated_outside_crds() -> None:
    for path in [*(ROOT / "manifests").glob("*.yaml"), *(CHART / "templates").glob("*")]:
        if path.name == "kopf-peering-crds.yaml":
            continue  # kopf's, not generated: this is their one source
        text = path.read_text(encoding="utf-8")
        assert "openAPIV3Schema" not in text, f"{path} duplicates CRD content"
        assert "ValidatingAdmissionPolicy" not in text, f"{path} duplicates the policy"


def test_kopf_peering_crds_have_the_names_kopf_uses() -> None:
    names = {
        (d["spec"]["names"]["kind"], d["spec"]["scope"], d["metadata"]["name"])  # type: ignore[index]
        for d in docs(ROOT / "manifests" / "kopf-peering-crds.yaml")
    }
    assert names == {
        ("ClusterKopfPeering", "Cluster", "clusterkopfpeerings.kopf.dev"),
        ("KopfPeering", "Namespaced", "kopfpeerings.kopf.dev"),
    }


def test_plain_rbac_grants_no_secret_access_and_no_wildcards() -> None:
    for doc in docs(ROOT / "manifests" / "rbac.yaml"):
        for rule in doc.get("rules") or []:  # type: ignore[attr-defined]
            assert "secrets" not in rule["resources"], rule
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert not {"delete", "deletecollection", "escalate", "bind", "impersonate"} & set(
                rule["verbs"]
            ), rule


def test_dockerfile_names_no_registry_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms), froms
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
