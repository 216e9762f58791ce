"""Export a model directory to ONNX with Optimum, optimise, quantise, and check it against PyTorch.

    export_model("outputs/model", "outputs/onnx", optimize="O2", quantize="avx512_vnni")

Steps, all inside a temporary directory that is renamed to EXPORT_DIR only when every check passed:

1. fp32 export with optimum-onnx `main_export` (task text-classification, dynamic batch and
   sequence axes, inputs input_ids / attention_mask / token_type_ids, output logits).
2. optional graph optimisation (`ORTOptimizer`, O1-O3) -> model_optimized.onnx.
3. optional dynamic int8 quantisation (`ORTQuantizer`) -> model_quantized.onnx. It is always made
   from the plain fp32 graph: onnxruntime 1.31 cannot quantize an O2/O3-fused BERT graph (its
   shape inference loses the types behind the fused Attention/SkipLayerNormalization nodes).
4. the tokenizer is saved explicitly and reloaded, and must tokenize the validation texts exactly
   as the original did (Optimum swallows tokenizer save errors).
5. parity: PyTorch and onnxruntime run the same normalised, tokenised texts at batch size 1 and
   at a larger padded batch. fp32 and optimised graphs must stay within `atol` and predict the
   same labels; int8 must agree with fp32 on at least `min_agreement` of the texts.
6. manifest.json records the source, hashes, versions, every figure and the default model file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from jbert.core.artifacts import (
    EXAMPLES_FILE,
    SETTINGS_FILE,
    TRAINING_CONFIG_FILE,
    JbertSettings,
    Manifest,
    ManifestModelFile,
    atomic_directory,
    check_output_dir,
)
from jbert.core.errors import UserError, ValidationError, format_problems
from jbert.core.normalize import normalize_text

logger = logging.getLogger("jbert.export")

ONNX_TASK = "text-classification"
# O4 is Optimum's fp16 mixed-precision level: meant for GPUs, slower than fp32 on CPU
# onnxruntime and unable to meet an fp32 tolerance, so it is not offered.
OPTIMIZATION_LEVELS = ("O1", "O2", "O3")
QUANTIZATION_TARGETS = ("avx512_vnni", "avx512", "avx2", "arm64")
# Optimum's arm64 and avx512_vnni presets fix reduce_range=False: those instruction sets do not
# saturate, so 7-bit weights would only cost accuracy.
REDUCE_RANGE_TARGETS = ("avx2", "avx512")
# Which operator types dynamic int8 quantises. "all" is Optimum's preset (MatMul, Attention, Gather,
# ...): the embedding Gather tables become int8 too, the smallest file. "matmul" keeps the embedding
# tables (and every other non-matmul op) in fp32: on a briefly fine-tuned MiniLM, per channel, int8
# label agreement with fp32 went from 98.1 % to 98.8 % (README, "Choosing the int8 recipe"), for a 59 MB instead
# of a 23 MB file since the vocabulary-sized embedding table stays fp32. Attention is listed for
# fused graphs; int8 is made from the unfused graph, where every dense layer is a MatMul.
QUANTIZE_OPS = {"all": None, "matmul": ["MatMul", "Attention"]}
MIN_OPSET = 14  # scaled-dot-product attention of transformers' BERT exports from opset 14 on

FP32_FILE = "model.onnx"
OPTIMIZED_FILE = "model_optimized.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
MODEL_FILES = {"fp32": FP32_FILE, "optimized": OPTIMIZED_FILE, "int8": QUANTIZED_FILE}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model")

# Used only when the model directory has neither examples.jsonl nor a --validation_file, e.g. a
# plain Hugging Face directory: mixed Japanese/English so any vocabulary gets real tokens.
BUILTIN_TEXTS = (
    "この商品はとても良いです。",
    "最悪の料理でした。二度と行きません。",
    "部屋は広くて清潔で、スタッフの対応も丁寧でした。",
    "今日は雨が降っているので、家で本を読みます。",
    "ＡＢＣ株式会社は２０２４年に新しいサービスを発表した。",
    "The room was clean and the staff were friendly.",
    "駅から遠いが、値段の割には満足できるホテルだった。",
    "I would not recommend this product to anyone.",
)


def _option(default, help_text: str, **extra):
    """A dataclass field with its one-line help (shown by export.py --help)."""
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class ExportOptions:
    """Every option of an export: the single source for `export_model`'s keywords and the CLI flags."""

    optimize: Optional[str] = _option(None, f"Also write an onnxruntime graph-optimised copy, model_optimized.onnx: O1 (basic), O2 (plus BERT fusions), O3 (plus fast GELU approximation). Choices: {', '.join(OPTIMIZATION_LEVELS)}.", metavar="LEVEL")
    quantize: Optional[str] = _option(None, f"Also write a dynamic int8 copy, model_quantized.onnx, tuned for this CPU instruction set (made from the fp32 graph). Choices: {', '.join(QUANTIZATION_TARGETS)}.", metavar="TARGET")
    per_channel: bool = _option(False, "Quantize weights per output channel: more accurate int8 at a slightly larger file.")
    reduce_range: Optional[bool] = _option(None, "Quantize weights to 7 bits, which avoids overflow on AVX2/AVX512 CPUs without VNNI (avx2 and avx512 targets only).")
    quantize_ops: str = _option("all", f"Which ops int8 quantises: all (Optimum's preset, embeddings included: smallest file) or matmul (MatMul only; embeddings stay fp32: a larger file, closer to fp32 together with --per_channel). Choices: {', '.join(QUANTIZE_OPS)}.", metavar="OPS")
    validation_file: Optional[str] = _option(None, "CSV/TSV/JSONL file of texts (the model's text column, its pair column for pair models, and optionally the label column) to check parity on; default: examples.jsonl of the model directory.", metavar="FILE")
    atol: float = _option(1e-4, "Largest absolute logit difference allowed between PyTorch and the fp32/optimised ONNX graphs.")
    min_agreement: float = _option(0.99, "Smallest fraction of texts on which the int8 model must predict the same labels as the fp32 one.")
    opset: Optional[int] = _option(None, f"ONNX opset to export with (at least {MIN_OPSET}; default: Optimum's choice for the architecture).")
    overwrite: bool = _option(False, "Replace EXPORT_DIR if it exists and is not empty.")
    default_model: Optional[str] = _option(None, "Which file serving loads by default: fp32, optimized or int8 (default: int8 if made, else optimized, else fp32).", metavar="MODEL")
    validation_batch_size: int = _option(8, "The larger, padded batch size used in the parity check (batch size 1 is always checked too).")
    max_validation_texts: int = _option(256, "Use at most this many texts from the validation file (PyTorch runs them all, twice).")
    show_progress: bool = _option(True, "Print a line for each slow step and a progress bar for validation.", negative_flag="--quiet", negative_help="Print no step lines and no progress bar (errors are still printed).")

    def validate(self) -> None:
        """Check all options together; raise one UserError that lists every problem."""
        problems: list[str] = []
        if self.optimize is not None and self.optimize not in OPTIMIZATION_LEVELS:
            if self.optimize == "O4":
                problems.append("--optimize O4 is fp16 mixed precision for GPUs; onnxruntime on CPU runs it slower than fp32 and it cannot match fp32 logits. Use O2 or O3")
            else:
                problems.append(f"--optimize {self.optimize!r} is not a level; choose one of {', '.join(OPTIMIZATION_LEVELS)}")
        if self.quantize is not None and self.quantize not in QUANTIZATION_TARGETS:
            problems.append(f"--quantize {self.quantize!r} is not a known target; choose one of {', '.join(QUANTIZATION_TARGETS)} (avx512_vnni for recent Intel/AMD servers, avx2 for older x86, arm64 for ARM)")
        if self.quantize is None and self.per_channel:
            problems.append("--per_channel only applies to int8 quantisation; add --quantize TARGET")
        if self.quantize_ops not in QUANTIZE_OPS:
            problems.append(f"--quantize_ops {self.quantize_ops!r} is not a choice; choose one of {', '.join(QUANTIZE_OPS)} (matmul keeps the embeddings in fp32)")
        elif self.quantize is None and self.quantize_ops != "all":
            problems.append(f"--quantize_ops {self.quantize_ops} only applies to int8 quantisation; add --quantize TARGET")
        if self.reduce_range is not None:
            if self.quantize is None:
                problems.append("--reduce_range only applies to int8 quantisation; add --quantize avx2 or --quantize avx512")
            elif self.quantize in QUANTIZATION_TARGETS and self.quantize not in REDUCE_RANGE_TARGETS and self.reduce_range:
                problems.append(f"--reduce_range does not apply to --quantize {self.quantize} (it never saturates); use it with avx2 or avx512")
        if not self.atol > 0:
            problems.append(f"--atol must be positive (got {self.atol})")
        if not 0 <= self.min_agreement <= 1:
            problems.append(f"--min_agreement must be between 0 and 1 (got {self.min_agreement})")
        if self.opset is not None:
            import onnx

            if not MIN_OPSET <= self.opset <= onnx.defs.onnx_opset_version():
                problems.append(f"--opset must be between {MIN_OPSET} and {onnx.defs.onnx_opset_version()} (got {self.opset})")
        if self.validation_file is not None and not Path(self.validation_file).is_file():
            problems.append(f"--validation_file {self.validation_file} does not exist")
        if self.validation_batch_size < 1:
            problems.append(f"--validation_batch_size must be at least 1 (got {self.validation_batch_size})")
        if self.max_validation_texts < 1:
            problems.append(f"--max_validation_texts must be at least 1 (got {self.max_validation_texts})")
        if self.default_model is not None:
            made = self.model_keys()
            if self.default_model not in MODEL_FILES:
                problems.append(f"--default_model {self.default_model!r} is not one of {', '.join(MODEL_FILES)}")
            elif self.default_model not in made:
                flag = "--optimize LEVEL" if self.default_model == "optimized" else "--quantize TARGET"
                problems.append(f"--default_model {self.default_model} is not being made; add {flag} or choose one of {', '.join(made)}")
        if problems:
            raise UserError(format_problems("invalid export options", problems))

    def model_keys(self) -> list[str]:
        """Manifest keys of the ONNX files this export writes, in order."""
        keys = ["fp32"]
        if self.optimize is not None:
            keys.append("optimized")
        if self.quantize is not None:
            keys.append("int8")
        return keys

    def resolved_default_model(self) -> str:
        """The file serving loads by default: the one asked for, else the most optimised made."""
        return self.default_model or self.model_keys()[-1]


