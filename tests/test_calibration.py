"""Temperature scaling: the fit, the figures, the training run's files, the export and the runtime."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXTS, make_tiny_model_dir, run_training, tiny_args, topic_rows, write_training_csv

from jbert.core.artifacts import MANIFEST_FILE, SETTINGS_FILE, JbertSettings, Manifest, read_json, write_json
from jbert.core.errors import UserError
from jbert.core.postprocessing import scale_logits, softmax
from jbert.train.calibration import (
    brier_score,
    calibrate_model_dir,
    calibration_figures,
    ece_sampling_floor,
    expected_calibration_error,
    fit_temperature,
    log_loss,
    reliability_bins,
)


def torch_logits(model_dir: Path, texts) -> np.ndarray:
    """Reference logits of the PyTorch model with its reference tokenizer (texts already normalised)."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    with torch.no_grad():
        return model(**tokenizer(list(texts), padding=True, truncation=True, max_length=64, return_tensors="pt")).logits.numpy()


# ------------------------------------------------------------------ the fit and the figures


def test_fit_recovers_a_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(scale=2.0, size=(20000, 4))
    # Labels drawn from softmax(true_logits): those scores are calibrated by construction. The
    # model's logits are the true ones times 2.5 (over-confident), so T = 2.5 undoes it.
    probabilities = softmax(true_logits)
    labels = np.array([rng.choice(4, p=row) for row in probabilities])
    temperature = fit_temperature(true_logits * 2.5, labels)
    assert temperature == pytest.approx(2.5, rel=0.05)
    # And an under-confident model gets T < 1.
    assert fit_temperature(true_logits * 0.5, labels) == pytest.approx(0.5, rel=0.05)


def test_a_validation_set_without_mistakes_leaves_the_scores_raw(tmp_path):
    """Separable logits: the likelihood falls forever as T -> 0, so no temperature is kept (not T at its bound)."""
    labels = np.array([0, 1] * 50)
    logits = np.stack([np.where(labels == 0, 3.0, -3.0), np.where(labels == 0, -3.0, 3.0)], axis=1)
    assert fit_temperature(logits, labels) < 0.2  # what the bare fit would serve: every score about 1.0
    report = calibrate_model_dir(tmp_path, {"validation": (logits, labels)})
    assert report["method"] == "none" and report["temperature"] is None and "no mistakes" in report["reason"]


def test_figures_match_hand_computation():
    probabilities = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    # log-loss: -(ln .9 + ln .4 + ln .7 + ln .8) / 4
    assert log_loss(probabilities, labels) == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.7)
                                                              + math.log(0.8)) / 4)
    # Brier: ((.1^2 + .1^2) + (.6^2 + .6^2) + (.3^2 + .3^2) + (.2^2 + .2^2)) / 4
    assert brier_score(probabilities, labels) == pytest.approx((0.02 + 0.72 + 0.18 + 0.08) / 4)
    # Confidences .9 (right), .6 (wrong), .7 (right), .8 (right) fall in 4 different bins of 15:
    # ECE = (|1-.9| + |0-.6| + |1-.7| + |1-.8|) / 4
    assert expected_calibration_error(probabilities, labels) == pytest.approx((0.1 + 0.6 + 0.3 + 0.2) / 4)
    # Two rows in one bin: the bin's accuracy and mean confidence are compared, not each row.
    shared = np.array([[0.61, 0.39], [0.63, 0.37]])
    assert expected_calibration_error(shared, np.array([0, 1])) == pytest.approx(abs(0.5 - 0.62))
    bins = reliability_bins(shared, np.array([0, 1]))
    assert len(bins) == 15 and sum(row["count"] for row in bins) == 2
    assert [row for row in bins if row["count"]][0]["lower"] == pytest.approx(9 / 15)


def test_ece_sampling_floor_is_the_mean_ece_of_labels_drawn_from_the_scores():
    generator = np.random.default_rng(3)
    probabilities = softmax(generator.normal(size=(300, 3)) * 2)
    # The same draws, measured with the ECE definition itself (one draw per row, argmax correct or not).
    draws, replay, measured = 50, np.random.default_rng(0), []
    for _ in range(draws):
        correct = replay.random(300) < probabilities.max(axis=1)
        top = probabilities.argmax(axis=1)
        labels = np.where(correct, top, (top + 1) % 3)
        measured.append(expected_calibration_error(probabilities, labels))
    assert ece_sampling_floor(probabilities, draws=draws, seed=0) == pytest.approx(np.mean(measured), abs=1e-12)
    # Sampling noise: positive on few texts, smaller on many; certain scores have none.
    many = softmax(np.random.default_rng(4).normal(size=(30_000, 3)) * 2)
    assert ece_sampling_floor(many) < ece_sampling_floor(probabilities) / 3
    assert ece_sampling_floor(np.array([[1.0, 0.0]] * 50)) == 0.0


