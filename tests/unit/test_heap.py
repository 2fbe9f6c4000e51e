"""The operator's threads share two malloc arenas instead of growing one each (glibc), and
its free heap pages go back to the kernel. Each case runs in a fresh interpreter: the arena
limit only binds arenas made after it, and pytest's own threads may have made some."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap

import pytest

from lockgate import heap

pytestmark = pytest.mark.skipif(heap._glibc() is None, reason="glibc's malloc only")

# Eight threads, each started after the previous one has allocated and is still alive, so
# glibc would give each an arena of its own; then glibc's own per-arena report.
THREADS_THEN_REPORT = """
import ctypes, sys, threading
from lockgate import heap
if sys.argv[1] == "limited":
    assert heap.limit_arenas()
done = threading.Event()
def work(allocated):
    kept = [bytes(1000 + i) for i in range(200)]  # above pymalloc's 512 bytes: malloc's
    allocated.set()
    done.wait()
threads = []
for _ in range(8):
    allocated = threading.Event()
    threads.append(threading.Thread(target=work, args=(allocated,)))
    threads[-1].start()
    allocated.wait()
done.set()
for t in threads:
    t.join()
ctypes.CDLL(None).malloc_stats()  # to stderr: "Arena N:" for each arena
"""


def arenas_used(mode: str) -> int:
    run = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(THREADS_THEN_REPORT), mode],
        capture_output=True,
        text=True,
        check=True,
    )
    return len(re.findall(r"^Arena \d+:", run.stderr, re.MULTILINE))


def test_the_operators_threads_share_two_arenas() -> None:
    assert arenas_used("unlimited") > heap.ARENAS  # what the limit is for
    assert arenas_used("limited") <= heap.ARENAS


def test_trim_returns_free_pages() -> None:
    # malloc_trim answers 1 when it gave memory back: after a freed burst there is some.
    burst = [bytes(2000) for _ in range(20_000)]
    del burst
    assert heap.trim()
