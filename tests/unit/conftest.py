"""Hypothesis profiles for the property-based tests, chosen by HYPOTHESIS_PROFILE.

- "ci" (the default, so `hack/test` and CI use it): at least 500 examples per property, the
  same examples on every run (derandomized, no example database), so a failure in CI is a
  failure on every machine and is reproduced by running the same command.
- "dev": 50 random examples per property, for a quick run while changing the engine.
- "explore": 2,000 random examples per property, to look for new counterexamples.

Every profile prints the blob that reproduces a failure (`@reproduce_failure`), and none has a
deadline: one example drives a whole rollout, whose time depends on the machine, not on the
engine's correctness.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

COMMON = {
    "deadline": None,
    "print_blob": True,
    "suppress_health_check": [HealthCheck.too_slow],
}
settings.register_profile("ci", max_examples=500, derandomize=True, database=None, **COMMON)
settings.register_profile("dev", max_examples=50, **COMMON)
settings.register_profile("explore", max_examples=2000, **COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
