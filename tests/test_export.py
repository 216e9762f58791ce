"""Export: Optimum ONNX export, optimisation, int8 quantisation, parity checks, bad input.

Every test builds tiny models (2 layers, hidden 32) with conftest; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import json
import os
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from conftest import make_tiny_model_dir
from jbert.export import cli as export_cli
from jbert.export import manifest as manifest_step
from jbert.export import onnx_export, quantize, texts
from jbert.core.cli import options_from_args
from jbert.core.artifacts import EXAMPLES_FILE, MANIFEST_FILE, SETTINGS_FILE, JbertSettings, Manifest
from jbert.core.errors import UserError, ValidationError, run_cli
from jbert.export import ExportOptions, export_model
from jbert.core.normalize import normalize_text

TASKS = {
    "single_label": dict(problem_type="single_label_classification"),
    "multi_label": dict(problem_type="multi_label_classification", labels=("food", "service", "price")),
    "regression": dict(problem_type="regression"),
    "pair": dict(problem_type="single_label_classification", labels=("entailment", "contradiction", "neutral"), text_pair=True),
}


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """One tiny model directory per task, shared by the tests of this module (they only read it)."""
    root = tmp_path_factory.mktemp("models")
    return {name: make_tiny_model_dir(root / name, **kwargs) for name, kwargs in TASKS.items()}


def _examples(model_dir: Path) -> list[dict]:
    lines = (model_dir / EXAMPLES_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _pytorch_and_onnx_logits(model_dir: Path, export_dir: Path, file_name: str):
    """Independent check: tokenize the fixture texts, pad them into one batch, run both runtimes."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    settings = JbertSettings.load(model_dir)
    examples = _examples(model_dir)
    texts = [normalize_text(e["text"], settings.normalization) for e in examples]
    pairs = [normalize_text(e["text_pair"], settings.normalization) for e in examples] if settings.is_pair else None
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    encoded = tokenizer(texts, pairs, padding=True, truncation=True, max_length=settings.max_length, return_tensors="np")
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        expected = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in encoded.items()}).logits.numpy()
    session = onnxruntime.InferenceSession(str(export_dir / file_name), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {k: v.astype(np.int64) for k, v in encoded.items()})[0]
    return expected, got


