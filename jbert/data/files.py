"""Data files -> rows: every supported format opened the same way, as a `DataSource`.

CSV, TSV and JSON lines go through `jbert.core.readers` (encodings detected, bad lines named by
number); Parquet through pyarrow; `datasets.save_to_disk` directories (a Dataset or a DatasetDict,
whose validation split is found by its usual names) through `datasets.load_from_disk`. Each source
yields ("line 12" or "row 3 (0-based)", row dict), so later messages can point at the row.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import datasets

from jbert.core import readers as tabular
from jbert.core.errors import UserError
from jbert.core.safe_input import check_regular_file

# Split names accepted in a datasets.save_to_disk DatasetDict, per role, in order of preference.
SPLIT_NAMES = {
    "train": ("train",),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test",),
}
FLAG_BY_ROLE = {"train": "--train_file", "validation": "--validation_file", "test": "--test_file"}


def open_source(path: str | os.PathLike, role: str, encoding: str = "auto") -> "DataSource":
    """Open a data file or `save_to_disk` directory for one role ("train", "validation", "test")."""
    path = Path(path)
    flag = FLAG_BY_ROLE[role]
    if not path.exists():
        raise UserError(f"{flag} {path} does not exist; check the path")
    if path.is_dir():
        return _open_saved_dataset(path, role)
    # A FIFO or a device (/dev/zero) never ends: refused before a reader waits on it or fills memory.
    check_regular_file(path, f"{flag} {path}")
    if path.suffix.lower() in (".parquet", ".pq"):
        return _open_parquet(path)
    fmt = tabular.detect_format(path)
    encoding = tabular.resolve_encoding(path, encoding)
    columns = tabular.read_columns(path, encoding=encoding, fmt=fmt)

    def rows(_needed: list[str]) -> Iterator[tuple[str, dict]]:
        for line_number, row in tabular.iter_rows(path, encoding=encoding, fmt=fmt):
            yield f"line {line_number}", row

    return DataSource(path=path, fmt=fmt, encoding=encoding, columns=columns, rows=rows)



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

