"""The classification task (single-label, multi-label, regression) for the one training loop.

    labelled files -> prepare_data (clean, label, split) -> tokenizer -> tokenized sets
      -> a pretrained encoder with a fresh head, or a BERT from scratch (jbert.train.modeling)
      -> validation metrics gathered over processes (jbert.train.metrics); the selection metric picks the best
      => its part of the model directory: examples.jsonl, predictions_test.jsonl (--test_file), the
         TF-IDF baseline comparison, metrics.json's content, plots and the model card

`ClassificationTask` satisfies jbert.train.task_protocol.Task; jbert.train.loop runs it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator

from jbert.core.artifacts import EXAMPLES_FILE, JbertSettings
from jbert.core.windows import LongTextRule, check_stride, pool_window_logits
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig
from jbert.core.postprocessing import predictions_from_logits, scale_logits
from jbert.data import PreparedData, prepare_data, tokenize_dataset
from jbert.data.labels import SINGLE_LABEL
from jbert.data.tokenize import count_windowed
from jbert.train.baseline import baseline_card_lines, baseline_for_data, compare_with_baseline
from jbert.train.calibration import calibrate_model_dir, calibration_card_lines, one_class_problem
from jbert.train.checkpoint import TrainerState
from jbert.train.config import TrainConfig
from jbert.train.dataloaders import MODEL_INPUTS, training_dataloaders
from jbert.train.losses import problem_loss
from jbert.train.document_batches import (DocumentSet, document_dataloaders, document_training_loss,
                                          group_for_document_training)
from jbert.train.metrics import ExtraMetrics, compute_metrics, resolve_best_metric
from jbert.train.modeling import ARCHITECTURE_NAMES, build_scratch_model, load_pretrained_model, load_run_tokenizer
from jbert.train.optimization import Schedule
from jbert.train.process_group import pretrained_weights_load
from jbert.train.saved_predictions import predict_saved_model, predict_test_file, write_examples
from jbert.train.task_protocol import RunFacts, TaskData
from jbert.train import thresholds as decision_rules

logger = logging.getLogger("jbert")


@dataclass
class LabelledData:
    """The classification task's own record of its data (TaskData.source)."""

    prepared: PreparedData  # cleaned, labelled, split texts (the model directory's report uses them)
    truncated: dict  # {"train": n, "validation": n} texts cut to max_length
    extra_metrics: ExtraMetrics
    calibration_skipped: str | None = None  # why the default --calibrate temperature cannot run on this data
    windowed: dict | None = None  # --long_text windows: {"train": n, "validation": n} texts read in several windows


