"""Memory probe for `lockgate operator` (benchmarks only: `python -m bench.scale
--memory-report PREFIX` starts the operator with this directory on PYTHONPATH).

SIGUSR2 -> a report in MEMTRACE_OUT.<pid>.<time>:
live Kubernetes bodies (decoded JSON dicts) grouped by kind and by who refers to them,
live pydantic models by class, tracemalloc top lines (MEMTRACE=frames, 0 = no tracemalloc),
glibc/pymalloc stats on stderr."""
import os, sys, signal, gc, time, collections

def _deep(o, seen):
    n = 0
    stack = [o]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        n += sys.getsizeof(x)
        if isinstance(x, dict):
            stack.extend(x.keys()); stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return n

def _desc(r):
    t = type(r)
    name = f"{t.__module__}.{t.__qualname__}"
    if t is dict:
        keys = list(r.keys())[:6]
        return f"dict{keys}"
    if t.__name__ == "frame":
        return f"frame {r.f_code.co_filename.rsplit('/',3)[-1]}:{r.f_code.co_name}:{r.f_lineno}"
    if t.__name__ == "cell":
        return "cell"
    return name

def _chain(o, depth, skip):
    out = []
    cur = o
    skip = set(skip)
    for _ in range(depth):
        refs = []
        skip.add(id(refs))
        for r in gc.get_referrers(cur):
            if id(r) in skip:
                continue
            if type(r).__name__ == "frame" and r.f_code.co_name in ("_chain", "_dump"):
                continue
            refs.append(r)
        if not refs:
            break
        r = refs[0]
        out.append(_desc(r) + (f" (+{len(refs)-1})" if len(refs) > 1 else ""))
        cur = r
    return " <- ".join(out)

def _referrers(objs, targets, skip):
    """id(target) -> [referrer], one pass over every object."""
    out = collections.defaultdict(list)
    for o in objs:
        if id(o) in skip:
            continue
        for r in gc.get_referents(o):
            if id(r) in targets:
                out[id(r)].append(o)
    return out


def _dump(signum, frame):
    out = os.environ.get("MEMTRACE_OUT", "/tmp/lockgate-memtrace")
    path = f"{out}.{os.getpid()}.{int(time.time())}"
    gc.collect()
    objs = gc.get_objects()
    bodies = [o for o in objs if type(o) is dict and "metadata" in o and ("apiVersion" in o or "spec" in o or "status" in o)]
    skip = {id(objs), id(bodies), id(sys._getframe())}
    seen = set()
    groups = collections.defaultdict(lambda: [0, 0])
    chains = {id(b): [] for b in bodies}
    cur = {id(b): b for b in bodies}  # body id -> current object on its chain
    for hop in range(int(os.environ.get("MEMTRACE_HOPS", "4"))):
        targets = {id(o) for o in cur.values()}
        refs = _referrers(objs, targets, skip | {id(cur), id(chains)})
        nxt = {}
        for bid, o in cur.items():
            rs = [r for r in refs.get(id(o), []) if not (type(r).__name__ == "frame" and r.f_code.co_name == "_dump")]
            if not rs:
                continue
            # Prefer a referrer that is not another body (a body's sub-dict is referred by it).
            r = rs[0]
            chains[bid].append(_desc(r) + (f" (+{len(rs)-1})" if len(rs) > 1 else ""))
            nxt[bid] = r
        cur = nxt
        del refs
    for b in bodies:
        kind = b.get("kind") or "?"
        size = _deep(b, seen)
        g = groups[(kind, " <- ".join(chains[id(b)]))]
        g[0] += 1; g[1] += size
    samples = {}
    for b in bodies:
        kind = b.get("kind") or "?"
        if kind not in samples or len(repr(b)) > len(repr(samples[kind])):
            samples[kind] = b
    import json as _json
    with open(path + ".samples.json", "w") as sf:
        _json.dump(samples, sf, default=str, indent=1)
    live = collections.defaultdict(lambda: [0, 0])
    seen2 = set()
    for o in objs:
        if type(o).__name__ == "ResourceMemory":
            lb = o.daemons_memory.live_fresh_body
            if lb is not None:
                src = lb._src
                g = live[src.get("kind") or "?"]
                g[0] += 1; g[1] += _deep(src, seen2)
    models = collections.Counter()
    for o in objs:
        t = type(o)
        if t.__module__.startswith("lockgate.api") or t.__module__.startswith("kubernetes.client.models"):
            models[f"{t.__module__}.{t.__qualname__}"] += 1
    types = collections.Counter(type(o).__name__ for o in objs)
    with open(path + ".tmp", "w") as fh:
        fh.write(f"gc objects {len(objs)}; bodies {len(bodies)}; deep size {sum(g[1] for g in groups.values())/2**20:.2f} MiB\n")
        with open("/proc/self/status") as st:
            fh.write("".join(l for l in st if l.startswith(("VmRSS", "VmHWM"))))
        fh.write("== bodies by kind and referrer chain (count, deep MiB)\n")
        for (kind, ch), (n, size) in sorted(groups.items(), key=lambda kv: -kv[1][1]):
            fh.write(f"{n:6d} {size/2**20:8.2f}  {kind:22s} {ch}\n")
        fh.write("== kopf live bodies (daemons) by kind (count, deep MiB)\n")
        for kind, (n, size) in live.items():
            fh.write(f"{n:6d} {size/2**20:8.2f}  {kind}\n")
        fh.write("== lockgate/kubernetes models alive\n")
        for name, n in models.most_common(30):
            fh.write(f"{n:8d} {name}\n")
        fh.write("== object types\n")
        for name, n in types.most_common(30):
            fh.write(f"{n:8d} {name}\n")
        import tracemalloc
        if tracemalloc.is_tracing():
            snap = tracemalloc.take_snapshot()
            fh.write(f"== tracemalloc total {sum(s.size for s in snap.statistics('filename'))/2**20:.1f} MiB, by traceback\n")
            for s in snap.statistics("traceback")[:30]:
                fh.write(f"{s.size/2**20:8.2f} MiB {s.count:9d}\n")
                for line in s.traceback.format():
                    fh.write("     " + line + "\n")
    os.rename(path + ".tmp", path)
    del objs, bodies
    sys.stderr.write(f"memtrace: {path}\n")
    sys._debugmallocstats()
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_stats()
    except Exception:
        pass

if os.environ.get("MEMTRACE") is not None and sys.argv[1:2] == ["operator"]:
    if int(os.environ["MEMTRACE"]) > 0:
        import tracemalloc
        tracemalloc.start(int(os.environ["MEMTRACE"]))
    signal.signal(signal.SIGUSR2, _dump)
