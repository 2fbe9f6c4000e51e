"""Fixtures of the real local environment, registered once for the whole suite (pytest only
accepts pytest_plugins in the top-level conftest). Unit tests never request them."""

pytest_plugins: list[str] = [
    "tests.support.cluster_fixtures",
    "tests.support.kubelet_fixtures",
    "tests.support.dockerhosts_fixtures",
    "tests.support.operator_fixtures",
]
