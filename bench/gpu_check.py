"""GPU proof kit: one command on one H100/H200 (no network) that proves the GPU paths; ONE JSON object out.

    python bench/gpu_check.py                      # GPU mode when CUDA is there, within --budget_s (540 s)
    python bench/gpu_check.py --wheels wheels/     # install the wheel folder first (bench/gpu_wheels.py built it)
    python bench/gpu_check.py --mode cpu           # the same sections at small shapes (CI runs this)

Sections, in order (each reports {"ok": ..., ...}; a failing or skipped one never hides the others):

    environment   versions, the device, its datasheet peak, which optional packages are missing
    throughput    jbert's loop at bert-base-japanese-v3 shape (12 x 768, vocab 32768, random weights):
                  fp32 vs bf16 (eager attention) vs bf16 + SDPA, and the Trainer at its best
                  (group_by_length, bf16, SDPA); samples/s, real tokens/s, padding share, MFU
    zero2, zero3  accelerate launch with the shipped accelerate_configs/deepspeed_zero{2,3}.yaml on one
                  process: converges on data/quickstart, then a second run resumes from a mid-run
                  checkpoint and must end at the same validation figures
    export        the GPU-trained ZeRO-2 model (else the throughput model) exported with jbert's
                  export (Optimum + onnxruntime on CPU) and its parity with PyTorch

No MeCab dictionary is needed: the kit trains a WordPiece vocabulary without word splitting (every
CJK character a word, tokenizers' BertPreTokenizer) on the quickstart texts. Texts for the
throughput section are quickstart sentences joined to lengths spread like real reviews.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from json_out import add_json_out_argument, write_json_out  # bench/ is sys.path[0] when run as a script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
QUICKSTART = REPO / "data" / "quickstart"
SECTIONS = ("environment", "throughput", "zero2", "zero3", "export")
OPTIONAL_MODULES = ("datasets", "sklearn", "scipy", "matplotlib", "deepspeed", "optimum", "fugashi")
# bert-base-japanese-v3's shape (tohoku-nlp): 12 layers x 768, 12 heads, FFN 3072, vocabulary 32768.
BASE_SHAPE = dict(num_hidden_layers=12, hidden_size=768, num_attention_heads=12, intermediate_size=3072,
                  vocab_size=32768)
SMALL_SHAPE = dict(num_hidden_layers=2, hidden_size=64, num_attention_heads=2, intermediate_size=128, vocab_size=2048)
MODES = {
    # texts: throughput training texts (one epoch each); zero_epochs: quickstart epochs per ZeRO run
    "gpu": dict(shape=BASE_SHAPE, texts=8192, held_out=256, max_length=128, batch_size=32, zero_epochs=8,
                precision="bf16"),
    "cpu": dict(shape=SMALL_SHAPE, texts=96, held_out=32, max_length=32, batch_size=16, zero_epochs=8, precision="no"),
}
THROUGHPUT_CONTENDERS = {  # name: (runner, mixed precision, attention)
    "jbert_fp32": ("jbert", "no", "eager"),
    "jbert_bf16": ("jbert", "bf16", "eager"),
    "jbert_bf16_sdpa": ("jbert", "bf16", "sdpa"),
    "trainer_best": ("trainer", "bf16", "sdpa"),  # group_by_length=True, bf16=True, SDPA
}


def environment(mode: str) -> dict:
    """Versions, the device and its peak, the optional packages missing here."""
    import accelerate
    import torch
    import transformers

    from jbert.train import hardware

    cuda = torch.cuda.is_available()
    name = torch.cuda.get_device_name(0) if cuda else hardware.cpu_name()
    peak = hardware.gpu_peak_tflops(name, torch.bfloat16, False) if cuda else None
    return {"ok": True, "mode": mode, "python": sys.version.split()[0], "torch": torch.__version__,
            "cuda": torch.version.cuda, "transformers": transformers.__version__, "accelerate": accelerate.__version__,
            "device": name, "device_count": torch.cuda.device_count() if cuda else 0,
            "bf16_peak_tflops_datasheet": peak, "cpu_threads": torch.get_num_threads(),
            "missing_modules": [m for m in OPTIONAL_MODULES if importlib.util.find_spec(m) is None]}


def build_tokenizer(directory: Path, max_length: int) -> Path:
    """A BERT WordPiece tokenizer without word splitting (no MeCab), trained on the quickstart texts."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import BertTokenizerFast

    texts = [row["text"] for name in ("train.csv", "validation.csv", "test.csv") for row in read_rows(QUICKSTART / name)]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=False)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=2000, special_tokens=specials))
    fast = BertTokenizerFast(tokenizer_object=tokenizer, model_max_length=max_length, unk_token="[UNK]",
                             sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]")
    fast.save_pretrained(directory)
    return directory


