"""A skipped test fails the run unless the allow-list (tests/skips.txt) names it with its
reason: a skip hides whatever it was meant to prove, so each one must be a decision written
down, never the accident of a missing tool or an unready environment.

The allow-list holds one `<node id pattern> | <reason>` a line (fnmatch patterns, `#`
comments); a line without a reason is refused."""

from __future__ import annotations

from fnmatch import fnmatchcase
from pathlib import Path

import pytest

ALLOW_LIST = Path(__file__).resolve().parents[1] / "skips.txt"


def read_allow_list(path: Path) -> dict[str, str]:
    """Node id pattern -> why tests matching it may skip."""
    allowed: dict[str, str] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        pattern, _, reason = (part.strip() for part in line.partition("|"))
        if not pattern or not reason:
            raise pytest.UsageError(f"{path}:{number}: expected '<node id pattern> | <reason>'")
        allowed[pattern] = reason
    return allowed


class SkipPolicy:
    def __init__(self, allow_list: Path, allowed: dict[str, str]) -> None:
        self.allow_list = allow_list
        self.allowed = allowed
        self.unlisted: list[str] = []  # "node id: why it skipped"

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):  # an xfail is not a skip
            return
        if any(fnmatchcase(report.nodeid, pattern) for pattern in self.allowed):
            return
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        self.unlisted.append(f"{report.nodeid}: {reason}")

    @pytest.hookimpl(trylast=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.unlisted and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if not self.unlisted:
            return
        terminalreporter.section(f"skipped, and not allowed in {self.allow_list}", red=True)
        for line in self.unlisted:
            terminalreporter.line(f"UNLISTED SKIP {line}", red=True)
        terminalreporter.line(
            "a skip fails the run: make the test pass or fail, or add "
            "'<node id pattern> | <reason>' to the allow-list",
            red=True,
        )


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--skip-allow-list",
        type=Path,
        default=ALLOW_LIST,
        help="the skips allowed, one '<node id pattern> | <reason>' a line",
    )


def pytest_configure(config: pytest.Config) -> None:
    allow_list: Path = config.getoption("--skip-allow-list")
    config.pluginmanager.register(
        SkipPolicy(allow_list, read_allow_list(allow_list)), "lockgate-skip-policy"
    )
