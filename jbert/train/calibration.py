"""Temperature scaling (Guo et al. 2017): one number T fitted on validation logits, scores = softmax(logits / T).

    T = fit_temperature(validation_logits, validation_labels)       # minimises validation NLL
    report = calibration_report(validation_logits, validation_labels, T, test_logits, test_labels)

A positive T divides every logit of a row alike, so the argmax (and the ranking of classes) never
changes: accuracy and every decision stay the same, only how far the scores can be trusted moves.
Over-trained networks are over-confident (T > 1 softens them). The figures, before and after:

    ece       expected calibration error over 15 equal-width confidence bins (bin i holds the rows
              whose top score lies in (i/15, (i+1)/15], the first bin includes 0):
              sum over bins of |bin| / n * |accuracy(bin) - mean confidence(bin)|
    brier     mean over rows of sum over classes of (p_k - [k == label])^2 (multi-class Brier; 0..2)
    log_loss  mean of -log p_label (natural log)

ECE on n texts is biased upwards by sampling noise; `ece_sampling_floor` (per split) is the ECE a
perfectly calibrated model with the calibrated scores would show on that many texts.

Single-label classification only: multi-label decisions are sigmoid scores against thresholds
(`--multi_label_threshold`, per-label thresholds), so moving those scores would move decisions.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

from jbert.core.postprocessing import scale_logits, softmax

logger = logging.getLogger("jbert")

ECE_BINS = 15
# T is searched on log T within these bounds: far beyond any useful softening or sharpening, and
# bounded so that a validation set the model fits perfectly (NLL falling forever as T -> 0) stops.
TEMPERATURE_BOUNDS = (0.05, 20.0)
RELIABILITY_PLOT = "reliability.png"
CALIBRATE_CHOICES = ("temperature", "none")


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float = 1.0) -> float:
    """Mean -log softmax(logits / T)[label], computed with log-softmax in float64 (no log of a rounded 0)."""
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    log_probabilities = log_softmax(scaled, axis=-1)
    return float(-log_probabilities[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)].mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T > 0 that minimises the validation negative log-likelihood of softmax(logits / T).

    A bounded 1-D search (Brent) on log T, so T stays positive and the search is symmetric
    between softening and sharpening.
    """
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    low, high = (math.log(bound) for bound in TEMPERATURE_BOUNDS)
    result = minimize_scalar(lambda log_t: negative_log_likelihood(logits, labels, math.exp(log_t)),
                             bounds=(low, high), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(result.x))


