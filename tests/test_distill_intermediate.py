"""--distill_hidden_weight / --distill_attention_weight: the student's hidden states (through a projection)
and attention maps learn the teacher's (TinyBERT's intermediate-layer losses)."""

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
    from jbert.train.distill_intermediate import layer_map

    assert layer_map(2, 6) == [0, 3, 6]  # TinyBERT's g(m) = m * N / M, embeddings to embeddings
    assert layer_map(3, 12) == [0, 4, 8, 12]
    assert layer_map(2, 2) == [0, 1, 2]
    assert layer_map(2, 6, copied_from=[0, 4]) == [0, 1, 5]  # each layer to the one it was copied from


def test_hidden_state_loss_projects_masks_padding_and_trains_only_the_projection(tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification

    from jbert.train.distill_intermediate import IntermediateLoss

    teacher = AutoModelForSequenceClassification.from_pretrained(make_tiny_model_dir(tmp_path / "teacher"))  # width 32
    loss = IntermediateLoss(teacher, student_width=8, mapping=[0, 1, 2], hidden_weight=1.0)
    assert isinstance(loss.projection, torch.nn.Linear) and loss.projection.weight.shape == (32, 8)
    assert [name for name, _ in loss.named_parameters()] == ["projection.weight"], "the teacher is not trained"
    ids = torch.tensor([[2, 10, 11, 3, 0], [2, 12, 3, 0, 0]])
    mask = (ids != 0).long()
    student_hidden = tuple(torch.randn(2, 5, 8, requires_grad=True) for _ in range(3))
    student_output = SimpleNamespace(logits=torch.zeros(2, 3), hidden_states=student_hidden, attentions=None)
    value = loss(student_output, {"input_ids": ids, "attention_mask": mask})
    value.backward()
    assert value.item() > 0 and loss.projection.weight.grad is not None
    assert all(float(h.grad[~mask.bool()].abs().sum()) == 0 for h in student_hidden), "padding does not count"
    assert all(float(h.grad[mask.bool()].abs().sum()) > 0 for h in student_hidden)


def test_attention_divergence_is_zero_for_the_teachers_maps_and_counts_only_real_queries():
    import torch

    from jbert.train.distill_intermediate import attention_divergence

    torch.manual_seed(0)
    mask = torch.tensor([[1.0, 1, 1, 0], [1, 1, 0, 0]])
    key_mask = mask[:, None, None, :]

    def maps(heads):  # softmax over the real keys, as a model's attention probabilities
        scores = torch.randn(2, heads, 4, 4).masked_fill(key_mask == 0, float("-inf"))
        return torch.softmax(scores, -1)

    teacher = maps(4)
    assert attention_divergence(teacher, teacher, mask).item() == pytest.approx(0, abs=1e-6)
    student = maps(4).requires_grad_(True)
    value = attention_divergence(student, teacher, mask)
    value.backward()
    assert value.item() > 0
    padded_queries = (mask == 0)[:, None, :, None].expand_as(student)
    assert float(student.grad[padded_queries].abs().sum()) == 0, "padded query rows do not count"
    # Different head counts: the head-averaged distributions are compared.
    two_heads = maps(2)
    same_average = teacher.mean(1, keepdim=True).expand(2, 2, 4, 4)
    assert attention_divergence(same_average, teacher, mask).item() == pytest.approx(0, abs=1e-6)
    assert attention_divergence(two_heads, teacher, mask).item() > 0


def test_attention_loss_reads_the_eager_maps_of_both_models_at_the_mapped_layers(tmp_path):
    """A student copied from teacher layers 0 and 1 attends exactly as those layers: its attention loss is 0."""
    import torch

    from jbert.train.distill_intermediate import build_intermediate_loss
    from jbert.train.distill_student import student_from_teacher_layers
    from jbert.train.distill_teacher import open_teacher

    teacher = open_teacher(str(make_tiny_model_dir(tmp_path / "teacher")))
    config = SimpleNamespace(distill_hidden_weight=0.0, distill_attention_weight=1.0, student_layers="0,1")
    copied = student_from_teacher_layers(teacher, [0, 1], dropout=0.0).eval()
    loss = build_intermediate_loss(config, teacher, copied)
    assert loss.mapping == [0, 1, 2]
    inputs = teacher.tokenizer(["今日は良い天気です", "犬"], padding=True, return_tensors="pt")
    inputs = {name: inputs[name] for name in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        output = copied(**inputs, **loss.output_flags())
        assert loss(output, inputs).item() == pytest.approx(0, abs=1e-6)
        # Copied in the other order, the student's layers no longer attend as the teacher layers they map to.
        swapped = student_from_teacher_layers(teacher, [1, 0], dropout=0.0).eval()
        swapped_loss = build_intermediate_loss(SimpleNamespace(**{**vars(config), "student_layers": None}), teacher,
                                               swapped)
        assert swapped_loss(swapped(**inputs, **swapped_loss.output_flags()), inputs).item() > 1e-4


@pytest.fixture
def sentiment_files(tmp_path) -> Path:
    """tmp_path with few.csv, valid.csv and a random tiny teacher (width 32; the tiny student is 128 wide)."""
    for name, n, seed in (("few.csv", 6, 4), ("valid.csv", 4, 2)):
        write_training_csv(tmp_path / name, [{"text": r["text"], "label": SENTIMENT[r["label"]]}
                                             for r in topic_rows(n, seed)])
    make_tiny_model_dir(tmp_path / "teacher")
    return tmp_path


def _args(work: Path, output: str, weight: float, attention: float = 0.0, **more) -> list[str]:
    options = dict(task="distill", teacher=str(work / "teacher"), train_file=str(work / "few.csv"),
                   output_dir=str(work / output), vocab_size=None, max_train_steps=4, max_length=24,
                   per_device_train_batch_size=6, calibrate="none", baseline="none", distill_hidden_weight=weight,
                   distill_attention_weight=attention)
    return tiny_args(work, **{**options, **more})


@pytest.mark.parametrize("hidden, attention", [(1.0, 0.0), (0.0, 1.0)], ids=["hidden", "attention"])
def test_intermediate_loss_changes_training_and_the_student_still_exports(sentiment_files, hidden, attention):
    import json

    from jbert.export import ExportOptions, export_model

    run_training(_args(sentiment_files, "plain", 0.0))
    run_training(_args(sentiment_files, "layers", hidden, attention))
    plain = load_file(str(sentiment_files / "plain" / "model.safetensors"))
    layers = load_file(str(sentiment_files / "layers" / "model.safetensors"))
    assert plain.keys() == layers.keys(), "the projection is not saved: an ordinary classifier directory"
    assert any(not np.array_equal(plain[name], layers[name]) for name in plain)
    configs = [json.loads((sentiment_files / run / "config.json").read_text()) for run in ("plain", "layers")]
    assert configs[0] == configs[1], "the eager attention of the run is not written into the model's config"
    report = json.loads((sentiment_files / "layers" / "metrics.json").read_text())["distillation"]
    assert (report["hidden_weight"], report["attention_weight"]) == (hidden, attention)
    manifest = export_model(sentiment_files / "layers", sentiment_files / "onnx", ExportOptions(show_progress=False))
    assert "fp32" in manifest.models


def test_resumed_run_with_the_projection_equals_uninterrupted(sentiment_files):
    """The projection (width 128 -> 32) is in the checkpoints: killed after step 3, resumed from step 2
    (both intermediate losses on)."""
    common = dict(max_train_steps=6, checkpointing_steps=2)
    run_training(_args(sentiment_files, "reference", 1.0, 1.0, **common))
    with pytest.raises(SimulatedCrash):
        run_training(_args(sentiment_files, "resumed", 1.0, 1.0, **common), on_step_end=crash_after(3))
    run_training(_args(sentiment_files, "resumed", 1.0, 1.0, resume_from_checkpoint="auto", **common))
    assert_same_run(sentiment_files / "resumed", sentiment_files / "reference")


def test_intermediate_losses_need_a_model_directory_teacher_and_its_tokenizer(tmp_path_factory):
    from conftest import cached_export

    from jbert.train.distill_intermediate import check_intermediate_losses
    from jbert.train.distill_teacher import open_teacher

    model_dir, export_dir = cached_export(tmp_path_factory)
    config = SimpleNamespace(distill_hidden_weight=1.0, distill_attention_weight=0.0, max_length=32)
    model_teacher, export_teacher = open_teacher(str(model_dir)), open_teacher(str(export_dir))
    check_intermediate_losses(config, model_teacher, model_teacher.tokenizer)  # fits: no error
    with pytest.raises(UserError, match="--distill_hidden_weight runs the teacher .* is an export directory"):
        check_intermediate_losses(config, export_teacher, export_teacher.tokenizer)
    attention = SimpleNamespace(distill_hidden_weight=0.0, distill_attention_weight=0.5, max_length=32)
    with pytest.raises(UserError, match="^--distill_attention_weight runs the teacher .* or --distill_attention_weight 0$"):
        check_intermediate_losses(attention, export_teacher, export_teacher.tokenizer)

    class OtherVocabulary:
        def get_vocab(self):
            return {"[PAD]": 0, "[UNK]": 1}

    with pytest.raises(UserError, match="must use the tokenizer of --teacher"):
        check_intermediate_losses(config, model_teacher, OtherVocabulary())
    with pytest.raises(UserError, match="exceeds the 64 positions"):
        check_intermediate_losses(SimpleNamespace(distill_hidden_weight=1.0, distill_attention_weight=1.0, max_length=128),
                                  model_teacher, model_teacher.tokenizer)


@pytest.mark.parametrize("flags, message", [
    (["--task", "distill", "--distill_hidden_weight", "-1"], "--distill_hidden_weight must be 0"),
    (["--task", "distill", "--distill_attention_weight", "-0.5"], "--distill_attention_weight must be 0"),
    (["--distill_hidden_weight", "1"], "--distill_hidden_weight applies to --task distill only"),
    (["--distill_attention_weight", "1"], "--distill_attention_weight applies to --task distill only"),
])
def test_bad_intermediate_weights_are_refused_up_front(sentiment_files, flags, message):
    from jbert.train.config import parse_config

    with pytest.raises(UserError, match=message):
        parse_config(tiny_args(sentiment_files, teacher=str(sentiment_files / "teacher")) + flags)
