"""Resumable checkpoints: Accelerate's save_state/load_state plus the loop's own position.

Layout: <output_dir>.checkpoints/step_00000120/ holding Accelerate's state (model, optimizer,
scheduler, RNG states per process) and trainer_state.json (global step, epoch, position in the
epoch, history, best metric, world size).

Why a kill at any moment never leaves a checkpoint that `--resume_from_checkpoint latest` trusts:
- a checkpoint is written into `.partial_step_N/`, a name `list_checkpoints` never matches, and
  published by one rename to `step_N/` after every process has written its part and the files
  are on disk (fsync); the rename is the commit point;
- pruning renames an old checkpoint to `.deleting_step_N/` before deleting its files, so a kill
  halfway through a deletion cannot leave a `step_N/` with files missing;
- leftovers of killed runs (`.partial_*`, `.deleting_*`) are removed by the next save;
- the best weights so far (`<root>/best`, what the model directory will hold) are part of each
  checkpoint (hard links, no extra space) and restored with it: after a kill, `best` may hold
  weights of an evaluation later than the checkpoint, which a replay on non-deterministic hardware
  need not reproduce; the model directory must never pair those weights with the checkpoint's
  record of which step was best.
tests/test_faults_training.py kills real training processes at each of these moments.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

from jbert.core.artifacts import atomic_directory, read_json, write_json
from jbert.core.storage import is_storage_full, storage_full_error, sync_directory, sync_tree
from jbert.core.errors import UserError

STATE_FILE = "trainer_state.json"
LATEST = ("latest", "auto")  # --resume_from_checkpoint values meaning "the newest complete checkpoint, if any"
_STEP_DIR = re.compile(r"^step_(\d+)$")
BEST_DIR = "best"  # <checkpoint root>/best: the best weights so far (jbert.train.evaluation writes it)
_PARTIAL_PREFIX = ".partial_"
_DELETING_PREFIX = ".deleting_"


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
    """`latest` (or `auto`) -> newest complete checkpoint, or None to start fresh; a path -> that checkpoint."""
    if not resume:
        return None
    if resume in LATEST:
        checkpoints = list_checkpoints(checkpoint_root)
        return checkpoints[-1] if checkpoints else None
    path = Path(resume)
    if path.name.startswith((_PARTIAL_PREFIX, _DELETING_PREFIX)):
        raise UserError(
            f"--resume_from_checkpoint {resume} is an incomplete checkpoint left by an interrupted save or "
            f"deletion; resume from a complete one (step_NNNNNNNN) or pass 'latest'"
        )
    if not (path / STATE_FILE).is_file():
        newest = list_checkpoints(path)  # a checkpoint root given instead of one checkpoint
        if newest:
            return newest[-1]
        raise UserError(
            f"--resume_from_checkpoint {resume} is not a jbert checkpoint (no {STATE_FILE}); "
            f"give a directory like {checkpoint_root}/step_00000100 or 'latest'"
        )
    return path


def remove_interrupted(checkpoint_root: Path) -> list[Path]:
    """Delete what killed saves and prunings left behind (never read, only taking space)."""
    removed = []
    if checkpoint_root.is_dir():
        for path in checkpoint_root.iterdir():
            if path.name.startswith((_PARTIAL_PREFIX, _DELETING_PREFIX)):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def save_checkpoint(accelerator, state: TrainerState, checkpoint_root: Path, keep_last: int) -> Path:
    """Save a complete checkpoint atomically on every process; prune to the newest `keep_last`.

    Every process must call this (Accelerate writes per-process RNG states). A full disk raises
    StorageFullError (exit code 1, one message) with the partial checkpoint removed and the
    previous checkpoints intact.
    """
    final = checkpoint_root / f"step_{state.global_step:08d}"
    partial = checkpoint_root / f"{_PARTIAL_PREFIX}step_{state.global_step:08d}"
    if accelerator.is_main_process:
        remove_interrupted(checkpoint_root)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(partial))
        failure = None
    except Exception as err:  # noqa: BLE001 - re-raised below, after the other processes are told
        if not is_storage_full(err):
            raise
        failure = err
    # One process out of space must stop them all together (a rank raising alone would leave the
    # others waiting in the next collective until the timeout), so agree on the outcome first.
    from accelerate.utils import gather_object

    failed = any(gather_object([failure is not None])) if accelerator.num_processes > 1 else failure is not None
    if failed:
        if accelerator.is_main_process:
            shutil.rmtree(partial, ignore_errors=True)
        accelerator.wait_for_everyone()
        left = f"the checkpoints already in {checkpoint_root} are intact"
        raise storage_full_error(failure or OSError("another process could not write its part"), partial,
                                 left=left) from failure
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        try:
            best = checkpoint_root / BEST_DIR
            if best.is_dir():
                _link_tree(best, partial / BEST_DIR)
            state.save(partial)
            sync_tree(partial)
        except Exception as err:
            shutil.rmtree(partial, ignore_errors=True)
            if is_storage_full(err):
                raise storage_full_error(err, partial, left=f"the checkpoints already in {checkpoint_root} are intact") from err
            raise
        if final.exists():  # the same step saved again after a resume from an older checkpoint
            _delete_checkpoint(final)
        os.replace(partial, final)
        sync_directory(checkpoint_root)
        for old in list_checkpoints(checkpoint_root)[:-keep_last]:
            _delete_checkpoint(old)
    accelerator.wait_for_everyone()
    return final


def _delete_checkpoint(path: Path) -> None:
    """Unpublish with one rename, then delete: a kill mid-way leaves a `.deleting_` name nothing reads."""
    doomed = path.with_name(f"{_DELETING_PREFIX}{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def load_checkpoint(accelerator, path: Path, best_dir: Path | None = None) -> TrainerState:
    """Restore model, optimizer, scheduler and RNG states, and the best weights as they were at that
    step into `best_dir` (default: <checkpoint root>/best); refuse a different world size."""
    state = TrainerState.load(path)
    if state.world_size != accelerator.num_processes:
        raise UserError(
            f"checkpoint {path} was written by {state.world_size} process(es) but this run has "
            f"{accelerator.num_processes}; resume with the same number of processes "
            "(the data order and per-process RNG states depend on it)"
        )
    accelerator.load_state(str(path))
    best_dir = Path(best_dir) if best_dir is not None else path.parent / BEST_DIR
    if accelerator.is_main_process:
        saved_best = path / BEST_DIR
        if saved_best.is_dir():
            with atomic_directory(best_dir, overwrite=True) as work_dir:
                _link_tree(saved_best, work_dir, into_existing=True)
        elif state.best_step is None:
            shutil.rmtree(best_dir, ignore_errors=True)  # weights of an evaluation this state never saw
        # else: a checkpoint written before best weights were kept in checkpoints; leave `best` as found.
    accelerator.wait_for_everyone()
    return state


def _link_tree(source: Path, destination: Path, into_existing: bool = False) -> None:
    """Copy a directory as hard links (no space, and safe: `best` is only ever replaced, never
    rewritten in place); a file system without hard links gets real copies."""
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(source, destination, copy_function=link_or_copy, dirs_exist_ok=into_existing)
