"""The TF-IDF + logistic-regression baseline: it learns, it lands in metrics.json and the card, and
the report warns when the model does not beat it."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest

from conftest import TOPICS, run_training, tiny_args, topic_rows

from jbert.train.baseline import compare_with_baseline, fit_baseline


def test_baseline_learns_single_and_multi_label():
    train = topic_rows(30, seed=1)
    valid = topic_rows(10, seed=2)
    names = sorted(TOPICS)
    ids = {name: i for i, name in enumerate(names)}
    result = fit_baseline([r["text"] for r in train], np.array([ids[r["label"]] for r in train]),
                          "single_label_classification", names,
                          {"validation": ([r["text"] for r in valid], np.array([ids[r["label"]] for r in valid]))})
    assert result["validation"]["accuracy"] >= 0.95, result["validation"]
    assert result["validation"]["loss"] < np.log(3)  # better than a uniform guess

    # multi-label: each text mentions one or two topics; one-vs-rest must find both
    rng = random.Random(0)

    def multi(n):
        texts, labels = [], []
        for _ in range(n):
            chosen = rng.sample(names, rng.choice([1, 2]))
            texts.append("と".join(rng.choice(TOPICS[name]) for name in chosen) + "の話")
            labels.append([1.0 if name in chosen else 0.0 for name in names])
        return texts, np.array(labels)

    train_texts, train_labels = multi(120)
    result = fit_baseline(train_texts, train_labels, "multi_label_classification", names,
                          {"validation": multi(40)})
    assert result["validation"]["micro_f1"] >= 0.9, result["validation"]


def test_comparison_warns_only_when_the_model_loses():
    baseline = {"validation": {"macro_f1": 0.80, "loss": 0.5}}
    losing = compare_with_baseline(0.75, baseline, "macro_f1", greater_is_better=True)
    assert not losing["model_is_better"] and "NOT better" in losing["warning"] and "--task mlm" in losing["warning"]
    assert compare_with_baseline(0.85, baseline, "macro_f1", True)["warning"] is None
    # lower-is-better metrics compare the other way round
    assert compare_with_baseline(0.4, baseline, "loss", greater_is_better=False)["warning"] is None
    assert compare_with_baseline(0.6, baseline, "loss", greater_is_better=False)["warning"]
    assert compare_with_baseline(0.9, None, "macro_f1", True) is None


def test_one_step_model_loses_to_baseline_and_the_report_says_so(topic_files, caplog):
    tmp = topic_files
    with caplog.at_level(logging.WARNING, logger="jbert"):
        metrics = run_training(tiny_args(tmp, test_file=str(tmp / "test.csv"), max_train_steps=1))
    baseline = metrics["baseline"]
    # the topic words decide the label: the linear model is near perfect, one BERT step is not
    assert baseline["validation"]["accuracy"] >= 0.95 and baseline["test"]["accuracy"] >= 0.95
    assert baseline["comparison"]["metric"] == "macro_f1" and not baseline["comparison"]["model_is_better"]
    assert any("NOT better than the linear baseline" in r.getMessage() for r in caplog.records)
    saved = json.loads((tmp / "model" / "metrics.json").read_text(encoding="utf-8"))
    assert saved["baseline"]["test"]["macro_f1"] == pytest.approx(baseline["test"]["macro_f1"])
    card = (tmp / "model" / "README.md").read_text(encoding="utf-8")
    assert "## Baseline: TF-IDF char 1-3 grams + logistic regression" in card
    assert "baseline (test)" in card and "**Warning:**" in card


def test_baseline_none_skips_it(topic_files):
    metrics = run_training(tiny_args(topic_files, max_train_steps=1, baseline="none"))
    assert "baseline" not in metrics
    assert "## Baseline" not in (topic_files / "model" / "README.md").read_text(encoding="utf-8")
