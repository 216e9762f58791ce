"""Every encoder family end to end: ModernBERT, DeBERTa-v3, XLM-RoBERTa, RoBERTa and ELECTRA.

Tiny random models (2 layers, hidden 32) with Unigram tokenizers trained here on the shipped Japanese
reviews (data/quickstart) and saved with save_pretrained (conftest.py: base_dirs, build_family_dir): nothing
is downloaded. The full path is train.py's code -> export (fp32 parity gate, O3, dynamic int8 gate)
-> the torch-free runtime and HTTP (every family), Ray (XLM-R, RoBERTa, ELECTRA) and torch-free batch
scoring (the first three); the serving tokenizer must give transformers' ids on real Japanese sentences
(../shared/data when present, the shipped test texts otherwise).
docs/encoders.md names these tests in its support matrix (tests/test_encoders_matrix.py checks it).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import FULL_PATH_FAMILIES, QUICKSTART, REPO_ROOT, real_sentences, run_training

sys.path.insert(0, str(REPO_ROOT / "bench"))
from builders.encoder_families import FAMILIES  # noqa: E402

from jbert.core.artifacts import Manifest  # noqa: E402
from jbert.export import ExportOptions, export_model  # noqa: E402

FULL_PATH = FULL_PATH_FAMILIES  # train -> export -> int8 -> serve (-> batch scoring without torch)
SERVED = FULL_PATH + ["roberta", "electra"]  # train -> export -> O2/O3 -> int8 -> runtime and HTTP
TOKENIZER_FAMILIES = ["modernbert", "deberta-v2", "xlm-roberta", "roberta", "electra"]
# What Optimum's ONNX config of each family takes (DeBERTa-v3: type_vocab_size 0, no token types).
GRAPH_INPUTS = {
    "modernbert": ["input_ids", "attention_mask"],
    "deberta-v2": ["input_ids", "attention_mask"],
    "xlm-roberta": ["input_ids", "attention_mask"],
    "roberta": ["input_ids", "attention_mask"],
    "electra": ["input_ids", "token_type_ids", "attention_mask"],
}


@pytest.fixture(scope="module")
def full_path(base_dirs, tmp_path_factory):
    """family -> (model_dir, export_dir, manifest): train.py's loop, then export with dynamic int8."""
    root = tmp_path_factory.mktemp("full-path")
    done: dict[str, tuple] = {}

    def get(family: str):
        if family not in done:
            model_dir = root / family / "model"
            run_training([
                "--model_name_or_path", str(base_dirs(family)), "--train_file", str(QUICKSTART / "train.csv"),
                "--validation_file", str(QUICKSTART / "validation.csv"), "--output_dir", str(model_dir),
                "--max_length", "48", "--max_train_steps", "2", "--per_device_train_batch_size", "8",
                "--learning_rate", "1e-3", "--seed", "7", "--disable_tqdm", "--baseline", "none",
            ])
            export_dir = root / family / "export"
            # O3 (every fusion onnxruntime has for the family, approximate GELU) passes the same gate as fp32.
            # --quantize auto (this CPU's target); DeBERTa runs the whole int8 search, which skips static
            # int8 for its graph (subgraphs), the others one dynamic recipe to keep the suite short.
            method = "auto" if family == "deberta-v2" else "dynamic"
            manifest = export_model(model_dir, export_dir, ExportOptions(
                optimize="O3", quantize="auto", quantize_method=method, max_validation_texts=24, show_progress=False))
            done[family] = (model_dir, export_dir, manifest)
        return done[family]

    return get


# ------------------------------------------------------------------------------ serving tokenizer


