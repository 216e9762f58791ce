"""The training stage's hand-off: the model directory, assembled aside and moved into place when complete.

    config.json + model.safetensors   the best weights (from <output_dir>.checkpoints/best)
    tokenizer files, jbert.json       what serving must repeat (normalisation, max_length, task)
    training_config.yaml              the resolved options of the run
    examples.jsonl                    a few validation rows, for a smoke test of an export
    predictions_test.jsonl            predictions of the saved model on --test_file, if given
    metrics.json, README.md, *.png    history, best/validation/test metrics, the model card and plots
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch
import yaml

from jbert.core.artifacts import EXAMPLES_FILE, METRICS_FILE, TRAINING_CONFIG_FILE, JbertSettings, atomic_directory
from jbert.core.normalize import NormalizationConfig
from jbert.core.postprocessing import predictions_from_logits, sigmoid
from jbert.data import PreparedData
from jbert.data.labels import MULTI_LABEL, SINGLE_LABEL
from jbert.train.baseline import baseline_card_lines, baseline_for_data, compare_with_baseline
from jbert.train.batching import MODEL_INPUTS
from jbert.train.checkpoint import TrainerState
from jbert.train.config import TrainConfig
from jbert.train.metrics import compute_metrics, resolve_best_metric
from jbert.train.report import write_model_card, write_plots

logger = logging.getLogger("jbert")

EXAMPLES_KEPT = 32  # validation rows in examples.jsonl


def predict(model, tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int,
            device) -> np.ndarray:
    """Logits for texts in order, batched by length (used on the saved model for the test file)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]) + (len(pairs[i]) if pairs else 0))
    logits = [None] * len(texts)
    model.eval()
    for start in range(0, len(order), batch_size):
        ids = order[start : start + batch_size]
        encoded = tokenizer([texts[i] for i in ids], [pairs[i] for i in ids] if pairs else None, truncation=True,
                            max_length=max_length, padding=True, return_tensors="pt")
        with torch.no_grad():
            batch_logits = model(**{k: v.to(device) for k, v in encoded.items() if k in MODEL_INPUTS}).logits
        for row, i in enumerate(ids):
            logits[i] = batch_logits[row].float().cpu().numpy()
    return np.stack(logits)


def write_model_dir(config: TrainConfig, data: PreparedData, tokenizer, state: TrainerState, best_metric: str,
                    device, truncated: dict, throughput: dict) -> dict:
    """Assemble the model directory in a temporary place and move it into `output_dir` when complete.

    Call on the main process only; returns what metrics.json holds.
    """
    problem_type, label_names = data.problem_type, data.label_names
    best_dir = config.checkpoint_dir / "best"
    settings = JbertSettings(
        normalization=NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace),
        max_length=config.max_length, problem_type=problem_type, text_column=config.text_column,
        text_pair_column=config.text_pair_column, multi_label_threshold=config.multi_label_threshold,
    )
    with atomic_directory(config.output_dir, overwrite=config.overwrite_output_dir) as tmp:
        for name in os.listdir(best_dir):
            shutil.copy2(best_dir / name, tmp / name)
        tokenizer.save_pretrained(tmp)
        settings.save(tmp)
        with open(tmp / TRAINING_CONFIG_FILE, "w", encoding="utf-8") as handle:
            yaml.safe_dump(config.to_dict(), handle, allow_unicode=True, sort_keys=False)
        _write_examples(tmp / EXAMPLES_FILE, data, config.text_pair_column is not None)

        best_record = next(h for h in state.history if h["step"] == state.best_step and f"eval_{best_metric}" in h)
        validation_metrics = {k.removeprefix("eval_"): v for k, v in best_record.items() if k.startswith("eval_")}
        test_metrics = None
        confusion = validation_metrics.get("confusion_matrix")
        if data.test is not None and len(data.test):
            test_metrics = _predict_test_file(tmp, config, data, tokenizer, device)
            if test_metrics is not None:
                confusion = test_metrics.get("confusion_matrix", confusion)
        data_summary = {
            "train_file": config.train_file, "validation_file": config.validation_file or
            f"{config.validation_split:.0%} stratified split of the training file", "test_file": config.test_file,
            "examples": {"train": len(data.train), "validation": len(data.validation),
                         "test": len(data.test) if data.test is not None else 0},
            "truncated_to_max_length": truncated, "stats": data.stats,
        }
        baseline = None
        if config.baseline != "none":
            baseline = baseline_for_data(data, problem_type, label_names, config.multi_label_threshold, config.seed)
        comparison = compare_with_baseline(state.best_metric, baseline, best_metric,
                                           resolve_best_metric(best_metric, problem_type)[1])
        plots = write_plots(tmp, state.history, best_metric, confusion, label_names)
        metrics = {
            "problem_type": problem_type, "labels": label_names, "best_metric": best_metric,
            "best": {"step": state.best_step, "metric": best_metric, "value": state.best_metric},
            "validation": validation_metrics, "test": test_metrics, "history": state.history,
            "data": data_summary, "global_step": state.global_step, **throughput,
        }
        if baseline is not None:
            metrics["baseline"] = {**baseline, "comparison": comparison}
        with open(tmp / METRICS_FILE, "w", encoding="utf-8") as handle:
            json.dump(metrics, handle, ensure_ascii=False, indent=2)
        write_model_card(tmp, name=Path(config.output_dir).name, model_source=config.model_name_or_path or f"scratch ({config.from_scratch} BERT)",
                         settings=settings, label_names=label_names, data_summary=data_summary,
                         validation_metrics=validation_metrics, test_metrics=test_metrics,
                         best=metrics["best"], plots=plots, config=config.to_dict(),
                         extra_sections=baseline_card_lines(baseline, comparison, validation_metrics, test_metrics))
    logger.info("model written to %s (best %s %.4f at step %s)", config.output_dir, best_metric,
                state.best_metric, state.best_step)
    _log_baseline_summary(best_metric, comparison, baseline, test_metrics)
    return metrics


