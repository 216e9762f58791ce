"""Schemathesis against a real `serve_onnx.py http` process: every operation, every check, zero failures.

The same code as bench/http_fuzz.py (which runs thousands of examples), with few examples so that
it stays under a minute in CI. The server runs with --api-key-file, so the run also covers the
401 answers (Schemathesis' ignored_auth check drops the token and expects 401).
"""

from __future__ import annotations

import sys

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "bench"))

from http_fuzz import fuzz_setup, write_key_file  # noqa: E402

MAX_EXAMPLES = 25


def test_schemathesis_finds_nothing(export_dir, tmp_path):
    result = fuzz_setup("ci", export_dir, MAX_EXAMPLES, seed=0, api_key_file=write_key_file(tmp_path))
    assert result["complete"] and result["operations_tested"] == result["operations_total"] == 6, result
    assert result["unique_failures"] == 0 and result["errored"] == 0, result["output_tail"] or result
    assert result["cases"] >= 60, result  # the run really generated traffic
    statuses = result["server_statuses"]
    assert not [key for key in statuses if key.split()[-1].startswith("5")], statuses
    # Valid and invalid requests both reached the model route, and the token was enforced.
    for answered in ("/predict 200", "/predict 400", "/predict 422", "/predict 401", "/info 401",
                     "/v1/predict 200", "/v1/predict 422", "/ 200", "/ 422"):
        assert statuses.get(answered, 0) > 0, (answered, statuses)
    assert result["exit_code"] == 0 and result["server_exit_code"] == 0
