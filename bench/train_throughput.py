"""Training throughput: jbert's Accelerate loop against the Hugging Face Trainer, side by side.

Same data, same tokenizer, same initial weights, same hyper-parameters; each side with its own
defaults otherwise (jbert: length-grouped batches; Trainer: DataCollatorWithPadding, random order).
Prints one JSON object: samples/s, wall time, and test accuracy / macro-F1 of each, and the ratio.

    python bench/train_throughput.py                    # ../shared/data/jrte_rhr.tsv when present
    python bench/train_throughput.py --epochs 1 --size tiny

Data: jrte_rhr.tsv (train + dev to train, test to test) when present, else data/quickstart.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = REPO.parent / "shared" / "data" / "jrte_rhr.tsv"


def load_rows() -> tuple[list[dict], list[dict], str]:
    """(train rows, test rows, data description) from the shared JRTE file or the demo set."""
    if SHARED.is_file():
        train, test = [], []
        with open(SHARED, encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                item = {"text": row[2], "label": row[1]}
                (test if row[4] == "test" else train).append(item)
        return train, test, f"{SHARED.name} (train+dev: {len(train)}, test: {len(test)})"
    quick = REPO / "data" / "quickstart"
    read = lambda name: list(csv.DictReader(open(quick / name, encoding="utf-8")))  # noqa: E731
    train = read("train.csv") + read("validation.csv")
    return train, read("test.csv"), f"data/quickstart (train: {len(train)})"


def write_csv(path: Path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="mini", choices=["tiny", "mini", "small", "base"])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=8000)
    add_json_out_argument(parser)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="One run of each side per seed (initial weights, data order, dropout).")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from sklearn.metrics import accuracy_score, f1_score
    from transformers import Trainer, TrainingArguments, set_seed

    from jbert.train.config import TrainConfig
    from jbert.data.prepare import label_sort_key
    from jbert.train.modeling import build_scratch_model
    from jbert.core.normalize import normalize_text
    from jbert.tokenization import load_tokenizer, train_japanese_wordpiece
    from jbert.train.loop import train

    train_rows, test_rows, data_description = load_rows()
    work = Path(tempfile.mkdtemp(prefix="jbert-bench-"))
    label_names = sorted({r["label"] for r in train_rows}, key=label_sort_key)
    # A shared starting point: one vocabulary, one randomly initialised model, saved once.
    texts = [normalize_text(r["text"]) for r in train_rows]
    train_japanese_wordpiece(texts, args.vocab_size, work / "vocab", model_max_length=args.max_length)
    tokenizer = load_tokenizer(str(work / "vocab"))
    # The same validation rows for both: jbert's own split is reproduced by giving it explicitly.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train_rows))
    n_valid = len(train_rows) // 10
    valid_rows = [train_rows[i] for i in order[:n_valid]]
    fit_rows = [train_rows[i] for i in order[n_valid:]]
    files = {name: write_csv(work / f"{name}.csv", rows)
             for name, rows in (("train", fit_rows), ("valid", valid_rows), ("test", test_rows))}
    threads = torch.get_num_threads()

    import datasets
    from transformers import AutoModelForSequenceClassification, DataCollatorWithPadding

    label2id = {name: i for i, name in enumerate(label_names)}

    def encode(rows):
        encoded = tokenizer([normalize_text(r["text"]) for r in rows], truncation=True, max_length=args.max_length)
        encoded["labels"] = [label2id[r["label"]] for r in rows]
        return datasets.Dataset.from_dict(dict(encoded))

    def run_jbert(seed: int, init_dir: Path) -> dict:
        started = time.perf_counter()
        metrics = train(TrainConfig(
            model_name_or_path=str(init_dir), train_file=files["train"], validation_file=files["valid"],
            test_file=files["test"], output_dir=str(work / f"jbert-{seed}"), max_length=args.max_length,
            per_device_train_batch_size=args.batch_size, learning_rate=args.learning_rate,
            num_train_epochs=args.epochs, warmup_ratio=0.1, seed=seed, disable_tqdm=True, logging_steps=50,
        ))
        return {
            "train_samples_per_second": round(metrics["train_samples_per_second"], 2),
            "train_seconds": round(metrics["train_seconds"], 1),
            "wall_seconds_incl_data_prep": round(time.perf_counter() - started, 1),
            "test_accuracy": round(metrics["test"]["accuracy"], 4),
            "test_macro_f1": round(metrics["test"]["macro_f1"], 4),
        }

    def run_trainer(seed: int, init_dir: Path) -> dict:
        started = time.perf_counter()
        train_set, valid_set, test_set = encode(fit_rows), encode(valid_rows), encode(test_rows)
        set_seed(seed)
        trainer = Trainer(
            model=AutoModelForSequenceClassification.from_pretrained(init_dir),
            args=TrainingArguments(
                output_dir=str(work / f"trainer-{seed}"), per_device_train_batch_size=args.batch_size,
                per_device_eval_batch_size=64, learning_rate=args.learning_rate, num_train_epochs=args.epochs,
                warmup_ratio=0.1, weight_decay=0.01, lr_scheduler_type="linear", seed=seed, eval_strategy="epoch",
                save_strategy="no", report_to=[], logging_steps=50, disable_tqdm=True, use_cpu=True,
            ),
            train_dataset=train_set, eval_dataset=valid_set, data_collator=DataCollatorWithPadding(tokenizer),
        )
        result = trainer.train()
        predictions = trainer.predict(test_set).predictions.argmax(-1)
        labels = np.asarray(test_set["labels"])
        return {
            "train_samples_per_second": round(result.metrics["train_samples_per_second"], 2),
            "train_seconds": round(result.metrics["train_runtime"], 1),
            "wall_seconds_incl_data_prep": round(time.perf_counter() - started, 1),
            "test_accuracy": round(float(accuracy_score(labels, predictions)), 4),
            "test_macro_f1": round(float(f1_score(labels, predictions, average="macro")), 4),
        }

    runs = {"jbert": [], "hf_trainer": []}
    for seed in args.seeds:
        # A shared starting point per seed: one randomly initialised model, saved once, loaded by both.
        init_dir = work / f"init-{seed}"
        tokenizer.save_pretrained(init_dir)
        set_seed(seed)
        build_scratch_model(args.size, len(tokenizer), tokenizer.pad_token_id, args.max_length, label_names,
                            "single_label_classification").save_pretrained(init_dir)
        # Alternate which side goes first so drifting machine load does not favour one of them.
        sides = [("jbert", run_jbert), ("hf_trainer", run_trainer)]
        for name, run in (sides if seed % 2 == 0 else sides[::-1]):
            runs[name].append({"seed": seed, **run(seed, init_dir)})

    def mean(name: str, key: str) -> float:
        return round(float(np.mean([r[key] for r in runs[name]])), 4)

    summary = {name: {key: mean(name, key) for key in ("train_samples_per_second", "test_accuracy", "test_macro_f1")}
               for name in runs}
    report = {
        "benchmark": "train_throughput",
        "data": data_description,
        "model": f"BERT {args.size} from scratch, vocab {len(tokenizer)}, max_length {args.max_length}",
        "hyper_parameters": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                             "seeds": args.seeds},
        "torch_threads": threads,
        "mean_over_seeds": summary,
        "throughput_ratio_jbert_over_trainer": round(summary["jbert"]["train_samples_per_second"]
                                                     / summary["hf_trainer"]["train_samples_per_second"], 2),
        "runs": runs,
    }
    print(json.dumps(report, ensure_ascii=False))
    write_json_out(args.json_out, "train_throughput", report, argv)


if __name__ == "__main__":
    main()
