"""Rows, configs and file writers shared by the data-stage tests (test_data.py, test_data_files.py)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from jbert.data.prepare import PreparedData
from jbert.train.config import TrainConfig

ROWS = [
    {"text": "この商品はとても良いです。", "label": "positive"},
    {"text": "最悪の料理でした。", "label": "negative"},
    {"text": "普通のホテルです", "label": "neutral"},
    {"text": "料理が美味しい", "label": "positive"},
    {"text": "部屋が悪い", "label": "negative"},
    {"text": "今日は雨", "label": "neutral"},
]


def config(tmp_path: Path, **overrides) -> TrainConfig:
    """A TrainConfig for the data stage (model options do not matter here)."""
    values = {"from_scratch": "tiny", "output_dir": str(tmp_path / "model"), "validation_split": 0.5}
    values.update(overrides)
    return TrainConfig(**values)


def write_csv(path: Path, rows: list[dict], encoding: str = "utf-8", delimiter: str = ",") -> Path:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    with open(path, "w", encoding=encoding, newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, delimiter=delimiter, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    return path


def decoded(data: PreparedData, split: str = "train") -> list[tuple]:
    """(text, label name) pairs of a prepared split, in order."""
    dataset = getattr(data, split)
    return [(row["text"], data.label_names[row["labels"]]) for row in dataset]
