"""Shared test fixtures and helpers: every name more than one test file (or bench/fault_drills.py) uses.

Tiny Japanese tokenizers and tiny BERT model directories are built in seconds: nothing is downloaded,
the vocabulary is written here and the model is randomly initialised. Test files import the plain
functions and constants with `from conftest import ...` and use the fixtures by name; no test file
imports another (tests/test_layout.py checks it).

Sections: tiny tokenizer and model; Hypothesis profiles; sample texts; data-stage rows and files;
topic training data and runs; the masked-LM task; multi-process launches; training under faults.
"""

from __future__ import annotations

import csv
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

# Tiny models gain nothing from several threads, and OpenMP threads spinning against each other
# (or against a second training process in the multi-process tests) slow them down many times.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import pytest  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

if TYPE_CHECKING:
    from jbert.data.prepare import PreparedData
    from jbert.train.config import TrainConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

# ------------------------------------------------------------------------------ tiny tokenizer and model
# Words MeCab (unidic-lite) produces for the fixture sentences, plus single characters so that
# WordPiece can spell out anything else.
TINY_VOCAB_WORDS = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "この", "商品", "は", "とても", "良い", "悪い", "です", "。", "、", "最高", "最悪", "普通",
    "料理", "美味しい", "まずい", "ホテル", "部屋", "が", "の", "を", "に", "で", "た", "て", "し",
    "##い", "##な", "##る", "##た", "##し", "犬", "猫", "走る", "寝る", "今日", "天気", "雨", "晴れ",
]
TINY_VOCAB_CHARS = list("あいうえおかきくけこさしすせそたちつてとなにぬねのはひふへほまみむめもやゆよらりるれろわをん"
                        "アイウエオカキクケコサシスセソタチツテトナニヌネノハヒフヘホマミムメモヤユヨラリルレロワヲンー"
                        "日本語文字良悪最高低品質味店員対応速遅安値段")


def write_tiny_japanese_tokenizer(directory: Path, max_length: int = 64):
    """Write and return a BertJapaneseTokenizer (MeCab unidic-lite + WordPiece) with a tiny vocab."""
    from jbert.tokenization.wordpiece import save_bert_japanese_tokenizer

    vocab = list(dict.fromkeys(TINY_VOCAB_WORDS + TINY_VOCAB_CHARS + ["##" + c for c in TINY_VOCAB_CHARS]))
    return save_bert_japanese_tokenizer(vocab, directory, {"mecab_dic": "unidic_lite"}, max_length)


