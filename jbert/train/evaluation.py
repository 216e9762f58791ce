"""Evaluation during training: metrics over the whole (sharded) validation set, and the best model kept.

`evaluate` gathers logits from every process with `gather_for_metrics` (which drops the samples
Accelerate repeats to even out the last batch), so N processes report the same metrics as one.
`Evaluator` is what the loop calls: evaluate, append to the history, save the weights when the
selection metric improves, and say when early stopping should end the run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from jbert.core.artifacts import atomic_directory
from jbert.core.postprocessing import predictions_from_logits
from jbert.train.batching import MODEL_INPUTS
from jbert.train.checkpoint import TrainerState
from jbert.train.metrics import ExtraMetrics, compute_metrics

logger = logging.getLogger("jbert")


def loss_from_logits(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> float:
    """The model's own training loss for its problem type, from gathered logits and labels."""
    if problem_type == "single_label_classification":
        return float(torch.nn.functional.cross_entropy(logits, labels.long()))
    if problem_type == "multi_label_classification":
        return float(torch.nn.functional.binary_cross_entropy_with_logits(logits, labels.float()))
    return float(torch.nn.functional.mse_loss(logits.view(-1), labels.float().view(-1)))


def evaluate(model, dataloader, accelerator, problem_type: str, label_names: list[str],
             threshold: float, extra_metrics: ExtraMetrics | None = None) -> dict:
    """Loss and metrics over a whole (sharded) dataset, gathered without duplicates."""
    model.eval()
    all_logits, all_labels = [], []
    for batch in dataloader:
        with torch.no_grad():
            inputs = {k: batch[k] for k in MODEL_INPUTS}
            logits = model(**inputs).logits
        logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train()
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    results = {"loss": loss_from_logits(logits, labels, problem_type)}
    results.update(compute_metrics(logits.numpy(), labels.numpy(), problem_type, label_names, threshold))
    if extra_metrics and extra_metrics.metrics:
        predictions = predictions_from_logits(logits.numpy(), problem_type, threshold)
        results.update(extra_metrics.compute(predictions, labels.numpy()))
    return results


def scalar_metrics(results: dict, prefix: str) -> dict:
    """The plain numbers of a result dict, with their names prefixed (for history and trackers)."""
    return {f"{prefix}{k}": v for k, v in results.items() if isinstance(v, (int, float))}


class Evaluator:
    """Evaluate, record the history, keep the best weights in `best_dir`, and decide on early stopping.

    Call it on every process (`get_state_dict` gathers ZeRO-3 / FSDP shards collectively); only the
    main process writes `best_dir`.
    """

    def __init__(self, accelerator, model, dataloader, *, problem_type: str, label_names: list[str],
                 threshold: float, extra_metrics: ExtraMetrics | None, best_metric: str, greater_is_better: bool,
                 best_dir: Path, batches_per_epoch: int, patience: int | None):
        self.accelerator = accelerator
        self.model = model
        self.dataloader = dataloader
        self.problem_type = problem_type
        self.label_names = label_names
        self.threshold = threshold
        self.extra_metrics = extra_metrics
        self.best_metric = best_metric
        self.greater_is_better = greater_is_better
        self.best_dir = best_dir
        self.batches_per_epoch = batches_per_epoch
        self.patience = patience
        self.last_value: float | None = None  # the selection metric of the latest evaluation
        self.on_evaluate = None  # optional callback(record) after each evaluation (hp search pruning)

    def __call__(self, state: TrainerState) -> bool:
        """Evaluate at the state's step; returns True when training should stop (early stopping)."""
        results = evaluate(self.model, self.dataloader, self.accelerator, self.problem_type, self.label_names,
                           self.threshold, self.extra_metrics)
        record = {"step": state.global_step, "epoch": state.epoch + state.batches_in_epoch / self.batches_per_epoch}
        record.update(scalar_metrics(results, "eval_"))
        for key in ("per_class", "confusion_matrix"):
            if key in results:
                record[f"eval_{key}"] = results[key]
        state.history.append(record)
        if self.on_evaluate is not None:
            self.on_evaluate(record)  # may raise to abandon the run (a pruned trial)
        value = self.last_value = results[self.best_metric]
        logger.info("step %d: %s", state.global_step,
                    ", ".join(f"{k}={v:.4f}" for k, v in record.items()
                              if k.startswith("eval_") and isinstance(v, float)))
        self.accelerator.log(scalar_metrics(results, "eval/"), step=state.global_step)
        if self._improves(value, state.best_metric):
            state.best_metric, state.best_step = value, state.global_step
            state.evaluations_without_improvement = 0
            self._save_best()
        else:
            state.evaluations_without_improvement += 1
        return self.patience is not None and state.evaluations_without_improvement >= self.patience

    def has_evaluated(self, state: TrainerState) -> bool:
        """True when the history already holds an evaluation at the state's current step."""
        return any(record["step"] == state.global_step and f"eval_{self.best_metric}" in record
                   for record in state.history)

    def _improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.greater_is_better else value < best

    def _save_best(self) -> None:
        weights = self.accelerator.get_state_dict(self.model)  # gathers ZeRO-3 / FSDP shards; call on every rank
        if self.accelerator.is_main_process:
            # Replaced whole or not at all: a kill or a full disk mid-save keeps the previous best
            # weights, never a torn file that the model directory would copy.
            with atomic_directory(self.best_dir, overwrite=True) as work_dir:
                self.accelerator.unwrap_model(self.model).save_pretrained(work_dir, state_dict=weights,
                                                                          safe_serialization=True)
        self.accelerator.wait_for_everyone()
