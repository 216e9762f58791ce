"""Encoder families at their real sizes: export size and texts/s of jbert's runtime vs the transformers pipeline.

    python bench/encoders.py                                   # prints one JSON object (10-15 min on 2 busy cores)
    python bench/encoders.py --families modernbert,xlm-roberta --texts 64 --json-out docs/data/encoders.json

Models (random weights, configs built here from the published shapes; nothing is downloaded):
  bert         tohoku-nlp/bert-base-japanese-v3: 12 x 768, 32,768 vocabulary, MeCab + WordPiece tokenizer
  modernbert   sbintuitions/modernbert-ja-130m: 19 x 512, 102,400 vocabulary, local/global attention
  deberta-v2   ku-nlp/deberta-v3-base-japanese: 12 x 768, 32,000 vocabulary, relative attention
  xlm-roberta  FacebookAI/xlm-roberta-base: 12 x 768, 250,002 vocabulary (the embedding table is most of it)
Non-BERT families get a Unigram tokenizer trained on the texts (bench/builders/encoder_families.py); the
model's vocabulary keeps its real size, so the export sizes are the real ones.

Per family: `export_model` (fp32 + dynamic int8 for --quantize; the int8 gate is off here because a
random-weight classifier's logits sit near the decision boundary, so the agreement is reported,
not enforced), then, on the same texts in interleaved rounds (each contender's best round):
  pipeline_fp32      transformers pipeline("text-classification") on the PyTorch model, batch --batch-size
  jbert_fp32/int8    jbert.serve.runtime.OnnxClassifier.predict (normalise, fast tokenizer, length-sorted batches)
Every contender runs with --threads threads (default 1: the machine is shared; ratios are what count).
"""

from __future__ import annotations

import argparse
import csv
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

from builders.encoder_families import FAMILIES, build_config, train_unigram_tokenizer  # noqa: E402

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
LABELS = ("negative", "positive")
SHAPE_NAMES = {
    "bert": "tohoku-nlp/bert-base-japanese-v3",
    "modernbert": "sbintuitions/modernbert-ja-130m",
    "deberta-v2": "ku-nlp/deberta-v3-base-japanese",
    "xlm-roberta": "FacebookAI/xlm-roberta-base",
}


def log(message: str) -> None:
    """Progress on stderr (stdout carries only the JSON result)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_texts() -> tuple[list[str], str]:
    """Real Japanese sentences: jrte rhr when ../shared/data is there, else the quickstart reviews."""
    rhr = SHARED_DATA / "jrte_rhr.tsv"
    if rhr.is_file():
        with open(rhr, encoding="utf-8") as handle:
            texts = [parts[2] for parts in (line.rstrip("\n").split("\t") for line in handle) if len(parts) > 2 and parts[2].strip()]
        return texts, "../shared/data/jrte_rhr.tsv"
    texts = []
    for name in ("train", "validation", "test"):
        with open(REPO_ROOT / "data" / "quickstart" / f"{name}.csv", encoding="utf-8", newline="") as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    return texts, "data/quickstart"


def build_model_dir(model_dir: Path, family_name: str, texts: list[str], max_length: int) -> None:
    """A classifier directory of the family's real shape with random weights, as train.py writes one."""
    import torch
    import transformers

    from jbert.core.artifacts import EXAMPLES_FILE, JbertSettings

    family = FAMILIES[family_name]
    if family_name == "bert":  # the MeCab + WordPiece tokenizer bert-base-japanese-v3 ships
        from jbert.tokenization import load_tokenizer, train_japanese_wordpiece

        train_japanese_wordpiece(texts, 8000, model_dir, mecab_dic="unidic_lite")
        tokenizer = load_tokenizer(str(model_dir))
    else:
        tokenizer = train_unigram_tokenizer(family, texts, vocab_size=8000)
    labels = {"id2label": dict(enumerate(LABELS)), "label2id": {n: i for i, n in enumerate(LABELS)}}
    config = build_config(family, "real", tokenizer, num_labels=len(LABELS), problem_type="single_label_classification", **labels)
    torch.manual_seed(0)
    getattr(transformers, family.model_class)(config).eval().save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    JbertSettings(max_length=max_length).save(model_dir)
    with open(model_dir / EXAMPLES_FILE, "w", encoding="utf-8") as handle:
        for text in texts[:16]:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")  # unlabelled: random weights have no accuracy


