"""Predictions of a saved model directory, as a user would load it: the test file, validation logits, examples.

Used after training by the classification task (jbert.train.classification) to write
predictions_test.jsonl and to give calibration and the decision rules the saved model's logits.
With --long_text windows every text is read in windows and its window logits pooled, as serving does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from jbert.core.artifacts import JbertSettings
from jbert.core.postprocessing import abstentions, label_thresholds_array, predictions_from_logits, scale_logits, sigmoid, softmax
from jbert.core.windows import LongTextRule, pool_window_logits
from jbert.data import PreparedData
from jbert.data.labels import MULTI_LABEL, SINGLE_LABEL
from jbert.train.config import TrainConfig
from jbert.train.dataloaders import MODEL_INPUTS
from jbert.train.metrics import compute_metrics
from jbert.train import thresholds as decision_rules

EXAMPLES_KEPT = 32  # validation rows in examples.jsonl



def predict(model, tokenizer, texts: list[str], pairs: list[str] | None, max_length: int, batch_size: int,
            device, long_text: LongTextRule | None = None) -> np.ndarray:
    """Logits for texts in order, batched by length (used on the saved model for the test file).

    With a windows rule (`long_text`), each text's windows are run and their logits pooled into the
    text's, as jbert.serve.runtime does for the export.
    """
    if long_text is not None and long_text.windows:
        return _predict_windows(model, tokenizer, texts, pairs, max_length, batch_size, device, long_text)
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


def _predict_windows(model, tokenizer, texts, pairs, max_length: int, batch_size: int, device,
                     long_text: LongTextRule) -> np.ndarray:
    """Every window of every text through the model (batched by length), pooled per text."""
    from jbert.tokenization.windows import encode_windows

    windows, documents = [], []
    for document, item in enumerate(encode_windows(tokenizer, texts, pairs, max_length, long_text.stride)):
        windows += item.windows
        documents += [document] * len(item.windows)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(windows)), key=lambda i: len(windows[i].input_ids))
    window_logits: np.ndarray | None = None
    model.eval()
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = max(len(windows[i].input_ids) for i in rows)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(rows), width), dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for row, i in enumerate(rows):
            length = len(windows[i].input_ids)
            input_ids[row, :length] = torch.tensor(windows[i].input_ids)
            token_type_ids[row, :length] = torch.tensor(windows[i].token_type_ids)
            attention_mask[row, :length] = 1
        inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"]):
            inputs["token_type_ids"] = token_type_ids  # models without segments (RoBERTa, ModernBERT) take none
        with torch.no_grad():
            batch_logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float().cpu().numpy()
        if window_logits is None:
            window_logits = np.empty((len(windows), batch_logits.shape[1]), dtype=np.float32)
        window_logits[rows] = batch_logits
    return pool_window_logits(window_logits, np.asarray(documents), len(texts), long_text.pooling)


def _label_value(raw, problem_type: str, label_names: list[str]):
    """A dataset label (id, multi-hot row or float) as the user wrote it: name, list of names, number."""
    if problem_type == SINGLE_LABEL:
        return label_names[int(raw)]
    if problem_type == MULTI_LABEL:
        return [name for name, on in zip(label_names, raw) if on > 0.5]
    return float(raw)


def write_examples(path: Path, data: PreparedData, has_pair: bool) -> None:
    """A few validation rows as the user wrote them: a smoke test for an exported model."""
    with open(path, "w", encoding="utf-8") as handle:
        for row in data.validation.select(range(min(EXAMPLES_KEPT, len(data.validation)))):
            example = {"text": row["text"], "label": _label_value(row["labels"], data.problem_type, data.label_names)}
            if has_pair:
                example["text_pair"] = row["text_pair"]
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")


def predict_test_file(model_dir: Path, config: TrainConfig, data: PreparedData, tokenizer, device,
                      settings: JbertSettings | None = None) -> dict | None:
    """predictions_test.jsonl from the saved model (as a user would load it); metrics when labelled.

    `settings`: the model's jbert.json; its temperature, per-label thresholds and abstention score and
    decide as serving will.
    """
    from transformers import AutoModelForSequenceClassification

    problem_type, label_names = data.problem_type, data.label_names
    has_pair = config.text_pair_column is not None
    labelled = "labels" in data.test.column_names
    # The user's flag again: a model trained with --trust_remote_code needs its own code to reload.
    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, trust_remote_code=config.trust_remote_code).to(device)
    texts = list(data.test["text"])
    pairs = list(data.test["text_pair"]) if has_pair else None
    logits = predict(model, tokenizer, texts, pairs, config.max_length, config.per_device_eval_batch_size, device,
                     settings.long_text if settings else None)
    threshold = label_thresholds_array(label_names, settings.label_thresholds if settings else None,
                                       config.multi_label_threshold)
    min_confidence = settings.min_confidence if settings and problem_type == SINGLE_LABEL else None
    # Single-label scores as served: softmax(logits / T) with the fitted temperature (None: plain softmax).
    temperature = settings.temperature if settings and problem_type == SINGLE_LABEL else None
    abstained = abstentions(softmax(scale_logits(logits, temperature)), min_confidence) if problem_type == SINGLE_LABEL else None
    predictions = predictions_from_logits(logits, problem_type, threshold)
    with open(model_dir / "predictions_test.jsonl", "w", encoding="utf-8") as handle:
        for i, text in enumerate(texts):
            row = {"text": text}
            if has_pair:
                row["text_pair"] = pairs[i]
            if labelled:
                row["label"] = _label_value(data.test[i]["labels"], problem_type, label_names)
            if problem_type == SINGLE_LABEL:
                row_logits = scale_logits(logits[i], temperature)
                probabilities = np.exp(row_logits - row_logits.max())
                probabilities /= probabilities.sum()
                row["prediction"] = label_names[int(predictions[i])]
                row["score"] = float(probabilities.max())
                if min_confidence is not None:
                    row["abstained"] = bool(abstained[i])
            elif problem_type == MULTI_LABEL:
                row["prediction"] = [n for n, on in zip(label_names, predictions[i]) if on]
                row["scores"] = dict(zip(label_names, sigmoid(logits[i]).round(6).tolist()))
            else:
                row["prediction"] = float(predictions[i])
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    if not labelled:
        return None
    test_labels = np.asarray(data.test["labels"])
    figures = compute_metrics(logits, test_labels, problem_type, label_names, threshold)
    if min_confidence is not None:
        figures["abstention"] = decision_rules.selective_figures(softmax(scale_logits(logits, temperature)), test_labels,
                                                                min_confidence)
    return figures


def predict_saved_model(model_dir: Path, config: TrainConfig, split, tokenizer, device,
                        long_text: LongTextRule | None = None) -> np.ndarray:
    """Logits of the model saved in `model_dir` for a prepared split (validation), as the test file's are made."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(
        model_dir, trust_remote_code=config.trust_remote_code).to(device)
    pairs = list(split["text_pair"]) if config.text_pair_column is not None else None
    return predict(model, tokenizer, list(split["text"]), pairs, config.max_length,
                   config.per_device_eval_batch_size, device, long_text)