def make_tiny_model_dir(
    directory: Path,
    problem_type: str = "single_label_classification",
    labels=("negative", "neutral", "positive"),
    text_pair: bool = False,
    seed: int = 0,
) -> Path:
    """Write a tiny random BERT classifier directory in the layout training produces."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    from jbert.core.artifacts import EXAMPLES_FILE, JbertSettings

    directory = Path(directory)
    tokenizer = write_tiny_japanese_tokenizer(directory)
    num_labels = 1 if problem_type == "regression" else len(labels)
    config = BertConfig(
        vocab_size=len(tokenizer.vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=num_labels, problem_type=problem_type,
    )
    if problem_type != "regression":
        config.id2label = dict(enumerate(labels))
        config.label2id = {name: i for i, name in enumerate(labels)}
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    JbertSettings(
        max_length=64, problem_type=problem_type, text_pair_column="text_pair" if text_pair else None
    ).save(directory)
    examples = [
        {"text": "この商品はとても良いです。", "label": labels[-1] if num_labels > 1 else 4.5},
        {"text": "最悪の料理でした。", "label": labels[0] if num_labels > 1 else 0.5},
        {"text": "普通のホテルです", "label": labels[min(1, len(labels) - 1)] if num_labels > 1 else 2.5},
        {"text": "今日は雨", "label": labels[0] if num_labels > 1 else 1.0},
    ]
    if text_pair:
        for example in examples:
            example["text_pair"] = "今日の天気は晴れです。"
    with open(directory / EXAMPLES_FILE, "w", encoding="utf-8") as handle:
        for example in examples:
            handle.write(json.dumps(example, ensure_ascii=False) + "\n")
    return directory


_EXPORTS: dict[tuple, tuple[Path, Path]] = {}


def cached_export(tmp_path_factory, problem_type: str = "single_label_classification", text_pair: bool = False,
                  labels=("negative", "neutral", "positive")) -> tuple[Path, Path]:
    """(model_dir, export_dir) of a tiny model exported by export.py's code (fp32 + avx2 int8),
    once per test session and shared by the runtime, scoring and serving tests."""
    from jbert.export import ExportOptions, export_model

    key = (problem_type, text_pair, tuple(labels))
    if key not in _EXPORTS:
        root = tmp_path_factory.mktemp(f"export-{problem_type}-{'pair' if text_pair else 'single'}")
        model_dir = make_tiny_model_dir(root / "model", problem_type=problem_type, labels=labels, text_pair=text_pair)
        export_model(model_dir, root / "export", ExportOptions(quantize="avx2", show_progress=False))
        _EXPORTS[key] = (model_dir, root / "export")
    return _EXPORTS[key]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """Export directory of the tiny single-label model."""
    return cached_export(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def classifier(export_dir):
    """The runtime on that export's fp32 model, one thread."""
    from jbert.serve.runtime import OnnxClassifier

    return OnnxClassifier.from_export_dir(export_dir, model="fp32", num_threads=1)


@pytest.fixture
def tiny_tokenizer_dir(tmp_path):
    """A directory holding a tiny BertJapaneseTokenizer."""
    directory = tmp_path / "tokenizer"
    write_tiny_japanese_tokenizer(directory)
    return directory


@pytest.fixture
def tiny_model_dir(tmp_path):
    """A tiny single-label (3 classes) BERT model directory."""
    return make_tiny_model_dir(tmp_path / "model")


def pytest_configure(config):
    """Register the markers the test files use."""
    config.addinivalue_line("markers", "multiprocess: launches several real training processes (minutes)")
    config.addinivalue_line("markers", "shared_data: needs ../shared/data (skipped when absent)")


# ------------------------------------------------------------------------------ Hypothesis profiles
# Hypothesis settings shared by the property tests (tests/test_properties_*.py).
#
# Two profiles, chosen with HYPOTHESIS_PROFILE:
#
#     ci        (default) a bounded number of cases per test, so the property tests stay well under
#               ~90 s on a 2-core CI machine; derandomized (the same cases every run), so CI's verdict
#               is about the change, not about which random cases one run happened to draw;
#     thorough  many times more cases, drawn anew each run (this is where new bugs are found), for a
#               run by hand or a nightly job:
#               HYPOTHESIS_PROFILE=thorough python -m pytest -q tests/test_properties_*.py
#
# Tests size their budgets with `examples(n)` (n cases in ci), so one switch scales all of them.
# Deadlines are off in both: MeCab and transformers' first calls are slow to warm up, and a timing
# failure on a shared machine would say nothing about correctness.

HYPOTHESIS_PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
# How many times the ci budget the thorough profile runs.
THOROUGH_FACTOR = 25

_HYPOTHESIS_COMMON = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
                          print_blob=True)
settings.register_profile("ci", derandomize=True, **_HYPOTHESIS_COMMON)
settings.register_profile("thorough", **_HYPOTHESIS_COMMON)
settings.load_profile(HYPOTHESIS_PROFILE)


def examples(ci_count: int) -> int:
    """Number of cases a property test runs: `ci_count` in the ci profile, THOROUGH_FACTOR times that in thorough."""
    return ci_count * THOROUGH_FACTOR if HYPOTHESIS_PROFILE == "thorough" else ci_count