def test_temperature_never_changes_the_argmax_and_one_changes_nothing():
    rng = np.random.default_rng(1)
    logits = rng.normal(scale=5.0, size=(500, 6)).astype(np.float32)
    for temperature in (0.05, 0.3, 1.7, 20.0):
        scaled = softmax(scale_logits(logits.astype(np.float64), temperature))
        np.testing.assert_array_equal(scaled.argmax(axis=1), logits.argmax(axis=1))
        assert calibration_figures(logits, logits.argmax(axis=1), temperature)["accuracy"] == 1.0
    assert scale_logits(logits, None) is logits and scale_logits(logits, 1.0) is logits
    with pytest.raises(ValueError):
        scale_logits(logits, 0.0)


def test_settings_and_manifest_keep_old_files_and_refuse_bad_temperatures(tmp_path):
    JbertSettings().save(tmp_path)
    assert "temperature" not in read_json(tmp_path / SETTINGS_FILE)  # no calibration: today's jbert.json
    assert JbertSettings.load(tmp_path).temperature is None
    JbertSettings(temperature=1.5).save(tmp_path)
    assert JbertSettings.load(tmp_path).temperature == 1.5
    write_json(tmp_path / SETTINGS_FILE, {**JbertSettings().to_dict(), "temperature": -1})
    with pytest.raises(UserError, match="temperature must be a positive number"):
        JbertSettings.load(tmp_path)
    manifest = {"format_version": 1, "task": "single_label_classification", "labels": ["a", "b"], "max_length": 8,
                "is_pair": False, "default_model": "fp32", "models": {"fp32": {"file": "model.onnx", "precision": "fp32"}}}
    assert Manifest.from_dict(manifest).temperature is None
    with pytest.raises(UserError, match="temperature"):
        Manifest.from_dict({**manifest, "temperature": "hot"})


# ------------------------------------------------------------------ a training run


def _write_data(directory: Path, validation_rows: list[dict]) -> None:
    write_training_csv(directory / "train.csv", topic_rows(24, seed=1))
    write_training_csv(directory / "valid.csv", validation_rows)
    write_training_csv(directory / "test.csv", topic_rows(6, seed=3))


def test_training_fits_and_records_a_temperature(tmp_path):
    _write_data(tmp_path, topic_rows(10, seed=2))
    metrics = run_training(tiny_args(tmp_path, test_file=str(tmp_path / "test.csv"), num_train_epochs=3,
                                     baseline="none"))
    model_dir = tmp_path / "model"
    calibration = metrics["calibration"]
    temperature = calibration["temperature"]
    assert calibration["method"] == "temperature" and 0.05 <= temperature <= 20
    assert JbertSettings.load(model_dir).temperature == temperature
    assert read_json(model_dir / "metrics.json")["calibration"] == calibration
    for split in ("validation", "test"):
        before, after = calibration[split]["before"], calibration[split]["after"]
        assert before["accuracy"] == after["accuracy"]  # argmax unchanged
        assert set(before) == {"accuracy", "ece", "brier", "log_loss"}
        assert 0 < calibration[split]["ece_sampling_floor"] < 1
    # The fit minimises validation NLL, so the validation log-loss cannot get worse.
    assert calibration["validation"]["after"]["log_loss"] <= calibration["validation"]["before"]["log_loss"] + 1e-9
    assert calibration["validation"]["before"]["accuracy"] == pytest.approx(metrics["validation"]["accuracy"])
    assert (model_dir / "reliability.png").stat().st_size > 1000
    card = (model_dir / "README.md").read_text(encoding="utf-8")
    assert "## Calibration" in card and "![reliability.png](reliability.png)" in card and f"{temperature:.4f}" in card
    assert f"test {calibration['test']['ece_sampling_floor']:.4f}" in card
    # predictions_test.jsonl scores are the calibrated ones, as serving gives them.
    from jbert.train.saved_predictions import predict
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    import torch

    rows = [json.loads(line) for line in (model_dir / "predictions_test.jsonl").read_text(encoding="utf-8").splitlines()]
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    logits = predict(model, AutoTokenizer.from_pretrained(model_dir), [r["text"] for r in rows], None, 32, 8,
                     torch.device("cpu"))
    expected = softmax(logits.astype(np.float64) / temperature).max(axis=1)
    np.testing.assert_allclose([r["score"] for r in rows], expected, rtol=1e-5)


