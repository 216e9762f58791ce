"""Step 4 of an export: every ONNX file checked against PyTorch (fp32, optimised) or fp32 (int8).

PyTorch and onnxruntime run the same normalised, tokenised texts at batch size 1 and at a larger
padded batch. fp32 and optimised graphs must stay within `atol` and predict the same labels; int8
must agree with fp32 on at least `min_agreement` of the texts. The torch-free serving tokenizer
must give the ids the model was checked with.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from jbert.core.progress import Progress
from jbert.core.errors import ValidationError, format_problems
from jbert.core.postprocessing import label_thresholds_array
from jbert.export.model_dir import ModelDirInfo, load_model_tokenizer
from jbert.export.options import MODEL_FILES, QUANTIZED_FILE, ExportOptions
from jbert.export.steps import StepLog
from jbert.export.agreement import AGREEMENT_MEASURES, agreement_figures, predicted_labels, quality_figures
from jbert.export.graph_inputs import check_graph_inputs, dropped_inputs, feeds_for, graph_input_names
from jbert.export.texts import ValidationExample, encode


def batches(items: Sequence, size: int) -> Iterable[Sequence]:
    """Consecutive slices of at most SIZE items."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def onnx_sessions(work_dir: Path, keys: Sequence[str]) -> dict:
    """One CPU session per ONNX file, with the options serving uses (jbert.serve.runtime)."""
    import onnxruntime

    from jbert.serve.runtime.session import make_session_options

    sessions = {}
    for key in keys:
        # PyTorch and up to three sessions take turns here: spinning idle threads would steal the
        # CPU from whichever one is running.
        options = make_session_options(allow_spinning=False)
        sessions[key] = onnxruntime.InferenceSession(str(work_dir / MODEL_FILES[key]), options, providers=["CPUExecutionProvider"])
    return sessions


