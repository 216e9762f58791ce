"""Knowledge distillation (--task distill) for the one training loop: a teacher's soft targets -> a student.

    --teacher DIR[,DIR...] (jbert.train.distill_teacher)   problem type and labels come from the teacher
      -> the labelled files read as the teacher's task; labels put in the teacher's order; --unlabeled_file
      -> the student's tokenizer and tokenized sets; the teachers' outputs for every text, once, cached
      -> the student (jbert.train.distill_student) trained on alpha * soft + (1 - alpha) * hard
         (texts without labels: soft alone), selected on the validation labels like classification
      => an ordinary classifier's model directory (classification's files: test predictions, the
         TF-IDF baseline, calibration), plus metrics.json "distillation": the teacher's figures beside
         the student's and the baseline's, and the student's agreement with the teacher

`DistillationTask` satisfies jbert.train.task_protocol.Task; jbert.train.loop runs it unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader

from jbert.core.artifacts import JbertSettings
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig
from jbert.core.postprocessing import predictions_from_logits
from jbert.data import prepare_data, tokenize_dataset
from jbert.data.labels import SINGLE_LABEL
from jbert.tokenization.tokenizer_dir import known_length_limit
from jbert.train import thresholds as decision_rules
from jbert.train.checkpoint import TrainerState
from jbert.train.classification import ClassificationTask, LabelledData, _check_calibration_data, loss_from_logits
from jbert.train.config import TrainConfig
from jbert.train.saved_predictions import predict_saved_model
from jbert.train.dataloaders import MODEL_INPUTS, Collator, LengthGroupedSampler
from jbert.train.distill_data import (student_tokenizer, teacher_label_order, unlabeled_dataset, unlabeled_texts,
                                      with_soft_targets)
from jbert.train.distill_intermediate import build_intermediate_loss, check_intermediate_losses
from jbert.train.distill_student import DistillationModel, build_student, check_student_layers
from jbert.train.distill_teacher import (REGRESSION, check_teacher_fits_data, ensemble_logits, open_teachers,
                                         remove_cache, teacher_outputs)
from jbert.train.metrics import ExtraMetrics, compute_metrics, resolve_best_metric
from jbert.train.optimization import Schedule
from jbert.train.process_group import pretrained_weights_load
from jbert.train.task_protocol import RunFacts, TaskData

logger = logging.getLogger("jbert")

TASK_FLAG = {"single_label_classification": "single_label", "multi_label_classification": "multi_label",
             REGRESSION: "regression"}


@dataclass
class DistillData(LabelledData):
    """Classification's record of the data (the model directory's files use it) and the teachers' part."""

    teachers: list = field(default_factory=list)
    outputs: dict = field(default_factory=dict)  # part -> teachers' logits (teachers, n, labels)
    unlabeled_count: int = 0


