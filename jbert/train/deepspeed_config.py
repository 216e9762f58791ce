"""DeepSpeed under our flags: its JSON's numbers checked against them, its "auto" values filled from them.

`deepspeed_batch_problems` is pure (the launcher runs it before any process starts, on the JSON an
accelerate config names); `prepare_deepspeed_config` runs inside every training process on the
config Accelerate loaded, so a plain `accelerate launch` gets the same checks.
"""

from __future__ import annotations

import json
import os
from typing import Optional

from jbert.core.errors import UserError, format_problems

DS_SCHEDULER_FOR = {"linear": "WarmupDecayLR", "cosine": "WarmupCosineLR", "constant": "WarmupLR"}


def deepspeed_batch_problems(ds_config: dict, *, per_device_train_batch_size: int, gradient_accumulation_steps: int,
                             num_processes: int, max_grad_norm: float, learning_rate: float,
                             lr_scheduler_type: str, source: str = "the DeepSpeed config") -> list[str]:
    """Explicit (non-"auto") DeepSpeed values that contradict the training flags, one message each."""
    problems = []

    def explicit(value) -> bool:
        return value is not None and value != "auto"

    micro = ds_config.get("train_micro_batch_size_per_gpu")
    if explicit(micro) and int(micro) != per_device_train_batch_size:
        problems.append(f"{source} has train_micro_batch_size_per_gpu {micro} but --per_device_train_batch_size is "
                        f"{per_device_train_batch_size}; set it to \"auto\" or make them equal")
    accumulation = ds_config.get("gradient_accumulation_steps")
    if explicit(accumulation) and int(accumulation) != gradient_accumulation_steps:
        problems.append(f"{source} has gradient_accumulation_steps {accumulation} but --gradient_accumulation_steps "
                        f"is {gradient_accumulation_steps}; set it to \"auto\" or make them equal")
    total = ds_config.get("train_batch_size")
    expected = per_device_train_batch_size * gradient_accumulation_steps * num_processes
    if explicit(total) and int(total) != expected:
        problems.append(f"{source} has train_batch_size {total} but {per_device_train_batch_size} per device x "
                        f"{gradient_accumulation_steps} accumulation x {num_processes} processes = {expected}; "
                        "set it to \"auto\"")
    clipping = ds_config.get("gradient_clipping")
    if explicit(clipping) and float(clipping) != float(max_grad_norm):
        problems.append(f"{source} has gradient_clipping {clipping} but --max_grad_norm is {max_grad_norm}; "
                        "set it to \"auto\" or make them equal")
    optimizer_lr = (ds_config.get("optimizer") or {}).get("params", {}).get("lr")
    if explicit(optimizer_lr) and float(optimizer_lr) != float(learning_rate):
        problems.append(f"{source} has optimizer lr {optimizer_lr} but --learning_rate is {learning_rate}; "
                        "set it to \"auto\" or make them equal")
    scheduler_type = (ds_config.get("scheduler") or {}).get("type")
    wanted = DS_SCHEDULER_FOR.get(lr_scheduler_type)
    if scheduler_type and scheduler_type in DS_SCHEDULER_FOR.values() and scheduler_type != wanted:
        problems.append(f"{source} has scheduler {scheduler_type} but --lr_scheduler_type {lr_scheduler_type} "
                        f"means {wanted}; change one of them (or drop the scheduler block to use the flag)")
    return problems


def active_deepspeed_config(accelerator) -> Optional[dict]:
    """The DeepSpeed config dict of this run (still holding "auto" values before prepare), or None."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return None
    return accelerator.state.deepspeed_plugin.deepspeed_config


def prepare_deepspeed_config(accelerator, config) -> Optional[dict]:
    """Check the DeepSpeed JSON against the flags and fill the "auto" values Accelerate leaves to the script."""
    ds_config = active_deepspeed_config(accelerator)
    if ds_config is None:
        return None
    problems = deepspeed_batch_problems(
        ds_config, per_device_train_batch_size=config.per_device_train_batch_size,
        gradient_accumulation_steps=config.gradient_accumulation_steps, num_processes=accelerator.num_processes,
        max_grad_norm=config.max_grad_norm, learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler_type)
    if problems:
        raise UserError(format_problems("DeepSpeed config contradicts the training flags", problems))
    # Filled here rather than by Accelerate: it takes the micro batch from min(train, eval) dataloader
    # batch sizes, and "auto" clipping becomes 1.0 whatever --max_grad_norm says (DeepSpeed clips inside
    # engine.step; accelerator.clip_grad_norm_ does nothing there).
    filled = {
        "train_micro_batch_size_per_gpu": config.per_device_train_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation_steps,
        "train_batch_size": config.per_device_train_batch_size * config.gradient_accumulation_steps
        * accelerator.num_processes,
        "gradient_clipping": float(config.max_grad_norm),
    }
    for key, value in filled.items():
        if ds_config.get(key, "auto") == "auto":
            ds_config[key] = value
    optimizer = ds_config.get("optimizer")
    if optimizer:
        params = optimizer.setdefault("params", {})
        for key, value in (("eps", config.adam_epsilon), ("betas", [0.9, 0.999])):
            if params.get(key) == "auto":
                params[key] = value
    return ds_config


def deepspeed_json_path(accelerate_config: dict) -> Optional[str]:
    """The deepspeed_config_file an accelerate config refers to, if any."""
    return (accelerate_config.get("deepspeed_config") or {}).get("deepspeed_config_file")


def load_deepspeed_json(path: str, source: str) -> dict:
    """Read the DeepSpeed JSON an accelerate config names (paths are relative to the launch directory)."""
    if not os.path.isfile(path):
        raise UserError(f"{source} names deepspeed_config_file {path}, which does not exist (relative paths are "
                        f"taken from the directory you launch in: {os.getcwd()}; launch from the repository root)")
    try:
        with open(path, encoding="utf-8") as handle:
            values = json.load(handle)
    except json.JSONDecodeError as err:
        raise UserError(f"DeepSpeed config {path} is not valid JSON: {err}") from None
    if not isinstance(values, dict):
        raise UserError(f"DeepSpeed config {path} must be a JSON object")
    return values
