"""Security stance of the HTTP service: bearer token on every route but /health, clear errors for a bad
key file (exit 2), loopback by default and a warning for any other address.

The CLI checks run `serve_onnx.py http` as a real process. The bind-warning checks point it at a
missing export directory, so the process prints its warning and exits 2 before it binds anything:
no test here opens a port beyond loopback.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from conftest import REPO_ROOT, TEXTS

from jbert.core.errors import UserError
from jbert.serve.http.microbatch import BatcherConfig
from jbert.serve.http.app import create_app
from jbert.serve.http.security import bind_warning, load_api_key

KEY = "k3y-for-tests-0123456789abcdef"


@pytest.fixture
def secured(classifier):
    with TestClient(create_app(classifier, BatcherConfig(max_wait_ms=2), api_key=KEY)) as client:
        yield client


@pytest.mark.parametrize("method, path", [
    ("post", "/predict"), ("post", "/"), ("post", "/v1/predict"), ("get", "/info"), ("get", "/metrics"), ("get", "/openapi.json"), ("get", "/docs"),
    ("get", "/nowhere"), ("delete", "/predict"),
])
@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key-0123456789", f"Basic {KEY}", f"Bearer {KEY}x", "Bearer"])
def test_every_route_but_health_needs_the_token(secured, method, path, authorization):
    headers = {"Authorization": authorization} if authorization else {}
    response = secured.request(method, path, headers=headers, json={"inputs": TEXTS[0]} if method == "post" else None)
    assert response.status_code == 401
    assert response.json()["error_type"] == "unauthorized" and response.headers["www-authenticate"] == "Bearer"
    assert ("missing bearer token" if authorization is None else "wrong bearer token") in response.json()["error"]


def test_the_right_token_opens_every_route(secured):
    assert secured.get("/health").status_code == 200  # no token: probes have none
    for scheme in ("Bearer", "bearer"):
        headers = {"Authorization": f"{scheme} {KEY}"}
        assert secured.post("/v1/predict", json={"inputs": TEXTS}, headers=headers).status_code == 200
        assert secured.get("/info", headers=headers).json()["auth"] == "bearer"
    schema = secured.get("/openapi.json", headers=headers).json()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer", "description": schema["components"]["securitySchemes"]["bearer"]["description"]}
    for path, operations in schema["paths"].items():
        for operation in operations.values():
            assert ("security" in operation) == (path != "/health"), path
            assert ("401" in operation["responses"]) == (path != "/health"), path
    metrics = secured.get("/metrics", headers=headers).text
    assert 'jbert_requests_total{path="/v1/predict",status="200"} 2' in metrics


@pytest.mark.parametrize("content, fragment", [
    (None, "no such file"),
    (b"", "the file is empty"),
    (b"  \n", "the file is empty"),
    (b"short\n", "use at least 16"),
    (b"two words are here, too many\n", "printable ASCII without spaces"),
    (b"\xff\xfe-not-utf8-0123456789", "not UTF-8"),
])
def test_bad_key_files_are_user_errors(tmp_path, content, fragment):
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_bytes(content)
    with pytest.raises(UserError, match=fragment):
        load_api_key(key_file)
    with pytest.raises(UserError, match="is a directory"):
        load_api_key(tmp_path)


def test_key_file_is_read_stripped_and_warned_about_when_others_can_read_it(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n", encoding="utf-8")
    key_file.chmod(0o644)
    key, warnings = load_api_key(key_file)
    assert key == KEY and "chmod 600" in warnings[0]
    key_file.chmod(0o600)
    assert load_api_key(key_file) == (KEY, [])


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "serve_onnx.py"), "http", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def test_cli_bad_key_file_exits_2_with_a_clear_message(tmp_path, export_dir):
    missing = _serve(str(export_dir), "--port", "0", "--api-key-file", str(tmp_path / "nope"))
    assert missing.returncode == 2, missing.stderr
    assert f"--api-key-file {tmp_path / 'nope'}: no such file" in missing.stderr and "secrets.token_urlsafe" in missing.stderr
    assert "Traceback" not in missing.stderr
    (tmp_path / "empty").write_text("")
    empty = _serve(str(export_dir), "--port", "0", "--api-key-file", str(tmp_path / "empty"), "--max-wait-ms", "-1")
    assert empty.returncode == 2
    # Every problem at once: the key file and the bad option.
    assert "the file is empty" in empty.stderr and "max_wait_ms must be at least 0" in empty.stderr


def test_cli_warns_when_not_on_loopback(tmp_path):
    missing_export = str(tmp_path / "no-export")
    exposed = _serve(missing_export, "--host", "0.0.0.0")
    assert exposed.returncode == 2  # stopped at the missing export, before binding anything
    assert "listening on 0.0.0.0: other machines can connect and the service has NO authentication" in exposed.stderr
    local = _serve(missing_export)
    assert local.returncode == 2 and "listening on" not in local.stderr
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    key_file.chmod(0o600)
    with_key = _serve(missing_export, "--host", "::", "--api-key-file", str(key_file))
    assert "listening on ::: other machines can connect; every route but /health requires the bearer token" in with_key.stderr


def test_bind_warning_rule():
    assert bind_warning("127.0.0.1", False) is None and bind_warning("::1", False) is None
    assert bind_warning("localhost", True) is None
    assert "NO authentication" in bind_warning("192.168.1.4", False)
    assert "requires the bearer token" in bind_warning("0.0.0.0", True)
