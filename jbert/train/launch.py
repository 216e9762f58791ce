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
- `collective_failures_explained(timeout)`: when another process of the run dies or hangs, the survivors'
  collectives fail (at once for a dead process on the same machine, after the timeout for a hung one or a
  lost machine); this turns the backend's exception into one message saying what happened and what to do.
- `verify_process_group(accelerator)`: refuse to train when the launcher started N processes but the
  Accelerator sees a different world (the two-rank-0-copies trap).
- `prepare_deepspeed_config(accelerator, config)` (in jbert.train.deepspeed_config): DeepSpeed JSON
  numbers that contradict our flags are an error; "auto" clipping and optimizer fields are filled from the flags.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Optional, Sequence

import yaml

from jbert.core.errors import UserError, format_problems, run_cli
# The DeepSpeed checks live in jbert.train.deepspeed_config; their names stay importable from here.
from jbert.train.deepspeed_config import (DS_SCHEDULER_FOR, active_deepspeed_config, deepspeed_batch_problems,  # noqa: F401
                                          deepspeed_json_path, load_deepspeed_json, prepare_deepspeed_config)

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


class CollectiveFailure(UserError):
    """Another process of a multi-process run died or stopped answering: not the user's input (exit code 1),
    but one clear message without a traceback, like a UserError."""

    exit_code = 1


# What gloo, NCCL and torch.distributed say when a peer is gone or silent (torch 2.x wraps most of
# them in DistBackendError, older paths raise a plain RuntimeError with this text).
_PEER_LOST_TEXTS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "Socket closed",
                    "ECONNRESET", "EPIPE", "NCCL communicator was aborted", "NCCL error", "remote process exited")
_TIMEOUT_TEXTS = ("Timed out waiting", "timed out", "Timeout", "watchdog")


def describe_collective_failure(err: BaseException, timeout_seconds: Optional[float]) -> Optional[str]:
    """One readable sentence for a failed collective operation, or None when `err` is something else."""
    import torch.distributed as dist

    text = str(err)
    is_distributed = isinstance(err, getattr(dist, "DistError", ())) or "gloo" in text or "NCCL" in text \
        or "ProcessGroup" in text
    if not is_distributed:
        return None
    rank = os.environ.get("RANK", "?")
    world = os.environ.get("WORLD_SIZE", "?")
    detail = text.strip().splitlines()[0][:300] if text.strip() else type(err).__name__
    if any(marker in text for marker in _PEER_LOST_TEXTS):
        what = "another process of this run has died (its connection closed)"
    elif any(marker in text for marker in _TIMEOUT_TEXTS):
        limit = f"{timeout_seconds:g} s, --collective_timeout_seconds" if timeout_seconds else "the collective timeout"
        what = f"another process of this run stopped answering for longer than the collective timeout ({limit})"
    else:
        what = "a collective operation between the processes of this run failed"
    return (
        f"process {rank} of {world}: {what} [{type(err).__name__}: {detail}]. This process stops too. "
        "Look at the other processes' logs (and the other machines') for the cause; then restart the whole run "
        "with --resume_from_checkpoint latest to continue from the newest complete checkpoint"
    )


@contextlib.contextmanager
def collective_failures_explained(collective_timeout_seconds: Optional[float] = None):
    """Turn a failed collective (a peer died, hung past the timeout, or its machine vanished) into a
    CollectiveFailure with one readable message.

    On any exception the process group is torn down before the exception leaves: the process then
    exits with its own message and code instead of aborting in gloo's threads at interpreter exit,
    and the other processes see their connections close at once instead of waiting out the timeout.
    """
    try:
        yield
    except Exception as err:
        _abandon_process_group()
        message = describe_collective_failure(err, collective_timeout_seconds)
        if message is None:
            raise
        raise CollectiveFailure(message) from err


def _abandon_process_group() -> None:
    """Destroy the default process group if there is one; a broken group may refuse, which is fine."""
    import torch.distributed as dist

    with contextlib.suppress(Exception):
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


def verify_process_group(accelerator) -> None:
    """Refuse to train when the launcher's world size and the Accelerator's disagree."""
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != accelerator.num_processes:
        raise UserError(
            f"the launcher started {launched} processes but this one sees a world of {accelerator.num_processes} "
            f"(distributed type {accelerator.distributed_type}); every process would train alone as rank 0. "
            "Launch with a config from accelerate_configs/ (CPU: multi_cpu.yaml; DeepSpeed on CPU: DS_ACCELERATOR=cpu)"
        )


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
        print(__doc__.split("\n\nWhat the training processes")[0])
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
