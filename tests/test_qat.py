"""--qat: the last epochs train with fake int8; the saved weights lie on the grid export's int8 uses.

The claim on real weights (a fully int8 MiniLM that passes the gate) is measured in bench/qat.py;
these tests check the machinery on a tiny model in seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from safetensors.numpy import load_file

from conftest import (REPO_ROOT, SimulatedCrash, assert_same_run, crash_after, finish, free_port, launch_env,
                      run_training, start, tiny_args, topic_rows, write_training_csv)
from jbert.core.errors import UserError

# 144 training rows / batch 16 = 9 steps an epoch; 4 epochs, the last 2 with QAT (steps 19-36).
QAT_ARGS = dict(num_train_epochs=4, qat_epochs=2, checkpointing_steps=4, baseline="none", calibrate="none")


def qat_args(work: Path, **overrides) -> list[str]:
    """train.py arguments for a tiny from-scratch model with --qat on work's topic files."""
    return tiny_args(work, **{**QAT_ARGS, **overrides}) + ["--qat"]


@pytest.fixture(scope="module")
def qat_run(tmp_path_factory) -> Path:
    """A tiny model trained with --qat (its work directory: train/valid/test.csv, held.csv, model/)."""
    work = tmp_path_factory.mktemp("qat")
    write_training_csv(work / "train.csv", topic_rows(48, seed=1))
    write_training_csv(work / "valid.csv", topic_rows(10, seed=2))
    write_training_csv(work / "held.csv", topic_rows(30, seed=4))
    run_training(qat_args(work))
    return work


def _off_grid(weight: np.ndarray, embedding: bool) -> float:
    """How far (in grid steps) the worst value of WEIGHT lies from export's int8 grid for it."""
    if embedding:  # uint8, asymmetric, per tensor, the range including 0
        low, high = min(weight.min(), 0.0), max(weight.max(), 0.0)
        scaled = weight / ((high - low) / 255) + np.round(-low / ((high - low) / 255))
    else:  # int8, symmetric, per tensor
        scaled = weight / (np.abs(weight).max() / 127)
    return float(np.abs(scaled - np.round(scaled)).max())


def test_qat_weights_lie_on_the_int8_grid_that_export_reproduces_and_full_int8_passes_the_gate(qat_run):
    from jbert.export import ExportOptions, export_model

    weights = load_file(str(qat_run / "model" / "model.safetensors"))
    matrices = {name: value for name, value in weights.items() if value.ndim == 2}
    assert len(matrices) == 2 * 6 + 3 + 2, "every Linear (6 a layer, pooler, classifier) and the 3 embedding tables"
    for name, value in matrices.items():
        assert _off_grid(value, "embeddings" in name) < 1e-3, name
    # Without QAT the same weights are anywhere between grid points (the test can fail).
    assert _off_grid(np.random.default_rng(0).normal(size=(8, 8)).astype(np.float32), False) > 0.1

    export_dir = qat_run / "onnx"
    manifest = export_model(qat_run / "model", export_dir, ExportOptions(
        quantize="avx512_vnni", quantize_method="dynamic", validation_file=str(qat_run / "held.csv"),
        show_progress=False))
    record = manifest.models["int8"].quantization
    assert record["recipe"] == "dynamic-per_tensor" and record["nodes_excluded"] == [], "fully int8, nothing kept fp32"
    search = json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))["quantization"]
    chosen = next(c for c in search["candidates"] if c["name"] == search["chosen"])
    assert search["min_agreement"] == 0.99 and chosen["agreement"] >= 0.99 and search["held_out"]["n_texts"] == 90
    # The int8 file's weights, dequantised, are the fp32 file's: export's grid is the one QAT snapped to.
    assert _int8_weights_equal_fp32(export_dir) == len(matrices)


def _int8_weights_equal_fp32(export_dir: Path) -> int:
    """Dequantise every int8 weight of model_quantized.onnx, compare with model.onnx's; how many compared."""
    fp32 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(export_dir / "model.onnx")).graph.initializer}
    int8 = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(export_dir / "model_quantized.onnx")).graph.initializer}
    compared = 0
    for name, quantised in int8.items():
        base = name.removesuffix("_quantized")
        if not (name.endswith("_quantized") and base in fp32):
            continue
        values, scale = quantised.astype(np.float32), int8[base + "_scale"]
        zero_point, reference = int8[base + "_zero_point"].astype(np.float32), fp32[base]
        # Per-channel scales run along the last axis; a Gemm's weight is stored transposed once
        # onnxruntime turns it into a MatMul.
        restored = [(values - zero_point) * scale, (values - zero_point) * scale]
        restored[1] = restored[1].T
        difference = min(np.abs(candidate - reference).max() for candidate in restored if candidate.shape == reference.shape)
        assert difference <= 1e-6 * np.abs(reference).max(), base
        compared += 1
    return compared