def test_calibrate_none_writes_todays_model_dir(tmp_path):
    _write_data(tmp_path, topic_rows(10, seed=2))
    metrics = run_training(tiny_args(tmp_path, calibrate="none", max_train_steps=2, baseline="none"))
    model_dir = tmp_path / "model"
    assert "calibration" not in metrics and not (model_dir / "reliability.png").exists()
    assert "temperature" not in read_json(model_dir / SETTINGS_FILE)
    assert "## Calibration" not in (model_dir / "README.md").read_text(encoding="utf-8")


def test_one_class_validation_asked_for_is_refused_before_anything_is_written(tmp_path):
    one_class = [row for row in topic_rows(10, seed=2) if row["label"] == topic_rows(1, seed=2)[0]["label"]]
    _write_data(tmp_path, one_class)
    with pytest.raises(UserError, match="validation set holds 1 class.*--calibrate none"):
        run_training(tiny_args(tmp_path, calibrate="temperature"))
    assert not (tmp_path / "model").exists() and not (tmp_path / "model.checkpoints").exists()
    # Left at its default, the same data trains without a temperature and says why.
    metrics = run_training(tiny_args(tmp_path, max_train_steps=2, baseline="none"))
    assert metrics["calibration"]["method"] == "none" and "1 class" in metrics["calibration"]["reason"]
    assert JbertSettings.load(tmp_path / "model").temperature is None


# ------------------------------------------------------------------ export and serving


def test_export_carries_the_temperature_and_the_runtime_applies_it(tmp_path):
    from jbert.export import ExportOptions, export_model
    from jbert.serve.runtime import OnnxClassifier

    model_dir = make_tiny_model_dir(tmp_path / "model")
    settings = JbertSettings.load(model_dir)
    settings.temperature = 0.4  # sharpen the tiny random model's flat scores: a visible change
    settings.save(model_dir)
    export_model(model_dir, tmp_path / "export", ExportOptions(show_progress=False))
    assert read_json(tmp_path / "export" / MANIFEST_FILE)["temperature"] == 0.4
    classifier = OnnxClassifier.from_export_dir(tmp_path / "export", model="fp32", num_threads=1)
    assert classifier.info()["temperature"] == 0.4
    logits = torch_logits(model_dir, TEXTS).astype(np.float64)
    expected = softmax(logits / 0.4)
    labels = ["negative", "neutral", "positive"]
    results = classifier.predict(TEXTS, top_k=3)
    got = np.array([[next(s["score"] for s in r["scores"] if s["label"] == name) for name in labels] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert [r["label"] for r in results] == [labels[i] for i in logits.argmax(axis=1)]  # argmax unchanged
    # Raw logits stay raw (parity is checked on them).
    np.testing.assert_allclose(classifier.run_logits(classifier.encode(TEXTS)), logits, atol=1e-4)


def test_export_without_temperature_scores_exactly_as_before(tmp_path):
    from jbert.export import ExportOptions, export_model
    from jbert.serve.runtime import OnnxClassifier

    model_dir = make_tiny_model_dir(tmp_path / "model")
    export_model(model_dir, tmp_path / "export", ExportOptions(show_progress=False))
    manifest_path = tmp_path / "export" / MANIFEST_FILE
    assert read_json(manifest_path)["temperature"] is None
    # An export written before temperatures existed has no key at all.
    values = read_json(manifest_path)
    del values["temperature"]
    write_json(manifest_path, values)
    classifier = OnnxClassifier.from_export_dir(tmp_path / "export", model="fp32", num_threads=1)
    assert classifier.temperature is None
    logits = classifier.run_logits(classifier.encode(TEXTS))
    # Bit for bit the computation serving did before: softmax of the float64 logits.
    np.testing.assert_array_equal(classifier.scores_from_logits(logits), softmax(logits.astype(np.float64)))
