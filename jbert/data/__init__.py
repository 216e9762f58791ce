"""Data stage: data files -> cleaned, labelled, split `datasets.Dataset`s ready for the training loop.

Takes the training / validation / test files named in a `TrainConfig` (CSV, TSV, JSONL, Parquet or
`save_to_disk` directories), cleans every text with `jbert.core.normalize`, detects the task
(single-label, multi-label, regression, pairs), maps label names to stable ids, makes a seeded
stratified validation split when none is given, and tokenizes. Hands on a `PreparedData`.
Nothing is written to disk here, so a user's bad file never leaves anything half-made.
"""

from jbert.data.prepare import PreparedData, label_sort_key, prepare_data, tokenize_dataset

__all__ = ["PreparedData", "label_sort_key", "prepare_data", "tokenize_dataset"]