class ClassificationTask:
    """Labelled texts -> a sequence classifier (or regressor), selected by --metric_for_best_model."""

    name = "classification"
    evaluates_starting_point = False

    def load_data(self, config: TrainConfig, accelerator: Accelerator) -> TaskData:
        """Prepared splits, the tokenizer and the tokenized sets; bad data or options fail before any model is built."""
        with accelerator.main_process_first():
            prepared = prepare_data(config)
        problem_type = prepared.problem_type
        # Checked as soon as the problem type is known (--task auto): a metric that doesn't fit fails before any work.
        best_metric, greater_is_better = resolve_best_metric(config.metric_for_best_model, problem_type)
        extra_metrics = ExtraMetrics(config.extra_metrics)
        calibration_skipped = _check_calibration_data(config, prepared)  # before a vocabulary is trained
        tokenizer = load_run_tokenizer(config, accelerator, lambda: _training_texts(config, prepared),
                                       config.max_length)
        max_length = config.max_length

        has_pair = config.text_pair_column is not None
        long_text = _long_text_rule(config, tokenizer, has_pair)
        stride = long_text.stride if long_text else None
        with accelerator.main_process_first():
            train_set, truncated_train = tokenize_dataset(prepared.train, tokenizer, max_length, has_pair, stride)
            eval_set, truncated_eval = tokenize_dataset(prepared.validation, tokenizer, max_length, has_pair, stride)
        windowed = None
        if long_text:
            windowed = {"train": count_windowed(train_set), "validation": count_windowed(eval_set)}
            logger.info("read in windows of %d tokens (stride %d, %s pooling): %d training and %d validation texts",
                        max_length, stride, long_text.pooling, windowed["train"], windowed["validation"])
            if config.window_training == "document":  # whole texts are the examples (multiple-instance)
                train_set = group_for_document_training(train_set, config.max_train_windows)
            elif config.max_train_windows:
                train_set = train_set.filter(lambda window: window < config.max_train_windows, input_columns="window")
        if truncated_train or truncated_eval:
            logger.warning("truncated to %d tokens: %d training and %d validation texts", max_length,
                           truncated_train, truncated_eval)
        settings = JbertSettings(
            normalization=NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace),
            max_length=config.max_length, problem_type=problem_type, text_column=config.text_column,
            text_pair_column=config.text_pair_column, multi_label_threshold=config.multi_label_threshold,
            long_text=long_text,
        )
        decision_rules.check_decision_options(config, problem_type, settings)
        source = LabelledData(prepared, {"train": truncated_train, "validation": truncated_eval}, extra_metrics,
                              calibration_skipped=calibration_skipped, windowed=windowed)
        return TaskData(tokenizer, train_set, eval_set, settings, best_metric, greater_is_better, source)

    def build_model(self, config: TrainConfig, accelerator: Accelerator, data: TaskData) -> torch.nn.Module:
        """A pretrained checkpoint with a new classification head, or a randomly initialised BERT."""
        problem_type, label_names = data.source.prepared.problem_type, data.source.prepared.label_names
        if config.from_scratch:
            return build_scratch_model(config.from_scratch, len(data.tokenizer), data.tokenizer.pad_token_id, config.max_length,
                                       label_names, problem_type, config.dropout, config.architecture, data.tokenizer)
        with pretrained_weights_load(accelerator):
            return load_pretrained_model(config.model_name_or_path, label_names, problem_type, config.dropout,
                                         config.trust_remote_code)

    def dataloaders(self, config: TrainConfig, accelerator: Accelerator, data: TaskData, schedule: Schedule) -> tuple:
        """Length-grouped training batches and padded validation batches (labels as the loss needs them)."""
        single_label = data.source.prepared.problem_type == "single_label_classification"
        make = document_dataloaders if isinstance(data.train_set, DocumentSet) else training_dataloaders
        return make(
            data.train_set, data.eval_set, per_device_train_batch_size=config.per_device_train_batch_size,
            per_device_eval_batch_size=config.per_device_eval_batch_size,
            examples_per_step=schedule.examples_per_step, seed=config.seed, group_by_length=config.group_by_length,
            num_workers=config.dataloader_num_workers, pad_token_id=data.tokenizer.pad_token_id,
            label_dtype=torch.long if single_label else torch.float,
            pad_to_multiple_of=8 if accelerator.mixed_precision != "no" and accelerator.device.type == "cuda" else None,
        )

    def training_loss(self, config: TrainConfig, data: TaskData):
        """loss(model, batch) on each text's pooled window logits with --window_training document; else None (the model's)."""
        if not isinstance(data.train_set, DocumentSet):
            return None
        return document_training_loss(data.settings.long_text.pooling, data.source.prepared.problem_type)

    def evaluate(self, model: torch.nn.Module, dataloader, accelerator: Accelerator, data: TaskData) -> dict:
        """Loss and metrics over the whole validation set, gathered from every process."""
        prepared = data.source.prepared
        long_text = data.settings.long_text
        return evaluate(model, dataloader, accelerator, prepared.problem_type, prepared.label_names,
                        data.settings.multi_label_threshold, data.source.extra_metrics,
                        pooling=long_text.pooling if long_text else None)

    def write_files(self, directory: Path, config: TrainConfig, data: TaskData, state: TrainerState,
                    facts: RunFacts) -> dict:
        """examples.jsonl, the test file's predictions, the baseline; returns metrics.json's content."""
        prepared, best_metric = data.source.prepared, data.best_metric
        problem_type, label_names = prepared.problem_type, prepared.label_names
        # The temperature first: serving applies the decision rule to calibrated scores, so the rule is
        # chosen on the same scores (softmax(logits / T)).
        saved_logits = {}  # split name -> the saved model's logits: each split is predicted once

        def logits_of(name: str, split) -> np.ndarray:
            if name not in saved_logits:
                saved_logits[name] = predict_saved_model(directory, config, split, data.tokenizer, facts.device,
                                                         data.settings.long_text)
            return saved_logits[name]

        calibration = _calibrate(directory, config, data, logits_of)
        decision = {}
        if decision_rules.rule_wanted(config, problem_type) and len(prepared.validation):
            validation_logits = logits_of("validation", prepared.validation)
            decision = decision_rules.choose_decision_rule(directory, config, data.settings, prepared,
                                                           scale_logits(validation_logits, data.settings.temperature))
        write_examples(directory / EXAMPLES_FILE, prepared, config.text_pair_column is not None)
        best_record = next(h for h in state.history if h["step"] == state.best_step and f"eval_{best_metric}" in h)
        validation_metrics = {k.removeprefix("eval_"): v for k, v in best_record.items() if k.startswith("eval_")}
        test_metrics = None
        if prepared.test is not None and len(prepared.test):
            test_metrics = predict_test_file(directory, config, prepared, data.tokenizer, facts.device, data.settings)
        data_summary = {
            "train_file": config.train_file, "validation_file": config.validation_file or
            f"{config.validation_split:.0%} stratified split of the training file", "test_file": config.test_file,
            "examples": {"train": len(prepared.train), "validation": len(prepared.validation),
                         "test": len(prepared.test) if prepared.test is not None else 0},
            "truncated_to_max_length": data.source.truncated, "stats": prepared.stats,
        }
        if data.source.windowed is not None:
            data_summary["windowed"] = data.source.windowed
            data_summary["long_text"] = data.settings.long_text.to_dict()
        if isinstance(data.train_set, DocumentSet):  # --window_training document: what training read
            data_summary["document_training"] = {"texts": len(data.train_set), "windows": data.train_set.windows,
                                                 "texts_cut_to_cap": data.train_set.cut, "cap": data.train_set.cap}
        baseline = None
        if config.baseline != "none":
            baseline = baseline_for_data(prepared, problem_type, label_names, config.multi_label_threshold, config.seed)
        comparison = compare_with_baseline(state.best_metric, baseline, best_metric, data.greater_is_better)
        metrics = {
            "problem_type": problem_type, "labels": label_names, "best_metric": best_metric,
            "best": {"step": state.best_step, "metric": best_metric, "value": state.best_metric},
            "validation": validation_metrics, "test": test_metrics, "history": state.history,
            "data": data_summary, "global_step": state.global_step, **facts.throughput,
        }
        if baseline is not None:
            metrics["baseline"] = {**baseline, "comparison": comparison}
        if decision:
            metrics["decision"] = decision
        if calibration is not None:
            metrics["calibration"] = calibration
        return metrics

    def write_report(self, directory: Path, config: TrainConfig, data: TaskData, metrics: dict) -> None:
        """Training curves, the confusion matrix (test's when labelled), the model card; the baseline line."""
        from jbert.train.report import write_model_card, write_plots

        best_metric, label_names = data.best_metric, data.source.prepared.label_names
        validation_metrics, test_metrics = metrics["validation"], metrics["test"]
        confusion = (test_metrics or {}).get("confusion_matrix", validation_metrics.get("confusion_matrix"))
        plots = write_plots(directory, metrics["history"], best_metric, confusion, label_names)
        baseline = metrics.get("baseline")
        comparison = baseline["comparison"] if baseline else None
        write_model_card(directory, name=Path(config.output_dir).name,
                         model_source=config.model_name_or_path or f"scratch ({config.from_scratch} {ARCHITECTURE_NAMES[config.architecture]})",
                         settings=data.settings, label_names=label_names, data_summary=metrics["data"],
                         validation_metrics=validation_metrics, test_metrics=test_metrics,
                         best=metrics["best"], plots=plots, config=config.to_dict(),
                         extra_sections=baseline_card_lines(baseline, comparison, validation_metrics, test_metrics)
                         + calibration_card_lines(metrics.get("calibration"))
                         + decision_rules.decision_card_lines(metrics.get("decision") or {}))
        _log_baseline_summary(best_metric, comparison, baseline, test_metrics)


