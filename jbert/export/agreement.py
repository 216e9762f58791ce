"""How closely an int8 model keeps the fp32 model's outputs, in the measure that fits the task.

- single-label classification: label agreement, the fraction of texts whose predicted class
  equals fp32's;
- multi-label classification: per-label decision agreement, the fraction of (text, label)
  decisions (sigmoid above the model's threshold) equal to fp32's; the fraction of texts with the
  identical label set is reported beside it;
- regression: the fraction of texts whose score has a relative error of at most
  `REGRESSION_TOLERANCE`, relative to the largest of |fp32 score|, the range of the fp32 scores
  over the held-out texts and, where they have labels, the range of the labels; the relative
  errors are reported beside it. A score has no decision to flip; the ranges keep scores near zero
  from turning a tiny absolute error into a huge relative one.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from jbert.core.postprocessing import predictions_from_logits

REGRESSION_TOLERANCE = 0.02

AGREEMENT_MEASURES = {
    "single_label_classification": "label agreement: fraction of texts whose predicted class equals fp32's",
    "multi_label_classification": "per-label decision agreement: fraction of (text, label) decisions (sigmoid > threshold) equal to fp32's",
    "regression": f"fraction of texts whose score differs from fp32's by at most {REGRESSION_TOLERANCE:.0%} of max(|fp32 score|, fp32 score range, label range)",
}


def agreement_figures(reference_logits: np.ndarray, logits: np.ndarray, problem_type: str, threshold: float = 0.5,
                      labels: Sequence = ()) -> dict:
    """{"agreement": fraction in [0, 1], "disagreements": count, ...} of LOGITS against REFERENCE_LOGITS.

    `labels` (regression only; None where unknown) widen the scale errors are relative to.
    """
    reference_logits = np.asarray(reference_logits, dtype=np.float64)
    logits = np.asarray(logits, dtype=np.float64)
    if problem_type == "regression":
        reference, scores = reference_logits[:, 0], logits[:, 0]
        spread = float(reference.max() - reference.min()) if len(reference) > 1 else 0.0
        known = np.array([label for label in labels if label is not None], dtype=np.float64)
        label_range = float(known.max() - known.min()) if known.size > 1 else 0.0
        relative = np.abs(scores - reference) / np.maximum(np.abs(reference), max(spread, label_range, 1e-12))
        within = relative <= REGRESSION_TOLERANCE
        return {"agreement": float(within.mean()), "disagreements": int((~within).sum()), "n": int(len(within)),
                "max_relative_error": float(relative.max(initial=0.0)), "mean_relative_error": float(relative.mean()),
                "score_range": spread, "label_range": label_range}
    reference = predictions_from_logits(reference_logits, problem_type, threshold)
    predicted = predictions_from_logits(logits, problem_type, threshold)
    if problem_type == "multi_label_classification":
        same = np.asarray(reference) == np.asarray(predicted)
        return {"agreement": float(same.mean()), "disagreements": int((~same).sum()), "n": int(same.size),
                "label_set_agreement": float(same.all(axis=1).mean())}
    same = np.asarray(reference) == np.asarray(predicted)
    return {"agreement": float(same.mean()), "disagreements": int((~same).sum()), "n": int(same.size)}


def predicted_labels(logits: np.ndarray, problem_type: str, threshold: float = 0.5) -> list:
    """Per-text predictions in comparable form: class id, tuple of class ids, or the score.

    The decision rule is the one shared by training and serving (`jbert.core.postprocessing`), so "same
    labels" here means what the evaluation metrics counted.
    """
    predictions = predictions_from_logits(logits, problem_type, threshold)
    if problem_type == "multi_label_classification":
        return [tuple(int(i) for i in np.flatnonzero(row)) for row in predictions]
    if problem_type == "regression":
        return [float(value) for value in predictions]
    return [int(i) for i in predictions]


def quality_figures(predictions: list, labels: Sequence, problem_type: str) -> dict:
    """Accuracy (subset accuracy for multi-label) or MSE/Pearson against known labels."""
    known = [(p, y) for p, y in zip(predictions, labels) if y is not None]
    if not known:
        return {}
    if problem_type == "regression":
        predicted = np.array([p for p, _ in known], dtype=np.float64)
        gold = np.array([y for _, y in known], dtype=np.float64)
        figures = {"mse": float(np.mean((predicted - gold) ** 2)), "n_labelled": len(known)}
        if len(known) > 1 and predicted.std() > 0 and gold.std() > 0:
            figures["pearson"] = float(np.corrcoef(predicted, gold)[0, 1])
        return figures
    return {"accuracy": float(np.mean([p == y for p, y in known])), "n_labelled": len(known)}
