"""End-to-end training tests: tiny BERTs from scratch that must learn, resume exactly, and write a full model dir."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import (
    FILLERS, TOPICS, SimulatedCrash, crash_after, run_training, tiny_args, topic_rows, write_training_csv,
)

from jbert.train.config import TrainConfig, load_yaml_recipe, parse_config
from jbert.core.errors import UserError

REPO = Path(__file__).resolve().parent.parent


LOCAL_METRIC = """
import datasets
import evaluate


class ErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="share of wrong predictions", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        wrong = sum(int(p != r) for p, r in zip(predictions, references))
        return {"error_rate": wrong / len(references)}
"""


def test_tiny_model_learns_and_writes_complete_model_dir(topic_files):
    tmp = topic_files
    metric_script = tmp / "error_rate.py"
    metric_script.write_text(LOCAL_METRIC, encoding="utf-8")
    metrics = run_training(tiny_args(tmp, test_file=str(tmp / "test.csv"), num_train_epochs=6,
                                     extra_metrics=str(metric_script)))
    model_dir = tmp / "model"
    assert metrics["validation"]["accuracy"] >= 0.9, metrics["validation"]
    # a local `evaluate` metric, loaded only because it was asked for, agrees with scikit-learn
    assert metrics["validation"]["extra_error_rate"] == pytest.approx(1 - metrics["validation"]["accuracy"])
    assert metrics["test"]["accuracy"] >= 0.9, metrics["test"]
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "jbert.json",
                 "training_config.yaml", "metrics.json", "README.md", "loss.png", "metric.png",
                 "confusion_matrix.png", "examples.jsonl", "predictions_test.jsonl"):
        assert (model_dir / name).is_file(), name
    assert not (tmp / "model.checkpoints").exists(), "working files must be cleaned up after success"

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    assert type(tokenizer).__name__ == "BertJapaneseTokenizer"
    assert sorted(model.config.id2label.values()) == sorted(TOPICS)
    assert model.config.problem_type == "single_label_classification"
    encoded = tokenizer(["週末にサッカーと試合でした。"], return_tensors="pt")
    assert model.config.id2label[int(model(**encoded).logits.argmax())] == "スポーツ"
    predictions = [json.loads(line) for line in open(model_dir / "predictions_test.jsonl", encoding="utf-8")]
    assert len(predictions) == 24 and {"text", "label", "prediction", "score"} <= set(predictions[0])
    saved = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    assert saved["best"]["metric"] == "macro_f1" and saved["history"]
    train_texts = [row["text"] for row in topic_rows(48, seed=1)]  # what topic_files wrote to train.csv
    assert saved["data"]["stats"]["train"]["duplicate_texts"] == len(train_texts) - len(set(train_texts))
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert "スポーツ" in card and '"duplicate_texts"' in card


def _weights(model_dir: Path) -> dict:
    return load_file(str(model_dir / "model.safetensors"))


def test_interrupted_and_resumed_run_equals_uninterrupted(topic_files):
    """Killed mid-epoch (after step 5 of 6 in epoch 1) and resumed: same weights and metrics, dropout on."""
    tmp = topic_files
    common = dict(num_train_epochs=2, checkpointing_steps=2, per_device_train_batch_size=24)
    every_step = crash_after(step=-1)  # never crashes: records the steps of the uninterrupted run
    reference = run_training(tiny_args(tmp, output_dir=str(tmp / "reference"), **common), on_step_end=every_step)
    assert every_step.seen == list(range(1, 13))

    crash = crash_after(5)
    with pytest.raises(SimulatedCrash):
        run_training(tiny_args(tmp, output_dir=str(tmp / "resumed"), **common), on_step_end=crash)
    assert crash.seen == [1, 2, 3, 4, 5]
    assert not (tmp / "resumed").exists(), "a crashed run must not leave a model dir"
    checkpoints = sorted(p.name for p in (tmp / "resumed.checkpoints").iterdir() if p.name.startswith("step_"))
    assert checkpoints == ["step_00000002", "step_00000004"]  # keep-last-2 of steps 2, 4
    after_resume = crash_after(step=-1)
    resumed = run_training(tiny_args(tmp, output_dir=str(tmp / "resumed"), resume_from_checkpoint="auto", **common),
                           on_step_end=after_resume)
    assert after_resume.seen == list(range(5, 13)), "the resumed run continues after the step-4 checkpoint"

    reference_weights, resumed_weights = _weights(tmp / "reference"), _weights(tmp / "resumed")
    assert reference_weights.keys() == resumed_weights.keys()
    for name in reference_weights:
        np.testing.assert_allclose(resumed_weights[name], reference_weights[name], atol=1e-6, err_msg=name)
    scalars = lambda metrics: {k: v for k, v in metrics.items() if isinstance(v, float)}  # noqa: E731
    assert scalars(resumed["validation"]) == pytest.approx(scalars(reference["validation"]), abs=1e-6)
    assert resumed["validation"]["confusion_matrix"] == reference["validation"]["confusion_matrix"]
    assert resumed["global_step"] == reference["global_step"] == 12  # 144 rows / 24 x 2 epochs


def test_progress_in_a_log_file_is_plain_lines(topic_files, capfd, monkeypatch):
    """stderr not a terminal (pytest, CI, nohup): one plain line per interval, no carriage-return frames."""
    from jbert.core.progress import INTERVAL_ENV

    monkeypatch.setenv(INTERVAL_ENV, "1e-9")  # a line at every step, so each one can be checked
    run_training(tiny_args(topic_files, disable_tqdm=None, num_train_epochs=1, logging_steps=3))
    err = capfd.readouterr().err
    assert "\r" not in err
    lines = [line for line in err.splitlines() if " training: " in line]
    assert len(lines) == 9, lines  # 144 rows / 16 = 9 optimizer steps
    assert [line.split(" training: ")[1].split(" ")[0] for line in lines] == [f"{i}/9" for i in range(1, 10)]
    assert "steps/s" in lines[0] and "ETA" in lines[0] and "loss=" not in lines[1]
    assert "loss=" in lines[2] and "(100%)" in lines[-1]


def test_gradient_accumulation_equals_larger_batch(topic_files):
    """2 accumulated micro-batches of 8 == one batch of 16 (dropout off): accumulation steps at the right time."""
    tmp = topic_files
    common = dict(num_train_epochs=1, dropout=0.0, max_grad_norm=0)
    run_training(tiny_args(tmp, output_dir=str(tmp / "big"), per_device_train_batch_size=16, **common))
    run_training(tiny_args(tmp, output_dir=str(tmp / "accum"), per_device_train_batch_size=8,
                           gradient_accumulation_steps=2, **common))
    big, accum = _weights(tmp / "big"), _weights(tmp / "accum")
    for name in big:
        np.testing.assert_allclose(accum[name], big[name], atol=2e-5, err_msg=name)


def test_multi_label_end_to_end(tmp_path):
    rng = random.Random(0)
    rows = []
    for _ in range(200):
        chosen = [topic for topic in TOPICS if rng.random() < 0.45] or [rng.choice(list(TOPICS))]
        words = [word for topic in chosen for word in rng.sample(TOPICS[topic], 2)]
        rng.shuffle(words)
        rows.append({"text": "、".join(words) + "の話", "label": "|".join(chosen)})
    write_training_csv(tmp_path / "train.csv", rows[:160])
    write_training_csv(tmp_path / "valid.csv", rows[160:])
    metrics = run_training(tiny_args(tmp_path, label_delimiter="|", num_train_epochs=30, learning_rate=1e-3,
                                     warmup_ratio=0.1))
    assert metrics["problem_type"] == "multi_label_classification"
    assert metrics["validation"]["micro_f1"] >= 0.8, metrics["validation"]
    config = json.loads((tmp_path / "model" / "config.json").read_text(encoding="utf-8"))
    assert config["problem_type"] == "multi_label_classification"
    assert sorted(config["id2label"].values()) == sorted(TOPICS)


def test_sentence_pair_and_regression_end_to_end(tmp_path):
    """Pairs with a float label that needs both sentences: the sum of the two topics' values."""
    rng = random.Random(1)
    value = {topic: float(i) for i, topic in enumerate(TOPICS)}
    rows = []
    for _ in range(192):
        first, second = rng.choice(list(TOPICS)), rng.choice(list(TOPICS))
        rows.append({"s1": rng.choice(FILLERS) + rng.choice(TOPICS[first]) + "です",
                     "s2": rng.choice(TOPICS[second]) + "でした", "score": value[first] + value[second]})
    write_training_csv(tmp_path / "train.csv", rows[:160])
    write_training_csv(tmp_path / "valid.csv", rows[160:])
    metrics = run_training(tiny_args(tmp_path, text_column="s1", text_pair_column="s2", label_column="score",
                                     task="regression", num_train_epochs=10, learning_rate=1e-3))
    assert metrics["problem_type"] == "regression"
    assert metrics["validation"]["pearson"] > 0.6, metrics["validation"]
    settings = json.loads((tmp_path / "model" / "jbert.json").read_text(encoding="utf-8"))
    assert settings["text_pair_column"] == "s2" and settings["problem_type"] == "regression"
    example = json.loads((tmp_path / "model" / "examples.jsonl").read_text(encoding="utf-8").splitlines()[0])
    assert {"text", "text_pair", "label"} <= set(example)


