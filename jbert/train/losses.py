"""The loss a transformers sequence classifier computes from its labels, for each problem type.

One definition for the places that compute it outside the model's own forward: the validation
loss from gathered logits (classification and distillation) and document training's loss on the
pooled window logits (jbert.train.document_batches).
"""

from __future__ import annotations

import torch


def problem_loss(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> torch.Tensor:
    """Cross-entropy (single-label), per-label binary cross-entropy (multi-label) or MSE (regression)."""
    functional = torch.nn.functional
    if problem_type == "single_label_classification":
        return functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1).long())
    if problem_type == "multi_label_classification":
        return functional.binary_cross_entropy_with_logits(logits, labels.float())
    return functional.mse_loss(logits.reshape(-1), labels.float().reshape(-1))
