"""The training stage's hand-off, for every task: the model directory, assembled aside and moved into place.

    config.json + model.safetensors   the best weights (from <output_dir>.checkpoints/best)
    tokenizer files, jbert.json       what serving must repeat (normalisation, max_length, problem type)
    training_config.yaml              the resolved options of the run
    metrics.json                      what the task reports: history, best/validation figures, data
    the task's own files              classification: examples.jsonl, predictions_test.jsonl, plots, card;
                                      masked-LM: the perplexity plot and its card

Nothing appears at `output_dir` until every file is written (jbert.core.artifacts.atomic_directory):
a kill or a full disk leaves no half model directory that a later stage would trust.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import yaml

from jbert.core.artifacts import METRICS_FILE, TRAINING_CONFIG_FILE, atomic_directory
from jbert.train.checkpoint import BEST_DIR, TrainerState
from jbert.train.config import TrainConfig
from jbert.train.hardware import card_lines as hardware_card_lines
from jbert.train.report import insert_card_section
from jbert.train.task_protocol import RunFacts, Task, TaskData

logger = logging.getLogger("jbert")


def write_model_dir(config: TrainConfig, task: Task, data: TaskData, state: TrainerState, facts: RunFacts) -> dict:
    """Assemble the model directory in a temporary place and move it into `output_dir` when complete.

    The shared part (weights, tokenizer, jbert.json, training_config.yaml, metrics.json) is written
    here, the task's own files by `task.write_files` and `task.write_report` (the card, last). Call on
    the main process only; returns what metrics.json holds.
    """
    best_dir = config.checkpoint_dir / BEST_DIR
    with atomic_directory(config.output_dir, overwrite=config.overwrite_output_dir) as work_dir:
        for path in best_dir.iterdir():
            shutil.copy2(path, work_dir / path.name)
        data.tokenizer.save_pretrained(work_dir)
        data.settings.save(work_dir)
        with open(work_dir / TRAINING_CONFIG_FILE, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config.to_dict(), handle, allow_unicode=True, sort_keys=False)
        metrics = task.write_files(work_dir, config, data, state, facts)
        if facts.throughput.get("hardware"):  # every task's metrics.json and card report them
            metrics.setdefault("hardware", facts.throughput["hardware"])
        with open(work_dir / METRICS_FILE, "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, ensure_ascii=False, indent=2)
        task.write_report(work_dir, config, data, metrics)
        insert_card_section(work_dir / "README.md", hardware_card_lines(metrics.get("hardware")))
    best = metrics["best"]
    logger.info("model written to %s (best %s %.4f at step %s)", config.output_dir, best["metric"], best["value"],
                best["step"])
    return metrics


def remove_working_files(checkpoint_root: Path) -> None:
    """The model directory is complete: drop the best-weights copy, the trained vocabulary, an empty root.

    Resumable checkpoints (step_*) stay: the user asked for them with --checkpointing_steps.
    """
    shutil.rmtree(checkpoint_root / BEST_DIR, ignore_errors=True)
    shutil.rmtree(checkpoint_root / "tokenizer", ignore_errors=True)
    if checkpoint_root.is_dir() and not any(checkpoint_root.iterdir()):
        checkpoint_root.rmdir()
