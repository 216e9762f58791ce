"""Hardware figures (jbert.train.hardware): token counts, FLOPs accounting, peaks, and every run's report."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from conftest import mlm_args, run_training, tiny_args
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

from jbert.train import hardware

TINY = dict(vocab_size=100, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
            max_position_embeddings=64)


def test_token_counter_counts_real_and_padded_tokens_and_squared_lengths():
    counter = hardware.TokenCounter(torch.device("cpu"))
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    counter.add({"input_ids": torch.zeros(2, 4, dtype=torch.long), "attention_mask": mask})
    counter.add({"input_ids": torch.zeros(1, 3, dtype=torch.long)})  # no mask: every position is real
    assert counter.totals() == (3 + 2 + 3, 8 + 3, 9 + 4 + 9)


def test_matmul_parameters_leave_out_embedding_tables_but_count_a_tied_output_projection():
    classifier = BertForSequenceClassification(BertConfig(**TINY, num_labels=3))
    tables = sum(m.weight.numel() for m in classifier.modules() if isinstance(m, torch.nn.Embedding))
    assert hardware.matmul_parameters(classifier) == sum(p.numel() for p in classifier.parameters()) - tables
    masked_lm = BertForMaskedLM(BertConfig(**TINY))
    word_embeddings = masked_lm.get_input_embeddings().weight
    assert masked_lm.get_output_embeddings().weight is word_embeddings  # tied, listed once by parameters()
    tables = sum(m.weight.numel() for m in masked_lm.modules() if isinstance(m, torch.nn.Embedding))
    expected = sum(p.numel() for p in masked_lm.parameters()) - tables + word_embeddings.numel()
    assert hardware.matmul_parameters(masked_lm) == expected


def test_training_flops_are_six_n_per_token_plus_attention():
    # one sequence of 10 tokens, 2 layers, hidden 16, N = 1000
    assert hardware.training_flops(1000, 2, 16, tokens=10, squared_lengths=100) == 6 * 1000 * 10 + 12 * 2 * 16 * 100
    assert hardware.attention_shape(BertConfig(**TINY)) == (2, 16)
    assert hardware.attention_shape(None) == (0, 0)


@pytest.mark.parametrize("name, dtype, tf32, peak", [
    ("NVIDIA H100 80GB HBM3", torch.bfloat16, False, 989.4),
    ("NVIDIA H100 PCIe", torch.bfloat16, False, 756.0),
    ("NVIDIA H200", torch.float32, False, 66.9),
    ("NVIDIA H200", torch.float32, True, 494.7),
    ("NVIDIA A100-SXM4-80GB", torch.float16, False, 312.0),
    ("NVIDIA L4", torch.bfloat16, False, 121.0),
    ("Some Future GPU", torch.bfloat16, False, None),
])
def test_gpu_peaks_come_from_the_datasheet_table(name, dtype, tf32, peak):
    assert hardware.gpu_peak_tflops(name, dtype, tf32) == peak


def test_cpu_peak_is_measured_once_per_process():
    first, source, name = hardware.peak_flops(torch.device("cpu"), torch.float32)
    assert 1e-4 < first < 1e3 and source.startswith("measured") and name
    assert hardware.peak_flops(torch.device("cpu"), torch.float32)[0] == first  # cached, not measured again


def _check_figures(figures: dict) -> None:
    assert figures["train_tokens_per_second"] > 0
    assert figures["train_padded_tokens_per_second"] >= figures["train_tokens_per_second"]
    assert 0 <= figures["padding_share"] < 1
    assert figures["matmul_parameters"] > 0 and figures["device"] and figures["processes"] == 1
    # at least the 6 x N part of the FLOPs, from the reported tokens/s
    six_n = 6 * figures["matmul_parameters"] * figures["train_tokens_per_second"] / 1e12
    assert figures["achieved_tflops_per_second"] >= 0.99 * six_n > 0
    assert figures["peak_tflops_per_second_per_device"] > 0 and figures["peak_source"].startswith("measured")
    assert figures["mfu"] == pytest.approx(figures["achieved_tflops_per_second"]
                                           / figures["peak_tflops_per_second_per_device"], rel=0.01, abs=1e-4)
    assert 0 < figures["mfu"] < 5  # a busy machine can measure a low peak; never zero or absurd


def test_classification_run_reports_hardware_figures_in_metrics_log_and_card(topic_files, caplog):
    with caplog.at_level(logging.INFO, logger="jbert"):
        metrics = run_training(tiny_args(topic_files, num_train_epochs=1, baseline="none", calibrate="none"))
    saved = json.loads((topic_files / "model" / "metrics.json").read_text(encoding="utf-8"))
    _check_figures(saved["hardware"])
    assert saved["hardware"] == metrics["hardware"] and saved["hardware"]["compute_dtype"] == "float32"
    assert any(r.getMessage().startswith("hardware: ") and "MFU" in r.getMessage() for r in caplog.records)
    card = (topic_files / "model" / "README.md").read_text(encoding="utf-8")
    assert "## Hardware utilisation" in card and card.index("## Hardware utilisation") < card.index("## How to use")
    assert "real tokens / s" in card


def test_mlm_run_reports_hardware_figures(tmp_path):
    run_training(mlm_args(tmp_path, num_train_epochs=1))
    saved = json.loads((tmp_path / "mlm" / "metrics.json").read_text(encoding="utf-8"))
    _check_figures(saved["hardware"])
    card = (tmp_path / "mlm" / "README.md").read_text(encoding="utf-8")
    assert card.index("## Hardware utilisation") < card.index("## Fine-tune it")
