"""What a training task supplies to the one loop: the `Task` protocol and the data it hands on.

`jbert.train.loop.train` runs every task through the same stages (set up, load data, build model,
loop, finish), the same checkpoints, early stopping, best weights, model-directory writer and
multi-process failure message. A task only says what differs, through the `Task` protocol:

    load_data       texts -> tokenizer -> tokenized training and validation examples (a TaskData)
    build_model     the model to train; its forward returns an output with `.loss`
    dataloaders     (train, eval) DataLoaders over the examples, before `accelerator.prepare`
    evaluate        validation figures over every process: {"loss": ..., other figures}
    write_files     its own files in the model directory being assembled; returns metrics.json's content
    write_report    plots and the model card (README.md, the directory's last file)

Optional: `training_loss(config, data)` returns `loss(model, batch)` for a micro-batch, or None for
the model's own `.loss` (classification's --window_training document pools windows per text first).

Tasks are plain classes that satisfy the protocol (no base class to inherit). A new task (e.g.
distillation) is one more such class and one more line in jbert.train.tasks.task_for; the loop
does not change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

import torch
from accelerate import Accelerator

from jbert.core.artifacts import JbertSettings
from jbert.train.checkpoint import TrainerState
from jbert.train.config import TrainConfig
from jbert.train.optimization import Schedule


@dataclass
class TaskData:
    """What a task's load-data stage hands to the loop (and back to the task's later stages)."""

    tokenizer: Any
    train_set: Sequence  # tokenized training examples (unpadded)
    eval_set: Sequence  # tokenized validation examples
    settings: JbertSettings  # jbert.json: the text settings serving must repeat
    best_metric: str  # the validation figure that selects the best weights ("loss", "macro_f1" ...)
    greater_is_better: bool
    source: Any = None  # the task's own record of its data (PreparedData, corpus statistics ...)


@dataclass
class RunFacts:
    """What the loop measured that a task's model directory reports."""

    device: torch.device
    throughput: dict  # train_seconds, train_samples_per_second


class Task(Protocol):
    """What the training loop asks of a task (see the module docstring for the order)."""

    name: str  # "classification", "mlm": for logs
    evaluates_starting_point: bool  # evaluate at step 0 too (masked-LM: the perplexity training improved on)

    def load_data(self, config: TrainConfig, accelerator: Accelerator) -> TaskData:
        """Read, tokenize; bad data or options fail here, before any model is built."""

    def build_model(self, config: TrainConfig, accelerator: Accelerator, data: TaskData) -> torch.nn.Module:
        """The model to train. Its `save_pretrained` writes what the model directory holds."""

    def dataloaders(self, config: TrainConfig, accelerator: Accelerator, data: TaskData,
                    schedule: Schedule) -> tuple:
        """(train, eval) DataLoaders; the train one's order must depend only on seed, epoch and step size."""

    def evaluate(self, model: torch.nn.Module, dataloader, accelerator: Accelerator, data: TaskData) -> dict:
        """Validation figures over all processes; "loss" and `data.best_metric` among them."""

    def write_files(self, directory: Path, config: TrainConfig, data: TaskData, state: TrainerState,
                    facts: RunFacts) -> dict:
        """The task's own files in the model directory being assembled; returns what metrics.json holds."""

    def write_report(self, directory: Path, config: TrainConfig, data: TaskData, metrics: dict) -> None:
        """Plots and the model card, written last."""

