"""Batch scoring throughput: the local scorer vs the Ray engine with 1 and 2 workers, on the same rows.

    python bench/scoring_scale.py                     # 50,000 rows in 4 Parquet files; one JSON object on stdout
    python bench/scoring_scale.py --json-out docs/data/scoring_scale.json
    python bench/scoring_scale.py --rows 200000 --files 16 --layers 12 --hidden 768 --work-dir /tmp/jbert-scale

Model: a BERT classifier with random weights, 4 layers of hidden 256 by default (a MiniLM-sized
model, so that 50,000 rows take about a minute per contender on two cores; --layers/--hidden
change it), with a BertJapaneseTokenizer (MeCab unidic-lite + WordPiece) whose vocabulary is
built from the texts, exported with export.py's code; the export's default model (int8) is
scored. Rows: real short Japanese sentences from ../shared/data (else data/quickstart),
repeated to --rows, with an `id` column, split into --files Parquet files.

Contenders, each writing the same Parquet shard directory (`serve_onnx.py score IN/ OUT/`):
  local           the local engine, onnxruntime with one thread per physical core
  ray_1_worker    --engine ray --num-workers 1 (physical cores threads)
  ray_2_workers   --engine ray --num-workers 2 (physical cores / 2 threads each)
The Ray contenders share one local Ray started before them (`ray_start_seconds`, not counted):
their time includes starting the actors and loading the model in each. Rounds alternate the
contenders (--repeats); each keeps its best round, all rounds are reported. The target on two
cores is Ray overhead: ray_2_workers >= 0.8 x local.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

LABELS = ("negative", "positive")

from json_out import add_json_out_argument, write_json_out  # noqa: E402  (bench/ is on sys.path)


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def build_export(work: Path, texts: list[str], layers: int, hidden: int, vocab_size: int) -> Path:
    """(Re)use a random-weight classifier of the given shape and its ONNX export under `work`."""
    export_dir = work / f"export-{layers}x{hidden}"
    if (export_dir / "manifest.json").is_file():
        return export_dir
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertJapaneseTokenizer

    from jbert.core.artifacts import JbertSettings
    from jbert.export import ExportOptions, export_model
    from jbert.tokenization import train_japanese_wordpiece

    model_dir = work / f"model-{layers}x{hidden}"
    log(f"building a {layers}-layer, hidden {hidden} model with a {vocab_size}-entry vocabulary in {model_dir}")
    train_japanese_wordpiece(texts, vocab_size, model_dir, mecab_dic="unidic_lite")
    tokenizer = BertJapaneseTokenizer.from_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    config = BertConfig(
        vocab_size=len(tokenizer.vocab), hidden_size=hidden, num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64), intermediate_size=4 * hidden, max_position_embeddings=512,
        num_labels=len(LABELS), id2label=dict(enumerate(LABELS)), label2id={n: i for i, n in enumerate(LABELS)},
        problem_type="single_label_classification",
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).eval().save_pretrained(model_dir)
    JbertSettings(max_length=128).save(model_dir)
    cpu_flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    quantize = "avx512_vnni" if "avx512_vnni" in cpu_flags else "avx2"
    log(f"exporting to ONNX (fp32 + int8 {quantize})")
    export_model(model_dir, export_dir, ExportOptions(quantize=quantize, overwrite=True, show_progress=False))
    return export_dir


def write_inputs(directory: Path, texts: list[str], rows: int, files: int) -> None:
    """`rows` rows (id, text) cycling through `texts`, in `files` Parquet files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory.mkdir(parents=True, exist_ok=True)
    per_file = -(-rows // files)
    for index in range(files):
        ids = list(range(index * per_file, min(rows, (index + 1) * per_file)))
        table = pa.table({"id": ids, "text": [texts[i % len(texts)] for i in ids]})
        pq.write_table(table, directory / f"part-{index:03d}.parquet")


def run_contender(name: str, export_dir: Path, inputs: Path, output: Path, cores: int, batch_size: int) -> dict:
    """Score every input row once with one contender; its seconds and rows per second."""
    from jbert.serve.scoring.options import ScoreOptions
    from jbert.serve.scoring.run import score_file

    engine = {"local": {}, "ray_1_worker": {"engine": "ray", "num_workers": 1, "num_threads": cores},
              "ray_2_workers": {"engine": "ray", "num_workers": 2, "num_threads": max(1, cores // 2)}}[name]
    options = ScoreOptions(export_dir=str(export_dir), input=str(inputs), output=str(output), overwrite=True,
                           show_progress=False, batch_size=batch_size, **engine)
    started = time.perf_counter()
    summary = score_file(options)
    seconds = time.perf_counter() - started
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["rows_in"] == manifest["rows_out"] == summary.rows, manifest
    return {"seconds": round(seconds, 2), "rows": summary.rows, "rows_per_second": round(summary.rows / seconds, 1)}


def main(argv=None) -> dict:
    """Build (or reuse) the model, export and inputs; run the contenders; return the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50_000, help="rows to score (default 50,000)")
    parser.add_argument("--files", type=int, default=4, help="Parquet input files (default 4)")
    parser.add_argument("--layers", type=int, default=4, help="transformer layers (default 4)")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (default 256)")
    parser.add_argument("--vocab-size", type=int, default=8192, help="WordPiece vocabulary (default 8192)")
    parser.add_argument("--batch-size", type=int, default=32, help="texts per onnxruntime call (default 32)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; each contender keeps its best (default 1)")
    parser.add_argument("--work-dir", default="/tmp/jbert-bench-scoring-scale", help="cache for model, export and inputs")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)

    import ray

    from inference import load_texts
    from jbert.serve.runtime.session import physical_core_count

    texts, source = load_texts()
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    export_dir = build_export(work, texts, args.layers, args.hidden, args.vocab_size)
    inputs = work / f"inputs-{args.rows}x{args.files}"
    if not inputs.is_dir():
        write_inputs(inputs, texts, args.rows, args.files)
    cores = physical_core_count()
    load_before = os.getloadavg()

    log(f"starting a local Ray with {os.cpu_count()} CPUs")
    started = time.perf_counter()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING")
    ray_start = time.perf_counter() - started
    rounds: dict[str, list[dict]] = {"local": [], "ray_1_worker": [], "ray_2_workers": []}
    try:
        for round_index in range(args.repeats):
            order = list(rounds) if round_index % 2 == 0 else list(reversed(rounds))
            for name in order:
                log(f"round {round_index + 1}: {name}")
                rounds[name].append(run_contender(name, export_dir, inputs, work / f"out-{name}", cores, args.batch_size))
                log(f"  {rounds[name][-1]}")
    finally:
        ray.shutdown()
    best = {name: max(r["rows_per_second"] for r in results) for name, results in rounds.items()}
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "physical_cores": cores,
                    "logical_cpus": os.cpu_count(), "load_average_before": [round(x, 2) for x in load_before]},
        "data": {"rows": args.rows, "files": args.files, "format": "parquet", "texts_from": source},
        "model": {"layers": args.layers, "hidden": args.hidden, "file": "model_quantized.onnx (int8, the export's default)"},
        "ray_start_seconds": round(ray_start, 1),
        "rows_per_second": best,
        "ray_2_workers_vs_local": round(best["ray_2_workers"] / best["local"], 3),
        "ray_1_worker_vs_local": round(best["ray_1_worker"] / best["local"], 3),
        "rounds": rounds,
    }
    write_json_out(args.json_out, "scoring_scale", report, argv)
    return report


if __name__ == "__main__":
    print(json.dumps(main(), ensure_ascii=False, indent=2))
