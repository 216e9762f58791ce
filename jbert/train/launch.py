"""Before the training processes start: the checked launcher around `accelerate launch`.

Checked launch (every launch mistake is one clear message and exit code 2, before any process starts):
    python -m jbert.train.launch --config_file accelerate_configs/multi_cpu.yaml -- --config configs/quickstart.yaml
    python -m jbert.train.launch --config_file accelerate_configs/multi_node.yaml --machine_rank 1 -- ...
Everything before `--` goes to `accelerate launch` (its own flags: --main_process_port, --machine_rank,
--num_processes ...); everything after it goes to train.py. Plain `accelerate launch` works just as well
(the same checks run inside every process); the wrapper only moves them before the launch, where
torchrun cannot turn a worker's exit code 2 into "exit 1 with a traceback per rank".

What runs inside the training processes (the Accelerator's process group, the one-line message
when a peer dies or hangs) is in jbert.train.process_group.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import yaml

from jbert.core.errors import UserError, format_problems, run_cli
from jbert.train.deepspeed_config import deepspeed_batch_problems, deepspeed_json_path, load_deepspeed_json
from jbert.train.process_group import gpu_like_device_available

KNOWN_DISTRIBUTED_TYPES = {"NO", "MULTI_CPU", "MULTI_GPU", "DEEPSPEED", "FSDP", "MULTI_XPU", "MULTI_NPU",
                           "MULTI_MLU", "MULTI_MUSA", "MULTI_HPU", "MULTI_SDAA", "MULTI_NEURON", "XLA", "MEGATRON_LM"}


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
    own_args = argv[: argv.index("--")] if "--" in argv else argv
    if "-h" in own_args or "--help" in own_args:
        print(__doc__.split("\n\nWhat runs inside the training processes")[0])
        return 0
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
