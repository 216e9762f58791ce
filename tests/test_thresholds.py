"""Decision rules tuned on validation: per-label thresholds (multi-label) and abstention (single-label).

From the tuning functions to training's model directory, the export manifest and serving (runtime,
scoring columns), plus: no rule -> today's outputs exactly, and the bad inputs (exit-2 UserErrors).
"""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import pytest

from conftest import TEXTS, cached_export, make_tiny_model_dir, run_training, tiny_args, topic_rows, write_training_csv

from jbert.core.artifacts import MANIFEST_FILE, JbertSettings, read_json
from jbert.core.errors import UserError
from jbert.core.export_dir import ExportDir
from jbert.core.postprocessing import abstentions, label_thresholds_array, predictions_from_logits, scale_logits, softmax
from jbert.tokenization import load_tokenizer
from jbert.train import thresholds
from jbert.train.config import parse_config

# ------------------------------------------------------------------ the tuning functions


def test_best_f1_threshold_finds_the_gap_and_ties_keep_the_default():
    scores = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.9])
    truth = np.array([0, 0, 0, 1, 1, 1])
    threshold, f1 = thresholds.best_f1_threshold(scores, truth, default=0.5)
    assert threshold == pytest.approx(0.25) and f1 == pytest.approx(1.0)  # midway between 0.2 and 0.3
    # perfectly separated at the default already: the default stays (no move on a tie)
    assert thresholds.best_f1_threshold(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1]), 0.5) == (0.5, 1.0)


def test_labels_with_few_positives_keep_the_global_threshold():
    rng = np.random.default_rng(0)
    positives = rng.random(200) < 0.3
    common = np.where(positives, 0.3 + 0.1 * rng.random(200), 0.1 * rng.random(200))  # separable at 0.2, not 0.5
    rare_truth = np.zeros(200, dtype=bool)
    rare_truth[:3] = True  # 3 positives: too few to tune
    rare = np.where(rare_truth, 0.35, 0.05)
    tuned = thresholds.tune_label_thresholds(np.stack([common, rare], axis=1),
                                             np.stack([positives, rare_truth], axis=1).astype(float),
                                             ["common", "rare"], default=0.5)
    assert 0.1 < tuned["thresholds"]["common"] < 0.3 and tuned["per_label"]["common"]["tuned"]
    assert tuned["per_label"]["common"]["f1_before"] == 0.0 and tuned["per_label"]["common"]["f1_after"] == 1.0
    assert tuned["thresholds"]["rare"] == 0.5 and not tuned["per_label"]["rare"]["tuned"]
    assert tuned["micro_f1_after"] > tuned["micro_f1_before"]


def test_multi_label_target_precision_gives_each_label_the_lowest_threshold_reaching_it():
    rng = np.random.default_rng(1)
    truth = rng.random((300, 2)) < 0.4
    # label a: positives score higher with overlap; label b: no threshold makes positives 99% precise
    scores = np.where(truth, 0.4 + 0.6 * rng.random((300, 2)), 0.6 * rng.random((300, 2)))
    scores[:, 1] = rng.random(300)
    tuned = thresholds.tune_label_thresholds(scores[:, :1], truth[:, :1].astype(float), ["a"], 0.5, target_precision=0.9)
    threshold = tuned["thresholds"]["a"]
    predicted = scores[:, 0] > threshold
    assert truth[predicted, 0].mean() >= 0.9 and tuned["tuned_for"] == "precision 0.9"
    # Every lower cut (each distinct score below the one the threshold sits just above) stays below 0.9.
    lower = [t for t in np.unique(scores[:, 0]) if t < threshold][:-1]
    assert lower and all(truth[scores[:, 0] > t, 0].mean() < 0.9 for t in lower)
    with pytest.raises(UserError, match=r"--target_precision 0.99 is not reached .* label\(s\) \['b'\]"):
        thresholds.tune_label_thresholds(scores, truth.astype(float), ["a", "b"], 0.5, target_precision=0.99)


