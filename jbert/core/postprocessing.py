"""Logits -> scores and decisions, shared by training, export checks and serving (numpy only).

Scores are defined for every logit a model can put out, extremes included: +inf, -inf and values
near the float limits give probabilities in [0, 1] (a row of softmax sums to 1), never NaN. Only a
NaN logit, which no working model produces, gives NaN scores, so a broken model stays visible.
"""

from __future__ import annotations

import numpy as np

PROBLEM_TYPES = ("single_label_classification", "multi_label_classification", "regression")


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so exp() never overflows.

    The limits are taken where the plain formula gives inf - inf = NaN: a row with +inf logits
    shares all probability equally among them, and a row of only -inf logits is uniform (every
    class equally unlikely).
    """
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float64)
    row_max = logits.max(axis=-1, keepdims=True)
    finite_max = np.isfinite(row_max)
    # Far-apart finite logits (1e308 and -1e308) overflow to -inf when shifted: exp gives the right 0.
    with np.errstate(over="ignore", invalid="ignore"):
        shifted = logits - np.where(finite_max, row_max, 0)
    shifted = np.where(
        finite_max,
        shifted,
        # +inf maximum: the +inf entries share the mass; -inf maximum (all -inf): uniform; NaN stays NaN.
        np.where(row_max == np.inf, np.where(logits == np.inf, 0.0, -np.inf),
                 np.where(row_max == -np.inf, 0.0, np.nan)),
    ).astype(logits.dtype, copy=False)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function: 1/(1+exp(-x)) without overflow, exact 0 and 1 at -inf/+inf."""
    logits = np.asarray(logits)
    if not np.issubdtype(logits.dtype, np.floating):
        logits = logits.astype(np.float64)
    return np.exp(-np.logaddexp(0.0, -logits))


def predictions_from_logits(logits: np.ndarray, problem_type: str, threshold: float = 0.5) -> np.ndarray:
    """Class ids (single-label), a 0/1 matrix (multi-label: sigmoid strictly above the threshold) or values.

    Single-label decisions are the argmax of the logits, so they are always a valid class id; an
    unknown `problem_type` is a ValueError rather than a silent fall-through to regression.
    """
    logits = np.asarray(logits)
    if problem_type == "single_label_classification":
        return logits.argmax(axis=-1)
    if problem_type == "multi_label_classification":
        return (sigmoid(logits) > threshold).astype(np.int64)
    if problem_type == "regression":
        return logits.reshape(-1)
    raise ValueError(f"unknown problem_type {problem_type!r}; expected one of {', '.join(PROBLEM_TYPES)}")


# ------------------------------------------------------------------ decision rules tuned on validation
# Kept apart from the functions above so that a model without tuned thresholds or abstention decides
# exactly as before: each helper gives back the plain global threshold / "never abstain" then.


def label_thresholds_array(label_names: list[str], label_thresholds: dict | None,
                           default: float = 0.5) -> float | np.ndarray:
    """The multi-label threshold(s) for `predictions_from_logits` / `multi_label_decisions`.

    Without per-label thresholds this is `default` itself (a float), so decisions are bit for bit
    those of the single global threshold; with them, one threshold per class in `label_names`
    order (a class the mapping does not name keeps `default`).
    """
    if not label_thresholds:
        return default
    return np.asarray([float(label_thresholds.get(name, default)) for name in label_names], dtype=np.float64)


def multi_label_decisions(scores: np.ndarray, thresholds: float | np.ndarray) -> np.ndarray:
    """0/1 matrix of sigmoid scores strictly above their class's threshold (training and serving alike)."""
    return (np.asarray(scores) > thresholds).astype(np.int64)


def abstentions(scores: np.ndarray, min_confidence: float | None) -> np.ndarray:
    """True where a single-label row's top score is below `min_confidence` (None: never abstain).

    A top score equal to `min_confidence` is accepted: the threshold chosen on validation is the
    lowest accepted confidence. A NaN row (a broken model) abstains rather than be trusted.
    """
    scores = np.asarray(scores)
    if min_confidence is None:
        return np.zeros(scores.shape[0], dtype=bool)
    top = scores.max(axis=-1)
    return ~(top >= min_confidence)


def scale_logits(logits: np.ndarray, temperature: float | None) -> np.ndarray:
    """Logits divided by a fitted temperature (Guo et al. 2017), for calibrated scores.

    None or exactly 1 returns `logits` itself, untouched, so a model without a temperature scores
    bit for bit as before. A positive temperature keeps the order of each row (the argmax and the
    ranking of classes never change); only how sharp the probabilities are moves.
    """
    if temperature is None or temperature == 1.0:
        return logits
    if not (temperature > 0 and np.isfinite(temperature)):
        raise ValueError(f"a temperature must be a positive finite number, got {temperature!r}")
    return np.asarray(logits) / temperature
