"""Training throughput: jbert's loop against the Hugging Face Trainer at its defaults and at its best.

Same data, tokenizer, initial weights, hyper-parameters and dataloader settings for every
contender (bench/contenders.py runs them):

    jbert                          jbert's loop (length-grouped batches), fp32
    jbert_bf16                     the same with --mixed_precision bf16 (autocast through Accelerate)
    trainer_default                Trainer, DataCollatorWithPadding, random order, fp32
    trainer_group_by_length        Trainer with group_by_length=True (its best setting here), fp32
    trainer_group_by_length_bf16   the same with bf16=True

Prints one JSON object: per contender and seed samples/s, real tokens/s, padding share, achieved
TFLOP/s, MFU (against a measured CPU matmul peak) and test accuracy / macro-F1; the means; and
the throughput ratios of jbert over each Trainer configuration and over the best of them.

    python bench/train_throughput.py                    # ../shared/data/jrte_rhr.tsv when present
    python bench/train_throughput.py --epochs 1 --size tiny --seeds 0

Data: jrte_rhr.tsv (train + dev to train, test to test) when present, else data/quickstart.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import sys
import tempfile
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = REPO.parent / "shared" / "data" / "jrte_rhr.tsv"
CONTENDERS = ("jbert", "jbert_bf16", "trainer_default", "trainer_group_by_length", "trainer_group_by_length_bf16")


def load_rows(path: Path = SHARED) -> tuple[list[dict], list[dict], str]:
    """(train rows, test rows, data description) from the shared JRTE file or the demo set."""
    if path.is_file():
        train, test = [], []
        with open(path, encoding="utf-8") as handle:
            for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
                item = {"text": row[2], "label": row[1]}
                (test if row[4] == "test" else train).append(item)
        return train, test, f"{path.name} (train+dev: {len(train)}, test: {len(test)})"
    quick = REPO / "data" / "quickstart"
    read = lambda name: list(csv.DictReader(open(quick / name, encoding="utf-8")))  # noqa: E731
    train = read("train.csv") + read("validation.csv")
    return train, read("test.csv"), f"data/quickstart (train: {len(train)})"


def compare(runs: dict) -> dict:
    """Throughput ratios, each over the seeds both contenders ran (the machine's load drifts between
    seeds), and the fastest Trainer configuration whose test accuracy equals jbert's: its mean within
    the larger seed spread of the two (at least 0.01) of jbert's mean."""
    import numpy as np

    def paired(a: str, b: str):
        seeds = {r["seed"] for r in runs[a]} & {r["seed"] for r in runs[b]}
        mean = lambda name: float(np.mean([r["samples_per_s"] for r in runs[name] if r["seed"] in seeds]))  # noqa: E731
        return round(mean(a) / mean(b), 2) if seeds else None

    def accuracy(name: str) -> tuple[float, float]:
        values = [r["test_accuracy"] for r in runs[name]]
        return float(np.mean(values)), max(values) - min(values)

    trainers = [name for name in runs if name.startswith("trainer") and runs[name]]
    ratios = {f"jbert_over_{name}": paired("jbert", name) for name in trainers if runs.get("jbert")}
    for name in ("jbert", "trainer_group_by_length"):
        if runs.get(name) and runs.get(f"{name}_bf16"):
            ratios[f"bf16_over_fp32_{name}"] = paired(f"{name}_bf16", name)
    result = {"throughput_ratios": ratios}
    if runs.get("jbert") and trainers:
        reference, spread = accuracy("jbert")
        equal = [name for name in trainers
                 if abs(accuracy(name)[0] - reference) <= max(spread, accuracy(name)[1], 0.01)]
        fastest = min(trainers, key=lambda name: ratios[f"jbert_over_{name}"])
        result.update(fastest_trainer=fastest, ratio_jbert_over_fastest_trainer=ratios[f"jbert_over_{fastest}"],
                      trainers_at_equal_accuracy=equal)
        if equal:
            best = min(equal, key=lambda name: ratios[f"jbert_over_{name}"])
            result.update(best_trainer_at_equal_accuracy=best,
                          ratio_jbert_over_best_trainer_at_equal_accuracy=ratios[f"jbert_over_{best}"])
    return result