# ------------------------------------------------------------------------------ sample texts
# What the runtime, scoring and serving tests send to the tiny exported model: words of the tiny
# vocabulary, mixed lengths; PAIRS are second sentences for the text-pair model.
TEXTS = ["この商品はとても良いです。", "最悪の料理でした。", "普通のホテルです", "今日は雨", "犬が走る", "猫"]
PAIRS = ["今日の天気は晴れです。", "料理は美味しい", "部屋が悪い", "雨", "猫が寝る", "犬"]


# ------------------------------------------------------------------------------ data-stage rows and files
# Rows, configs and file writers of the data-stage tests (test_data.py, test_data_files.py).
ROWS = [
    {"text": "この商品はとても良いです。", "label": "positive"},
    {"text": "最悪の料理でした。", "label": "negative"},
    {"text": "普通のホテルです", "label": "neutral"},
    {"text": "料理が美味しい", "label": "positive"},
    {"text": "部屋が悪い", "label": "negative"},
    {"text": "今日は雨", "label": "neutral"},
]


def data_config(tmp_path: Path, **overrides) -> TrainConfig:
    """A TrainConfig for the data stage (model options do not matter here)."""
    from jbert.train.config import TrainConfig

    values = {"from_scratch": "tiny", "output_dir": str(tmp_path / "model"), "validation_split": 0.5}
    values.update(overrides)
    return TrainConfig(**values)


def write_csv(path: Path, rows: list[dict], encoding: str = "utf-8", delimiter: str = ",") -> Path:
    """Write rows as a delimited file ("\\n" line ends) whose columns are every key of any row, in order."""
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    """Write rows as JSON Lines (UTF-8, Japanese unescaped)."""
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def decoded(data: PreparedData, split: str = "train") -> list[tuple]:
    """(text, label name) pairs of a prepared split, in order."""
    dataset = getattr(data, split)
    return [(row["text"], data.label_names[row["labels"]]) for row in dataset]


# ------------------------------------------------------------------------------ topic training data and runs
# Training tests learn the topic of short sentences: separable, so a tiny BERT must reach high accuracy.
TOPICS = {
    "スポーツ": ["サッカー", "野球", "試合", "選手", "ゴール", "優勝", "監督", "ホームラン"],
    "料理": ["カレー", "味噌汁", "レシピ", "美味しい", "煮込み", "包丁", "醤油", "天ぷら"],
    "天気": ["雨", "晴れ", "台風", "気温", "雪", "曇り", "湿度", "天気予報"],
}
FILLERS = ["今日は", "昨日の", "とても", "やはり", "週末に", "みんなで", "少し", "本当に"]
ENDINGS = ["でした。", "です。", "が話題です", "について話した", "が楽しみ！", "だった"]


def topic_rows(n_per_class: int, seed: int) -> list[dict]:
    """Short Japanese sentences whose topic word decides the label (separable, but not identical)."""
    rng = random.Random(seed)
    rows = []
    for label, words in TOPICS.items():
        for _ in range(n_per_class):
            text = rng.choice(FILLERS) + rng.choice(words) + "と" + rng.choice(words) + rng.choice(ENDINGS)
            rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    return rows


def write_training_csv(path: Path, rows: list[dict]) -> Path:
    """Write rows as a CSV file (the csv module's default "\\r\\n" line ends) with the first row's columns."""
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def tiny_args(tmp_path: Path, **overrides) -> list[str]:
    """train.py arguments for a tiny from-scratch BERT on tmp_path's train.csv/valid.csv (None drops an option)."""
    options = {
        "from_scratch": "tiny", "vocab_size": 400, "train_file": str(tmp_path / "train.csv"),
        "validation_file": str(tmp_path / "valid.csv"), "output_dir": str(tmp_path / "model"),
        "max_length": 32, "per_device_train_batch_size": 16, "learning_rate": 1e-3, "num_train_epochs": 4,
        "seed": 7, "disable_tqdm": True, "logging_steps": 5,
    }
    options.update(overrides)
    argv = []
    for key, value in options.items():
        if value is None:
            continue
        argv += [f"--{key}", str(value)]
    return argv