def _check_calibration_data(config: TrainConfig, prepared: PreparedData) -> str | None:
    """Refuse, before any training, a temperature the user asked for that cannot be fitted (one validation class).

    With --calibrate left at its default, the same data only skips calibration with a warning: a run
    that trained before calibration existed still trains. Returns the reason calibration is skipped.
    """
    if config.calibrate != "temperature" or prepared.problem_type != SINGLE_LABEL:
        return None
    problem = one_class_problem(prepared.validation["labels"], prepared.label_names)
    if problem is None:
        return None
    if (getattr(config, "value_sources", None) or {}).get("calibrate", "default") != "default":
        raise UserError(f"--calibrate temperature: {problem}")
    logger.warning("calibration skipped: %s", problem)
    return problem


def _calibrate(directory: Path, config: TrainConfig, data: TaskData, logits_of) -> dict | None:
    """Fit T on the saved model's validation logits (`logits_of(name, split)`); jbert.json gets it. metrics.json's record.

    None with --calibrate none (nothing changes); for multi-label and regression, or a skipped fit,
    a record saying why the scores stay raw.
    """
    prepared = data.source.prepared
    if config.calibrate == "none":
        return None
    if prepared.problem_type != SINGLE_LABEL:
        return {"method": "none", "reason": "temperature scaling applies to single-label classification; "
                f"{prepared.problem_type} scores are left as they are"}
    if data.source.calibration_skipped:
        return {"method": "none", "reason": data.source.calibration_skipped}
    splits = {}
    parts = [("validation", prepared.validation)]
    if prepared.test is not None and len(prepared.test) and "labels" in prepared.test.column_names:
        parts.append(("test", prepared.test))
    for split, dataset in parts:
        splits[split] = (logits_of(split, dataset), np.asarray(dataset["labels"], dtype=np.int64))
    report = calibrate_model_dir(directory, splits)
    if report["temperature"] is not None:
        data.settings.temperature = report["temperature"]
        data.settings.save(directory)  # written before the task's files; now with the temperature serving applies
    return report


