"""Calibration texts for static int8: real texts of the user's task, never the held-out ones.

Static int8 fixes each activation's range from what the model computes on these texts, so they
must look like what will be served: `--calibration_file`, else the training file of the run (then
its validation file) named in training_config.yaml. Texts that are also among the held-out
validation texts are left out, so the agreement the search measures is not measured on texts the
ranges were fitted to. The texts are spread over the whole file, not its first rows (files are
often sorted by label or source).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from jbert.core.artifacts import TRAINING_CONFIG_FILE, JbertSettings
from jbert.core.errors import UserError
from jbert.core.normalize import normalize_text
from jbert.export.texts import ValidationExample, encode, rows_from_table_file

logger = logging.getLogger("jbert.export")

CALIBRATION_BATCH_SIZE = 8  # rows per calibration run; the texts are trimmed to a multiple of it
MAX_ROWS_READ = 100_000  # enough to spread a few hundred texts over; bounds reading a huge training file


@dataclass
class CalibrationTexts:
    """Normalised calibration texts, where they came from, and why there are none when there are none."""

    examples: list[ValidationExample]
    source: str
    held_out_removed: int = 0
    problems: list[str] = field(default_factory=list)  # sources tried and why they gave nothing

    def record(self) -> dict:
        """What the manifest says about the calibration texts."""
        return {"source": self.source, "n_texts": len(self.examples), "held_out_texts_left_out": self.held_out_removed,
                **({"problems": self.problems} if self.problems else {})}


def _training_files(model_dir: Path) -> list[tuple[str, Path]]:
    """(name, path) of the training and validation files training_config.yaml names, when they exist."""
    path = model_dir / TRAINING_CONFIG_FILE
    if not path.is_file():
        return []
    import yaml

    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError:
        return []
    found = []
    for key in ("train_file", "validation_file"):
        value = values.get(key)
        if value and Path(value).is_file():
            found.append((key, Path(value)))
    return found


def _spread(items: list, count: int) -> list:
    """COUNT items evenly spaced over ITEMS (all of them when there are fewer)."""
    if len(items) <= count:
        return list(items)
    step = len(items) / count
    return [items[int(index * step)] for index in range(count)]


def _usable(path: Path, settings: JbertSettings, held_out: set, max_texts: int) -> tuple[list[ValidationExample], int, int]:
    """(calibration examples, texts read, held-out texts left out) of one file."""
    rows = rows_from_table_file(path, settings, label_column=None, max_texts=MAX_ROWS_READ)
    examples, removed, seen = [], 0, set()
    for text, text_pair, _label in rows:
        example = ValidationExample(
            text=normalize_text(text, settings.normalization),
            text_pair=None if text_pair is None else normalize_text(text_pair, settings.normalization),
        )
        key = (example.text, example.text_pair)
        if not example.text or (settings.is_pair and not example.text_pair) or key in seen:
            continue
        seen.add(key)
        if key in held_out:
            removed += 1
            continue
        examples.append(example)
    examples = _spread(examples, max_texts)
    if len(examples) >= CALIBRATION_BATCH_SIZE:  # histogram calibrators need every run the same shape
        examples = examples[: len(examples) - len(examples) % CALIBRATION_BATCH_SIZE]
    return examples, len(rows), removed


def load_calibration_texts(
    model_dir: str | os.PathLike,
    settings: JbertSettings,
    calibration_file: Optional[str | os.PathLike],
    held_out: Sequence[ValidationExample],
    max_texts: int = 200,
) -> CalibrationTexts:
    """Calibration texts from `calibration_file`, else the run's training (then validation) file.

    A `calibration_file` without usable texts is a UserError; the training files are only tried,
    and when neither gives texts the result is empty with the reasons in `problems` (static int8 is
    then skipped, or refused with --quantize_method static).
    """
    held_out_keys = {(example.text, example.text_pair) for example in held_out}
    if calibration_file is not None:
        path = Path(calibration_file)
        examples, n_read, removed = _usable(path, settings, held_out_keys, max_texts)
        if not examples:
            why = (f"all {removed} of its texts are among the held-out validation texts" if removed
                   else f"it has no non-empty {settings.text_column!r} values" if not n_read
                   else "its texts are empty after normalisation")
            raise UserError(
                f"--calibration_file {path} has no usable calibration texts: {why}; give a file of real texts of "
                f"the task in column {settings.text_column!r}"
                + (f" (and {settings.text_pair_column!r})" if settings.is_pair else "")
                + " that are not the --validation_file texts"
            )
        return CalibrationTexts(examples, f"calibration file {path}", removed)
    problems = []
    for name, path in _training_files(Path(model_dir)):
        try:
            examples, _n_read, removed = _usable(path, settings, held_out_keys, max_texts)
        except UserError as err:  # not asked for by the user: say why and try the next source
            problems.append(f"{name} {path}: {err}")
            continue
        if examples:
            return CalibrationTexts(examples, f"{name} {path} (training_config.yaml)", removed, problems)
        problems.append(f"{name} {path}: no texts beside the held-out ones")
    if not problems:
        problems.append(f"{model_dir} has no {TRAINING_CONFIG_FILE} naming a training file that exists here")
    return CalibrationTexts([], "none", 0, problems)


def calibration_dataset(tokenizer, examples: Sequence[ValidationExample], max_length: int, input_names: Sequence[str]):
    """A datasets.Dataset of the model inputs, one row per text, as Optimum's ORTQuantizer.fit takes.

    Every row is padded to the longest calibration text: onnxruntime's histogram calibrators
    (percentile, entropy) stack each tensor over all runs and need one shape. Padded positions
    are part of what serving computes too (the runtime pads each batch to its longest text).
    """
    from datasets import Dataset

    encoded = encode(tokenizer, examples, max_length, padding=True)
    return Dataset.from_dict({name: encoded[name].tolist() for name in input_names})
