"""Wire compatibility: text-embeddings-inference's /predict and the Hugging Face Inference API's POST /,
checked against the runtime's own scores, and the real `huggingface_hub.InferenceClient` against a real
`serve_onnx.py http` process."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from conftest import PAIRS, REPO_ROOT, TEXTS, cached_export

from jbert.core.postprocessing import softmax
from jbert.serve.http.app import create_app
from jbert.serve.http.microbatch import BatcherConfig
from jbert.serve.http.request import ServeLimits

sys.path.insert(0, str(REPO_ROOT / "bench"))

from http_fuzz import running_server  # noqa: E402

LABELS = ["negative", "neutral", "positive"]


@pytest.fixture
def client(classifier):
    app = create_app(classifier, BatcherConfig(max_wait_ms=2), ServeLimits(max_client_batch_size=4))
    with TestClient(app) as test_client:
        yield test_client


def _expected(classifier, texts, raw=False):
    logits = classifier.run_logits(classifier.encode(texts))
    return logits if raw else classifier.scores_from_logits(logits)


def _assert_sorted_scores(answer, row):
    """`answer` lists every label once, best first, with the scores of `row` (in label order)."""
    assert sorted(item["label"] for item in answer) == sorted(LABELS)
    scores = [item["score"] for item in answer]
    assert scores == sorted(scores, reverse=True)
    np.testing.assert_allclose([row[LABELS.index(item["label"])] for item in answer], scores, atol=1e-5)


def test_tei_predict_single_batch_and_raw_scores(client, classifier):
    expected = _expected(classifier, TEXTS[:3])
    single = client.post("/predict", json={"inputs": TEXTS[0]})
    assert single.status_code == 200, single.text
    _assert_sorted_scores(single.json(), expected[0])
    # ["text"] is one input too (TEI reads a list of one or two strings as one sequence).
    assert client.post("/predict", json={"inputs": [TEXTS[0]]}).json() == single.json()
    batch = client.post("/predict", json={"inputs": [[t] for t in TEXTS[:3]], "truncate": True,
                                          "truncation_direction": "Right"}).json()
    assert len(batch) == 3
    for answer, row in zip(batch, expected):
        _assert_sorted_scores(answer, row)
    raw = client.post("/predict", json={"inputs": TEXTS[1], "raw_scores": True}).json()
    _assert_sorted_scores(raw, _expected(classifier, TEXTS[1:2], raw=True)[0])
    np.testing.assert_allclose(softmax(np.array([[i["score"] for i in raw]]))[0],
                               [i["score"] for i in client.post("/predict", json={"inputs": TEXTS[1]}).json()], atol=1e-5)


@pytest.mark.parametrize("body, status, fragment", [
    ({"inputs": ["a", "b"]}, 422, "this model classifies single texts"),
    ({"inputs": ["a", "b", "c"]}, 422, 'for a batch send [["text 1"]'),
    ({"inputs": [["a"], "b"]}, 422, '"inputs" must be a string, a pair'),
    ({"inputs": []}, 422, '"inputs" must be'),
    ({"inputs": [["a"]] * 5}, 413, "at most 4 per request"),
    ({"inputs": "a", "truncation_direction": "Middle"}, 422, '"truncation_direction" must be "Left" or "Right"'),
    ({"inputs": "a", "truncation_direction": 1}, 422, '"truncation_direction" must be "Left" or "Right"'),
    ({"inputs": "a", "raw_scores": "yes"}, 422, '"raw_scores" must be true or false'),
    ({"inputs": "a", "top_k": 1}, 422, "unknown fields ['top_k']"),
    ({"inputs": "この商品はとても良いです。" * 200, "truncate": False}, 422, "longer than the model's max_length"),
])
def test_tei_statuses(client, body, status, fragment):
    response = client.post("/predict", json=body)
    assert response.status_code == status, response.text
    assert fragment in response.json()["error"] and set(response.json()) == {"error", "error_type"}


# 62 tokens (the tiny model's max_length 64 minus [CLS] and [SEP]) whose words decide, after a long beginning.
DECISIVE_END = "最悪の料理でした。" * 6 + "犬が走る。" * 5
LONG_TEXT = "普通のホテルです。" * 20 + DECISIVE_END


def test_tei_truncation_direction_left_keeps_the_end(client, classifier):
    """Left scores a long text by its end (as the end alone scores), Right by its beginning; default: the model's side."""
    assert not classifier.encode([DECISIVE_END])[0].truncated  # the end alone fits whole

    def scores(inputs, direction=None):
        # Logits: the tiny random model's are small (about 0.01), and differ by about 1e-4 between the sides.
        body = {"inputs": inputs, "raw_scores": True}
        if direction is not None:
            body["truncation_direction"] = direction
        response = client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        return response.json()

    def by_label(answer):
        return {item["label"]: item["score"] for item in answer}

    def near(answer):
        return pytest.approx(by_label(answer), abs=1e-7)  # requests batched differently may round apart

    end_alone = scores(DECISIVE_END)
    right = scores(LONG_TEXT, "Right")
    assert by_label(scores(LONG_TEXT, "Left")) == near(end_alone)
    assert max(abs(by_label(right)[label] - score) for label, score in by_label(end_alone).items()) > 1e-5
    assert by_label(scores(LONG_TEXT)) == near(right)  # the tiny model's tokenizer truncates on the right
    _assert_sorted_scores(right, _expected(classifier, [LONG_TEXT], raw=True)[0])
    # A batch over inline_tokenize_chars is tokenized on the batcher's thread pool: the side goes along.
    batch = [[LONG_TEXT]] * 4
    assert sum(len(text) for [text] in batch) > BatcherConfig().inline_tokenize_chars
    assert [by_label(answer) for answer in scores(batch, "Left")] == [near(end_alone)] * 4
    # Concurrent requests, batched together, each cut on its own side.
    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(lambda number: scores(LONG_TEXT, ("Left", "Right")[number % 2]), range(16)))
    assert [by_label(answer) for answer in answers] == [near(end_alone if n % 2 == 0 else right) for n in range(16)]