def _long_text_rule(config: TrainConfig, tokenizer, has_pair: bool) -> LongTextRule | None:
    """The windows rule of --long_text windows (None for truncate), its stride checked against the tokenizer's own special tokens."""
    if config.long_text != "windows":
        return None
    stride = config.window_stride
    check_stride(stride, config.max_length, tokenizer.num_special_tokens_to_add(pair=has_pair))
    return LongTextRule("windows", stride, config.window_pooling)


def _training_texts(config: TrainConfig, prepared: PreparedData) -> list[str]:
    texts = list(prepared.train["text"])
    if config.text_pair_column is not None:
        texts += list(prepared.train["text_pair"])
    return texts


def loss_from_logits(logits: torch.Tensor, labels: torch.Tensor, problem_type: str) -> float:
    """The model's own training loss for its problem type, from gathered logits and labels."""
    return float(problem_loss(logits, labels, problem_type))


def evaluate(model, dataloader, accelerator, problem_type: str, label_names: list[str],
             threshold: float, extra_metrics: ExtraMetrics | None = None, pooling: str | None = None) -> dict:
    """Loss and metrics over a whole (sharded) dataset, gathered without duplicates.

    `gather_for_metrics` drops the samples Accelerate repeats to even out the last batch, so N
    processes report the same metrics as one. With `pooling` and batches that carry "document"
    (--long_text windows), the figures are per text: its windows' logits pooled, as serving does.
    """
    model.eval()
    all_logits, all_labels, all_documents = [], [], []
    for batch in dataloader:
        with torch.no_grad():
            inputs = {k: batch[k] for k in MODEL_INPUTS}
            logits = model(**inputs).logits
        gathered = (logits.float(), batch["labels"]) + ((batch["document"],) if "document" in batch else ())
        gathered = accelerator.gather_for_metrics(gathered)
        all_logits.append(gathered[0].cpu())
        all_labels.append(gathered[1].cpu())
        if len(gathered) > 2:
            all_documents.append(gathered[2].cpu())
    model.train()
    logits = torch.cat(all_logits)
    labels = torch.cat(all_labels)
    if all_documents and pooling:  # --long_text windows: one answer per text, its windows' logits pooled
        logits, labels = _pooled_per_document(logits, labels, torch.cat(all_documents), pooling)
    results = {"loss": loss_from_logits(logits, labels, problem_type)}
    results.update(compute_metrics(logits.numpy(), labels.numpy(), problem_type, label_names, threshold))
    if extra_metrics and extra_metrics.metrics:
        predictions = predictions_from_logits(logits.numpy(), problem_type, threshold)
        results.update(extra_metrics.compute(predictions, labels.numpy()))
    return results


def _pooled_per_document(logits: torch.Tensor, labels: torch.Tensor, documents: torch.Tensor,
                         pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Window logits and labels -> one row per text (texts numbered 0..n-1; windows in reading order)."""
    documents = documents.numpy()
    n_documents = int(documents.max()) + 1 if len(documents) else 0
    pooled = pool_window_logits(logits.numpy(), documents, n_documents, pooling)
    firsts = np.unique(documents, return_index=True)[1]
    return torch.from_numpy(pooled), labels[torch.from_numpy(firsts)]


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