# ---------------------------------------------------------------- bad input: exit code 2, nothing written

def _cli(argv) -> int:
    import train as train_script  # the script users run: its run() is what `python train.py` exits with

    return train_script.run(argv)


def test_missing_train_file_is_exit_2(tmp_path, capsys):
    code = _cli(["--from_scratch", "tiny", "--train_file", str(tmp_path / "nope.csv"),
                 "--output_dir", str(tmp_path / "out")])
    assert code == 2
    assert "nope.csv does not exist" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_contradictory_options_all_reported_at_once(tmp_path, capsys):
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    code = _cli(["--from_scratch", "tiny", "--model_name_or_path", "x", "--train_file", str(tmp_path / "train.csv"),
                 "--task", "multi_label", "--metric_for_best_model", "pearson", "--learning_rate", "-1"])
    err = capsys.readouterr().err
    assert code == 2
    assert "exclude each other" in err and "regression metric" in err and "learning_rate" in err


def test_model_path_that_does_not_exist_is_exit_2(tmp_path, capsys):
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    code = _cli(["--model_name_or_path", str(tmp_path / "no-model"), "--train_file", str(tmp_path / "train.csv")])
    assert code == 2
    assert "no-model does not exist" in capsys.readouterr().err


def test_non_empty_output_dir_refused_before_training(topic_files, capsys):
    out = topic_files / "model"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    code = _cli(tiny_args(topic_files))
    assert code == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