@pytest.fixture
def topic_files(tmp_path):
    """tmp_path holding train.csv (48 rows per topic), valid.csv (10) and test.csv (8)."""
    write_training_csv(tmp_path / "train.csv", topic_rows(48, seed=1))
    write_training_csv(tmp_path / "valid.csv", topic_rows(10, seed=2))
    write_training_csv(tmp_path / "test.csv", topic_rows(8, seed=3))
    return tmp_path


def run_training(argv: list[str], on_step_end=None) -> dict:
    """Train in this process from train.py-style arguments; returns the run's metrics."""
    from jbert.train.config import parse_config
    from jbert.train.loop import train

    return train(parse_config(argv), on_step_end=on_step_end)


class SimulatedCrash(RuntimeError):
    """Raised from the step callback to interrupt a run like a kill would."""


def crash_after(step: int):
    """A step callback that ends the run right after optimizer step `step` (and its checkpoint)."""
    seen = []

    def on_step_end(global_step, accelerator):
        seen.append(global_step)
        if global_step == step:
            raise SimulatedCrash(f"simulated crash after step {global_step}")

    on_step_end.seen = seen
    return on_step_end


# ------------------------------------------------------------------------------ the masked-LM task


def unlabeled_file(directory: Path, n_per_class: int = 40, seed: int = 1) -> Path:
    """directory/unlabeled.txt: one topic sentence a line (no labels), ending in a blank line."""
    path = directory / "unlabeled.txt"
    path.write_text("\n".join(row["text"] for row in topic_rows(n_per_class, seed)) + "\n\n", encoding="utf-8")
    return path


def mlm_args(tmp_path: Path, **overrides) -> list[str]:
    """train.py arguments for --task mlm on a tiny from-scratch BERT over unlabeled_file(tmp_path)."""
    options = dict(task="mlm", train_file=str(unlabeled_file(tmp_path)), output_dir=str(tmp_path / "mlm"),
                   validation_split=0.2, max_length=32, per_device_train_batch_size=8, num_train_epochs=10,
                   learning_rate=2e-3, warmup_ratio=0.1)
    options.update(overrides)
    return _mlm_argv(options)


def _mlm_argv(options: dict) -> list[str]:
    base = {"from_scratch": "tiny", "vocab_size": 400, "seed": 7, "disable_tqdm": True, "logging_steps": 5}
    base.update(options)
    argv = []
    for key, value in base.items():
        if value is not None:
            argv += [f"--{key}", str(value)]
    return argv