def _log_baseline_summary(best_metric: str, comparison: dict | None, baseline: dict | None,
                          test_metrics: dict | None) -> None:
    """The final summary's model-vs-baseline line, and the warning when the model does not win."""
    if comparison is None:
        return
    test_text = ""
    if test_metrics and best_metric in test_metrics and "test" in baseline:
        test_text = (f"; test {best_metric}: model {test_metrics[best_metric]:.4f}, "
                     f"baseline {baseline['test'][best_metric]:.4f}")
    logger.info("validation %s: model %.4f, baseline %.4f%s", best_metric, comparison["model"],
                comparison["baseline"], test_text)
    if comparison["warning"]:
        logger.warning("%s", comparison["warning"])


def remove_working_files(checkpoint_root: Path) -> None:
    """The model directory is complete: drop the best-weights copy, the trained vocabulary, an empty root.

    Resumable checkpoints (step_*) stay: the user asked for them with --checkpointing_steps.
    """
    shutil.rmtree(checkpoint_root / "best", ignore_errors=True)
    shutil.rmtree(checkpoint_root / "tokenizer", ignore_errors=True)
    if checkpoint_root.is_dir() and not any(checkpoint_root.iterdir()):
        checkpoint_root.rmdir()


def _label_value(raw, problem_type: str, label_names: list[str]):
    """A dataset label (id, multi-hot row or float) as the user wrote it: name, list of names, number."""
    if problem_type == SINGLE_LABEL:
        return label_names[int(raw)]
    if problem_type == MULTI_LABEL:
        return [name for name, on in zip(label_names, raw) if on > 0.5]
    return float(raw)


def _write_examples(path: Path, data: PreparedData, has_pair: bool) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for row in data.validation.select(range(min(EXAMPLES_KEPT, len(data.validation)))):
            example = {"text": row["text"], "label": _label_value(row["labels"], data.problem_type, data.label_names)}
            if has_pair:
                example["text_pair"] = row["text_pair"]
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")


def _predict_test_file(model_dir: Path, config: TrainConfig, data: PreparedData, tokenizer, device) -> dict | None:
    """predictions_test.jsonl from the saved model (as a user would load it); metrics when labelled."""
    from transformers import AutoModelForSequenceClassification

    problem_type, label_names = data.problem_type, data.label_names
    has_pair = config.text_pair_column is not None
    labelled = "labels" in data.test.column_names
    # The user's flag again: a model trained with --trust_remote_code needs its own code to reload.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, trust_remote_code=config.trust_remote_code).to(device)
    texts = list(data.test["text"])
    pairs = list(data.test["text_pair"]) if has_pair else None
    logits = predict(model, tokenizer, texts, pairs, config.max_length, config.per_device_eval_batch_size, device)
    predictions = predictions_from_logits(logits, problem_type, config.multi_label_threshold)
    with open(model_dir / "predictions_test.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            row = {"text": text}
            if has_pair:
                row["text_pair"] = pairs[i]
            if labelled:
                row["label"] = _label_value(data.test[i]["labels"], problem_type, label_names)
            if problem_type == SINGLE_LABEL:
                probabilities = np.exp(logits[i] - logits[i].max())
                probabilities /= probabilities.sum()
                row["prediction"] = label_names[int(predictions[i])]
                row["score"] = float(probabilities.max())
            elif problem_type == MULTI_LABEL:
                row["prediction"] = [n for n, on in zip(label_names, predictions[i]) if on]
                row["scores"] = dict(zip(label_names, sigmoid(logits[i]).round(6).tolist()))
            else:
                row["prediction"] = float(predictions[i])
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if not labelled:
        return None
    return compute_metrics(logits, np.asarray(data.test["labels"]), problem_type, label_names,
                           config.multi_label_threshold)
