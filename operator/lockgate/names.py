"""Names lockgate shares across layers: its API group, the labels and annotations it writes,
and how it names the objects of a traffic role.

One definition each, so the API models, the targets, the routers, the controller and the
kubectl plugin cannot drift apart. Nothing here imports the rest of lockgate.
"""

from __future__ import annotations

import re

GROUP = "lockgate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Annotations a person (or the kubectl plugin) and the operator write on a Deployment.
ACTION_ANNOTATION = f"{GROUP}/action"  # promote, promote-full, abort, retry
SUPERSEDED_ANNOTATION = f"{GROUP}/superseded-by"  # the Deployment that took over the lock

# Labels on everything lockgate creates, in a cluster and on Docker hosts.
LABEL_APP = f"{GROUP}/application"
LABEL_ROLE = f"{GROUP}/role"  # stable or canary, at creation
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGED_BY = "lockgate"

# Kubernetes target: the slot a workload fills and the release its Pods run.
LABEL_SLOT = f"{GROUP}/slot"
LABEL_RELEASE_HASH = f"{GROUP}/release-hash"  # a label value cannot hold `<deployment>/<n>`
ANNOTATION_RELEASE = f"{GROUP}/release"

# Docker target: the labels are the record a restarted operator reads back.
LABEL_DEPLOYMENT = f"{GROUP}/deployment"
LABEL_REVISION = f"{GROUP}/revision"
LABEL_RELEASE = f"{GROUP}/release"  # `<deployment>/<revision>`
LABEL_INDEX = f"{GROUP}/index"
LABEL_PORT = f"{GROUP}/port"
LABEL_IMAGE = f"{GROUP}/image"  # as requested: the daemon may show an ID once a tag moves

ROLES = ("stable", "canary")

# Sharding: an Application labelled `lockgate.dev/shard=NAME` is served only by the operator
# started with `--shard NAME`; one without the label (or with an empty value) by the operator
# started without it (the default shard). The operator serving an Application copies the
# label onto the Application's Deployments (a user labels only the Application).
LABEL_SHARD = f"{GROUP}/shard"
# A shard's name is a label value, and it also names the shard's finalizer, its kopf peering
# object and its Lease (`lockgate-<shard>`): so it must be a lowercase DNS label.
_SHARD_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def shard_name_problem(value: str) -> str | None:
    """Why `value` cannot name a shard, or None when it can ("" is the default shard)."""
    if value == "" or _SHARD_NAME.fullmatch(value):
        return None
    return (
        f"{value!r} is not a shard name: it must be the value of the label {LABEL_SHARD} "
        "and a DNS label (at most 63 characters: lowercase letters, digits and '-', "
        "starting and ending with a letter or digit)"
    )


def service_name(app: str, role: str) -> str:
    """The Kubernetes Service, or the file provider's load balancer, of one role."""
    return f"{app}-{role}"