def run_contender(name: str, files: dict, init_dir: Path, work: Path, seed: int, args) -> dict:
    """One contender's run from `init_dir` (see CONTENDERS)."""
    from contenders import run_jbert, run_trainer

    common = dict(batch_size=args.batch_size, learning_rate=args.learning_rate, epochs=args.epochs,
                  max_length=args.max_length, num_workers=args.num_workers)
    out_dir = work / f"{name}-{seed}"
    if name.startswith("jbert"):
        return run_jbert(files, init_dir, out_dir, seed, mixed_precision="bf16" if name.endswith("bf16") else "no",
                         **common)
    return run_trainer(files, init_dir, out_dir, seed, group_by_length="group_by_length" in name,
                       bf16=name.endswith("bf16"), **common)


def main(argv=None) -> None:
    """Run every contender once per seed, alternating the order; print and keep one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="mini", choices=["tiny", "mini", "small", "base"])
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--learning_rate", type=float, default=5e-4)
    parser.add_argument("--max_length", type=int, default=128)
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--data", type=Path, default=SHARED,
                        help="JRTE-style TSV (label, text, usage columns); data/quickstart when it does not exist.")
    parser.add_argument("--num_workers", type=int, default=0, help="DataLoader workers, the same for every contender.")
    parser.add_argument("--contenders", nargs="+", default=list(CONTENDERS), choices=CONTENDERS)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="One run of each contender per seed (initial weights, data order, dropout).")
    parser.add_argument("--bf16_seeds", type=int, nargs="*", default=None,
                        help="The seeds the bf16 contenders run (default: --seeds); bf16 is slow on CPUs without AMX.")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from contenders import summarise, write_csv
    from transformers import set_seed

    from jbert.core.normalize import normalize_text
    from jbert.data.prepare import label_sort_key
    from jbert.tokenization import load_tokenizer, train_japanese_wordpiece
    from jbert.train import hardware
    from jbert.train.modeling import build_scratch_model

    train_rows, test_rows, data_description = load_rows(args.data)
    work = Path(tempfile.mkdtemp(prefix="jbert-bench-"))
    label_names = sorted({r["label"] for r in train_rows}, key=label_sort_key)
    # A shared starting point: one vocabulary, one randomly initialised model per seed, saved once.
    texts = [normalize_text(r["text"]) for r in train_rows]
    train_japanese_wordpiece(texts, args.vocab_size, work / "vocab", model_max_length=args.max_length)
    tokenizer = load_tokenizer(str(work / "vocab"))
    # The same validation rows for all: jbert's own split is reproduced by giving it explicitly.
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train_rows))
    n_valid = len(train_rows) // 10
    files = {name: write_csv(work / f"{name}.csv", rows) for name, rows in (
        ("train", [train_rows[i] for i in order[n_valid:]]), ("valid", [train_rows[i] for i in order[:n_valid]]),
        ("test", test_rows))}

    runs = {name: [] for name in args.contenders}
    for index, seed in enumerate(args.seeds):
        init_dir = work / f"init-{seed}"
        tokenizer.save_pretrained(init_dir)
        set_seed(seed)
        build_scratch_model(args.size, len(tokenizer), tokenizer.pad_token_id, args.max_length, label_names,
                            "single_label_classification").save_pretrained(init_dir)
        # Rotate the order per seed so drifting machine load does not favour one contender.
        shift = index % len(args.contenders)
        for name in args.contenders[shift:] + args.contenders[:shift]:
            if name.endswith("bf16") and args.bf16_seeds is not None and seed not in args.bf16_seeds:
                continue
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs: stdout is the JSON alone
                runs[name].append({"seed": seed, **run_contender(name, files, init_dir, work, seed, args)})
            print(f"# {name} seed {seed}: {runs[name][-1]}", file=sys.stderr)

    summary = summarise(runs)
    report = {
        "benchmark": "train_throughput",
        "data": data_description,
        "model": f"BERT {args.size} from scratch, vocab {len(tokenizer)}, max_length {args.max_length}",
        "hyper_parameters": {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.learning_rate,
                             "seeds": args.seeds, "bf16_seeds": args.seeds if args.bf16_seeds is None else args.bf16_seeds,
                             "dataloader_num_workers": args.num_workers},
        "torch_threads": torch.get_num_threads(),
        "machine": {"cpu": hardware.cpu_name(), "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads()},
        "measured_cpu_peak_tflops": {"float32": round(hardware.measured_cpu_peak_tflops(torch.float32), 4),
                                     "bfloat16": round(hardware.measured_cpu_peak_tflops(torch.bfloat16), 4)},
        "mean_over_seeds": summary,
        **compare(runs),
        "runs": runs,
    }
    print(json.dumps(report, ensure_ascii=False))
    write_json_out(args.json_out, "train_throughput", report, argv)


if __name__ == "__main__":
    main()
