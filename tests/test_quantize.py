"""Calibrated int8 and the int8 search on tiny models: recipes, records, bad input, file hashes, CPU target.

The claim that the search keeps a real model's decisions is proved on real weights in
test_quantize_minilm.py; these tests check the machinery in seconds.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import onnx
import pytest

from jbert.export import cli as export_cli
from conftest import make_tiny_model_dir
from jbert.core.artifacts import MANIFEST_FILE, Manifest
from jbert.core.errors import UserError, run_cli
from jbert.export import ExportOptions, export_model
from jbert.export.agreement import AGREEMENT_MEASURES, REGRESSION_TOLERANCE, agreement_figures
from jbert.export.int8_search import format_table
from jbert.serve.runtime import cpu

CALIBRATION_TEXTS = [
    "この商品はとても良いです。",  # also a held-out text (examples.jsonl): left out of calibration
    "最悪のホテルでした。", "普通の料理です", "今日は晴れ",
    "この料理は美味しいです。", "部屋がとても悪いです。", "犬が走る", "猫が寝る", "今日の天気は晴れです。",
    "ホテルの部屋は普通です。", "この店員の対応は最高です。", "値段は安いです", "料理がまずいです。",
    "商品の品質が悪い", "とても良いホテルでした。", "今日は犬と猫が寝る", "最高の料理です。",
]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny single-label model directory (its examples.jsonl are the held-out texts)."""
    return make_tiny_model_dir(tmp_path_factory.mktemp("quantize") / "model")


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    """A CSV of texts to calibrate on, one of them also a held-out text."""
    path = tmp_path_factory.mktemp("calibration") / "calibration.csv"
    path.write_text("text\n" + "\n".join(CALIBRATION_TEXTS) + "\n", encoding="utf-8")
    return path


