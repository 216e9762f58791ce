"""Hypothesis settings shared by the property tests (tests/test_properties_*.py).

Two profiles, chosen with HYPOTHESIS_PROFILE:

    ci        (default) a bounded number of cases per test, so the property tests stay well under
              ~90 s on a 2-core CI machine;
    thorough  many times more cases, for a run by hand or a nightly job:
              HYPOTHESIS_PROFILE=thorough python -m pytest -q tests/test_properties_*.py

Tests size their budgets with `examples(n)` (n cases in ci), so one switch scales all of them.
Deadlines are off in both: MeCab and transformers' first calls are slow to warm up, and a timing
failure on a shared machine would say nothing about correctness.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
# How many times the ci budget the thorough profile runs.
THOROUGH_FACTOR = 25

_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large], print_blob=True)
settings.register_profile("ci", **_COMMON)
settings.register_profile("thorough", **_COMMON)
settings.load_profile(PROFILE)


def examples(ci_count: int) -> int:
    """Number of cases a test runs: `ci_count` in the ci profile, THOROUGH_FACTOR times that in thorough."""
    return ci_count * THOROUGH_FACTOR if PROFILE == "thorough" else ci_count
