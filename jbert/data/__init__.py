"""Data stage: data files -> cleaned, labelled, split `datasets.Dataset`s ready for the training loop.

Takes the training / validation / test files named by its options (`DataOptions`; a `TrainConfig`
has them): CSV, TSV, JSONL, Parquet or `save_to_disk` directories. Hands on a `PreparedData`.

    files     any supported file or directory -> a `DataSource` of rows
    rows      rows -> examples with texts cleaned by `jbert.core.normalize`; skips counted
    labels    the problem type (single-label, multi-label, regression) and label names in a stable id order
    splits    a seeded stratified validation split when none is given; each split as a Dataset
    tokenize  texts -> unpadded model inputs, truncations counted
    prepare   `prepare_data`: all of the above in order
    unlabeled texts without labels for masked-LM pretraining (.txt lines, or a table's text column)

Nothing is written to disk here, so a user's bad file never leaves anything half-made.
"""

from jbert.data.options import DataOptions
from jbert.data.prepare import PreparedData, label_sort_key, prepare_data
from jbert.data.tokenize import tokenize_dataset

__all__ = ["DataOptions", "PreparedData", "label_sort_key", "prepare_data", "tokenize_dataset"]
