"""Evaluation metrics with scikit-learn (no metric code is downloaded); decision rules live in postprocessing.py."""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    mean_absolute_error,
    mean_squared_error,
    precision_recall_fscore_support,
)

from jbert.core.errors import UserError
from jbert.core.postprocessing import predictions_from_logits

LOWER_IS_BETTER = {"loss", "mse", "rmse", "mae"}
DEFAULT_METRIC = {
    "single_label_classification": "macro_f1",
    "multi_label_classification": "micro_f1",
    "regression": "pearson",
}


def _per_class(true, predicted, label_names, **kwargs) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        true, predicted, zero_division=0, **kwargs
    )
    return {
        name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
        for name, p, r, f, s in zip(label_names, precision, recall, f1, support)
    }


def compute_metrics(logits: np.ndarray, labels: np.ndarray, problem_type: str,
                    label_names: list[str], threshold: float = 0.5) -> dict:
    """All metrics for a problem type; per-class figures and the confusion matrix where they apply."""
    predictions = predictions_from_logits(logits, problem_type, threshold)
    if problem_type == "single_label_classification":
        ids = list(range(len(label_names)))
        return {
            "accuracy": float(accuracy_score(labels, predictions)),
            "macro_f1": float(f1_score(labels, predictions, average="macro", labels=ids, zero_division=0)),
            "micro_f1": float(f1_score(labels, predictions, average="micro", labels=ids, zero_division=0)),
            "weighted_f1": float(f1_score(labels, predictions, average="weighted", labels=ids, zero_division=0)),
            "per_class": _per_class(labels, predictions, label_names, labels=ids),
            "confusion_matrix": confusion_matrix(labels, predictions, labels=ids).tolist(),
        }
    if problem_type == "multi_label_classification":
        labels = labels.astype(np.int64)
        return {
            "subset_accuracy": float(accuracy_score(labels, predictions)),
            "micro_f1": float(f1_score(labels, predictions, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(labels, predictions, average="macro", zero_division=0)),
            "per_class": _per_class(labels, predictions, label_names),
        }
    values = predictions.astype(np.float64)
    labels = labels.reshape(-1).astype(np.float64)
    constant = np.ptp(values) == 0 or np.ptp(labels) == 0
    mse = float(mean_squared_error(labels, values))
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "mae": float(mean_absolute_error(labels, values)),
        # Correlation is undefined for constant predictions (an untrained model); report 0, not NaN.
        "pearson": 0.0 if constant else float(pearsonr(values, labels)[0]),
        "spearman": 0.0 if constant else float(spearmanr(values, labels)[0]),
    }


def resolve_best_metric(name: str, problem_type: str) -> tuple[str, bool]:
    """The metric that selects the best model and whether greater is better."""
    metric = DEFAULT_METRIC[problem_type] if name == "auto" else name
    available = {
        "single_label_classification": {"accuracy", "macro_f1", "micro_f1", "weighted_f1", "loss"},
        "multi_label_classification": {"subset_accuracy", "micro_f1", "macro_f1", "loss"},
        "regression": {"mse", "rmse", "mae", "pearson", "spearman", "loss"},
    }[problem_type]
    if metric not in available and not metric.startswith("extra_"):
        raise UserError(
            f"--metric_for_best_model {metric} is not available for {problem_type}; choose one of {sorted(available)}"
        )
    return metric, metric not in LOWER_IS_BETTER


class ExtraMetrics:
    """Metrics from the `evaluate` library, by name or local path, loaded only when asked for.

    A name (e.g. "f1") makes `evaluate` fetch the metric's code from the hub, so it needs network
    access; a local directory or script works offline.
    """

    def __init__(self, spec: str | None):
        self.metrics = {}
        if not spec:
            return
        try:
            import evaluate
        except ImportError:
            raise UserError("--extra_metrics needs the `evaluate` package: pip install evaluate") from None
        for name in [part.strip() for part in spec.split(",") if part.strip()]:
            try:
                self.metrics[name] = evaluate.load(name)  # only reached when the user asked for it
            except Exception as err:  # evaluate raises many types for a missing/unreachable metric
                raise UserError(
                    f"--extra_metrics: cannot load {name!r} ({type(err).__name__}: {err}); "
                    "a name needs the hub, or give a local metric script/directory"
                ) from None

    def compute(self, predictions: np.ndarray, labels: np.ndarray) -> dict:
        """Figures of every extra metric, prefixed `extra_`; nested results are flattened."""
        results = {}
        for name, metric in self.metrics.items():
            values = metric.compute(predictions=predictions.tolist(), references=labels.tolist()) or {}
            short = name.rstrip("/").split("/")[-1].removesuffix(".py")
            for key, value in values.items():
                if isinstance(value, (int, float, np.floating, np.integer)):
                    results[f"extra_{short}_{key}" if key != short else f"extra_{key}"] = float(value)
        return results
