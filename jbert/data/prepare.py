"""The data stage of training: read files, clean texts, detect the task, map labels, split, tokenize.

    files (CSV/TSV/JSONL via jbert.core.readers, Parquet, datasets.save_to_disk directories)
      -> rows: text (+ text_pair) cleaned by jbert.text.normalize_text, raw label
      -> task (single-label / multi-label / regression) and label names in a stable id order
      -> train / validation (given, or a seeded stratified split) / test `datasets.Dataset`s
      -> tokenize_dataset: input_ids, attention_mask, token_type_ids (unpadded) + labels

Every problem with the user's data is a `UserError` naming the file, the line or row, and what to
do; nothing is written to disk here, so a failure never leaves anything half-made.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import datasets

from jbert.core import readers as tabular
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig, normalize_text

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from jbert.train.config import TrainConfig

logger = logging.getLogger(__name__)

SINGLE_LABEL = "single_label_classification"
MULTI_LABEL = "multi_label_classification"
REGRESSION = "regression"
PROBLEM_TYPE_BY_TASK = {"single_label": SINGLE_LABEL, "multi_label": MULTI_LABEL, "regression": REGRESSION}

# Split names accepted in a datasets.save_to_disk DatasetDict, per role, in order of preference.
SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
FLAG_BY_ROLE = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}
MAX_SKIPPED_EXAMPLES = 5  # locations of skipped rows kept in stats, so the user can look at them


@dataclass
class PreparedData:
    """Cleaned, labelled and split data, ready for `tokenize_dataset`."""

    train: datasets.Dataset  # columns: "text", "text_pair" (only for pair tasks), "labels"
    validation: datasets.Dataset
    test: datasets.Dataset | None  # "labels" present only if the test file has labels
    problem_type: str  # "single_label_classification" | "multi_label_classification" | "regression"
    label_names: list[str]  # names in id order; [] for regression
    stats: dict  # per split: rows_read, rows_used, skipped_empty_text, skipped_missing_label, ...

    @property
    def label2id(self) -> dict[str, int]:
        """Label name -> id, as saved in the model config."""
        return {name: index for index, name in enumerate(self.label_names)}

    @property
    def id2label(self) -> dict[int, str]:
        """Id -> label name, as saved in the model config."""
        return dict(enumerate(self.label_names))


def prepare_data(config: "TrainConfig") -> PreparedData:
    """Read, clean, label and split the files named in `config` into `datasets.Dataset`s.

    The task comes from `config.task` or, for "auto", from the training labels: list values or
    `config.label_delimiter` mean multi-label, numbers that are not all integers mean regression,
    anything else single-label. Without `config.validation_file` a seeded, shuffled split of
    `config.validation_split` of the training rows is held out (stratified for single-label).
    """
    normalization = NormalizationConfig(
        nfkc=config.nfkc, remove_control=config.remove_control, normalize_whitespace=config.normalize_whitespace
    )
    if not config.train_file:
        raise UserError("--train_file is required")
    train_source = open_source(config.train_file, "train", config.encoding)
    splits = {"train": _read_split(train_source, config, normalization, labels_required=True)}

    validation_source = None
    if config.validation_file:
        validation_source = open_source(config.validation_file, "validation", config.encoding)
    elif train_source.sibling_splits.get("validation"):
        # A DatasetDict saved with its own validation split: use it rather than splitting train again.
        validation_source = open_source(config.train_file, "validation", config.encoding)
        logger.info("using the %r split of %s for validation", validation_source.split, config.train_file)
    if validation_source is not None:
        splits["validation"] = _read_split(validation_source, config, normalization, labels_required=True)
    if config.test_file:
        test_source = open_source(config.test_file, "test", config.encoding)
        splits["test"] = _read_split(test_source, config, normalization, labels_required=False)

    problem_type, reason = _detect_problem_type(config, splits["train"])
    logger.info("task: %s (%s)", problem_type, reason)
    for split in splits.values():
        _parse_labels(split, problem_type, config)

    label_names = _label_names(problem_type, splits["train"])
    for role in ("validation", "test"):
        if role in splits:
            _check_known_labels(splits[role], label_names, problem_type)
    if problem_type == SINGLE_LABEL and len(label_names) < 2:
        raise UserError(
            f"{config.train_file}: the training labels hold only one class {label_names}; a classifier "
            f"needs at least two (is --label_column {config.label_column!r} the right column?)"
        )

    if "validation" not in splits:
        splits["train"], splits["validation"] = _split_train(splits["train"], problem_type, config)

    stats: dict = {"task": {"problem_type": problem_type, "reason": reason}}
    result = {}
    for role, split in splits.items():
        result[role] = _to_dataset(split, problem_type, label_names, config.text_pair_column is not None)
        stats[role] = split.stats_dict(problem_type, label_names)
    _note_overlap(splits, stats)
    _log_skips(stats)
    return PreparedData(
        train=result["train"],
        validation=result["validation"],
        test=result.get("test"),
        problem_type=problem_type,
        label_names=label_names,
        stats=stats,
    )


def tokenize_dataset(
    dataset: datasets.Dataset, tokenizer: "PreTrainedTokenizerBase", max_length: int, has_pair: bool
) -> tuple[datasets.Dataset, int]:
    """Tokenize "text" (+ "text_pair") into input_ids, attention_mask, token_type_ids, unpadded.

    Texts longer than `max_length` tokens are truncated exactly as `tokenizer(..., truncation=True,
    max_length=max_length)` would (longest_first for pairs); returns the dataset (model inputs
    plus "labels" when present; text columns dropped) and how many examples were truncated.
    Each text is tokenized once: slow tokenizers (BertJapaneseTokenizer runs MeCab in Python) are
    tokenized without special tokens and assembled with `prepare_for_model`, which is what their
    own `__call__` does; fast tokenizers report truncation through their overflowing tokens.
    """
    special_count = tokenizer.num_special_tokens_to_add(pair=has_pair)
    if max_length <= special_count:
        raise UserError(
            f"--max_length {max_length} leaves no room for text next to the {special_count} special tokens; raise it"
        )
    if has_pair and "text_pair" not in dataset.column_names:
        raise ValueError("has_pair=True but the dataset has no 'text_pair' column")
    encode = _fast_encoder(tokenizer, max_length, has_pair) if tokenizer.is_fast else _slow_encoder(tokenizer, max_length, has_pair)
    text_columns = [c for c in dataset.column_names if c != "labels"]
    # Deterministic, so a disk-backed dataset's cache is reused only for the very same tokenizer
    # (its vocabulary, not just its name) and settings; also spares datasets hashing the closure.
    fingerprint = datasets.fingerprint.Hasher.hash(
        [dataset._fingerprint, type(tokenizer).__name__, sorted(tokenizer.get_vocab().items()),
         tokenizer.truncation_side, max_length, has_pair]
    )
    with _quiet_transformers():
        tokenized = dataset.map(
            encode,
            batched=True,
            batch_size=256,
            remove_columns=text_columns,
            new_fingerprint=fingerprint,
            desc="tokenizing",
        )
    if "_truncated" not in tokenized.column_names:  # an empty dataset gets no new columns
        return tokenized, 0
    truncated = sum(tokenized["_truncated"])
    tokenized = tokenized.remove_columns("_truncated")
    return tokenized, int(truncated)


def open_source(path: str | os.PathLike, role: str, encoding: str = "auto") -> "DataSource":
    """Open a data file or `save_to_disk` directory for one role ("train", "validation", "test")."""
    path = Path(path)
    flag = FLAG_BY_ROLE[role]
    if not path.exists():
        raise UserError(f"{flag} {path} does not exist; check the path")
    if path.is_dir():
        return _open_saved_dataset(path, role)
    if path.suffix.lower() in (".parquet", ".pq"):
        return _open_parquet(path)
    fmt = tabular.detect_format(path)
    encoding = tabular.resolve_encoding(path, encoding)
    columns = tabular.read_columns(path, encoding=encoding, fmt=fmt)

    def rows(_needed: list[str]) -> Iterator[tuple[str, dict]]:
        for line_number, row in tabular.iter_rows(path, encoding=encoding, fmt=fmt):
            yield f"line {line_number}", row

    return DataSource(path=path, fmt=fmt, encoding=encoding, columns=columns, rows=rows)


# --------------------------------------------------------------------------- sources


@dataclass
class DataSource:
    """One readable table: its columns and a row iterator yielding ("line 12" / "row 3", row dict)."""

    path: Path
    fmt: str  # csv | tsv | jsonl | parquet | dataset
    columns: list[str]
    rows: Callable[[list[str]], Iterator[tuple[str, dict]]]
    encoding: str | None = None
    split: str | None = None  # split name inside a DatasetDict
    class_names: dict[str, list[str]] = field(default_factory=dict)  # ClassLabel names per column
    sibling_splits: dict[str, str] = field(default_factory=dict)  # role -> split name in the same DatasetDict

    def describe(self) -> str:
        """The file (and split) as the user named it."""
        return f"{self.path} (split {self.split!r})" if self.split else str(self.path)


def _open_parquet(path: Path) -> DataSource:
    import pyarrow.parquet as pq

    try:
        parquet_file = pq.ParquetFile(path)
    except Exception as err:  # pyarrow raises ArrowInvalid/OSError for non-Parquet bytes
        raise UserError(f"{path} is not a readable Parquet file ({err})") from None
    columns = list(parquet_file.schema_arrow.names)

    def rows(needed: list[str]) -> Iterator[tuple[str, dict]]:
        index = 0
        for batch in parquet_file.iter_batches(batch_size=4096, columns=needed):
            for row in batch.to_pylist():
                yield f"row {index} (0-based)", row
                index += 1

    return DataSource(path=path, fmt="parquet", columns=columns, rows=rows)


def _open_saved_dataset(path: Path, role: str) -> DataSource:
    flag = FLAG_BY_ROLE[role]
    is_dict = (path / "dataset_dict.json").is_file()
    if not is_dict and not (path / "dataset_info.json").is_file():
        raise UserError(
            f"{flag} {path} is a directory but not a dataset saved with datasets' save_to_disk "
            "(no dataset_dict.json or dataset_info.json); give a CSV/TSV/JSONL/Parquet file or such a directory"
        )
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as err:  # corrupt or partial directories raise many different errors
        raise UserError(f"{flag} {path} could not be loaded with datasets.load_from_disk ({err})") from None
    split_name = None
    siblings: dict[str, str] = {}
    if isinstance(loaded, datasets.DatasetDict):
        for other_role, names in SPLIT_NAMES.items():
            found = next((name for name in names if name in loaded), None)
            if found:
                siblings[other_role] = found
        split_name = siblings.get(role)
        if split_name is None:
            if role == "train" and len(loaded) == 1:
                split_name = next(iter(loaded))  # a lone split is the training data whatever its name
            else:
                raise UserError(
                    f"{flag} {path} holds the splits {list(loaded)} but none named "
                    f"{' / '.join(SPLIT_NAMES[role])}; save the {role} data under one of these names"
                )
        dataset = loaded[split_name]
    else:
        dataset = loaded

    class_names = {}
    for name, feature in dataset.features.items():
        names = getattr(feature, "names", None) or getattr(getattr(feature, "feature", None), "names", None)
        if names:
            class_names[name] = list(names)

    def rows(needed: list[str]) -> Iterator[tuple[str, dict]]:
        selected = dataset.select_columns(needed)
        index = 0
        for batch in selected.iter(batch_size=1024):
            for values in zip(*(batch[column] for column in needed)):
                yield f"row {index} (0-based)", dict(zip(needed, values))
                index += 1

    return DataSource(
        path=path, fmt="dataset", columns=list(dataset.column_names), rows=rows, split=split_name,
        class_names=class_names, sibling_splits=siblings,
    )


# --------------------------------------------------------------------------- reading


@dataclass
class _Example:
    location: str
    text: str
    text_pair: str | None
    raw_label: object
    label: object = None  # parsed: a name, a list of names, or a float


@dataclass
class _Split:
    source: DataSource
    examples: list[_Example]
    has_labels: bool
    rows_read: int = 0
    counts: Counter = field(default_factory=Counter)
    skipped_examples: list[str] = field(default_factory=list)
    origin: dict = field(default_factory=dict)
    declared_label_names: list[str] | None = None  # ClassLabel names of a saved dataset's label column

    def skip(self, reason: str, location: str) -> None:
        self.counts[reason] += 1
        if len(self.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.skipped_examples.append(f"{location}: {reason.replace('skipped_', '').replace('_', ' ')}")

    def stats_dict(self, problem_type: str, label_names: list[str]) -> dict:
        stats = {
            **self.origin,
            "rows_read": self.rows_read,
            "rows_used": len(self.examples),
            "skipped_empty_text": self.counts["skipped_empty_text"],
            "skipped_empty_text_pair": self.counts["skipped_empty_text_pair"],
            "skipped_missing_label": self.counts["skipped_missing_label"],
            "skipped_examples": list(self.skipped_examples),
            "has_labels": self.has_labels,
        }
        if self.has_labels and problem_type == SINGLE_LABEL:
            counts = Counter(example.label for example in self.examples)
            stats["label_counts"] = {name: counts.get(name, 0) for name in label_names}
        elif self.has_labels and problem_type == MULTI_LABEL:
            counts = Counter(name for example in self.examples for name in example.label)
            stats["label_counts"] = {name: counts.get(name, 0) for name in label_names}
            stats["rows_without_labels"] = sum(1 for example in self.examples if not example.label)
        elif self.has_labels and self.examples:
            values = [example.label for example in self.examples]
            stats["label_min"], stats["label_max"] = min(values), max(values)
            stats["label_mean"] = sum(values) / len(values)
        return stats


def _read_split(source: DataSource, config: "TrainConfig", normalization: NormalizationConfig, labels_required: bool) -> _Split:
    """Read all rows of one source: clean texts, drop (and count) empty ones, keep raw labels."""
    text_column, pair_column, label_column = config.text_column, config.text_pair_column, config.label_column
    where = source.describe()
    problems = []
    for flag, column in (("--text_column", text_column), ("--text_pair_column", pair_column)):
        if column is not None and column not in source.columns:
            problems.append(f"{flag} {column!r}{tabular.suggest_column(column, source.columns)}")
    has_labels = label_column in source.columns
    if labels_required and not has_labels:
        problems.append(f"--label_column {label_column!r}{tabular.suggest_column(label_column, source.columns)}")
    if problems:
        headerless = source.fmt in ("csv", "tsv") and text_column not in source.columns
        header_hint = " (the first line of a CSV/TSV file must be its header row)" if headerless else ""
        raise UserError(
            f"{where} has no column {' / '.join(problems)}; its columns are {source.columns}{header_hint}. "
            "Name the right ones with --text_column / --text_pair_column / --label_column"
        )

    needed = [c for c in (text_column, pair_column, label_column if has_labels else None) if c is not None]
    label_class_names = source.class_names.get(label_column)
    split = _Split(
        source=source, examples=[], has_labels=has_labels,
        origin={"source": where, "format": source.fmt, **({"encoding": source.encoding} if source.encoding else {})},
        declared_label_names=label_class_names,
    )
    for location, row in source.rows(needed):
        split.rows_read += 1
        text = _clean_text(row.get(text_column), normalization, where, location, text_column)
        if not text:
            _skip_or_fail(split, config.strict, "skipped_empty_text", location, f"empty or missing text in column {text_column!r}")
            continue
        text_pair = None
        if pair_column is not None:
            text_pair = _clean_text(row.get(pair_column), normalization, where, location, pair_column)
            if not text_pair:
                _skip_or_fail(split, config.strict, "skipped_empty_text_pair", location, f"empty or missing text in column {pair_column!r}")
                continue
        raw_label = row.get(label_column) if has_labels else None
        if label_class_names is not None:
            raw_label = _class_label_to_name(raw_label, label_class_names)
        if has_labels and tabular.is_missing(raw_label):
            if labels_required:
                _skip_or_fail(split, config.strict, "skipped_missing_label", location, f"missing label in column {label_column!r}")
                continue
        split.examples.append(_Example(location, text, text_pair, raw_label))

    if split.rows_read == 0:
        raise UserError(f"{where} holds no data rows")
    if not labels_required and has_labels:
        _settle_test_labels(split, config)
    if not split.examples:
        raise UserError(
            f"{where}: none of its {split.rows_read} rows has both a text and a label "
            f"(columns {needed}); check --text_column / --label_column and the file's contents"
        )
    return split


def _settle_test_labels(split: _Split, config: "TrainConfig") -> None:
    """A test file whose label column is empty is unlabelled; otherwise rows without labels are skipped."""
    missing = [example for example in split.examples if tabular.is_missing(example.raw_label)]
    if len(missing) == len(split.examples):
        split.has_labels = False
        return
    for example in missing:
        _skip_or_fail(split, config.strict, "skipped_missing_label", example.location, f"missing label in column {config.label_column!r}")
    split.examples = [example for example in split.examples if not tabular.is_missing(example.raw_label)]


def _skip_or_fail(split: _Split, strict: bool, reason: str, location: str, message: str) -> None:
    if strict:
        raise UserError(
            f"{split.source.describe()}, {location}: {message}; fix the row, or drop --strict to skip such rows"
        )
    split.skip(reason, location)


def _clean_text(value: object, normalization: NormalizationConfig, where: str, location: str, column: str) -> str:
    if tabular.is_missing(value):
        return ""
    if isinstance(value, bool):
        value = str(value).lower()
    elif isinstance(value, (int, float)):
        value = _number_to_text(value)
    elif not isinstance(value, str):
        raise UserError(
            f"{where}, {location}: column {column!r} holds a {type(value).__name__} ({str(value)[:60]}), "
            "not a text; choose the text column with --text_column / --text_pair_column"
        )
    return normalize_text(value, normalization)


def _number_to_text(value: int | float) -> str:
    # 3.0 read from a float column is the text "3", as the user typed it in the spreadsheet
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _class_label_to_name(value: object, names: list[str]) -> object:
    """ClassLabel ids (or lists of them) in a saved dataset -> their names."""
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else None  # -1 is datasets' "no label"
    if isinstance(value, list):
        return [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in value]
    return value


# --------------------------------------------------------------------------- task and labels


def _detect_problem_type(config: "TrainConfig", train: _Split) -> tuple[str, str]:
    if config.task != "auto":
        return PROBLEM_TYPE_BY_TASK[config.task], f"--task {config.task}"
    if config.label_delimiter:
        return MULTI_LABEL, f"--label_delimiter {config.label_delimiter!r}"
    raw_labels = [example.raw_label for example in train.examples]
    if any(isinstance(value, (list, tuple)) for value in raw_labels):
        return MULTI_LABEL, f"column {config.label_column!r} holds lists"
    if raw_labels and all(isinstance(value, str) and _parse_list_text(value) is not None for value in raw_labels):
        return MULTI_LABEL, f"column {config.label_column!r} holds lists written as text"
    numbers = [_as_number(value) for value in raw_labels]
    if numbers and all(number is not None for number in numbers) and not all(number.is_integer() for number in numbers):
        return REGRESSION, f"column {config.label_column!r} holds non-integer numbers"
    return SINGLE_LABEL, f"one label per row in column {config.label_column!r}"


def _as_number(value: object) -> float | None:
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


def _label_name(value: object, where: str, location: str) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return _number_to_text(value)
    if isinstance(value, str):
        return value.strip()
    raise UserError(
        f"{where}, {location}: a label of type {type(value).__name__} ({str(value)[:60]}) where a "
        "class name was expected; for several labels per row use --task multi_label"
    )


def _parse_labels(split: _Split, problem_type: str, config: "TrainConfig") -> None:
    if not split.has_labels:
        return
    where = split.source.describe()
    for example in split.examples:
        value = example.raw_label
        if problem_type == SINGLE_LABEL:
            if isinstance(value, (list, tuple)):
                raise UserError(
                    f"{where}, {example.location}: a list label {value} but the task is single-label; "
                    "use --task multi_label (or --task auto) for several labels per row"
                )
            example.label = _label_name(value, where, example.location)
        elif problem_type == REGRESSION:
            number = _as_number(value)
            if number is None:
                raise UserError(
                    f"{where}, {example.location}: label {value!r} is not a number, but the task is "
                    "regression; fix the value, or use --task single_label for class names"
                )
            example.label = number
        else:
            example.label = _multi_label_names(value, config.label_delimiter, where, example.location)


def _multi_label_names(value: object, delimiter: str | None, where: str, location: str) -> list[str]:
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif isinstance(value, str) and delimiter:
        items = value.split(delimiter)
    elif isinstance(value, str) and _parse_list_text(value) is not None:
        items = _parse_list_text(value)
    else:
        items = [value]
    names = [_label_name(item, where, location) for item in items if not tabular.is_missing(item)]
    return list(dict.fromkeys(name for name in names if name))  # drop duplicates, keep order


def label_sort_key(name: str) -> tuple:
    """Stable label order: numeric-looking names by value ("2" < "10"), then the rest by text."""
    number = _as_number(name)
    if number is not None:
        return (0, number, name)
    return (1, name)


def _label_names(problem_type: str, train: _Split) -> list[str]:
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


def _check_known_labels(split: _Split, label_names: list[str], problem_type: str) -> None:
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


# --------------------------------------------------------------------------- splitting and datasets


def _split_train(train: _Split, problem_type: str, config: "TrainConfig") -> tuple[_Split, _Split]:
    """Hold out `config.validation_split` of the training rows: seeded, shuffled, stratified when single-label."""
    from sklearn.model_selection import train_test_split

    where = train.source.describe()
    count = len(train.examples)
    validation_count = math.ceil(config.validation_split * count)  # sklearn's rounding for a float size
    train_count = count - validation_count
    stratify = None
    if problem_type == SINGLE_LABEL:
        stratify = [example.label for example in train.examples]
        class_counts = Counter(stratify)
        singletons = sorted((name for name, n in class_counts.items() if n < 2), key=label_sort_key)
        if singletons:
            shown = ", ".join(repr(name) for name in singletons[:10]) + (" ..." if len(singletons) > 10 else "")
            raise UserError(
                f"{where}: the class(es) {shown} have only one example, so a stratified validation split "
                "cannot hold them out; add examples, or pass --validation_file with your own validation data"
            )
        if validation_count < len(class_counts) or train_count < len(class_counts):
            raise UserError(
                f"{where}: --validation_split {config.validation_split} of {count} rows gives "
                f"{validation_count} validation rows, fewer than the {len(class_counts)} classes a stratified "
                "split needs; raise --validation_split or pass --validation_file"
            )
    elif validation_count < 1 or train_count < 1:
        raise UserError(
            f"{where}: --validation_split {config.validation_split} of {count} rows leaves an empty split; "
            "use more data or pass --validation_file"
        )
    train_indices, validation_indices = train_test_split(
        list(range(count)), test_size=validation_count, random_state=config.seed, shuffle=True, stratify=stratify
    )
    origin = {
        "source": f"{where} (held-out split)",
        "format": train.source.fmt,
        "validation_split": config.validation_split,
        "seed": config.seed,
        "stratified": stratify is not None,
    }
    held_out = _Split(
        source=train.source, examples=[train.examples[i] for i in validation_indices], has_labels=True,
        rows_read=validation_count, origin=origin,
    )
    kept = _Split(
        source=train.source, examples=[train.examples[i] for i in train_indices], has_labels=True,
        rows_read=train.rows_read, counts=train.counts, skipped_examples=train.skipped_examples,
        origin={**train.origin, "rows_held_out_for_validation": validation_count},
        declared_label_names=train.declared_label_names,
    )
    return kept, held_out


def _to_dataset(split: _Split, problem_type: str, label_names: list[str], has_pair: bool) -> datasets.Dataset:
    columns: dict[str, list] = {"text": [example.text for example in split.examples]}
    features = {"text": datasets.Value("string")}
    if has_pair:
        columns["text_pair"] = [example.text_pair for example in split.examples]
        features["text_pair"] = datasets.Value("string")
    if split.has_labels:
        if problem_type == SINGLE_LABEL:
            label2id = {name: index for index, name in enumerate(label_names)}
            columns["labels"] = [label2id[example.label] for example in split.examples]
            features["labels"] = datasets.ClassLabel(names=label_names)
        elif problem_type == MULTI_LABEL:
            label2id = {name: index for index, name in enumerate(label_names)}
            multi_hot = []
            for example in split.examples:
                row = [0.0] * len(label_names)
                for name in example.label:
                    row[label2id[name]] = 1.0
                multi_hot.append(row)
            columns["labels"] = multi_hot
            features["labels"] = datasets.List(datasets.Value("float32"))
        else:
            columns["labels"] = [float(example.label) for example in split.examples]
            features["labels"] = datasets.Value("float32")
    return datasets.Dataset.from_dict(columns, features=datasets.Features(features))


def _note_overlap(splits: dict[str, _Split], stats: dict) -> None:
    """Count validation/test texts that also occur in training: they inflate the scores."""
    train_texts = {(example.text, example.text_pair) for example in splits["train"].examples}
    for role in ("validation", "test"):
        if role in splits:
            overlap = sum((example.text, example.text_pair) in train_texts for example in splits[role].examples)
            stats[role]["texts_also_in_train"] = overlap
            if overlap:
                logger.warning("%d %s texts also occur in the training data; their scores will look better than they are", overlap, role)


def _log_skips(stats: dict) -> None:
    for role in ("train", "validation", "test"):
        split_stats = stats.get(role)
        if not split_stats:
            continue
        skipped = {key: value for key, value in split_stats.items() if key.startswith("skipped_") and key != "skipped_examples" and value}
        if skipped:
            logger.warning(
                "%s (%s): skipped %s; e.g. %s (use --strict to stop on such rows)",
                role, split_stats["source"], skipped, "; ".join(split_stats["skipped_examples"]),
            )


# --------------------------------------------------------------------------- tokenization


def _slow_encoder(tokenizer: "PreTrainedTokenizerBase", max_length: int, has_pair: bool):
    special_count = tokenizer.num_special_tokens_to_add(pair=has_pair)

    def encode(batch: dict) -> dict:
        output: dict[str, list] = {"input_ids": [], "attention_mask": [], "token_type_ids": [], "_truncated": []}
        pairs = batch["text_pair"] if has_pair else [None] * len(batch["text"])
        for text, text_pair in zip(batch["text"], pairs):
            ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text))
            pair_ids = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(text_pair)) if has_pair else None
            too_long = len(ids) + (len(pair_ids) if pair_ids is not None else 0) + special_count > max_length
            encoded = tokenizer.prepare_for_model(
                ids, pair_ids, add_special_tokens=True, truncation="longest_first" if too_long else False,
                max_length=max_length, return_attention_mask=True, return_token_type_ids=True,
            )
            output["input_ids"].append(encoded["input_ids"])
            output["attention_mask"].append(encoded["attention_mask"])
            output["token_type_ids"].append(encoded["token_type_ids"])
            output["_truncated"].append(too_long)
        return output

    return encode


def _fast_encoder(tokenizer: "PreTrainedTokenizerBase", max_length: int, has_pair: bool):
    def encode(batch: dict) -> dict:
        encoded = tokenizer(
            batch["text"], batch["text_pair"] if has_pair else None, truncation=True, max_length=max_length,
            return_attention_mask=True, return_token_type_ids=True,
        )
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "token_type_ids": encoded["token_type_ids"],
            # the Rust tokenizer keeps what truncation cut off: non-empty means truncated
            "_truncated": [bool(encoding.overflowing) for encoding in encoded.encodings],
        }

    return encode


class _quiet_transformers:
    """Silence transformers' per-call truncation warnings while we count truncations ourselves."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._logging = hf_logging
        self._level = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()

    def __exit__(self, *exc):
        self._logging.set_verbosity(self._level)
        return False
