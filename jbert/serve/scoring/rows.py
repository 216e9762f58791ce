"""Records -> scored rows: the one place that decides what a scored row holds, for every engine.

The local scorer (`jbert.serve.scoring.run`) and the Ray engine (`jbert.serve.scoring.ray_engine`) both call
`score_records`, so a row gets the same label, score and error message whichever runs it.
"""

from __future__ import annotations

import math
from typing import Iterable

from jbert.serve.runtime.batch_inputs import DEFAULT_MAX_TEXT_CHARS
from jbert.serve.scoring.records import Record


def score_records(classifier, records: Iterable[Record], text_column: str, pair_column: str | None, *,
                  batch_size: int = 32, truncate: bool = True, all_scores: bool = False,
                  max_text_chars: int = DEFAULT_MAX_TEXT_CHARS, long_text: str = "error",
                  counts: dict | None = None) -> list[dict]:
    """One result row per record: its input columns + predictions, or + `error` (never dropped).

    `classifier`: a `jbert.serve.runtime.OnnxClassifier`. `truncate=False` marks texts longer
    than max_length as errors. `all_scores` adds a "scores" {label: score} object. A text (or
    pair) of more than `max_text_chars` characters is an error row, or with
    `long_text="truncate-chars"` its first `max_text_chars` characters are scored and the row is
    marked truncated; either way nothing that long reaches the tokenizer. `counts`, when given, is
    increased in place: "scored", "errors", "truncated", "over_max_text_chars".
    """
    regression = classifier.problem_type == "regression"
    multi_label = classifier.problem_type == "multi_label_classification"
    rows: list[dict] = []
    to_score: list[int] = []
    cut: set[int] = set()  # rows whose text was cut to max_text_chars
    over_limit = 0
    texts: list[str] = []
    pairs: list[str] | None = [] if pair_column else None
    for record in records:
        row = dict(record.row) if record.row is not None else {}
        error, problem = record.error, None
        if error is None:
            text = row.get(text_column)
            pair = row.get(pair_column) if pair_column else None
            too_long = [(column, value) for column, value in ((text_column, text), (pair_column, pair))
                        if isinstance(value, str) and len(value) > max_text_chars]
            if too_long:
                over_limit += 1
            if too_long and long_text != "truncate-chars":
                column, value = too_long[0]
                error = (f"{record.where}column {column!r} has {len(value):,} characters, more than --max-text-chars "
                         f"{max_text_chars:,}; not scored (--long-text truncate-chars scores its beginning instead)")
            else:
                if too_long:  # cut here, before anything reaches the tokenizer
                    text = text[:max_text_chars] if isinstance(text, str) else text
                    pair = pair[:max_text_chars] if isinstance(pair, str) else pair
                    cut.add(len(rows))
                problem = classifier.input_problem(text, pair, max_text_chars=max_text_chars)
            if error is None and problem:  # "text is empty", "text_pair must be a string, got int", ...
                column = pair_column if problem.startswith("text_pair") else text_column
                error = f"{record.where}column {column!r} {problem.split(' ', 1)[1]}"
            elif error is None:
                to_score.append(len(rows))
                texts.append(text)
                if pairs is not None:
                    pairs.append(pair)
        row["error"] = error
        rows.append(row)
    if texts:
        top_k = len(classifier.labels) if all_scores and not regression else None
        encodings = classifier.encode(texts, pairs, truncate=True, max_text_chars=max_text_chars)
        results = classifier.predict_encoded(encodings, top_k=top_k, batch_size=batch_size)
        label_order = {label: index for index, label in enumerate(classifier.labels)}
        for position, result in zip(to_score, results):
            row = rows[position]
            if result["truncated"] and not truncate:
                row["error"] = (
                    f"text longer than the model's max_length of {classifier.max_length} tokens "
                    "(not scored because of --no-truncate)"
                )
                continue
            if not all(math.isfinite(score) for score in _scores_of(result)):
                # A model that overflows gives NaN/Infinity: no label can be trusted, and JSON cannot hold them.
                row["error"] = "the model gave a non-finite score (NaN or Infinity) for this text; not scored"
                continue
            if not regression:
                row["predicted_label"] = result["label"]
            if multi_label:
                row["predicted_labels"] = result["labels"]
            if "abstained" in result:  # a model with an abstention rule: label None, kept aside
                row["abstained"] = result["abstained"]
                row["predicted_label_if_accepted"] = result.get("label_if_accepted")
            row["predicted_score"] = result["score"]
            row["truncated"] = result["truncated"] or position in cut
            if top_k:
                ordered = sorted(result["scores"], key=lambda item: label_order[item["label"]])
                row["scores"] = {item["label"]: item["score"] for item in ordered}
    if counts is not None:
        counts["over_max_text_chars"] = counts.get("over_max_text_chars", 0) + over_limit
    for row in rows:
        if counts is not None:
            if row["error"]:
                counts["errors"] += 1
            else:
                counts["scored"] += 1
                counts["truncated"] += bool(row.get("truncated"))
        # Keep the output columns in a fixed order: input columns, predictions, error last.
        row["error"] = row.pop("error")
    return rows


def _scores_of(result: dict) -> list[float]:
    """Every number of one runtime result: its score and, with top_k, every class's score."""
    return [result["score"]] + [item["score"] for item in result.get("scores") or ()]