def test_precision_coverage_curve_and_the_smallest_threshold_for_a_precision():
    top = np.array([0.95, 0.9, 0.9, 0.8, 0.7, 0.6])
    correct = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    curve = thresholds.precision_coverage_curve(top, correct)
    np.testing.assert_allclose(curve["thresholds"], [0.95, 0.9, 0.8, 0.7, 0.6])
    np.testing.assert_allclose(curve["precision"], [1, 2 / 3, 3 / 4, 3 / 5, 3 / 6])  # ties accepted together
    np.testing.assert_allclose(curve["coverage"], [1 / 6, 3 / 6, 4 / 6, 5 / 6, 1])
    assert thresholds.threshold_for_precision(curve, 0.75) == 0.8  # the lowest reaching it, not the first
    assert thresholds.threshold_for_precision(curve, 0.6) == 0.7
    assert thresholds.threshold_for_precision(curve, 1.0) == 0.95


def test_an_unreachable_target_precision_is_a_user_error():
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6]])
    with pytest.raises(UserError, match="--target_precision 0.9 is not reached.*best precision of the accepted"):
        thresholds.choose_abstention(probabilities, np.array([1, 0, 1]), None, 0.9)  # the surest one is wrong
    rule = thresholds.choose_abstention(probabilities, np.array([0, 0, 1]), None, 0.9)
    assert rule["validation"]["min_confidence"] == pytest.approx(0.6) and rule["validation"]["coverage"] == 1.0


def test_no_rule_gives_the_global_threshold_itself_and_never_abstains():
    logits = np.random.default_rng(1).normal(size=(50, 3)) * 3
    assert label_thresholds_array(["a", "b", "c"], None, 0.5) == 0.5
    np.testing.assert_array_equal(
        predictions_from_logits(logits, "multi_label_classification", label_thresholds_array(["a", "b", "c"], {}, 0.5)),
        predictions_from_logits(logits, "multi_label_classification", 0.5))
    assert not abstentions(logits, None).any()
    assert abstentions(np.array([[0.7, 0.3], [0.5, 0.5]]), 0.7).tolist() == [False, True]  # equal is accepted


# ------------------------------------------------------------------ options


@pytest.mark.parametrize("flags, message", [
    (["--min_confidence", "0"], r"--min_confidence must be in \(0, 1\]"),
    (["--min_confidence", "1.5"], r"--min_confidence must be in \(0, 1\]"),
    (["--target_precision", "-0.1"], r"--target_precision must be in \(0, 1\]"),
    (["--min_confidence", "0.5", "--target_precision", "0.9"], "exclude each other"),
    (["--target_precision", "0.9", "--task", "regression"], "applies to single-label and multi-label classification"),
    (["--min_confidence", "0.9", "--task", "multi_label"], "applies to single-label classification"),
    (["--multi_label_thresholds", "best"], "invalid choice"),
])
def test_bad_decision_options_are_refused_up_front(topic_files, flags, message, capsys):
    with pytest.raises((UserError, SystemExit)) as caught:
        parse_config(tiny_args(topic_files) + flags)
    text = str(caught.value) if isinstance(caught.value, UserError) else capsys.readouterr().err
    assert caught.type is UserError or caught.value.code == 2
    assert __import__("re").search(message, text), text


# ------------------------------------------------------------------ serving: runtime and scoring


def _classifier(export_path: Path, **rule):
    from jbert.serve.runtime import OnnxClassifier

    export = ExportDir.open(export_path)
    for name, value in rule.items():
        setattr(export.settings, name, value)
    return OnnxClassifier.from_export_dir(export)


def test_runtime_abstains_below_min_confidence_and_is_unchanged_without_it(tmp_path_factory):
    _, export_path = cached_export(tmp_path_factory)
    plain = _classifier(export_path).predict(TEXTS, top_k=2)
    assert all("abstained" not in result for result in plain)
    assert "min_confidence" not in _classifier(export_path).info()
    everything = _classifier(export_path, min_confidence=1.0)  # a random tiny model is never that sure
    for result, reference in zip(everything.predict(TEXTS, top_k=2), plain):
        assert result["abstained"] is True and result["label"] is None
        assert result["label_if_accepted"] == reference["label"] and result["score"] == reference["score"]
        assert result["scores"] == reference["scores"]
    nothing = _classifier(export_path, min_confidence=1e-6)
    assert [{k: v for k, v in r.items() if k != "abstained"} for r in nothing.predict(TEXTS, top_k=2)] == plain
    assert nothing.info()["min_confidence"] == 1e-6