@pytest.mark.parametrize("task", list(TASKS))
def test_every_task_exports_optimises_quantises_and_matches_pytorch(model_dirs, tmp_path, task):
    model_dir = model_dirs[task]
    export_dir = tmp_path / "onnx"
    manifest = export_model(model_dir, export_dir, ExportOptions(optimize="O2", quantize="avx512_vnni", show_progress=False))

    assert sorted(p.name for p in export_dir.glob("*.onnx")) == ["model.onnx", "model_optimized.onnx", "model_quantized.onnx"]
    for name in ("config.json", "vocab.txt", "tokenizer_config.json", SETTINGS_FILE, MANIFEST_FILE):
        assert (export_dir / name).is_file(), name
    assert not [p for p in export_dir.iterdir() if p.name.startswith(".")]  # no scratch dirs left
    assert json.loads((export_dir / SETTINGS_FILE).read_text()) == json.loads((model_dir / SETTINGS_FILE).read_text())

    loaded = Manifest.load(export_dir)
    assert loaded.to_dict() == manifest.to_dict()
    assert loaded.task == TASKS[task]["problem_type"]
    assert loaded.default_model == "int8"
    assert loaded.is_pair == (task == "pair")
    assert loaded.max_length == 64
    assert loaded.opset == 18
    assert loaded.versions["onnxruntime"] == onnxruntime.__version__
    assert loaded.validation["tokenizer_reload_identical"] is True
    assert loaded.validation["serving_tokenizer"]["identical_ids"] is True
    assert loaded.validation["inputs"] == ["input_ids", "token_type_ids", "attention_mask"]
    assert set(loaded.source["files"]) >= {"model.safetensors", "config.json", "vocab.txt", SETTINGS_FILE}
    config = json.loads((export_dir / "config.json").read_text())
    if task != "regression":
        assert list(config["id2label"].values()) == list(TASKS[task].get("labels", ("negative", "neutral", "positive")))
        assert loaded.labels == list(config["id2label"].values())

    n_texts = len(_examples(model_dir)) + 1  # + the joined long text
    for key in ("fp32", "optimized"):
        parity = loaded.models[key].parity
        assert parity["passed"] and parity["compared_with"] == "pytorch"
        assert parity["n_texts"] == n_texts and parity["batch_sizes"] == [1, n_texts]
        assert parity["max_abs_diff"] <= 1e-4
        if task != "regression":
            assert parity["label_agreement"] == 1.0
    int8 = loaded.models["int8"]
    assert int8.precision == "int8" and int8.quantization["source"] == "model.onnx"
    assert int8.quantization["quantize_ops"] == "all" and "Gather" in int8.quantization["operators"]
    # The default quantises the embedding tables too (compare test_quantize_ops_matmul_keeps_embeddings_fp32).
    int8_initializers = {t.name for t in onnx.load(str(export_dir / "model_quantized.onnx")).graph.initializer}
    assert "bert.embeddings.word_embeddings.weight_quantized" in int8_initializers
    assert int8.parity["compared_with"] == "fp32"
    assert loaded.models["optimized"].optimization == "O2"
    for entry in loaded.models.values():
        path = export_dir / entry.file
        assert entry.size_bytes == path.stat().st_size
        assert entry.sha256 == manifest_step.sha256_file(path)

    # Inputs: all three BERT inputs, int64, dynamic batch and sequence axes; output: logits.
    graph = onnx.load(str(export_dir / "model.onnx"))
    inputs = {i.name: i for i in graph.graph.input}
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids"}
    for tensor in inputs.values():
        assert tensor.type.tensor_type.elem_type == onnx.TensorProto.INT64
        assert all(dim.dim_param for dim in tensor.type.tensor_type.shape.dim)
    assert [o.name for o in graph.graph.output] == ["logits"]

    for file_name in ("model.onnx", "model_optimized.onnx"):
        expected, got = _pytorch_and_onnx_logits(model_dir, export_dir, file_name)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "options",
    [
        dict(optimize="O1"),
        dict(optimize="O3"),
        dict(quantize="avx2"),
        dict(quantize="avx2", reduce_range=True, per_channel=True),
        dict(quantize="avx512", reduce_range=True),
        dict(quantize="arm64", per_channel=True),
        dict(optimize="O3", quantize="arm64"),
        dict(optimize="O1", quantize="avx512_vnni", per_channel=True, default_model="optimized"),
    ],
    ids=lambda options: "-".join(f"{k}={v}" for k, v in options.items()),
)
def test_each_offered_optimisation_and_quantisation_combination_works(model_dirs, tmp_path, options):
    # One fixed recipe each (--quantize_method dynamic); the search over recipes is tests/test_quantize.py's.
    method = {"quantize_method": "dynamic"} if "quantize" in options else {}
    manifest = export_model(model_dirs["single_label"], tmp_path / "onnx", ExportOptions(show_progress=False, **method, **options))
    expected_keys = ["fp32"] + (["optimized"] if "optimize" in options else []) + (["int8"] if "quantize" in options else [])
    assert list(manifest.models) == expected_keys
    assert manifest.default_model == options.get("default_model", expected_keys[-1])
    if "quantize" in options:
        record = manifest.models["int8"].quantization
        assert record["target"] == options["quantize"]
        assert record["per_channel"] == options.get("per_channel", False)
        assert record["reduce_range"] == options.get("reduce_range", False)
        session = onnxruntime.InferenceSession(str(tmp_path / "onnx" / "model_quantized.onnx"), providers=["CPUExecutionProvider"])
        assert {i.name for i in session.get_inputs()} == {"input_ids", "attention_mask", "token_type_ids"}
        assert manifest.models["int8"].parity["label_agreement"] >= 0.99
    if "optimize" in options:
        assert manifest.models["optimized"].parity["max_abs_diff"] <= 1e-4


def test_ort_model_and_pipeline_load_the_export_and_agree_with_pytorch(model_dirs, tmp_path):
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    model_dir = model_dirs["single_label"]
    export_dir = tmp_path / "onnx"
    export_model(model_dir, export_dir, ExportOptions(quantize="avx2", show_progress=False))
    texts = [e["text"] for e in _examples(model_dir)]
    tokenizer = AutoTokenizer.from_pretrained(export_dir)
    encoded = tokenizer(texts, padding=True, return_tensors="pt")
    torch_model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        expected_ids = torch_model(**encoded).logits.argmax(-1).tolist()

    ort_model = ORTModelForSequenceClassification.from_pretrained(export_dir, file_name="model.onnx")
    ort_logits = ort_model(**encoded).logits
    assert ort_logits.argmax(-1).tolist() == expected_ids
    with torch.inference_mode():
        np.testing.assert_allclose(ort_logits.numpy(), torch_model(**encoded).logits.numpy(), atol=1e-4, rtol=0)

    classifier = pipeline("text-classification", model=ort_model, tokenizer=tokenizer)
    id2label = torch_model.config.id2label
    assert [result["label"] for result in classifier(texts)] == [id2label[i] for i in expected_ids]

    # jbert's own torch-free runtime reads the manifest and serves the same labels.
    from jbert.serve.runtime import OnnxClassifier

    runtime = OnnxClassifier.from_export_dir(export_dir, model="fp32")
    assert [result["label"] for result in runtime.predict(texts)] == [id2label[i] for i in expected_ids]


def _corrupt_classifier_after_export(monkeypatch):
    """Make the exported graph differ from PyTorch: shift the classifier bias inside model.onnx."""
    real_export = onnx_export.export_fp32

    def export_then_alter_weights(model_dir, work_dir, opset):
        real_export(model_dir, work_dir, opset)
        path = Path(work_dir) / "model.onnx"
        graph = onnx.load(str(path))
        bias = next(t for t in graph.graph.initializer if t.name == "classifier.bias")
        values = onnx.numpy_helper.to_array(bias).copy()
        values[0] += 0.5
        bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
        onnx.save(graph, str(path))

    monkeypatch.setattr(onnx_export, "export_fp32", export_then_alter_weights)


def test_altered_weights_fail_validation_exit_1_and_leave_no_directory(model_dirs, tmp_path, monkeypatch, capsys):
    _corrupt_classifier_after_export(monkeypatch)
    export_dir = tmp_path / "onnx"
    code = run_cli(export_cli.main, [str(model_dirs["single_label"]), str(export_dir), "--optimize", "O2", "--quiet"])
    assert code == 1
    message = capsys.readouterr().err
    assert "fp32 (model.onnx) vs PyTorch: max |logit diff| 0.5" in message
    assert "optimized (model_optimized.onnx) vs PyTorch" in message
    assert "nothing was written" in message
    assert not export_dir.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary directory is gone too


def test_failed_overwrite_keeps_the_previous_export(model_dirs, tmp_path, monkeypatch):
    export_dir = tmp_path / "onnx"
    export_model(model_dirs["single_label"], export_dir, ExportOptions(show_progress=False))
    before = {p.name: p.read_bytes() for p in export_dir.iterdir()}
    _corrupt_classifier_after_export(monkeypatch)
    with pytest.raises(ValidationError, match="max \\|logit diff\\|"):
        export_model(model_dirs["single_label"], export_dir, ExportOptions(overwrite=True, show_progress=False))
    assert {p.name: p.read_bytes() for p in export_dir.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["onnx"]


def test_int8_below_min_agreement_fails_with_the_candidates_table(model_dirs, tmp_path, monkeypatch, capsys):
    """int8 is judged by agreement with fp32: int8 graphs forced to one wrong class fail, listing every candidate."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model_dir = model_dirs["single_label"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    with torch.inference_mode():
        first_logits = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()(
            **tokenizer(_examples(model_dir)[0]["text"], return_tensors="pt")).logits[0]
    wrong_class = int(first_logits.argmin())
    real_quantize = quantize.quantize_dynamic

    def quantize_then_flip(fp32_path, output_path, *args):
        real_quantize(fp32_path, output_path, *args)
        graph = onnx.load(str(output_path))
        bias = next(t for t in graph.graph.initializer if t.name == "classifier.bias")
        values = onnx.numpy_helper.to_array(bias).copy()
        values[:] = -50.0
        values[wrong_class] = 50.0  # int8 now always predicts a class fp32 does not give text 0
        bias.CopyFrom(onnx.numpy_helper.from_array(values, bias.name))
        onnx.save(graph, str(output_path))

    monkeypatch.setattr(quantize, "quantize_dynamic", quantize_then_flip)
    export_dir = tmp_path / "onnx"
    code = run_cli(export_cli.main, [str(model_dir), str(export_dir), "--quantize", "avx2", "--quiet"])
    message = capsys.readouterr().err
    assert code == 1
    assert "no int8 candidate agrees with fp32 on at least 99.00% of the 4 held-out texts" in message
    # Without calibration texts the search tries dynamic int8 per tensor and per channel, then
    # dynamic matmul-only per channel; ranking nodes to exclude needs a calibrated model.
    rows = [line for line in message.splitlines() if line.startswith("dynamic")]
    assert [row.split()[0] for row in rows] == ["dynamic-per_tensor", "dynamic", "dynamic-matmul"]
    assert all("below --min_agreement" in row for row in rows)
    assert "--calibration_file" in message and "nothing was written" in message
    assert not export_dir.exists() and list(tmp_path.iterdir()) == []


def test_quantize_ops_matmul_keeps_embeddings_fp32(model_dirs, tmp_path):
    """--quantize_ops matmul: every MatMul is int8, the embedding tables stay float, agreement is reported."""
    export_dir = tmp_path / "onnx"
    manifest = export_model(model_dirs["single_label"], export_dir, ExportOptions(quantize="avx512_vnni", per_channel=True,
                            quantize_ops="matmul", show_progress=False))
    int8 = Manifest.load(export_dir).models["int8"]
    assert int8.quantization["quantize_ops"] == "matmul"
    assert int8.quantization["operators"] == ["MatMul", "Attention"] and int8.quantization["per_channel"] is True
    assert int8.parity["passed"] and int8.parity["label_agreement"] == 1.0
    assert int8.parity["n_texts"] == len(_examples(model_dirs["single_label"])) + 1

    graph = onnx.load(str(export_dir / "model_quantized.onnx")).graph
    op_types = [node.op_type for node in graph.node]
    fp32_matmuls = [node.op_type for node in onnx.load(str(export_dir / "model.onnx")).graph.node].count("MatMul")
    # Every dense layer is int8 (the quantiser also turns 2-D Gemm layers into MatMulInteger).
    assert op_types.count("MatMulInteger") >= fp32_matmuls > 0 and "MatMul" not in op_types and "Gemm" not in op_types
    assert "DequantizeLinear" not in op_types  # a quantised Gather reads int8 rows and dequantises them
    initializers = {t.name: t.data_type for t in graph.initializer}
    for table in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        assert initializers[f"bert.embeddings.{table}.weight"] == onnx.TensorProto.FLOAT, table
        assert f"bert.embeddings.{table}.weight_quantized" not in initializers, table
    # Larger than the all-ops file (embeddings in fp32) yet smaller than fp32.
    assert manifest.models["int8"].size_bytes < manifest.models["fp32"].size_bytes


def test_validation_file_with_labels_gives_accuracy(model_dirs, tmp_path, caplog):
    from transformers import AutoConfig

    validation_file = tmp_path / "dev.csv"
    rows = ["text,label"] + [f"{e['text']},{e['label']}" for e in _examples(model_dirs["single_label"])]
    rows.append("今日の天気は晴れ,sideways")  # not a label of the model: counted out of accuracy, with a warning
    rows.append("\uff21\uff22\uff23の商品は最高です,positive")  # full-width: normalised like training
    validation_file.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="jbert.export"):
        manifest = export_model(model_dirs["single_label"], tmp_path / "onnx", ExportOptions(quantize="avx2", validation_file=validation_file, show_progress=False))
    assert "1 label(s) in the validation file" in caplog.text and "'sideways'" in caplog.text
    assert manifest.validation["source"] == f"validation file {validation_file}"
    assert manifest.validation["n_texts"] == 7
    fp32, int8 = manifest.models["fp32"].parity, manifest.models["int8"].parity
    assert fp32["n_labelled"] == 5 and 0 <= fp32["accuracy_pytorch"] <= 1
    assert fp32["accuracy_pytorch"] == fp32["accuracy_fp32"]
    assert int8["accuracy_fp32"] == fp32["accuracy_fp32"] and "accuracy_int8" in int8

    examples, _ = texts.load_validation_examples(
        model_dirs["single_label"], JbertSettings.load(model_dirs["single_label"]),
        AutoConfig.from_pretrained(model_dirs["single_label"]), validation_file,
    )
    assert examples[-1].text == "ABCの商品は最高です" and examples[-1].label == 2


def test_plain_hugging_face_directory_uses_builtin_texts_and_gets_settings(model_dirs, tmp_path):
    plain = tmp_path / "plain"
    shutil.copytree(model_dirs["multi_label"], plain)
    (plain / SETTINGS_FILE).unlink()
    (plain / EXAMPLES_FILE).unlink()
    manifest = export_model(plain, tmp_path / "onnx", ExportOptions(show_progress=False))
    assert manifest.validation["source"] == "built-in sentences"
    assert manifest.validation["n_texts"] == len(texts.BUILTIN_TEXTS) + 1
    settings = JbertSettings.load(tmp_path / "onnx")
    assert settings.problem_type == "multi_label_classification"
    assert settings.max_length == manifest.max_length == 64  # the model's position limit


def test_cli_flags_come_from_export_options():
    """One source of options: every ExportOptions field is a flag with help and the same default."""
    parser = export_cli.build_parser()
    args = parser.parse_args(["m", "e"])
    assert list(inspect.signature(export_model).parameters) == ["model_dir", "export_dir", "options"]
    for option in dataclasses.fields(ExportOptions):
        assert getattr(args, option.name) == option.default, option.name
        assert option.metadata["help"].endswith((".", ")")), option.name
    assert options_from_args(ExportOptions, args) == ExportOptions()
    args = parser.parse_args(["m", "e", "--min-agreement", "0.9", "--per-channel", "--quiet", "--reduce_range", "--quantize-ops", "matmul"])
    assert (args.min_agreement, args.per_channel, args.show_progress, args.reduce_range, args.quantize_ops) == (0.9, True, False, True, "matmul")


def _run(argv, capsys) -> tuple[int, str]:
    code = run_cli(export_cli.main, [str(a) for a in argv])
    return code, capsys.readouterr().err


def test_bad_input_exits_2_with_a_clear_message(model_dirs, tmp_path, capsys, monkeypatch):
    model_dir = model_dirs["single_label"]
    out = tmp_path / "out"

    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "notes.txt").write_text("hello")
    code, err = _run([not_a_model, out], capsys)
    assert code == 2 and "is not a model directory (no config.json)" in err

    code, err = _run([tmp_path / "missing", out], capsys)
    assert code == 2 and "does not exist" in err

    no_tokenizer = tmp_path / "no_tokenizer"
    shutil.copytree(model_dir, no_tokenizer)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (no_tokenizer / name).unlink()
    code, err = _run([no_tokenizer, out], capsys)
    assert code == 2 and "has no tokenizer files" in err and "save_pretrained" in err

    # ipadic is not installed here; a dictionary directory that does not exist fails the same way.
    for name, mecab_kwargs, expected in (
        ("missing_ipadic", {"mecab_dic": "ipadic"}, "pip install ipadic"),
        ("missing_dic_dir", {"mecab_dic": None, "mecab_option": f"-d {tmp_path / 'no_such_dictionary'}"}, "no_such_dictionary"),
    ):
        if name == "missing_ipadic" and importlib.util.find_spec("ipadic") is not None:
            (tmp_path / name).mkdir()  # installed here: nothing to test, keep the directory listing below
            continue
        broken = tmp_path / name
        shutil.copytree(model_dir, broken)
        config_path = broken / "tokenizer_config.json"
        tokenizer_config = json.loads(config_path.read_text())
        tokenizer_config["mecab_kwargs"] = mecab_kwargs
        config_path.write_text(json.dumps(tokenizer_config))
        code, err = _run([broken, out], capsys)
        assert code == 2 and "MeCab" in err and expected in err, err

    non_empty = tmp_path / "non_empty"
    non_empty.mkdir()
    (non_empty / "keep.txt").write_text("mine")
    code, err = _run([model_dir, non_empty], capsys)
    assert code == 2 and "is not empty; pass --overwrite" in err
    assert (non_empty / "keep.txt").read_text() == "mine"

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, err = _run([model_dir, a_file / "onnx"], capsys)
    assert code == 2 and "is a file" in err

    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: False if Path(path) == tmp_path else real_access(path, mode, **kw))
    code, err = _run([model_dir, tmp_path / "new_dir"], capsys)
    monkeypatch.setattr(os, "access", real_access)
    assert code == 2 and "permission denied" in err

    code, err = _run([model_dir, out, "--quantize", "avx9000"], capsys)
    assert code == 2 and "--quantize 'avx9000' is not a known target" in err and "avx512_vnni" in err

    code, err = _run([model_dir, out, "--optimize", "O4", "--quantize", "arm64", "--reduce_range", "--atol", "0"], capsys)
    assert code == 2
    assert "--optimize O4 is fp16" in err and "--reduce_range does not apply to --quantize arm64" in err and "--atol must be positive" in err

    bad_columns = tmp_path / "bad_columns.csv"
    bad_columns.write_text("Text,label\nこの商品は良い,positive\n", encoding="utf-8")
    code, err = _run([model_dir, out, "--validation_file", bad_columns], capsys)
    assert code == 2 and "lacks the column(s) ['text']" in err and "did you mean 'Text'" in err

    pair_without_pair_column = tmp_path / "pairs.jsonl"
    pair_without_pair_column.write_text(json.dumps({"text": "今日は雨", "label": "neutral"}, ensure_ascii=False) + "\n", encoding="utf-8")
    code, err = _run([model_dirs["pair"], out, "--validation_file", pair_without_pair_column], capsys)
    assert code == 2 and "['text_pair']" in err

    code, err = _run([model_dir, model_dir, "--overwrite"], capsys)
    assert code == 2 and "is (or contains) the model directory" in err

    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["notes", "no_tokenizer", "missing_ipadic", "missing_dic_dir", "non_empty", "a_file", "bad_columns.csv", "pairs.jsonl"]
    )


def test_options_validation_lists_every_problem():
    with pytest.raises(UserError) as error:
        ExportOptions(per_channel=True, min_agreement=1.5, opset=9, default_model="int8", quantize_ops="matmul").validate()
    message = str(error.value)
    with pytest.raises(UserError, match="--quantize_ops 'gather' is not a choice; choose one of all, matmul"):
        ExportOptions(quantize="avx2", quantize_ops="gather").validate()
    for expected in ("--quantize_ops matmul only applies to int8", "--per_channel only applies", "--min_agreement must be between 0 and 1", "--opset must be between 14", "--default_model int8 is not being made"):
        assert expected in message
