"""Texts of an export: the held-out texts every ONNX file is checked on, read and normalised as training did.

Source order: `--validation_file` (the model's text/pair columns, label column from the training
config), else examples.jsonl of the model directory, else a few built-in sentences.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from jbert.core.artifacts import EXAMPLES_FILE, SETTINGS_FILE, TRAINING_CONFIG_FILE, JbertSettings
from jbert.core.errors import UserError
from jbert.core.normalize import normalize_text

logger = logging.getLogger("jbert.export")

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


@dataclass
class ValidationExample:
    """One text (pair) used for the parity check, already normalised, with its label if known."""

    text: str
    text_pair: Optional[str] = None
    label: Any = None  # class id, tuple of class ids (multi-label), float (regression) or None


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
        rows = rows_from_table_file(Path(validation_file), settings, label_column, max_texts)
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


def rows_from_table_file(path: Path, settings: JbertSettings, label_column: Optional[str], max_texts: int):
    """(text, text_pair, raw label) rows of a CSV/TSV/JSONL/Parquet file, empty texts skipped."""
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
    """(text, text_pair, raw label) rows of examples.jsonl."""
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


def encode(tokenizer, examples: Sequence[ValidationExample], max_length: int, padding: bool = True) -> dict:
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

