"""Which operator serves what: an Application belongs to the shard its label names
(`lockgate.dev/shard`, absent or empty: the default shard), and a Deployment to the shard of
the Application it names. Each operator serves one shard (`lockgate operator --shard NAME`).

How a move between shards is handed over (docs/operations.md, "Sharding"):

- Every operator keeps an index of every Application's shard (unfiltered), so the filter of
  a Deployment's handlers reads the shard of its Application without an API call.
- kopf evaluates a Deployment's filters only on an event of that Deployment, and a relabelled
  Application is not one. So the operator that serves an Application copies its shard onto
  each of its Deployments (the same label, written only when it differs): that write is the
  Deployment event on which the old shard's driver is stopped (it finishes its round first)
  and the new shard's driver starts. It also fences the old driver's round in flight: a
  round's status write carries the resourceVersion the round read (deployments.reconcile).
- Each shard has its own finalizer name: kopf removes its finalizer from any object none of
  its handlers match, so with one name for every shard two operators would take it off and
  put it back for ever on every object that moved.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from kubernetes.client.exceptions import ApiException

from lockgate.names import GROUP, LABEL_SHARD

from .deployments import ApplicationKey, DeploymentSummary
from .runtime import Runtime

DEFAULT = ""  # the default shard: Applications without the label
# The shard of each Application: kopf's index in the operator, a dict in tests.
ShardIndex = Mapping[ApplicationKey, Collection[str]]


def shard_of(labels: Mapping[str, str] | None) -> str:
    """The shard an object's labels put it in."""
    return (labels or {}).get(LABEL_SHARD) or DEFAULT


def finalizer(shard: str) -> str:
    """The finalizer of a shard's operator. The default shard keeps the name lockgate has
    always used, so an install without shards sees no change."""
    return f"{GROUP}/finalizer" if shard == DEFAULT else f"finalizer.{GROUP}/{shard}"


def deployment_shard(
    shards: ShardIndex,
    namespace: str,
    application: str | None,
    labels: Mapping[str, str] | None,
) -> str:
    """The shard of a Deployment: its Application's, from the index. While its Application
    does not exist, the shard its label names: that of the Application it last had (the
    serving shard's copy), so deleting an Application leaves its Deployments to the shard
    that served them; a Deployment created before its Application (no copy yet) is in the
    default shard until the Application appears."""
    for shard in shards.get((namespace, application or ""), ()):
        return shard
    return shard_of(labels)


def label_patches(shard: str, deployments: Iterable[DeploymentSummary]) -> dict[str, Any]:
    """The Deployments whose copy of the shard label is not `shard`, with the patch of each
    (the default shard removes the label)."""
    wanted = shard or None
    return {
        d.name: {"metadata": {"labels": {LABEL_SHARD: wanted}}}
        for d in deployments
        if d.shard != wanted
    }


async def copy_shard_label(
    rt: Runtime, shard: str, namespace: str, deployments: Iterable[DeploymentSummary]
) -> None:
    """Label an Application's Deployments with its shard (see the module's docstring)."""
    for name, patch in label_patches(shard, deployments).items():
        try:
            await rt.kube.patch_deployment(namespace, name, patch)
        except ApiException as err:
            if err.status != 404:  # deleted meanwhile
                raise
