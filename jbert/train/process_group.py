"""Inside every training process: the Accelerator's process group formed, checked, and its failures explained.

jbert.train.loop calls these while it trains (the launcher's checks before processes start are in
jbert.train.launch):
- `accelerator_init_kwargs(collective_timeout_seconds)`: torchrun-started processes on a machine without a
  GPU must build the Accelerator with cpu=True (DDP over gloo), or each process silently trains alone as
  "rank 0 of 1"; DeepSpeed processes need backend="gloo" instead, because cpu=True makes Accelerate drop
  DeepSpeed. The collective timeout is set here, deliberately, for every backend (see below).
- `collective_failures_explained(timeout)`: when another process of the run dies or hangs, the survivors'
  collectives fail (at once for a dead process on the same machine, after the timeout for a hung one or a
  lost machine); this turns the backend's exception into one message saying what happened and what to do,
  for every training task (the loop wraps all of them in it).
- `verify_process_group(accelerator)`: refuse to train when the launcher started N processes but the
  Accelerator sees a different world (the two-rank-0-copies trap).
- `prepare_deepspeed_config(accelerator, config)` (in jbert.train.deepspeed_config): DeepSpeed JSON
  numbers that contradict our flags are an error; "auto" clipping and optimizer fields are filled from the flags.
"""

from __future__ import annotations

import contextlib
import os
from datetime import timedelta
from typing import Optional

from jbert.core.errors import UserError


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


@contextlib.contextmanager
def pretrained_weights_load(accelerator):
    """A context for `from_pretrained` on every process: the main process first, the others after it.

    The main process goes first so that a hub model is downloaded once, not by every process at
    the same time. Under ZeRO-3 with `zero3_init_flag`, transformers would build the model inside
    `deepspeed.zero.Init`, where building is itself a collective: a process held at the
    main-process-first barrier while the main process broadcasts the first parameter hangs the run
    forever, and when all processes load together transformers 4.57 re-initialises the partitioned
    embeddings of BERT-like models and fails (`IndexError ... size 0` in `_init_weights`,
    transformers issues 41762 and 43596). So there each process loads the whole pretrained model
    (no DeepSpeed config visible, as in `models_load_on_this_process_alone`) and DeepSpeed
    partitions it when the engine is built, with the main process's weights broadcast to the others.
    The cost is one whole copy of the encoder per process while loading (BERT-base: about 0.45 GB).
    """
    with models_load_on_this_process_alone(accelerator), accelerator.main_process_first():
        yield


@contextlib.contextmanager
def models_load_on_this_process_alone(accelerator):
    """A context in which `from_pretrained` builds a whole model on this process, even under ZeRO-3.

    With a ZeRO-3 DeepSpeed config active, transformers partitions every model it builds with
    collectives (`deepspeed.zero.Init`) that every process must join. The main process alone reloads
    the saved model while writing the model directory (calibration, thresholds, test predictions),
    so inside this context transformers does not see the DeepSpeed config (its public
    unset/set_hf_deepspeed_config pair; Accelerate's zero3_init_context_manager keeps the config
    visible, so it does not help here). Elsewhere a no-op.
    """
    plugin = accelerator.state.deepspeed_plugin
    if plugin is None:
        yield
        return
    from transformers.integrations import set_hf_deepspeed_config, unset_hf_deepspeed_config

    unset_hf_deepspeed_config()
    try:
        yield
    finally:
        if getattr(plugin, "dschf", None) is not None:
            set_hf_deepspeed_config(plugin.dschf)
