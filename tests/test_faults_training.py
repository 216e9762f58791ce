"""Training under real faults: real `python train.py` processes killed with SIGKILL at the worst moments.

The moments are reached exactly, without hooks in production code: the processes start with
tests/fault_shim on PYTHONPATH, whose sitecustomize stops the process at a named point (inside a
checkpoint write, before a checkpoint is published, halfway through deleting an old one, with the
model directory assembled but not renamed) and tells the test, which then sends SIGKILL. After every
kill the test checks what the next run would trust, and at the end the resumed run must equal an
uninterrupted one: same weights (1e-6), same metrics, same evaluation history.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from safetensors.numpy import load_file

from conftest import (
    FAULT_RUN_OPTIONS, FAULT_WAIT_SECONDS, SHIM_DIR, assert_every_listed_checkpoint_loads, assert_same_run,
    fault_env, finish, free_port, kill_at, latest, mlm_args, resumed_from, run_to_end, start, tiny_args, topic_rows,
    write_training_csv,
)

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("faults")
    write_training_csv(directory / "train.csv", topic_rows(48, seed=1))
    write_training_csv(directory / "valid.csv", topic_rows(10, seed=2))
    return directory


@pytest.fixture(scope="module")
def reference(data) -> Path:
    """The uninterrupted run, a real process like the others."""
    output_dir = data / "reference"
    code, output = run_to_end(tiny_args(data, output_dir=str(output_dir), **FAULT_RUN_OPTIONS), data, "reference")
    assert code == 0, output[-4000:]
    return output_dir


def test_sigkill_at_every_kind_of_moment_then_resume_latest_equals_uninterrupted(data, reference, tmp_path):
    """One run killed six times, each at a different worst moment, resumed with `latest` after each."""
    output_dir = tmp_path / "model"
    root = Path(f"{output_dir}.checkpoints")
    fresh = tiny_args(data, output_dir=str(output_dir), **FAULT_RUN_OPTIONS)
    resume = fresh + ["--resume_from_checkpoint", "latest"]

    # 0. While the from-scratch vocabulary is written: vocab.txt done, the tokenizer's other files not.
    kill_at(fresh, "vocabulary:1", tmp_path)
    assert not (root / "tokenizer").exists(), "a half-written vocabulary must not be where the next run looks"

    # 1. In the middle of training, between checkpoints (at the start of step 3).
    kill_at(resume, "step:3", tmp_path)
    assert assert_every_listed_checkpoint_loads(root) == ["step_00000002"]

    # 2. DURING the write of checkpoint 4: its weights file is torn, the rest not yet written.
    output = kill_at(resume, "checkpoint:4", tmp_path)
    assert resumed_from(output) == "step_00000002"
    partial = root / ".partial_step_00000004"
    assert (partial / "model.safetensors").is_file() and not (partial / "optimizer.bin").exists()
    with pytest.raises(Exception):
        load_file(str(partial / "model.safetensors"))  # really half-written
    assert latest(root) == "step_00000002", "a half-written checkpoint must never be the latest"
    assert assert_every_listed_checkpoint_loads(root) == ["step_00000002"]

    # 3. Checkpoint 6 complete, even its trainer_state.json (a naive completion marker), not yet published.
    output = kill_at(resume, "commit:6", tmp_path)
    assert resumed_from(output) == "step_00000002"
    assert (root / ".partial_step_00000006" / "trainer_state.json").is_file()
    assert latest(root) == "step_00000004"
    assert not (root / ".partial_step_00000004").exists(), "the next save removes what a killed save left"
    assert assert_every_listed_checkpoint_loads(root) == ["step_00000002", "step_00000004"]

    # 4. Halfway through deleting the oldest checkpoint after checkpoint 6 was published.
    output = kill_at(resume, "prune:1", tmp_path)
    assert resumed_from(output) == "step_00000004"
    assert latest(root) == "step_00000006"
    assert assert_every_listed_checkpoint_loads(root) == ["step_00000004", "step_00000006"]

    # 5. After the last step: the model directory fully assembled in its temporary place, not renamed.
    output = kill_at(resume, "model_dir:1", tmp_path)
    assert resumed_from(output) == "step_00000006"
    assert not output_dir.exists(), "the next stage must not find a model directory"
    assert [p.name for p in tmp_path.glob(".model.tmp-*")], "the kill landed inside the model directory write"
    assert latest(root) == "step_00000012"

    code, output = run_to_end(resume, tmp_path, "final")
    assert code == 0, output[-4000:]
    assert resumed_from(output) == "step_00000012"
    assert_same_run(output_dir, reference)
    assert not list(tmp_path.glob(".model.tmp-*")), "the killed run's temporary model directory is removed"
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "no leftovers of killed saves"


def test_sigkill_at_arbitrary_steps_resume_latest_equals_uninterrupted(data, reference, tmp_path):
    """Killed at the start of steps 1, 5 and 11 (before any checkpoint, mid-epoch, in the last epoch)."""
    output_dir = tmp_path / "model"
    fresh = tiny_args(data, output_dir=str(output_dir), **FAULT_RUN_OPTIONS)
    resume = fresh + ["--resume_from_checkpoint", "latest"]
    kill_at(fresh, "step:1", tmp_path)
    assert latest(Path(f"{output_dir}.checkpoints")) is None
    output = kill_at(resume, "step:5", tmp_path)  # no checkpoint yet: `latest` starts fresh
    assert "resuming from" not in output
    output = kill_at(resume, "step:7", tmp_path)  # from step 4: killed at the start of step 4 + 7 = 11
    assert resumed_from(output) == "step_00000004"
    code, output = run_to_end(resume, tmp_path, "final")
    assert code == 0, output[-4000:]
    assert resumed_from(output) == "step_00000010"
    assert_same_run(output_dir, reference)


# ---------------------------------------------------------------- one rank of two lost

def _wait_for(marker: Path, processes: list[subprocess.Popen], what: str) -> str:
    deadline = time.monotonic() + FAULT_WAIT_SECONDS
    while not marker.exists():
        ended = [p for p in processes if p.poll() is not None]
        if ended:
            pytest.fail(f"a launch ended (exit {ended[0].returncode}) before {what}:\n{ended[0].stdout.read()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what} not reached in {FAULT_WAIT_SECONDS}s")
        time.sleep(0.05)
    return marker.read_text()


def _launch_env(marker: Path, fault: str | None) -> dict:
    extra = {"PYTHONPATH": os.pathsep.join([str(SHIM_DIR), str(REPO)])}
    if fault:
        extra.update(JBERT_FAULT=fault, JBERT_FAULT_MARKER=str(marker))
    return fault_env(**extra)


def _kill_rank_1_of_two_machines_at_step_3(args: list[str], marker: Path) -> tuple[int, str]:
    """multi_node.yaml as two launches on localhost; rank 1 SIGKILLed in its step 3: (rank 0's exit code, output).

    Bounded, not timed: far below the 600 s collective timeout the callers set, so only the dead peer's
    closed connection can have ended rank 0.
    """
    port = free_port()
    machine0 = start("multi_node.yaml", args, port, "--machine_rank", "0", env=_launch_env(marker, None))
    machine1 = start("multi_node.yaml", args, port, "--machine_rank", "1",
                     env=_launch_env(marker, "rank:1,step:3"))
    try:
        victim = int(_wait_for(marker, [machine0, machine1], "rank 1's step 3").split()[0])
        os.kill(victim, signal.SIGKILL)
        return finish(machine0, timeout=300)
    finally:
        for process in (machine0, machine1):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.mark.multiprocess
def test_rank_killed_the_other_machine_stops_with_a_clear_message(data, tmp_path):
    """multi_node.yaml as two launches on localhost; rank 1 is SIGKILLed in the middle of step 3.

    Rank 0, alone on its "machine" (no launcher there knows rank 1 died), must not hang: its next
    all-reduce fails, and it exits non-zero with one message saying another process died.
    """

    args = tiny_args(data, output_dir=str(tmp_path / "model"), per_device_train_batch_size=8, num_train_epochs=1,
                     collective_timeout_seconds=600)
    code, output = _kill_rank_1_of_two_machines_at_step_3(args, tmp_path / "fault-reached")
    assert code != 0
    errors = [line for line in output.splitlines() if "error: process 0 of 2:" in line]
    assert len(errors) == 1, output[-6000:]
    print(errors[0])
    assert "another process of this run has died" in errors[0] and "--resume_from_checkpoint latest" in errors[0]
    assert "Traceback (most recent call last)" not in output.split("error: process 0 of 2:")[0], output[-6000:]
    assert not (tmp_path / "model").exists()


@pytest.mark.multiprocess
def test_mlm_rank_killed_the_other_machine_stops_with_the_same_clear_message(tmp_path):
    """--task mlm through the same loop: multi_node.yaml as two launches on localhost, rank 1 SIGKILLed
    in the middle of its step 3; rank 0 exits non-zero with the one-line message, not a traceback."""

    args = mlm_args(tmp_path, output_dir=str(tmp_path / "mlm"), collective_timeout_seconds=600)
    code, output = _kill_rank_1_of_two_machines_at_step_3(args, tmp_path / "fault-reached")
    assert code != 0
    assert "eval_perplexity=" in output, output[-6000:]  # the masked-LM task really ran (step 0 evaluated)
    errors = [line for line in output.splitlines() if "error: process 0 of 2:" in line]
    assert len(errors) == 1, output[-6000:]
    print(errors[0])
    assert "another process of this run has died" in errors[0] and "--resume_from_checkpoint latest" in errors[0]
    assert "Traceback (most recent call last)" not in output.split("error: process 0 of 2:")[0], output[-6000:]
    assert not (tmp_path / "mlm").exists()


@pytest.mark.multiprocess
def test_rank_hung_the_other_stops_after_the_collective_timeout(data, tmp_path):
    """multi_cpu.yaml; rank 1 stops answering (alive, silent) at step 3: rank 0 gives up after
    --collective_timeout_seconds with a message naming the option, and the launch ends."""

    marker = tmp_path / "fault-reached"
    args = tiny_args(data, output_dir=str(tmp_path / "model"), per_device_train_batch_size=8, num_train_epochs=1,
                     collective_timeout_seconds=20)
    launch = start("multi_cpu.yaml", args, free_port(), env=_launch_env(marker, "rank:1,step:3"))
    try:
        _wait_for(marker, [launch], "rank 1's step 3")
        code, output = finish(launch, timeout=300)  # a bound against hanging, 15 x the timeout
    finally:
        if launch.poll() is None:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
    assert code != 0
    errors = [line for line in output.splitlines() if "error: process 0 of 2:" in line]
    assert len(errors) == 1, output[-6000:]
    print(errors[0])
    assert "stopped answering for longer than the collective timeout (20 s, --collective_timeout_seconds)" in errors[0]
    assert not (tmp_path / "model").exists()


def test_latest_is_an_accepted_spelling_and_partial_checkpoints_are_refused(tmp_path):
    from jbert.core.errors import UserError
    from jbert.train.checkpoint import STATE_FILE, resolve_resume_path

    root = tmp_path / "model.checkpoints"
    assert resolve_resume_path("latest", root) is None  # nothing yet: start fresh, as 'auto' does
    for name in ("step_00000002", "step_00000004", ".partial_step_00000006"):
        (root / name).mkdir(parents=True)
        (root / name / STATE_FILE).write_text("{}")
    assert resolve_resume_path("latest", root).name == "step_00000004"
    assert resolve_resume_path("auto", root).name == "step_00000004"
    with pytest.raises(UserError, match="incomplete checkpoint"):
        resolve_resume_path(str(root / ".partial_step_00000006"), root)


def test_resume_restores_the_best_weights_its_checkpoint_recorded(tmp_path):
    """After a kill, `best` may hold weights of an evaluation later than the newest checkpoint; a replay
    on non-deterministic hardware need not rewrite them, so the checkpoint's own copy is restored."""
    import torch
    from accelerate import Accelerator

    from jbert.core.artifacts import atomic_directory
    from jbert.train.checkpoint import BEST_DIR, TrainerState, load_checkpoint, save_checkpoint
    from jbert.train.process_group import accelerator_init_kwargs

    accelerator = Accelerator(**accelerator_init_kwargs())
    model = torch.nn.Linear(2, 2)
    model, optimizer = accelerator.prepare(model, torch.optim.AdamW(model.parameters()))
    root = tmp_path / "model.checkpoints"
    best = root / BEST_DIR

    def write_best(content: bytes) -> None:  # as the Evaluator does: a new directory renamed over the old
        with atomic_directory(best, overwrite=True) as work_dir:
            (work_dir / "model.safetensors").write_bytes(content)

    save_checkpoint(accelerator, TrainerState(global_step=2), root, keep_last=3)  # before any evaluation
    write_best(b"best weights, step 4")
    save_checkpoint(accelerator, TrainerState(global_step=4, best_step=4, best_metric=0.5), root, keep_last=3)
    write_best(b"best weights, step 6 (after the newest checkpoint)")

    load_checkpoint(accelerator, root / "step_00000004", best_dir=best)
    assert (best / "model.safetensors").read_bytes() == b"best weights, step 4"
    assert (root / "step_00000004" / BEST_DIR / "model.safetensors").read_bytes() == b"best weights, step 4"
    load_checkpoint(accelerator, root / "step_00000002", best_dir=best)
    assert not best.exists(), "no evaluation at step 2: no best weights to pair with it"
