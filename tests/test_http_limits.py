"""Limits of the HTTP service against a real `serve_onnx.py http` process and real sockets on 127.0.0.1:
a slow-loris client cut off by the read deadline, idle connections beyond --max-connections closed
while /health still answers, a stuck upload that cannot stretch the SIGTERM drain, and bounded
option values (key files that never end, --max-text-chars).

Every wait is bounded; the assertions are about outcomes (answered, closed, exited), not speed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest

from conftest import REPO_ROOT, TEXTS

sys.path.insert(0, str(REPO_ROOT / "bench"))

from http_fuzz import running_server  # noqa: E402


def _connect(base_url: str) -> socket.socket:
    host, port = base_url.rsplit("//", 1)[1].split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    return sock


def _read_until_closed(sock: socket.socket, bound_s: float) -> bytes:
    """Everything the server sends until it closes the connection (fails after `bound_s`)."""
    sock.settimeout(bound_s)
    received = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return received
        received += chunk


def _is_closed(sock: socket.socket) -> bool:
    """True when the server has closed this connection (EOF or reset), without waiting."""
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    finally:
        sock.setblocking(True)


def test_slow_loris_headers_and_body_get_408_and_are_closed(export_dir):
    with running_server(export_dir, "--read-timeout-s", "1.5") as (base_url, server):
        # Headers trickled one byte at a time: each byte would reset uvicorn's keep-alive timer.
        trickle = _connect(base_url)
        request = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        started = time.monotonic()
        answer = b""
        for byte in request:
            try:
                trickle.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                break
            if time.monotonic() - started > 30:
                break
            time.sleep(0.1)
        answer = _read_until_closed(trickle, 30)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error_type"] == "timeout"
        # A body that never arrives: the headers promise 100 bytes, 10 come.
        upload = _connect(base_url)
        upload.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 100\r\n\r\n{\"inputs\":")
        answer = _read_until_closed(upload, 30)
        assert answer.startswith(b"HTTP/1.1 408") and b"body did not arrive" in answer, answer
        # A connection that sends nothing at all is closed as well.
        silent = _connect(base_url)
        assert _read_until_closed(silent, 30).startswith(b"HTTP/1.1 408")
        # The server is unharmed.
        assert httpx.post(f"{base_url}/predict", json={"inputs": TEXTS[0]}, timeout=30).status_code == 200


def test_idle_connections_beyond_the_cap_are_closed_while_health_answers(export_dir):
    cap = 6
    with running_server(export_dir, "--max-connections", str(cap), "--read-timeout-s", "120") as (base_url, server):
        idle = [_connect(base_url) for _ in range(cap * 3)]
        try:
            deadline = time.monotonic() + 30
            while sum(not _is_closed(sock) for sock in idle) > cap and time.monotonic() < deadline:
                time.sleep(0.1)
            open_now = [sock for sock in idle if not _is_closed(sock)]
            assert len(open_now) <= cap, f"{len(open_now)} idle connections held with --max-connections {cap}"
            # A health probe on a new connection still gets its answer, as does real work.
            for _ in range(3):
                health = httpx.get(f"{base_url}/health", timeout=10)
                assert health.status_code == 200 and health.json()["status"] == "ok"
            assert httpx.post(f"{base_url}/v1/predict", json={"inputs": TEXTS[0]}, timeout=30).status_code == 200
        finally:
            for sock in idle:
                sock.close()


def test_busy_connections_leave_reserved_room_for_health(export_dir):
    cap = 3
    with running_server(export_dir, "--max-connections", str(cap), "--read-timeout-s", "60") as (base_url, server):
        # Requests in progress: headers sent, body still coming. They cannot be closed to make room.
        busy = []
        for _ in range(cap):
            sock = _connect(base_url)
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 50\r\n\r\n{")
            busy.append(sock)
        time.sleep(0.5)  # let the server read the headers (not a timing assertion: only makes them "in progress")
        try:
            health = httpx.get(f"{base_url}/health", timeout=10)
            assert health.status_code == 200, health.text
            refused = httpx.post(f"{base_url}/predict", json={"inputs": "犬"}, timeout=10)
            assert refused.status_code == 503 and refused.json()["error_type"] == "overloaded", refused.text
        finally:
            for sock in busy:
                sock.close()


def test_a_stuck_upload_cannot_stretch_the_sigterm_drain(export_dir):
    bound_s = 6.0
    with running_server(export_dir, "--shutdown-timeout-s", str(bound_s), "--read-timeout-s", "600") as (base_url, server):
        stuck = _connect(base_url)
        stuck.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 1000\r\n\r\n{\"inputs\": \"")
        time.sleep(0.5)  # the headers are read and the route admitted: it waits for the body
        server.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        # Before, the drain waited bound_s for the upload and uvicorn waited bound_s more (about 2x).
        exit_code = server.wait(timeout=bound_s + 20)
        waited = time.monotonic() - signalled
        stuck.close()
        log = server.stdout.read()
    assert exit_code == 0, log
    assert waited < bound_s + 4, (waited, log)  # a bound well under 2 x bound_s, not a speed claim
    assert "drain timed out" in log, log


@pytest.mark.parametrize("body, fragment", [
    (b"[" * 100_000 + b"]" * 100_000, "nests arrays or objects too deeply"),
    (b'{"inputs": "a", "truncate": ' + b"1" * 5000 + b"}", "Python cannot read"),
    (b'{"inputs": "\xff\xfe"}', "not valid UTF-8"),
    (b'{"inputs": "a"} trailing', "extra data"),
], ids=["deep_nesting", "5000_digit_integer", "invalid_utf8", "trailing_data"])
@pytest.mark.parametrize("path", ["/predict", "/", "/v1/predict"])
def test_hostile_json_is_a_400_with_a_json_body(client_app, path, body, fragment):
    response = client_app.post(path, content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert fragment in response.json()["error"] and response.json()["error_type"] == "malformed_json"


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "application/json; charset=latin-1"])
@pytest.mark.parametrize("path", ["/predict", "/", "/v1/predict"])
def test_only_json_is_accepted_so_a_web_page_cannot_post_cross_site(client_app, path, content_type):
    headers = {"content-type": content_type} if content_type else {}
    response = client_app.post(path, content=b'{"inputs": "good"}', headers=headers)
    assert response.status_code == 415, response.text
    assert response.json()["error_type"] == "unsupported_media_type"
    for accepted in ("application/json", "application/json; charset=utf-8", "Application/JSON;charset=UTF-8"):
        assert client_app.post(path, content=b'{"inputs": "good"}', headers={"content-type": accepted}).status_code == 200


@pytest.fixture
def client_app(classifier):
    from fastapi.testclient import TestClient

    from jbert.serve.http.app import create_app
    from jbert.serve.http.microbatch import BatcherConfig

    with TestClient(create_app(classifier, BatcherConfig(max_wait_ms=2))) as test_client:
        yield test_client


def _serve(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO_ROOT / "serve_onnx.py"), "http", *args],
                          capture_output=True, text=True, cwd=REPO_ROOT, timeout=120)


def test_key_files_that_never_end_are_refused_unread(tmp_path, export_dir):
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo)  # nobody writes it: reading it would block forever
    for key_file, fragment in ((fifo, "is a FIFO (named pipe), not a regular file"),
                               ("/dev/zero", "is a character device, not a regular file")):
        result = _serve(str(export_dir), "--port", "0", "--api-key-file", str(key_file))
        assert result.returncode == 2, result.stderr
        assert f"--api-key-file {key_file}" in result.stderr and fragment in result.stderr
        assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
    big = tmp_path / "big-key"
    big.write_bytes(b"k" * 100_000)
    result = _serve(str(export_dir), "--port", "0", "--api-key-file", str(big))
    assert result.returncode == 2 and "not a key file" in result.stderr


def test_limit_options_are_bounded(export_dir):
    result = _serve(str(export_dir), "--port", "0", "--max-text-chars", "2000000", "--max-connections", "0",
                    "--read-timeout-s", "0", "--keep-alive-timeout-s", "-1")
    assert result.returncode == 2, result.stderr
    for fragment in ("max_text_chars must be between 1 and 150,000", "--max-connections must be at least 1",
                     "--read-timeout-s must be more than 0", "--keep-alive-timeout-s must be more than 0"):
        assert fragment in result.stderr, result.stderr
