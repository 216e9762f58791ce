"""Model quality on real Japanese data: does jbert's model beat the TF-IDF baseline, and how much do
from-scratch defaults, masked-LM pretraining and the hyper-parameter search each bring?

Prints one JSON object (and writes it with --json-out): test accuracy and macro-F1 and seconds for
    baseline   TF-IDF char 1-3 grams + logistic regression (fitted on the training split)
    scratch    --from_scratch SIZE with the recipe defaults (jbert.train.recipes)
    mlm        the offline recipe: --task mlm on the unlabeled texts at hand (every text of
               ../shared/data but the test texts; --unlabeled own: training + validation texts
               only), then fine-tune that directory (configs/mlm-scratch.yaml,
               configs/finetune-from-mlm.yaml)
    hp         --hp_search N trials on top of the masked-LM model, final model trained with the best
on JRTE rhr (train / dev / test as published) and JNLI as sentence pairs (the published valid file,
split 70/15/15 with a fixed seed, since its train file is not in ../shared/data).
The scratch and mlm arms fine-tune once per seed (--seeds, default 42,1,2) and report the mean, with
every seed's figures beside it: a test set of a few hundred rows moves by a point from seed to seed.

    python bench/quality.py                                  # everything (about two hours on 2 cores)
    python bench/quality.py --json-out docs/data/quality.json   # the figures of the training docs
    python bench/quality.py --datasets rhr --arms baseline,mlm
    python bench/quality.py --extra "mlm:--num_train_epochs 20" --extra "finetune:--learning_rate 2e-4"

Needs ../shared/data (exits with a message when it is absent).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One thread per process unless told otherwise: on a CPU shared with other jobs, OpenMP threads
# spinning against them made the same masked-LM run take 40 minutes instead of 30 seconds.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
from json_out import add_json_out_argument, write_json_out  # noqa: E402  (bench/ is sys.path[0] as a script)

SHARED = Path(os.environ.get("JBERT_SHARED_DATA", REPO.parent / "shared" / "data"))  # a copy elsewhere: set the variable
ARMS = ("baseline", "scratch", "mlm", "hp")


def rhr_splits() -> dict:
    """JRTE rhr rows by its own usage column: train / dev / test."""
    splits = {"train": [], "validation": [], "test": []}
    names = {"train": "train", "dev": "validation", "test": "test"}
    with open(SHARED / "jrte_rhr.tsv", encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            splits[names[row[4]]].append({"text": row[2], "label": row[1]})
    return splits


def jnli_splits(seed: int = 0) -> dict:
    """JNLI valid pairs split 70/15/15 (seeded): the public train file is not available offline."""
    rows = []
    with open(SHARED / "jglue_jnli_valid.jsonl", encoding="utf-8") as handle:
        for line in handle:
            item = json.loads(line)
            rows.append({"text": item["sentence1"], "text_pair": item["sentence2"], "label": item["label"]})
    random.Random(seed).shuffle(rows)
    a, b = int(0.7 * len(rows)), int(0.85 * len(rows))
    return {"train": rows[:a], "validation": rows[a:b], "test": rows[b:]}


DATASETS = {"rhr": (rhr_splits, False), "jnli": (jnli_splits, True)}


def write_csv(path: Path, rows: list[dict]) -> str:
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def run_train(argv: list[str]) -> tuple[dict, float]:
    """One training run in this process (classification or --task mlm); (metrics, seconds)."""
    from jbert.train.config import parse_config

    config = parse_config(argv)
    started = time.perf_counter()
    if config.hp_search:
        from jbert.train.hp_search import run_hp_search

        metrics = run_hp_search(config)
    else:
        from jbert.train.loop import train

        metrics = train(config)
    return metrics, time.perf_counter() - started


def scores(metrics: dict, seconds: float, **extra) -> dict:
    """One run's figures: test accuracy and macro-F1, validation macro-F1, seconds."""
    test = metrics.get("test") or {}
    return {"test_accuracy": round(test.get("accuracy", float("nan")), 4),
            "test_macro_f1": round(test.get("macro_f1", float("nan")), 4),
            "validation_macro_f1": round(metrics.get("validation", {}).get("macro_f1", float("nan")), 4),
            "seconds": round(seconds, 1), **extra}