class DistillationTask:
    """A student learns the teachers' probabilities (and the labels where there are labels)."""

    name = "distill"
    evaluates_starting_point = False

    def load_data(self, config: TrainConfig, accelerator: Accelerator) -> TaskData:
        """Teachers checked against the data, tokenized sets with soft targets; every problem before any model."""
        teachers = open_teachers(config.teacher)
        teacher = teachers[0]
        has_pair = config.text_pair_column is not None
        with accelerator.main_process_first():
            prepared = _prepare_as_teacher(config, teacher)
        check_teacher_fits_data(teacher, prepared.problem_type, prepared.label_names, has_pair)
        prepared = teacher_label_order(prepared, teacher.label_names)
        problem_type = prepared.problem_type
        best_metric, greater_is_better = resolve_best_metric(config.metric_for_best_model, problem_type)
        extra_texts = unlabeled_texts(config, teacher)  # an empty file fails here, before anything is written
        check_student_layers(config, teacher)
        calibration_skipped = _check_calibration_data(config, prepared)
        tokenizer = student_tokenizer(config, accelerator, teachers, prepared, extra_texts)
        check_intermediate_losses(config, teacher, tokenizer)
        model_limit = known_length_limit(getattr(tokenizer, "model_max_length", None))
        if not config.from_scratch and model_limit and config.max_length > model_limit:
            raise UserError(f"--max_length {config.max_length} exceeds the student's maximum of {model_limit} tokens")
        settings = JbertSettings(
            normalization=NormalizationConfig(config.nfkc, config.remove_control, config.normalize_whitespace),
            max_length=config.max_length, problem_type=problem_type, text_column=config.text_column,
            text_pair_column=config.text_pair_column, multi_label_threshold=config.multi_label_threshold,
        )
        decision_rules.check_decision_options(config, problem_type, settings)

        parts = {"train": _texts(prepared.train, has_pair), "unlabeled": (extra_texts, None),
                 "validation": _texts(prepared.validation, has_pair)}
        if prepared.test is not None and len(prepared.test):
            parts["test"] = _texts(prepared.test, has_pair)
        with accelerator.main_process_first():
            # The main process runs the teachers and writes the cache; the others (and a resume) read it.
            outputs = teacher_outputs(teachers, parts, config.checkpoint_dir, config.per_device_eval_batch_size,
                                      accelerator.device, compute=accelerator.is_main_process)
            train_set, truncated_train = tokenize_dataset(prepared.train, tokenizer, config.max_length, has_pair)
            eval_set, truncated_eval = tokenize_dataset(prepared.validation, tokenizer, config.max_length, has_pair)
            extra_set = None
            if extra_texts:
                extra_set, _ = tokenize_dataset(unlabeled_dataset(extra_texts, prepared), tokenizer,
                                                config.max_length, False)
        train_set = with_soft_targets(train_set, outputs["train"], extra_set, outputs["unlabeled"], problem_type,
                                      config.distill_temperature)
        logger.info("distillation: %d labelled + %d unlabeled training texts, %d teacher(s), temperature %g, alpha %g",
                    len(prepared.train), len(extra_texts), len(teachers), config.distill_temperature,
                    config.distill_alpha)
        source = DistillData(prepared, {"train": truncated_train, "validation": truncated_eval},
                             ExtraMetrics(config.extra_metrics), calibration_skipped=calibration_skipped,
                             teachers=teachers, outputs=outputs, unlabeled_count=len(extra_texts))
        return TaskData(tokenizer, train_set, eval_set, settings, best_metric, greater_is_better, source)

    def build_model(self, config: TrainConfig, accelerator: Accelerator, data: TaskData) -> torch.nn.Module:
        """The student wrapped with its distillation loss."""
        prepared = data.source.prepared
        with pretrained_weights_load(accelerator):
            student = build_student(config, data.source.teachers[0], data.tokenizer, prepared.label_names,
                                    prepared.problem_type)
            intermediate = build_intermediate_loss(config, data.source.teachers[0], student)
        return DistillationModel(student, prepared.problem_type, config.distill_temperature, config.distill_alpha,
                                 intermediate)

    def dataloaders(self, config: TrainConfig, accelerator: Accelerator, data: TaskData, schedule: Schedule) -> tuple:
        """Length-grouped training batches with soft targets, padded validation batches (as classification's)."""
        single = data.source.prepared.problem_type == SINGLE_LABEL
        collator = SoftTargetCollator(data.tokenizer.pad_token_id, 8 if accelerator.mixed_precision != "no" else None,
                                      torch.long if single else torch.float)
        train_set = data.train_set.with_format(columns=list(MODEL_INPUTS) + ["labels", "soft_targets", "label_mask"])
        eval_set = data.eval_set.with_format(columns=list(MODEL_INPUTS) + ["labels"])
        sampler = LengthGroupedSampler([len(ids) for ids in train_set["input_ids"]], schedule.examples_per_step,
                                       config.seed, config.group_by_length)
        # Own generator: iterating must not draw from the global RNG that dropout uses (resume equality).
        train = DataLoader(train_set, batch_size=config.per_device_train_batch_size, sampler=sampler,
                           collate_fn=collator, num_workers=config.dataloader_num_workers,
                           generator=torch.Generator().manual_seed(config.seed))
        evaluation = DataLoader(eval_set, batch_size=config.per_device_eval_batch_size, collate_fn=collator,
                                num_workers=config.dataloader_num_workers)
        return train, evaluation

    def evaluate(self, model: torch.nn.Module, dataloader, accelerator: Accelerator, data: TaskData) -> dict:
        """Classification's validation figures (hard labels) and the agreement with the teacher."""
        prepared = data.source.prepared
        model.eval()
        all_logits, all_labels = [], []
        for batch in dataloader:
            with torch.no_grad():
                logits = model(**{k: batch[k] for k in MODEL_INPUTS}).logits
            logits, labels = accelerator.gather_for_metrics((logits.float(), batch["labels"]))
            all_logits.append(logits.cpu())
            all_labels.append(labels.cpu())
        model.train()
        logits, labels = torch.cat(all_logits), torch.cat(all_labels)
        threshold = data.settings.multi_label_threshold
        results = {"loss": loss_from_logits(logits, labels, prepared.problem_type)}
        results.update(compute_metrics(logits.numpy(), labels.numpy(), prepared.problem_type, prepared.label_names,
                                       threshold))
        results.update(agreement(logits.numpy(), ensemble_logits(data.source.outputs["validation"], prepared.problem_type),
                                 prepared.problem_type, threshold))
        return results

    def write_files(self, directory: Path, config: TrainConfig, data: TaskData, state: TrainerState,
                    facts: RunFacts) -> dict:
        """Classification's files and metrics, plus "distillation": teacher, student, baseline, agreement."""
        metrics = ClassificationTask().write_files(directory, config, data, state, facts)
        metrics["distillation"] = distillation_report(directory, config, data, facts, metrics)
        return metrics

    def write_report(self, directory: Path, config: TrainConfig, data: TaskData, metrics: dict) -> None:
        """Classification's plots and card with a distillation section; the teacher cache is dropped."""
        ClassificationTask().write_report(directory, config, data, metrics)
        report = metrics["distillation"]
        with open(directory / "README.md", "a", encoding="utf-8") as card:
            card.write("\n" + "\n".join(distillation_card_lines(report)) + "\n")
        for line in summary_lines(report):
            logger.info("%s", line)
        remove_cache(config.checkpoint_dir)


