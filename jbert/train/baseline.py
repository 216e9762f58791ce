"""The linear baseline every classification report is measured against.

TF-IDF over character 1-3 grams + logistic regression (one-vs-rest for multi-label), fitted on the
very training split the model saw and scored on the same validation and test splits with the same
metric code. On small Japanese data sets this twenty-line model is a strong opponent (0.879
accuracy on JRTE rhr, where a from-scratch BERT trained naively reached 0.863), so a BERT that
does not beat it is not worth deploying, and the report says so.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from jbert.train.metrics import compute_metrics

logger = logging.getLogger("jbert")

BASELINE_CHOICES = ("tfidf_logreg", "none")
BASELINE_NAME = "TF-IDF char 1-3 grams + logistic regression"
# Sentence pairs become one string; the marker keeps n-grams from spanning the two texts.
PAIR_SEPARATOR = " ||| "
SUPPORTED_PROBLEMS = ("single_label_classification", "multi_label_classification")
ADVICE = (
    "try: masked-LM pretraining (--task mlm) on all the unlabeled text you have first (configs/mlm-scratch.yaml, then "
    "configs/finetune-from-mlm.yaml; on JRTE rhr that beat this baseline), --hp_search N, or a pretrained "
    "checkpoint (--model_name_or_path cl-tohoku/bert-base-japanese-v3) instead of --from_scratch"
)


def baseline_texts(texts: list[str], pairs: list[str] | None = None) -> list[str]:
    """The strings the baseline sees: the text, or text and pair joined by a separator."""
    if pairs is None:
        return list(texts)
    return [text + PAIR_SEPARATOR + pair for text, pair in zip(texts, pairs)]


def _logits_from_probabilities(probabilities: np.ndarray, problem_type: str) -> np.ndarray:
    """Scores that the shared decision rule (argmax / sigmoid > threshold) reads like model logits."""
    clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
    if problem_type == "single_label_classification":
        return np.log(clipped)  # softmax(log p) == p
    return np.log(clipped) - np.log1p(-clipped)  # sigmoid(logit p) == p


def _loss(probabilities: np.ndarray, labels: np.ndarray, problem_type: str) -> float:
    """Cross-entropy (or mean binary cross-entropy), the same loss the model reports."""
    clipped = np.clip(probabilities, 1e-12, 1 - 1e-12)
    if problem_type == "single_label_classification":
        return float(-np.mean(np.log(clipped[np.arange(len(labels)), labels.astype(int)])))
    labels = labels.astype(np.float64)
    return float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log1p(-clipped)))


def fit_baseline(train_texts: list[str], train_labels: np.ndarray, problem_type: str, label_names: list[str],
                 evaluation_sets: dict[str, tuple[list[str], np.ndarray]], threshold: float = 0.5,
                 seed: int = 42) -> dict:
    """Fit TF-IDF char 1-3 grams + logistic regression and score it on each evaluation set.

    `train_labels` are class ids (single-label) or a multi-hot matrix (multi-label);
    `evaluation_sets` maps a split name ("validation", "test") to (texts, labels). Returns
    {"name", "fit_seconds", <split>: metrics dict as `compute_metrics` gives plus "loss"}.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    if problem_type not in SUPPORTED_PROBLEMS:
        raise ValueError(f"the baseline covers classification only, not {problem_type}")
    started = time.perf_counter()
    # sublinear_tf: a character repeated in a long text should not drown the rest; the defaults
    # of TfidfVectorizer otherwise (l2 norm, smooth idf).
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)
    features = vectorizer.fit_transform(train_texts)
    train_labels = np.asarray(train_labels).astype(np.int64)
    logistic = LogisticRegression(max_iter=2000, C=10.0, random_state=seed)
    # One-vs-rest predicts a class that is always (or never) on in training as that constant.
    classifier = OneVsRestClassifier(logistic) if problem_type == "multi_label_classification" else logistic
    classifier.fit(features, train_labels)
    fit_seconds = time.perf_counter() - started
    result: dict = {"name": BASELINE_NAME, "fit_seconds": round(fit_seconds, 3), "train_examples": len(train_texts)}
    for split, (texts, labels) in evaluation_sets.items():
        if len(texts) == 0:
            continue
        probabilities = classifier.predict_proba(vectorizer.transform(texts))
        if problem_type == "single_label_classification" and probabilities.shape[1] != len(label_names):
            # Classes absent from the training split get probability 0 in their column.
            full = np.zeros((len(texts), len(label_names)))
            full[:, classifier.classes_] = probabilities
            probabilities = full
        labels = np.asarray(labels)
        metrics = {"loss": _loss(probabilities, labels, problem_type)}
        metrics.update(compute_metrics(_logits_from_probabilities(probabilities, problem_type), labels, problem_type,
                                       label_names, threshold))
        result[split] = metrics
    return result