def test_runtime_applies_per_label_thresholds(tmp_path_factory):
    labels = ("food", "service", "price")
    _, export_path = cached_export(tmp_path_factory, "multi_label_classification", labels=labels)
    tuned = _classifier(export_path, label_thresholds={"food": 1e-9, "service": 1 - 1e-9})
    for result in tuned.predict(TEXTS):
        assert "food" in result["labels"] and "service" not in result["labels"]
    assert tuned.info()["label_thresholds"]["food"] == 1e-9


def test_scoring_writes_the_abstained_columns(tmp_path, tmp_path_factory):
    from jbert.serve.scoring.options import ScoreOptions
    from jbert.serve.scoring.run import score_file

    _, export_path = cached_export(tmp_path_factory)
    source = tmp_path / "in.csv"
    source.write_text("id,text\n1,この商品はとても良いです。\n2,最悪の料理でした。\n", encoding="utf-8")
    classifier = _classifier(export_path, min_confidence=1.0)
    score_file(ScoreOptions(export_dir=str(export_path), input=str(source), output=str(tmp_path / "out.csv"),
                            show_progress=False), classifier)
    with open(tmp_path / "out.csv", encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0])[:6] == ["id", "text", "predicted_label", "abstained", "predicted_label_if_accepted",
                                 "predicted_score"]
    assert all(r["abstained"] == "true" and r["predicted_label"] == "" and r["predicted_label_if_accepted"]
               for r in rows)


# ------------------------------------------------------------------ export and reload


def test_rules_survive_export_and_reload_and_old_models_export_as_before(tmp_path):
    from jbert.export import ExportOptions, export_model
    from jbert.serve.runtime import OnnxClassifier

    labels = ("food", "service", "price")
    model_dir = make_tiny_model_dir(tmp_path / "model", "multi_label_classification", labels=labels)
    plain_export = tmp_path / "plain"
    export_model(model_dir, plain_export, ExportOptions(show_progress=False))
    assert "decision" not in read_json(plain_export / MANIFEST_FILE)
    assert "label_thresholds" not in read_json(plain_export / "jbert.json")

    settings = JbertSettings.load(model_dir)
    settings.label_thresholds = {"food": 0.2, "service": 0.5, "price": 0.8}
    settings.save(model_dir)
    tuned_export = tmp_path / "tuned"
    export_model(model_dir, tuned_export, ExportOptions(show_progress=False))
    manifest = read_json(tuned_export / MANIFEST_FILE)
    assert manifest["decision"] == {"label_thresholds": settings.label_thresholds, "default_threshold": 0.5}
    classifier = OnnxClassifier.from_export_dir(tuned_export)
    np.testing.assert_array_equal(classifier.threshold, [0.2, 0.5, 0.8])
    scores = classifier.scores_from_logits(classifier.run_logits(classifier.encode(TEXTS)))
    for result, row in zip(classifier.predict(TEXTS), scores):
        assert result["labels"] == [name for name, score, cut in zip(labels, row, (0.2, 0.5, 0.8)) if score > cut]


# ------------------------------------------------------------------ training


def test_training_with_a_target_precision_writes_the_rule_and_its_report(topic_files):
    output = topic_files / "model"
    run_training(tiny_args(topic_files, target_precision=0.9, test_file=str(topic_files / "test.csv")))
    settings = JbertSettings.load(output)
    metrics = json.loads((output / "metrics.json").read_text(encoding="utf-8"))
    rule = metrics["decision"]["abstention"]
    assert settings.min_confidence == rule["validation"]["min_confidence"]
    assert rule["validation"]["precision"] >= 0.9 and 0 < rule["validation"]["coverage"] <= 1
    assert rule["curve"] and all({"threshold", "precision", "coverage"} <= set(p) for p in rule["curve"])
    assert (output / thresholds.PLOT_FILE).is_file()
    assert "## Abstention" in (output / "README.md").read_text(encoding="utf-8")
    assert "abstention" in metrics["test"]
    rows = [json.loads(line) for line in (output / "predictions_test.jsonl").read_text(encoding="utf-8").splitlines()]
    # The rule holds on the scores serving gives (softmax(logits / T) when a temperature was fitted;
    # this fixture's validation set has no mistakes, so calibration is skipped and T is absent).
    assert all(row["abstained"] == (row["score"] < settings.min_confidence) for row in rows)


