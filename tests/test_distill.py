"""--task distill: a tiny teacher's soft targets make a student that agrees with it; ensembles, unlabeled texts, resume, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import (SimulatedCrash, assert_same_run, crash_after, run_training, tiny_args, topic_rows,
                      unlabeled_file, write_training_csv)

STUDENT_STEPS = 40


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory) -> Path:
    """A tiny BERT trained on 48 topic sentences per class (test accuracy about 1), with its data files."""
    work = tmp_path_factory.mktemp("teacher")
    write_training_csv(work / "train.csv", topic_rows(48, seed=1))
    write_training_csv(work / "valid.csv", topic_rows(10, seed=2))
    write_training_csv(work / "test.csv", topic_rows(8, seed=3))
    run_training(tiny_args(work, output_dir=str(work / "teacher"), num_train_epochs=6))
    return work / "teacher"


@pytest.fixture
def few_labels(tmp_path, teacher_dir) -> Path:
    """tmp_path with few.csv (6 labelled texts per class), the teacher's valid/test files and 120 unlabeled texts."""
    write_training_csv(tmp_path / "few.csv", topic_rows(6, seed=4))
    for name in ("valid.csv", "test.csv"):
        shutil.copy(teacher_dir.parent / name, tmp_path / name)
    unlabeled_file(tmp_path, n_per_class=40, seed=5)
    return tmp_path


def distill_args(work: Path, teacher: Path, **overrides) -> list[str]:
    """train.py arguments distilling `teacher` into a tiny from-scratch student on work's few.csv."""
    options = dict(task="distill", teacher=str(teacher), train_file=str(work / "few.csv"),
                   test_file=str(work / "test.csv"), unlabeled_file=str(work / "unlabeled.txt"),
                   output_dir=str(work / "student"), vocab_size=None, max_train_steps=STUDENT_STEPS,
                   distill_temperature=1.0, learning_rate=3e-3, calibrate="none", baseline="none")
    options.update(overrides)
    return tiny_args(work, **options)


def _cli(argv) -> int:
    import train as train_script

    return train_script.run(argv)


def test_student_agrees_with_teacher_above_chance_and_above_labels_alone(few_labels, teacher_dir):
    """Same student, same steps: with the teacher's soft targets on unlabeled texts vs the 18 labels alone."""
    distilled = run_training(distill_args(few_labels, teacher_dir))
    labels_alone = run_training(distill_args(few_labels, teacher_dir, output_dir=str(few_labels / "alone"),
                                             unlabeled_file=None, distill_alpha=0.0))
    test = distilled["distillation"]["splits"]["test"]
    assert test["teacher"]["accuracy"] > 0.9, "the fixture's teacher must be good for the comparison to mean much"
    agreement, alone = test["teacher_agreement"], labels_alone["distillation"]["splits"]["test"]["teacher_agreement"]
    assert agreement >= 0.9, f"chance is 1/3; distilled student agrees on {agreement:.2f}"
    assert agreement > alone, f"distilled {agreement:.2f} vs labels alone {alone:.2f}"
    assert distilled["distillation"]["unlabeled_texts"] == 120
    assert labels_alone["distillation"]["unlabeled_texts"] == 0
    # an ordinary model directory: the student's config and labels, the card with a distillation section
    student = few_labels / "student"
    config = json.loads((student / "config.json").read_text())
    assert config["id2label"] == json.loads((teacher_dir / "config.json").read_text())["id2label"]
    assert "## Distillation" in (student / "README.md").read_text()
    assert not (few_labels / "student.checkpoints" / "teacher_outputs.npz").exists(), "the cache goes with the run"


def test_ensemble_soft_targets_average_probabilities(teacher_dir, tmp_path):
    """Two teachers: targets are the mean of their softmaxes (not the softmax of mean logits), computed once."""
    from safetensors.torch import load_file, save_file

    from jbert.train.distill_teacher import CACHE_FILE, ensemble_probabilities, open_teachers, teacher_outputs

    second = tmp_path / "second"
    shutil.copytree(teacher_dir, second)
    weights = load_file(str(second / "model.safetensors"))
    weights = {name: value * 1.5 if name.startswith("classifier") else value for name, value in weights.items()}
    save_file(weights, str(second / "model.safetensors"), metadata={"format": "pt"})
    teachers = open_teachers(f"{teacher_dir},{second}")
    parts = {"train": (["今日はサッカーと野球でした。", "雨と雪だった", "カレーと醤油です。"], None)}
    outputs = teacher_outputs(teachers, parts, tmp_path / "cache", 8, "cpu", compute=True)["train"]
    assert outputs.shape == (2, 3, 3) and not np.allclose(outputs[0], outputs[1])
    soft = lambda logits: np.exp(logits / 2) / np.exp(logits / 2).sum(-1, keepdims=True)  # noqa: E731
    expected = (soft(outputs[0]) + soft(outputs[1])) / 2
    np.testing.assert_allclose(ensemble_probabilities(outputs, "single_label_classification", 2.0), expected, rtol=1e-5)
    assert not np.allclose(expected, soft(outputs.mean(0)), atol=1e-4)
    assert (tmp_path / "cache" / CACHE_FILE).is_file()
    again = teacher_outputs(teachers, parts, tmp_path / "cache", 8, "cpu", compute=False)["train"]
    np.testing.assert_array_equal(again, outputs)  # read back, not recomputed (compute=False would raise)
    multi = ensemble_probabilities(outputs, "multi_label_classification", 1.0)
    np.testing.assert_allclose(multi, (1 / (1 + np.exp(-outputs))).mean(0), rtol=1e-5)
    np.testing.assert_allclose(ensemble_probabilities(outputs[:, :, :1], "regression"), outputs[:, :, :1].mean(0))


def test_distilling_an_ensemble_reports_each_teacher(few_labels, teacher_dir):
    second = few_labels / "second"
    shutil.copytree(teacher_dir, second)
    metrics = run_training(distill_args(few_labels, f"{teacher_dir},{second}", max_train_steps=4))
    test = metrics["distillation"]["splits"]["test"]
    assert len(test["each_teacher"]) == 2 and len(metrics["distillation"]["teachers"]) == 2


def test_resumed_distillation_equals_uninterrupted(few_labels, teacher_dir):
    """Killed after step 5, resumed from the step-4 checkpoint: same weights and figures; the teacher is not rerun."""
    common = dict(max_train_steps=10, checkpointing_steps=2)
    run_training(distill_args(few_labels, teacher_dir, output_dir=str(few_labels / "reference"), **common))
    with pytest.raises(SimulatedCrash):
        run_training(distill_args(few_labels, teacher_dir, output_dir=str(few_labels / "resumed"), **common),
                     on_step_end=crash_after(5))
    cache = few_labels / "resumed.checkpoints" / "teacher_outputs.npz"
    assert cache.is_file(), "the teachers' outputs are cached beside the checkpoints"
    cached_at = cache.stat().st_mtime_ns
    seen = crash_after(-1)
    import jbert.train.distill_teacher as distill_teacher

    original = distill_teacher.Teacher.logits
    distill_teacher.Teacher.logits = lambda *a, **k: pytest.fail("a resumed run must read the cached teacher outputs")
    try:
        run_training(distill_args(few_labels, teacher_dir, output_dir=str(few_labels / "resumed"),
                                  resume_from_checkpoint="auto", **common), on_step_end=seen)
    finally:
        distill_teacher.Teacher.logits = original
    assert seen.seen == list(range(5, 11)) and cached_at
    assert_same_run(few_labels / "resumed", few_labels / "reference")


def _nothing_written(work: Path, name: str = "student") -> None:
    assert not (work / name).exists() and not (work / f"{name}.checkpoints").exists()


