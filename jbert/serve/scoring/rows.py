"""Records -> scored rows: the one place that decides what a scored row holds, for every engine.

The local scorer (`jbert.serve.scoring.run`) and the Ray engine (`jbert.serve.scoring.ray_engine`) both call
`score_records`, so a row gets the same label, score and error message whichever runs it.
"""

from __future__ import annotations

from typing import Iterable

from jbert.serve.scoring.records import Record


def score_records(classifier, records: Iterable[Record], text_column: str, pair_column: str | None, *,
                  batch_size: int = 32, truncate: bool = True, all_scores: bool = False,
                  counts: dict | None = None) -> list[dict]:
    """One result row per record: its input columns + predictions, or + `error` (never dropped).

    `classifier`: a `jbert.serve.runtime.OnnxClassifier`. `truncate=False` marks texts longer
    than max_length as errors. `all_scores` adds a "scores" {label: score} object. `counts`, when
    given, is increased in place: "scored", "errors", "truncated".
    """
    regression = classifier.problem_type == "regression"
    multi_label = classifier.problem_type == "multi_label_classification"
    rows: list[dict] = []
    to_score: list[int] = []
    texts: list[str] = []
    pairs: list[str] | None = [] if pair_column else None
    for record in records:
        row = dict(record.row) if record.row is not None else {}
        error = record.error
        if error is None:
            text = row.get(text_column)
            pair = row.get(pair_column) if pair_column else None
            problem = classifier.input_problem(text, pair)
            if problem:  # "text is empty", "text_pair must be a string, got int", ...
                column = pair_column if problem.startswith("text_pair") else text_column
                error = f"{record.where}column {column!r} {problem.split(' ', 1)[1]}"
            else:
                to_score.append(len(rows))
                texts.append(text)
                if pairs is not None:
                    pairs.append(pair)
        row["error"] = error
        rows.append(row)
    if texts:
        top_k = len(classifier.labels) if all_scores and not regression else None
        encodings = classifier.encode(texts, pairs, truncate=True)
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
            if not regression:
                row["predicted_label"] = result["label"]
            if multi_label:
                row["predicted_labels"] = result["labels"]
            row["predicted_score"] = result["score"]
            row["truncated"] = result["truncated"]
            if top_k:
                ordered = sorted(result["scores"], key=lambda item: label_order[item["label"]])
                row["scores"] = {item["label"]: item["score"] for item in ordered}
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
