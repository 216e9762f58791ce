"""HTTP service: FastAPI test client for the API and its errors, and a real uvicorn process on loopback."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import signal
import socket
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import PAIRS, REPO_ROOT, TEXTS, cached_export

from jbert.serve.http.microbatch import BatcherConfig, MicroBatcher, QueueFullError
from jbert.serve.http.app import create_app
from jbert.serve.http.request import ServeLimits
from jbert.serve.http.security import is_loopback




@pytest.fixture
def client(classifier):
    app = create_app(classifier, BatcherConfig(max_wait_ms=2), ServeLimits(max_client_batch_size=8, max_body_bytes=300_000, max_text_chars=95_000))
    with TestClient(app) as test_client:
        yield test_client


def test_predict_matches_runtime(client, classifier):
    expected = classifier.predict(TEXTS, top_k=2)
    response = client.post("/v1/predict", json={"inputs": TEXTS, "top_k": 2})
    assert response.status_code == 200
    got = response.json()
    assert [r["label"] for r in got] == [r["label"] for r in expected]
    np.testing.assert_allclose([r["score"] for r in got], [r["score"] for r in expected], atol=1e-6)
    assert all(len(r["scores"]) == 2 for r in got)
    # One string in, one object out.
    single = client.post("/v1/predict", json={"inputs": TEXTS[0]}).json()
    assert single["label"] == expected[0]["label"] and "scores" not in single
    # top_k beyond the number of labels is capped, not an error.
    assert len(client.post("/v1/predict", json={"inputs": TEXTS[0], "top_k": 50}).json()["scores"]) == 3


def test_health_info_and_metrics(client):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/info").json()
    assert info["labels"] == ["negative", "neutral", "positive"] and info["max_client_batch_size"] == 8
    client.post("/v1/predict", json={"inputs": TEXTS})
    client.post("/v1/predict", json={"inputs": 5})
    text = client.get("/metrics").text
    assert 'jbert_requests_total{path="/v1/predict",status="200"} 1' in text
    assert 'jbert_requests_total{path="/v1/predict",status="422"} 1' in text
    assert f"jbert_texts_total {len(TEXTS)}" in text
    for name in ("jbert_request_duration_seconds_bucket", "jbert_batch_size_bucket", "jbert_queue_depth_texts",
                 "jbert_tokenization_duration_seconds_count", "jbert_inference_duration_seconds_sum"):
        assert name in text


@pytest.mark.parametrize(
    "body, status, fragment",
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty body"),
        (b"\xff\xfe", 400, "not valid UTF-8"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"text": "a"}', 422, "unknown fields ['text']"),
        (b'{"top_k": 1}', 422, '"inputs" is required'),
        (b'{"inputs": []}', 422, "empty"),
        (b'{"inputs": 5}', 422, "a string or a list"),
        (b'{"inputs": ["ok", 3]}', 422, "inputs[1] must be a string"),
        (b'{"inputs": [["a", "b"]]}', 422, "not pairs"),
        (b'{"inputs": ["ok", ""]}', 422, "inputs[1]: text is empty"),
        (b'{"inputs": ["ok", "\\u3000 "]}', 422, "empty after clean-up"),
        (b'{"inputs": "ok", "top_k": 0}', 422, "at least 1"),
        (b'{"inputs": "ok", "top_k": "3"}', 422, "positive integer"),
        (b'{"inputs": "ok", "top_k": true}', 422, "positive integer"),
        (b'{"inputs": "ok", "truncate": "yes"}', 422, "true or false"),
        (json.dumps({"inputs": ["犬"] * 9}).encode(), 422, "at most 8 per request"),
        (json.dumps({"inputs": ["犬", "a" * 95_001]}).encode(), 422, "inputs[1] has 95001 characters; at most 95000"),
        (b'{"inputs": ["ok", "a\\udc00b"]}', 422, "inputs[1] holds an unpaired UTF-16 surrogate"),
        (b'{"inputs": "ok", "top_k": 1.5}', 422, "positive integer"),
    ],
)
def test_client_mistakes_get_clear_4xx(client, body, status, fragment):
    response = client.post("/v1/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"]
    assert response.json()["error_type"]


def test_long_texts(client):
    def post(payload):
        return client.post("/v1/predict", content=json.dumps(payload, ensure_ascii=False).encode(),
                           headers={"content-type": "application/json"})

    long_text = "この商品はとても良いです。" * 7700  # 100,100 characters, 300 kB of UTF-8
    ok = post({"inputs": [long_text[:90_000], "犬"]})  # 270 kB: under this client's 300 kB limit
    assert ok.status_code == 200 and [r["truncated"] for r in ok.json()] == [True, False]
    refused = post({"inputs": ["犬", long_text[:90_000]], "truncate": False})
    assert refused.status_code == 413 and "inputs[1] is longer than" in refused.json()["error"]
    too_big = post({"inputs": [long_text]})
    assert too_big.status_code == 413 and "exceeds the limit of 300000 bytes" in too_big.json()["error"]
    assert client.get("/nowhere").status_code == 404
    assert client.get("/v1/predict").status_code == 405


def test_pairs(tmp_path_factory):
    from jbert.serve.runtime import OnnxClassifier

    export_dir = cached_export(tmp_path_factory, text_pair=True)[1]
    classifier = OnnxClassifier.from_export_dir(export_dir, model="fp32", num_threads=1)
    with TestClient(create_app(classifier)) as client:
        inputs = [[t, p] for t, p in zip(TEXTS, PAIRS)]
        got = client.post("/v1/predict", json={"inputs": inputs}).json()
        assert [r["label"] for r in got] == [r["label"] for r in classifier.predict(TEXTS, PAIRS)]
        assert client.post("/v1/predict", json={"inputs": inputs[0]}).json()["label"] == got[0]["label"]
        wrong = client.post("/v1/predict", json={"inputs": ["one text"]})
        assert wrong.status_code == 422 and "sentence pairs" in wrong.json()["error"]


def test_batcher_merges_concurrent_requests_and_keeps_order(classifier):
    batches = []

    class Recorder:
        def tokenized(self, texts, seconds):
            pass

        def batch_done(self, texts, padded_tokens, requests, seconds):
            batches.append((texts, requests))

        def queue_depth(self, texts):
            pass

    async def scenario():
        batcher = MicroBatcher(classifier, BatcherConfig(max_wait_ms=200, max_batch_texts=64), observer=Recorder())
        await batcher.start()
        requests = [[TEXTS[i % len(TEXTS)], TEXTS[(i + 1) % len(TEXTS)]] for i in range(12)]
        results = await asyncio.gather(*(batcher.predict(r, top_k=1) for r in requests))
        await batcher.stop()
        return requests, results

    requests, results = asyncio.run(scenario())
    for texts, got in zip(requests, results):
        assert [g["label"] for g in got] == [e["label"] for e in classifier.predict(texts)]
    assert sum(t for t, _ in batches) == 24
    assert max(r for _, r in batches) > 1  # several requests shared one model call


def test_batcher_token_budget_and_queue_limit(classifier):
    batches = []

    class Recorder:
        def tokenized(self, texts, seconds):
            pass

        def batch_done(self, texts, padded_tokens, requests, seconds):
            batches.append(padded_tokens)

        def queue_depth(self, texts):
            pass

    async def scenario():
        batcher = MicroBatcher(
            classifier, BatcherConfig(max_wait_ms=100, max_batch_tokens=40, max_queue_texts=10), observer=Recorder()
        )
        await batcher.start()
        # Each request is ~8-10 tokens; a 40-token budget allows at most 4 per model call.
        results = await asyncio.gather(*(batcher.predict([TEXTS[0]]) for _ in range(10)))
        with pytest.raises(QueueFullError):
            await asyncio.gather(*(batcher.predict([TEXTS[1]] * 4) for _ in range(3)))
        await batcher.stop()
        return results

    results = asyncio.run(scenario())
    assert len(results) == 10
    assert all(tokens <= 40 for tokens in batches) and len(batches) >= 3


def test_graceful_stop_finishes_accepted_requests(classifier):
    async def scenario():
        batcher = MicroBatcher(classifier, BatcherConfig(max_wait_ms=50))
        await batcher.start()
        tasks = [asyncio.create_task(batcher.predict([TEXTS[i % 6]])) for i in range(20)]
        await asyncio.sleep(0)  # let them be accepted
        await batcher.stop()
        return await asyncio.gather(*tasks, return_exceptions=True)

    results = asyncio.run(scenario())
    assert all(isinstance(r, list) and r[0]["label"] for r in results), results


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_real_server_on_loopback(export_dir):
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "serve_onnx.py"), "http", str(export_dir), "--port", str(port),
         "--num-threads", "1", "--max-client-batch-size", "16", "--max-wait-ms", "1000"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stdout.read()
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)

        async def load():
            async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                good = [http.post("/v1/predict", json={"inputs": TEXTS[: 1 + i % 6]}) for i in range(24)]
                bad = [http.post("/v1/predict", content=b"{oops", headers={"content-type": "application/json"})
                       for _ in range(4)]
                return await asyncio.gather(*good, *bad)

        responses = asyncio.run(load())
        assert [r.status_code for r in responses[:24]] == [200] * 24
        assert [len(r.json()) for r in responses[:24]] == [1 + i % 6 for i in range(24)]
        assert [r.status_code for r in responses[24:]] == [400] * 4
        assert httpx.get(f"{base}/health", timeout=5).status_code == 200
        assert 'status="200"} 24' in httpx.get(f"{base}/metrics", timeout=5).text

        # Graceful shutdown: requests waiting in the batcher (max wait 1 s) when SIGTERM
        # arrives are still answered.
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            waiting = [pool.submit(httpx.post, f"{base}/v1/predict", json={"inputs": TEXTS}, timeout=30) for _ in range(4)]
            while "jbert_queue_depth_texts 24" not in httpx.get(f"{base}/metrics", timeout=5).text:
                assert not any(f.done() for f in waiting), "requests were answered before the shutdown began"
                time.sleep(0.02)
            server.send_signal(signal.SIGTERM)
            assert [f.result().status_code for f in waiting] == [200] * 4
        # A drained shutdown exits 0 (uvicorn alone would re-raise the signal: -SIGTERM).
        assert server.wait(timeout=30) == 0
        assert "Application shutdown complete" in server.stdout.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=10)


def test_openapi_states_every_answer_and_limit(client):
    schema = client.get("/openapi.json").json()
    operations = {(path, method): op for path, item in schema["paths"].items() for method, op in item.items()}
    assert set(operations) == {("/predict", "post"), ("/", "post"), ("/v1/predict", "post"), ("/health", "get"),
                               ("/info", "get"), ("/metrics", "get")}
    assert set(operations["/v1/predict", "post"]["responses"]) == {"200", "400", "413", "415", "422", "503", "500"}
    for tei_route in ("/predict", "/"):
        assert set(operations[tei_route, "post"]["responses"]) == {
            "200", "400", "413", "415", "422", "424", "429", "503", "500"}
    assert set(operations["/health", "get"]["responses"]) == {"200", "503", "500"}
    for (path, _), operation in operations.items():
        assert "security" not in operation  # no key configured
        for status, response in operation["responses"].items():
            media_type = "text/plain" if (path, status) == ("/metrics", "200") else "application/json"
            assert list(response["content"]) == [media_type], (path, status)
            if status != "200":
                assert response["content"][media_type]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}
    body = schema["components"]["schemas"]["PredictRequest"]
    assert body["additionalProperties"] is False and body["required"] == ["inputs"]
    one, many = body["properties"]["inputs"]["anyOf"]
    assert many["minItems"] == 1 and many["maxItems"] == 8  # the fixture's max_client_batch_size
    assert one["minLength"] == 1 and one["maxLength"] == 95_000 and one["pattern"].startswith("[^")


def test_not_blank_pattern_reads_the_same_in_python_and_rust_and_matches_the_server(client):
    """The pattern is checked by Python's re (Schemathesis generates with it) and by jsonschema-rs
    (it validates with it): both must agree with each other and with the server on every character
    that clean-up can remove, and on a few that it keeps."""
    import re

    import jsonschema_rs

    from jbert.serve.http.schema import blank_characters

    body = client.get("/openapi.json").json()["components"]["schemas"]["PredictRequest"]
    pattern = body["properties"]["inputs"]["anyOf"][0]["pattern"]
    validator = jsonschema_rs.validator_for(body)
    classifier = client.app.state.batcher.model
    blanks = blank_characters(lambda char: classifier.input_problem(char) is None)
    assert {" ", "\u3000", "\t", "\x00", "\ufeff", "\u200b", "\U000E0001"} <= set(blanks)
    for char in blanks + ["犬", "a", "\u200d", "\U0001F600", "\u0301"]:
        in_python = re.search(pattern, char) is not None
        assert in_python == validator.is_valid({"inputs": char}), repr(char)
        assert in_python == (char not in blanks), repr(char)
    for text in (" \u3000", "\x00\ufeff", "犬 "):
        status = client.post("/v1/predict", json={"inputs": text}).status_code
        assert (status == 200) == (re.search(pattern, text) is not None), (repr(text), status)