# ------------------------------------------------------------------------------ multi-process launches
# `accelerate launch` with the shipped configs on 127.0.0.1 (CPU, gloo), each launch in its own process group.


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for --main_process_port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch_env(**extra) -> dict:
    """This process's environment for a launch: offline, unbuffered, no inherited WORLD_SIZE."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1", **extra)
    env.pop("WORLD_SIZE", None)
    return env


# train.py with a step callback that raises on every rank right after step N (and its checkpoint):
# for `start(..., script=...)` of the multi-process resume tests.
CRASHING_TRAIN = r'''
import sys
from jbert.core.errors import run_cli
from jbert.train.config import parse_config
from jbert.train.loop import train

crash_after = int(sys.argv.pop(1))


def on_step_end(step, accelerator):
    if step == crash_after:
        raise RuntimeError(f"simulated crash after step {step} on rank {accelerator.process_index}")


sys.exit(run_cli(lambda argv: train(parse_config(argv), on_step_end=on_step_end)))
'''


def start(config: str, args: list[str], port: int, *launch_args: str, env: dict | None = None,
          script: str = "train.py") -> subprocess.Popen:
    """`accelerate launch` in its own process group (so a timeout can end every rank)."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"accelerate_configs/{config}",
               "--main_process_port", str(port), *launch_args, script, *args]
    return subprocess.Popen(command, cwd=REPO_ROOT, env=env or launch_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen, timeout: int = 400) -> tuple[int, str]:
    """Wait for a launch; on timeout kill its whole process group. Returns (exit code, output)."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"launch timed out after {timeout}s:\n{output[-4000:]}")
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    return process.returncode, output


# ------------------------------------------------------------------------------ training under faults
# Real `python train.py` processes with tests/fault_shim on PYTHONPATH, whose sitecustomize stops the
# process at a named point (JBERT_FAULT) and tells the test (JBERT_FAULT_MARKER), which sends SIGKILL.
SHIM_DIR = Path(__file__).resolve().parent / "fault_shim"
FAULT_WAIT_SECONDS = 300  # bound on any one process reaching its fault point or finishing (2 busy cores)
# 144 rows / 24 = 6 steps per epoch, 2 epochs: evaluations at steps 6 and 12, checkpoints every 2 steps.
FAULT_RUN_OPTIONS = dict(num_train_epochs=2, checkpointing_steps=2, per_device_train_batch_size=24)
CHECKPOINT_FILES = ("model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "trainer_state.json")


def fault_env(**extra) -> dict:
    """This process's environment for a training process: offline, one thread, no inherited rank or fault."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS="1", **extra)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "JBERT_FAULT", "JBERT_FAULT_MARKER",
                 "JBERT_FAULT_FSIZE_IN_MODEL_DIR"):
        if name not in extra:
            env.pop(name, None)
    return env


def start_training(args: list[str], log: Path, **env) -> subprocess.Popen:
    """`python train.py ARGS` with the fault shim importable, output to a file (a pipe could fill and stall it)."""
    env = fault_env(PYTHONPATH=os.pathsep.join([str(SHIM_DIR), str(REPO_ROOT)]), **env)
    with open(log, "w", encoding="utf-8") as handle:
        return subprocess.Popen([sys.executable, "train.py", *args], cwd=REPO_ROOT, env=env, stdout=handle,
                                stderr=subprocess.STDOUT, start_new_session=True)


