"""No space left: real processes under a real file-size limit (RLIMIT_FSIZE, what `ulimit -f` sets).

Each stage's writer is run as the user runs it (`python train.py`, `python export.py`,
`python serve_onnx.py score`) with the limit set in the child before it starts (preexec_fn), or, for
the model directory, at the moment training starts assembling it (tests/fault_shim). The kernel
then refuses the write that crosses the limit, exactly as a full disk would (EFBIG instead of
ENOSPC). Every case must end with one clear message, a non-zero exit code, no traceback, and
nothing half-written where the next stage would trust it: the output directory or file does not
exist, or is still the previous complete one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    FAULT_RUN_OPTIONS, SHIM_DIR, assert_every_listed_checkpoint_loads, cached_export, latest, make_tiny_model_dir,
    tiny_args, topic_rows, write_training_csv,
)

REPO = Path(__file__).resolve().parent.parent
WAIT_SECONDS = 300


def run_limited(command: list[str], file_size_limit: int | None = None, **env) -> tuple[int, str]:
    """Run a CLI with RLIMIT_FSIZE set in the child (None: no limit); returns (exit code, output).

    Output goes to a pipe: the limit applies to files only, so the child can always report.
    """
    def limit_file_size():
        if file_size_limit is not None:
            _, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, hard))

    full_env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1",
                    PYTHONPATH=os.pathsep.join([str(SHIM_DIR), str(REPO)]), **env)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        full_env.pop(name, None)
    result = subprocess.run([sys.executable, *command], cwd=REPO, env=full_env, capture_output=True, text=True,
                            timeout=WAIT_SECONDS, preexec_fn=limit_file_size)
    return result.returncode, result.stdout + result.stderr


def assert_clear_storage_error(code: int, output: str) -> None:
    assert code == 1, output[-4000:]
    assert "Traceback" not in output, output[-4000:]
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    # RLIMIT_FSIZE refuses with EFBIG, which the message names; a full disk (ENOSPC) takes the same path.
    assert len(lines) == 1 and "the file-size limit (ulimit -f) was reached" in lines[0], output[-4000:]


def tree_digest(directory: Path) -> dict:
    """File name -> sha256 of everything under a directory."""
    return {str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(directory.rglob("*")) if path.is_file()}


def hidden_leftovers(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


# ---------------------------------------------------------------- training

@pytest.fixture(scope="module")
def topic_data(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("disk-train")
    write_training_csv(directory / "train.csv", topic_rows(48, seed=1))
    write_training_csv(directory / "valid.csv", topic_rows(10, seed=2))
    return directory


def test_training_out_of_space_while_writing_the_model_dir_keeps_the_previous_one(topic_data, tmp_path):
    """--overwrite_output_dir over a complete model; the limit hits while the new one is assembled."""
    output_dir = tmp_path / "model"
    make_tiny_model_dir(output_dir)  # the previous, complete model directory
    before = tree_digest(output_dir)
    weights = (output_dir / "model.safetensors").stat().st_size
    args = tiny_args(topic_data, output_dir=str(output_dir), overwrite_output_dir=True, **FAULT_RUN_OPTIONS)
    # Far below the new weights file (2 MB), far above every other file of the directory.
    code, output = run_limited(["train.py", *args], JBERT_FAULT_FSIZE_IN_MODEL_DIR="400000")
    assert_clear_storage_error(code, output)
    assert f"{output_dir} was left as it was" in output
    assert tree_digest(output_dir) == before, "the previous model directory must be untouched"
    assert hidden_leftovers(tmp_path, "model") == [], "no temporary model directory left behind"
    # The run's checkpoints are intact: with space back, `latest` finishes the job.
    root = Path(f"{output_dir}.checkpoints")
    assert latest(root) == "step_00000012"
    assert_every_listed_checkpoint_loads(root)
    code, output = run_limited(["train.py", *args, "--resume_from_checkpoint", "latest"])
    assert code == 0, output[-4000:]
    assert (output_dir / "model.safetensors").stat().st_size != weights
    assert json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))["global_step"] == 12


@pytest.mark.parametrize("first_write", ["checkpoint", "best_weights"])
def test_training_out_of_space_from_the_start(first_write, topic_data, tmp_path):
    """ulimit -f 1 MB for the whole run: the first 2 MB file (a checkpoint's weights at step 2, or
    without checkpoints the best weights after the first evaluation) cannot be written."""
    output_dir = tmp_path / "model"
    options = dict(FAULT_RUN_OPTIONS) if first_write == "checkpoint" else {**FAULT_RUN_OPTIONS, "checkpointing_steps": None}
    args = tiny_args(topic_data, output_dir=str(output_dir), **options)
    code, output = run_limited(["train.py", *args], file_size_limit=1_000_000)
    assert_clear_storage_error(code, output)
    if first_write == "checkpoint":
        assert ".partial_step_00000002" in output and "checkpoints already in" in output
    else:
        assert "model.checkpoints/best" in output
    assert not output_dir.exists()
    root = Path(f"{output_dir}.checkpoints")
    assert latest(root) is None
    assert not [p.name for p in root.iterdir() if p.name.startswith(".")], "no partial checkpoint or weights left"


# ---------------------------------------------------------------- export

@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> tuple[Path, Path]:
    return cached_export(tmp_path_factory)


def test_export_out_of_space_leaves_no_export_dir(exported, tmp_path):
    model_dir, reference_export = exported
    onnx_size = (reference_export / "model.onnx").stat().st_size
    export_dir = tmp_path / "onnx"
    code, output = run_limited(["export.py", str(model_dir), str(export_dir)], file_size_limit=onnx_size // 2)
    assert_clear_storage_error(code, output)
    assert not export_dir.exists()
    assert hidden_leftovers(tmp_path, "onnx") == []


def test_export_out_of_space_over_a_previous_export_keeps_it(exported, tmp_path):
    model_dir, reference_export = exported
    onnx_size = (reference_export / "model.onnx").stat().st_size
    export_dir = tmp_path / "onnx"
    shutil.copytree(reference_export, export_dir)
    before = tree_digest(export_dir)
    code, output = run_limited(["export.py", str(model_dir), str(export_dir), "--overwrite"],
                               file_size_limit=onnx_size // 2)
    assert_clear_storage_error(code, output)
    assert tree_digest(export_dir) == before
    assert hidden_leftovers(tmp_path, "onnx") == []


# ---------------------------------------------------------------- batch scoring

def test_scoring_out_of_space_leaves_no_output_and_resumes_every_row_once(exported, tmp_path):
    _, export_dir = exported
    texts = ["この商品はとても良いです。", "最悪の料理でした。", "普通のホテルです", "今日は雨"]
    source = tmp_path / "reviews.csv"
    with open(source, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text"])
        for i in range(3000):
            writer.writerow([i, f"{texts[i % 4]}{i}"])
    output = tmp_path / "scored.csv"
    code, printed = run_limited(["serve_onnx.py", "score", str(export_dir), str(source), str(output)],
                                file_size_limit=64_000)
    assert code != 0, printed[-4000:]
    assert not output.exists(), "a partial output must never carry the final name"
    code, printed = run_limited(["serve_onnx.py", "score", str(export_dir), str(source), str(output), "--resume"])
    assert code == 0, printed[-4000:]
    with open(output, encoding="utf-8", newline="") as handle:
        ids = [int(row["id"]) for row in csv.DictReader(handle)]
    assert ids == list(range(3000)), "every input row exactly once, in order"
    assert hidden_leftovers(tmp_path, "scored.csv") == [] and sorted(p.name for p in tmp_path.iterdir()) == [
        "reviews.csv", "scored.csv"]


def test_scoring_out_of_space_is_one_clear_message(exported, tmp_path):
    _, export_dir = exported
    source = tmp_path / "reviews.csv"
    source.write_text("text\n" + "この商品はとても良いです。\n" * 3000, encoding="utf-8")
    code, printed = run_limited(["serve_onnx.py", "score", str(export_dir), str(source), str(tmp_path / "out.csv")],
                                file_size_limit=64_000)
    assert_clear_storage_error(code, printed)


# ---------------------------------------------------------------- the helpers the drills rely on

def test_a_full_disk_is_recognised_through_each_writer_s_wrapping():
    import errno

    from jbert.core.storage import is_storage_full

    assert is_storage_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert is_storage_full(OSError(errno.EFBIG, os.strerror(errno.EFBIG)))
    assert is_storage_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    # safetensors (Rust) keeps only the text; torch.save's stream writer loses the errno altogether.
    assert is_storage_full(Exception("Error while serializing: I/O error: File too large (os error 27)"))
    torch_error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
    torch_error.__context__ = RuntimeError("basic_ios::clear: iostream error")
    assert is_storage_full(torch_error)
    assert not is_storage_full(OSError(errno.EACCES, os.strerror(errno.EACCES)))
    assert not is_storage_full(ValueError("File too large to be a CSV?"))  # a ValueError is never the disk
    assert is_storage_full(RuntimeError("x")) is False


def test_the_message_names_the_limit_that_refused_the_write(tmp_path):
    import errno

    from jbert.core.storage import storage_full_error

    def message(err):
        return str(storage_full_error(err, tmp_path / "out", left="nothing was left behind"))

    assert "no space left on the device" in message(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert "the disk quota was exceeded" in message(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    assert "the file-size limit (ulimit -f) was reached" in message(Exception("I/O error: File too large (os error 27)"))
    torch_error = RuntimeError("unexpected pos 576 vs 534")
    torch_error.__context__ = RuntimeError("basic_ios::clear: iostream error")
    text = message(torch_error)
    assert "most likely for lack of space" in text and "GB free" in text and text.endswith("nothing was left behind")


def test_atomic_directory_output_is_not_private_and_dead_writers_temporaries_go(tmp_path):
    import socket

    from jbert.core.artifacts import atomic_directory

    dead_pid = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                                  text=True, check=True).stdout)
    host = socket.gethostname()
    stale = tmp_path / f".out.tmp-{host}-{dead_pid}-x1"  # left by a SIGKILLed writer
    running = tmp_path / f".out.tmp-{host}-{os.getppid()}-x2"  # a writer that is still alive
    elsewhere = tmp_path / f".out.tmp-another-host-{dead_pid}-x3"  # a writer on another machine
    for directory in (stale, running, elsewhere):
        directory.mkdir()
    with atomic_directory(tmp_path / "out") as work_dir:
        (work_dir / "weights").write_text("complete")
    assert not stale.exists() and running.exists() and elsewhere.exists()
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask, "the same mode mkdir would give"
    assert (tmp_path / "out" / "weights").read_text() == "complete"