@dataclass
class ValidationExample:
    """One text (pair) used for the parity check, already normalised, with its label if known."""

    text: str
    text_pair: Optional[str] = None
    label: Any = None  # class id, tuple of class ids (multi-label), float (regression) or None


@dataclass
class _ModelDirInfo:
    model_dir: Path
    config: Any  # transformers.PretrainedConfig
    settings: JbertSettings
    problem_type: str
    labels: list[str]
    has_settings: bool


def export_model(
    model_dir: str | os.PathLike,
    export_dir: str | os.PathLike,
    *,
    optimize: Optional[str] = None,
    quantize: Optional[str] = None,
    per_channel: bool = False,
    reduce_range: Optional[bool] = None,
    quantize_ops: str = "all",
    validation_file: Optional[str | os.PathLike] = None,
    atol: float = 1e-4,
    min_agreement: float = 0.99,
    opset: Optional[int] = None,
    overwrite: bool = False,
    default_model: Optional[str] = None,
    show_progress: bool = True,
    validation_batch_size: int = 8,
    max_validation_texts: int = 256,
) -> Manifest:
    """Export MODEL_DIR to a checked, self-contained ONNX directory at EXPORT_DIR and return its manifest.

    Raises `UserError` for bad input (nothing is written) and `ValidationError` when an ONNX
    graph does not match PyTorch (nothing is left at EXPORT_DIR; an existing directory there is
    untouched).
    """
    options = ExportOptions(
        optimize=optimize, quantize=quantize, per_channel=per_channel, reduce_range=reduce_range,
        quantize_ops=quantize_ops,
        validation_file=None if validation_file is None else str(validation_file), atol=atol,
        min_agreement=min_agreement, opset=opset, overwrite=overwrite, default_model=default_model,
        show_progress=show_progress, validation_batch_size=validation_batch_size,
        max_validation_texts=max_validation_texts,
    )
    options.validate()
    progress = _Progress(options.show_progress)
    model_dir = Path(model_dir)
    export_dir = Path(export_dir)
    _check_export_path(model_dir, export_dir)
    check_output_dir(export_dir, options.overwrite)

    info = _inspect_model_dir(model_dir)
    progress.step(f"loading the tokenizer of {model_dir}")
    tokenizer = _load_tokenizer(model_dir)
    _resolve_max_length(info, tokenizer)
    examples, validation_source = load_validation_examples(
        model_dir, info.settings, info.config, options.validation_file, options.max_validation_texts
    )
    source = {
        "model_dir": str(model_dir.resolve()),
        "files": _hash_files(model_dir),
        "exported_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }

    with atomic_directory(export_dir, overwrite=options.overwrite) as work_dir:
        progress.step("exporting the fp32 graph with Optimum")
        _export_fp32(model_dir, work_dir, options.opset)
        _save_tokenizer_checked(tokenizer, work_dir, examples, info.settings.max_length)
        _copy_settings(model_dir, work_dir, info)
        if options.optimize is not None:
            progress.step(f"optimising the graph ({options.optimize})")
            _optimize(work_dir, options.optimize)
        if options.quantize is not None:
            progress.step(f"quantising {options.quantize_ops} ops to int8 for {options.quantize} (from the fp32 graph)")
            _quantize(work_dir, options.quantize, options.per_channel, options.reduce_range, options.quantize_ops)

        progress.step(f"checking parity with PyTorch on {len(examples)} texts ({validation_source})")
        parity, validation = _check_parity(work_dir, model_dir, tokenizer, examples, info, options, progress)
        models = {}
        for key in options.model_keys():
            path = work_dir / MODEL_FILES[key]
            models[key] = ManifestModelFile(
                file=MODEL_FILES[key],
                precision="int8" if key == "int8" else "fp32",
                optimization=options.optimize if key == "optimized" else None,
                quantization=_quantization_record(options) if key == "int8" else None,
                size_bytes=_onnx_size(path),
                sha256=_sha256(path),
                parity=parity[key],
            )
        validation["source"] = validation_source
        manifest = Manifest(
            task=info.problem_type,
            labels=info.labels,
            max_length=info.settings.max_length,
            is_pair=info.settings.is_pair,
            default_model=options.resolved_default_model(),
            models=models,
            source=source,
            versions=_versions(),
            opset=_onnx_opset(work_dir / FP32_FILE),
            validation=validation,
        )
        manifest.save(work_dir)
    progress.step(f"wrote {export_dir} (default model: {MODEL_FILES[manifest.default_model]})")
    return manifest


class _Progress:
    """Step lines with elapsed time on stderr: export of a base model takes a minute on 2 cores."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.start = time.perf_counter()

    def step(self, message: str) -> None:
        """Announce a step (or only log it at debug level when progress is off)."""
        elapsed = time.perf_counter() - self.start
        line = f"[export {elapsed:6.1f}s] {message}"
        if self.enabled:
            print(line, file=sys.stderr, flush=True)
        else:
            logger.debug(line)


def _check_export_path(model_dir: Path, export_dir: Path) -> None:
    """--overwrite must never delete the model it exports; a file in the way is the user's to move."""
    model_abs = model_dir.resolve()
    export_abs = export_dir.resolve()
    if export_abs == model_abs or export_abs in model_abs.parents:
        raise UserError(f"export directory {export_dir} is (or contains) the model directory {model_dir}; choose another path")
    for ancestor in export_dir.absolute().parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise UserError(f"cannot create export directory {export_dir}: {ancestor} is a file; choose another path")
            break


def _inspect_model_dir(model_dir: Path) -> _ModelDirInfo:
    """Check MODEL_DIR is a sequence classifier with weights and tokenizer; read its settings."""
    if not model_dir.exists():
        raise UserError(f"model directory {model_dir} does not exist")
    if not model_dir.is_dir():
        raise UserError(f"{model_dir} is a file, not a model directory; give the directory written by train.py")
    if not (model_dir / "config.json").is_file():
        raise UserError(
            f"{model_dir} is not a model directory (no config.json); give the output directory of "
            "train.py or a Hugging Face sequence-classification directory saved with save_pretrained"
        )
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"{model_dir}/config.json cannot be read as a transformers config: {err}") from None
    architectures = list(getattr(config, "architectures", None) or [])
    if not any(name.endswith("ForSequenceClassification") for name in architectures):
        found = ", ".join(architectures) or "no architecture"
        raise UserError(
            f"{model_dir} holds {found}, not a sequence classifier; fine-tune it with train.py first "
            "(export needs a model with a classification head)"
        )
    if not any((model_dir / name).is_file() for name in WEIGHT_FILES):
        raise UserError(f"{model_dir} has no weights (expected model.safetensors); was the training run completed?")
    if not any((model_dir / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(
            f"{model_dir} has no tokenizer files (tokenizer_config.json, vocab.txt or tokenizer.json); "
            "save the tokenizer next to the model with tokenizer.save_pretrained(MODEL_DIR)"
        )
    has_settings = (model_dir / SETTINGS_FILE).is_file()
    settings = JbertSettings.load(model_dir)
    if has_settings:
        problem_type = settings.problem_type
    else:
        # A plain Hugging Face directory: its config is the only statement of the task.
        problem_type = config.problem_type or ("regression" if config.num_labels == 1 else "single_label_classification")
        settings.problem_type = problem_type
    if config.problem_type and config.problem_type != problem_type:
        raise UserError(
            f"{model_dir}: {SETTINGS_FILE} says problem_type {problem_type} but config.json says "
            f"{config.problem_type}; the directory was edited by hand, fix one of them"
        )
    labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    return _ModelDirInfo(model_dir, config, settings, problem_type, labels, has_settings)


def _resolve_max_length(info: _ModelDirInfo, tokenizer) -> None:
    """Training's max_length from jbert.json; a plain directory gets the longest the model takes."""
    positions = getattr(info.config, "max_position_embeddings", None) or 10**9
    if info.has_settings:
        if info.settings.max_length > positions:
            raise UserError(
                f"{info.model_dir}/{SETTINGS_FILE} sets max_length {info.settings.max_length} but the model "
                f"has only {positions} positions; fix max_length in {SETTINGS_FILE}"
            )
        return
    tokenizer_limit = tokenizer.model_max_length if tokenizer.model_max_length < 10**6 else 10**9  # HF's "no limit" sentinel
    info.settings.max_length = int(min(positions, tokenizer_limit, 512))


def _load_tokenizer(directory: Path):
    """Load a tokenizer the way training did; a missing MeCab dictionary becomes a UserError."""
    from jbert.tokenization import load_tokenizer

    try:
        return load_tokenizer(str(directory))
    except UserError:
        raise
    except (OSError, ValueError, RuntimeError, ImportError) as err:
        raise UserError(f"cannot load the tokenizer of {directory}: {err}") from None


def _read_label_delimiter(model_dir: Path) -> tuple[str, Optional[str]]:
    """Label column and multi-label delimiter the training run used (training_config.yaml)."""
    path = model_dir / TRAINING_CONFIG_FILE
    if not path.is_file():
        return "label", None
    import yaml

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return "label", None
    return str(values.get("label_column") or "label"), values.get("label_delimiter")


def load_validation_examples(
    model_dir: str | os.PathLike,
    settings: JbertSettings,
    config,
    validation_file: Optional[str | os.PathLike] = None,
    max_texts: int = 256,
) -> tuple[list[ValidationExample], str]:
    """Read the parity-check texts, normalised exactly as training did; return them and their source.

    Source order: `validation_file` (columns from jbert.json, label column from the training
    config or "label"), else examples.jsonl of the model directory, else a few built-in sentences.
    """
    model_dir = Path(model_dir)
    label_column, label_delimiter = _read_label_delimiter(model_dir)
    if validation_file is not None:
        rows = _rows_from_validation_file(Path(validation_file), settings, label_column, max_texts)
        source = f"validation file {validation_file}"
    elif (model_dir / EXAMPLES_FILE).is_file():
        rows = _rows_from_examples(model_dir / EXAMPLES_FILE, settings, max_texts)
        source = f"{EXAMPLES_FILE} of the model directory"
    else:
        logger.warning("%s has no %s and no --validation_file was given: checking parity on built-in sentences", model_dir, EXAMPLES_FILE)
        pair = BUILTIN_TEXTS[::-1] if settings.is_pair else [None] * len(BUILTIN_TEXTS)
        rows = [(text, text_pair, None) for text, text_pair in zip(BUILTIN_TEXTS, pair)]
        source = "built-in sentences"
    label2id = {str(config.id2label[i]): i for i in range(config.num_labels)}
    examples = []
    unmatched = []
    for text, text_pair, raw_label in rows:
        label = _parse_label(raw_label, settings.problem_type, label2id, label_delimiter)
        if label is None and raw_label is not None and not (isinstance(raw_label, str) and not raw_label.strip()):
            unmatched.append(raw_label)
        examples.append(ValidationExample(
            text=normalize_text(text, settings.normalization),
            text_pair=None if text_pair is None else normalize_text(text_pair, settings.normalization),
            label=label,
        ))
    if unmatched:
        logger.warning(
            "%d label(s) in the %s are not labels of the model (e.g. %r; the model has %s); accuracy is "
            "computed on the other texts only", len(unmatched), source, unmatched[0], list(label2id)[:10],
        )
    if not examples:
        raise UserError(f"no usable texts for the parity check in the {source}; give --validation_file with texts")
    return examples, source


def _rows_from_validation_file(path: Path, settings: JbertSettings, label_column: str, max_texts: int):
    from jbert.core.readers import is_missing, iter_rows, read_columns, suggest_column

    columns = read_columns(path)
    needed = [settings.text_column] + ([settings.text_pair_column] if settings.is_pair else [])
    missing = [name for name in needed if name not in columns]
    if missing:
        hints = "".join(suggest_column(name, columns) for name in missing)
        raise UserError(
            f"validation file {path} lacks the column(s) {missing} the model was trained on{hints}; "
            f"it has {columns}. Rename the columns to {needed} (set in {SETTINGS_FILE} of the model)"
        )
    has_label = label_column in columns
    rows = []
    for _line, row in iter_rows(path):
        text = row.get(settings.text_column)
        text_pair = row.get(settings.text_pair_column) if settings.is_pair else None
        if is_missing(text) or (settings.is_pair and is_missing(text_pair)):
            continue  # training skips empty texts too
        rows.append((str(text), None if text_pair is None else str(text_pair), row.get(label_column) if has_label else None))
        if len(rows) >= max_texts:
            break
    return rows


def _rows_from_examples(path: Path, settings: JbertSettings, max_texts: int):
    rows = []
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                example = json.loads(line)
            except json.JSONDecodeError as err:
                raise UserError(f"{path}:{line_number} is not valid JSON ({err}); re-create it or give --validation_file") from None
            if not isinstance(example, dict) or not isinstance(example.get("text"), str):
                raise UserError(f"{path}:{line_number} has no \"text\"; give --validation_file instead")
            text_pair = example.get("text_pair")
            if settings.is_pair and not isinstance(text_pair, str):
                raise UserError(f"{path}:{line_number} has no \"text_pair\" but the model classifies pairs; give --validation_file instead")
            rows.append((example["text"], text_pair if settings.is_pair else None, example.get("label")))
            if len(rows) >= max_texts:
                break
    return rows


def _parse_label(raw, problem_type: str, label2id: dict[str, int], delimiter: Optional[str]):
    """Turn a label as stored in a file into class id(s) or a float; None when unknown."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if problem_type == "regression":
        try:
            value = float(raw)
        except (TypeError, ValueError):
            return None
        return value if math.isfinite(value) else None
    if problem_type == "multi_label_classification":
        if isinstance(raw, str):
            stripped = raw.strip()
            if stripped.startswith("["):
                try:
                    raw = json.loads(stripped)
                except json.JSONDecodeError:
                    return None
            else:
                raw = stripped.split(delimiter) if delimiter else [stripped]
        if not isinstance(raw, (list, tuple)):
            return None
        ids = [label2id.get(str(name).strip()) for name in raw]
        return None if any(i is None for i in ids) else tuple(sorted(set(ids)))
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # JSON numbers for labels named "0", "1"
    return label2id.get(str(raw).strip())


def _export_fp32(model_dir: Path, work_dir: Path, opset: Optional[int]) -> None:
    """Write model.onnx (+ config.json) with Optimum's exporter; our own checks come later."""
    from optimum.exporters.onnx import main_export

    with warnings.catch_warnings():
        # The tracer warns about constants in the attention-mask helper; they are shape-free.
        warnings.filterwarnings("ignore", category=Warning, module=r"torch\.jit.*|transformers\..*")
        try:
            main_export(
                str(model_dir),
                output=str(work_dir),
                task=ONNX_TASK,
                opset=opset,
                device="cpu",
                do_validation=False,  # Optimum's check only warns; _check_parity fails loudly
                local_files_only=True,
                trust_remote_code=False,
                library_name="transformers",
            )
        except (ValueError, KeyError, NotImplementedError) as err:
            raise UserError(f"Optimum cannot export {model_dir} to ONNX: {err}") from None
    if not (work_dir / FP32_FILE).is_file():
        raise RuntimeError(f"Optimum's main_export finished without writing {FP32_FILE}")


def _encode(tokenizer, examples: Sequence[ValidationExample], max_length: int, padding: bool = True) -> dict:
    """Tokenize like training: truncation to max_length (longest_first for pairs).

    Padded: int64 arrays (batch, longest). Unpadded: lists of id lists, for exact comparisons.
    """
    texts = [example.text for example in examples]
    pairs = [example.text_pair for example in examples] if examples[0].text_pair is not None else None
    encoded = tokenizer(
        texts, pairs, padding="longest" if padding else False, truncation=True, max_length=max_length,
        return_token_type_ids=True, return_attention_mask=True,
    )
    if not padding:
        return {name: [list(ids) for ids in values] for name, values in encoded.items()}
    return {name: np.asarray(values, dtype=np.int64) for name, values in encoded.items()}


def _save_tokenizer_checked(tokenizer, work_dir: Path, examples: Sequence[ValidationExample], max_length: int) -> None:
    """Save the tokenizer ourselves and prove the saved files reload and tokenize identically."""
    tokenizer.save_pretrained(str(work_dir))
    try:
        reloaded = _load_tokenizer(work_dir)
    except UserError as err:
        raise ValidationError(f"the tokenizer saved into the export directory does not reload: {err}") from None
    original = _encode(tokenizer, examples, max_length, padding=False)
    again = _encode(reloaded, examples, max_length, padding=False)
    for name in ("input_ids", "token_type_ids"):
        if original[name] != again[name]:
            raise ValidationError(
                f"the tokenizer saved into the export directory gives different {name} than the "
                f"model's own tokenizer ({type(tokenizer).__name__} -> {type(reloaded).__name__}); "
                "its files were not saved completely"
            )


def _copy_settings(model_dir: Path, work_dir: Path, info: _ModelDirInfo) -> None:
    """jbert.json (and the example texts) travel with the graph so serving repeats training exactly."""
    if (model_dir / SETTINGS_FILE).is_file():
        shutil.copy2(model_dir / SETTINGS_FILE, work_dir / SETTINGS_FILE)
    else:
        info.settings.save(work_dir)
    if (model_dir / EXAMPLES_FILE).is_file():
        shutil.copy2(model_dir / EXAMPLES_FILE, work_dir / EXAMPLES_FILE)


def _move_model_file(scratch_dir: Path, name: str, work_dir: Path) -> None:
    """Move an ONNX file (and external-data files named after it) out of a scratch directory."""
    for path in scratch_dir.iterdir():
        if path.name == name or path.name.startswith(name + "_data") or path.name.startswith(name + ".data"):
            os.replace(path, work_dir / path.name)
    shutil.rmtree(scratch_dir, ignore_errors=True)
    if not (work_dir / name).is_file():
        raise RuntimeError(f"onnxruntime tooling finished without writing {name}")


def _optimize(work_dir: Path, level: str) -> None:
    """model.onnx -> model_optimized.onnx with ORTOptimizer at an Optimum optimisation level."""
    from optimum.onnxruntime import AutoOptimizationConfig, ORTOptimizer

    # A scratch directory keeps Optimum's extra config copies out of the export directory.
    scratch_dir = work_dir / ".optimize"
    optimizer = ORTOptimizer.from_pretrained(str(work_dir), file_names=[FP32_FILE])
    config = AutoOptimizationConfig.with_optimization_level(level, for_gpu=False)
    try:
        optimizer.optimize(config, save_dir=str(scratch_dir), file_suffix="optimized")
    except (NotImplementedError, KeyError) as err:
        raise UserError(f"--optimize {level} is not available for this architecture ({err}); use --optimize O1") from None
    _move_model_file(scratch_dir, OPTIMIZED_FILE, work_dir)


def quantization_config(target: str, per_channel: bool = False, reduce_range: Optional[bool] = None, quantize_ops: str = "all"):
    """Optimum's dynamic int8 preset for a CPU target (the same object ORTQuantizer takes).

    `quantize_ops` "matmul" restricts the preset to the MatMul-type ops (`QUANTIZE_OPS`), leaving
    the embedding Gathers in fp32.
    """
    from optimum.onnxruntime import AutoQuantizationConfig

    kwargs: dict[str, Any] = {"is_static": False, "per_channel": per_channel, "operators_to_quantize": QUANTIZE_OPS[quantize_ops]}
    if target in REDUCE_RANGE_TARGETS:
        kwargs["reduce_range"] = bool(reduce_range)
    return getattr(AutoQuantizationConfig, target)(**kwargs)


def _quantize(work_dir: Path, target: str, per_channel: bool, reduce_range: Optional[bool], quantize_ops: str = "all") -> None:
    """model.onnx -> model_quantized.onnx (always from the unfused fp32 graph, see module doc)."""
    from optimum.onnxruntime import ORTQuantizer

    scratch_dir = work_dir / ".quantize"
    quantizer = ORTQuantizer.from_pretrained(str(work_dir), file_name=FP32_FILE)
    quantizer.quantize(quantization_config(target, per_channel, reduce_range, quantize_ops), save_dir=str(scratch_dir), file_suffix="quantized")
    _move_model_file(scratch_dir, QUANTIZED_FILE, work_dir)


def _quantization_record(options: ExportOptions) -> dict:
    qconfig = quantization_config(options.quantize, options.per_channel, options.reduce_range, options.quantize_ops)
    return {
        "target": options.quantize,
        "mode": "dynamic",
        "source": FP32_FILE,
        "per_channel": bool(options.per_channel),
        "quantize_ops": options.quantize_ops,
        "reduce_range": bool(qconfig.reduce_range),
        "weights_dtype": qconfig.weights_dtype.name,
        "activations_dtype": qconfig.activations_dtype.name,
        "operators": list(qconfig.operators_to_quantize),
    }


def _int8_remedies(options: ExportOptions) -> str:
    """What to try when int8 disagrees with fp32, leaving out what this export already used."""
    remedies = []
    if not options.per_channel:
        remedies.append("--per_channel (per-output-channel scales, about the same size)")
    if options.quantize_ops == "all":
        remedies.append("--quantize_ops matmul (embeddings stay fp32: closer to fp32 together with --per_channel, but a larger file, e.g. 59 instead of 23 MB for MiniLM-L6)")
    if options.quantize in REDUCE_RANGE_TARGETS and not options.reduce_range:
        remedies.append("--reduce_range")
    remedies.append("or serve the fp32/optimised file (--default_model), or lower --min_agreement after checking accuracy with --validation_file")
    return "try " + ", ".join(remedies)


def predicted_labels(logits: np.ndarray, problem_type: str, threshold: float = 0.5) -> list:
    """Per-text predictions in comparable form: class id, tuple of class ids, or the score.

    The decision rule is the one shared by training and serving (`jbert.core.postprocessing`), so "same
    labels" here means what the evaluation metrics counted.
    """
    from jbert.core.postprocessing import predictions_from_logits

    predictions = predictions_from_logits(logits, problem_type, threshold)
    if problem_type == "multi_label_classification":
        return [tuple(int(i) for i in np.flatnonzero(row)) for row in predictions]
    if problem_type == "regression":
        return [float(value) for value in predictions]
    return [int(i) for i in predictions]


def _quality(predictions: list, labels: list, problem_type: str) -> dict:
    """Accuracy (subset accuracy for multi-label) or MSE/Pearson against known labels."""
    known = [(p, y) for p, y in zip(predictions, labels) if y is not None]
    if not known:
        return {}
    if problem_type == "regression":
        predicted = np.array([p for p, _ in known], dtype=np.float64)
        gold = np.array([y for _, y in known], dtype=np.float64)
        figures = {"mse": float(np.mean((predicted - gold) ** 2)), "n_labelled": len(known)}
        if len(known) > 1 and predicted.std() > 0 and gold.std() > 0:
            figures["pearson"] = float(np.corrcoef(predicted, gold)[0, 1])
        return figures
    return {"accuracy": float(np.mean([p == y for p, y in known])), "n_labelled": len(known)}


def _batches(items: Sequence, size: int) -> Iterable[Sequence]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _onnx_sessions(work_dir: Path, keys: Sequence[str]) -> dict:
    """One CPU session per ONNX file, with the options serving uses (jbert.serve.runtime)."""
    import onnxruntime

    from jbert.serve.runtime import make_session_options

    sessions = {}
    for key in keys:
        # PyTorch and up to three sessions take turns here: spinning idle threads would steal the
        # CPU from whichever one is running.
        options = make_session_options(allow_spinning=False)
        sessions[key] = onnxruntime.InferenceSession(str(work_dir / MODEL_FILES[key]), options, providers=["CPUExecutionProvider"])
    return sessions


def _check_graph_inputs(session, tokenizer_inputs: Sequence[str], model_file: str) -> list[str]:
    """Every tokenizer output must be a graph input with dynamic batch and sequence axes."""
    problems = []
    graph_inputs = {node.name: node for node in session.get_inputs()}
    for name in tokenizer_inputs:
        if name not in graph_inputs:
            problems.append(f"{model_file} has no input {name} (inputs: {sorted(graph_inputs)})")
            continue
        fixed = [dim for dim in graph_inputs[name].shape if not isinstance(dim, str)]
        if fixed:
            problems.append(f"{model_file} input {name} has fixed dimensions {graph_inputs[name].shape}; batch and sequence axes must be dynamic")
    return problems


def _check_parity(work_dir: Path, model_dir: Path, tokenizer, examples: Sequence[ValidationExample], info: _ModelDirInfo,
                  options: ExportOptions, progress: _Progress) -> tuple[dict, dict]:
    """Run PyTorch and every ONNX file on the same batches; return per-model figures or raise."""
    import torch
    from tqdm.auto import tqdm
    from transformers import AutoModelForSequenceClassification

    keys = options.model_keys()
    sessions = _onnx_sessions(work_dir, keys)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir, local_files_only=True, trust_remote_code=False)
    model = model.float().eval()
    problem_type, threshold = info.problem_type, info.settings.multi_label_threshold
    max_length = info.settings.max_length

    # One extra text joining all of them exercises truncation at max_length and every position.
    long_text = ValidationExample(
        text=" ".join(example.text for example in examples)[: max_length * 8],
        text_pair=None if examples[0].text_pair is None else " ".join(e.text_pair for e in examples)[: max_length * 8],
    )
    texts = list(examples) + [long_text]
    batch_sizes = [1] if options.validation_batch_size == 1 else [1, min(options.validation_batch_size, len(texts))]
    sample_inputs = _encode(tokenizer, texts[:1], max_length)
    problems = []
    for key in keys:
        problems += _check_graph_inputs(sessions[key], list(sample_inputs), MODEL_FILES[key])
    if problems:
        raise ValidationError(format_problems("the ONNX graph does not take the model's inputs", problems))

    # logits[batch_size][name] -> array (n_texts, num_labels) in text order
    logits: dict[int, dict[str, np.ndarray]] = {}
    total_batches = sum(math.ceil(len(texts) / size) for size in batch_sizes)
    bar = tqdm(total=total_batches, desc="parity check", unit="batch", disable=not options.show_progress, file=sys.stderr)
    for size in batch_sizes:
        outputs: dict[str, list[np.ndarray]] = {name: [] for name in ["pytorch", *keys]}
        for batch in _batches(texts, size):
            inputs = _encode(tokenizer, batch, max_length)
            with torch.inference_mode():
                torch_logits = model(**{name: torch.from_numpy(values) for name, values in inputs.items()}).logits
            outputs["pytorch"].append(torch_logits.float().numpy())
            for key, session in sessions.items():
                feed = {node.name: inputs[node.name] for node in session.get_inputs()}
                outputs[key].append(np.asarray(session.run(["logits"], feed)[0], dtype=np.float32))
            bar.update(1)
        logits[size] = {name: np.concatenate(parts) for name, parts in outputs.items()}
    bar.close()

    labels = [example.label for example in texts]
    large = batch_sizes[-1]
    pytorch_predictions = predicted_labels(logits[large]["pytorch"], problem_type, threshold)
    parity: dict[str, dict] = {}
    failures: list[str] = []
    for key in keys:
        reference = "fp32" if key == "int8" else "pytorch"
        diffs = [np.abs(logits[size][key] - logits[size][reference]) for size in batch_sizes]
        max_abs_diff = float(max(diff.max() for diff in diffs))
        agree = [
            a == b
            for size in batch_sizes
            for a, b in zip(predicted_labels(logits[size][key], problem_type, threshold),
                            predicted_labels(logits[size][reference], problem_type, threshold))
        ]
        figures: dict[str, Any] = {
            "compared_with": reference,
            "n_texts": len(texts),
            "batch_sizes": batch_sizes,
            "max_abs_diff": max_abs_diff,
            "mean_abs_diff": float(np.mean(np.concatenate([d.ravel() for d in diffs]))),
        }
        if problem_type != "regression":
            figures["label_agreement"] = float(np.mean(agree))
            figures["label_disagreements"] = int(len(agree) - sum(agree))
        own_predictions = predicted_labels(logits[large][key], problem_type, threshold)
        reference_predictions = (
            pytorch_predictions if reference == "pytorch"
            else predicted_labels(logits[large]["fp32"], problem_type, threshold)
        )
        for name, quality in ((reference, _quality(reference_predictions, labels, problem_type)),
                              (key, _quality(own_predictions, labels, problem_type))):
            for metric, value in quality.items():
                figures[metric if metric == "n_labelled" else f"{metric}_{name}"] = value
        if key == "int8":
            figures["min_agreement"] = options.min_agreement
            failed = problem_type != "regression" and figures["label_agreement"] < options.min_agreement
            if failed:
                failures.append(
                    f"int8 ({QUANTIZED_FILE}) agrees with fp32 on {figures['label_agreement']:.2%} of the predictions, "
                    f"below --min_agreement {options.min_agreement:.2%} ({figures['label_disagreements']} of {len(agree)} differ; "
                    f"max |logit diff| {max_abs_diff:.3g}); {_int8_remedies(options)}"
                )
        else:
            figures["atol"] = options.atol
            reasons = []
            if max_abs_diff > options.atol:
                reasons.append(f"max |logit diff| {max_abs_diff:.3g} > --atol {options.atol:g}")
            if problem_type != "regression" and figures["label_disagreements"]:
                reasons.append(f"predicted labels differ on {figures['label_disagreements']} of {len(agree)} texts")
            failed = bool(reasons)
            if failed:
                failures.append(f"{key} ({MODEL_FILES[key]}) vs PyTorch: " + "; ".join(reasons))
        figures["passed"] = not failed
        parity[key] = figures
        summary = f"{key}: max |diff| {max_abs_diff:.2e}"
        if "label_agreement" in figures:
            summary += f", label agreement {figures['label_agreement']:.2%}"
        progress.step(summary)
    if failures:
        raise ValidationError(
            format_problems(
                f"ONNX export of {model_dir} failed its check against PyTorch on {len(texts)} texts "
                f"(batch sizes {batch_sizes}); nothing was written",
                failures,
            )
        )
    validation = {
        "n_texts": len(texts),
        "batch_sizes": batch_sizes,
        "atol": options.atol,
        "min_agreement": options.min_agreement,
        "inputs": list(sample_inputs),
        "tokenizer": type(tokenizer).__name__,
        "tokenizer_reload_identical": True,
        "serving_tokenizer": _check_serving_tokenizer(work_dir, texts, max_length),
    }
    return parity, validation


def _check_serving_tokenizer(work_dir: Path, texts: Sequence[ValidationExample], max_length: int) -> dict:
    """The torch-free serving tokenizer must give the ids the model was checked with."""
    from jbert.tokenization import load_serving_tokenizer

    reference = _load_tokenizer(work_dir)
    serving = load_serving_tokenizer(work_dir)
    pairs = [example.text_pair for example in texts] if texts[0].text_pair is not None else None
    served = serving.encode_batch([example.text for example in texts], pairs, max_length=max_length)
    expected = _encode(reference, texts, max_length, padding=False)
    mismatches = [
        index for index, encoded in enumerate(served)
        if list(encoded.input_ids) != expected["input_ids"][index]
        or list(encoded.token_type_ids) != expected["token_type_ids"][index]
    ]
    if mismatches:
        raise ValidationError(
            f"the serving tokenizer (jbert.tokenization.fast, {type(serving).__name__}) gives different ids than "
            f"the model's tokenizer on {len(mismatches)} of {len(texts)} texts (first: {texts[mismatches[0]].text!r}); "
            "served predictions would not match the checked ones"
        )
    return {"is_fast": bool(serving.is_fast), "identical_ids": True}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _hash_files(directory: Path) -> dict[str, str]:
    """sha256 of every file at the top of the model directory, so an export names its exact source."""
    return {path.name: _sha256(path) for path in sorted(directory.iterdir()) if path.is_file()}


def _onnx_size(path: Path) -> int:
    """Bytes of an ONNX file plus any external-data files stored beside it."""
    size = path.stat().st_size
    for sibling in path.parent.iterdir():
        if sibling != path and sibling.name.startswith(path.name) and sibling.is_file():
            size += sibling.stat().st_size
    return size


def _onnx_opset(path: Path) -> Optional[int]:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)


def _versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0]}
    for package in ("onnxruntime", "optimum", "optimum-onnx", "onnx", "transformers", "tokenizers", "torch", "fugashi", "unidic-lite"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions

