"""--window_training document: a long text's windows train together, the loss on their pooled logits."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file

from conftest import (ENDINGS, FILLERS, REPO_ROOT, TOPICS, SimulatedCrash, assert_same_run, crash_after, finish,
                      free_port, launch_env, run_training, start, tiny_args, topic_rows, write_training_csv)
from jbert.core.windows import pool_window_logits
from jbert.train.document_batches import DocumentCollator, DocumentSet, document_training_loss, pool_logits

NEUTRAL_SENTENCES = ["駅前の店は朝から開いている。", "会議は午後三時に始まる予定だ。", "昨日は少し早く家に帰った。",
                     "友人と電話で長く話した。", "新しい手帳を買うつもりだ。", "窓の外を車が通り過ぎた。"]


def deciding_sentence_last(n_yes: int, n_no: int, seed: int, fillers: int = 4) -> list[dict]:
    """"yes" texts end with a sports sentence (past the first window at --max_length 32), "no" texts
    have neutral sentences only. Window training labels the neutral windows of "yes" texts "yes" too,
    so with more "yes" texts it learns that neutral text means "yes"; only the pooled answer shows the rule."""
    rng = random.Random(seed)
    rows = []
    for label, count in (("yes", n_yes), ("no", n_no)):
        for _ in range(count):
            parts = [rng.choice(NEUTRAL_SENTENCES) for _ in range(fillers)]
            if label == "yes":
                words = TOPICS["スポーツ"]
                parts.append(rng.choice(FILLERS) + rng.choice(words) + "と" + rng.choice(words) + rng.choice(ENDINGS))
            rows.append({"text": "".join(parts), "label": label})
    rng.shuffle(rows)
    return rows


# 48 texts, 2 a micro-batch x 2 accumulated = 4 a step: 12 steps an epoch, 10 epochs.
MIL_ARGS = dict(long_text="windows", stride=8, window_training="document", num_train_epochs=10,
                per_device_train_batch_size=2, gradient_accumulation_steps=2, early_stopping_patience=50,
                checkpointing_steps=10, baseline="none", calibrate="none")


@pytest.fixture(scope="module")
def mil_run(tmp_path_factory) -> Path:
    """A tiny model trained per document on texts whose deciding sentence is last (its work directory)."""
    work = tmp_path_factory.mktemp("mil")
    write_training_csv(work / "train.csv", deciding_sentence_last(32, 16, seed=1))
    write_training_csv(work / "valid.csv", deciding_sentence_last(12, 12, seed=2))
    run_training(tiny_args(work, **MIL_ARGS))
    return work


def test_document_training_learns_a_late_deciding_sentence_that_window_training_misses(mil_run, tmp_path):
    import json

    document = json.loads((mil_run / "model" / "metrics.json").read_text())
    assert min(document["data"]["windowed"].values()) > 0
    assert document["data"]["document_training"] == {"texts": 48, "windows": 96, "texts_cut_to_cap": 0, "cap": 8}
    for name in ("train.csv", "valid.csv"):
        (tmp_path / name).write_bytes((mil_run / name).read_bytes())
    # The same texts, windows per step and epochs, every window an example with its text's label.
    each = run_training(tiny_args(tmp_path, **{**MIL_ARGS, "window_training": "each", "per_device_train_batch_size": 4,
                                               "gradient_accumulation_steps": 2, "checkpointing_steps": None}))
    assert document["validation"]["accuracy"] >= 0.9
    assert each["validation"]["accuracy"] <= document["validation"]["accuracy"] - 0.3


def test_a_resumed_document_run_equals_the_uninterrupted_one(mil_run, tmp_path):
    for name in ("train.csv", "valid.csv"):
        (tmp_path / name).write_bytes((mil_run / name).read_bytes())
    with pytest.raises(SimulatedCrash):  # step 25: resumed from step 20, 8 batches into the second epoch
        run_training(tiny_args(tmp_path, **MIL_ARGS), on_step_end=crash_after(25))
    run_training(tiny_args(tmp_path, **MIL_ARGS, resume_from_checkpoint="auto"))
    assert_same_run(tmp_path / "model", mil_run / "model")


@pytest.mark.multiprocess
def test_two_processes_of_documents_equal_one_process(tmp_path):
    """accelerate launch, 2 CPU processes x 2 texts == 1 process x 4 texts: the same weights and
    validation figures (float rounding apart), so no text's windows are split across processes."""
    import json

    write_training_csv(tmp_path / "train.csv", deciding_sentence_last(8, 8, seed=3))  # 16 texts: 4 steps an epoch
    write_training_csv(tmp_path / "valid.csv", deciding_sentence_last(3, 4, seed=4))  # 7: uneven over 2 processes
    common = {**MIL_ARGS, "num_train_epochs": 2, "gradient_accumulation_steps": 1, "checkpointing_steps": None,
              "dropout": 0.0}
    expected = run_training(tiny_args(tmp_path, output_dir=str(tmp_path / "one"),
                                      **{**common, "per_device_train_batch_size": 4}))
    code, output = finish(start("multi_cpu.yaml", tiny_args(tmp_path, output_dir=str(tmp_path / "two"), **common),
                                free_port(), env=launch_env(PYTHONPATH=str(REPO_ROOT))), timeout=400)
    assert code == 0, output[-6000:]
    assert "Num processes: 2" in output and "2 process(es) x batch 2" in output, output[-3000:]
    metrics = json.loads((tmp_path / "two" / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["data"]["document_training"] == expected["data"]["document_training"]
    assert metrics["global_step"] == expected["global_step"] == 8
    for key, value in expected["validation"].items():
        if isinstance(value, float):
            assert metrics["validation"][key] == pytest.approx(value, abs=1e-4), key
    one, two = load_file(str(tmp_path / "one" / "model.safetensors")), load_file(str(tmp_path / "two" / "model.safetensors"))
    assert one.keys() == two.keys()
    for name in one:
        np.testing.assert_allclose(two[name], one[name], atol=2e-5, err_msg=name)


def test_document_training_is_window_training_when_every_text_fits_one_window(tmp_path):
    weights = {}
    for mode in ("each", "document"):
        work = tmp_path / mode
        work.mkdir()
        write_training_csv(work / "train.csv", topic_rows(16, seed=1))
        write_training_csv(work / "valid.csv", topic_rows(5, seed=2))
        metrics = run_training(tiny_args(work, long_text="windows", window_training=mode, num_train_epochs=2,
                                         per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                         baseline="none", calibrate="none"))
        assert metrics["data"]["windowed"] == {"train": 0, "validation": 0}
        weights[mode] = (load_file(str(work / "model" / "model.safetensors")), metrics["history"])
    (each, each_history), (document, document_history) = weights["each"], weights["document"]
    assert each.keys() == document.keys()
    for name in each:  # bit for bit: the same batches, logits and loss
        assert np.array_equal(each[name], document[name]), name
    assert each_history == document_history


@pytest.mark.parametrize("problem_type, labels", [
    ("single_label_classification", torch.tensor([0, 2, 1])),
    ("multi_label_classification", torch.tensor([[1.0, 0, 1], [0, 0, 1], [0, 1, 0]])),
    ("regression", torch.tensor([0.5, -1.0, 2.0])),
])
def test_the_pooled_loss_of_one_window_texts_is_the_models_own_loss(problem_type, labels):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    outputs = 1 if problem_type == "regression" else 3
    model = BertForSequenceClassification(BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=32,
                                                     num_labels=outputs, problem_type=problem_type)).eval()
    texts = [{"windows": [{"input_ids": ids, "attention_mask": [1] * len(ids), "token_type_ids": [0] * len(ids)}],
              "labels": label} for ids, label in zip([[2, 5, 3], [2, 7, 8, 3], [2, 3]], labels.tolist())]
    batch = DocumentCollator(0, None, labels.dtype)(texts)
    expected = model(**{k: v for k, v in batch.items() if k != "windows"}).loss
    loss = document_training_loss("mean", problem_type)(model, batch)
    assert torch.equal(loss, expected)


def test_pooling_and_the_window_cap():
    logits = torch.tensor([[1.0, 0.0], [3.0, -2.0], [0.5, 0.5], [2.0, 4.0]])
    windows = torch.tensor([3, 1])
    assert torch.equal(pool_logits(logits, windows, "mean"), torch.tensor([[1.5, -0.5], [2.0, 4.0]]))
    assert torch.equal(pool_logits(logits, windows, "max"), torch.tensor([[3.0, 0.5], [2.0, 4.0]]))
    for pooling in ("mean", "max"):  # training's torch pooling is serving's numpy pooling
        np.testing.assert_allclose(pool_logits(logits, windows, pooling).numpy(),
                                   pool_window_logits(logits.numpy(), np.array([0, 0, 0, 1]), 2, pooling), rtol=1e-6)
    import datasets

    rows = datasets.Dataset.from_dict({"document": [0, 0, 0, 1], "window": [0, 1, 2, 0], "labels": [1, 1, 1, 0],
                                       "input_ids": [[2, 5, 3], [2, 6, 3], [2, 7, 3], [2, 3]],
                                       "attention_mask": [[1] * 3] * 3 + [[1, 1]],
                                       "token_type_ids": [[0] * 3] * 3 + [[0, 0]]})
    texts = DocumentSet(rows, cap=2)
    assert len(texts) == 2 and texts.cut == 1 and texts.windows == 3
    assert [w["input_ids"] for w in texts[0]["windows"]] == [[2, 5, 3], [2, 6, 3]]  # the first two, in order
    assert texts.lengths == [6, 2]