def log_loss(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean -log p_label; probabilities clipped at 1e-15 (scikit-learn's habit) so a 0 stays finite."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    picked = probabilities[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.log(np.clip(picked, 1e-15, 1.0)).mean())


def brier_score(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean over rows of the squared distance between the score row and the one-hot label (0 best, 2 worst)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    one_hot = np.zeros_like(probabilities)
    one_hot[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)] = 1.0
    return float(((probabilities - one_hot) ** 2).sum(axis=1).mean())


def reliability_bins(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> list[dict]:
    """Per equal-width confidence bin: its bounds, row count, accuracy and mean confidence (None when empty)."""
    probabilities = np.asarray(probabilities, dtype=np.float64)
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(labels)
    # (lower, upper] bins; a confidence of exactly 0 (impossible for a softmax row) joins the first.
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    rows = []
    for b in range(bins):
        members = index == b
        count = int(members.sum())
        rows.append({"lower": b / bins, "upper": (b + 1) / bins, "count": count,
                     "accuracy": float(correct[members].mean()) if count else None,
                     "confidence": float(confidence[members].mean()) if count else None})
    return rows


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE: the count-weighted mean gap between accuracy and confidence over equal-width bins."""
    total = len(labels)
    return float(sum(row["count"] / total * abs(row["accuracy"] - row["confidence"])
                     for row in reliability_bins(probabilities, labels, bins) if row["count"]))


def ece_sampling_floor(probabilities: np.ndarray, bins: int = ECE_BINS, draws: int = 200, seed: int = 0) -> float:
    """The ECE a perfectly calibrated model with these scores would still show on this many texts.

    ECE measured on n texts is biased upwards: even when every top score p is exactly the chance of
    being right, each bin's accuracy is a sample of its texts and differs from its mean confidence.
    This draws each text's correctness as Bernoulli(top score) `draws` times (a fixed seed) and
    returns the mean ECE of those draws. A measured ECE near it is at the noise floor of the split:
    no recalibration can show a lower figure on that many texts.
    """
    confidence = np.asarray(probabilities, dtype=np.float64).max(axis=1)
    index = np.clip(np.ceil(confidence * bins).astype(np.int64) - 1, 0, bins - 1)
    confidence_sums = np.bincount(index, weights=confidence, minlength=bins)
    generator = np.random.default_rng(seed)
    total = 0.0
    for _ in range(draws):
        correct = generator.random(len(confidence)) < confidence
        correct_sums = np.bincount(index, weights=correct.astype(np.float64), minlength=bins)
        total += float(np.abs(correct_sums - confidence_sums).sum()) / len(confidence)
    return total / draws


def calibration_figures(logits: np.ndarray, labels: np.ndarray, temperature: float | None = None) -> dict:
    """accuracy, ece, brier and log_loss of softmax(logits / T) (T None: raw softmax)."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = softmax(scale_logits(logits, temperature))
    return {
        "accuracy": float((probabilities.argmax(axis=1) == labels).mean()),
        "ece": expected_calibration_error(probabilities, labels),
        "brier": brier_score(probabilities, labels),
        "log_loss": log_loss(probabilities, labels),
    }


def calibration_report(validation_logits: np.ndarray, validation_labels: np.ndarray, temperature: float,
                       test_logits: np.ndarray | None = None, test_labels: np.ndarray | None = None) -> dict:
    """metrics.json's "calibration": the temperature and each split's figures before and after it."""
    report = {"method": "temperature", "temperature": temperature, "fitted_on": "validation", "ece_bins": ECE_BINS}
    splits = {"validation": (validation_logits, validation_labels)}
    if test_logits is not None and test_labels is not None and len(test_labels):
        splits["test"] = (test_logits, test_labels)
    for split, (logits, labels) in splits.items():
        report[split] = {"before": calibration_figures(logits, labels),
                         "after": calibration_figures(logits, labels, temperature),
                         "ece_sampling_floor": ece_sampling_floor(
                             softmax(scale_logits(np.asarray(logits, dtype=np.float64), temperature)))}
    return report


def one_class_problem(labels, label_names: list[str]) -> str | None:
    """Why a temperature cannot be fitted on these validation labels (fewer than two classes), or None."""
    present = sorted({int(label) for label in labels})
    if len(present) >= 2:
        return None
    named = ", ".join(repr(label_names[i]) for i in present) or "none"
    return (f"the validation set holds {len(present)} class ({named}); a temperature fitted on it would only "
            "learn to be sure of that class. Give a --validation_file with examples of at least two classes, "
            "or --calibrate none")


def write_reliability_diagram(path: Path, splits: dict, temperature: float) -> None:
    """A PNG with one panel per split: accuracy against confidence per bin, before and after T, and the diagonal.

    `splits`: {"validation": (logits, labels), "test": ...}.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(splits), figsize=(4.5 * len(splits), 4.5), squeeze=False)
    for axis, (split, (logits, labels)) in zip(axes[0], splits.items()):
        axis.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
        for name, applied in (("raw softmax", None), (f"T = {temperature:.3f}", temperature)):
            probabilities = softmax(scale_logits(np.asarray(logits, dtype=np.float64), applied))
            rows = [row for row in reliability_bins(probabilities, labels) if row["count"]]
            ece = expected_calibration_error(probabilities, labels)
            axis.plot([row["confidence"] for row in rows], [row["accuracy"] for row in rows], marker="o",
                      label=f"{name} (ECE {ece:.3f})")
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_xlabel("confidence (top score)")
        axis.set_ylabel("accuracy")
        axis.set_title(f"{split} ({len(labels)} texts, {ECE_BINS} bins)")
        axis.grid(alpha=0.3)
        axis.legend(loc="upper left", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def calibration_card_lines(calibration: dict | None) -> list[str]:
    """The model card's "Calibration" section (markdown lines); none without a calibration record."""
    if not calibration:
        return []
    if calibration.get("method") != "temperature":
        return ["", "## Calibration", "", f"Scores are the raw softmax/sigmoid: {calibration.get('reason')}."]
    lines = ["", "## Calibration", "",
             f"Temperature scaling fitted on the validation set: T = {calibration['temperature']:.4f}; "
             "served scores are softmax(logits / T) (the predicted label is the same). "
             f"ECE over {calibration['ece_bins']} equal-width bins, multi-class Brier score, log-loss:", "",
             "| split | scores | accuracy | ECE | Brier | log-loss |", "| --- | --- | --- | --- | --- | --- |"]
    for split in ("validation", "test"):
        for stage, name in (("before", "raw softmax"), ("after", "calibrated")):
            if split in calibration:
                row = calibration[split][stage]
                lines.append(f"| {split} | {name} | {row['accuracy']:.4f} | {row['ece']:.4f} | {row['brier']:.4f} | "
                             f"{row['log_loss']:.4f} |")
    floors = [f"{split} {calibration[split]['ece_sampling_floor']:.4f}" for split in ("validation", "test")
              if "ece_sampling_floor" in calibration.get(split, {})]
    if floors:
        lines += ["", "ECE a perfectly calibrated model with the calibrated scores would still show on this many "
                  f"texts (sampling noise; no calibration measures below it): {', '.join(floors)}."]
    return lines + ["", f"![{RELIABILITY_PLOT}]({RELIABILITY_PLOT})"]


def calibrate_model_dir(directory: Path, splits: dict) -> dict:
    """Fit T on splits["validation"], write reliability.png into DIRECTORY; returns metrics.json's "calibration".

    `splits`: {"validation": (logits, labels), "test": (logits, labels) when the test file is labelled}.
    """
    validation_logits, validation_labels = splits["validation"]
    temperature = fit_temperature(validation_logits, validation_labels)
    low, high = TEMPERATURE_BOUNDS
    no_mistakes = bool((np.asarray(validation_logits).argmax(axis=1) == np.asarray(validation_labels)).all())
    if no_mistakes or not low * 1.01 < temperature < high / 1.01:
        # No interior optimum: on a validation set the model gets entirely right, the log-likelihood
        # keeps falling as T -> 0, and such a T would make every served score 1.0, over-confident on
        # the first new mistake. Leave the scores raw instead.
        reason = (f"the validation set gives no mistakes to calibrate on (the fit ran towards T -> 0, "
                  f"stopping at {temperature:.3g}), so scores stay the raw softmax; a larger or harder "
                  "validation set calibrates")
        logger.warning("calibration skipped: %s", reason)
        return {"method": "none", "reason": reason, "temperature": None}
    test_logits, test_labels = splits.get("test", (None, None))
    report = calibration_report(validation_logits, validation_labels, temperature, test_logits, test_labels)
    write_reliability_diagram(directory / RELIABILITY_PLOT, splits, temperature)
    before, after = report["validation"]["before"], report["validation"]["after"]
    logger.info("calibration: temperature %.4f; validation ECE %.4f -> %.4f, log-loss %.4f -> %.4f", temperature,
                before["ece"], after["ece"], before["log_loss"], after["log_loss"])
    return report