@pytest.mark.parametrize("family", TOKENIZER_FAMILIES)
def test_serving_tokenizer_gives_transformers_ids_on_real_japanese(base_dirs, family):
    """The torch-free tokenizer (tokenizers' tokenizer.json) against transformers' PreTrainedTokenizerFast:
    single texts and pairs, with truncation at 32 tokens, on real sentences."""
    from transformers import AutoTokenizer

    from jbert.tokenization import load_serving_tokenizer

    directory = base_dirs(family)
    sentences = real_sentences()
    reference = AutoTokenizer.from_pretrained(directory)
    serving = load_serving_tokenizer(directory)
    assert serving.is_fast
    pairs = sentences[1:] + sentences[:1]
    for text_pairs in (None, pairs):
        expected = reference(sentences, text_pairs, truncation=True, max_length=32, return_token_type_ids=True)
        got = serving.encode_batch(sentences, text_pairs, max_length=32)
        assert [list(e.input_ids) for e in got] == expected["input_ids"]
        assert [list(e.token_type_ids) for e in got] == expected["token_type_ids"]
    assert serving.pad_token_id == reference.pad_token_id
    # The family's own special tokens frame every text (not BERT's by accident).
    assert got[0].input_ids[0] == reference.convert_tokens_to_ids(FAMILIES[family].specials.get("cls_token", "<s>"))


# ------------------------------------------------------------------------------ the full path


@pytest.mark.parametrize("family", SERVED)
def test_train_export_int8_and_serve(full_path, family):
    """train -> export: fp32 logits equal PyTorch's within --atol, int8 passes the gate, the manifest
    names exactly the graph's inputs; the runtime and the HTTP service give the int8 gate's labels."""
    from fastapi.testclient import TestClient

    from jbert.serve.http.app import create_app
    from jbert.serve.runtime import OnnxClassifier

    model_dir, export_dir, manifest = full_path(family)
    loaded = Manifest.load(export_dir)
    assert loaded.validation["inputs"] == GRAPH_INPUTS[family]
    assert loaded.validation["serving_tokenizer"]["identical_ids"] is True
    fp32 = loaded.models["fp32"].parity
    assert fp32["passed"] and fp32["compared_with"] == "pytorch"
    assert fp32["max_abs_diff"] <= fp32["atol"] and fp32["label_agreement"] == 1.0
    optimized = loaded.models["optimized"].parity
    assert optimized["passed"] and optimized["max_abs_diff"] <= optimized["atol"] and loaded.models["optimized"].optimization == "O3"
    int8 = loaded.models["int8"].parity
    assert int8["passed"] and int8["agreement"] >= int8["min_agreement"]
    assert loaded.quantization["target_source"].startswith("detected")
    assert {c["method"] for c in loaded.quantization["candidates"]} == {"dynamic"}
    if family == "deberta-v2":
        assert loaded.quantization["method"] == "auto"
        assert "subgraphs (If, from the deberta-v2 architecture)" in loaded.quantization["calibration"]["source"]
    assert loaded.default_model == "int8"

    texts = real_sentences(60)
    classifiers = {key: OnnxClassifier.from_export_dir(export_dir, model=key, num_threads=1) for key in ("fp32", "int8")}
    served = {key: classifier.predict(texts) for key, classifier in classifiers.items()}
    pytorch_labels = _pytorch_labels(model_dir, texts, loaded.max_length)
    assert [row["label"] for row in served["fp32"]] == pytorch_labels
    agreement = np.mean([a["label"] == b["label"] for a, b in zip(served["int8"], served["fp32"])])
    assert agreement >= int8["min_agreement"] - 1 / len(texts)  # the gate's figure, on other texts

    with TestClient(create_app(classifiers["int8"])) as client:
        response = client.post("/v1/predict", json={"inputs": texts[:8]})
    assert response.status_code == 200
    assert [row["label"] for row in response.json()] == [row["label"] for row in served["int8"][:8]]


