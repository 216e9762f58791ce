"""Training examples -> batches: the order (a seeded, length-grouped sampler) and the padding (a collator).

The order depends only on (seed, epoch) and the examples per optimizer step, which is what lets a
resumed run, an accumulated run and an N-process run see the very same global batches.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


class LengthGroupedSampler(Sampler[int]):
    """A seeded shuffle per epoch; with grouping, mega-batches sorted by length (less padding).

    The order depends only on (seed, epoch) and the examples per optimizer step, so a resumed run
    sees the same batches as an uninterrupted one, and N processes with batch B/N see the same
    global batches as one process with batch B (Accelerate hands consecutive batches to the ranks).
    """

    def __init__(self, lengths: list[int], examples_per_step: int, seed: int, group_by_length: bool):
        self.lengths = np.asarray(lengths)
        self.examples_per_step = examples_per_step
        self.seed = seed
        self.group_by_length = group_by_length
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Called by Accelerate's dataloader at the start of every epoch."""
        self.epoch = epoch

    def __len__(self) -> int:
        """Examples per epoch."""
        return len(self.lengths)

    def __iter__(self):
        """Indices of this epoch's examples, in training order."""
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(len(self.lengths), generator=generator).numpy()
        if self.group_by_length:
            step = self.examples_per_step
            mega = step * 50
            grouped = []
            for start in range(0, len(order), mega):
                chunk = order[start : start + mega]
                # Stable sort keeps the shuffled order among equal lengths.
                chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
                steps = [chunk[i : i + step] for i in range(0, len(chunk), step)]
                # Visit the optimizer steps of a mega-batch in random order: sorted order alone would
                # feed the model long texts first and short ones last, a curriculum that hurts when
                # length correlates with the label. Whole steps move, so decompositions stay equal.
                full = [s for s in steps if len(s) == step]
                permutation = torch.randperm(len(full), generator=generator).tolist()
                grouped += [full[i] for i in permutation] + [s for s in steps if len(s) != step]
            order = np.concatenate(grouped)
        return iter(order.tolist())


class Collator:
    """Dynamic padding to the longest sequence of the batch (a multiple of 8 under mixed precision)."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None, label_dtype: torch.dtype):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.label_dtype = label_dtype

    def __call__(self, examples: list[dict]) -> dict:
        """Stack a list of tokenized examples into padded int64 tensors (+ labels)."""
        longest = max(len(e["input_ids"]) for e in examples)
        if self.pad_to_multiple_of:
            longest = math.ceil(longest / self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = {}
        for name in MODEL_INPUTS:
            pad_value = self.pad_token_id if name == "input_ids" else 0
            array = np.full((len(examples), longest), pad_value, dtype=np.int64)
            for row, example in enumerate(examples):
                values = example[name]
                array[row, : len(values)] = values
            batch[name] = torch.from_numpy(array)
        if "labels" in examples[0]:
            batch["labels"] = torch.tensor([e["labels"] for e in examples], dtype=self.label_dtype)
        if "document" in examples[0]:  # --long_text windows: which text each window belongs to
            batch["document"] = torch.tensor([e["document"] for e in examples], dtype=torch.long)
        return batch


def training_dataloaders(train_set, eval_set, *, per_device_train_batch_size: int, per_device_eval_batch_size: int,
                         examples_per_step: int, seed: int, group_by_length: bool, num_workers: int,
                         pad_token_id: int, label_dtype: torch.dtype, pad_to_multiple_of: int | None):
    """(train, eval) DataLoaders over tokenized datasets, not yet prepared by Accelerate.

    `examples_per_step` is the examples of one optimizer step over all processes and accumulated
    micro-batches: grouping by it keeps the data order identical whether a step is made of
    1 x 16, 2 processes x 8, or 2 accumulated micro-batches of 8.
    """
    collator = Collator(pad_token_id, pad_to_multiple_of, label_dtype)
    columns = list(MODEL_INPUTS) + ["labels"]
    train_set = train_set.with_format(columns=columns)
    # Windows of long texts keep their text's number, so evaluation can pool them into one answer per text.
    eval_set = eval_set.with_format(columns=columns + (["document"] if "document" in eval_set.column_names else []))
    sampler = LengthGroupedSampler([len(ids) for ids in train_set["input_ids"]], examples_per_step, seed,
                                   group_by_length)
    # Own generator: iterating a DataLoader must not draw from the global RNG that dropout uses,
    # or a resumed run would see different dropout masks than an uninterrupted one.
    train_dataloader = DataLoader(train_set, batch_size=per_device_train_batch_size, sampler=sampler,
                                  collate_fn=collator, num_workers=num_workers,
                                  generator=torch.Generator().manual_seed(seed))
    eval_dataloader = DataLoader(eval_set, batch_size=per_device_eval_batch_size, collate_fn=collator,
                                 num_workers=num_workers)
    return train_dataloader, eval_dataloader
