"""Defaults that suit a randomly initialised BERT (`--from_scratch SIZE`), and where every value came from.

The dataclass defaults of TrainConfig are fine-tuning defaults for a pretrained checkpoint (lr 5e-5,
3 epochs, no warm-up). A random model of a few million weights needs a larger learning rate, a
warm-up, more epochs, and early stopping, because on a few thousand sentences it over-fits after a
handful of epochs (reported on JRTE rhr: after two epochs, later epochs only lost).
So with --from_scratch these values replace the dataclass defaults, per size, unless the user gave
the option (flag or YAML recipe): a value the user gives always wins.

`value_sources` maps every option to "flag", "config FILE", "recipe from_scratch SIZE (...)" or
"default"; it is saved in training_config.yaml beside the values.
"""

from __future__ import annotations

from typing import Iterable, Sequence

# How much measurement is behind these values, said plainly: the issue's own runs on JRTE rhr (a
# from-scratch model that over-fits after two epochs and loses to TF-IDF) motivate warm-up, dropout
# and early stopping; one configuration (tiny, on rhr) ran in bench/quality.py on 2026-11-25
# (docs/training.md has its figures). No search over these
# values has been run on these machines yet: --hp_search is the tool for it, and the table should
# be replaced by its results. Learning rates follow the usual rule for BERT sizes (smaller models
# take larger steps).
RECIPE_BASIS = {
    "tiny": "starting point; one run on JRTE rhr, see docs/training.md",
    "mini": "starting point, not yet measured",
    "small": "starting point, not yet measured",
    "base": "starting point, not yet measured",
}
FROM_SCRATCH_RECIPES: dict[str, dict] = {
    "tiny": dict(learning_rate=1e-3, warmup_ratio=0.1, num_train_epochs=10.0, dropout=0.1, weight_decay=0.01,
                 early_stopping_patience=3),
    "mini": dict(learning_rate=5e-4, warmup_ratio=0.1, num_train_epochs=10.0, dropout=0.1, weight_decay=0.01,
                 early_stopping_patience=3),
    "small": dict(learning_rate=3e-4, warmup_ratio=0.1, num_train_epochs=10.0, dropout=0.1, weight_decay=0.01,
                  early_stopping_patience=3),
    "base": dict(learning_rate=1e-4, warmup_ratio=0.1, num_train_epochs=10.0, dropout=0.1, weight_decay=0.01,
                 early_stopping_patience=3),
}
VALUE_SOURCES_KEY = "value_sources"


def given_option_names(argv: Sequence[str], parser) -> set[str]:
    """Option names (dataclass field names) that appear on the command line, aliases included."""
    by_flag = {}
    for action in parser._actions:  # argparse keeps the flag -> field mapping only here
        for flag in action.option_strings:
            by_flag[flag] = action.dest
    given = set()
    for word in argv:
        if word.startswith("--"):
            flag = word.split("=", 1)[0]
            if flag in by_flag:
                given.add(by_flag[flag])
    # "--no_x" switches are their own actions with dest x
    return given


def apply_recipe(config, flags: Iterable[str], yaml_path: str | None = None,
                 yaml_keys: Iterable[str] = ()) -> dict[str, str]:
    """Fill recipe values the user did not give; set and return `config.value_sources`."""
    from dataclasses import fields

    flags, yaml_keys = set(flags), set(yaml_keys)
    sources = {}
    for item in fields(config):
        if item.name in flags:
            sources[item.name] = "flag"
        elif item.name in yaml_keys:
            sources[item.name] = f"config {yaml_path}"
        else:
            sources[item.name] = "default"
    recipe = FROM_SCRATCH_RECIPES.get(config.from_scratch) if config.task != "mlm" else None
    if recipe:
        for name, value in recipe.items():
            if sources[name] == "default":
                setattr(config, name, value)
                sources[name] = f"recipe from_scratch {config.from_scratch} ({RECIPE_BASIS[config.from_scratch]})"
    config.value_sources = sources
    return sources
