"""The training contenders the speed benchmarks compare: jbert's loop and the Hugging Face Trainer.

Shared by bench/train_throughput.py (CPU, real data) and bench/gpu_check.py (one GPU, or CPU in
CI). Each runner trains a sequence classifier from the same saved initial weights and tokenizer on
the same CSV files with the same hyper-parameters, and returns the same figures:

    samples_per_s, tokens_per_s (real tokens, not padding), padding_share,
    achieved_tflops_per_s and mfu (jbert.train.hardware's accounting), train_seconds,
    test_accuracy, test_macro_f1

jbert's own loop reports its figures in metrics.json["hardware"]; the Trainer's are counted by a
collator wrapper around DataCollatorWithPadding and put through the same formulas.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch


def write_csv(path: Path, rows: list[dict]) -> str:
    """rows ({"text", "label"}) as a CSV file; returns its path as a string."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def read_csv(path: str) -> list[dict]:
    """The rows of a CSV file written by `write_csv`."""
    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def fresh_accelerate_state() -> None:
    """Forget the process's Accelerate state: a run with another mixed precision may follow in this process."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def attention_task(implementation: Optional[str]):
    """jbert's classification task, its model loaded with `attn_implementation` ("eager", "sdpa"); None: as is."""
    from jbert.train.classification import ClassificationTask

    if implementation is None:
        return None

    class AttentionChoice(ClassificationTask):
        def build_model(self, config, accelerator, data):
            from transformers import AutoModelForSequenceClassification

            # The initial weights already carry this run's labels: load them with the attention asked for.
            return AutoModelForSequenceClassification.from_pretrained(config.model_name_or_path,
                                                                      attn_implementation=implementation)

    return AttentionChoice()


