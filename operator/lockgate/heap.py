"""The operator's C heap, held to what it uses.

glibc's malloc gives every thread that allocates an arena of its own (up to 8 per core) and
keeps what is freed in each arena for that arena's later use. The operator's 64 API threads
each read and decode response bodies, so each grows an arena to its own high-water mark and
the RSS holds the sum of them, long after the rounds that needed it (docs/scale.md: 316 MiB
at 1,000 in flight, the same in the idle window after it). Two arenas for the whole process,
and a periodic `malloc_trim` that hands the free pages inside them back to the kernel, keep
the RSS near what is live.

Only glibc has these calls; elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
from typing import Any

M_ARENA_MAX = -8  # mallopt's parameter number (malloc.h)
ARENAS = 2
TRIM_EVERY = 30.0  # seconds; a trim of a few hundred MiB takes a few milliseconds


@functools.cache  # the process's own libc: looked up once, not on every trim
def _glibc() -> Any | None:
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    if not (hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim")):
        return None
    return libc


def limit_arenas(arenas: int = ARENAS) -> bool:
    """Before any thread is started: threads made later share `arenas` arenas."""
    libc = _glibc()
    return libc is not None and libc.mallopt(M_ARENA_MAX, arenas) == 1


def trim() -> bool:
    """Return the free pages of every arena to the kernel; True when some were."""
    libc = _glibc()
    return libc is not None and libc.malloc_trim(0) == 1


async def trim_periodically(every: float = TRIM_EVERY) -> None:
    """Until cancelled. In a worker thread: the trim holds each arena's lock in turn."""
    if _glibc() is None:
        return
    while True:
        await asyncio.sleep(every)
        await asyncio.to_thread(trim)