def _pytorch_labels(model_dir: Path, texts: list[str], max_length: int) -> list[str]:
    """Labels of the PyTorch model on TEXTS normalised and tokenized as training did (the reference)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from jbert.core.artifacts import JbertSettings
    from jbert.core.normalize import normalize_text
    from jbert.tokenization import load_tokenizer

    settings = JbertSettings.load(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    encoded = tokenizer([normalize_text(t, settings.normalization) for t in texts], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
    with torch.inference_mode():
        logits = model(**encoded).logits
    return [model.config.id2label[int(i)] for i in logits.argmax(-1)]


def test_batch_scoring_of_every_family_runs_without_torch(full_path, tmp_path):
    """`serve_onnx.py score` in a fresh interpreter where importing torch fails: the rows of every
    full-path family's export carry the runtime's labels."""
    from jbert.serve.runtime import OnnxClassifier

    texts = real_sentences(20)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    jobs, expected = [], {}
    for family in FULL_PATH:
        export_dir = full_path(family)[1]
        jobs.append((str(export_dir), str(source), str(tmp_path / f"{family}.jsonl")))
        expected[family] = [row["label"] for row in OnnxClassifier.from_export_dir(export_dir, num_threads=1).predict(texts)]
    code = (
        "import sys, json\n"
        "sys.modules['torch'] = None  # any import of torch now fails\n"
        "from jbert.serve.cli import main\n"
        f"for export, source, output in {jobs!r}:\n"
        "    main(['score', export, source, output, '--num-threads', '1'])\n"
        "print('LOADED', sorted(m for m in ('torch', 'transformers') if sys.modules.get(m)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "LOADED []" in done.stdout
    for family in FULL_PATH:
        rows = [json.loads(line) for line in (tmp_path / f"{family}.jsonl").read_text(encoding="utf-8").splitlines()]
        assert [row["predicted_label"] for row in rows] == expected[family], family


@pytest.mark.parametrize("family", SERVED)
def test_optimisation_level_o2_keeps_the_fp32_logits(full_path, tmp_path, family):
    """O2 on the family's fp32 graph (O3, a superset of its fusions, went through export's own gate in the
    full path; O1 is a subset of O2's, left out of the default suite for time)."""
    import onnxruntime

    from jbert.export.optimize import optimize_graph
    from jbert.serve.runtime import OnnxClassifier

    export_dir = full_path(family)[1]
    work = tmp_path / "work"
    work.mkdir()
    for name in ("model.onnx", "config.json"):
        shutil.copy2(export_dir / name, work / name)
    optimize_graph(work, "O2")
    classifier = OnnxClassifier.from_export_dir(export_dir, model="fp32", num_threads=1)
    feeds = classifier.pad(classifier.encode(real_sentences(16)))
    logits = {}
    for name in ("model.onnx", "model_optimized.onnx"):
        session = onnxruntime.InferenceSession(str(work / name), providers=["CPUExecutionProvider"])
        logits[name] = session.run(["logits"], feeds)[0]
    np.testing.assert_allclose(logits["model_optimized.onnx"], logits["model.onnx"], atol=1e-4)


