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

    python bench/long_context.py                                 # tiny, 512/2048/8192 (a few minutes on 2 cores)
    python bench/long_context.py --json-out docs/data/long_context.json
    python bench/long_context.py --lengths 512,2048 --size mini --steps 3
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

ARCHITECTURES = ("modernbert", "bert")
VOCAB_SIZE = 8000


def _peak_rss_mib() -> float:
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


def main(argv: list[str] | None = None) -> int:
    """Run every (architecture, length) in its own process; print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", default="512,2048,8192")
    parser.add_argument("--size", default="tiny", choices=("tiny", "mini", "small"))
    parser.add_argument("--steps", type=int, default=2, help="timed steps per measurement (after one warm-up)")
    parser.add_argument("--one", nargs=2, metavar=("ARCHITECTURE", "LENGTH"), help=argparse.SUPPRESS)
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
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