def run_jbert(files: dict, init_dir: Path, out_dir: Path, seed: int, *, batch_size: int, learning_rate: float,
              epochs: float, max_length: int, mixed_precision: str = "no", attention: Optional[str] = None,
              num_workers: int = 0, extra: Optional[dict] = None) -> dict:
    """jbert's loop (jbert.train.loop.train) from `init_dir`; the figures of the module docstring."""
    from jbert.train.config import TrainConfig
    from jbert.train.loop import train

    started = time.perf_counter()
    fresh_accelerate_state()
    options = dict(model_name_or_path=str(init_dir), train_file=files["train"], validation_file=files["valid"],
                   test_file=files["test"], output_dir=str(out_dir), max_length=max_length,
                   per_device_train_batch_size=batch_size, learning_rate=learning_rate, num_train_epochs=epochs,
                   warmup_ratio=0.1, seed=seed, disable_tqdm=True, logging_steps=50, mixed_precision=mixed_precision,
                   dataloader_num_workers=num_workers, baseline="none", calibrate="none")
    options.update(extra or {})
    metrics = train(TrainConfig(**options), task=attention_task(attention))
    figures = metrics["hardware"]
    return {
        "samples_per_s": round(metrics["train_samples_per_second"], 2),
        "tokens_per_s": figures["train_tokens_per_second"],
        "padding_share": figures["padding_share"],
        "achieved_tflops_per_s": figures["achieved_tflops_per_second"],
        "mfu": figures["mfu"],
        "train_seconds": round(metrics["train_seconds"], 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "test_accuracy": round(metrics["test"]["accuracy"], 4),
        "test_macro_f1": round(metrics["test"]["macro_f1"], 4),
    }


class CountingCollator:
    """DataCollatorWithPadding that also counts the tokens of the training batches (not the evaluation ones).

    The Trainer pads evaluation batches with the same collator, inside `train()`: a batch counts only
    while the model is in training mode (exact with dataloader workers 0, the setting compared here).
    """

    def __init__(self, tokenizer, model):
        from transformers import DataCollatorWithPadding

        self.inner = DataCollatorWithPadding(tokenizer)
        self.model = model
        self.counter = None  # a jbert.train.hardware.TokenCounter while training, None otherwise

    def __call__(self, features):
        """Pad like DataCollatorWithPadding; count the batch when training with a counter attached."""
        batch = self.inner(features)
        if self.counter is not None and self.model.training:
            self.counter.add(batch)
        return batch


def run_trainer(files: dict, init_dir: Path, out_dir: Path, seed: int, *, batch_size: int, learning_rate: float,
                epochs: float, max_length: int, group_by_length: bool, bf16: bool = False,
                attention: Optional[str] = None, num_workers: int = 0) -> dict:
    """The Hugging Face Trainer from `init_dir` with jbert's hyper-parameters; the figures of the module docstring."""
    import datasets
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments, set_seed

    from jbert.core.normalize import normalize_text
    from jbert.train import hardware

    started = time.perf_counter()
    fresh_accelerate_state()
    tokenizer = AutoTokenizer.from_pretrained(init_dir)
    model = AutoModelForSequenceClassification.from_pretrained(init_dir, **(
        {"attn_implementation": attention} if attention else {}))
    label2id = model.config.label2id

    def encode(path: str):
        rows = read_csv(path)
        encoded = tokenizer([normalize_text(r["text"]) for r in rows], truncation=True, max_length=max_length)
        encoded["labels"] = [label2id[r["label"]] for r in rows]
        return datasets.Dataset.from_dict(dict(encoded))

    train_set, valid_set, test_set = encode(files["train"]), encode(files["valid"]), encode(files["test"])
    collator = CountingCollator(tokenizer, model)
    cuda = torch.cuda.is_available()
    set_seed(seed)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(
            output_dir=str(out_dir), per_device_train_batch_size=batch_size, per_device_eval_batch_size=64,
            learning_rate=learning_rate, num_train_epochs=epochs, warmup_ratio=0.1, weight_decay=0.01,
            lr_scheduler_type="linear", seed=seed, eval_strategy="epoch", save_strategy="no", report_to=[],
            logging_steps=50, disable_tqdm=True, use_cpu=not cuda, bf16=bf16, **length_grouping(group_by_length),
            # jbert's dataloader settings: the same workers; it pins no memory (pinning only applies to GPUs)
            dataloader_num_workers=num_workers, dataloader_pin_memory=cuda,
        ),
        train_dataset=train_set, eval_dataset=valid_set, data_collator=collator,
    )
    collator.counter = hardware.TokenCounter(torch.device("cpu"))
    result = trainer.train()
    counter, collator.counter = collator.counter, None  # evaluation batches are not training work
    seconds = result.metrics["train_runtime"]
    real, padded, squares = counter.totals()
    parameters = hardware.matmul_parameters(model)
    layers, hidden = hardware.attention_shape(model.config)
    achieved = hardware.training_flops(parameters, layers, hidden, real, squares) / seconds / 1e12
    device = torch.device("cuda") if cuda else torch.device("cpu")
    peak = hardware.peak_flops(device, torch.bfloat16 if bf16 else torch.float32)[0]
    predictions = trainer.predict(test_set).predictions
    predictions = (predictions[0] if isinstance(predictions, tuple) else predictions).argmax(-1)
    labels = np.asarray(test_set["labels"])
    return {
        "samples_per_s": round(result.metrics["train_samples_per_second"], 2),
        "tokens_per_s": round(real / seconds, 1),
        "padding_share": round(1 - real / padded, 4) if padded else 0.0,
        "achieved_tflops_per_s": float(f"{achieved:.4g}"),
        "mfu": float(f"{achieved / peak:.4g}") if peak else None,
        "train_seconds": round(seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "test_accuracy": round(float(accuracy_score(labels, predictions)), 4),
        "test_macro_f1": round(float(f1_score(labels, predictions, average="macro")), 4),
    }


def length_grouping(enabled: bool) -> dict:
    """TrainingArguments' length grouping: `group_by_length` up to transformers 4.x, `train_sampling_strategy` in 5.x."""
    import dataclasses

    from transformers import TrainingArguments

    if "train_sampling_strategy" in {field.name for field in dataclasses.fields(TrainingArguments)}:
        return {"train_sampling_strategy": "group_by_length" if enabled else "random"}
    return {"group_by_length": enabled}


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Per contender: the mean of every figure over seeds, and the test-accuracy range."""
    summary = {}
    for name, rows in runs.items():
        if not rows:
            continue
        keys = [k for k in rows[0] if k != "seed" and isinstance(rows[0][k], (int, float))]
        summary[name] = {k: float(f"{np.mean([r[k] for r in rows if r.get(k) is not None] or [np.nan]):.4g}")
                         for k in keys}
        accuracies = [r["test_accuracy"] for r in rows]
        summary[name]["test_accuracy_range"] = [min(accuracies), max(accuracies)]
    return summary
