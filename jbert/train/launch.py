"""Scale-out: one train.py under every Accelerate launch mode, and a checked launcher.

Checked launch (every launch mistake is one clear message and exit code 2, before any process starts):
    python -m jbert.train.launch --config_file accelerate_configs/multi_cpu.yaml -- --config configs/quickstart.yaml
    python -m jbert.train.launch --config_file accelerate_configs/multi_node.yaml --machine_rank 1 -- ...
Everything before `--` goes to `accelerate launch` (its own flags: --main_process_port, --machine_rank,
--num_processes ...); everything after it goes to train.py. Plain `accelerate launch` works just as well
(the same checks run inside every process); the wrapper only moves them before the launch, where
torchrun cannot turn a worker's exit code 2 into "exit 1 with a traceback per rank".

What the training processes need from this module (jbert.train.loop calls them):
- `accelerator_init_kwargs(collective_timeout_seconds)`: torchrun-started processes on a machine without a
  GPU must build the Accelerator with cpu=True (DDP over gloo), or each process silently trains alone as
  "rank 0 of 1"; DeepSpeed processes need backend="gloo" instead, because cpu=True makes Accelerate drop
  DeepSpeed. The collective timeout is set here, deliberately, for every backend (see below).
  What a lost or hung process does to the others is jbert.train.collective's part.
- `verify_process_group(accelerator)`: refuse to train when the launcher started N processes but the
  Accelerator sees a different world (the two-rank-0-copies trap).
- `prepare_deepspeed_config(accelerator, config)`: DeepSpeed JSON numbers that contradict our flags are
  an error; "auto" clipping and optimizer fields are filled from the flags.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Optional, Sequence

import yaml

from jbert.core.errors import UserError, format_problems, run_cli

DS_SCHEDULER_FOR = {"linear": "WarmupDecayLR", "cosine": "WarmupCosineLR", "constant": "WarmupLR"}
KNOWN_DISTRIBUTED_TYPES = {"NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED", "FSDP", "MULTI_XPU", "MULTI_NPU",
                           "MULTI_MLU", "MULTI_MUSA", "MULTI_HPU", "MULTI_SDAA", "MULTI_NEURON", "XLA", "MEGATRON_LM"}


# ------------------------------------------------------------------ inside the training processes

def gpu_like_device_available() -> bool:
    """True when torch sees a device Accelerate would train on instead of the CPU (CUDA, XPU, NPU, MPS ...)."""
    import torch
    from accelerate.utils import is_hpu_available, is_mlu_available, is_musa_available, is_npu_available, is_xpu_available

    if torch.cuda.is_available():
        return True
    if is_xpu_available() or is_npu_available() or is_mlu_available() or is_musa_available() or is_hpu_available():
        return True
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("1", "true", "yes")


def accelerator_init_kwargs(collective_timeout_seconds: Optional[float] = None) -> dict:
    """Extra `Accelerator(...)` arguments that make the launched processes form one group on any machine.

    With GPUs only the timeout is added: Accelerate's own choice (NCCL, DeepSpeed, FSDP) is right. Without one:
    DDP needs cpu=True (MULTI_CPU over gloo); DeepSpeed needs backend="gloo" and must NOT get cpu=True
    (Accelerate then skips DeepSpeed); FSDP is refused because Accelerate 1.15 enables it for GPU-like
    devices only and would silently train plain DDP. `collective_timeout_seconds` (None: the backend's
    default) becomes the process group's timeout in every case.
    """
    from accelerate.utils import InitProcessGroupKwargs

    group_options = {}
    if collective_timeout_seconds is not None:
        timeout = timedelta(seconds=collective_timeout_seconds)
        if timeout == InitProcessGroupKwargs().timeout:
            # Accelerate passes on only the fields that differ from its defaults (10 minutes), and
            # torch would then apply gloo's own 30: one microsecond more keeps the value we chose.
            timeout += timedelta(microseconds=1)
        group_options["timeout"] = timeout
    if gpu_like_device_available():
        return {"kwargs_handlers": [InitProcessGroupKwargs(**group_options)]} if group_options else {}
    if _env_flag("ACCELERATE_USE_FSDP"):
        raise UserError(
            "FSDP needs GPUs: accelerate 1.15 enables FSDP only for GPU-like devices, so on this CPU-only machine "
            "it would silently run plain DDP. Use accelerate_configs/multi_cpu.yaml (DDP over gloo) or "
            "DS_ACCELERATOR=cpu with accelerate_configs/deepspeed_zero3.yaml for sharded training on CPU"
        )
    if _env_flag("ACCELERATE_USE_DEEPSPEED"):
        if _env_flag("ACCELERATE_USE_CPU"):
            raise UserError(
                "use_cpu: true in a DeepSpeed accelerate config makes Accelerate drop DeepSpeed; remove it "
                "and launch with DS_ACCELERATOR=cpu instead"
            )
        return {"kwargs_handlers": [InitProcessGroupKwargs(backend="gloo", **group_options)]}
    kwargs = {"cpu": True}
    if group_options:
        kwargs["kwargs_handlers"] = [InitProcessGroupKwargs(**group_options)]
    return kwargs


def verify_process_group(accelerator) -> None:
    """Refuse to train when the launcher's world size and the Accelerator's disagree."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise UserError(
            f"the launcher started {launched} processes but this one sees a world of {accelerator.num_processes} "
            f"(distributed type {accelerator.distributed_type}); every process would train alone as rank 0. "
            "Launch with a config from accelerate_configs/ (CPU: multi_cpu.yaml; DeepSpeed on CPU: DS_ACCELERATOR=cpu)"
        )


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


