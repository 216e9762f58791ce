"""Export check for models that read long texts in windows: the same answer per document in PyTorch and ONNX.

Runs only for model directories trained with --long_text windows. Documents several windows long
are made from the validation texts; PyTorch reads them as training's test predictions do
(jbert.train.saved_predictions: transformers' tokenizer, every window, logits pooled), and each
ONNX file as serving does (the torch-free serving tokenizer's windows, onnxruntime, the same
pooling). The serving tokenizer must cut the same windows, fp32 and optimised graphs must give
pooled logits within --atol and the same labels; int8 is reported (its gate is the text check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from jbert.core.errors import ValidationError
from jbert.core.postprocessing import label_thresholds_array
from jbert.core.windows import LongTextRule, pool_window_logits
from jbert.export.agreement import predicted_labels
from jbert.export.model_dir import ModelDirInfo
from jbert.export.options import MODEL_FILES, ExportOptions
from jbert.export.steps import StepLog
from jbert.export.texts import ValidationExample
from jbert.export.validate import onnx_sessions

# Documents checked, and how long each is in characters (in units of max_length): from two to
# about eight windows of Japanese text (one character is about one token).
DOCUMENT_LENGTHS = (2, 3, 5, 8)


def long_documents(examples: Sequence[ValidationExample], max_length: int) -> list[ValidationExample]:
    """Documents of several windows made by joining the validation texts (the second text for pairs)."""
    documents = []
    for number, units in enumerate(DOCUMENT_LENGTHS):
        rotated = list(examples[number % len(examples):]) + list(examples[: number % len(examples)])
        if examples[0].text_pair is None:
            text = _repeat_to(" ".join(e.text for e in rotated), max_length * units)
            documents.append(ValidationExample(text=text))
        else:
            pair = _repeat_to(" ".join(e.text_pair for e in rotated), max_length * units)
            documents.append(ValidationExample(text=rotated[0].text, text_pair=pair))
    return documents


def _repeat_to(text: str, length: int) -> str:
    """`text` repeated or cut to `length` characters."""
    return ((text + " ") * (length // max(1, len(text)) + 1))[:length].strip()


def check_document_parity(work_dir: Path, model_dir: Path, tokenizer, examples: Sequence[ValidationExample],
                          info: ModelDirInfo, options: ExportOptions, steps: StepLog) -> dict:
    """Pooled logits per document: PyTorch vs every ONNX file; the manifest's record, or ValidationError."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from jbert.tokenization import load_serving_tokenizer
    from jbert.tokenization.windows import encode_windows
    from jbert.train.saved_predictions import predict

    rule: LongTextRule = info.settings.long_text
    max_length = info.settings.max_length
    documents = long_documents(examples, max_length)
    texts = [d.text for d in documents]
    pairs = [d.text_pair for d in documents] if documents[0].text_pair is not None else None
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True,
                                                               trust_remote_code=False).float().eval()
    torch_logits = predict(model, tokenizer, texts, pairs, max_length, options.validation_batch_size, "cpu", rule)

    reference_windows = encode_windows(tokenizer, texts, pairs, max_length, rule.stride)
    served_windows = encode_windows(load_serving_tokenizer(work_dir), texts, pairs, max_length, rule.stride)
    if [w.windows for w in served_windows] != [w.windows for w in reference_windows]:
        raise ValidationError(
            "the serving tokenizer cuts long documents into other windows than the model's tokenizer; served "
            "predictions of long texts would not match the checked ones (nothing was written)"
        )
    windows = [window for item in served_windows for window in item.windows]
    owners = np.asarray([n for n, item in enumerate(served_windows) for _ in item.windows])
    threshold = label_thresholds_array(info.labels, info.settings.label_thresholds, info.settings.multi_label_threshold)
    torch_labels = predicted_labels(torch_logits, info.problem_type, threshold)
    record = {"n_documents": len(documents), "windows": [len(item.windows) for item in served_windows],
              "stride": rule.stride, "pooling": rule.pooling, "models": {}}
    failures = []
    for key, session in onnx_sessions(work_dir, options.model_keys()).items():
        names = [node.name for node in session.get_inputs()]
        window_logits = np.concatenate([_run(session, windows[i:i + 8], names, tokenizer.pad_token_id or 0)
                                        for i in range(0, len(windows), 8)])
        pooled = pool_window_logits(window_logits, owners, len(documents), rule.pooling)
        diff = float(np.abs(pooled - torch_logits).max())
        agree = float(np.mean([a == b for a, b in zip(predicted_labels(pooled, info.problem_type, threshold), torch_labels)]))
        record["models"][key] = {"max_abs_diff": diff, "label_agreement": agree}
        if key != "int8" and (diff > options.atol or agree < 1.0):
            failures.append(f"{MODEL_FILES[key]}: pooled max |logit diff| {diff:.3g} (--atol {options.atol:g}), "
                            f"label agreement {agree:.0%}")
        steps.step(f"{key}: {len(documents)} long documents ({sum(record['windows'])} windows), max |diff| {diff:.2e}")
    if failures:
        raise ValidationError("long documents read in windows give other answers in ONNX than in PyTorch "
                              "(nothing was written): " + "; ".join(failures))
    return record


def _run(session, windows, names: list[str], pad_id: int) -> np.ndarray:
    """Logits of a few windows, padded into one batch with the feeds the graph takes."""
    width = max(len(w.input_ids) for w in windows)
    feeds = {"input_ids": np.full((len(windows), width), pad_id, dtype=np.int64),
             "attention_mask": np.zeros((len(windows), width), dtype=np.int64),
             "token_type_ids": np.zeros((len(windows), width), dtype=np.int64)}
    for row, window in enumerate(windows):
        feeds["input_ids"][row, :len(window.input_ids)] = window.input_ids
        feeds["attention_mask"][row, :len(window.input_ids)] = 1
        feeds["token_type_ids"][row, :len(window.input_ids)] = window.token_type_ids
    return np.asarray(session.run(["logits"], {name: feeds[name] for name in names})[0], dtype=np.float32)
