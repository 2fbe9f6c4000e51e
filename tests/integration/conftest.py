"""Integration fixtures: each component of the local environment registers its module here."""

pytest_plugins: list[str] = [
    "tests.support.operator_fixtures",
    "tests.support.cluster_fixtures",
    "tests.support.dockerhosts_fixtures",
    "tests.support.kubelet_fixtures",
]