def test_static_int8_is_calibrated_qdq_per_channel_on_texts_that_are_not_held_out(model_dir, calibration_file, tmp_path):
    export_dir = tmp_path / "onnx"
    manifest = export_model(model_dir, export_dir, ExportOptions(quantize="avx512_vnni", quantize_method="static",
                            calibration_method="entropy", calibration_file=calibration_file, show_progress=False))
    record = manifest.models["int8"].quantization
    assert record["mode"] == "static" and record["format"] == "QDQ" and record["per_channel"] is True
    assert record["recipe"] == "static-entropy" and record["operators"] == ["MatMul", "Gather"]
    # 17 texts, one of them held out: 16 left, a multiple of the calibration batch (8).
    assert record["calibration"]["method"] == "entropy"
    assert record["calibration"]["n_texts"] == 16 and record["calibration"]["held_out_texts_left_out"] == 1
    assert record["calibration"]["source"] == f"calibration file {calibration_file}"
    op_types = {node.op_type for node in onnx.load(str(export_dir / "model_quantized.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= op_types
    assert manifest.models["int8"].parity["agreement"] >= 0.99
    search = manifest.quantization
    assert [c["name"] for c in search["candidates"]] == ["static-entropy"] and search["chosen"] == "static-entropy"
    assert search["held_out"] == {"source": f"{manifest.validation['source']}", "n_texts": 4, "n_labelled": 4}


def test_auto_search_measures_every_candidate_and_keeps_the_fastest_that_agrees(model_dir, calibration_file, tmp_path, capsys):
    export_dir = tmp_path / "onnx"
    manifest = export_model(model_dir, export_dir, ExportOptions(quantize="auto", calibration_file=calibration_file))
    search = manifest.quantization
    assert search["target"] == cpu.detect_cpu_target() and search["target_source"].startswith("detected")
    assert search["cpu"]["detected_target"] == search["target"]
    assert search["agreement_measure"] == AGREEMENT_MEASURES["single_label_classification"]
    names = [c["name"] for c in search["candidates"]]
    assert names == ["dynamic-per_tensor", "dynamic", "static-minmax", "static-percentile", "static-entropy"]  # tier 1 met it
    for candidate in search["candidates"]:
        assert candidate["agreement"] == 1.0 and candidate["n"] == 4
        assert candidate["texts_per_s"] > 0 and candidate["fp32_texts_per_s"] > 0 and candidate["size_bytes"] > 0
        assert candidate["accuracy"] == candidate["accuracy_fp32"]
    passing = [c for c in search["candidates"] if c["meets_min_agreement"] and c["accuracy_kept"]]
    fastest = max(passing, key=lambda c: c["speedup"])  # the ratio to fp32 timed in the same rounds
    assert search["chosen"] == fastest["name"] and fastest["result"].startswith("chosen")
    assert manifest.models["int8"].quantization["recipe"] == fastest["name"]
    assert manifest.models["int8"].quantization["speedup_vs_fp32"] == fastest["speedup"]
    err = capsys.readouterr().err
    assert "int8 candidates (label agreement" in err and "chosen: fastest of its tier" in err
    assert Manifest.load(export_dir).quantization == search


def test_calibration_texts_default_to_the_training_file(model_dir, tmp_path):
    trained = tmp_path / "trained"
    shutil.copytree(model_dir, trained)
    train_file = tmp_path / "train.csv"
    train_file.write_text("text,label\n" + "".join(f"{text},positive\n" for text in CALIBRATION_TEXTS), encoding="utf-8")
    (trained / "training_config.yaml").write_text(f"train_file: {train_file}\nlabel_column: label\n", encoding="utf-8")
    manifest = export_model(trained, tmp_path / "onnx", ExportOptions(quantize="avx2", quantize_method="static", show_progress=False))
    calibration = manifest.models["int8"].quantization["calibration"]
    assert calibration["source"] == f"train_file {train_file} (training_config.yaml)"
    assert calibration["n_texts"] == 16 and calibration["held_out_texts_left_out"] == 1


def _run(argv, capsys):
    code = run_cli(export_cli.main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def test_bad_quantisation_input_exits_2_and_leaves_nothing(model_dir, calibration_file, tmp_path, capsys):
    out = tmp_path / "out"
    only_held_out = tmp_path / "held_out.csv"
    only_held_out.write_text("text\nこの商品はとても良いです。\n最悪の料理でした。\n", encoding="utf-8")
    code, err = _run([model_dir, out, "--quantize", "avx2", "--calibration_file", only_held_out], capsys)
    assert code == 2 and "has no usable calibration texts: all 2 of its texts are among the held-out validation texts" in err

    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n,positive\n  ,negative\n", encoding="utf-8")
    code, err = _run([model_dir, out, "--quantize", "avx2", "--calibration_file", empty], capsys)
    assert code == 2 and "has no usable calibration texts: it has no non-empty 'text' values" in err

    wrong_column = tmp_path / "wrong_column.csv"
    wrong_column.write_text("review\nよい\n", encoding="utf-8")
    code, err = _run([model_dir, out, "--quantize", "avx2", "--calibration_file", wrong_column], capsys)
    assert code == 2 and "lacks the column(s) ['text']" in err

    code, err = _run([model_dir, out, "--quantize", "avx2", "--calibration_method", "kl", "--calibration_file", tmp_path / "nowhere.csv"], capsys)
    assert code == 2 and "--calibration_method 'kl' is not a calibration method; choose one of minmax, percentile, entropy" in err
    assert "--calibration_file" in err and "does not exist" in err

    code, err = _run([model_dir, out, "--quantize", "avx2", "--quantize_method", "static"], capsys)
    assert code == 2 and "--quantize_method static needs calibration texts" in err and "training_config.yaml" in err

    code, err = _run([model_dir, out, "--quantize", "avx2", "--calibration_file", calibration_file, "--max_quantize_seconds", "0.001"], capsys)
    assert code == 2 and "past --max_quantize_seconds 0.001, after 1 candidate(s); nothing was written" in err
    assert "dynamic-per_tensor" in err  # the table of what was measured before the limit

    code, err = _run([model_dir, out, "--calibration_file", calibration_file], capsys)
    assert code == 2 and "only apply to int8; add --quantize auto" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.csv", "held_out.csv", "wrong_column.csv"]


def test_multi_label_and_regression_use_the_fitting_agreement_measure(tmp_path):
    reference = np.array([[2.0, -2.0, 0.1], [-1.0, 3.0, -0.1]])
    moved = reference + np.array([[0.0, 0.0, -0.2], [0.0, 0.0, 0.0]])  # one of six decisions flips
    figures = agreement_figures(reference, moved, "multi_label_classification")
    assert figures["agreement"] == pytest.approx(5 / 6) and figures["label_set_agreement"] == 0.5
    scores = np.array([[0.0], [1.0], [10.0], [2.5]])  # range 10: relative to 10, except the score 10 itself
    shifted = scores + np.array([[0.0], [REGRESSION_TOLERANCE * 10 * 0.9], [REGRESSION_TOLERANCE * 10 * 1.5], [0.0]])
    figures = agreement_figures(scores, shifted, "regression")
    assert figures["agreement"] == 0.75 and figures["score_range"] == 10.0
    assert figures["max_relative_error"] == pytest.approx(REGRESSION_TOLERANCE * 1.5)
    tiny = agreement_figures(np.array([[0.1], [0.1001]]), np.array([[0.1004], [0.1002]]), "regression")
    assert tiny["agreement"] == 1.0  # 0.4 % of the score itself, though 4x the range
    near_zero = agreement_figures(np.array([[0.001], [0.0011]]), np.array([[0.003], [0.0031]]), "regression", labels=[0.5, 4.5])
    assert near_zero["agreement"] == 1.0 and near_zero["label_range"] == 4.0  # 0.002 off on a 0.5-4.5 scale

    model = make_tiny_model_dir(tmp_path / "multi", problem_type="multi_label_classification", labels=("food", "service", "price"))
    manifest = export_model(model, tmp_path / "onnx", ExportOptions(quantize="avx2", quantize_method="dynamic", show_progress=False))
    assert manifest.quantization["agreement_measure"].startswith("per-label decision agreement")
    assert manifest.models["int8"].parity["agreement_measure"] == manifest.quantization["agreement_measure"]
    assert manifest.quantization["candidates"][0]["n"] == 4 * 3  # decisions, not texts


def test_format_table_names_every_candidate():
    from jbert.export.int8_search import Candidate
    from jbert.export.quantize import Int8Recipe

    candidate = Candidate(Int8Recipe("static", "matmul", True, "minmax", ("a", "b", "c")), 3)
    candidate.figures = {"agreement": 0.995, "accuracy": 0.81, "accuracy_fp32": 0.8, "texts_per_s": 300.0,
                         "speedup": 2.0, "size_bytes": 59e6, "result": "chosen"}
    table = format_table([candidate], "label agreement")
    assert "static-minmax-matmul-exclude3" in table and "99.50%" in table and "0.8100/0.8000" in table and "59.0" in table


def test_runtime_refuses_an_export_whose_files_changed(model_dir, tmp_path):
    from jbert.serve.runtime import OnnxClassifier

    export_dir = tmp_path / "onnx"
    manifest = export_model(model_dir, export_dir, ExportOptions(show_progress=False))
    assert set(manifest.files) == {p.name for p in export_dir.iterdir()} - {MANIFEST_FILE}
    assert "model.onnx" in manifest.files and "vocab.txt" in manifest.files and "jbert.json" in manifest.files
    OnnxClassifier.from_export_dir(export_dir)  # untouched: loads

    settings = json.loads((export_dir / "jbert.json").read_text(encoding="utf-8"))
    settings["max_length"] = 32
    (export_dir / "jbert.json").write_text(json.dumps(settings), encoding="utf-8")
    with pytest.raises(UserError, match=r"jbert.json changed after export .*re-export the model"):
        OnnxClassifier.from_export_dir(export_dir)
    (export_dir / "vocab.txt").unlink()
    with pytest.raises(UserError) as raised:
        OnnxClassifier.from_export_dir(export_dir)
    assert "jbert.json changed after export" in str(raised.value) and "vocab.txt is listed in" in str(raised.value)


def test_cpu_target_detection_and_the_serving_warning(model_dir, tmp_path, monkeypatch, caplog):
    assert cpu.detect_cpu_target({"avx2", "avx512f", "avx512bw", "avx512_vnni"}, "x86_64") == "avx512_vnni"
    assert cpu.detect_cpu_target({"avx2", "avx_vnni"}, "x86_64") == "avx512_vnni"  # 256-bit VNNI serves the same kernels
    assert cpu.detect_cpu_target({"avx2", "avx512f", "avx512bw"}, "x86_64") == "avx512"
    assert cpu.detect_cpu_target({"sse4_2", "avx2"}, "x86_64") == "avx2"
    assert cpu.detect_cpu_target({"sse4_2"}, "x86_64") is None
    assert cpu.detect_cpu_target(set(), "aarch64") == "arm64"
    assert cpu.missing_instructions("avx512_vnni", {"avx2"}, "x86_64") == "it was made for avx512_vnni and this CPU lacks avx512_vnni / avx_vnni"
    assert cpu.missing_instructions("avx2", {"avx2"}, "x86_64") is None

    from jbert.serve.runtime import OnnxClassifier

    export_dir = tmp_path / "onnx"
    export_model(model_dir, export_dir, ExportOptions(quantize="avx512_vnni", quantize_method="dynamic", show_progress=False))
    monkeypatch.setattr(cpu, "cpu_flags", lambda *args: {"sse4_2", "avx2"})
    with caplog.at_level(logging.WARNING, logger="jbert.serve"):
        OnnxClassifier.from_export_dir(export_dir, model="int8")
        OnnxClassifier.from_export_dir(export_dir, model="fp32")
    warnings = [r.getMessage() for r in caplog.records if "model_quantized.onnx is int8" in r.getMessage()]
    assert len(warnings) == 1 and "lacks avx512_vnni / avx_vnni" in warnings[0] and "--model fp32" in warnings[0]