def test_qat_per_channel_matches_export_per_channel(qat_run, tmp_path):
    from jbert.export import ExportOptions, export_model

    for name in ("train.csv", "valid.csv"):
        (tmp_path / name).write_bytes((qat_run / name).read_bytes())
    run_training(qat_args(tmp_path, checkpointing_steps=None) + ["--qat_per_channel"])
    export_model(tmp_path / "model", tmp_path / "onnx", ExportOptions(
        quantize="avx512_vnni", quantize_method="dynamic", per_channel=True, min_agreement=0.0, show_progress=False))
    assert _int8_weights_equal_fp32(tmp_path / "onnx") == 2 * 6 + 3 + 2


def test_resumed_qat_run_equals_uninterrupted(qat_run, tmp_path):
    """Killed after step 23 (in the first QAT epoch), resumed from the step-20 checkpoint: same weights and figures."""
    for name in ("train.csv", "valid.csv"):
        (tmp_path / name).write_bytes((qat_run / name).read_bytes())
    with pytest.raises(SimulatedCrash):
        run_training(qat_args(tmp_path), on_step_end=crash_after(23))
    run_training(qat_args(tmp_path, resume_from_checkpoint="auto"))
    assert_same_run(tmp_path / "model", qat_run / "model")


def test_distillation_with_qat_saves_a_student_on_the_grid(qat_run, tmp_path):
    write_training_csv(tmp_path / "few.csv", topic_rows(6, seed=4))
    (tmp_path / "valid.csv").write_bytes((qat_run / "valid.csv").read_bytes())
    metrics = run_training(tiny_args(tmp_path, task="distill", teacher=str(qat_run / "model"), train_file=str(tmp_path / "few.csv"),
                                     vocab_size=None, num_train_epochs=2, qat_epochs=1, baseline="none", calibrate="none")
                           + ["--qat"])
    assert metrics["best"]["step"] > 2, "only evaluations made with QAT on (steps 3-4) may be chosen"
    for name, value in load_file(str(tmp_path / "model" / "model.safetensors")).items():
        if value.ndim == 2:
            assert _off_grid(value, "embeddings" in name) < 1e-3, name


def _grid_step(weight: np.ndarray, embedding: bool) -> float:
    """The int8 grid spacing of WEIGHT (as _off_grid measures it)."""
    if embedding:
        return float(max(weight.max(), 0.0) - min(weight.min(), 0.0)) / 255
    return float(np.abs(weight).max()) / 127


@pytest.mark.multiprocess
def test_two_process_qat_lands_on_the_grid_next_to_one_process(qat_run, tmp_path):
    """accelerate launch, 2 CPU processes x 8 with --qat --qat_consistency 1 against 1 process x 16.
    Each process fake-quantises with its own micro-batch's activation ranges (as deployment does per
    call), so the runs are not bit-equal: the weights must still lie on the grid, within about one
    grid step of one process's, with the same best step and accuracy."""
    for name in ("train.csv", "valid.csv"):
        (tmp_path / name).write_bytes((qat_run / name).read_bytes())
    common = dict(QAT_ARGS, checkpointing_steps=None, dropout=0.0)
    flags = ["--qat", "--qat_consistency", "1"]
    one = run_training(tiny_args(tmp_path, output_dir=str(tmp_path / "one"), **common) + flags)
    code, output = finish(start("multi_cpu.yaml", tiny_args(tmp_path, output_dir=str(tmp_path / "two"),
                                                            per_device_train_batch_size=8, **common) + flags,
                                free_port(), env=launch_env(PYTHONPATH=str(REPO_ROOT))), timeout=400)
    assert code == 0, output[-6000:]
    assert "Num processes: 2" in output and "quantisation-aware training from epoch 3" in output, output[-3000:]
    two = json.loads((tmp_path / "two" / "metrics.json").read_text(encoding="utf-8"))
    assert two["best"]["step"] == one["best"]["step"] and two["best"]["step"] > 18, "chosen among QAT evaluations"
    assert two["validation"]["accuracy"] == one["validation"]["accuracy"]
    assert two["validation"]["loss"] == pytest.approx(one["validation"]["loss"], abs=1e-3)
    reference = load_file(str(tmp_path / "one" / "model.safetensors"))
    for name, value in load_file(str(tmp_path / "two" / "model.safetensors")).items():
        if value.ndim == 2:
            embedding = "embeddings" in name
            assert _off_grid(value, embedding) < 1e-3, name
            assert float(np.abs(value - reference[name]).max()) <= 1.5 * _grid_step(reference[name], embedding), name


