"""Long texts read in windows (--long_text windows): the layout, the tokenizers, pooling, options, files."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, strategies as st

from conftest import write_tiny_japanese_tokenizer
from jbert.core.artifacts import JbertSettings
from jbert.core.errors import UserError
from jbert.core.windows import LongTextRule, check_stride, pool_window_logits, window_spans
from jbert.tokenization.windows import encode_windows

LONG_TEXT = "".join(f"今日は{i}番目の良い店でした。" for i in range(12))


@given(n_tokens=st.integers(0, 400), width=st.integers(1, 64), data=st.data())
def test_windows_cover_every_token_exactly_once_in_their_stride_layout(n_tokens, width, data):
    stride = data.draw(st.integers(0, width - 1))
    spans = window_spans(n_tokens, width, stride)
    assert spans[0][0] == 0 and spans[-1][1] == n_tokens
    assert all(0 < end - start <= width or n_tokens == 0 for start, end in spans)
    # Each window but the first repeats exactly `stride` tokens of the one before it ...
    assert all(prev_end - start == stride for (_, prev_end), (start, _) in zip(spans, spans[1:]))
    # ... so dropping them covers every token once, in order.
    own = [t for number, (start, end) in enumerate(spans) for t in range(start + (stride if number else 0), end)]
    assert own == list(range(n_tokens))


def _wordpiece_tokenizers(tmp_path):
    """The same WordPiece vocabulary as a Rust-backed and as a pure-Python transformers tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertTokenizer, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": 4 + i for i in range(60)}}
    rust = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    rust.pre_tokenizer = pre_tokenizers.Whitespace()
    rust.post_processor = processors.BertProcessing(("[SEP]", 3), ("[CLS]", 2))
    fast = PreTrainedTokenizerFast(tokenizer_object=rust, cls_token="[CLS]", sep_token="[SEP]", pad_token="[PAD]",
                                   unk_token="[UNK]")
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return fast, BertTokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False)


def test_rust_and_python_tokenizers_cut_the_layout_of_overflowing_tokens(tmp_path):
    fast, slow = _wordpiece_tokenizers(tmp_path)
    text = " ".join(f"w{i}" for i in range(41))
    reference = fast(text, truncation=True, max_length=12, stride=3, return_overflowing_tokens=True)["input_ids"]
    for tokenizer in (fast, slow):
        (windowed,) = encode_windows(tokenizer, [text], None, 12, 3)
        assert [list(w.input_ids) for w in windowed.windows] == reference
        assert not windowed.truncated
    # Pairs: the first text is kept whole in every window, the second is windowed.
    pair_reference = fast("w0 w1", text, truncation="only_second", max_length=14, stride=2,
                          return_overflowing_tokens=True)
    for tokenizer in (fast, slow):
        (windowed,) = encode_windows(tokenizer, ["w0 w1"], [text], 14, 2)
        assert [list(w.input_ids) for w in windowed.windows] == pair_reference["input_ids"]
        assert [list(w.token_type_ids) for w in windowed.windows] == pair_reference["token_type_ids"]


def test_a_first_text_that_leaves_no_room_is_cut_as_before_and_counted(tmp_path):
    fast, slow = _wordpiece_tokenizers(tmp_path)
    first, second = " ".join(["w5"] * 10), " ".join(f"w{i}" for i in range(30))
    for tokenizer in (fast, slow):
        (windowed,) = encode_windows(tokenizer, [first], [second], 14, 2)
        assert windowed.truncated and len(windowed.windows) == 1
        assert list(windowed.windows[0].input_ids) == tokenizer(first, second, truncation=True, max_length=14)["input_ids"]


def test_serving_tokenizer_cuts_the_windows_transformers_cuts(tmp_path):
    from transformers import AutoTokenizer

    from jbert.tokenization import load_serving_tokenizer

    write_tiny_japanese_tokenizer(tmp_path)
    reference = AutoTokenizer.from_pretrained(tmp_path)
    serving = load_serving_tokenizer(tmp_path)
    texts = [LONG_TEXT, "良い店です。", LONG_TEXT[:100]]
    for pairs in (None, ["店の話", LONG_TEXT, "短い"]):
        served = encode_windows(serving, texts, pairs, 24, 5)
        expected = encode_windows(reference, texts, pairs, 24, 5)
        assert served == expected
        assert len(served[0].windows) > 3 or pairs is not None
    # A text that fits gets one window, exactly today's truncating encoding.
    short = encode_windows(serving, ["良い店です。"], None, 24, 5)[0]
    assert short.windows == (serving.encode_batch(["良い店です。"], max_length=24)[0],)


