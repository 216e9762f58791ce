"""How long the run is and how it steps: the schedule in optimizer steps, AdamW, the learning-rate schedule.

Under DeepSpeed a JSON that names its own optimizer or scheduler gets Accelerate's Dummy stand-ins,
filled from our flags, so the same flags mean the same run whichever launch mode is used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from accelerate.utils import DummyOptim, DummyScheduler
from transformers import get_scheduler

from jbert.core.errors import UserError
from jbert.train.config import TrainConfig


@dataclass
class Schedule:
    """The run's length in the units the loop counts."""

    global_batch: int  # examples of one micro-batch over all processes
    examples_per_step: int  # examples of one optimizer step (global batch x accumulation)
    batches_per_epoch: int  # micro-batches per epoch, per process
    steps_per_epoch: int  # optimizer steps per epoch
    max_steps: int  # optimizer steps of the whole run
    num_epochs: int
    warmup_steps: int

    @classmethod
    def plan(cls, config: TrainConfig, train_examples: int, world: int) -> "Schedule":
        """Work out the schedule; too few examples for one batch on every process is a UserError."""
        global_batch = config.per_device_train_batch_size * world
        if train_examples < global_batch:
            raise UserError(
                f"{train_examples} training examples cannot fill one batch of {config.per_device_train_batch_size} "
                f"on each of {world} processes; lower --per_device_train_batch_size or use fewer processes"
            )
        batches_per_epoch = math.ceil(train_examples / global_batch)
        steps_per_epoch = math.ceil(batches_per_epoch / config.gradient_accumulation_steps)
        max_steps = config.max_train_steps or math.ceil(config.num_train_epochs * steps_per_epoch)
        return cls(
            global_batch=global_batch,
            examples_per_step=global_batch * config.gradient_accumulation_steps,
            batches_per_epoch=batches_per_epoch,
            steps_per_epoch=steps_per_epoch,
            max_steps=max_steps,
            num_epochs=math.ceil(max_steps / steps_per_epoch),
            warmup_steps=config.warmup_steps or math.ceil(config.warmup_ratio * max_steps),
        )


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights."""
    decay, no_decay = [], []
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        (no_decay if name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: torch.nn.Module, config: TrainConfig, ds_config: dict | None):
    """AdamW over the model's parameter groups, or DeepSpeed's own optimizer when its JSON names one."""
    groups = parameter_groups(model, config.weight_decay)
    if ds_config and "optimizer" in ds_config:
        # The DeepSpeed JSON builds the optimizer; its "auto" lr/weight decay come from our flags.
        return DummyOptim(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    # The fused kernel: one pass over all parameters. Left to its default, AdamW on a CPU loops tensor
    # by tensor (foreach is CUDA-only), about 3x the optimizer's time on a BERT mini; the Trainer's
    # default is fused too. DeepSpeed wraps the optimizer itself: its path stays as validated.
    fused = ds_config is None and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                      for group in groups for p in group["params"])
    return torch.optim.AdamW(groups, lr=config.learning_rate, eps=config.adam_epsilon, fused=fused or None)


def build_lr_scheduler(optimizer, config: TrainConfig, ds_config: dict | None, schedule: Schedule, world: int):
    """Warm-up then --lr_scheduler_type decay over the run, counted the way Accelerate will step it."""
    if ds_config and "scheduler" in ds_config:
        # DeepSpeed steps its own scheduler once per optimizer step; Accelerate divides the total by
        # the process count (it expects the same x world convention), warm-up it takes as given.
        return DummyScheduler(optimizer, total_num_steps=schedule.max_steps * world,
                              warmup_num_steps=schedule.warmup_steps)
    # Accelerate steps a prepared scheduler once per process per optimizer step, hence the factor.
    return get_scheduler(config.lr_scheduler_type, optimizer, num_warmup_steps=schedule.warmup_steps * world,
                         num_training_steps=schedule.max_steps * world)
