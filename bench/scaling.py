"""Scaling overhead: the same training under 1 process, 2-process DDP (gloo), DeepSpeed ZeRO-2 and ZeRO-3.

Same data, same model shape, same global batch (1 x 16 and 2 x 8), same seed and steps, one run;
each mode is a real `accelerate launch` with the shipped config. Prints one JSON object: training
samples/s measured inside the loop (metrics.json, start-up excluded), the launch's wall time, the
final validation loss, and each mode's ratio against 1 process.

    python bench/scaling.py                       # data/quickstart, mini BERT from scratch, 2 epochs
    python bench/scaling.py --size tiny --epochs 1 --modes one_process,ddp
    python bench/scaling.py --runs 3           # best of 3 launches per mode (shared, noisy machines)

On a 2-core CPU no speed-up is expected (two processes share the two cores that one process already
uses); the figures show the overhead each mode adds. GPU figures: run the same script on a GPU box
with --gpu (multi_gpu.yaml instead of multi_cpu.yaml, no DS_ACCELERATOR=cpu).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent

# mode -> (accelerate config, processes)
MODES = {
    "one_process": ("cpu.yaml", 1),
    # One process restricted to one thread: the per-process budget the 2-process modes get (torchrun
    # sets OMP_NUM_THREADS=1), so the ratio against it isolates the communication overhead.
    "one_process_1thread": ("cpu.yaml", 1),
    "ddp": ("multi_cpu.yaml", 2),
    "zero2": ("deepspeed_zero2.yaml", 2),
    "zero3": ("deepspeed_zero3.yaml", 2),
}
GPU_CONFIGS = {"one_process": "single_gpu.yaml", "ddp": "multi_gpu.yaml"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1 for the rendezvous."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_mode(mode: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Launch one mode and read its throughput from the model directory it wrote."""
    config, processes = MODES[mode]
    if args.gpu:
        config = GPU_CONFIGS.get(mode, config)
    output_dir = workdir / mode
    workdir.mkdir(parents=True, exist_ok=True)
    train_args = [
        "--from_scratch", args.size, "--vocab_size", "2000", "--train_file", args.train_file,
        "--validation_file", args.validation_file, "--output_dir", str(output_dir), "--max_length", str(args.max_length),
        "--per_device_train_batch_size", str(args.global_batch // processes), "--per_device_eval_batch_size", "64",
        "--learning_rate", "5e-4", "--num_train_epochs", str(args.epochs), "--seed", "42", "--dropout", "0",
        "--disable_tqdm", "--logging_steps", "1000",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    if mode.startswith("zero") and not args.gpu:
        env["DS_ACCELERATOR"] = "cpu"
    if mode == "one_process_1thread":
        env["OMP_NUM_THREADS"] = "1"
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}",
               "--main_process_port", str(free_port()), "train.py", *train_args]
    started = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{mode} failed (exit {result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    metrics = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    return {
        "config": f"accelerate_configs/{config}", "processes": processes,
        "per_device_batch": args.global_batch // processes,
        "train_samples_per_second": round(metrics["train_samples_per_second"], 2),
        "train_seconds": round(metrics["train_seconds"], 2), "launch_wall_seconds": round(wall, 2),
        "steps": metrics["global_step"], "validation_loss": round(metrics["validation"]["loss"], 6),
    }


def main(argv=None) -> dict:
    """Run every requested mode in turn and print one JSON object."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train_file", default=str(REPO / "data" / "quickstart" / "train.csv"))
    parser.add_argument("--validation_file", default=str(REPO / "data" / "quickstart" / "validation.csv"))
    parser.add_argument("--size", default="mini", choices=("tiny", "mini", "small", "base"))
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max_length", type=int, default=64)
    parser.add_argument("--global_batch", type=int, default=16, help="examples per optimizer step in every mode")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    parser.add_argument("--gpu", action="store_true", help="use the GPU configs (single_gpu/multi_gpu) and GPU DeepSpeed")
    parser.add_argument("--runs", type=int, default=1, help="launches per mode; the fastest is reported")
    parser.add_argument("--timeout", type=int, default=1800)
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        parser.error(f"unknown modes {unknown}; choose from {list(MODES)}")
    results = {}
    with tempfile.TemporaryDirectory(prefix="jbert-scaling-") as workdir:
        for run in range(args.runs):
            for mode in modes:  # interleaved, so a burst of load elsewhere hits every mode alike
                result = run_mode(mode, args, Path(workdir) / f"run{run}")
                if mode not in results or result["train_samples_per_second"] > results[mode]["train_samples_per_second"]:
                    results[mode] = result
    for base_name in ("one_process", "one_process_1thread"):
        base = results.get(base_name)
        if base:
            for result in results.values():
                result[f"throughput_vs_{base_name}"] = round(
                    result["train_samples_per_second"] / base["train_samples_per_second"], 3)
    import torch

    report = {
        "benchmark": "scaling", "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores"
        + (f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"),
        "data": {"train_file": os.path.relpath(args.train_file, REPO), "validation_file": os.path.relpath(args.validation_file, REPO)},
        "model": f"BERT {args.size} from scratch", "max_length": args.max_length, "epochs": args.epochs,
        "global_batch": args.global_batch, "runs_per_mode": args.runs,
        "load_average_1min_at_end": round(os.getloadavg()[0], 2), "modes": results,
    }
    print(json.dumps(report, indent=2))
    write_json_out(args.json_out, "scaling", report, argv)
    return report


if __name__ == "__main__":
    main()