def test_tei_schema_lists_both_directions(client):
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TeiPredictRequest"]
    direction = schema["properties"]["truncation_direction"]
    assert {"Left", "Right"} <= set(direction["anyOf"][0]["enum"]) and direction["default"] == "Right"


def test_tei_overload_is_429_and_model_failure_is_424(classifier):
    app = create_app(classifier, BatcherConfig(max_wait_ms=2, max_queue_texts=1), ServeLimits(max_client_batch_size=4))
    with TestClient(app) as client:
        full = client.post("/predict", json={"inputs": [["a"], ["b"]]})
        assert full.status_code == 429 and full.json()["error_type"] == "overloaded" and full.headers["retry-after"]
        legacy = client.post("/v1/predict", json={"inputs": ["a", "b"]})
        assert legacy.status_code == 503  # /v1/predict keeps its answers

        def broken(*args, **kwargs):
            raise RuntimeError("onnxruntime fell over")

        app.state.batcher.model.run_logits, original = broken, app.state.batcher.model.run_logits
        try:
            failed = client.post("/predict", json={"inputs": "a"})
        finally:
            app.state.batcher.model.run_logits = original
        assert failed.status_code == 424 and failed.json()["error_type"] == "backend", failed.text


def test_inference_api_route(client, classifier):
    expected = _expected(classifier, TEXTS[:2])
    one = client.post("/", json={"inputs": TEXTS[0], "parameters": {}})
    assert one.status_code == 200 and len(one.json()) == 1, one.text
    _assert_sorted_scores(one.json()[0], expected[0])
    top = client.post("/", json={"inputs": TEXTS[:2], "parameters": {"top_k": 1, "function_to_apply": "none"}}).json()
    raw = _expected(classifier, TEXTS[:2], raw=True)
    assert [[item["label"] for item in answer] for answer in top] == [[LABELS[int(r.argmax())]] for r in raw]
    bad = client.post("/", json={"inputs": "a", "parameters": {"top_k": 0}})
    assert bad.status_code == 422 and "parameters.top_k" in bad.json()["error"]


def test_pair_model_on_tei_and_inference_api(tmp_path_factory):
    from jbert.serve.runtime import OnnxClassifier

    classifier = OnnxClassifier.from_export_dir(cached_export(tmp_path_factory, text_pair=True)[1], model="fp32",
                                                num_threads=1)
    expected = classifier.predict(TEXTS[:2], PAIRS[:2])
    with TestClient(create_app(classifier)) as client:
        pair = client.post("/predict", json={"inputs": [TEXTS[0], PAIRS[0]]}).json()
        assert pair[0]["label"] == expected[0]["label"]
        batch = client.post("/predict", json={"inputs": [[TEXTS[0], PAIRS[0]], [TEXTS[1], PAIRS[1]]]}).json()
        assert [answer[0]["label"] for answer in batch] == [e["label"] for e in expected]
        api = client.post("/", json={"inputs": {"text": TEXTS[1], "text_pair": PAIRS[1]}}).json()
        assert api[0][0]["label"] == expected[1]["label"]
        single = client.post("/predict", json={"inputs": TEXTS[0]})
        assert single.status_code == 422 and "sentence pairs" in single.json()["error"]


def test_real_inference_client_round_trip(export_dir, classifier, monkeypatch):
    from huggingface_hub import InferenceClient, constants
    from huggingface_hub.utils import reset_sessions

    # The suite runs offline (conftest); the client only talks to the server on 127.0.0.1 here.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    reset_sessions()

    expected = classifier.predict(TEXTS, top_k=3)
    with running_server(export_dir) as (base_url, server):
        hf = InferenceClient(model=base_url, timeout=30)
        for text, want in zip(TEXTS, expected):
            got = hf.text_classification(text)
            assert [g.score for g in got] == sorted((g.score for g in got), reverse=True)
            assert {g.label: g.score for g in got} == pytest.approx({s["label"]: s["score"] for s in want["scores"]},
                                                                    abs=1e-3)
        top = hf.text_classification(TEXTS[0], top_k=2, function_to_apply="sigmoid")
        assert len(top) == 2 and top[0].label in LABELS and 0 < top[1].score <= top[0].score < 1
    monkeypatch.undo()
    reset_sessions()  # later users get the offline session again