def test_an_unreached_target_precision_writes_nothing(topic_files, monkeypatch):
    monkeypatch.setattr(thresholds, "threshold_for_precision", lambda curve, target: None)
    with pytest.raises(UserError, match="is not reached on the validation set"):
        run_training(tiny_args(topic_files, target_precision=0.99, num_train_epochs=1))
    assert not (topic_files / "model").exists()
    assert not (topic_files / "model.checkpoints").exists()


def test_http_v1_predict_says_abstained_and_tei_predict_keeps_its_shape(tmp_path_factory):
    from fastapi.testclient import TestClient

    from jbert.serve.http.app import create_app

    _, export_path = cached_export(tmp_path_factory)
    plain = _classifier(export_path)
    with TestClient(create_app(plain)) as client:
        before_v1 = client.post("/v1/predict", json={"inputs": TEXTS[:2]}).json()
        before_tei = client.post("/predict", json={"inputs": TEXTS[0]}).json()
    with TestClient(create_app(_classifier(export_path, min_confidence=1.0))) as client:
        answers = client.post("/v1/predict", json={"inputs": TEXTS[:2]}).json()
        tei = client.post("/predict", json={"inputs": TEXTS[0]}).json()
        assert client.get("/info").json()["min_confidence"] == 1.0
    assert all("abstained" not in answer for answer in before_v1)
    for answer, reference in zip(answers, before_v1):
        assert answer["abstained"] is True and answer["label"] is None
        assert answer["label_if_accepted"] == reference["label"] and answer["score"] == reference["score"]
    assert tei == before_tei  # TEI's /predict has no abstain outcome: every label's score, as before


@pytest.mark.parametrize("rule", [{"min_confidence": "high"}, {"min_confidence": 0}, {"min_confidence": True},
                                  {"label_thresholds": {"food": 1.5}}, {"label_thresholds": [0.5]}])
def test_a_hand_edited_rule_serving_cannot_apply_is_refused_on_load(tmp_path, rule):
    values = {**JbertSettings().to_dict(), **rule}
    with pytest.raises(UserError, match="jbert.json: (min_confidence|label_thresholds) must"):
        JbertSettings.from_dict(values)


def test_the_abstention_rule_is_chosen_on_the_calibrated_scores_serving_gives(tmp_path):
    """A validation set with mistakes gets a temperature; the rule's threshold is that of softmax(logits / T)."""
    from transformers import AutoModelForSequenceClassification

    from jbert.train.saved_predictions import predict

    rng = random.Random(5)
    labels = sorted({row["label"] for row in topic_rows(1, seed=0)})
    validation = topic_rows(16, seed=2)
    for row in validation:  # a quarter of the labels wrong: mistakes to calibrate on
        if rng.random() < 0.25:
            row["label"] = rng.choice([name for name in labels if name != row["label"]])
    write_training_csv(tmp_path / "train.csv", topic_rows(48, seed=1))
    write_training_csv(tmp_path / "valid.csv", validation)
    run_training(tiny_args(tmp_path, target_precision=0.5))
    output = tmp_path / "model"
    settings = JbertSettings.load(output)
    assert settings.temperature is not None and abs(settings.temperature - 1.0) > 1e-3

    model = AutoModelForSequenceClassification.from_pretrained(output)
    label2id = {name: int(i) for name, i in model.config.label2id.items()}
    logits = predict(model, load_tokenizer(str(output)), [row["text"] for row in validation], None, 32, 64, "cpu")
    ids = np.array([label2id[row["label"]] for row in validation])
    calibrated = thresholds.choose_abstention(softmax(scale_logits(logits, settings.temperature)), ids, None, 0.5)
    raw = thresholds.choose_abstention(softmax(logits), ids, None, 0.5)
    assert settings.min_confidence == pytest.approx(calibrated["validation"]["min_confidence"], abs=1e-6)
    assert settings.min_confidence != pytest.approx(raw["validation"]["min_confidence"], abs=1e-6)
