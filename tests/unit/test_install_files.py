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


def test_chart_crds_are_links_to_the_generated_files() -> None:
    entries = sorted((CHART / "crds").iterdir())
    assert entries, "the chart has no crds/"
    targets = {}
    for entry in entries:
        assert entry.is_symlink(), f"{entry} is a copy: link it to crds/ instead"
        targets[entry.name] = entry.resolve()
        assert entry.resolve().is_file(), f"{entry} is a dangling link"
    generated = {t.name for t in targets.values() if t.parent == ROOT / "crds"}
    assert sorted(generated) == GENERATED, "every generated file in crds/ is in the chart"
    assert generated == set(targets), "nothing but the generated files"


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
        text = path.read_text(encoding="utf-8")
        assert "openAPIV3Schema" not in text, f"{path} duplicates CRD content"
        assert "ValidatingAdmissionPolicy" not in text, f"{path} duplicates the policy"


def test_the_operator_runs_standalone_with_leader_election_not_kopf_peering() -> None:
    """The Lease elects the one acting operator; kopf's peering (which pauses every operator
    of equal priority) is gone from the chart, the manifests and their RBAC."""
    for path in [*(ROOT / "manifests").glob("*.yaml"), *(CHART / "templates").glob("*")]:
        text = path.read_text(encoding="utf-8")
        assert "kopf.dev" not in text and "--peering" not in text, path
    (dep,) = [d for d in docs(ROOT / "manifests" / "operator.yaml") if d["kind"] == "Deployment"]
    args = dep["spec"]["template"]["spec"]["containers"][0]["args"]  # type: ignore[index]
    assert "--leader-elect" in args


def test_plain_rbac_grants_exactly_the_lease_verbs_the_elector_uses() -> None:
    """lockgate.controller.leader.LeaseApi: create the Lease, then read (get), watch and
    replace (update) that one Lease; nothing else on Leases, nowhere else."""
    rules = [
        (doc["kind"], doc["metadata"].get("namespace"), rule)  # type: ignore[index]
        for doc in docs(ROOT / "manifests" / "rbac.yaml")
        for rule in doc.get("rules") or []  # type: ignore[attr-defined]
        if "coordination.k8s.io" in rule["apiGroups"]
    ]
    assert rules == [
        (
            "Role",
            "lockgate-system",
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        ),
        (
            "Role",
            "lockgate-system",
            {
                "apiGroups": ["coordination.k8s.io"],
                "resources": ["leases"],
                "resourceNames": ["lockgate"],
                "verbs": ["get", "watch", "update"],
            },
        ),
    ]


# What lockgate deletes: the route objects an Application owned for a router it no longer
# uses (moved between a TraefikService and an HTTPRoute). Nothing else, never collections.
DELETABLE = {"traefikservices", "ingressroutes", "httproutes"}


def test_plain_rbac_grants_no_secret_access_and_no_wildcards() -> None:
    for doc in docs(ROOT / "manifests" / "rbac.yaml"):
        for rule in doc.get("rules") or []:  # type: ignore[attr-defined]
            assert "secrets" not in rule["resources"], rule
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
            assert not {"deletecollection", "escalate", "bind", "impersonate"} & set(
                rule["verbs"]
            ), rule
            if "delete" in rule["verbs"]:
                assert set(rule["resources"]) <= DELETABLE, rule


def test_dockerfile_names_no_registry_and_runs_as_non_root() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    froms = re.findall(r"^FROM\s+(\S+)", text, flags=re.M)
    assert froms and all(f == "${BASE_IMAGE}" for f in froms), froms
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root"), users
