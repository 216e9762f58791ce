"""--hp_search: trials on the validation split, pruning of poor ones, the best config saved and used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from conftest import tiny_args

from jbert.train.config import TrainConfig, load_yaml_recipe, parse_config
from jbert.train.hp_search import BEST_CONFIG_FILE, SEARCH_FILE, run_hp_search


def test_hp_search_2_runs_and_trains_the_final_model_with_the_best(topic_files):
    tmp = topic_files
    config = parse_config(tiny_args(tmp, hp_search=2, num_train_epochs=2, test_file=str(tmp / "test.csv")))
    metrics = run_hp_search(config)
    model_dir = tmp / "model"
    search = json.loads((model_dir / SEARCH_FILE).read_text(encoding="utf-8"))
    assert len(search["trials"]) == 2 and search["metric"] == "macro_f1"
    assert all(row["state"] == "complete" and 0 <= row["value"] <= 1 for row in search["trials"])
    best = search["best_params"]
    # the final model was trained with the best trial's settings, and says so
    saved = yaml.safe_load((model_dir / "training_config.yaml").read_text(encoding="utf-8"))
    assert saved["learning_rate"] == pytest.approx(best["learning_rate"])
    assert saved["per_device_train_batch_size"] == best["per_device_train_batch_size"]
    assert json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))["hp_search"]["best_trial"] == search["best_trial"]
    assert metrics["test"] is not None and "baseline" in metrics
    # the saved best configuration is a recipe train.py takes with --config
    recipe = load_yaml_recipe(str(model_dir / BEST_CONFIG_FILE))
    assert recipe["dropout"] == pytest.approx(best["dropout"]) and "hp_search" not in recipe
    assert not Path(str(model_dir) + ".hp_search").exists()


def test_poor_trials_are_pruned(tmp_path):
    """Trials that fall below the median of earlier ones at the same evaluation stop early."""
    calls = []

    def fake_train(config: TrainConfig, on_evaluate=None):
        trial = len(calls)
        calls.append(config)
        values = [0.9, 0.9, 0.9] if trial < 2 or on_evaluate is None else [0.1, 0.1, 0.1]
        evaluations = 0
        for step, value in enumerate(values):
            if on_evaluate is not None:
                on_evaluate({"step": step, "eval_accuracy": value, "eval_macro_f1": value})
            evaluations += 1
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        metrics = {"best": {"metric": "macro_f1", "value": max(values)}, "evaluations": evaluations}
        (out / "metrics.json").write_text(json.dumps(metrics), encoding="utf-8")
        return metrics

    (tmp_path / "train.csv").write_text("text,label\na,x\nb,y\n", encoding="utf-8")
    config = TrainConfig(from_scratch="tiny", train_file=str(tmp_path / "train.csv"),
                         output_dir=str(tmp_path / "model"), hp_search=4)
    run_hp_search(config, train_fn=fake_train)
    search = json.loads((tmp_path / "model" / SEARCH_FILE).read_text(encoding="utf-8"))
    states = [row["state"] for row in search["trials"]]
    assert states[:2] == ["complete", "complete"] and states[2:] == ["pruned", "pruned"]
    assert all(row["evaluations"] == 2 for row in search["trials"][2:])  # stopped at the 2nd evaluation
    assert search["best_trial"] in (0, 1) and len(calls) == 5  # 4 trials + the final model
    assert calls[-1].hp_search == 0 and calls[-1].learning_rate == search["best_params"]["learning_rate"]


def test_hp_search_refuses_several_processes(tmp_path, monkeypatch):
    from jbert.core.errors import UserError

    monkeypatch.setenv("WORLD_SIZE", "2")
    config = TrainConfig(from_scratch="tiny", train_file=str(tmp_path / "train.csv"), output_dir=str(tmp_path / "m"),
                         hp_search=2)
    with pytest.raises(UserError, match="one process"):
        run_hp_search(config, train_fn=lambda *a, **k: pytest.fail("no trial may start"))
