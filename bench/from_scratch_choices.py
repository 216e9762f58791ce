"""From scratch with a choice: does a ModernBERT, a DeBERTa-v2 or a Unigram vocabulary beat BERT + MeCab WordPiece?

Trains `train.py --from_scratch SIZE` on JRTE rhr (train / dev / test as published) once per
(architecture, vocabulary) arm and seed, with the from-scratch recipe defaults (jbert.train.recipes:
the same learning rate, warm-up, epochs and early stopping for every arm, so only the choice
differs), and prints one JSON object: test accuracy and macro-F1 per arm (mean over seeds, each seed
beside it), seconds, and each arm's difference to the default arm (BERT + MeCab WordPiece).

    python bench/from_scratch_choices.py                          # 5 arms x 2 seeds, tiny (about 15 min on 2 cores)
    python bench/from_scratch_choices.py --json-out docs/data/from_scratch_choices.json
    python bench/from_scratch_choices.py --arms bert+unigram,modernbert+mecab-wordpiece --seeds 42 --size mini

Needs ../shared/data (exits with a message when it is absent).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread: the machine is shared
os.environ.setdefault("MKL_NUM_THREADS", "1")
from json_out import add_json_out_argument, write_json_out  # noqa: E402  (bench/ is sys.path[0] as a script)

SHARED = Path(os.environ.get("JBERT_SHARED_DATA", REPO.parent / "shared" / "data"))
# An arm is ARCHITECTURE+VOCABULARY ("+", not "/": the docs address JSON values by "/"-separated paths)
DEFAULT_ARM = "bert+mecab-wordpiece"
ARMS = (DEFAULT_ARM, "bert+unigram", "modernbert+mecab-wordpiece", "modernbert+unigram", "deberta-v2+mecab-wordpiece")


def rhr_files(work: Path) -> dict[str, str]:
    """JRTE rhr written as train / validation / test CSV files by its usage column."""
    splits = {"train": [], "dev": [], "test": []}
    with open(SHARED / "jrte_rhr.tsv", encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            splits[row[4]].append({"text": row[2], "label": row[1]})
    files = {}
    for usage, name in (("train", "train"), ("dev", "validation"), ("test", "test")):
        path = work / f"rhr_{name}.csv"
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(splits[usage])
        files[name] = str(path)
    return files


def run_arm(arm: str, seed: int, size: str, vocab_size: int, files: dict, work: Path) -> dict:
    """One from-scratch run; its test figures, seconds and epochs."""
    from jbert.train.config import parse_config
    from jbert.train.loop import train

    architecture, vocabulary = arm.split("+")
    output = work / f"{architecture}-{vocabulary}-{seed}"
    argv = ["--from_scratch", size, "--architecture", architecture, "--vocabulary", vocabulary,
            "--vocab_size", str(vocab_size), "--train_file", files["train"], "--validation_file", files["validation"],
            "--test_file", files["test"], "--output_dir", str(output), "--seed", str(seed), "--max_length", "128",
            "--baseline", "none", "--calibrate", "none", "--disable_tqdm"]
    started = time.perf_counter()
    metrics = train(parse_config(argv))
    seconds = time.perf_counter() - started
    return {"test_accuracy": round(metrics["test"]["accuracy"], 4), "test_macro_f1": round(metrics["test"]["macro_f1"], 4),
            "validation_macro_f1": round(metrics["validation"]["macro_f1"], 4), "seconds": round(seconds, 1),
            "vocab_entries": json.loads((output / "config.json").read_text())["vocab_size"]}


def main(argv: list[str] | None = None) -> int:
    """Run the arms, print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated ARCHITECTURE+VOCABULARY ({', '.join(ARMS)})")
    parser.add_argument("--seeds", default="42,1")
    parser.add_argument("--size", default="tiny", choices=("tiny", "mini", "small"))
    parser.add_argument("--vocab_size", type=int, default=8000)
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    if not (SHARED / "jrte_rhr.tsv").is_file():
        print(f"needs {SHARED / 'jrte_rhr.tsv'} (../shared/data); not found", file=sys.stderr)
        return 2
    arms = [arm.strip() for arm in args.arms.split(",") if arm.strip()]
    seeds = [int(seed) for seed in args.seeds.split(",")]
    import logging

    logging.getLogger("jbert").setLevel(logging.WARNING)
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="jbert-scratch-choices-") as tmp:
        work = Path(tmp)
        files = rhr_files(work)
        for arm in arms:
            runs = {str(seed): run_arm(arm, seed, args.size, args.vocab_size, files, work) for seed in seeds}
            mean = {key: round(sum(run[key] for run in runs.values()) / len(runs), 4)
                    for key in ("test_accuracy", "test_macro_f1", "validation_macro_f1", "seconds")}
            results[arm] = {**mean, "seeds": runs}
            print(f"[bench] {arm}: {mean}", file=sys.stderr, flush=True)
    if DEFAULT_ARM in results:
        base = results[DEFAULT_ARM]
        for arm, figures in results.items():
            figures["macro_f1_minus_default"] = round(figures["test_macro_f1"] - base["test_macro_f1"], 4)
            figures["seconds_ratio_to_default"] = round(figures["seconds"] / base["seconds"], 2)
    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": int(os.environ["OMP_NUM_THREADS"]),
                    "processor": platform.machine(), "note": "shared 2-core machine: seconds are indicative, ratios count"},
        "data": "JRTE rhr (train / dev / test as published)", "size": args.size, "vocab_size": args.vocab_size,
        "seeds": seeds, "default_arm": DEFAULT_ARM, "arms": results,
    }
    print(json.dumps(result, ensure_ascii=False))
    write_json_out(args.json_out, "from_scratch_choices", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