def baseline_for_data(data, problem_type: str, label_names: list[str], threshold: float, seed: int) -> dict | None:
    """The baseline on a PreparedData's splits (train -> validation, test when labelled); None for regression."""
    if problem_type not in SUPPORTED_PROBLEMS:
        return None
    has_pair = "text_pair" in data.train.column_names

    def split_inputs(dataset):
        texts = baseline_texts(list(dataset["text"]), list(dataset["text_pair"]) if has_pair else None)
        return texts, np.asarray(dataset["labels"])

    train_texts, train_labels = split_inputs(data.train)
    evaluation_sets = {"validation": split_inputs(data.validation)}
    if data.test is not None and len(data.test) and "labels" in data.test.column_names:
        evaluation_sets["test"] = split_inputs(data.test)
    result = fit_baseline(train_texts, train_labels, problem_type, label_names, evaluation_sets, threshold, seed)
    logger.info("baseline (%s) fitted in %.1f s: validation %s", BASELINE_NAME, result["fit_seconds"],
                ", ".join(f"{k}={v:.4f}" for k, v in result["validation"].items() if isinstance(v, float)))
    return result


def compare_with_baseline(model_value: float | None, baseline: dict | None, metric: str,
                          greater_is_better: bool) -> dict | None:
    """Model vs baseline on the selection metric (validation split).

    Returns {"metric", "model", "baseline", "model_is_better", "warning"} where "warning" is the text
    to show when the model is not better (None otherwise); None when there is nothing to compare.
    """
    if baseline is None or model_value is None:
        return None
    baseline_value = baseline.get("validation", {}).get(metric)
    if baseline_value is None:
        return None
    better = model_value > baseline_value if greater_is_better else model_value < baseline_value
    warning = None
    if not better:
        warning = (
            f"the model is NOT better than the linear baseline on validation {metric}: model {model_value:.4f}, "
            f"{BASELINE_NAME} {baseline_value:.4f}. A 20-line scikit-learn model would serve as well; {ADVICE}"
        )
    return {"metric": metric, "model": model_value, "baseline": baseline_value, "model_is_better": better,
            "warning": warning}


def baseline_card_lines(baseline: dict | None, comparison: dict | None, validation_metrics: dict,
                        test_metrics: dict | None) -> list[str]:
    """Model-card section: model and baseline side by side (validation and test), and the warning."""
    if not baseline:
        return []
    lines = ["", f"## Baseline: {baseline['name']}", "",
             "Fitted on the same training split, scored on the same splits "
             f"({baseline['fit_seconds']:.1f} s to fit).", ""]
    splits = [("validation", validation_metrics), ("test", test_metrics)]
    splits = [(name, metrics) for name, metrics in splits if metrics and name in baseline]
    header = "| metric | " + " | ".join(f"model ({name}) | baseline ({name})" for name, _ in splits) + " |"
    lines += [header, "| --- |" + " --- | --- |" * len(splits)]
    keys = [k for k, v in baseline[splits[0][0]].items() if isinstance(v, float)] if splits else []
    for key in keys:
        cells = []
        for name, metrics in splits:
            model_value = metrics.get(key)
            cells.append("-" if model_value is None else f"{model_value:.4f}")
            cells.append(f"{baseline[name][key]:.4f}")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    if comparison and comparison.get("warning"):
        lines += ["", f"> **Warning:** {comparison['warning']}"]
    elif comparison:
        lines += ["", f"The model beats the baseline on validation {comparison['metric']} "
                      f"({comparison['model']:.4f} vs {comparison['baseline']:.4f})."]
    return lines
