"""`--hp_search N`: N Optuna trials on the validation split, then the final model with the best settings.

Searched, around the run's own values (so a recipe or the user's flags set the centre):
    learning_rate                 log-uniform in [lr / 4, lr x 4]
    num_train_epochs              integer in [max(1, epochs / 2), epochs x 2]
    warmup_ratio                  uniform in [0, 0.2]
    dropout                       uniform in [0, 0.3]
    per_device_train_batch_size   one of batch / 2, batch, batch x 2
The objective is the best validation value of --metric_for_best_model in the trial (the run's own
model selection). After every evaluation the trial reports to Optuna's median pruner, which stops a
trial whose figure is below the median of earlier trials at the same point (after two complete trials).

Writes, next to the final model directory:
    <output_dir>/hp_search.json        every trial: number, state, parameters, value, seconds
    <output_dir>/hp_best_config.yaml   the full training configuration of the best trial (a --config recipe)
and the trial table goes into the final metrics.json under "hp_search". Trials run one after the
other in this process (one CPU or GPU process; launch it without several processes).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import yaml

from jbert.core.artifacts import METRICS_FILE, check_output_dir
from jbert.core.errors import UserError
from jbert.train.config import TrainConfig
from jbert.train.metrics import LOWER_IS_BETTER

logger = logging.getLogger("jbert")

SEARCH_FILE = "hp_search.json"
BEST_CONFIG_FILE = "hp_best_config.yaml"


def search_space(trial, config: TrainConfig) -> dict:
    """Parameters of one trial, drawn around the values in `config`."""
    epochs = max(1, int(round(config.num_train_epochs)))
    batch = config.per_device_train_batch_size
    return {
        "learning_rate": trial.suggest_float("learning_rate", config.learning_rate / 4, config.learning_rate * 4, log=True),
        "num_train_epochs": float(trial.suggest_int("num_train_epochs", max(1, epochs // 2), epochs * 2)),
        "warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.2),
        "dropout": trial.suggest_float("dropout", 0.0, 0.3),
        "per_device_train_batch_size": trial.suggest_categorical(
            "per_device_train_batch_size", sorted({max(1, batch // 2), batch, batch * 2})),
    }


def _with_sources(new: TrainConfig, old: TrainConfig, params: dict, source: str) -> TrainConfig:
    """Carry `value_sources` over to a replaced config, naming the search as the source of its values."""
    sources = dict(getattr(old, "value_sources", None) or {})
    sources.update({name: source for name in params})
    new.value_sources = sources
    return new


def _auto_key(record: dict) -> str:
    """The figure "auto" selects by (jbert.train.metrics.DEFAULT_METRIC), read off the record's keys."""
    if "eval_accuracy" in record:
        return "eval_macro_f1"
    if "eval_subset_accuracy" in record:
        return "eval_micro_f1"
    return "eval_pearson"


