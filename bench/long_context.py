"""Long context: training-step and forward memory and texts/s of ModernBERT against BERT at 512, 2,048 and 8,192 tokens.

`--from_scratch SIZE --architecture modernbert` takes --max_length up to 8,192 (RoPE, global
attention every third layer and 128-token local windows between). This measures what such lengths
cost on CPU with models of the same width built by jbert (`jbert.train.modeling.scratch_model_config`,
the tiny preset unless --size): per length and architecture, in a fresh process each (so peak
memory is that configuration's alone), one text of exactly that many tokens per batch:

    train   AdamW training steps (forward, backward, step): texts/s and tokens/s
    infer   forward passes without gradients: texts/s
    memory  the process's peak resident memory (MiB) above what it held with the model built

Prints one JSON object with the ModernBERT/BERT ratios per length.

--serving measures the exported side instead: one ModernBERT of the tiny preset's shape (random
weights, a Unigram tokenizer trained on Japanese reviews, jbert.json max_length 8,192) is exported by
export.py's code (fp32, dynamic axes, the fp32 parity gate), then per length, each in a fresh process,
jbert's runtime (OnnxClassifier.predict: normalise, fast tokenizer, ONNX; also with onnxruntime's
memory arena off) and the transformers pipeline("text-classification") on the PyTorch model classify
the same Japanese texts of exactly that many tokens, one text a call: texts/s and peak resident
memory above the loaded model, side by side.

    python bench/long_context.py                                 # tiny, 512/2048/8192 (a few minutes on 2 cores)
    python bench/long_context.py --json-out docs/data/long_context.json
    python bench/long_context.py --lengths 512,2048 --size mini --steps 3
    python bench/long_context.py --serving --json-out docs/data/long_context_serving.json   # 2-5 minutes
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("OMP_NUM_THREADS", "1")  # one thread: the machine is shared
os.environ.setdefault("MKL_NUM_THREADS", "1")
from json_out import add_json_out_argument, write_json_out  # noqa: E402  (bench/ is sys.path[0] as a script)

sys.path.insert(0, str(REPO / "bench"))  # builders/ when imported, not run

ARCHITECTURES = ("modernbert", "bert")
VOCAB_SIZE = 8000


def _peak_rss_mib() -> float:
    # VmHWM is this process's own high-water mark; ru_maxrss keeps the parent's across fork + exec on Linux,
    # which would charge a child with the memory of the parent that started it (--serving's parent holds torch).
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure_one(architecture: str, length: int, size: str, steps: int) -> dict:
    """Train and forward timings and peak memory of one (architecture, length), in this process."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from jbert.train.modeling import scratch_model_config

    torch.manual_seed(0)
    special = {"pad_token_id": 0, "cls_token_id": 2, "sep_token_id": 3}
    config = scratch_model_config(architecture, size, VOCAB_SIZE, special, length, dropout=0.0, num_labels=2)
    model = AutoModelForSequenceClassification.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    input_ids = torch.randint(5, VOCAB_SIZE, (1, length))
    input_ids[0, 0], input_ids[0, -1] = 2, 3
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": torch.tensor([1])}
    before = _peak_rss_mib()

    def train_step():
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    model.train()
    train_step()  # warm-up: allocator, optimizer state
    started = time.perf_counter()
    for _ in range(steps):
        train_step()
    train_seconds = (time.perf_counter() - started) / steps
    model.eval()
    with torch.no_grad():
        model(**batch)
        started = time.perf_counter()
        for _ in range(steps):
            model(**batch)
        infer_seconds = (time.perf_counter() - started) / steps
    return {"train_texts_per_s": round(1 / train_seconds, 3), "train_tokens_per_s": round(length / train_seconds),
            "infer_texts_per_s": round(1 / infer_seconds, 3),
            "peak_memory_mib_above_model": round(_peak_rss_mib() - before), "peak_memory_mib": round(_peak_rss_mib()),
            "parameters_millions": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


# --serving: texts per length (after one warm-up call), fewer where one forward pass takes seconds.
SERVING_TEXTS = {512: 16, 2048: 6, 8192: 3}
# jbert_no_arena: the same runtime with onnxruntime's CPU memory arena and memory patterns off (not a
# runtime option today): what the arena's rounding-up and pre-planned buffers cost at 8,192 tokens.
SERVING_ARMS = ("jbert", "jbert_no_arena", "pipeline")


def build_serving_export(work: Path, size: str) -> dict:
    """A tiny-preset ModernBERT model dir at max_length 8,192 and its fp32 export; what the export took."""
    import shutil

    from builders.encoder_families import FAMILIES, build_pretrained_dir

    from jbert.core.artifacts import EXAMPLES_FILE, JbertSettings
    from jbert.export import ExportOptions, export_model
    from jbert.train.modeling import SIZE_PRESETS

    shutil.rmtree(work, ignore_errors=True)
    texts = review_texts()
    shape = dict(SIZE_PRESETS[size], max_position_embeddings=8192, global_attn_every_n_layers=3, local_attention=128)
    model_dir = build_pretrained_dir(work / "model", "modernbert", texts, vocab_size=VOCAB_SIZE, reference_compile=False,
                                     **shape)
    JbertSettings(max_length=8192).save(model_dir)
    with open(model_dir / EXAMPLES_FILE, "w", encoding="utf-8") as handle:
        for text in texts[:16]:
            handle.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    started = time.perf_counter()
    manifest = export_model(model_dir, work / "export", ExportOptions(max_validation_texts=16, show_progress=False))
    assert FAMILIES["modernbert"].name == json.loads((model_dir / "config.json").read_text())["model_type"]
    return {"export_seconds": round(time.perf_counter() - started, 1), "max_length": manifest.max_length,
            "fp32_mb": round((work / "export" / "model.onnx").stat().st_size / 1e6, 1),
            "fp32_max_abs_diff_vs_pytorch": manifest.models["fp32"].parity["max_abs_diff"],
            "fp32_parity_passed": manifest.models["fp32"].parity["passed"]}


def review_texts() -> list[str]:
    """Real Japanese hotel reviews: ../shared/data's rhr when present, else the shipped quickstart reviews."""
    import csv

    rhr = REPO.parent / "shared" / "data" / "jrte_rhr.tsv"
    if rhr.is_file():
        with open(rhr, encoding="utf-8") as handle:
            return [parts[2] for parts in (line.rstrip("\n").split("\t") for line in handle) if len(parts) > 2][1:3000]
    texts = []
    for name in ("train", "validation", "test"):
        with open(REPO / "data" / "quickstart" / f"{name}.csv", encoding="utf-8", newline="") as handle:
            texts += [row["text"] for row in csv.DictReader(handle)]
    return texts


def texts_of_length(tokenizer, length: int, count: int) -> list[str]:
    """COUNT different texts of reviews run together, each cut where the tokenizer reaches LENGTH tokens."""
    reviews = review_texts()
    texts = []
    for start in range(count + 1):
        rotated = reviews[start * 7 % len(reviews):] + reviews
        text, used = "", 0
        while len(tokenizer(text)["input_ids"]) < length + 8:  # grow in steps of 200 reviews, then cut
            text += "".join(rotated[used:used + 200])
            used += 200
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        texts.append(text[:offsets[length - 3][1]])  # length - 2 pieces + the two special tokens
    return texts


def serve_one(arm: str, length: int, work: Path) -> dict:
    """Texts/s and peak memory of one arm ("jbert" or "pipeline") at LENGTH tokens, in this process.

    The jbert arm imports no torch or transformers (as a serving install), so its memory is the runtime's own.
    """
    texts = json.loads((work / f"texts-{length}.json").read_text(encoding="utf-8"))
    if arm.startswith("jbert"):
        from jbert.serve.runtime import OnnxClassifier

        classifier = OnnxClassifier.from_export_dir(work / "export", model="fp32", num_threads=1)
        if arm == "jbert_no_arena":
            import onnxruntime

            from jbert.serve.runtime.session import make_session_options

            options = make_session_options(1)
            options.enable_cpu_mem_arena = options.enable_mem_pattern = False
            classifier.session = onnxruntime.InferenceSession(str(work / "export" / "model.onnx"), options,
                                                              providers=["CPUExecutionProvider"])
        tokens = [len(e.input_ids) for e in classifier.encode(texts)]
        run = lambda text: classifier.predict([text], batch_size=1)[0]["label"]  # noqa: E731
    else:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

        torch.set_num_threads(1)
        tokenizer = AutoTokenizer.from_pretrained(work / "model")
        model = AutoModelForSequenceClassification.from_pretrained(work / "model").eval()
        pipe = pipeline("text-classification", model=model, tokenizer=tokenizer, device="cpu")
        tokens = [len(tokenizer(t, truncation=True, max_length=8192)["input_ids"]) for t in texts]
        run = lambda text: pipe([text], truncation=True, max_length=8192, batch_size=1)[0]["label"]  # noqa: E731
    before = _peak_rss_mib()
    run(texts[0])  # warm-up: first calls allocate buffers
    started = time.perf_counter()
    labels = [run(text) for text in texts[1:]]
    seconds = time.perf_counter() - started
    return {"texts_per_s": round(len(labels) / seconds, 4), "tokens_per_text": sorted(set(tokens)),
            "peak_memory_mib_above_model": round(_peak_rss_mib() - before), "peak_memory_mib": round(_peak_rss_mib()),
            "labels": labels}


def main_serving(args) -> dict:
    """--serving: export once, then each (length, arm) in a fresh process; the report's object."""
    work = Path(args.work_dir)
    print("[bench] building and exporting a ModernBERT at max_length 8192", file=sys.stderr, flush=True)
    export = build_serving_export(work, args.size)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(work / "model")
    results: dict[str, dict] = {}
    for length in [int(length) for length in args.lengths.split(",")]:
        texts = texts_of_length(tokenizer, length, SERVING_TEXTS[length])
        (work / f"texts-{length}.json").write_text(json.dumps(texts, ensure_ascii=False), encoding="utf-8")
        row = {}
        for arm in SERVING_ARMS:
            command = [sys.executable, __file__, "--serve-one", arm, str(length), "--work-dir", str(work)]
            done = subprocess.run(command, capture_output=True, text=True)
            row[arm] = (json.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else
                        {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]})
            print(f"[bench] {length} {arm}: {row[arm]}", file=sys.stderr, flush=True)
        pipe = row["pipeline"]
        for arm in ("jbert", "jbert_no_arena"):
            if "error" not in row[arm] and "error" not in pipe:
                row[f"{arm}_over_pipeline"] = {
                    "texts_per_s": round(row[arm]["texts_per_s"] / pipe["texts_per_s"], 2),
                    "peak_memory_above_model": round(row[arm]["peak_memory_mib_above_model"]
                                                     / max(pipe["peak_memory_mib_above_model"], 1), 2)}
        row["same_labels"] = len({json.dumps(row[arm].get("labels")) for arm in SERVING_ARMS}) == 1
        results[str(length)] = row
    return {"machine": {"cpus": os.cpu_count(), "threads": 1, "processor": platform.machine(),
                        "note": "shared 2-core machine: seconds are indicative, ratios count"},
            "model": f"ModernBERT, --from_scratch {args.size} shape (random weights), max_length 8192",
            "batch": "1 text a call, exactly LENGTH tokens", "export": export, "lengths": results}