class SoftTargetCollator(Collator):
    """Classification's padding, plus the soft targets and which rows have a label (training batches)."""

    def __call__(self, examples: list[dict]) -> dict:
        """Padded model inputs, labels, and (when present) soft_targets and label_mask."""
        batch = super().__call__(examples)
        if "soft_targets" in examples[0]:
            batch["soft_targets"] = torch.tensor(np.asarray([e["soft_targets"] for e in examples], dtype=np.float32))
            batch["label_mask"] = torch.tensor([bool(e["label_mask"]) for e in examples])
        return batch


def _prepare_as_teacher(config: TrainConfig, teacher):
    """prepare_data with the teacher's problem type; data that cannot be read as such says the teacher's task."""
    as_teacher = dataclasses.replace(config, task=TASK_FLAG.get(teacher.problem_type, "auto"))
    try:
        return prepare_data(as_teacher)
    except UserError as err:
        raise UserError(f"--teacher {teacher.path} is a {teacher.problem_type} model, and the data does not fit it: "
                        f"{err}") from None


def _texts(split: datasets.Dataset, has_pair: bool) -> tuple[list[str], list[str] | None]:
    return list(split["text"]), list(split["text_pair"]) if has_pair else None


def agreement(student_logits: np.ndarray, teacher_logits: np.ndarray, problem_type: str, threshold: float) -> dict:
    """How often the student predicts what the teacher does (regression: their mean squared difference)."""
    if len(student_logits) == 0:
        return {}
    if problem_type == REGRESSION:
        difference = np.asarray(student_logits, dtype=np.float64).reshape(-1) - np.asarray(teacher_logits).reshape(-1)
        return {"teacher_mse": float(np.mean(difference ** 2))}
    student = predictions_from_logits(np.asarray(student_logits), problem_type, threshold)
    teacher = predictions_from_logits(np.asarray(teacher_logits), problem_type, threshold)
    same = student == teacher if student.ndim == 1 else np.all(student == teacher, axis=-1)
    return {"teacher_agreement": float(np.mean(same))}


