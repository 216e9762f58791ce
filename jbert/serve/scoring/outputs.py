"""Writing scored rows: JSONL, CSV or TSV bytes for one output file, and the prediction columns.

The prediction columns are prefixed (`predicted_label`, `predicted_score`, ...) so they never
overwrite an input column such as a gold `label`; an input that already has one is refused.
"""

from __future__ import annotations

import csv
import io
import json
import math

from jbert.core.errors import UserError

TEXT_OUTPUT_FORMATS = ("jsonl", "csv", "tsv")
ABSTENTION_COLUMNS = ["abstained", "predicted_label_if_accepted"]


def prediction_columns(problem_type: str, all_scores: bool, nested_scores: bool, abstention: bool = False) -> list[str]:
    """The columns scoring adds, in output order (`error` last).

    `nested_scores`: all scores as one "scores" object (JSONL, Parquet) rather than one
    score_<label> column per class (CSV/TSV, added by the writer). `abstention`: the model has a
    min_confidence, so `abstained` and `predicted_label_if_accepted` follow `predicted_label`.
    """
    regression = problem_type == "regression"
    multi_label = problem_type == "multi_label_classification"
    return (
        ([] if regression else ["predicted_label"]) + (["predicted_labels"] if multi_label else [])
        + (ABSTENTION_COLUMNS if abstention else [])
        + ["predicted_score", "truncated"] + (["scores"] if all_scores and nested_scores and not regression else [])
        + ["error"]
    )


def has_abstention(classifier) -> bool:
    """True when the classifier answers "abstained" below a min_confidence (its rows get ABSTENTION_COLUMNS).

    Read with getattr: any object with the runtime's predict interface can score, and one that has
    never heard of abstention never abstains.
    """
    return getattr(classifier, "min_confidence", None) is not None


class OutputWriter:
    """Formats result rows as JSONL, CSV or TSV bytes; the caller writes and counts them."""

    def __init__(self, fmt: str, encoding: str, input_columns: list[str], prediction_columns: list[str], score_labels: list[str] | None):
        self.fmt = fmt
        self.encoding = encoding
        self.input_columns = input_columns
        self.prediction_columns = prediction_columns
        self.score_labels = score_labels
        self.columns = input_columns + [c for c in prediction_columns if c not in input_columns]
        if score_labels and fmt != "jsonl":
            self.columns += [f"score_{label}" for label in score_labels]
        clash = sorted(set(input_columns) & set(prediction_columns))
        if clash:
            raise UserError(
                f"the input already has the column(s) {clash} that scoring writes; rename them in the input"
            )

    def header(self) -> bytes:
        """The header line (CSV/TSV) or nothing (JSONL)."""
        if self.fmt == "jsonl":
            return b""
        return self._encode(self._csv_text([self.columns]))

    def rows(self, rows: list[dict]) -> bytes:
        """The encoded bytes of result rows."""
        if self.fmt == "jsonl":
            # Every row gets every prediction key (null where not scored), in a fixed order.
            predicted = set(self.prediction_columns)
            text = "".join(
                json_line({**{k: v for k, v in row.items() if k not in predicted},
                           **{c: row.get(c) for c in self.prediction_columns}})
                for row in rows
            )
            return self._encode(text)
        table = []
        for row in rows:
            values = []
            for column in self.columns:
                value = row.get(column)
                if column.startswith("score_") and column not in row and self.score_labels:
                    value = (row.get("scores") or {}).get(column[len("score_"):])
                values.append(cell_text(value))
            table.append(values)
        return self._encode(self._csv_text(table))

    def _csv_text(self, table: list[list]) -> str:
        buffer = io.StringIO()
        delimiter = "\t" if self.fmt == "tsv" else ","
        minimal = csv.writer(buffer, delimiter=delimiter, lineterminator="\n")
        # csv quotes only the characters of its own line terminator, so a bare "\r" in a cell would
        # be written unquoted and split the row when read back: such rows are written fully quoted.
        quote_all = csv.writer(buffer, delimiter=delimiter, lineterminator="\n", quoting=csv.QUOTE_ALL)
        for values in table:
            (quote_all if any("\r" in value for value in values) else minimal).writerow(values)
        return buffer.getvalue()

    def _encode(self, text: str) -> bytes:
        # The BOM of utf-8-sig is written once, by the caller, at the start of the file.
        encoding = "utf-8" if self.encoding.replace("_", "-").lower() == "utf-8-sig" else self.encoding
        return text.encode(encoding, errors="replace")


def json_value(value):
    """`value` as strict JSON can hold it: NaN and ±Infinity become null, bytes become text.

    Python's json writes NaN/Infinity (not JSON; most readers refuse the line) and cannot write
    bytes (a Parquet binary column) at all. Bytes are decoded as UTF-8, a byte that is not UTF-8
    written as a \\xNN escape.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: json_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_value(item) for item in value]
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value).decode("utf-8", errors="backslashreplace")
    return value


def json_line(row: dict) -> str:
    """One JSON line of a row, strict JSON (allow_nan=False: a non-finite number left over is a bug, not output)."""
    return json.dumps(json_value(row), ensure_ascii=False, allow_nan=False, default=str) + "\n"


def cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(json_value(value), ensure_ascii=False, allow_nan=False, default=str)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return json_value(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