def over_seeds(runs: dict[int, dict]) -> dict:
    """The mean of per-seed figures, with every seed's own figures under "seeds".

    Test sets of a few hundred rows move by a point or more from one fine-tuning seed to the next
    (rhr: 553 rows, 0.873 to 0.888 on one encoder), so a single seed cannot say which arm is better.
    """
    def mean(key):
        return round(sum(run[key] for run in runs.values()) / len(runs), 4)

    accuracies = [run["test_accuracy"] for run in runs.values()]
    summary = {key: mean(key) for key in ("test_accuracy", "test_macro_f1", "validation_macro_f1", "seconds")}
    summary.update(test_accuracy_min=min(accuracies), test_accuracy_max=max(accuracies),
                   seeds={str(seed): run for seed, run in runs.items()})
    return summary


def other_texts() -> list[str]:
    """Every text of the shared data: rhr's sentences and both sentences of each JNLI and JSTS pair."""
    texts = [row["text"] for rows in rhr_splits().values() for row in rows]
    for name in ("jglue_jnli_valid.jsonl", "jglue_jsts_valid.jsonl"):
        with open(SHARED / name, encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line)
                texts += [item["sentence1"], item["sentence2"]]
    return texts


def bench_dataset(name: str, arms: list[str], size: str, hp_trials: int, extra: dict, work: Path,
                  save=lambda result: None, pool_texts: bool = True, seeds: tuple[int, ...] = (42,)) -> dict:
    """Every arm on one data set; the fine-tuning arms (scratch, mlm) once per seed, reported as the mean.

    Masked-LM pretraining and the search run once, with the first seed."""
    load, is_pair = DATASETS[name]
    splits = load()
    files = {role: write_csv(work / f"{name}_{role}.csv", rows) for role, rows in splits.items()}
    unlabeled = work / f"{name}_unlabeled.txt"
    texts = [row[key] for role in ("train", "validation") for row in splits[role]
             for key in (("text", "text_pair") if is_pair else ("text",))]
    if pool_texts:
        # every other Japanese text at hand (never this data set's test texts): more text is what
        # made masked-LM pretraining pay on rhr (docs/training.md)
        test_texts = {row[key] for row in splits["test"] for key in (("text", "text_pair") if is_pair else ("text",))}
        texts += [text for text in other_texts() if text not in test_texts]
    unlabeled.write_text("\n".join(dict.fromkeys(texts)) + "\n", encoding="utf-8")
    data = ["--train_file", files["train"], "--validation_file", files["validation"], "--test_file", files["test"]]
    if is_pair:
        data += ["--text_pair_column", "text_pair"]
    common = ["--disable_tqdm", "--overwrite_output_dir", "--logging_steps", "50"]
    first_seed = ["--seed", str(seeds[0])]
    result = {"data": {role: len(rows) for role, rows in splits.items()}, "unlabeled_texts": len(set(texts)),
              "arms": {}}
    out = lambda arm: ["--output_dir", str(work / f"{name}-{arm}")]  # noqa: E731

    if "baseline" in arms:
        from jbert.train.baseline import baseline_texts, fit_baseline

        labels = sorted({row["label"] for row in splits["train"]})
        ids = {label: i for i, label in enumerate(labels)}

        def xy(rows):
            pairs = [row["text_pair"] for row in rows] if is_pair else None
            return baseline_texts([row["text"] for row in rows], pairs), [ids[row["label"]] for row in rows]

        import numpy as np

        started = time.perf_counter()
        train_x, train_y = xy(splits["train"])
        fitted = fit_baseline(train_x, np.array(train_y), "single_label_classification", labels,
                              {split: (xy(splits[split])[0], np.asarray(xy(splits[split])[1])) for split in ("validation", "test")})
        result["arms"]["baseline"] = scores(fitted, time.perf_counter() - started)
        save(result)
    mlm_dir = work / f"{name}-mlm-pretrained"
    if ("mlm" in arms or "hp" in arms) and (mlm_dir / "metrics.json").is_file():
        # a kept --work_dir: the pretrained model of an earlier run is reused (its seconds still count)
        mlm_metrics = json.loads((mlm_dir / "metrics.json").read_text(encoding="utf-8"))
        mlm_seconds = mlm_metrics["train_seconds"]
    elif "mlm" in arms or "hp" in arms:
        mlm_argv = (["--config", str(REPO / "configs" / "mlm-scratch.yaml"), "--train_file", str(unlabeled),
                     "--output_dir", str(mlm_dir), "--from_scratch", size] + common + first_seed + extra.get("mlm", []))
        mlm_metrics, mlm_seconds = run_train(mlm_argv)
    if "mlm" in arms or "hp" in arms:
        result["mlm_pretraining"] = {
            "seconds": round(mlm_seconds, 1), "steps": mlm_metrics["global_step"],
            "validation_perplexity": round(mlm_metrics["validation"]["perplexity"], 2),
            "perplexity_before_training": round(mlm_metrics["first_evaluation"]["perplexity"], 2)}
    if "mlm" in arms:
        runs = {}
        for seed in seeds:
            metrics, seconds = run_train(["--config", str(REPO / "configs" / "finetune-from-mlm.yaml"),
                                          "--model_name_or_path", str(mlm_dir), "--seed", str(seed)]
                                         + data + common + out("mlm") + extra.get("finetune", []))
            runs[seed] = scores(metrics, seconds + mlm_seconds, finetune_seconds=round(seconds, 1))
        result["arms"]["mlm"] = over_seeds(runs)
        save(result)
    if "scratch" in arms:
        runs = {}
        for seed in seeds:
            metrics, seconds = run_train(data + common + out("scratch") + ["--from_scratch", size, "--seed", str(seed)]
                                         + extra.get("scratch", []))
            runs[seed] = scores(metrics, seconds, epochs_run=metrics["history"][-1].get("epoch"))
        result["arms"]["scratch"] = over_seeds(runs)
        save(result)
    if "hp" in arms:
        metrics, seconds = run_train(["--config", str(REPO / "configs" / "finetune-from-mlm.yaml"),
                                      "--model_name_or_path", str(mlm_dir), "--hp_search", str(hp_trials)]
                                     + data + common + first_seed + out("hp") + extra.get("hp", []))
        result["arms"]["hp"] = scores(metrics, seconds + mlm_seconds, trials=hp_trials,
                                      best_trial=metrics.get("hp_search", {}).get("best_params"))
    if "baseline" in result["arms"]:
        reference = result["arms"]["baseline"]["test_accuracy"]
        # the mean over seeds for the fine-tuning arms: one lucky seed is not a win
        result["beats_baseline_test_accuracy"] = {arm: values["test_accuracy"] > reference
                                                  for arm, values in result["arms"].items() if arm != "baseline"}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="rhr,jnli")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--size", default="tiny", choices=["tiny", "mini", "small", "base"])
    parser.add_argument("--hp_trials", type=int, default=6)
    parser.add_argument("--seeds", default="42,1,2",
                        help="fine-tuning seeds of the scratch and mlm arms, comma-separated; the table shows the mean")
    parser.add_argument("--extra", action="append", default=[],
                        help="ARM:FLAGS extra train.py flags for an arm (scratch, mlm, finetune, hp)")
    parser.add_argument("--unlabeled", default="all", choices=["all", "own"],
                        help="masked-LM text: all texts of ../shared/data except the test texts (default), or "
                             "only the data set's own training + validation texts")
    add_json_out_argument(parser)
    parser.add_argument("--work_dir", default=None, help="keep the models here (default: a temporary directory)")
    args = parser.parse_args()
    if not (SHARED / "jrte_rhr.tsv").is_file():
        print(json.dumps({"skipped": f"{SHARED} is absent: this benchmark needs the shared real data"}))
        return
    extra: dict[str, list[str]] = {}
    for item in args.extra:
        arm, _, flags = item.partition(":")
        extra.setdefault(arm, []).extend(shlex.split(flags))
    try:
        seeds = tuple(int(seed) for seed in args.seeds.split(","))
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give whole numbers separated by commas, e.g. 42,1,2")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="jbert-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    import torch

    report = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "processor": platform.processor()
                    or platform.machine(), "note": "CPU shared with other jobs: seconds are indicative"},
        "size": args.size, "seeds": list(seeds), "extra": extra, "datasets": {},
    }
    for name in args.datasets.split(","):
        def save(result, name=name):
            report["datasets"][name] = result
            # after every arm: the results so far survive a long run that is stopped
            write_json_out(args.json_out, "quality", report)

        save(bench_dataset(name, args.arms.split(","), args.size, args.hp_trials, extra, work, save,
                           pool_texts=args.unlabeled == "all", seeds=seeds))
    print(json.dumps(report, ensure_ascii=False, indent=2))


if __name__ == "__main__":
    main()