def kill_at(args: list[str], fault: str, work: Path) -> str:
    """Run until the shim reports `fault`, then SIGKILL the process; returns what it printed."""
    marker, log = work / "fault-reached", work / f"log-{fault.replace(':', '-').replace(',', '-')}.txt"
    marker.unlink(missing_ok=True)
    process = start_training(args, log, JBERT_FAULT=fault, JBERT_FAULT_MARKER=str(marker))
    deadline = time.monotonic() + FAULT_WAIT_SECONDS
    try:
        while not marker.exists():
            if process.poll() is not None:
                pytest.fail(f"training ended (exit {process.returncode}) before {fault}:\n{log.read_text()[-4000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"{fault} not reached in {FAULT_WAIT_SECONDS}s:\n{log.read_text()[-4000:]}")
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return log.read_text(encoding="utf-8")


def run_to_end(args: list[str], work: Path, name: str, **env) -> tuple[int, str]:
    """Run train.py to its end (bounded); returns (exit code, output)."""
    log = work / f"log-{name}.txt"
    process = start_training(args, log, **env)
    try:
        code = process.wait(timeout=FAULT_WAIT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"{name} did not finish in {FAULT_WAIT_SECONDS}s:\n{log.read_text()[-4000:]}")
    return code, log.read_text(encoding="utf-8")


def latest(checkpoint_root: Path) -> str | None:
    """The checkpoint `--resume_from_checkpoint latest` would take (its name)."""
    from jbert.train.checkpoint import resolve_resume_path

    path = resolve_resume_path("latest", checkpoint_root)
    return path.name if path else None


def assert_every_listed_checkpoint_loads(checkpoint_root: Path) -> list[str]:
    """Every checkpoint that resume could pick is complete: all files there, weights and state readable."""
    from safetensors.numpy import load_file

    from jbert.train.checkpoint import list_checkpoints

    names = []
    for path in list_checkpoints(checkpoint_root):
        for name in CHECKPOINT_FILES:
            assert (path / name).is_file(), f"{path} is listed but has no {name}"
        load_file(str(path / "model.safetensors"))  # a torn file raises here
        json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
        names.append(path.name)
    return names


def resumed_from(output: str) -> str:
    """The checkpoint (step_N) a run's output says it resumed from; exactly one such line."""
    found = re.findall(r"resuming from \S*?(step_\d+)", output)
    assert len(found) == 1, output[-3000:]
    return found[0]


def assert_same_run(model_dir: Path, reference_dir: Path) -> None:
    """Same weights (1e-6), same metrics and the same evaluation history as the reference run."""
    import numpy as np
    from safetensors.numpy import load_file

    expected, actual = load_file(str(reference_dir / "model.safetensors")), load_file(str(model_dir / "model.safetensors"))
    assert expected.keys() == actual.keys()
    for name in expected:
        np.testing.assert_allclose(actual[name], expected[name], atol=1e-6, err_msg=name)
    expected_metrics = json.loads((reference_dir / "metrics.json").read_text(encoding="utf-8"))
    metrics = json.loads((model_dir / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["global_step"] == expected_metrics["global_step"]
    assert metrics["best"] == pytest.approx(expected_metrics["best"])
    scalars = lambda values: {k: v for k, v in values.items() if isinstance(v, (int, float))}  # noqa: E731
    assert scalars(metrics["validation"]) == pytest.approx(scalars(expected_metrics["validation"]), abs=1e-6)
    assert metrics["validation"]["confusion_matrix"] == expected_metrics["validation"]["confusion_matrix"]
    evaluations = lambda values: [{k: v for k, v in h.items() if isinstance(v, (int, float))}  # noqa: E731
                                  for h in values["history"] if "eval_loss" in h]
    assert evaluations(metrics) == pytest.approx(evaluations(expected_metrics), abs=1e-6)


# ------------------------------------------------------------------------------ encoder families
# Tiny random-weight ModernBERT, DeBERTa-v3, XLM-R, RoBERTa and ELECTRA directories with Unigram tokenizers
# trained on the shipped Japanese reviews (bench/builders/encoder_families.py), shared by tests/test_encoders*.py.
QUICKSTART = REPO_ROOT / "data" / "quickstart"
FULL_PATH_FAMILIES = ["modernbert", "deberta-v2", "xlm-roberta"]  # train -> resume -> export -> int8 -> serve


def quickstart_texts(name: str) -> list[str]:
    """The text column of data/quickstart/NAME.csv."""
    with open(QUICKSTART / f"{name}.csv", encoding="utf-8", newline="") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def real_sentences(limit: int = 400) -> list[str]:
    """Real Japanese sentences: jrte rhr texts when ../shared/data is there, else the shipped test texts."""
    rhr = SHARED_DATA / "jrte_rhr.tsv"
    if rhr.is_file():
        with open(rhr, encoding="utf-8") as handle:
            return [line.split("\t")[2] for line in handle][:limit]
    return quickstart_texts("test")


def build_family_dir(directory: Path, family: str, **overrides) -> Path:
    """A tiny "pretrained" directory of FAMILY: random weights, a 600-piece Unigram tokenizer trained on
    the quickstart reviews; OVERRIDES change the config (max_position_embeddings=8192, ...)."""
    if str(REPO_ROOT / "bench") not in sys.path:
        sys.path.insert(0, str(REPO_ROOT / "bench"))
    from builders.encoder_families import build_pretrained_dir

    return build_pretrained_dir(directory, family, quickstart_texts("train"), vocab_size=600, **overrides)


@pytest.fixture(scope="module")
def base_dirs(tmp_path_factory):
    """family -> a tiny "pretrained" directory of that family, built on first use (once per test module)."""
    root = tmp_path_factory.mktemp("encoders")
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = build_family_dir(root / family, family)
        return built[family]

    return get
