"""Document-level (multiple-instance) training of long texts: --long_text windows --window_training document.

Training every window with its text's label (`--window_training each`) asks each window to show a
label that often lives in one sentence of one window; the other windows then teach the model that
text it cannot tell apart means the majority class. Here a training example is a whole text:

    windows of a text -> one group (its first --max_train_windows windows; 8 when that is 0)
      -> batches of texts (--per_device_train_batch_size texts; length grouping on a text's tokens)
      -> every window of the batch through the model at once -> window logits pooled per text with
         --window_pooling (the pooling evaluation and serving use) -> the model's own loss on them

so the label has to come out of the pooled answer, the one the model is judged and served on.

A text is never split across batches or processes: the sampler orders texts, Accelerate hands
whole batches of texts to the ranks, and skipping batches on resume skips whole texts. The order
depends only on (seed, epoch, texts per optimizer step), as for window training. One micro-batch
holds at most batch x cap windows, which bounds memory whatever a text's length; the windows past
the cap are not trained on (counted in the log), while evaluation and serving still read them.
When every text fits one window, the batches, the logits and the loss are those of today's training.
"""

from __future__ import annotations

import logging

import torch
from torch.utils.data import DataLoader, Dataset

from jbert.train.dataloaders import MODEL_INPUTS, Collator, LengthGroupedSampler
from jbert.train.losses import problem_loss

logger = logging.getLogger("jbert")

DEFAULT_WINDOW_CAP = 8
"""Windows kept per text with --window_training document and --max_train_windows 0 (the memory bound)."""


class DocumentSet(Dataset):
    """Training texts, each the list of its windows (model inputs) and its label."""

    def __init__(self, windows, cap: int):
        """`windows`: tokenize_dataset(..., stride=N)'s rows (columns "document", "window", labels, inputs)."""
        table = windows.select_columns(["document", "window", "labels", *MODEL_INPUTS]).to_dict()
        self.documents: list[dict] = []
        self.cut = 0  # texts that had more windows than the cap
        self.cap = cap
        by_document: dict[int, int] = {}
        for row, document in enumerate(table["document"]):
            if document not in by_document:
                by_document[document] = len(self.documents)
                self.documents.append({"windows": [], "labels": table["labels"][row]})
            item = self.documents[by_document[document]]
            if table["window"][row] >= cap:
                if table["window"][row] == cap:
                    self.cut += 1
                continue
            item["windows"].append({name: table[name][row] for name in MODEL_INPUTS})
        self.lengths = [sum(len(w["input_ids"]) for w in d["windows"]) for d in self.documents]
        self.windows = sum(len(d["windows"]) for d in self.documents)

    def __len__(self) -> int:
        """Texts (the examples the schedule counts)."""
        return len(self.documents)

    def __getitem__(self, index: int) -> dict:
        """One text: {"windows": [model inputs, ...], "labels": its label}."""
        return self.documents[index]


class DocumentCollator:
    """The windows of a batch of texts padded as one batch, one label per text, and each text's window count."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None, label_dtype: torch.dtype):
        self.windows = Collator(pad_token_id, pad_to_multiple_of, label_dtype)
        self.label_dtype = label_dtype

    def __call__(self, documents: list[dict]) -> dict:
        """{input_ids, attention_mask, token_type_ids: (windows, length); labels: (texts, ...); windows: (texts,)}."""
        batch = self.windows([window for document in documents for window in document["windows"]])
        batch["labels"] = torch.tensor([d["labels"] for d in documents], dtype=self.label_dtype)
        batch["windows"] = torch.tensor([len(d["windows"]) for d in documents], dtype=torch.long)
        return batch


def document_dataloaders(train_set: DocumentSet, eval_set, *, per_device_train_batch_size: int,
                         per_device_eval_batch_size: int, examples_per_step: int, seed: int, group_by_length: bool,
                         num_workers: int, pad_token_id: int, label_dtype: torch.dtype,
                         pad_to_multiple_of: int | None):
    """(train, eval) DataLoaders: batches of whole texts for training, windows with their text for evaluation.

    `examples_per_step` counts texts, so grouping keeps the order identical across processes,
    accumulation and resume, as `jbert.train.dataloaders.training_dataloaders` does for windows.
    """
    sampler = LengthGroupedSampler(train_set.lengths, examples_per_step, seed, group_by_length)
    # Own generator: iterating must not draw from the global RNG that dropout uses (resume equality).
    train = DataLoader(train_set, batch_size=per_device_train_batch_size, sampler=sampler,
                       collate_fn=DocumentCollator(pad_token_id, pad_to_multiple_of, label_dtype),
                       num_workers=num_workers, generator=torch.Generator().manual_seed(seed))
    eval_set = eval_set.with_format(columns=list(MODEL_INPUTS) + ["labels", "document"])
    evaluation = DataLoader(eval_set, batch_size=per_device_eval_batch_size,
                            collate_fn=Collator(pad_token_id, pad_to_multiple_of, label_dtype), num_workers=num_workers)
    return train, evaluation


def pool_logits(logits: torch.Tensor, windows: torch.Tensor, pooling: str) -> torch.Tensor:
    """(texts, outputs) from (windows, outputs): mean or max over each text's consecutive windows.

    The torch twin of `jbert.core.windows.pool_window_logits` (differentiable); a text of one
    window gets its window's logits exactly.
    """
    counts = windows.tolist()
    if all(count == 1 for count in counts):
        return logits
    pieces = torch.split(logits, counts)
    if pooling == "max":
        return torch.stack([piece.max(dim=0).values for piece in pieces])
    if pooling == "mean":
        return torch.stack([piece.mean(dim=0) for piece in pieces])
    raise ValueError(f"document training pools with mean or max, not {pooling!r}")


def document_training_loss(pooling: str, problem_type: str):
    """`loss(model, batch)` for the training loop: the model's loss on the pooled logits of each text."""

    def loss(model, batch: dict) -> torch.Tensor:
        logits = model(**{name: batch[name] for name in MODEL_INPUTS}).logits
        pooled = pool_logits(logits, batch["windows"], pooling)
        return problem_loss(pooled.float(), batch["labels"], problem_type)

    return loss


def group_for_document_training(train_set, max_train_windows: int) -> DocumentSet:
    """The windowed training rows as texts, each with at most its first `max_train_windows` (or 8) windows; logged."""
    cap = max_train_windows or DEFAULT_WINDOW_CAP
    documents = DocumentSet(train_set, cap)
    logger.info("document training: %d texts, %d windows (at most %d per text, --max_train_windows)",
                len(documents), documents.windows, cap)
    if documents.cut:
        logger.warning("document training: %d training texts have more than %d windows; only their first %d are "
                       "trained on (evaluation and serving read every window); raise --max_train_windows to train "
                       "on more, at the cost of memory per batch", documents.cut, cap, cap)
    return documents
