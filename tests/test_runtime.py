"""jbert.serve.runtime: an export directory served by onnxruntime gives the PyTorch model's answers."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import PAIRS, REPO_ROOT, TEXTS, cached_export

from jbert.core.artifacts import MANIFEST_FILE, Manifest, read_json, write_json
from jbert.core.errors import UserError


def torch_logits(model_dir: Path, texts, pairs=None) -> np.ndarray:
    """Reference logits from the PyTorch model and the reference BertJapaneseTokenizer."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jbert.core.artifacts import JbertSettings
    from jbert.core.normalize import normalize_text

    settings = JbertSettings.load(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    texts = [normalize_text(t, settings.normalization) for t in texts]
    pairs = [normalize_text(t, settings.normalization) for t in pairs] if pairs else None
    batch = tokenizer(texts, pairs, padding=True, truncation=True, max_length=settings.max_length, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits.numpy()


@pytest.fixture(scope="module")
def single_export(tmp_path_factory):
    """A tiny 3-class single-label model and its export directory."""
    return cached_export(tmp_path_factory)


@pytest.fixture(scope="module")
def classifier(single_export):
    from jbert.serve.runtime import OnnxClassifier

    return OnnxClassifier.from_export_dir(single_export[1], model="fp32")


def test_fp32_matches_pytorch_in_input_order(single_export, classifier):
    from jbert.core.postprocessing import softmax

    model_dir, _ = single_export
    # Mixed lengths and a batch size that splits them: sorting must not reorder the results.
    texts = TEXTS + ["この商品は" * 30]
    expected = softmax(torch_logits(model_dir, texts).astype(np.float64))
    results = classifier.predict(texts, top_k=3, batch_size=2)
    labels = ["negative", "neutral", "positive"]
    assert [r["label"] for r in results] == [labels[i] for i in expected.argmax(axis=1)]
    got = np.array([[next(s["score"] for s in r["scores"] if s["label"] == name) for name in labels] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    np.testing.assert_allclose([r["score"] for r in results], expected.max(axis=1), atol=1e-5)
    assert [r["truncated"] for r in results] == [False] * len(TEXTS) + [True]
    # top_k sorts best first and limits the count; without it there is no "scores" key.
    assert all(r["scores"][0]["score"] >= r["scores"][1]["score"] >= r["scores"][2]["score"] for r in results)
    assert len(classifier.predict(TEXTS[:1], top_k=1)[0]["scores"]) == 1
    assert "scores" not in classifier.predict(TEXTS[:1])[0]


def test_int8_agrees_with_fp32_and_is_default(single_export):
    from jbert.serve.runtime import OnnxClassifier

    int8 = OnnxClassifier.from_export_dir(single_export[1], model="int8")
    default = OnnxClassifier.from_export_dir(single_export[1])
    assert int8.model_key == "int8" and default.model_key == Manifest.load(single_export[1]).default_model
    fp32 = OnnxClassifier.from_export_dir(single_export[1], model="fp32")
    scores_int8 = np.array([r["score"] for r in int8.predict(TEXTS)])
    scores_fp32 = np.array([r["score"] for r in fp32.predict(TEXTS)])
    np.testing.assert_allclose(scores_int8, scores_fp32, atol=0.05)


def test_session_options_are_deliberate(single_export):
    import onnxruntime as ort

    from jbert.serve.runtime import OnnxClassifier
    from jbert.serve.runtime.session import physical_core_count

    default = OnnxClassifier.from_export_dir(single_export[1], model="fp32")
    options = default.session.get_session_options()
    assert options.intra_op_num_threads == physical_core_count()
    assert options.execution_mode == ort.ExecutionMode.ORT_SEQUENTIAL
    assert options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    told = OnnxClassifier.from_export_dir(single_export[1], model="fp32", num_threads=1, allow_spinning=False)
    assert told.session.get_session_options().intra_op_num_threads == 1
    assert told.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_padding_builds_int64_arrays_once(classifier):
    encodings = classifier.encode(["犬", "この商品はとても良いです。"])
    feeds = classifier.pad(encodings)
    longest = max(len(e.input_ids) for e in encodings)
    for name, array in feeds.items():
        assert array.dtype == np.int64 and array.shape == (2, longest) and array.flags.c_contiguous, name
    assert feeds["attention_mask"][0].sum() == len(encodings[0].input_ids)
    assert (feeds["input_ids"][0, len(encodings[0].input_ids):] == classifier.pad_token_id).all()


def test_batches_are_length_sorted_and_bounded_in_padded_tokens():
    """Up to 512 tokens a text, batches are batch_size texts as always; a text of 8,192 tokens among
    short ones is cut into its own batch instead of padding the short texts to its length."""
    from jbert.serve.runtime.batch_inputs import length_sorted_batches

    def padded(batches, lengths):
        return [len(batch) * max(lengths[i] for i in batch) for batch in batches]

    short = [10 + (i * 37) % 500 for i in range(64)]
    batches = list(length_sorted_batches(short, 32))
    assert [len(b) for b in batches] == [32, 32] and sorted(sum(batches, [])) == list(range(64))
    assert all(short[a] <= short[b] for batch in batches for a, b in zip(batch, batch[1:]))

    mixed = [8192] + [20] * 31 + [8000, 7000]
    batches = list(length_sorted_batches(mixed, 32))
    assert sorted(sum(batches, [])) == list(range(len(mixed)))
    assert max(padded(batches, mixed)) <= 32 * 512
    assert [0] in batches or any(0 in b and len(b) <= 2 for b in batches)
    assert sorted(range(1, 32)) == sorted(next(b for b in batches if 1 in b)), "the short texts stay together"
    assert list(length_sorted_batches([100_000], 4)) == [[0]], "a text beyond the budget still runs, alone"


def test_pairs_match_pytorch(tmp_path_factory):
    from jbert.core.postprocessing import softmax
    from jbert.serve.runtime import OnnxClassifier

    model_dir, export_dir = cached_export(tmp_path_factory, text_pair=True)
    classifier = OnnxClassifier.from_export_dir(export_dir, model="fp32")
    assert classifier.is_pair
    expected = softmax(torch_logits(model_dir, TEXTS, PAIRS).astype(np.float64))
    results = classifier.predict(TEXTS, PAIRS, top_k=3, batch_size=4)
    got = np.array([[s["score"] for s in sorted(r["scores"], key=lambda s: classifier.labels.index(s["label"]))] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    with pytest.raises(UserError, match="sentence pairs"):
        classifier.predict(TEXTS)


def test_multi_label_uses_sigmoid_and_threshold(tmp_path_factory):
    from jbert.serve.runtime import OnnxClassifier

    labels = ("food", "service", "price", "room")
    model_dir, export_dir = cached_export(tmp_path_factory, "multi_label_classification", labels=labels)
    classifier = OnnxClassifier.from_export_dir(export_dir, model="fp32")
    logits = torch_logits(model_dir, TEXTS).astype(np.float64)
    expected = 1 / (1 + np.exp(-logits))
    results = classifier.predict(TEXTS, top_k=4)
    for result, row in zip(results, expected):
        assert result["labels"] == [labels[i] for i in range(4) if row[i] > 0.5]
        np.testing.assert_allclose(sorted(s["score"] for s in result["scores"]), sorted(row), atol=1e-5)
        assert result["label"] == labels[int(row.argmax())]


def test_regression_returns_raw_values(tmp_path_factory):
    from jbert.serve.runtime import OnnxClassifier

    model_dir, export_dir = cached_export(tmp_path_factory, "regression")
    classifier = OnnxClassifier.from_export_dir(export_dir, model="fp32")
    expected = torch_logits(model_dir, TEXTS)[:, 0]
    results = classifier.predict(TEXTS)
    np.testing.assert_allclose([r["score"] for r in results], expected, atol=1e-5)
    assert all("scores" not in r for r in classifier.predict(TEXTS, top_k=2))


def test_bad_inputs_raise_clear_errors(classifier):
    from jbert.serve.runtime.batch_inputs import InputError

    with pytest.raises(InputError, match="input 1: text is empty") as caught:
        classifier.predict(["良い", ""])
    assert caught.value.index == 1
    with pytest.raises(InputError, match="empty after clean-up"):
        classifier.predict(["\u3000 \u200b\n"])
    with pytest.raises(InputError, match="must be a string, got int"):
        classifier.predict(["良い", 5])
    with pytest.raises(InputError, match="not one string"):
        classifier.predict("良い")
    with pytest.raises(InputError, match="top_k"):
        classifier.predict(["良い"], top_k=0)
    assert classifier.predict([]) == []


def test_hundred_thousand_characters(classifier):
    from jbert.serve.runtime.batch_inputs import InputError

    long_text = "この商品はとても良いです。" * 7700  # ~100,000 characters
    assert len(long_text) >= 100_000
    result = classifier.predict([long_text, "犬"])
    assert result[0]["truncated"] is True and result[1]["truncated"] is False
    with pytest.raises(InputError, match="max_length of 64 tokens") as caught:
        classifier.predict(["犬", long_text], truncate=False)
    assert caught.value.index == 1 and caught.value.kind == "too_long"


def test_broken_export_dirs(tmp_path, single_export):
    from jbert.serve.runtime import OnnxClassifier

    with pytest.raises(UserError, match="does not exist"):
        OnnxClassifier.from_export_dir(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no manifest.json.*export.py"):
        OnnxClassifier.from_export_dir(tmp_path / "empty")

    copy = tmp_path / "copy"
    shutil.copytree(single_export[1], copy)
    (copy / "model_quantized.onnx").unlink()
    with pytest.raises(UserError, match="model_quantized.onnx is listed .* but missing"):
        OnnxClassifier.from_export_dir(copy, model="int8")
    with pytest.raises(UserError, match="model must be one of"):
        OnnxClassifier.from_export_dir(copy, model="fp16")

    manifest = read_json(copy / MANIFEST_FILE)
    manifest["format_version"] = 99
    write_json(copy / MANIFEST_FILE, manifest)
    with pytest.raises(UserError, match="format_version 99 is newer"):
        OnnxClassifier.from_export_dir(copy)

    manifest["format_version"] = 1
    manifest["models"] = {"fp32": manifest["models"]["fp32"]}
    manifest["default_model"] = "fp32"
    manifest.pop("files", None)  # an export from before the file hashes: the onnxruntime error below, not the hash check
    write_json(copy / MANIFEST_FILE, manifest)
    with pytest.raises(UserError, match="no 'int8' model.*--quantize"):
        OnnxClassifier.from_export_dir(copy, model="int8")
    (copy / "model.onnx").write_bytes(b"not an onnx file")
    with pytest.raises(UserError, match="cannot be loaded by onnxruntime"):
        OnnxClassifier.from_export_dir(copy)


def test_export_dir_is_read_once_and_makes_every_choice(single_export, classifier):
    """ExportDir: the model file, the label names and the text/pair columns the runtime and scoring use."""
    import pickle

    from jbert.core.export_dir import ExportDir

    export = ExportDir.open(single_export[1])
    assert export.labels == classifier.labels and export.max_length == classifier.max_length
    key, path = export.model_file("default")
    assert key == export.manifest.default_model and path.is_file()
    assert export.model_file("fp32") == ("fp32", classifier.model_path)
    with pytest.raises(UserError, match="model must be one of"):
        export.model_file("fp16")
    assert export.text_columns() == (export.settings.text_column, None)
    assert export.text_columns("review") == ("review", None)
    with pytest.raises(UserError, match="--text-pair-column was given but this model classifies single texts"):
        export.text_columns(text_pair_column="other")
    # The Ray engine ships it from a node to the driver.
    assert pickle.loads(pickle.dumps(export)) == export
    assert classifier.export_dir.text_columns() == export.text_columns()


def test_runtime_never_imports_torch(single_export):
    code = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from jbert.serve.runtime import OnnxClassifier
classifier = OnnxClassifier.from_export_dir({str(single_export[1])!r})
print(classifier.predict(["この商品はとても良いです。"], top_k=2)[0]["label"])
import jbert.serve.scoring.run, jbert.serve.scoring.shards, jbert.serve.http.app, jbert.serve.cli
banned = sorted(m for m in ("torch", "transformers", "optimum") if m in sys.modules)
print("BANNED", banned)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "BANNED []" in done.stdout, done.stdout + done.stderr


def test_character_limit_is_checked_before_tokenizing(classifier, monkeypatch):
    """Over max_text_chars: InputError kind "too_many_chars"; no limit given: MAX_TEXT_CHARS_LIMIT applies."""
    from jbert.serve.runtime import MAX_TEXT_CHARS_LIMIT, InputError

    assert classifier.predict(["犬" * 10], max_text_chars=10)[0]["label"] in classifier.labels
    with pytest.raises(InputError, match="input 1: text has 11 characters; at most 10") as caught:
        classifier.predict(["犬", "犬" * 11], max_text_chars=10)
    assert caught.value.index == 1 and caught.value.kind == "too_many_chars"
    assert "at most 10" in classifier.input_problem("犬" * 11, max_text_chars=10)
    for bad in (0, MAX_TEXT_CHARS_LIMIT + 1, True, "100"):
        with pytest.raises(UserError, match="max_text_chars"):
            classifier.encode(["犬"], max_text_chars=bad)

    # Nothing over the limit reaches the tokenizer, with or without a limit from the caller.
    def never_called(*args, **kwargs):
        raise AssertionError("the tokenizer was given a text over the limit")

    monkeypatch.setattr(classifier.tokenizer, "encode_batch", never_called)
    with pytest.raises(InputError, match=f"at most {MAX_TEXT_CHARS_LIMIT:,}") as caught:
        classifier.encode(["a" * (MAX_TEXT_CHARS_LIMIT + 1)])
    assert caught.value.kind == "too_many_chars"
    # NFKC makes U+FDFA 18 characters long: short before clean-up, too long for MeCab after it.
    with pytest.raises(InputError, match="grows to .* under Unicode NFKC") as caught:
        classifier.encode(["\ufdfa" * (MAX_TEXT_CHARS_LIMIT // 18 + 1)])
    assert caught.value.kind == "too_many_chars"


def test_a_library_caller_cannot_crash_the_process_with_a_long_text(single_export):
    """200,000 ASCII characters crash MeCab (SIGSEGV, exit 139); the runtime refuses them with an InputError."""
    code = f"""
import sys
sys.path.insert(0, {str(REPO_ROOT)!r})
from jbert.serve.runtime import InputError, OnnxClassifier
classifier = OnnxClassifier.from_export_dir({str(single_export[1])!r}, num_threads=1)
try:
    classifier.predict(["a" * 200_000])
except InputError as err:
    print("REFUSED", err.kind)
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert "REFUSED too_many_chars" in done.stdout


def swapped_export(tmp_path: Path, source: Path, model_from: Path) -> Path:
    """A copy of the export `source` whose fp32 model is `model_from`'s, with the manifest's hashes recomputed."""
    copy = tmp_path / "swapped"
    shutil.copytree(source, copy)
    shutil.copyfile(model_from / "model.onnx", copy / "model.onnx")
    manifest = Manifest.load(copy)
    manifest.record_files(copy)
    manifest.save(copy)
    return copy


def test_a_swapped_model_is_refused_at_load(tmp_path, tmp_path_factory, single_export):
    """The ONNX model's output width must equal the export's labels, its inputs the manifest's."""
    from jbert.serve.runtime import OnnxClassifier

    regression_export = cached_export(tmp_path_factory, "regression")[1]
    labels = OnnxClassifier.from_export_dir(single_export[1], model="fp32", num_threads=1).labels
    assert len(labels) == 3
    copy = swapped_export(tmp_path, single_export[1], regression_export)
    with pytest.raises(UserError, match=r"model.onnx does not match its export directory: .* has 1 values per input "
                                        r"but the export names 3 labels") as caught:
        OnnxClassifier.from_export_dir(copy, model="fp32", num_threads=1)
    assert all(label in str(caught.value) for label in labels) and "re-export" in str(caught.value)

    shutil.rmtree(copy)
    copy = swapped_export(tmp_path, single_export[1], single_export[1])
    manifest = read_json(copy / MANIFEST_FILE)
    manifest["validation"]["inputs"] = ["input_ids", "attention_mask"]
    write_json(copy / MANIFEST_FILE, manifest)
    with pytest.raises(UserError, match=r"the model's inputs \['attention_mask', 'input_ids', 'token_type_ids'\] "
                                        r"differ from the manifest's \['attention_mask', 'input_ids'\]"):
        OnnxClassifier.from_export_dir(copy, model="fp32", num_threads=1)


# 62 tokens (max_length 64 minus [CLS] and [SEP]) whose words decide; a long beginning before them.
DECISIVE_END = "最悪の料理でした。" * 6 + "犬が走る。" * 5
FILLER = "普通のホテルです。" * 20


def test_truncation_side_per_call(classifier):
    """"left" keeps the end of a long text, "right" its beginning; None is the model's own side."""
    from jbert.serve.runtime import InputError

    end_alone = classifier.encode([DECISIVE_END])[0]
    assert len(end_alone.input_ids) == 64 and not end_alone.truncated  # exactly fits
    left, right, default = (classifier.encode([FILLER + DECISIVE_END], truncation_side=side)[0]
                            for side in ("left", "right", None))
    assert left.truncated and right.truncated
    assert left.input_ids == end_alone.input_ids
    assert right.input_ids == classifier.encode([FILLER])[0].input_ids
    assert default == right  # the tiny model's tokenizer truncates on the right
    scores = {side: classifier.predict([FILLER + DECISIVE_END], top_k=3, truncation_side=side)[0]["scores"]
              for side in ("left", "right")}
    assert scores["left"] == classifier.predict([DECISIVE_END], top_k=3)[0]["scores"]
    assert scores["left"] != scores["right"]
    with pytest.raises(InputError, match="truncation_side must be 'left', 'right' or None") as caught:
        classifier.predict(TEXTS, truncation_side="Left")
    assert caught.value.kind == "invalid"
