"""Splits: the held-out validation split when none is given, and each split as a `datasets.Dataset`.

The held-out split is seeded and shuffled (scikit-learn's `train_test_split`), stratified for
single-label problems, and refuses data it cannot split honestly (a class with one example, fewer
validation rows than classes). Labels become ids in the order of the label names: ClassLabel ids
for single-label, multi-hot float rows for multi-label, floats for regression.
"""

from __future__ import annotations

import math
from collections import Counter

import datasets

from jbert.core.errors import UserError
from jbert.data.labels import MULTI_LABEL, SINGLE_LABEL, label_sort_key
from jbert.data.options import DataOptions
from jbert.data.rows import SplitRows

def split_train(train: SplitRows, problem_type: str, config: DataOptions) -> tuple[SplitRows, SplitRows]:
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
    held_out = SplitRows(
        source=train.source, examples=[train.examples[i] for i in validation_indices], has_labels=True,
        rows_read=validation_count, origin=origin,
    )
    kept = SplitRows(
        source=train.source, examples=[train.examples[i] for i in train_indices], has_labels=True,
        rows_read=train.rows_read, counts=train.counts, skipped_examples=train.skipped_examples,
        origin={**train.origin, "rows_held_out_for_validation": validation_count},
        declared_label_names=train.declared_label_names, missing_label_words=train.missing_label_words,
    )
    return kept, held_out


def to_dataset(split: SplitRows, problem_type: str, label_names: list[str], has_pair: bool) -> datasets.Dataset:
    """Columns "text" (+ "text_pair") and, when labelled, "labels" as ids / multi-hot rows / floats."""
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
