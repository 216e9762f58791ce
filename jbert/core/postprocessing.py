"""Logits -> scores and decisions, shared by training, export checks and serving (numpy only)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, shifted by the row maximum so exp() never overflows."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return np.exp(-np.logaddexp(0.0, -logits))


def predictions_from_logits(logits: np.ndarray, problem_type: str, threshold: float = 0.5) -> np.ndarray:
    """Class ids (single-label), a 0/1 matrix (multi-label: sigmoid strictly above the threshold) or values."""
    if problem_type == "single_label_classification":
        return logits.argmax(axis=-1)
    if problem_type == "multi_label_classification":
        return (sigmoid(logits) > threshold).astype(np.int64)
    return logits.reshape(-1)