def test_resume_with_other_world_size_is_refused(topic_files, capsys):
    from jbert.train.checkpoint import STATE_FILE

    with pytest.raises(SimulatedCrash):
        run_training(tiny_args(topic_files, checkpointing_steps=2), on_step_end=crash_after(2))
    state_file = topic_files / "model.checkpoints" / "step_00000002" / STATE_FILE
    state = json.loads(state_file.read_text())
    state["world_size"] = 2
    state_file.write_text(json.dumps(state))
    code = _cli(tiny_args(topic_files, resume_from_checkpoint="auto", checkpointing_steps=2))
    assert code == 2
    assert "written by 2 process(es)" in capsys.readouterr().err


def test_unknown_yaml_key_and_bad_yaml(tmp_path):
    bad_key = tmp_path / "bad.yaml"
    bad_key.write_text("learning_rte: 0.1\n")
    with pytest.raises(UserError, match="unknown options"):
        load_yaml_recipe(str(bad_key))
    broken = tmp_path / "broken.yaml"
    broken.write_text("a: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        load_yaml_recipe(str(broken))


@pytest.mark.parametrize("recipe", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_recipe_parses_into_train_config(recipe):
    values = load_yaml_recipe(str(recipe))
    config = TrainConfig(**values)
    assert config.model_name_or_path or config.from_scratch


def test_flags_override_yaml(tmp_path):
    recipe = tmp_path / "r.yaml"
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    recipe.write_text(f"from_scratch: tiny\ntrain_file: {tmp_path / 'train.csv'}\nlearning_rate: 0.1\nseed: 3\n")
    config = parse_config(["--config", str(recipe), "--learning_rate", "0.002"])
    assert config.learning_rate == 0.002 and config.seed == 3 and config.from_scratch == "tiny"
