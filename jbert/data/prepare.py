"""The data stage in one call: read files, clean texts, detect the problem type, map labels, split.

    files (CSV/TSV/JSONL via jbert.core.readers, Parquet, datasets.save_to_disk)  jbert.data.files
      -> rows: text (+ text_pair) cleaned by jbert.core.normalize, raw label      jbert.data.rows
      -> problem type (single-label / multi-label / regression), label names in id order  jbert.data.labels
      -> train / validation (given, or a seeded stratified split) / test datasets jbert.data.splits
      -> tokenize_dataset: input_ids, attention_mask, token_type_ids + labels     jbert.data.tokenize

Every problem with the user's data is a `UserError` naming the file, the line or row, and what to
do; nothing is written to disk here, so a failure never leaves anything half-made.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import datasets

from jbert.core.normalize import NormalizationConfig
from jbert.core.errors import UserError
from jbert.data.files import DataSource, open_source
from jbert.data.labels import (SINGLE_LABEL, check_known_labels, detect_problem_type, label_names_of, label_sort_key,
                               label_stats, parse_labels)
from jbert.data.options import DataOptions
from jbert.data.rows import SplitRows, read_split
from jbert.data.splits import split_train, to_dataset
from jbert.data.tokenize import tokenize_dataset

# The names this module offered before the data stage was split into modules.
__all__ = ["DataOptions", "DataSource", "PreparedData", "label_sort_key", "open_source", "prepare_data",
           "tokenize_dataset"]

logger = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Cleaned, labelled and split data, ready for `tokenize_dataset`."""

    train: datasets.Dataset  # columns: "text", "text_pair" (only for sentence pairs), "labels"
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


def prepare_data(config: DataOptions) -> PreparedData:
    """Read, clean, label and split the files named in `config` into `datasets.Dataset`s.

    `config` is any object with the `DataOptions` attributes (a `TrainConfig` has them). The problem
    type comes from `config.task` or, for "auto", from the training labels: list values or
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
    splits = {"train": read_split(train_source, config, normalization, labels_required=True)}

    validation_source = None
    if config.validation_file:
        validation_source = open_source(config.validation_file, "validation", config.encoding)
    elif train_source.sibling_splits.get("validation"):
        # A DatasetDict saved with its own validation split: use it rather than splitting train again.
        validation_source = open_source(config.train_file, "validation", config.encoding)
        logger.info("using the %r split of %s for validation", validation_source.split, config.train_file)
    if validation_source is not None:
        splits["validation"] = read_split(validation_source, config, normalization, labels_required=True)
    if config.test_file:
        test_source = open_source(config.test_file, "test", config.encoding)
        splits["test"] = read_split(test_source, config, normalization, labels_required=False)

    problem_type, reason = detect_problem_type(config, splits["train"])
    logger.info("problem type: %s (%s)", problem_type, reason)
    for split in splits.values():
        parse_labels(split, problem_type, config)

    label_names = label_names_of(problem_type, splits["train"])
    for role in ("validation", "test"):
        if role in splits:
            check_known_labels(splits[role], label_names, problem_type)
    if problem_type == SINGLE_LABEL and len(label_names) < 2:
        raise UserError(
            f"{config.train_file}: the training labels hold only one class {label_names}; a classifier "
            f"needs at least two (is --label_column {config.label_column!r} the right column?)"
        )

    if "validation" not in splits:
        splits["train"], splits["validation"] = split_train(splits["train"], problem_type, config)

    stats: dict = {"task": {"problem_type": problem_type, "reason": reason}}
    result = {}
    for role, split in splits.items():
        result[role] = to_dataset(split, problem_type, label_names, config.text_pair_column is not None)
        stats[role] = {**split.stats_dict(), **label_stats(split, problem_type, label_names)}
    _note_overlap(splits, stats)
    _log_skips(stats)
    _warn_missing_label_words(stats)
    _warn_duplicates(stats["train"])
    return PreparedData(
        train=result["train"],
        validation=result["validation"],
        test=result.get("test"),
        problem_type=problem_type,
        label_names=label_names,
        stats=stats,
    )


def _note_overlap(splits: dict[str, SplitRows], stats: dict) -> None:
    """Count validation/test texts that also occur in training: they inflate the scores."""
    train_texts = {(example.text, example.text_pair) for example in splits["train"].examples}
    for role in ("validation", "test"):
        if role in splits:
            overlap = sum((example.text, example.text_pair) in train_texts for example in splits[role].examples)
            stats[role]["texts_also_in_train"] = overlap
            if overlap:
                logger.warning("%d %s texts also occur in the training data; their scores will look better than they are", overlap, role)


# Above this share of training examples that repeat an earlier text, the run warns: such a set
# teaches far fewer distinct examples than its row count says (a file appended to itself, a join
# that multiplied rows), and a held-out split from it shares texts with training.
DUPLICATE_WARNING_SHARE = 0.5


def _warn_duplicates(train_stats: dict) -> None:
    duplicates, used = train_stats["duplicate_texts"], train_stats["rows_used"]
    if used and duplicates > DUPLICATE_WARNING_SHARE * used:
        logger.warning(
            "train (%s): %d of its %d examples repeat an earlier text (only %d distinct); is the file "
            "duplicated, or were rows multiplied by a join? Remove the duplicates unless they are meant as weights",
            train_stats["source"], duplicates, used, used - duplicates,
        )


def _warn_missing_label_words(stats: dict) -> None:
    for role in ("train", "validation", "test"):
        words = (stats.get(role) or {}).get("missing_label_words")
        if words:
            logger.warning(
                "%s (%s): %d label(s) were the text %s, read as missing labels and not as classes; if one "
                "is a real class, give it another name", role, stats[role]["source"], sum(words.values()),
                " / ".join(f"{word!r} ({count})" for word, count in sorted(words.items())),
            )


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
