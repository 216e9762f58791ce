"""The GPU proof kit (bench/gpu_check.py, bench/gpu_wheels.py) in CPU mode: it must not rot while no GPU runs it."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"


def _bench_module(name: str):
    sys.path.insert(0, str(BENCH))  # the bench scripts import their siblings (json_out, contenders)
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


def test_cpu_mode_trains_both_contenders_exports_and_prints_one_json_object(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    done = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py"), "--mode", "cpu", "--sections", "environment", "throughput",
         "export", "--contenders", "jbert_bf16_sdpa", "trainer_best", "--work_dir", str(tmp_path / "work")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)  # the whole of stdout is one JSON object
    sections = report["sections"]
    assert report["mode"] == "cpu" and list(sections) == ["environment", "throughput", "export"], report
    assert report["ok"], json.dumps(sections)[:3000]
    assert sections["environment"]["device_count"] == 0 and sections["environment"]["torch"]
    contenders = sections["throughput"]["contenders"]
    for name in ("jbert_bf16_sdpa", "trainer_best"):
        figures = contenders[name]
        assert figures["samples_per_s"] > 0 and figures["tokens_per_s"] > 0 and 0 <= figures["padding_share"] < 1
        assert figures["mfu"] > 0 and 0 <= figures["test_accuracy"] <= 1
    assert sections["throughput"]["ratios"]["jbert_bf16_sdpa_over_trainer_best"] > 0
    assert sections["export"]["model_dir"].endswith("tp-jbert_bf16_sdpa")
    assert sections["export"]["parity"]["batch_sizes"] == [1, 8] and sections["export"]["parity"]["n_texts"] > 0


def test_zero_runs_use_the_shipped_configs_and_resume_from_a_checkpoint(tmp_path):
    kit = _bench_module("gpu_check")
    first = kit.zero_command(3, tmp_path / "init", tmp_path / "out", kit.MODES["gpu"])
    config = first[first.index("--config_file") + 1]
    assert config == str(REPO / "accelerate_configs" / "deepspeed_zero3.yaml") and Path(config).is_file()
    assert first[first.index("--num_processes") + 1] == "1" and "--resume_from_checkpoint" not in first
    assert first[first.index("--mixed_precision") + 1] == "bf16"
    resumed = kit.zero_command(2, tmp_path / "init", tmp_path / "again", kit.MODES["cpu"], resume=tmp_path / "step_4")
    assert resumed[resumed.index("--resume_from_checkpoint") + 1] == str(tmp_path / "step_4")
    assert resumed[resumed.index("--mixed_precision") + 1] == "no"


def test_zero_verdict_needs_convergence_and_a_resume_that_ends_where_the_first_run_did():
    kit = _bench_module("gpu_check")

    def run(best: float, last_accuracy: float, last_loss: float) -> dict:
        history = [{"step": 4, "eval_loss": 0.2, "eval_accuracy": best}, {"step": 8, "train_loss": 0.1},
                   {"step": 8, "eval_loss": last_loss, "eval_accuracy": last_accuracy}]
        return {"validation": {"accuracy": best, "loss": 0.2}, "history": history}

    assert kit.judge_zero(run(0.95, 0.9, 0.30), run(0.95, 0.9, 0.301), 0.8)["ok"]
    assert not kit.judge_zero(run(0.60, 0.6, 0.90), run(0.60, 0.6, 0.90), 0.8)["ok"]  # did not converge
    # the best record (restored from the checkpoint) agrees, the training after the resume did not
    verdict = kit.judge_zero(run(0.95, 0.9, 0.30), run(0.95, 0.85, 0.45), 0.8)
    assert verdict["converged"] and not verdict["resume_matches"] and not verdict["ok"]


def test_wheel_folder_packs_what_the_image_lacks_and_nothing_it_has(tmp_path):
    wheels = _bench_module("gpu_wheels")
    present = wheels.present_names(None)
    assert {"torch", "transformers", "accelerate", "tokenizers", "numpy"} <= present
    planned = wheels.plan(present, skip=set())
    assert {"datasets", "deepspeed", "optimum", "scikit-learn"} <= set(planned)
    assert not set(planned) & present
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("torch==2.11.0\ndatasets==5.0.1\npyarrow @ file:///x\n# comment\n", encoding="utf-8")
    assert wheels.present_names(freeze) == {"torch", "datasets", "pyarrow"}
    planned = wheels.plan(wheels.present_names(freeze), skip={"matplotlib"})
    assert "datasets" not in planned and "pyarrow" not in planned and "matplotlib" not in planned
    assert planned["deepspeed"] == "0.19.8"  # the version installed here, requirements.txt's pin
