"""What kopf keeps in memory per Deployment or Application, with and without lockgate's
trimming (controller/kept.py): N copies of a body (as a watch delivers it, JSON) processed
by kopf's own event processing with a daemon registered for the kind, as the operator has;
the bytes still allocated afterwards (tracemalloc), per object; and the same with the
daemon's filter leaving the objects out (a Deployment settled owing nothing has no driver).
No cluster needed.

    python -m bench.kopf_keeps BODY.json [--count 200]

BODY.json: one object, or a {label: object} map (e.g. the `.samples.json` a
`bench.scale --memory-report` writes); objects of kinds other than Deployment and
Application are skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import gc
import json
import tracemalloc
from pathlib import Path
from typing import Any

import kopf
from kopf._cogs.structs import ephemera, references
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, processing

from lockgate.controller import handlers
from lockgate.names import GROUP, VERSION

PLURALS = {"Deployment": "deployments", "Application": "applications"}
KEPT = {"deployments": handlers.deployment_kept, "applications": handlers.application_kept}


def registry(plural: str, trimmed: bool, driven: bool = True) -> kopf.OperatorRegistry:
    """lockgate's trimming (if `trimmed`) and a daemon. `driven=False`: the daemon's filter
    leaves the objects out, as the driver's does for a Deployment settled owing nothing."""
    reg = kopf.OperatorRegistry()
    if trimmed:
        kopf.on.event(GROUP, VERSION, plural, registry=reg)(KEPT[plural])

    @kopf.daemon(GROUP, VERSION, plural, registry=reg, when=lambda **_: driven)
    async def daemon(stopped: kopf.DaemonStopped, **_: Any) -> None:
        await stopped.wait()

    return reg


async def retained(
    plural: str, body: dict[str, Any], count: int, trimmed: bool, driven: bool = True
) -> float:
    """Bytes kopf holds per object after one watch event of each of `count` objects."""
    texts = []
    for i in range(count):
        obj = copy.deepcopy(body)
        obj["metadata"] |= {"uid": f"uid-{i}", "name": f"obj-{i}"}
        # lockgate's deletion handler keeps the finalizer on a Deployment with no driver; with
        # no such handler here, kopf would ask the API to remove it.
        if driven:
            obj["metadata"]["finalizers"] = [kopf.OperatorSettings().persistence.finalizer]
        texts.append(json.dumps(obj))
    reg = registry(plural, trimmed, driven)
    settings = kopf.OperatorSettings()
    memories = inventory.ResourceMemories()
    resource = references.Resource(GROUP, VERSION, plural, namespaced=True)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for text in texts:
        await processing.process_resource_event(
            lifecycle=lifecycles.all_at_once,
            indexers=indexing.OperatorIndexers(),
            registry=reg,
            settings=settings,
            memories=memories,
            memobase=ephemera.AnyMemo(kopf.Memo()),
            resource=resource,
            raw_event={"type": None, "object": json.loads(text)},
            event_queue=asyncio.Queue(),
        )
    await asyncio.sleep(0.1)  # the daemons start
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    for memory in memories.iter_all_memories():
        for daemon in memory.daemons_memory.running_daemons.values():
            daemon.stopper.set(reason=kopf.DaemonStoppingReason.OPERATOR_EXITING)
            daemon.task.cancel()
    await asyncio.sleep(0.1)
    return held / count


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("body", type=Path)
    parser.add_argument("--count", type=int, default=200)
    args = parser.parse_args()
    loaded = json.loads(args.body.read_text())
    bodies = {loaded.get("kind") or "Deployment": loaded} if "metadata" in loaded else loaded
    for label, body in bodies.items():
        kind = body.get("kind") if isinstance(body, dict) else None
        plural = PLURALS.get(str(kind))
        if plural is None:
            continue
        empty = {"apiVersion": f"{GROUP}/{VERSION}", "kind": kind, "metadata": {}, "spec": {}}
        least = asyncio.run(retained(plural, empty, args.count, trimmed=False))
        whole = asyncio.run(retained(plural, body, args.count, trimmed=False))
        trimmed = asyncio.run(retained(plural, body, args.count, trimmed=True))
        undriven = asyncio.run(retained(plural, body, args.count, trimmed=True, driven=False))
        print(
            f"{label} ({kind}): {len(json.dumps(body)) / 1024:.1f} KiB of JSON; kopf holds "
            f"{whole / 1024:.1f} KiB per object, {trimmed / 1024:.1f} KiB trimmed, "
            f"{undriven / 1024:.1f} KiB trimmed with no daemon running "
            f"({least / 1024:.1f} KiB for an empty object: its daemon and records; "
            f"x{args.count})"
        )


if __name__ == "__main__":
    main()
