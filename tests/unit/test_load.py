"""What the load helper of the demo, the tests and the benchmarks calls a failed request."""

from __future__ import annotations

from hack.tools.load import Response, by_version, failed

APP_OK = Response(0.0, 200, "v1")
APP_ERROR = Response(0.0, 500, "v2")
PROXY_404 = Response(0.0, 404, None)  # a router Traefik dropped
PROXY_200 = Response(0.0, 200, None)  # answered, but not by the application
PROXY_503 = Response(0.0, 503, None)
NO_ANSWER = Response(0.0, None, None)  # reset or timeout


def test_only_an_application_answer_without_error_counts_as_served() -> None:
    everything = [APP_OK, APP_ERROR, PROXY_404, PROXY_200, PROXY_503, NO_ANSWER]
    assert failed(everything) == [APP_ERROR, PROXY_404, PROXY_200, PROXY_503, NO_ANSWER]


def test_by_version_names_each_kind_of_failure() -> None:
    counts = by_version([APP_OK, APP_OK, APP_ERROR, PROXY_404, NO_ANSWER])
    assert counts == {"v1": 2, "v2 500": 1, "proxy 404": 1, "no answer": 1}
