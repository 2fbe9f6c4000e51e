"""Fixtures of the real local environment, registered once for the whole suite (pytest only
accepts pytest_plugins in the top-level conftest). Unit tests never request them.

The hooks of a run shared by several workers (tests/support/shared_run.py). And the skip
policy: a skipped test fails the run unless tests/skips.txt lists it."""

pytest_plugins: list[str] = [
    "tests.support.shared_run",  # first: the fixture modules import it
    "tests.support.cluster_fixtures",
    "tests.support.prometheus_fixtures",
    "tests.support.kubelet_fixtures",
    "tests.support.metrics_server_fixtures",
    "tests.support.dockerhosts_fixtures",
    "tests.support.operator_fixtures",
    "tests.support.skip_policy",
    "tests.support.browser",  # `browser`: headless chromium over the DevTools protocol
]
