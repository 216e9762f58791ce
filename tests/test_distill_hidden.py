"""--distill_hidden_weight: the student's hidden states learn the teacher's (TinyBERT), through a projection."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import (SimulatedCrash, assert_same_run, crash_after, make_tiny_model_dir, run_training, tiny_args,
                      topic_rows, write_training_csv)
from jbert.core.errors import UserError

SENTIMENT = {"スポーツ": "positive", "料理": "neutral", "天気": "negative"}  # make_tiny_model_dir's labels


def test_layer_map_uniform_and_copied_layers():
    from jbert.train.distill_hidden import layer_map

    assert layer_map(2, 6) == [0, 3, 6]  # TinyBERT's g(m) = m * N / M, embeddings to embeddings
    assert layer_map(3, 12) == [0, 4, 8, 12]
    assert layer_map(2, 2) == [0, 1, 2]
    assert layer_map(2, 6, copied_from=[0, 4]) == [0, 1, 5]  # each layer to the one it was copied from


def test_hidden_state_loss_projects_masks_padding_and_trains_only_the_projection(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from jbert.train.distill_hidden import HiddenStateLoss

    teacher = AutoModelForSequenceClassification.from_pretrained(make_tiny_model_dir(tmp_path / "teacher"))  # width 32
    loss = HiddenStateLoss(teacher, student_width=8, mapping=[0, 1, 2])
    assert isinstance(loss.projection, torch.nn.Linear) and loss.projection.weight.shape == (32, 8)
    assert [name for name, _ in loss.named_parameters()] == ["projection.weight"], "the teacher is not trained"
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    mask = (ids != 0).long()
    student_hidden = tuple(torch.randn(2, 5, 8, requires_grad=True) for _ in range(3))
    value = loss(student_hidden, {"input_ids": ids, "attention_mask": mask})
    value.backward()
    assert float(value) > 0 and loss.projection.weight.grad is not None
    assert all(float(h.grad[~mask.bool()].abs().sum()) == 0 for h in student_hidden), "padding does not count"
    assert all(float(h.grad[mask.bool()].abs().sum()) > 0 for h in student_hidden)


@pytest.fixture
def sentiment_files(tmp_path) -> Path:
    """tmp_path with few.csv, valid.csv and a random tiny teacher (width 32; the tiny student is 128 wide)."""
    for name, n, seed in (("few.csv", 6, 4), ("valid.csv", 4, 2)):
        write_training_csv(tmp_path / name, [{"text": r["text"], "label": SENTIMENT[r["label"]]}
                                             for r in topic_rows(n, seed)])
    make_tiny_model_dir(tmp_path / "teacher")
    return tmp_path


def _args(work: Path, output: str, weight: float, **more) -> list[str]:
    options = dict(task="distill", teacher=str(work / "teacher"), train_file=str(work / "few.csv"),
                   output_dir=str(work / output), vocab_size=None, max_train_steps=4, max_length=24,
                   per_device_train_batch_size=6, calibrate="none", baseline="none", distill_hidden_weight=weight)
    return tiny_args(work, **{**options, **more})


def test_hidden_state_loss_changes_training_and_the_student_still_exports(sentiment_files):
    from jbert.export import ExportOptions, export_model

    run_training(_args(sentiment_files, "plain", 0.0))
    run_training(_args(sentiment_files, "hidden", 1.0))
    plain = load_file(str(sentiment_files / "plain" / "model.safetensors"))
    hidden = load_file(str(sentiment_files / "hidden" / "model.safetensors"))
    assert plain.keys() == hidden.keys(), "the projection is not saved: an ordinary classifier directory"
    assert any(not np.array_equal(plain[name], hidden[name]) for name in plain)
    manifest = export_model(sentiment_files / "hidden", sentiment_files / "onnx", ExportOptions(show_progress=False))
    assert "fp32" in manifest.models


def test_resumed_run_with_the_projection_equals_uninterrupted(sentiment_files):
    """The projection (width 128 -> 32) is in the checkpoints: killed after step 3, resumed from step 2."""
    common = dict(max_train_steps=6, checkpointing_steps=2)
    run_training(_args(sentiment_files, "reference", 1.0, **common))
    with pytest.raises(SimulatedCrash):
        run_training(_args(sentiment_files, "resumed", 1.0, **common), on_step_end=crash_after(3))
    run_training(_args(sentiment_files, "resumed", 1.0, resume_from_checkpoint="auto", **common))
    assert_same_run(sentiment_files / "resumed", sentiment_files / "reference")


def test_hidden_state_loss_needs_a_model_directory_teacher_and_its_tokenizer(tmp_path_factory):
    from conftest import cached_export

    from jbert.train.distill_hidden import check_hidden_loss
    from jbert.train.distill_teacher import open_teacher

    model_dir, export_dir = cached_export(tmp_path_factory)
    config = SimpleNamespace(distill_hidden_weight=1.0, max_length=32)
    model_teacher, export_teacher = open_teacher(str(model_dir)), open_teacher(str(export_dir))
    check_hidden_loss(config, model_teacher, model_teacher.tokenizer)  # fits: no error
    with pytest.raises(UserError, match="is an export directory"):
        check_hidden_loss(config, export_teacher, export_teacher.tokenizer)

    class OtherVocabulary:
        def get_vocab(self):
            return {"[PAD]": 0, "[UNK]": 1}

    with pytest.raises(UserError, match="must use the tokenizer of --teacher"):
        check_hidden_loss(config, model_teacher, OtherVocabulary())
    with pytest.raises(UserError, match="exceeds the 64 positions"):
        check_hidden_loss(SimpleNamespace(distill_hidden_weight=1.0, max_length=128), model_teacher, model_teacher.tokenizer)


@pytest.mark.parametrize("flags, message", [
    (["--task", "distill", "--distill_hidden_weight", "-1"], "--distill_hidden_weight must be 0"),
    (["--distill_hidden_weight", "1"], "--distill_hidden_weight applies to --task distill only"),
])
def test_bad_hidden_weight_is_refused_up_front(sentiment_files, flags, message):
    from jbert.train.config import parse_config

    with pytest.raises(UserError, match=message):
        parse_config(tiny_args(sentiment_files, teacher=str(sentiment_files / "teacher")) + flags)
