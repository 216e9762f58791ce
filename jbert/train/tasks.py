"""The training tasks there are, and which one a configuration asks for (`task_for`).

    classification  --task auto | single_label | multi_label | regression  (jbert.train.classification)
    mlm             --task mlm: masked-LM pretraining on unlabeled text      (jbert.train.mlm)
    distill         --task distill: a student learns a teacher's soft targets (jbert.train.distill)

Each is a class that satisfies jbert.train.task_protocol.Task; jbert.train.loop runs any of them.
"""

from __future__ import annotations

from jbert.train.classification import ClassificationTask
from jbert.train.config import TrainConfig
from jbert.train.mlm import MaskedLMTask
from jbert.train.task_protocol import Task


def task_for(config: TrainConfig) -> Task:
    """The task a configuration asks for: masked-LM for --task mlm, else classification (or regression)."""
    if config.task == "mlm":
        return MaskedLMTask()
    if config.task == "distill":
        from jbert.train.distill import DistillationTask  # loaded only for distillation runs

        return DistillationTask()
    return ClassificationTask()
