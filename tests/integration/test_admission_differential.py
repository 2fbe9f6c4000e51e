"""The models and the real API server accept and refuse the same documents, naming the same
field: hypothesis-generated Applications and Deployments, valid ones and mutations of them
(wrong types, numbers out of range, bad enums, unknown and missing fields, bad images, bad
canary steps), each created with a server-side dry run (nothing is stored) and parsed by the
models as `lockgate plan` parses it.

The documents and the comparison are tests/support/admission.py, unit-tested without a server
in tests/unit/test_admission.py. Each example is one API round trip: the count is modest.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from kubernetes import client as k8s

from lockgate.api import deployment as dep
from lockgate.names import API_VERSION
from tests.support.admission import (
    Doc,
    disagreement,
    documents,
    dry_run_create,
    model_verdict,
    server_verdict,
)
from tests.support.cluster import Cluster
from tests.support.rollouts import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def namespace(cluster: Cluster) -> Iterator[str]:
    name = f"lgdiff-{uuid.uuid4().hex[:8]}"
    proc = cluster.kubectl("create", "namespace", name)
    assert proc.returncode == 0, proc.stderr
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false")


@pytest.fixture(scope="module")
def objects(cluster: Cluster) -> Iterator[Any]:
    with cluster.api_client() as api:
        yield k8s.CustomObjectsApi(api)


def admission_policies(cluster: Cluster) -> str:
    """The ValidatingAdmissionPolicies and their bindings, with resource versions (a policy's
    also changes when its type checking is recorded): what the API server loads on the way
    to enforcing them."""
    listed = cluster.kubectl(
        "get",
        "validatingadmissionpolicies,validatingadmissionpolicybindings",
        "-o",
        "jsonpath={range .items[*]}{.kind}/{.metadata.name}@{.metadata.resourceVersion} {end}",
    )
    return listed.stdout or listed.stderr


@pytest.fixture(scope="module")
def policy_in_effect(cluster: Cluster, objects: Any, namespace: str) -> None:
    """The admission policy takes effect a moment after it is applied: wait until it refuses
    a step only it checks (a pause with an unknown field)."""
    doc = {
        "apiVersion": API_VERSION,
        "kind": "Deployment",
        "metadata": {"name": "policy-probe"},
        "spec": {
            "application": "shop",
            "image": "shop:2",
            "strategy": {"type": "Canary", "canary": {"steps": [{"pause": {"minutes": 1}}, 100]}},
        },
    }
    # No wall-clock limit: the wait goes on while the policies and bindings change.
    body = wait_for(
        "the ValidatingAdmissionPolicy from crds/ taking effect",
        lambda: dry_run_create(objects, namespace, doc),
        lambda: admission_policies(cluster),
        every=0.5,
    )
    assert dep.MSG_PAUSE in body, body


@pytest.mark.usefixtures("policy_in_effect")
@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(doc=documents())
def test_the_models_and_the_api_server_refuse_the_same_documents_naming_the_same_field(
    objects: Any, namespace: str, doc: Doc
) -> None:
    server = server_verdict(dry_run_create(objects, namespace, doc))
    problem = disagreement(model_verdict(doc), server)
    assert problem is None, f"{json.dumps(doc, indent=1)}\n{problem}"
