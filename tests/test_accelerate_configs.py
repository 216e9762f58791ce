"""The shipped accelerate configs and the launch checks (fast: no training process is started)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from jbert.train import launch, process_group
from jbert.core.errors import UserError

from conftest import tiny_args, topic_rows, write_training_csv

REPO = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO / "accelerate_configs"
YAML_CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))
DS_JSONS = sorted((CONFIG_DIR / "deepspeed").glob("*.json"))
EXPECTED = {"cpu", "multi_cpu", "single_gpu", "multi_gpu", "deepspeed_zero2", "deepspeed_zero2_offload",
            "deepspeed_zero3", "deepspeed_zero3_offload", "fsdp", "multi_node"}


def test_every_advertised_config_is_shipped():
    assert EXPECTED <= {p.stem for p in YAML_CONFIGS}


@pytest.mark.parametrize("path", YAML_CONFIGS, ids=lambda p: p.name)
def test_config_parses_with_accelerate_and_names_existing_deepspeed_json(path, monkeypatch):
    from accelerate.commands.config.config_args import load_config_from_file

    monkeypatch.chdir(REPO)  # DeepSpeed JSON paths are relative to the launch directory
    values = launch.load_accelerate_config(str(path))
    parsed = load_config_from_file(str(path))  # accelerate's own reader (rejects unknown keys)
    assert str(parsed.distributed_type).split(".")[-1] == values["distributed_type"]
    assert values["num_processes"] == values["num_machines"] * max(1, values["num_processes"] // values["num_machines"])
    ds_file = launch.deepspeed_json_path(values)
    if values["distributed_type"] == "DEEPSPEED":
        ds_config = launch.load_deepspeed_json(ds_file, str(path))
        stage = ds_config["zero_optimization"]["stage"]
        assert f"zero{stage}" in path.stem
        assert ("offload" in path.stem) == ("offload_optimizer" in ds_config["zero_optimization"])
        # Accelerate refuses mixed_precision next to a deepspeed_config_file, and use_cpu drops DeepSpeed.
        assert "mixed_precision" not in values and not values.get("use_cpu")
        assert values["deepspeed_config"]["zero3_init_flag"] == (stage == 3)
    else:
        assert ds_file is None
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("#"), "every shipped config opens with a comment saying what it is for"
    assert f"accelerate launch --config_file accelerate_configs/{path.name}" in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", DS_JSONS, ids=lambda p: p.name)
def test_deepspeed_json_is_wired_to_our_flags(path):
    ds_config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size", "gradient_clipping"):
        assert ds_config[key] == "auto", key
    assert ds_config["fp16"]["enabled"] == "auto" and ds_config["bf16"]["enabled"] == "auto"
    if ds_config["zero_optimization"]["stage"] == 3:
        # Without it accelerator.get_state_dict cannot gather a consolidated model to save.
        assert ds_config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    referenced = {launch.deepspeed_json_path(yaml.safe_load(p.read_text())) for p in YAML_CONFIGS}
    assert f"accelerate_configs/deepspeed/{path.name}" in referenced, "every DeepSpeed JSON is used by a config"


def test_deepspeed_values_that_contradict_flags_are_each_reported():
    ds_config = {"train_micro_batch_size_per_gpu": 4, "gradient_accumulation_steps": 3, "train_batch_size": 10,
                 "gradient_clipping": 0.5, "optimizer": {"type": "AdamW", "params": {"lr": 0.1}},
                 "scheduler": {"type": "WarmupCosineLR"}}
    problems = launch.deepspeed_batch_problems(
        ds_config, per_device_train_batch_size=8, gradient_accumulation_steps=1, num_processes=2,
        max_grad_norm=1.0, learning_rate=5e-5, lr_scheduler_type="linear")
    text = "\n".join(problems)
    assert len(problems) == 6, text
    assert "train_micro_batch_size_per_gpu 4" in text and "--per_device_train_batch_size is 8" in text
    assert "= 16" in text  # 8 x 1 x 2
    assert "WarmupCosineLR" in text and "WarmupDecayLR" in text
    agreeing = {"train_micro_batch_size_per_gpu": 8, "gradient_accumulation_steps": 1, "train_batch_size": 16,
                "gradient_clipping": 1.0, "optimizer": {"params": {"lr": "auto"}}, "scheduler": {"type": "WarmupDecayLR"}}
    assert launch.deepspeed_batch_problems(
        agreeing, per_device_train_batch_size=8, gradient_accumulation_steps=1, num_processes=2,
        max_grad_norm=1.0, learning_rate=5e-5, lr_scheduler_type="linear") == []


def test_accelerator_kwargs_on_a_cpu_only_machine(monkeypatch):
    monkeypatch.setattr(process_group, "gpu_like_device_available", lambda: False)
    for name in ("ACCELERATE_USE_DEEPSPEED", "ACCELERATE_USE_FSDP", "ACCELERATE_USE_CPU"):
        monkeypatch.delenv(name, raising=False)
    assert process_group.accelerator_init_kwargs() == {"cpu": True}
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    (handler,) = process_group.accelerator_init_kwargs()["kwargs_handlers"]
    assert handler.backend == "gloo"
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    with pytest.raises(UserError, match="drop DeepSpeed"):
        process_group.accelerator_init_kwargs()
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    monkeypatch.delenv("ACCELERATE_USE_CPU")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(UserError, match="FSDP needs GPUs"):
        process_group.accelerator_init_kwargs()
    monkeypatch.setattr(process_group, "gpu_like_device_available", lambda: True)
    assert process_group.accelerator_init_kwargs() == {}  # with GPUs Accelerate's own choice stands


class _FakeAccelerator:
    num_processes = 1
    distributed_type = "DistributedType.NO"


def test_two_rank_zero_copies_are_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="started 2 processes but this one sees a world of 1"):
        process_group.verify_process_group(_FakeAccelerator())
    monkeypatch.setenv("WORLD_SIZE", "1")
    process_group.verify_process_group(_FakeAccelerator())


# ------------------------------------------------------------------ checked launcher: exit code 2, nothing started

@pytest.fixture
def small_data(tmp_path):
    write_training_csv(tmp_path / "train.csv", topic_rows(16, seed=1))
    write_training_csv(tmp_path / "valid.csv", topic_rows(4, seed=2))
    return tmp_path


def _launch_cli(argv, monkeypatch, capsys):
    started = []
    monkeypatch.setattr(launch.subprocess, "call", lambda command: started.append(command) or 0)
    monkeypatch.chdir(REPO)
    code = launch._cli(argv)
    return code, capsys.readouterr().err, started


def test_missing_and_unparsable_accelerate_config(small_data, monkeypatch, capsys):
    code, err, started = _launch_cli(["--config_file", str(small_data / "nope.yaml"), "--", *tiny_args(small_data)],
                                     monkeypatch, capsys)
    assert code == 2 and "nope.yaml does not exist" in err and "multi_cpu.yaml" in err and not started
    broken = small_data / "broken.yaml"
    broken.write_text("distributed_type: [MULTI_GPU\n")
    code, err, started = _launch_cli(["--config_file", str(broken), "--", *tiny_args(small_data)], monkeypatch, capsys)
    assert code == 2 and "not valid YAML" in err and not started


def test_deepspeed_json_contradicting_flags_is_refused_before_launch(small_data, monkeypatch, capsys):
    ds_json = small_data / "ds.json"
    ds_json.write_text(json.dumps({"train_micro_batch_size_per_gpu": 4, "train_batch_size": 64,
                                   "zero_optimization": {"stage": 2}}))
    config = yaml.safe_load((CONFIG_DIR / "deepspeed_zero2.yaml").read_text())
    config["deepspeed_config"]["deepspeed_config_file"] = str(ds_json)
    config_file = small_data / "ds.yaml"
    config_file.write_text(yaml.safe_dump(config))
    code, err, started = _launch_cli(["--config_file", str(config_file), "--",
                                      *tiny_args(small_data, per_device_train_batch_size=8)], monkeypatch, capsys)
    assert code == 2 and not started
    assert "train_micro_batch_size_per_gpu 4" in err and "train_batch_size 64" in err and "= 16" in err
    config["deepspeed_config"]["deepspeed_config_file"] = str(small_data / "missing.json")
    config_file.write_text(yaml.safe_dump(config))
    code, err, started = _launch_cli(["--config_file", str(config_file), "--", *tiny_args(small_data)],
                                     monkeypatch, capsys)
    assert code == 2 and "missing.json, which does not exist" in err and not started


def test_more_processes_than_batches_is_refused(small_data, monkeypatch, capsys):
    # 48 training rows, batch 16 x 4 processes = 64 > 48
    code, err, started = _launch_cli(["--config_file", "accelerate_configs/multi_cpu.yaml", "--num_processes", "4",
                                      "--", *tiny_args(small_data, per_device_train_batch_size=16)],
                                     monkeypatch, capsys)
    assert code == 2 and "48 training examples cannot fill one batch of 16 on each of 4 processes" in err
    assert not started


def test_resume_with_another_world_size_is_refused_before_launch(small_data, monkeypatch, capsys):
    from jbert.train.checkpoint import TrainerState

    checkpoint = small_data / "model.checkpoints" / "step_00000004"
    checkpoint.mkdir(parents=True)
    TrainerState(global_step=4, world_size=1).save(checkpoint)
    argv = tiny_args(small_data, resume_from_checkpoint="auto")
    code, err, started = _launch_cli(["--config_file", "accelerate_configs/multi_cpu.yaml", "--", *argv],
                                     monkeypatch, capsys)
    assert code == 2 and "written by 1 process(es) but this launch starts 2" in err and not started
    code, err, started = _launch_cli(["--config_file", "accelerate_configs/cpu.yaml", "--", *argv], monkeypatch, capsys)
    assert code == 0 and len(started) == 1  # same world size: launched
    command = started[0]
    assert command[command.index("--config_file") + 1] == "accelerate_configs/cpu.yaml"
    assert command[-len(argv):] == argv and command[-len(argv) - 1].endswith("train.py")


def test_fsdp_on_cpu_only_machine_is_refused(small_data, monkeypatch, capsys):
    monkeypatch.setattr(launch, "gpu_like_device_available", lambda: False)
    code, err, started = _launch_cli(["--config_file", "accelerate_configs/fsdp.yaml", "--", *tiny_args(small_data)],
                                     monkeypatch, capsys)
    assert code == 2 and "FSDP needs GPUs" in err and not started


def test_launcher_as_a_real_process_exits_2(small_data):
    """End to end through `python -m jbert.train.launch`: exit code 2 and one line, no traceback."""
    result = subprocess.run([sys.executable, "-m", "jbert.train.launch", "--config_file", str(small_data / "none.yaml"), "--",
                             *tiny_args(small_data)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "none.yaml does not exist" in result.stderr and "Traceback" not in result.stderr


def test_launcher_help_shows_usage_and_starts_nothing(monkeypatch, capsys):
    for argv in (["--help"], ["-h"], ["--config_file", "accelerate_configs/cpu.yaml", "--help"]):
        code, _, started = _launch_cli(argv, monkeypatch, capsys)
        assert code == 0 and not started
    assert "python -m jbert.train.launch --config_file accelerate_configs/multi_cpu.yaml --" in launch.__doc__
    launch._cli(["--help"])
    assert "Everything before `--` goes to `accelerate launch`" in capsys.readouterr().out