def test_pooling_per_document():
    logits = np.array([[1.0, 0.0], [3.0, -2.0], [0.5, 0.25], [7.0, 1.0]], dtype=np.float32)
    documents = np.array([0, 0, 1, 2])
    assert pool_window_logits(logits, documents, 3, "mean").tolist() == [[2.0, -1.0], [0.5, 0.25], [7.0, 1.0]]
    assert pool_window_logits(logits, documents, 3, "max").tolist() == [[3.0, 0.0], [0.5, 0.25], [7.0, 1.0]]
    assert pool_window_logits(logits, documents, 3, "first").tolist() == [[1.0, 0.0], [0.5, 0.25], [7.0, 1.0]]
    # A text of one window keeps its own logits to the last bit, whatever the pooling.
    odd = np.array([[0.1, 1 / 3]], dtype=np.float32)
    for pooling in ("mean", "max", "first"):
        assert pool_window_logits(odd, np.array([0]), 1, pooling).tobytes() == odd.tobytes()


def test_stride_must_leave_the_windows_room_to_move():
    with pytest.raises(UserError, match="not smaller than the window.*at most 63"):
        check_stride(64, 128, 2)
    check_stride(63, 128, 2)


@pytest.mark.parametrize("extra, message", [
    (["--long_text", "windows", "--stride", "20"], "--stride 20 is not smaller than the window"),
    (["--stride", "4"], "--stride applies to --long_text windows only"),
    (["--long_text", "windows", "--max_train_windows", "-1"], "--max_train_windows must be 0"),
    (["--window_training", "document"], "--window_training document applies to --long_text windows only"),
    (["--long_text", "windows", "--window_training", "document", "--window_pooling", "first"],
     "would train on first windows only"),
])
def test_window_options_are_checked_before_any_work(tmp_path, extra, message):
    from jbert.train.config import parse_config

    (tmp_path / "train.csv").write_text("text,label\n良い,a\n悪い,b\n", encoding="utf-8")
    argv = ["--from_scratch", "tiny", "--train_file", str(tmp_path / "train.csv"), "--max_length", "32",
            "--output_dir", str(tmp_path / "model")] + extra
    with pytest.raises(UserError, match=message):
        parse_config(argv)
    assert not (tmp_path / "model").exists()


def test_the_rule_is_saved_in_jbert_json_and_left_out_without_windows(tmp_path):
    JbertSettings().save(tmp_path)
    assert "long_text" not in json.loads((tmp_path / "jbert.json").read_text())
    JbertSettings(long_text=LongTextRule("windows", 16, "max")).save(tmp_path)
    assert JbertSettings.load(tmp_path).long_text == LongTextRule("windows", 16, "max")
    saved = json.loads((tmp_path / "jbert.json").read_text())
    saved["long_text"]["pooling"] = "median"
    (tmp_path / "jbert.json").write_text(json.dumps(saved))
    with pytest.raises(UserError, match="long_text.pooling must be one of"):
        JbertSettings.load(tmp_path)


def _windowed_copy(classifier, pooling: str = "mean", stride: int = 5):
    """The same export served with a windows rule (as if trained with --long_text windows)."""
    from jbert.serve.runtime import OnnxClassifier

    settings = replace(classifier.settings, long_text=LongTextRule("windows", stride, pooling))
    return OnnxClassifier(classifier.session, classifier.tokenizer, settings, classifier.manifest, classifier.labels,
                          classifier.model_key, classifier.model_path)


def test_short_texts_get_exactly_todays_results_and_long_ones_their_pooled_windows(classifier):
    windowed = _windowed_copy(classifier)
    short = ["この商品はとても良いです。", "最悪の料理でした。"]
    assert windowed.predict(short, top_k=3) == classifier.predict(short, top_k=3)
    long_texts = [LONG_TEXT * 3, "普通のホテルです" * 40]
    results = windowed.predict(long_texts, top_k=3)
    assert not any(r["truncated"] for r in results)
    assert [r["truncated"] for r in classifier.predict(long_texts)] == [True, True]
    # By hand: every window through the plain runtime, then the mean of their logits.
    for text, result in zip(long_texts, results):
        (item,) = windowed.encode([text])
        assert len(item.windows) > 2
        by_hand = classifier.run_logits(list(item.windows)).mean(axis=0, keepdims=True)
        assert result["score"] == pytest.approx(float(classifier.scores_from_logits(by_hand).max()), abs=1e-6)


def test_a_hand_edited_stride_is_refused_when_the_export_loads(classifier):
    with pytest.raises(UserError, match="long_text.stride 60 is not smaller than the window"):
        _windowed_copy(classifier, stride=60)