@pytest.mark.parametrize("flags, message", [
    (["--qat_epochs", "2"], "--qat_epochs applies to --qat runs only"),
    (["--qat_per_channel"], "--qat_per_channel applies to --qat runs only"),
    (["--qat", "--qat_epochs", "0"], "--qat_epochs must be at least 1"),
    (["--qat", "--task", "mlm"], "--qat applies to classification, regression and distillation runs"),
    (["--qat_consistency", "1"], "--qat_consistency applies to --qat runs only"),
    (["--qat", "--qat_consistency", "-1"], "--qat_consistency must be 0"),
])
def test_bad_qat_options_are_refused_up_front(tmp_path, flags, message):
    from jbert.train.config import parse_config

    write_training_csv(tmp_path / "train.csv", topic_rows(4, seed=1))
    with pytest.raises(UserError, match=message):
        parse_config(tiny_args(tmp_path) + flags)
    assert not (tmp_path / "model").exists()


def test_consistency_loss_is_zero_only_when_int8_answers_as_fp32():
    import torch

    from jbert.train.qat import consistency_loss

    reference = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.3, -0.2]])
    for problem_type in ("single_label_classification", "multi_label_classification"):
        assert float(consistency_loss(reference, reference, problem_type)) == pytest.approx(0.0, abs=1e-6)
        assert float(consistency_loss(reference + torch.tensor([0.0, 0.4, 0.0]), reference, problem_type)) > 1e-3
    assert float(consistency_loss(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [2.0]]), "regression")) == pytest.approx(0.125)


def test_consistency_adds_the_fp32_pass_without_drawing_random_numbers(tmp_path):
    """Training forward = the fake-int8 loss + weight x KL to an fp32 pass with the same dropout masks;
    the random state afterwards is the plain QAT forward's (so resume and seeds behave as without it)."""
    import copy

    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from jbert.train.qat import add_consistency, attach, consistency_loss

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=3, hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3,
                        initializer_range=0.5)  # large logits: int8 moves them visibly
    plain = BertForSequenceClassification(config).train()
    with_consistency, fp32 = copy.deepcopy(plain), copy.deepcopy(plain)
    attach(plain)
    switch = {"on": True}
    attach(with_consistency, switch=switch)
    add_consistency(with_consistency, switch, 4.0)
    batch = {"input_ids": torch.randint(0, 50, (4, 9)), "labels": torch.tensor([0, 1, 2, 1])}

    torch.manual_seed(1)
    expected = plain(**batch)
    state_after_plain = torch.get_rng_state()
    torch.manual_seed(1)
    reference = fp32(**batch).logits  # no fake int8 at all, the same dropout masks as the passes below
    torch.manual_seed(1)
    output = with_consistency(**batch)
    assert torch.equal(torch.get_rng_state(), state_after_plain)
    torch.testing.assert_close(output.logits, expected.logits)
    extra = output.loss.item() - expected.loss.item()
    assert extra > 0 and extra == pytest.approx(4.0 * float(consistency_loss(expected.logits, reference, None)), rel=1e-4)
    output.loss.backward()  # gradients flow through the fake-int8 pass only
    assert all(p.grad is not None for p in with_consistency.parameters() if p.requires_grad and p.dim() == 2)
    with_consistency.eval()
    with torch.no_grad():
        torch.testing.assert_close(with_consistency(**batch).loss, plain.eval()(**batch).loss)  # evaluation as before


def test_qat_consistency_run_changes_training_and_stays_on_the_grid(qat_run, tmp_path):
    for name in ("train.csv", "valid.csv"):
        (tmp_path / name).write_bytes((qat_run / name).read_bytes())
    run_training(qat_args(tmp_path, checkpointing_steps=None, qat_consistency=5.0))
    trained, plain = load_file(str(tmp_path / "model" / "model.safetensors")), load_file(str(qat_run / "model" / "model.safetensors"))
    assert any(not np.array_equal(trained[name], plain[name]) for name in plain)
    for name, value in trained.items():
        if value.ndim == 2:
            assert _off_grid(value, "embeddings" in name) < 1e-3, name
