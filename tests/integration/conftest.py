"""Integration fixtures: each component of the local environment registers its module here."""

pytest_plugins: list[str] = [
    "tests.support.cluster_fixtures",
    "tests.support.dockerhosts_fixtures",
]
