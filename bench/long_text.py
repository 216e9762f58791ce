"""Long documents on real Japanese sentences: truncation against windows (mean / max / first pooling).

Each document is one JRTE rhr sentence (the label: is it a hotel reputation, 1, or not, 0) put at a
random place among `--fillers` JGLUE image-caption sentences (JNLI and JSTS, neutral for the label),
so the sentence that decides the label may sit anywhere in a text of several hundred tokens. The
rhr splits are kept (train / dev / test); the caption sentences are split 70/15/15 so no filler of
a test document was seen in training.

For each max_length (128 and 512 by default) one small from-scratch model is trained with
--long_text truncate, and windows models with --long_text windows: trained on the first window of
each text only (--max_train_windows 1: the truncation training data, but model selection and the
test read whole texts) and on every window (0), and per document (--window_training document: a
text's windows together, the loss on their pooled logits; --document-poolings), each scored with mean, max and first pooling
(pooling is chosen at inference time: the same weights).
Reported per arm: test document accuracy and macro-F1, also split by where the deciding sentence
starts (in the first window, which truncation reads, or past it), training seconds; for the windows models the
texts exported to ONNX and served by jbert's runtime: texts/s and tokens/s against the truncating
export on the same documents, and the agreement of ONNX and PyTorch per document (labels, max
|score diff|).

    python bench/long_text.py                          # both lengths, about 20 minutes on 2 busy cores
    python bench/long_text.py --json-out docs/data/long_text.json
    python bench/long_text.py --max-lengths 128 --train-docs 600

Needs ../shared/data (exits with a message when it is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
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
from quality import SHARED, rhr_splits, run_train, write_csv  # noqa: E402


def caption_sentences() -> list[str]:
    """Every distinct JGLUE caption sentence of JNLI and JSTS (neutral for hotel reputation)."""
    sentences = []
    for name in ("jglue_jnli_valid.jsonl", "jglue_jsts_valid.jsonl"):
        with open(SHARED / name, encoding="utf-8") as handle:
            for line in handle:
                item = json.loads(line)
                sentences += [item["sentence1"], item["sentence2"]]
    return sorted(set(sentences))


def documents(fillers: int, sizes: dict, seed: int) -> dict:
    """{split: [{"text", "label", "position"}]}: each rhr sentence at a random place among caption fillers."""
    rng = random.Random(seed)
    captions = caption_sentences()
    rng.shuffle(captions)
    a, b = int(0.7 * len(captions)), int(0.85 * len(captions))
    pools = {"train": captions[:a], "validation": captions[a:b], "test": captions[b:]}
    result = {}
    for split, rows in rhr_splits().items():
        rows = list(rows)
        rng.shuffle(rows)
        docs = []
        for row in rows[: sizes[split]]:
            parts = rng.sample(pools[split], fillers)
            position = rng.randint(0, fillers)
            parts.insert(position, row["text"])
            docs.append({"text": "".join(parts), "label": row["label"], "position": position,
                         "start": len("".join(parts[:position]))})
        result[split] = docs
    return result


def late_documents(model_dir: Path, test_docs: list[dict], max_length: int) -> list[bool]:
    """For each test document: does its deciding sentence start past the first window (what truncation reads)?"""
    from transformers import AutoTokenizer

    from jbert.core.artifacts import JbertSettings
    from jbert.core.normalize import normalize_text

    settings = JbertSettings.load(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    room = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    return [len(tokenizer.tokenize(normalize_text(d["text"][: d["start"]], settings.normalization))) >= room
            for d in test_docs]


def accuracy_by_place(predicted: list[str], test_docs: list[dict], late: list[bool]) -> dict:
    """Test accuracy and macro-F1 over all documents, and accuracy where the deciding sentence is early / late."""
    from sklearn.metrics import f1_score

    truth = [d["label"] for d in test_docs]
    correct = [p == t for p, t in zip(predicted, truth)]
    late_hits = [c for c, is_late in zip(correct, late) if is_late]
    early_hits = [c for c, is_late in zip(correct, late) if not is_late]
    return {"test_accuracy": round(sum(correct) / len(correct), 4),
            "test_macro_f1": round(float(f1_score(truth, predicted, average="macro")), 4),
            "accuracy_sentence_in_first_window": round(sum(early_hits) / len(early_hits), 4) if early_hits else None,
            "accuracy_sentence_past_first_window": round(sum(late_hits) / len(late_hits), 4) if late_hits else None}


def pooled_predictions(model_dir: Path, test_docs: list[dict], max_length: int, stride: int) -> dict:
    """{pooling: predicted label names} of the saved windows model (same weights, same windows)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from jbert.core.artifacts import JbertSettings
    from jbert.core.normalize import normalize_text
    from jbert.core.windows import LongTextRule
    from jbert.train.saved_predictions import predict

    settings = JbertSettings.load(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    texts = [normalize_text(d["text"], settings.normalization) for d in test_docs]
    result = {}
    for pooling in ("mean", "max", "first"):
        logits = predict(model, tokenizer, texts, None, max_length, 64, "cpu", LongTextRule("windows", stride, pooling))
        result[pooling] = [model.config.id2label[int(i)] for i in logits.argmax(axis=-1)]
    return result


def serving_figures(model_dirs: dict, test_docs: list[dict], work: Path, repeats: int) -> dict:
    """Export each model (fp32), serve the test documents: texts/s, tokens/s, ONNX-vs-PyTorch agreement."""
    from jbert.export import ExportOptions, export_model
    from jbert.serve.runtime import OnnxClassifier

    texts = [d["text"] for d in test_docs]
    figures = {}
    for name, model_dir in model_dirs.items():
        export_dir = work / f"{name}-onnx"
        export_model(model_dir, export_dir, ExportOptions(show_progress=False))
        classifier = OnnxClassifier.from_export_dir(export_dir, num_threads=1)
        encodings = classifier.encode(texts)
        tokens = sum(sum(len(w.input_ids) for w in getattr(e, "windows", (e,))) for e in encodings)
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            results = classifier.predict(texts)
            best = min(best, time.perf_counter() - started)
        reference = [json.loads(line) for line in open(model_dir / "predictions_test.jsonl", encoding="utf-8")]
        figures[name] = {
            "texts_per_s": round(len(texts) / best, 1), "tokens_per_s": round(tokens / best),
            "tokens_per_text": round(tokens / len(texts), 1),
            "onnx_pytorch_label_agreement": sum(r["label"] == p["prediction"] for r, p in zip(results, reference)) / len(texts),
            "onnx_pytorch_max_score_diff": max(abs(r["score"] - p["score"]) for r, p in zip(results, reference)),
        }
    return figures


def bench_length(max_length: int, files: dict, test_docs: list[dict], args, work: Path) -> dict:
    """Truncation and windows at one max_length: accuracy per pooling, training seconds, serving figures.

    One windows model per --train-windows value: 0 trains on every window (each with its text's
    label), N on the first N windows of each text; every one is read whole at test time.
    """
    stride = max_length // 4
    runs = {"truncate": []} | {f"windows_train_{'all' if n == 0 else n}": ["--long_text", "windows", "--stride", str(stride),
                                                                          "--max_train_windows", str(n)]
                               for n in args.train_windows}
    # Document-level (multiple-instance) training: a text's pooled window logits carry the loss.
    runs |= {f"windows_document_{pooling}": ["--long_text", "windows", "--stride", str(stride), "--window_training",
                                             "document", "--window_pooling", pooling]
             for pooling in args.document_poolings}
    arms, model_dirs = {}, {}
    for name, extra in runs.items():
        output = work / f"{name}-{max_length}"
        argv = ["--from_scratch", args.size, "--train_file", files["train"], "--validation_file", files["validation"],
                "--test_file", files["test"], "--output_dir", str(output), "--seed", str(args.seed),
                "--max_length", str(max_length), "--baseline", "none", "--calibrate", "none", "--disable_tqdm", "true",
                "--num_train_epochs", str(args.epochs), *extra, *args.extra.split()]
        metrics, seconds = run_train(argv)
        arms[name] = {"train_seconds": round(seconds, 1), "best_step": metrics["best"]["step"],
                      "data": metrics["data"].get("windowed") or {"truncated": metrics["data"]["truncated_to_max_length"]}}
        model_dirs[name] = output
    late = late_documents(model_dirs["truncate"], test_docs, max_length)
    saved = [json.loads(line)["prediction"] for line in open(model_dirs["truncate"] / "predictions_test.jsonl", encoding="utf-8")]
    arms["truncate"].update(accuracy_by_place(saved, test_docs, late))
    for name in runs:
        if name != "truncate":
            for pooling, predicted in pooled_predictions(model_dirs[name], test_docs, max_length, stride).items():
                arms[name][pooling] = accuracy_by_place(predicted, test_docs, late)
    first_windows = next(name for name in runs if name != "truncate")
    serving = serving_figures({"truncate": model_dirs["truncate"], "windows": model_dirs[first_windows]}, test_docs,
                              work, args.repeats)
    windows, truncate = serving["windows"], serving["truncate"]
    best = max((arms[name][pooling]["test_accuracy"], f"{name} {pooling}") for name in runs if name != "truncate"
               for pooling in ("mean", "max", "first"))
    return {"stride": stride, "test_documents_with_sentence_past_first_window": sum(late), "arms": arms,
            "serving": serving, "served_windows_model": first_windows,
            "windows_vs_truncate": {"best_windows_arm": best[1],
                                    "accuracy_gain": round(best[0] - arms["truncate"]["test_accuracy"], 4),
                                    "texts_per_s_ratio": round(windows["texts_per_s"] / truncate["texts_per_s"], 3),
                                    "tokens_per_s_ratio": round(windows["tokens_per_s"] / truncate["tokens_per_s"], 3)}}


def main(argv: list[str] | None = None) -> None:
    """Parse the flags, build the documents, run each max_length, print (and with --json-out write) the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-lengths", default="128,512", help="comma-separated max_length values")
    parser.add_argument("--fillers", type=int, default=24, help="caption sentences around the deciding one")
    parser.add_argument("--train-docs", type=int, default=1200)
    parser.add_argument("--validation-docs", type=int, default=300)
    parser.add_argument("--test-docs", type=int, default=400)
    parser.add_argument("--size", default="tiny", choices=("tiny", "mini", "small"), help="--from_scratch size")
    parser.add_argument("--epochs", type=float, default=4)
    parser.add_argument("--train-windows", default="1,0", type=lambda v: [int(x) for x in v.split(",")],
                        help="windows models to train: --max_train_windows values, comma-separated (0: every window)")
    parser.add_argument("--document-poolings", default="mean", type=lambda v: [x for x in v.split(",") if x],
                        help="windows models trained per document (--window_training document) with these "
                             "--window_pooling values, comma-separated ('' for none)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--repeats", type=int, default=2, help="serving passes over the test documents (best kept)")
    parser.add_argument("--extra", default="", help="extra train.py flags")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    if not SHARED.is_dir():
        sys.exit(f"{SHARED} is absent: this benchmark needs the shared real data (see bench/quality.py)")
    import torch

    docs = documents(args.fillers, {"train": args.train_docs, "validation": args.validation_docs,
                                    "test": args.test_docs}, args.seed)
    result = {"machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "processor": platform.machine()},
              "data": {"documents": {split: len(rows) for split, rows in docs.items()}, "fillers": args.fillers,
                       "characters_per_document": round(sum(len(d["text"]) for d in docs["test"]) / len(docs["test"])),
                       "label": "JRTE rhr: is the deciding sentence a hotel reputation (1) or not (0)"},
              "size": args.size, "epochs": args.epochs, "seed": args.seed, "lengths": {}}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="jbert-long-text-") as work:
        work = Path(work)
        files = {split: write_csv(work / f"{split}.csv", [{"text": d["text"], "label": d["label"]} for d in rows])
                 for split, rows in docs.items()}
        for max_length in [int(v) for v in args.max_lengths.split(",")]:
            result["lengths"][str(max_length)] = bench_length(max_length, files, docs["test"], args, work)
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result, ensure_ascii=False, indent=2))
    write_json_out(args.json_out, "long_text", result, argv)


if __name__ == "__main__":
    main()
