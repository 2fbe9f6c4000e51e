"""The operator as the benchmarks run it: never left running, however the benchmark ends.

- started only once its namespace exists (with `--namespace`, it acts on nothing else);
- killed by the kernel when the benchmark's process dies (PR_SET_PDEATHSIG), so a crash, a
  kill -9 or a closed terminal cannot leave it acting on the cluster;
- SIGTERM and SIGHUP of the benchmark run its `finally` blocks (stop the operator, delete
  what it made), as Ctrl-C does;
- a start that fails (not healthy in time) kills it before raising.
"""

from __future__ import annotations

import signal
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from tests.support.operator_fixtures import Operator, free_port


def _exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def exits_cleanly() -> Iterator[None]:
    """SIGTERM and SIGHUP raise SystemExit, so `finally` blocks run."""
    previous = {sig: signal.signal(sig, _exit) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def running_operator(env: dict[str, str], *namespaces: str) -> Iterator[Operator]:
    """`lockgate operator` for `namespaces` (all of them when none is named: avoid that),
    stopped when the block ends however it ends."""
    scope: tuple[str, ...] = ("--all-namespaces",)
    if namespaces:
        scope = tuple(arg for ns in namespaces for arg in ("--namespace", ns))
    log = Path(tempfile.mkdtemp(prefix="lockgate-bench-")) / "operator"
    op = Operator(env, log, free_port(), scope=scope, die_with_parent=True)
    with exits_cleanly():
        try:
            op.start()
            yield op
        finally:
            op.stop()
