"""hack/lib/cluster.sh's process helpers, run in bash on real processes: a component that
is still being exec'd counts as starting, not as dead."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# `setsid` is looked up as a function first: this one holds the background shell for a
# moment before the exec, as a busy machine does.
SLOW_EXEC = """
source "$ROOT/hack/lib/common.sh"
source "$ROOT/hack/lib/cluster.sh"
setsid() { sleep 0.5; exec setsid "$@"; }
"""


def bash(tmp_path: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", SLOW_EXEC + script],
        env={"ROOT": str(ROOT), "DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )


def test_a_component_being_started_counts_as_alive(tmp_path: Path) -> None:
    ran = bash(
        tmp_path,
        """
        proc_start "$DIR" sleeper /bin/sleep 60
        if proc_alive "$DIR" sleeper; then echo alive; else echo dead; fi
        kill "$(cat "$DIR/sleeper.pid")"
        """,
    )
    assert ran.stdout.strip() == "alive", ran.stderr


def test_a_component_that_exits_at_startup_is_reported_with_its_words(tmp_path: Path) -> None:
    ran = bash(
        tmp_path,
        """
        proc_start "$DIR" quitter /bin/ls --no-such-option
        proc_wait "$DIR" quitter 30 false
        """,
    )
    assert ran.returncode == 1
    assert "quitter exited during startup (pid " in ran.stderr
    assert "no-such-option" in ran.stderr  # ls's own complaint, from its log
