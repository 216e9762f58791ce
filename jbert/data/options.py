"""The options the data stage reads, as a protocol: any object with these attributes will do.

`jbert.train.config.TrainConfig` has them all (a test keeps it so), but the data stage never
imports the training stage: the dependency points one way, from train to data.
"""

from __future__ import annotations

from typing import Optional, Protocol


class DataOptions(Protocol):
    """What `prepare_data` reads; each attribute means what the `train.py` flag of that name says."""

    train_file: Optional[str]
    validation_file: Optional[str]
    test_file: Optional[str]
    encoding: str  # "auto" or a codec name, for CSV/TSV/JSONL files
    text_column: str
    text_pair_column: Optional[str]
    label_column: str
    task: str  # the --task flag: auto (detect the problem type) | single_label | multi_label | regression
    label_delimiter: Optional[str]
    validation_split: float  # share of the training rows held out when no validation file is given
    seed: int  # seeds the held-out split
    strict: bool  # fail on empty texts or labels instead of skipping them
    nfkc: bool
    remove_control: bool
    normalize_whitespace: bool
