"""From-scratch recipe defaults: they fill only what the user left out, and every value's origin is kept."""

from __future__ import annotations

import yaml

from conftest import topic_rows, write_training_csv

from jbert.train.config import TrainConfig, load_yaml_recipe, parse_config
from jbert.train.recipes import FROM_SCRATCH_RECIPES


def test_recipe_fills_defaults_and_a_given_flag_or_yaml_value_wins(tmp_path):
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    train = ["--train_file", str(tmp_path / "train.csv")]
    recipe = FROM_SCRATCH_RECIPES["mini"]

    config = parse_config(train + ["--from_scratch", "mini"])
    for name, value in recipe.items():
        assert getattr(config, name) == value, name
        assert config.value_sources[name].startswith("recipe from_scratch mini"), name
    assert config.value_sources["train_file"] == "flag" and config.value_sources["seed"] == "default"

    # a flag equal to the dataclass default still wins: the user asked for it
    config = parse_config(train + ["--from_scratch", "mini", "--learning_rate", "5e-5", "--warmup_ratio=0"])
    assert config.learning_rate == 5e-5 and config.warmup_ratio == 0.0
    assert config.value_sources["learning_rate"] == "flag" and config.value_sources["warmup_ratio"] == "flag"
    assert config.num_train_epochs == recipe["num_train_epochs"]

    yaml_file = tmp_path / "r.yaml"
    yaml_file.write_text("from_scratch: mini\nnum_train_epochs: 2\n", encoding="utf-8")
    config = parse_config(train + ["--config", str(yaml_file)])
    assert config.num_train_epochs == 2 and config.value_sources["num_train_epochs"] == f"config {yaml_file}"
    assert config.learning_rate == recipe["learning_rate"]

    # a pretrained checkpoint keeps the fine-tuning defaults of the dataclass
    (tmp_path / "ckpt").mkdir()
    config = parse_config(train + ["--model_name_or_path", str(tmp_path / "ckpt")])
    assert config.learning_rate == TrainConfig.learning_rate and config.early_stopping_patience is None


def test_value_sources_are_saved_and_the_saved_config_is_a_recipe_again(tmp_path):
    write_training_csv(tmp_path / "train.csv", topic_rows(5, 0))
    config = parse_config(["--train_file", str(tmp_path / "train.csv"), "--from_scratch", "tiny", "--seed", "3"])
    saved = tmp_path / "training_config.yaml"
    saved.write_text(yaml.safe_dump(config.to_dict(), allow_unicode=True), encoding="utf-8")
    values = yaml.safe_load(saved.read_text(encoding="utf-8"))
    assert values["value_sources"]["seed"] == "flag"
    assert values["value_sources"]["dropout"].startswith("recipe from_scratch tiny")
    reloaded = load_yaml_recipe(str(saved))  # value_sources is information, not an option
    assert "value_sources" not in reloaded and TrainConfig(**reloaded).seed == 3