# ------------------------------------------------------------------ before launching

def load_accelerate_config(path: str) -> dict:
    """Read an accelerate config YAML; a missing or unparsable file is a UserError."""
    if not os.path.isfile(path):
        shipped = sorted(p.name for p in Path(__file__).resolve().parents[2].joinpath("accelerate_configs").glob("*.yaml"))
        raise UserError(f"accelerate config {path} does not exist; shipped configs: accelerate_configs/{{{','.join(shipped)}}}")
    try:
        with open(path, encoding="utf-8") as handle:
            values = yaml.safe_load(handle)
    except yaml.YAMLError as err:
        raise UserError(f"accelerate config {path} is not valid YAML: {err}") from None
    if not isinstance(values, dict):
        raise UserError(f"accelerate config {path} must be a mapping (see accelerate_configs/ for examples)")
    distributed_type = str(values.get("distributed_type", "NO"))
    if distributed_type not in KNOWN_DISTRIBUTED_TYPES:
        raise UserError(f"accelerate config {path}: unknown distributed_type {distributed_type!r}; "
                        f"one of {sorted(KNOWN_DISTRIBUTED_TYPES)}")
    return values


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


def check_resume_world_size(config, num_processes: int) -> None:
    """A resume from a checkpoint written with another number of processes is refused up front."""
    from jbert.train.checkpoint import TrainerState, resolve_resume_path

    path = resolve_resume_path(config.resume_from_checkpoint, config.checkpoint_dir)
    if path is None:
        return
    state = TrainerState.load(path)
    if state.world_size != num_processes:
        raise UserError(
            f"checkpoint {path} was written by {state.world_size} process(es) but this launch starts "
            f"{num_processes}; resume with the same number of processes (the data order and per-process RNG "
            "states depend on it)"
        )


def count_training_rows(config) -> Optional[int]:
    """Training rows of a CSV/TSV/JSONL file (minus the validation split when there is no validation file).

    None for Parquet and saved datasets: the training processes check those themselves.
    """
    from jbert.core.readers import detect_format, iter_rows

    path = config.train_file
    if not path or not os.path.isfile(path):
        return None
    try:
        fmt = detect_format(path)
    except UserError:
        return None
    rows = sum(1 for _ in iter_rows(path, encoding=config.encoding, fmt=fmt))
    if not config.validation_file:
        rows -= int(rows * config.validation_split + 0.999999)
    return rows


