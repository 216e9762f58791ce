"""Resume and multi-process training for the non-BERT families (ModernBERT, DeBERTa-v3, XLM-RoBERTa).

The same proofs tests/test_training.py and tests/test_distributed.py give for BERT, on the tiny
random-weight family directories of tests/conftest.py (`base_dirs`): a classification run interrupted
mid-epoch and resumed from its checkpoint ends with the uninterrupted run's weights, metrics and
evaluation history (dropout on, so the restored random states matter too); and two real CPU
processes through accelerate_configs/multi_cpu.yaml (2 x batch 8) end where one process with batch
16 does (ModernBERT in the default suite; JBERT_ALL_FAMILIES=1 launches DeBERTa-v3 and XLM-R too).
docs/encoders.md names these tests under its support matrix.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import (
    FULL_PATH_FAMILIES, QUICKSTART, REPO_ROOT, SimulatedCrash, assert_same_run, crash_after, finish, free_port,
    launch_env, run_training, start,
)

# 48 training rows / batch 8 = 6 steps an epoch, 2 epochs; 15 validation rows, uneven over 2 processes (the
# gathered metrics must drop the padding duplicate).
TRAIN_ROWS, VALIDATION_ROWS = 48, 15


@pytest.fixture(scope="module")
def family_data(tmp_path_factory) -> Path:
    """A directory with train.csv and valid.csv cut from the shipped quickstart reviews."""
    directory = tmp_path_factory.mktemp("family-data")
    for source, target, count in (("train", "train", TRAIN_ROWS), ("validation", "valid", VALIDATION_ROWS)):
        with open(QUICKSTART / f"{source}.csv", encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))[:count]
        with open(directory / f"{target}.csv", "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"], extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return directory


def family_args(base_dir: Path, data: Path, output_dir: Path, **overrides) -> list[str]:
    """train.py arguments fine-tuning BASE_DIR on DATA's files (None drops an option)."""
    options = {"model_name_or_path": str(base_dir), "train_file": str(data / "train.csv"),
               "validation_file": str(data / "valid.csv"), "output_dir": str(output_dir), "max_length": 32,
               "per_device_train_batch_size": 8, "num_train_epochs": 2, "learning_rate": 1e-3, "seed": 7,
               "disable_tqdm": True, "baseline": "none", "logging_steps": 3}
    options.update(overrides)
    return [item for key, value in options.items() if value is not None for item in (f"--{key}", str(value))]


@pytest.mark.parametrize("family", FULL_PATH_FAMILIES)
def test_interrupted_and_resumed_run_equals_uninterrupted(base_dirs, family_data, tmp_path, family):
    """Crashed after step 5 of 6 in epoch 1, resumed from the step-4 checkpoint: same weights, metrics and
    evaluation history as the run that was never interrupted (dropout 0.1 on every dropout the family has)."""
    common = dict(checkpointing_steps=2, dropout=0.1)
    reference_dir, resumed_dir = tmp_path / "reference", tmp_path / "resumed"
    every_step = crash_after(step=-1)
    run_training(family_args(base_dirs(family), family_data, reference_dir, **common), on_step_end=every_step)
    assert every_step.seen == list(range(1, 13))

    crash = crash_after(5)
    with pytest.raises(SimulatedCrash):
        run_training(family_args(base_dirs(family), family_data, resumed_dir, **common), on_step_end=crash)
    assert not resumed_dir.exists(), "a crashed run must not leave a model dir"
    after_resume = crash_after(step=-1)
    run_training(family_args(base_dirs(family), family_data, resumed_dir, resume_from_checkpoint="auto", **common),
                 on_step_end=after_resume)
    assert after_resume.seen == list(range(5, 13)), "the resumed run continues after the step-4 checkpoint"
    config = json.loads((resumed_dir / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == family
    dropout_key = "mlp_dropout" if family == "modernbert" else "hidden_dropout_prob"
    assert config[dropout_key] == 0.1, "dropout must be on, or the restored random states are not put to the test"
    assert_same_run(resumed_dir, reference_dir)


# Same global batches, gradients averaged over 2 x 8 instead of 16: float rounding only (tests/test_distributed.py).
WEIGHT_ATOL, METRIC_ATOL = 2e-5, 1e-4
# A 2-process launch costs 10-30 s on a busy 2-core machine, so the default suite launches ModernBERT (the
# family furthest from BERT: no token types, its own dropout names, RoPE); JBERT_ALL_FAMILIES=1 adds
# DeBERTa-v3 and XLM-R (both passed when the test was written).
ALL_FAMILIES = os.environ.get("JBERT_ALL_FAMILIES") == "1"
LAUNCHED_FAMILIES = ["modernbert"] + [
    pytest.param(family, marks=pytest.mark.skipif(not ALL_FAMILIES, reason="set JBERT_ALL_FAMILIES=1 to launch it too"))
    for family in FULL_PATH_FAMILIES if family != "modernbert"]


@pytest.mark.multiprocess
@pytest.mark.parametrize("family", LAUNCHED_FAMILIES)
def test_two_processes_equal_one_process(base_dirs, family_data, tmp_path, family):
    """accelerate launch --config_file accelerate_configs/multi_cpu.yaml (2 CPU processes, gloo, batch 8 each)
    ends with the weights and validation metrics of one process with batch 16 (dropout 0)."""
    common = dict(dropout=0.0)
    reference_dir, parallel_dir = tmp_path / "one_process", tmp_path / "two_processes"
    expected = run_training(family_args(base_dirs(family), family_data, reference_dir,
                                        per_device_train_batch_size=16, **common))
    args = family_args(base_dirs(family), family_data, parallel_dir, **common)
    code, output = finish(start("multi_cpu.yaml", args, free_port(), env=launch_env(PYTHONPATH=str(REPO_ROOT))))
    assert code == 0, output[-6000:]
    assert "Num processes: 2" in output and "2 process(es) x batch 8 x accumulation 1 = 16 per step" in output
    assert output.count("model written to") == 1, "only the main process writes"
    reference = load_file(str(reference_dir / "model.safetensors"))
    parallel = load_file(str(parallel_dir / "model.safetensors"))
    assert reference.keys() == parallel.keys()
    for name in reference:
        np.testing.assert_allclose(parallel[name], reference[name], atol=WEIGHT_ATOL, err_msg=name)
    metrics = json.loads((parallel_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["global_step"] == expected["global_step"] == 6  # 48 rows / 16 x 2 epochs
    for key, value in expected["validation"].items():
        if isinstance(value, float):
            assert metrics["validation"][key] == pytest.approx(value, abs=METRIC_ATOL), key
    assert metrics["validation"]["confusion_matrix"] == expected["validation"]["confusion_matrix"]