def check_parity(work_dir: Path, model_dir: Path, tokenizer, examples: Sequence[ValidationExample], info: ModelDirInfo,
                  options: ExportOptions, steps: StepLog) -> tuple[dict, dict]:
    """Run PyTorch and every ONNX file on the same batches; return per-model figures or raise."""
    import torch
    from transformers import AutoModelForSequenceClassification

    keys = options.model_keys()
    sessions = onnx_sessions(work_dir, keys)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    model = model.float().eval()
    # the decision rule serving applies: per-label thresholds when training tuned them
    problem_type = info.problem_type
    threshold = label_thresholds_array(info.labels, info.settings.label_thresholds, info.settings.multi_label_threshold)
    max_length = info.settings.max_length

    # One extra text joining all of them exercises truncation at max_length and every position.
    long_text = ValidationExample(
        text=" ".join(example.text for example in examples)[: max_length * 8],
        text_pair=None if examples[0].text_pair is None else " ".join(e.text_pair for e in examples)[: max_length * 8],
    )
    texts = list(examples) + [long_text]
    batch_sizes = [1] if options.validation_batch_size == 1 else [1, min(options.validation_batch_size, len(texts))]
    # The fp32 graph's inputs are what the manifest records and serving feeds; every other file must take the same.
    # (Recorded in the tokenizer's order of outputs, as exports before 0.4 did.)
    input_names = graph_input_names(sessions["fp32"], order=list(encode(tokenizer, texts[:1], max_length)))
    problems = []
    for key in keys:
        problems += check_graph_inputs(sessions[key], MODEL_FILES[key])
        if sorted(graph_input_names(sessions[key])) != sorted(input_names):
            problems.append(f"{MODEL_FILES[key]} takes {graph_input_names(sessions[key])}, the fp32 graph {input_names}")
    if problems:
        raise ValidationError(format_problems("the ONNX graph does not take the model's inputs", problems))
    dropped: dict[str, bool] = {}

    # logits[batch_size][name] -> array (n_texts, num_labels) in text order
    logits: dict[int, dict[str, np.ndarray]] = {}
    total_batches = sum(math.ceil(len(texts) / size) for size in batch_sizes)
    # core.progress: a bar on a terminal, a line every few seconds in a log (no carriage-return frames).
    bar = Progress(total_batches, "parity check", unit="batch", stream=sys.stderr, enabled=options.show_progress)
    for size in batch_sizes:
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in ["pytorch", *keys]}
        for batch in batches(texts, size):
            inputs = encode(tokenizer, batch, max_length)
            # PyTorch gets every tokenizer output, as training fed them; each graph only its own inputs.
            for name, nonzero in dropped_inputs(input_names, inputs).items():
                dropped[name] = dropped.get(name, False) or nonzero
            with torch.inference_mode():
                torch_logits = model(**{name: torch.from_numpy(values) for name, values in inputs.items()}).logits
            outputs["pytorch"].append(torch_logits.float().numpy())
            for key, session in sessions.items():
                outputs[key].append(np.asarray(session.run(["logits"], feeds_for(input_names, inputs))[0], dtype=np.float32))
            bar.update(1)
        logits[size] = {name: np.concatenate(parts) for name, parts in outputs.items()}
    bar.close()

    labels = [example.label for example in texts]
    large = batch_sizes[-1]
    pytorch_predictions = predicted_labels(logits[large]["pytorch"], problem_type, threshold)
    parity: dict[str, dict] = {}
    failures: list[str] = []
    for key in keys:
        reference = "fp32" if key == "int8" else "pytorch"
        diffs = [np.abs(logits[size][key] - logits[size][reference]) for size in batch_sizes]
        max_abs_diff = float(max(diff.max() for diff in diffs))
        agree = [
            a == b
            for size in batch_sizes
            for a, b in zip(predicted_labels(logits[size][key], problem_type, threshold),
                            predicted_labels(logits[size][reference], problem_type, threshold))
        ]
        figures: dict[str, Any] = {
            "compared_with": reference,
            "n_texts": len(texts),
            "batch_sizes": batch_sizes,
            "max_abs_diff": max_abs_diff,
            "mean_abs_diff": float(np.mean(np.concatenate([d.ravel() for d in diffs]))),
        }
        if problem_type != "regression":
            figures["label_agreement"] = float(np.mean(agree))
            figures["label_disagreements"] = int(len(agree) - sum(agree))
        own_predictions = predicted_labels(logits[large][key], problem_type, threshold)
        reference_predictions = (
            pytorch_predictions if reference == "pytorch"
            else predicted_labels(logits[large]["fp32"], problem_type, threshold)
        )
        for name, quality in ((reference, quality_figures(reference_predictions, labels, problem_type)),
                              (key, quality_figures(own_predictions, labels, problem_type))):
            for metric, value in quality.items():
                figures[metric if metric == "n_labelled" else f"{metric}_{name}"] = value
        if key == "int8":
            measured = [agreement_figures(logits[size]["fp32"], logits[size]["int8"], problem_type, threshold, labels)
                        for size in batch_sizes]
            figures["agreement"] = sum(m["agreement"] * m["n"] for m in measured) / sum(m["n"] for m in measured)
            figures["agreement_measure"] = AGREEMENT_MEASURES[problem_type]
            figures["min_agreement"] = options.min_agreement
            failed = figures["agreement"] < options.min_agreement
            if failed:
                failures.append(
                    f"int8 ({QUANTIZED_FILE}) agrees with fp32 on {figures['agreement']:.2%} "
                    f"({AGREEMENT_MEASURES[problem_type]}) at batch sizes {batch_sizes}, below --min_agreement "
                    f"{options.min_agreement:.2%} (max |logit diff| {max_abs_diff:.3g}); serve the fp32/optimised "
                    "file (--default_model) or give more representative --calibration_file texts"
                )
        else:
            figures["atol"] = options.atol
            reasons = []
            if max_abs_diff > options.atol:
                reasons.append(f"max |logit diff| {max_abs_diff:.3g} > --atol {options.atol:g}")
            if problem_type != "regression" and figures["label_disagreements"]:
                reasons.append(f"predicted labels differ on {figures['label_disagreements']} of {len(agree)} texts")
            failed = bool(reasons)
            if failed:
                nonzero = [name for name, values in dropped.items() if values]
                if nonzero:
                    reasons.append(f"the graph does not take {nonzero}, which the tokenizer filled with non-zero "
                                   "values (PyTorch was given them, as in training); this architecture's ONNX graph cannot take them")
                failures.append(f"{key} ({MODEL_FILES[key]}) vs PyTorch: " + "; ".join(reasons))
        figures["passed"] = not failed
        parity[key] = figures
        summary = f"{key}: max |diff| {max_abs_diff:.2e}"
        if "agreement" in figures:
            summary += f", agreement with fp32 {figures['agreement']:.2%}"
        elif "label_agreement" in figures:
            summary += f", label agreement {figures['label_agreement']:.2%}"
        steps.step(summary)
    if failures:
        raise ValidationError(
            format_problems(
                f"ONNX export of {model_dir} failed its check against PyTorch on {len(texts)} texts "
                f"(batch sizes {batch_sizes}); nothing was written",
                failures,
            )
        )
    validation = {
        "n_texts": len(texts),
        "batch_sizes": batch_sizes,
        "atol": options.atol,
        "min_agreement": options.min_agreement,
        "inputs": input_names,
        "tokenizer": type(tokenizer).__name__,
        "tokenizer_reload_identical": True,
        "serving_tokenizer": check_serving_tokenizer(work_dir, texts, max_length),
    }
    if dropped:  # e.g. ModernBERT / XLM-R: the tokenizer's token_type_ids stay out of the graph
        validation["tokenizer_outputs_not_fed"] = sorted(dropped)
    return parity, validation


def check_serving_tokenizer(work_dir: Path, texts: Sequence[ValidationExample], max_length: int) -> dict:
    """The torch-free serving tokenizer must give the ids the model was checked with."""
    from jbert.tokenization import load_serving_tokenizer

    reference = load_model_tokenizer(work_dir)
    serving = load_serving_tokenizer(work_dir)
    pairs = [example.text_pair for example in texts] if texts[0].text_pair is not None else None
    served = serving.encode_batch([example.text for example in texts], pairs, max_length=max_length)
    expected = encode(reference, texts, max_length, padding=False)
    mismatches = [
        index for index, encoded in enumerate(served)
        if list(encoded.input_ids) != expected["input_ids"][index]
        or list(encoded.token_type_ids) != expected["token_type_ids"][index]
    ]
    if mismatches:
        raise ValidationError(
            f"the serving tokenizer (jbert.tokenization.fast, {type(serving).__name__}) gives different ids than "
            f"the model's tokenizer on {len(mismatches)} of {len(texts)} texts (first: {texts[mismatches[0]].text!r}); "
            "served predictions would not match the checked ones"
        )
    return {"is_fast": bool(serving.is_fast), "identical_ids": True}