def _launch_option(launch_args: Sequence[str], name: str) -> Optional[str]:
    """Value of `--name V` or `--name=V` among accelerate launch options."""
    for i, arg in enumerate(launch_args):
        if arg == f"--{name}" and i + 1 < len(launch_args):
            return launch_args[i + 1]
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


def preflight(config_file: str, train_argv: Sequence[str], launch_args: Sequence[str] = ()) -> dict:
    """Every check that can run before processes start; returns the resolved launch facts."""
    accelerate_config = load_accelerate_config(config_file)
    num_processes = int(_launch_option(launch_args, "num_processes") or accelerate_config.get("num_processes") or 1)
    distributed_type = str(accelerate_config.get("distributed_type", "NO"))

    from jbert.train.config import parse_config

    config = parse_config(list(train_argv))
    problems = []
    ds_file = deepspeed_json_path(accelerate_config)
    if distributed_type == "DEEPSPEED" and ds_file:
        ds_config = load_deepspeed_json(ds_file, f"accelerate config {config_file}")
        problems += deepspeed_batch_problems(
            ds_config, per_device_train_batch_size=config.per_device_train_batch_size,
            gradient_accumulation_steps=config.gradient_accumulation_steps, num_processes=num_processes,
            max_grad_norm=config.max_grad_norm, learning_rate=config.learning_rate,
            lr_scheduler_type=config.lr_scheduler_type, source=f"DeepSpeed config {ds_file}")
        if accelerate_config.get("use_cpu"):
            problems.append(f"{config_file}: use_cpu: true makes Accelerate drop DeepSpeed; remove it and launch "
                            "with DS_ACCELERATOR=cpu on a CPU-only machine")
    if distributed_type == "FSDP" and not gpu_like_device_available():
        problems.append(f"{config_file}: FSDP needs GPUs (accelerate 1.15 enables it for GPU-like devices only); "
                        "on CPU use accelerate_configs/multi_cpu.yaml or DeepSpeed with DS_ACCELERATOR=cpu")
    training_rows = count_training_rows(config)
    global_batch = config.per_device_train_batch_size * num_processes
    if training_rows is not None and training_rows < global_batch:
        problems.append(f"about {training_rows} training examples cannot fill one batch of "
                        f"{config.per_device_train_batch_size} on each of {num_processes} processes; lower "
                        "--per_device_train_batch_size or --num_processes")
    if problems:
        raise UserError(format_problems("cannot launch", problems))
    check_resume_world_size(config, num_processes)
    return {"accelerate_config": accelerate_config, "num_processes": num_processes, "train_config": config}


def build_launch_command(config_file: str, train_argv: Sequence[str], launch_args: Sequence[str] = (),
                         script: str = "train.py") -> list[str]:
    """The `accelerate launch` command line for train.py."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", config_file, *launch_args,
            script, *train_argv]


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m jbert.train.launch --config_file FILE [accelerate launch options] -- [train.py options]`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        raise UserError("usage: python -m jbert.train.launch --config_file accelerate_configs/NAME.yaml "
                        "[accelerate launch options] -- [train.py options]")
    split = argv.index("--")
    launch_args, train_argv = argv[:split], argv[split + 1 :]
    config_file = _launch_option(launch_args, "config_file")
    if not config_file:
        raise UserError("--config_file is required (one of accelerate_configs/*.yaml)")
    launch_args = [a for i, a in enumerate(launch_args)
                   if a != "--config_file" and not a.startswith("--config_file=")
                   and not (i > 0 and launch_args[i - 1] == "--config_file")]
    preflight(config_file, train_argv, launch_args)
    script = str(Path(__file__).resolve().parents[2] / "train.py")
    return subprocess.call(build_launch_command(config_file, train_argv, launch_args, script=script))


def _cli(argv: Sequence[str] | None = None) -> int:
    """Entry point: checked launch, exit code 2 for launch mistakes, else the launch's own exit code."""
    launched = {}

    def run(args):
        launched["code"] = main(args)

    code = run_cli(run, argv)
    return code if code else launched.get("code", 0)


if __name__ == "__main__":
    sys.exit(_cli())