def read_rows(path: Path) -> list[dict]:
    """The rows of a CSV file."""
    import csv

    with open(path, encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def synthetic_texts(count: int, max_chars: int, seed: int) -> list[dict]:
    """`count` rows of quickstart sentences joined to random lengths; the label is the first sentence's."""
    rows = read_rows(QUICKSTART / "train.csv")
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        first = rng.choice(rows)
        text, target = first["text"], rng.randint(10, max_chars)
        while len(text) < target:
            text += rng.choice(rows)["text"]
        out.append({"text": text[:target], "label": first["label"]})
    return out


def save_init_model(directory: Path, tokenizer_dir: Path, shape: dict, labels: list[str], max_length: int) -> Path:
    """Random weights of `shape` with this run's labels, beside the tokenizer, loadable by both contenders."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, set_seed

    from jbert.train.modeling import label_config

    set_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(pad_token_id=tokenizer.pad_token_id, max_position_embeddings=max(512, max_length),
                        **shape, **label_config(labels, "single_label_classification"))
    BertForSequenceClassification(config).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def throughput(work: Path, settings: dict, tokenizer_dir: Path, names: list[str]) -> dict:
    """The loop at the mode's shape: fp32, bf16, bf16 + SDPA, and the Trainer at its best; ratios."""
    from contenders import run_jbert, run_trainer, write_csv

    held_out = settings["held_out"]
    rows = synthetic_texts(settings["texts"] + 2 * held_out, settings["max_length"] * 2, seed=1)
    files = {"test": write_csv(work / "tp-test.csv", rows[:held_out]),
             "valid": write_csv(work / "tp-valid.csv", rows[held_out:2 * held_out]),
             "train": write_csv(work / "tp-train.csv", rows[2 * held_out:])}
    labels = sorted({row["label"] for row in rows})
    init_dir = save_init_model(work / "tp-init", tokenizer_dir, settings["shape"], labels, settings["max_length"])
    common = dict(batch_size=settings["batch_size"], learning_rate=5e-5, epochs=1, max_length=settings["max_length"])
    results = {}
    for name in names:
        runner, precision, attention = THROUGHPUT_CONTENDERS[name]
        try:
            with contextlib.redirect_stdout(sys.stderr):  # the Trainer prints its logs; stdout is the JSON alone
                if runner == "jbert":
                    results[name] = run_jbert(files, init_dir, work / f"tp-{name}", 0, mixed_precision=precision,
                                              attention=attention, **common)
                else:
                    results[name] = run_trainer(files, init_dir, work / f"tp-{name}", 0, group_by_length=True,
                                                bf16=precision == "bf16", attention=attention, **common)
        except Exception as err:  # one contender's failure (e.g. no bf16 on this GPU) must not hide the others
            results[name] = {"error": f"{type(err).__name__}: {err}"}
    speed = {name: r.get("samples_per_s") for name, r in results.items()}
    ratio = lambda a, b: round(speed[a] / speed[b], 2) if speed.get(a) and speed.get(b) else None  # noqa: E731
    return {"ok": all("error" not in r for r in results.values()), "shape": settings["shape"],
            "max_length": settings["max_length"], "train_texts": settings["texts"], "contenders": results,
            "ratios": {"bf16_over_fp32": ratio("jbert_bf16", "jbert_fp32"),
                       "sdpa_over_eager_bf16": ratio("jbert_bf16_sdpa", "jbert_bf16"),
                       "jbert_bf16_sdpa_over_trainer_best": ratio("jbert_bf16_sdpa", "trainer_best")},
            "model_dir": next((str(work / f"tp-{n}") for n in reversed(names) if n.startswith("jbert") and
                               "error" not in results[n]), None)}


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def zero_command(stage: int, init_dir: Path, output_dir: Path, settings: dict, resume: Path | None = None) -> list[str]:
    """`accelerate launch` of train.py with the shipped ZeRO config on one process, on the quickstart data."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "accelerate_configs" / f"deepspeed_zero{stage}.yaml"), "--num_processes", "1",
               "--main_process_port", str(free_port()), str(REPO / "train.py"),
               "--model_name_or_path", str(init_dir), "--train_file", str(QUICKSTART / "train.csv"),
               "--validation_file", str(QUICKSTART / "validation.csv"), "--test_file", str(QUICKSTART / "test.csv"),
               "--max_length", "64", "--per_device_train_batch_size", "16", "--learning_rate", "5e-4",
               "--warmup_ratio", "0.1", "--num_train_epochs", str(settings["zero_epochs"]), "--seed", "42",
               "--mixed_precision", settings["precision"], "--output_dir", str(output_dir), "--disable_tqdm",
               "--checkpointing_steps", "epoch", "--save_total_limit", "100", "--baseline", "none", "--calibrate", "none"]
    return command + (["--resume_from_checkpoint", str(resume)] if resume else [])


def last_evaluation(metrics: dict) -> dict:
    """The run's last evaluation record (its final weights; "validation" is the best one, maybe from before a resume)."""
    return [record for record in metrics["history"] if "eval_loss" in record][-1]


def judge_zero(first: dict, resumed: dict, min_accuracy: float) -> dict:
    """Converged (best validation accuracy at least `min_accuracy`) and the resumed run's last evaluation
    equals the first run's (same accuracy, loss within 1e-2): training after the resume was the same."""
    accuracy = first["validation"]["accuracy"]
    end, again = last_evaluation(first), last_evaluation(resumed)
    loss_gap = abs(end["eval_loss"] - again["eval_loss"])
    matches = end["step"] == again["step"] and end["eval_accuracy"] == again["eval_accuracy"] and loss_gap < 1e-2
    return {"validation_accuracy": accuracy, "last_step": end["step"], "last_accuracy": end["eval_accuracy"],
            "resumed_last_accuracy": again["eval_accuracy"], "last_loss_gap_after_resume": float(f"{loss_gap:.3g}"),
            "converged": accuracy >= min_accuracy, "resume_matches": matches, "ok": accuracy >= min_accuracy and matches}


def zero(stage: int, work: Path, settings: dict, tokenizer_dir: Path, timeout: float) -> dict:
    """ZeRO-`stage` on one process: train to the end with a checkpoint per epoch, then resume from the middle one."""
    labels = sorted({row["label"] for row in read_rows(QUICKSTART / "train.csv")})
    init_dir = work / "quickstart-init"
    if not init_dir.is_dir():
        save_init_model(init_dir, tokenizer_dir, dict(SMALL_SHAPE, num_hidden_layers=2, hidden_size=128,
                                                      intermediate_size=512), labels, 64)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    env.pop("WORLD_SIZE", None)
    import torch

    if not torch.cuda.is_available():
        env["DS_ACCELERATOR"] = "cpu"
    output_dir = work / f"zero{stage}"
    logs = {}

    def launch(name: str, command: list[str]) -> None:
        started = time.perf_counter()
        log = work / f"zero{stage}-{name}.log"
        with open(log, "w", encoding="utf-8") as handle:
            done = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout)
        logs[name] = {"seconds": round(time.perf_counter() - started, 1), "returncode": done.returncode, "log": str(log)}
        if done.returncode != 0:
            # The launcher's own traceback comes last; the training process's error is the line that names one.
            lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
            errors = [line for line in lines if "Error" in line and "ChildFailedError" not in line][-3:]
            raise RuntimeError(f"{name} run exited {done.returncode}: {' | '.join(errors) or lines[-5:]} (log: {log})")

    launch("first", zero_command(stage, init_dir, output_dir, settings))
    checkpoints = sorted((work / f"zero{stage}.checkpoints").glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
    middle = checkpoints[len(checkpoints) // 2 - 1]
    launch("resumed", zero_command(stage, init_dir, work / f"zero{stage}-resumed", settings, resume=middle))
    first = json.loads((output_dir / "metrics.json").read_text(encoding="utf-8"))
    resumed = json.loads((work / f"zero{stage}-resumed" / "metrics.json").read_text(encoding="utf-8"))
    return {**judge_zero(first, resumed, min_accuracy=0.8), "resumed_from": middle.name, "runs": logs,
            "hardware": first.get("hardware"), "model_dir": str(output_dir)}


def export_check(work: Path, model_dir: Path, export_site: Path | None) -> dict:
    """`python export.py` of a trained model directory (a fresh process) and the fp32 graph's parity with PyTorch.

    optimum-onnx 0.1.0 (jbert's export) needs transformers < 4.58: where this Python has 5.x (the GPU
    image), the export runs on the pinned transformers the wheel folder put in `export_site`,
    which also proves that a directory saved by 5.x loads in the pinned stack.
    """
    import transformers

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if int(transformers.__version__.split(".")[0]) >= 5:
        if export_site is None or not export_site.is_dir():
            return {"ok": False, "skipped": f"transformers {transformers.__version__} here; jbert's export (optimum-onnx "
                    "0.1.0) needs the pinned 4.57: run with --wheels (bench/gpu_wheels.py packs it)"}
        env["PYTHONPATH"] = os.pathsep.join([str(export_site), str(REPO)])  # not this process's own path
    export_dir = work / "export"
    with open(work / "export.log", "w", encoding="utf-8") as log:
        done = subprocess.run([sys.executable, str(REPO / "export.py"), str(model_dir), str(export_dir), "--quiet"],
                              cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, timeout=600)
    if done.returncode != 0:
        tail = (work / "export.log").read_text(encoding="utf-8", errors="replace").splitlines()[-5:]
        return {"ok": False, "error": f"export.py exited {done.returncode}: {' | '.join(tail)}"}
    manifest = json.loads((export_dir / "manifest.json").read_text(encoding="utf-8"))
    parity = manifest["models"]["fp32"]["parity"]
    return {"ok": bool(parity["passed"]), "model_dir": str(model_dir), "parity": parity,
            "export_versions": {k: manifest["versions"].get(k) for k in ("transformers", "optimum-onnx", "onnxruntime")}}


def run_sections(args) -> dict:
    """Every asked-for section within the budget; returns the one JSON object."""
    started = time.perf_counter()
    import torch

    mode = args.mode or ("gpu" if torch.cuda.is_available() else "cpu")
    settings = MODES[mode]
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="jbert-gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    report = {"benchmark": "gpu_check", "mode": mode, "budget_s": args.budget_s, "sections": {}}
    tokenizer_dir = None
    for section in args.sections:
        left = args.budget_s - (time.perf_counter() - started)
        if left < 20:
            report["sections"][section] = {"ok": False, "skipped": f"out of time ({args.budget_s} s budget)"}
            continue
        section_started = time.perf_counter()
        try:
            if section != "environment" and tokenizer_dir is None:
                tokenizer_dir = build_tokenizer(work / "tokenizer", max(settings["max_length"], 64))
            if section == "environment":
                result = environment(mode)
            elif section == "throughput":
                result = throughput(work, settings, tokenizer_dir, args.contenders)
            elif section in ("zero2", "zero3"):
                result = zero(int(section[-1]), work, settings, tokenizer_dir, timeout=left)
            else:
                sources = [report["sections"].get(name, {}).get("model_dir") for name in ("zero2", "throughput")]
                source = next((Path(s) for s in sources if s and (Path(s) / "metrics.json").is_file()), None)
                result = (export_check(work, source, args.export_site) if source else
                          {"ok": False, "skipped": "no trained model: run zero2 or throughput first"})
        except Exception as err:  # the JSON object must come out whatever one section does
            result = {"ok": False, "error": f"{type(err).__name__}: {err}",
                      "traceback_tail": traceback.format_exc()[-1200:]}
        result["seconds"] = round(time.perf_counter() - section_started, 1)
        report["sections"][section] = result
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["ok"] = all(s.get("ok") for s in report["sections"].values())
    return report


def install_wheels(folder: Path) -> dict:
    """pip install, offline, the folder's pinned packages that this Python lacks (never replaces the image's own).

    The export stack (folder/export: transformers 4.57 and what it pins) goes into folder/export-site
    instead, used only by the export section's own process.
    """
    from importlib import metadata

    wanted = [line.strip() for line in (folder / "requirements.txt").read_text(encoding="utf-8").splitlines() if line.strip()]
    missing = []
    for pin in wanted:
        try:
            metadata.version(pin.split("==")[0])
        except metadata.PackageNotFoundError:
            missing.append(pin)
    pip = [sys.executable, "-m", "pip", "install", "--no-index", "--no-deps"]
    if missing:
        subprocess.run([*pip, "--find-links", str(folder), *missing], check=True, stdout=sys.stderr, stderr=sys.stderr)
    export_stack = folder / "export" / "requirements.txt"
    if export_stack.is_file():
        subprocess.run([*pip, "--find-links", str(folder / "export"), "--target", str(folder / "export-site"),
                        "--upgrade", "-r", str(export_stack)], check=True, stdout=sys.stderr, stderr=sys.stderr)
    return {"installed": missing, "already_present": len(wanted) - len(missing),
            "export_site": str(folder / "export-site") if export_stack.is_file() else None}


def main(argv=None) -> None:
    """Parse the flags, run the sections, print one JSON object (and keep it with --json-out)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=sorted(MODES), default=None, help="gpu or cpu (default: gpu when CUDA is there)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--contenders", nargs="+", choices=list(THROUGHPUT_CONTENDERS), default=list(THROUGHPUT_CONTENDERS))
    parser.add_argument("--budget_s", type=float, default=540.0, help="skip the sections that would start after this")
    parser.add_argument("--wheels", type=Path, default=None, help="a folder from bench/gpu_wheels.py to install first")
    parser.add_argument("--export_site", type=Path, default=None,
                        help="packages for the export's process under transformers 5.x (default: --wheels' export-site)")
    parser.add_argument("--work_dir", default=None, help="where runs write (default: a new temporary directory)")
    add_json_out_argument(parser)
    args = parser.parse_args(argv)
    # Libraries print to stdout (DeepSpeed's accelerator line, the Trainer's logs), some from C: the
    # file descriptor itself goes to stderr until the one JSON object is written.
    sys.stdout.flush()
    stdout = os.dup(1)
    os.dup2(2, 1)
    try:
        installed = install_wheels(args.wheels) if args.wheels else None
        if args.export_site is None and installed and installed["export_site"]:
            args.export_site = Path(installed["export_site"])
        report = run_sections(args)
        report["wheels"] = installed
    finally:
        sys.stdout.flush()
        os.dup2(stdout, 1)
        os.close(stdout)
    print(json.dumps(report, ensure_ascii=False), flush=True)
    write_json_out(args.json_out, "gpu_check", report, argv)


if __name__ == "__main__":
    main()