def _direction(metric: str) -> str:
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def run_hp_search(config: TrainConfig, train_fn=None) -> dict:
    """Run `config.hp_search` trials, then train the final model with the best; returns its metrics."""
    try:
        import optuna
    except ImportError:
        raise UserError("--hp_search needs Optuna: pip install optuna (pinned in requirements.txt)") from None
    if train_fn is None:
        from jbert.train.loop import train as train_fn
    if config.hp_search < 1:
        raise UserError(f"--hp_search must be at least 1 trial (got {config.hp_search})")
    if config.task == "mlm":
        raise UserError("--hp_search tunes classification and regression runs, not --task mlm")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # every process would draw its own trials and their collectives would not match
        raise UserError("--hp_search runs its trials one after the other in one process; start it with "
                        "`python train.py ...` (or accelerate launch --num_processes 1), not several processes")
    check_output_dir(config.output_dir, config.overwrite_output_dir)  # fail before the trials, not after
    search_dir = Path(config.output_dir + ".hp_search")
    shutil.rmtree(search_dir, ignore_errors=True)
    metric = config.metric_for_best_model
    direction = _direction(metric)  # "auto" picks macro_f1 / micro_f1 / pearson: all maximised
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction=direction,
        sampler=optuna.samplers.TPESampler(seed=config.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    table: list[dict] = []

    def objective(trial) -> float:
        params = search_space(trial, config)
        trial_config = _with_sources(dataclasses.replace(
            config, **params, hp_search=0, output_dir=str(search_dir / f"trial_{trial.number:03d}"),
            overwrite_output_dir=True, test_file=None, baseline="none", checkpointing_steps=None,
            resume_from_checkpoint=None, with_tracking=False,
            # the decision rule is chosen once, for the final model: no trial fails on an unreached precision
            multi_label_thresholds="global", min_confidence=None, target_precision=None,
        ), config, params, f"hp_search trial {trial.number}")
        evaluations = 0

        def report(record: dict) -> None:
            nonlocal evaluations
            key = f"eval_{metric}" if metric != "auto" else _auto_key(record)
            trial.report(record[key], evaluations)
            evaluations += 1
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at evaluation {evaluations}: {key}={record[key]:.4f}")

        started = time.perf_counter()
        row = {"trial": trial.number, "params": params}
        try:
            metrics = train_fn(trial_config, on_evaluate=report)
        except optuna.TrialPruned:
            row.update(state="pruned", value=None, evaluations=evaluations,
                       seconds=round(time.perf_counter() - started, 1))
            table.append(row)
            logger.info("trial %d pruned after %d evaluation(s): %s", trial.number, evaluations, params)
            raise
        value = float(metrics["best"]["value"])
        row.update(state="complete", value=value, metric=metrics["best"]["metric"], evaluations=evaluations,
                   seconds=round(time.perf_counter() - started, 1))
        table.append(row)
        logger.info("trial %d: %s=%.4f with %s", trial.number, row["metric"], value, params)
        return value

    study.optimize(objective, n_trials=config.hp_search, catch=())
    completed = [row for row in table if row["state"] == "complete"]
    if not completed:
        raise UserError("every hyper-parameter trial was pruned; raise --hp_search")
    best = max(completed, key=lambda row: row["value"]) if direction == "maximize" else \
        min(completed, key=lambda row: row["value"])
    best_config = _with_sources(dataclasses.replace(config, **best["params"], hp_search=0), config, best["params"],
                                f"hp_search best of {len(table)} trials (trial {best['trial']})")
    logger.info("best of %d trials (%d pruned): trial %d, %s=%.4f; training the final model with %s",
                len(table), len(table) - len(completed), best["trial"], best["metric"], best["value"], best["params"])
    final = train_fn(best_config)
    summary = {"trials": table, "best_trial": best["trial"], "best_params": best["params"],
               "best_value": best["value"], "metric": best["metric"], "direction": direction,
               "pruned": len(table) - len(completed)}
    output_dir = Path(config.output_dir)
    (output_dir / SEARCH_FILE).write_text(json.dumps(summary, ensure_ascii=False, indent=2), encoding="utf-8")
    recipe = {k: v for k, v in best_config.to_dict().items() if k not in ("hp_search", "config", "value_sources")}
    with open(output_dir / BEST_CONFIG_FILE, "w", encoding="utf-8") as handle:
        handle.write(f"# Best of {len(table)} trials of --hp_search on {config.train_file} "
                     f"(validation {best['metric']} = {best['value']:.4f}); use it with --config.\n")
        yaml.safe_dump(recipe, handle, allow_unicode=True, sort_keys=False)
    final["hp_search"] = summary
    metrics_path = output_dir / METRICS_FILE
    saved = json.loads(metrics_path.read_text(encoding="utf-8"))
    saved["hp_search"] = summary
    metrics_path.write_text(json.dumps(saved, ensure_ascii=False, indent=2), encoding="utf-8")
    shutil.rmtree(search_dir, ignore_errors=True)
    logger.info("trials:\n%s", format_trial_table(table))
    return final


def format_trial_table(table: list[dict]) -> str:
    """The trials as a plain-text table for the log."""
    header = f"{'trial':>5}  {'state':8}  {'value':>7}  {'lr':>9}  {'epochs':>6}  {'warmup':>6}  {'dropout':>7}  {'batch':>5}"
    lines = [header]
    for row in table:
        p = row["params"]
        value = "-" if row["value"] is None or (isinstance(row["value"], float) and math.isnan(row["value"])) else f"{row['value']:.4f}"
        lines.append(f"{row['trial']:>5}  {row['state']:8}  {value:>7}  {p['learning_rate']:>9.2e}  "
                     f"{p['num_train_epochs']:>6.0f}  {p['warmup_ratio']:>6.3f}  {p['dropout']:>7.3f}  "
                     f"{p['per_device_train_batch_size']:>5}")
    return "\n".join(lines)