def test_pytorch_prediction_pools_the_windows_serving_pools(tiny_model_dir, classifier):
    """The saved model's windows in PyTorch (training's test predictions) match the ONNX runtime's."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jbert.train.saved_predictions import predict

    model = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts = ["良い店です。", LONG_TEXT * 2, "普通のホテルです" * 30]
    rule = LongTextRule("windows", 5, "max")
    plain = predict(model, tokenizer, texts[:1], None, 64, 8, "cpu")
    assert predict(model, tokenizer, texts[:1], None, 64, 8, "cpu", rule).tobytes() == plain.tobytes()
    pooled = predict(model, tokenizer, texts, None, 64, 8, "cpu", rule)
    served = _windowed_copy(classifier, "max").run_logits(_windowed_copy(classifier, "max").encode(texts))
    np.testing.assert_allclose(pooled, served, atol=1e-5)


NEUTRAL_SENTENCES = ["駅前の店は朝から開いている。", "会議は午後三時に始まる予定だ。", "昨日は少し早く家に帰った。",
                     "友人と電話で長く話した。", "新しい手帳を買うつもりだ。", "窓の外を車が通り過ぎた。"]


def long_topic_rows(n_per_class: int, seed: int, fillers: int = 8) -> list[dict]:
    """Documents of several windows at --max_length 32: the topic sentence that decides the label
    sits at a random place among neutral sentences."""
    import random

    from conftest import topic_rows

    rng = random.Random(seed)
    rows = []
    for row in topic_rows(n_per_class, seed):
        parts = [rng.choice(NEUTRAL_SENTENCES) for _ in range(fillers)]
        parts.insert(rng.randrange(fillers + 1), row["text"])
        rows.append({"text": "".join(parts), "label": row["label"]})
    return rows


def test_a_document_gets_the_same_answer_in_training_export_scoring_and_http(tmp_path):
    """Train with windows, export, then serve: predictions_test.jsonl, the runtime, batch scoring and
    HTTP give each document the same pooled answer, and the export checked it per document."""
    from fastapi.testclient import TestClient

    from conftest import run_training, tiny_args, write_training_csv
    from jbert.export import ExportOptions, export_model
    from jbert.serve.http.app import create_app
    from jbert.serve.runtime import OnnxClassifier
    from jbert.serve.scoring.options import ScoreOptions
    from jbert.serve.scoring.run import score_file

    train_rows, valid_rows = long_topic_rows(16, seed=1), long_topic_rows(5, seed=2)
    write_training_csv(tmp_path / "train.csv", train_rows)
    write_training_csv(tmp_path / "valid.csv", valid_rows)
    test_rows = long_topic_rows(4, seed=3)
    write_training_csv(tmp_path / "test.csv", test_rows)
    metrics = run_training(tiny_args(tmp_path, long_text="windows", stride=8, window_pooling="max",
                                     num_train_epochs=2, baseline="none", test_file=str(tmp_path / "test.csv")))
    # every document is longer than a window
    assert metrics["data"]["windowed"] == {"train": len(train_rows), "validation": len(valid_rows)}
    assert metrics["data"]["truncated_to_max_length"] == {"train": 0, "validation": 0}
    assert metrics["data"]["long_text"] == {"mode": "windows", "stride": 8, "pooling": "max"}

    export_model(tmp_path / "model", tmp_path / "onnx", ExportOptions(show_progress=False))
    manifest = json.loads((tmp_path / "onnx" / "manifest.json").read_text())
    assert manifest["long_text"] == {"mode": "windows", "stride": 8, "pooling": "max"}
    assert manifest["validation"]["documents"]["models"]["fp32"]["label_agreement"] == 1.0
    assert min(manifest["validation"]["documents"]["windows"]) >= 2

    classifier = OnnxClassifier.from_export_dir(tmp_path / "onnx", num_threads=1)
    texts = [row["text"] for row in test_rows]
    served = classifier.predict(texts)
    reference = [json.loads(line) for line in (tmp_path / "model" / "predictions_test.jsonl").read_text().splitlines()]
    assert [r["label"] for r in served] == [r["prediction"] for r in reference]
    np.testing.assert_allclose([r["score"] for r in served], [r["score"] for r in reference], atol=1e-5)
    assert not any(r["truncated"] for r in served)
    # The test figures are per document, from the same pooled answers.
    correct = sum(r["label"] == row["label"] for r, row in zip(served, test_rows))
    assert metrics["test"]["accuracy"] == pytest.approx(correct / len(test_rows))

    summary = score_file(ScoreOptions(export_dir=str(tmp_path / "onnx"), input=str(tmp_path / "test.csv"),
                                      output=str(tmp_path / "scored.jsonl"), show_progress=False), classifier)
    scored = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert summary.scored == len(test_rows) and summary.truncated == 0
    assert [row["predicted_label"] for row in scored] == [r["label"] for r in served]

    with TestClient(create_app(classifier)) as client:
        answer = client.post("/v1/predict", json={"inputs": texts[:3]}).json()
        tei = client.post("/predict", json={"inputs": [[t] for t in texts[:3]], "truncation_direction": "Left"}).json()
    assert [r["label"] for r in answer] == [r["label"] for r in served[:3]]
    assert [max(scores, key=lambda s: s["score"])["label"] for scores in tei] == [r["label"] for r in served[:3]]
