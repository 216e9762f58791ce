"""Abstention on real data: how much of the test set a small model answers at 95% precision.

Trains a --from_scratch model (recipe defaults of jbert.train.recipes) on JRTE rhr (train / dev /
test as published) with --target_precision P: the threshold is chosen on the dev split, then the
test split is scored with it. Prints one JSON object, side by side:
    without   every test input answered: coverage 1, precision = accuracy
    with      the min_confidence chosen on validation: test coverage and precision of the answered,
              and the validation figures it was chosen on

    python bench/abstention.py                                   # tiny model, P = 0.95
    python bench/abstention.py --json-out docs/data/abstention.json
    python bench/abstention.py --size mini --target-precision 0.98

Needs ../shared/data (exits with a message when it is absent).
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

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process: the CPU is shared
os.environ.setdefault("MKL_NUM_THREADS", "1")
from json_out import add_json_out_argument, write_json_out  # noqa: E402  (bench/ is sys.path[0] as a script)

SHARED = Path(os.environ.get("JBERT_SHARED_DATA", REPO.parent / "shared" / "data"))


def write_rhr_splits(directory: Path) -> dict[str, Path]:
    """rhr's train / dev / test rows as three CSV files (text, label)."""
    names = {"train": "train", "dev": "validation", "test": "test"}
    rows: dict[str, list] = {name: [] for name in names.values()}
    with open(SHARED / "jrte_rhr.tsv", encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            rows[names[row[4]]].append({"text": row[2], "label": row[1]})
    paths = {}
    for split, split_rows in rows.items():
        paths[split] = directory / f"{split}.csv"
        with open(paths[split], "w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["text", "label"])
            writer.writeheader()
            writer.writerows(split_rows)
    return paths


def main(argv: list[str] | None = None) -> int:
    """Train once with --target_precision, print the test coverage and precision with and without abstention."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="tiny", choices=("tiny", "mini", "small"))
    parser.add_argument("--target-precision", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--extra", default="", help="more train.py flags, e.g. '--num_train_epochs 5'")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    if not (SHARED / "jrte_rhr.tsv").is_file():
        print(f"skipped: {SHARED / 'jrte_rhr.tsv'} is absent (set JBERT_SHARED_DATA)", file=sys.stderr)
        return 0

    from jbert.core.errors import UserError
    from jbert.train.config import parse_config
    from jbert.train.loop import train

    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        paths = write_rhr_splits(work)
        flags = ["--from_scratch", args.size, "--train_file", str(paths["train"]),
                 "--validation_file", str(paths["validation"]), "--test_file", str(paths["test"]),
                 "--output_dir", str(work / "model"), "--target_precision", str(args.target_precision),
                 "--baseline", "none", "--seed", str(args.seed), "--disable_tqdm", "true"] + args.extra.split()
        started = time.perf_counter()
        try:
            metrics = train(parse_config(flags))
        except UserError as err:
            print(json.dumps({"error": str(err)}, ensure_ascii=False, indent=2))
            return 2
        seconds = time.perf_counter() - started
    test = metrics["test"]
    chosen = metrics["decision"]["abstention"]
    result = {
        "data": "JRTE rhr (train / dev / test as published)", "model": f"--from_scratch {args.size}",
        "target_precision": args.target_precision, "seed": args.seed, "train_seconds": round(seconds, 1),
        "without": {"coverage": 1.0, "precision": test["accuracy"], "accuracy": test["accuracy"]},
        "with": {"min_confidence": chosen["validation"]["min_confidence"],
                 "validation": {k: chosen["validation"][k] for k in ("coverage", "precision", "accepted")},
                 "test": {k: test["abstention"][k] for k in ("coverage", "precision", "accepted", "abstained")}},
        "curve": chosen["curve"],
    }
    print(json.dumps(result, ensure_ascii=False, indent=2))
    write_json_out(args.json_out, "abstention", result, sys.argv[1:] if argv is None else argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