def distillation_report(directory: Path, config: TrainConfig, data: TaskData, facts: RunFacts, metrics: dict) -> dict:
    """metrics.json "distillation": teachers, options, and per split the teacher's, the student's and the baseline's figures."""
    source, prepared = data.source, data.source.prepared
    problem_type, labels, threshold = prepared.problem_type, prepared.label_names, data.settings.multi_label_threshold
    report = {
        "teachers": [{"path": str(t.path), "kind": t.kind} for t in source.teachers],
        "temperature": config.distill_temperature, "alpha": config.distill_alpha,
        "hidden_weight": config.distill_hidden_weight, "attention_weight": config.distill_attention_weight,
        "student": _student_source(config), "unlabeled_texts": source.unlabeled_count,
        "labelled_texts": len(prepared.train), "metric": data.best_metric, "splits": {},
    }
    baseline = metrics.get("baseline") or {}
    for split_name, split, student_figures in (("validation", prepared.validation, metrics["validation"]),
                                               ("test", prepared.test, metrics.get("test"))):
        if split is None or not len(split) or "labels" not in split.column_names or split_name not in source.outputs:
            continue
        teacher_logits = source.outputs[split_name]
        gold = np.asarray(split["labels"])
        student_logits = predict_saved_model(directory, config, split, data.tokenizer, facts.device)
        entry = {"student": _scalars(student_figures or {}),
                 "teacher": _scalars(compute_metrics(ensemble_logits(teacher_logits, problem_type), gold, problem_type,
                                                     labels, threshold)),
                 **agreement(student_logits, ensemble_logits(teacher_logits, problem_type), problem_type, threshold)}
        if len(source.teachers) > 1:
            entry["each_teacher"] = [_scalars(compute_metrics(one, gold, problem_type, labels, threshold))
                                     for one in teacher_logits]
        if split_name in baseline:
            entry["baseline"] = _scalars(baseline[split_name])
        report["splits"][split_name] = entry
    return report


def _scalars(figures: dict) -> dict:
    return {k: v for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _student_source(config: TrainConfig) -> str:
    if config.student_layers:
        return f"layers {config.student_layers} of {config.teacher.split(',')[0]}"
    if config.from_scratch:
        return f"scratch ({config.from_scratch} BERT, {config.distill_tokenizer} tokenizer)"
    return str(config.model_name_or_path)


def summary_lines(report: dict) -> list[str]:
    """One line per split: the selection metric of student, teacher and baseline, and the agreement."""
    metric, lines = report["metric"], []
    for split_name, entry in report["splits"].items():
        figures = [f"{who} {entry[who][metric]:.4f}" for who in ("student", "teacher", "baseline")
                   if metric in entry.get(who, {})]
        together = entry.get("teacher_agreement", entry.get("teacher_mse"))
        name = "agreement with the teacher" if "teacher_agreement" in entry else "mean squared difference from the teacher"
        lines.append(f"{split_name} {metric}: {', '.join(figures)}" +
                     (f"; {name} {together:.4f}" if together is not None else ""))
    return lines


def distillation_card_lines(report: dict) -> list[str]:
    """The model card's distillation section (markdown)."""
    teachers = ", ".join(f"`{t['path']}` ({t['kind']})" for t in report["teachers"])
    lines = ["## Distillation", "",
             f"Student {report['student']} distilled from {teachers} at temperature {report['temperature']:g}, "
             f"alpha {report['alpha']:g}, on {report['labelled_texts']} labelled and {report['unlabeled_texts']} "
             "unlabeled texts.", ""]
    metric = report["metric"]
    for split_name, entry in report["splits"].items():
        lines += [f"**{split_name}**", "", f"| model | {metric} | accuracy |", "| --- | --- | --- |"]
        for who in ("student", "teacher", "baseline"):
            if who in entry:
                lines.append(f"| {who} | {entry[who].get(metric, float('nan')):.4f} | "
                             f"{entry[who].get('accuracy', float('nan')):.4f} |")
        if "teacher_agreement" in entry:
            lines.append(f"\nAgreement with the teacher: {entry['teacher_agreement']:.4f}")
        lines.append("")
    return lines
