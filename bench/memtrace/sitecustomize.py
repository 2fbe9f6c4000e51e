"""A memory probe for `lockgate operator`, for benchmarks only: `python -m bench.scale
--memory-report PREFIX` starts the operator with this directory on its PYTHONPATH.

On SIGUSR2 the operator writes PREFIX.<pid>.<time>: the live Kubernetes bodies (decoded JSON
dicts with `metadata`) by kind and by the chain of objects that refer to them, the bodies
kopf keeps for its daemons, the live lockgate API models and kubernetes client models, the
most common object types, and with MEMTRACE=<frames> above 0 (tracemalloc from the start:
slow, the operator may miss its health check with many frames) the top allocation sites;
pymalloc's and glibc's statistics go to its stderr. It takes a few seconds, during which the
event loop stops: ask for it outside a measured window.
"""

from __future__ import annotations

import collections
import gc
import json
import os
import signal
import sys
import time
from types import FrameType
from typing import Any

HOPS = int(os.environ.get("MEMTRACE_HOPS", "4"))


def _deep_size(obj: Any, seen: set[int]) -> int:
    """Bytes of a decoded JSON tree (dicts, lists and their leaves), each object once."""
    size = 0
    stack = [obj]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        size += sys.getsizeof(item)
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return size


def _module(obj: Any) -> str:
    module = getattr(type(obj), "__module__", "")
    return module if isinstance(module, str) else ""


def _describe(obj: Any) -> str:
    kind = type(obj)
    if kind is dict:
        return f"dict{list(obj.keys())[:6]}"
    if kind.__name__ == "frame":
        code = obj.f_code
        return f"frame {code.co_filename.rsplit('/', 3)[-1]}:{code.co_name}:{obj.f_lineno}"
    return f"{_module(obj)}.{kind.__qualname__}"


def _referrers(objs: list[Any], targets: set[int], skip: set[int]) -> dict[int, list[Any]]:
    """id(target) -> the objects referring to it: one pass over every object."""
    found: dict[int, list[Any]] = collections.defaultdict(list)
    for obj in objs:
        if id(obj) in skip:
            continue
        for referent in gc.get_referents(obj):
            if id(referent) in targets:
                found[id(referent)].append(obj)
    return found


def _chains(objs: list[Any], bodies: list[dict[str, Any]], skip: set[int]) -> dict[int, str]:
    """id(body) -> 'referrer <- its referrer <- ...' (the first referrer at each hop)."""
    chains: dict[int, list[str]] = {id(b): [] for b in bodies}
    current: dict[int, Any] = {id(b): b for b in bodies}
    for _ in range(HOPS):
        targets = {id(o) for o in current.values()}
        found = _referrers(objs, targets, skip | {id(current), id(chains)})
        following: dict[int, Any] = {}
        for body_id, obj in current.items():
            refs = [r for r in found.get(id(obj), []) if type(r).__name__ != "frame"]
            if refs:
                more = f" (+{len(refs) - 1})" if len(refs) > 1 else ""
                chains[body_id].append(_describe(refs[0]) + more)
                following[body_id] = refs[0]
        current = following
    return {body_id: " <- ".join(chain) for body_id, chain in chains.items()}


def _report(path: str) -> None:
    gc.collect()
    objs = gc.get_objects()
    bodies = [
        o
        for o in objs
        if type(o) is dict
        and "metadata" in o
        and ("apiVersion" in o or "spec" in o or "status" in o)
    ]
    chains = _chains(objs, bodies, {id(objs), id(bodies)})
    seen: set[int] = set()
    groups: dict[tuple[str, str], list[int]] = collections.defaultdict(lambda: [0, 0])
    samples: dict[str, dict[str, Any]] = {}
    for body in bodies:
        kind = str(body.get("kind") or "?")
        group = groups[(kind, chains[id(body)])]
        group[0] += 1
        group[1] += _deep_size(body, seen)
        if kind not in samples or len(repr(body)) > len(repr(samples[kind])):
            samples[kind] = body
    kept: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    seen_kept: set[int] = set()
    for obj in objs:
        if type(obj).__name__ == "ResourceMemory":
            live = obj.daemons_memory.live_fresh_body
            if live is not None:
                raw = live._src
                entry = kept[str(raw.get("kind") or "?")]
                entry[0] += 1
                entry[1] += _deep_size(raw, seen_kept)
    models = collections.Counter(
        f"{_module(o)}.{type(o).__qualname__}"
        for o in objs
        if _module(o).startswith(("lockgate.", "kubernetes.client.models"))
    )
    types = collections.Counter(type(o).__name__ for o in objs)
    coroutines = collections.Counter(
        o.cr_code.co_qualname for o in objs if type(o).__name__ == "coroutine"
    )
    with open(path + ".samples.json", "w") as out:
        json.dump(samples, out, default=str, indent=1)
    with open(path + ".tmp", "w") as out:
        total = sum(size for _, size in groups.values())
        out.write(f"gc objects {len(objs)}; bodies {len(bodies)}, {total / 2**20:.2f} MiB\n")
        with open("/proc/self/status") as status:
            out.write("".join(line for line in status if line.startswith(("VmRSS", "VmHWM"))))
        out.write("== bodies by kind and what refers to them (count, MiB)\n")
        for (kind, chain), (count, size) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            out.write(f"{count:6d} {size / 2**20:8.2f}  {kind:22s} {chain}\n")
        out.write("== bodies kopf keeps for daemons, by kind (count, MiB)\n")
        for kind, (count, size) in kept.items():
            out.write(f"{count:6d} {size / 2**20:8.2f}  {kind}\n")
        out.write("== lockgate and kubernetes client objects alive\n")
        for name, count in models.most_common(30):
            out.write(f"{count:8d} {name}\n")
        out.write("== coroutines alive by function (rounds in progress: reconcile)\n")
        for name, count in coroutines.most_common(25):
            out.write(f"{count:8d} {name}\n")
        out.write("== object types\n")
        for name, count in types.most_common(30):
            out.write(f"{count:8d} {name}\n")
        import tracemalloc

        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            traced = sum(s.size for s in snap.statistics("filename"))
            out.write(f"== tracemalloc: {traced / 2**20:.1f} MiB traced, by traceback\n")
            for stat in snap.statistics("traceback")[:30]:
                out.write(f"{stat.size / 2**20:8.2f} MiB {stat.count:9d}\n")
                for line in stat.traceback.format():
                    out.write(f"     {line}\n")
    os.rename(path + ".tmp", path)


def _on_signal(signum: int, frame: FrameType | None) -> None:
    prefix = os.environ.get("MEMTRACE_OUT", "/tmp/lockgate-memtrace")
    path = f"{prefix}.{os.getpid()}.{int(time.time())}"
    try:
        _report(path)
    except Exception:  # a probe must not break the operator's loop
        import traceback

        with open(path, "w") as out:
            out.write(f"the probe failed:\n{traceback.format_exc()}")
    sys.stderr.write(f"memtrace: {path}\n")
    sys._debugmallocstats()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_stats()
    except OSError:
        pass


if os.environ.get("MEMTRACE") is not None and sys.argv[1:2] == ["operator"]:
    if int(os.environ["MEMTRACE"]) > 0:
        import tracemalloc

        tracemalloc.start(int(os.environ["MEMTRACE"]))
    signal.signal(signal.SIGUSR2, _on_signal)
