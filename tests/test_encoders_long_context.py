"""ModernBERT's long context through export and serving: a model trained at --max_length 8192 exports with
dynamic axes and its ONNX graph gives PyTorch's logits on a text of 8,192 tokens, served by the runtime.

The model is the tiny random-weight ModernBERT of tests/conftest.py (`build_family_dir`: 2 layers, hidden 32,
one global-attention and one 16-token local-attention layer, one head) with 8,192 positions;
bench/long_context.py --serving measures what such lengths cost at 512, 2,048 and 8,192 tokens.
"""

from __future__ import annotations

import numpy as np

from conftest import QUICKSTART, build_family_dir, quickstart_texts, run_training

LONG = 8192


def test_modernbert_trained_at_8192_tokens_exports_and_serves_a_text_of_8192_tokens(tmp_path):
    """Export's fp32 gate passes at max_length 8192 (manifest and jbert.json say 8192); a text of more than
    8,192 tokens is cut to exactly 8,192 by the serving tokenizer, as transformers' tokenizer cuts it, and the
    runtime's ONNX logits on it equal PyTorch's. (One forward pass each for ONNX and PyTorch at 8,192 tokens:
    most of this test's time; a short text padded into the same batch would cost several times more.)"""
    import onnxruntime
    import torch
    from transformers import AutoModelForSequenceClassification

    from jbert.core.artifacts import JbertSettings, Manifest
    from jbert.core.normalize import normalize_text
    from jbert.export import ExportOptions, export_model
    from jbert.serve.runtime import OnnxClassifier
    from jbert.tokenization import load_tokenizer

    # One attention head: an 8,192 x 8,192 score matrix per layer instead of two (the test's cost).
    base = build_family_dir(tmp_path / "base", "modernbert", max_position_embeddings=LONG, num_attention_heads=1)
    model_dir, export_dir = tmp_path / "model", tmp_path / "export"
    run_training(["--model_name_or_path", str(base), "--train_file", str(QUICKSTART / "train.csv"),
                  "--validation_file", str(QUICKSTART / "validation.csv"), "--output_dir", str(model_dir),
                  "--max_length", str(LONG), "--max_train_steps", "1", "--per_device_train_batch_size", "8",
                  "--seed", "7", "--disable_tqdm", "--baseline", "none"])
    manifest = export_model(model_dir, export_dir, ExportOptions(max_validation_texts=12, show_progress=False))
    assert manifest.max_length == LONG and Manifest.load(export_dir).models["fp32"].parity["passed"]
    session = onnxruntime.InferenceSession(str(export_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for graph_input in session.get_inputs():  # dynamic axes: batch and sequence are named, not fixed sizes
        assert all(isinstance(dim, str) for dim in graph_input.shape), (graph_input.name, graph_input.shape)

    # The training reviews four times over (about 9,000 tokens): longer than the model reads.
    long_text = "".join(quickstart_texts("train")) * 4
    classifier = OnnxClassifier.from_export_dir(export_dir, model="fp32", num_threads=1)
    assert classifier.max_length == LONG
    encoded = classifier.encode([long_text])
    assert len(encoded[0].input_ids) == LONG, "the serving tokenizer cuts at max_length, not at 512"
    assert encoded[0].truncated
    onnx_logits = classifier.run_logits(encoded)

    settings = JbertSettings.load(model_dir)
    tokenizer = load_tokenizer(str(model_dir))
    reference = tokenizer([normalize_text(long_text, settings.normalization)], truncation=True, max_length=LONG,
                          return_tensors="pt")
    assert reference["input_ids"][0].tolist() == list(encoded[0].input_ids)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.inference_mode():
        torch_logits = model(**reference).logits.numpy()
    np.testing.assert_allclose(onnx_logits, torch_logits, atol=1e-4)  # export's fp32 gate tolerance
    assert classifier.labels[int(onnx_logits.argmax())] == model.config.id2label[int(torch_logits.argmax())]
