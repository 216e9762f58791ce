"""Temperature scaling on real Japanese data: are the scores honest, before and after?

Trains one small from-scratch model per data set (the recipe defaults of --from_scratch SIZE,
--calibrate temperature) and prints one JSON object with, for its validation split (where T is
fitted) and its test split (held out from the fit), side by side before and after T:
accuracy (identical by construction: the argmax does not move), expected calibration error
(15 equal-width bins), log-loss and the multi-class Brier score. `test_ece_ratio` is ECE after /
ECE before on test (the issue's target: at most 0.5); `ece_sampling_floor` is the ECE a perfectly
calibrated model with the calibrated scores would still show on that many texts (sampling noise).
Each data set is trained twice: with the recipe's epochs and for --long-epochs (a model trained
past its lowest validation loss, as long fine-tunes are: the over-confidence temperature fixes).

Data as bench/quality.py reads it: JRTE rhr (train / dev / test as published) and JNLI sentence
pairs (the published valid file split 70/15/15 with a fixed seed).

    python bench/calibration.py                                       # rhr and JNLI, 3 and 12 epochs, about 10 minutes
    python bench/calibration.py --json-out docs/data/calibration.json --plots-dir docs/img/calibration
                                                                      # the figures and plots of docs/training.md
    python bench/calibration.py --datasets rhr --size mini

Needs ../shared/data (exits with a message when it is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread per process on a shared CPU (see bench/quality.py)
os.environ.setdefault("MKL_NUM_THREADS", "1")
from json_out import add_json_out_argument, write_json_out  # noqa: E402  (bench/ is sys.path[0] as a script)
from quality import DATASETS, SHARED, run_train, write_csv  # noqa: E402  (the same splits as the quality bench)


def rounded(figures: dict) -> dict:
    """Figures to 4 decimals for the docs tables."""
    return {key: round(value, 4) for key, value in figures.items()}


def bench_dataset(name: str, size: str, seed: int, work: Path, extra: list[str], plots_dir: str | None = None) -> dict:
    """Train once on NAME and report its calibration record from metrics.json, before and after T.

    `plots_dir`: where to copy the model directory's reliability diagram, as NAME.png.
    """
    load, is_pair = DATASETS[name]
    splits = load()
    files = {split: write_csv(work / f"{name}-{split}.csv", rows) for split, rows in splits.items()}
    argv = ["--from_scratch", size, "--train_file", files["train"], "--validation_file", files["validation"],
            "--test_file", files["test"], "--output_dir", str(work / f"{name}-model"), "--seed", str(seed),
            "--calibrate", "temperature", "--baseline", "none", "--disable_tqdm", "true", *extra]
    if is_pair:
        argv += ["--text_pair_column", "text_pair"]
    metrics, seconds = run_train(argv)
    if plots_dir:
        Path(plots_dir).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(work / f"{name}-model" / "reliability.png", Path(plots_dir) / f"{name}.png")
    calibration = metrics["calibration"]
    result = {"data": {split: len(rows) for split, rows in splits.items()},
              "temperature": round(calibration["temperature"], 4), "seconds": round(seconds, 1)}
    for split in ("validation", "test"):
        result[split] = {stage: rounded(calibration[split][stage]) for stage in ("before", "after")}
        # What a perfectly calibrated model with the calibrated scores would still measure on this many texts.
        result[split]["ece_sampling_floor"] = round(calibration[split]["ece_sampling_floor"], 4)
    test = calibration["test"]
    result["accuracy_identical"] = all(calibration[split]["before"]["accuracy"] == calibration[split]["after"]["accuracy"]
                                       for split in ("validation", "test"))
    result["test_ece_ratio"] = round(test["after"]["ece"] / test["before"]["ece"], 4) if test["before"]["ece"] else None
    return result


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, run each data set, print (and with --json-out write) the JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="rhr,jnli", help="comma-separated: rhr, jnli")
    parser.add_argument("--size", default="tiny", choices=("tiny", "mini", "small"), help="--from_scratch size")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--extra", default="", help="extra train.py flags, e.g. '--num_train_epochs 20'")
    parser.add_argument("--long-epochs", type=float, default=12.0, metavar="E",
                        help="also train each data set for E epochs (arms NAME_E_epochs): a model trained past "
                             "its lowest validation loss, over-confident as long fine-tunes are (0: skip)")
    parser.add_argument("--plots-dir", default=None, metavar="DIR",
                        help="copy each model's reliability.png to DIR/NAME.png (docs/img/calibration for the docs)")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs the shared real data (see bench/quality.py)")
    names = [name.strip() for name in args.datasets.split(",") if name.strip()]
    unknown = [name for name in names if name not in DATASETS]
    if unknown:
        sys.exit(f"unknown data sets {unknown}; choose from {sorted(DATASETS)}")
    import torch

    result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "processor": platform.machine()},
              "size": args.size, "seed": args.seed, "method": "temperature scaling fitted on validation (NLL)",
              "ece_bins": 15, "datasets": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jbert-calibration-") as work:
        for name in names:
            result["datasets"][name] = bench_dataset(name, args.size, args.seed, Path(work), args.extra.split(),
                                                     args.plots_dir)
            if args.long_epochs > 0:
                arm = f"{name}_{args.long_epochs:g}_epochs"
                (Path(work) / arm).mkdir()
                result["datasets"][arm] = bench_dataset(
                    name, args.size, args.seed, Path(work) / arm,
                    [*args.extra.split(), "--num_train_epochs", f"{args.long_epochs:g}"], None)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    write_json_out(args.json_out, "calibration", result, argv)


if __name__ == "__main__":
    main()