def measure_family(family_name: str, work: Path, texts: list[str], args) -> dict:
    """Build, export and time one family; its row of the report."""
    import numpy as np
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from jbert.core.artifacts import Manifest
    from jbert.export import ExportOptions, export_model
    from jbert.serve.runtime.classifier import OnnxClassifier

    model_dir, export_dir = work / family_name / "model", work / family_name / "export"
    shutil.rmtree(work / family_name, ignore_errors=True)
    started = time.perf_counter()
    log(f"{family_name}: building a {SHAPE_NAMES[family_name]}-shaped model")
    build_model_dir(model_dir, family_name, texts, args.max_length)
    log(f"{family_name}: exporting (fp32 + dynamic int8 {args.quantize})")
    export_started = time.perf_counter()
    export_model(model_dir, export_dir, ExportOptions(quantize=args.quantize, quantize_method="dynamic", min_agreement=0.0,
                                                       max_validation_texts=16, show_progress=False))
    export_seconds = time.perf_counter() - export_started
    manifest = Manifest.load(export_dir)
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))

    sample = texts[: args.texts]
    reference = AutoTokenizer.from_pretrained(model_dir)
    torch_model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    torch_pipe = pipeline("text-classification", model=torch_model, tokenizer=reference, device="cpu")
    classifiers = {p: OnnxClassifier.from_export_dir(export_dir, model=p, num_threads=args.threads) for p in ("fp32", "int8")}
    contenders = {
        "pipeline_fp32": lambda batch: torch_pipe(batch, truncation=True, max_length=args.max_length, batch_size=args.batch_size),
        "jbert_fp32": lambda batch: classifiers["fp32"].predict(batch, batch_size=args.batch_size),
        "jbert_int8": lambda batch: classifiers["int8"].predict(batch, batch_size=args.batch_size),
    }
    for run in contenders.values():
        run(sample[:4])  # warm-up: first calls allocate buffers
    best: dict[str, float] = {}
    outputs: dict[str, list] = {}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            began = time.perf_counter()
            outputs[name] = run(sample)
            seconds = time.perf_counter() - began
            best[name] = min(best.get(name, seconds), seconds)
    speed = {name: round(len(sample) / seconds, 2) for name, seconds in best.items()}
    labels = {name: [row["label"] for row in rows] for name, rows in outputs.items()}
    sizes = {key: entry.size_bytes for key, entry in manifest.models.items()}
    row = {
        "family": family_name,
        "shape_of": SHAPE_NAMES[family_name],
        "model_type": config["model_type"],
        "layers": config["num_hidden_layers"],
        "hidden": config["hidden_size"],
        "vocab_size": config["vocab_size"],
        "parameters_m": round(sum(p.numel() for p in torch_model.parameters()) / 1e6, 1),
        "inputs": manifest.validation["inputs"],
        "fp32_mb": round(sizes["fp32"] / 1e6, 1),
        "int8_mb": round(sizes["int8"] / 1e6, 1),
        "int8_size_ratio": round(sizes["int8"] / sizes["fp32"], 3),
        "fp32_max_abs_diff_vs_pytorch": manifest.models["fp32"].parity["max_abs_diff"],
        "int8_agreement_with_fp32": manifest.models["int8"].parity["agreement"],
        "texts_per_s": speed,
        "jbert_fp32_vs_pipeline": round(speed["jbert_fp32"] / speed["pipeline_fp32"], 2),
        "jbert_int8_vs_pipeline": round(speed["jbert_int8"] / speed["pipeline_fp32"], 2),
        "jbert_int8_vs_fp32": round(speed["jbert_int8"] / speed["jbert_fp32"], 2),
        "fp32_labels_equal_pipeline": bool(np.all(np.array(labels["jbert_fp32"]) == np.array(labels["pipeline_fp32"]))),
        "export_seconds": round(export_seconds, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    log(f"{family_name}: {json.dumps(row, ensure_ascii=False)}")
    del torch_pipe, torch_model, classifiers
    if not args.keep:
        shutil.rmtree(work / family_name, ignore_errors=True)
    return row


def main(argv=None) -> dict:
    """Measure every family asked for; print and return the report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(SHAPE_NAMES), help=f"comma-separated, of {', '.join(SHAPE_NAMES)}")
    parser.add_argument("--texts", type=int, default=64, help="texts timed per round (default 64)")
    parser.add_argument("--max-length", type=int, default=128, help="tokens per text at most (default 128)")
    parser.add_argument("--batch-size", type=int, default=16, help="batch size of every contender (default 16)")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime and torch threads (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds; each contender keeps its best (default 2)")
    parser.add_argument("--quantize", default="avx2", help="int8 target (default avx2)")
    parser.add_argument("--work-dir", default="/tmp/jbert-bench-encoders", help="scratch for models and exports (removed per family)")
    parser.add_argument("--keep", action="store_true", help="keep each family's model and export in --work-dir")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    families = [name.strip() for name in args.families.split(",") if name.strip()]
    unknown = [name for name in families if name not in SHAPE_NAMES]
    if unknown:
        parser.error(f"unknown families {unknown}; choose from {list(SHAPE_NAMES)}")

    import torch

    torch.set_num_threads(args.threads)
    texts, source = load_texts()
    from jbert.core.normalize import NormalizationConfig, normalize_text

    texts = [normalize_text(text, NormalizationConfig()) for text in texts]
    rows = [measure_family(name, Path(args.work_dir), texts, args) for name in families]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, shared with other jobs",
        "texts": {"source": source, "n": args.texts, "max_length": args.max_length},
        "batch_size": args.batch_size,
        "threads": args.threads,
        "quantize": f"dynamic int8, {args.quantize}",
        "families": rows,
    }
    print(json.dumps(report, ensure_ascii=False, indent=2))
    write_json_out(args.json_out, "encoders", report, argv)
    return report


if __name__ == "__main__":
    main()
