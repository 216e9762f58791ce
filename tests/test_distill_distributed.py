"""--task distill on two real CPU processes (accelerate launch, the shipped multi_cpu.yaml), killed
after step 4 and resumed with two processes, equals one process.

The teacher is an export directory (its ONNX file through onnxruntime), so the run also proves that
the teachers' outputs are computed once by the main process and read from the cache by the other.
Reference: one process with batch 16 in this pytest process; the launch: 2 processes x batch 8, dropout 0,
fp32, the same seed (as tests/test_distributed.py does for classification).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import (CRASHING_TRAIN, cached_export, finish, free_port, launch_env, run_training, start, tiny_args,
                      topic_rows, write_training_csv)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.multiprocess

SENTIMENT = {"スポーツ": "positive", "料理": "neutral", "天気": "negative"}  # the export teacher's labels
STEPS = 6
# As tests/test_distributed.py: same global batches, gradients averaged over 2 x 8 instead of 16, so
# the differences are float rounding (measured here: at most 5e-7).
WEIGHT_ATOL = 2e-5
METRIC_ATOL = 1e-4


def assert_same_model(model_dir: Path, reference_dir: Path) -> float:
    """Same tensors within WEIGHT_ATOL; returns the largest absolute difference."""
    expected, actual = load_file(str(reference_dir / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=WEIGHT_ATOL, err_msg=name)
    return max(float(np.abs(actual[name] - expected[name]).max()) for name in expected)


def assert_two_ranks(output: str) -> None:
    """The main process logged a real 2-process gloo world; only it wrote the model directory."""
    assert "Distributed environment: DistributedType.MULTI_CPU" in output, output[-3000:]
    assert "Num processes: 2" in output
    assert output.count("model written to") == 1, "only the main process writes and logs"


def read_metrics(model_dir: Path) -> dict:
    return json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))


def _sentiment_rows(n_per_class: int, seed: int) -> list[dict]:
    return [{"text": row["text"], "label": SENTIMENT[row["label"]]} for row in topic_rows(n_per_class, seed)]


def distill_args(work: Path, teacher: Path, output_dir: Path, batch: int) -> list[str]:
    """A tiny from-scratch student of the export teacher, with labelled and unlabeled texts."""
    return tiny_args(work, task="distill", teacher=str(teacher), output_dir=str(output_dir), vocab_size=None,
                     unlabeled_file=str(work / "unlabeled.txt"), test_file=str(work / "test.csv"),
                     per_device_train_batch_size=batch, max_train_steps=STEPS, eval_steps=3, dropout=0.0,
                     max_length=32, distill_temperature=2.0, learning_rate=3e-3, calibrate="none",
                     baseline="none")


def test_two_process_distillation_with_an_onnx_teacher_equals_one_process(tmp_path, tmp_path_factory):
    """2 x 8 == 1 x 16 through a crash and a 2-process resume: same student weights, validation figures
    and distillation report; the teacher runs once, in the first run, and the resume reads its cache."""
    _, teacher = cached_export(tmp_path_factory)  # tiny random teacher, exported (fp32 + int8)
    write_training_csv(tmp_path / "train.csv", _sentiment_rows(8, seed=1))  # 24 labelled
    write_training_csv(tmp_path / "valid.csv", _sentiment_rows(5, seed=2))  # 15: uneven over 2 processes
    write_training_csv(tmp_path / "test.csv", _sentiment_rows(3, seed=3))
    texts = [row["text"] for row in topic_rows(8, seed=4)]  # 24 unlabeled: 48 training texts, 3 batches of 16
    (tmp_path / "unlabeled.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")

    expected = run_training(distill_args(tmp_path, teacher, tmp_path / "one", 16))
    output_dir = tmp_path / "two"
    # The 2-process run is killed after step 4 (a checkpoint every 2 steps) and resumed with 2 processes.
    args = distill_args(tmp_path, teacher, output_dir, 8) + ["--checkpointing_steps", "2"]
    crashing = tmp_path / "crashing_train.py"
    crashing.write_text(CRASHING_TRAIN)
    code, output = finish(start("multi_cpu.yaml", ["4", *args], free_port(), env=launch_env(PYTHONPATH=str(REPO)),
                                script=str(crashing)), timeout=400)
    assert code != 0 and "simulated crash after step 4" in output, output[-6000:]
    # The main process ran the teacher; rank 1 (which logs warnings only) calls teacher_outputs with
    # compute=False, which raises unless it finds the main process's cache: its success is the proof.
    assert output.count("teacher outputs: train,") == 1
    code, output = finish(start("multi_cpu.yaml", args + ["--resume_from_checkpoint", "auto"], free_port(),
                                env=launch_env(PYTHONPATH=str(REPO))), timeout=400)
    assert code == 0, output[-6000:]
    assert_two_ranks(output)
    assert "resuming from" in output and "step_00000004" in output
    assert "2 process(es) x batch 8 x accumulation 1 = 16 per step" in output
    # The resumed run reads the teachers' outputs the first run cached; no teacher runs again.
    assert "teacher outputs: train," not in output and "teacher outputs read from" in output
    print(f"max |weight difference| vs 1 process: {assert_same_model(output_dir, tmp_path / 'one'):.2e}")
    metrics = read_metrics(output_dir)
    assert metrics["global_step"] == expected["global_step"] == STEPS
    for key, value in expected["validation"].items():
        if isinstance(value, float):
            assert metrics["validation"][key] == pytest.approx(value, abs=METRIC_ATOL), key
    for split in ("validation", "test"):
        mine, theirs = metrics["distillation"]["splits"][split], expected["distillation"]["splits"][split]
        assert mine["teacher_agreement"] == pytest.approx(theirs["teacher_agreement"], abs=METRIC_ATOL), split
        assert mine["teacher"] == pytest.approx(theirs["teacher"], abs=METRIC_ATOL), split
    assert not Path(f"{output_dir}.checkpoints", "teacher_outputs.npz").exists()
    assert json.loads((output_dir / "config.json").read_text())["id2label"] == {"0": "negative", "1": "neutral",
                                                                               "2": "positive"}
