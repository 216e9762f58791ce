"""Unlabeled texts for masked-LM pretraining: plain text files, or any table the readers take.

    .txt file                      one text per line (blank lines skipped), no header, no columns
    CSV / TSV / JSONL / Parquet /  the column(s) --text_column, comma-separated (e.g.
    save_to_disk directory         sentence1,sentence2 for pair data); labels, if any, are ignored
    several of them                --train_file a.txt,b.jsonl: every file's texts, duplicates dropped
      -> cleaned with the same normalisation as classification (so MLM and fine-tuning see the
         same text), empty texts dropped, a seeded held-out slice for validation when no file is given

Several files, because the amount of text decides how much masked-LM pretraining brings: on JRTE
rhr, adding the 5,000 JGLUE caption sentences at hand to its own 5,000 texts raised the fine-tuned
validation accuracy from about 0.87 to 0.89 (docs/training.md, "Quality on real data").
"""

from __future__ import annotations

import logging
import math
import os
import random
from pathlib import Path

from jbert.core import readers as tabular
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig, normalize_text
from jbert.data.files import open_source  # the same sources classification reads
from jbert.data.rows import binary_column_error

logger = logging.getLogger(__name__)

PLAIN_TEXT_SUFFIXES = (".txt", ".text")


def split_paths(value: str | os.PathLike) -> list[str]:
    """The files of a --train_file / --validation_file value: one path, or several separated by commas."""
    text = os.fspath(value)
    if os.path.exists(text):  # a path that itself holds a comma stays one path
        return [text]
    return [part.strip() for part in text.split(",") if part.strip()]


def read_unlabeled_corpus(paths: str | os.PathLike, text_column: str = "text", encoding: str = "auto",
                          normalization: NormalizationConfig | None = None, role: str = "train") -> list[str]:
    """Cleaned, non-empty texts of one or more files (comma-separated), first occurrence kept.

    Exact duplicates are dropped across and within files (pair data such as JGLUE repeats a
    sentence in many pairs); repeating a text only re-weights it, and across the training and
    validation slices it would leak.
    """
    texts: list[str] = []
    for path in split_paths(paths):
        found = read_unlabeled_texts(path, text_column, encoding, normalization, role)
        logger.info("%s: %d texts", path, len(found))
        texts.extend(found)
    unique = list(dict.fromkeys(texts))
    if len(unique) < len(texts):
        logger.info("dropped %d duplicate texts; %d remain", len(texts) - len(unique), len(unique))
    return unique


def read_unlabeled_texts(path: str | os.PathLike, text_column: str = "text", encoding: str = "auto",
                         normalization: NormalizationConfig | None = None, role: str = "train") -> list[str]:
    """Cleaned, non-empty texts of one file, in file order.

    A `.txt` file holds one text per line; any other file goes through the training data readers
    and its `text_column` is used (comma-separated names: every named column the table has, row by
    row). A missing file or column is a UserError that says what to pass.
    """
    normalization = normalization or NormalizationConfig()
    path = Path(path)
    flag = "--train_file" if role == "train" else "--validation_file"
    if not path.exists():
        raise UserError(f"{flag} {path} does not exist; check the path")
    texts: list[str] = []
    if path.is_file() and path.suffix.lower() in PLAIN_TEXT_SUFFIXES:
        resolved = tabular.resolve_encoding(path, encoding)
        with open(path, encoding=resolved, newline=None) as handle:
            raw_texts = list(handle)
    else:
        source = open_source(path, role, encoding)
        wanted = [name.strip() for name in text_column.split(",") if name.strip()]
        columns = [name for name in wanted if name in source.columns]
        if not columns:
            hint = tabular.suggest_column(wanted[0], source.columns) if len(wanted) == 1 else ""
            raise UserError(
                f"{source.describe()} has no column {text_column!r} (columns: {source.columns}){hint}; pass "
                f"--text_column NAME (several: NAME,NAME), or give a .txt file with one text per line"
            )
        raw_texts = []
        for location, row in source.rows(columns):
            for name in columns:
                value = row.get(name)
                if isinstance(value, (bytes, bytearray, memoryview)):
                    # skipping it as "empty" would hide a whole binary column behind "no text"
                    raise binary_column_error(source.describe(), location, name)
                raw_texts.append(value)
    skipped = 0
    for raw in raw_texts:
        text = normalize_text(raw, normalization) if isinstance(raw, str) else ""
        if text.strip():
            texts.append(text)
        else:
            skipped += 1
    if not texts:
        raise UserError(f"{flag} {path} holds no non-empty text; one text per line (.txt) or --text_column NAME")
    if skipped:
        logger.info("%s: skipped %d empty texts", path, skipped)
    return texts


def split_unlabeled(texts: list[str], validation_split: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded, shuffled hold-out of `validation_split` of the texts (at least one each side)."""
    if len(texts) < 2:
        raise UserError(f"{len(texts)} text(s) cannot be split into training and validation; give more text "
                        "or a --validation_file")
    count = min(max(1, math.ceil(validation_split * len(texts))), len(texts) - 1)
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    held_out = set(order[:count])
    return ([t for i, t in enumerate(texts) if i not in held_out], [t for i, t in enumerate(texts) if i in held_out])