@pytest.mark.parametrize("family", TOKENIZER_FAMILIES)
def test_masked_lm_continues_pretraining(base_dirs, tmp_path, family):
    """--task mlm on the family's own masked-LM head (AutoModelForMaskedLM), one optimizer step."""
    output = tmp_path / "mlm"
    run_training([
        "--task", "mlm", "--model_name_or_path", str(base_dirs(family)), "--train_file", str(QUICKSTART / "train.csv"),
        "--output_dir", str(output), "--max_length", "32", "--max_train_steps", "1", "--per_device_train_batch_size", "8",
        "--validation_split", "0.1", "--seed", "7", "--disable_tqdm",
    ])
    config = json.loads((output / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == family and config["architectures"][0].endswith("ForMaskedLM")
    assert (output / "model.safetensors").is_file() and (output / "tokenizer.json").is_file()


# Each family trains one more task than the full path's single-label one, exported fp32 (int8 is the
# full path's; a random-weight model's multi-label sigmoids sit on the threshold, where int8 flips them).
VARIANTS = {
    "deberta-v2": "pair",  # its tokenizer gives the second text type id 1; the graph takes no token types
    "electra": "pair",  # takes token_type_ids: the one family here that is fed them
    "modernbert": "regression",
    "xlm-roberta": "multi_label",
    "roberta": "single_label",
}


def _variant_file(directory: Path, task: str) -> list[str]:
    """A CSV of the quickstart reviews for TASK and the train.py flags that read it."""
    import random

    rng = random.Random(0)
    with open(QUICKSTART / "train.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))[:96]
    names = sorted({row["label"] for row in rows})
    path = directory / f"{task}.csv"
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "text_pair", "label"])
        for row in rows:
            label = {"pair": rng.choice(["entailment", "neutral", "contradiction"]),
                     "regression": names.index(row["label"]) + round(rng.random(), 2),
                     "multi_label": "|".join(rng.sample(["food", "service", "price"], rng.randint(1, 2))),
                     "single_label": row["label"]}[task]
            writer.writerow([row["text"], rng.choice(rows)["text"], label])
    flags = {"pair": ["--text_pair_column", "text_pair"], "regression": ["--task", "regression"],
             "multi_label": ["--label_delimiter", "|"], "single_label": []}[task]
    return ["--train_file", str(path), *flags]


@pytest.mark.parametrize("family", list(VARIANTS))
def test_each_task_trains_and_exports(base_dirs, tmp_path, family):
    """Pairs, regression, multi-label and RoBERTa / ELECTRA: train.py's loop, then the fp32 gate."""
    task = VARIANTS[family]
    model_dir = tmp_path / "model"
    run_training(["--model_name_or_path", str(base_dirs(family)), *_variant_file(tmp_path, task),
                  "--output_dir", str(model_dir), "--max_length", "48", "--max_train_steps", "1",
                  "--per_device_train_batch_size", "8", "--seed", "7", "--disable_tqdm", "--baseline", "none"])
    manifest = export_model(model_dir, tmp_path / "export", ExportOptions(max_validation_texts=12, show_progress=False))
    assert manifest.is_pair == (task == "pair")
    assert manifest.validation["inputs"] == GRAPH_INPUTS[family]
    fp32 = manifest.models["fp32"].parity
    assert fp32["passed"] and fp32["max_abs_diff"] <= fp32["atol"]
    expected_task = {"pair": "single_label_classification", "single_label": "single_label_classification",
                     "regression": "regression", "multi_label": "multi_label_classification"}[task]
    assert manifest.task == expected_task
    if task == "pair" and family == "deberta-v2":
        # The tokenizer's token_type_ids (1 on the second text) were left out, and PyTorch, given them, agreed.
        assert manifest.validation["tokenizer_outputs_not_fed"] == ["token_type_ids"]


def test_ray_scores_an_export_without_token_type_ids_like_the_local_scorer(full_path, tmp_path):
    """--engine ray (a local Ray, 2 CPUs) on the XLM-R, RoBERTa and ELECTRA exports (XLM-R and RoBERTa take two
    inputs, like ModernBERT's and DeBERTa-v3's graphs; ELECTRA three, with its token types), one Ray start for all
    (it costs many seconds; tests/test_ray_scoring.py covers the engine): the local scorer's labels, row for row."""
    pytest.importorskip("ray")
    import ray

    from jbert.serve.scoring.options import ScoreOptions
    from jbert.serve.scoring.run import score_file

    texts = real_sentences(24)
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        for family in ["xlm-roberta", "roberta", "electra"]:
            export_dir = full_path(family)[1]
            common = dict(export_dir=str(export_dir), input=str(source), num_threads=1, show_progress=False, batch_size=8)
            score_file(ScoreOptions(output=str(tmp_path / f"{family}-ray"), engine="ray", num_workers=1, **common))
            score_file(ScoreOptions(output=str(tmp_path / f"{family}.jsonl"), **common))
            local = [json.loads(line) for line in (tmp_path / f"{family}.jsonl").read_text(encoding="utf-8").splitlines()]
            import pyarrow.parquet as pq

            remote = [row for shard in sorted((tmp_path / f"{family}-ray").glob("part-*.parquet"))
                      for row in pq.read_table(shard).to_pylist()]
            assert [r["predicted_label"] for r in remote] == [r["predicted_label"] for r in local], family
            assert len(remote) == len(texts)
    finally:
        ray.shutdown()
