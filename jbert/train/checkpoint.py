"""Resumable checkpoints: Accelerate's save_state/load_state plus the loop's own position.

Layout: <output_dir>.checkpoints/step_00000120/ holding Accelerate's state (model, optimizer,
scheduler, RNG states per process) and trainer_state.json (global step, epoch, position in the
epoch, history, best metric, world size). A checkpoint is written into a temporary directory and
renamed when complete, so `--resume auto` never picks up a half-written one.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jbert.core.artifacts import read_json, write_json
from jbert.core.errors import UserError

STATE_FILE = "trainer_state.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")


@dataclass
class TrainerState:
    """Where the loop is, and what it has seen so far (everything needed to continue exactly)."""

    global_step: int = 0  # optimizer steps taken
    epoch: int = 0  # epoch in progress (0-based)
    batches_in_epoch: int = 0  # micro-batches of `epoch` already consumed by this process
    history: list = field(default_factory=list)  # one dict per evaluation / logging event
    best_metric: float | None = None
    best_step: int | None = None
    evaluations_without_improvement: int = 0
    world_size: int = 1
    train_samples_seen: int = 0

    def save(self, directory: Path) -> None:
        """Write trainer_state.json."""
        write_json(directory / STATE_FILE, asdict(self))

    @classmethod
    def load(cls, directory: Path) -> "TrainerState":
        """Read trainer_state.json."""
        return cls(**read_json(directory / STATE_FILE))


def list_checkpoints(checkpoint_root: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    if not checkpoint_root.is_dir():
        return []
    found = []
    for path in checkpoint_root.iterdir():
        match = _STEP_DIR.match(path.name)
        if match and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def resolve_resume_path(resume: str | None, checkpoint_root: Path) -> Path | None:
    """`auto` -> newest complete checkpoint (or None to start fresh); a path -> that checkpoint."""
    if not resume:
        return None
    if resume == "auto":
        checkpoints = list_checkpoints(checkpoint_root)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if not (path / STATE_FILE).is_file():
        newest = list_checkpoints(path)  # a checkpoint root given instead of one checkpoint
        if newest:
            return newest[-1]
        raise UserError(
            f"--resume_from_checkpoint {resume} is not a jbert checkpoint (no {STATE_FILE}); "
            f"give a directory like {checkpoint_root}/step_00000100 or 'auto'"
        )
    return path


def save_checkpoint(accelerator, state: TrainerState, checkpoint_root: Path, keep_last: int) -> Path:
    """Save a complete checkpoint atomically on every process; prune to the newest `keep_last`."""
    final = checkpoint_root / f"step_{state.global_step:08d}"
    partial = checkpoint_root / f".partial_step_{state.global_step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(partial)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        for old in list_checkpoints(checkpoint_root)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator, path: Path) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG states; refuse a different world size."""
    state = TrainerState.load(path)
    if state.world_size != accelerator.num_processes:
        raise UserError(
            f"checkpoint {path} was written by {state.world_size} process(es) but this run has "
            f"{accelerator.num_processes}; resume with the same number of processes "
            "(the data order and per-process RNG states depend on it)"
        )
    accelerator.load_state(str(path))
    return state
