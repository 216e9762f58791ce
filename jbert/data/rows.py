"""Rows -> cleaned examples: texts normalised, empty ones skipped and counted, raw labels kept.

`read_split` reads every row of one `DataSource` into a `SplitRows`: the examples (location, text,
text pair, raw label) and what was skipped and why, with the first few locations so a user can look
at them. Labels are parsed later (`jbert.data.labels`), once the problem type is known from all of them.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from jbert.core import readers as tabular
from jbert.core.errors import UserError
from jbert.core.normalize import NormalizationConfig, normalize_text
from jbert.data.files import DataSource
from jbert.data.options import DataOptions

MAX_SKIPPED_EXAMPLES = 5  # locations of skipped rows kept in stats, so the user can look at them
# Label texts that mean "no value": what pandas (str(float("nan")), <NA>), Python (str(None)), JSON
# and SQL write for a missing value. As labels they would silently become classes named "NaN" or
# "None"; they count as missing labels instead (skipped and counted, or an error with --strict).
# Exact spellings only: a class written "none" (lower case, "no aspect") stays a class.
MISSING_LABEL_WORDS = frozenset({"NaN", "nan", "NAN", "None", "null", "NULL", "Null", "<NA>"})


def is_missing_label(value: object) -> bool:
    """True for a label cell with no value: empty, None, NaN, or one of MISSING_LABEL_WORDS."""
    return tabular.is_missing(value) or (isinstance(value, str) and value.strip() in MISSING_LABEL_WORDS)


@dataclass
class Example:
    """One usable row: where it came from, its cleaned text(s) and its label (raw, then parsed)."""

    location: str
    text: str
    text_pair: str | None
    raw_label: object
    label: object = None  # parsed: a name, a list of names, or a float


@dataclass
class SplitRows:
    """The examples of one split, and the bookkeeping the data report shows (rows read, skips)."""

    source: DataSource
    examples: list[Example]
    has_labels: bool
    rows_read: int = 0
    counts: Counter = field(default_factory=Counter)
    skipped_examples: list[str] = field(default_factory=list)
    origin: dict = field(default_factory=dict)
    declared_label_names: list[str] | None = None  # ClassLabel names of a saved dataset's label column
    missing_label_words: Counter = field(default_factory=Counter)  # "NaN" -> rows whose label was that text

    def skip(self, reason: str, location: str) -> None:
        """Count a skipped row under `reason` and keep its location if there is room."""
        self.counts[reason] += 1
        if len(self.skipped_examples) < MAX_SKIPPED_EXAMPLES:
            self.skipped_examples.append(f"{location}: {reason.replace('skipped_', '').replace('_', ' ')}")

    def duplicate_count(self) -> int:
        """Examples whose text (and text pair) repeats an earlier example's: the copies, not the first."""
        return len(self.examples) - len({(example.text, example.text_pair) for example in self.examples})

    def note_missing_label(self, value: object) -> bool:
        """Whether `value` is a missing label; a MISSING_LABEL_WORDS text is counted by its spelling."""
        if tabular.is_missing(value):
            return True
        if isinstance(value, str) and value.strip() in MISSING_LABEL_WORDS:
            self.missing_label_words[value.strip()] += 1
            return True
        return False

    def stats_dict(self) -> dict:
        """Where the split came from and what was read, used and skipped (labels: `labels.label_stats`)."""
        stats = {
            **self.origin,
            "rows_read": self.rows_read,
            "rows_used": len(self.examples),
            "skipped_empty_text": self.counts["skipped_empty_text"],
            "skipped_empty_text_pair": self.counts["skipped_empty_text_pair"],
            "skipped_missing_label": self.counts["skipped_missing_label"],
            "missing_label_words": dict(self.missing_label_words),
            "duplicate_texts": self.duplicate_count(),
            "skipped_examples": list(self.skipped_examples),
            "has_labels": self.has_labels,
        }
        return stats


def read_split(source: DataSource, config: DataOptions, normalization: NormalizationConfig, labels_required: bool) -> SplitRows:
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
    split = SplitRows(
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
            raw_label = class_label_to_name(raw_label, label_class_names)
        if has_labels and labels_required and split.note_missing_label(raw_label):
            _skip_or_fail(split, config.strict, "skipped_missing_label", location,
                          _missing_label_message(raw_label, label_column))
            continue
        split.examples.append(Example(location, text, text_pair, raw_label))

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


def _settle_test_labels(split: SplitRows, config: DataOptions) -> None:
    """A test file whose label column is empty is unlabelled; otherwise rows without labels are skipped."""
    missing = [example for example in split.examples if is_missing_label(example.raw_label)]
    if len(missing) == len(split.examples):
        split.has_labels = False
        return
    for example in missing:
        split.note_missing_label(example.raw_label)
        _skip_or_fail(split, config.strict, "skipped_missing_label", example.location,
                      _missing_label_message(example.raw_label, config.label_column))
    split.examples = [example for example in split.examples if not is_missing_label(example.raw_label)]


def _missing_label_message(value: object, column: str) -> str:
    if isinstance(value, str) and value.strip() in MISSING_LABEL_WORDS:
        return f"missing label in column {column!r} (the text {value.strip()!r} means no value)"
    return f"missing label in column {column!r}"


def _skip_or_fail(split: SplitRows, strict: bool, reason: str, location: str, message: str) -> None:
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
        value = number_to_text(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        raise binary_column_error(where, location, column)
    elif not isinstance(value, str):
        raise UserError(
            f"{where}, {location}: column {column!r} holds a {type(value).__name__} ({str(value)[:60]}), "
            "not a text; choose the text column with --text_column / --text_pair_column"
        )
    return normalize_text(value, normalization)


def binary_column_error(where: str, location: str, column: str) -> UserError:
    """The error for a binary cell (a Parquet `binary` column, bytes in a saved dataset) where text belongs."""
    return UserError(
        f"{where}, {location}: column {column!r} holds binary data (bytes), not text; store it as a string "
        "column (in pandas: df[column] = df[column].str.decode('utf-8') before to_parquet), or choose "
        "another column with --text_column / --text_pair_column / --label_column"
    )


def number_to_text(value: int | float) -> str:
    """A number as the user typed it in the spreadsheet: 3.0 read from a float column is the text "3"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def class_label_to_name(value: object, names: list[str]) -> object:
    """ClassLabel ids (or lists of them) in a saved dataset -> their names."""
    if isinstance(value, int) and not isinstance(value, bool):
        return names[value] if 0 <= value < len(names) else None  # -1 is datasets' "no label"
    if isinstance(value, list):
        return [names[v] if isinstance(v, int) and 0 <= v < len(names) else v for v in value]
    return value