def test_teacher_whose_labels_differ_from_the_data_is_exit_2(few_labels, teacher_dir, capsys):
    rows = [{"text": row["text"], "label": {"料理": "食べ物"}.get(row["label"], row["label"])}
            for row in topic_rows(6, seed=4)]
    write_training_csv(few_labels / "few.csv", rows)
    assert _cli(distill_args(few_labels, teacher_dir, validation_file=None, test_file=None,
                                    validation_split=0.5)) == 2
    err = capsys.readouterr().err
    assert "knows the labels" in err and "食べ物" in err
    _nothing_written(few_labels)


def test_teacher_of_another_task_is_exit_2(few_labels, teacher_dir, capsys):
    write_training_csv(few_labels / "few.csv", [{"text": r["text"], "label": f"{i % 5}.5"}
                                                for i, r in enumerate(topic_rows(6, seed=4))])
    assert _cli(distill_args(few_labels, teacher_dir, validation_file=None, test_file=None,
                                    validation_split=0.5)) == 2
    assert "knows the labels" in capsys.readouterr().err
    _nothing_written(few_labels)


def test_student_tokenizer_not_the_teachers_is_exit_2(few_labels, teacher_dir, capsys):
    from conftest import write_tiny_japanese_tokenizer

    other = few_labels / "other_tokenizer"
    write_tiny_japanese_tokenizer(other)
    assert _cli(distill_args(few_labels, teacher_dir, tokenizer_name=str(other))) == 2
    assert "does not match the tokenizer of --teacher" in capsys.readouterr().err
    _nothing_written(few_labels)


def test_empty_unlabeled_file_is_exit_2(few_labels, teacher_dir, capsys):
    (few_labels / "unlabeled.txt").write_text("\n \n", encoding="utf-8")
    assert _cli(distill_args(few_labels, teacher_dir)) == 2
    err = capsys.readouterr().err
    assert "--unlabeled_file" in err and "no non-empty text" in err
    _nothing_written(few_labels)


def test_distill_options_checked_up_front(few_labels, capsys):
    assert _cli(distill_args(few_labels, few_labels / "missing", distill_alpha=1.5, student_layers="0,0")) == 2
    err = capsys.readouterr().err
    assert "--teacher" in err and "--distill_alpha must be in [0, 1]" in err and "--student_layers" in err


def test_export_directory_teacher_gives_the_model_directorys_logits(tmp_path_factory):
    """An export directory runs the teacher through onnxruntime (its fp32 file): the PyTorch model's logits."""
    from conftest import cached_export

    from jbert.train.distill_teacher import open_teacher

    model_dir, export_dir = cached_export(tmp_path_factory)  # shared with the runtime and serving tests
    texts = ["この商品はとても良いです。", "最悪の料理でした。", "今日は雨"]
    from_model = open_teacher(str(model_dir)).logits(texts, None, 2, "cpu")
    from_export = open_teacher(str(export_dir))
    assert from_export.kind == "export" and from_export.label_names == ["negative", "neutral", "positive"]
    np.testing.assert_allclose(from_export.logits(texts, None, 2, "cpu"), from_model, atol=1e-4)


@pytest.mark.parametrize("problem_type", ["multi_label_classification", "regression"])
def test_multi_label_and_regression_teachers(tmp_path, problem_type):
    """Per-label sigmoid targets and the teacher's value: a short run writes a student of the teacher's task."""
    from conftest import make_tiny_model_dir

    teacher = make_tiny_model_dir(tmp_path / "teacher", problem_type=problem_type)
    texts = [row["text"] for row in topic_rows(8, seed=6)]
    if problem_type == "regression":
        rows = [{"text": text, "label": float(i % 5)} for i, text in enumerate(texts)]
    else:
        rows = [{"text": text, "label": ["negative", "neutral|positive", "positive"][i % 3]} for i, text in enumerate(texts)]
    write_training_csv(tmp_path / "few.csv", rows)
    (tmp_path / "unlabeled.txt").write_text("\n".join(texts[:6]), encoding="utf-8")
    metrics = run_training(distill_args(tmp_path, teacher, validation_file=None, test_file=None, max_train_steps=3,
                                        label_delimiter="|" if problem_type != "regression" else None,
                                        validation_split=0.25, max_length=24))
    assert metrics["problem_type"] == problem_type
    validation = metrics["distillation"]["splits"]["validation"]
    assert ("teacher_mse" if problem_type == "regression" else "teacher_agreement") in validation
    config = json.loads((tmp_path / "student" / "config.json").read_text())
    assert config["problem_type"] == problem_type


