"""Real multi-process runs through `accelerate launch` with the shipped configs (CPU, gloo).

Each test starts `accelerate launch --config_file accelerate_configs/X.yaml train.py ...` as a subprocess
group on 127.0.0.1 with a free port, with a timeout, and kills the whole group whatever happens.
Reference for every comparison: one process with batch 16 (in this pytest process); the parallel runs
use 2 processes with batch 8, dropout 0, fp32, the same seed.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from conftest import (CRASHING_TRAIN, finish, free_port, launch_env, run_training, start, tiny_args, topic_rows,
                      write_training_csv)

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.multiprocess

# Same global batches, gradients averaged over 2 x 8 instead of 16: differences are float rounding
# (all-reduce order), amplified a little by Adam over 12 steps: measured at most 2.0e-6.
WEIGHT_ATOL = 2e-5
METRIC_ATOL = 1e-4
COMMON = dict(per_device_train_batch_size=8, num_train_epochs=2, dropout=0.0, max_length=32)


def launch(config: str, args: list[str], *launch_args: str, env: dict | None = None, timeout: int = 400) -> str:
    code, output = finish(start(config, args, free_port(), *launch_args, env=env), timeout)
    assert code == 0, output[-6000:]
    return output


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("distributed")
    write_training_csv(directory / "train.csv", topic_rows(32, seed=1))  # 96 rows: 6 global batches of 16 per epoch
    write_training_csv(directory / "valid.csv", topic_rows(7, seed=2))  # 21 rows: uneven over 2 processes
    return directory


@pytest.fixture(scope="module")
def reference(data_dir) -> tuple[dict, Path]:
    """One process, batch 16 (run in this pytest process)."""
    output_dir = data_dir / "one_process"
    metrics = run_training(tiny_args(data_dir, output_dir=str(output_dir),
                                     **{**COMMON, "per_device_train_batch_size": 16}))
    return metrics, output_dir


def assert_same_model(model_dir: Path, reference_dir: Path, atol: float = WEIGHT_ATOL) -> float:
    """Same tensors within atol; returns the largest absolute difference."""
    expected, actual = load_file(str(reference_dir / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    assert expected.keys() == actual.keys()
    worst = 0.0
    for name in expected:
        assert actual[name].dtype == np.float32, name
        np.testing.assert_allclose(actual[name], expected[name], atol=atol, err_msg=name)
        worst = max(worst, float(np.abs(actual[name] - expected[name]).max()))
    return worst


def assert_same_metrics(metrics: dict, expected: dict) -> None:
    for key, value in expected["validation"].items():
        if isinstance(value, float):
            assert metrics["validation"][key] == pytest.approx(value, abs=METRIC_ATOL), key
    assert metrics["global_step"] == expected["global_step"] == 12


def read_metrics(model_dir: Path) -> dict:
    return json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))


def assert_two_ranks(output: str, distributed_type: str) -> None:
    """The main process logged a real 2-process world (never two independent rank-0 copies)."""
    assert f"Distributed environment: DistributedType.{distributed_type}" in output, output[-3000:]
    assert "Num processes: 2" in output
    assert output.count("model written to") == 1, "only the main process writes and logs"


SHARD_PROBE = r'''
import json, sys
from accelerate import Accelerator
from accelerate.utils import gather_object
from torch.utils.data import DataLoader
from jbert.train.process_group import accelerator_init_kwargs, verify_process_group
from jbert.train.dataloaders import LengthGroupedSampler

accelerator = Accelerator(**accelerator_init_kwargs())
verify_process_group(accelerator)
lengths = [(i * 7) % 13 + 1 for i in range(64)]
sampler = LengthGroupedSampler(lengths, 16, seed=3, group_by_length=True)
train = DataLoader(list(range(64)), batch_size=8, sampler=sampler)
evaluation = DataLoader(list(range(21)), batch_size=4)
train, evaluation = accelerator.prepare(train, evaluation)
batches = {}
for epoch in range(2):
    train.set_epoch(epoch)
    batches[epoch] = [batch.tolist() for batch in train]
evaluated = []
for batch in evaluation:
    evaluated += accelerator.gather_for_metrics(batch).tolist()
ranks = gather_object([{"rank": accelerator.process_index, "world": accelerator.num_processes, "batches": batches}])
if accelerator.is_main_process:
    with open(sys.argv[1], "w") as handle:
        json.dump({"ranks": ranks, "evaluated": evaluated}, handle)
accelerator.wait_for_everyone()
accelerator.state.destroy_process_group()  # as train() does: no gloo threads left for atexit
'''


def test_each_rank_sees_its_shard_of_every_epoch_and_metrics_gather_without_duplicates(tmp_path):
    from jbert.train.dataloaders import LengthGroupedSampler

    probe = tmp_path / "shard_probe.py"
    probe.write_text(SHARD_PROBE)
    env = launch_env(PYTHONPATH=str(REPO))
    code, output = finish(start("multi_cpu.yaml", [str(tmp_path / "seen.json")], free_port(), env=env,
                                script=str(probe)), timeout=200)
    assert code == 0, output[-4000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    ranks = sorted(seen["ranks"], key=lambda r: r["rank"])
    assert [(r["rank"], r["world"]) for r in ranks] == [(0, 2), (1, 2)]
    sampler = LengthGroupedSampler([(i * 7) % 13 + 1 for i in range(64)], 16, seed=3, group_by_length=True)
    for epoch in ("0", "1"):
        sampler.set_epoch(int(epoch))
        order = list(sampler)
        first, second = ranks[0]["batches"][epoch], ranks[1]["batches"][epoch]
        assert len(first) == len(second) == 4
        assert not set(sum(first, [])) & set(sum(second, [])), "the ranks' shards overlap"
        # Global step k = rank 0's k-th batch + rank 1's k-th batch = one process's k-th batch of 16.
        for step, (mine, theirs) in enumerate(zip(first, second)):
            assert mine + theirs == order[16 * step : 16 * step + 16]
    assert ranks[0]["batches"]["0"] != ranks[0]["batches"]["1"], "every epoch is reshuffled"
    assert sorted(seen["evaluated"]) == list(range(21)), "gather_for_metrics must drop the padding duplicates"


def test_two_processes_match_one_process_and_resume_with_two(data_dir, reference, tmp_path):
    """2 x 8 == 1 x 16 (weights and metrics), through a crash after step 5 and a resume with 2 processes."""
    from jbert.train.checkpoint import STATE_FILE

    expected, reference_dir = reference
    output_dir = tmp_path / "two_processes"
    args = tiny_args(data_dir, output_dir=str(output_dir), checkpointing_steps=2, **COMMON)
    crashing = tmp_path / "crashing_train.py"
    crashing.write_text(CRASHING_TRAIN)
    code, output = finish(start("multi_cpu.yaml", ["5", *args], free_port(), env=launch_env(PYTHONPATH=str(REPO)),
                                script=str(crashing)))
    assert code != 0 and "simulated crash after step 5" in output
    assert not output_dir.exists(), "a crashed run must not leave a model dir"
    checkpoints = sorted(p.name for p in Path(f"{output_dir}.checkpoints").glob("step_*"))
    assert checkpoints == ["step_00000002", "step_00000004"]
    state = json.loads((Path(f"{output_dir}.checkpoints") / "step_00000004" / STATE_FILE).read_text())
    assert state["world_size"] == 2 and state["global_step"] == 4

    output = launch("multi_cpu.yaml", args + ["--resume_from_checkpoint", "auto"])
    assert_two_ranks(output, "MULTI_CPU")
    assert "resuming from" in output and "step_00000004" in output
    assert "2 process(es) x batch 8 x accumulation 1 = 16 per step" in output
    print(f"max |weight difference| vs 1 process: {assert_same_model(output_dir, reference_dir):.2e}")
    assert_same_metrics(read_metrics(output_dir), expected)


def reloaded_validation_loss(model_dir: Path, valid_csv: Path) -> float:
    """Mean cross-entropy of the saved model, reloaded with from_pretrained, on the validation file."""
    import csv

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jbert.core.artifacts import JbertSettings
    from jbert.core.normalize import normalize_text

    settings = JbertSettings.load(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = list(csv.DictReader(open(valid_csv, encoding="utf-8")))
    texts = [normalize_text(row["text"], settings.normalization) for row in rows]
    labels = torch.tensor([model.config.label2id[row["label"]] for row in rows])
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=settings.max_length, return_tensors="pt")
    with torch.no_grad():
        logits = model(**encoded).logits
    return float(torch.nn.functional.cross_entropy(logits, labels))


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_zero_on_two_cpu_processes_saves_a_consolidated_model(stage, data_dir, reference, tmp_path):
    """Real 2-rank DeepSpeed (gloo); the saved directory reloads and predicts what the engine computed."""
    expected, reference_dir = reference
    output_dir = tmp_path / f"zero{stage}"
    args = tiny_args(data_dir, output_dir=str(output_dir), **COMMON)
    # The first DeepSpeed run on a machine JIT-compiles its CPU shared-memory op (minutes, then cached).
    output = launch(f"deepspeed_zero{stage}.yaml", args, env=launch_env(DS_ACCELERATOR="cpu"), timeout=580)
    assert_two_ranks(output, "DEEPSPEED")
    assert f"'stage': {stage}" in output  # the ds_config Accelerate logged
    metrics = read_metrics(output_dir)
    # In-memory (engine) validation loss at the best step == the reloaded save_pretrained model's.
    assert reloaded_validation_loss(output_dir, data_dir / "valid.csv") == pytest.approx(
        metrics["validation"]["loss"], abs=1e-5)
    worst = assert_same_model(output_dir, reference_dir)  # ZeRO's fp32 path == plain single-process training
    print(f"max |weight difference| vs 1 process: {worst:.2e}")
    assert_same_metrics(metrics, expected)


def test_zero3_fine_tunes_a_pretrained_directory_like_one_process(data_dir, reference, tmp_path):
    """--model_name_or_path under ZeRO-3 (zero3_init_flag) on two processes: it used to hang at the
    main-process-first barrier (building the model is a collective there), and then to fail in
    transformers 4.57's re-initialisation of the partitioned embeddings; now it equals one process."""
    _, pretrained = reference
    args = lambda out, batch: tiny_args(data_dir, output_dir=str(out), from_scratch=None, vocab_size=None,
                                        model_name_or_path=str(pretrained), calibrate="none",
                                        **{**COMMON, "num_train_epochs": 1, "per_device_train_batch_size": batch})
    one = tmp_path / "one"
    expected = run_training(args(one, 16))
    output_dir = tmp_path / "zero3_pretrained"
    output = launch("deepspeed_zero3.yaml", args(output_dir, 8), env=launch_env(DS_ACCELERATOR="cpu"), timeout=580)
    assert_two_ranks(output, "DEEPSPEED")
    assert "'stage': 3" in output
    print(f"max |weight difference| vs 1 process: {assert_same_model(output_dir, one):.2e}")
    metrics = read_metrics(output_dir)
    for key, value in expected["validation"].items():
        if isinstance(value, float):
            assert metrics["validation"][key] == pytest.approx(value, abs=METRIC_ATOL), key


def test_two_machines_on_localhost_train_together(data_dir, reference, tmp_path):
    """multi_node.yaml as shipped: machine_rank 0 and 1 as two launches, main process on 127.0.0.1."""
    expected, reference_dir = reference
    output_dir = tmp_path / "multi_node"
    args = tiny_args(data_dir, output_dir=str(output_dir), **COMMON)
    port = free_port()
    machines = [start("multi_node.yaml", args, port, "--machine_rank", str(rank)) for rank in (0, 1)]
    results = [finish(process) for process in machines]
    for code, output in results:
        assert code == 0, output[-6000:]
    main_output = results[0][1]
    assert_two_ranks(main_output, "MULTI_CPU")
    assert "model written to" not in results[1][1], "machine 1 hosts rank 1 only: it writes nothing"
    print(f"max |weight difference| vs 1 process: {assert_same_model(output_dir, reference_dir):.2e}")
    assert_same_metrics(read_metrics(output_dir), expected)
