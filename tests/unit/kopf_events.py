"""kopf's own processing of one watch event, as its reactor does it, for unit tests of what
lockgate's handlers and filters make kopf do (no API server: handlers must not patch)."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from kopf._cogs.structs import ephemera, references
from kopf._core.actions import lifecycles
from kopf._core.engines import indexing
from kopf._core.reactor import inventory, processing

from lockgate.names import GROUP, VERSION


async def process_event(
    registry: kopf.OperatorRegistry,
    memories: inventory.ResourceMemories,
    memo: kopf.Memo,
    plural: str,
    raw: dict[str, Any],
    type: str | None = None,
) -> None:
    """One event of `raw` (which kopf keeps as its live body), then a few loop cycles for
    the daemons it starts or stops."""
    await processing.process_resource_event(
        lifecycle=lifecycles.all_at_once,
        indexers=indexing.OperatorIndexers(),
        registry=registry,
        settings=kopf.OperatorSettings(),
        memories=memories,
        memobase=ephemera.AnyMemo(memo),
        resource=references.Resource(GROUP, VERSION, plural, namespaced=True),
        raw_event={"type": type, "object": raw},  # type: ignore[typeddict-item]
        event_queue=asyncio.Queue(),
    )
    for _ in range(20):
        await asyncio.sleep(0)


def stop_daemons(memories: inventory.ResourceMemories) -> None:
    """Every daemon still running, told to stop as at the operator's exit."""
    for memory in memories.iter_all_memories():
        for running in memory.daemons_memory.running_daemons.values():
            running.stopper.set(reason=kopf.DaemonStoppingReason.OPERATOR_EXITING)
            running.task.cancel()