def test_distillation_loss_per_task():
    """Soft-only rows ignore their placeholder labels; alpha weighs soft against hard on labelled rows."""
    import torch

    from jbert.train.distill_student import distillation_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    targets = torch.softmax(logits, -1)  # the student already matches the teacher: soft loss 0
    labels = torch.tensor([1, 0])
    unlabeled = distillation_loss(logits, targets, labels, torch.tensor([False, False]), "single_label_classification", 1.0, 0.5)
    assert float(unlabeled) == pytest.approx(0.0, abs=1e-6)
    labelled = distillation_loss(logits, targets, labels, torch.tensor([True, True]), "single_label_classification", 1.0, 0.5)
    hard = torch.nn.functional.cross_entropy(logits, labels)
    assert float(labelled) == pytest.approx(0.5 * float(hard), rel=1e-5)
    value = distillation_loss(torch.tensor([[1.0], [2.0]]), torch.tensor([[1.5], [2.0]]), torch.tensor([0.0, 0.0]),
                              torch.tensor([False, False]), "regression", 4.0, 0.5)
    assert float(value) == pytest.approx(0.125)  # (0.5^2 + 0) / 2: the teacher's value, no temperature


def test_student_from_the_teachers_own_layers(few_labels, teacher_dir):
    """--student_layers 1: the teacher's embeddings, its second encoder layer and head, trained on; a 1-layer model dir."""
    from safetensors.numpy import load_file

    metrics = run_training(distill_args(few_labels, teacher_dir, from_scratch=None, student_layers="1",
                                        max_train_steps=2, learning_rate=1e-6))
    config = json.loads((few_labels / "student" / "config.json").read_text())
    assert config["num_hidden_layers"] == 1 and metrics["distillation"]["student"].startswith("layers 1 of")
    student, teacher = load_file(str(few_labels / "student" / "model.safetensors")), load_file(str(teacher_dir / "model.safetensors"))
    assert not any(".layer.1." in name for name in student)
    # copied, then barely trained: layer 0 of the student is layer 1 of the teacher
    name = "bert.encoder.layer.0.attention.self.query.weight"
    np.testing.assert_allclose(student[name], teacher[name.replace("layer.0", "layer.1")], atol=1e-4)


def test_student_layers_beyond_the_teachers_is_exit_2(few_labels, teacher_dir, capsys):
    assert _cli(distill_args(few_labels, teacher_dir, from_scratch=None, student_layers="0,5")) == 2
    assert "has layers 0-1 only" in capsys.readouterr().err
    _nothing_written(few_labels)


def test_sentence_pair_teacher(tmp_path, capsys):
    """A pair teacher distils on pair data (--text_pair_column); single texts for it are refused."""
    from conftest import make_tiny_model_dir

    teacher = make_tiny_model_dir(tmp_path / "teacher", text_pair=True)
    rows = [{"text": row["text"], "text_pair": "今日は雨", "label": ["negative", "neutral", "positive"][i % 3]}
            for i, row in enumerate(topic_rows(8, seed=6))]
    write_training_csv(tmp_path / "few.csv", rows)
    common = dict(validation_file=None, test_file=None, unlabeled_file=None, max_train_steps=2,
                  validation_split=0.25, max_length=32)
    metrics = run_training(distill_args(tmp_path, teacher, text_pair_column="text_pair", **common))
    assert "teacher_agreement" in metrics["distillation"]["splits"]["validation"]
    assert json.loads((tmp_path / "student" / "jbert.json").read_text())["text_pair_column"] == "text_pair"
    assert _cli(distill_args(tmp_path, teacher, output_dir=str(tmp_path / "single"), **common)) == 2
    assert "classifies sentence pairs" in capsys.readouterr().err and not (tmp_path / "single").exists()