def main(argv: list[str] | None = None) -> int:
    """Run every (architecture, length) in its own process; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--size", default="tiny", choices=("tiny", "mini", "small"))
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--one", nargs=2, metavar=("ARCHITECTURE", "LENGTH"), help=argparse.SUPPRESS)
    parser.add_argument("--serving", action="store_true",
                        help="measure the ONNX export served by jbert's runtime against the transformers pipeline")
    parser.add_argument("--work-dir", default="/tmp/jbert-long-context", help="--serving: where the model and export go")
    parser.add_argument("--serve-one", nargs=2, metavar=("ARM", "LENGTH"), help=argparse.SUPPRESS)
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    if args.serve_one:
        print(json.dumps(serve_one(args.serve_one[0], int(args.serve_one[1]), Path(args.work_dir)), ensure_ascii=False))
        return 0
    if args.serving:
        result = main_serving(args)
        print(json.dumps(result, ensure_ascii=False))
        write_json_out(args.json_out, "long_context", result)
        return 0
    if args.one:
        print(json.dumps(measure_one(args.one[0], int(args.one[1]), args.size, args.steps)))
        return 0
    lengths = [int(length) for length in args.lengths.split(",")]
    results: dict[str, dict] = {}
    for length in lengths:
        row = {}
        for architecture in ARCHITECTURES:
            command = [sys.executable, __file__, "--one", architecture, str(length), "--size", args.size,
                       "--steps", str(args.steps)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                row[architecture] = {"error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
            else:
                row[architecture] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"[bench] {length} {architecture}: {row[architecture]}", file=sys.stderr, flush=True)
        modern, bert = row.get("modernbert", {}), row.get("bert", {})
        if "error" not in modern and "error" not in bert:
            row["modernbert_over_bert"] = {
                "train_texts_per_s": round(modern["train_texts_per_s"] / bert["train_texts_per_s"], 2),
                "infer_texts_per_s": round(modern["infer_texts_per_s"] / bert["infer_texts_per_s"], 2),
                "peak_memory_above_model": round(modern["peak_memory_mib_above_model"]
                                                 / max(bert["peak_memory_mib_above_model"], 1), 2),
            }
        results[str(length)] = row
    result = {
        "machine": {"cpus": os.cpu_count(), "torch_threads": int(os.environ["OMP_NUM_THREADS"]),
                    "processor": platform.machine(), "note": "shared 2-core machine: seconds are indicative, ratios count"},
        "size": args.size, "batch": "1 text of exactly LENGTH tokens", "steps": args.steps, "lengths": results,
    }
    print(json.dumps(result, ensure_ascii=False))
    write_json_out(args.json_out, "long_context", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
