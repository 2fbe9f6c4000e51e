"""The skip policy, run as hack/test runs it: pytest in a subprocess on a tiny test file
that skips, with and without an allow-list entry."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.skip_policy import ALLOW_LIST, read_allow_list

ROOT = Path(__file__).resolve().parents[2]
SKIPPING = """
import pytest

def test_passes():
    pass

def test_needs_a_tool():
    pytest.skip("no such tool")
"""


def run_pytest(tmp_path: Path, allow_list: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_tiny.py").write_text(SKIPPING)
    (tmp_path / "skips.txt").write_text(allow_list)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # not the repository's settings
    return subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-p", "no:cacheprovider"),
            *("-p", "tests.support.skip_policy", "--skip-allow-list", str(tmp_path / "skips.txt")),
            "test_tiny.py",
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unlisted_skip_fails_the_run_naming_the_test(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "# nothing may skip\n")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "1 passed, 1 skipped" in proc.stdout  # no test failed: the policy did
    assert "UNLISTED SKIP test_tiny.py::test_needs_a_tool: Skipped: no such tool" in proc.stdout


def test_a_listed_skip_passes(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "test_tiny.py::test_needs_* | the tool is not packaged yet\n")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "UNLISTED" not in proc.stdout


def test_an_entry_without_a_reason_is_refused(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, "test_tiny.py::test_needs_a_tool\n")
    assert proc.returncode == 4, proc.stdout + proc.stderr  # a usage error
    assert "skips.txt:1: expected '<node id pattern> | <reason>'" in proc.stderr


def test_the_suite_runs_under_the_policy() -> None:
    from tests import conftest

    assert "tests.support.skip_policy" in conftest.pytest_plugins
    assert ALLOW_LIST == ROOT / "tests/skips.txt"
    assert read_allow_list(ALLOW_LIST) == {}  # nothing may skip today
