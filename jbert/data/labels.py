"""Labels: the problem type (single-label, multi-label, regression), parsed labels, and their id order.

The problem type comes from `--task` or, for "auto", from the training labels: list values or
`--label_delimiter` mean multi-label, numbers that are not all integers mean regression, anything
else single-label. Label names get a stable order (`label_sort_key`), or the order a saved
dataset's ClassLabel declares, and validation/test labels never seen in training are an error.
"""

from __future__ import annotations

import ast
import json
import math
from collections import Counter

from jbert.core import readers as tabular
from jbert.core.errors import UserError
from jbert.data.options import DataOptions
from jbert.data.rows import SplitRows, binary_column_error, number_to_text

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPE_BY_TASK = {"single_label": SINGLE_LABEL, "multi_label": MULTI_LABEL, "regression": REGRESSION}


def detect_problem_type(config: DataOptions, train: SplitRows) -> tuple[str, str]:
    """(problem type, the reason in words) from --task, --label_delimiter or the raw training labels."""
    if config.task != "auto":
        return PROBLEM_TYPE_BY_TASK[config.task], f"--task {config.task}"
    if config.label_delimiter:
        return MULTI_LABEL, f"--label_delimiter {config.label_delimiter!r}"
    raw_labels = [example.raw_label for example in train.examples]
    if any(isinstance(value, (list, tuple)) for value in raw_labels):
        return MULTI_LABEL, f"column {config.label_column!r} holds lists"
    if raw_labels and all(isinstance(value, str) and _parse_list_text(value) is not None for value in raw_labels):
        return MULTI_LABEL, f"column {config.label_column!r} holds lists written as text"
    numbers = [as_number(value) for value in raw_labels]
    if numbers and all(number is not None for number in numbers) and not all(number.is_integer() for number in numbers):
        return REGRESSION, f"column {config.label_column!r} holds non-integer numbers"
    return SINGLE_LABEL, f"one label per row in column {config.label_column!r}"


def as_number(value: object) -> float | None:
    """A finite number from a number or a numeric text, else None (booleans are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())  # float() also reads full-width digits such as "４.５"
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _parse_list_text(value: str) -> list | None:
    """'["a", "b"]' (JSON) or "['a', 'b']" (how pandas writes lists to CSV) -> list, else None."""
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        return None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return None
    return parsed if isinstance(parsed, list) else None


def _label_name(value: object, where: str, location: str, column: str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return number_to_text(value)
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, (bytes, bytearray, memoryview)):
        raise binary_column_error(where, location, column)
    raise UserError(
        f"{where}, {location}: a label of type {type(value).__name__} ({str(value)[:60]}) where a "
        "class name was expected; for several labels per row use --task multi_label"
    )


def parse_labels(split: SplitRows, problem_type: str, config: DataOptions) -> None:
    """Turn every raw label of a split into a name, a list of names or a float, as the problem type needs."""
    if not split.has_labels:
        return
    where = split.source.describe()
    for example in split.examples:
        value = example.raw_label
        if problem_type == SINGLE_LABEL:
            if isinstance(value, (list, tuple)):
                raise UserError(
                    f"{where}, {example.location}: a list label {value} but the problem type is single-label; "
                    "use --task multi_label (or --task auto) for several labels per row"
                )
            example.label = _label_name(value, where, example.location, config.label_column)
        elif problem_type == REGRESSION:
            number = as_number(value)
            if number is None:
                raise UserError(
                    f"{where}, {example.location}: label {value!r} is not a number, but the problem type is "
                    "regression; fix the value, or use --task single_label for class names"
                )
            example.label = number
        else:
            example.label = _multi_label_names(value, config, where, example.location)


def _multi_label_names(value: object, config: DataOptions, where: str, location: str) -> list[str]:
    delimiter = config.label_delimiter
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str) and delimiter:
        items = value.split(delimiter)
    elif isinstance(value, str) and _parse_list_text(value) is not None:
        items = _parse_list_text(value)
    else:
        items = [value]
    names = [_label_name(item, where, location, config.label_column) for item in items if not tabular.is_missing(item)]
    return list(dict.fromkeys(name for name in names if name))  # drop duplicates, keep order


def label_sort_key(name: str) -> tuple:
    """Stable label order: numeric-looking names by value ("2" < "10"), then the rest by text."""
    number = as_number(name)
    if number is not None:
        return (0, number, name)
    return (1, name)


def label_names_of(problem_type: str, train: SplitRows) -> list[str]:
    """Label names in id order: a saved dataset's ClassLabel order, else sorted by `label_sort_key`."""
    if problem_type == REGRESSION:
        return []
    if problem_type == SINGLE_LABEL:
        seen = {example.label for example in train.examples}
    else:
        seen = {name for example in train.examples for name in example.label}
    # A saved dataset's ClassLabel fixes the id order its author chose; files are sorted.
    declared = train.declared_label_names
    if declared is not None and seen <= set(declared):
        return list(declared)
    if problem_type == MULTI_LABEL and not seen:
        raise UserError(f"{train.source.describe()}: no row has any label; check --label_column and --label_delimiter")
    return sorted(seen, key=label_sort_key)


def check_known_labels(split: SplitRows, label_names: list[str], problem_type: str) -> None:
    """Refuse validation/test labels that never occur in training (the model has no output for them)."""
    if not split.has_labels or problem_type == REGRESSION:
        return
    known = set(label_names)
    unseen: Counter = Counter()
    for example in split.examples:
        names = [example.label] if problem_type == SINGLE_LABEL else example.label
        unseen.update(name for name in names if name not in known)
    if unseen:
        listed = ", ".join(f"{name!r} ({count} rows)" for name, count in sorted(unseen.items(), key=lambda kv: label_sort_key(kv[0])))
        raise UserError(
            f"{split.source.describe()} has labels that never occur in the training data: {listed}; "
            f"the training labels are {label_names}. Fix the labels or add training examples for them"
        )



def label_stats(split: SplitRows, problem_type: str, label_names: list[str]) -> dict:
    """Per-class counts (classification) or min/max/mean (regression) of a labelled split, for the report."""
    stats: dict = {}
    if split.has_labels and problem_type == SINGLE_LABEL:
        counts = Counter(example.label for example in split.examples)
        stats["label_counts"] = {name: counts.get(name, 0) for name in label_names}
    elif split.has_labels and problem_type == MULTI_LABEL:
        counts = Counter(name for example in split.examples for name in example.label)
        stats["label_counts"] = {name: counts.get(name, 0) for name in label_names}
        stats["rows_without_labels"] = sum(1 for example in split.examples if not example.label)
    elif split.has_labels and split.examples:
        values = [example.label for example in split.examples]
        stats["label_min"], stats["label_max"] = min(values), max(values)
        stats["label_mean"] = sum(values) / len(values)
    return stats
