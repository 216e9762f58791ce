"""Evaluation during training, for every task: the history, the best weights kept, early stopping.

`Evaluator` is what the loop calls after an optimizer step that is due an evaluation: it asks the
task for its validation figures (gathered over every process by the task's `evaluate`), appends
them to the history, saves the weights when the selection metric improves, and says when early
stopping should end the run. Classification and masked-LM (and any later task) share it, so
"best" and "patience" mean the same thing for all of them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Optional

from jbert.core.artifacts import atomic_directory
from jbert.train.checkpoint import TrainerState

logger = logging.getLogger("jbert")


def scalar_metrics(results: dict, prefix: str) -> dict:
    """The plain numbers of a result dict, with their names prefixed (for history and trackers)."""
    return {f"{prefix}{k}": v for k, v in results.items() if isinstance(v, (int, float))}


class Evaluator:
    """Evaluate, record the history, keep the best weights in `best_dir`, and decide on early stopping.

    `evaluate(model, dataloader)` returns the validation figures (all processes alike), among them
    `best_metric`. Call the evaluator on every process (`get_state_dict` gathers ZeRO-3 / FSDP shards
    collectively); only the main process writes `best_dir`, with the unwrapped model's own
    `save_pretrained`, so each task decides what its saved weights look like.
    """

    def __init__(self, accelerator, model, dataloader, *, evaluate: Callable[[object, object], dict],
                 best_metric: str, greater_is_better: bool, best_dir: Path, batches_per_epoch: int,
                 patience: Optional[int]):
        self.accelerator = accelerator
        self.model = model
        self.dataloader = dataloader
        self.evaluate = evaluate
        self.best_metric = best_metric
        self.greater_is_better = greater_is_better
        self.best_dir = best_dir
        self.batches_per_epoch = batches_per_epoch
        self.patience = patience
        self.last_value: float | None = None  # the selection metric of the latest evaluation
        self.on_evaluate = None  # optional callback(record) after each evaluation (hp search pruning)
        self.transform_weights = None  # optional weights -> weights before saving the best (--qat: snapped to int8)

    def __call__(self, state: TrainerState) -> bool:
        """Evaluate at the state's step; returns True when training should stop (early stopping)."""
        results = self.evaluate(self.model, self.dataloader)
        record = {"step": state.global_step, "epoch": state.epoch + state.batches_in_epoch / self.batches_per_epoch}
        # Figures and their details (per-class rows, a confusion matrix) alike: the history is the record.
        record.update({f"eval_{name}": value for name, value in results.items()})
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
        if self.transform_weights is not None and self.accelerator.is_main_process:
            weights = self.transform_weights(weights)
        if self.accelerator.is_main_process:
            # Replaced whole or not at all: a kill or a full disk mid-save keeps the previous best
            # weights, never a torn file that the model directory would copy.
            with atomic_directory(self.best_dir, overwrite=True) as work_dir:
                self.accelerator.unwrap_model(self.model).save_pretrained(work_dir, state_dict=weights,
                                                                          safe_serialization=True)
        self.accelerator.wait_for_everyone()
